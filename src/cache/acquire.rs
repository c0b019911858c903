//! The one acquisition: a task the cache owns, with one retry policy for
//! every caller, the refresher and `refresh()`, run through the shared token
//! store when there is one ([`Shared::through_store`] around
//! [`Shared::acquisition`]: "from the store, else from AIM").

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument as _;

use super::flight::{Join, Leader, Outcome};
use super::policy::{self, Entry};
use super::stats::bump;
use super::{lock, millis, Cooldown, Shared, TARGET};
use crate::error::{Error, ErrorKind};
use crate::store::{self, Obtained};
use crate::token::AccessToken;

/// OAuth errors that no retry can fix; remembered for `error_cooldown`.
pub(super) const PERMANENT_OAUTH_ERRORS: [&str; 4] = [
    "invalid_client",
    "invalid_scope",
    "unauthorized_client",
    "unsupported_grant_type",
];

/// Where a retry deadline beyond what an `Instant` can hold ends (the same
/// 30 years tokio uses for "never").
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// What an acquisition must produce.
#[derive(Clone)]
pub(crate) enum Need {
    /// Any usable token (a cached one, if another caller just got it).
    Usable,
    /// A token other than this entry (`refresh()`, refresh ahead): holding
    /// the `Arc` keeps its address from being reused, so a pointer
    /// comparison tells whether another acquisition finished meanwhile.
    Newer(Option<Arc<Entry>>),
}

impl Shared {
    /// Joins the acquisition in flight or starts one, and awaits its
    /// outcome. In a tokio runtime the acquisition runs in a task of its
    /// own, so this future may be dropped at any point without cancelling
    /// it; outside one (no timers, nowhere to spawn) the caller runs it.
    pub(super) async fn acquire(self: &Arc<Self>, need: Need) -> Outcome {
        loop {
            let (waiter, led) = match self.flight.join(|| self.answer_without_request(&need)) {
                Join::Done(outcome) => return outcome,
                Join::Wait(waiter) => (waiter, false),
                Join::Lead(leader) => match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => (self.spawn_acquisition(&runtime, leader, need.clone()), true),
                    Err(_) => {
                        let outcome = self.through_store(&need, || self.acquisition(false)).await;
                        self.flight.finish(leader, &outcome);
                        return outcome;
                    }
                },
            };
            if let Some(outcome) = waiter.outcome().await {
                return outcome;
            }
            if led {
                // The task we spawned was dropped unfinished: our own
                // runtime is shutting down, and trying again would spin.
                return Err(Error::new(
                    ErrorKind::Transport,
                    "the tokio runtime is shutting down, so no token request can run: call token() from a running runtime",
                ));
            }
            // Another runtime's acquisition went with it: join again, perhaps as leader.
        }
    }

    fn spawn_acquisition(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        leader: Leader,
        need: Need,
    ) -> super::flight::Waiter {
        let waiter = leader.waiter();
        let shared = self.clone();
        // Held across the spawn: on a multi-thread runtime this task can
        // finish and a newer flight record its handle before we would, and
        // we must not overwrite the newer one (dropping the client would
        // then abort a finished task and leave the newer one running).
        let mut slot = lock(&self.acquisition);
        let task = runtime.spawn(async move {
            let outcome = shared
                .through_store(&need, || shared.acquisition(true))
                .await;
            shared.flight.finish(leader, &outcome);
        });
        *slot = Some(task.abort_handle());
        waiter
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

    pub(super) fn cooldown_remaining(&self, now: u64) -> Option<Duration> {
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

    /// The acquisition: attempt passes with backoff between them until one
    /// succeeds, a permanent error, or the retry deadline, which also bounds
    /// every attempt. `timers: false` (no tokio runtime): one pass.
    pub(super) async fn acquisition(&self, timers: bool) -> Outcome {
        let started = Instant::now();
        let deadline = self.config.retry_deadline;
        // Zero means one attempt per authority, bounded by request_timeout only.
        // One too far for an `Instant` (`Duration::MAX`) means "no limit",
        // not "no retries": it becomes the far future.
        let deadline_at = (timers && !deadline.is_zero())
            .then(|| {
                started
                    .checked_add(deadline)
                    .or_else(|| started.checked_add(FAR_FUTURE))
            })
            .flatten();
        let mut last = None;
        let mut retry = 0u32;
        loop {
            let error = match self.attempt_pass(retry, deadline_at, &mut last).await {
                Ok(token) => return Ok(token),
                Err(error) => error,
            };
            if !error.is_transient() {
                return Err(error);
            }
            let Some(deadline_at) = deadline_at else {
                return Err(error);
            };
            let now = Instant::now();
            let delay = self.backoff.delay(retry, error.retry_after());
            let no_time = now >= deadline_at;
            if no_time || now.checked_add(delay).is_none_or(|at| at >= deadline_at) {
                if retry == 0 && !no_time {
                    // One attempt, and the server's Retry-After (or the
                    // backoff) lies past the deadline: its answer as is.
                    return Err(error);
                }
                return Err(deadline_error(error, deadline, retry, started.elapsed()));
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
    /// a failure another node can fix. Stores the token on success.
    async fn attempt_pass(
        &self,
        retry: u32,
        deadline_at: Option<Instant>,
        last: &mut Option<Error>,
    ) -> Outcome {
        let count = self.source.authority_count().max(1);
        let mut primary_error: Option<Error> = None;
        for index in 0..count {
            // A node that hangs gets its share of what remains, so the
            // nodes after it still get a chance within the deadline.
            let share = deadline_at.map(|at| {
                let now = Instant::now();
                let left = at.saturating_duration_since(now);
                let nodes_left = u32::try_from(count - index).unwrap_or(u32::MAX);
                now + left / nodes_left
            });
            let error = match self.fetch_one(index, retry, share, last).await {
                Ok(token) => {
                    self.install(token.clone(), index);
                    return Ok(token);
                }
                Err(error) => error,
            };
            if index == 0 {
                // Only the primary's permanent errors cool the client down.
                self.remember_if_permanent(&error);
            }
            let timed_out = deadline_at.is_some_and(|at| Instant::now() >= at);
            if timed_out || !can_fail_over(&error) || index + 1 == count {
                // A fallback's permanent answer is its own business: the
                // primary's (transient) failure decides about retrying.
                return Err(match primary_error {
                    Some(primary) if index > 0 && !error.is_transient() && !timed_out => primary
                        .context(format_args!(
                            "the fallback {} refused too: {error}",
                            self.source.authority_label(index)
                        )),
                    _ => error,
                });
            }
            bump(&self.counters.failovers);
            tracing::warn!(
                target: TARGET,
                from = self.source.authority_label(index),
                to = self.source.authority_label(index + 1),
                error = %error,
                "AIM node failing; failing over to the next one"
            );
            if index == 0 {
                primary_error = Some(error);
            }
        }
        Err(Error::config("no authority is configured"))
    }

    /// One token request, cut off at `deadline_at`. Its span adds the attempt
    /// number to the exchange's own span (authority, client ID, status,
    /// outcome, latency). `last` keeps the last error an attempt returned.
    async fn fetch_one(
        &self,
        index: usize,
        retry: u32,
        deadline_at: Option<Instant>,
        last: &mut Option<Error>,
    ) -> Outcome {
        let label = self.source.authority_label(index);
        if deadline_at.is_some_and(|at| Instant::now() >= at) {
            return Err(no_time_left(label, last.take()));
        }
        bump(&self.counters.token_requests);
        let span = tracing::debug_span!(
            target: TARGET,
            "token_attempt",
            attempt = retry + 1,
            node = index,
            outcome = tracing::field::Empty,
        );
        let request = self.source.fetch(index).instrument(span.clone());
        let result = match deadline_at {
            Some(at) => match tokio::time::timeout_at(at, request).await {
                Ok(result) => result,
                Err(_) => Err(no_time_left(label, last.take())),
            },
            None => request.await,
        };
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
                    authority = label,
                    client_id = %self.client_id,
                    error = %error,
                    "token request failed"
                );
                *last = Some(error.clone());
            }
        }
        result
    }

    /// THE seam to the shared store: the acquisition runs through the store
    /// (lease, re-read, `fetch`, write) when there is one. A token another
    /// process stored is installed here; `fetch` installs its own.
    async fn through_store<F: Future<Output = Outcome>>(
        &self,
        need: &Need,
        fetch: impl FnOnce() -> F,
    ) -> Outcome {
        let Some(store) = &self.config.store else {
            return fetch().await;
        };
        let now_ms = || self.clock.now_ms();
        let accept = |token: &AccessToken| self.adoptable(need, token);
        let judge = store::Judge {
            now_ms: &now_ms,
            accept: &accept,
        };
        match store.acquire(&judge, fetch).await {
            Obtained::Stored(token) => {
                self.install(token.clone(), self.authority_of(&token));
                Ok(token)
            }
            // The fetch counted and installed its token; this one replaces
            // it without counting a second acquisition.
            Obtained::Kept(token) => {
                self.set_current(token.clone(), self.authority_of(&token));
                Ok(token)
            }
            Obtained::Fetched(outcome) => outcome,
        }
    }

    /// The index of the authority that issued a stored token (0 if none of ours).
    fn authority_of(&self, token: &AccessToken) -> usize {
        (0..self.source.authority_count())
            .find(|&i| self.source.authority_label(i) == token.authority())
            .unwrap_or(0)
    }

    /// Whether a token from the store answers `need`: usable; for a refresh
    /// also another token than the one seen, and not itself due. Never one
    /// "issued" further in this clock's future than the expiry margin: its
    /// writer's clock is ahead, so its expiry is too, and it would be
    /// handed out after it expired.
    fn adoptable(&self, need: &Need, token: &AccessToken) -> bool {
        let schedule = policy::schedule(token, &self.config, store::shared_jitter_unit(token));
        let now = self.clock.now_ms();
        let issued = crate::clock::unix_millis(token.issued_at());
        if issued > now.saturating_add(millis(self.config.expiry_margin)) {
            return false;
        }
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

    /// Makes `token` the current one, schedules its refresh and counts the
    /// acquisition.
    fn install(&self, token: AccessToken, authority: usize) {
        self.set_current(token, authority);
        bump(&self.counters.refreshes);
    }

    /// Makes `token` the current one and schedules its refresh.
    fn set_current(&self, token: AccessToken, authority: usize) {
        // With a shared store every process derives the same jitter from
        // the token, hence the same refresh instant.
        let jitter = match &self.config.store {
            Some(_) => store::shared_jitter_unit(&token),
            None => self.backoff.unit(),
        };
        let schedule = policy::schedule(&token, &self.config, jitter);
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
            hot_until_ms: AtomicU64::new(schedule.refresh_at_ms),
            next_attempt_ms: AtomicU64::new(schedule.refresh_at_ms),
            proactive_failures: AtomicU32::new(0),
            copies: super::local::Copies::default(),
        })));
        self.wake.notify_one();
    }
}

/// Whether another node may succeed where this one failed: anything but a
/// §5.2 answer that no retry can fix (and our own configuration).
fn can_fail_over(error: &Error) -> bool {
    error.is_transient() || !matches!(error.kind(), ErrorKind::OAuth | ErrorKind::Config)
}

/// The deadline ran out: a `Timeout` whose cause is the last attempt's error.
fn deadline_error(error: Error, deadline: Duration, retry: u32, elapsed: Duration) -> Error {
    use crate::duration_text::human;
    if error.kind() == ErrorKind::Timeout && retry == 0 {
        return error;
    }
    Error::new(
        ErrorKind::Timeout,
        format!(
            "no token within the retry deadline ({}): gave up after {} attempts in {}; the last one: {error}",
            human(deadline),
            retry + 1,
            human(elapsed)
        ),
    )
    .transient(true)
    .with_retry_after(error.retry_after())
    .with_source(error)
}

/// The deadline cut an attempt off (or left no time for one).
fn no_time_left(label: &str, last: Option<Error>) -> Error {
    let cause = last.unwrap_or_else(|| {
        Error::new(
            ErrorKind::Timeout,
            format!("{label} accepted the token request but did not answer in time"),
        )
        .transient(true)
    });
    Error::new(
        ErrorKind::Timeout,
        format!(
            "no token from {label} within (its share of) the retry deadline: {cause}; check that AIM is up (its IIS app pool may be starting) or raise retry_deadline"
        ),
    )
    .transient(true)
    .with_source(cause)
}
