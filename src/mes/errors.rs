//! What a non-2xx MES answer means, in MES's own terms (AVEVA's "Error
//! Handling" for the Web API V3): the status, and for the 404s and the 500
//! the documented phrases of MES's `Message`. Built from the crate's one
//! answer path ([`Facts`]: status, content type, length, the scrubbed
//! one-line `Message`), never from the raw body: servers echo requests and
//! secrets in it.

use super::{scrubber_for, WHAT};
use crate::bearer::Refusal;
use crate::error::answer::{Answer, Facts, MAX_CODE_CHARS, MAX_DESCRIPTION_CHARS};
use crate::error::{Error, ErrorKind};
use crate::exchange::scrub::Scrubber;
use crate::token::AccessToken;

/// Why MES answered 404: AVEVA documents four causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotFound {
    /// "You do not have the appropriate privileges to access this entity".
    Privilege,
    /// The `trans_id` "doesn't exist": timed out or never started.
    Transaction,
    /// ASP.NET's "No HTTP resource was found that matches the request URI":
    /// a wrong endpoint name or a missing required parameter.
    NoEndpoint,
    /// The object does not exist ("The specified entity does not exist"),
    /// or a 404 without a recognised body.
    Object,
    /// Not MES's JSON at all (IIS's HTML page): nothing of the Web API is
    /// at this path.
    NotMes,
}

impl NotFound {
    pub(crate) fn of(body: &str) -> NotFound {
        let text = body.to_ascii_lowercase();
        if text.contains("appropriate privileges") {
            NotFound::Privilege
        } else if text.contains("transaction")
            && (text.contains("doesn't exist") || text.contains("does not exist"))
        {
            NotFound::Transaction
        } else if text.contains("no http resource") {
            NotFound::NoEndpoint
        } else {
            NotFound::Object
        }
    }

    fn explain(self) -> &'static str {
        match self {
            NotFound::Privilege => {
                "MES refused the call for lack of a privilege (\"You do not have the appropriate \
                 privileges\"). Service-to-service calls run as the Default Background \
                 User (MES system attribute 199): grant that user the privilege in MES Client, or \
                 point attribute 199 at a user who has it. MES caches this user: the change applies \
                 after a restart of the MES middleware, or within an hour"
            }
            NotFound::Transaction => {
                "MES does not know this transaction ID: the transaction timed out or was \
                 never started, so its changes are gone. Start a new one (POST api/v3/transaction) \
                 and finish its calls before MES's transaction timeout"
            }
            NotFound::NoEndpoint => {
                "MES has no endpoint for this URL: the endpoint name is wrong or a \
                 required parameter is missing (parameter names as in AVEVA's MES Web API V3 \
                 reference; V3 paths start with api/v3/)"
            }
            NotFound::Object => "MES does not have the requested object",
            NotFound::NotMes => {
                "No MES Web API answered at this URL (the 404 is not MES's JSON, e.g. a web \
                 server's own page): check the MES base URL, https://HOST/mesmw/"
            }
        }
    }
}

/// Whether a 500's body says MES could not get or check the token at AIM.
fn says_token_unavailable(body: &str) -> bool {
    let text = body.to_ascii_lowercase();
    text.contains("token")
        && ["obtain", "verif", "validat", "retriev", "acquir"]
            .iter()
            .any(|verb| text.contains(verb))
}

/// The error for a non-2xx MES answer: a fixed explanation, then the
/// answer's facts and MES's own (scrubbed) words. `body` (as far as it was
/// read) is only searched for the documented phrases, never quoted: MES
/// answers JSON with a `Message`, but a proxy or IIS may not.
pub(crate) fn mes_error(facts: &Facts, body: &[u8], refusal: Option<&Refusal>) -> Error {
    let status = facts.status;
    if let Some(why) = refusal.and_then(Refusal::explain) {
        // A 401 that no token fixes: what MES asked for instead.
        return Error::new(
            ErrorKind::Unauthorized,
            format!("{why} [{}]{}", facts.summary(), facts.said()),
        )
        .with_status(status);
    }
    let lossy = String::from_utf8_lossy(body);
    let text = facts.description.as_deref().unwrap_or(&lossy);
    let (kind, transient, explanation): (ErrorKind, bool, &str) = match status {
        400 => (
            ErrorKind::BadRequest,
            false,
            "MES rejected the request: a parameter has the wrong type or is out of \
             range, a required member of the model is missing, or MES's business logic refused it",
        ),
        401 => (
            ErrorKind::Unauthorized,
            false,
            "MES rejected the access token: check that MES \
             uses this AIM (the same System Management Server) and that the clocks of MES and AIM \
             agree",
        ),
        403 => (
            ErrorKind::Forbidden,
            false,
            "MES refused the call: the token is valid, but the caller has no permission \
             for this request. Service-to-service calls run as the Default Background User (MES \
             system attribute 199): grant it the permission in MES Client",
        ),
        404 => {
            let not_json = facts
                .content_type
                .as_deref()
                .is_some_and(|t| !t.to_ascii_lowercase().contains("json"));
            let cause = match NotFound::of(text) {
                NotFound::Object if facts.description.is_none() && not_json => NotFound::NotMes,
                cause => cause,
            };
            (ErrorKind::NotFound, false, cause.explain())
        }
        405 => (
            ErrorKind::BadRequest,
            false,
            "MES does not allow this HTTP method on this endpoint, e.g. a PUT on an \
             endpoint that only has a GET",
        ),
        500 if says_token_unavailable(text) => (
            ErrorKind::Server,
            true,
            "AIM unreachable from MES: MES could not obtain or verify the access token, as \
             when the System Management Server running AVEVA Identity Manager is offline. Check \
             that the MES server can reach AIM and trusts its certificate; retrying later may \
             succeed",
        ),
        408 | 429 | 502 | 503 | 504 => (ErrorKind::Server, true, "MES is unavailable; retry later"),
        300..=399 => {
            let to = facts
                .location
                .as_deref()
                .map(|l| format!(" to {l}"))
                .unwrap_or_default();
            let message = format!(
                "MES redirects{to}, and the token does not follow redirects (it must not reach \
                 another host): give the MES base it points to (often https:// instead of \
                 http://, or the host name the server expects), https://HOST/mesmw/ [{}]",
                facts.summary()
            );
            return Error::new(ErrorKind::InvalidResponse, message).with_status(status);
        }
        _ => (ErrorKind::Server, false, "MES failed"),
    };
    let message = format!("{explanation} [{}]{}", facts.summary(), facts.said());
    Error::new(kind, message)
        .with_status(status)
        .with_retry_after(facts.retry_after)
        .transient(transient)
}

/// The error of a non-2xx MES answer to a call made with `tokens` (the
/// fuzz targets' door; calls read the 401 first: `refused_answer_error`).
#[cfg(feature = "__fuzz")]
pub(crate) fn answer_error(answer: &Answer<'_>, url: &str, tokens: &[AccessToken]) -> Error {
    refused_answer_error(answer, url, tokens, &Refused::default())
}

/// What a 401 said beyond its body: why ([`Refusal`]) and its Bearer
/// challenge's `error` and `error_description`.
#[derive(Default)]
pub(crate) struct Refused<'a> {
    pub(crate) refusal: Option<&'a Refusal>,
    pub(crate) challenge: (Option<String>, Option<String>),
}

/// [`answer_error`] for an answer whose 401 was read as `refused`.
pub(crate) fn refused_answer_error(
    answer: &Answer<'_>,
    url: &str,
    tokens: &[AccessToken],
    refused: &Refused<'_>,
) -> Error {
    let scrubber = scrubber_for(tokens);
    let mut facts = Facts::of(answer, url, WHAT, &scrubber);
    // The challenge's words where the body has none, scrubbed the same way.
    if facts.error.is_none() && facts.description.is_none() {
        (facts.error, facts.description) = challenge_shown(&refused.challenge, &scrubber);
    }
    mes_error(&facts, answer.body, refused.refusal)
}

/// What may be shown of a Bearer challenge's `error` and
/// `error_description` ([`crate::bearer::stated`]): scrubbed of the tokens
/// that were sent (servers quote them) before it is cut to length, one
/// line each. MesClient's errors and `aim-token check` both show it so.
pub(crate) fn challenge_shown(
    (error, description): &(Option<String>, Option<String>),
    scrubber: &Scrubber,
) -> (Option<String>, Option<String>) {
    let shown = |text: &Option<String>, max| {
        text.as_deref()
            .map(|t| scrubber.line(t, max))
            .filter(|t| !t.is_empty())
    };
    (
        shown(error, MAX_CODE_CHARS),
        shown(description, MAX_DESCRIPTION_CHARS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::answer::Answer;
    use crate::exchange::scrub::Scrubber;

    fn status_error(status: u16, content_type: Option<&str>, body: &[u8]) -> Error {
        let mut answer = Answer::new(status, body);
        answer.content_type = content_type.map(str::to_owned);
        let facts = Facts::of(
            &answer,
            "https://mes01/mesmw/api/v3/x",
            "MES call",
            &Scrubber::default(),
        );
        mes_error(&facts, body, None)
    }

    #[test]
    fn the_four_404s_are_told_apart_by_their_documented_bodies() {
        let cases = [
            (
                r#"{"Message":"You do not have the appropriate privileges to access this entity"}"#,
                NotFound::Privilege,
                "Default Background User",
            ),
            (
                r#"{"Message":"The transaction ID 'x' doesn't exist: it timed out or was not started."}"#,
                NotFound::Transaction,
                "timed out",
            ),
            (
                r#"{"Message":"No HTTP resource was found that matches the request URI 'https://mes/mesmw/api/v3/Jobs/key'."}"#,
                NotFound::NoEndpoint,
                "required parameter",
            ),
            (
                r#"{"Message":"The specified entity does not exist"}"#,
                NotFound::Object,
                "does not have the requested object",
            ),
            ("", NotFound::Object, "requested object"),
        ];
        for (body, cause, phrase) in cases {
            assert_eq!(NotFound::of(body), cause, "{body}");
            let err = status_error(404, Some("application/json"), body.as_bytes());
            assert_eq!(err.kind(), ErrorKind::NotFound);
            assert_eq!(err.status(), Some(404));
            assert!(!err.is_transient());
            let text = err.to_string();
            assert!(text.contains(phrase), "{text}");
            if !body.is_empty() {
                let facts = format!("[HTTP 404, application/json, {} bytes]", body.len());
                assert!(text.contains(&facts), "{text}");
            }
        }
        let privilege = status_error(404, None, cases[0].0.as_bytes()).to_string();
        for needle in ["attribute 199", "restart", "hour"] {
            assert!(privilege.contains(needle), "{privilege}");
        }
    }

    /// IIS's own 404 page (no MES under this path: a base without
    /// `/mesmw/`) is not "MES does not have the object".
    #[test]
    fn a_404_page_that_is_not_mes_points_at_the_base_url() {
        let page = b"<html><head><title>404 - File or directory not found.</title></head></html>";
        let err = status_error(404, Some("text/html"), page);
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let text = err.to_string();
        assert!(text.contains("MES base URL"), "{text}");
        assert!(!text.contains("requested object"), "{text}");
        assert!(!text.contains("File or directory"), "{text}");
        // MES's own JSON 404s keep their meaning.
        let err = status_error(
            404,
            Some("application/json; charset=utf-8"),
            br#"{"Message":"The specified entity does not exist"}"#,
        );
        assert!(err.to_string().contains("requested object"), "{err}");
    }

    #[test]
    fn statuses_map_to_kinds_and_never_carry_the_body() {
        let secret_body = b"echo: Bearer eyJhbGciOi.secret.token client_secret=hunter2";
        let cases = [
            (400, ErrorKind::BadRequest, false),
            (401, ErrorKind::Unauthorized, false),
            (403, ErrorKind::Forbidden, false),
            (404, ErrorKind::NotFound, false),
            (405, ErrorKind::BadRequest, false),
            (500, ErrorKind::Server, false),
            (503, ErrorKind::Server, true),
            (409, ErrorKind::Server, false),
        ];
        for (code, kind, transient) in cases {
            let err = status_error(code, Some("text/plain\r\nX: y"), secret_body);
            assert_eq!(err.kind(), kind, "{code}");
            assert_eq!(err.status(), Some(code));
            assert_eq!(err.is_transient(), transient, "{code}");
            let text = err.to_string();
            assert!(!text.contains("eyJ") && !text.contains("hunter2"), "{text}");
            assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
        }
        let err = status_error(403, None, b"");
        assert!(err.to_string().contains("Default Background User"));
        assert!(err.to_string().contains("405") || !err.to_string().is_empty());
        assert!(status_error(405, None, b"")
            .to_string()
            .contains("HTTP 405"));
    }

    #[test]
    fn a_500_about_the_token_is_aim_unreachable_and_transient() {
        let err = status_error(
            500,
            None,
            b"An authentication token cannot be obtained or verified",
        );
        assert!(err.is_transient());
        assert!(err.to_string().starts_with("AIM unreachable from MES"));
        let other = status_error(
            500,
            None,
            b"Object reference not set to an instance of an object.",
        );
        assert!(!other.is_transient(), "MES business errors are not retried");
    }
}
