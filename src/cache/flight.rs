//! Single flight: however many callers need a token at once, one of them
//! (the leader) sends the request and all of them get its outcome.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use crate::error::Result;
use crate::token::AccessToken;

/// The outcome every caller of one flight gets (`Error` is cheap to clone).
pub(crate) type Outcome = Result<AccessToken>;

type Slot = Option<watch::Receiver<Option<Outcome>>>;

/// At most one acquisition in flight. The slot is a plain mutex taken only
/// on the slow path, for a few instructions, never across an `.await`.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    slot: Mutex<Slot>,
}

/// What a caller does after [`Flight::join`].
pub(crate) enum Join<'a> {
    /// Nothing to wait for: the check under the lock answered.
    Done(Outcome),
    /// Another caller's request is in flight: wait for its outcome.
    Follow(Follower),
    /// No request in flight: send one and [`finish`](Leader::finish) it.
    Lead(Leader<'a>),
}

impl Flight {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        super::lock(&self.slot)
    }

    /// Joins the flight in progress or starts one. `check` runs under the
    /// lock before a new flight starts; whatever it answers ends the call.
    /// This closes the race where a flight finished between the caller's
    /// lock-free read and this call (the winner stores the token before it
    /// clears the slot, so `check` sees it).
    pub(crate) fn join(&self, check: impl FnOnce() -> Option<Outcome>) -> Join<'_> {
        let mut slot = self.lock();
        if let Some(rx) = slot.as_ref() {
            return Join::Follow(Follower(rx.clone()));
        }
        if let Some(outcome) = check() {
            return Join::Done(outcome);
        }
        let (tx, rx) = watch::channel(None);
        *slot = Some(rx);
        Join::Lead(Leader { flight: self, tx })
    }

    /// Whether a flight is in progress.
    #[cfg(test)]
    pub(crate) fn in_progress(&self) -> bool {
        self.lock().is_some()
    }
}

/// Waits for the leader's outcome.
pub(crate) struct Follower(watch::Receiver<Option<Outcome>>);

impl Follower {
    /// The leader's outcome, or `None` when the leader was cancelled before
    /// it had one (then the caller joins again and may lead).
    pub(crate) async fn outcome(mut self) -> Option<Outcome> {
        match self.0.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        }
    }
}

/// The caller that sends the request. Dropping it (the leader's future was
/// cancelled) frees the slot, so followers do not wait forever.
pub(crate) struct Leader<'a> {
    flight: &'a Flight,
    tx: watch::Sender<Option<Outcome>>,
}

impl Leader<'_> {
    /// Hands `outcome` to every follower and frees the slot.
    pub(crate) fn finish(self, outcome: &Outcome) {
        self.tx.send_replace(Some(outcome.clone()));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        *self.flight.lock() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorKind};

    #[tokio::test]
    async fn followers_get_the_leaders_outcome() {
        let flight = Flight::default();
        let Join::Lead(leader) = flight.join(|| None) else {
            panic!("first caller leads")
        };
        let Join::Follow(f1) = flight.join(|| None) else {
            panic!("second caller follows")
        };
        let Join::Follow(f2) = flight.join(|| unreachable!("no check while in flight")) else {
            panic!("third caller follows")
        };
        assert!(flight.in_progress());
        leader.finish(&Err(Error::new(ErrorKind::Transport, "refused")));
        assert!(!flight.in_progress());
        for f in [f1, f2] {
            let err = f.outcome().await.unwrap().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Transport);
        }
    }

    #[tokio::test]
    async fn a_cancelled_leader_releases_its_followers() {
        let flight = Flight::default();
        let Join::Lead(leader) = flight.join(|| None) else {
            panic!()
        };
        let Join::Follow(f) = flight.join(|| None) else {
            panic!()
        };
        drop(leader);
        assert!(f.outcome().await.is_none());
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
