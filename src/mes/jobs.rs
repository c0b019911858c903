//! Jobs: `GET api/v3/Jobs/key` and `PUT api/v3/Jobs/Start|Pause|End` with
//! the Job model.

use super::models::{Job, Rows};
use super::{query, MesClient};
use crate::error::{Error, ErrorKind, Result};

impl MesClient {
    /// The job of work order `wo_id`, operation `oper_id`, sequence
    /// number `seq_no`: `GET api/v3/Jobs/key?woId=..&operId=..&seqNo=..`
    /// (AVEVA's parameter names). A missing job is [`ErrorKind::NotFound`].
    pub async fn job(&self, wo_id: &str, oper_id: &str, seq_no: i64) -> Result<Job> {
        let path = format!(
            "api/v3/Jobs/key?{}",
            query([
                ("woId", wo_id.to_owned()),
                ("operId", oper_id.to_owned()),
                ("seqNo", seq_no.to_string()),
            ])
        );
        let rows: Rows<Job> = self.get_json(&path).await?;
        rows.first().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("MES has no job {wo_id}/{oper_id}/{seq_no} (it answered with no row)"),
            )
        })
    }

    /// Starts `job` on its [`run_ent_id`](Job::run_ent_id):
    /// `PUT api/v3/Jobs/Start`. MES sets `state_cd` to 3 (Running) and
    /// answers the job. It refuses (400) a job that is Running, Complete or
    /// Canceled, or when the entity has no free job position.
    pub async fn start_job(&self, job: &Job) -> Result<Job> {
        self.change_job(
            job,
            "Start",
            "start",
            "a job that is Running, Complete or Canceled cannot be started, and the entity \
             needs a free job position",
        )
        .await
    }

    /// Pauses a running `job`: `PUT api/v3/Jobs/Pause` (state 5, Suspended;
    /// what `job.state_cd` says when it is 6, On Hold, or 1 New / 2 Ready to
    /// undo a start made by mistake). MES finds the job on `run_ent_id`.
    pub async fn pause_job(&self, job: &Job) -> Result<Job> {
        self.change_job(job, "Pause", "pause", "only a Running job can be paused")
            .await
    }

    /// Ends a running, suspended or on-hold `job`: `PUT api/v3/Jobs/End`
    /// (state 4, Complete).
    pub async fn end_job(&self, job: &Job) -> Result<Job> {
        self.change_job(
            job,
            "End",
            "end",
            "only a Running, Suspended or On Hold job can be ended",
        )
        .await
    }

    async fn change_job(&self, job: &Job, endpoint: &str, verb: &str, rule: &str) -> Result<Job> {
        if job.run_ent_id.is_none() {
            return Err(Error::config(format!(
                "cannot {verb} job {}: MES requires run_ent_id, the entity the job runs on \
                 (set it with Job::on(ent_id))",
                job.label()
            )));
        }
        let path = format!("api/v3/Jobs/{endpoint}");
        self.put_json(&path, job)
            .await
            .map_err(|e| match e.status() {
                // A refusal by MES's job rules, explained by the rule.
                Some(400) => e.context(format_args!(
                    "MES refused to {verb} job {} ({rule})",
                    job.label()
                )),
                _ => e,
            })
    }
}
