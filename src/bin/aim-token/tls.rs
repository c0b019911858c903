//! The TLS step of `check`: one handshake that always completes, recording
//! the certificate and whether the real verifier (OS store + `--ca-cert`)
//! trusts it — so an untrusted certificate can still be shown and explained.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

/// What the handshake showed.
#[derive(Debug)]
pub(crate) struct TlsReport {
    pub(crate) version: String,
    pub(crate) subject: String,
    pub(crate) issuer: String,
    pub(crate) not_after: String,
    pub(crate) self_signed: bool,
    /// The DNS names and IP addresses the certificate is valid for.
    pub(crate) names: Vec<String>,
    /// `Err(why, fix)` when the certificate is not trusted.
    pub(crate) trust: Result<(), (String, String)>,
}

#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ServerCertVerifier>,
    outcome: Mutex<Option<Result<(), rustls::Error>>>,
    end_entity: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let outcome = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map(|_| ());
        if let Ok(mut slot) = self.outcome.lock() {
            *slot = Some(outcome);
        }
        if let Ok(mut slot) = self.end_entity.lock() {
            *slot = Some(end_entity.clone().into_owned());
        }
        // Finish the handshake whatever the verdict: this connection carries
        // no secret, and the verdict is reported, not ignored.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Handshakes over `tcp` with `host`, trusting the OS store plus `extra_pem`.
/// `Err` is a handshake that failed outright (not a trust verdict).
pub(crate) async fn probe(
    tcp: TcpStream,
    host: &str,
    extra_pem: Option<&[u8]>,
) -> Result<TlsReport, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut extra = Vec::new();
    if let Some(pem) = extra_pem {
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pem) {
            extra.push(cert.map_err(|e| format!("the CA file is not valid PEM: {e}"))?);
        }
    }
    let inner = aim_token::__cli::server_verifier(extra, provider.clone())
        .map_err(|e| format!("cannot load trusted certificates: {e}"))?;
    let recording = Arc::new(Recording {
        inner,
        outcome: Mutex::new(None),
        end_entity: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recording.clone())
        .with_no_client_auth();
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let version = stream
        .get_ref()
        .1
        .protocol_version()
        .map_or_else(|| "TLS".to_owned(), |v| format!("{v:?}").replace('_', "."));

    let der = recording
        .end_entity
        .lock()
        .ok()
        .and_then(|mut s| s.take())
        .ok_or("the server sent no certificate")?;
    let outcome = recording
        .outcome
        .lock()
        .ok()
        .and_then(|mut s| s.take())
        .unwrap_or(Ok(()));
    let parsed = x509_parser::parse_x509_certificate(der.as_ref());
    let (subject, issuer, not_after, names) = match &parsed {
        Ok((_, cert)) => (
            cert.subject().to_string(),
            cert.issuer().to_string(),
            cert.validity().not_after.to_string(),
            subject_alt_names(cert),
        ),
        Err(_) => (
            "(unparsable)".into(),
            "(unparsable)".into(),
            "?".into(),
            Vec::new(),
        ),
    };
    let self_signed = subject == issuer;
    let trust = outcome.map_err(|e| explain(&e, host, self_signed, &names));
    Ok(TlsReport {
        version,
        subject,
        issuer,
        not_after,
        self_signed,
        names,
        trust,
    })
}

/// The DNS names and IP addresses of the subject alternative names.
fn subject_alt_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => <[u8; 4]>::try_from(*ip)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*ip)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Where to get the CA that issued AIM's certificate.
pub(crate) const TRUST_FIX: &str = "trust the CA that issued AIM's certificate (usually the PCS root CA; \
     on the AIM node, Get-RootCertificate shows the certificate AIM uses; export it as Base-64 X.509): \
     --ca-cert FILE or AIM_CA_CERT=FILE";

/// Why a certificate is not trusted, and what to do, in the CLI's terms.
/// `names`: what the certificate is valid for, if known.
pub(crate) fn explain(
    err: &rustls::Error,
    host: &str,
    self_signed: bool,
    names: &[String],
) -> (String, String) {
    let trust_fix = if self_signed {
        "AIM's certificate is self-signed: trust it (or better, re-issue it from the PCS root CA;          on the AIM node, Get-RootCertificate shows the certificate AIM uses) with          --ca-cert FILE or AIM_CA_CERT=FILE"
    } else {
        TRUST_FIX
    };
    match err {
        rustls::Error::InvalidCertificate(cert_err) => match cert_err {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => (
                "not trusted: issued by a CA that is not in the trust store".into(),
                trust_fix.into(),
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                let presented = match cert_err {
                    CertificateError::NotValidForNameContext { presented, .. } if names.is_empty() => presented.clone(),
                    _ => names.to_vec(),
                };
                let valid_for = if presented.is_empty() {
                    String::new()
                } else {
                    format!(" (it is valid for {})", presented.join(", "))
                };
                (
                    format!("not valid for the name {host:?}{valid_for}"),
                    "use a name the certificate is valid for (often the SMS node's FQDN) in --authority / AIM_AUTHORITY".into(),
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                "the certificate has expired (or the local clock is wrong)".into(),
                "renew AIM's certificate on the SMS node, or correct this machine's clock".into(),
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                "the certificate is not valid yet (or the local clock is wrong)".into(),
                "correct this machine's clock".into(),
            ),
            CertificateError::Other(other)
                if matches!(
                    other.0.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) =>
            (
                "the server's certificate is a CA certificate (basic constraints CA:TRUE): \
                 TLS clients refuse a CA as a server's certificate, trusted or not"
                    .into(),
                "re-issue AIM's certificate as an end-entity one (CA:FALSE, the SMS node's FQDN \
                 as subject alternative name), signed by the PCS root CA; trusting this \
                 certificate does not help"
                    .into(),
            ),
            other => (format!("not trusted: {other}"), trust_fix.into()),
        },
        other => (format!("not trusted: {other}"), trust_fix.into()),
    }
}
