//! The HTTP client of token and discovery requests: built once per
//! `AimClient`, no redirects, timeouts, rustls with the OS trust store plus
//! the configured roots; a capped body reader; reqwest errors -> our kinds.

use std::error::Error as StdError;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// No token or discovery answer is larger than this; a bigger one is refused
/// rather than read into memory.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Default connect timeout.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout of one whole request.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the reqwest client is built from.
#[derive(Debug, Clone)]
pub(crate) struct HttpConfig {
    pub(crate) root_certificates: Vec<Vec<u8>>,
    pub(crate) danger_accept_invalid_certs: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
}

/// Builds the client. Bad PEM is a configuration error, found here and not
/// at the first request.
pub(crate) fn build_client(config: &HttpConfig) -> Result<reqwest::Client> {
    let mut roots = Vec::new();
    for (i, pem) in config.root_certificates.iter().enumerate() {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
            Error::config(format!(
                "root certificate #{} is not valid PEM ({e}): give the CA certificate in PEM (-----BEGIN CERTIFICATE-----), e.g. the PCS root CA exported as Base-64 X.509",
                i + 1
            ))
        })?;
        if certs.is_empty() {
            return Err(Error::config(format!(
                "root certificate #{} contains no PEM certificate: give the CA certificate in PEM (-----BEGIN CERTIFICATE-----), e.g. the PCS root CA exported as Base-64 X.509",
                i + 1
            )));
        }
        roots.extend(certs);
    }
    if config.danger_accept_invalid_certs {
        tracing::warn!(
            "danger_accept_invalid_certs is on: any server can pose as AIM and read the client secret; \
             trust the PCS root CA with root_certificate_pem / AIM_CA_CERT instead"
        );
    }
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .user_agent(concat!("aim-token/", env!("CARGO_PKG_VERSION")))
        // The platform verifier (OS trust store) plus our extra roots.
        .tls_certs_merge(roots)
        .tls_danger_accept_invalid_certs(config.danger_accept_invalid_certs)
        .build()
        .map_err(|e| {
            Error::config(format!(
                "could not set up the HTTP client: {}; check root_certificate_pem / AIM_CA_CERT and that the OS trust store is readable",
                chain(&e)
            ))
            .with_source(e)
        })
}

/// Reads the whole body, refusing more than `cap` bytes.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
    url: &str,
) -> Result<Vec<u8>> {
    let status = response.status().as_u16();
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large(status, cap, url));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > cap {
                    return Err(too_large(status, cap, url));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(from_reqwest(e, url).with_status(status)),
        }
    }
}

fn too_large(status: u16, cap: usize, url: &str) -> Error {
    Error::new(
        ErrorKind::InvalidResponse,
        format!("{url} answered more than {cap} bytes (HTTP {status}); that is not a token or discovery answer: check the authority"),
    )
    .with_status(status)
}

/// Maps a reqwest error to our kinds: timeout, TLS (with the fix), transport.
pub(crate) fn from_reqwest(err: reqwest::Error, url: &str) -> Error {
    if err.is_timeout() {
        return Error::new(
            ErrorKind::Timeout,
            format!("{url} did not answer in time ({}); check that AIM is running and reachable, or raise connect_timeout/request_timeout", root_cause(&err)),
        )
        .with_source(err);
    }
    if let Some(tls) = find_rustls_error(&err) {
        let message = tls_message(tls, url);
        return Error::new(ErrorKind::Tls, message).with_source(err);
    }
    let what = if err.is_connect() {
        "could not connect to"
    } else if err.is_body() {
        "lost the connection while reading the answer of"
    } else {
        "got no answer from"
    };
    Error::new(
        ErrorKind::Transport,
        format!(
            "{what} {url}: {}; check that AIM is running and reachable from this machine",
            root_cause(&err)
        ),
    )
    .with_source(err)
}

/// rustls puts its error inside an `io::Error` inside hyper's and reqwest's.
fn find_rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut next: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(tls);
            }
        }
        next = e.source();
    }
    None
}

fn tls_message(tls: &rustls::Error, url: &str) -> String {
    use rustls::{CertificateError, Error as E};
    let fix = match tls {
        E::InvalidCertificate(CertificateError::UnknownIssuer)
        | E::InvalidCertificate(CertificateError::BadSignature) => {
            "the certificate is not issued by a CA this machine trusts: give the PCS root CA with .root_certificate_pem(..) or AIM_CA_CERT=path/to/ca.pem (or install it in the OS trust store)"
        }
        E::InvalidCertificate(CertificateError::NotValidForName)
        | E::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "the certificate does not name this host: use the host name the certificate was issued for (often the FQDN) as the authority"
        }
        E::InvalidCertificate(CertificateError::Expired)
        | E::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "the server's certificate has expired: renew it on the AIM node (or check this machine's clock)"
        }
        _ => {
            "check the server's certificate; if it is issued by the PCS root CA, give that CA with .root_certificate_pem(..) or AIM_CA_CERT"
        }
    };
    format!("TLS with {url} failed ({tls}): {fix}")
}

/// The innermost cause: what actually happened, without the wrappers'
/// repetition of the URL.
fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// `err: cause: cause`, short and on one line.
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out
}
