//! A CA certificate file (`AIM_CA_CERT`, the CLI's `--ca-cert`) as plant
//! machines hold it, turned into the PEM that
//! [`root_certificate_pem`](crate::AimClientBuilder::root_certificate_pem)
//! takes:
//!
//! * PEM, one certificate or a bundle, with LF or CRLF line ends and an
//!   optional UTF-8 byte order mark (Notepad);
//! * the same in UTF-16 with a byte order mark: what Windows PowerShell 5's
//!   `>` and `Out-File` write (`Get-RootCertificate > ca.pem`);
//! * one DER certificate: what Windows' certificate export wizard writes
//!   by default (`.cer`, "DER encoded binary X.509").
//!
//! A file that also holds a private key (a PFX export turned into PEM) is
//! refused, as the `.pfx` itself is: a CA file is copied to every client,
//! and the server's key must not travel with it. A file with no
//! certificate at all is an error naming the file and what to put in it,
//! found before any network I/O. Errors never quote the file's content.

use std::path::Path;

use base64::Engine as _;
use rustls::pki_types::pem::SectionKind;
use rustls::pki_types::CertificateDer;

use crate::error::{Error, Result};

/// No CA file is this large (the whole Mozilla bundle is ~250 KiB); a bigger
/// one (or `/dev/zero`) is not read forever.
const MAX_CA_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// What to do with a file that holds no certificate.
const EXPORT_FIX: &str =
    "export the PCS root CA as Base-64 encoded X.509 (or DER .cer) and give that file";

/// The file at `path` (surrounding double quotes, as cmd.exe's
/// `set VAR="C:\..."` keeps them, are dropped) as PEM certificates, or a
/// configuration error that starts with `what` (the variable or flag).
pub(crate) fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    let shown = crate::env_value::unquoted_path(path).display();
    read_pem(path).map_err(|e| match e {
        CaFileError::Unreadable(e) => Error::config(format!(
            "{what} = {shown}: cannot read the CA certificate ({e}); give the path of a readable file holding the PCS root CA (PEM or DER .cer)"
        ))
        .with_source(e),
        CaFileError::NotACertificate(why) => Error::config(format!(
            "{what} = {shown}: {why}; {EXPORT_FIX} with {what}"
        )),
    })
}

/// Why a CA file cannot be used. Public for the CLI (`__cli`) only.
#[derive(Debug)]
#[cfg_attr(not(feature = "cli"), allow(unreachable_pub))]
pub enum CaFileError {
    /// It cannot be opened or read.
    Unreadable(std::io::Error),
    /// It holds no usable certificate: the reason.
    NotACertificate(String),
}

/// [`read`] for the CLI, which words its own message and fix.
pub(crate) fn read_pem(path: &Path) -> std::result::Result<Vec<u8>, CaFileError> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(crate::env_value::unquoted_path(path))
        .and_then(|file| file.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(CaFileError::Unreadable)?;
    if bytes.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(CaFileError::NotACertificate(format!(
            "the file is larger than {MAX_CA_FILE_BYTES} bytes, so not a CA certificate"
        )));
    }
    to_pem(&bytes).map_err(CaFileError::NotACertificate)
}

/// The certificates in `bytes` as PEM, or why there are none.
fn to_pem(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let text = match crate::env_value::utf16_text(bytes) {
        Some(Ok(text)) => text.as_bytes().to_vec(),
        Some(Err(())) => return Err("the file starts like UTF-16 text but is not".to_owned()),
        None => bytes
            .strip_prefix(b"\xEF\xBB\xBF")
            .unwrap_or(bytes)
            .to_vec(),
    };
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err("the file is empty".to_owned());
    }
    if text.windows(11).any(|w| w == b"-----BEGIN ") {
        return pem_certificates(&text);
    }
    // DER starts with a SEQUENCE tag.
    if text.first() == Some(&0x30) {
        not_a_container(&text)?;
        check(&text, 1)?;
        return Ok(der_to_pem(&text));
    }
    Err("it is neither a PEM (-----BEGIN CERTIFICATE-----) nor a DER certificate".to_owned())
}

/// What a PEM file holding a private key is told.
const KEY_IN_FILE: &str = "the file holds a private key (a PFX export turned into PEM?), which a CA file that every client reads must not: export the CA certificate alone (without the key), as DER (.cer) or Base-64 X.509";

/// The CERTIFICATE sections of a PEM file, re-encoded; a private key
/// refuses the file, other sections (CRLs, parameters) are dropped.
fn pem_certificates(text: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut count = 0;
    for section in rustls::pki_types::pem::PemObject::pem_slice_iter(text) {
        let (kind, der): (SectionKind, Vec<u8>) = section.map_err(|e| pem_error(&e))?;
        if matches!(
            kind,
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
        ) {
            return Err(KEY_IN_FILE.to_owned());
        }
        if kind == SectionKind::Certificate {
            count += 1;
            check(&der, count)?;
            out.extend(der_to_pem(&der));
        }
    }
    // Labels the parser skips: `ENCRYPTED PRIVATE KEY`, `OPENSSH PRIVATE KEY`, ...
    if text
        .windows(b"PRIVATE KEY-----".len())
        .any(|w| w == b"PRIVATE KEY-----")
    {
        return Err(KEY_IN_FILE.to_owned());
    }
    if out.is_empty() {
        return Err("the PEM file holds no certificate (only other sections)".to_owned());
    }
    Ok(out)
}

/// Why the PEM parser stopped, in words of the file's shape: never its
/// error's text, which quotes the broken line (a private key's with it).
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as Pem;
    match e {
        Pem::MissingSectionEnd { .. } | Pem::IllegalSectionStart { .. } => {
            "it is not valid PEM: a -----BEGIN line has no -----END line of its own \
             (were the line breaks lost, e.g. by `echo $PEM`?): each -----BEGIN and -----END line \
             must end with a line break"
        }
        Pem::Base64Decode(_) => {
            "it is not valid PEM: the base64 text between -----BEGIN and -----END is broken"
        }
        _ => "it is not valid PEM",
    }
    .to_owned()
}

/// PKCS #7 `signedData`, the OID that opens a `.p7b`.
const PKCS7_SIGNED_DATA: [u8; 11] = [
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02,
];

/// The other DER files Windows' certificate export writes, named, so the
/// error says what to export instead of "broken DER".
fn not_a_container(der: &[u8]) -> std::result::Result<(), String> {
    // The outer SEQUENCE's content: after the tag and a short or long length.
    let header = match der.get(1) {
        Some(&len) if len < 0x80 => 2,
        Some(&len) => 2 + usize::from(len & 0x7F),
        None => return Ok(()),
    };
    let content = der.get(header..).unwrap_or_default();
    if content.starts_with(&PKCS7_SIGNED_DATA) {
        return Err(
            "it is a PKCS #7 (.p7b) certificate bundle, not a certificate: export the CA certificate alone, as DER (.cer) or Base-64 X.509"
                .to_owned(),
        );
    }
    // PFX: SEQUENCE { INTEGER 3, ... }
    if content.starts_with(&[0x02, 0x01, 0x03]) {
        return Err(
            "it is a PKCS #12 (.pfx) file, which holds a private key: export the CA certificate alone (without the key), as DER (.cer) or Base-64 X.509"
                .to_owned(),
        );
    }
    Ok(())
}

/// Whether `der` is a certificate a trust store takes, as the client's
/// will when it is built: found here, the error can name the file.
fn check(der: &[u8], number: usize) -> std::result::Result<(), String> {
    rustls::RootCertStore::empty()
        .add(CertificateDer::from(der.to_vec()))
        .map_err(|_| {
            format!("certificate #{number} in the file cannot be read as an X.509 certificate (its DER encoding is broken)")
        })
}

fn der_to_pem(der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem.into_bytes()
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject as _;

    use super::*;

    fn certificate() -> (String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["sms01".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), cert.der().to_vec())
    }

    fn ders(pem: &[u8]) -> Vec<Vec<u8>> {
        CertificateDer::pem_slice_iter(pem)
            .map(|c| c.unwrap().to_vec())
            .collect()
    }

    #[test]
    fn every_spelling_gives_the_same_certificate() {
        let (pem, der) = certificate();
        let mut utf16 = vec![0xFF, 0xFE];
        utf16.extend(
            pem.replace('\n', "\r\n")
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        );
        for bytes in [pem.clone().into_bytes(), der.clone(), utf16] {
            assert_eq!(ders(&to_pem(&bytes).unwrap()), std::slice::from_ref(&der));
        }
    }

    #[test]
    fn a_bundle_is_kept_and_a_key_refused() {
        let (a, a_der) = certificate();
        let (b, b_der) = certificate();
        let pem = to_pem(format!("{a}{b}").as_bytes()).unwrap();
        assert_eq!(ders(&pem), [a_der, b_der]);
        // A key beside the certificates: the server's, copied to clients.
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        for file in [format!("{a}{key}{b}"), key.clone()] {
            let err = to_pem(file.as_bytes()).unwrap_err();
            assert!(err.contains("private key"), "{err}");
            let key_b64: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
            assert!(!err.contains(&key_b64[..20]), "{err}");
        }
    }

    /// Windows' certificate export also offers PKCS #7 (.p7b) and, with
    /// the private key, PKCS #12 (.pfx): both DER, neither a certificate.
    #[test]
    fn p7b_and_pfx_are_named() {
        let p7b = [
            &[0x30, 0x82, 0x03, 0x28][..],
            &[
                0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02, 0xA0,
            ],
        ]
        .concat();
        assert!(to_pem(&p7b).unwrap_err().contains("PKCS #7"));
        let pfx = [0x30, 0x82, 0x09, 0xCF, 0x02, 0x01, 0x03, 0x30, 0x82];
        assert!(to_pem(&pfx).unwrap_err().contains("PKCS #12"));
        let short = [0x30, 0x05, 0x02, 0x01, 0x03, 0x30, 0x00];
        assert!(to_pem(&short).unwrap_err().contains("PKCS #12"));
    }

    /// `echo $PEM > ca.pem` in a shell folds the line breaks into spaces:
    /// one line holding the certificate and, from a PFX export, the private
    /// key. The error says what is wrong without any of the file's content
    /// (the PEM parser's own error quotes the broken line, key and all).
    #[test]
    fn a_pem_without_line_breaks_is_refused_without_its_content() {
        let (cert, _) = certificate();
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let key_b64: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        for folded in [
            format!("{cert}{key}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            format!("{key}{cert}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        ] {
            let err = to_pem(folded.as_bytes()).unwrap_err();
            assert!(err.len() < 300, "{} bytes: {err}", err.len());
            assert!(!err.contains(&key_b64[..20]), "{err}");
            // Nor as the byte list the parser's Debug prints.
            let bytes = format!("{:?}", &key_b64.as_bytes()[..8]);
            assert!(!err.contains(&bytes[1..bytes.len() - 1]), "{err}");
            assert!(err.contains("line break"), "{err}");
        }
    }

    #[test]
    fn odd_utf16_is_refused() {
        assert!(to_pem(&[0xFF, 0xFE, 0x00, 0xD8])
            .unwrap_err()
            .contains("UTF-16"));
    }
}
