//! The store as the cache sees it: one acquisition through the store (lease,
//! re-read, ask AIM, write, release), bounded store operations, and the
//! counters. Everything the cache needs from the store is here, behind
//! [`Attached::acquire`] and [`Attached::reject`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::key;
use super::refusals::Refusals;
use super::seal::{Sealer, Unreadable};
use super::{Lease, TokenStore};
use crate::cache::Stats;
use crate::error::Result;
use crate::exchange::ExchangeConfig;
use crate::token::AccessToken;

const TARGET: &str = "aim_token::store";

/// Default bound of every store operation.
pub(crate) const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(250);
/// After a store failure, acquisitions skip the store this long.
const RETRY_LATER: Duration = Duration::from_secs(2);
/// How often a process waiting for another one's token looks again.
const POLL: Duration = Duration::from_millis(40);
/// How many times a write looks again after another writer got in first.
const FENCE_ROUNDS: usize = 3;

/// How an acquisition through the store ended.
pub(crate) enum Obtained {
    /// Another process's token, read from the store (the cache installs it).
    Stored(AccessToken),
    /// This process asked AIM (the fetch installed its token itself).
    Fetched(Result<AccessToken>),
    /// This process asked AIM, but the store kept another process's token
    /// written meanwhile (the fence): it replaces the fetched one.
    Kept(AccessToken),
}

/// A [`TokenStore`] attached to one client: its entry key and sealer, the
/// timeouts, the failure episode and the counters.
pub(crate) struct Attached {
    store: Arc<dyn TokenStore>,
    key: String,
    sealer: Sealer,
    op_timeout: Duration,
    lease_ttl: Duration,
    /// How long to wait for another process's token (the retry deadline).
    wait_limit: Duration,
    writer: String,
    /// Skip the store until then (it failed recently).
    retry_at: Mutex<Option<Instant>>,
    /// Whether the current failure episode has been warned about.
    degraded: AtomicBool,
    /// The tokens a resource server refused (`invalidate`), until they
    /// expire: never adopted from the store, deleted there when seen.
    rejected: Mutex<Refusals>,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    lease_waits: AtomicU64,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached")
            .field("store", &self.store)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// How long a lease lasts: longer than one acquisition may take, so a live
/// holder never loses it to a waiter. The last attempt pass starts before
/// `retry_deadline` and may ask every node for discovery and then a token
/// (each bounded by `request_timeout`); the holder also re-reads and writes
/// the store (each bounded by `op_timeout`); one second to spare.
pub(crate) fn lease_time(
    retry_deadline: Duration,
    request_timeout: Duration,
    nodes: usize,
    op_timeout: Duration,
) -> Duration {
    let nodes = u32::try_from(nodes).unwrap_or(u32::MAX);
    retry_deadline
        .saturating_add(request_timeout.saturating_mul(nodes).saturating_mul(2))
        .saturating_add(op_timeout.saturating_mul(2))
        .saturating_add(Duration::from_secs(1))
}

/// What one bounded store operation gave.
enum Op<T> {
    Ok(T),
    Failed,
}

/// How the cache judges the tokens the store holds (its clock and policy).
pub(crate) struct Judge<'a> {
    /// The client's wall clock, in Unix milliseconds.
    pub(crate) now_ms: &'a (dyn Fn() -> u64 + Sync),
    /// Whether a stored token answers this acquisition (no request then).
    pub(crate) accept: &'a (dyn Fn(&AccessToken) -> bool + Sync),
}

/// What a read gave: a token to adopt, or what the store holds instead.
enum Read {
    Adopt(AccessToken),
    Miss(Option<Vec<u8>>),
}

/// What the store holds: the value as read (what a write compares with)
/// and its token, if it opened and was not refused here.
#[derive(Default)]
struct Found {
    raw: Option<Vec<u8>>,
    token: Option<AccessToken>,
}

impl Attached {
    /// `store` for the token `config` asks for. `lease_ttl` must exceed
    /// one acquisition's deadline, so a live holder never loses its lease;
    /// a waiter waits at most `wait_limit` (its retry deadline) for it.
    pub(crate) fn new(
        store: Arc<dyn TokenStore>,
        config: &ExchangeConfig,
        lease_ttl: Duration,
        wait_limit: Duration,
        op_timeout: Duration,
    ) -> Attached {
        let key = key::derive(config);
        let sealer = Sealer::new(&config.credentials.secret, &key);
        let host = std::env::var("HOSTNAME")
            .or_else(|_| std::env::var("COMPUTERNAME"))
            .unwrap_or_default();
        Attached {
            store,
            key,
            sealer,
            op_timeout,
            lease_ttl,
            wait_limit,
            writer: format!("{host}/{}", std::process::id()),
            retry_at: Mutex::new(None),
            degraded: AtomicBool::new(false),
            rejected: Mutex::new(Refusals::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            lease_waits: AtomicU64::new(0),
        }
    }

    /// Adds the store's counters to `stats`.
    pub(crate) fn fill(&self, stats: &mut Stats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        stats.store_hits = get(&self.hits);
        stats.store_misses = get(&self.misses);
        stats.store_errors = get(&self.errors);
        stats.lease_waits = get(&self.lease_waits);
    }

    /// Remembers that a resource server refused `token`: never adopted from
    /// the store again while it lasts, and deleted there whenever it is
    /// seen (compare-and-delete), whoever writes it back.
    pub(crate) fn reject(&self, token: &AccessToken, now_ms: u64) {
        lock(&self.rejected).add(token, now_ms);
    }

    fn is_refused(&self, token: &AccessToken) -> bool {
        lock(&self.rejected).contains(token)
    }

    /// One acquisition through the store: a stored token that `judge`
    /// accepts, else under the lease a re-read, then `fetch` (AIM) and a
    /// fenced write. While another process holds the lease, wait for its
    /// token, taking the lease over if it expires (its holder died); after
    /// `wait_limit`, `fetch` without it. Any store failure: `fetch`
    /// directly, no more store calls.
    pub(crate) async fn acquire<F, Fut>(&self, judge: &Judge<'_>, fetch: F) -> Obtained
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<AccessToken>>,
    {
        if !self.usable_now() {
            return Obtained::Fetched(fetch().await);
        }
        let started = Instant::now();
        // What the store may add to this acquisition; polls while another
        // process holds the lease are waiting, not added latency.
        let budget = Budget::new(self.op_timeout.saturating_mul(2));
        let polls = Budget::unlimited();
        let mut waited = false;
        loop {
            let charged = if waited { &polls } else { &budget };
            let seen = match self.read(judge, charged).await {
                Op::Ok(Read::Adopt(token)) => return Obtained::Stored(token),
                Op::Ok(Read::Miss(seen)) => seen,
                Op::Failed => return Obtained::Fetched(fetch().await),
            };
            let lease = match self
                .bounded(self.store.try_lease(&self.key, self.lease_ttl), charged, 1)
                .await
            {
                Op::Ok(lease) => lease,
                Op::Failed => return Obtained::Fetched(fetch().await),
            };
            if let Some(lease) = lease {
                let held = Held {
                    store: &self.store,
                    lease: Some(lease),
                    timeout: self.op_timeout,
                };
                return self.as_leaseholder(held, judge, &budget, fetch).await;
            }
            if !waited {
                waited = true;
                bump(&self.lease_waits);
                tracing::debug!(target: TARGET, "another process is fetching the token; waiting for it");
            }
            if started.elapsed() >= self.wait_limit {
                tracing::warn!(
                    target: TARGET,
                    waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "the process holding the store's lease did not write a token within the retry deadline; asking AIM directly"
                );
                return self.fetch_and_write(seen, judge, &budget, fetch).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn as_leaseholder<F, Fut>(
        &self,
        held: Held<'_>,
        judge: &Judge<'_>,
        budget: &Budget,
        fetch: F,
    ) -> Obtained
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<AccessToken>>,
    {
        // Released when this returns, in the background: the caller does
        // not wait for it, and a failing store costs no further timeout.
        let _held = held;
        // Another process may have written between the read and the lease.
        let seen = match self.read(judge, budget).await {
            Op::Ok(Read::Adopt(token)) => return Obtained::Stored(token),
            Op::Ok(Read::Miss(seen)) => seen,
            Op::Failed => return Obtained::Fetched(fetch().await),
        };
        self.fetch_and_write(seen, judge, budget, fetch).await
    }

    /// `fetch`, then the write of its token where the store held `seen`;
    /// the token another process stored meanwhile if that one lasts longer.
    async fn fetch_and_write<F, Fut>(
        &self,
        seen: Option<Vec<u8>>,
        judge: &Judge<'_>,
        budget: &Budget,
        fetch: F,
    ) -> Obtained
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<AccessToken>>,
    {
        let outcome = fetch().await;
        if let Ok(token) = &outcome {
            if let Some(theirs) = self.write(token, seen, judge, budget).await {
                return Obtained::Kept(theirs);
            }
        }
        Obtained::Fetched(outcome)
    }

    /// The stored token if `judge` accepts it, else what the store holds
    /// (for the write to compare against).
    async fn read(&self, judge: &Judge<'_>, budget: &Budget) -> Op<Read> {
        let Op::Ok(found) = self.look(budget).await else {
            return Op::Failed;
        };
        match found.token {
            Some(token) if (judge.accept)(&token) => {
                bump(&self.hits);
                tracing::debug!(target: TARGET, authority = token.authority(), "token from the shared store");
                Op::Ok(Read::Adopt(token))
            }
            _ => {
                bump(&self.misses);
                Op::Ok(Read::Miss(found.raw))
            }
        }
    }

    /// The stored value, and its token if it opens and was not refused
    /// here. A refused token is deleted (compare-and-delete: only that value).
    async fn look(&self, budget: &Budget) -> Op<Found> {
        let Op::Ok(value) = self.bounded(self.store.get(&self.key), budget, 1).await else {
            return Op::Failed;
        };
        let Some(value) = value else {
            return Op::Ok(Found::default());
        };
        let token = match self.sealer.open(&value) {
            Ok(token) => token,
            Err(why) => {
                let why = match why {
                    Unreadable::Format => "not in this version's format",
                    Unreadable::Seal => "sealed with another client secret, or tampered with",
                    Unreadable::Content => "not a token record",
                };
                tracing::warn!(target: TARGET, entry = %self.key, "ignoring the stored token: {why}");
                return Op::Ok(Found {
                    raw: Some(value),
                    token: None,
                });
            }
        };
        if self.is_refused(&token) {
            let delete = self.store.delete_if(&self.key, &value);
            if let Op::Ok(true) = self.bounded(delete, budget, 1).await {
                tracing::debug!(target: TARGET, "deleted the refused token from the store");
                return Op::Ok(Found::default());
            }
            return Op::Ok(Found {
                raw: Some(value),
                token: None,
            });
        }
        Op::Ok(Found {
            raw: Some(value),
            token: Some(token),
        })
    }

    /// Stores `mine` if the store still holds `seen` (compare-and-set). If
    /// another process wrote meanwhile (a holder that outlived its lease, a
    /// waiter that gave up, a writer whose clock is behind), its token
    /// stays when it answers the acquisition (usable; for a refresh, not
    /// the token being replaced nor itself due) and lasts at least as long
    /// as `mine`: it is returned, to be used instead. Otherwise `mine`
    /// replaces it. A refused token is never kept.
    async fn write(
        &self,
        mine: &AccessToken,
        mut seen: Option<Vec<u8>>,
        judge: &Judge<'_>,
        budget: &Budget,
    ) -> Option<AccessToken> {
        let Some(value) = self.sealer.seal(mine, &self.writer) else {
            tracing::warn!(target: TARGET, "no randomness for sealing; not storing the token");
            return None;
        };
        for _ in 0..FENCE_ROUNDS {
            // What is left now, not when the acquisition began: the fetch
            // may have taken long.
            let ttl = Duration::from_millis(mine.expires_at_ms().saturating_sub((judge.now_ms)()));
            if ttl.is_zero() {
                return None;
            }
            let replace = self
                .store
                .replace_if(&self.key, seen.as_deref(), &value, ttl);
            // Two calls' time: the trait's default compares, then puts.
            match self.bounded(replace, budget, 2).await {
                Op::Ok(true) | Op::Failed => return None,
                Op::Ok(false) => {}
            }
            let Op::Ok(found) = self.look(budget).await else {
                return None;
            };
            if let Some(theirs) = found.token {
                if theirs.secret() == mine.secret() {
                    return None;
                }
                if (judge.accept)(&theirs) && theirs.expires_at_ms() >= mine.expires_at_ms() {
                    bump(&self.hits);
                    tracing::info!(
                        target: TARGET,
                        authority = theirs.authority(),
                        "another process stored a token lasting at least as long while this one was fetching; using it rather than replacing it"
                    );
                    return Some(theirs);
                }
            }
            seen = found.raw;
        }
        tracing::debug!(target: TARGET, "the store's entry kept changing under this write; leaving it to the other writers");
        None
    }

    /// Whether to use the store now (not within `RETRY_LATER` of a failure;
    /// inside a tokio runtime, which the timeouts need).
    fn usable_now(&self) -> bool {
        if tokio::runtime::Handle::try_current().is_err() {
            return false;
        }
        let mut retry_at = lock(&self.retry_at);
        match *retry_at {
            Some(at) if Instant::now() < at => false,
            Some(_) => {
                *retry_at = None;
                true
            }
            None => true,
        }
    }

    /// `op` bounded by the store timeout (`calls` times it) and by what is
    /// left of `budget`; a failure starts (or continues) an episode: one
    /// warning, then the store is skipped for a while.
    async fn bounded<T>(
        &self,
        op: super::BoxFuture<'_, std::io::Result<T>>,
        budget: &Budget,
        calls: u32,
    ) -> Op<T> {
        let limit = budget.cap(self.op_timeout.saturating_mul(calls));
        let started = Instant::now();
        let outcome = tokio::time::timeout(limit, op).await;
        budget.charge(started.elapsed());
        let error = match outcome {
            Ok(Ok(value)) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!(target: TARGET, store = ?self.store, "the token store answers again");
                }
                return Op::Ok(value);
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) if limit < self.op_timeout => format!(
                "answering too slowly: this acquisition's store calls took more than {:?} in all",
                budget.total
            ),
            Err(_) => format!("no answer within {limit:?}"),
        };
        bump(&self.errors);
        *lock(&self.retry_at) = Some(Instant::now() + RETRY_LATER);
        if self.degraded.swap(true, Ordering::Relaxed) {
            tracing::debug!(target: TARGET, error = %error, "token store still failing");
        } else {
            tracing::warn!(
                target: TARGET,
                store = ?self.store,
                error = %error,
                "the token store failed; asking AIM directly until it answers again"
            );
        }
        Op::Failed
    }
}

/// The store time one acquisition may still spend: each call is charged
/// what it took, so a store that answers every call just within its
/// timeout cannot add that timeout once per call.
struct Budget {
    total: Duration,
    left_us: AtomicU64,
}

impl Budget {
    fn new(total: Duration) -> Budget {
        Budget {
            total,
            left_us: AtomicU64::new(u64::try_from(total.as_micros()).unwrap_or(u64::MAX)),
        }
    }

    fn unlimited() -> Budget {
        Budget::new(Duration::MAX)
    }

    /// `limit`, or less if less is left.
    fn cap(&self, limit: Duration) -> Duration {
        limit.min(Duration::from_micros(self.left_us.load(Ordering::Relaxed)))
    }

    fn charge(&self, spent: Duration) {
        let spent = u64::try_from(spent.as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .left_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(spent))
            });
    }
}

/// A held lease, released in the background when dropped: at the end of
/// the acquisition, or when it is cancelled (so others need not wait for
/// its expiry).
struct Held<'a> {
    store: &'a Arc<dyn TokenStore>,
    lease: Option<Lease>,
    timeout: Duration,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            let timeout = self.timeout;
            runtime.spawn(async move {
                let _ = tokio::time::timeout(timeout, store.release(lease)).await;
            });
        }
    }
}

/// The share of the jitter subtracted from the refresh instant of `token`:
/// derived from the token itself, so every process sharing it computes the
/// same refresh instant (and one of them refreshes, not each at its own).
pub(crate) fn shared_jitter_unit(token: &AccessToken) -> f64 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.secret().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    // 53 random bits -> [0, 1).
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A holder's worst case: the last pass starts just before the
    /// deadline, discovery and token request time out on every node, and
    /// both store operations take their whole timeout.
    #[test]
    fn a_lease_outlasts_the_slowest_acquisition() {
        let s = Duration::from_secs;
        for (deadline, request, nodes, op) in [
            (s(60), s(30), 1, Duration::from_millis(250)),
            (s(0), s(10), 3, s(2)),
            (s(5), s(1), 2, s(5)),
        ] {
            let slowest = deadline + request * 2 * nodes + op * 2;
            let lease = lease_time(deadline, request, nodes as usize, op);
            assert!(lease > slowest, "{lease:?} <= {slowest:?}");
        }
        assert_eq!(
            lease_time(Duration::MAX, s(1), usize::MAX, s(1)),
            Duration::MAX
        );
    }
}
