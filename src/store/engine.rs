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

/// How an acquisition through the store ended.
pub(crate) enum Obtained {
    /// Another process's token, read from the store (the cache installs it).
    Stored(AccessToken),
    /// This process asked AIM (the fetch installed its token itself).
    Fetched(Result<AccessToken>),
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
    /// The token a resource server refused (`invalidate`): never adopted
    /// again from the store, and deleted there by the next acquisition.
    rejected: Mutex<Option<AccessToken>>,
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

/// What one bounded store operation gave.
enum Op<T> {
    Ok(T),
    Failed,
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
            rejected: Mutex::new(None),
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

    /// Remembers that a resource server refused `token`: the next
    /// acquisition deletes it from the store if the store still holds it.
    pub(crate) fn reject(&self, token: &AccessToken) {
        *lock(&self.rejected) = Some(token.clone());
    }

    /// One acquisition through the store: a stored token that `accept`s,
    /// else under the lease a re-read, then `fetch` (AIM) and a write. While
    /// another process holds the lease, wait for its token, taking the lease
    /// over if it expires (its holder died); after `wait_limit`, `fetch`
    /// without it. Any store failure: `fetch` directly, no more store calls.
    pub(crate) async fn acquire<F, Fut>(
        &self,
        now_ms: u64,
        accept: &(dyn Fn(&AccessToken) -> bool + Sync),
        fetch: F,
    ) -> Obtained
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<AccessToken>>,
    {
        if !self.usable_now() {
            return Obtained::Fetched(fetch().await);
        }
        let started = Instant::now();
        let mut waited = false;
        loop {
            match self.read(accept).await {
                Op::Ok(Some(token)) => return Obtained::Stored(token),
                Op::Ok(None) => {}
                Op::Failed => return Obtained::Fetched(fetch().await),
            }
            let lease = match self
                .bounded(self.store.try_lease(&self.key, self.lease_ttl))
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
                return self.as_leaseholder(held, now_ms, accept, fetch).await;
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
                let outcome = fetch().await;
                if let Ok(token) = &outcome {
                    self.write(token, now_ms).await;
                }
                return Obtained::Fetched(outcome);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn as_leaseholder<F, Fut>(
        &self,
        held: Held<'_>,
        now_ms: u64,
        accept: &(dyn Fn(&AccessToken) -> bool + Sync),
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
        match self.read(accept).await {
            Op::Ok(Some(token)) => return Obtained::Stored(token),
            Op::Ok(None) => {}
            Op::Failed => return Obtained::Fetched(fetch().await),
        }
        let outcome = fetch().await;
        if let Ok(token) = &outcome {
            self.write(token, now_ms).await;
        }
        Obtained::Fetched(outcome)
    }

    /// The stored token, if it opens and `accept`s. A refused token still in
    /// the store is deleted (compare-and-delete: only that value).
    async fn read(
        &self,
        accept: &(dyn Fn(&AccessToken) -> bool + Sync),
    ) -> Op<Option<AccessToken>> {
        let Op::Ok(value) = self.bounded(self.store.get(&self.key)).await else {
            return Op::Failed;
        };
        let Some(value) = value else {
            bump(&self.misses);
            return Op::Ok(None);
        };
        let token = match self.sealer.open(&value) {
            Ok(token) => token,
            Err(why) => {
                bump(&self.misses);
                let why = match why {
                    Unreadable::Format => "not in this version's format",
                    Unreadable::Seal => "sealed with another client secret, or tampered with",
                    Unreadable::Content => "not a token record",
                };
                tracing::warn!(target: TARGET, entry = %self.key, "ignoring the stored token: {why}");
                return Op::Ok(None);
            }
        };
        let refused = lock(&self.rejected)
            .as_ref()
            .is_some_and(|r| r.secret() == token.secret());
        if refused {
            bump(&self.misses);
            if let Op::Ok(true) = self.bounded(self.store.delete_if(&self.key, &value)).await {
                tracing::debug!(target: TARGET, "deleted the refused token from the store");
            }
            return Op::Ok(None);
        }
        if accept(&token) {
            bump(&self.hits);
            tracing::debug!(target: TARGET, authority = token.authority(), "token from the shared store");
            Op::Ok(Some(token))
        } else {
            bump(&self.misses);
            Op::Ok(None)
        }
    }

    async fn write(&self, token: &AccessToken, now_ms: u64) {
        let ttl = Duration::from_millis(token.expires_at_ms().saturating_sub(now_ms));
        if ttl.is_zero() {
            return;
        }
        let Some(value) = self.sealer.seal(token, &self.writer) else {
            tracing::warn!(target: TARGET, "no randomness for sealing; not storing the token");
            return;
        };
        if let Op::Ok(()) = self.bounded(self.store.put(&self.key, &value, ttl)).await {
            *lock(&self.rejected) = None;
        }
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

    /// `op` bounded by the store timeout; a failure starts (or continues)
    /// an episode: one warning, then the store is skipped for a while.
    async fn bounded<T>(&self, op: super::BoxFuture<'_, std::io::Result<T>>) -> Op<T> {
        let error = match tokio::time::timeout(self.op_timeout, op).await {
            Ok(Ok(value)) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!(target: TARGET, store = ?self.store, "the token store answers again");
                }
                return Op::Ok(value);
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", self.op_timeout),
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
