//! Policy tests of the cache against a scripted token source, in tokio's
//! paused time with a `TokioClock`, so a day passes in milliseconds.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use tokio::time::{sleep, Instant};

use super::*;
use crate::clock::TokioClock;
use crate::error::ErrorKind;

const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// A token source with per-authority counters, scripted answers and outages.
struct Fake {
    clock: Arc<TokioClock>,
    start: Instant,
    labels: Vec<String>,
    lifetime: Mutex<Duration>,
    delay: Mutex<Duration>,
    calls: Vec<AtomicU64>,
    script: Mutex<Vec<VecDeque<Error>>>,
    outage: Mutex<Vec<Option<Error>>>,
    /// (tokio time since start, authority, success) of every fetch.
    log: Mutex<Vec<(Duration, usize, bool)>>,
    issued: AtomicU64,
}

impl Fake {
    fn new(authorities: usize, lifetime: Duration) -> Arc<Fake> {
        Arc::new(Fake {
            clock: Arc::new(TokioClock::new()),
            start: Instant::now(),
            labels: (0..authorities)
                .map(|i| format!("http://node{i}/identitymanager"))
                .collect(),
            lifetime: Mutex::new(lifetime),
            delay: Mutex::new(Duration::ZERO),
            calls: (0..authorities).map(|_| AtomicU64::new(0)).collect(),
            script: Mutex::new(vec![VecDeque::new(); authorities]),
            outage: Mutex::new(vec![None; authorities]),
            log: Mutex::new(Vec::new()),
            issued: AtomicU64::new(0),
        })
    }

    fn calls(&self) -> u64 {
        self.calls.iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }
    fn calls_to(&self, index: usize) -> u64 {
        self.calls[index].load(Ordering::SeqCst)
    }
    fn successes(&self) -> Vec<Duration> {
        let log = self.log.lock().unwrap();
        log.iter().filter(|e| e.2).map(|e| e.0).collect()
    }
    fn script(&self, index: usize, error: Error) {
        self.script.lock().unwrap()[index].push_back(error);
    }
    fn outage(&self, index: usize, error: Option<Error>) {
        self.outage.lock().unwrap()[index] = error;
    }
    fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    async fn answer(&self, index: usize) -> Result<AccessToken> {
        self.calls[index].fetch_add(1, Ordering::SeqCst);
        let at = self.start.elapsed();
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            sleep(delay).await;
        }
        let scripted = self.script.lock().unwrap()[index].pop_front();
        let failure = scripted.or_else(|| self.outage.lock().unwrap()[index].clone());
        self.log
            .lock()
            .unwrap()
            .push((at, index, failure.is_none()));
        if let Some(error) = failure {
            return Err(error);
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let now = self.clock.now();
        let lifetime = *self.lifetime.lock().unwrap();
        Ok(AccessToken::from_parts(
            SecretString::from(format!("secret-token-{n}")),
            "Bearer".into(),
            now,
            now + lifetime,
            vec!["mes.api".into()],
            self.labels[index].clone(),
        ))
    }
}

impl TokenSource for Fake {
    fn authority_count(&self) -> usize {
        self.labels.len()
    }
    fn authority_label(&self, index: usize) -> &str {
        &self.labels[index]
    }
    fn fetch(&self, index: usize) -> BoxFuture<'_, Result<AccessToken>> {
        Box::pin(self.answer(index))
    }
}

fn no_jitter() -> CacheConfig {
    CacheConfig {
        refresh_jitter: 0.0,
        ..CacheConfig::default()
    }
}

fn cache(fake: &Arc<Fake>, config: CacheConfig) -> Arc<Cache> {
    let clock: Arc<dyn Clock> = fake.clock.clone();
    let source: Arc<dyn TokenSource> = fake.clone();
    Arc::new(Cache::new(source, config, Some(clock), "test-client").unwrap())
}

fn refused() -> Error {
    Error::new(ErrorKind::Transport, "connection refused")
}

fn unavailable(retry_after: Option<Duration>) -> Error {
    Error::new(ErrorKind::Server, "503 Service Unavailable")
        .with_status(503)
        .transient(true)
        .with_retry_after(retry_after)
}

/// Lets spawned tasks (the refresher) run without moving the clock.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

// ---------------------------------------------------------------- single flight

#[tokio::test(start_paused = true)]
async fn ten_thousand_cold_callers_cause_one_request_and_share_its_token() {
    let fake = Fake::new(1, 24 * HOUR);
    fake.set_delay(Duration::from_millis(50));
    let cache = cache(&fake, CacheConfig::default());
    let tasks: Vec<_> = (0..10_000)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.token().await })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap().unwrap());
    }
    assert_eq!(fake.calls(), 1);
    assert!(tokens.iter().all(|t| t.same_as(&tokens[0])));
    let stats = cache.stats();
    assert_eq!(stats.token_requests, 1);
    assert_eq!(stats.refreshes, 1);
    // Now everything is a cache hit.
    let hits = stats.cache_hits;
    for _ in 0..100 {
        cache.token().await.unwrap();
    }
    assert_eq!(cache.stats().cache_hits, hits + 100);
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn waiting_callers_all_get_the_one_error() {
    let fake = Fake::new(1, 24 * HOUR);
    fake.set_delay(Duration::from_millis(50));
    fake.script(0, refused());
    let cache = cache(
        &fake,
        CacheConfig {
            retry_deadline: Duration::ZERO,
            ..CacheConfig::default()
        },
    );
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.token().await })
        })
        .collect();
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transport);
    }
    assert_eq!(fake.calls(), 1);
    assert_eq!(cache.stats().failures, 1);
    // A transient error is not remembered: the next call asks again.
    cache.token().await.unwrap();
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_caller_does_not_cancel_the_acquisition_the_next_one_joins() {
    let fake = Fake::new(1, 24 * HOUR);
    fake.set_delay(SEC);
    let cache = cache(&fake, CacheConfig::default());
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.token().await })
    };
    settle().await;
    let follower = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.token().await })
    };
    settle().await;
    leader.abort();
    let token = follower.await.unwrap().unwrap();
    assert_eq!(
        fake.calls(),
        1,
        "the acquisition is the cache's, not the caller's"
    );
    assert_eq!(token.secret(), "secret-token-0");
}

// ---------------------------------------------------------------- refresh policy

#[tokio::test(start_paused = true)]
async fn a_day_with_24h_tokens_makes_exactly_two_requests_and_callers_never_wait() {
    let fake = Fake::new(1, 24 * HOUR);
    fake.set_delay(Duration::from_millis(20));
    let cache = cache(&fake, no_jitter());
    let mut slowest_after_first = Duration::ZERO;
    for minute in 0..(24 * 60 - 1) {
        let started = Instant::now();
        let token = cache.token().await.unwrap();
        if minute > 0 {
            slowest_after_first = slowest_after_first.max(started.elapsed());
        }
        assert!(token.remaining_at(fake.clock.now()) > 30 * SEC);
        sleep(MIN).await;
    }
    // t = 0 (cold) and t = 12 h (background, at 50 % of 24 h).
    assert_eq!(fake.calls(), 2);
    // The first token was issued when its answer arrived, 20 ms in.
    assert_eq!(
        fake.successes(),
        vec![Duration::ZERO, 12 * HOUR + Duration::from_millis(20)]
    );
    assert_eq!(slowest_after_first, Duration::ZERO, "a caller waited");
}

#[tokio::test(start_paused = true)]
async fn a_day_with_600s_tokens_refreshes_every_300s() {
    let fake = Fake::new(1, 600 * SEC);
    let cache = cache(&fake, no_jitter());
    let day = 24 * HOUR;
    while fake.start.elapsed() < day - 10 * SEC {
        cache.token().await.unwrap();
        sleep(10 * SEC).await;
    }
    sleep(9 * SEC).await; // 23:59:59
                          // 0, 300, ..., 86100: 24 h / 300 s = 288.
    assert_eq!(fake.calls(), 288);
    let successes = fake.successes();
    assert!(successes.windows(2).all(|w| w[1] - w[0] == 300 * SEC));
    assert_eq!(cache.stats().refreshes, 288);
}

#[tokio::test(start_paused = true)]
async fn jitter_moves_the_refresh_between_40_and_50_percent_of_the_lifetime() {
    let fake = Fake::new(1, 24 * HOUR);
    let cache = cache(&fake, CacheConfig::default());
    cache.token().await.unwrap();
    sleep(12 * HOUR + SEC).await;
    let successes = fake.successes();
    assert_eq!(successes.len(), 2);
    assert!(
        successes[1] >= 9 * HOUR + 36 * MIN && successes[1] <= 12 * HOUR,
        "{:?}",
        successes[1]
    );
}

#[tokio::test(start_paused = true)]
async fn a_6h_outage_mid_life_is_invisible_and_one_refresh_follows_it() {
    let fake = Fake::new(1, 24 * HOUR);
    let cache = cache(&fake, no_jitter());
    let first = cache.token().await.unwrap();
    let mut errors = 0;
    for minute in 1..(24 * 60) {
        sleep(MIN).await;
        match minute {
            540 => fake.outage(0, Some(refused())), // 09:00
            900 => fake.outage(0, None),            // 15:00
            _ => {}
        }
        if cache.token().await.is_err() {
            errors += 1;
        }
    }
    assert_eq!(errors, 0);
    let successes = fake.successes();
    assert_eq!(successes.len(), 2, "{successes:?}");
    // Retried during the outage (12:00 - 15:00) with backoff of at most 30 s,
    // and refreshed within 30 s of its end.
    assert!(successes[1] >= 15 * HOUR && successes[1] <= 15 * HOUR + 30 * SEC);
    let failures = cache.stats().failures;
    assert!(failures >= 3 * 3600 / 30, "{failures}");
    let now = cache.token().await.unwrap();
    assert!(!now.same_as(&first));
}

#[tokio::test(start_paused = true)]
async fn an_outage_past_expiry_surfaces_after_the_hard_margin_then_recovers() {
    let fake = Fake::new(1, 24 * HOUR);
    let cache = cache(&fake, no_jitter());
    cache.token().await.unwrap();
    sleep(11 * HOUR).await;
    fake.outage(0, Some(refused()));
    // Still served until 30 s before expiry.
    sleep(13 * HOUR - 31 * SEC).await;
    let token = cache.token().await.unwrap();
    assert_eq!(token.remaining_at(fake.clock.now()), 31 * SEC);
    sleep(2 * SEC).await;
    let started = Instant::now();
    let err = cache.token().await.unwrap_err();
    assert!(err.is_transient());
    // The deadline ran out: Timeout, caused by the last attempt's error.
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let source = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<Error>());
    assert_eq!(
        source.map(Error::kind),
        Some(ErrorKind::Transport),
        "{err:?}"
    );
    // The caller joined the acquisition in flight (the refresher's), which
    // retries until its 60 s deadline.
    assert!(started.elapsed() <= 60 * SEC, "{:?}", started.elapsed());
    assert!(err.to_string().contains("gave up after"), "{err}");
    fake.outage(0, None);
    sleep(HOUR).await;
    let token = cache.token().await.unwrap();
    assert!(token.remaining_at(fake.clock.now()) > 20 * HOUR);
}

#[tokio::test(start_paused = true)]
async fn a_wall_clock_jump_past_expiry_fetches_on_the_next_call() {
    let fake = Fake::new(1, 24 * HOUR);
    let cache = cache(&fake, no_jitter());
    let before = cache.token().await.unwrap();
    settle().await;
    fake.clock.jump(25 * HOUR); // the PC slept
    assert_eq!(fake.calls(), 1);
    let after = cache.token().await.unwrap();
    assert_eq!(fake.calls(), 2);
    assert!(!after.same_as(&before));
    assert!(!after.is_expired_at(fake.clock.now()));
}

#[tokio::test(start_paused = true)]
async fn the_refresher_rechecks_the_wall_clock_every_30s() {
    let fake = Fake::new(1, 24 * HOUR);
    let cache = cache(&fake, no_jitter());
    cache.token().await.unwrap();
    settle().await;
    fake.clock.jump(13 * HOUR); // past the refresh instant, token still valid
    sleep(29 * SEC).await;
    assert_eq!(fake.calls(), 1);
    sleep(2 * SEC).await;
    assert_eq!(fake.calls(), 2, "refresher did not notice the jump");
}

#[tokio::test(start_paused = true)]
async fn without_background_refresh_a_caller_refreshes_when_due_and_keeps_the_token_on_failure() {
    let fake = Fake::new(1, 600 * SEC);
    let cache = cache(
        &fake,
        CacheConfig {
            background_refresh: false,
            ..no_jitter()
        },
    );
    let first = cache.token().await.unwrap();
    sleep(301 * SEC).await;
    assert_eq!(fake.calls(), 1, "nothing runs in the background");
    fake.outage(0, Some(refused()));
    let started = Instant::now();
    let still = cache.token().await.unwrap();
    assert!(still.same_as(&first));
    assert!(started.elapsed() <= 2 * SEC, "{:?}", started.elapsed());
    let calls = fake.calls();
    assert!(calls >= 2);
    // The acquisition carries on, so the next call right away does not start another.
    assert!(cache.token().await.unwrap().same_as(&first));
    fake.outage(0, None);
    sleep(MIN).await;
    let fresh = cache.token().await.unwrap();
    assert!(!fresh.same_as(&first));
}

#[test]
fn works_without_a_tokio_runtime() {
    let fake = Fake::new_outside_runtime();
    let source: Arc<dyn TokenSource> = fake.clone();
    let cache = Cache::new(source, CacheConfig::default(), None, "c").unwrap();
    let a = futures::executor::block_on(cache.token()).unwrap();
    let b = futures::executor::block_on(cache.token()).unwrap();
    assert!(a.same_as(&b));
    assert_eq!(fake.calls(), 1);
    assert!(lock(&cache.refresher).is_none());
}

impl Fake {
    /// A fake whose clock is never read (the cache uses the system clock).
    fn new_outside_runtime() -> Arc<Fake> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async { Fake::new(1, HOUR) })
    }
}

// ---------------------------------------------------------------- retries

#[tokio::test(start_paused = true)]
async fn retry_after_is_respected() {
    let fake = Fake::new(1, HOUR);
    fake.script(0, unavailable(Some(7 * SEC)));
    let cache = cache(&fake, CacheConfig::default());
    let started = Instant::now();
    cache.token().await.unwrap();
    assert_eq!(started.elapsed(), 7 * SEC);
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_deadline_fails_at_once() {
    let fake = Fake::new(1, HOUR);
    fake.script(0, unavailable(Some(120 * SEC)));
    let cache = cache(&fake, CacheConfig::default());
    let started = Instant::now();
    let err = cache.token().await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(err.retry_after(), Some(120 * SEC));
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_exponentially_with_full_jitter() {
    let fake = Fake::new(1, HOUR);
    for _ in 0..4 {
        fake.script(0, refused());
    }
    let cache = cache(&fake, CacheConfig::default());
    cache.token().await.unwrap();
    let log: Vec<Duration> = fake.log.lock().unwrap().iter().map(|e| e.0).collect();
    assert_eq!(log.len(), 5);
    let gaps: Vec<Duration> = log.windows(2).map(|w| w[1] - w[0]).collect();
    let ms = Duration::from_millis;
    assert_eq!(gaps[0], ms(200));
    assert!(gaps[1] >= ms(200) && gaps[1] <= ms(400), "{gaps:?}");
    assert!(gaps[2] >= ms(200) && gaps[2] <= ms(800), "{gaps:?}");
    assert!(gaps[3] >= ms(200) && gaps[3] <= ms(1600), "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_deadline_and_zero_means_one_attempt() {
    let fake = Fake::new(1, HOUR);
    fake.outage(0, Some(refused()));
    let cache1 = cache(
        &fake,
        CacheConfig {
            retry_deadline: 5 * SEC,
            ..CacheConfig::default()
        },
    );
    let started = Instant::now();
    let err = cache1.token().await.unwrap_err();
    assert!(started.elapsed() < 5 * SEC);
    assert!(fake.calls() >= 4, "{}", fake.calls());
    assert!(err.to_string().contains("gave up after"));
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.is_transient());

    let before = fake.calls();
    let cache0 = cache(
        &fake,
        CacheConfig {
            retry_deadline: Duration::ZERO,
            ..CacheConfig::default()
        },
    );
    let started = Instant::now();
    let err = cache0.token().await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(fake.calls(), before + 1);
    assert_eq!(err.to_string(), "connection refused");
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_not_retried_and_cool_down() {
    for code in acquire::PERMANENT_OAUTH_ERRORS {
        let fake = Fake::new(2, HOUR);
        fake.set_delay(Duration::from_millis(10));
        fake.outage(0, Some(Error::oauth(400, code, None)));
        let cache = cache(&fake, CacheConfig::default());
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.token().await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap_err().oauth_error(), Some(code));
        }
        assert_eq!(fake.calls(), 1, "{code}: retried or failed over");
        // Within the cool-down: answered without a request.
        sleep(9 * SEC).await;
        for _ in 0..100 {
            assert_eq!(cache.token().await.unwrap_err().oauth_error(), Some(code));
            assert_eq!(cache.refresh().await.unwrap_err().oauth_error(), Some(code));
        }
        assert_eq!(fake.calls(), 1);
        assert_eq!(cache.stats().cooldown_rejections, 200);
        // After it: one request again.
        sleep(2 * SEC).await;
        fake.outage(0, None);
        cache.token().await.unwrap();
        assert_eq!(fake.calls(), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn other_oauth_errors_are_not_remembered() {
    let fake = Fake::new(1, HOUR);
    fake.script(0, Error::oauth(400, "invalid_request", None));
    let cache = cache(&fake, CacheConfig::default());
    assert!(cache.token().await.is_err());
    assert_eq!(fake.calls(), 1);
    cache.token().await.unwrap();
    assert_eq!(fake.calls(), 2);
}

// ---------------------------------------------------------------- forced renewal

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_invalidations_cause_one_refresh() {
    let fake = Fake::new(1, 24 * HOUR);
    fake.set_delay(Duration::from_millis(5));
    let cache = cache(&fake, CacheConfig::default());
    let rejected = cache.token().await.unwrap();
    sleep(2 * SEC).await; // older than min_refresh_interval
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let cache = cache.clone();
            let rejected = rejected.clone();
            tokio::spawn(async move {
                cache.invalidate(&rejected);
                cache.token().await
            })
        })
        .collect();
    let mut fresh = Vec::new();
    for task in tasks {
        fresh.push(task.await.unwrap().unwrap());
    }
    assert_eq!(fake.calls(), 2);
    assert!(fresh.iter().all(|t| t.same_as(&fresh[0])));
    assert!(!fresh[0].same_as(&rejected));
    // An old token no longer drops the current one.
    cache.invalidate(&rejected);
    assert!(cache.token().await.unwrap().same_as(&fresh[0]));
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn refresh_forces_one_deduplicated_request() {
    let fake = Fake::new(1, 24 * HOUR);
    fake.set_delay(Duration::from_millis(5));
    let cache = cache(&fake, CacheConfig::default());
    let old = cache.token().await.unwrap();
    sleep(2 * SEC).await; // older than min_refresh_interval
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.refresh().await })
        })
        .collect();
    let mut fresh = Vec::new();
    for task in tasks {
        fresh.push(task.await.unwrap().unwrap());
    }
    assert_eq!(fake.calls(), 2);
    assert!(fresh
        .iter()
        .all(|t| t.same_as(&fresh[0]) && !t.same_as(&old)));
    assert!(cache.token().await.unwrap().same_as(&fresh[0]));
    // Right after, refresh() is answered by the one just made; later it asks again.
    assert!(cache.refresh().await.unwrap().same_as(&fresh[0]));
    assert_eq!(fake.calls(), 2);
    sleep(2 * SEC).await;
    cache.refresh().await.unwrap();
    assert_eq!(fake.calls(), 3);
}

// ---------------------------------------------------------------- lifecycle

#[tokio::test(start_paused = true)]
async fn dropping_the_cache_stops_the_refresher() {
    let fake = Fake::new(1, 600 * SEC);
    let cache = cache(&fake, CacheConfig::default());
    cache.token().await.unwrap();
    settle().await;
    assert!(Arc::strong_count(&cache.shared) == 1);
    let weak = Arc::downgrade(&cache.shared);
    drop(cache);
    settle().await;
    assert!(weak.upgrade().is_none());
    sleep(48 * HOUR).await;
    assert_eq!(fake.calls(), 1);
}

// ---------------------------------------------------------------- failover

#[tokio::test(start_paused = true)]
async fn failover_uses_the_secondary_and_returns_to_the_primary() {
    let fake = Fake::new(2, 600 * SEC);
    let cache = cache(&fake, no_jitter());
    fake.outage(0, Some(refused()));
    let token = cache.token().await.unwrap();
    assert_eq!(token.authority(), "http://node1/identitymanager");
    assert_eq!((fake.calls_to(0), fake.calls_to(1)), (1, 1));
    assert_eq!(cache.stats().failovers, 1);
    // The primary comes back: the next refresh (at 300 s) goes to it first.
    fake.outage(0, None);
    sleep(301 * SEC).await;
    let token = cache.token().await.unwrap();
    assert_eq!(token.authority(), "http://node0/identitymanager");
    assert_eq!((fake.calls_to(0), fake.calls_to(1)), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_5xx_fails_over_but_a_permanent_error_does_not() {
    let fake = Fake::new(3, HOUR);
    fake.script(0, unavailable(None));
    fake.script(1, refused());
    let cache1 = cache(&fake, CacheConfig::default());
    let token = cache1.token().await.unwrap();
    assert_eq!(token.authority(), "http://node2/identitymanager");
    assert_eq!(cache1.stats().failovers, 2);

    let fake = Fake::new(2, HOUR);
    fake.script(0, Error::oauth(400, "invalid_client", None));
    let cache2 = cache(&fake, CacheConfig::default());
    assert!(cache2.token().await.is_err());
    assert_eq!((fake.calls_to(0), fake.calls_to(1)), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn all_nodes_down_backs_off_then_restarts_from_the_primary() {
    let fake = Fake::new(2, HOUR);
    fake.script(0, refused());
    fake.script(1, refused());
    let cache = cache(&fake, CacheConfig::default());
    let token = cache.token().await.unwrap();
    assert_eq!(token.authority(), "http://node0/identitymanager");
    assert_eq!((fake.calls_to(0), fake.calls_to(1)), (2, 1));
}

// ---------------------------------------------------------------- observability

const LOG_CHILD: &str = "AIM_TOKEN_CACHE_LOG_CHILD";

/// tracing caches each callsite's interest process-wide, so a scoped
/// subscriber misses events when tests on other threads hit the callsite
/// first. The scenario therefore runs in a child process of this test
/// binary with a global subscriber, and this test reads its output.
#[test]
fn events_tell_the_story_without_the_token() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "cache::tests::events_child", "--nocapture"])
        .env(LOG_CHILD, "1")
        .output()
        .unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{logs}");
    assert!(logs.contains("1 passed"), "{logs}");
    for needle in [
        "failing over",
        "backing off",
        "new access token",
        "cool-down",
        "token_attempt{attempt=1 node=1 outcome=Transport}",
        "not asking AIM",
        "token request failed",
        "client_id=test-client",
        "http://node1/identitymanager",
    ] {
        assert!(logs.contains(needle), "no {needle:?} in\n{logs}");
    }
    assert!(!logs.contains("secret-token"), "{logs}");
}

/// The scenario of [`events_tell_the_story_without_the_token`]; does
/// nothing unless started by it.
#[test]
fn events_child() {
    if std::env::var_os(LOG_CHILD).is_none() {
        return;
    }
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let fake = Fake::new(2, 600 * SEC);
        let cache = cache(&fake, CacheConfig::default());
        fake.script(0, refused());
        fake.script(1, refused());
        cache.token().await.unwrap(); // failover, backoff, new token
        sleep(2 * SEC).await;
        fake.script(0, Error::oauth(400, "invalid_client", None));
        cache.refresh().await.unwrap_err(); // cool-down starts
        cache.refresh().await.unwrap_err(); // answered from the cool-down
    });
}

#[test]
fn stats_start_at_zero() {
    let fake = Fake::new_outside_runtime();
    let source: Arc<dyn TokenSource> = fake;
    let cache = Cache::new(source, CacheConfig::default(), None, "c").unwrap();
    assert_eq!(cache.stats(), Stats::default());
}

// ---------------------------------------------------------------- token copies

#[tokio::test(start_paused = true)]
async fn many_clients_used_in_turn_on_one_thread_keep_their_copies() {
    let fakes: Vec<_> = (0..20).map(|_| Fake::new(1, HOUR)).collect();
    let caches: Vec<_> = fakes.iter().map(|f| cache(f, no_jitter())).collect();
    for cache in &caches {
        cache.token().await.unwrap(); // fetched: the original, not a copy
    }
    let mut first = Vec::new();
    for cache in &caches {
        first.push(cache.token().await.unwrap()); // this thread's copy
    }
    for _ in 0..3 {
        for (cache, first) in caches.iter().zip(&first) {
            let again = cache.token().await.unwrap();
            // The same copy, not a new one per call.
            assert_eq!(again.secret().as_ptr(), first.secret().as_ptr());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn no_copy_of_a_token_stays_behind_after_a_refresh_or_the_client() {
    let fake = Fake::new(1, HOUR);
    let cache = cache(&fake, no_jitter());
    cache.token().await.unwrap();
    let old = cache.token().await.unwrap(); // served by the hot path: a copy
    sleep(2 * SEC).await;
    let new = cache.refresh().await.unwrap();
    assert!(!new.same_as(&old));
    assert_eq!(old.ref_count(), 1, "the old token is held by nobody else");
    let new = cache.token().await.unwrap();
    drop(cache);
    settle().await;
    assert_eq!(new.ref_count(), 1, "the dropped client keeps no copy");
}

// ---------------------------------------------------------------- adversarial review

#[tokio::test(start_paused = true)]
async fn a_retry_deadline_too_large_for_an_instant_still_retries() {
    // `--timeout 18446744073709551615` or `retry_deadline(Duration::MAX)`:
    // "wait as long as it takes", not "never retry".
    for deadline in [Duration::MAX, Duration::from_secs(u64::MAX)] {
        let fake = Fake::new(1, HOUR);
        fake.script(0, refused());
        let cache = cache(
            &fake,
            CacheConfig {
                retry_deadline: deadline,
                ..CacheConfig::default()
            },
        );
        let token = cache.token().await;
        assert!(token.is_ok(), "{deadline:?}: {token:?}");
        assert_eq!(fake.calls(), 2, "{deadline:?}");
    }
}

#[test]
fn a_caller_in_a_runtime_that_has_shut_down_gets_an_error_instead_of_spinning() {
    let fake = Fake::new_outside_runtime();
    let source: Arc<dyn TokenSource> = fake.clone();
    let cache = Arc::new(Cache::new(source, CacheConfig::default(), None, "c").unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    drop(runtime);
    let (tx, rx) = std::sync::mpsc::channel();
    let caller = cache.clone();
    // Detached: if it spins, the test fails on the timeout below.
    std::thread::spawn(move || {
        let _inside = handle.enter();
        let _ = tx.send(futures::executor::block_on(caller.token()));
    });
    let outcome = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("token() returns while its runtime is gone");
    let err = outcome.unwrap_err();
    assert!(err.to_string().contains("runtime"), "{err}");
    assert_eq!(fake.calls(), 0);
}
