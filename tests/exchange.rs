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

    fn form_value(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
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
    routes: Arc<Mutex<Vec<(String, Vec<Reply>)>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    async fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let routes: Arc<Mutex<Vec<(String, Vec<Reply>)>>> = Arc::new(Mutex::new(Vec::new()));
        let (seen2, routes2) = (seen.clone(), routes.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let seen = seen2.clone();
                let routes = routes2.clone();
                tokio::spawn(async move {
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
                                let mut head = format!(
                                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n",
                                    body.len()
                                );
                                for (n, v) in headers {
                                    head.push_str(&format!("{n}: {v}\r\n"));
                                }
                                head.push_str("\r\n");
                                if stream.write_all(head.as_bytes()).await.is_err()
                                    || stream.write_all(&body).await.is_err()
                                {
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
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Seen> {
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
    let server = Scripted::start().await;
    server.serve_discovery();
    server.route("/identitymanager/connect/token", vec![json(200, TOKEN_OK)]);
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
    let server = Scripted::start().await;
    server.serve_discovery();
    server.route("/identitymanager/connect/token", vec![json(200, TOKEN_OK)]);
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
async fn discovery_is_fetched_again_after_a_failure() {
    let server = Scripted::start().await;
    server.serve_discovery();
    server.route(
        "/identitymanager/connect/token",
        vec![
            Reply::Http(503, vec![], b"busy".to_vec()),
            json(200, TOKEN_OK),
        ],
    );
    let aim = server.builder().build().unwrap();
    let err = token(&aim).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server);
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
    let server = Scripted::start().await;
    server.serve_discovery();
    let huge = format!(r#"{{"access_token":"{}"}}"#, "a".repeat(1024 * 1024 + 1));
    server.route("/identitymanager/connect/token", vec![json(200, &huge)]);
    let aim = server.builder().build().unwrap();
    let err = token(&aim).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    assert!(err.to_string().contains("more than 1048576 bytes"), "{err}");
    // Just under the cap is fine.
    let server = Scripted::start().await;
    server.serve_discovery();
    let big = format!(r#"{{"access_token":"{}"}}"#, "a".repeat(1024 * 1024 - 100));
    server.route("/identitymanager/connect/token", vec![json(200, &big)]);
    let aim = server.builder().build().unwrap();
    assert_eq!(token(&aim).await.unwrap().secret().len(), 1024 * 1024 - 100);
}

#[tokio::test]
async fn retry_after_header_is_reported() {
    let server = Scripted::start().await;
    server.serve_discovery();
    server.route(
        "/identitymanager/connect/token",
        vec![Reply::Http(
            429,
            vec![("Retry-After", "17".into())],
            b"slow down".to_vec(),
        )],
    );
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
        let server = Scripted::start().await;
        server.serve_discovery();
        server.route("/identitymanager/connect/token", vec![reply]);
        for method in [ClientAuthMethod::Post, ClientAuthMethod::Basic] {
            let aim = server.builder().auth_method(method).build().unwrap();
            let err = token(&aim).await.unwrap_err();
            assert_secret_free(&err, "tok-123");
        }
    }
}

#[tokio::test]
async fn request_timeout_is_a_timeout() {
    let server = Scripted::start().await;
    server.serve_discovery();
    server.route("/identitymanager/connect/token", vec![Reply::Hang]);
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
    let server = Scripted::start().await;
    server.serve_discovery();
    server.route("/identitymanager/connect/token", vec![Reply::Close]);
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
    let server = Scripted::start().await;
    server.serve_discovery();
    server.route(
        "/identitymanager/connect/token",
        vec![json(
            400,
            &format!(r#"{{"error":"invalid_client","error_description":"{SECRET}"}}"#),
        )],
    );
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
