//! The one acquisition in flight. Its leader runs it in a task the cache
//! spawns (see `Shared::acquire`), so no caller owns it: callers only hold
//! a receiver of its outcome, and one that gives up cancels nothing.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use crate::error::Result;
use crate::token::AccessToken;

/// The outcome every caller of one acquisition gets (`Error` is cheap to clone).
pub(crate) type Outcome = Result<AccessToken>;

type Channel = watch::Receiver<Option<Outcome>>;

/// At most one acquisition in flight. The slot is a plain mutex taken only
/// on the slow path, for a few instructions, never across an `.await`.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    slot: Mutex<Option<Channel>>,
}

/// What a caller does after [`Flight::join`].
pub(crate) enum Join {
    /// Nothing to wait for: the check under the lock answered.
    Done(Outcome),
    /// An acquisition is in flight: wait for its outcome.
    Wait(Waiter),
    /// Nothing in flight: run one and [`finish`](Flight::finish) it.
    Lead(Leader),
}

impl Flight {
    fn lock(&self) -> MutexGuard<'_, Option<Channel>> {
        super::lock(&self.slot)
    }

    /// Joins the acquisition in flight or starts one. `check` runs under the
    /// lock before a new one starts; whatever it answers ends the call. This
    /// closes the race where an acquisition finished between the caller's
    /// lock-free read and this call (it stores the token before it clears
    /// the slot, so `check` sees it).
    pub(crate) fn join(&self, check: impl FnOnce() -> Option<Outcome>) -> Join {
        let mut slot = self.lock();
        // A closed channel is an acquisition whose task was dropped (its
        // runtime went away) before it finished: the slot is free.
        if let Some(rx) = slot.as_ref().filter(|rx| rx.has_changed().is_ok()) {
            return Join::Wait(Waiter(rx.clone()));
        }
        if let Some(outcome) = check() {
            *slot = None;
            return Join::Done(outcome);
        }
        let (tx, rx) = watch::channel(None);
        *slot = Some(rx);
        Join::Lead(Leader(tx))
    }

    /// Frees the slot, then hands `outcome` to every waiter.
    pub(crate) fn finish(&self, leader: Leader, outcome: &Outcome) {
        {
            let mut slot = self.lock();
            if slot
                .as_ref()
                .is_some_and(|rx| rx.same_channel(&leader.0.subscribe()))
            {
                *slot = None;
            }
        }
        leader.0.send_replace(Some(outcome.clone()));
    }

    /// Whether an acquisition is in flight.
    pub(crate) fn in_progress(&self) -> bool {
        self.lock()
            .as_ref()
            .is_some_and(|rx| rx.has_changed().is_ok())
    }
}

/// Waits for the outcome of the acquisition in flight.
#[derive(Debug)]
pub(crate) struct Waiter(Channel);

impl Waiter {
    /// The outcome, or `None` when the acquisition was dropped before it had
    /// one (its runtime shut down): then the caller joins again.
    pub(crate) async fn outcome(mut self) -> Option<Outcome> {
        match self.0.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        }
    }
}

/// The right to run the acquisition; dropping it unfinished frees the slot
/// (the channel closes, and [`Flight::join`] treats a closed one as free).
#[derive(Debug)]
pub(crate) struct Leader(watch::Sender<Option<Outcome>>);

impl Leader {
    /// A waiter for this leader's own outcome.
    pub(crate) fn waiter(&self) -> Waiter {
        Waiter(self.0.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorKind};

    #[tokio::test]
    async fn waiters_get_the_leaders_outcome() {
        let flight = Flight::default();
        let Join::Lead(leader) = flight.join(|| None) else {
            panic!("first caller leads")
        };
        let Join::Wait(w1) = flight.join(|| None) else {
            panic!("second caller waits")
        };
        let Join::Wait(w2) = flight.join(|| unreachable!("no check while in flight")) else {
            panic!("third caller waits")
        };
        assert!(flight.in_progress());
        flight.finish(leader, &Err(Error::new(ErrorKind::Transport, "refused")));
        assert!(!flight.in_progress());
        for w in [w1, w2] {
            let err = w.outcome().await.unwrap().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Transport);
        }
    }

    #[tokio::test]
    async fn a_dropped_leader_frees_the_slot_and_releases_its_waiters() {
        let flight = Flight::default();
        let Join::Lead(leader) = flight.join(|| None) else {
            panic!()
        };
        let Join::Wait(w) = flight.join(|| None) else {
            panic!()
        };
        drop(leader);
        assert!(w.outcome().await.is_none());
        assert!(!flight.in_progress());
        assert!(matches!(flight.join(|| None), Join::Lead(_)));
    }

    #[test]
    fn the_check_answers_when_nothing_is_in_flight() {
        let flight = Flight::default();
        let join = flight.join(|| Some(Err(Error::config("cooling down"))));
        assert!(matches!(join, Join::Done(Err(_))));
        assert!(!flight.in_progress());
    }
}
