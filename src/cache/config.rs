//! The cache's knobs and their validation.

use std::sync::Arc;
use std::time::Duration;

use crate::store::Attached;

use crate::error::{Error, Result};

/// The cache's policy knobs; the builder fills them, `validate` checks them.
#[derive(Debug, Clone)]
pub(crate) struct CacheConfig {
    /// Refresh when this share of the lifetime has passed (0, 1). Default 0.5.
    pub(crate) refresh_ratio: f64,
    /// Up to this share of the lifetime is subtracted at random. Default 0.1.
    pub(crate) refresh_jitter: f64,
    /// Never hand out a token closer than this to expiry (capped at 10 % of the lifetime). Default 30 s.
    pub(crate) expiry_margin: Duration,
    /// Shortest time between two refreshes. Default 1 s.
    pub(crate) min_refresh_interval: Duration,
    /// First backoff delay. Default 200 ms.
    pub(crate) backoff_min: Duration,
    /// Longest backoff delay. Default 30 s.
    pub(crate) backoff_max: Duration,
    /// Total time one acquisition may take, retries included. Default 60 s.
    /// Zero means exactly one attempt (per authority), no retries.
    pub(crate) retry_deadline: Duration,
    /// How long a permanent error is remembered and returned without a request. Default 10 s.
    pub(crate) error_cooldown: Duration,
    /// Whether a background task refreshes ahead of expiry. Default true.
    pub(crate) background_refresh: bool,
    /// The refresher wakes at least this often to check the wall clock. Default 30 s.
    pub(crate) wall_clock_check: Duration,
    /// The shared store acquisitions go through, if any.
    pub(crate) store: Option<Arc<Attached>>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            refresh_ratio: 0.5,
            refresh_jitter: 0.1,
            expiry_margin: Duration::from_secs(30),
            min_refresh_interval: Duration::from_secs(1),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            retry_deadline: Duration::from_secs(60),
            error_cooldown: Duration::from_secs(10),
            background_refresh: true,
            wall_clock_check: Duration::from_secs(30),
            store: None,
        }
    }
}

impl CacheConfig {
    /// Checks the knobs; the error says which one is wrong and why.
    pub(crate) fn validate(&self) -> Result<()> {
        if !(self.refresh_ratio > 0.0 && self.refresh_ratio < 1.0) {
            return Err(Error::config(format!(
                "refresh_ratio must be between 0 and 1 (exclusive), got {}",
                self.refresh_ratio
            )));
        }
        if !(self.refresh_jitter >= 0.0 && self.refresh_jitter < self.refresh_ratio) {
            return Err(Error::config(format!(
                "refresh_jitter must be at least 0 and below refresh_ratio ({}), got {}",
                self.refresh_ratio, self.refresh_jitter
            )));
        }
        if self.expiry_margin.is_zero() {
            return Err(Error::config("expiry_margin must be greater than zero"));
        }
        if self.min_refresh_interval.is_zero() {
            return Err(Error::config(
                "min_refresh_interval must be greater than zero (it prevents a refresh loop on tiny lifetimes)",
            ));
        }
        if self.backoff_min > self.backoff_max {
            return Err(Error::config(format!(
                "backoff: min ({:?}) must not exceed max ({:?})",
                self.backoff_min, self.backoff_max
            )));
        }
        if self.wall_clock_check.is_zero() {
            return Err(Error::config("wall_clock_check must be greater than zero"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(f: impl FnOnce(&mut CacheConfig)) -> Error {
        let mut config = CacheConfig::default();
        f(&mut config);
        config.validate().unwrap_err()
    }

    #[test]
    fn defaults_are_valid_and_as_designed() {
        let c = CacheConfig::default();
        c.validate().unwrap();
        assert_eq!(c.refresh_ratio, 0.5);
        assert_eq!(c.refresh_jitter, 0.1);
        assert_eq!(c.expiry_margin, Duration::from_secs(30));
        assert_eq!(c.backoff_min, Duration::from_millis(200));
        assert_eq!(c.backoff_max, Duration::from_secs(30));
        assert_eq!(c.wall_clock_check, Duration::from_secs(30));
    }

    #[test]
    fn rejects_bad_knobs_with_config_errors() {
        for ratio in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            let err = invalid(|c| c.refresh_ratio = ratio);
            assert!(err.is_config(), "{ratio}");
            assert!(err.to_string().contains("refresh_ratio"));
        }
        assert!(invalid(|c| c.expiry_margin = Duration::ZERO)
            .to_string()
            .contains("expiry_margin"));
        assert!(invalid(|c| c.refresh_jitter = 0.5)
            .to_string()
            .contains("refresh_jitter"));
        assert!(invalid(|c| c.refresh_jitter = -0.1).is_config());
        assert!(invalid(|c| c.min_refresh_interval = Duration::ZERO).is_config());
        assert!(invalid(|c| c.backoff_min = Duration::from_secs(60))
            .to_string()
            .contains("backoff"));
        assert!(invalid(|c| c.wall_clock_check = Duration::ZERO).is_config());
    }

    #[test]
    fn zero_jitter_and_zero_deadline_are_allowed() {
        let c = CacheConfig {
            refresh_jitter: 0.0,
            retry_deadline: Duration::ZERO,
            ..CacheConfig::default()
        };
        c.validate().unwrap();
    }
}
