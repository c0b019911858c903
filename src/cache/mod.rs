//! The token cache behind [`AimClient::token`](crate::AimClient::token).
//!
//! - **Reads** are an atomic load ([`ArcSwapOption`]), a wall-clock read
//!   and a reference-count increment; they never lock or wait while a usable
//!   token is cached.
//! - **Acquisitions** go through a single [`Flight`]: however many callers
//!   need a token at once, one request goes out and all get its outcome.
//!   They retry transient failures with exponential backoff and full jitter
//!   (honouring `Retry-After`) until `retry_deadline`, fail over to the next
//!   authority on transient failures, and remember permanent OAuth errors
//!   for `error_cooldown`.
//! - **Proactive refresh** at `refresh_ratio` of the lifetime (minus jitter)
//!   runs in a background task ([`refresher`]) started on first use in the
//!   caller's tokio runtime. A failed proactive refresh keeps the current
//!   token and retries with backoff; callers see an error only once the
//!   token is within the hard margin of expiry.

mod backoff;
mod config;
mod flight;
mod local;
mod policy;
mod refresher;
mod stats;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use self::backoff::Backoff;
use self::flight::{Flight, Join, Outcome};
use self::policy::{Entry, WallClock};
use self::stats::{bump, Counters};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::store::{self, Obtained};
use crate::token::AccessToken;

pub(crate) use self::config::CacheConfig;
pub use self::stats::Stats;

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

/// OAuth errors that no retry can fix; remembered for `error_cooldown`.
const PERMANENT_OAUTH_ERRORS: [&str; 4] = [
    "invalid_client",
    "invalid_scope",
    "unauthorized_client",
    "unsupported_grant_type",
];

const TARGET: &str = "aim_token::cache";

/// The cache behind one `AimClient` and its clones. Dropping it stops the
/// background refresher.
pub(crate) struct Cache {
    shared: Arc<Shared>,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

/// The state the refresher task shares (through a `Weak`).
pub(crate) struct Shared {
    source: Arc<dyn TokenSource>,
    config: CacheConfig,
    clock: WallClock,
    client_id: String,
    current: ArcSwapOption<Entry>,
    flight: Flight,
    cooldown: Mutex<Option<Cooldown>>,
    /// Whether a background refresher takes care of proactive refreshes.
    background: AtomicBool,
    wake: Arc<Notify>,
    backoff: Backoff,
    counters: Counters,
}

/// A remembered permanent error.
struct Cooldown {
    error: Error,
    until_ms: u64,
}

/// What an acquisition must produce.
enum Need {
    /// Any usable token (a cached one, if another caller just got it).
    Usable,
    /// A token other than this entry (`refresh()`, refresh ahead): holding
    /// the `Arc` keeps its address from being reused, so a pointer
    /// comparison tells whether another acquisition finished meanwhile.
    Newer(Option<Arc<Entry>>),
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
        Ok(Cache {
            shared: Arc::new(Shared {
                source,
                clock: clock.map_or(WallClock::System, WallClock::Custom),
                client_id: client_id.into(),
                current: ArcSwapOption::empty(),
                flight: Flight::default(),
                cooldown: Mutex::new(None),
                background: AtomicBool::new(false),
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
        self.ensure_refresher();
        // Boxed: the slow path's state (retries, backoff timers) is a few
        // hundred bytes; inline it would make every cached call's future
        // that big, and moving it costs more than the whole cached read.
        let slow: BoxFuture<'_, Result<AccessToken>> = Box::pin(self.shared.token_slow());
        slow.await
    }

    /// A token newer than the current one; joins an acquisition in flight.
    pub(crate) async fn refresh(&self) -> Result<AccessToken> {
        self.ensure_refresher();
        let seen = self.shared.current.load_full();
        self.shared.acquire(Need::Newer(seen)).await
    }

    /// Drops `token` if it is still the current one.
    pub(crate) fn invalidate(&self, token: &AccessToken) {
        let shared = &self.shared;
        let current = shared.current.load();
        let Some(entry) = current.as_ref() else {
            return;
        };
        if !entry.token.same_as(token) {
            return;
        }
        if let Some(store) = &shared.config.store {
            store.reject(token);
        }
        let previous = shared.current.compare_and_swap(&current, None);
        let swapped = previous.as_ref().map(Arc::as_ptr) == Some(Arc::as_ptr(entry));
        if swapped {
            tracing::debug!(
                target: TARGET,
                authority = entry.token.authority(),
                "token invalidated; the next call fetches a new one"
            );
        }
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.shared.counters.snapshot();
        if let Some(store) = &self.shared.config.store {
            store.fill(&mut stats);
        }
        stats
    }

    /// Starts the background refresher in the caller's tokio runtime, once
    /// (again if its runtime went away). Outside a runtime, callers refresh
    /// inline instead.
    fn ensure_refresher(&self) {
        if !self.shared.config.background_refresh {
            return;
        }
        let mut slot = lock(&self.refresher);
        if slot.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.shared.background.store(false, Ordering::Release);
            return;
        };
        let task = refresher::run(Arc::downgrade(&self.shared), self.shared.wake.clone());
        *slot = Some(runtime.spawn(task));
        self.shared.background.store(true, Ordering::Release);
        tracing::debug!(target: TARGET, client_id = %self.shared.client_id, "background refresher started");
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.refresher).take() {
            task.abort();
        }
    }
}

impl Shared {
    /// The hot path: the cached token if the wall clock says it is usable
    /// and no refresh is due that the caller should do itself.
    #[inline]
    fn cached(&self) -> Option<AccessToken> {
        let current = self.current.load();
        let entry = current.as_ref()?;
        if self.clock.now_ms() < entry.hot_until_ms {
            self.counters.cache_hits.incr();
            // The address tells this client's cache apart from others'.
            Some(local::token(
                std::ptr::from_ref(self) as usize,
                &entry.token,
            ))
        } else {
            None
        }
    }

    async fn token_slow(&self) -> Result<AccessToken> {
        if let Some(entry) = self.current.load_full() {
            let now = self.clock.now_ms();
            if now < entry.usable_until_ms {
                // Usable, and a refresh is due: without a background task
                // this caller does it (once, deduplicated); a failure keeps
                // the still-valid token.
                if self.background.load(Ordering::Acquire)
                    || now < entry.next_attempt_ms.load(Ordering::Acquire)
                {
                    self.counters.cache_hits.incr();
                    return Ok(entry.token.clone());
                }
                return Ok(match self.refresh_ahead(&entry).await {
                    Ok(token) => token,
                    Err(_) => entry.token.clone(),
                });
            }
        }
        self.acquire(Need::Usable).await
    }

    /// One deduplicated acquisition with retries.
    async fn acquire(&self, need: Need) -> Outcome {
        loop {
            match self.flight.join(|| self.answer_without_request(&need)) {
                Join::Done(outcome) => return outcome,
                Join::Follow(follower) => {
                    if let Some(outcome) = follower.outcome().await {
                        return outcome;
                    }
                    // The leader was cancelled: join again, perhaps as leader.
                }
                Join::Lead(leader) => {
                    let outcome = self
                        .through_store(&need, || self.acquire_with_retries())
                        .await;
                    leader.finish(&outcome);
                    return outcome;
                }
            }
        }
    }

    /// Runs under the flight lock before a request would start: a token
    /// another caller just stored, or a remembered permanent error.
    fn answer_without_request(&self, need: &Need) -> Option<Outcome> {
        let now = self.clock.now_ms();
        let current = self.current.load();
        if let Some(entry) = current.as_ref() {
            let enough = match need {
                Need::Usable => now < entry.usable_until_ms,
                Need::Newer(seen) => seen.as_ref().is_none_or(|seen| !Arc::ptr_eq(seen, entry)),
            };
            if enough {
                return Some(Ok(entry.token.clone()));
            }
        }
        self.cooled_down(now).map(Err)
    }

    /// The remembered permanent error, while its cool-down lasts.
    fn cooled_down(&self, now: u64) -> Option<Error> {
        let mut cooldown = lock(&self.cooldown);
        match cooldown.as_ref() {
            Some(c) if now < c.until_ms => {
                bump(&self.counters.cooldown_rejections);
                tracing::debug!(
                    target: TARGET,
                    remaining_ms = c.until_ms - now,
                    error = %c.error,
                    "permanent error in cool-down; not asking AIM"
                );
                Some(c.error.clone())
            }
            Some(_) => {
                *cooldown = None;
                None
            }
            None => None,
        }
    }

    fn cooldown_remaining(&self, now: u64) -> Option<Duration> {
        lock(&self.cooldown)
            .as_ref()
            .filter(|c| now < c.until_ms)
            .map(|c| Duration::from_millis(c.until_ms - now))
    }

    fn remember_if_permanent(&self, error: &Error) {
        let permanent = error
            .oauth_error()
            .is_some_and(|code| PERMANENT_OAUTH_ERRORS.contains(&code));
        if !permanent || self.config.error_cooldown.is_zero() {
            return;
        }
        let until_ms = self
            .clock
            .now_ms()
            .saturating_add(millis(self.config.error_cooldown));
        *lock(&self.cooldown) = Some(Cooldown {
            error: error.clone(),
            until_ms,
        });
        tracing::warn!(
            target: TARGET,
            error = %error,
            cooldown_ms = millis(self.config.error_cooldown),
            "permanent error from AIM; answering it without new requests during the cool-down"
        );
    }

    /// The leader's acquisition: attempt passes with backoff between them
    /// until one succeeds, a permanent error, or the retry deadline.
    async fn acquire_with_retries(&self) -> Outcome {
        // Without a tokio runtime there is no timer: one pass, no retries.
        let started = tokio::runtime::Handle::try_current()
            .is_ok()
            .then(tokio::time::Instant::now);
        let mut retry = 0u32;
        loop {
            let error = match self.attempt_pass(retry).await {
                Ok(token) => return Ok(token),
                Err(error) => error,
            };
            if !error.is_transient() {
                self.remember_if_permanent(&error);
                return Err(error);
            }
            let delay = self.backoff.delay(retry, error.retry_after());
            let Some(started) = started else {
                return Err(error);
            };
            if started.elapsed() + delay >= self.config.retry_deadline {
                if retry == 0 {
                    return Err(error);
                }
                return Err(error.context(format_args!(
                    "gave up after {} attempts in {:?}",
                    retry + 1,
                    started.elapsed()
                )));
            }
            tracing::info!(
                target: TARGET,
                retry = retry + 1,
                delay_ms = millis(delay),
                retry_after_ms = error.retry_after().map(millis),
                error = %error,
                "token request failed; backing off"
            );
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    /// One pass over the authorities: the primary first, the next one after
    /// a transient failure. Stores the token on success.
    async fn attempt_pass(&self, retry: u32) -> Outcome {
        let count = self.source.authority_count().max(1);
        let mut index = 0;
        loop {
            match self.fetch_one(index, retry).await {
                Ok(token) => {
                    self.install(token.clone(), index);
                    return Ok(token);
                }
                Err(error) if error.is_transient() && index + 1 < count => {
                    bump(&self.counters.failovers);
                    tracing::warn!(
                        target: TARGET,
                        from = self.source.authority_label(index),
                        to = self.source.authority_label(index + 1),
                        error = %error,
                        "AIM node failing; failing over to the next one"
                    );
                    index += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One token request. Its span adds the attempt number to the
    /// exchange's own span (authority, client ID, status, outcome, latency).
    async fn fetch_one(&self, index: usize, retry: u32) -> Outcome {
        bump(&self.counters.token_requests);
        let span = tracing::debug_span!(
            target: TARGET,
            "token_attempt",
            attempt = retry + 1,
            node = index,
            outcome = tracing::field::Empty,
        );
        let result = self.source.fetch(index).instrument(span.clone()).await;
        match &result {
            Ok(_) => {
                span.record("outcome", "ok");
            }
            Err(error) => {
                bump(&self.counters.failures);
                span.record("outcome", tracing::field::debug(error.kind()));
                tracing::debug!(
                    target: TARGET,
                    parent: &span,
                    authority = self.source.authority_label(index),
                    client_id = %self.client_id,
                    error = %error,
                    "token request failed"
                );
            }
        }
        result
    }

    /// THE seam to the shared store: the one acquisition step `fetch` runs
    /// through the store (lease, re-read, `fetch`, write) when there is one.
    /// A token another process stored is installed here; `fetch` installs
    /// its own.
    async fn through_store<F: Future<Output = Outcome>>(
        &self,
        need: &Need,
        fetch: impl FnOnce() -> F,
    ) -> Outcome {
        let Some(store) = &self.config.store else {
            return fetch().await;
        };
        let accept = |token: &AccessToken| self.adoptable(need, token);
        match store.acquire(self.clock.now_ms(), &accept, fetch).await {
            Obtained::Stored(token) => {
                let count = self.source.authority_count();
                let index = (0..count)
                    .find(|&i| self.source.authority_label(i) == token.authority())
                    .unwrap_or(0);
                self.install(token.clone(), index);
                Ok(token)
            }
            Obtained::Fetched(outcome) => outcome,
        }
    }

    /// Whether a token from the store answers `need`: usable; for a refresh
    /// also another token than the one seen, and not itself due.
    fn adoptable(&self, need: &Need, token: &AccessToken) -> bool {
        let schedule = policy::schedule(token, &self.config, store::shared_jitter_unit(token));
        let now = self.clock.now_ms();
        match need {
            Need::Usable => now < schedule.usable_until_ms,
            Need::Newer(seen) => {
                now < schedule.refresh_at_ms
                    && seen
                        .as_ref()
                        .is_none_or(|seen| seen.token.secret() != token.secret())
            }
        }
    }

    /// Makes `token` the current one and schedules its refresh.
    fn install(&self, token: AccessToken, authority: usize) {
        // With a shared store every process derives the same jitter from
        // the token, hence the same refresh instant.
        let jitter = match &self.config.store {
            Some(_) => store::shared_jitter_unit(&token),
            None => self.backoff.unit(),
        };
        let schedule = policy::schedule(&token, &self.config, jitter);
        let hot_until_ms = if self.background.load(Ordering::Acquire) {
            schedule.usable_until_ms
        } else {
            schedule.refresh_at_ms
        };
        let now = self.clock.now_ms();
        tracing::info!(
            target: TARGET,
            authority = self.source.authority_label(authority),
            expires_in_s = token.expires_at_ms().saturating_sub(now) / 1000,
            refresh_in_s = schedule.refresh_at_ms.saturating_sub(now) / 1000,
            "new access token"
        );
        *lock(&self.cooldown) = None;
        self.current.store(Some(Arc::new(Entry {
            token,
            authority,
            usable_until_ms: schedule.usable_until_ms,
            hot_until_ms,
            next_attempt_ms: AtomicU64::new(schedule.refresh_at_ms),
            proactive_failures: AtomicU32::new(0),
        })));
        bump(&self.counters.refreshes);
        self.wake.notify_one();
    }

    /// A proactive refresh of `seen`: one pass, deduplicated; on failure the
    /// current token stays and the next attempt is pushed back.
    async fn refresh_ahead(&self, seen: &Arc<Entry>) -> Outcome {
        let need = Need::Newer(Some(seen.clone()));
        loop {
            let join = self.flight.join(|| self.answer_without_request(&need));
            match join {
                Join::Done(outcome) => {
                    if let Err(error) = &outcome {
                        let floor = self.cooldown_remaining(self.clock.now_ms());
                        self.proactive_failed(error, floor, seen);
                    }
                    return outcome;
                }
                Join::Follow(follower) => {
                    if let Some(outcome) = follower.outcome().await {
                        return outcome;
                    }
                }
                Join::Lead(leader) => {
                    tracing::debug!(
                        target: TARGET,
                        authority = self.source.authority_label(seen.authority),
                        "refreshing the token ahead of expiry"
                    );
                    let outcome = self.through_store(&need, || self.attempt_pass(0)).await;
                    if let Err(error) = &outcome {
                        self.remember_if_permanent(error);
                        self.proactive_failed(error, None, seen);
                    }
                    leader.finish(&outcome);
                    return outcome;
                }
            }
        }
    }

    /// Pushes the next proactive attempt back by the backoff (at least
    /// `floor`, e.g. a cool-down) and says that the old token is still served.
    fn proactive_failed(&self, error: &Error, floor: Option<Duration>, seen: &Entry) {
        let failures = seen.proactive_failures.fetch_add(1, Ordering::Relaxed);
        let retry_after = error.retry_after().max(floor);
        let delay = self
            .backoff
            .delay(failures, retry_after)
            .max(refresher::MIN_PAUSE);
        let now = self.clock.now_ms();
        seen.next_attempt_ms
            .store(now.saturating_add(millis(delay)), Ordering::Release);
        tracing::warn!(
            target: TARGET,
            error = %error,
            retry_in_ms = millis(delay),
            usable_for_s = seen.usable_until_ms.saturating_sub(now) / 1000,
            "refresh ahead of expiry failed; still serving the current token"
        );
    }

    /// One round of the background refresher: refresh if due, then say how
    /// long to sleep.
    async fn refresher_round(&self) -> Duration {
        let check = self.config.wall_clock_check;
        let Some(entry) = self.current.load_full() else {
            return check; // Nothing to refresh; callers fetch the first token.
        };
        let now = self.clock.now_ms();
        let due = entry.next_attempt_ms.load(Ordering::Acquire);
        if now < due {
            return Duration::from_millis(due - now).min(check);
        }
        // Success installs a token (and wakes us); failure pushes
        // the entry's `next_attempt_ms` into the future. Either way: re-plan at once.
        let _ = self.refresh_ahead(&entry).await;
        Duration::ZERO
    }
}
