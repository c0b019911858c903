//! Exponential backoff with full jitter, honouring `Retry-After`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Delays between retries: the `n`-th retry (from 0) waits a uniformly random
/// time between `min` and `min(max, min * 2^n)` ("full jitter", so that many
/// clients that failed together do not retry together), and never less than
/// the server's `Retry-After`.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    rng: Rng,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            rng: Rng::from_entropy(),
        }
    }

    /// The delay before retry number `retry` (0 = the first retry).
    pub(crate) fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        self.delay_with(retry, retry_after, self.rng.next_unit())
    }

    /// As [`delay`](Self::delay) with the random draw `unit` in [0, 1).
    pub(crate) fn delay_with(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Duration {
        let ceiling = self
            .min
            .checked_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        let spread = ceiling.saturating_sub(self.min);
        let jittered = self.min + spread.mul_f64(unit.clamp(0.0, 1.0));
        jittered.max(retry_after.unwrap_or_default())
    }

    /// The same with a fixed seed, so a simulated run can be replayed.
    #[cfg(test)]
    pub(crate) fn seeded(min: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            min,
            max: max.max(min),
            rng: Rng(AtomicU64::new(seed)),
        }
    }

    /// A uniform draw in [0, 1), e.g. for the refresh jitter.
    pub(crate) fn unit(&self) -> f64 {
        self.rng.next_unit()
    }
}

/// A tiny lock-free SplitMix64 generator: jitter needs spread, not secrecy.
#[derive(Debug)]
struct Rng(AtomicU64);

impl Rng {
    fn from_entropy() -> Self {
        let seed = getrandom::u64().unwrap_or_else(|_| {
            // No OS entropy: the time still differs between processes.
            crate::clock::unix_millis(std::time::SystemTime::now()) ^ 0x5DEE_CE66_D1CE_4E5B
        });
        Rng(AtomicU64::new(seed))
    }

    fn next_unit(&self) -> f64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits make an exact f64 in [0, 1).
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ceiling_doubles_from_200ms_to_30s() {
        let b = Backoff::new(ms(200), Duration::from_secs(30));
        let top = |retry| b.delay_with(retry, None, 0.999_999_9);
        assert_eq!(b.delay_with(0, None, 0.5), ms(200));
        assert!(top(1).abs_diff(ms(400)) < ms(1));
        assert!(top(2).abs_diff(ms(800)) < ms(1));
        assert!(top(7).abs_diff(ms(25_600)) < ms(1));
        assert!(top(8).abs_diff(ms(30_000)) < ms(1));
        assert!(top(1000).abs_diff(ms(30_000)) < ms(1));
        assert_eq!(b.delay_with(1000, None, 0.0), ms(200));
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        let b = Backoff::new(ms(200), Duration::from_secs(30));
        let draws: Vec<Duration> = (0..2000).map(|_| b.delay(10, None)).collect();
        assert!(draws.iter().all(|d| *d >= ms(200) && *d <= ms(30_000)));
        let low = draws.iter().filter(|d| **d < ms(10_000)).count();
        let high = draws.iter().filter(|d| **d > ms(20_000)).count();
        // Uniform: about a third each; far from it means no jitter.
        assert!((500..830).contains(&low), "{low}");
        assert!((500..830).contains(&high), "{high}");
    }

    #[test]
    fn retry_after_is_a_floor_even_above_the_maximum() {
        let b = Backoff::new(ms(200), Duration::from_secs(30));
        assert_eq!(b.delay_with(0, Some(ms(5000)), 0.5), ms(5000));
        assert_eq!(
            b.delay_with(0, Some(Duration::from_secs(120)), 0.5),
            Duration::from_secs(120)
        );
        // A short Retry-After does not shorten the backoff.
        assert_eq!(b.delay_with(3, Some(ms(1)), 0.0), ms(200));
    }

    #[test]
    fn units_are_in_range() {
        let b = Backoff::new(ms(1), ms(2));
        for _ in 0..10_000 {
            let u = b.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
