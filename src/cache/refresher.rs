//! Refreshing ahead of expiry: the background task, and a caller's own
//! refresh when no live task takes care of it.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::acquire::Need;
use super::flight::Outcome;
use super::policy::Entry;
use super::{millis, Shared, TARGET};
use crate::error::Error;

/// The refresher sleeps at least this long after a failed attempt, whatever
/// the backoff says, so that a zero backoff cannot make it spin.
pub(super) const MIN_PAUSE: Duration = Duration::from_millis(10);

/// A live refresher that has not acted this long after a refresh fell due
/// is not being driven (a current-thread runtime between short `block_on`
/// calls): callers then refresh themselves.
pub(super) const STALL_GRACE: Duration = Duration::from_secs(2);

/// How long a caller that refreshes itself waits for the new token before
/// it goes on with the still-valid one (the acquisition carries on).
const CALLER_WAIT: Duration = Duration::from_secs(2);

/// Runs until the cache is gone. Holds only a `Weak` between rounds, so it
/// never keeps a dropped client alive; the cache also aborts it on drop.
///
/// It sleeps until the next refresh is due but never longer than
/// `wall_clock_check`: a monotonic timer does not count the hours a PC
/// slept, so the wall clock is re-read at least that often.
pub(super) fn run(cache: Weak<Shared>, wake: Arc<Notify>) -> impl Future<Output = ()> {
    // Dropped with the task, also when its runtime shuts down before it
    // ever ran: callers then know that nobody refreshes in the background.
    let alive = Alive(cache.clone());
    async move {
        let _alive = alive;
        rounds(cache, wake).await;
    }
}

async fn rounds(cache: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let pause = match cache.upgrade() {
            Some(shared) => shared.refresher_round().await,
            None => return,
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = wake.notified() => {}
        }
    }
}

struct Alive(Weak<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.refresher_alive.store(false, Ordering::Release);
        }
    }
}

impl Shared {
    /// One round of the background refresher: refresh if due, then say how
    /// long to sleep.
    async fn refresher_round(self: &Arc<Self>) -> Duration {
        let check = self.config.wall_clock_check;
        let Some(entry) = self.current.load_full() else {
            return check; // Nothing to refresh; callers fetch the first token.
        };
        let now = self.clock.now_ms();
        let due = entry.next_attempt_ms.load(Ordering::Acquire);
        if now < due {
            return Duration::from_millis(due - now).min(check);
        }
        // Success installs a token (and wakes us); failure pushes the
        // entry's next attempt into the future. Either way: re-plan at once.
        let _ = self.refresh_ahead(&entry).await;
        Duration::ZERO
    }

    /// A proactive refresh of `seen` through the one acquisition; on
    /// failure the current token stays and the next attempt is pushed back.
    async fn refresh_ahead(self: &Arc<Self>, seen: &Arc<Entry>) -> Outcome {
        tracing::debug!(
            target: TARGET,
            authority = self.source.authority_label(seen.authority),
            "refreshing the token ahead of expiry"
        );
        // While it runs, callers are served from the hot path (up to the
        // deadline; a failure then pushes the next attempt back).
        let now = self.clock.now_ms();
        let busy_until = now.saturating_add(millis(self.config.retry_deadline));
        seen.hot_until_ms
            .fetch_max(busy_until.min(seen.usable_until_ms), Ordering::AcqRel);
        let outcome = self.acquire(Need::Newer(Some(seen.clone()))).await;
        if let Err(error) = &outcome {
            let floor = self.cooldown_remaining(self.clock.now_ms());
            self.proactive_failed(error, floor, seen);
        }
        outcome
    }

    /// A caller's refresh when no live refresher does it: waits a little
    /// for the new token, then goes on with the current one while the
    /// acquisition carries on (in a runtime that lives on).
    pub(super) async fn refresh_ahead_for_caller(self: &Arc<Self>, seen: &Arc<Entry>) -> Outcome {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.refresh_ahead(seen).await;
        }
        match tokio::time::timeout(CALLER_WAIT, self.refresh_ahead(seen)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // Not the cause of a failure: callers keep the current token.
                let slow = Error::new(crate::error::ErrorKind::Timeout, "refresh still running");
                self.proactive_failed(&slow, None, seen);
                Err(slow)
            }
        }
    }

    /// Pushes the next proactive attempt back by the backoff (at least
    /// `floor`, e.g. a cool-down) and says that the old token is still served.
    fn proactive_failed(&self, error: &Error, floor: Option<Duration>, seen: &Entry) {
        let failures = seen.proactive_failures.fetch_add(1, Ordering::Relaxed);
        let retry_after = error.retry_after().max(floor);
        let delay = self.backoff.delay(failures, retry_after).max(MIN_PAUSE);
        let now = self.clock.now_ms();
        let next = now.saturating_add(millis(delay));
        seen.next_attempt_ms.store(next, Ordering::Release);
        seen.hot_until_ms
            .store(next.min(seen.usable_until_ms), Ordering::Release);
        tracing::warn!(
            target: TARGET,
            error = %error,
            retry_in_ms = millis(delay),
            usable_for_s = seen.usable_until_ms.saturating_sub(now) / 1000,
            "refresh ahead of expiry failed; still serving the current token"
        );
    }
}
