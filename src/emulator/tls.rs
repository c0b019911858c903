//! TLS for the emulator: a freshly generated CA (like a PCS root CA) and a
//! server certificate it issued for `127.0.0.1` and `localhost`. The CA
//! has a subject of its own, path length 0 and name constraints: trusting
//! it trusts nothing but this emulator's loopback names.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};

/// What the server needs to serve https, and what clients need to trust it.
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) ca_pem: String,
}

/// A new CA and a server certificate signed by it.
pub(crate) fn generate() -> Result<Tls> {
    let tls_error = |e: &dyn std::fmt::Display| Error::config(format!("emulator TLS setup: {e}"));

    let ca_key = KeyPair::generate().map_err(|e| tls_error(&e))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_error(&e))?;
    // A subject of its own per emulator, as two PCS root CAs have: clients
    // that index trust anchors by subject must not confuse two emulators.
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| tls_error(&e))?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("aim-token emulator root CA {id}"),
    );
    // Trusting it must not mean trusting it for anything else: it signs
    // only end-entity certificates (path length 0), only for this machine.
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![
            GeneralSubtree::DnsName("localhost".to_owned()),
            GeneralSubtree::IpAddress(CidrSubnet::V4([127, 0, 0, 1], [255, 255, 255, 255])),
        ],
        excluded_subtrees: Vec::new(),
    });
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| tls_error(&e))?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(|e| tls_error(&e))?;
    // rcgen turns "127.0.0.1" into an IP address SAN, "localhost" into a DNS one.
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .map_err(|e| tls_error(&e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let server_cert = params
        .signed_by(&server_key, &issuer)
        .map_err(|e| tls_error(&e))?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let chain = vec![server_cert.der().clone(), ca_cert.der().clone()];
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_error(&e))?;
    // h2 lets one connection carry thousands of concurrent token requests.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        ca_pem,
    })
}

#[cfg(all(test, feature = "cli"))]
mod tests {
    use super::*;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::pem::parse_x509_pem;

    fn ca(pem: &str) -> (String, Option<u32>, Vec<String>) {
        let (_, pem) = parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let subject = cert.subject().to_string();
        let mut path_len = None;
        let mut permitted = Vec::new();
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) => {
                    assert!(bc.ca);
                    path_len = bc.path_len_constraint;
                }
                ParsedExtension::NameConstraints(nc) => {
                    for sub in nc.permitted_subtrees.iter().flatten() {
                        permitted.push(match &sub.base {
                            GeneralName::DNSName(d) => format!("dns:{d}"),
                            GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
                            other => format!("{other:?}"),
                        });
                    }
                    assert!(nc.excluded_subtrees.is_none());
                }
                _ => {}
            }
        }
        (subject, path_len, permitted)
    }

    #[test]
    fn the_ca_signs_only_this_emulator_and_is_its_own() {
        let (a, a_len, a_names) = ca(&generate().unwrap().ca_pem);
        let (b, _, _) = ca(&generate().unwrap().ca_pem);
        assert_ne!(a, b, "distinct subjects");
        assert_eq!(a_len, Some(0), "path length 0");
        assert_eq!(
            a_names,
            ["dns:localhost", "ip:[127, 0, 0, 1, 255, 255, 255, 255]"]
        );
    }
}
