//! Exit codes: one per failure class, so scripts can tell what to fix.

use aim_token::{Error, ErrorKind};

/// Everything passed.
pub(crate) const OK: u8 = 0;
/// Bad flags or configuration (clap uses 2 for usage errors too).
pub(crate) const USAGE: u8 = 2;
/// Name resolution, connection, timeout.
pub(crate) const NETWORK: u8 = 3;
/// Untrusted certificate or failed handshake.
pub(crate) const TLS: u8 = 4;
/// AIM or MES refused the credentials or the token.
pub(crate) const AUTH: u8 = 5;
/// An unexpected or invalid answer; no registration endpoint.
pub(crate) const OTHER: u8 = 6;
/// The local clock is too far from the server's.
pub(crate) const CLOCK: u8 = 7;

/// The exit code for a library error.
pub(crate) fn for_error(err: &Error) -> u8 {
    match err.kind() {
        ErrorKind::Config | ErrorKind::Refused => USAGE,
        ErrorKind::Transport | ErrorKind::Timeout => NETWORK,
        ErrorKind::Tls => TLS,
        ErrorKind::Unauthorized | ErrorKind::Forbidden => AUTH,
        ErrorKind::OAuth => match err.oauth_error() {
            Some(
                "invalid_client"
                | "invalid_scope"
                | "unauthorized_client"
                | "invalid_token"
                | "access_denied",
            ) => AUTH,
            _ => OTHER,
        },
        _ => OTHER,
    }
}

/// Prints a library error on stderr and returns its exit code.
pub(crate) fn report(err: &Error) -> u8 {
    crate::config::clear_progress();
    eprintln!("error: {err}");
    for_error(err)
}
