//! The token cache behind [`AimClient::token`](crate::AimClient::token).
//!
//! - **Reads** are an atomic load ([`ArcSwapOption`]), a wall-clock read
//!   and a reference-count increment; they never lock or wait while a usable
//!   token is cached.
//! - **Acquisitions** ([`acquire`]) go through a single [`Flight`]: however
//!   many callers need a token at once, one acquisition runs, in a task the
//!   cache spawns on the caller's runtime, and all callers await its
//!   outcome. A caller that gives up cancels nothing. The acquisition
//!   retries transient failures with exponential backoff and full jitter
//!   (honouring `Retry-After`) within `retry_deadline`, which bounds every
//!   attempt; fails over to the next authority on what another node can fix;
//!   and remembers the primary's permanent OAuth errors for `error_cooldown`.
//! - **Proactive refresh** at `refresh_ratio` of the lifetime (minus jitter)
//!   runs in a background task ([`refresher`]) started on first use in the
//!   caller's tokio runtime. The hot path serves the cached token until the
//!   refresh instant only; after it, a caller checks that a live refresher
//!   takes care of it, and otherwise restarts it and refreshes itself
//!   (deduplicated). A failed proactive refresh keeps the current token and
//!   retries with backoff; callers see an error only once the token is
//!   within the hard margin of expiry.
//! - **401 renewals** ([`rejection`]) are rate-limited for every attachment.

mod acquire;
mod backoff;
mod config;
mod flight;
mod local;
mod policy;
mod refresher;
mod rejection;
mod stats;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod week;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinHandle};

use self::backoff::Backoff;
use self::flight::Flight;
use self::policy::{Entry, WallClock};
use self::stats::Counters;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::token::AccessToken;

pub(crate) use self::acquire::Need;
pub(crate) use self::config::CacheConfig;
pub use self::stats::Stats;
pub(crate) use self::stats::{stripe, STRIPES};

/// A boxed future, as the token source returns it.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where tokens come from: one attempt against one authority, no retries.
/// The exchange implements it; the cache owns retries, backoff and failover.
pub(crate) trait TokenSource: Send + Sync + 'static {
    /// How many authorities there are; index 0 is the primary.
    fn authority_count(&self) -> usize;
    /// A short label of authority `index` for logs (its base URL).
    fn authority_label(&self, index: usize) -> &str;
    /// One token request to authority `index`.
    fn fetch(&self, index: usize) -> BoxFuture<'_, Result<AccessToken>>;
}

const TARGET: &str = "aim_token::cache";

/// The cache behind one `AimClient` and its clones. Dropping it stops the
/// background refresher and any acquisition in flight.
pub(crate) struct Cache {
    shared: Arc<Shared>,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

/// The state the refresher and the acquisition tasks share.
pub(crate) struct Shared {
    source: Arc<dyn TokenSource>,
    config: CacheConfig,
    clock: WallClock,
    client_id: String,
    current: ArcSwapOption<Entry>,
    flight: Flight,
    /// The task of the acquisition in flight, aborted when the cache goes.
    acquisition: Mutex<Option<AbortHandle>>,
    cooldown: Mutex<Option<Cooldown>>,
    /// Whether a live background refresher takes care of proactive
    /// refreshes; cleared by the refresher itself when it ends or is
    /// dropped with its runtime.
    refresher_alive: AtomicBool,
    /// Until when 401 renewals are off (a fresh token was refused too).
    renewals_off_until_ms: AtomicU64,
    /// When a 401 that was not retried last invalidated the token (0: none
    /// pending): the token that replaces it is proven only by its next 401.
    unretried_since_ms: AtomicU64,
    wake: Arc<Notify>,
    backoff: Backoff,
    counters: Counters,
}

/// A remembered permanent error.
struct Cooldown {
    error: Error,
    until_ms: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Cache {
    /// A cache over `source`. `clock: None` reads the system's coarse wall
    /// clock directly (the fast path); tests inject one.
    pub(crate) fn new(
        source: Arc<dyn TokenSource>,
        config: CacheConfig,
        clock: Option<Arc<dyn Clock>>,
        client_id: impl Into<String>,
    ) -> Result<Self> {
        config.validate()?;
        let backoff = Backoff::new(config.backoff_min, config.backoff_max);
        #[cfg(test)]
        let backoff = match config.jitter_seed {
            Some(seed) => Backoff::seeded(config.backoff_min, config.backoff_max, seed),
            None => backoff,
        };
        Ok(Cache {
            shared: Arc::new(Shared {
                source,
                clock: clock.map_or(WallClock::System, WallClock::Custom),
                client_id: client_id.into(),
                current: ArcSwapOption::empty(),
                flight: Flight::default(),
                acquisition: Mutex::new(None),
                cooldown: Mutex::new(None),
                refresher_alive: AtomicBool::new(false),
                renewals_off_until_ms: AtomicU64::new(0),
                unretried_since_ms: AtomicU64::new(0),
                wake: Arc::new(Notify::new()),
                backoff,
                counters: Counters::default(),
                config,
            }),
            refresher: Mutex::new(None),
        })
    }

    /// A usable token: from the cache without locking, else from the one
    /// acquisition in flight.
    #[inline]
    pub(crate) async fn token(&self) -> Result<AccessToken> {
        if let Some(token) = self.shared.cached() {
            return Ok(token);
        }
        // Boxed: the slow path's state (retries, backoff timers) is a few
        // hundred bytes; inline it would make every cached call's future
        // that big, and moving it costs more than the whole cached read.
        let slow: BoxFuture<'_, Result<AccessToken>> = Box::pin(self.token_slow());
        slow.await
    }

    async fn token_slow(&self) -> Result<AccessToken> {
        self.ensure_refresher();
        self.shared.token_slow().await
    }

    /// A token newer than the current one, unless the current one is younger
    /// than `min_refresh_interval`; joins an acquisition in flight.
    pub(crate) async fn refresh(&self) -> Result<AccessToken> {
        self.ensure_refresher();
        let seen = self.shared.current.load_full();
        if let Some(entry) = &seen {
            if self.shared.is_young(&entry.token) {
                return Ok(entry.token.clone());
            }
        }
        self.shared.acquire(Need::Newer(seen)).await
    }

    /// Drops `token` if it is still the current one and not younger than
    /// `min_refresh_interval` (a crowd of 401s cannot make a request storm).
    pub(crate) fn invalidate(&self, token: &AccessToken) {
        let _ = self.shared.invalidate(token);
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.shared.counters.snapshot();
        if let Some(store) = &self.shared.config.store {
            store.fill(&mut stats);
        }
        stats
    }

    /// Starts the background refresher in the caller's tokio runtime, once,
    /// and again if it died (its runtime went away). Outside a runtime,
    /// callers refresh themselves instead.
    fn ensure_refresher(&self) {
        if !self.shared.config.background_refresh
            || self.shared.refresher_alive.load(Ordering::Acquire)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut slot = lock(&self.refresher);
        if self.shared.refresher_alive.load(Ordering::Acquire) {
            return; // another caller restarted it meanwhile
        }
        if let Some(old) = slot.take() {
            old.abort();
        }
        self.shared.refresher_alive.store(true, Ordering::Release);
        let task = refresher::run(Arc::downgrade(&self.shared), self.shared.wake.clone());
        *slot = Some(runtime.spawn(task));
        tracing::debug!(target: TARGET, client_id = %self.shared.client_id, "background refresher started");
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.refresher).take() {
            task.abort();
        }
        if let Some(task) = lock(&self.shared.acquisition).take() {
            task.abort();
        }
    }
}

impl Shared {
    /// The hot path: the cached token until its refresh instant (pushed back
    /// while refreshes fail), by the wall clock.
    #[inline]
    fn cached(&self) -> Option<AccessToken> {
        let current = self.current.load();
        let entry = current.as_ref()?;
        if self.clock.now_ms() < entry.hot_until_ms.load(Ordering::Relaxed) {
            let stripe = stripe();
            self.counters.cache_hits.incr_at(stripe);
            Some(entry.copies.token_at(stripe, &entry.token))
        } else {
            None
        }
    }

    /// Past the refresh instant, or no usable token.
    async fn token_slow(self: &Arc<Self>) -> Result<AccessToken> {
        if let Some(entry) = self.current.load_full() {
            let now = self.clock.now_ms();
            if now < entry.usable_until_ms {
                self.counters.cache_hits.incr();
                if !self.refresh_is_mine(&entry, now) {
                    return Ok(entry.token.clone());
                }
                // A failure keeps the still-valid token.
                return Ok(self
                    .refresh_ahead_for_caller(&entry)
                    .await
                    .unwrap_or_else(|_| entry.token.clone()));
            }
        }
        self.acquire(Need::Usable).await
    }

    /// Whether a caller who found `entry` past its refresh instant must
    /// refresh it: no acquisition is under way, the next attempt is due, and
    /// no live background refresher takes care of it (or the one there is
    /// has not acted for a while: a current-thread runtime that is rarely
    /// driven).
    fn refresh_is_mine(&self, entry: &Entry, now: u64) -> bool {
        let due = entry.next_attempt_ms.load(Ordering::Acquire);
        if now < due || self.flight.in_progress() {
            return false;
        }
        !(self.refresher_alive.load(Ordering::Acquire)
            && now < due.saturating_add(millis(refresher::STALL_GRACE)))
    }

    /// Whether `token` was issued less than `min_refresh_interval` ago. A
    /// token "issued" in this clock's future (stored by a host whose clock
    /// is ahead, or this clock was set back) is not: otherwise a refused
    /// one could not be renewed for as long as the clocks differ.
    fn is_young(&self, token: &AccessToken) -> bool {
        let issued = crate::clock::unix_millis(token.issued_at());
        let now = self.clock.now_ms();
        issued <= now && now < issued.saturating_add(millis(self.config.min_refresh_interval))
    }

    /// Drops `token` if it is the current one and not young; whether it did.
    fn invalidate(&self, token: &AccessToken) -> bool {
        let current = self.current.load();
        let Some(entry) = current.as_ref() else {
            return false;
        };
        if !entry.token.same_as(token) {
            return false;
        }
        if self.is_young(token) {
            tracing::debug!(
                target: TARGET,
                "not invalidating a token issued less than min_refresh_interval ago"
            );
            return false;
        }
        // The seam to the shared store: compare-and-delete there too.
        if let Some(store) = &self.config.store {
            store.reject(token, self.clock.now_ms());
        }
        let previous = self.current.compare_and_swap(&current, None);
        let swapped = previous.as_ref().map(Arc::as_ptr) == Some(Arc::as_ptr(entry));
        if swapped {
            tracing::debug!(
                target: TARGET,
                authority = entry.token.authority(),
                "token invalidated; the next call fetches a new one"
            );
        }
        swapped
    }
}
