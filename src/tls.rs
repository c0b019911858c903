//! Which server certificates are trusted, for the token client and the
//! CLI alike: the OS's verdict first (Windows' CryptoAPI with its trust
//! store, revocation and policies; macOS' Security framework; the system
//! bundle elsewhere), and only for a certificate the OS finds no trusted
//! root for, the configured extra roots (the PCS root CA) by rustls'
//! WebPKI verifier.
//!
//! This is what rustls-platform-verifier's `new_with_extra_roots` does too
//! (on Windows it asks the extra roots only when the chain is partial or
//! ends at an untrusted root), except that the second step is WebPKI
//! instead of a second Windows chain engine: that engine is built from a
//! `CERT_CHAIN_ENGINE_CONFIG` that Wine refuses, and a path that cannot run
//! under Wine has never run in CI.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::CertificateError;

/// Implements `ServerCertVerifier`'s signature methods by handing them to
/// the verifier in field `$inner`: the wrappers here decide about
/// certificates, never about signatures.
macro_rules! delegate_signature_checks {
    ($inner:ident) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.$inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.$inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.$inner.supported_verify_schemes()
        }
    };
}
// For the CLI's recording verifier (cli_support.rs).
#[cfg(feature = "cli")]
pub(crate) use delegate_signature_checks;

/// The crypto provider reqwest would pick: a process default if one was
/// installed, else aws-lc-rs.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// The verifier for the OS trust store plus `extra_roots`. A machine
/// without an OS store (a bare container) still trusts the extra roots.
///
/// # Errors
/// An extra root that is not a usable CA certificate; with no extra roots,
/// an OS store that cannot be loaded.
pub(crate) fn server_verifier(
    extra_roots: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, rustls::Error> {
    let os = rustls_platform_verifier::Verifier::new(provider.clone());
    if extra_roots.is_empty() {
        return Ok(Arc::new(os?));
    }
    let mut store = rustls::RootCertStore::empty();
    for (i, root) in extra_roots.into_iter().enumerate() {
        // rustls words this for a server's certificate ("invalid peer
        // certificate"); this one is from the CA file.
        store.add(root).map_err(|e| {
            rustls::Error::General(format!(
                "CA certificate #{} cannot be read as an X.509 certificate ({e})",
                i + 1
            ))
        })?;
    }
    let extra = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
        .build()
        .map_err(|e| rustls::Error::General(format!("unusable extra root certificate: {e}")))?;
    let os = match os {
        Ok(os) => Some(Arc::new(os) as Arc<dyn ServerCertVerifier>),
        Err(e) => {
            tracing::warn!("no OS trust store ({e}): only the given CA certificates are trusted");
            None
        }
    };
    Ok(Arc::new(OsThenExtraRoots { os, extra }))
}

/// The OS's verdict, and the extra roots' for what the OS finds no trusted
/// root for.
pub(crate) struct OsThenExtraRoots {
    os: Option<Arc<dyn ServerCertVerifier>>,
    extra: Arc<dyn ServerCertVerifier>,
}

impl fmt::Debug for OsThenExtraRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OsThenExtraRoots")
            .field("os", &self.os.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for OsThenExtraRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verify = |v: &Arc<dyn ServerCertVerifier>| {
            v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        };
        os_then_extra_roots(self.os.as_ref().map(verify), || verify(&self.extra))
    }

    delegate_signature_checks!(extra);
}

/// The rule: `os` is the OS's verdict (`None`: no OS store), `extra` asks
/// the extra roots.
fn os_then_extra_roots(
    os: Option<Result<ServerCertVerified, rustls::Error>>,
    extra: impl FnOnce() -> Result<ServerCertVerified, rustls::Error>,
) -> Result<ServerCertVerified, rustls::Error> {
    let os_error = match os {
        Some(Ok(verified)) => return Ok(verified),
        // The OS built a chain to a root it knows and refused it (revoked,
        // explicitly distrusted, expired, not for this name or purpose):
        // that stands, even if an extra root (one the OS may hold too)
        // would accept it; WebPKI here checks no revocation at all.
        Some(Err(e)) if !finds_no_trusted_root(&e) => return Err(e),
        Some(Err(e)) => Some(e),
        None => None,
    };
    match extra() {
        Ok(verified) => Ok(verified),
        // Not issued by an extra root either: the OS's reason stands.
        Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => Err(os_error
            .unwrap_or(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))),
        // Issued by an extra root, but wrong: that is the reason.
        Err(e) => Err(e),
    }
}

/// Whether the OS's refusal says only that the certificate does not chain
/// to a root the OS trusts: the one verdict the extra roots may overrule.
fn finds_no_trusted_root(os_error: &rustls::Error) -> bool {
    match os_error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => true,
        // rustls-platform-verifier maps only CERT_E_UNTRUSTEDROOT to
        // UnknownIssuer; a chain that reaches no root at all (the server
        // sends only its own certificate, issued by a CA not in the store)
        // is CERT_E_CHAINING, which it reports as the OS's message text.
        // That text is made here the same way, so it is matched whole.
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.to_string() == windows_error_text(CERT_E_CHAINING)
        }
        _ => false,
    }
}

/// `CERT_E_CHAINING`: "A certificate chain could not be built to a trusted
/// root authority."
const CERT_E_CHAINING: i32 = 0x800B_010A_u32 as i32;

/// The text rustls-platform-verifier gives a Windows error it does not map.
fn windows_error_text(hresult: i32) -> String {
    std::io::Error::from_raw_os_error(hresult).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    use CertificateError::{Expired, InvalidPurpose, NotValidForName, Revoked, UnknownIssuer};

    fn refused(e: CertificateError) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(e))
    }

    fn other(text: String) -> CertificateError {
        CertificateError::Other(rustls::OtherError(Arc::from(Box::<
            dyn std::error::Error + Send + Sync,
        >::from(text))))
    }

    /// The rule's verdict for the OS's (`None`: no OS store) and the extra
    /// roots' verdicts (`None`: trusted), and whether the extra roots were
    /// asked.
    fn verdict(
        os: Option<Option<CertificateError>>,
        extra: Option<CertificateError>,
    ) -> (Result<(), String>, bool) {
        let asked = Cell::new(false);
        let os = os.map(|v| v.map_or_else(|| Ok(ServerCertVerified::assertion()), refused));
        let result = os_then_extra_roots(os, || {
            asked.set(true);
            extra.map_or_else(|| Ok(ServerCertVerified::assertion()), refused)
        });
        let result = result.map(|_| ()).map_err(|e| match e {
            rustls::Error::InvalidCertificate(c) => format!("{c:?}"),
            other => panic!("{other}"),
        });
        (result, asked.get())
    }

    fn err(e: CertificateError) -> Result<(), String> {
        Err(format!("{e:?}"))
    }

    #[test]
    fn what_the_os_trusts_is_trusted_without_asking_the_extra_roots() {
        assert_eq!(verdict(Some(None), Some(UnknownIssuer)), (Ok(()), false));
    }

    #[test]
    fn what_the_os_finds_no_trusted_root_for_is_trusted_if_an_extra_root_issued_it() {
        assert_eq!(verdict(Some(Some(UnknownIssuer)), None), (Ok(()), true));
        // Windows, for a server that sends only its own certificate.
        let chaining = other(windows_error_text(CERT_E_CHAINING));
        assert_eq!(verdict(Some(Some(chaining)), None), (Ok(()), true));
        // No OS store at all (bare container): the extra roots alone.
        assert_eq!(verdict(None, None), (Ok(()), true));
    }

    #[test]
    fn a_refusal_of_a_chain_the_os_could_build_stands_whatever_the_extra_roots_say() {
        // The PCS root CA is in the Windows store and given as AIM_CA_CERT
        // too; the CA revoked AIM's certificate. WebPKI checks no
        // revocation, so asking it would let the revoked certificate in.
        for os in [Revoked, Expired, NotValidForName, InvalidPurpose] {
            assert_eq!(
                verdict(Some(Some(os.clone())), None),
                (err(os.clone()), false),
                "{os:?}"
            );
        }
        // An OS reason the platform verifier passes on as text (Windows:
        // the CA is in the Disallowed store; macOS: a trust setting).
        let distrust = other(windows_error_text(0x800B_0111_u32 as i32));
        assert_eq!(
            verdict(Some(Some(distrust.clone())), None),
            (err(distrust), false)
        );
    }

    #[test]
    fn the_os_reason_stands_for_a_certificate_no_extra_root_issued() {
        assert_eq!(
            verdict(Some(Some(UnknownIssuer)), Some(UnknownIssuer)),
            (err(UnknownIssuer), true)
        );
        assert_eq!(
            verdict(None, Some(UnknownIssuer)),
            (err(UnknownIssuer), true)
        );
    }

    #[test]
    fn the_extra_roots_reason_wins_for_a_certificate_they_issued() {
        // The OS says "unknown issuer"; the PCS CA knows it, and the name is wrong.
        assert_eq!(
            verdict(Some(Some(UnknownIssuer)), Some(NotValidForName)),
            (err(NotValidForName), true)
        );
        assert_eq!(
            verdict(Some(Some(UnknownIssuer)), Some(Expired)),
            (err(Expired), true)
        );
    }
}
