//! The token cache. SKELETON: a naive, correct-but-slow cache so the rest of
//! the crate works end to end; issue #3 replaces it (lock-free reads, single
//! flight, background refresh, backoff, failover, stats).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::token::AccessToken;

/// A boxed future, as the token source returns it.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where tokens come from: one attempt against one authority, no retries.
/// The exchange implements it; the cache owns retries, backoff and failover.
pub(crate) trait TokenSource: Send + Sync + 'static {
    /// How many authorities there are; index 0 is the primary.
    fn authority_count(&self) -> usize;
    /// A short label of authority `index` for logs (its base URL).
    fn authority_label(&self, index: usize) -> &str;
    /// One token request to authority `index`.
    fn fetch(&self, index: usize) -> BoxFuture<'_, Result<AccessToken>>;
}

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
    pub(crate) retry_deadline: Duration,
    /// How long a permanent error is remembered and returned without a request. Default 10 s.
    pub(crate) error_cooldown: Duration,
    /// Whether a background task refreshes ahead of expiry. Default true.
    pub(crate) background_refresh: bool,
    /// The refresher wakes at least this often to check the wall clock. Default 30 s.
    pub(crate) wall_clock_check: Duration,
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
        if self.expiry_margin.is_zero() {
            return Err(Error::config("expiry_margin must be greater than zero"));
        }
        Ok(())
    }
}

/// A snapshot of the cache's counters, from [`AimClient::stats`](crate::AimClient::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Token requests sent to AIM (each attempt counts).
    pub token_requests: u64,
    /// Successful acquisitions (first token and every refresh).
    pub refreshes: u64,
    /// Failed token requests.
    pub failures: u64,
    /// `token()` calls answered from the cache.
    pub cache_hits: u64,
}

/// The cache behind one `AimClient` and its clones.
pub(crate) struct Cache {
    source: Arc<dyn TokenSource>,
    config: CacheConfig,
    clock: Arc<dyn Clock>,
    current: tokio::sync::Mutex<Option<AccessToken>>,
}

impl Cache {
    pub(crate) fn new(
        source: Arc<dyn TokenSource>,
        config: CacheConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Cache {
            source,
            config,
            clock,
            current: tokio::sync::Mutex::new(None),
        })
    }

    pub(crate) async fn token(&self) -> Result<AccessToken> {
        let mut current = self.current.lock().await;
        if let Some(token) = current.as_ref() {
            let now = self.clock.now();
            if token.remaining_at(now) > self.config.expiry_margin.min(token.lifetime() / 10) {
                return Ok(token.clone());
            }
        }
        let token = self.source.fetch(0).await?;
        *current = Some(token.clone());
        Ok(token)
    }

    pub(crate) async fn refresh(&self) -> Result<AccessToken> {
        let mut current = self.current.lock().await;
        let token = self.source.fetch(0).await?;
        *current = Some(token.clone());
        Ok(token)
    }

    pub(crate) fn invalidate(&self, token: &AccessToken) {
        if let Ok(mut current) = self.current.try_lock() {
            if current.as_ref().is_some_and(|c| c.same_as(token)) {
                *current = None;
            }
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let _ = self.source.authority_count();
        Stats::default()
    }
}
