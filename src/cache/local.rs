//! Copies of the current token, one per stripe of threads, kept in the
//! cache entry.
//!
//! Handing out clones of one `Arc` makes every `token()` call increment (and
//! every drop decrement) a reference count on a cache line that all cores
//! write: under contention that line bouncing between cores costs more than
//! the rest of the cached read together. So the entry keeps up to
//! [`STRIPES`] copies of its token (same id, so
//! [`AccessToken::same_as`] still says it is the same token), made on first
//! use by a thread of that stripe, and each thread clones its stripe's copy.
//!
//! The copies live in the entry, not in thread-local storage: they go when
//! the entry goes (a refresh, an invalidation, the client dropped), however
//! many clients a thread uses in turn, and no thread keeps a bearer token
//! after the cache moved on.

use std::sync::OnceLock;

use super::stats::STRIPES;
use crate::token::AccessToken;

/// The per-stripe copies of one entry's token.
#[derive(Debug, Default)]
pub(crate) struct Copies {
    slots: [Slot; STRIPES],
}

/// One copy on its own pair of cache lines (adjacent-line prefetching makes
/// 64 bytes not enough on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(OnceLock<AccessToken>);

impl Copies {
    /// A clone of `token` whose reference count only this stripe's threads touch.
    #[cfg(test)]
    pub(crate) fn token(&self, token: &AccessToken) -> AccessToken {
        self.token_at(super::stats::stripe(), token)
    }

    /// As [`token`](Self::token) for the stripe the caller already looked up.
    #[inline]
    pub(crate) fn token_at(&self, stripe: usize, token: &AccessToken) -> AccessToken {
        self.slots[stripe % STRIPES]
            .0
            .get_or_init(|| token.private_copy())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn same_token_private_count_made_once() {
        let token = AccessToken::new("one", SystemTime::now());
        let copies = Copies::default();
        let a = copies.token(&token);
        let b = copies.token(&token);
        assert!(a.same_as(&token) && b.same_as(&token));
        assert_eq!(a.secret(), "one");
        // A private copy (its own allocation, hence its own reference
        // count), made once and then reused: not the shared one, not per call.
        assert_ne!(a.secret().as_ptr(), token.secret().as_ptr());
        assert_eq!(a.secret().as_ptr(), b.secret().as_ptr());
    }

    #[test]
    fn threads_on_other_stripes_get_other_copies() {
        let token = AccessToken::new("t", SystemTime::now());
        let copies = Copies::default();
        let here = copies.token(&token).secret().as_ptr() as usize;
        let there = std::thread::scope(|s| {
            s.spawn(|| copies.token(&token).secret().as_ptr() as usize)
                .join()
                .unwrap()
        });
        // New threads take the next stripe, so the two differ.
        assert_ne!(here, there);
    }

    #[test]
    fn dropping_the_copies_releases_every_copy() {
        let token = AccessToken::new("t", SystemTime::now());
        let copies = Copies::default();
        let handed_out = copies.token(&token);
        assert_eq!(handed_out.ref_count(), 2);
        drop(copies);
        assert_eq!(handed_out.ref_count(), 1, "no copy left anywhere");
    }
}
