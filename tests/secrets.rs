//! Credentials and tokens go only where they belong, in every spelling.
//!
//! - Discovery cannot send the client secret or the initial access token to
//!   another origin: a recording server there sees no request.
//! - Servers that echo the secret or the token (HTML-escaped, JSON-escaped
//!   the way .NET writes it, percent-encoded in any case, ...) in HTML, text
//!   or broken JSON: no rendering of the error and no TRACE event holds it.
//!
//! Every test logs into one process-wide TRACE subscriber (tracing caches
//! per-callsite interest process-wide, so a per-test subscriber could miss
//! events); since no event may ever hold a secret, each test scans them all.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aim_token::{AimClient, AimClientBuilder, ClientAuthMethod, ClientRegistration, ErrorKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Markers that survive every encoding below, so a partial leak shows too.
const SECRET: &str = "Kx7Qa&+Vb9Rz %Wm2Tp/\"<'>";
const SECRET_MARKERS: [&str; 3] = ["Kx7Qa", "Vb9Rz", "Wm2Tp"];
const TOKEN: &str = "TokMarkA7q9+TokMarkB3z5/TokMarkC8w2=";
const TOKEN_MARKERS: [&str; 3] = ["TokMarkA7q9", "TokMarkB3z5", "TokMarkC8w2"];
const INITIAL_ACCESS_TOKEN: &str = "IatMarkQ4r8&+IatMarkP2k6 %";
const IAT_MARKERS: [&str; 2] = ["IatMarkQ4r8", "IatMarkP2k6"];
const BOUND: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Logs: one global TRACE subscriber into a buffer.

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn logs() -> String {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    let logs = LOGS.get_or_init(|| {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    });
    String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------------------
// A recording HTTP/1.1 stub: answers by path prefix, remembers every request.

#[derive(Clone)]
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

fn answer(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Answer {
    Answer {
        status,
        content_type,
        body: body.into(),
    }
}

#[derive(Clone, Debug)]
struct Request {
    path: String,
    head: String,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Stub {
    base: String,
    routes: Arc<Mutex<Vec<(String, Answer)>>>,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Stub {
    async fn start() -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stub = Stub {
            base: format!("http://{}", listener.local_addr().unwrap()),
            ..Stub::default()
        };
        let me = stub.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(me.clone().serve(stream));
            }
        });
        stub
    }

    async fn serve(self, mut stream: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
        self.seen.lock().unwrap().push(Request {
            path: path.clone(),
            head,
            body: buf[end..].to_vec(),
        });
        let reply = self
            .routes
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| path.starts_with(p.as_str()))
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| answer(404, "text/plain", "no route"));
        let mut out = format!(
            "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            reply.status,
            reply.content_type,
            reply.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&reply.body);
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    }

    fn route(&self, path: &str, answer: Answer) {
        let mut routes = self.routes.lock().unwrap();
        routes.retain(|(p, _)| p != path);
        routes.push((path.to_owned(), answer));
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }

    fn authority(&self) -> String {
        format!("{}/identitymanager", self.base)
    }

    /// Discovery naming `token_endpoint` (and `registration_endpoint`).
    fn discovery(&self, token_endpoint: &str, registration_endpoint: Option<&str>) {
        let mut doc = serde_json::json!({
            "issuer": self.authority(),
            "token_endpoint": token_endpoint,
        });
        if let Some(r) = registration_endpoint {
            doc["registration_endpoint"] = r.into();
        }
        self.route(
            "/identitymanager/.well-known/openid-configuration",
            answer(200, "application/json", doc.to_string()),
        );
    }

    fn own_discovery(&self) {
        let a = self.authority();
        self.discovery(
            &format!("{a}/connect/token"),
            Some(&format!("{a}/connect/register")),
        );
    }

    fn builder(&self) -> AimClientBuilder {
        AimClient::builder()
            .authority(self.authority())
            .client_id("svc")
            .client_secret(SECRET)
            .retry_deadline(Duration::ZERO)
            .background_refresh(false)
    }
}

// ---------------------------------------------------------------------------
// Encodings a server might echo a value in, and a decoder for the checks.

fn html_named(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '+' => out.push_str("&#43;"),
            '/' => out.push_str("&#x2F;"),
            '%' => out.push_str("&percnt;"),
            '=' => out.push_str("&#X3d;"),
            c => out.push(c),
        }
    }
    out
}

fn html_numeric(s: &str) -> String {
    s.chars().map(|c| format!("&#{};", c as u32)).collect()
}

/// As .NET's JSON writers escape: `\u0026` for `&`, `\u002B` for `+`, ...
fn json_dotnet(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '&' | '+' | '<' | '>' | '\'' | '%' | '=' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            '"' => out.push_str("\\\""),
            '/' => out.push_str("\\/"),
            c => out.push(c),
        }
    }
    out
}

fn json_all_lower(s: &str) -> String {
    s.chars().map(|c| format!("\\u{:04x}", c as u32)).collect()
}

fn percent_form_upper(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn percent_lower(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

fn percent_every_byte(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02x}")).collect()
}

fn encodings(s: &str) -> Vec<(&'static str, String)> {
    vec![
        ("raw", s.to_owned()),
        ("html named", html_named(s)),
        ("html numeric", html_numeric(s)),
        ("json .NET", json_dotnet(s)),
        ("json all \\u", json_all_lower(s)),
        ("percent form", percent_form_upper(s)),
        ("percent lower", percent_lower(s)),
        ("percent every byte", percent_every_byte(s)),
        ("html of percent", html_named(&percent_lower(s))),
        ("percent of html", percent_lower(&html_named(s))),
    ]
}

/// Undoes the encodings above (repeatedly), so a check cannot be fooled by
/// a rendering that merely kept an encoded copy.
fn decoded(text: &str) -> String {
    let mut s = text.to_owned();
    for _ in 0..4 {
        let next = percent_encoding::percent_decode_str(&unescape_json(&unescape_html(&s)))
            .decode_utf8_lossy()
            .into_owned();
        if next == s {
            break;
        }
        s = next;
    }
    s
}

fn unescape_html(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "percnt" => Some('%'),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn unescape_json(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('u') => {
                chars.next();
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(c) => out.push(c),
                    None => out.push_str(&hex),
                }
            }
            Some(&e) => {
                chars.next();
                out.push(match e {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    other => other,
                });
            }
            None => out.push('\\'),
        }
    }
    out
}

fn assert_free_of(what: &str, text: &str, markers: &[&str]) {
    for marker in markers {
        let leaks: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(marker) || decoded(l).contains(marker))
            .collect();
        assert!(
            leaks.is_empty(),
            "{what} leaks {marker}:\n{}",
            leaks.join("\n")
        );
        assert!(
            !decoded(text).contains(marker),
            "{what} leaks {marker}:\n{text}"
        );
    }
}

/// Every rendering of `err` and of each of its sources.
fn renderings(err: &aim_token::Error) -> Vec<(String, String)> {
    let mut out = vec![
        ("{}".to_owned(), format!("{err}")),
        ("{:?}".to_owned(), format!("{err:?}")),
        ("{:#}".to_owned(), format!("{err:#}")),
        ("{:#?}".to_owned(), format!("{err:#?}")),
    ];
    if let Some(d) = err.oauth_description() {
        out.push(("oauth_description".into(), d.to_owned()));
    }
    if let Some(e) = err.oauth_error() {
        out.push(("oauth_error".into(), e.to_owned()));
    }
    let mut source = std::error::Error::source(err);
    let mut depth = 0;
    while let Some(s) = source {
        depth += 1;
        out.push((format!("source {depth} {{}}"), format!("{s}")));
        out.push((format!("source {depth} {{:?}}"), format!("{s:?}")));
        out.push((format!("source {depth} {{:#?}}"), format!("{s:#?}")));
        source = s.source();
    }
    out
}

fn assert_error_free_of(case: &str, err: &aim_token::Error, markers: &[&str]) {
    for (how, text) in renderings(err) {
        assert_free_of(&format!("{case}: {how}"), &text, markers);
    }
    // One line: a CR/LF in a server's description cannot forge a log line.
    let shown = err.to_string();
    assert!(
        !shown.contains('\n') && !shown.contains('\r'),
        "{case}: not one line: {shown:?}"
    );
    if let Some(d) = err.oauth_description() {
        assert!(!d.chars().any(char::is_control), "{case}: {d:?}");
    }
}

/// Hostile bodies echoing `value`: (case, status, content type, body).
fn hostile_bodies(value: &str) -> Vec<(String, u16, &'static str, String)> {
    let mut out = Vec::new();
    for (name, e) in encodings(value) {
        out.push((
            format!("html 400 {name}"),
            400,
            "text/html",
            format!("<html><head><title>Bad Request</title></head><body><h1>Bad Request</h1><p>You sent {e}</p>\r\n<p>FORGED log line</p></body></html>"),
        ));
        out.push((
            format!("html 502 {name}"),
            502,
            "text/html; charset=utf-8",
            format!("<!DOCTYPE html><html><body>proxy error for {e}</body></html>"),
        ));
        out.push((
            format!("text 401 {name}"),
            401,
            "text/plain",
            format!("invalid credentials {e}\r\nERROR forged line"),
        ));
        out.push((
            format!("broken json 400 {name}"),
            400,
            "application/json",
            format!(r#"{{"error":"invalid_client","error_description":"bad {e}\r\nFORGED","error_uri":"https://x/{e}"#),
        ));
        let valid = serde_json::json!({
            "error": "invalid_client",
            "error_description": format!("bad credentials {e}\r\nINFO forged line"),
            "error_uri": format!("https://help.example/{e}"),
            "Message": format!("echo {e}"),
        });
        out.push((
            format!("json 400 {name}"),
            400,
            "application/json",
            valid.to_string(),
        ));
        out.push((
            format!("json error code {name}"),
            400,
            "application/json",
            serde_json::json!({ "error": format!("x{e}") }).to_string(),
        ));
    }
    out
}

// ---------------------------------------------------------------------------
// Origin pinning

async fn token_error(aim: &AimClient) -> aim_token::Error {
    tokio::time::timeout(BOUND, aim.token())
        .await
        .expect("token() took longer than the bound")
        .expect_err("token() succeeded")
}

#[tokio::test]
async fn discovery_cannot_send_the_secret_to_another_origin() {
    let _ = logs();
    let aim_node = Stub::start().await;
    let foreign = Stub::start().await;
    foreign.route(
        "/",
        answer(
            200,
            "application/json",
            r#"{"access_token":"x","expires_in":60}"#,
        ),
    );
    let port = foreign.base.rsplit(':').next().unwrap().to_owned();
    for advertised in [
        // another port on the same host
        format!("{}/connect/token", foreign.base),
        // another host (that resolves to the recording server)
        format!("http://localhost:{port}/connect/token"),
    ] {
        aim_node.discovery(&advertised, None);
        let aim = aim_node.builder().build().unwrap();
        let err = token_error(&aim).await;
        assert_eq!(err.kind(), ErrorKind::Config, "{advertised}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&advertised), "{msg}");
        assert!(
            msg.contains(".token_endpoint") || msg.contains("::token_endpoint"),
            "{msg}"
        );
        assert!(!err.is_transient());
    }
    assert!(foreign.requests().is_empty(), "{:?}", foreign.requests());
    // Both times discovery was asked, and the token endpoint never.
    assert!(aim_node
        .requests()
        .iter()
        .all(|r| r.path.contains("openid-configuration")));

    // Set explicitly, the endpoint is used: the check is about discovery.
    let aim = aim_node
        .builder()
        .token_endpoint(format!("{}/connect/token", foreign.base))
        .build()
        .unwrap();
    tokio::time::timeout(BOUND, aim.token())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(foreign.requests().len(), 1);
}

#[tokio::test]
async fn discovery_cannot_send_the_initial_access_token_to_another_origin() {
    let _ = logs();
    let aim_node = Stub::start().await;
    let foreign = Stub::start().await;
    foreign.route(
        "/",
        answer(201, "application/json", r#"{"client_id":"issued"}"#),
    );
    let port = foreign.base.rsplit(':').next().unwrap().to_owned();
    let own_token = format!("{}/connect/token", aim_node.authority());
    for advertised in [
        format!("{}/connect/register", foreign.base),
        format!("http://localhost:{port}/connect/register"),
    ] {
        aim_node.discovery(&own_token, Some(&advertised));
        let builder = AimClient::builder().authority(aim_node.authority());
        let err = tokio::time::timeout(
            BOUND,
            ClientRegistration::new("svc").register(&builder, INITIAL_ACCESS_TOKEN),
        )
        .await
        .unwrap()
        .expect_err("registered at a foreign origin");
        assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
        assert!(err.to_string().contains(&advertised), "{err}");
        assert!(err.to_string().contains("registration_endpoint"), "{err}");
    }
    assert!(foreign.requests().is_empty(), "{:?}", foreign.requests());

    // Explicitly set, it is used.
    let builder = AimClient::builder().authority(aim_node.authority());
    let reg = ClientRegistration::new("svc")
        .registration_endpoint(format!("{}/connect/register", foreign.base))
        .register(&builder, INITIAL_ACCESS_TOKEN)
        .await
        .unwrap();
    assert_eq!(reg.client_id(), "issued");
    assert_eq!(foreign.requests().len(), 1);
}

// ---------------------------------------------------------------------------
// No raw bodies in errors or logs

fn assert_logs_free(markers: &[&str]) {
    let logs = logs();
    assert_free_of("TRACE logs", &logs, markers);
    assert!(
        !logs.contains("FORGED") || !logs.contains("\nFORGED"),
        "forged log line"
    );
}

#[tokio::test]
async fn token_endpoint_echoes_never_reach_errors_or_logs() {
    let _ = logs();
    let stub = Stub::start().await;
    stub.own_discovery();
    for method in [ClientAuthMethod::Post, ClientAuthMethod::Basic] {
        for (case, status, content_type, body) in hostile_bodies(SECRET) {
            stub.route(
                "/identitymanager/connect/token",
                answer(status, content_type, body),
            );
            let aim = stub.builder().auth_method(method).build().unwrap();
            let err = token_error(&aim).await;
            assert_error_free_of(&format!("{method} {case}"), &err, &SECRET_MARKERS);
            assert_eq!(err.status(), Some(status), "{case}");
        }
    }
    // The token itself echoed in a (broken) success answer.
    for (case, _, content_type, body) in hostile_bodies(TOKEN) {
        let body = format!(r#"{{"access_token":"{TOKEN}", "expires_in": "#) + &body;
        stub.route(
            "/identitymanager/connect/token",
            answer(200, content_type, body),
        );
        let aim = stub.builder().build().unwrap();
        let err = token_error(&aim).await;
        assert_error_free_of(&format!("token {case}"), &err, &TOKEN_MARKERS);
    }
    let logs = logs();
    assert_logs_free(&SECRET_MARKERS);
    assert_logs_free(&TOKEN_MARKERS);
    // The body went to a TRACE event (scrubbed), so the check above has teeth.
    assert!(logs.contains("Bad Request"), "no TRACE event with the body");
}

#[tokio::test]
async fn an_error_keeps_status_content_type_length_and_the_oauth_fields() {
    let stub = Stub::start().await;
    stub.own_discovery();
    let body = serde_json::json!({
        "error": "invalid_client",
        "error_description": format!("client secret {SECRET} is wrong\r\nINFO forged\u{1b}[31m"),
        "error_uri": "https://help.example/invalid_client",
    })
    .to_string();
    let len = body.len();
    stub.route(
        "/identitymanager/connect/token",
        answer(400, "application/json", body),
    );
    let err = token_error(&stub.builder().build().unwrap()).await;
    assert_eq!(err.kind(), ErrorKind::OAuth);
    assert_eq!(err.oauth_error(), Some("invalid_client"));
    let description = err.oauth_description().unwrap();
    assert!(
        description.starts_with("client secret [redacted] is wrong"),
        "{description}"
    );
    assert!(description.contains("INFO forged"), "{description}");
    assert!(
        !description.chars().any(char::is_control),
        "{description:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("https://help.example/invalid_client"), "{msg}");

    // A non-OAuth answer: status, content type and length, never the body.
    let page = format!(
        "<html><body><h1>Bad Request</h1>{}</body></html>",
        "x".repeat(5000)
    );
    let len2 = page.len();
    stub.route(
        "/identitymanager/connect/token",
        answer(400, "text/html; charset=utf-8", page),
    );
    let err = token_error(&stub.builder().build().unwrap()).await;
    let msg = err.to_string();
    assert!(msg.contains("HTTP 400"), "{msg}");
    assert!(msg.contains("text/html"), "{msg}");
    assert!(msg.contains(&format!("{len2} bytes")), "{msg}");
    assert!(!msg.contains("xxxxxxxx"), "raw body in the error: {msg}");
    assert!(len > 0);
}

#[tokio::test]
async fn discovery_echoes_never_reach_errors_or_logs() {
    let _ = logs();
    let stub = Stub::start().await;
    for (case, status, content_type, body) in hostile_bodies(SECRET) {
        let status = if status == 401 { 500 } else { status };
        stub.route(
            "/identitymanager/.well-known/openid-configuration",
            answer(status, content_type, body),
        );
        let err = token_error(&stub.builder().build().unwrap()).await;
        assert_error_free_of(&format!("discovery {case}"), &err, &SECRET_MARKERS);
    }
    // 200 with broken metadata that echoes the secret.
    for (case, _, content_type, body) in hostile_bodies(SECRET) {
        stub.route(
            "/identitymanager/.well-known/openid-configuration",
            answer(200, content_type, body),
        );
        let err = token_error(&stub.builder().build().unwrap()).await;
        assert_error_free_of(&format!("discovery 200 {case}"), &err, &SECRET_MARKERS);
    }
    assert_logs_free(&SECRET_MARKERS);
}

#[tokio::test]
async fn registration_echoes_never_reach_errors_or_logs() {
    let _ = logs();
    let stub = Stub::start().await;
    stub.own_discovery();
    let builder = AimClient::builder().authority(stub.authority());
    for value in [INITIAL_ACCESS_TOKEN, SECRET] {
        let markers: &[&str] = if value == SECRET {
            &SECRET_MARKERS
        } else {
            &IAT_MARKERS
        };
        for (case, status, content_type, body) in hostile_bodies(value) {
            stub.route(
                "/identitymanager/connect/register",
                answer(status, content_type, body),
            );
            let err = tokio::time::timeout(
                BOUND,
                ClientRegistration::new("svc")
                    .secret(SECRET)
                    .register(&builder, INITIAL_ACCESS_TOKEN),
            )
            .await
            .unwrap()
            .expect_err(&case);
            assert_error_free_of(&format!("registration {case}"), &err, markers);
        }
    }
    assert_logs_free(&IAT_MARKERS);
    assert_logs_free(&SECRET_MARKERS);
}

/// An AIM stub that issues [`TOKEN`], a MES stub, and a `MesClient` of
/// the two; the stubs are returned, to script MES and read what each saw.
async fn aim_and_mes() -> (Stub, Stub, aim_token::MesClient) {
    let aim_node = Stub::start().await;
    aim_node.own_discovery();
    aim_node.route(
        "/identitymanager/connect/token",
        answer(
            200,
            "application/json",
            serde_json::json!({"access_token": TOKEN, "expires_in": 3600}).to_string(),
        ),
    );
    let mes_node = Stub::start().await;
    let aim = aim_node.builder().build().unwrap();
    let mes = aim_token::MesClient::new(format!("{}/mesmw/", mes_node.base), aim).unwrap();
    (aim_node, mes_node, mes)
}

#[tokio::test]
async fn mes_echoes_never_reach_errors_or_logs() {
    let _ = logs();
    let (aim_node, mes_node, mes) = aim_and_mes().await;
    let mut cases = hostile_bodies(TOKEN);
    for status in [403, 404, 405, 500, 503] {
        for (name, e) in encodings(TOKEN) {
            cases.push((
                format!("{status} asp.net {name}"),
                status,
                "application/json; charset=utf-8",
                serde_json::json!({ "Message": format!("token {e} cannot be verified\r\nFORGED") })
                    .to_string(),
            ));
        }
    }
    // 200 with broken JSON: the decode error.
    for (name, e) in encodings(TOKEN) {
        cases.push((
            format!("200 broken {name}"),
            200,
            "application/json",
            format!(r#"[{{"ent_name":"{e}", "#),
        ));
    }
    for (case, status, content_type, body) in cases {
        mes_node.route("/mesmw/api/v3/entity", answer(status, content_type, body));
        let err = tokio::time::timeout(BOUND, mes.get_json::<serde_json::Value>("api/v3/entity"))
            .await
            .unwrap()
            .expect_err(&case);
        assert_error_free_of(&format!("mes {case}"), &err, &TOKEN_MARKERS);
        assert_eq!(err.status(), Some(status), "{case}");
    }
    assert_logs_free(&TOKEN_MARKERS);
    // The token did go to MES, as a header, and only there.
    let sent = mes_node.requests();
    assert!(sent.iter().all(|r| r.head.contains(TOKEN)));
    assert!(aim_node.requests().iter().all(|r| !r.head.contains(TOKEN)));
    assert!(sent.iter().all(|r| r.body.is_empty()));
}

#[tokio::test]
async fn mes_bodies_are_read_with_a_cap() {
    let (_aim_node, mes_node, mes) = aim_and_mes().await;
    // 20 MiB of error page, and 40 MiB of "success".
    mes_node.route(
        "/mesmw/api/v3/entity",
        answer(500, "text/html", vec![b'x'; 20 << 20]),
    );
    let err = mes
        .get_json::<serde_json::Value>("api/v3/entity")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(err.to_string().len() < 2000, "{}", err.to_string().len());
    let mut huge = b"[".to_vec();
    huge.extend(std::iter::repeat_n(b' ', 40 << 20));
    huge.push(b']');
    mes_node.route(
        "/mesmw/api/v3/entity",
        answer(200, "application/json", huge),
    );
    let err = mes
        .get_json::<serde_json::Value>("api/v3/entity")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err}");
    assert!(err.to_string().contains("bytes"), "{err}");
}

// ---------------------------------------------------------------------------
// One loopback rule: `localhost.` goes to DNS (glibc), so it is not loopback.

#[tokio::test]
async fn localhost_with_a_trailing_dot_is_not_loopback_anywhere() {
    let authority = AimClient::builder()
        .authority("http://localhost.:8080/identitymanager")
        .client_id("id")
        .client_secret("s")
        .build()
        .unwrap_err();
    assert_eq!(authority.kind(), ErrorKind::Config);
    let aim = AimClient::builder()
        .authority("http://localhost:8080/identitymanager")
        .client_id("id")
        .client_secret("s")
        .build()
        .unwrap();
    let mes = aim_token::MesClient::new("http://localhost.:8080/mesmw/", aim.clone()).unwrap_err();
    assert_eq!(mes.kind(), ErrorKind::Config);
    assert!(mes.to_string().contains("plain http"), "{mes}");
    for url in [
        "http://localhost.:1/x",
        "http://LOCALHOST.:1/x",
        "http://localhost..:1/x",
    ] {
        let err = aim_token::check_token_destination(url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused, "{url}");
    }
    for url in [
        "http://localhost:1/x",
        "http://127.0.0.1:1/",
        "http://[::1]:1/",
        "https://mes01/",
    ] {
        aim_token::check_token_destination(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    aim_token::MesClient::new("http://localhost:8080/mesmw/", aim).unwrap();
}

#[tokio::test]
async fn an_mes_error_page_cut_at_its_cap_leaves_no_partial_token_in_logs() {
    let _ = logs();
    let (_aim_node, mes_node, mes) = aim_and_mes().await;
    // Markup up to just before the 64 KiB the error page is read to, then
    // the token: the cut leaves its first half, which no scrubber can
    // recognise as the token.
    let mut page = b"<p>".repeat(((64 << 10) - 16) / 3);
    page.resize((64 << 10) - 16, b' ');
    page.extend_from_slice(format!("echo {TOKEN} and more text").as_bytes());
    mes_node.route("/mesmw/api/v3/entity", answer(500, "text/html", page));
    let err = mes
        .get_json::<serde_json::Value>("api/v3/entity")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_error_free_of("cut page", &err, &TOKEN_MARKERS);
    assert_logs_free(&TOKEN_MARKERS);
}
