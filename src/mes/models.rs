//! The MES Web API V3 models the helpers use, in V3's snake_case. MES
//! returns the columns of its stored procedures, which differ between MES
//! versions: every model keeps the columns it does not name in `extra`, so
//! reading a row and sending it back (a PUT needs the whole model) loses
//! nothing.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// An MES entity (a site, area, line, machine ...), as `GET api/v3/entity`
/// returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Entity {
    /// The entity ID, assigned by MES.
    pub ent_id: i64,
    /// The entity name.
    #[serde(default)]
    pub ent_name: String,
    /// The description.
    #[serde(default)]
    pub description: Option<String>,
    /// The parent entity; `None` for a top-level entity (a site).
    #[serde(default)]
    pub parent_ent_id: Option<i64>,
    /// Every other column (`can_run_jobs`, `can_store`, ...), as MES sent it.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Entity {
    /// A boolean column such as `can_run_jobs`, read as MES writes
    /// booleans (`true`/`false` or `1`/`0`); `None` when absent or not a boolean.
    pub fn flag(&self, column: &str) -> Option<bool> {
        match self.extra.get(column)? {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => match n.as_i64()? {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            },
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
}

/// An MES job: one operation of a work order on an entity, the Job model
/// of `api/v3/Jobs/...`.
///
/// `ent_id`, `wo_id`, `oper_id`, `seq_no` and `run_ent_id` are required by
/// `Jobs/Start`, `Pause` and `End`. Send back the job you read (with
/// [`run_ent_id`](Self::run_ent_id) set): MES sets a model member that a PUT
/// leaves out to null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Job {
    /// The entity the job is scheduled to.
    pub ent_id: i64,
    /// The work order ID.
    pub wo_id: String,
    /// The operation ID.
    pub oper_id: String,
    /// The sequence number.
    pub seq_no: i64,
    /// The entity the job actually runs on.
    #[serde(default)]
    pub run_ent_id: Option<i64>,
    /// The job position on the entity while it runs.
    #[serde(default)]
    pub job_pos: Option<i64>,
    /// The job state.
    #[serde(default)]
    pub state_cd: Option<JobState>,
    /// Every other column, as MES sent it.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Job {
    /// A job model with its key and entity; the rest empty.
    pub fn new(
        ent_id: i64,
        wo_id: impl Into<String>,
        oper_id: impl Into<String>,
        seq_no: i64,
    ) -> Self {
        Job {
            ent_id,
            wo_id: wo_id.into(),
            oper_id: oper_id.into(),
            seq_no,
            run_ent_id: None,
            job_pos: None,
            state_cd: None,
            extra: Map::new(),
        }
    }

    /// The same job to run on `run_ent_id` (required by `Jobs/Start`).
    #[must_use]
    pub fn on(mut self, run_ent_id: i64) -> Self {
        self.run_ent_id = Some(run_ent_id);
        self
    }

    /// `WO/OPER/SEQ`, for messages.
    pub(crate) fn label(&self) -> String {
        format!("{}/{}/{}", self.wo_id, self.oper_id, self.seq_no)
    }
}

/// MES job states (`state_cd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// 1: scheduled, not ready (upstream work first).
    New,
    /// 2: ready to start.
    Ready,
    /// 3: running on an entity.
    Running,
    /// 4: finished.
    Complete,
    /// 5: paused, typically for a more important job.
    Suspended,
    /// 6: paused indefinitely (material or machine problems).
    OnHold,
    /// 7: stopped for good before completion.
    Canceled,
    /// A code this crate does not know.
    Other(i64),
}

impl JobState {
    /// The `state_cd` number.
    pub fn code(self) -> i64 {
        match self {
            JobState::New => 1,
            JobState::Ready => 2,
            JobState::Running => 3,
            JobState::Complete => 4,
            JobState::Suspended => 5,
            JobState::OnHold => 6,
            JobState::Canceled => 7,
            JobState::Other(code) => code,
        }
    }

    /// The state of a `state_cd` number.
    pub fn from_code(code: i64) -> Self {
        match code {
            1 => JobState::New,
            2 => JobState::Ready,
            3 => JobState::Running,
            4 => JobState::Complete,
            5 => JobState::Suspended,
            6 => JobState::OnHold,
            7 => JobState::Canceled,
            other => JobState::Other(other),
        }
    }
}

impl Serialize for JobState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.code())
    }
}

impl<'de> Deserialize<'de> for JobState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        i64::deserialize(deserializer).map(JobState::from_code)
    }
}

/// The answer of `POST api/v3/transaction` (MES's MesTransaction model).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TransactionModel {
    pub(crate) trans_id: String,
}

/// What a GET answers: MES returns the rows of a dataset as an array; a
/// single object is read as one row, and no content (204, or an empty or
/// `null` body) as no rows.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Rows<T> {
    None,
    Many(Vec<T>),
    One(T),
}

impl<T> Rows<T> {
    pub(crate) fn first(self) -> Option<T> {
        self.into_vec().into_iter().next()
    }

    pub(crate) fn into_vec(self) -> Vec<T> {
        match self {
            Rows::None => Vec::new(),
            Rows::Many(rows) => rows,
            Rows::One(row) => vec![row],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_columns_survive_a_round_trip() {
        let row = json!({
            "ent_id": 4, "ent_name": "Line1", "description": null, "parent_ent_id": 2,
            "can_run_jobs": 1, "can_store": "false", "site_specific": {"a": [1]}
        });
        let entity: Entity = serde_json::from_value(row.clone()).unwrap();
        assert_eq!(entity.flag("can_run_jobs"), Some(true));
        assert_eq!(entity.flag("can_store"), Some(false));
        assert_eq!(entity.flag("missing"), None);
        assert_eq!(serde_json::to_value(&entity).unwrap(), row);

        let row = json!({"ent_id": 4, "wo_id": "W", "oper_id": "O", "seq_no": 0,
            "run_ent_id": null, "job_pos": null, "state_cd": 9, "qty_reqd": 12.5});
        let job: Job = serde_json::from_value(row.clone()).unwrap();
        assert_eq!(job.state_cd, Some(JobState::Other(9)));
        assert_eq!(serde_json::to_value(&job).unwrap(), row);
    }

    #[test]
    fn rows_are_an_array_one_object_or_nothing() {
        let rows = |text: &str| {
            serde_json::from_str::<Rows<Value>>(text)
                .unwrap()
                .into_vec()
        };
        assert!(rows("null").is_empty());
        assert_eq!(rows("[1,2]").len(), 2);
        assert_eq!(rows(r#"{"ent_id":1}"#).len(), 1);
        assert!(serde_json::from_str::<Rows<Entity>>(r#""x""#).is_err());
    }

    #[test]
    fn states_have_mes_codes() {
        for code in 0..9 {
            assert_eq!(JobState::from_code(code).code(), code);
        }
        assert_eq!(JobState::from_code(3), JobState::Running);
    }
}
