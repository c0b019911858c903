//! Shared by tests/middleware.rs, tests/tower.rs and tests/mes.rs: an AIM
//! emulator plus a tiny resource server on 127.0.0.1 that records the
//! `Authorization` headers it receives and answers by a chosen rule.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aim_token::emulator::AimEmulator;
use aim_token::AimClient;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

/// How the resource server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// 200 to everyone.
    Accept,
    /// 401 to everyone.
    Reject,
    /// 401 to the first token it ever saw, 200 to any other.
    RejectFirstToken,
    /// 400 with the request's Authorization header echoed in the body.
    EchoAuthorizationAs400,
    /// 401 asking for Windows authentication (`Negotiate`, `NTLM`), as IIS
    /// does when the MES Web API's site has Windows Authentication on.
    WindowsAuthOnly,
    /// 401 with `Bearer error="insufficient_scope"`: the token is fine but
    /// lacks a scope.
    InsufficientScope,
    /// 307 to the URL given with [`Recorder::redirect_to`].
    Redirect,
    /// 401 whose `WWW-Authenticate` is the bearer token it was sent, as if
    /// it were an authentication scheme.
    EchoTokenAsChallenge,
    /// 401 whose Bearer challenge says why, quoting the token it was sent.
    RejectSayingWhy,
    /// 401 to the tokens of [`Recorder::revoke_seen`], 200 to any other: a
    /// MES that stops trusting tokens it accepted (AIM rotated its key).
    RejectRevoked,
}

/// One request as the resource server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Every `Authorization` value (more than one would be a duplicate header).
    pub authorization: Vec<String>,
    pub trans_id: Option<String>,
    pub tz_id: Option<String>,
    pub body: String,
}

#[derive(Default)]
struct Shared {
    rule: Mutex<Option<Rule>>,
    seen: Mutex<Vec<Seen>>,
    first_token: Mutex<Option<String>>,
    redirect_to: Mutex<String>,
    revoked: Mutex<Vec<String>>,
}

/// The recording resource server; stops when dropped (the runtime ends).
pub struct Recorder {
    pub base: String,
    shared: Arc<Shared>,
}

impl Recorder {
    pub async fn start(rule: Rule) -> Recorder {
        let shared = Arc::new(Shared::default());
        *shared.rule.lock().unwrap() = Some(rule);
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Recorder {
            base: format!("http://{addr}"),
            shared,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// Where [`Rule::Redirect`] sends requests.
    pub fn redirect_to(&self, url: &str) {
        *self.shared.redirect_to.lock().unwrap() = url.to_owned();
    }

    /// Every token seen so far is refused from now on ([`Rule::RejectRevoked`]).
    pub fn revoke_seen(&self) {
        let seen = self.distinct_tokens();
        self.shared.revoked.lock().unwrap().extend(seen);
    }

    pub fn set_rule(&self, rule: Rule) {
        *self.shared.rule.lock().unwrap() = Some(rule);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }

    /// The distinct bearer tokens seen, in order of first appearance.
    pub fn distinct_tokens(&self) -> Vec<String> {
        let mut tokens: Vec<String> = Vec::new();
        for seen in self.seen() {
            for value in seen.authorization {
                if !tokens.contains(&value) {
                    tokens.push(value);
                }
            }
        }
        tokens
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let authorization: Vec<String> = headers
        .get_all("authorization")
        .iter()
        .map(|v| v.to_str().unwrap_or("<binary>").to_owned())
        .collect();
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    shared.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.path().to_owned(),
        authorization: authorization.clone(),
        trans_id: text("trans_id"),
        tz_id: text("tz_id"),
        body,
    });
    let token = authorization.first().cloned().unwrap_or_default();
    let rule = shared.rule.lock().unwrap().unwrap_or(Rule::Accept);
    let rejected = match rule {
        Rule::Accept => false,
        Rule::Reject => true,
        Rule::RejectFirstToken => {
            let mut first = shared.first_token.lock().unwrap();
            let first = first.get_or_insert_with(|| token.clone());
            *first == token
        }
        Rule::RejectRevoked => shared.revoked.lock().unwrap().contains(&token),
        Rule::EchoAuthorizationAs400 => {
            return (StatusCode::BAD_REQUEST, format!("bad request from {token}")).into_response()
        }
        Rule::WindowsAuthOnly => {
            let mut response = (StatusCode::UNAUTHORIZED, "401 - Unauthorized").into_response();
            for scheme in ["Negotiate", "NTLM"] {
                response
                    .headers_mut()
                    .append("www-authenticate", scheme.parse().unwrap());
            }
            return response;
        }
        Rule::RejectSayingWhy => {
            let echoed = token.trim_start_matches("Bearer ");
            let challenge = format!(
                "Bearer realm=\"mes\", error=\"invalid_token\", error_description=\"The token \
                 {echoed} expired at '12/01/2026 09:00:00', now is '12/01/2026 10:00:00'\""
            );
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", challenge)],
                "",
            )
                .into_response();
        }
        Rule::EchoTokenAsChallenge => {
            let echoed = token.trim_start_matches("Bearer ").to_owned();
            return (StatusCode::UNAUTHORIZED, [("www-authenticate", echoed)], "").into_response();
        }
        Rule::Redirect => {
            let to = shared.redirect_to.lock().unwrap().clone();
            return (StatusCode::TEMPORARY_REDIRECT, [("location", to)], "").into_response();
        }
        Rule::InsufficientScope => {
            return (
                StatusCode::UNAUTHORIZED,
                [(
                    "www-authenticate",
                    r#"Bearer realm="mes", error="insufficient_scope", scope="mes.write""#,
                )],
                "",
            )
                .into_response()
        }
    };
    if rejected {
        (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", r#"Bearer error="invalid_token""#)],
            "rejected",
        )
            .into_response()
    } else {
        (StatusCode::OK, "[]").into_response()
    }
}

/// An http AIM emulator and a client of its default client ID with short
/// retry bounds, so failing tests fail fast.
pub async fn emulator() -> (AimEmulator, AimClient) {
    let emu = AimEmulator::start().await.expect("emulator starts");
    let aim = emu
        .client_builder()
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        // Real time: generous, so a loaded machine (or Wine) never turns a
        // slow answer into a failed test. Tests of an AIM that is down use
        // `impatient_client`.
        .retry_deadline(Duration::from_secs(10))
        // Below a millisecond: a token refused right after it was fetched
        // (one revoked at AIM) is renewed at once, as these tests expect.
        .min_refresh_interval(Duration::from_micros(1))
        .build()
        .expect("client builds");
    (emu, aim)
}

/// A client of the emulator that gives up after half a second: for tests
/// of an AIM that never answers with a token.
pub fn impatient_client(emu: &AimEmulator) -> AimClient {
    emu.client_builder()
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .retry_deadline(Duration::from_millis(500))
        .build()
        .expect("client builds")
}

/// A client of the emulator with a wrong secret: AIM answers `invalid_client`.
pub fn wrong_secret_client(emu: &AimEmulator) -> AimClient {
    emu.client_builder()
        .client_secret("not the secret")
        .build()
        .expect("client builds")
}

/// An emulator and its client on one `TokioClock`, for `start_paused` tests.
pub async fn paused_emulator() -> (AimEmulator, AimClient) {
    let clock = std::sync::Arc::new(aim_token::TokioClock::new());
    let emu = AimEmulator::builder()
        .clock(clock.clone())
        .start()
        .await
        .expect("emulator starts");
    let aim = emu
        .client_builder()
        .clock(clock)
        .build()
        .expect("client builds");
    (emu, aim)
}

/// Whether `err` is the attachments' "MES refused a fresh token too" answer.
pub fn is_fresh_token_refused(err: &aim_token::Error) -> bool {
    err.kind() == aim_token::ErrorKind::Unauthorized && err.to_string().contains("fresh")
}

/// A MES ([`Rule::RejectRevoked`]) refuses the first token, accepts its
/// replacement for several calls, then refuses that one too (AIM rotated
/// its key): `call` (one request whose body cannot be replayed; its
/// status) must get a third token right after, not a cool-down.
pub async fn accepted_then_revoked_replacement_is_renewed<F, Fut>(rec: &Recorder, call: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let pause = Duration::from_secs(2);
    assert_eq!(call().await, 200);
    tokio::time::sleep(pause).await;
    rec.revoke_seen();
    assert_eq!(call().await, 401, "the first token revoked");
    for _ in 0..3 {
        tokio::time::sleep(pause).await;
        assert_eq!(call().await, 200, "its replacement works");
    }
    rec.revoke_seen();
    assert_eq!(call().await, 401, "the replacement revoked");
    tokio::time::sleep(pause).await;
    assert_eq!(call().await, 200, "renewed, not cooled down");
    assert_eq!(rec.distinct_tokens().len(), 3);
}
