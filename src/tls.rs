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
        store.add(root).map_err(|e| {
            // rustls words this for a server's certificate ("invalid peer
            // certificate"); this one is from the CA file.
            let why = match e {
                rustls::Error::InvalidCertificate(CertificateError::BadEncoding) => {
                    "its DER encoding is broken".to_owned()
                }
                rustls::Error::InvalidCertificate(e) => format!("{e:?}"),
                e => e.to_string(),
            };
            rustls::Error::General(format!(
                "CA certificate #{} cannot be read as an X.509 certificate ({why})",
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
    match os {
        Some(Ok(verified)) => Ok(verified),
        // The OS built a chain to a root it knows and refused it (revoked,
        // explicitly distrusted, expired, not for this name or purpose):
        // that stands, even if an extra root (one the OS may hold too)
        // would accept it; WebPKI here checks no revocation at all.
        Some(Err(e)) if !finds_no_trusted_root(&e) => Err(e),
        // No root the OS trusts, or no OS store: the extra roots decide,
        // and say UnknownIssuer (on every OS alike) if none issued it.
        Some(Err(_)) | None => extra(),
    }
}

/// Whether the OS's refusal says only that the certificate does not chain
/// to a root the OS trusts: the one verdict the extra roots may overrule.
pub(crate) fn finds_no_trusted_root(os_error: &rustls::Error) -> bool {
    match os_error {
        // A signature in the chain the OS built does not verify (a CA of
        // the OS store with the PCS CA's name; Wine, for some chains to an
        // unknown root): the extra roots' WebPKI checks every signature of
        // its own chain, so a forged one fails there too.
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => true,
        // rustls-platform-verifier maps only CERT_E_UNTRUSTEDROOT to
        // UnknownIssuer and passes other Windows errors on as the OS's
        // message text, made here the same way so it is matched whole:
        // - CERT_E_CHAINING: the chain reaches no root at all (the server
        //   sends only its own certificate, issued by a CA not in the store);
        // - revocation that could not be checked (no CRL or OCSP answer):
        //   Windows ignores it (the verifier asks it to), Wine reports it
        //   for every chain to an unknown root. Revoked is another error.
        // macOS: the Security framework's errSecNotTrusted, which the
        // platform verifier passes on as "{description}: -67843".
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            let text = other.to_string();
            NO_TRUSTED_ROOT_OR_UNCHECKED
                .iter()
                .any(|&hresult| text == windows_error_text(hresult))
                || text.ends_with(ERR_SEC_NOT_TRUSTED)
        }
        _ => false,
    }
}

/// The Windows errors that say no more than "no trusted root", "could
/// not check" or "a signature does not verify": `CERT_E_CHAINING`,
/// `CERT_E_REVOCATION_FAILURE`, `CRYPT_E_NO_REVOCATION_CHECK`,
/// `CRYPT_E_REVOCATION_OFFLINE`, `TRUST_E_CERT_SIGNATURE`.
const NO_TRUSTED_ROOT_OR_UNCHECKED: [i32; 5] = [
    CERT_E_CHAINING,
    0x800B_010E_u32 as i32,
    0x8009_2012_u32 as i32,
    0x8009_2013_u32 as i32,
    0x8009_6004_u32 as i32,
];

/// `CERT_E_CHAINING`: "A certificate chain could not be built to a trusted
/// root authority."
const CERT_E_CHAINING: i32 = 0x800B_010A_u32 as i32;

/// How rustls-platform-verifier ends the text of macOS' errSecNotTrusted.
const ERR_SEC_NOT_TRUSTED: &str = ": -67843";

/// The text rustls-platform-verifier gives a Windows error it does not map.
fn windows_error_text(hresult: i32) -> String {
    std::io::Error::from_raw_os_error(hresult).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    use CertificateError::{
        BadSignature, Expired, InvalidPurpose, NotValidForName, Revoked, UnknownIssuer,
    };

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
        // A CA of the OS store with the PCS CA's name (Windows: in words).
        assert_eq!(verdict(Some(Some(BadSignature)), None), (Ok(()), true));
        let signature = other(windows_error_text(0x8009_6004_u32 as i32));
        assert_eq!(verdict(Some(Some(signature)), None), (Ok(()), true));
        // Wine, for every chain to an unknown root.
        let unchecked = other(windows_error_text(0x800B_010E_u32 as i32));
        assert_eq!(verdict(Some(Some(unchecked)), None), (Ok(()), true));
        let mac = other("\u{201c}sms01\u{201d} certificate is not trusted: -67843".into());
        assert_eq!(verdict(Some(Some(mac)), None), (Ok(()), true));
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
    fn a_certificate_no_trusted_root_issued_is_of_an_unknown_issuer_on_every_os() {
        assert_eq!(
            verdict(Some(Some(UnknownIssuer)), Some(UnknownIssuer)),
            (err(UnknownIssuer), true)
        );
        // Not Windows' message text: the CLI explains UnknownIssuer.
        let chaining = other(windows_error_text(CERT_E_CHAINING));
        assert_eq!(
            verdict(Some(Some(chaining)), Some(UnknownIssuer)),
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

/// The real verifier (this machine's OS store plus one extra root) against
/// certificates a hostile or misconfigured server presents.
#[cfg(all(test, feature = "emulator"))]
mod real_certificates {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa,
        Issuer, KeyPair, NameConstraints,
    };

    const PCS: &str = "PCS root CA (tls.rs test)";

    /// A PCS-like root CA named `name`, shaped by `ca`; the verifier trusting it.
    fn pcs_ca(
        name: &str,
        ca: impl FnOnce(&mut CertificateParams),
    ) -> (Issuer<'static, KeyPair>, Arc<dyn ServerCertVerifier>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca(&mut params);
        let der = params.self_signed(&key).unwrap().der().clone();
        let verifier = server_verifier(vec![der], provider()).unwrap();
        (Issuer::new(params, key), verifier)
    }

    fn leaf(
        issuer: &Issuer<'_, KeyPair>,
        names: &[&str],
        shape: impl FnOnce(&mut CertificateParams),
    ) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        shape(&mut params);
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, issuer).unwrap().der().clone()
    }

    fn verify(
        verifier: &Arc<dyn ServerCertVerifier>,
        cert: &CertificateDer<'_>,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn a_certificate_the_extra_root_issued_for_the_name_is_trusted() {
        let (ca, verifier) = pcs_ca(PCS, |_| {});
        let cert = leaf(&ca, &["sms01.plant.local"], |_| {});
        verify(&verifier, &cert, "sms01.plant.local").unwrap();
    }

    #[test]
    fn the_extra_root_does_not_excuse_a_wrong_name_an_expiry_or_a_client_only_purpose() {
        let (ca, verifier) = pcs_ca(PCS, |_| {});
        let cert = leaf(&ca, &["sms01.plant.local"], |_| {});
        assert!(verify(&verifier, &cert, "mes01.plant.local").is_err());
        let expired = leaf(&ca, &["sms01.plant.local"], |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        });
        assert!(verify(&verifier, &expired, "sms01.plant.local").is_err());
        let client_only = leaf(&ca, &["sms01.plant.local"], |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        });
        assert!(verify(&verifier, &client_only, "sms01.plant.local").is_err());
    }

    #[test]
    fn a_name_constrained_extra_root_vouches_only_inside_its_constraint() {
        let (ca, verifier) = pcs_ca(PCS, |p| {
            p.name_constraints = Some(NameConstraints {
                permitted_subtrees: vec![GeneralSubtree::DnsName("plant.local".to_owned())],
                excluded_subtrees: Vec::new(),
            });
        });
        let inside = leaf(&ca, &["sms01.plant.local"], |_| {});
        verify(&verifier, &inside, "sms01.plant.local").unwrap();
        let outside = leaf(&ca, &["login.example.com"], |_| {});
        assert!(verify(&verifier, &outside, "login.example.com").is_err());
    }

    #[test]
    fn a_certificate_another_ca_issued_is_unknown() {
        let (_, verifier) = pcs_ca(PCS, |_| {});
        // An impostor under the PCS CA's name: found by name, refused by key.
        let (impostor, _) = pcs_ca(PCS, |_| {});
        let cert = leaf(&impostor, &["sms01.plant.local"], |_| {});
        assert_eq!(
            verify(&verifier, &cert, "sms01.plant.local"),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::BadSignature
            ))
        );
        let (other, _) = pcs_ca("another CA", |_| {});
        let cert = leaf(&other, &["sms01.plant.local"], |_| {});
        assert_eq!(
            verify(&verifier, &cert, "sms01.plant.local"),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        );
    }

    #[test]
    fn an_extra_root_that_is_no_certificate_is_named_as_the_ca_files() {
        let e = server_verifier(
            vec![CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])],
            provider(),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(e.contains("CA certificate #1"), "{e}");
        // rustls' wording is for the server's certificate, not the CA file's.
        assert!(!e.contains("peer"), "{e}");
    }
}
