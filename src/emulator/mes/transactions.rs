//! The emulator's MES data and its transactions: committed rows, and per
//! open transaction the job rows it changed. A change made in a transaction
//! is seen only by calls of that transaction until it is committed; abort
//! or timeout drops it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde_json::{Map, Value};

use super::plant::{JobKey, Rows};

/// Knobs and data of the emulator's MES.
pub(crate) struct Mes {
    data: Mutex<Data>,
    timeout_ms: AtomicU64,
    /// MES cannot reach AIM: every call fails with 500.
    pub(crate) aim_offline: AtomicBool,
    /// Endpoints (lowercase, after `api/v3/`) the Default Background User
    /// lacks the privilege for.
    revoked: RwLock<Vec<String>>,
}

struct Data {
    rows: Rows,
    open: HashMap<String, Transaction>,
}

struct Transaction {
    started_ms: u64,
    jobs: HashMap<JobKey, Map<String, Value>>,
}

impl Data {
    /// Whether a live transaction other than `tx` holds a change to job
    /// `key` or to a job on `row`'s run entity (its job position).
    fn locked_by_another(
        &self,
        tx: Option<&str>,
        key: &JobKey,
        row: &Map<String, Value>,
        now_ms: u64,
        timeout_ms: u64,
    ) -> bool {
        let run_ent = |job: &Map<String, Value>| job.get("run_ent_id").and_then(Value::as_i64);
        let entity = run_ent(row);
        self.open.iter().any(|(id, t)| {
            Some(id.as_str()) != tx
                && now_ms.saturating_sub(t.started_ms) < timeout_ms
                && t.jobs
                    .iter()
                    .any(|(k, job)| k == key || (entity.is_some() && run_ent(job) == entity))
        })
    }

    /// Whether `id` is open at `now_ms`; a timed-out one is dropped here.
    fn live(&mut self, id: &str, now_ms: u64, timeout_ms: u64) -> bool {
        let expired = match self.open.get(id) {
            None => return false,
            Some(t) => now_ms.saturating_sub(t.started_ms) >= timeout_ms,
        };
        if expired {
            self.open.remove(id);
        }
        !expired
    }
}

/// Why [`Mes::view`] stored nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The call's transaction is not open (never was, ended, timed out).
    NoSuchTransaction,
    /// Another open transaction changed the same job, or a job on the same
    /// entity: the database would hold its locks until it ends.
    Locked,
}

/// Why a transaction call failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NoSuchTransaction;

impl Mes {
    pub(crate) fn new(rows: Rows, timeout: Duration) -> Mes {
        Mes {
            data: Mutex::new(Data {
                rows,
                open: HashMap::new(),
            }),
            timeout_ms: AtomicU64::new(millis(timeout)),
            aim_offline: AtomicBool::new(false),
            revoked: RwLock::new(Vec::new()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Data) -> T) -> T {
        f(&mut self.data.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Opens a transaction at `now_ms`; its ID.
    pub(crate) fn begin(&self, id: String, now_ms: u64) {
        self.with(|d| {
            d.open.insert(
                id,
                Transaction {
                    started_ms: now_ms,
                    jobs: HashMap::new(),
                },
            )
        });
    }

    /// Whether `id` is open at `now_ms`; a timed-out one is dropped here.
    pub(crate) fn is_open(&self, id: &str, now_ms: u64) -> bool {
        let timeout = self.timeout_ms.load(Ordering::Relaxed);
        self.with(|d| d.live(id, now_ms, timeout))
    }

    /// Ends `id`: its changes become everyone's (`commit`) or are dropped.
    pub(crate) fn end(&self, id: &str, commit: bool, now_ms: u64) -> Result<(), NoSuchTransaction> {
        if !self.is_open(id, now_ms) {
            return Err(NoSuchTransaction);
        }
        self.with(|d| {
            let t = d.open.remove(id).ok_or(NoSuchTransaction)?;
            if commit {
                for (key, row) in t.jobs {
                    put(&mut d.rows.jobs, &key, row);
                }
            }
            Ok(())
        })
    }

    /// Every open transaction times out now.
    pub(crate) fn expire_all(&self) {
        self.with(|d| d.open.clear());
    }

    pub(crate) fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms.store(millis(timeout), Ordering::Relaxed);
    }

    /// Runs `f` on the rows as transaction `tx` sees them (its own changes
    /// over the committed rows); what `f` returns as a changed job is
    /// stored in `tx`, or committed at once without one. Fails when `tx`
    /// is not open at `now_ms`: checked under the same lock as the change,
    /// so a transaction that ends meanwhile (an abort from another task, a
    /// timeout) cannot turn its late change into a committed one.
    pub(crate) fn view<T>(
        &self,
        tx: Option<&str>,
        now_ms: u64,
        f: impl FnOnce(&Rows) -> (T, Option<Map<String, Value>>),
    ) -> Result<T, Refusal> {
        let timeout = self.timeout_ms.load(Ordering::Relaxed);
        self.with(|d| {
            if let Some(id) = tx {
                if !d.live(id, now_ms, timeout) {
                    return Err(Refusal::NoSuchTransaction);
                }
            }
            let mut seen = d.rows.clone();
            if let Some(t) = tx.and_then(|id| d.open.get(id)) {
                for (key, row) in &t.jobs {
                    put(&mut seen.jobs, key, row.clone());
                }
            }
            let (out, changed) = f(&seen);
            if let Some(row) = changed {
                if let Some(key) = JobKey::of(&row) {
                    if d.locked_by_another(tx, &key, &row, now_ms, timeout) {
                        return Err(Refusal::Locked);
                    }
                    match tx.and_then(|id| d.open.get_mut(id)) {
                        Some(t) => {
                            t.jobs.insert(key, row);
                        }
                        None => put(&mut d.rows.jobs, &key, row),
                    }
                }
            }
            Ok(out)
        })
    }

    /// The committed rows.
    pub(crate) fn committed(&self) -> Rows {
        self.with(|d| d.rows.clone())
    }

    pub(crate) fn revoke(&self, endpoint: &str) {
        let endpoint = normalize(endpoint);
        let mut revoked = self.revoked.write().unwrap_or_else(PoisonError::into_inner);
        if !revoked.contains(&endpoint) {
            revoked.push(endpoint);
        }
    }

    pub(crate) fn restore_privileges(&self) {
        self.revoked
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Whether the privilege for `endpoint` (lowercase, after `api/v3/`) is revoked.
    pub(crate) fn is_revoked(&self, endpoint: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|r| r == endpoint)
    }
}

/// `Jobs/Start`, `/api/v3/jobs/start` and `jobs/start/` all name `jobs/start`.
fn normalize(endpoint: &str) -> String {
    let e = endpoint.trim().trim_matches('/').to_ascii_lowercase();
    e.strip_prefix("api/v3/").map(str::to_owned).unwrap_or(e)
}

fn put(jobs: &mut Vec<Map<String, Value>>, key: &JobKey, row: Map<String, Value>) {
    match jobs
        .iter_mut()
        .find(|j| JobKey::of(j).as_ref() == Some(key))
    {
        Some(slot) => *slot = row,
        None => jobs.push(row),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::plant::MesPlant;
    use super::*;

    fn fill() -> JobKey {
        JobKey {
            wo_id: "WO-1001".into(),
            oper_id: "Fill".into(),
            seq_no: 0,
        }
    }

    fn set_state(mes: &Mes, tx: Option<&str>, state: i64) {
        mes.view(tx, 0, |rows| {
            let mut job = rows.job(&fill()).unwrap().clone();
            job.insert("state_cd".into(), state.into());
            ((), Some(job))
        })
        .unwrap();
    }

    fn state(mes: &Mes, tx: Option<&str>) -> Value {
        mes.view(tx, 0, |rows| {
            (rows.job(&fill()).unwrap()["state_cd"].clone(), None)
        })
        .unwrap()
    }

    #[test]
    fn changes_are_private_until_commit_and_dropped_on_abort_or_timeout() {
        let mes = Mes::new(
            MesPlant::seeded().checked().unwrap(),
            Duration::from_secs(60),
        );
        mes.begin("t1".into(), 0);
        set_state(&mes, Some("t1"), 3);
        assert_eq!(state(&mes, Some("t1")), 3);
        assert_eq!(state(&mes, None), 2, "not visible outside t1");
        mes.end("t1", true, 1000).unwrap();
        assert_eq!(state(&mes, None), 3);
        assert_eq!(mes.end("t1", true, 1000), Err(NoSuchTransaction));

        mes.begin("t2".into(), 0);
        set_state(&mes, Some("t2"), 5);
        mes.end("t2", false, 0).unwrap();
        assert_eq!(state(&mes, None), 3);

        mes.begin("t3".into(), 0);
        set_state(&mes, Some("t3"), 4);
        assert!(mes.is_open("t3", 59_999));
        assert!(!mes.is_open("t3", 60_000), "timed out");
        assert_eq!(mes.end("t3", true, 60_000), Err(NoSuchTransaction));
        assert_eq!(state(&mes, None), 3);

        mes.begin("t4".into(), 0);
        mes.expire_all();
        assert!(!mes.is_open("t4", 0));
    }

    /// A call checked its transaction, then the transaction ended (an
    /// abort, a timeout) before the call's change was stored: the change
    /// must not land in the committed rows.
    #[test]
    fn a_change_in_a_transaction_that_ended_meanwhile_is_not_committed() {
        let mes = Mes::new(
            MesPlant::seeded().checked().unwrap(),
            Duration::from_secs(60),
        );
        mes.begin("t1".into(), 0);
        assert!(mes.is_open("t1", 0));
        mes.end("t1", false, 0).unwrap(); // aborted by another task
        let stored = mes.view(Some("t1"), 0, |rows| {
            let mut job = rows.job(&fill()).unwrap().clone();
            job.insert("state_cd".into(), 3.into());
            ((), Some(job))
        });
        assert_eq!(stored, Err(Refusal::NoSuchTransaction));
        assert_eq!(state(&mes, None), 2, "nothing committed");

        mes.begin("t2".into(), 0);
        let late = mes.view(Some("t2"), 60_000, |_| ((), None));
        assert_eq!(late, Err(Refusal::NoSuchTransaction), "timed out by then");
    }

    #[test]
    fn privileges_by_endpoint_name() {
        let mes = Mes::new(Rows::default(), Duration::from_secs(1));
        mes.revoke("/api/v3/Jobs/Start/");
        assert!(mes.is_revoked("jobs/start"));
        assert!(!mes.is_revoked("jobs/end"));
        mes.restore_privileges();
        assert!(!mes.is_revoked("jobs/start"));
    }
}
