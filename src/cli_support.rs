//! What the `aim-token` binary shares with the library, so that it trusts
//! servers by the same rule (feature `cli`). Not API: hidden, no stability.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

pub use crate::ca_file::CaFileError;

/// A CA file (`--ca-cert`) as PEM certificates, read as `AIM_CA_CERT` is
/// read by `AimClient::from_env`: PEM or DER, UTF-8 or UTF-16.
///
/// # Errors
/// A file that cannot be read or holds no usable certificate.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, CaFileError> {
    crate::ca_file::read_pem(path)
}

/// The client secret as `AimClient::from_env` finds it (AIM_CLIENT_SECRET,
/// AIM_CLIENT_SECRET_FILE, systemd's credential), or `None` when none is set.
///
/// # Errors
/// A source that is set but unusable, naming it.
pub fn client_secret_from_env() -> crate::Result<Option<secrecy::SecretString>> {
    crate::secret_env::client_secret_if_set(|name| std::env::var(name).ok())
}

/// The client ID of `--client-id` / AIM_CLIENT_ID as the client uses it:
/// without the quotes cmd.exe keeps.
pub fn client_id(value: &str) -> &str {
    crate::config::client_id_as_configured(value)
}

/// The scopes of `--scope` / AIM_SCOPE values as the client requests them:
/// split as `AimClient::from_env` splits AIM_SCOPE, each once.
pub fn scope_list(values: &[String]) -> Vec<String> {
    crate::config::scope_set(
        values
            .iter()
            .flat_map(|v| crate::config::split_scope_list(v)),
    )
}

/// The client's rustls configuration for the OS store plus the CA
/// certificates in `pems`.
///
/// # Errors
/// PEM that holds no usable CA certificate.
pub fn tls_config_with_roots(pems: &[Vec<u8>]) -> crate::Result<rustls::ClientConfig> {
    crate::http::extra_roots_tls(pems)
}

/// A rustls configuration for `aim-token check`'s TLS step: every
/// handshake finishes, and the record keeps what the client's verifier
/// (the OS store plus the CA certificates in `pems`) said about the
/// server's certificate, so an untrusted certificate can still be shown
/// and explained. No ALPN: nothing is sent over it.
///
/// # Errors
/// PEM that is not valid, or a certificate in it that is not usable.
pub fn recording_tls_config(
    pems: &[Vec<u8>],
) -> crate::Result<(rustls::ClientConfig, Arc<TrustRecord>)> {
    let record = Arc::new(TrustRecord {
        inner: crate::http::extra_roots_verifier(pems)?,
        seen: Mutex::new(None),
    });
    let tls = crate::http::tls_with_verifier(record.clone())?;
    Ok((tls, record))
}

/// The server certificate of the last handshake and the client verifier's
/// verdict on it.
#[derive(Debug)]
pub struct TrustRecord {
    inner: Arc<dyn ServerCertVerifier>,
    seen: Mutex<Option<(CertificateDer<'static>, Result<(), rustls::Error>)>>,
}

impl TrustRecord {
    /// The certificate and the verdict, once a handshake got that far.
    pub fn take(&self) -> Option<(CertificateDer<'static>, Result<(), rustls::Error>)> {
        self.seen.lock().ok().and_then(|mut seen| seen.take())
    }
}

impl ServerCertVerifier for TrustRecord {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map(|_| ());
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some((end_entity.clone().into_owned(), verdict));
        }
        // Finish the handshake whatever the verdict: this connection carries
        // no secret, and the verdict is reported, not ignored.
        Ok(ServerCertVerified::assertion())
    }

    crate::tls::delegate_signature_checks!(inner);
}

/// The rustls error in an error's source chain, found as the client finds
/// it (through the `io::Error`s that reqwest, hyper and tokio-rustls wrap
/// it in), never by the message text.
pub fn find_rustls_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    crate::http::find_rustls_error(err)
}

/// Whether the OS's refusal says no more than "no root I trust issued
/// this" (in any of the ways Windows, Wine and macOS say it): the refusals
/// a trusted CA file fixes, by the client's own rule.
pub fn finds_no_trusted_root(err: &rustls::Error) -> bool {
    crate::tls::finds_no_trusted_root(err)
}

/// `url` for output, with any user name and password hidden (the one
/// redaction of every URL the crate prints).
pub fn without_userinfo(url: &str) -> String {
    crate::authority::without_userinfo(url)
}

/// The proxy `url` as the client builds it from `--proxy` (the builder's
/// rule: `http://` or `https://` and a host).
///
/// # Errors
/// A URL that is not a proxy URL, in words without its password.
pub fn proxy(url: &str) -> crate::Result<reqwest::Proxy> {
    crate::http::proxy(url)
}

/// What a 401's Bearer challenge states (`WWW-Authenticate: Bearer
/// error="..", error_description=".."`, RFC 6750 §3) as the library reads
/// and shows it: `error (description)`, one line each, without the token
/// `sent` (a server may quote it), as MesClient's errors show it.
pub fn bearer_reason(
    headers: &reqwest::header::HeaderMap,
    sent: &crate::AccessToken,
) -> Option<String> {
    let scrubber = crate::mes::scrubber_for(std::slice::from_ref(sent));
    let stated = crate::bearer::stated(headers);
    Some(match crate::mes::challenge_shown(&stated, &scrubber) {
        (Some(error), Some(description)) => format!("{error} ({description})"),
        (None, Some(description)) => description,
        (Some(error), None) => error,
        (None, None) => return None,
    })
}

/// Whether requests to `url` skip every proxy, explicit or from the
/// environment, by the client's rule: plain http to loopback.
pub fn goes_direct(url: &str) -> bool {
    url::Url::parse(url.trim()).is_ok_and(|u| crate::http::goes_direct(&u))
}

/// The proxy a request to `url` goes through, for output (user info
/// hidden): `explicit` (the builder's proxy) if given, else the proxy
/// environment variables as reqwest reads them (`HTTPS_PROXY`,
/// `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, through hyper-util's matcher,
/// which is reqwest's own), or none; none for a URL that [`goes_direct`].
pub fn proxy_shown_for(explicit: Option<&str>, url: &str) -> Option<String> {
    if goes_direct(url) {
        return None;
    }
    if let Some(explicit) = explicit {
        return Some(without_userinfo(explicit.trim()));
    }
    let uri: http::Uri = url.parse().ok()?;
    hyper_util::client::proxy::matcher::Matcher::from_system()
        .intercept(&uri)
        // The matcher keeps credentials apart: the URI holds none.
        .map(|proxy| without_userinfo(&proxy.uri().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(challenge: &str) -> Option<String> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::WWW_AUTHENTICATE,
            reqwest::header::HeaderValue::from_str(challenge).unwrap(),
        );
        let sent = crate::AccessToken::new("tok.en.sent", std::time::SystemTime::now());
        bearer_reason(&headers, &sent)
    }

    #[test]
    fn bearer_challenges() {
        let full = r#"Bearer realm="mes", error="invalid_token", error_description="The audience 'x' is invalid""#;
        assert_eq!(
            reason(full).as_deref(),
            Some("invalid_token (The audience 'x' is invalid)")
        );
        assert_eq!(
            reason(r#"bearer error="invalid_token""#).as_deref(),
            Some("invalid_token")
        );
        assert_eq!(reason("Basic realm=\"x\""), None);
        assert_eq!(reason("Bearer"), None);
        let long = format!("Bearer error_description=\"{}\"", "x".repeat(1000));
        assert!(reason(&long).unwrap().chars().count() <= 300);
        // The token sent is scrubbed before the cut: neither whole nor in part.
        let quoted = format!(
            "Bearer error_description=\"{} tok.en.sent expired\"",
            "x".repeat(290)
        );
        let shown = reason(&quoted).unwrap();
        assert!(!shown.contains("tok."), "{shown}");
    }
}
