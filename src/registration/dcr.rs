//! RFC 7591 dynamic client registration: discovery, then one POST.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use url::Url;

use crate::authority::{parse_endpoint, Authority};
use crate::client::AimClientBuilder;
use crate::config::ConnectionConfig;
use crate::discovery::{pinned_endpoint, DiscoveryCache, DiscoveryRequest, Pinned};
use crate::error::answer::{without_bom, Answer, Facts};
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::response::content_type;
use crate::exchange::scrub::Scrubber;
use crate::http::{build_client_for, from_reqwest, read_capped, secret_header, MAX_BODY_BYTES};

use super::Verification;

/// The registration request body (RFC 7591 §2 metadata).
#[derive(Serialize)]
pub(super) struct RegistrationRequest<'a> {
    /// Not RFC 7591 metadata: a wish the provider may ignore (most issue their own).
    pub(super) client_id: &'a str,
    /// Likewise a wish; providers usually generate the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) client_secret: Option<&'a str>,
    pub(super) client_name: &'a str,
    pub(super) grant_types: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) scope: Option<String>,
    /// Extension (IdentityServer's name for it); RFC 7591 §2 says servers
    /// ignore metadata they do not understand.
    pub(super) access_token_lifetime: u32,
}

impl RegistrationRequest<'_> {
    fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = body.as_object_mut() {
            // A service client has no browser flow: say so, or providers
            // default to `response_types: ["code"]` and demand redirect URIs.
            obj.insert("response_types".into(), serde_json::json!([]));
            obj.insert("redirect_uris".into(), serde_json::json!([]));
            obj.insert(
                "token_endpoint_auth_method".into(),
                serde_json::json!("client_secret_post"),
            );
        }
        body
    }
}

/// A client the provider registered: the credentials it issued.
///
/// The secrets are redacted in `Debug`; read them with the explicit
/// [`client_secret`](Self::client_secret) and
/// [`registration_access_token`](Self::registration_access_token).
#[derive(Clone)]
pub struct RegisteredClient {
    client_id: String,
    client_secret: Option<SecretString>,
    registration_access_token: Option<SecretString>,
    registration_client_uri: Option<String>,
    scopes: Vec<String>,
    access_token_lifetime: Option<Duration>,
    client_secret_expiry: SecretExpiry,
}

/// When the secret a provider issued expires (RFC 7591
/// `client_secret_expires_at`), read so that no answer passes for "never"
/// by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretExpiry {
    /// `0`, or no expiry in the answer: the secret does not expire.
    Never,
    /// The secret stops working at this time: register again (or rotate
    /// the secret) before then.
    At(SystemTime),
    /// The answer's value is no time (negative, text, past the year 9999):
    /// ask the provider when the secret expires.
    Unreadable,
}

/// The last second of the year 9999: no secret expires later.
const LAST_EXPIRY_SECS: u64 = 253_402_300_799;

impl SecretExpiry {
    /// Reads `client_secret_expires_at`: seconds since the Unix epoch, as
    /// a number (whole, or a float with no fraction) or a string of one.
    fn of(value: Option<&serde_json::Value>) -> SecretExpiry {
        let secs = match value {
            None | Some(serde_json::Value::Null) => return SecretExpiry::Never,
            Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
            Some(v) => v.as_u64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && (0.0..=LAST_EXPIRY_SECS as f64).contains(f))
                    .map(|f| f as u64)
            }),
        };
        match secs {
            Some(0) => SecretExpiry::Never,
            Some(secs) if secs <= LAST_EXPIRY_SECS => SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(secs))
                .map_or(SecretExpiry::Unreadable, SecretExpiry::At),
            _ => SecretExpiry::Unreadable,
        }
    }
}

impl RegisteredClient {
    /// The client ID the provider issued (it may differ from the one asked for).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The client secret the provider issued. Hand it to the app (e.g. as
    /// `AIM_CLIENT_SECRET`) and do not log it.
    pub fn client_secret(&self) -> Option<&str> {
        self.client_secret.as_ref().map(|s| s.expose_secret())
    }

    /// The token that lets you read, update or delete this registration at
    /// [`registration_client_uri`](Self::registration_client_uri) (RFC 7592).
    pub fn registration_access_token(&self) -> Option<&str> {
        self.registration_access_token
            .as_ref()
            .map(|s| s.expose_secret())
    }

    /// Where the registration can be managed (RFC 7592), if the provider said.
    pub fn registration_client_uri(&self) -> Option<&str> {
        self.registration_client_uri.as_deref()
    }

    /// The scopes the provider granted the client, if it reported them.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The access token lifetime, if the provider reported one.
    pub fn access_token_lifetime(&self) -> Option<Duration> {
        self.access_token_lifetime
    }

    /// When the secret expires, in seconds since the Unix epoch (at most
    /// the end of the year 9999, so adding it to `UNIX_EPOCH` cannot
    /// overflow); `Some(0)` means never, also when the answer gives no
    /// expiry. `None` for a value that is no time (negative, text, too
    /// large): [`client_secret_expiry`](Self::client_secret_expiry) reads
    /// the same field as an enum and says so.
    pub fn client_secret_expires_at(&self) -> Option<u64> {
        // One reading of the field: the seconds of `client_secret_expiry`.
        match self.client_secret_expiry {
            SecretExpiry::Never => Some(0),
            SecretExpiry::At(at) => at.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs()),
            SecretExpiry::Unreadable => None,
        }
    }

    /// When the secret expires: never, at a time, or unreadable (a value
    /// that is no time must not pass for "never").
    pub fn client_secret_expiry(&self) -> SecretExpiry {
        self.client_secret_expiry
    }

    /// Fetches a token with the issued credentials through an
    /// [`AimClient`](crate::AimClient) built from `aim`, requesting
    /// `scopes`, and reports what was granted.
    pub async fn verify(&self, aim: AimClientBuilder, scopes: &[String]) -> Result<Verification> {
        let secret = self.client_secret().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "the provider issued no client secret, so there is nothing to verify with",
            )
        })?;
        super::verify(aim, &self.client_id, secret, scopes).await
    }
}

impl fmt::Debug for RegisteredClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<SecretString>| s.as_ref().map(|_| "[redacted]");
        f.debug_struct("RegisteredClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &redacted(&self.client_secret))
            .field(
                "registration_access_token",
                &redacted(&self.registration_access_token),
            )
            .field("registration_client_uri", &self.registration_client_uri)
            .field("scopes", &self.scopes)
            .field("access_token_lifetime", &self.access_token_lifetime)
            .field("client_secret_expiry", &self.client_secret_expiry)
            .finish()
    }
}

pub(super) async fn register(
    aim: &ConnectionConfig,
    initial_access_token: &str,
    request: &RegistrationRequest<'_>,
    explicit_endpoint: Option<&str>,
) -> Result<RegisteredClient> {
    let allow = aim.allow_insecure_http;
    let authority = &aim.authority;
    // Same trust, timeouts and no-redirect policy as the token client: the
    // initial access token must never follow a redirect elsewhere. And the
    // same proxy rule, per origin: plain http to loopback goes direct.
    let client_for = |url: &Url| build_client_for(&aim.http, url);
    let scrubber = Scrubber::for_secrets([
        initial_access_token,
        request.client_secret.unwrap_or_default(),
    ]);
    let endpoint = match explicit_endpoint {
        Some(url) => parse_endpoint(url, "registration endpoint", allow)?,
        None => {
            let base = Url::parse(authority.base_url())
                .map_err(|e| Error::config(format!("the AIM authority is not a URL: {e}")))?;
            discovered_endpoint(&client_for(&base)?, authority, &scrubber).await?
        }
    };
    let http = client_for(&endpoint)?;

    let bearer = secret_header(zeroize::Zeroizing::new(format!(
        "Bearer {initial_access_token}"
    )))
    .map_err(|_| {
        Error::config(
            "the initial access token contains characters that are not allowed in an HTTP header",
        )
    })?;
    let response = http
        .post(endpoint.clone())
        .header(reqwest::header::AUTHORIZATION, bearer)
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&request.to_json())
        .send()
        .await
        .map_err(|e| from_reqwest(e, endpoint.as_str()))?;
    let status = response.status().as_u16();
    let content_type = content_type(response.headers());
    let body = read_capped(response, MAX_BODY_BYTES, endpoint.as_str()).await?;
    let answer = Answer {
        status,
        retry_after: None,
        location: None,
        content_type,
        body: &body,
        body_len: None,
    };
    read_answer(&answer, endpoint.as_str(), &scrubber)
}

/// The registration endpoint's answer: the registered client, an RFC 7591
/// §3.2.2 error, or what the status says.
pub(crate) fn read_answer(
    answer: &Answer<'_>,
    url: &str,
    scrubber: &Scrubber,
) -> Result<RegisteredClient> {
    let status = answer.status;
    let body = answer.body;
    // What a (broken) answer issues is scrubbed as well as what was sent.
    let scrubber = scrubber.with_tokens_of(body);
    let facts = || Facts::of(answer, url, WHAT, &scrubber);
    if !(200..300).contains(&status) {
        return Err(registration_error(&facts(), url));
    }
    let json = serde_json::from_slice::<serde_json::Value>(without_bom(body))
        .ok()
        .filter(|v| v.is_object())
        .ok_or_else(|| {
            facts().error(
                ErrorKind::InvalidResponse,
                false,
                url,
                WHAT,
                "the body is not a JSON object, so not an RFC 7591 answer: check the registration endpoint",
            )
        })?;
    let context = format!("client registration at {url}");
    parse_registered(&json).map_err(|e| e.with_status(status).context(&context))
}

/// The `registration_endpoint` of the discovery document, only on the
/// authority's origin: the initial access token goes nowhere else.
async fn discovered_endpoint(
    http: &reqwest::Client,
    authority: &Authority,
    scrubber: &Scrubber,
) -> Result<Url> {
    let metadata = DiscoveryCache::default()
        .get(&DiscoveryRequest {
            http,
            authority,
            scrubber,
            now: SystemTime::now(),
            also_issuer: None,
        })
        .await?;
    let Some(endpoint) = metadata.registration_endpoint.as_deref() else {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{authority} offers no dynamic client registration (no registration_endpoint in its \
                 discovery document), as AIM today: have the AIM administrator run the command from \
                 ClientRegistration::to_powershell (`aim-token register --powershell`) on the AIM server"
            ),
        ));
    };
    pinned_endpoint(
        authority,
        endpoint,
        Pinned::RegistrationEndpoint,
        &authority.discovery_url(),
        scrubber,
    )
}

fn parse_registered(json: &serde_json::Value) -> Result<RegisteredClient> {
    let text = |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let client_id = text("client_id").filter(|s| !s.is_empty()).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidResponse,
            "the answer has no client_id (RFC 7591 §3.2.1 requires it)",
        )
    })?;
    let number = |name: &str| {
        json.get(name).and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        })
    };
    Ok(RegisteredClient {
        client_id,
        client_secret: text("client_secret").map(SecretString::from),
        registration_access_token: text("registration_access_token").map(SecretString::from),
        registration_client_uri: text("registration_client_uri"),
        scopes: text("scope")
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        access_token_lifetime: number("access_token_lifetime").map(Duration::from_secs),
        client_secret_expiry: SecretExpiry::of(json.get("client_secret_expires_at")),
    })
}

/// What registration requests are called in messages.
const WHAT: &str = "client registration";

/// An RFC 7591 §3.2.2 error answer, or what the status says.
fn registration_error(facts: &Facts, url: &str) -> Error {
    if let Some(err) = facts.oauth_error() {
        let context = format!("client registration at {url}");
        return match facts.error.as_deref() {
            Some("invalid_token") => err
                .context("the initial access token was refused (check it with the provider)")
                .context(context),
            Some("invalid_client_metadata" | "invalid_redirect_uri") => err
                .context("the provider refused the client's metadata (scopes, grant types)")
                .context(context),
            _ => err.context(context),
        };
    }
    let status = facts.status;
    let (kind, advice) = match status {
        401 | 403 => (
            ErrorKind::Unauthorized,
            "the initial access token was refused (check it with the provider)",
        ),
        404 | 405 => (
            ErrorKind::Unsupported,
            "the advertised registration endpoint does not accept registrations",
        ),
        500..=599 => (ErrorKind::Server, "the provider failed; try again later"),
        _ => (
            ErrorKind::InvalidResponse,
            "an unexpected answer: check the registration endpoint",
        ),
    };
    facts.error(kind, status >= 500, url, WHAT, advice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body_declares_a_service_client() {
        let grants = vec!["client_credentials".to_owned()];
        let req = RegistrationRequest {
            client_id: "svc",
            client_secret: None,
            client_name: "Svc",
            grant_types: &grants,
            scope: Some("mes.api openid".into()),
            access_token_lifetime: 3600,
        };
        let json = req.to_json();
        assert_eq!(
            json["grant_types"],
            serde_json::json!(["client_credentials"])
        );
        assert_eq!(json["response_types"], serde_json::json!([]));
        assert_eq!(json["redirect_uris"], serde_json::json!([]));
        assert_eq!(json["scope"], "mes.api openid");
        assert_eq!(json["token_endpoint_auth_method"], "client_secret_post");
        assert!(json.get("client_secret").is_none());
    }

    #[test]
    fn parses_rfc7591_answer_and_redacts() {
        let json = serde_json::json!({
            "client_id": "issued-id", "client_secret": "issued-secret-xyz",
            "registration_access_token": "rat-abc", "registration_client_uri": "https://h/reg/issued-id",
            "scope": "mes.api openid", "access_token_lifetime": "3600", "client_secret_expires_at": 0
        });
        let reg = parse_registered(&json).unwrap();
        assert_eq!(reg.client_id(), "issued-id");
        assert_eq!(reg.client_secret(), Some("issued-secret-xyz"));
        assert_eq!(reg.registration_access_token(), Some("rat-abc"));
        assert_eq!(
            reg.registration_client_uri(),
            Some("https://h/reg/issued-id")
        );
        assert_eq!(reg.scopes(), ["mes.api", "openid"]);
        assert_eq!(reg.access_token_lifetime(), Some(Duration::from_secs(3600)));
        assert_eq!(reg.client_secret_expires_at(), Some(0));
        let dbg = format!("{reg:?}");
        assert!(!dbg.contains("issued-secret") && !dbg.contains("rat-abc"));
        assert!(parse_registered(&serde_json::json!({"client_secret": "x"})).is_err());
    }

    /// `client_secret_expires_at` as providers spell it. 0 or absent is
    /// "never"; a value that is no time (negative, text, past the year 9999)
    /// must not pass for "never" too: the app would fail one day unwarned.
    #[test]
    fn secret_expiry_spellings() {
        use std::time::UNIX_EPOCH;
        let at = |secs: u64| SecretExpiry::At(UNIX_EPOCH + Duration::from_secs(secs));
        for (value, expected) in [
            (serde_json::json!(0), SecretExpiry::Never),
            (serde_json::Value::Null, SecretExpiry::Never),
            (serde_json::json!(1_798_729_756), at(1_798_729_756)),
            (serde_json::json!("1798729756"), at(1_798_729_756)),
            (serde_json::json!(1_798_729_756.0), at(1_798_729_756)),
            (serde_json::json!(-1), SecretExpiry::Unreadable),
            (serde_json::json!("soon"), SecretExpiry::Unreadable),
            (serde_json::json!(1e300), SecretExpiry::Unreadable),
            (serde_json::json!(u64::MAX), SecretExpiry::Unreadable),
            (serde_json::json!(true), SecretExpiry::Unreadable),
        ] {
            let json = serde_json::json!({
                "client_id": "svc", "client_secret": "x", "client_secret_expires_at": value
            });
            let reg = parse_registered(&json).unwrap();
            assert_eq!(reg.client_secret_expiry(), expected, "{value}");
        }
        let reg = parse_registered(&serde_json::json!({"client_id": "svc"})).unwrap();
        assert_eq!(reg.client_secret_expiry(), SecretExpiry::Never);
    }

    /// The seconds getter reads the answer as `client_secret_expiry` does:
    /// a value that is no time (past the year 9999) is `None`, never seconds
    /// that `UNIX_EPOCH + Duration::from_secs(..)` would panic on; a float
    /// without a fraction is the time it names, not "never".
    #[test]
    fn expiry_seconds_agree_with_the_expiry() {
        for (value, secs) in [
            (serde_json::json!(u64::MAX), None),
            (serde_json::json!("18446744073709551615"), None),
            (serde_json::json!(1_798_729_756.0), Some(1_798_729_756)),
            (serde_json::json!(1_798_729_756), Some(1_798_729_756)),
            (serde_json::json!("0"), Some(0)),
            (serde_json::json!(-1), None),
        ] {
            let json = serde_json::json!({
                "client_id": "svc", "client_secret": "x", "client_secret_expires_at": value
            });
            let reg = parse_registered(&json).unwrap();
            assert_eq!(reg.client_secret_expires_at(), secs, "{value}");
            let from_secs = secs.map(|s| match s {
                0 => SecretExpiry::Never,
                s => SecretExpiry::At(std::time::UNIX_EPOCH + Duration::from_secs(s)),
            });
            assert_eq!(
                from_secs.unwrap_or(SecretExpiry::Unreadable),
                reg.client_secret_expiry(),
                "{value}"
            );
        }
    }

    #[test]
    fn error_answers_are_classified() {
        let scrubber = Scrubber::default();
        let err = |status: u16, body: &str| {
            let answer = Answer::new(status, body.as_bytes());
            registration_error(
                &Facts::of(&answer, "https://h/r", WHAT, &scrubber),
                "https://h/r",
            )
        };
        let e = err(
            401,
            r#"{"error": "invalid_token", "error_description": "nope"}"#,
        );
        assert_eq!(e.kind(), ErrorKind::OAuth);
        assert_eq!(e.oauth_error(), Some("invalid_token"));
        assert!(e.to_string().contains("initial access token"));
        let e = err(400, r#"{"error": "invalid_client_metadata"}"#);
        assert_eq!(e.oauth_error(), Some("invalid_client_metadata"));
        assert_eq!(err(403, "").kind(), ErrorKind::Unauthorized);
        assert_eq!(err(404, "").kind(), ErrorKind::Unsupported);
        let e = err(503, "");
        assert_eq!(e.kind(), ErrorKind::Server);
        assert!(e.is_transient());
    }
}
