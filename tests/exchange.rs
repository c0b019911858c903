//! The token exchange over real sockets on 127.0.0.1: a scripted HTTP
//! server for wire-level details (what exactly is sent, redirects, body cap,
//! echoed secrets), and the AIM emulator for the protocol and its faults.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aim_token::{AimClient, AimClientBuilder, ClientAuthMethod, Error, ErrorKind};
use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ID: &str = "mes:client one";
const SECRET: &str = "P@ss w0rd&+=%:/?#";
/// Every test finishes well within this, whatever the server does.
const BOUND: Duration = Duration::from_secs(10);
/// The request timeout of the fault tables: a fault that answers at once
/// must never look like a timeout, even on a loaded machine under Wine.
const FAULT_TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// A scripted HTTP/1.1 server: records each request, answers with the next
// scripted response (the last one repeats).

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.body.as_bytes())
            .into_owned()
            .collect()
    }
}

#[derive(Clone)]
enum Reply {
    /// Status, extra headers, body.
    Http(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// Read the request, then never answer.
    Hang,
    /// Read the request, then close the connection.
    Close,
}

fn json(status: u16, body: &str) -> Reply {
    Reply::Http(
        status,
        vec![("Content-Type", "application/json".into())],
        body.as_bytes().to_vec(),
    )
}

/// Routes by path prefix; unmatched paths get 404.
struct Scripted {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    routes: Routes,
    _task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    async fn start() -> Scripted {
        Self::start_with(None).await
    }

    /// AIM's discovery, and `replies` (in order) from its token endpoint.
    async fn answering_tokens(replies: Vec<Reply>) -> Scripted {
        let server = Self::start().await;
        server.serve_discovery();
        server.route("/identitymanager/connect/token", replies);
        server
    }

    /// Serves https with `tls` (else http).
    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, tls)
    }

    fn serve(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> Scripted {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let routes: Routes = Arc::new(Mutex::new(Vec::new()));
        let (seen2, routes2) = (seen.clone(), routes.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let (seen, routes, tls) = (seen2.clone(), routes2.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        // A failed handshake (untrusted client) just ends the connection.
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                serve_connection(stream, seen, routes).await;
                            }
                        }
                        None => serve_connection(stream, seen, routes).await,
                    }
                });
            }
        });
        Scripted {
            base,
            seen,
            routes,
            _task: task,
        }
    }

    /// `path` answers `replies` in turn, repeating the last.
    fn route(&self, path: &str, replies: Vec<Reply>) {
        self.routes.lock().unwrap().push((path.to_owned(), replies));
    }

    fn authority(&self) -> String {
        format!("{}/identitymanager", self.base)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path.starts_with(path))
            .count()
    }

    fn serve_discovery(&self) {
        let a = self.authority();
        self.route(
            "/identitymanager/.well-known/openid-configuration",
            vec![json(
                200,
                &format!(r#"{{"issuer":"{a}","token_endpoint":"{a}/connect/token","jwks_uri":"{a}/jwks"}}"#),
            )],
        );
    }

    fn builder(&self) -> AimClientBuilder {
        AimClient::builder()
            .authority(self.authority())
            .client_id(ID)
            .client_secret(SECRET)
            .retry_deadline(Duration::ZERO)
            .background_refresh(false)
            // Below a millisecond: every refresh() asks, as these tests count requests.
            .min_refresh_interval(Duration::from_micros(1))
    }
}

type Routes = Arc<Mutex<Vec<(String, Vec<Reply>)>>>;

async fn serve_connection<S>(mut stream: S, seen: Arc<Mutex<Vec<Seen>>>, routes: Routes)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let Some(request) = read_request(&mut stream).await else {
            return;
        };
        let reply = {
            let mut routes = routes.lock().unwrap();
            match routes
                .iter_mut()
                .find(|(p, _)| request.path.starts_with(p.as_str()))
            {
                Some((_, replies)) if replies.len() > 1 => replies.remove(0),
                Some((_, replies)) => replies[0].clone(),
                None => Reply::Http(404, vec![], b"not found".to_vec()),
            }
        };
        seen.lock().unwrap().push(request);
        match reply {
            Reply::Http(status, headers, body) => {
                let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
                for (n, v) in headers {
                    head.push_str(&format!("{n}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let mut all = head.into_bytes();
                all.extend_from_slice(&body);
                if stream.write_all(&all).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Reply::Close => return,
        }
    }
}

async fn read_request<S>(stream: &mut S) -> Option<Seen>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

const TOKEN_OK: &str =
    r#"{"access_token":"tok-123","expires_in":"3600","token_type":"bearer","scope":"mes.api"}"#;

async fn token(aim: &AimClient) -> Result<aim_token::AccessToken, Error> {
    tokio::time::timeout(BOUND, aim.token())
        .await
        .expect("token() took longer than the bound")
}

/// Neither the secret (in any spelling) nor `token` may appear.
fn assert_secret_free(err: &Error, token: &str) {
    let mut texts = vec![err.to_string(), format!("{err:?}")];
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        texts.push(s.to_string());
        texts.push(format!("{s:?}"));
        source = s.source();
    }
    for text in texts {
        for needle in [SECRET, "w0rd", "P%40ss", token] {
            assert!(!text.contains(needle), "`{needle}` leaked into: {text}");
        }
    }
}

// ---------------------------------------------------------------------------
// Wire-level tests against the scripted server.

#[tokio::test]
async fn post_sends_the_form_encoded_exactly_once() {
    let server = Scripted::answering_tokens(vec![json(200, TOKEN_OK)]).await;
    let aim = server
        .builder()
        .scope("mes.api")
        .scope("openid")
        .resource("urn:aveva:mes")
        .build()
        .unwrap();
    let t = token(&aim).await.unwrap();
    assert_eq!(t.secret(), "tok-123");
    assert_eq!(t.token_type(), "Bearer");
    assert_eq!(t.scopes(), ["mes.api"]);
    assert_eq!(t.lifetime(), Duration::from_secs(3600));
    assert_eq!(t.authority(), server.authority());

    let seen = server.seen();
    let req = seen
        .iter()
        .find(|s| s.path == "/identitymanager/connect/token")
        .unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(req.header("authorization"), None);
    assert_eq!(
        req.form(),
        [
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("scope".to_owned(), "mes.api openid".to_owned()),
            ("resource".to_owned(), "urn:aveva:mes".to_owned()),
            ("client_id".to_owned(), ID.to_owned()),
            ("client_secret".to_owned(), SECRET.to_owned()),
        ]
    );
}

#[tokio::test]
async fn basic_sends_percent_encoded_credentials_in_the_header() {
    let server = Scripted::answering_tokens(vec![json(200, TOKEN_OK)]).await;
    let aim = server
        .builder()
        .auth_method(ClientAuthMethod::Basic)
        .build()
        .unwrap();
    token(&aim).await.unwrap();
    let seen = server.seen();
    let req = seen
        .iter()
        .find(|s| s.path == "/identitymanager/connect/token")
        .unwrap();
    assert_eq!(req.body, "grant_type=client_credentials");
    let header = req.header("authorization").unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(header.strip_prefix("Basic ").unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        "mes%3Aclient%20one:P%40ss%20w0rd%26%2B%3D%25%3A%2F%3F%23"
    );
}

#[tokio::test]
async fn ipv6_loopback_literal_over_http() {
    let Ok(listener) = TcpListener::bind("[::1]:0").await else {
        eprintln!("no IPv6 loopback on this machine: skipped");
        return;
    };
    let server = Scripted::serve(listener, None);
    assert!(server.base.starts_with("http://[::1]:"), "{}", server.base);
    server.serve_discovery();
    server.route("/identitymanager/connect/token", vec![json(200, TOKEN_OK)]);
    let aim = server.builder().build().unwrap();
    assert_eq!(aim.authority(), server.authority());
    assert_eq!(token(&aim).await.unwrap().authority(), server.authority());
}

#[tokio::test]
async fn build_sends_nothing_until_the_first_token() {
    let server = Scripted::answering_tokens(vec![json(200, TOKEN_OK)]).await;
    // Default settings (background refresh on), inside a runtime: nothing
    // may be started that talks to AIM before a token is asked for.
    let aim = AimClient::builder()
        .authority(server.authority())
        .client_id(ID)
        .client_secret(SECRET)
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let early: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
    assert!(early.is_empty(), "sent before token(): {early:?}");
    token(&aim).await.unwrap();
    assert_eq!(server.count("/identitymanager/.well-known"), 1);
    assert_eq!(server.count("/identitymanager/connect/token"), 1);
}

#[tokio::test]
async fn discovery_is_cached_and_its_endpoint_used() {
    let server = Scripted::start().await;
    let a = server.authority();
    // Discovery points to a non-default path: proof that it is used.
    server.route(
        "/identitymanager/.well-known/openid-configuration",
        vec![json(
            200,
            &format!(r#"{{"issuer":"{a}/","token_endpoint":"{a}/custom/token"}}"#),
        )],
    );
    server.route("/identitymanager/custom/token", vec![json(200, TOKEN_OK)]);
    let aim = server.builder().build().unwrap();
    for _ in 0..3 {
        tokio::time::timeout(BOUND, aim.refresh())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(server.count("/identitymanager/.well-known"), 1);
    assert_eq!(server.count("/identitymanager/custom/token"), 3);
}

#[tokio::test]
async fn discovery_is_fetched_again_after_an_hour_of_wall_clock() {
    let server = Scripted::answering_tokens(vec![json(200, TOKEN_OK)]).await;
    let clock = Arc::new(aim_token::TokioClock::new());
    let aim = server.builder().clock(clock.clone()).build().unwrap();
    let refresh = || async {
        tokio::time::timeout(BOUND, aim.refresh())
            .await
            .unwrap()
            .unwrap()
    };
    refresh().await;
    clock.jump(Duration::from_secs(59 * 60));
    refresh().await;
    assert_eq!(server.count("/identitymanager/.well-known"), 1);
    clock.jump(Duration::from_secs(2 * 60));
    refresh().await;
    assert_eq!(server.count("/identitymanager/.well-known"), 2);
    assert_eq!(server.count("/identitymanager/connect/token"), 3);
}

#[tokio::test]
async fn discovery_404_falls_back_to_connect_token() {
    let server = Scripted::start().await;
    server.route("/identitymanager/connect/token", vec![json(200, TOKEN_OK)]);
    let aim = server.builder().build().unwrap();
    token(&aim).await.unwrap();
    assert_eq!(server.count("/identitymanager/.well-known"), 1);
    assert_eq!(server.count("/identitymanager/connect/token"), 1);
}

#[tokio::test]
async fn token_endpoint_skips_discovery() {
    let server = Scripted::start().await;
    server.serve_discovery();
    server.route("/elsewhere/token", vec![json(200, TOKEN_OK)]);
    let aim = server
        .builder()
        .token_endpoint(format!("{}/elsewhere/token", server.base))
        .build()
        .unwrap();
    token(&aim).await.unwrap();
    tokio::time::timeout(BOUND, aim.refresh())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(server.count("/identitymanager/.well-known"), 0);
    assert_eq!(server.count("/elsewhere/token"), 2);
}

#[tokio::test]
async fn discovery_is_kept_after_a_transient_failure() {
    let server = Scripted::answering_tokens(vec![
        Reply::Http(503, vec![], b"busy".to_vec()),
        json(200, TOKEN_OK),
    ])
    .await;
    let aim = server.builder().build().unwrap();
    let err = token(&aim).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server);
    token(&aim).await.unwrap();
    // A busy node says nothing about where its endpoint is: one request per retry.
    assert_eq!(server.count("/identitymanager/.well-known"), 1);
}

#[tokio::test]
async fn discovery_is_fetched_again_after_the_endpoint_was_not_found() {
    let server = Scripted::answering_tokens(vec![
        Reply::Http(404, vec![], b"<html>not found</html>".to_vec()),
        json(200, TOKEN_OK),
    ])
    .await;
    let aim = server.builder().build().unwrap();
    let err = token(&aim).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    token(&aim).await.unwrap();
    assert_eq!(server.count("/identitymanager/.well-known"), 2);
}

#[tokio::test]
async fn issuer_mismatch_is_refused_before_the_secret_is_sent() {
    let server = Scripted::start().await;
    server.route(
        "/identitymanager/.well-known/openid-configuration",
        vec![json(
            200,
            r#"{"issuer":"https://evil.example/identitymanager","token_endpoint":"https://evil.example/t"}"#,
        )],
    );
    let aim = server.builder().build().unwrap();
    let err = token(&aim).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    assert!(
        err.to_string()
            .contains("https://evil.example/identitymanager"),
        "{err}"
    );
    assert!(err.to_string().contains(&server.authority()), "{err}");
    assert_eq!(server.count("/identitymanager/connect/token"), 0);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = Scripted::start().await;
    server.serve_discovery();
    let target = format!("{}/stolen", server.base);
    server.route(
        "/identitymanager/connect/token",
        vec![Reply::Http(307, vec![("Location", target.clone())], vec![])],
    );
    server.route("/stolen", vec![json(200, TOKEN_OK)]);
    let aim = server.builder().build().unwrap();
    let err = token(&aim).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    assert_eq!(err.status(), Some(307));
    assert!(err.to_string().contains(&target), "{err}");
    assert_eq!(server.count("/stolen"), 0);
    assert_secret_free(&err, "tok-123");
}

#[tokio::test]
async fn bodies_over_one_mib_are_refused() {
    let huge = format!(r#"{{"access_token":"{}"}}"#, "a".repeat(1024 * 1024 + 1));
    let server = Scripted::answering_tokens(vec![json(200, &huge)]).await;
    let aim = server.builder().build().unwrap();
    let err = token(&aim).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    assert!(err.to_string().contains("more than 1048576 bytes"), "{err}");
    // Just under the cap is fine.
    let big = format!(r#"{{"access_token":"{}"}}"#, "a".repeat(1024 * 1024 - 100));
    let server = Scripted::answering_tokens(vec![json(200, &big)]).await;
    let aim = server.builder().build().unwrap();
    assert_eq!(token(&aim).await.unwrap().secret().len(), 1024 * 1024 - 100);
}

#[tokio::test]
async fn retry_after_header_is_reported() {
    let server = Scripted::answering_tokens(vec![Reply::Http(
        429,
        vec![("Retry-After", "17".into())],
        b"slow down".to_vec(),
    )])
    .await;
    let aim = server.builder().build().unwrap();
    let err = token(&aim).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server);
    assert!(err.is_transient());
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));
}

#[tokio::test]
async fn echoed_secrets_and_tokens_never_reach_errors() {
    let encoded = url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect::<String>();
    let replies = [
        Reply::Http(
            500,
            vec![],
            format!("<html><body>client_secret={encoded}</body></html>").into_bytes(),
        ),
        json(
            400,
            &format!(r#"{{"error":"invalid_client","error_description":"bad secret {SECRET}"}}"#),
        ),
        json(
            401,
            &format!(r#"{{"error":"invalid_client","error_description":"{encoded}"}}"#),
        ),
        json(200, r#"{"access_token":"tok-123","token_type":"mac"}"#),
        json(200, r#"{"access_token":"tok-123","expires_in":36"#),
        Reply::Http(
            200,
            vec![],
            format!("access_token=tok-123&secret={SECRET}").into_bytes(),
        ),
        Reply::Close,
    ];
    for reply in replies {
        let server = Scripted::answering_tokens(vec![reply]).await;
        for method in [ClientAuthMethod::Post, ClientAuthMethod::Basic] {
            let aim = server.builder().auth_method(method).build().unwrap();
            let err = token(&aim).await.unwrap_err();
            assert_secret_free(&err, "tok-123");
        }
    }
}

#[tokio::test]
async fn request_timeout_is_a_timeout() {
    let server = Scripted::answering_tokens(vec![Reply::Hang]).await;
    let aim = server
        .builder()
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = token(&aim).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn closed_connection_and_refused_port_are_transport_errors() {
    let server = Scripted::answering_tokens(vec![Reply::Close]).await;
    let aim = server.builder().build().unwrap();
    let err = token(&aim).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err:?}");
    assert!(err.is_transient());

    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let aim = AimClient::builder()
        .authority(format!("http://127.0.0.1:{port}"))
        .client_id(ID)
        .client_secret(SECRET)
        .retry_deadline(Duration::ZERO)
        .build()
        .unwrap();
    let err = token(&aim).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

/// A `MakeWriter` into a shared buffer, to read what was logged.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// tracing caches per-callsite interest process-wide, so a scoped subscriber
/// in a test binary running tests in parallel can miss events. The test
/// therefore runs itself again as a child process with a global subscriber.
#[test]
fn logs_have_the_exchange_span_but_never_secrets() {
    const CHILD: &str = "AIM_TOKEN_TEST_LOG_CHILD";
    if std::env::var_os(CHILD).is_some() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(logs_child());
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "logs_have_the_exchange_span_but_never_secrets",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The child really ran the test (and not zero tests).
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}

async fn logs_child() {
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let server = Scripted::start().await;
    server.route("/identitymanager/connect/token", vec![json(200, TOKEN_OK)]);
    for method in [ClientAuthMethod::Post, ClientAuthMethod::Basic] {
        let aim = server.builder().auth_method(method).build().unwrap();
        token(&aim).await.unwrap();
    }
    let server = Scripted::answering_tokens(vec![json(
        400,
        &format!(r#"{{"error":"invalid_client","error_description":"{SECRET}"}}"#),
    )])
    .await;
    let aim = server
        .builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    token(&aim).await.unwrap_err();

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("aim_token.exchange"), "{text}");
    assert!(
        text.contains("outcome=\"ok\"") || text.contains("outcome=ok"),
        "{text}"
    );
    assert!(text.contains("outcome=OAuth"), "{text}");
    assert!(text.contains("status=400"), "{text}");
    assert!(text.contains("latency_ms="), "{text}");
    assert!(
        text.contains(&format!("client_id=\"{ID}\"")) || text.contains(&format!("client_id={ID}")),
        "{text}"
    );
    // The 404 discovery fallback and the lab-only TLS switch warn.
    assert!(text.contains("no OpenID discovery"), "{text}");
    assert!(text.contains("danger_accept_invalid_certs is on"), "{text}");
    let basic = base64::engine::general_purpose::STANDARD
        .encode("mes%3Aclient%20one:P%40ss%20w0rd%26%2B%3D%25%3A%2F%3F%23");
    for needle in [SECRET, "w0rd", "P%40ss", "tok-123", basic.as_str()] {
        assert!(
            !text.contains(needle),
            "`{needle}` leaked into the logs:\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------
// TLS: a CA like the PCS root CA, a server certificate it signed.

struct Pki {
    ca_pem: String,
    other_ca_pem: String,
    acceptor: tokio_rustls::TlsAcceptor,
}

fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let root = ca("Test PCS Root CA");
    let other = ca("Some Other CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &root)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    Pki {
        ca_pem: root.pem(),
        other_ca_pem: other.pem(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}

#[tokio::test]
async fn https_works_only_with_the_right_ca_or_the_danger_switch() {
    let pki = pki();
    let server = Scripted::start_with(Some(pki.acceptor.clone())).await;
    server.serve_discovery();
    server.route("/identitymanager/connect/token", vec![json(200, TOKEN_OK)]);
    assert!(server.authority().starts_with("https://127.0.0.1:"));

    // Trusted: the CA is given (merged with the OS trust store).
    let aim = server
        .builder()
        .root_certificate_pem(&pki.ca_pem)
        .build()
        .unwrap();
    assert_eq!(token(&aim).await.unwrap().secret(), "tok-123");
    // Several roots, the right one among them, also work.
    let aim = server
        .builder()
        .root_certificate_pem(&pki.other_ca_pem)
        .root_certificate_pem(format!("{}\n{}", pki.other_ca_pem, pki.ca_pem))
        .build()
        .unwrap();
    token(&aim).await.unwrap();

    // Untrusted: no CA, or the wrong one -> Tls, naming the fix, nothing sent.
    let before = server.count("/identitymanager/connect/token");
    for builder in [
        server.builder(),
        server.builder().root_certificate_pem(&pki.other_ca_pem),
    ] {
        let err = token(&builder.build().unwrap()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
        assert!(!err.is_transient());
        let msg = err.to_string();
        assert!(
            msg.contains("root_certificate_pem") && msg.contains("AIM_CA_CERT"),
            "{msg}"
        );
        assert_secret_free(&err, "tok-123");
    }
    assert_eq!(server.count("/identitymanager/connect/token"), before);

    // The lab switch accepts it.
    let aim = server
        .builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    token(&aim).await.unwrap();
}

#[tokio::test]
async fn certificate_for_another_host_names_the_fix() {
    // A trusted (self-signed) certificate, but for a name other than 127.0.0.1.
    let key = rcgen::KeyPair::generate().unwrap();
    let wrong = rcgen::CertificateParams::new(vec!["sms01.plant.local".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![wrong.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let wrong_server =
        Scripted::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await;
    let aim = wrong_server
        .builder()
        .root_certificate_pem(wrong.pem())
        .build()
        .unwrap();
    let err = token(&aim).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
    assert!(err.to_string().contains("host name"), "{err}");
}

// ---------------------------------------------------------------------------
// Against the AIM emulator.

mod emulator {
    use super::*;
    use aim_token::emulator::{AimEmulator, EmulatorClient, Endpoint, ExpiresInFormat, Fault};

    const SECRET_EMU: &str = AimEmulator::CLIENT_SECRET;

    /// A client of the default emulator client that tries exactly once.
    fn once(emu: &AimEmulator) -> AimClientBuilder {
        emu.client_builder()
            .retry_deadline(Duration::ZERO)
            .background_refresh(false)
            .request_timeout(Duration::from_secs(2))
            // Below a millisecond: every refresh() asks, as these tests count requests.
            .min_refresh_interval(Duration::from_micros(1))
    }

    fn assert_clean(err: &Error) {
        let text = format!("{err} {err:?}");
        assert!(!text.contains(SECRET_EMU), "secret leaked: {text}");
        assert!(!text.contains("P@ss"), "secret leaked: {text}");
        assert!(!text.contains("eyJ"), "token leaked: {text}");
    }

    #[tokio::test]
    async fn post_and_basic_over_http_and_https() {
        for https in [false, true] {
            let emu = AimEmulator::builder().https(https).start().await.unwrap();
            for method in [ClientAuthMethod::Post, ClientAuthMethod::Basic] {
                let aim = once(&emu)
                    .auth_method(method)
                    .scope(AimEmulator::DEFAULT_SCOPE)
                    .build()
                    .unwrap();
                let t = token(&aim)
                    .await
                    .unwrap_or_else(|e| panic!("{https} {method}: {e:?}"));
                assert_eq!(t.token_type(), "Bearer");
                assert_eq!(t.scopes(), [AimEmulator::DEFAULT_SCOPE]);
                assert_eq!(t.lifetime(), Duration::from_secs(24 * 3600));
                assert_eq!(t.authority(), emu.authority());
                assert!(t.secret().starts_with("eyJ"), "a JWT");
            }
            let c = emu.counters();
            assert_eq!((c.discovery, c.token, c.tokens_issued), (2, 2, 2), "{c:?}");
        }
    }

    #[tokio::test]
    async fn expires_in_as_string_or_missing() {
        for format in [
            ExpiresInFormat::Number,
            ExpiresInFormat::String,
            ExpiresInFormat::Missing,
        ] {
            let emu = AimEmulator::builder()
                .token_lifetime(Duration::from_secs(900))
                .expires_in_format(format)
                .start()
                .await
                .unwrap();
            let t = token(&once(&emu).build().unwrap()).await.unwrap();
            // Missing: from the JWT `exp` (whole seconds, so within a second).
            let lifetime = t.lifetime().as_secs_f64();
            assert!((lifetime - 900.0).abs() <= 1.0, "{format:?}: {lifetime}");
        }
    }

    #[tokio::test]
    async fn wrong_secret_and_disallowed_scope_are_oauth_errors() {
        let emu = AimEmulator::start().await.unwrap();
        let aim = once(&emu).client_secret("wrong secret").build().unwrap();
        let err = token(&aim).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OAuth);
        assert_eq!(err.oauth_error(), Some("invalid_client"));
        assert!(!err.is_transient());
        assert_eq!(err.status(), Some(400));
        assert!(!err.to_string().contains("wrong secret"), "{err}");

        let aim = once(&emu).scope("not.allowed").build().unwrap();
        let err = token(&aim).await.unwrap_err();
        assert_eq!(err.oauth_error(), Some("invalid_scope"), "{err:?}");

        let mut disabled = EmulatorClient::new("off:client", "x y&z");
        disabled.enabled = false;
        emu.add_client(disabled);
        let aim = once(&emu)
            .client_id("off:client")
            .client_secret("x y&z")
            .auth_method(ClientAuthMethod::Basic)
            .build()
            .unwrap();
        let err = token(&aim).await.unwrap_err();
        assert_eq!(err.oauth_error(), Some("invalid_client"), "{err:?}");
    }

    #[tokio::test]
    async fn a_client_with_an_awkward_id_and_secret() {
        let emu = AimEmulator::start().await.unwrap();
        emu.add_client(EmulatorClient::new(ID, SECRET));
        for method in [ClientAuthMethod::Post, ClientAuthMethod::Basic] {
            let aim = once(&emu)
                .client_id(ID)
                .client_secret(SECRET)
                .auth_method(method)
                .build()
                .unwrap();
            token(&aim)
                .await
                .unwrap_or_else(|e| panic!("{method}: {e:?}"));
        }
    }

    /// Every injected fault: the right kind, no panic, one request, bounded time.
    #[tokio::test]
    async fn every_fault_gives_the_right_error() {
        let emu = AimEmulator::start().await.unwrap();
        let cases: Vec<(Fault, ErrorKind, bool, Option<u16>)> = vec![
            (
                Fault::Status {
                    status: 503,
                    retry_after: Some(5),
                    body: None,
                },
                ErrorKind::Server,
                true,
                Some(503),
            ),
            (
                Fault::Status {
                    status: 429,
                    retry_after: Some(2),
                    body: Some("slow down".into()),
                },
                ErrorKind::Server,
                true,
                Some(429),
            ),
            (
                Fault::Status {
                    status: 502,
                    retry_after: None,
                    body: Some("<html>Bad Gateway</html>".into()),
                },
                ErrorKind::Server,
                true,
                Some(502),
            ),
            (
                Fault::Status {
                    status: 404,
                    retry_after: None,
                    body: Some("<html>Not Found</html>".into()),
                },
                ErrorKind::InvalidResponse,
                false,
                Some(404),
            ),
            (
                Fault::RetryAfterDate {
                    status: 503,
                    after: Duration::from_secs(120),
                },
                ErrorKind::Server,
                true,
                Some(503),
            ),
            (
                Fault::OAuth {
                    status: 400,
                    error: "invalid_client".into(),
                },
                ErrorKind::OAuth,
                false,
                Some(400),
            ),
            (
                Fault::OAuth {
                    status: 401,
                    error: "invalid_client".into(),
                },
                ErrorKind::OAuth,
                false,
                Some(401),
            ),
            (
                Fault::OAuth {
                    status: 400,
                    error: "unauthorized_client".into(),
                },
                ErrorKind::OAuth,
                false,
                Some(400),
            ),
            (
                Fault::OAuth {
                    status: 503,
                    error: "temporarily_unavailable".into(),
                },
                ErrorKind::OAuth,
                true,
                Some(503),
            ),
            (
                Fault::Delay(Duration::from_secs(30)),
                ErrorKind::Timeout,
                true,
                None,
            ),
            (Fault::DropConnection, ErrorKind::Transport, true, None),
            (Fault::Garbage, ErrorKind::InvalidResponse, false, Some(200)),
            (Fault::Html, ErrorKind::Server, true, Some(500)),
            (Fault::Empty, ErrorKind::InvalidResponse, false, Some(200)),
            (
                Fault::Truncated,
                ErrorKind::InvalidResponse,
                false,
                Some(200),
            ),
        ];
        for method in [ClientAuthMethod::Post, ClientAuthMethod::Basic] {
            for (fault, kind, transient, status) in &cases {
                let aim = once(&emu)
                    .auth_method(method)
                    .request_timeout(FAULT_TIMEOUT)
                    .build()
                    .unwrap();
                let before = emu.counters().token;
                emu.inject(Endpoint::Token, fault.clone());
                let started = std::time::Instant::now();
                let err = token(&aim).await.unwrap_err();
                let what = format!("{method} {fault:?}: {err:?}");
                assert_eq!(err.kind(), *kind, "{what}");
                assert_eq!(err.is_transient(), *transient, "{what}");
                assert_eq!(err.status(), *status, "{what}");
                assert!(started.elapsed() < Duration::from_secs(5), "{what}");
                assert_eq!(
                    emu.counters().token - before,
                    1,
                    "exactly one request: {what}"
                );
                assert_clean(&err);
                match fault {
                    Fault::Status {
                        retry_after: Some(s),
                        ..
                    } => {
                        assert_eq!(err.retry_after(), Some(Duration::from_secs(*s)), "{what}")
                    }
                    Fault::RetryAfterDate { after, .. } => {
                        let ra = err.retry_after().expect("Retry-After date");
                        assert!(ra.abs_diff(*after) <= Duration::from_secs(2), "{what}");
                    }
                    Fault::Html => assert!(err.to_string().contains("500"), "{what}"),
                    _ => {}
                }
                // The next request succeeds: nothing is stuck. (A fresh
                // client: the cache remembers permanent errors for a while.)
                token(&once(&emu).auth_method(method).build().unwrap())
                    .await
                    .unwrap_or_else(|e| panic!("after {what}: {e:?}"));
            }
        }
    }

    #[tokio::test]
    async fn discovery_faults_are_classified_too() {
        let emu = AimEmulator::start().await.unwrap();
        // A 500 HTML page instead of discovery: AIM's fixed route is tried.
        emu.inject(Endpoint::Discovery, Fault::Html);
        token(&once(&emu).build().unwrap()).await.unwrap();
        for (fault, kind) in [
            (Fault::DropConnection, ErrorKind::Transport),
            (Fault::Garbage, ErrorKind::InvalidResponse),
            (Fault::Truncated, ErrorKind::InvalidResponse),
            (Fault::Delay(Duration::from_secs(30)), ErrorKind::Timeout),
        ] {
            let aim = once(&emu).request_timeout(FAULT_TIMEOUT).build().unwrap();
            emu.inject(Endpoint::Discovery, fault.clone());
            let err = token(&aim).await.unwrap_err();
            assert_eq!(err.kind(), kind, "{fault:?}: {err:?}");
            assert!(
                err.to_string().contains(".well-known/openid-configuration"),
                "{err}"
            );
            assert_clean(&err);
            token(&once(&emu).build().unwrap()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn missing_discovery_falls_back_and_token_endpoint_skips_it() {
        let emu = AimEmulator::builder()
            .discovery(false)
            .start()
            .await
            .unwrap();
        let aim = once(&emu).build().unwrap();
        token(&aim).await.unwrap();
        tokio::time::timeout(BOUND, aim.refresh())
            .await
            .unwrap()
            .unwrap();
        let c = emu.counters();
        // One 404, remembered: the fallback is not re-discovered per request.
        assert_eq!((c.discovery, c.tokens_issued), (1, 2), "{c:?}");

        let emu = AimEmulator::start().await.unwrap();
        let aim = once(&emu)
            .token_endpoint(emu.token_endpoint())
            .build()
            .unwrap();
        token(&aim).await.unwrap();
        tokio::time::timeout(BOUND, aim.refresh())
            .await
            .unwrap()
            .unwrap();
        let c = emu.counters();
        assert_eq!((c.discovery, c.tokens_issued), (0, 2), "{c:?}");
    }

    #[tokio::test]
    async fn https_trust() {
        let emu = AimEmulator::builder().https(true).start().await.unwrap();
        let ca = emu.ca_pem().unwrap();
        let plain = || {
            AimClient::builder()
                .authority(emu.authority())
                .client_id(AimEmulator::CLIENT_ID)
                .client_secret(AimEmulator::CLIENT_SECRET)
                .retry_deadline(Duration::ZERO)
                .background_refresh(false)
        };
        // Trusted only with the CA.
        token(&plain().root_certificate_pem(&ca).build().unwrap())
            .await
            .unwrap();
        let err = token(&plain().build().unwrap()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
        assert!(err.to_string().contains("AIM_CA_CERT"), "{err}");
        assert_clean(&err);
        // Lab only.
        token(&plain().danger_accept_invalid_certs(true).build().unwrap())
            .await
            .unwrap();
        assert_eq!(emu.counters().tokens_issued, 2);
    }

    #[tokio::test]
    async fn a_suspended_server_is_a_transport_error_then_recovers() {
        let emu = AimEmulator::start().await.unwrap();
        let aim = once(&emu).build().unwrap();
        emu.suspend().await;
        let err = token(&aim).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transport, "{err:?}");
        assert!(err.is_transient());
        emu.resume().await.unwrap();
        token(&aim).await.unwrap();
    }
}
