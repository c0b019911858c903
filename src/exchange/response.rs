//! Reading a token endpoint answer: the success quirks of real servers,
//! RFC 6749 §5.2 errors under any status, and everything else as a clear,
//! secret-free error.

use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use serde_json::{Map, Value};

use super::scrub::Scrubber;
use crate::error::answer::{aim_error, Facts};
pub(crate) use crate::error::answer::{without_bom, Answer};
use crate::error::{Error, ErrorKind, Result};
use crate::token::{expiry_after, jwt_expiry, AccessToken};

/// The longest `Retry-After` honoured: a server cannot park the client.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What parsing a success answer needs to know besides the answer.
#[derive(Debug)]
pub(crate) struct TokenContext<'a> {
    /// When the request was sent (wall clock): `issued_at`.
    pub(crate) now: SystemTime,
    /// Scopes asked for; the granted ones when the answer has no `scope`.
    pub(crate) requested_scopes: &'a [String],
    /// Used when neither `expires_in` nor a JWT `exp` says.
    pub(crate) default_lifetime: Duration,
    /// The authority's base URL, recorded in the token.
    pub(crate) authority: &'a str,
    /// The URL that answered, for messages.
    pub(crate) url: &'a str,
}

/// The `Retry-After` and `Location` of an answer, read from its headers
/// before reading the body consumes the response.
pub(crate) fn retry_after_and_location(
    headers: &reqwest::header::HeaderMap,
    now: SystemTime,
) -> (Option<Duration>, Option<String>) {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    (
        text(reqwest::header::RETRY_AFTER).and_then(|v| parse_retry_after(v, now)),
        text(reqwest::header::LOCATION).map(str::to_owned),
    )
}

/// The `Content-Type` of an answer, for error messages.
pub(crate) fn content_type(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Turns a token endpoint answer into a token or the right error.
pub(crate) fn parse_token_answer(
    answer: &Answer<'_>,
    ctx: &TokenContext<'_>,
    scrubber: &Scrubber,
) -> Result<AccessToken> {
    // Every path below (a §5.2 error, a status error, a broken answer, a
    // wrong token_type) scrubs the tokens this answer carries too.
    let scrubber = &scrubber.with_tokens_of(answer.body);
    let json = serde_json::from_slice::<Value>(without_bom(answer.body));
    // A §5.2 error body wins whatever the status (AIM: 400; others: 401, even 200).
    if let Ok(Value::Object(map)) = &json {
        if let Some(err) = oauth_error(map, answer, ctx.url, scrubber) {
            return Err(err);
        }
    }
    if !(200..300).contains(&answer.status) {
        return Err(status_error(answer, ctx.url, scrubber, "token request"));
    }
    let map = match json {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(invalid(
                answer,
                ctx.url,
                scrubber,
                "a JSON value that is not an object",
            ))
        }
        Err(e) => {
            return Err(invalid(
                answer,
                ctx.url,
                scrubber,
                json_problem(answer.body, &e),
            ))
        }
    };
    parse_success(map, answer, ctx, scrubber)
}

fn parse_success(
    map: Map<String, Value>,
    answer: &Answer<'_>,
    ctx: &TokenContext<'_>,
    scrubber: &Scrubber,
) -> Result<AccessToken> {
    let access_token = match map.get("access_token") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(Value::String(_)) => {
            return Err(invalid(answer, ctx.url, scrubber, "an empty access_token"))
        }
        Some(_) => {
            return Err(invalid(
                answer,
                ctx.url,
                scrubber,
                "an access_token that is not a string",
            ))
        }
        None => return Err(invalid(answer, ctx.url, scrubber, "no access_token")),
    };
    match map.get("token_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t.trim().eq_ignore_ascii_case("bearer") => {}
        Some(other) => {
            let shown = scrubber.line(&other.to_string(), 40);
            return Err(Error::new(
                ErrorKind::InvalidResponse,
                format!(
                    "{} issued a token of type {shown}, but only Bearer tokens are supported: check the client's token type in AIM",
                    ctx.url
                ),
            )
            .with_status(answer.status));
        }
    }
    // expires_in, else the JWT's exp, else the default; one clamp for all.
    let lifetime = map
        .get("expires_in")
        .and_then(lifetime_of)
        .or_else(|| {
            if map.get("expires_in").is_some_and(|v| !v.is_null()) {
                tracing::warn!(
                    url = ctx.url,
                    "ignoring an expires_in that is not a positive number of seconds"
                );
            }
            jwt_expiry(&access_token)
                .and_then(|exp| exp.duration_since(ctx.now).ok())
                .filter(|lifetime| !lifetime.is_zero())
        })
        .unwrap_or(ctx.default_lifetime);
    let expires_at = expiry_after(ctx.now, lifetime);
    let scopes = match map.get("scope") {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            s.split_whitespace().map(str::to_owned).collect()
        }
        // Not in the RFC, but seen in the wild.
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => ctx.requested_scopes.to_vec(),
    };
    Ok(AccessToken::from_parts(
        SecretString::from(access_token),
        "Bearer".to_owned(),
        ctx.now,
        expires_at,
        scopes,
        ctx.authority.to_owned(),
    ))
}

/// `expires_in` as a number, an integer or float string; `None` for zero,
/// negative, NaN or unreadable values. Huge ones saturate (then clamped).
fn lifetime_of(value: &Value) -> Option<Duration> {
    let secs = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if secs.is_nan() || secs <= 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}

/// The §5.2 error of a JSON object, if it is one.
fn oauth_error(
    map: &Map<String, Value>,
    answer: &Answer<'_>,
    url: &str,
    scrubber: &Scrubber,
) -> Option<Error> {
    let code = map.get("error").and_then(Value::as_str)?;
    if code.trim().is_empty() {
        return None;
    }
    Facts::of(answer, url, "token request", scrubber).oauth_error()
}

/// A non-2xx answer: by the one status-to-error path ([`aim_error`]).
pub(crate) fn status_error(
    answer: &Answer<'_>,
    url: &str,
    scrubber: &Scrubber,
    what: &str,
) -> Error {
    aim_error(answer, url, what, scrubber)
}

/// A 2xx answer that is not a usable token answer.
fn invalid(answer: &Answer<'_>, url: &str, scrubber: &Scrubber, problem: &str) -> Error {
    Facts::of(answer, url, "token request", scrubber).error(
        ErrorKind::InvalidResponse,
        false,
        url,
        "token request",
        &format!("{problem}, not a token answer: check that the authority points to AIM"),
    )
}

/// Why a body is not JSON, in words.
pub(crate) fn json_problem(body: &[u8], err: &serde_json::Error) -> &'static str {
    if body.iter().all(u8::is_ascii_whitespace) {
        "an empty body"
    } else if err.is_eof() {
        "truncated JSON"
    } else {
        "a body that is not JSON"
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3); a date in
/// the past means "now"; at most [`MAX_RETRY_AFTER`] (the cache also bounds
/// it by what remains of the retry deadline).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(
        date.duration_since(now)
            .unwrap_or_default()
            .min(MAX_RETRY_AFTER),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    use base64::Engine as _;

    const URL: &str = "https://sms01/identitymanager/connect/token";
    const SECRET: &str = "P@ss w0rd&+=%:/?#";

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn scrubber() -> Scrubber {
        Scrubber::new(vec![SECRET.to_owned()])
    }

    fn parse_with(status: u16, body: &str, requested: &[String]) -> Result<AccessToken> {
        let ctx = TokenContext {
            now: now(),
            requested_scopes: requested,
            default_lifetime: Duration::from_secs(3600),
            authority: "https://sms01/identitymanager",
            url: URL,
        };
        let answer = Answer {
            status,
            retry_after: None,
            location: None,
            content_type: None,
            body: body.as_bytes(),
            body_len: None,
        };
        parse_token_answer(&answer, &ctx, &scrubber())
    }

    fn parse(status: u16, body: &str) -> Result<AccessToken> {
        parse_with(status, body, &[])
    }

    fn lifetime(body: &str) -> Duration {
        parse(200, body).unwrap().lifetime()
    }

    fn jwt(exp: u64) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            b64.encode(r#"{"alg":"RS256"}"#),
            b64.encode(format!(r#"{{"exp":{exp}}}"#))
        )
    }

    #[test]
    fn aim_answer() {
        let t = parse(
            200,
            r#"{"access_token":"abc","expires_in":86400,"token_type":"Bearer","scope":"mes.api openid"}"#,
        )
        .unwrap();
        assert_eq!(t.secret(), "abc");
        assert_eq!(t.token_type(), "Bearer");
        assert_eq!(t.issued_at(), now());
        assert_eq!(t.lifetime(), Duration::from_secs(86400));
        assert_eq!(t.scopes(), ["mes.api", "openid"]);
        assert_eq!(t.authority(), "https://sms01/identitymanager");
    }

    #[test]
    fn expires_in_quirks() {
        let h = Duration::from_secs(3600);
        assert_eq!(
            lifetime(r#"{"access_token":"a","expires_in":"7200"}"#),
            2 * h
        );
        assert_eq!(
            lifetime(r#"{"access_token":"a","expires_in":" 7200 "}"#),
            2 * h
        );
        assert_eq!(
            lifetime(r#"{"access_token":"a","expires_in":299.5}"#),
            Duration::from_millis(299_500)
        );
        assert_eq!(
            lifetime(r#"{"access_token":"a","expires_in":"60.0"}"#),
            Duration::from_secs(60)
        );
        // Missing, null, zero, negative, garbage, absurd: JWT exp, else the default.
        for odd in [
            "",
            r#","expires_in":null"#,
            r#","expires_in":0"#,
            r#","expires_in":-5"#,
            r#","expires_in":"soon""#,
            r#","expires_in":"NaN""#,
            r#","expires_in":true"#,
        ] {
            assert_eq!(
                lifetime(&format!(r#"{{"access_token":"a"{odd}}}"#)),
                h,
                "{odd}"
            );
        }
        let exp = 1_800_000_000 + 600;
        let body = format!(r#"{{"access_token":"{}"}}"#, jwt(exp));
        assert_eq!(lifetime(&body), Duration::from_secs(600));
        // expires_in wins over the JWT.
        let body = format!(r#"{{"access_token":"{}","expires_in":"120"}}"#, jwt(exp));
        assert_eq!(lifetime(&body), Duration::from_secs(120));
        // A JWT already expired by our clock: the default, not a zero lifetime.
        let body = format!(r#"{{"access_token":"{}"}}"#, jwt(1_000));
        assert_eq!(lifetime(&body), h);
    }

    /// fuzz/token_response's invariant (lifetime in [1 s, cap]): `1e-10` made a token born
    /// expired, and a JWT `exp` centuries ahead escaped the cap.
    #[test]
    fn sub_nanosecond_and_beyond_the_cap_lifetimes_are_clamped() {
        let cap = crate::token::MAX_LIFETIME;
        for tiny in ["1e-10", "\"1e-10\"", "0.0000000001"] {
            let body = format!(r#"{{"access_token":"a","expires_in":{tiny}}}"#);
            assert_eq!(lifetime(&body), Duration::from_secs(1), "{tiny}");
        }
        let far = 1_800_000_000 + cap.as_secs() + 1;
        let body = format!(r#"{{"access_token":"{}"}}"#, jwt(far));
        assert_eq!(lifetime(&body), cap);
        let at_cap = 1_800_000_000 + cap.as_secs();
        let body = format!(r#"{{"access_token":"{}"}}"#, jwt(at_cap));
        assert_eq!(lifetime(&body), cap);
    }

    #[test]
    fn absurd_lifetimes_are_clamped_to_one_second_and_one_cap() {
        let cap = crate::token::MAX_LIFETIME;
        for huge in ["1e30", "1e300", r#""1e30""#, "18446744073709551615"] {
            let body = format!(r#"{{"access_token":"a","expires_in":{huge}}}"#);
            assert_eq!(lifetime(&body), cap, "{huge}");
        }
        // Never expired on arrival: at least one second.
        assert_eq!(
            lifetime(r#"{"access_token":"a","expires_in":0.0001}"#),
            Duration::from_secs(1)
        );
        assert_eq!(
            lifetime(r#"{"access_token":"a","expires_in":"0.0001"}"#),
            Duration::from_secs(1)
        );
        // A JWT exp in the year 3000 shares the cap.
        let body = format!(r#"{{"access_token":"{}"}}"#, jwt(32_503_680_000));
        assert_eq!(lifetime(&body), cap);
        // And an exp beyond what SystemTime can hold does not panic.
        let body = format!(r#"{{"access_token":"{}"}}"#, jwt(u64::MAX));
        assert_eq!(lifetime(&body), cap);
    }

    #[test]
    fn absurd_retry_after_values_do_not_panic_and_are_capped() {
        let max = Duration::from_secs(3600);
        assert_eq!(parse_retry_after("18446744073709551615", now()), Some(max));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now()),
            Some(max)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now()),
            Some(max)
        );
        assert_eq!(parse_retry_after("7", now()), Some(Duration::from_secs(7)));
    }

    #[test]
    fn a_byte_order_mark_is_tolerated() {
        let t = parse(200, "\u{feff}{\"access_token\":\"a\",\"expires_in\":60}").unwrap();
        assert_eq!(t.lifetime(), Duration::from_secs(60));
    }

    #[test]
    fn the_answers_own_token_never_reaches_any_error() {
        // Whichever path the answer takes, a token it carries is not shown.
        let token = "opaque-token-9f8e7d";
        for (status, body) in [
            (
                400,
                format!(
                    r#"{{"error":"invalid_request","error_description":"already issued {token}","access_token":"{token}"}}"#
                ),
            ),
            (
                200,
                format!(r#"{{"access_token":"{token}","token_type":"MAC {token}"}}"#),
            ),
            (
                500,
                format!(
                    r#"{{"error":"server_error","error_uri":"https://h/?t={token}","access_token":"{token}"}}"#
                ),
            ),
        ] {
            let err = parse(status, &body).unwrap_err();
            let shown = format!("{err} {err:?} {:?}", err.oauth_description());
            assert!(!shown.contains("9f8e7d"), "{body} -> {shown}");
        }
    }

    #[test]
    fn token_type_is_case_insensitive_and_defaults_to_bearer() {
        for tt in [r#""bearer""#, r#""BEARER""#, r#"" Bearer ""#, "null"] {
            let t = parse(200, &format!(r#"{{"access_token":"a","token_type":{tt}}}"#)).unwrap();
            assert_eq!(t.token_type(), "Bearer", "{tt}");
        }
        assert_eq!(
            parse(200, r#"{"access_token":"a"}"#).unwrap().token_type(),
            "Bearer"
        );
        for tt in [r#""mac""#, r#""DPoP""#, "5"] {
            let err =
                parse(200, &format!(r#"{{"access_token":"a","token_type":{tt}}}"#)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{tt}");
            assert!(err.to_string().contains("only Bearer"), "{err}");
        }
    }

    #[test]
    fn scope_space_delimited_or_absent() {
        let req = vec!["mes.api".to_owned()];
        let t = parse_with(200, r#"{"access_token":"a","scope":"  a   b c "}"#, &req).unwrap();
        assert_eq!(t.scopes(), ["a", "b", "c"]);
        for body in [
            r#"{"access_token":"a"}"#,
            r#"{"access_token":"a","scope":""}"#,
            r#"{"access_token":"a","scope":null}"#,
        ] {
            assert_eq!(
                parse_with(200, body, &req).unwrap().scopes(),
                ["mes.api"],
                "{body}"
            );
        }
        let t = parse(200, r#"{"access_token":"a","scope":["x","y"]}"#).unwrap();
        assert_eq!(t.scopes(), ["x", "y"]);
    }

    #[test]
    fn access_token_is_required() {
        for body in [
            r#"{}"#,
            r#"{"access_token":""}"#,
            r#"{"access_token":"  "}"#,
            r#"{"access_token":5}"#,
            r#"{"token_type":"Bearer"}"#,
            "[1,2]",
            "\"x\"",
        ] {
            let err = parse(200, body).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{body}");
            assert_eq!(err.status(), Some(200));
            assert!(!err.is_transient());
        }
    }

    #[test]
    fn oauth_errors_under_any_status() {
        for status in [400, 401, 403, 200, 500] {
            let err = parse(
                status,
                r#"{"error":"invalid_client","error_description":"Unknown client"}"#,
            )
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::OAuth, "{status}");
            assert_eq!(err.oauth_error(), Some("invalid_client"));
            assert_eq!(err.oauth_description(), Some("Unknown client"));
            assert_eq!(err.status(), Some(status));
            assert_eq!(err.is_transient(), status >= 500, "{status}");
        }
        let err = parse(400, r#"{"error":"invalid_scope"}"#).unwrap_err();
        assert_eq!(err.oauth_error(), Some("invalid_scope"));
        assert_eq!(err.oauth_description(), None);
        assert!(!err.is_transient());
        let err = parse(400, r#"{"error":"temporarily_unavailable"}"#).unwrap_err();
        assert!(err.is_transient());
    }

    #[test]
    fn echoed_secret_never_reaches_the_error() {
        let body = format!(
            r#"{{"error":"invalid_client","error_description":"secret '{SECRET}' is wrong"}}"#
        );
        let err = parse(400, &body).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("w0rd"), "{err:?}");
        assert!(err.oauth_description().unwrap().contains("[redacted]"));
        let err = parse(502, &format!("<html>proxy saw {SECRET}</html>")).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("w0rd"), "{err:?}");
    }

    #[test]
    fn non_json_answers() {
        let cases = [
            (200, "", "an empty body"),
            (200, "   ", "an empty body"),
            (
                200,
                r#"{"access_token":"abc","expires_in":36"#,
                "truncated JSON",
            ),
            (200, "<html>hello</html>", "not JSON"),
            (200, "garbage \u{1}\u{2}", "not JSON"),
        ];
        for (status, body, words) in cases {
            let err = parse(status, body).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{body}");
            assert_eq!(err.status(), Some(status));
            let msg = err.to_string();
            assert!(msg.contains(words), "{msg}");
            assert!(msg.contains("HTTP 200"), "{msg}");
            assert!(!msg.contains("abc"), "token leaked: {msg}");
            assert!(!msg.chars().any(char::is_control), "{msg:?}");
        }
        // 4xx without an OAuth body: not OAuth, not transient, status kept.
        let err = parse(404, "<html><body>Not Found</body></html>").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        assert_eq!(err.status(), Some(404));
        // Status and length, never the body.
        assert!(err.to_string().contains("HTTP 404, 35 bytes"), "{err}");
        assert!(!err.to_string().contains("Not Found"), "{err}");
        let err = parse(401, "").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        assert!(err.to_string().contains("empty body"), "{err}");
        // A snippet of a huge page stays short.
        let err = parse(400, &"x".repeat(100_000)).unwrap_err();
        assert!(err.to_string().len() < 600, "{}", err.to_string().len());
    }

    #[test]
    fn server_trouble_is_transient() {
        for status in [500, 502, 503, 504, 429, 408] {
            let err = parse(status, "<html><title>Service Unavailable</title></html>").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Server, "{status}");
            assert!(err.is_transient(), "{status}");
            assert_eq!(err.status(), Some(status));
            assert!(!err.to_string().contains("Service Unavailable"), "{err}");
            assert!(err.to_string().contains("try again later"), "{err}");
        }
    }

    /// A plain web server answers a POST with 501: not AIM, and asking
    /// again cannot help, so no retries.
    #[test]
    fn not_implemented_is_permanent() {
        for status in [501, 505] {
            let err = parse(status, "<html><title>Unsupported method</title></html>").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{status}");
            assert!(!err.is_transient(), "{status}");
            assert_eq!(err.status(), Some(status));
            assert!(err.to_string().contains("not AIM"), "{err}");
        }
    }

    #[test]
    fn redirects_are_refused_with_the_fix() {
        let answer = Answer {
            status: 302,
            retry_after: None,
            location: Some("https://elsewhere/login".into()),
            content_type: None,
            body: b"",
            body_len: None,
        };
        let err = status_error(&answer, URL, &scrubber(), "token request");
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        assert_eq!(err.status(), Some(302));
        assert!(err.to_string().contains("https://elsewhere/login"), "{err}");
        assert!(err.to_string().contains("not followed"), "{err}");
    }

    #[test]
    fn retry_after_seconds_or_date() {
        let n = now();
        assert_eq!(parse_retry_after("120", n), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", n), Some(Duration::ZERO));
        let date = httpdate::fmt_http_date(n + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&date, n), Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(n - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, n), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", n), None);
        assert_eq!(parse_retry_after("-5", n), None);
        assert_eq!(parse_retry_after("", n), None);
    }

    #[test]
    fn retry_after_is_attached() {
        let ctx = TokenContext {
            now: now(),
            requested_scopes: &[],
            default_lifetime: Duration::from_secs(3600),
            authority: "a",
            url: URL,
        };
        for body in ["", r#"{"error":"slow_down"}"#] {
            let answer = Answer {
                status: 429,
                retry_after: Some(Duration::from_secs(7)),
                location: None,
                content_type: None,
                body: body.as_bytes(),
                body_len: None,
            };
            let err = parse_token_answer(&answer, &ctx, &scrubber()).unwrap_err();
            assert_eq!(err.retry_after(), Some(Duration::from_secs(7)), "{body}");
            assert!(err.is_transient());
        }
    }
}
