//! Which server certificates are trusted, for the token client and the
//! CLI alike: the OS's verdict first (Windows' CryptoAPI with its trust
//! store, revocation and policies; macOS' Security framework; the system
//! bundle elsewhere), and only for a certificate the OS does not trust, the
//! configured extra roots (the PCS root CA) by rustls' WebPKI verifier.
//!
//! This is what rustls-platform-verifier's `new_with_extra_roots` does too
//! (OS chain first, extra roots when the OS finds no trusted root), except
//! that the second step is WebPKI instead of a second Windows chain engine:
//! that engine is built from a `CERT_CHAIN_ENGINE_CONFIG` that Wine refuses,
//! and a path that cannot run under Wine has never run in CI.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

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
    for root in extra_roots {
        store.add(root)?;
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

/// The OS's verdict, and the extra roots' for what the OS does not trust.
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
        let os_error = match &self.os {
            Some(os) => {
                match os.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                ) {
                    Ok(verified) => return Ok(verified),
                    Err(e) => Some(e),
                }
            }
            None => None,
        };
        match self.extra.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            // Not issued by an extra root either: the OS's reason stands
            // (revoked, expired, not for this name, unknown issuer, ...).
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                Err(os_error.unwrap_or(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                )))
            }
            // Issued by an extra root, but wrong: that is the reason.
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.extra.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.extra.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.extra.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A verifier with a fixed verdict that counts its calls.
    #[derive(Debug)]
    struct Fixed(Option<CertificateError>, AtomicUsize);

    impl Fixed {
        fn new(verdict: Option<CertificateError>) -> Arc<Self> {
            Arc::new(Fixed(verdict, AtomicUsize::new(0)))
        }
        fn calls(&self) -> usize {
            self.1.load(Ordering::Relaxed)
        }
    }

    impl ServerCertVerifier for Fixed {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            self.1.fetch_add(1, Ordering::Relaxed);
            match &self.0 {
                None => Ok(ServerCertVerified::assertion()),
                Some(e) => Err(rustls::Error::InvalidCertificate(e.clone())),
            }
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            Vec::new()
        }
    }

    fn verdict(
        os: Option<Option<CertificateError>>,
        extra: Option<CertificateError>,
    ) -> (Result<(), CertificateError>, usize) {
        let os = os.map(Fixed::new);
        let extra = Fixed::new(extra);
        let v = OsThenExtraRoots {
            os: os.clone().map(|o| o as Arc<dyn ServerCertVerifier>),
            extra: extra.clone(),
        };
        let name = ServerName::try_from("sms01.plant.local").unwrap();
        let result = v
            .verify_server_cert(
                &CertificateDer::from(vec![0u8]),
                &[],
                &name,
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(c) => c,
                other => panic!("{other}"),
            });
        (result, extra.calls())
    }

    use CertificateError::{Expired, NotValidForName, Revoked, UnknownIssuer};

    #[test]
    fn what_the_os_trusts_is_trusted_without_asking_the_extra_roots() {
        assert_eq!(verdict(Some(None), Some(UnknownIssuer)), (Ok(()), 0));
    }

    #[test]
    fn what_the_os_does_not_trust_is_trusted_if_an_extra_root_issued_it() {
        assert_eq!(verdict(Some(Some(UnknownIssuer)), None), (Ok(()), 1));
        // No OS store at all (bare container): the extra roots alone.
        assert_eq!(verdict(None, None), (Ok(()), 1));
    }

    #[test]
    fn the_os_reason_stands_for_a_certificate_no_extra_root_issued() {
        // A revoked certificate of a public CA stays revoked.
        assert_eq!(
            verdict(Some(Some(Revoked)), Some(UnknownIssuer)),
            (Err(Revoked), 1)
        );
        assert_eq!(
            verdict(Some(Some(UnknownIssuer)), Some(UnknownIssuer)),
            (Err(UnknownIssuer), 1)
        );
        assert_eq!(verdict(None, Some(UnknownIssuer)), (Err(UnknownIssuer), 1));
    }

    #[test]
    fn the_extra_roots_reason_wins_for_a_certificate_they_issued() {
        // The OS says "unknown issuer"; the PCS CA knows it, and the name is wrong.
        assert_eq!(
            verdict(Some(Some(UnknownIssuer)), Some(NotValidForName)),
            (Err(NotValidForName), 1)
        );
        assert_eq!(
            verdict(Some(Some(UnknownIssuer)), Some(Expired)),
            (Err(Expired), 1)
        );
    }
}
