//! The token cache end to end: `AimClient` against the emulator over real
//! HTTP, with tokio's paused time and a `TokioClock` shared by both, so
//! simulated days pass in milliseconds and the emulator's counters say
//! exactly how many token requests the policy made.

use std::sync::Arc;
use std::time::Duration;

use aim_token::emulator::{AimEmulator, Endpoint, Fault};
use aim_token::{AccessToken, AimClient, Clock, ErrorKind, TokioClock};
use tokio::time::{sleep, Instant};

const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

struct Setup {
    clock: Arc<TokioClock>,
    aim: AimEmulator,
    client: AimClient,
}

/// An emulator issuing `lifetime` tokens and a client of it without refresh
/// jitter (so the request counts are exact), on one paused clock.
async fn setup(lifetime: Duration) -> Setup {
    let clock = Arc::new(TokioClock::new());
    let aim = AimEmulator::builder()
        .clock(clock.clone())
        .token_lifetime(lifetime)
        .start()
        .await
        .unwrap();
    let client = aim
        .client_builder()
        .clock(clock.clone())
        .refresh_jitter(0.0)
        .build()
        .unwrap();
    Setup { clock, aim, client }
}

/// An emulator with default settings on the test's clock.
async fn emulator_on(clock: &Arc<TokioClock>) -> AimEmulator {
    AimEmulator::builder()
        .clock(clock.clone())
        .start()
        .await
        .unwrap()
}

fn unavailable() -> Fault {
    Fault::Status {
        status: 503,
        retry_after: None,
        body: None,
    }
}

// ---------------------------------------------------------------- refresh policy

#[tokio::test(start_paused = true)]
async fn a_day_of_calls_with_24h_tokens_makes_exactly_two_token_requests() {
    let Setup { clock, aim, client } = setup(24 * HOUR).await;
    for _ in 0..(24 * 60 - 1) {
        let token = client.token().await.unwrap();
        assert!(token.remaining_at(clock.now()) > 30 * SEC);
        sleep(MIN).await;
    }
    // At 0 (first call) and 12 h (background refresh at 50 %); the next is due at 24 h.
    assert_eq!(aim.token_requests(), 2);
    assert_eq!(aim.counters().tokens_issued, 2);
    let stats = client.stats();
    assert_eq!(stats.token_requests, 2);
    assert_eq!(stats.refreshes, 2);
    assert_eq!(stats.failures, 0);
    assert!(stats.cache_hits >= 24 * 60 - 2, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_day_of_calls_with_600s_tokens_refreshes_every_300s() {
    let Setup { clock, aim, client } = setup(600 * SEC).await;
    let start = Instant::now();
    let mut last = client.token().await.unwrap();
    let mut changes = Vec::new();
    while start.elapsed() < 24 * HOUR - 10 * SEC {
        sleep(10 * SEC).await;
        let token = client.token().await.unwrap();
        assert!(token.remaining_at(clock.now()) > 30 * SEC);
        if !token.same_as(&last) {
            changes.push(start.elapsed());
            last = token;
        }
    }
    // 24 h / 300 s = 288 tokens: at 0, 300 s, ..., 86,100 s.
    assert_eq!(aim.token_requests(), 288);
    assert_eq!(changes.len(), 287);
    assert!(changes.iter().enumerate().all(|(i, at)| {
        let due = 300 * SEC * (i as u32 + 1);
        // Seen by the next call, which may run at the same instant just before it.
        *at >= due && *at <= due + 10 * SEC
    }));
}

#[tokio::test(start_paused = true)]
async fn the_default_jitter_refreshes_between_40_and_50_percent() {
    let clock = Arc::new(TokioClock::new());
    let aim = emulator_on(&clock).await;
    let client = aim.client_builder().clock(clock).build().unwrap();
    let first = client.token().await.unwrap();
    sleep(9 * HOUR + 35 * MIN).await;
    assert_eq!(aim.token_requests(), 1);
    sleep(2 * HOUR + 26 * MIN).await; // 12:01
    assert_eq!(aim.token_requests(), 2);
    assert!(!client.token().await.unwrap().same_as(&first));
}

// ---------------------------------------------------------------- single flight

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_cold_callers_cause_one_request() {
    let aim = AimEmulator::start().await.unwrap();
    let client = aim.client_builder().build().unwrap();
    let tasks: Vec<_> = (0..10_000)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.token().await })
        })
        .collect();
    let mut tokens: Vec<AccessToken> = Vec::with_capacity(10_000);
    for task in tasks {
        tokens.push(task.await.unwrap().unwrap());
    }
    assert_eq!(aim.token_requests(), 1);
    assert!(tokens.iter().all(|t| t.same_as(&tokens[0])));
    assert_eq!(client.stats().token_requests, 1);
}

// ---------------------------------------------------------------- outages

#[tokio::test(start_paused = true)]
async fn a_6h_outage_mid_life_is_invisible_and_one_refresh_follows_it() {
    let Setup { aim, client, .. } = setup(24 * HOUR).await;
    let first = client.token().await.unwrap();
    for minute in 1..(24 * 60) {
        sleep(MIN).await;
        match minute {
            540 => aim.set_outage(Endpoint::Token, Some(unavailable())), // 09:00
            900 => aim.set_outage(Endpoint::Token, None),                // 15:00
            _ => {}
        }
        let token = client.token().await.unwrap(); // never an error
        if minute < 900 {
            assert!(token.same_as(&first));
        }
    }
    // One token before, one refresh right after the outage; the refresh
    // attempts from 12:00 to 15:00 failed, at most 30 s apart.
    assert_eq!(aim.counters().tokens_issued, 2);
    let failed = aim.token_requests() - 2;
    assert!(failed >= 3 * 3600 / 30, "{failed}");
    assert_eq!(client.stats().failures, failed);
    assert!(!client.token().await.unwrap().same_as(&first));
}

#[tokio::test(start_paused = true)]
async fn an_outage_past_expiry_surfaces_after_the_hard_margin_and_recovers() {
    let Setup { clock, aim, client } = setup(24 * HOUR).await;
    client.token().await.unwrap();
    sleep(11 * HOUR).await;
    aim.suspend().await; // connection refused
    sleep(13 * HOUR - 31 * SEC).await;
    // 31 s before expiry: still served.
    let token = client.token().await.unwrap();
    assert!(token.remaining_at(clock.now()) > 30 * SEC);
    sleep(2 * SEC).await;
    // 29 s before expiry: inside the hard margin; a transient error after the retries.
    let err = client.token().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(
        matches!(err.kind(), ErrorKind::Transport | ErrorKind::Timeout),
        "{err:?}"
    );
    assert!(!err.to_string().contains(AimEmulator::CLIENT_SECRET));
    aim.resume().await.unwrap();
    let token = client.token().await.unwrap();
    assert!(token.remaining_at(clock.now()) > 23 * HOUR);
}

// ---------------------------------------------------------------- retries

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_is_respected() {
    let Setup { aim, client, .. } = setup(HOUR).await;
    aim.inject(
        Endpoint::Token,
        Fault::Status {
            status: 503,
            retry_after: Some(7),
            body: None,
        },
    );
    let started = Instant::now();
    client.token().await.unwrap();
    assert!(started.elapsed() >= 7 * SEC && started.elapsed() < 8 * SEC);
    assert_eq!(aim.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_date_is_respected() {
    let Setup { aim, client, .. } = setup(HOUR).await;
    aim.inject(
        Endpoint::Token,
        Fault::RetryAfterDate {
            status: 429,
            after: 20 * SEC,
        },
    );
    let started = Instant::now();
    client.token().await.unwrap();
    // HTTP dates have whole seconds.
    assert!(started.elapsed() >= 19 * SEC && started.elapsed() <= 21 * SEC);
    assert_eq!(aim.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_not_retried_and_cool_down() {
    let Setup { aim, client, .. } = setup(HOUR).await;
    aim.set_outage(
        Endpoint::Token,
        Some(Fault::OAuth {
            status: 400,
            error: "invalid_client".into(),
        }),
    );
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.token().await })
        })
        .collect();
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.oauth_error(), Some("invalid_client"));
        assert!(!err.is_transient());
    }
    assert_eq!(aim.token_requests(), 1);
    // For the 10 s cool-down, callers get the error without a request.
    for _ in 0..100 {
        let err = client.token().await.unwrap_err();
        assert_eq!(err.oauth_error(), Some("invalid_client"));
        sleep(Duration::from_millis(90)).await;
    }
    assert_eq!(aim.token_requests(), 1);
    assert_eq!(client.stats().cooldown_rejections, 100);
    sleep(2 * SEC).await;
    aim.set_outage(Endpoint::Token, None);
    client.token().await.unwrap();
    assert_eq!(aim.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn zero_retry_deadline_means_one_attempt() {
    let clock = Arc::new(TokioClock::new());
    let aim = emulator_on(&clock).await;
    let client = aim
        .client_builder()
        .clock(clock)
        .retry_deadline(Duration::ZERO)
        .build()
        .unwrap();
    aim.inject(Endpoint::Token, unavailable());
    let err = client.token().await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(aim.token_requests(), 1);
    client.token().await.unwrap();
    assert_eq!(aim.token_requests(), 2);
}

// ---------------------------------------------------------------- forced renewal

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_invalidations_of_one_token_cause_one_refresh() {
    let Setup { aim, client, .. } = setup(24 * HOUR).await;
    let rejected = client.token().await.unwrap();
    // A token younger than min_refresh_interval (1 s) is kept: no request.
    client.invalidate(&rejected);
    assert!(client.token().await.unwrap().same_as(&rejected));
    assert_eq!(aim.token_requests(), 1);
    sleep(2 * SEC).await;
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let client = client.clone();
            let rejected = rejected.clone();
            tokio::spawn(async move {
                client.invalidate(&rejected); // as after a 401 from MES
                client.token().await
            })
        })
        .collect();
    let mut fresh = Vec::new();
    for task in tasks {
        fresh.push(task.await.unwrap().unwrap());
    }
    assert_eq!(aim.token_requests(), 2);
    assert!(fresh.iter().all(|t| t.same_as(&fresh[0])));
    assert_ne!(fresh[0].secret(), rejected.secret());
}

#[tokio::test(start_paused = true)]
async fn refresh_forces_one_shared_request() {
    let Setup { aim, client, .. } = setup(24 * HOUR).await;
    let old = client.token().await.unwrap();
    // Joins the one just fetched (younger than min_refresh_interval).
    assert!(client.refresh().await.unwrap().same_as(&old));
    sleep(2 * SEC).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.refresh().await })
        })
        .collect();
    for task in tasks {
        let token = task.await.unwrap().unwrap();
        assert_ne!(token.secret(), old.secret());
    }
    assert_eq!(aim.token_requests(), 2);
}

// ---------------------------------------------------------------- lifecycle

#[tokio::test(start_paused = true)]
async fn dropping_the_client_stops_all_token_requests() {
    let Setup { aim, client, .. } = setup(600 * SEC).await;
    let clone = client.clone();
    client.token().await.unwrap();
    drop(client);
    sleep(HOUR + 10 * SEC).await;
    // A clone keeps the cache (and its refresher) alive: 12 refreshes.
    assert_eq!(aim.token_requests(), 13);
    drop(clone);
    sleep(48 * HOUR).await;
    assert_eq!(aim.token_requests(), 13);
}

#[tokio::test(start_paused = true)]
async fn a_wall_clock_jump_past_expiry_fetches_on_the_next_call() {
    let Setup { clock, aim, client } = setup(24 * HOUR).await;
    let before = client.token().await.unwrap();
    clock.jump(25 * HOUR); // the PC slept through the token's life
    assert_eq!(aim.token_requests(), 1);
    let after = client.token().await.unwrap();
    assert_eq!(aim.token_requests(), 2);
    assert_ne!(after.secret(), before.secret());
    assert!(!after.is_expired_at(clock.now()));
}

// ---------------------------------------------------------------- failover

#[tokio::test(start_paused = true)]
async fn failover_to_the_secondary_and_back_to_the_primary() {
    let clock = Arc::new(TokioClock::new());
    let start = |clock: Arc<TokioClock>| async move {
        AimEmulator::builder()
            .clock(clock)
            .token_lifetime(600 * SEC)
            .start()
            .await
            .unwrap()
    };
    let primary = start(clock.clone()).await;
    let secondary = start(clock.clone()).await;
    let client = primary
        .client_builder()
        .fallback_authority(secondary.authority())
        .clock(clock.clone())
        .refresh_jitter(0.0)
        .build()
        .unwrap();

    primary.suspend().await; // connection refused
    let token = client.token().await.unwrap();
    assert_eq!(token.authority(), secondary.authority());
    assert_eq!(primary.token_requests(), 0);
    assert_eq!(secondary.token_requests(), 1);
    assert_eq!(client.stats().failovers, 1);

    // The primary returns: the refresh at 300 s goes to it first.
    primary.resume().await.unwrap();
    sleep(301 * SEC).await;
    let token = client.token().await.unwrap();
    assert_eq!(token.authority(), primary.authority());
    assert_eq!(primary.token_requests(), 1);
    assert_eq!(secondary.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_5xx_primary_fails_over_without_backoff() {
    let clock = Arc::new(TokioClock::new());
    let primary = emulator_on(&clock).await;
    let secondary = emulator_on(&clock).await;
    let client = primary
        .client_builder()
        .fallback_authority(secondary.authority())
        .clock(clock)
        .build()
        .unwrap();
    primary.set_outage(Endpoint::Token, Some(unavailable()));
    let started = Instant::now();
    let token = client.token().await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(token.authority(), secondary.authority());
    assert_eq!(primary.token_requests(), 1);
    assert_eq!(secondary.token_requests(), 1);
}
