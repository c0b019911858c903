//! The cache's counters and their public snapshot.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of the cache's counters, from [`AimClient::stats`](crate::AimClient::stats).
///
/// ```
/// # async fn run(aim: aim_token::AimClient) {
/// let stats = aim.stats();
/// println!("{} requests to AIM, {} served from cache", stats.token_requests, stats.cache_hits);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Token requests sent to AIM (each attempt against each node counts).
    pub token_requests: u64,
    /// Successful acquisitions (first token and every refresh).
    pub refreshes: u64,
    /// Failed token requests.
    pub failures: u64,
    /// `token()` calls answered from the cache.
    pub cache_hits: u64,
    /// Times a failing node was left for the next fallback authority.
    pub failovers: u64,
    /// Calls answered with a remembered permanent error, without a request.
    pub cooldown_rejections: u64,
    /// Acquisitions answered by the shared token store (another process's token).
    pub store_hits: u64,
    /// Store reads that found no usable entry (none, expired, sealed with
    /// another secret, tampered with).
    pub store_misses: u64,
    /// Store operations that failed or timed out (the client then asked AIM).
    pub store_errors: u64,
    /// Acquisitions that waited for another process holding the store's lease.
    pub lease_waits: u64,
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) token_requests: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) cache_hits: StripedCounter,
    pub(crate) failovers: AtomicU64,
    pub(crate) cooldown_rejections: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            token_requests: get(&self.token_requests),
            refreshes: get(&self.refreshes),
            failures: get(&self.failures),
            cache_hits: self.cache_hits.sum(),
            failovers: get(&self.failovers),
            cooldown_rejections: get(&self.cooldown_rejections),
            ..Stats::default()
        }
    }
}

/// Adds one to `counter` (relaxed: counters order nothing).
#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

const STRIPES: usize = 16;

/// A counter split over cache lines, one per thread (modulo 16), so that
/// threads counting cache hits at once do not fight over one line.
#[derive(Debug, Default)]
pub(crate) struct StripedCounter {
    stripes: [Padded; STRIPES],
}

/// One stripe on its own pair of cache lines (128 bytes: adjacent-line
/// prefetching makes 64 not enough on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

#[inline]
fn stripe() -> usize {
    STRIPE
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
                s.set(i);
            }
            i
        })
        .unwrap_or(0)
}

impl StripedCounter {
    #[inline]
    pub(crate) fn incr(&self) {
        self.stripes[stripe()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn striped_counter_counts_across_threads() {
        let c = Arc::new(StripedCounter::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        c.incr();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.sum(), 80_000);
        assert!(std::mem::align_of::<Padded>() >= 128);
    }
}
