//! `MesClient` end to end against the AIM + MES emulator (and a recording
//! server where the test must see the request as sent).

mod attach_support;

use std::time::Duration;

use aim_token::emulator::{AimEmulator, Endpoint, Fault};
use aim_token::mes::{Job, JobState};
use aim_token::{ErrorKind, MesClient};
use attach_support::{emulator, wrong_secret_client, Recorder, Rule};
use serde_json::{json, Value};

/// MES's error shape (ASP.NET Web API): `{"Message": ...}`. Only that
/// field reaches an error; a plain-text body is never shown.
fn status(status: u16, message: &str) -> Fault {
    Fault::Status {
        status,
        retry_after: None,
        body: Some(json!({ "Message": message }).to_string()),
    }
}

async fn mes() -> (AimEmulator, MesClient) {
    let (emu, aim) = emulator().await;
    let mes = MesClient::new(emu.mes_base(), aim).unwrap();
    (emu, mes)
}

#[tokio::test]
async fn lists_entities_and_starts_a_job_with_the_generic_calls() {
    let (emu, mes) = mes().await;
    let entities: Vec<Value> = mes.get_json("api/v3/entity").await.unwrap();
    assert!(
        entities.iter().any(|e| e["ent_name"] == "Line1"),
        "{entities:?}"
    );
    let started: Value = mes
        .put_json(
            "api/v3/Jobs/Start",
            &json!({"ent_id": 4, "wo_id": "WO-1001", "oper_id": "Fill", "seq_no": 0, "run_ent_id": 4}),
        )
        .await
        .unwrap();
    assert_eq!(started["state_cd"], 3);
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
        .put_json(
            "api/v3/Jobs/Start",
            &json!({ "ent_id": 4, "wo_id": "W1", "oper_id": "Fill", "seq_no": 0, "run_ent_id": 4 }),
        )
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
    assert_eq!(
        seen[0].body,
        r#"{"ent_id":4,"oper_id":"Fill","run_ent_id":4,"seq_no":0,"wo_id":"W1"}"#
    );
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
async fn status_400_is_bad_request_explained_without_the_mes_text() {
    let (_emu, mes) = mes().await;
    // The Job model needs ent_id, wo_id, oper_id, seq_no and run_ent_id.
    let err = mes
        .put_json::<_, Value>("api/v3/Jobs/Start", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert_eq!(err.status(), Some(400));
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("wrong type or is out of range"), "{text}");
    assert!(text.contains("PUT /mesmw/api/v3/Jobs/Start"), "{text}");
    // MES's own words, scrubbed and quoted after the facts; never the raw body.
    assert!(
        text.contains(r#""The request is invalid: ent_id is required.""#),
        "{text}"
    );
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
        .put_json(
            "api/v3/Jobs/Start",
            &json!({ "ent_id": 4, "wo_id": "W1", "oper_id": "Fill", "seq_no": 0, "run_ent_id": 4 }),
        )
        .await
        .unwrap();
    let seen = rec.seen();
    assert_eq!(seen.len(), 2, "one 401, one retry");
    assert_ne!(seen[0].authorization, seen[1].authorization);
    for s in &seen {
        assert_eq!(s.method, "PUT");
        assert_eq!(
            s.body,
            r#"{"ent_id":4,"oper_id":"Fill","run_ent_id":4,"seq_no":0,"wo_id":"W1"}"#
        );
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
    assert!(err.to_string().contains("\"token rejected\""), "{err}");
    assert!(err.to_string().contains("clocks of MES and AIM"), "{err}");
    assert_eq!(emu.token_requests(), 2);
    assert_eq!(emu.counters().mes, 2, "one retry, no loop");
}

#[tokio::test]
async fn status_403_explains_the_default_background_user() {
    let (emu, mes) = mes().await;
    emu.set_mes_forbidden(true);
    let err = mes.entities().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden);
    assert_eq!(err.status(), Some(403));
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("Default Background User"), "{text}");
    assert!(text.contains("attribute 199"), "{text}");
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
    let (_emu, mes) = mes().await;
    let err = mes.entity_by_key(99).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.status(), Some(404));
    assert!(
        err.to_string()
            .contains("does not have the requested object"),
        "{err}"
    );
    let err = mes
        .get_json::<Value>("api/v3/entity/Line9")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string()
            .contains("endpoint name is wrong or a required parameter is missing"),
        "{err}"
    );
    let err = mes
        .get_json::<Value>("api/v3/entity/key")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("required parameter is missing"),
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
        err.to_string().contains("\"Object reference not set"),
        "{err}"
    );
    assert!(err.to_string().contains("HTTP 500"), "{err}");
}

#[tokio::test]
async fn aim_offline_behind_mes_is_a_transient_500() {
    let (emu, mes) = mes().await;
    emu.set_mes_aim_offline(true);
    let err = mes.entities().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server);
    assert_eq!(err.status(), Some(500));
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(text.contains("AIM unreachable from MES"), "{text}");
    assert!(text.contains("obtain or verify the access token"), "{text}");
    assert_eq!(emu.token_requests(), 1, "a 500 is not a token problem here");
    emu.set_mes_aim_offline(false);
    mes.entities().await.unwrap();
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
    assert!(!err.to_string().contains("Bearer"), "{err}");
    assert!(err.to_string().contains("HTTP 400"), "{err}");
    assert!(!err.to_string().contains(token.secret()));
    assert!(!format!("{err:?}").contains(token.secret()));
    assert!(!format!("{mes:?}").contains(token.secret()));
}

#[tokio::test]
async fn mes_trusts_what_its_aim_client_trusts() {
    let emu = AimEmulator::builder().https(true).start().await.unwrap();
    assert!(emu.mes_base().starts_with("https://"));
    // One trust setting: the AimClient trusts the emulator's CA, and so
    // does the MesClient built from it.
    let aim = emu.client_builder().build().unwrap();
    let mes = MesClient::new(emu.mes_base(), aim.clone()).unwrap();
    mes.entities().await.unwrap();
    assert_eq!(emu.counters().mes, 1);

    // A client of its own that does not trust the CA: a TLS error that
    // names the fix, and nothing reaches MES.
    let mes = mes.with_http_client(reqwest::Client::new());
    let err = mes.entities().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
    assert!(err.to_string().contains("AIM_CA_CERT"), "{err}");
    assert_eq!(emu.counters().mes, 1);
}

#[tokio::test(start_paused = true)]
async fn the_timeout_is_settable() {
    let (emu, mes) = mes().await;
    mes.entities().await.unwrap();
    emu.inject(Endpoint::Mes, Fault::Delay(Duration::from_secs(5)));
    let err = mes
        .with_timeout(Duration::from_secs(1))
        .entities()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(err.is_transient());
}

// ------------------------------------------------------------ typed helpers

#[tokio::test]
async fn entity_helpers_read_the_v3_columns() {
    let (_emu, mes) = mes().await;
    let all = mes.entities().await.unwrap();
    let line1 = all.iter().find(|e| e.ent_name == "Line1").unwrap();
    assert_eq!((line1.ent_id, line1.parent_ent_id), (4, Some(2)));
    assert_eq!(line1.flag("can_run_jobs"), Some(true));
    let site = all.iter().find(|e| e.parent_ent_id.is_none()).unwrap();
    assert_eq!(site.ent_name, "Plant1");

    assert_eq!(mes.entity_by_key(4).await.unwrap(), *line1);
    let lines = mes.entities_where([("parent_ent_id", "2")]).await.unwrap();
    let names: Vec<_> = lines.iter().map(|e| e.ent_name.as_str()).collect();
    assert_eq!(names, ["Line1", "Line2"]);
    assert_eq!(mes.entity_id("Line2", Some("Plant1")).await.unwrap(), 5);
    assert_eq!(mes.entity_id("Line2", None).await.unwrap(), 5);
    let err = mes.entity_id("Line9", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(mes.with_max_rows(2).entities().await.unwrap().len(), 2);
}

#[tokio::test]
async fn job_lifecycle_start_refused_again_pause_end() {
    let (_emu, mes) = mes().await;
    let job = mes.job("WO-1001", "Fill", 0).await.unwrap();
    assert_eq!(job.state_cd, Some(JobState::Ready));
    let job = job.on(4);

    let running = mes.start_job(&job).await.unwrap();
    assert_eq!(running.state_cd, Some(JobState::Running));
    assert_eq!(running.job_pos, Some(0));

    let err = mes.start_job(&job).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert_eq!(err.status(), Some(400));
    let text = err.to_string();
    assert!(
        text.starts_with("MES refused to start job WO-1001/Fill/0"),
        "{text}"
    );
    assert!(text.contains("Running, Complete or Canceled"), "{text}");

    let paused = mes.pause_job(&running).await.unwrap();
    assert_eq!(paused.state_cd, Some(JobState::Suspended));
    let ended = mes.end_job(&paused).await.unwrap();
    assert_eq!(ended.state_cd, Some(JobState::Complete));
    assert_eq!(
        mes.job("WO-1001", "Fill", 0).await.unwrap().state_cd,
        Some(JobState::Complete)
    );
    let err = mes.job("WO-1001", "Nope", 0).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // run_ent_id is required: refused before anything is sent.
    let err = mes
        .start_job(&Job::new(4, "WO-1001", "Pack", 0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("run_ent_id"), "{err}");
}

#[tokio::test]
async fn a_committed_transaction_is_seen_by_everyone() {
    let (_emu, mes) = mes().await;
    let job = mes.job("WO-1001", "Fill", 0).await.unwrap().on(4);
    let tx = mes.transaction().await.unwrap();
    assert!(!tx.id().is_empty());
    let running = tx.mes().start_job(&job).await.unwrap();
    assert_eq!(running.state_cd, Some(JobState::Running));
    let inside = tx.mes().job("WO-1001", "Fill", 0).await.unwrap();
    assert_eq!(inside.state_cd, Some(JobState::Running));
    let outside = mes.job("WO-1001", "Fill", 0).await.unwrap();
    assert_eq!(outside.state_cd, Some(JobState::Ready), "not before commit");
    tx.commit().await.unwrap();
    let after = mes.job("WO-1001", "Fill", 0).await.unwrap();
    assert_eq!(after.state_cd, Some(JobState::Running));
}

#[tokio::test]
async fn an_aborted_transaction_leaves_nothing() {
    let (_emu, mes) = mes().await;
    let job = mes.job("WO-1001", "Fill", 0).await.unwrap().on(4);
    let tx = mes.transaction().await.unwrap();
    tx.mes().start_job(&job).await.unwrap();
    let id = tx.id().to_owned();
    tx.abort().await.unwrap();
    assert_eq!(
        mes.job("WO-1001", "Fill", 0).await.unwrap().state_cd,
        Some(JobState::Ready)
    );
    // Its ID is gone: a late call with it is refused and explained.
    let err = mes.with_trans_id(&id).entities().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string()
            .contains("transaction timed out or was never started"),
        "{err}"
    );
}

#[tokio::test]
async fn an_expired_transaction_is_a_404_explained() {
    let (emu, mes) = mes().await;
    let job = mes.job("WO-1001", "Fill", 0).await.unwrap().on(4);
    let tx = mes.transaction().await.unwrap();
    tx.mes().start_job(&job).await.unwrap();
    emu.expire_mes_transactions();
    let err = tx.mes().pause_job(&job).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string()
            .contains("does not know this transaction ID"),
        "{err}"
    );
    let err = tx.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("its changes are gone"), "{err}");
    assert_eq!(
        mes.job("WO-1001", "Fill", 0).await.unwrap().state_cd,
        Some(JobState::Ready)
    );
}

#[tokio::test]
async fn a_dropped_transaction_is_aborted() {
    let (emu, mes) = mes().await;
    let job = mes.job("WO-1001", "Fill", 0).await.unwrap().on(4);
    let tx = mes.transaction().await.unwrap();
    tx.mes().start_job(&job).await.unwrap();
    let id = tx.id().to_owned();
    let before = emu.counters().mes;
    drop(tx);
    // The abort runs in the background: wait for MES to see it (real time:
    // generous, a loaded machine or Wine may take seconds).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while emu.counters().mes == before && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(emu.counters().mes, before + 1, "one abort call");
    let err = mes.with_trans_id(&id).entities().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        mes.job("WO-1001", "Fill", 0).await.unwrap().state_cd,
        Some(JobState::Ready)
    );
}

#[test]
fn a_transaction_dropped_without_a_runtime_does_not_panic() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (emu, tx) = runtime.block_on(async {
        let (emu, mes) = mes().await;
        let tx = mes.transaction().await.unwrap();
        (emu, tx)
    });
    drop(tx); // no runtime here: only the warning; MES's timeout drops it
    drop(emu);
}

/// A task holding an open transaction is dropped by its runtime's
/// shutdown: Drop runs while the runtime goes away; it must not panic (the
/// abort cannot run any more; MES's timeout drops the changes).
#[test]
fn a_transaction_dropped_during_runtime_shutdown_does_not_panic() {
    for flavor in ["current_thread", "multi_thread"] {
        let runtime = match flavor {
            "current_thread" => tokio::runtime::Builder::new_current_thread(),
            _ => tokio::runtime::Builder::new_multi_thread(),
        }
        .enable_all()
        .build()
        .unwrap();
        let emu = runtime.block_on(async {
            let (emu, mes) = mes().await;
            let tx = mes.transaction().await.unwrap();
            tokio::spawn(async move {
                let _held = tx;
                std::future::pending::<()>().await;
            });
            tokio::task::yield_now().await;
            emu
        });
        drop(runtime);
        drop(emu);
    }
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_on_commit_leaves_the_transaction_aborted() {
    let (emu, mes) = mes().await;
    let job = mes.job("WO-1001", "Fill", 0).await.unwrap().on(4);
    let tx = mes.transaction().await.unwrap();
    let id = tx.id().to_owned();
    tx.mes().start_job(&job).await.unwrap();
    // MES hangs on the commit; the caller stops waiting after a second.
    emu.inject(Endpoint::Mes, Fault::Delay(Duration::from_secs(30)));
    let gave_up = tokio::time::timeout(Duration::from_secs(1), tx.commit()).await;
    assert!(gave_up.is_err(), "the commit did not finish");
    // The dropped transaction is aborted in the background.
    let mut aborted = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if mes.with_trans_id(&id).entities().await.is_err() {
            aborted = true;
            break;
        }
    }
    assert!(aborted, "the transaction is gone");
    tokio::time::sleep(Duration::from_secs(60)).await; // the hung commit ends too
    assert_eq!(
        mes.job("WO-1001", "Fill", 0).await.unwrap().state_cd,
        Some(JobState::Ready),
        "nothing half-done: the start was never committed"
    );
}

#[tokio::test]
async fn a_transaction_id_that_cannot_be_a_header_is_refused() {
    let (emu, mes) = mes().await;
    // The MesTransaction model as MES would send it, not wrapped in a
    // {"Message": ..} error body: only the trans_id is wrong.
    for body in [
        r#"{"trans_id":"a\u0001b","trans_start_utc":"2026-12-01T09:00:00Z"}"#,
        r#"{"trans_id":"a\r\nX-Injected: 1"}"#,
        r#"{"trans_id":"a\nb"}"#,
        r#"{"trans_id":""}"#,
        r#"{"trans_id":"tx-\u00e9"}"#,
        r#"{"id":"x"}"#,
    ] {
        emu.inject(Endpoint::Mes, raw(200, body));
        let err = mes.transaction().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{body}: {err}");
        if body.contains("trans_id") {
            assert!(err.to_string().contains("usable trans_id"), "{body}: {err}");
        }
    }
    // A user-given trans_id with CR/LF never becomes a header either.
    let err = mes
        .with_trans_id("t\r\nAuthorization: x")
        .entities()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

/// `body` exactly as given, with `status`.
fn raw(status: u16, body: &str) -> Fault {
    Fault::Status {
        status,
        retry_after: None,
        body: Some(body.to_owned()),
    }
}

/// AVEVA: "204 The call was successful but no content was returned". A GET
/// that finds nothing may answer so: no rows, not a decoding error.
#[tokio::test]
async fn a_204_is_no_rows() {
    let (emu, mes) = mes().await;
    let no_content = || Fault::Status {
        status: 204,
        retry_after: None,
        body: None,
    };
    emu.inject(Endpoint::Mes, no_content());
    assert!(mes.entities().await.unwrap().is_empty());
    emu.inject(Endpoint::Mes, no_content());
    let none = mes.entities_where([("entName", "x")]).await.unwrap();
    assert!(none.is_empty());
    emu.inject(Endpoint::Mes, no_content());
    let err = mes.entity_by_key(99).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    emu.inject(Endpoint::Mes, no_content());
    let err = mes.entity_id("Nope", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    emu.inject(Endpoint::Mes, no_content());
    let err = mes.job("WO-9", "X", 0).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    // An HTML page with 200 (a proxy's login page) is still not rows.
    emu.inject(Endpoint::Mes, raw(200, "<html><body>Sign in</body></html>"));
    let err = mes.entities().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err}");
    assert!(!err.to_string().contains("Sign in"), "{err}");
}

/// A commit that MES answers with a failure other than "no such
/// transaction" leaves the transaction open there: it is aborted, and the
/// caller is told the changes did not happen.
#[tokio::test]
async fn a_failed_commit_is_aborted_not_left_open() {
    let (emu, mes) = mes().await;
    let job = mes.job("WO-1001", "Fill", 0).await.unwrap().on(4);
    let tx = mes.transaction().await.unwrap();
    let id = tx.id().to_owned();
    tx.mes().start_job(&job).await.unwrap();
    emu.inject(
        Endpoint::Mes,
        status(500, "Transaction (Process ID 61) was deadlocked"),
    );
    let err = tx.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server, "{err}");
    let mut gone = false;
    for _ in 0..200 {
        if mes.with_trans_id(&id).entities().await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        gone,
        "the transaction was aborted, not left open until MES's timeout"
    );
    assert_eq!(
        mes.job("WO-1001", "Fill", 0).await.unwrap().state_cd,
        Some(JobState::Ready)
    );
}

/// A commit whose answer never arrives: MES may or may not have committed.
/// The error says so; it is not "transient" (the transaction cannot be
/// committed again: it is aborted).
#[tokio::test]
async fn a_commit_without_an_answer_says_the_outcome_is_unknown() {
    let (emu, mes) = mes().await;
    let job = mes.job("WO-1001", "Fill", 0).await.unwrap().on(4);
    let tx = mes.transaction().await.unwrap();
    tx.mes().start_job(&job).await.unwrap();
    emu.inject(Endpoint::Mes, Fault::DropConnection);
    let err = tx.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(!err.is_transient(), "retrying cannot commit it: {err}");
    let text = err.to_string();
    assert!(text.contains("may or may not have committed"), "{text}");
    // One line of prose: no run of spaces from a broken string continuation.
    assert!(!text.contains("  "), "{text:?}");
}

#[tokio::test]
async fn a_revoked_privilege_is_explained_with_the_default_background_user() {
    let (emu, mes) = mes().await;
    let job = mes.job("WO-1001", "Fill", 0).await.unwrap().on(4);
    emu.revoke_mes_privilege("Jobs/Start");
    let err = mes.start_job(&job).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.status(), Some(404));
    let text = err.to_string();
    for needle in [
        "Default Background User",
        "attribute 199",
        "restart of the MES middleware",
        "within an hour",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert_eq!(emu.token_requests(), 1, "not a token problem: no refresh");
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

/// MES stops trusting the token (AIM rotated its key) while a hundred
/// calls are under way, twice: each time the hundred 401s cost one new
/// token, and every call succeeds with it.
#[tokio::test]
async fn a_hundred_calls_refused_at_once_share_one_renewal_each_time() {
    let (emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::RejectRevoked).await;
    let mes = MesClient::new(format!("{}/mesmw/", rec.base), aim).unwrap();
    mes.get_json::<Value>("api/v3/entity").await.unwrap();
    for round in 2..=3 {
        rec.revoke_seen();
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let mes = mes.clone();
                tokio::spawn(async move { mes.get_json::<Value>("api/v3/entity").await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(emu.token_requests(), round, "{:?}", emu.counters());
    }
    assert_eq!(rec.distinct_tokens().len(), 3);
}

/// MES (IIS, a load balancer) answers a redirect: to https, to another
/// node, to a login page. The token does not follow it, and the error says
/// where it pointed and what to configure, not just "MES failed".
#[tokio::test]
async fn a_redirect_is_not_followed_and_the_error_says_where_it_points() {
    let (emu, mes) = mes().await;
    let token = mes.aim().token().await.unwrap();
    let elsewhere = Recorder::start(Rule::Accept).await;
    let location = elsewhere.url("mesmw/api/v3/entity");
    emu.inject(
        Endpoint::Mes,
        Fault::Redirect {
            status: 307,
            location: location.clone(),
        },
    );
    let err = mes.entities().await.unwrap_err();
    assert_eq!(elsewhere.requests(), 0, "the redirect was followed");
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err}");
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.status(), Some(307));
    let msg = err.to_string();
    assert!(msg.contains(&location), "{msg}");
    assert!(msg.contains("MES base"), "{msg}");
    assert!(!msg.contains(token.secret()), "{msg}");
    // A Location that echoes the token is scrubbed.
    emu.inject(
        Endpoint::Mes,
        Fault::Redirect {
            status: 302,
            location: format!("https://login.plant.local/?access_token={}", token.secret()),
        },
    );
    let msg = mes.entities().await.unwrap_err().to_string();
    assert!(!msg.contains(token.secret()), "{msg}");
    assert!(msg.contains("login.plant.local"), "{msg}");
}

/// `tz_id` and `trans_id` are ASCII (a Microsoft time-zone ID, an ID MES
/// issued). Anything else is a mistake that must not reach MES as raw
/// bytes in a header (IIS reads them as Latin-1, MES would fall back to
/// another time zone or 404): a Config error naming the header, before a
/// byte is sent, never a panic.
#[tokio::test]
async fn header_values_that_are_not_plain_ascii_are_refused_before_sending() {
    let (_emu, aim) = emulator().await;
    let rec = Recorder::start(Rule::Accept).await;
    let mes = MesClient::new(format!("{}/mesmw/", rec.base), aim).unwrap();
    for (client, header) in [
        (mes.with_tz_id("Mitteleuropäische Zeit"), "tz_id"),
        (mes.with_tz_id("W. Europe\r\nStandard Time"), "tz_id"),
        (mes.with_tz_id(""), "tz_id"),
        (mes.with_trans_id("T\u{00a0}1"), "trans_id"),
        (mes.with_trans_id("T\u{7f}1"), "trans_id"),
        (mes.with_trans_id("  "), "trans_id"),
    ] {
        let err = client.entities().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{client:?}: {err}");
        assert!(err.to_string().contains(header), "{err}");
    }
    assert_eq!(rec.requests(), 0, "{:?}", rec.seen());
}

/// A MES (or something in front of it) that sends its headers at once and
/// then one byte of body a second, forever: the per-request timeout covers
/// the body too, and so does the default one. Nothing hangs.
#[tokio::test(start_paused = true)]
async fn a_body_that_trickles_forever_times_out() {
    let (_emu, aim) = attach_support::paused_emulator().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/mesmw/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = socket.read(&mut head).await;
                let start = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                             transfer-encoding: chunked\r\n\r\n2\r\n[ \r\n";
                if socket.write_all(start.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if socket.write_all(b"1\r\n \r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mes = MesClient::new(&base, aim).unwrap();
    for (client, bound) in [
        (
            mes.with_timeout(Duration::from_secs(5)),
            Duration::from_secs(5),
        ),
        (mes.clone(), Duration::from_secs(30)),
    ] {
        let started = tokio::time::Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(600), client.entities()).await;
        let err = outcome.expect("the call hung").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        let took = started.elapsed();
        assert!(
            took >= bound && took < bound + Duration::from_secs(2),
            "{took:?}"
        );
    }
}

/// IIS with Windows Authentication on the MES Web API's site answers 401
/// with `WWW-Authenticate: Negotiate` / `NTLM`; a 401 with `Bearer
/// error="insufficient_scope"` says the token is valid but lacks a scope.
/// A fresh token fixes neither: no token request, no retry, and the error
/// says what is actually wrong instead of "MES does not trust this AIM".
#[tokio::test]
async fn a_401_that_a_fresh_token_cannot_fix_is_not_renewed_and_says_why() {
    let (emu, aim) = emulator().await;
    aim.token().await.unwrap();
    for (rule, says) in [
        (Rule::WindowsAuthOnly, "Windows authentication"),
        (Rule::InsufficientScope, "insufficient_scope"),
    ] {
        let rec = Recorder::start(rule).await;
        let mes = MesClient::new(format!("{}/mesmw/", rec.base), aim.clone()).unwrap();
        let before = emu.token_requests();
        let err = mes.entities().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
        assert_eq!(err.status(), Some(401));
        assert!(err.to_string().contains(says), "{rule:?}: {err}");
        assert!(
            !err.to_string().contains("does not trust"),
            "{rule:?}: {err}"
        );
        assert_eq!(rec.requests(), 1, "{rule:?}: retried");
        assert_eq!(emu.token_requests(), before, "{rule:?}: a token request");
    }
    // A challenge that is the token itself never reaches the error.
    let rec = Recorder::start(Rule::EchoTokenAsChallenge).await;
    let mes = MesClient::new(format!("{}/mesmw/", rec.base), aim.clone()).unwrap();
    let token = aim.token().await.unwrap();
    let err = mes.entities().await.unwrap_err();
    assert!(!err.to_string().contains(token.secret()), "{err}");
    assert!(!format!("{err:?}").contains(token.secret()), "{err:?}");
    // Nor does it start the cool-down: a real token refusal still renews.
    let rec = Recorder::start(Rule::RejectFirstToken).await;
    let mes = MesClient::new(format!("{}/mesmw/", rec.base), aim).unwrap();
    mes.entities().await.unwrap();
    assert_eq!(rec.requests(), 2);
}

/// Given a reqwest client that follows redirects (against the advice of
/// `with_http_client`), a 401 from the host a redirect led to is not a
/// refusal of the token, which reqwest dropped on the way: no renewal.
#[tokio::test]
async fn a_401_after_a_redirect_elsewhere_does_not_renew_the_token() {
    let (emu, aim) = emulator().await;
    aim.token().await.unwrap();
    let server = Recorder::start(Rule::Redirect).await;
    let elsewhere = Recorder::start(Rule::Reject).await;
    server.redirect_to(&elsewhere.url("login"));
    let mes = MesClient::new(format!("{}/mesmw/", server.base), aim)
        .unwrap()
        .with_http_client(reqwest::Client::new());
    let err = mes.entities().await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(elsewhere.seen().iter().all(|s| s.authorization.is_empty()));
    assert_eq!(server.requests(), 1, "retried");
    assert_eq!(emu.token_requests(), 1, "renewed for another host's 401");
}

/// A sync wrapper's caller drops the transaction outside any runtime
/// context (the value came back from `block_on`) while the runtime it was
/// opened on still runs: the abort runs there, instead of the transaction
/// holding its job position until MES's timeout. Dropped after that
/// runtime is gone, nothing can run it; no panic either.
#[test]
fn a_transaction_dropped_outside_its_runtime_is_aborted_on_it() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (emu, mes) = dropped_outside_and_aborted(&runtime);
    let tx = runtime.block_on(async { mes.transaction().await.unwrap() });
    drop(runtime);
    drop(tx);
    drop(emu);
}

/// The same on a current-thread runtime that nobody drives when the
/// transaction is dropped (a sync wrapper between two `block_on`s): the
/// abort waits in its queue, runs with the next `block_on`, and a queued
/// abort that never runs goes with the runtime, without a panic.
#[test]
fn a_transaction_dropped_beside_an_idle_current_thread_runtime_is_aborted_when_it_runs() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (emu, mes) = dropped_outside_and_aborted(&runtime);
    let tx = runtime.block_on(async { mes.transaction().await.unwrap() });
    drop(tx);
    drop(runtime);
    drop(emu);
}

/// Opens a transaction on `runtime`, starts a job in it, drops it outside
/// the runtime, and checks that the next `block_on` sees it aborted.
fn dropped_outside_and_aborted(runtime: &tokio::runtime::Runtime) -> (AimEmulator, MesClient) {
    let (emu, mes, tx) = runtime.block_on(async {
        let (emu, mes) = mes().await;
        let job = mes.job("WO-1001", "Fill", 0).await.unwrap().on(4);
        let tx = mes.transaction().await.unwrap();
        tx.mes().start_job(&job).await.unwrap();
        (emu, mes, tx)
    });
    let before = emu.counters().mes;
    drop(tx);
    runtime.block_on(async {
        // Real time: generous, a loaded machine or Wine may take seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while emu.counters().mes == before && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(emu.counters().mes, before + 1, "no abort call");
        assert_eq!(
            mes.job("WO-1001", "Fill", 0).await.unwrap().state_cd,
            Some(JobState::Ready)
        );
    });
    (emu, mes)
}

/// A caller that gives a call 2 s gets its answer within 2 s even when AIM
/// hangs: the wait for a token is part of the call (the token request goes
/// on in the background, owned by the cache, for the next call).
#[tokio::test(start_paused = true)]
async fn the_timeout_bounds_the_wait_for_a_token_too() {
    let (emu, aim) = attach_support::paused_emulator().await;
    emu.inject(Endpoint::Token, Fault::Delay(Duration::from_secs(40)));
    let mes = MesClient::new(emu.mes_base(), aim).unwrap();
    let started = tokio::time::Instant::now();
    let answer = mes.with_timeout(Duration::from_secs(2)).entities().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}: {answer:?}");
    let err = answer.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("AIM"), "{err}");
    // The token request was not cancelled: a patient call gets its token.
    mes.entities().await.unwrap();
}

/// One MesClient outlives the runtime it was first used on (a static
/// client, a test harness, a plugin host restarting its runtime): the next
/// runtime's calls work, over new connections and with the cached token.
#[test]
fn a_client_outlives_the_runtime_it_was_first_used_on() {
    let server = tokio::runtime::Runtime::new().unwrap();
    let (emu, aim) = server.block_on(emulator());
    for round in 0..3 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mes = MesClient::new(emu.mes_base(), aim.clone()).unwrap();
        runtime.block_on(async {
            mes.entities().await.unwrap();
        });
        drop(runtime);
        // The same client, again on a new runtime.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let entities = mes.entities().await;
            assert!(entities.is_ok(), "round {round}: {entities:?}");
        });
    }
    assert_eq!(emu.token_requests(), 1);
    drop(emu);
}

/// MES (IIS's bearer handler) puts its reason in the challenge, not the
/// body: `Bearer error="invalid_token", error_description="The token
/// expired at ..."`, the clue to a clock that is off. The error shows it,
/// scrubbed of the token it quotes.
#[tokio::test]
async fn a_refusal_says_what_mes_stated_in_its_challenge() {
    let (_emu, aim) = emulator().await;
    let token = aim.token().await.unwrap();
    let rec = Recorder::start(Rule::RejectSayingWhy).await;
    let mes = MesClient::new(format!("{}/mesmw/", rec.base), aim).unwrap();
    let err = mes.entities().await.unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{msg}");
    assert!(msg.contains("invalid_token"), "{msg}");
    assert!(msg.contains("expired at '12/01/2026 09:00:00'"), "{msg}");
    assert!(!msg.contains(token.secret()), "{msg}");
    assert!(!format!("{err:?}").contains(token.secret()));
    assert_eq!(rec.requests(), 2, "a refused token is still renewed once");
}
