//! `MesClient` end to end against the AIM + MES emulator (and a recording
//! server where the test must see the request as sent).

mod attach_support;

use std::time::Duration;

use aim_token::emulator::{AimEmulator, Endpoint, Fault};
use aim_token::{ErrorKind, MesClient};
use attach_support::{emulator, wrong_secret_client, Recorder, Rule};
use serde_json::{json, Value};

fn status(status: u16, body: &str) -> Fault {
    Fault::Status {
        status,
        retry_after: None,
        body: Some(body.to_owned()),
    }
}

async fn mes() -> (AimEmulator, MesClient) {
    let (emu, aim) = emulator().await;
    let mes = MesClient::new(emu.mes_base(), aim).unwrap();
    (emu, mes)
}

#[tokio::test]
async fn lists_entities_and_starts_a_job() {
    let (emu, mes) = mes().await;
    let entities: Vec<Value> = mes.get_json("api/v3/entity").await.unwrap();
    assert!(
        entities.iter().any(|e| e["name"] == "Line1"),
        "{entities:?}"
    );
    let started: Value = mes
        .with_trans_id("T-1")
        .put_json("api/v3/Jobs/Start", &json!({ "jobId": "J1" }))
        .await
        .unwrap();
    assert_eq!(started["jobId"], "J1");
    assert_eq!(started["state"], "Running");
    assert_eq!(emu.counters().mes, 2);
    assert_eq!(emu.token_requests(), 1);
}

#[tokio::test]
async fn sends_json_and_the_optional_headers() {
    let (_emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::Accept).await;
    // No trailing slash: MesClient adds it.
    let mes = MesClient::new(format!("{}/mesmw", rec.base), aim.clone()).unwrap();
    assert_eq!(mes.base_url(), format!("{}/mesmw/", rec.base));

    let _: Value = mes
        .with_trans_id("T-42")
        .with_tz_id("W. Europe Standard Time")
        .put_json("api/v3/Jobs/Start", &json!({ "JobId": "J1" }))
        .await
        .unwrap();
    mes.delete("/api/v3/Jobs/J1").await.unwrap();
    let _: Value = mes
        .post_json("api/v3/entity", &json!({ "Name": "Line 1" }))
        .await
        .unwrap();

    let token = aim.token().await.unwrap();
    let seen = rec.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].path, "/mesmw/api/v3/Jobs/Start");
    assert_eq!(seen[0].body, r#"{"JobId":"J1"}"#);
    assert_eq!(seen[0].trans_id.as_deref(), Some("T-42"));
    assert_eq!(seen[0].tz_id.as_deref(), Some("W. Europe Standard Time"));
    assert_eq!(
        seen[0].authorization,
        vec![format!("Bearer {}", token.secret())]
    );
    // Per call: the plain client sends neither header.
    assert_eq!(seen[1].method, "DELETE");
    assert_eq!(seen[1].path, "/mesmw/api/v3/Jobs/J1");
    assert_eq!(seen[1].trans_id, None);
    assert_eq!(seen[2].method, "POST");
}

#[tokio::test]
async fn refuses_paths_outside_the_base() {
    let (emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::Accept).await;
    let mes = MesClient::new(format!("{}/mesmw/", rec.base), aim).unwrap();
    for path in [
        "https://evil.example/api/v3/entity",
        "//evil.example/x",
        "../admin",
        "api/%2e%2e/%2e%2e/admin",
    ] {
        let err = mes.get_json::<Value>(path).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{path}");
    }
    assert_eq!(rec.requests(), 0);
    assert_eq!(emu.token_requests(), 0);
}

#[tokio::test]
async fn a_bad_base_is_a_config_error() {
    let (_emu, aim) = emulator().await;
    for base in [
        "mes01/mesmw",
        "http://mes01.plant.local/mesmw/",
        "ftp://mes01/",
    ] {
        let err = MesClient::new(base, aim.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{base}");
    }
}

#[tokio::test]
async fn status_400_is_bad_request_with_the_mes_text() {
    let (_emu, mes) = mes().await;
    // The emulator's MES wants a jobId.
    let err = mes
        .put_json::<_, Value>("api/v3/Jobs/Start", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert_eq!(err.status(), Some(400));
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("must be a JSON object with a"), "{text}");
    assert!(text.contains("PUT /mesmw/api/v3/Jobs/Start"), "{text}");
}

#[tokio::test]
async fn one_401_is_retried_with_a_fresh_token() {
    let (emu, mes) = mes().await;
    let _: Value = mes.get_json("api/v3/entity").await.unwrap();
    emu.reject_next_mes_token();
    let _: Value = mes.get_json("api/v3/entity").await.unwrap();
    assert_eq!(emu.token_requests(), 2, "one invalidation, one new token");
    assert_eq!(emu.counters().mes, 3);
}

#[tokio::test]
async fn the_retry_after_a_401_resends_body_and_headers() {
    let (_emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::RejectFirstToken).await;
    let mes = MesClient::new(format!("{}/mesmw/", rec.base), aim).unwrap();
    let _: Value = mes
        .with_trans_id("T-7")
        .put_json("api/v3/Jobs/Start", &json!({ "JobId": "J1" }))
        .await
        .unwrap();
    let seen = rec.seen();
    assert_eq!(seen.len(), 2, "one 401, one retry");
    assert_ne!(seen[0].authorization, seen[1].authorization);
    for s in &seen {
        assert_eq!(s.method, "PUT");
        assert_eq!(s.body, r#"{"JobId":"J1"}"#);
        assert_eq!(s.trans_id.as_deref(), Some("T-7"));
        assert_eq!(s.authorization.len(), 1);
    }
}

#[tokio::test]
async fn two_401s_are_unauthorized() {
    let (emu, mes) = mes().await;
    emu.inject_times(Endpoint::Mes, status(401, "token rejected"), 2);
    let err = mes.get_json::<Value>("api/v3/entity").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert_eq!(err.status(), Some(401));
    assert!(!err.is_transient());
    assert!(err.to_string().contains("token rejected"), "{err}");
    assert_eq!(emu.token_requests(), 2);
    assert_eq!(emu.counters().mes, 2, "one retry, no loop");
}

#[tokio::test]
async fn status_403_explains_the_default_background_user() {
    let (emu, mes) = mes().await;
    emu.set_mes_forbidden(true);
    let err = mes
        .put_json::<_, Value>("api/v3/Jobs/Start", &json!({ "jobId": "J1" }))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden);
    assert_eq!(err.status(), Some(403));
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("Default Background User"), "{text}");
    assert!(text.contains("attribute 199"), "{text}");
    assert!(text.contains("MES said:"), "{text}");
    assert!(text.contains("does not have the privilege"), "{text}");
    assert_eq!(
        emu.token_requests(),
        1,
        "a 403 is not a token problem: no refresh"
    );

    emu.set_mes_forbidden(false);
    let _: Value = mes.get_json("api/v3/entity").await.unwrap();
}

#[tokio::test]
async fn status_404_is_not_found() {
    let (emu, mes) = mes().await;
    emu.inject(Endpoint::Mes, status(404, "Entity 'Line9' not found"));
    let err = mes
        .get_json::<Value>("api/v3/entity/Line9")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.status(), Some(404));
    assert!(
        err.to_string().contains("Entity 'Line9' not found"),
        "{err}"
    );
}

#[tokio::test]
async fn status_500_is_a_server_error_with_the_mes_text() {
    let (emu, mes) = mes().await;
    emu.inject(
        Endpoint::Mes,
        status(500, "Object reference not set to an instance of an object."),
    );
    let err = mes.get_json::<Value>("api/v3/entity").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server);
    assert_eq!(err.status(), Some(500));
    assert!(!err.is_transient(), "MES reports application errors as 500");
    assert!(
        err.to_string().contains("Object reference not set"),
        "{err}"
    );
}

#[tokio::test]
async fn status_500_about_the_token_means_aim_unreachable_from_mes() {
    let (emu, mes) = mes().await;
    emu.inject(
        Endpoint::Mes,
        status(500, "The access token cannot be obtained or verified."),
    );
    let err = mes.get_json::<Value>("api/v3/entity").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server);
    assert_eq!(err.status(), Some(500));
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(text.contains("AIM unreachable from MES"), "{text}");
    assert!(text.contains("cannot be obtained or verified"), "{text}");
}

#[tokio::test]
async fn status_503_is_transient_with_retry_after() {
    let (emu, mes) = mes().await;
    emu.inject(
        Endpoint::Mes,
        Fault::Status {
            status: 503,
            retry_after: Some(7),
            body: Some("Service Unavailable".into()),
        },
    );
    let err = mes.get_json::<Value>("api/v3/entity").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server);
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn a_body_that_is_not_json_is_an_invalid_response() {
    let (emu, mes) = mes().await;
    emu.inject(Endpoint::Mes, Fault::Garbage);
    let err = mes.get_json::<Value>("api/v3/entity").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse);
}

#[tokio::test]
async fn fails_closed_without_a_token() {
    let (emu, _) = emulator().await;
    let mes = MesClient::new(emu.mes_base(), wrong_secret_client(&emu)).unwrap();
    let err = mes.get_json::<Value>("api/v3/entity").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OAuth);
    assert_eq!(err.oauth_error(), Some("invalid_client"));
    assert_eq!(
        emu.counters().mes,
        0,
        "no request reaches MES without a token"
    );
}

#[tokio::test]
async fn errors_never_contain_the_token() {
    let (_emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::EchoAuthorizationAs400).await;
    let mes = MesClient::new(format!("{}/mesmw/", rec.base), aim.clone()).unwrap();
    let err = mes.get_json::<Value>("api/v3/entity").await.unwrap_err();
    let token = aim.token().await.unwrap();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(err.to_string().contains("[redacted]"), "{err}");
    assert!(!err.to_string().contains(token.secret()));
    assert!(!format!("{err:?}").contains(token.secret()));
    assert!(!format!("{mes:?}").contains(token.secret()));
}

#[tokio::test]
async fn https_mes_needs_the_pcs_ca() {
    let emu = AimEmulator::builder().https(true).start().await.unwrap();
    let aim = emu.client_builder().build().unwrap();
    let ca = emu.ca_pem().expect("https emulator has a CA");
    assert!(emu.mes_base().starts_with("https://"));

    // The default client does not trust the emulator's CA.
    let mes = MesClient::new(emu.mes_base(), aim.clone()).unwrap();
    let err = mes.get_json::<Value>("api/v3/entity").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
    assert_eq!(emu.counters().mes, 0);

    let http = reqwest::Client::builder()
        // Only the CA (WebPKI), which also runs under Wine (scripts/windows.sh).
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let mes = mes.with_http_client(http);
    let _: Value = mes.get_json("api/v3/entity").await.unwrap();
    assert_eq!(emu.counters().mes, 1);
}

#[tokio::test]
async fn a_hundred_tasks_share_one_token_request() {
    let (emu, mes) = mes().await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let mes = mes.clone();
            tokio::spawn(async move { mes.get_json::<Value>("api/v3/entity").await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(emu.counters().mes, 100);
    assert_eq!(emu.token_requests(), 1);
}
