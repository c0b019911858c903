//! The one path from an HTTP answer to an [`Error`], for every server the
//! crate talks to (the token endpoint, discovery, registration, MES).
//!
//! Servers echo what they were sent — the client secret, the token — in
//! spellings no scrubber can know in advance. So an error never carries the
//! body: it keeps the status, the content type, the body length and the
//! RFC 6749 §5.2 fields (`error`, `error_description`, `error_uri`; for MES,
//! ASP.NET's `Message` as the description), each decoded, scrubbed, made one
//! line and capped. The body itself, scrubbed the same way, goes to a TRACE
//! event only, for whoever debugs with `RUST_LOG=aim_token=trace`.
//!
//! [`Facts::of`] reads an answer; [`Facts::error`] and
//! [`Facts::oauth_error`] turn it into the error. Each service decides only
//! the kind and the advice (see [`default_verdict`] for AIM's endpoints).

use std::time::Duration;

use serde_json::Value;

use super::{Error, ErrorKind};
use crate::exchange::scrub::Scrubber;

/// The longest OAuth `error` code kept.
pub(crate) const MAX_CODE_CHARS: usize = 64;
/// The longest description kept.
pub(crate) const MAX_DESCRIPTION_CHARS: usize = 300;
/// The longest `error_uri`, content type or `Location` kept.
const MAX_URI_CHARS: usize = 200;

/// An HTTP answer, read (with a cap).
#[derive(Debug)]
pub(crate) struct Answer<'a> {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    /// `Location` of a redirect (which is never followed).
    pub(crate) location: Option<String>,
    /// The `Content-Type` header, as sent.
    pub(crate) content_type: Option<String>,
    /// The body as read; `body_len` says how long it really was when the
    /// reader stopped at a cap.
    pub(crate) body: &'a [u8],
    /// The body's full length when more than `body` was sent.
    pub(crate) body_len: Option<u64>,
}

impl<'a> Answer<'a> {
    /// An answer of `status` with `body` and nothing else known.
    #[cfg(any(test, feature = "__fuzz"))]
    pub(crate) fn new(status: u16, body: &'a [u8]) -> Self {
        Answer {
            status,
            retry_after: None,
            location: None,
            content_type: None,
            body,
            body_len: None,
        }
    }
}

/// What an error may say about an answer: never its body.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The content type, one line, capped.
    pub(crate) content_type: Option<String>,
    /// How many bytes the body had.
    pub(crate) body_len: u64,
    /// RFC 6749 §5.2 `error`, scrubbed.
    pub(crate) error: Option<String>,
    /// `error_description` (or ASP.NET's `Message`), scrubbed, one line, capped.
    pub(crate) description: Option<String>,
    /// `error_uri`, scrubbed.
    pub(crate) error_uri: Option<String>,
    /// `Retry-After`.
    pub(crate) retry_after: Option<Duration>,
    /// `Location`, scrubbed.
    pub(crate) location: Option<String>,
}

impl Facts {
    /// Reads what may be shown of `answer` from `url` (the answer to a
    /// `what`, e.g. "token request") and logs its scrubbed body at TRACE.
    pub(crate) fn of(answer: &Answer<'_>, url: &str, what: &str, scrubber: &Scrubber) -> Facts {
        let body_len = answer.body_len.unwrap_or(answer.body.len() as u64);
        let content_type = answer
            .content_type
            .as_deref()
            .map(|c| scrubber.line(c, MAX_URI_CHARS))
            .filter(|c| !c.is_empty());
        if tracing::enabled!(tracing::Level::TRACE) {
            let cut = answer
                .body_len
                .is_some_and(|n| n > answer.body.len() as u64);
            let body = if cut {
                scrubber.without_cut_tail(answer.body)
            } else {
                answer.body
            };
            tracing::trace!(
                url,
                status = answer.status,
                content_type = content_type.as_deref().unwrap_or("-"),
                body_len,
                body = %scrubber.snippet(body),
                "{what} answer body (scrubbed)"
            );
        }
        let json = serde_json::from_slice::<Value>(without_bom(answer.body)).ok();
        let field = |names: &[&str], max: usize| {
            let map = json.as_ref()?.as_object()?;
            names
                .iter()
                .find_map(|n| map.get(*n)?.as_str())
                .map(|v| scrubber.line(v, max))
                .filter(|v| !v.is_empty())
        };
        Facts {
            status: answer.status,
            content_type,
            body_len,
            error: field(&["error"], MAX_CODE_CHARS),
            description: field(
                &["error_description", "Message", "message"],
                MAX_DESCRIPTION_CHARS,
            ),
            error_uri: field(&["error_uri"], MAX_URI_CHARS),
            retry_after: answer.retry_after,
            location: answer
                .location
                .as_deref()
                .map(|l| scrubber.line(l, MAX_URI_CHARS)),
        }
    }

    /// `HTTP 502, text/html, 1234 bytes`.
    pub(crate) fn summary(&self) -> String {
        let mut out = format!("HTTP {}", self.status);
        if let Some(ct) = &self.content_type {
            out.push_str(", ");
            out.push_str(ct);
        }
        if self.body_len == 0 {
            out.push_str(", empty body");
        } else {
            out.push_str(&format!(", {} bytes", self.body_len));
        }
        out
    }

    /// What the server said in words, if it did:
    /// ` code "description" (see URI)`.
    pub(crate) fn said(&self) -> String {
        let mut out = String::new();
        if let Some(code) = &self.error {
            out.push(' ');
            out.push_str(code);
        }
        if let Some(d) = &self.description {
            out.push_str(&format!(" \"{d}\""));
        }
        if let Some(uri) = &self.error_uri {
            out.push_str(&format!(" (see {uri})"));
        }
        out
    }

    /// The error: `{url} answered the {what} with HTTP .., ..: "said"; {advice}`,
    /// with the status and `Retry-After` attached.
    pub(crate) fn error(
        &self,
        kind: ErrorKind,
        transient: bool,
        url: &str,
        what: &str,
        advice: &str,
    ) -> Error {
        let said = self.said();
        let said = if said.is_empty() {
            String::new()
        } else {
            format!(":{said}")
        };
        Error::new(
            kind,
            format!(
                "{url} answered the {what} with {}{said}; {advice}",
                self.summary()
            ),
        )
        .with_status(self.status)
        .with_retry_after(self.retry_after)
        .transient(transient)
    }

    /// The RFC 6749 §5.2 error, when the answer is one: its code,
    /// description and URI, all scrubbed.
    pub(crate) fn oauth_error(&self) -> Option<Error> {
        let code = self.error.as_deref()?;
        let mut err = Error::oauth(self.status, code, self.description.clone())
            .with_retry_after(self.retry_after);
        if let Some(uri) = &self.error_uri {
            err = err.with_suffix(format!(" (see {uri})"));
        }
        // A server that says "try later" with 429/5xx means it, whatever the code.
        if self.status == 429 || self.status >= 500 {
            err = err.transient(true);
        }
        Some(err)
    }
}

/// The kind, transience and advice of a failed answer from AIM (token
/// endpoint, discovery): 5xx, 429 and 408 are transient server trouble, a
/// redirect is refused, anything else is not what the protocol promises.
pub(crate) fn default_verdict(facts: &Facts) -> (ErrorKind, bool, String) {
    let status = facts.status;
    // 501 Not Implemented and 505 HTTP Version Not Supported are permanent
    // (RFC 9110 §15.6.2, §15.6.6): a web server that is not AIM answers a
    // POST with 501, and asking it again cannot help.
    if status == 501 || status == 505 {
        return (
            ErrorKind::InvalidResponse,
            false,
            "that server is not AIM's token endpoint (not implemented): check that the authority points to AIM (https://HOST/identitymanager)".to_owned(),
        );
    }
    if status == 429 || status == 408 || status >= 500 {
        return (
            ErrorKind::Server,
            true,
            "AIM or a proxy in front of it is in trouble, try again later".to_owned(),
        );
    }
    if (300..400).contains(&status) {
        let to = facts
            .location
            .as_deref()
            .map(|l| format!(" to {l}"))
            .unwrap_or_default();
        return (
            ErrorKind::InvalidResponse,
            false,
            format!("it redirects{to}, and redirects are not followed so that credentials cannot leak to another host: configure the final URL as the authority or token endpoint"),
        );
    }
    (
        ErrorKind::InvalidResponse,
        false,
        "that is not an OAuth answer: check that the authority points to AIM (https://HOST/identitymanager)".to_owned(),
    )
}

/// The error of a failed answer from AIM by [`default_verdict`]; a §5.2
/// code in it is shown, not turned into [`ErrorKind::OAuth`] (that is for
/// the token endpoint's own answers, see [`Facts::oauth_error`]).
pub(crate) fn aim_error(answer: &Answer<'_>, url: &str, what: &str, scrubber: &Scrubber) -> Error {
    let facts = Facts::of(answer, url, what, scrubber);
    let (kind, transient, advice) = default_verdict(&facts);
    facts.error(kind, transient, url, what, &advice)
}

/// A UTF-8 byte order mark, which some Windows servers put before JSON.
pub(crate) fn without_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber() -> Scrubber {
        Scrubber::for_secrets(["s3cr3t&+x"])
    }

    #[test]
    fn facts_keep_fields_not_bodies() {
        let body = br#"{"error":"invalid_client","error_description":"bad s3cr3t\u0026\u002Bx\r\nFORGED","error_uri":"https://h/x","other":"RAWBODY"}"#;
        let mut answer = Answer::new(400, body);
        answer.content_type = Some("application/json\r\nX: y".into());
        let facts = Facts::of(&answer, "https://a/t", "token request", &scrubber());
        assert_eq!(facts.error.as_deref(), Some("invalid_client"));
        assert_eq!(facts.description.as_deref(), Some("bad [redacted]  FORGED"));
        assert_eq!(
            facts.content_type.as_deref(),
            Some("application/json  X: y")
        );
        assert_eq!(facts.body_len, body.len() as u64);
        let err = facts.error(
            ErrorKind::InvalidResponse,
            false,
            "https://a/t",
            "token request",
            "fix it",
        );
        let msg = err.to_string();
        assert!(!msg.contains("RAWBODY") && !msg.contains("s3cr3t"), "{msg}");
        assert!(msg.contains("HTTP 400, application/json  X: y,"), "{msg}");
        assert!(msg.ends_with("; fix it"), "{msg}");
        let oauth = facts.oauth_error().unwrap();
        assert_eq!(oauth.oauth_description(), Some("bad [redacted]  FORGED"));
        assert!(oauth.to_string().ends_with(" (see https://h/x)"), "{oauth}");
        assert!(
            msg.contains(": invalid_client \"bad [redacted]  FORGED\""),
            "{msg}"
        );
    }

    #[test]
    fn non_json_bodies_say_only_their_shape() {
        let page = b"<html><body>Server Error s3cr3t&amp;+x</body></html>";
        let err = aim_error(
            &Answer::new(502, page),
            "https://a/t",
            "token request",
            &scrubber(),
        );
        assert_eq!(err.kind(), ErrorKind::Server);
        assert!(err.is_transient());
        let msg = err.to_string();
        assert!(msg.contains(&format!("{} bytes", page.len())), "{msg}");
        assert!(!msg.contains("Server Error"), "{msg}");
        let err = aim_error(
            &Answer::new(401, b""),
            "https://a/t",
            "token request",
            &scrubber(),
        );
        assert!(err.to_string().contains("empty body"), "{err}");
    }
}
