//! The cache's promises under hostile servers and impatient callers:
//! callers that give up, runtimes that go away, servers that hang or answer
//! absurd numbers, and a resource server that refuses every token. Against
//! the emulator over real HTTP, in tokio's paused time where time matters.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aim_token::emulator::{AimEmulator, Endpoint, Fault};
use aim_token::{AimClient, Clock, ErrorKind, MesClient, TokioClock};
use tokio::time::{sleep, timeout, Instant};

const SEC: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);

async fn emulator(clock: &Arc<TokioClock>, lifetime: Duration) -> AimEmulator {
    AimEmulator::builder()
        .clock(clock.clone())
        .token_lifetime(lifetime)
        .start()
        .await
        .unwrap()
}

fn hang() -> Fault {
    // Accepts, reads the request, never answers (within any test's horizon).
    Fault::Delay(1000 * HOUR)
}

// ------------------------------------------------ the cache owns the request

#[tokio::test(start_paused = true)]
async fn fifty_callers_with_2s_timeouts_all_get_the_token_of_a_6s_answer() {
    let clock = Arc::new(TokioClock::new());
    let aim = emulator(&clock, HOUR).await;
    aim.set_outage(Endpoint::Token, Some(Fault::Delay(6 * SEC)));
    let client = aim.client_builder().clock(clock.clone()).build().unwrap();
    let started = Instant::now();
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                // An impatient caller: gives up after 2 s and tries again.
                for _ in 0..10 {
                    if let Ok(result) = timeout(2 * SEC, client.token()).await {
                        return result;
                    }
                }
                panic!("no token after ten 2 s tries");
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap().unwrap();
    }
    let took = started.elapsed();
    assert!(took < 7 * SEC, "took {took:?}");
    assert!(aim.token_requests() <= 3, "{:?}", aim.counters());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_caller_does_not_cancel_the_request_and_the_next_one_joins_it() {
    let clock = Arc::new(TokioClock::new());
    let aim = emulator(&clock, HOUR).await;
    aim.inject(Endpoint::Token, Fault::Delay(5 * SEC));
    let client = aim.client_builder().clock(clock.clone()).build().unwrap();
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.token().await }
    });
    sleep(SEC).await;
    first.abort();
    sleep(SEC).await;
    let started = Instant::now();
    client.token().await.unwrap();
    assert!(started.elapsed() <= 3 * SEC, "{:?}", started.elapsed());
    assert_eq!(aim.token_requests(), 1);
}

// ------------------------------------------------ retry_deadline is a deadline

async fn hanging_nodes(clock: &Arc<TokioClock>, count: usize) -> (Vec<AimEmulator>, AimClient) {
    let mut nodes = Vec::new();
    for _ in 0..count {
        let node = emulator(clock, HOUR).await;
        node.set_outage(Endpoint::Token, Some(hang()));
        nodes.push(node);
    }
    let mut builder = nodes[0]
        .client_builder()
        .clock(clock.clone())
        .retry_deadline(3 * SEC);
    for node in &nodes[1..] {
        builder = builder.fallback_authority(node.authority());
    }
    (nodes, builder.build().unwrap())
}

#[tokio::test(start_paused = true)]
async fn retry_deadline_bounds_a_hanging_aim_with_one_and_three_authorities() {
    let clock = Arc::new(TokioClock::new());
    for count in [1, 3] {
        let (nodes, client) = hanging_nodes(&clock, count).await;
        let started = Instant::now();
        let err = client.token().await.unwrap_err();
        let took = started.elapsed();
        assert!(took <= 4 * SEC, "{count} authorities: {took:?}");
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
        assert!(err.is_transient());
        assert!(std::error::Error::source(&err).is_some(), "{err:?}");
        let sent: u64 = nodes.iter().map(AimEmulator::token_requests).sum();
        assert!(sent >= 1, "{sent}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_hanging_primary_leaves_the_secondary_its_share_of_the_deadline() {
    let clock = Arc::new(TokioClock::new());
    let primary = emulator(&clock, HOUR).await;
    primary.set_outage(Endpoint::Token, Some(hang()));
    let secondary = emulator(&clock, HOUR).await;
    let client = primary
        .client_builder()
        .clock(clock.clone())
        .fallback_authority(secondary.authority())
        .retry_deadline(3 * SEC)
        .build()
        .unwrap();
    let started = Instant::now();
    let token = client.token().await.unwrap();
    assert!(started.elapsed() <= 3 * SEC, "{:?}", started.elapsed());
    assert_eq!(token.authority(), secondary.authority());
}

// ------------------------------------------------ absurd server numbers

#[tokio::test(start_paused = true)]
async fn a_retry_after_of_2_pow_64_seconds_neither_panics_nor_stalls() {
    let clock = Arc::new(TokioClock::new());
    let aim = emulator(&clock, HOUR).await;
    aim.set_outage(
        Endpoint::Token,
        Some(Fault::Status {
            status: 503,
            retry_after: Some(u64::MAX),
            body: None,
        }),
    );
    let client = aim
        .client_builder()
        .clock(clock.clone())
        .retry_deadline(5 * SEC)
        .build()
        .unwrap();
    let started = Instant::now();
    // Twice: the second acquisition starts after the first one's deadline.
    for _ in 0..2 {
        let err = client.token().await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(err.retry_after().is_some_and(|d| d <= HOUR), "{err:?}");
        sleep(2 * SEC).await;
    }
    assert!(started.elapsed() <= 15 * SEC, "{:?}", started.elapsed());
    // Then AIM recovers: a token at once.
    aim.set_outage(Endpoint::Token, None);
    client.token().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_date_in_the_year_9999_is_bounded_by_the_deadline() {
    let clock = Arc::new(TokioClock::new());
    let aim = emulator(&clock, HOUR).await;
    let year_9999 = Duration::from_secs(253_400_000_000)
        .saturating_sub(clock.now().duration_since(SystemTime::UNIX_EPOCH).unwrap());
    aim.inject(
        Endpoint::Token,
        Fault::RetryAfterDate {
            status: 503,
            after: year_9999,
        },
    );
    let client = aim
        .client_builder()
        .clock(clock.clone())
        .retry_deadline(5 * SEC)
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client.token().await.unwrap_err();
    assert!(started.elapsed() <= 6 * SEC, "{:?}", started.elapsed());
    assert!(err.retry_after().is_some_and(|d| d <= HOUR), "{err:?}");
    // The next acquisition is not held off by the date either.
    let token = client.token().await.unwrap();
    assert!(token.lifetime() > HOUR / 2);
}

// ------------------------------------------------ the watched refresher

/// A wall clock the test moves by hand, valid in any runtime.
#[derive(Debug)]
struct HandClock(Mutex<SystemTime>);

impl HandClock {
    fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap();
        *now += by;
    }
}

impl Clock for HandClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

/// AIM with one-hour tokens on a runtime of its own (returned: it must
/// outlive the test), and a client of it on a hand-moved clock.
struct HandClocked {
    _server: tokio::runtime::Runtime,
    aim: AimEmulator,
    clock: Arc<HandClock>,
    client: AimClient,
}

fn hand_clocked() -> HandClocked {
    let server = tokio::runtime::Runtime::new().unwrap();
    let aim = server
        .block_on(AimEmulator::builder().token_lifetime(HOUR).start())
        .unwrap();
    let clock = Arc::new(HandClock(Mutex::new(SystemTime::now())));
    let client = aim
        .client_builder()
        .clock(clock.clone())
        .refresh_jitter(0.0)
        .build()
        .unwrap();
    HandClocked {
        _server: server,
        aim,
        clock,
        client,
    }
}

#[test]
fn a_refresher_that_died_with_its_runtime_is_replaced_at_half_life() {
    // AIM lives on a runtime of its own for the whole test.
    let HandClocked {
        _server,
        aim,
        clock,
        client,
    } = hand_clocked();

    // The first token in a short-lived current-thread runtime (a set-up
    // step, a test fixture), which starts the refresher there and then goes.
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = setup.block_on(client.token()).unwrap();
    drop(setup);
    assert_eq!(aim.token_requests(), 1);

    // Life goes on in another runtime, past half the lifetime.
    let app = tokio::runtime::Runtime::new().unwrap();
    clock.advance(31 * 60 * SEC);
    app.block_on(async {
        let deadline = Instant::now() + 5 * SEC;
        loop {
            let token = client.token().await.unwrap();
            if !token.same_as(&first) {
                break;
            }
            assert!(Instant::now() < deadline, "no refresh at 31 min of 60");
            sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(aim.token_requests(), 2);
}

#[test]
fn a_refresher_on_a_current_thread_runtime_between_block_on_calls_is_covered_by_callers() {
    let HandClocked {
        _server,
        aim,
        clock,
        client,
    } = hand_clocked();
    // One current-thread runtime that lives on but runs only inside short
    // `block_on` calls: the refresher spawned there is alive but idle.
    let app = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = app.block_on(client.token()).unwrap();
    clock.advance(31 * 60 * SEC);
    let started = std::time::Instant::now();
    loop {
        let token = app.block_on(client.token()).unwrap();
        if !token.same_as(&first) {
            break;
        }
        assert!(started.elapsed() < 5 * SEC, "no refresh at 31 min of 60");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(aim.token_requests(), 2);
}

// ------------------------------------------------ 401 renewals are rate-limited

#[tokio::test(start_paused = true)]
async fn mes_refusing_every_token_costs_at_most_three_token_requests_for_50_calls() {
    let clock = Arc::new(TokioClock::new());
    let aim = emulator(&clock, HOUR).await;
    // Another AIM's MES: it does not trust our AIM's issuer, so it refuses every token.
    let other = emulator(&clock, HOUR).await;
    let client = aim.client_builder().clock(clock.clone()).build().unwrap();
    let mes = MesClient::new(other.mes_base(), client).unwrap();
    let mut fresh_refused = 0;
    for _ in 0..50 {
        let err = mes
            .get_json::<serde_json::Value>("api/v3/entity")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
        if err.to_string().contains("fresh") {
            fresh_refused += 1;
        }
        sleep(SEC).await;
    }
    assert!(aim.token_requests() <= 3, "{:?}", aim.counters());
    assert!(fresh_refused > 0);
}

// ------------------------------------------------ failover on what another node can fix

async fn https_node() -> AimEmulator {
    AimEmulator::builder().https(true).start().await.unwrap()
}

#[tokio::test]
async fn a_primary_with_an_untrusted_certificate_fails_over_to_the_secondary() {
    let primary = https_node().await; // its CA is not given to the client
    let secondary = https_node().await;
    let client = secondary
        .client_builder() // trusts the secondary's CA only
        .authority(primary.authority())
        .fallback_authority(secondary.authority())
        .build()
        .unwrap();
    let token = client.token().await.unwrap();
    assert_eq!(token.authority(), secondary.authority());
    assert_eq!(client.stats().failovers, 1);
}

#[tokio::test(start_paused = true)]
async fn an_html_404_from_the_primary_fails_over() {
    let clock = Arc::new(TokioClock::new());
    let primary = emulator(&clock, HOUR).await;
    let secondary = emulator(&clock, HOUR).await;
    primary.set_outage(
        Endpoint::Token,
        Some(Fault::Status {
            status: 404,
            retry_after: None,
            body: Some("<html><body>404 - File or directory not found.</body></html>".into()),
        }),
    );
    let client = primary
        .client_builder()
        .clock(clock.clone())
        .fallback_authority(secondary.authority())
        .build()
        .unwrap();
    let token = client.token().await.unwrap();
    assert_eq!(token.authority(), secondary.authority());
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_from_a_fallback_does_not_cool_down_the_primary() {
    let clock = Arc::new(TokioClock::new());
    let primary = emulator(&clock, HOUR).await;
    let secondary = emulator(&clock, HOUR).await;
    primary.set_outage(
        Endpoint::Token,
        Some(Fault::Status {
            status: 503,
            retry_after: None,
            body: None,
        }),
    );
    secondary.set_outage(
        Endpoint::Token,
        Some(Fault::OAuth {
            status: 400,
            error: "invalid_client".into(),
        }),
    );
    let client = primary
        .client_builder()
        .clock(clock.clone())
        .fallback_authority(secondary.authority())
        .retry_deadline(2 * SEC)
        .build()
        .unwrap();
    client.token().await.unwrap_err();
    // The primary is back: the fallback's refusal is not remembered.
    primary.set_outage(Endpoint::Token, None);
    let token = client.token().await.unwrap();
    assert_eq!(token.authority(), primary.authority());
    assert_eq!(client.stats().cooldown_rejections, 0);
}

#[tokio::test(start_paused = true)]
async fn failed_discovery_falls_back_to_the_fixed_token_route() {
    let clock = Arc::new(TokioClock::new());
    let aim = emulator(&clock, HOUR).await;
    aim.set_outage(
        Endpoint::Discovery,
        Some(Fault::Status {
            status: 500,
            retry_after: None,
            body: Some("<html>Server Error</html>".into()),
        }),
    );
    let client = aim.client_builder().clock(clock.clone()).build().unwrap();
    client.token().await.unwrap();
    assert_eq!(aim.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn transient_token_failures_keep_the_discovery_cache() {
    let clock = Arc::new(TokioClock::new());
    let aim = emulator(&clock, HOUR).await;
    aim.inject_times(
        Endpoint::Token,
        Fault::Status {
            status: 503,
            retry_after: None,
            body: None,
        },
        3,
    );
    let client = aim.client_builder().clock(clock.clone()).build().unwrap();
    client.token().await.unwrap();
    let c = aim.counters();
    assert_eq!((c.discovery, c.token), (1, 4), "{c:?}");
}

// ------------------------------------------------ redundant AIM nodes

#[tokio::test]
async fn a_fallback_node_reporting_the_primarys_issuer_is_accepted() {
    let primary = AimEmulator::start().await.unwrap();
    let rsso = AimEmulator::builder()
        .issuer(primary.authority())
        .start()
        .await
        .unwrap();
    primary.suspend().await;
    let client = primary
        .client_builder()
        .fallback_authority(rsso.authority())
        .build()
        .unwrap();
    let token = client.token().await.unwrap();
    assert_eq!(token.authority(), rsso.authority());
}

#[tokio::test]
async fn expected_issuer_accepts_an_aim_installed_under_another_name() {
    let name = "https://sms01.plant.local/identitymanager";
    let aim = AimEmulator::builder().issuer(name).start().await.unwrap();
    let err = aim
        .client_builder()
        .build()
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("issuer"), "{err}");
    let client = aim.client_builder().expected_issuer(name).build().unwrap();
    client.token().await.unwrap();
}

// ------------------------------------------------ expiry from before the request

#[tokio::test(start_paused = true)]
async fn the_lifetime_counts_from_before_the_request_was_sent() {
    let clock = Arc::new(TokioClock::new());
    let aim = emulator(&clock, 60 * SEC).await;
    aim.inject(Endpoint::Token, Fault::Delay(5 * SEC));
    let client = aim.client_builder().clock(clock.clone()).build().unwrap();
    let before = clock.now();
    let token = client.token().await.unwrap();
    let expires_after = token.expires_at().duration_since(before).unwrap();
    assert!(expires_after <= 60 * SEC, "{expires_after:?}");
    assert!(token.issued_at() < before + SEC);
}
