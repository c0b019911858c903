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
#[derive(Clone)]
pub(crate) struct HttpConfig {
    pub(crate) root_certificates: Vec<Vec<u8>>,
    pub(crate) danger_accept_invalid_certs: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    /// An explicit proxy URL; without one, reqwest reads the proxy
    /// environment variables (`HTTPS_PROXY`, `NO_PROXY`, ...).
    pub(crate) proxy: Option<String>,
}

// By hand: the proxy URL may carry a password, and every struct that holds
// this one (the client's config, the exchange) derives Debug.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("root_certificates", &self.root_certificates.len())
            .field(
                "danger_accept_invalid_certs",
                &self.danger_accept_invalid_certs,
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field(
                "proxy",
                &self
                    .proxy
                    .as_deref()
                    .map(crate::authority::without_userinfo),
            )
            .finish()
    }
}

/// Builds the client. Bad PEM is a configuration error, found here and not
/// at the first request.
pub(crate) fn build_client(config: &HttpConfig) -> Result<reqwest::Client> {
    build(config, false)
}

/// The client for the calls to one origin (`MesClient`'s base): as
/// [`build_client`], but without any proxy when [`goes_direct`] says so.
pub(crate) fn build_client_for(config: &HttpConfig, origin: &url::Url) -> Result<reqwest::Client> {
    build(config, goes_direct(origin))
}

/// Whether requests to `url` skip every proxy, explicit or from the
/// environment: plain http to loopback. Plain http is allowed there because
/// it stays on the machine; a proxy would carry it, and the secret or token
/// in it, across the network in clear text (and one on another host cannot
/// reach this machine's loopback anyway). https keeps the proxy: it sees a
/// tunnel only.
pub(crate) fn goes_direct(url: &url::Url) -> bool {
    url.scheme() == "http"
        && url
            .host()
            .is_some_and(|h| crate::authority::is_loopback(&h))
}

fn build(config: &HttpConfig, direct: bool) -> Result<reqwest::Client> {
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
    let proxy = match &config.proxy {
        Some(url) if !direct => Some(proxy(url)?),
        _ => None,
    };
    let builder = |config: &HttpConfig| {
        let builder = builder(config);
        match &proxy {
            Some(proxy) => builder.proxy(proxy.clone()),
            // Neither the explicit proxy nor the environment's.
            None if direct => builder.no_proxy(),
            None => builder,
        }
    };
    let no_extra_roots = roots.is_empty();
    if !no_extra_roots && !config.danger_accept_invalid_certs {
        // The OS store plus the given roots, by the crate's one rule (tls.rs).
        let tls = extra_roots_tls(&config.root_certificates)?;
        return builder(config)
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(setup_error);
    }
    match builder(config).tls_certs_merge(roots).build() {
        Ok(client) => Ok(client),
        // A machine without an OS trust store (a bare container): still
        // usable over loopback http, and https fails with the Tls error
        // that says to give the CA, instead of every build failing.
        Err(e) if no_extra_roots && !config.danger_accept_invalid_certs => {
            tracing::warn!(
                "no OS trust store ({}): only certificates given with root_certificate_pem / AIM_CA_CERT will be trusted",
                root_cause(&e)
            );
            builder(config)
                .tls_certs_only(Vec::new())
                .build()
                .map_err(setup_error)
        }
        Err(e) => Err(setup_error(e)),
    }
}

/// A proxy for every request, from an `http://` or `https://` URL.
pub(crate) fn proxy(url: &str) -> Result<reqwest::Proxy> {
    let shown = crate::authority::without_userinfo(url);
    let invalid = |why: &dyn std::fmt::Display| {
        Error::config(format!(
            "the proxy `{shown}` is not a proxy URL ({why}): give it as http://HOST:PORT"
        ))
    };
    let parsed = url::Url::parse(url.trim()).map_err(|e| invalid(&e))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid(&"it needs http:// or https:// and a host"));
    }
    reqwest::Proxy::all(parsed.as_str()).map_err(|e| invalid(&e))
}

/// rustls as reqwest configures it (safe default versions, ALPN h2 and
/// http/1.1), verifying with the OS store plus `pems` (the CLI's too).
pub(crate) fn extra_roots_tls(pems: &[Vec<u8>]) -> Result<rustls::ClientConfig> {
    let mut tls = tls_with_verifier(extra_roots_verifier(pems)?)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// The verifier of the OS store plus the CA certificates in `pems`.
pub(crate) fn extra_roots_verifier(
    pems: &[Vec<u8>],
) -> Result<std::sync::Arc<dyn rustls::client::danger::ServerCertVerifier>> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = Vec::new();
    for pem in pems {
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            roots.push(cert.map_err(|e| {
                Error::config(format!(
                    "a root certificate is not valid PEM ({e}): give the CA certificate in PEM (-----BEGIN CERTIFICATE-----)"
                ))
                .with_source(e)
            })?);
        }
    }
    crate::tls::server_verifier(roots, crate::tls::provider()).map_err(unusable_roots)
}

/// A client configuration (safe default versions, no client certificate)
/// that trusts what `verifier` trusts.
pub(crate) fn tls_with_verifier(
    verifier: std::sync::Arc<dyn rustls::client::danger::ServerCertVerifier>,
) -> Result<rustls::ClientConfig> {
    Ok(
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(unusable_roots)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    )
}

/// The cause rides along as the source: the CLI words its own fix and
/// quotes only the root cause.
fn unusable_roots(e: rustls::Error) -> Error {
    Error::config(format!(
        "could not set up TLS with the given root certificates ({e}): check that root_certificate_pem / AIM_CA_CERT holds CA certificates in PEM"
    ))
    .with_source(e)
}

/// Everything but the roots: no redirects (the secret must not follow one
/// to another host), timeouts, the lab switch.
fn builder(config: &HttpConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .user_agent(concat!("aim-token/", env!("CARGO_PKG_VERSION")))
        .tls_danger_accept_invalid_certs(config.danger_accept_invalid_certs)
}

fn setup_error(e: reqwest::Error) -> Error {
    Error::config(format!(
        "could not set up the HTTP client: {}; check that root_certificate_pem / AIM_CA_CERT holds CA certificates in PEM",
        chain(&e)
    ))
    .with_source(e)
}

/// The bytes of a buffer that holds a secret (the token form, a Basic or
/// Bearer header), for reqwest and hyper to send: moved, not copied, into
/// `Bytes` that zeroize the buffer when the last user drops it.
pub(crate) fn zeroized_on_drop(mut secret: zeroize::Zeroizing<String>) -> bytes::Bytes {
    let owned = zeroize::Zeroizing::new(std::mem::take(&mut *secret).into_bytes());
    bytes::Bytes::from_owner(owned)
}

/// A sensitive header value (kept out of debug output and HPACK tables)
/// whose bytes are zeroized when dropped.
pub(crate) fn secret_header(
    value: zeroize::Zeroizing<String>,
) -> std::result::Result<reqwest::header::HeaderValue, reqwest::header::InvalidHeaderValue> {
    let mut value = reqwest::header::HeaderValue::from_maybe_shared(zeroized_on_drop(value))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Reads the whole body, refusing more than `cap` bytes.
pub(crate) async fn read_capped(
    response: reqwest::Response,
    cap: usize,
    url: &str,
) -> Result<Vec<u8>> {
    read_capped_with(
        response,
        cap,
        url,
        "that is not a token or discovery answer: check the authority",
    )
    .await
}

/// Reads the whole body, refusing more than `cap` bytes with `advice`.
pub(crate) async fn read_capped_with(
    mut response: reqwest::Response,
    cap: usize,
    url: &str,
    advice: &str,
) -> Result<Vec<u8>> {
    let status = response.status().as_u16();
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large(status, cap, url, advice));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > cap {
                    return Err(too_large(status, cap, url, advice));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(from_reqwest(e, url).with_status(status)),
        }
    }
}

/// Reads at most `cap` bytes of the body (an error page: its first part is
/// all that is needed) and the body's length as far as known: the
/// `Content-Length`, else what was read.
pub(crate) async fn read_prefix(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, u64)> {
    let declared = response.content_length();
    let url = response.url().to_string();
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let mut seen: u64 = 0;
    while body.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                seen = seen.saturating_add(chunk.len() as u64);
                let room = cap - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => break,
            Err(e) => return Err(from_reqwest(e, &url).with_status(status)),
        }
    }
    Ok((body, declared.unwrap_or(seen).max(seen)))
}

fn too_large(status: u16, cap: usize, url: &str, advice: &str) -> Error {
    Error::new(
        ErrorKind::InvalidResponse,
        format!("{url} answered more than {cap} bytes (HTTP {status}); {advice}"),
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
    if let Some(refusal) = proxy_refusal(&err, url) {
        return refusal.with_source(err);
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

/// Every error in `err`'s chain, `err` first. rustls and hyper-util put
/// their errors inside an `io::Error` (often two, nested) inside hyper's
/// and reqwest's, and `io::Error::source` skips the error it wraps: descend
/// with `get_ref` as well as `source`. Bounded, in case of a cyclic chain.
fn causes<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |&e: &&'a (dyn StdError + 'static)| {
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        }
    })
    .take(32)
}

/// The rustls error somewhere in `err`'s chain.
pub(crate) fn find_rustls_error<'a>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a rustls::Error> {
    causes(err).find_map(|e| e.downcast_ref::<rustls::Error>())
}

/// What a forward proxy answered instead of opening the tunnel to `url`,
/// as an error that names the proxy, not the server, as what refused.
/// hyper-util's tunnel error type is private, so its text is the only
/// signal; tests/proxy.rs fails if a new version words it differently.
pub(crate) fn proxy_refusal(err: &(dyn StdError + 'static), url: &str) -> Option<Error> {
    causes(err).find_map(|e| match e.to_string().as_str() {
        // The proxy wants credentials it was not given (or refuses the
        // ones it was): asking again cannot help.
        "tunnel error: proxy authorization required" => Some(
            Error::new(
                ErrorKind::Transport,
                format!(
                    "the proxy asked for credentials (HTTP 407) to open a tunnel to {url}: give them \
                     in the proxy URL, http://USER:PASSWORD@HOST:PORT (.proxy(..) or HTTPS_PROXY), \
                     or exempt this host from the proxy with NO_PROXY=HOST"
                ),
            )
            .transient(false),
        ),
        // Its policy (403) or its own way there (502, 503): may pass later.
        "tunnel error: unsuccessful" => Some(Error::new(
            ErrorKind::Transport,
            format!(
                "the proxy refused to open a tunnel to {url} (or answered what is not HTTP): check \
                 that it lets this machine reach that host and port, or exempt the host from the \
                 proxy with NO_PROXY=HOST"
            ),
        )),
        _ => None,
    })
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
        // Trusting a CA cannot help these: the certificate must be replaced.
        E::InvalidCertificate(CertificateError::Revoked) => {
            "the server's certificate has been revoked by its CA: re-issue AIM's certificate (from the PCS root CA) and bind the new one in IIS on the AIM node"
        }
        E::InvalidCertificate(CertificateError::InvalidPurpose)
        | E::InvalidCertificate(CertificateError::InvalidPurposeContext { .. }) => {
            "the server's certificate is not for TLS servers (no serverAuth extended key usage): re-issue AIM's certificate with the Server Authentication purpose"
        }
        _ => {
            "check the server's certificate; if it is issued by the PCS root CA, give that CA with .root_certificate_pem(..) or AIM_CA_CERT"
        }
    };
    // An OS reason in its own words, not rustls' `Other(OtherError(..))`.
    match tls {
        E::InvalidCertificate(CertificateError::Other(os)) => {
            format!("TLS with {url} failed (invalid peer certificate: {os}): {fix}")
        }
        _ => format!("TLS with {url} failed ({tls}): {fix}"),
    }
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
fn chain(err: &(dyn StdError + 'static)) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(roots: Vec<Vec<u8>>) -> HttpConfig {
        HttpConfig {
            root_certificates: roots,
            danger_accept_invalid_certs: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            proxy: None,
        }
    }

    /// Only what the url crate reads as a loopback host skips the proxy:
    /// look-alike names keep it (and are refused plain http elsewhere by
    /// the same rule); numeric spellings of 127.0.0.1 are 127.0.0.1.
    #[test]
    fn only_plain_http_to_a_loopback_host_goes_direct() {
        let direct = |u: &str| goes_direct(&url::Url::parse(u).unwrap());
        for u in [
            "http://127.0.0.1:8080/mesmw/",
            "http://127.9.8.7/",
            "http://LOCALHOST/",
            "http://[::1]:1/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://0177.0.0.1/",
        ] {
            assert!(direct(u), "{u}");
        }
        for u in [
            "https://127.0.0.1/",
            "http://127.0.0.1.evil/",
            "http://localhost./",
            "http://localhost.evil/",
            "http://evil.localhost/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::]/",
            "http://0.0.0.0/",
            "http://127.0.0.1@evil/",
            "http://evil/?127.0.0.1",
            "ws://127.0.0.1/",
        ] {
            assert!(!direct(u), "{u}");
        }
    }

    #[test]
    fn a_bad_proxy_url_is_a_config_error_without_its_password() {
        for url in [
            "proxy.plant.local:3128",
            "ftp://proxy",
            "http://user:hunter2@",
            "not a url",
        ] {
            let mut config = config(Vec::new());
            config.proxy = Some(url.to_owned());
            let err = build_client(&config).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(err.to_string().contains("proxy"), "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let mut config = config(Vec::new());
        config.proxy = Some("http://user:hunter2@127.0.0.1:3128".to_owned());
        assert!(build_client(&config).is_ok());
        let debug = format!("{config:?}");
        assert!(
            debug.contains("127.0.0.1:3128") && !debug.contains("hunter2"),
            "{debug}"
        );
    }

    #[test]
    fn a_certificate_that_must_be_replaced_is_not_fixed_by_trusting_a_ca() {
        use rustls::CertificateError as C;
        for refused in [C::Revoked, C::InvalidPurpose] {
            let message = tls_message(
                &rustls::Error::InvalidCertificate(refused.clone()),
                "https://sms01",
            );
            assert!(message.contains("re-issue"), "{message}");
            assert!(!message.contains("root_certificate_pem"), "{message}");
        }
        let os = rustls::OtherError(std::sync::Arc::from(Box::<
            dyn std::error::Error + Send + Sync,
        >::from("the OS's reason")));
        let message = tls_message(
            &rustls::Error::InvalidCertificate(C::Other(os)),
            "https://sms01",
        );
        assert!(
            message.contains("(invalid peer certificate: the OS's reason)"),
            "{message}"
        );
    }

    #[test]
    fn bad_pem_is_a_config_error_at_build() {
        let garbage_der =
            "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
        for pem in [
            b"not pem at all".to_vec(),
            b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".to_vec(),
            garbage_der.as_bytes().to_vec(),
        ] {
            let err = build_client(&config(vec![pem.clone()])).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::Config,
                "{}",
                String::from_utf8_lossy(&pem)
            );
            assert!(err.to_string().contains("PEM"), "{err}");
        }
    }

    #[test]
    fn secret_buffers_are_moved_not_copied_into_the_request() {
        // The bytes reqwest sends are the zeroizing buffer itself: no
        // plain copy of the form or the Basic header is left behind.
        let body = zeroize::Zeroizing::new(String::from("client_secret=abc"));
        let at = body.as_ptr();
        let bytes = zeroized_on_drop(body);
        assert_eq!(bytes.as_ptr(), at);
        assert_eq!(&bytes[..], b"client_secret=abc");
    }

    #[test]
    fn secret_headers_are_sensitive() {
        let text = zeroize::Zeroizing::new("Bearer abc".to_owned());
        let at = text.as_ptr();
        let value = secret_header(text).unwrap();
        // The header holds the zeroizing buffer itself, not a copy.
        assert_eq!(value.as_bytes().as_ptr(), at);
        assert!(value.is_sensitive());
        assert_eq!(value, "Bearer abc");
        assert!(secret_header(zeroize::Zeroizing::new("a\nb".to_owned())).is_err());
    }

    #[test]
    fn builds_with_the_os_store_alone() {
        build_client(&config(Vec::new())).unwrap();
    }
}
