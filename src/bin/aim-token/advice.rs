//! What a failed token request means and what to do about it, in the
//! tool's terms (flags and environment variables, never library method
//! names): the one translation `token` and `check` share.

use std::time::{Duration, SystemTime};

use aim_token::{Error, ErrorKind};

use crate::decode::{human, Jwt};
use crate::exit;

/// A verdict: the reason, the fix, the exit code.
#[derive(Debug)]
pub(crate) struct Advice {
    pub(crate) reason: String,
    pub(crate) fix: String,
    pub(crate) code: u8,
}

impl Advice {
    pub(crate) fn new(code: u8, reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Advice {
            reason: reason.into(),
            fix: fix.into(),
            code,
        }
    }

    /// Prints the advice on stderr (for `token`) and returns the exit code.
    pub(crate) fn report(self) -> u8 {
        crate::config::clear_progress();
        eprintln!("error: {}", self.reason);
        eprintln!("fix: {}", self.fix);
        self.code
    }
}

/// What the token request knew when it failed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// The AIM host name, as in the authority.
    pub(crate) host: &'a str,
    /// `--timeout`.
    pub(crate) timeout: Duration,
    /// Whether AIM answered an earlier request (the discovery document).
    pub(crate) reached: bool,
    /// The proxy the request went through, password hidden.
    pub(crate) proxy: Option<&'a str>,
}

/// What to do when TLS fails through an `https://` proxy: the certificate
/// that failed may be the proxy's as well as AIM's.
pub(crate) const HTTPS_PROXY_TRUST_FIX: &str = "trust the CA of AIM's certificate and that of the https proxy's: \
     put both in the --ca-cert / AIM_CA_CERT file (concatenated PEM), or speak to the proxy over plain http \
     (--proxy http://HOST:PORT)";

/// Whether `proxy` (as shown) is spoken to over TLS.
pub(crate) fn is_https_proxy(proxy: Option<&str>) -> bool {
    proxy.is_some_and(|p| p.starts_with("https://"))
}

/// What to do when the authority answers, but not as AIM: it names another
/// web site (its discovery or token path is not found, or not JSON).
pub(crate) const NOT_AIM_FIX: &str =
    "check --authority / AIM_AUTHORITY: it must name the AIM server \
     (https://HOST/identitymanager), not another web site on the same host";

/// What to do when the way to AIM through a proxy fails: the proxy, not
/// AIM, refused or dropped the tunnel (or could not reach AIM).
pub(crate) const PROXY_FIX: &str = "check the proxy (--proxy, or HTTPS_PROXY / HTTP_PROXY): that it runs, \
     that it lets this machine CONNECT to AIM's host and port, and the user and password it asks for \
     (--proxy http://USER:PASSWORD@HOST:PORT); or exempt AIM from it with NO_PROXY=HOST";

/// The advice for a failed token request.
pub(crate) fn token_error(err: &Error, cx: Context<'_>) -> Advice {
    let code = exit::for_error(err);
    let err = last_attempt(err);
    let timeout = human(cx.timeout);
    match err.kind() {
        ErrorKind::Timeout if cx.reached => Advice::new(
            code,
            format!("AIM answered the discovery request, but the token request got no answer within {timeout}"),
            "AIM is reachable but its token endpoint hangs: check the AIM service and its IIS application \
             pool on the SMS node, or allow more time with --timeout SECONDS",
        ),
        ErrorKind::Timeout => Advice::new(
            code,
            format!("no answer from AIM at {} within {timeout}", cx.host),
            "check that AIM (IIS) is running on the SMS node and that no firewall or proxy holds the \
             connection, or allow more time with --timeout SECONDS",
        ),
        ErrorKind::Tls if is_https_proxy(cx.proxy) => Advice::new(
            code,
            format!(
                "TLS with {} or with the https proxy {} failed: {}",
                cx.host,
                cx.proxy.unwrap_or_default(),
                root_cause(err)
            ),
            HTTPS_PROXY_TRUST_FIX,
        ),
        ErrorKind::Tls => match aim_token::__cli::find_rustls_error(err) {
            Some(tls) => {
                let (why, fix) = crate::tls::explain(tls, cx.host, &crate::tls::Presented::default());
                Advice::new(code, format!("TLS with {}: {why}", cx.host), fix)
            }
            None => Advice::new(
                code,
                format!("TLS with {} failed: {}", cx.host, root_cause(err)),
                crate::tls::TRUST_FIX,
            ),
        },
        ErrorKind::Transport if cx.proxy.is_some() => Advice::new(
            code,
            format!(
                "cannot reach AIM at {} through the proxy {}: {}",
                cx.host,
                cx.proxy.unwrap_or_default(),
                root_cause(err)
            ),
            PROXY_FIX,
        ),
        ErrorKind::Transport => Advice::new(
            code,
            format!("cannot reach AIM at {}: {}", cx.host, root_cause(err)),
            "check that AIM (IIS) is running on the SMS node and that firewalls allow the connection \
             from this machine",
        ),
        ErrorKind::OAuth => {
            let error = err.oauth_error().unwrap_or("an OAuth error");
            let reason = match err.oauth_description() {
                Some(description) => format!("AIM refused the token request: {error} ({description})"),
                None => format!("AIM refused the token request: {error}"),
            };
            Advice::new(code, reason, oauth_fix(err.oauth_error()))
        }
        _ => match err.status() {
            // What a web server that is not AIM answers a POST to
            // /connect/token: not found, method not allowed, not implemented.
            Some(status @ (404 | 405 | 501)) => Advice::new(
                code,
                format!(
                    "the server at {} answered the token request with HTTP {status}: it is not AIM's token endpoint",
                    cx.host
                ),
                NOT_AIM_FIX,
            ),
            Some(status) if status >= 500 => Advice::new(
                code,
                format!("AIM (or a proxy in front of it) failed with HTTP {status}"),
                "see AIM's log on the SMS node (and any proxy's); try again once it is healthy",
            ),
            _ => Advice::new(code, err.to_string(), "see the reason above"),
        },
    }
}

/// The error of the last attempt when the retry deadline ran out (the
/// library's `Timeout` carries it as its source): what actually failed. A
/// proxy that refuses every tunnel is not "no answer from AIM".
fn last_attempt(err: &Error) -> &Error {
    let mut err = err;
    // Bounded: a deadline wraps one attempt's error, which wraps no deadline.
    for _ in 0..4 {
        let inner = std::error::Error::source(err).and_then(|s| s.downcast_ref::<Error>());
        match inner {
            Some(inner) if err.kind() == ErrorKind::Timeout => err = inner,
            _ => break,
        }
    }
    err
}

/// How far a token's `iat`/`nbf` may lie ahead of this machine's clock
/// (IdentityServer's default clock skew).
const CLOCK_TOLERANCE: Duration = Duration::from_secs(300);

/// A token that this machine's clock calls expired, or not valid for a
/// while yet: the clocks of this machine and AIM disagree.
pub(crate) fn clock_problem(jwt: &Jwt, now: SystemTime) -> Option<Advice> {
    let fix = "synchronize this machine's clock with the SMS node's (w32tm /resync on Windows, \
               chrony or systemd-timesyncd elsewhere); a wrong time zone setting shifts it by whole hours";
    if let Some(exp) = jwt.time("exp") {
        if let Err(ago) = exp.duration_since(now) {
            return Some(Advice::new(
                exit::CLOCK,
                format!(
                    "the token is already expired by this machine's clock (expired {} ago)",
                    human(ago.duration())
                ),
                fix,
            ));
        }
    }
    let start = jwt.time("nbf").or_else(|| jwt.time("iat"))?;
    let ahead = start.duration_since(now).ok()?;
    (ahead > CLOCK_TOLERANCE).then(|| {
        Advice::new(
            exit::CLOCK,
            format!(
                "the token is not valid for another {} by this machine's clock: AIM's clock is ahead of this machine's",
                human(ahead)
            ),
            fix,
        )
    })
}

/// The fix for an OAuth error of the token endpoint.
pub(crate) fn oauth_fix(error: Option<&str>) -> &'static str {
    match error {
        Some("invalid_client") => {
            "check AIM_CLIENT_ID and AIM_CLIENT_SECRET against the registration \
             (Get-IdentityManagerClient on the SMS node) and that the client is enabled"
        }
        Some("invalid_scope") => {
            "request only scopes in the client's ScopeRestrictions (--scope / AIM_SCOPE), or none"
        }
        Some("unauthorized_client") => {
            "allow the ClientCredentials grant type for this client in AIM"
        }
        _ => "see the reason above",
    }
}

/// The innermost cause: what actually went wrong (the library's own text
/// around it names library settings).
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = err;
    // Bounded, in case of a cyclic chain.
    for _ in 0..32 {
        match last.source() {
            Some(next) => last = next,
            None => break,
        }
    }
    last.to_string()
}
