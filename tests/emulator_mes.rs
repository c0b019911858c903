//! The contract of the emulator's MES Web API V3, over raw HTTP: every
//! documented route, verb and status, table-driven, with the paths in the
//! case MES ignores.

use std::sync::Arc;
use std::time::Duration;

use aim_token::emulator::{AimEmulator, MesPlant};
use aim_token::TokioClock;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn token(aim: &AimEmulator) -> String {
    let body: Value = http()
        .post(aim.token_endpoint())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", AimEmulator::CLIENT_ID),
            ("client_secret", AimEmulator::CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// One call: method, path under `/mesmw/`, headers, JSON body.
struct Call<'a> {
    method: Method,
    path: &'a str,
    headers: Vec<(&'a str, String)>,
    body: Option<Value>,
}

fn call(method: Method, path: &str) -> Call<'_> {
    Call {
        method,
        path,
        headers: Vec::new(),
        body: None,
    }
}

impl<'a> Call<'a> {
    fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

async fn send(aim: &AimEmulator, jwt: Option<&str>, c: &Call<'_>) -> (StatusCode, String) {
    let url = format!("{}{}", aim.mes_base(), c.path);
    let mut req = http().request(c.method.clone(), url);
    if let Some(jwt) = jwt {
        req = req.bearer_auth(jwt);
    }
    for (name, value) in &c.headers {
        req = req.header(*name, value);
    }
    if let Some(body) = &c.body {
        req = req.json(body);
    } else if matches!(c.method, Method::POST | Method::PUT) {
        // What MesClient sends, and HTTP.sys requires (see below).
        req = req.header(reqwest::header::CONTENT_LENGTH, "0");
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

fn fill_job() -> Value {
    json!({"ent_id": 4, "wo_id": "WO-1001", "oper_id": "Fill", "seq_no": 0,
           "run_ent_id": 4, "job_pos": null, "state_cd": 2})
}

fn job_without(member: &str) -> Value {
    let mut job = fill_job();
    job.as_object_mut().unwrap().remove(member);
    job
}

#[tokio::test]
async fn every_documented_route_verb_and_status() {
    let aim = AimEmulator::start().await.unwrap();
    let jwt = token(&aim).await;
    use Method as M;
    let no_resource = "No HTTP resource was found";
    let cases: Vec<(Call<'_>, u16, &str)> = vec![
        // Entities: all, key, filter, name; endpoint names in any case.
        (call(M::GET, "api/v3/entity"), 200, r#""ent_name":"Line1""#),
        (call(M::GET, "API/V3/ENTITY"), 200, r#""ent_name":"Plant1""#),
        (call(M::GET, "api/v3/Entity/"), 200, r#""ent_id":1"#),
        (
            call(M::GET, "api/v3/entity/key?entId=4"),
            200,
            r#""ent_name":"Line1""#,
        ),
        (
            call(M::GET, "api/v3/Entity/Key?ENTID=4"),
            200,
            r#""parent_ent_id":2"#,
        ),
        (
            call(M::GET, "api/v3/entity/key?entId=99"),
            404,
            "The specified entity does not exist",
        ),
        (call(M::GET, "api/v3/entity/key"), 404, no_resource),
        (call(M::GET, "api/v3/entity/key?entId=four"), 400, "entId"),
        (
            call(M::GET, "api/v3/entity/filter?parent_ent_id=2"),
            200,
            r#""ent_name":"Line2""#,
        ),
        (
            call(M::GET, "api/v3/entity/filter?canRunJobs=0"),
            200,
            r#""ent_name":"Packaging""#,
        ),
        (
            call(M::GET, "api/v3/entity/filter?can_run_jobs=maybe"),
            400,
            "wrong type",
        ),
        (
            call(M::GET, "api/v3/entity/name?entName=Line1&siteName=Plant1"),
            200,
            r#"[{"ent_id":4}]"#,
        ),
        (
            call(M::GET, "api/v3/entity/name?entName=Line1&siteName"),
            200,
            r#"[{"ent_id":4}]"#,
        ),
        (
            call(M::GET, "api/v3/entity/name?entName=Line1"),
            404,
            no_resource,
        ),
        (
            call(M::GET, "api/v3/entity/name?entName=Line9&siteName="),
            404,
            "does not exist",
        ),
        (
            call(M::GET, "api/v3/entity?max_rows=2"),
            200,
            r#""ent_id":2"#,
        ),
        (call(M::GET, "api/v3/entity?max_rows=lots"), 400, "max_rows"),
        // Jobs by key, with AVEVA's parameter names.
        (
            call(M::GET, "api/v3/Jobs/key?woId=WO-1001&operId=Fill&seqNo=0"),
            200,
            r#""state_cd":2"#,
        ),
        (
            call(M::GET, "api/v3/jobs/KEY?woid=WO-1001&operid=Mix&seqno=0"),
            200,
            r#""ent_id":6"#,
        ),
        (
            call(M::GET, "api/v3/Jobs/key?woId=WO-1001&operId=Fill"),
            404,
            no_resource,
        ),
        (
            call(M::GET, "api/v3/Jobs/key?woId=WO-1001&operId=Fill&seqNo=x"),
            400,
            "seqNo",
        ),
        (
            call(M::GET, "api/v3/Jobs/key?woId=WO-9&operId=Fill&seqNo=0"),
            404,
            "The specified job does not exist",
        ),
        // Job model: every required member, the types.
        (
            call(M::PUT, "api/v3/Jobs/Start").json(job_without("ent_id")),
            400,
            "ent_id is required",
        ),
        (
            call(M::PUT, "api/v3/Jobs/Start").json(job_without("wo_id")),
            400,
            "wo_id is required",
        ),
        (
            call(M::PUT, "api/v3/Jobs/Start").json(job_without("oper_id")),
            400,
            "oper_id is required",
        ),
        (
            call(M::PUT, "api/v3/Jobs/Start").json(job_without("seq_no")),
            400,
            "seq_no is required",
        ),
        (
            call(M::PUT, "api/v3/Jobs/Start").json(job_without("run_ent_id")),
            400,
            "run_ent_id is required",
        ),
        (
            call(M::PUT, "api/v3/Jobs/Start").json(json!([1])),
            400,
            "Job model",
        ),
        (
            call(M::PUT, "api/v3/Jobs/Pause").json(fill_job()),
            400,
            "cannot be paused: it is Ready",
        ),
        (
            call(M::PUT, "api/v3/Jobs/End").json(fill_job()),
            400,
            "cannot be ended: it is Ready",
        ),
        // Wrong verbs.
        (
            call(M::POST, "api/v3/entity"),
            405,
            "does not support http method 'POST'",
        ),
        (call(M::GET, "api/v3/Jobs/Start"), 405, "'GET'"),
        (call(M::DELETE, "api/v3/transaction"), 405, "'DELETE'"),
        // Unknown endpoints, V1 included (not emulated).
        (call(M::GET, "api/v3/NoSuchThing"), 404, "NoSuchThing"),
        (call(M::GET, "api/Entity"), 404, no_resource),
        // Transactions.
        (
            call(M::PUT, "api/v3/transaction?action=commit"),
            404,
            no_resource,
        ),
        (
            call(M::PUT, "api/v3/transaction?action=commit").header("trans_id", "nope"),
            404,
            "doesn't exist",
        ),
        (
            call(M::GET, "api/v3/entity").header("trans_id", "nope"),
            404,
            "The transaction ID 'nope' doesn't exist",
        ),
        (
            call(M::GET, "api/v3/entity?trans_id=nope"),
            404,
            "timed out or was not started",
        ),
    ];
    for (c, status, needle) in &cases {
        let (got, body) = send(&aim, Some(&jwt), c).await;
        assert_eq!(got.as_u16(), *status, "{} {}: {body}", c.method, c.path);
        assert!(body.contains(needle), "{} {}: {body}", c.method, c.path);
        if *status >= 400 {
            let parsed: Value = serde_json::from_str(&body).unwrap();
            assert!(parsed["Message"].is_string(), "ASP.NET shape: {body}");
        }
    }
    // max_rows in the header, as documented beside trans_id.
    let (_, body) = send(
        &aim,
        Some(&jwt),
        &call(M::GET, "api/v3/entity").header("max_rows", "3"),
    )
    .await;
    assert_eq!(serde_json::from_str::<Vec<Value>>(&body).unwrap().len(), 3);
    let (_, body) = send(&aim, Some(&jwt), &call(M::GET, "api/v3/entity?max_rows=2")).await;
    assert_eq!(serde_json::from_str::<Vec<Value>>(&body).unwrap().len(), 2);
    // Nothing changed: every job as seeded.
    assert_eq!(aim.mes_plant(), MesPlant::seeded());
}

#[tokio::test]
async fn tokens_are_checked_first_and_paths_outside_the_api_are_plain_404s() {
    let aim = AimEmulator::start().await.unwrap();
    for path in ["api/v3/entity", "api/v3/NoSuchThing", "API/v3/Jobs/Start"] {
        let (status, _) = send(&aim, None, &call(Method::GET, path)).await;
        assert_eq!(status, 401, "{path}");
        let (status, _) = send(&aim, Some("not-a-jwt"), &call(Method::GET, path)).await;
        assert_eq!(status, 401, "{path}");
    }
    // Outside the MES Web API: a plain 404, no token asked, no MES body.
    for url in [
        format!("{}favicon.ico", aim.mes_base()),
        format!("{}/nothing/here", aim.base_url()),
        format!("{}/identitymanager/nothing", aim.base_url()),
    ] {
        let resp = http().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{url}");
        assert!(resp.headers().get("www-authenticate").is_none(), "{url}");
        assert!(!resp.text().await.unwrap().contains("Message"), "{url}");
    }
}

#[tokio::test]
async fn job_lifecycle_follows_the_state_rules() {
    let aim = AimEmulator::start().await.unwrap();
    let jwt = token(&aim).await;
    let put = |endpoint: &'static str, body: Value| {
        let jwt = jwt.clone();
        let aim = &aim;
        async move {
            let c = call(Method::PUT, endpoint).json(body);
            send(aim, Some(&jwt), &c).await
        }
    };
    let (status, body) = put("api/v3/jobs/start", fill_job()).await;
    assert_eq!(status, 200, "{body}");
    let running: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (running["state_cd"].clone(), running["job_pos"].clone()),
        (json!(3), json!(0))
    );

    let (status, body) = put("api/v3/Jobs/Start", fill_job()).await;
    assert_eq!(status, 400);
    assert!(body.contains("cannot be started: it is Running"), "{body}");

    // Another job on the same line: no free job position.
    let mut other = MesPlant::seeded().jobs()[2].clone();
    other["ent_id"] = json!(5);
    other["run_ent_id"] = json!(4);
    let (status, body) = put("api/v3/Jobs/Start", other).await;
    assert_eq!(status, 400);
    assert!(body.contains("job_pos -1"), "{body}");

    let (status, body) = put("api/v3/Jobs/Pause", running.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""state_cd":5"#), "{body}");
    let (status, body) = put("api/v3/Jobs/End", running.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""state_cd":4"#), "{body}");
    let (status, body) = put("api/v3/Jobs/Start", fill_job()).await;
    assert_eq!(status, 400);
    assert!(body.contains("it is Complete"), "{body}");
}

#[tokio::test]
async fn a_put_needs_the_whole_model() {
    // A column the body leaves out becomes null, as at MES.
    let plant = MesPlant::new()
        .entity(json!({"ent_id": 1, "ent_name": "Line", "can_run_jobs": true}))
        .job(
            json!({"wo_id": "W", "oper_id": "O", "seq_no": 1, "ent_id": 1, "state_cd": 2,
                    "status_notes": "keep me"}),
        );
    let aim = AimEmulator::builder()
        .mes_plant(plant)
        .start()
        .await
        .unwrap();
    let jwt = token(&aim).await;
    let model = json!({"wo_id": "W", "oper_id": "O", "seq_no": 1, "ent_id": 1, "run_ent_id": 1});
    let (status, body) = send(
        &aim,
        Some(&jwt),
        &call(Method::PUT, "api/v3/Jobs/Start").json(model),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let job: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(job["status_notes"], Value::Null);
    let (_, body) = send(&aim, Some(&jwt), &call(Method::GET, "api/v3/entity")).await;
    assert_eq!(
        body,
        r#"[{"can_run_jobs":true,"ent_id":1,"ent_name":"Line"}]"#
    );
}

#[tokio::test(start_paused = true)]
async fn transactions_commit_abort_and_time_out() {
    let clock = Arc::new(TokioClock::new());
    let aim = AimEmulator::builder()
        .clock(clock.clone())
        .token_lifetime(Duration::from_secs(24 * 3600))
        .mes_transaction_timeout(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let jwt = token(&aim).await;
    let (aim, jwt) = (&aim, jwt.as_str());
    // Aborted: the start is dropped.
    let t = begin(aim, jwt).await;
    assert_eq!(start_in(aim, jwt, &t).await.0, 200);
    assert_eq!(state(aim, jwt, Some(&t)).await, 3, "seen inside");
    assert_eq!(state(aim, jwt, None).await, 2, "not seen outside");
    assert_eq!(end(aim, jwt, &t, "abort").await.0, 204);
    assert_eq!(state(aim, jwt, None).await, 2);
    assert_eq!(end(aim, jwt, &t, "commit").await.0, 404, "ended is gone");

    // Timed out (by the emulator's clock): dropped, and its ID is unknown.
    let t = begin(aim, jwt).await;
    assert_eq!(start_in(aim, jwt, &t).await.0, 200);
    clock.jump(Duration::from_secs(61));
    let (status, body) = start_in(aim, jwt, &t).await;
    assert_eq!(status, 404);
    assert!(body.contains("doesn't exist"), "{body}");
    assert_eq!(end(aim, jwt, &t, "commit").await.0, 404);
    assert_eq!(state(aim, jwt, None).await, 2);

    // Expired by the knob.
    let t = begin(aim, jwt).await;
    aim.expire_mes_transactions();
    assert_eq!(end(aim, jwt, &t, "commit").await.0, 404);

    // Committed: now everyone's.
    let t = begin(aim, jwt).await;
    assert_eq!(start_in(aim, jwt, &t).await.0, 200);
    assert_eq!(end(aim, jwt, &t, "COMMIT").await.0, 204);
    assert_eq!(state(aim, jwt, None).await, 3);
}

/// V3_Transaction_Put: `commit` commits; "any string entry other than
/// commit (e.g., rollback or cancel)" rolls back, and the trans_id may
/// come as a URL parameter instead of the header.
#[tokio::test]
async fn any_action_but_commit_rolls_back() {
    let aim = AimEmulator::start().await.unwrap();
    let jwt = token(&aim).await;
    let (aim, jwt) = (&aim, jwt.as_str());
    for action in ["rollback", "cancel", "abort", "bogus"] {
        let t = begin(aim, jwt).await;
        assert_eq!(start_in(aim, jwt, &t).await.0, 200);
        let (status, body) = end(aim, jwt, &t, action).await;
        assert_eq!(status, 204, "{action}: {body}");
        assert_eq!(state(aim, jwt, None).await, 2, "{action} rolled back");
        assert_eq!(end(aim, jwt, &t, "commit").await.0, 404, "{action}: gone");
    }
    let t = begin(aim, jwt).await;
    assert_eq!(start_in(aim, jwt, &t).await.0, 200);
    let path = format!("api/v3/transaction?action=commit&trans_id={t}");
    let (status, body) = send(aim, Some(jwt), &call(Method::PUT, &path)).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(state(aim, jwt, None).await, 3);
}

/// V3_Jobs_End: "the specified job must be in the Running, Suspended, or On
/// Hold state"; V3_Jobs_Pause: `state_cd` 5 or 6.
#[tokio::test]
async fn a_job_on_hold_can_be_ended() {
    let aim = AimEmulator::start().await.unwrap();
    let jwt = token(&aim).await;
    let put = |endpoint: &'static str, body: Value| {
        let c = call(Method::PUT, endpoint).json(body);
        let (aim, jwt) = (&aim, jwt.clone());
        async move { send(aim, Some(&jwt), &c).await }
    };
    let (status, body) = put("api/v3/Jobs/Start", fill_job()).await;
    assert_eq!(status, 200, "{body}");
    let mut running: Value = serde_json::from_str(&body).unwrap();
    running["state_cd"] = json!(6);
    let (status, body) = put("api/v3/Jobs/Pause", running.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""state_cd":6"#), "{body}");
    let (status, body) = put("api/v3/Jobs/End", running).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""state_cd":4"#), "{body}");
}

async fn begin(aim: &AimEmulator, jwt: &str) -> String {
    let (status, body) = send(aim, Some(jwt), &call(Method::POST, "API/v3/Transaction")).await;
    assert_eq!(status, 200, "{body}");
    let model: Value = serde_json::from_str(&body).unwrap();
    assert!(model["trans_start_utc"].as_str().unwrap().ends_with('Z'));
    model["trans_id"].as_str().unwrap().to_owned()
}

async fn state(aim: &AimEmulator, jwt: &str, tx: Option<&str>) -> Value {
    let mut c = call(
        Method::GET,
        "api/v3/Jobs/key?woId=WO-1001&operId=Fill&seqNo=0",
    );
    if let Some(tx) = tx {
        c = c.header("trans_id", tx);
    }
    let (status, body) = send(aim, Some(jwt), &c).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()[0]["state_cd"].clone()
}

async fn start_in(aim: &AimEmulator, jwt: &str, tx: &str) -> (StatusCode, String) {
    let c = call(Method::PUT, "api/v3/Jobs/Start")
        .header("trans_id", tx)
        .json(fill_job());
    send(aim, Some(jwt), &c).await
}

async fn end(aim: &AimEmulator, jwt: &str, tx: &str, action: &str) -> (StatusCode, String) {
    let path = format!("api/v3/transaction?action={action}");
    let c = call(Method::PUT, &path).header("trans_id", tx);
    send(aim, Some(jwt), &c).await
}

#[tokio::test]
async fn knobs_revoke_a_privilege_and_take_aim_away() {
    let aim = AimEmulator::start().await.unwrap();
    let jwt = token(&aim).await;
    aim.revoke_mes_privilege("Jobs/Start");
    let (status, body) = send(
        &aim,
        Some(&jwt),
        &call(Method::PUT, "api/v3/JOBS/START").json(fill_job()),
    )
    .await;
    assert_eq!(status, 404);
    assert!(body.contains("You do not have the appropriate privileges to access this entity"));
    let (status, _) = send(&aim, Some(&jwt), &call(Method::GET, "api/v3/entity")).await;
    assert_eq!(status, 200, "other endpoints keep their privilege");
    aim.restore_mes_privileges();
    let (status, _) = send(
        &aim,
        Some(&jwt),
        &call(Method::PUT, "api/v3/Jobs/Start").json(fill_job()),
    )
    .await;
    assert_eq!(status, 200);

    aim.set_mes_forbidden(true);
    let (status, body) = send(&aim, Some(&jwt), &call(Method::GET, "api/v3/entity")).await;
    assert_eq!(status, 403);
    assert!(body.contains("permission"), "{body}");
    aim.set_mes_forbidden(false);

    aim.set_mes_aim_offline(true);
    for jwt in [Some(jwt.as_str()), None] {
        let (status, body) = send(&aim, jwt, &call(Method::GET, "api/v3/entity")).await;
        assert_eq!(status, 500);
        assert!(
            body.contains("token cannot be obtained or verified"),
            "{body}"
        );
    }
    aim.set_mes_aim_offline(false);
    let (status, _) = send(&aim, Some(&jwt), &call(Method::GET, "api/v3/entity")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_plant_with_bad_rows_does_not_start() {
    let err = AimEmulator::builder()
        .mes_plant(MesPlant::new().job(json!({"wo_id": "W"})))
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), aim_token::ErrorKind::Config);
    assert!(err.to_string().contains("job row #1"), "{err}");
}

/// Two open transactions, each starting a job on Line1 (one job position):
/// each sees only the committed rows, so without locks both starts pass and
/// both commits leave two jobs running on one position. MES's database
/// holds the first one's locks until it ends; the emulator refuses the
/// second writer at once (500, MES passes the database's error on when the
/// caller controls the transaction).
#[tokio::test]
async fn concurrent_transactions_cannot_both_take_one_job_position() {
    let aim = AimEmulator::start().await.unwrap();
    let jwt = token(&aim).await;
    let (aim, jwt) = (&aim, jwt.as_str());
    let a = begin(aim, jwt).await;
    let b = begin(aim, jwt).await;
    assert_eq!(start_in(aim, jwt, &a).await.0, 200);
    // The same job, and another job on the same entity, from b and from
    // a call outside any transaction.
    let mut pack = MesPlant::seeded().jobs()[2].clone();
    pack["ent_id"] = json!(5);
    pack["run_ent_id"] = json!(4);
    let same = call(Method::PUT, "api/v3/Jobs/Start").json(fill_job());
    let other = call(Method::PUT, "api/v3/Jobs/Start").json(pack);
    for c in [
        same.header("trans_id", b.clone()),
        other.header("trans_id", b.clone()),
    ] {
        let (status, body) = send(aim, Some(jwt), &c).await;
        assert_eq!(status, 500, "{body}");
        assert!(body.contains("locked"), "{body}");
    }
    let (status, body) = send(
        aim,
        Some(jwt),
        &call(Method::PUT, "api/v3/Jobs/Start").json(fill_job()),
    )
    .await;
    assert_eq!(status, 500, "outside any transaction too: {body}");
    assert_eq!(end(aim, jwt, &b, "commit").await.0, 204);
    assert_eq!(end(aim, jwt, &a, "commit").await.0, 204);
    assert_eq!(state(aim, jwt, None).await, 3);
    // Once a has ended, its rows are free again: Fill is Running now, so a
    // new start is refused by the rules (400), not by a lock.
    let c = begin(aim, jwt).await;
    assert_eq!(start_in(aim, jwt, &c).await.0, 400);
}

/// V3_Jobs_Pause and V3_Jobs_End identify the entity by `run_ent_id` (no
/// `ent_id` needed) and need the job running there; Pause with `state_cd`
/// 1 or 2 puts a job started by mistake back to New or Ready.
#[tokio::test]
async fn pause_and_end_go_by_the_run_entity() {
    let aim = AimEmulator::start().await.unwrap();
    let jwt = token(&aim).await;
    let put = |endpoint: &'static str, body: Value| {
        let c = call(Method::PUT, endpoint).json(body);
        let (aim, jwt) = (&aim, jwt.clone());
        async move { send(aim, Some(&jwt), &c).await }
    };
    let (status, body) = put("api/v3/Jobs/Start", fill_job()).await;
    assert_eq!(status, 200, "{body}");
    let mut elsewhere = job_without("ent_id");
    elsewhere["run_ent_id"] = json!(5);
    let (status, body) = put("api/v3/Jobs/Pause", elsewhere).await;
    assert_eq!(status, 400, "not running on entity 5: {body}");
    let mut back = job_without("ent_id");
    back["state_cd"] = json!(2);
    let (status, body) = put("api/v3/Jobs/Pause", back).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""state_cd":2"#), "back to Ready: {body}");
    assert_eq!(put("api/v3/Jobs/Start", fill_job()).await.0, 200);
    let (status, body) = put("api/v3/Jobs/End", job_without("ent_id")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""state_cd":4"#), "{body}");
}

/// HTTP.sys (IIS) refuses a POST or PUT that declares no length with its
/// own 411 page, before MES sees it; hyper sends none for an empty body.
#[tokio::test]
async fn a_post_or_put_without_a_length_is_refused_as_http_sys_does() {
    let aim = AimEmulator::start().await.unwrap();
    let jwt = token(&aim).await;
    for (method, path) in [
        (Method::POST, "api/v3/transaction"),
        (Method::PUT, "api/v3/transaction?action=commit"),
    ] {
        let resp = http()
            .request(method.clone(), format!("{}{path}", aim.mes_base()))
            .bearer_auth(&jwt)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::LENGTH_REQUIRED, "{method}");
        assert!(resp.text().await.unwrap().contains("HTTP Error 411"));
    }
    let (status, _) = send(&aim, Some(&jwt), &call(Method::POST, "api/v3/transaction")).await;
    assert_eq!(status, StatusCode::OK);
    // GETs need no length.
    let (status, _) = send(&aim, Some(&jwt), &call(Method::GET, "api/v3/entity")).await;
    assert_eq!(status, StatusCode::OK);
}
