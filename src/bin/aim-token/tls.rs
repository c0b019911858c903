//! The TLS step of `check`: one handshake that always completes, recording
//! the certificate and whether the real verifier (OS store + `--ca-cert`)
//! trusts it — so an untrusted certificate can still be shown and explained.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::CertificateError;
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

/// Handshakes over `tcp` with `host`, trusting the OS store plus `extra_pem`.
/// `Err` is a handshake that failed outright (not a trust verdict).
pub(crate) async fn probe(
    tcp: TcpStream,
    host: &str,
    extra_pem: Option<&[u8]>,
) -> Result<TlsReport, String> {
    let pems: Vec<Vec<u8>> = extra_pem.map(<[u8]>::to_vec).into_iter().collect();
    let (config, record) =
        aim_token::__cli::recording_tls_config(&pems).map_err(
            |e| match std::error::Error::source(&e) {
                Some(pem) if pem.is::<rustls::pki_types::pem::Error>() => {
                    format!("the CA file is not valid PEM: {pem}")
                }
                _ => match aim_token::__cli::find_rustls_error(&e) {
                    Some(tls) => format!("cannot load trusted certificates: {tls}"),
                    None => format!("cannot load trusted certificates: {e}"),
                },
            },
        )?;
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

    let (der, outcome) = record.take().ok_or("the server sent no certificate")?;
    let parsed = x509_parser::parse_x509_certificate(der.as_ref());
    let (subject, issuer, not_after, names, not_for_servers) = match &parsed {
        Ok((_, cert)) => (
            cert.subject().to_string(),
            cert.issuer().to_string(),
            cert.validity().not_after.to_string(),
            subject_alt_names(cert),
            not_for_servers_cert(cert),
        ),
        Err(_) => (
            "(unparsable)".into(),
            "(unparsable)".into(),
            "?".into(),
            Vec::new(),
            false,
        ),
    };
    let self_signed = subject == issuer;
    let presented = Presented {
        self_signed,
        names: &names,
        not_for_servers,
    };
    let trust = outcome.map_err(|e| explain(&e, host, &presented));
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

/// What is known of the certificate a verdict is about (nothing, where
/// only the error is: `Presented::default()`).
#[derive(Debug, Default)]
pub(crate) struct Presented<'a> {
    pub(crate) self_signed: bool,
    /// The names it is valid for.
    pub(crate) names: &'a [String],
    /// Its extended key usage names purposes, TLS server not among them.
    pub(crate) not_for_servers: bool,
}

/// Why a certificate is not trusted, and what to do, in the CLI's terms.
pub(crate) fn explain(
    err: &rustls::Error,
    host: &str,
    presented: &Presented<'_>,
) -> (String, String) {
    let names = presented.names;
    let trust_fix = if presented.self_signed {
        "AIM's certificate is self-signed: trust it (or better, re-issue it from the PCS root CA; \
         on the AIM node, Get-RootCertificate shows the certificate AIM uses) with \
         --ca-cert FILE or AIM_CA_CERT=FILE"
    } else {
        TRUST_FIX
    };
    match err {
        rustls::Error::InvalidCertificate(cert_err) => match cert_err {
            // The OS words a wrong purpose its own way (rustls-platform-verifier: "certificate
            // had invalid extensions"); the certificate itself says which it is.
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                not_for_servers()
            }
            CertificateError::Other(_) if presented.not_for_servers => not_for_servers(),
            CertificateError::Revoked => (
                "the certificate has been revoked by the CA that issued it".into(),
                "re-issue AIM's certificate from the PCS root CA and bind the new one to AIM's \
                 site in IIS on the SMS node; trusting it does not help"
                    .into(),
            ),
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
            // The OS found no root it trusts, in its own words (Windows'
            // CERT_E_CHAINING; Wine answers a signature or revocation
            // error for some chains to an unknown root): what a CA file fixes.
            CertificateError::Other(_) if aim_token::__cli::finds_no_trusted_root(err) => (
                "not trusted: issued by a CA that is not in the trust store".into(),
                trust_fix.into(),
            ),
            // The OS's own words, not rustls' debug form of them.
            CertificateError::Other(other) => (format!("not trusted: {other}"), trust_fix.into()),
            other => (format!("not trusted: {other}"), trust_fix.into()),
        },
        other => (format!("not trusted: {other}"), trust_fix.into()),
    }
}

fn not_for_servers() -> (String, String) {
    (
        "the certificate is not for TLS servers (its extended key usage lacks serverAuth)".into(),
        "re-issue AIM's certificate with the Server Authentication purpose (extended key usage \
         serverAuth, 1.3.6.1.5.5.7.3.1), signed by the PCS root CA; trusting it does not help"
            .into(),
    )
}

/// Whether the certificate's extended key usage leaves out TLS servers.
fn not_for_servers_cert(cert: &x509_parser::certificate::X509Certificate<'_>) -> bool {
    matches!(
        cert.extended_key_usage(),
        Ok(Some(eku)) if !eku.value.server_auth && !eku.value.any
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explain_alone(e: CertificateError) -> (String, String) {
        explain(
            &rustls::Error::InvalidCertificate(e),
            "sms01.plant.local",
            &Presented::default(),
        )
    }

    #[test]
    fn a_revoked_certificate_is_reissued_not_trusted() {
        // The OS (Windows' CRL/OCSP check) found it revoked; trusting its CA
        // again, the generic advice, cannot help.
        let (why, fix) = explain_alone(CertificateError::Revoked);
        assert!(why.contains("revoked"), "{why}");
        assert!(fix.starts_with("re-issue AIM's certificate"), "{fix}");
        assert!(!fix.contains("--ca-cert"), "{fix}");
    }

    /// Wine answers a chain to an unknown root with one of several codes
    /// (CERT_E_CHAINING, TRUST_E_CERT_SIGNATURE, a revocation code) from run
    /// to run: each gets the CA-file advice, as UnknownIssuer does.
    #[test]
    fn every_way_the_os_says_no_trusted_root_gets_the_ca_advice() {
        for hresult in [
            0x800B_010A_u32,
            0x8009_6004,
            0x800B_010E,
            0x8009_2012,
            0x8009_2013,
        ] {
            let text = std::io::Error::from_raw_os_error(hresult as i32).to_string();
            let os = rustls::OtherError(std::sync::Arc::from(Box::<
                dyn std::error::Error + Send + Sync,
            >::from(text.clone())));
            let (why, fix) = explain_alone(CertificateError::Other(os));
            assert_eq!(
                why, "not trusted: issued by a CA that is not in the trust store",
                "{text}"
            );
            assert!(fix.contains("--ca-cert"), "{fix}");
        }
    }

    #[test]
    fn an_os_reason_is_quoted_in_its_own_words() {
        let os = rustls::OtherError(std::sync::Arc::from(Box::<
            dyn std::error::Error + Send + Sync,
        >::from(
            "A certificate chain could not be built to a trusted root authority.",
        )));
        let (why, _) = explain_alone(CertificateError::Other(os));
        assert_eq!(
            why,
            "not trusted: A certificate chain could not be built to a trusted root authority."
        );
    }
}
