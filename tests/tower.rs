//! The tower `BearerAuthLayer` over a hyper-util client, end to end against
//! the AIM emulator and a recording resource server on 127.0.0.1.

mod attach_support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aim_token::emulator::{Endpoint, Fault};
use aim_token::layer::{BearerAuthLayer, BearerError};
use aim_token::ErrorKind;
use attach_support::{emulator, impatient_client, wrong_secret_client, Recorder, Rule};
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};

type HyperClient = Client<HttpConnector, Full<Bytes>>;

fn hyper_client() -> HyperClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

fn post(url: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(url)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// A service that records what reached it and answers 200, so tests can
/// look at the request exactly as the layer passed it on.
#[derive(Clone, Default)]
struct Inspect {
    calls: Arc<AtomicUsize>,
    sensitive_single: Arc<AtomicUsize>,
}

impl tower::Service<Request<Full<Bytes>>> for Inspect {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let values: Vec<_> = req.headers().get_all(AUTHORIZATION).iter().collect();
        if values.len() == 1 && values[0].is_sensitive() {
            self.sensitive_single.fetch_add(1, Ordering::SeqCst);
        }
        std::future::ready(Ok(Response::new(String::new())))
    }
}

#[tokio::test]
async fn header_is_present_sensitive_and_not_duplicated() {
    let (emu, aim) = emulator().await;
    let inspect = Inspect::default();
    let svc = BearerAuthLayer::new(aim.clone())
        .allow_any_https_host()
        .layer(inspect.clone());
    for _ in 0..3 {
        let response = svc
            .clone()
            .oneshot(get("http://127.0.0.1:9/x"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(inspect.calls.load(Ordering::SeqCst), 3);
    assert_eq!(inspect.sensitive_single.load(Ordering::SeqCst), 3);
    assert_eq!(emu.token_requests(), 1);

    // Through hyper to the emulator's MES, which checks the token.
    let svc = BearerAuthLayer::new(aim.clone())
        .allow_any_https_host()
        .layer(hyper_client());
    let url = format!("{}api/v3/entity", emu.mes_base());
    let response = svc.clone().oneshot(get(&url)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(emu.counters().mes, 1);

    // On the wire: exactly one header with the current token.
    let rec = Recorder::start(Rule::Accept).await;
    svc.oneshot(get(&rec.url("a"))).await.unwrap();
    let token = aim.token().await.unwrap();
    assert_eq!(
        rec.seen()[0].authorization,
        vec![format!("Bearer {}", token.secret())]
    );
}

#[tokio::test]
async fn an_existing_authorization_header_is_left_alone() {
    let (emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::Reject).await;
    let svc = BearerAuthLayer::new(aim)
        .allow_any_https_host()
        .layer(hyper_client());
    let mut req = get(&rec.url("a"));
    req.headers_mut()
        .insert(AUTHORIZATION, "Basic dXNlcjpwYXNz".parse().unwrap());
    let response = svc.oneshot(req).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(rec.requests(), 1);
    assert_eq!(rec.seen()[0].authorization, vec!["Basic dXNlcjpwYXNz"]);
    assert_eq!(emu.token_requests(), 0);
}

#[tokio::test]
async fn fails_closed_when_aim_fails() {
    let (emu, _) = emulator().await;
    let aim = impatient_client(&emu);
    let inspect = Inspect::default();

    let svc = BearerAuthLayer::new(wrong_secret_client(&emu))
        .allow_any_https_host()
        .layer(inspect.clone());
    let err = svc.oneshot(get("http://127.0.0.1:9/x")).await.unwrap_err();
    let auth = err.auth().expect("our error, not the inner service's");
    assert_eq!(auth.oauth_error(), Some("invalid_client"));

    emu.set_outage(
        Endpoint::Token,
        Some(Fault::Status {
            status: 503,
            retry_after: None,
            body: None,
        }),
    );
    let svc = BearerAuthLayer::new(aim)
        .allow_any_https_host()
        .layer(inspect.clone());
    let err = svc.oneshot(get("http://127.0.0.1:9/x")).await.unwrap_err();
    assert!(
        matches!(&err, BearerError::Auth(e) if e.is_transient()),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("no access token attached"));
    assert!(std::error::Error::source(&err).is_some());

    assert_eq!(inspect.calls.load(Ordering::SeqCst), 0, "nothing was sent");
    assert_eq!(emu.counters().mes, 0);
}

#[tokio::test]
async fn inner_service_errors_stay_distinguishable() {
    let (_emu, aim) = emulator().await;
    let svc = BearerAuthLayer::new(aim)
        .allow_any_https_host()
        .layer(hyper_client());
    // Nothing listens on port 9 of loopback: a hyper connect error.
    let err = svc.oneshot(get("http://127.0.0.1:9/x")).await.unwrap_err();
    assert!(err.auth().is_none());
    assert!(matches!(err, BearerError::Service(_)));
}

#[tokio::test]
async fn no_token_over_http_to_remote_hosts_or_outside_the_allow_list() {
    let (emu, aim) = emulator().await;
    let inspect = Inspect::default();
    let svc = BearerAuthLayer::new(aim.clone())
        .allow_any_https_host()
        .layer(inspect.clone());
    let err = svc
        .oneshot(get("http://mes01.plant.invalid/mesmw/api/v3/entity"))
        .await
        .unwrap_err();
    assert_eq!(err.auth().unwrap().kind(), ErrorKind::Refused);

    let svc = BearerAuthLayer::new(aim.clone())
        .allowed_hosts(["mes01.plant.local"])
        .layer(inspect.clone());
    let err = svc
        .clone()
        .oneshot(get("https://other.plant.local/mesmw/"))
        .await
        .unwrap_err();
    assert_eq!(err.auth().unwrap().kind(), ErrorKind::Refused);
    let response = svc
        .oneshot(get("https://mes01.plant.local/mesmw/"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // A path-only URI cannot be checked unless the origin is known.
    let svc = BearerAuthLayer::new(aim.clone())
        .allow_any_https_host()
        .layer(inspect.clone());
    let err = svc.oneshot(get("/mesmw/api/v3/entity")).await.unwrap_err();
    assert_eq!(err.auth().unwrap().kind(), ErrorKind::Refused);
    let svc = BearerAuthLayer::new(aim.clone())
        .allow_any_https_host()
        .origin("https://mes01.plant.local".parse().unwrap())
        .layer(inspect.clone());
    svc.oneshot(get("/mesmw/api/v3/entity")).await.unwrap();
    let svc = BearerAuthLayer::new(aim)
        .allow_any_https_host()
        .origin("http://mes01.plant.local".parse().unwrap())
        .layer(inspect.clone());
    let err = svc.oneshot(get("/mesmw/api/v3/entity")).await.unwrap_err();
    assert_eq!(err.auth().unwrap().kind(), ErrorKind::Refused);

    assert_eq!(
        inspect.calls.load(Ordering::SeqCst),
        2,
        "only the allowed ones"
    );
    assert_eq!(emu.token_requests(), 1);
}

#[tokio::test]
async fn a_401_invalidates_once_and_retries_an_empty_body() {
    let (emu, aim) = emulator().await;
    let svc = BearerAuthLayer::new(aim.clone())
        .allow_any_https_host()
        .layer(hyper_client());
    let url = format!("{}api/v3/entity", emu.mes_base());
    assert_eq!(svc.clone().oneshot(get(&url)).await.unwrap().status(), 200);

    emu.reject_next_mes_token();
    let response = svc.clone().oneshot(get(&url)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(emu.token_requests(), 2, "exactly one new token request");
    assert_eq!(emu.counters().mes, 3);

    let rec = Recorder::start(Rule::RejectFirstToken).await;
    let response = svc.oneshot(get(&rec.url("a"))).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = rec.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0].authorization, seen[1].authorization);
}

#[tokio::test]
async fn bodies_are_replayed_only_when_the_policy_can_copy_them() {
    let (emu, aim) = emulator().await;

    // Default policy: a non-empty body is sent once; its 401 comes back,
    // but the token is invalidated so the next request gets a fresh one.
    let rec = Recorder::start(Rule::RejectFirstToken).await;
    let svc = BearerAuthLayer::new(aim.clone())
        .allow_any_https_host()
        .layer(hyper_client());
    let response = svc
        .clone()
        .oneshot(post(&rec.url("api/v3/Jobs/Start"), "{\"JobId\":\"J1\"}"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(rec.requests(), 1);
    let response = svc.oneshot(post(&rec.url("b"), "x")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(emu.token_requests(), 2);

    // CloneBodies: the body is replayed with the fresh token.
    let rec = Recorder::start(Rule::RejectFirstToken).await;
    let svc = BearerAuthLayer::new(aim.clone())
        .allow_any_https_host()
        .clone_bodies()
        .layer(hyper_client());
    let response = svc
        .oneshot(post(&rec.url("api/v3/Jobs/Start"), "{\"JobId\":\"J2\"}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = rec.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].body, "{\"JobId\":\"J2\"}");
    assert_eq!(emu.token_requests(), 3);

    // A closure policy works too.
    let rec = Recorder::start(Rule::RejectFirstToken).await;
    let svc = BearerAuthLayer::new(aim)
        .allow_any_https_host()
        .replay(|body: &Full<Bytes>| Some(body.clone()))
        .layer(hyper_client());
    let response = svc.oneshot(post(&rec.url("c"), "y")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(rec.requests(), 2);
}

#[tokio::test]
async fn a_second_401_is_unauthorized_without_a_loop() {
    let (emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::Reject).await;
    aim.token().await.unwrap();
    // Old enough to be renewed after a 401.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let svc = BearerAuthLayer::new(aim)
        .allow_any_https_host()
        .layer(hyper_client());
    let err = svc.oneshot(get(&rec.url("a"))).await.unwrap_err();
    let auth = err.auth().expect("our error");
    assert!(attach_support::is_fresh_token_refused(auth), "{auth}");
    assert_eq!(rec.requests(), 2);
    assert_eq!(emu.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_resource_server_refusing_every_token_costs_at_most_3_token_requests_for_50_calls() {
    let (emu, aim) = attach_support::paused_emulator().await;
    let rec = Recorder::start(Rule::Reject).await;
    let svc = BearerAuthLayer::new(aim)
        .allow_any_https_host()
        .layer(hyper_client());
    for _ in 0..50 {
        let err = svc.clone().oneshot(get(&rec.url("a"))).await.unwrap_err();
        let auth = err.auth().expect("our error");
        assert_eq!(auth.kind(), ErrorKind::Unauthorized, "{auth}");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert!(emu.token_requests() <= 3, "{:?}", emu.counters());
}
#[tokio::test]
async fn a_hundred_concurrent_401s_on_one_token_cause_one_refresh() {
    let (emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::RejectFirstToken).await;
    let svc = BearerAuthLayer::new(aim.clone())
        .allow_any_https_host()
        .layer(hyper_client());
    aim.token().await.unwrap();

    let url = rec.url("api/v3/entity");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let svc = svc.clone();
            let req = get(&url);
            tokio::spawn(async move { svc.oneshot(req).await.unwrap().status() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(emu.token_requests(), 2, "one refresh for all hundred 401s");
    assert_eq!(rec.distinct_tokens().len(), 2);
    assert_eq!(rec.requests(), 200);
}

#[tokio::test]
async fn debug_does_not_leak_the_token() {
    let (_emu, aim) = emulator().await;
    let token = aim.token().await.unwrap();
    let layer = BearerAuthLayer::new(aim).allow_host("127.0.0.1");
    let svc = layer.layer(Inspect::default());
    svc.oneshot(get("http://127.0.0.1:9/x")).await.unwrap();
    let layer_debug = format!("{layer:?}");
    assert!(!layer_debug.contains(token.secret()), "{layer_debug}");
    assert!(layer_debug.contains("127.0.0.1"));
}

#[tokio::test]
async fn without_an_allow_list_nothing_is_sent_and_the_error_names_both_calls() {
    let (emu, aim) = emulator().await;
    let inspect = Inspect::default();
    let svc = BearerAuthLayer::new(aim.clone()).layer(inspect.clone());
    let err = svc
        .oneshot(get("https://mes01.plant.local/mesmw/api/v3/entity"))
        .await
        .unwrap_err();
    let aim_err = err.auth().unwrap();
    assert_eq!(aim_err.kind(), ErrorKind::Refused);
    let msg = aim_err.to_string();
    assert!(msg.contains(".allow_host(\"mes01.plant.local\")"), "{msg}");
    assert!(msg.contains(".allow_any_https_host()"), "{msg}");
    assert_eq!(inspect.calls.load(Ordering::SeqCst), 0, "nothing is sent");
    assert_eq!(emu.token_requests(), 0, "not even a token is fetched");

    // `localhost.` is not loopback: not over plain http.
    let svc = BearerAuthLayer::new(aim)
        .allow_any_https_host()
        .layer(inspect.clone());
    let err = svc
        .oneshot(get("http://localhost.:9/mesmw/api/v3/entity"))
        .await
        .unwrap_err();
    assert_eq!(err.auth().unwrap().kind(), ErrorKind::Refused);
    assert_eq!(inspect.calls.load(Ordering::SeqCst), 0);
}

/// Bodies the policy cannot copy are sent once; their 401s must not turn
/// a MES that refuses every token into one token request per call.
#[tokio::test(start_paused = true)]
async fn unreplayable_bodies_refused_every_time_cost_at_most_3_token_requests_for_50_calls() {
    let (emu, aim) = attach_support::paused_emulator().await;
    let rec = Recorder::start(Rule::Reject).await;
    // The default policy copies no body that has content.
    let svc = BearerAuthLayer::new(aim)
        .allow_any_https_host()
        .layer(hyper_client());
    for _ in 0..50 {
        let request = post(&rec.url("api/v3/Jobs/Start"), "{\"JobId\":1}");
        let response = svc.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert_eq!(rec.requests(), 50, "an uncopied body is sent once");
    assert!(emu.token_requests() <= 3, "{:?}", emu.counters());
}

/// A token MES accepted and later refuses (AIM rotated its key) is renewed
/// with uncopied bodies too: its 401 is a new refusal, not the proof that
/// MES refuses fresh tokens (the 30 s cool-down).
#[tokio::test(start_paused = true)]
async fn a_replacement_token_mes_accepted_and_then_refuses_is_renewed() {
    let (emu, aim) = attach_support::paused_emulator().await;
    let rec = Recorder::start(Rule::RejectRevoked).await;
    let svc = BearerAuthLayer::new(aim)
        .allow_any_https_host()
        .layer(hyper_client());
    attach_support::accepted_then_revoked_replacement_is_renewed(&rec, || async {
        let request = post(&rec.url("api/v3/Jobs/Start"), "{\"JobId\":1}");
        svc.clone()
            .oneshot(request)
            .await
            .unwrap()
            .status()
            .as_u16()
    })
    .await;
    assert_eq!(emu.token_requests(), 3);
}

/// A 401 a fresh token cannot fix (Windows authentication asked for, or a
/// missing scope) comes back as it is: no token request, no retry.
#[tokio::test]
async fn a_401_that_a_fresh_token_cannot_fix_is_passed_on_without_renewal() {
    let (emu, aim) = emulator().await;
    aim.token().await.unwrap();
    let svc = BearerAuthLayer::new(aim)
        .allow_any_https_host()
        .layer(hyper_client());
    for rule in [Rule::WindowsAuthOnly, Rule::InsufficientScope] {
        let rec = Recorder::start(rule).await;
        let response = svc.clone().oneshot(get(&rec.url("a"))).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{rule:?}");
        assert_eq!(rec.requests(), 1, "{rule:?}: retried");
        assert_eq!(emu.token_requests(), 1, "{rule:?}: a token request");
    }
}

/// Three waves of a hundred concurrent uploads whose bodies cannot be
/// replayed, against a MES refusing every token: the first invalidates the
/// token once, the second fetches one new token (and its refusal starts the
/// cool-down), the third fetches none.
#[tokio::test]
async fn waves_of_concurrent_unreplayable_401s_cost_one_new_token() {
    let (emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::Reject).await;
    let svc = BearerAuthLayer::new(aim.clone())
        .allow_any_https_host()
        .layer(hyper_client());
    aim.token().await.unwrap();
    for wave in 0..3 {
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let svc = svc.clone();
                let url = rec.url("api/v3/Jobs/Start");
                tokio::spawn(async move { svc.oneshot(post(&url, "{}")).await.unwrap().status() })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), StatusCode::UNAUTHORIZED, "wave {wave}");
        }
    }
    assert_eq!(rec.requests(), 300);
    assert_eq!(emu.token_requests(), 2, "{:?}", emu.counters());
}
