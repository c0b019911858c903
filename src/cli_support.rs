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
