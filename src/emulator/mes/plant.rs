//! The plant the emulator's MES serves: entities and jobs as MES V3 returns
//! them (the stored procedures' columns, snake_case), seeded with a small
//! site or replaced by the user's own.

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// The entities and jobs the emulator's MES serves ([`AimEmulatorBuilder::mes_plant`](super::super::AimEmulatorBuilder::mes_plant)).
///
/// Rows are JSON objects with MES V3's column names: an entity needs an
/// integer `ent_id` and a string `ent_name` (optional `description`,
/// `parent_ent_id`, `can_run_jobs`, and any other column you want served);
/// a job needs `wo_id`, `oper_id`, an integer `seq_no` and an integer
/// `ent_id` (optional `run_ent_id`, `job_pos`, `state_cd`, default 1 = New).
/// Rows are checked when the emulator starts.
///
/// ```
/// use aim_token::emulator::MesPlant;
/// use serde_json::json;
///
/// let plant = MesPlant::new()
///     .entity(json!({"ent_id": 1, "ent_name": "Site1", "parent_ent_id": null}))
///     .entity(json!({"ent_id": 2, "ent_name": "Mixer", "parent_ent_id": 1, "can_run_jobs": true}))
///     .job(json!({"wo_id": "WO-7", "oper_id": "Mix", "seq_no": 0, "ent_id": 2, "state_cd": 2}));
/// assert_eq!(plant.entities().len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MesPlant {
    entities: Vec<Value>,
    jobs: Vec<Value>,
}

impl MesPlant {
    /// An empty plant.
    pub fn new() -> Self {
        MesPlant::default()
    }

    /// The emulator's default plant: site `Plant1` (1) with the areas
    /// `Packaging` (2) and `Processing` (3), the lines `Line1` (4) and
    /// `Line2` (5) in Packaging and `Mixer1` (6) in Processing, and work
    /// order `WO-1001` with the operations `Mix` (job on Mixer1, Ready),
    /// `Fill` (Line1, Ready) and `Pack` (Line2, New).
    pub fn seeded() -> Self {
        let entity = |id: i64, name: &str, desc: &str, parent: Option<i64>, runs: bool| {
            json!({
                "ent_id": id,
                "ent_name": name,
                "description": desc,
                "parent_ent_id": parent,
                "preferred_parent": parent.is_some(),
                "can_sched_jobs": runs,
                "can_run_jobs": runs,
                "can_capture_util": runs,
                "can_capture_labor": runs,
                "can_track_oee": runs,
                "can_sched_shifts": parent.is_none(),
                "can_store": false,
                "can_log_data": runs,
                "can_ship": false,
                "can_receive": false,
            })
        };
        let job = |oper: &str, ent: i64, state: i64| {
            json!({
                "wo_id": "WO-1001",
                "oper_id": oper,
                "seq_no": 0,
                "ent_id": ent,
                "run_ent_id": null,
                "job_pos": null,
                "state_cd": state,
            })
        };
        MesPlant::new()
            .entity(entity(1, "Plant1", "Plant site", None, false))
            .entity(entity(2, "Packaging", "Packaging area", Some(1), false))
            .entity(entity(3, "Processing", "Processing area", Some(1), false))
            .entity(entity(4, "Line1", "Bottling line 1", Some(2), true))
            .entity(entity(5, "Line2", "Bottling line 2", Some(2), true))
            .entity(entity(6, "Mixer1", "Syrup mixer", Some(3), true))
            .job(job("Mix", 6, 2))
            .job(job("Fill", 4, 2))
            .job(job("Pack", 5, 1))
    }

    /// Adds an entity row.
    #[must_use]
    pub fn entity(mut self, row: Value) -> Self {
        self.entities.push(row);
        self
    }

    /// Adds a job row.
    #[must_use]
    pub fn job(mut self, row: Value) -> Self {
        self.jobs.push(row);
        self
    }

    /// The entity rows.
    pub fn entities(&self) -> &[Value] {
        &self.entities
    }

    /// The job rows.
    pub fn jobs(&self) -> &[Value] {
        &self.jobs
    }

    /// The rows as objects, or a configuration error naming the bad row.
    pub(crate) fn checked(self) -> Result<Rows> {
        let bad = |what: &str, i: usize, why: &str| {
            Error::config(format!("emulator MES plant: {what} row #{} {why}", i + 1))
        };
        let mut entities = Vec::new();
        for (i, row) in self.entities.into_iter().enumerate() {
            let Value::Object(row) = row else {
                return Err(bad("entity", i, "is not a JSON object"));
            };
            if row.get("ent_id").and_then(Value::as_i64).is_none() {
                return Err(bad("entity", i, "needs an integer ent_id"));
            }
            if row.get("ent_name").and_then(Value::as_str).is_none() {
                return Err(bad("entity", i, "needs a string ent_name"));
            }
            entities.push(row);
        }
        let mut jobs = Vec::new();
        for (i, row) in self.jobs.into_iter().enumerate() {
            let Value::Object(mut row) = row else {
                return Err(bad("job", i, "is not a JSON object"));
            };
            if JobKey::of(&row).is_none() {
                return Err(bad(
                    "job",
                    i,
                    "needs string wo_id and oper_id and an integer seq_no",
                ));
            }
            if row.get("ent_id").and_then(Value::as_i64).is_none() {
                return Err(bad("job", i, "needs an integer ent_id"));
            }
            for column in ["run_ent_id", "job_pos"] {
                row.entry(column).or_insert(Value::Null);
            }
            row.entry("state_cd").or_insert(Value::from(1));
            jobs.push(row);
        }
        Ok(Rows { entities, jobs })
    }
}

/// A checked plant: rows as JSON objects.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rows {
    pub(crate) entities: Vec<Map<String, Value>>,
    pub(crate) jobs: Vec<Map<String, Value>>,
}

/// What identifies a job: work order, operation, sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct JobKey {
    pub(crate) wo_id: String,
    pub(crate) oper_id: String,
    pub(crate) seq_no: i64,
}

impl JobKey {
    pub(crate) fn of(row: &Map<String, Value>) -> Option<JobKey> {
        Some(JobKey {
            wo_id: row.get("wo_id")?.as_str()?.to_owned(),
            oper_id: row.get("oper_id")?.as_str()?.to_owned(),
            seq_no: row.get("seq_no")?.as_i64()?,
        })
    }
}

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.wo_id, self.oper_id, self.seq_no)
    }
}

impl Rows {
    pub(crate) fn entity(&self, ent_id: i64) -> Option<&Map<String, Value>> {
        self.entities
            .iter()
            .find(|e| e.get("ent_id").and_then(Value::as_i64) == Some(ent_id))
    }

    pub(crate) fn job(&self, key: &JobKey) -> Option<&Map<String, Value>> {
        self.jobs
            .iter()
            .find(|j| JobKey::of(j).as_ref() == Some(key))
    }

    /// The top-level entity above `ent_id` (its site), following parents.
    pub(crate) fn site_of(&self, ent_id: i64) -> Option<&Map<String, Value>> {
        let mut current = self.entity(ent_id)?;
        // Bounded: a parent cycle in user data must not hang the server.
        for _ in 0..self.entities.len() {
            match current.get("parent_ent_id").and_then(Value::as_i64) {
                Some(parent) => current = self.entity(parent)?,
                None => return Some(current),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_plant_checks_and_has_a_work_order() {
        let rows = MesPlant::seeded().checked().unwrap();
        assert_eq!(rows.entities.len(), 6);
        let fill = JobKey {
            wo_id: "WO-1001".into(),
            oper_id: "Fill".into(),
            seq_no: 0,
        };
        assert_eq!(rows.job(&fill).unwrap()["state_cd"], 2);
        assert_eq!(rows.site_of(4).unwrap()["ent_name"], "Plant1");
    }

    #[test]
    fn bad_rows_are_config_errors_and_cycles_end() {
        for plant in [
            MesPlant::new().entity(json!([1])),
            MesPlant::new().entity(json!({"ent_id": "x", "ent_name": "a"})),
            MesPlant::new().job(json!({"wo_id": "W", "oper_id": "O", "seq_no": 0})),
            MesPlant::new().job(json!({"wo_id": "W", "seq_no": 0, "ent_id": 1})),
        ] {
            let err = plant.checked().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{err}");
        }
        let rows = MesPlant::new()
            .entity(json!({"ent_id": 1, "ent_name": "a", "parent_ent_id": 2}))
            .entity(json!({"ent_id": 2, "ent_name": "b", "parent_ent_id": 1}))
            .checked()
            .unwrap();
        assert!(rows.site_of(1).is_none());
    }
}
