//! When a token is refreshed and until when it may be handed out, and the
//! wall clock those instants are compared against.

use super::config::CacheConfig;
use super::millis;
use crate::clock::{system_now_ms, unix_millis, Clock};
use crate::token::AccessToken;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

/// The wall clock of the cache, in Unix milliseconds.
///
/// An enum rather than `Arc<dyn Clock>` so that the default reads the coarse
/// real-time clock inline: about 2 ns against about 30 ns for
/// `SystemTime::now()` here, on a path that runs on every `token()` call.
pub(crate) enum WallClock {
    /// The system's coarse real-time clock.
    System,
    /// An injected clock (tests: `TokioClock`).
    Custom(Arc<dyn Clock>),
}

impl WallClock {
    /// Milliseconds since the Unix epoch.
    #[inline]
    pub(crate) fn now_ms(&self) -> u64 {
        match self {
            WallClock::System => system_now_ms(),
            WallClock::Custom(clock) => unix_millis(clock.now()),
        }
    }
}

/// A cached token with its schedule, all in Unix milliseconds.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) token: AccessToken,
    /// Index of the authority that issued it (0 = primary).
    pub(crate) authority: usize,
    /// Never handed out from this instant on (expiry minus the hard margin).
    pub(crate) usable_until_ms: u64,
    /// The hot path answers from the cache until here: the next refresh
    /// attempt (at most `usable_until_ms`). Past it callers take the slow
    /// path, which checks that someone is refreshing (a live refresher, an
    /// acquisition in flight) and otherwise refreshes: a refresher that died
    /// with its runtime cannot leave the token unrefreshed.
    pub(crate) hot_until_ms: AtomicU64,
    /// When the next proactive refresh may be attempted: the schedule's
    /// `refresh_at_ms`, pushed back by backoff after failed attempts. Per
    /// entry, so a new token starts afresh without a reset.
    pub(crate) next_attempt_ms: AtomicU64,
    /// Failed proactive refreshes of this token (the backoff exponent).
    pub(crate) proactive_failures: AtomicU32,
    /// The copies the hot path hands out, one per stripe of threads.
    pub(crate) copies: super::local::Copies,
}

/// The schedule of one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    pub(crate) refresh_at_ms: u64,
    pub(crate) usable_until_ms: u64,
}

/// Computes the schedule of `token`. `jitter_unit` in [0, 1) picks how much
/// of the configured jitter share is subtracted from the refresh instant.
///
/// - hard margin: `min(expiry_margin, lifetime / 10)` before expiry, but a
///   token not yet expired is served for at least `min_refresh_interval`
///   (no request storm on tiny lifetimes);
/// - refresh at `lifetime * (ratio - jitter * jitter_unit)`, no earlier than
///   `min_refresh_interval` after issue and no later than the hard margin.
pub(crate) fn schedule(token: &AccessToken, config: &CacheConfig, jitter_unit: f64) -> Schedule {
    let issued_ms = unix_millis(token.issued_at());
    let expires_ms = token.expires_at_ms().max(issued_ms);
    let lifetime_ms = expires_ms - issued_ms;
    let margin_ms = millis(config.expiry_margin).min(lifetime_ms / 10);
    let min_interval_ms = millis(config.min_refresh_interval);
    let usable_until_ms =
        (expires_ms - margin_ms).max(issued_ms.saturating_add(min_interval_ms).min(expires_ms));
    let share = (config.refresh_ratio - config.refresh_jitter * jitter_unit).clamp(0.0, 1.0);
    // f64 is exact for any lifetime below 2^53 ms (285,000 years).
    let refresh_after_ms = (lifetime_ms as f64 * share) as u64;
    let refresh_at_ms = issued_ms
        .saturating_add(refresh_after_ms.max(min_interval_ms))
        .min(usable_until_ms);
    Schedule {
        refresh_at_ms,
        usable_until_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const T0: u64 = 1_700_000_000_000;

    fn token(lifetime: Duration) -> AccessToken {
        let issued = UNIX_EPOCH + Duration::from_millis(T0);
        AccessToken::from_parts(
            SecretString::from("t".to_owned()),
            "Bearer".into(),
            issued,
            issued + lifetime,
            Vec::new(),
            String::new(),
        )
    }

    fn config(jitter: f64) -> CacheConfig {
        CacheConfig {
            refresh_jitter: jitter,
            ..CacheConfig::default()
        }
    }

    const H: u64 = 3_600_000;

    #[test]
    fn day_token_refreshes_at_half_life_and_is_served_until_30s_before_expiry() {
        let s = schedule(&token(Duration::from_secs(86_400)), &config(0.1), 0.0);
        assert_eq!(s.refresh_at_ms, T0 + 12 * H);
        assert_eq!(s.usable_until_ms, T0 + 24 * H - 30_000);
    }

    #[test]
    fn jitter_subtracts_up_to_ten_percent_of_the_lifetime() {
        let t = token(Duration::from_secs(86_400));
        let low = schedule(&t, &config(0.1), 0.999_999).refresh_at_ms;
        // 50 % - 10 % of 24 h = 9.6 h.
        let at_9h36 = T0 + 9 * H + 36 * H / 60;
        assert!((at_9h36..at_9h36 + H / 60).contains(&low), "{low}");
        let mid = schedule(&t, &config(0.1), 0.5).refresh_at_ms;
        assert_eq!(mid, T0 + 12 * H - 24 * H / 20);
    }

    #[test]
    fn short_lifetimes_use_ten_percent_as_the_margin() {
        // 600 s token: margin min(30 s, 60 s) = 30 s; 60 s token: 6 s.
        let s = schedule(&token(Duration::from_secs(600)), &config(0.0), 0.0);
        assert_eq!(s.refresh_at_ms, T0 + 300_000);
        assert_eq!(s.usable_until_ms, T0 + 570_000);
        let s = schedule(&token(Duration::from_secs(60)), &config(0.0), 0.0);
        assert_eq!(s.usable_until_ms, T0 + 54_000);
        assert_eq!(s.refresh_at_ms, T0 + 30_000);
    }

    #[test]
    fn tiny_lifetimes_never_refresh_more_often_than_the_minimum_interval() {
        // 1.5 s token: half-life 750 ms < 1 s minimum interval.
        let s = schedule(&token(Duration::from_millis(1500)), &config(0.0), 0.0);
        assert_eq!(s.refresh_at_ms, T0 + 1000);
        assert_eq!(s.usable_until_ms, T0 + 1350);
        // A token with no lifetime at all is served for nothing, refreshed at once.
        let s = schedule(&token(Duration::ZERO), &config(0.0), 0.0);
        assert_eq!(s.usable_until_ms, T0);
        assert_eq!(s.refresh_at_ms, T0);
        // 500 ms token: served until it expires rather than refetched per call.
        let s = schedule(&token(Duration::from_millis(500)), &config(0.0), 0.0);
        assert_eq!(s.usable_until_ms, T0 + 500);
        assert_eq!(s.refresh_at_ms, T0 + 500);
    }

    #[test]
    fn ratio_is_configurable() {
        let c = CacheConfig {
            refresh_ratio: 0.8,
            refresh_jitter: 0.0,
            ..CacheConfig::default()
        };
        let s = schedule(&token(Duration::from_secs(1000)), &c, 0.0);
        assert_eq!(s.refresh_at_ms, T0 + 800_000);
    }

    #[test]
    fn system_wall_clock_is_close_to_std() {
        let coarse = WallClock::System.now_ms();
        let std = unix_millis(SystemTime::now());
        assert!(coarse.abs_diff(std) < 1000, "coarse {coarse} std {std}");
    }
}
