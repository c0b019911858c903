//! OpenID provider metadata: fetched from
//! `{base}/.well-known/openid-configuration`, its issuer checked, cached per
//! authority for an hour. AIM always serves it; a 404 (a proxy, a stripped
//! down IdentityServer) falls back to AIM's fixed `{base}/connect/token`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::authority::{parse_endpoint, Authority};
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::response::{
    json_problem, retry_after_and_location, status_error, without_bom, Answer,
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
    pub(crate) allow_insecure_http: bool,
    pub(crate) scrubber: &'a Scrubber,
    pub(crate) now: SystemTime,
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
        body: &body,
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
        let snippet = req.scrubber.snippet(answer.body);
        Error::new(
            ErrorKind::InvalidResponse,
            format!(
                "{url} answered HTTP {} with {problem}, not OpenID provider metadata: \"{snippet}\"; check that the authority points to AIM",
                answer.status
            ),
        )
        .with_status(answer.status)
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
    if !authority.matches_issuer(&metadata.issuer) {
        let issuer = req.scrubber.snippet(metadata.issuer.as_bytes());
        return Err(Error::new(
            ErrorKind::InvalidResponse,
            format!(
                "the issuer in {url} is `{issuer}`, but the authority is `{authority}`: configure the authority as the issuer AIM reports (often the FQDN it was installed with)",
            ),
        )
        .with_status(answer.status));
    }
    parse_endpoint(
        &metadata.token_endpoint,
        "token endpoint",
        req.allow_insecure_http,
    )
    .map_err(|e| {
        Error::new(
            ErrorKind::InvalidResponse,
            format!("discovery at {url} advertises an unusable {e}"),
        )
        .with_status(answer.status)
    })?;
    Ok(metadata)
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
            allow_insecure_http: false,
            scrubber: &scrubber,
            now: SystemTime::now(),
        };
        let answer = Answer {
            status: 200,
            retry_after: None,
            location: None,
            body: body.as_bytes(),
        };
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
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        assert!(err.to_string().contains("plain http"), "{err}");
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
