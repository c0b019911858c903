//! The one error type of the crate.

pub(crate) mod answer;

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, broadly. Match on this, then ask the [`Error`] for details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The client was configured wrongly (bad authority, missing client ID, bad PEM, ...).
    /// The message says what to fix. Never transient.
    Config,
    /// The connection failed: refused, reset, DNS, dropped mid-answer.
    Transport,
    /// A connect or request timeout, or the retry deadline, ran out.
    Timeout,
    /// The server's TLS certificate was not trusted or the handshake failed.
    Tls,
    /// The authorization server answered with an RFC 6749 §5.2 error
    /// (`invalid_client`, `invalid_scope`, ...); see [`Error::oauth_error`].
    OAuth,
    /// The server answered something that is not what the protocol promises:
    /// an HTML error page, an empty or truncated body, a missing `access_token`.
    InvalidResponse,
    /// A resource server (MES) rejected the bearer token (HTTP 401).
    Unauthorized,
    /// A resource server (MES) refused the call (HTTP 403): the token is fine,
    /// the identity behind it lacks a privilege.
    Forbidden,
    /// A resource server (MES) does not know the resource (HTTP 404).
    NotFound,
    /// A resource server (MES) rejected the request as malformed (HTTP 400).
    BadRequest,
    /// A server failed (HTTP 5xx) or answered an unexpected status.
    Server,
    /// The server does not offer what was asked for, e.g. no dynamic
    /// client registration endpoint.
    Unsupported,
    /// The request was refused before it was sent, to protect the token
    /// (plain http to a remote host, a host outside the allow list).
    Refused,
}

/// The OAuth 2.0 error of a token endpoint answer (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
struct OAuthError {
    error: String,
    description: Option<String>,
}

/// The error of every fallible operation in this crate.
///
/// Opaque on purpose (like `reqwest::Error`): ask it what you need with
/// [`kind`](Error::kind), [`is_transient`](Error::is_transient),
/// [`status`](Error::status), [`oauth_error`](Error::oauth_error),
/// [`retry_after`](Error::retry_after); the underlying cause is in
/// [`source`](std::error::Error::source). It is cheap to clone, so one
/// failed token request can be handed to every caller that waited for it.
///
/// Its `Display` says what to do next where it can, and it never contains
/// a client secret or an access token.
///
/// ```
/// use aim_token::{AimClient, ErrorKind};
///
/// let err = AimClient::builder().authority("ftp://sms01").client_id("id").client_secret("s").build().unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Config);
/// assert!(!err.is_transient());
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    message: String,
    status: Option<u16>,
    oauth: Option<OAuthError>,
    retry_after: Option<Duration>,
    transient: bool,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with `message`; transient when `kind` is
    /// `Transport` or `Timeout`.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let transient = matches!(kind, ErrorKind::Transport | ErrorKind::Timeout);
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                status: None,
                oauth: None,
                retry_after: None,
                transient,
                source: None,
            }),
        }
    }

    /// A configuration error; `message` should say what to fix.
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// An RFC 6749 §5.2 error answer. Transient only for the codes that
    /// mean "try again later".
    pub(crate) fn oauth(
        status: u16,
        error: impl Into<String>,
        description: Option<String>,
    ) -> Self {
        let error = error.into();
        let hint = oauth_hint(&error);
        let mut message = match &description {
            Some(d) if !d.is_empty() => format!("{error}: {d}"),
            _ => error.clone(),
        };
        if let Some(hint) = hint {
            message.push_str(" (");
            message.push_str(hint);
            message.push(')');
        }
        let transient = matches!(
            error.as_str(),
            "temporarily_unavailable" | "server_error" | "slow_down"
        );
        let mut err = Self::new(ErrorKind::OAuth, message)
            .with_status(status)
            .transient(transient);
        err.inner.oauth = Some(OAuthError { error, description });
        err
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.inner.status = Some(status);
        self
    }

    pub(crate) fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.inner.retry_after = retry_after;
        self
    }

    pub(crate) fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.inner.source = Some(Arc::new(source));
        self
    }

    pub(crate) fn transient(mut self, transient: bool) -> Self {
        self.inner.transient = transient;
        self
    }

    /// Appends to the message, e.g. where the server says to read more.
    pub(crate) fn with_suffix(mut self, suffix: impl fmt::Display) -> Self {
        self.inner.message = format!("{}{suffix}", self.inner.message);
        self
    }

    /// Prefixes the message with context, e.g. the URL that was being fetched.
    pub(crate) fn context(mut self, context: impl fmt::Display) -> Self {
        self.inner.message = format!("{context}: {}", self.inner.message);
        self
    }

    /// What went wrong, broadly.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Whether trying again later may succeed: connection failures, timeouts,
    /// HTTP 5xx and 429, and OAuth `temporarily_unavailable`. Permanent
    /// problems (bad configuration, `invalid_client`, ...) return `false`.
    pub fn is_transient(&self) -> bool {
        self.inner.transient
    }

    /// The HTTP status of the answer that caused this error, if there was one.
    pub fn status(&self) -> Option<u16> {
        self.inner.status
    }

    /// The OAuth `error` code (`"invalid_client"`, `"invalid_scope"`, ...)
    /// when the kind is [`ErrorKind::OAuth`].
    pub fn oauth_error(&self) -> Option<&str> {
        self.inner.oauth.as_ref().map(|o| o.error.as_str())
    }

    /// The OAuth `error_description`, when the server sent one.
    pub fn oauth_description(&self) -> Option<&str> {
        self.inner
            .oauth
            .as_ref()
            .and_then(|o| o.description.as_deref())
    }

    /// How long the server asked us to wait (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// `true` for [`ErrorKind::Config`].
    pub fn is_config(&self) -> bool {
        self.inner.kind == ErrorKind::Config
    }

    /// `true` for [`ErrorKind::Timeout`].
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == ErrorKind::Timeout
    }

    /// `true` for [`ErrorKind::Tls`].
    pub fn is_tls(&self) -> bool {
        self.inner.kind == ErrorKind::Tls
    }

    /// `true` for [`ErrorKind::OAuth`].
    pub fn is_oauth(&self) -> bool {
        self.inner.kind == ErrorKind::OAuth
    }
}

/// What to do about the OAuth errors that a misconfigured client meets.
fn oauth_hint(error: &str) -> Option<&'static str> {
    Some(match error {
        "invalid_client" => {
            "check the client ID and secret registered with AIM, and that the client is enabled"
        }
        "invalid_scope" => {
            "request only scopes the client is allowed in AIM (its ScopeRestrictions), or none"
        }
        "unauthorized_client" => "allow the ClientCredentials grant type for this client in AIM",
        "unsupported_grant_type" => {
            "the server does not support client credentials at this endpoint"
        }
        "invalid_request" => "the server rejected the request format; check the token endpoint URL",
        _ => return None,
    })
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("aim_token::Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(status) = self.inner.status {
            d.field("status", &status);
        }
        if let Some(oauth) = &self.inner.oauth {
            d.field("oauth_error", &oauth.error);
        }
        if let Some(ra) = self.inner.retry_after {
            d.field("retry_after", &ra);
        }
        d.field("transient", &self.inner.transient);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_error_says_what_to_fix() {
        let err = Error::oauth(400, "invalid_client", Some("Invalid client secret".into()));
        assert_eq!(err.kind(), ErrorKind::OAuth);
        assert_eq!(err.oauth_error(), Some("invalid_client"));
        assert_eq!(err.oauth_description(), Some("Invalid client secret"));
        assert_eq!(err.status(), Some(400));
        assert!(!err.is_transient());
        assert!(err.to_string().contains("check the client ID and secret"));
    }

    #[test]
    fn temporarily_unavailable_is_transient() {
        assert!(Error::oauth(503, "temporarily_unavailable", None).is_transient());
    }

    #[test]
    fn error_is_send_sync_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Error>();
    }
}
