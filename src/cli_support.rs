//! What the `aim-token` binary shares with the library, so that it trusts
//! servers by the same rule (feature `cli`). Not API: hidden, no stability.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;

/// The client's verifier: the OS trust store, plus `extra_roots` for what
/// the OS does not trust (src/tls.rs).
///
/// # Errors
/// An unusable extra root; without extra roots, no OS trust store.
pub fn server_verifier(
    extra_roots: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, rustls::Error> {
    crate::tls::server_verifier(extra_roots, provider)
}

/// The client's rustls configuration for the OS store plus the CA
/// certificates in `pems`.
///
/// # Errors
/// PEM that holds no usable CA certificate.
pub fn tls_config_with_roots(pems: &[Vec<u8>]) -> crate::Result<rustls::ClientConfig> {
    crate::http::extra_roots_tls(pems)
}

/// The rustls error in an error's source chain, found as the client finds
/// it (through the `io::Error`s that reqwest, hyper and tokio-rustls wrap
/// it in), never by the message text.
pub fn find_rustls_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    crate::http::find_rustls_error(err)
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

/// The proxy a request to `url` goes through, for output (user info
/// hidden): `explicit` (the builder's proxy) if given, else the proxy
/// environment variables as reqwest reads them (`HTTPS_PROXY`,
/// `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, through hyper-util's matcher,
/// which is reqwest's own), or none.
pub fn proxy_shown_for(explicit: Option<&str>, url: &str) -> Option<String> {
    if let Some(explicit) = explicit {
        return Some(without_userinfo(explicit.trim()));
    }
    let uri: http::Uri = url.parse().ok()?;
    hyper_util::client::proxy::matcher::Matcher::from_system()
        .intercept(&uri)
        // The matcher keeps credentials apart: the URI holds none.
        .map(|proxy| without_userinfo(&proxy.uri().to_string()))
}
