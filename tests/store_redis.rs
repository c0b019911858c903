//! The shared token store on a real `redis-server` (started on a free
//! loopback port, no persistence): real processes on one Redis, a Redis
//! that dies and comes back, a port where nothing listens, a leaseholder
//! killed mid-request, and what Redis holds (sealed values only).

mod store_support;

use std::time::Duration;

use aim_token::emulator::{AimEmulator, Endpoint, Fault};
use aim_token::store::RedisStore;
use store_support::*;
use tokio::time::Instant;

/// The child role of this binary (see `store_support::spawn_child`).
#[test]
fn child_process() {
    if std::env::var(ROLE).is_ok() {
        child_main();
    }
}

fn redis_env(aim: &AimEmulator, redis: &Redis) -> Vec<(String, String)> {
    let mut env = aim_env(aim);
    env.push(("AIM_TOKEN_STORE".into(), redis.url()));
    env
}

async fn reports(children: Vec<std::process::Child>) -> Vec<Report> {
    tokio::task::spawn_blocking(move || children.into_iter().map(report).collect())
        .await
        .unwrap()
}

async fn raw(redis: &Redis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Starts a holder and waits until it asked AIM holding the lease (Redis
/// has a lease key); with `kill`, kills it then and checks its lease is
/// still there. On a loaded machine the holder can miss the setup: its
/// first store call (which connects) misses the 250 ms store timeout and
/// it asks AIM without the lease, or its short deadline passes before the
/// kill and it releases the lease. Such a holder is killed and another
/// started, `arm` re-arming AIM's fault each time. Returns the holder, the
/// token requests AIM has seen, and when the lease was seen (the kill).
async fn holder_with_the_lease(
    aim: &AimEmulator,
    redis: &Redis,
    env: &[(String, String)],
    kill: bool,
    arm: impl Fn(),
) -> (std::process::Child, u64, Instant) {
    let mut c = raw(redis).await;
    for _ in 0..5 {
        arm();
        let before = aim.token_requests();
        let mut holder = spawn_child("holder", env);
        let deadline = Instant::now() + Duration::from_secs(20);
        while aim.token_requests() == before {
            assert!(Instant::now() < deadline, "the holder never asked AIM");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seen = Instant::now();
        if kill {
            holder.kill().unwrap();
            holder.wait().unwrap();
        }
        let leases: Vec<String> = redis::cmd("KEYS")
            .arg("aim-token:lease:*")
            .query_async(&mut c)
            .await
            .unwrap();
        if !leases.is_empty() {
            return (holder, aim.token_requests(), seen);
        }
        eprintln!("the holder did not hold the lease when it was needed (loaded machine); starting another");
        let _ = holder.kill();
        holder.wait().unwrap();
    }
    panic!("no holder held the lease in 5 tries (the machine is too loaded for this test)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_of_fifty_tasks_cold_on_one_redis_make_one_token_request() {
    let Some(redis) = Redis::start() else { return };
    let aim = AimEmulator::start().await.unwrap();
    aim.set_outage(
        Endpoint::Token,
        Some(Fault::Delay(Duration::from_millis(500))),
    );
    let env = redis_env(&aim, &redis);
    let children = (0..4).map(|_| spawn_child("cold", &env)).collect();
    let reports = reports(children).await;
    assert_eq!(aim.token_requests(), 1, "{reports:#?}");
    let first = &reports[0].tokens[0];
    for r in &reports {
        assert_eq!(r.tokens.len(), 50);
        assert!(r.tokens.iter().all(|t| t == first), "{r:?}");
    }
    let waits = reports
        .iter()
        .filter(|r| r.stats.contains("lease_waits: 1"))
        .count();
    assert!(waits >= 1, "{reports:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaseholder_killed_mid_request_hands_over_when_its_lease_expires() {
    let Some(redis) = Redis::start() else { return };
    let aim = AimEmulator::start().await.unwrap();
    aim.set_outage(Endpoint::Token, Some(Fault::Delay(Duration::from_secs(60))));
    let mut env = redis_env(&aim, &redis);
    env.push(("TASKS".into(), "1".into()));
    // Deadline 2 s + 2 × request timeout 2 s + 2 × 250 ms + 1 s: a 7.5 s lease.
    env.push(("DEADLINE_MS".into(), "2000".into()));
    let (_, requests, killed) = holder_with_the_lease(&aim, &redis, &env, true, || {}).await;
    aim.set_outage(Endpoint::Token, None);
    // The next one would wait up to 20 s (its retry deadline) for the
    // holder's token; the dead holder's lease ends first and it takes over.
    let mut next_env = env.clone();
    next_env.push(("RETRY_DEADLINE_MS".into(), "20000".into()));
    let r = reports(vec![spawn_child("next", &next_env)])
        .await
        .remove(0);
    assert_eq!(r.tokens.len(), 1);
    assert_eq!(aim.token_requests(), requests + 1);
    let after = killed.elapsed();
    assert!(r.stats.contains("lease_waits: 1"), "{r:?}");
    // It waited for the dead holder's lease (5 s from its start), not longer.
    assert!(after >= Duration::from_secs(4), "{after:?}");
    assert!(after < Duration::from_secs(15), "{after:?}");
    // And wrote its token for the others.
    let next = reports(vec![spawn_child("after", &env)]).await.remove(0);
    assert_eq!(next.tokens, r.tokens);
    assert_eq!(aim.token_requests(), requests + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_values_are_sealed_and_foreign_or_tampered_ones_are_misses() {
    let Some(redis) = Redis::start() else { return };
    let aim = AimEmulator::start().await.unwrap();
    let store = || RedisStore::new(&redis.url()).unwrap();
    let first = aim.client_builder().token_store(store()).build().unwrap();
    let token = first.token().await.unwrap();

    let mut c = raw(&redis).await;
    // The lease is released in the background right after the write.
    let mut keys: Vec<String> = Vec::new();
    for _ in 0..100 {
        keys = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut c)
            .await
            .unwrap();
        if !keys.iter().any(|k| k.contains("lease")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let token_keys: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("aim-token:token:"))
        .collect();
    assert_eq!(token_keys.len(), 1, "{keys:?}");
    assert!(
        !keys.iter().any(|k| k.contains("lease")),
        "lease released: {keys:?}"
    );
    let key = token_keys[0].clone();
    for k in &keys {
        let value: Vec<u8> = redis::cmd("GET").arg(k).query_async(&mut c).await.unwrap();
        assert!(!contains(&value, token.secret().as_bytes()), "{k}");
        assert!(
            !contains(&value, AimEmulator::CLIENT_SECRET.as_bytes()),
            "{k}"
        );
        assert!(
            !contains(k.as_bytes(), AimEmulator::CLIENT_SECRET.as_bytes()),
            "{k}"
        );
    }
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 0, "the value expires with the token: {ttl}");

    let other = aim
        .client_builder()
        .client_secret("another-secret")
        .token_store(store())
        .build()
        .unwrap();
    assert_eq!(
        other.token().await.unwrap_err().oauth_error(),
        Some("invalid_client")
    );
    assert_eq!(other.stats().store_hits, 0);
    assert!(other.stats().store_misses >= 1);

    let second = aim.client_builder().token_store(store()).build().unwrap();
    assert_eq!(second.token().await.unwrap().secret(), token.secret());
    assert_eq!(aim.token_requests(), 2);

    let mut value: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    let middle = value.len() / 2;
    value[middle] ^= 0x01;
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(value)
        .query_async(&mut c)
        .await
        .unwrap();
    let third = aim.client_builder().token_store(store()).build().unwrap();
    assert_ne!(third.token().await.unwrap().secret(), token.secret());
    assert_eq!(aim.token_requests(), 3);
    assert_eq!(third.stats().store_errors, 0);

    // The key prefix setting keeps clients apart.
    let prefixed = aim
        .client_builder()
        .token_store(store().key_prefix("plant2:"))
        .build()
        .unwrap();
    prefixed.token().await.unwrap();
    assert_eq!(aim.token_requests(), 4);
    // The caller may get its token while the acquisition still writes the
    // entry and releases its lease: wait (bounded) for the lease to go.
    let mut keys: Vec<String> = Vec::new();
    for _ in 0..100 {
        keys = redis::cmd("KEYS")
            .arg("plant2:*")
            .query_async(&mut c)
            .await
            .unwrap();
        if keys.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(keys.len(), 1, "one entry, no lingering lease: {keys:?}");
    assert!(keys[0].starts_with("plant2:token:"), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_costs_no_error_and_sharing_resumes_when_it_is_back() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let aim = AimEmulator::start().await.unwrap();
    let url = redis.url();
    let client = || {
        aim.client_builder()
            .token_store(RedisStore::new(&url).unwrap())
            // Renew right away: these tokens are invalidated within a millisecond.
            .min_refresh_interval(Duration::from_micros(1))
            .build()
            .unwrap()
    };
    let before = client();
    let shared = before.token().await.unwrap();
    assert_eq!(client().token().await.unwrap().secret(), shared.secret());
    assert_eq!(aim.token_requests(), 1);

    redis.kill();
    // A client started during the outage, and one that had used Redis.
    for c in [client(), before.clone()] {
        c.invalidate(&c.token().await.unwrap());
        let started = Instant::now();
        c.token().await.unwrap();
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_millis(250 + 1750), "{elapsed:?}");
        assert!(c.stats().store_errors >= 1, "{:?}", c.stats());
    }
    let during = aim.token_requests();
    assert!(during >= 2, "{during}");

    redis.restart();
    // After the retry pause, the client that saw the outage shares again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    before.invalidate(&before.token().await.unwrap());
    let renewed = before.token().await.unwrap();
    assert_eq!(aim.token_requests(), during + 1);
    let fresh = client();
    assert_eq!(fresh.token().await.unwrap().secret(), renewed.secret());
    assert_eq!(aim.token_requests(), during + 1);
    assert_eq!(fresh.stats().store_hits, 1);
}

#[tokio::test]
async fn a_redis_store_where_nothing_listens_costs_no_error() {
    let aim = AimEmulator::start().await.unwrap();
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let client = aim
        .client_builder()
        .token_store(RedisStore::new(&url).unwrap())
        .build()
        .unwrap();
    let started = Instant::now();
    client.token().await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(250 + 1750), "{elapsed:?}");
    let stats = client.stats();
    assert_eq!((stats.store_errors, stats.store_hits), (1, 0), "{stats:?}");
    assert_eq!(aim.token_requests(), 1);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_one_store_timeout_then_is_skipped() {
    let Some(redis) = Redis::start() else { return };
    let aim = AimEmulator::start().await.unwrap();
    let url = redis.url();
    let client = || {
        aim.client_builder()
            .token_store(RedisStore::new(&url).unwrap())
            // Renew right away: these tokens are invalidated within a millisecond.
            .min_refresh_interval(Duration::from_micros(1))
            .build()
            .unwrap()
    };
    let a = client();
    let token = a.token().await.unwrap();
    redis.freeze(true);
    a.invalidate(&token);
    let started = Instant::now();
    a.token().await.unwrap();
    let elapsed = started.elapsed();
    redis.freeze(false);
    // The read hung: the 250 ms store timeout ended it, then AIM directly.
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(250 + 1750), "{elapsed:?}");
    assert_eq!(a.stats().store_errors, 1, "{:?}", a.stats());
    assert_eq!(aim.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_shares_and_an_untrusted_server_is_a_store_error() {
    let Some((redis, ca)) = Redis::start_tls() else {
        return;
    };
    let aim = AimEmulator::start().await.unwrap();
    let url = redis.url();
    assert!(url.starts_with("rediss://"));
    let trusted = || {
        RedisStore::new(&url)
            .unwrap()
            .root_certificate_pem(&ca)
            .unwrap()
    };
    let first = aim.client_builder().token_store(trusted()).build().unwrap();
    let token = first.token().await.unwrap();
    assert_eq!(first.stats().store_errors, 0, "{:?}", first.stats());
    let second = aim.client_builder().token_store(trusted()).build().unwrap();
    assert_eq!(second.token().await.unwrap().secret(), token.secret());
    assert_eq!(second.stats().store_hits, 1);
    assert_eq!(aim.token_requests(), 1);

    // The AIM client's own CA certificates are the store's trust too.
    let same_trust = aim
        .client_builder()
        .root_certificate_pem(&ca)
        .token_store(RedisStore::new(&url).unwrap())
        .build()
        .unwrap();
    assert_eq!(same_trust.token().await.unwrap().secret(), token.secret());
    assert_eq!(same_trust.stats().store_hits, 1, "{:?}", same_trust.stats());

    // Without the CA the handshake fails: a store error, the token from AIM.
    let untrusted = aim
        .client_builder()
        .token_store(RedisStore::new(&url).unwrap())
        .build()
        .unwrap();
    untrusted.token().await.unwrap();
    assert_eq!(untrusted.stats().store_errors, 1, "{:?}", untrusted.stats());
    assert_eq!(aim.token_requests(), 2);
}

/// A value someone else put under a token key (or a corrupted one) costs
/// at most the largest value the crate opens, not its size (Redis allows
/// 512 MB) in this process's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_redis_value_is_not_read_whole() {
    use aim_token::store::TokenStore as _;
    let Some(redis) = Redis::start() else { return };
    let store = RedisStore::new(&redis.url()).unwrap();
    let mut c = raw(&redis).await;
    let _: () = redis::cmd("SET")
        .arg("aim-token:token:k")
        .arg(vec![b'x'; 4 << 20])
        .query_async(&mut c)
        .await
        .unwrap();
    let read = store.get("k").await.unwrap().unwrap();
    assert!(read.len() <= (256 << 10) + 1, "{} bytes read", read.len());
    assert_eq!(store.get("missing").await.unwrap(), None);
    store
        .put("small", b"value", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        store.get("small").await.unwrap().as_deref(),
        Some(&b"value"[..])
    );
}

/// A holder that outlives its lease (a GC pause, a slow AIM answer, a
/// suspended VM: here its lease is expired by hand while AIM keeps it
/// waiting): another process takes over and stores a token. The stalled
/// holder's token, answered last, expires first; written last, it would
/// replace the longer-lived one for every host. It adopts the stored one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_outlived_its_lease_does_not_replace_the_newer_token() {
    let Some(redis) = Redis::start() else { return };
    let aim = AimEmulator::start().await.unwrap();
    aim.set_token_lifetime(Duration::from_secs(3600));
    let mut env = redis_env(&aim, &redis);
    env.push(("TASKS".into(), "1".into()));
    let (mut holder, requests, _) = holder_with_the_lease(&aim, &redis, &env, false, || {
        aim.inject_times(Endpoint::Token, Fault::Delay(Duration::from_secs(8)), 1);
    })
    .await;
    let mut c = raw(&redis).await;
    let leases: Vec<String> = redis::cmd("KEYS")
        .arg("aim-token:lease:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(leases.len(), 1, "{leases:?}");
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(&leases[0])
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    let taker = reports(vec![spawn_child("taker", &env)]).await.remove(0);
    assert_eq!(aim.token_requests(), requests + 1);
    aim.set_token_lifetime(Duration::from_secs(600));
    assert!(
        holder.try_wait().unwrap().is_none(),
        "inconclusive: the holder finished before the taker (machine too slow)"
    );
    let holder = reports(vec![holder]).await.remove(0);
    assert_eq!(
        holder.tokens, taker.tokens,
        "the holder adopts the stored token"
    );
    let after = reports(vec![spawn_child("after", &env)]).await.remove(0);
    assert_eq!(
        after.tokens, taker.tokens,
        "Redis kept the longer-lived token"
    );
    assert_eq!(aim.token_requests(), requests + 1);
}

/// What the store holds that does not open — an oversized value, a
/// truncated one, one sealed for another scope of the same client — is a
/// miss, and the next write replaces it: the compare-and-set compares
/// what `get` reads (the first 256 KiB + 1 bytes), so an oversized value
/// cannot block writes for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_do_not_open_are_misses_and_replaced_by_the_next_write() {
    let Some(redis) = Redis::start() else { return };
    let aim = AimEmulator::start().await.unwrap();
    let url = redis.url();
    let client = |scope: &str| {
        aim.client_builder()
            .scope(scope)
            .token_store(RedisStore::new(&url).unwrap())
            .build()
            .unwrap()
    };
    let mut c = raw(&redis).await;
    client("emulator.api").token().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("aim-token:token:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = keys[0].clone();
    let sealed: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    // A value sealed for another scope: copy the entry of "emulator.api"
    // under the key of the client without a scope.
    client("").token().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("aim-token:token:*")
        .query_async(&mut c)
        .await
        .unwrap();
    let other = keys.into_iter().find(|k| *k != key).unwrap();
    let oversized = [sealed.clone(), vec![b'x'; 300 << 10]].concat();
    let truncated = sealed[..sealed.len() - 1].to_vec();
    for (what, value) in [
        ("another scope's", sealed.clone()),
        ("an oversized", oversized),
        ("a truncated", truncated),
    ] {
        let _: () = redis::cmd("SET")
            .arg(&other)
            .arg(&value)
            .query_async(&mut c)
            .await
            .unwrap();
        let before = aim.token_requests();
        let fresh = client("");
        fresh.token().await.unwrap();
        assert_eq!(aim.token_requests(), before + 1, "{what} value");
        assert_eq!(fresh.stats().store_hits, 0, "{what} value");
        assert_eq!(fresh.stats().store_errors, 0, "{what} value");
        let now: Vec<u8> = redis::cmd("GET")
            .arg(&other)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(now != value, "{what} value was not replaced");
        let next = client("");
        next.token().await.unwrap();
        assert_eq!(
            next.stats().store_hits,
            1,
            "{what} value: the new entry is shared"
        );
        assert_eq!(aim.token_requests(), before + 1, "{what} value");
    }
}

/// The compare-and-set script at the size bound: a value of 256 KiB is
/// read whole, one of 256 KiB + 1 or more as its first 256 KiB + 1 bytes;
/// a write compares with exactly what a read returned, so it replaces each
/// of them, and no other value of that size.
#[tokio::test]
async fn replace_if_at_the_value_size_bound() {
    use aim_token::store::TokenStore;
    let Some(redis) = Redis::start() else { return };
    let store = RedisStore::new(&redis.url()).unwrap();
    let mut c = raw(&redis).await;
    const MAX: usize = 256 * 1024;
    let ttl = Duration::from_secs(60);
    for len in [MAX - 1, MAX, MAX + 1, MAX + 2, 300 << 10] {
        let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let _: () = redis::cmd("SET")
            .arg("aim-token:token:k")
            .arg(&value)
            .query_async(&mut c)
            .await
            .unwrap();
        let read = store.get("k").await.unwrap().unwrap();
        assert_eq!(read.len(), len.min(MAX + 1), "{len} bytes");
        let mut other = read.clone();
        other[len.min(MAX + 1) - 1] ^= 1;
        assert!(
            !store
                .replace_if("k", Some(&other), b"new", ttl)
                .await
                .unwrap(),
            "{len} bytes: replaced a value it was not given"
        );
        assert!(
            !store.replace_if("k", None, b"new", ttl).await.unwrap(),
            "{len} bytes: replaced as if there were none"
        );
        assert!(
            store
                .replace_if("k", Some(&read), b"new", ttl)
                .await
                .unwrap(),
            "{len} bytes: not replaced"
        );
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"new"[..]));
    }
    let _: () = redis::cmd("DEL")
        .arg("aim-token:token:k")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(store.replace_if("k", None, b"first", ttl).await.unwrap());
    assert!(!store.replace_if("k", None, b"second", ttl).await.unwrap());
}
