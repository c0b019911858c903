//! Per-thread copies of the current token.
//!
//! Handing out clones of one `Arc` makes every `token()` call increment (and
//! every drop decrement) a reference count on a cache line that all cores
//! write: under contention that line bouncing between cores costs more than
//! the rest of the cached read together. Each thread therefore keeps its own
//! copy of the current token (same id, so [`AccessToken::same_as`] still
//! says it is the same token) and clones that one. The copy is made once per
//! thread per token, i.e. once per refresh.
//!
//! A copy stays in its thread until a newer token replaces it or the thread
//! exits (its secret is zeroized then, as every `SecretString`); it is never
//! handed out once the cache has moved on, because it is only returned when
//! its id matches the cache's current token.

use std::cell::RefCell;

use crate::token::AccessToken;

/// Caches remembered per thread; more clients used in turn on one thread
/// just make more copies.
const SLOTS: usize = 8;

struct Slots {
    slots: [Option<(usize, AccessToken)>; SLOTS],
    next_victim: usize,
}

thread_local! {
    static LOCAL: RefCell<Slots> = const {
        RefCell::new(Slots { slots: [const { None }; SLOTS], next_victim: 0 })
    };
}

/// A clone of `current` whose reference count is private to this thread.
/// `cache` tells apart the caches of different clients; correctness rests on
/// the token id alone (a reused address finds a different id and is replaced).
#[inline]
pub(crate) fn token(cache: usize, current: &AccessToken) -> AccessToken {
    LOCAL
        .try_with(|local| {
            let mut local = local.try_borrow_mut().ok()?;
            Some(local.get_or_copy(cache, current))
        })
        .ok()
        .flatten()
        // Thread-local storage is being torn down (a destructor calling us):
        // fall back to the shared reference count.
        .unwrap_or_else(|| current.clone())
}

impl Slots {
    fn get_or_copy(&mut self, cache: usize, current: &AccessToken) -> AccessToken {
        let mut victim = None;
        for (i, slot) in self.slots.iter().enumerate() {
            match slot {
                Some((key, token)) if *key == cache => {
                    if token.id() == current.id() {
                        return token.clone();
                    }
                    victim = Some(i);
                    break;
                }
                None if victim.is_none() => victim = Some(i),
                _ => {}
            }
        }
        let i = victim.unwrap_or_else(|| {
            let i = self.next_victim;
            self.next_victim = (i + 1) % SLOTS;
            i
        });
        let copy = current.private_copy();
        self.slots[i] = Some((cache, copy.clone()));
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn same_token_private_count_and_follows_refreshes() {
        let first = AccessToken::new("one", SystemTime::now());
        let a = token(1, &first);
        let b = token(1, &first);
        assert!(a.same_as(&first) && b.same_as(&first));
        assert_eq!(a.secret(), "one");
        // A private copy (its own allocation, hence its own reference
        // count), made once and then reused: not the shared one, not per call.
        assert_ne!(a.secret().as_ptr(), first.secret().as_ptr());
        assert_eq!(a.secret().as_ptr(), b.secret().as_ptr());
        let second = AccessToken::new("two", SystemTime::now());
        let c = token(1, &second);
        assert!(c.same_as(&second));
        assert_eq!(c.secret(), "two");
    }

    #[test]
    fn many_caches_on_one_thread_stay_correct() {
        let tokens: Vec<_> = (0..20)
            .map(|i| AccessToken::new(format!("t{i}"), SystemTime::now()))
            .collect();
        for _ in 0..3 {
            for (cache, t) in tokens.iter().enumerate() {
                assert!(token(cache, t).same_as(t));
            }
        }
    }
}
