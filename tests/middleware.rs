//! `BearerAuth` for reqwest-middleware, end to end against the AIM emulator
//! and a recording resource server on 127.0.0.1.

mod attach_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aim_token::emulator::{Endpoint, Fault};
use aim_token::middleware::BearerAuth;
use aim_token::{AimClient, ErrorKind};
use attach_support::{emulator, impatient_client, wrong_secret_client, Recorder, Rule};
use reqwest::header::AUTHORIZATION;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};

fn client(auth: BearerAuth) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(auth)
        .build()
}

/// A POST whose body `try_clone` cannot copy (not bytes reqwest holds), so
/// its 401 is not retried.
async fn streamed_post(
    http: &ClientWithMiddleware,
    rec: &Recorder,
) -> reqwest_middleware::Result<reqwest::Response> {
    let body = reqwest::Body::wrap(http_body_util::Full::new(bytes::Bytes::from_static(
        b"{\"JobId\":1}",
    )));
    http.post(rec.url("api/v3/Jobs/Start"))
        .body(body)
        .send()
        .await
}

/// The `aim_token::Error` inside a middleware error.
fn aim_error(err: &reqwest_middleware::Error) -> &aim_token::Error {
    match err {
        reqwest_middleware::Error::Middleware(e) => e
            .downcast_ref::<aim_token::Error>()
            .expect("an aim_token::Error"),
        other => panic!("expected a middleware error, got {other:?}"),
    }
}

/// Sits after `BearerAuth` and checks what it attached, as sent.
#[derive(Default, Clone)]
struct Inspect {
    sensitive: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Middleware for Inspect {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let values: Vec<_> = req.headers().get_all(AUTHORIZATION).iter().collect();
        if values.len() == 1 && values[0].is_sensitive() {
            self.sensitive.fetch_add(1, Ordering::SeqCst);
        }
        next.run(req, extensions).await
    }
}

#[tokio::test]
async fn header_is_present_sensitive_and_not_duplicated() {
    let (emu, aim) = emulator().await;
    let inspect = Inspect::default();
    let http = ClientBuilder::new(reqwest::Client::new())
        .with(BearerAuth::new(aim.clone()).allow_any_https_host())
        .with(inspect.clone())
        .build();

    // The emulator's MES checks the token itself.
    let url = format!("{}api/v3/entity", emu.mes_base());
    for _ in 0..3 {
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(inspect.requests.load(Ordering::SeqCst), 3);
    assert_eq!(inspect.sensitive.load(Ordering::SeqCst), 3);
    assert_eq!(emu.counters().mes, 3);
    assert_eq!(emu.token_requests(), 1, "the token is cached");

    // And on the wire: exactly one Authorization header carrying the token.
    let rec = Recorder::start(Rule::Accept).await;
    http.get(rec.url("api/v3/entity")).send().await.unwrap();
    let token = aim.token().await.unwrap();
    let seen = rec.seen();
    assert_eq!(
        seen[0].authorization,
        vec![format!("Bearer {}", token.secret())]
    );
}

#[tokio::test]
async fn an_existing_authorization_header_is_left_alone() {
    let (emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::Reject).await;
    let http = client(BearerAuth::new(aim).allow_any_https_host());
    let response = http
        .get(rec.url("x"))
        .header(AUTHORIZATION, "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    // Not ours: no token fetched, no retry on its 401.
    assert_eq!(response.status(), 401);
    assert_eq!(rec.seen().len(), 1);
    assert_eq!(rec.seen()[0].authorization, vec!["Basic dXNlcjpwYXNz"]);
    assert_eq!(emu.token_requests(), 0);
}

#[tokio::test]
async fn fails_closed_when_the_secret_is_wrong() {
    let (emu, _) = emulator().await;
    let http = client(BearerAuth::new(wrong_secret_client(&emu)).allow_any_https_host());
    let err = http
        .get(format!("{}api/v3/entity", emu.mes_base()))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_middleware());
    let aim_err = aim_error(&err);
    assert_eq!(aim_err.kind(), ErrorKind::OAuth);
    assert_eq!(aim_err.oauth_error(), Some("invalid_client"));
    assert!(emu.token_requests() >= 1);
    assert_eq!(
        emu.counters().mes,
        0,
        "no request may reach MES without a token"
    );
}

#[tokio::test]
async fn fails_closed_when_aim_is_down() {
    let (emu, _) = emulator().await;
    let aim = impatient_client(&emu);
    emu.set_outage(
        Endpoint::Token,
        Some(Fault::Status {
            status: 503,
            retry_after: None,
            body: None,
        }),
    );
    let http = client(BearerAuth::new(aim).allow_any_https_host());
    let err = http
        .get(format!("{}api/v3/entity", emu.mes_base()))
        .send()
        .await
        .unwrap_err();
    let aim_err = aim_error(&err);
    assert!(aim_err.is_transient(), "{aim_err:?}");
    assert!(emu.token_requests() >= 1);
    assert_eq!(
        emu.counters().mes,
        0,
        "no request may reach MES without a token"
    );
}

#[tokio::test]
async fn no_token_over_plain_http_to_a_remote_host() {
    let (emu, aim) = emulator().await;
    let http = client(BearerAuth::new(aim).allow_any_https_host());
    // .invalid never resolves; the refusal must come before any connection.
    let err = http
        .get("http://mes01.plant.invalid/mesmw/api/v3/entity")
        .send()
        .await
        .unwrap_err();
    let aim_err = aim_error(&err);
    assert_eq!(aim_err.kind(), ErrorKind::Refused);
    assert!(aim_err.to_string().contains("plain http"), "{aim_err}");
    assert_eq!(emu.token_requests(), 0, "not even a token is fetched");
}

#[tokio::test]
async fn no_token_to_a_host_outside_the_allow_list() {
    let (emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::Accept).await;
    let http = client(BearerAuth::new(aim.clone()).allowed_hosts(["mes01.plant.local"]));
    let err = http.get(rec.url("api/v3/entity")).send().await.unwrap_err();
    let aim_err = aim_error(&err);
    assert_eq!(aim_err.kind(), ErrorKind::Refused);
    assert!(aim_err.to_string().contains("allowed hosts"), "{aim_err}");
    assert_eq!(rec.requests(), 0);
    assert_eq!(emu.token_requests(), 0);

    let http = client(
        BearerAuth::new(aim)
            .allowed_hosts(["mes01.plant.local"])
            .allow_host("127.0.0.1"),
    );
    let response = http.get(rec.url("api/v3/entity")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(rec.requests(), 1);
}

#[tokio::test]
async fn a_401_invalidates_once_and_retries_with_a_new_token() {
    let (emu, aim) = emulator().await;
    let http = client(BearerAuth::new(aim.clone()).allow_any_https_host());
    let url = format!("{}api/v3/entity", emu.mes_base());
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(emu.token_requests(), 1);

    emu.reject_next_mes_token();
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(emu.token_requests(), 2, "exactly one new token request");
    assert_eq!(emu.counters().mes, 3);

    // Against the recorder: the retry carried a different token than the
    // rejected one, i.e. the rejected token was invalidated.
    let rec = Recorder::start(Rule::RejectFirstToken).await;
    let before = emu.token_requests();
    let response = http
        .post(rec.url("api/v3/Jobs/Start"))
        .body("{\"JobId\":\"J1\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(emu.token_requests(), before + 1);
    let seen = rec.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0].authorization, seen[1].authorization);
    assert_eq!(seen[1].body, "{\"JobId\":\"J1\"}", "the body was replayed");
}

#[tokio::test]
async fn a_second_401_is_unauthorized_without_a_loop() {
    let (emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::Reject).await;
    aim.token().await.unwrap();
    // Old enough to be renewed after a 401.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let http = client(BearerAuth::new(aim).allow_any_https_host());
    let err = http.get(rec.url("api/v3/entity")).send().await.unwrap_err();
    assert!(
        attach_support::is_fresh_token_refused(aim_error(&err)),
        "{err}"
    );
    assert_eq!(rec.requests(), 2, "one try and one retry");
    assert_eq!(emu.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_resource_server_refusing_every_token_costs_at_most_3_token_requests_for_50_calls() {
    let (emu, aim) = attach_support::paused_emulator().await;
    let rec = Recorder::start(Rule::Reject).await;
    let http = client(BearerAuth::new(aim).allow_any_https_host());
    for _ in 0..50 {
        let err = http.get(rec.url("api/v3/entity")).send().await.unwrap_err();
        assert_eq!(aim_error(&err).kind(), ErrorKind::Unauthorized, "{err}");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert!(emu.token_requests() <= 3, "{:?}", emu.counters());
}
#[tokio::test]
async fn a_hundred_concurrent_401s_on_one_token_cause_one_refresh() {
    let (emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::RejectFirstToken).await;
    let http = client(BearerAuth::new(aim.clone()).allow_any_https_host());
    aim.token().await.unwrap(); // everyone starts from the same cached token
    assert_eq!(emu.token_requests(), 1);

    let url = rec.url("api/v3/entity");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let http = http.clone();
            let url = url.clone();
            tokio::spawn(async move { http.get(url).send().await.unwrap().status() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(emu.token_requests(), 2, "one refresh for all hundred 401s");
    assert_eq!(rec.distinct_tokens().len(), 2);
    assert_eq!(rec.requests(), 200, "each request: one 401 and one retry");
}

#[tokio::test]
async fn debug_does_not_leak_the_token() {
    let (_emu, aim) = emulator().await;
    let token = aim.token().await.unwrap();
    let auth = BearerAuth::new(aim).allow_host("127.0.0.1");
    let debug = format!("{auth:?}");
    assert!(!debug.contains(token.secret()), "{debug}");
    assert!(debug.contains("127.0.0.1"));
}

#[tokio::test]
async fn aim_client_is_shared_not_copied() {
    // Many middleware instances on one AimClient share its cache.
    let (emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::Accept).await;
    for _ in 0..5 {
        let http = client(BearerAuth::new(AimClient::clone(&aim)).allow_any_https_host());
        http.get(rec.url("a")).send().await.unwrap();
    }
    assert_eq!(emu.token_requests(), 1);
}

#[tokio::test]
async fn without_an_allow_list_nothing_is_sent_and_the_error_names_both_calls() {
    let (emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::Accept).await;
    let http = client(BearerAuth::new(aim.clone()));
    let err = http.get(rec.url("api/v3/entity")).send().await.unwrap_err();
    let aim_err = aim_error(&err);
    assert_eq!(aim_err.kind(), ErrorKind::Refused);
    let msg = aim_err.to_string();
    assert!(msg.contains(".allow_host(\"127.0.0.1\")"), "{msg}");
    assert!(msg.contains(".allow_any_https_host()"), "{msg}");
    assert_eq!(rec.requests(), 0, "nothing reaches the server");
    assert_eq!(emu.token_requests(), 0, "not even a token is fetched");

    // `localhost.` is not loopback: not over plain http, whatever the list.
    let http = client(
        BearerAuth::new(aim)
            .allow_any_https_host()
            .allow_host("localhost."),
    );
    let port = rec
        .url("")
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let err = http
        .get(format!("http://localhost.:{port}/api/v3/entity"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(aim_error(&err).kind(), ErrorKind::Refused);
    assert!(aim_error(&err).to_string().contains("plain http"), "{err}");
    assert_eq!(rec.requests(), 0);
}

/// A streamed body cannot be replayed, so its 401 is not retried; the
/// 401 still must not turn a MES that refuses every token into one token
/// request per call: the cool-down holds for these calls too.
#[tokio::test(start_paused = true)]
async fn unreplayable_bodies_refused_every_time_cost_at_most_3_token_requests_for_50_calls() {
    let (emu, aim) = attach_support::paused_emulator().await;
    let rec = Recorder::start(Rule::Reject).await;
    let http = client(BearerAuth::new(aim).allow_any_https_host());
    for _ in 0..50 {
        let response = streamed_post(&http, &rec).await.unwrap();
        assert_eq!(response.status(), 401);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert_eq!(rec.requests(), 50, "a streamed body is sent once");
    assert!(emu.token_requests() <= 3, "{:?}", emu.counters());
}

/// A token MES accepted and later refuses (AIM rotated its key) is renewed,
/// streamed bodies or not: an unretried 401 for the token that replaced an
/// earlier refused one proves "MES refuses fresh tokens" only when that
/// token never worked. Here it did, for several calls, so its 401 is a new
/// refusal: the next call gets a new token, not 30 s of cool-down.
#[tokio::test(start_paused = true)]
async fn a_replacement_token_mes_accepted_and_then_refuses_is_renewed() {
    let (emu, aim) = attach_support::paused_emulator().await;
    let rec = Recorder::start(Rule::RejectRevoked).await;
    let http = client(BearerAuth::new(aim).allow_any_https_host());
    attach_support::accepted_then_revoked_replacement_is_renewed(&rec, || async {
        streamed_post(&http, &rec).await.unwrap().status().as_u16()
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
    let http = client(BearerAuth::new(aim).allow_any_https_host());
    for rule in [Rule::WindowsAuthOnly, Rule::InsufficientScope] {
        let rec = Recorder::start(rule).await;
        let response = http.get(rec.url("api/v3/entity")).send().await.unwrap();
        assert_eq!(response.status(), 401, "{rule:?}");
        assert_eq!(rec.requests(), 1, "{rule:?}: retried");
        assert_eq!(emu.token_requests(), 1, "{rule:?}: a token request");
    }
}

/// The reqwest client below follows a redirect from MES to another host
/// (and drops the token on the way, as it must). That host's 401 is not a
/// refusal of the token, which it never saw: no renewal, no retry, no
/// cool-down; the caller gets the 401 as it came.
#[tokio::test]
async fn a_401_from_the_host_a_redirect_led_to_is_not_a_refused_token() {
    let (emu, aim) = emulator().await;
    aim.token().await.unwrap();
    let mes = Recorder::start(Rule::Redirect).await;
    let elsewhere = Recorder::start(Rule::Reject).await;
    mes.redirect_to(&elsewhere.url("login"));
    let http = client(BearerAuth::new(aim).allow_host("127.0.0.1"));
    let response = http.get(mes.url("api/v3/entity")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        elsewhere.seen().iter().all(|s| s.authorization.is_empty()),
        "{:?}",
        elsewhere.seen()
    );
    assert_eq!(mes.requests(), 1, "retried");
    assert_eq!(emu.token_requests(), 1, "renewed for another host's 401");
}
