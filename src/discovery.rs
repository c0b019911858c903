//! OpenID provider metadata: fetched from
//! `{base}/.well-known/openid-configuration`, its issuer checked, cached per
//! authority for an hour. AIM always serves it; a 404 (a proxy, a stripped
//! down IdentityServer) falls back to AIM's fixed `{base}/connect/token`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use url::Url;

use crate::authority::{parse_endpoint_shown, Authority};
use crate::error::answer::Facts;
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::response::{
    content_type, json_problem, retry_after_and_location, status_error, without_bom, Answer,
};
use crate::exchange::scrub::Scrubber;
use crate::http::{from_reqwest, read_capped, MAX_BODY_BYTES};

/// How long fetched metadata is used before it is fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

/// The parts of the provider metadata the crate uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct ProviderMetadata {
    /// The issuer, checked against the authority.
    pub(crate) issuer: String,
    /// Where token requests go (checked: https, or loopback http).
    pub(crate) token_endpoint: String,
    /// RFC 7591 dynamic client registration, when offered.
    #[serde(default)]
    pub(crate) registration_endpoint: Option<String>,
    /// RFC 7662 token introspection, when offered.
    #[serde(default)]
    pub(crate) introspection_endpoint: Option<String>,
    /// The signing keys of issued tokens.
    #[serde(default)]
    pub(crate) jwks_uri: Option<String>,
    /// `client_secret_post`, `client_secret_basic`, ...
    #[serde(default)]
    pub(crate) token_endpoint_auth_methods_supported: Vec<String>,
    /// The scopes the server knows.
    #[serde(default)]
    pub(crate) scopes_supported: Vec<String>,
    /// `false` when discovery answered 404 and these are AIM's fixed routes.
    #[serde(skip)]
    pub(crate) discovered: bool,
}

impl ProviderMetadata {
    /// AIM's fixed routes, for when discovery is missing.
    fn fallback(authority: &Authority) -> Self {
        ProviderMetadata {
            issuer: authority.base_url().to_owned(),
            token_endpoint: authority.default_token_endpoint(),
            registration_endpoint: None,
            introspection_endpoint: None,
            jwks_uri: None,
            token_endpoint_auth_methods_supported: Vec::new(),
            scopes_supported: Vec::new(),
            discovered: false,
        }
    }
}

/// The metadata of one authority, fetched when first needed and again after
/// [`DISCOVERY_TTL`] or after a failed token request.
#[derive(Debug, Default)]
pub(crate) struct DiscoveryCache {
    /// The lock is held while fetching: concurrent callers share one request.
    slot: tokio::sync::Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    metadata: Arc<ProviderMetadata>,
    fetched_at: SystemTime,
}

/// What a discovery fetch needs.
#[derive(Debug)]
pub(crate) struct DiscoveryRequest<'a> {
    pub(crate) http: &'a reqwest::Client,
    pub(crate) authority: &'a Authority,
    pub(crate) scrubber: &'a Scrubber,
    pub(crate) now: SystemTime,
    /// Another issuer this authority may report besides its own: a
    /// Redundant SSO node issues tokens "as if sent from the System
    /// Management Server", so its discovery may carry the primary's issuer
    /// (or the one set with `expected_issuer`).
    pub(crate) also_issuer: Option<&'a Authority>,
}

impl DiscoveryCache {
    /// Cached metadata while fresh, else fetched now.
    pub(crate) async fn get(&self, req: &DiscoveryRequest<'_>) -> Result<Arc<ProviderMetadata>> {
        let mut slot = self.slot.lock().await;
        if let Some(cached) = slot.as_ref() {
            let fresh = req
                .now
                .duration_since(cached.fetched_at)
                .is_ok_and(|age| age < DISCOVERY_TTL);
            if fresh {
                return Ok(cached.metadata.clone());
            }
        }
        let metadata = Arc::new(fetch(req).await?);
        *slot = Some(Cached {
            metadata: metadata.clone(),
            fetched_at: req.now,
        });
        Ok(metadata)
    }

    /// Forgets the metadata, so the next request fetches it again (after a
    /// failure the server may have moved its endpoint).
    pub(crate) fn invalidate(&self) {
        // If a fetch holds the lock, it is fetching fresh metadata anyway.
        if let Ok(mut slot) = self.slot.try_lock() {
            *slot = None;
        }
    }
}

/// One discovery request, no cache.
async fn fetch(req: &DiscoveryRequest<'_>) -> Result<ProviderMetadata> {
    let url = req.authority.discovery_url();
    let response = req
        .http
        .get(&url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| from_reqwest(e, &url))?;
    let status = response.status().as_u16();
    let (retry_after, location) = retry_after_and_location(response.headers(), req.now);
    let content_type = content_type(response.headers());
    let body = read_capped(response, MAX_BODY_BYTES, &url).await?;
    if status == 404 {
        tracing::warn!(
            authority = req.authority.base_url(),
            "no OpenID discovery at {url} (HTTP 404): using AIM's fixed token endpoint {}",
            req.authority.default_token_endpoint()
        );
        return Ok(ProviderMetadata::fallback(req.authority));
    }
    let answer = Answer {
        status,
        retry_after,
        location,
        content_type,
        body: &body,
        body_len: None,
    };
    if !(200..300).contains(&status) {
        return Err(status_error(
            &answer,
            &url,
            req.scrubber,
            "discovery request",
        ));
    }
    parse_metadata(&answer, req, &url)
}

pub(crate) fn parse_metadata(
    answer: &Answer<'_>,
    req: &DiscoveryRequest<'_>,
    url: &str,
) -> Result<ProviderMetadata> {
    let invalid = |problem: &str| {
        Facts::of(answer, url, "discovery request", req.scrubber).error(
            ErrorKind::InvalidResponse,
            false,
            url,
            "discovery request",
            &format!(
                "{problem}, not OpenID provider metadata: check that the authority points to AIM"
            ),
        )
    };
    let mut metadata: ProviderMetadata = match serde_json::from_slice(without_bom(answer.body)) {
        Ok(m) => m,
        Err(e) if e.is_data() => {
            return Err(invalid("JSON without a string issuer and token_endpoint"))
        }
        Err(e) => return Err(invalid(json_problem(answer.body, &e))),
    };
    metadata.discovered = true;
    let authority = req.authority;
    let accepted = authority.matches_issuer(&metadata.issuer)
        || req
            .also_issuer
            .is_some_and(|other| other.matches_issuer(&metadata.issuer));
    if !accepted {
        let issuer = req.scrubber.line(&metadata.issuer, 200);
        return Err(Error::new(
            ErrorKind::InvalidResponse,
            format!(
                "the issuer in {url} is `{issuer}`, but the authority is `{authority}`: configure the authority as the issuer AIM reports (often the FQDN it was installed with)",
            ),
        )
        .with_status(answer.status));
    }
    // The checked URL, not the advertised text: the exchange parses this.
    metadata.token_endpoint = pinned_endpoint(
        authority,
        &metadata.token_endpoint,
        Pinned::TokenEndpoint,
        url,
        req.scrubber,
    )
    .map_err(|e| e.with_status(answer.status))?
    .into();
    Ok(metadata)
}

/// An endpoint that discovery names and that receives a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pinned {
    /// Receives the client secret.
    TokenEndpoint,
    /// Receives the initial access token.
    RegistrationEndpoint,
}

impl Pinned {
    fn what(self) -> &'static str {
        match self {
            Pinned::TokenEndpoint => "token endpoint",
            Pinned::RegistrationEndpoint => "registration endpoint",
        }
    }

    fn credential(self) -> &'static str {
        match self {
            Pinned::TokenEndpoint => "the client secret",
            Pinned::RegistrationEndpoint => "the initial access token",
        }
    }

    fn setting(self) -> &'static str {
        match self {
            Pinned::TokenEndpoint => "AimClientBuilder::token_endpoint",
            Pinned::RegistrationEndpoint => "ClientRegistration::registration_endpoint",
        }
    }
}

/// An endpoint advertised by discovery, accepted only on the authority's
/// origin (scheme, host, port): a discovery document must not be able to
/// send a credential to another host, to plain http, or to a listener on
/// the client's own machine (IIS/ARR without forwarded headers advertises
/// `http://localhost:5000/...`). Checked before anything is sent there; an
/// endpoint on another origin is set explicitly or not used.
pub(crate) fn pinned_endpoint(
    authority: &Authority,
    advertised: &str,
    which: Pinned,
    discovery_url: &str,
    scrubber: &Scrubber,
) -> Result<Url> {
    let shown = scrubber.line(advertised, 200);
    let what = which.what();
    // Parsed once, by the endpoint rules, and that URL is checked and
    // returned: two parsers can read one string as two hosts (`https:/h/x`
    // is `h` to the URL parser and `https` to the endpoint rules). The
    // origin check implies the http rule, which the authority passed.
    let scrub = |s: &str| scrubber.line(s, usize::MAX);
    let parsed = parse_endpoint_shown(advertised, what, true, &scrub).map_err(|e| {
        Error::new(
            ErrorKind::InvalidResponse,
            format!("discovery at {discovery_url} advertises an unusable {what}: {e}; check that the authority points to AIM"),
        )
    })?;
    if !authority.same_origin(&parsed) {
        return Err(Error::config(format!(
            "discovery at {discovery_url} advertises the {what} `{shown}`, which is not on the authority's origin {} (scheme, host and port must match), so {} is not sent there. If that endpoint really is the provider's, set it explicitly with {}(\"{shown}\"); otherwise make the provider advertise its public origin (behind IIS/ARR: forward the Host and X-Forwarded-Proto headers)",
            authority.origin(),
            which.credential(),
            which.setting(),
        )));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(authority: &str, body: &str) -> Result<ProviderMetadata> {
        let http = reqwest::Client::new();
        let authority = Authority::parse(authority, false).unwrap();
        let scrubber = Scrubber::default();
        let req = DiscoveryRequest {
            http: &http,
            authority: &authority,
            scrubber: &scrubber,
            now: SystemTime::now(),
            also_issuer: None,
        };
        let answer = Answer::new(200, body.as_bytes());
        parse_metadata(&answer, &req, "https://x/.well-known/openid-configuration")
    }

    #[test]
    fn reads_aim_metadata() {
        let m = parse(
            "sms01",
            r#"{"issuer":"https://SMS01/IdentityManager/","token_endpoint":"https://sms01/identitymanager/connect/token",
                "registration_endpoint":"https://sms01/identitymanager/connect/register",
                "jwks_uri":"https://sms01/identitymanager/.well-known/openid-configuration/jwks",
                "token_endpoint_auth_methods_supported":["client_secret_post","client_secret_basic"],
                "other": 5}"#,
        )
        .unwrap();
        assert!(m.discovered);
        assert_eq!(
            m.token_endpoint,
            "https://sms01/identitymanager/connect/token"
        );
        assert_eq!(
            m.registration_endpoint.as_deref(),
            Some("https://sms01/identitymanager/connect/register")
        );
        assert_eq!(m.introspection_endpoint, None);
        assert_eq!(m.token_endpoint_auth_methods_supported.len(), 2);
    }

    #[test]
    fn issuer_mismatch_names_both() {
        let err = parse(
            "sms01",
            r#"{"issuer":"https://sms01.plant.local/identitymanager","token_endpoint":"https://sms01/identitymanager/connect/token"}"#,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        let msg = err.to_string();
        assert!(
            msg.contains("https://sms01.plant.local/identitymanager"),
            "{msg}"
        );
        assert!(msg.contains("https://sms01/identitymanager"), "{msg}");
    }

    #[test]
    fn insecure_token_endpoint_is_refused() {
        let err = parse(
            "sms01",
            r#"{"issuer":"https://sms01/identitymanager","token_endpoint":"http://sms01/identitymanager/connect/token"}"#,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("origin"), "{err}");
    }

    #[test]
    fn token_endpoint_is_pinned_to_the_authority_origin() {
        let doc = |endpoint: &str| {
            format!(
                r#"{{"issuer":"https://sms01.plant.local/identitymanager","token_endpoint":"{endpoint}"}}"#
            )
        };
        for foreign in [
            // another host
            "https://evil.example/identitymanager/connect/token",
            "https://sms02.plant.local/identitymanager/connect/token",
            // another port
            "https://sms01.plant.local:8443/identitymanager/connect/token",
            // https -> http
            "http://sms01.plant.local/identitymanager/connect/token",
            // loopback for a remote authority (IIS/ARR without forwarded headers)
            "http://localhost:5000/connect/token",
            "https://localhost/identitymanager/connect/token",
            "https://127.0.0.1/identitymanager/connect/token",
            "https://[::1]/identitymanager/connect/token",
            // a trailing dot is another name to the resolver
            "https://sms01.plant.local./identitymanager/connect/token",
        ] {
            let err = parse("sms01.plant.local", &doc(foreign)).expect_err(foreign);
            assert_eq!(err.kind(), ErrorKind::Config, "{foreign}");
            let msg = err.to_string();
            assert!(msg.contains(foreign), "{msg}");
            assert!(msg.contains("AimClientBuilder::token_endpoint"), "{msg}");
            assert!(msg.contains("https://sms01.plant.local"), "{msg}");
            assert!(!err.is_transient());
        }
        // The same origin after normalisation is accepted, path as given
        // (kept normalised, as checked).
        for same in [
            "https://sms01.plant.local/identitymanager/connect/token",
            "https://SMS01.Plant.Local:443/IdentityManager/connect/token",
            "https://sms01.plant.local/elsewhere/token",
        ] {
            let m =
                parse("sms01.plant.local", &doc(same)).unwrap_or_else(|e| panic!("{same}: {e}"));
            assert_eq!(Url::parse(&m.token_endpoint), Url::parse(same));
        }
        let err = parse("sms01.plant.local", &doc("not a url")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    }

    /// Quotes are dropped from what an admin typed (cmd.exe keeps them),
    /// never from what a server sent: a discovery document is parsed as
    /// written.
    #[test]
    fn a_quoted_advertised_endpoint_is_refused() {
        for quoted in [
            r#"\"https://sms01.plant.local/identitymanager/connect/token\""#,
            "'https://sms01.plant.local/identitymanager/connect/token'",
        ] {
            let doc = format!(
                r#"{{"issuer":"https://sms01.plant.local/identitymanager","token_endpoint":"{quoted}"}}"#
            );
            let err = parse("sms01.plant.local", &doc).expect_err(quoted);
            assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{quoted}: {err}");
        }
    }

    #[test]
    fn the_url_returned_is_the_url_checked() {
        // `https:/host/..` (one slash) is the authority's host to the URL
        // parser, but a scheme-less input to the endpoint rules, which
        // read host `https`: the pinned URL must be the one that was checked.
        let authority = Authority::parse("sms01.plant.local", false).unwrap();
        for advertised in [
            "https:/sms01.plant.local/identitymanager/connect/register",
            "HTTPS:/sms01.plant.local/identitymanager/connect/register",
            "https:sms01.plant.local/identitymanager/connect/register",
        ] {
            for which in [Pinned::TokenEndpoint, Pinned::RegistrationEndpoint] {
                match pinned_endpoint(
                    &authority,
                    advertised,
                    which,
                    "https://x/.well-known/openid-configuration",
                    &Scrubber::default(),
                ) {
                    Ok(url) => assert!(authority.same_origin(&url), "{advertised} -> {url}"),
                    Err(e) => assert!(!e.is_transient(), "{advertised}: {e}"),
                }
            }
        }
        // The token endpoint kept in the metadata is the checked URL, so the
        // exchange cannot read it differently.
        let m = parse(
            "sms01.plant.local",
            r#"{"issuer":"https://sms01.plant.local/identitymanager","token_endpoint":"https://SMS01.plant.local:443/identitymanager/connect/token"}"#,
        )
        .unwrap();
        assert_eq!(
            m.token_endpoint,
            "https://sms01.plant.local/identitymanager/connect/token"
        );
    }

    /// An unusable endpoint is shown in the error, and a server's value is
    /// shown scrubbed of the client secret before anything of it is cut:
    /// neither the secret nor a part of it (cut by the `user@` hiding or by
    /// the length limit) reaches the text. Found by the `discovery` fuzz
    /// target: a form-encoded secret after a `?` was shown whole, and one
    /// with an `@` lost only its first letter to the `user@` hiding.
    #[test]
    fn an_unusable_endpoint_is_shown_without_the_secret_or_a_part_of_it() {
        const SECRET: &str = "Zq9@s3cr3t Xy7";
        let scrubber = Scrubber::for_secrets([SECRET]);
        let authority = Authority::parse("http://127.0.0.1:8080", false).unwrap();
        let long = "a".repeat(100);
        for spelling in crate::exchange::scrub::spellings_of(SECRET) {
            for advertised in [
                format!("http://127.0.0.1:8080/connect/token#{spelling}"),
                format!("http://{spelling}?{spelling}@127.0.0.1:8080/connect/token"),
                format!("http://127.0.0.1:8080/{long}?x#{spelling}"),
                format!("{spelling}://127.0.0.1:8080/connect/token"),
                format!("ftp://{spelling}"),
            ] {
                let Err(err) = pinned_endpoint(
                    &authority,
                    &advertised,
                    Pinned::TokenEndpoint,
                    "http://127.0.0.1:8080/.well-known/openid-configuration",
                    &scrubber,
                ) else {
                    continue;
                };
                let text = err.to_string();
                let chars: Vec<char> = spelling.chars().collect();
                for part in chars.windows(5) {
                    let part: String = part.iter().collect();
                    assert!(!text.contains(&part), "{part:?} of {spelling:?} in: {text}");
                }
            }
        }
    }

    #[test]
    fn a_hostile_endpoint_cannot_inject_lines() {
        let err = parse(
            "sms01",
            r#"{"issuer":"https://sms01/identitymanager","token_endpoint":"https://evil/\r\nINFO forged"}"#,
        )
        .unwrap_err();
        assert!(!err.to_string().contains('\n'), "{err}");
    }

    #[test]
    fn not_metadata() {
        for (body, words) in [
            ("", "empty body"),
            (r#"{"issuer":"https://sms01/identitymanager""#, "truncated"),
            ("<html/>", "not JSON"),
            (
                r#"{"issuer":"https://sms01/identitymanager"}"#,
                "token_endpoint",
            ),
            (r#"{"issuer":5,"token_endpoint":"x"}"#, "issuer"),
        ] {
            let err = parse("sms01", body).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{body}");
            assert!(err.to_string().contains(words), "{err}");
        }
    }
}
