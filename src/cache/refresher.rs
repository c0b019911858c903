//! The background task that refreshes the token ahead of expiry.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::Shared;

/// Runs until the cache is gone. Holds only a `Weak` between rounds, so it
/// never keeps a dropped client alive; the cache also aborts it on drop.
///
/// It sleeps until the next refresh is due but never longer than
/// `wall_clock_check`: a monotonic timer does not count the hours a PC
/// slept, so the wall clock is re-read at least that often.
pub(super) async fn run(cache: Weak<Shared>, wake: Arc<Notify>) {
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

/// The refresher sleeps at least this long after a failed attempt, whatever
/// the backoff says, so that a zero backoff cannot make it spin.
pub(super) const MIN_PAUSE: Duration = Duration::from_millis(10);
