//! `GET api/v3/Jobs/key` and `PUT api/v3/Jobs/Start|Pause|End` with the
//! Job model and MES's state rules (1 New, 2 Ready, 3 Running, 4 Complete,
//! 5 Suspended, 6 On Hold, 7 Canceled).

use axum::body::Body;
use axum::http::{Response, StatusCode};
use serde_json::{Map, Value};

use super::plant::{JobKey, Rows};
use super::transactions::Refusal as Stored;
use super::{bad_request, json_object, message, no_resource, no_transaction, rows, Call};

const NEW: i64 = 1;
const READY: i64 = 2;
const RUNNING: i64 = 3;
const COMPLETE: i64 = 4;
const SUSPENDED: i64 = 5;
const ON_HOLD: i64 = 6;
const CANCELED: i64 = 7;

/// The body of a 404 for a job that is not in the plant.
pub(crate) const NO_SUCH_JOB: &str = "The specified job does not exist";

/// What a `PUT api/v3/Jobs/...` does.
#[derive(Debug, Clone, Copy)]
pub(super) enum Action {
    Start,
    Pause,
    End,
}

/// `api/v3/Jobs/key?woId=..&operId=..&seqNo=..` (AVEVA's parameter names).
pub(super) fn by_key(call: &Call<'_>) -> Response<Body> {
    let (Some(wo), Some(oper), Some(seq)) = (
        call.param("woId"),
        call.param("operId"),
        call.param("seqNo"),
    ) else {
        return no_resource(call);
    };
    let Ok(seq_no) = seq.trim().parse::<i64>() else {
        return bad_request("The request is invalid: seqNo must be an integer.");
    };
    let key = JobKey {
        wo_id: wo.to_owned(),
        oper_id: oper.to_owned(),
        seq_no,
    };
    let tx = call.trans_id.as_deref();
    match call.st.mes.view(tx, call.st.now_millis(), |plant| {
        (plant.job(&key).cloned(), None)
    }) {
        Ok(Some(job)) => rows(vec![job], call.max_rows),
        Ok(None) => message(StatusCode::NOT_FOUND, NO_SUCH_JOB),
        // A read changes nothing, so no lock refuses it.
        Err(_) => no_transaction(tx.unwrap_or_default()),
    }
}

/// `PUT api/v3/Jobs/Start|Pause|End` with the Job model as the body.
pub(super) fn change(call: &Call<'_>, action: Action) -> Response<Body> {
    let body: &[u8] = if call.json_body { &call.body } else { b"" };
    let model = match model(body, action) {
        Ok(model) => model,
        Err(why) => return bad_request(&format!("The request is invalid: {why}")),
    };
    let tx = call.trans_id.as_deref();
    let outcome = call.st.mes.view(tx, call.st.now_millis(), |plant| {
        match apply(plant, &model, action) {
            Ok(job) => (Ok(job.clone()), Some(job)),
            Err(e) => (Err(e), None),
        }
    });
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(Stored::NoSuchTransaction) => return no_transaction(tx.unwrap_or_default()),
        // MES waits for the lock and, with the caller controlling the
        // transaction, passes the database's error on; the emulator does
        // not wait.
        Err(Stored::Locked) => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!(
                    "Job {} or its entity is locked by another open transaction \
                     (Lock request time out period exceeded).",
                    model.key
                ),
            )
        }
    };
    match outcome {
        Ok(job) => super::json_row(job),
        Err(Refused::NoJob) => message(StatusCode::NOT_FOUND, NO_SUCH_JOB),
        // Business-logic errors: MES passes its middleware's message on;
        // AVEVA does not name their status, the emulator answers 400.
        Err(Refused::Rule(why)) => bad_request(&why),
    }
}

/// The Job model of a request: lowercase keys (ASP.NET binds member names
/// case-insensitively), the required members present and typed: `wo_id`,
/// `oper_id`, `seq_no`, `run_ent_id`, and for Start also `ent_id`
/// (V3_Jobs_Pause and V3_Jobs_End identify the entity by `run_ent_id`).
struct Model {
    key: JobKey,
    ent_id: Option<i64>,
    run_ent_id: i64,
    fields: Map<String, Value>,
}

fn model(body: &[u8], action: Action) -> Result<Model, String> {
    let Some(fields) = json_object(body) else {
        return Err("the body must be a Job model (a JSON object).".into());
    };
    let fields: Map<String, Value> = fields
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let int = |name: &str| -> Result<i64, String> {
        match fields.get(name) {
            None | Some(Value::Null) => Err(format!("{name} is required.")),
            Some(Value::Number(n)) => n.as_i64().ok_or(format!("{name} must be an integer.")),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map_err(|_| format!("{name} must be an integer.")),
            Some(_) => Err(format!("{name} must be an integer.")),
        }
    };
    let text = |name: &str| -> Result<String, String> {
        match fields.get(name) {
            None | Some(Value::Null) => Err(format!("{name} is required.")),
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(format!("{name} must be a non-empty string.")),
        }
    };
    let ent_id = match action {
        Action::Start => Some(int("ent_id")?),
        Action::Pause | Action::End => int("ent_id").ok(),
    };
    Ok(Model {
        ent_id,
        key: JobKey {
            wo_id: text("wo_id")?,
            oper_id: text("oper_id")?,
            seq_no: int("seq_no")?,
        },
        run_ent_id: int("run_ent_id")?,
        fields,
    })
}

enum Refused {
    NoJob,
    Rule(String),
}

fn state_name(state: i64) -> &'static str {
    match state {
        NEW => "New",
        READY => "Ready",
        RUNNING => "Running",
        COMPLETE => "Complete",
        SUSPENDED => "Suspended",
        ON_HOLD => "On Hold",
        CANCELED => "Canceled",
        _ => "in an unknown state",
    }
}

fn apply(plant: &Rows, model: &Model, action: Action) -> Result<Map<String, Value>, Refused> {
    let stored = plant.job(&model.key).ok_or(Refused::NoJob)?;
    let state = stored.get("state_cd").and_then(Value::as_i64).unwrap_or(1);
    let key = &model.key;
    let refuse = |verb: &str| {
        Refused::Rule(format!(
            "Job {key} cannot be {verb}: it is {}.",
            state_name(state)
        ))
    };
    // A PUT carries the whole model: a column it leaves out becomes null.
    let mut job = Map::new();
    for column in stored.keys() {
        let value = model.fields.get(column).cloned().unwrap_or(Value::Null);
        job.insert(column.clone(), value);
    }
    for (column, value) in [
        ("wo_id", Value::from(key.wo_id.clone())),
        ("oper_id", Value::from(key.oper_id.clone())),
        ("seq_no", Value::from(key.seq_no)),
        ("run_ent_id", Value::from(model.run_ent_id)),
    ] {
        job.insert(column.into(), value);
    }
    // The scheduled entity stays what it was unless the model names one.
    let ent_id = model.ent_id.map(Value::from);
    job.insert(
        "ent_id".into(),
        ent_id.unwrap_or_else(|| stored.get("ent_id").cloned().unwrap_or(Value::Null)),
    );
    let runs_there = stored.get("run_ent_id").and_then(Value::as_i64) == Some(model.run_ent_id);
    let not_there = |verb: &str| {
        Refused::Rule(format!(
            "Job {key} cannot be {verb}: it is not running on entity {}.",
            model.run_ent_id
        ))
    };
    let new_state = match action {
        Action::Start => {
            if matches!(state, RUNNING | COMPLETE | CANCELED) {
                return Err(refuse("started"));
            }
            let position = job_position(plant, model)?;
            job.insert("job_pos".into(), Value::from(position));
            RUNNING
        }
        Action::Pause => {
            if state != RUNNING {
                return Err(refuse("paused"));
            }
            if !runs_there {
                return Err(not_there("paused"));
            }
            job.insert(
                "job_pos".into(),
                stored.get("job_pos").cloned().unwrap_or(Value::Null),
            );
            // 5 or 6; 3 means 5; 1 or 2 undoes a start made by mistake.
            match model.fields.get("state_cd").and_then(Value::as_i64) {
                Some(s @ (NEW | READY | ON_HOLD)) => s,
                _ => SUSPENDED,
            }
        }
        Action::End => {
            // V3_Jobs_End: Running, Suspended or On Hold.
            if !matches!(state, RUNNING | SUSPENDED | ON_HOLD) {
                return Err(refuse("ended"));
            }
            if !runs_there {
                return Err(not_there("ended"));
            }
            job.insert("job_pos".into(), Value::Null);
            COMPLETE
        }
    };
    job.insert("state_cd".into(), Value::from(new_state));
    Ok(job)
}

/// The job position for a start: the job must be scheduled to the supplied
/// entity, which must run jobs and (one position per entity here) not be
/// running another job.
fn job_position(plant: &Rows, model: &Model) -> Result<i64, Refused> {
    let no_position = |why: &str| {
        Refused::Rule(format!(
            "Job {} cannot be started on entity {}: {why} (job_pos -1).",
            model.key, model.run_ent_id
        ))
    };
    let scheduled_to = plant
        .job(&model.key)
        .and_then(|j| j.get("ent_id"))
        .and_then(Value::as_i64);
    if scheduled_to != model.ent_id {
        return Err(no_position("the job is not scheduled to that entity"));
    }
    let runs_jobs = plant.entity(model.run_ent_id).map(|e| {
        e.get("can_run_jobs")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    });
    match runs_jobs {
        None => return Err(no_position("no such entity")),
        Some(false) => return Err(no_position("the entity cannot run jobs")),
        Some(true) => {}
    }
    let busy = plant.jobs.iter().any(|j| {
        j.get("state_cd").and_then(Value::as_i64) == Some(RUNNING)
            && j.get("run_ent_id").and_then(Value::as_i64) == Some(model.run_ent_id)
    });
    if busy {
        return Err(no_position("another job is running there"));
    }
    Ok(model
        .fields
        .get("job_pos")
        .and_then(Value::as_i64)
        .filter(|p| *p >= 0)
        .unwrap_or(0))
}
