//! Entry points for the fuzz targets in `fuzz/` (hidden feature `__fuzz`):
//! the crate's parsers of untrusted input, each reached through the same
//! function the real request path calls, behind plain signatures that stay
//! put when the parsers' insides change. Not API: hidden, no stability.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::authority::Authority;
use crate::credentials::ClientCredentials;
use crate::discovery::DiscoveryRequest;
use crate::error::answer::Answer;
use crate::exchange::response::{self, TokenContext};
use crate::exchange::scrub::Scrubber;
use crate::{AccessToken, ClientAuthMethod, RegisteredClient, Result};

/// The longest token lifetime: longer claims are clamped to it.
pub const MAX_LIFETIME: Duration = crate::token::MAX_LIFETIME;

/// The shortest token lifetime: shorter positive claims are raised to it.
pub const MIN_LIFETIME: Duration = crate::token::MIN_LIFETIME;

/// The spellings of a client secret that error texts must never contain
/// (as sent in a form, a Basic header, raw).
pub fn secret_spellings(secret: &str) -> Vec<String> {
    ClientCredentials::new(
        "client".to_owned(),
        secret.to_owned().into(),
        ClientAuthMethod::Post,
    )
    .secret_spellings()
}

/// A token endpoint answer, as the exchange reads it: `Retry-After` from
/// the header text, then the body, scrubbed of `secret`.
pub fn token_answer(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    secret: &str,
    now: SystemTime,
    default_lifetime: Duration,
) -> Result<AccessToken> {
    let scrubber = Scrubber::new(secret_spellings(secret));
    let answer = Answer {
        status,
        retry_after: retry_after.and_then(|v| response::parse_retry_after(v, now)),
        location: None,
        content_type: None,
        body,
        body_len: None,
    };
    let ctx = TokenContext {
        now,
        requested_scopes: &[],
        default_lifetime,
        authority: "https://sms01/identitymanager",
        url: "https://sms01/identitymanager/connect/token",
    };
    response::parse_token_answer(&answer, &ctx, &scrubber)
}

/// `Retry-After` header text -> how long to wait.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    response::parse_retry_after(value, now)
}

/// What discovery keeps of a 2xx document: `(issuer, token_endpoint)`.
/// (Non-2xx answers take the token answer's path, fuzzed there.)
pub fn discovery(authority: &str, body: &[u8], secret: &str) -> Result<(String, String)> {
    // Never used to send (parsing only); built without the OS store, which
    // a fuzzing machine need not have.
    static HTTP: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    let http = HTTP
        .get_or_init(|| {
            reqwest::Client::builder()
                .tls_certs_only(Vec::new())
                .build()
                .ok()
        })
        .as_ref()
        .ok_or_else(|| crate::Error::config("no HTTP client"))?;
    let authority = Authority::parse(authority, false)?;
    let scrubber = Scrubber::new(secret_spellings(secret));
    let req = DiscoveryRequest {
        http,
        authority: &authority,
        scrubber: &scrubber,
        now: SystemTime::now(),
        also_issuer: None,
    };
    let answer = Answer::new(200, body);
    crate::discovery::parse_metadata(&answer, &req, &authority.discovery_url())
        .map(|m| (m.issuer, m.token_endpoint))
}

/// A configured authority -> its canonical base URL.
pub fn authority(input: &str, allow_insecure_http: bool) -> Result<String> {
    Authority::parse(input, allow_insecure_http).map(|a| a.base_url().to_owned())
}

/// Whether discovery accepts `issuer` for the authority `input`.
pub fn issuer_matches(input: &str, issuer: &str) -> Option<bool> {
    Authority::parse(input, true)
        .ok()
        .map(|a| a.matches_issuer(issuer))
}

/// A JWT's `exp` claim, the lifetime fallback of a token answer.
pub fn jwt_expiry(token: &str) -> Option<SystemTime> {
    crate::token::jwt_expiry(token)
}

/// The error of a non-2xx MES answer to a call made with `token`;
/// `None` for a status that is not an HTTP status.
pub fn mes_error(status: u16, body: &[u8], token: &str) -> Option<crate::Error> {
    reqwest::StatusCode::from_u16(status).ok()?;
    let answer = Answer::new(status, body);
    let token = AccessToken::new(token, SystemTime::now());
    Some(crate::mes::answer_error(
        &answer,
        "https://mes01/mesmw/api/v3/entity",
        &[token],
    ))
}

/// An RFC 7591 registration answer, as `ClientRegistration::register`
/// reads it, scrubbed of the initial access token and the secret.
pub fn registration_answer(
    status: u16,
    body: &[u8],
    initial_access_token: &str,
    secret: &str,
) -> Result<RegisteredClient> {
    let scrubber = Scrubber::new(vec![initial_access_token.to_owned(), secret.to_owned()]);
    let answer = Answer::new(status, body);
    crate::registration::dcr::read_answer(
        &answer,
        "https://sms01/identitymanager/connect/register",
        &scrubber,
    )
}
