//! The shared token store on disk (`FileStore`), end to end: real child
//! processes sharing one directory, a simulated day of shared refreshes,
//! sealing, 401 renewal, and stores that fail or hang.

mod store_support;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aim_token::emulator::{AimEmulator, Endpoint, Fault};
use aim_token::store::{BoxFuture, FileStore, Lease, TokenStore};
use aim_token::{AimClient, ErrorKind, TokioClock};
use store_support::*;
use tokio::time::Instant;

/// The child role of this binary (see `store_support::spawn_child`).
#[test]
fn child_process() {
    if std::env::var(ROLE).is_ok() {
        child_main();
    }
}

fn file_env(aim: &AimEmulator, dir: &std::path::Path) -> Vec<(String, String)> {
    let mut env = aim_env(aim);
    env.push(("AIM_TOKEN_STORE".into(), format!("file:{}", dir.display())));
    env
}

async fn reports(children: Vec<std::process::Child>) -> Vec<Report> {
    tokio::task::spawn_blocking(move || children.into_iter().map(report).collect())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_sharing_a_file_store_make_one_token_request() {
    let aim = AimEmulator::start().await.unwrap();
    aim.set_outage(
        Endpoint::Token,
        Some(Fault::Delay(Duration::from_millis(500))),
    );
    let dir = temp_dir("file8");
    let env = file_env(&aim, &dir);
    let children = (0..8).map(|_| spawn_child("cold", &env)).collect();
    let reports = reports(children).await;
    assert_eq!(aim.token_requests(), 1, "{reports:#?}");
    let first = &reports[0].tokens[0];
    for r in &reports {
        assert_eq!(r.tokens.len(), 50);
        assert!(r.tokens.iter().all(|t| t == first), "{r:?}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaseholder_killed_mid_request_does_not_block_the_others() {
    let aim = AimEmulator::start().await.unwrap();
    aim.set_outage(Endpoint::Token, Some(Fault::Delay(Duration::from_secs(60))));
    let dir = temp_dir("file-kill");
    let mut env = file_env(&aim, &dir);
    env.push(("TASKS".into(), "1".into()));
    let mut holder = spawn_child("holder", &env);
    let deadline = Instant::now() + Duration::from_secs(20);
    while aim.token_requests() == 0 {
        assert!(Instant::now() < deadline, "the first child never asked AIM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    aim.set_outage(Endpoint::Token, None);
    let started = Instant::now();
    let r = reports(vec![spawn_child("next", &env)]).await.remove(0);
    assert_eq!(r.tokens.len(), 1);
    assert_eq!(aim.token_requests(), 2);
    // The OS released the dead holder's lock: no wait for any expiry.
    assert!(started.elapsed() < Duration::from_secs(10), "{r:?}");
    // And the survivor stored its token for the next process.
    let after = reports(vec![spawn_child("after", &env)]).await.remove(0);
    assert_eq!(after.tokens, r.tokens);
    assert_eq!(aim.token_requests(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn files_are_sealed_user_only_and_foreign_or_tampered_entries_are_misses() {
    let aim = AimEmulator::start().await.unwrap();
    let dir = temp_dir("file-seal");
    let store = FileStore::new(&dir);
    let first = aim
        .client_builder()
        .token_store(store.clone())
        .build()
        .unwrap();
    let token = first.token().await.unwrap();
    let files = files(&dir);
    assert!(!files.is_empty());
    for (path, content) in &files {
        assert!(!contains(content, token.secret().as_bytes()), "{path:?}");
        assert!(
            !contains(content, AimEmulator::CLIENT_SECRET.as_bytes()),
            "{path:?}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{path:?} is {mode:o}");
        }
    }

    // Another secret: the entry does not open (a miss), AIM says why.
    let other = aim
        .client_builder()
        .client_secret("another-secret")
        .token_store(store.clone())
        .build()
        .unwrap();
    let err = other.token().await.unwrap_err();
    assert_eq!(err.oauth_error(), Some("invalid_client"), "{err}");
    let stats = other.stats();
    assert_eq!((stats.store_hits, stats.store_errors), (0, 0), "{stats:?}");
    assert!(stats.store_misses >= 1, "{stats:?}");

    // The right secret: the stored token, no request.
    let second = aim
        .client_builder()
        .token_store(store.clone())
        .build()
        .unwrap();
    assert_eq!(second.token().await.unwrap().secret(), token.secret());
    assert_eq!(second.stats().store_hits, 1);
    assert_eq!(aim.token_requests(), 2); // first + the foreign secret's

    // One flipped byte: a miss, a new token from AIM, no error.
    let (path, mut content) = files
        .into_iter()
        .find(|(p, _)| p.extension().is_some_and(|e| e == "token"))
        .unwrap();
    let last = content.len() - 1;
    content[last] ^= 0x20;
    std::fs::write(&path, content).unwrap();
    let third = aim.client_builder().token_store(store).build().unwrap();
    let fresh = third.token().await.unwrap();
    assert_ne!(fresh.secret(), token.secret());
    assert_eq!(aim.token_requests(), 3);
    assert_eq!(third.stats().store_hits, 0);
    assert!(third.stats().store_misses >= 1);
    // The lease is released in the background after token() returns; on
    // Windows a file still open cannot be deleted, so wait (bounded) for it.
    drop((first, second, third, other));
    for attempt in 0.. {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => break,
            Err(e) if attempt < 100 => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{}: {e}", dir.display()),
        }
    }
}

#[tokio::test]
async fn a_401_renewal_replaces_the_shared_token_once_for_everyone() {
    let aim = AimEmulator::start().await.unwrap();
    let dir = temp_dir("file-401");
    let store = FileStore::new(&dir);
    let client = || {
        aim.client_builder()
            .token_store(store.clone())
            // Renew right away: these tokens are refused within a millisecond.
            .min_refresh_interval(std::time::Duration::from_micros(1))
            .build()
            .unwrap()
    };
    let (a, b) = (client(), client());
    let old = a.token().await.unwrap();
    assert_eq!(b.token().await.unwrap().secret(), old.secret());
    assert_eq!(aim.token_requests(), 1);

    // MES refused the token on host A: A must not get it back from the store.
    a.invalidate(&old);
    let renewed = a.token().await.unwrap();
    assert_ne!(renewed.secret(), old.secret());
    assert_eq!(aim.token_requests(), 2);

    // Host B saw the same 401: it takes A's new token, no second renewal, and
    // its compare-and-delete leaves A's new token in the store.
    b.invalidate(&b.token().await.unwrap());
    assert_eq!(b.token().await.unwrap().secret(), renewed.secret());
    assert_eq!(client().token().await.unwrap().secret(), renewed.secret());
    assert_eq!(aim.token_requests(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_simulated_day_three_clients_sharing_a_store_one_request_per_refresh_period() {
    let clock = Arc::new(TokioClock::new());
    let aim = AimEmulator::builder()
        .clock(clock.clone())
        .token_lifetime(Duration::from_secs(600))
        .start()
        .await
        .unwrap();
    let dir = temp_dir("file-day");
    let clients: Vec<AimClient> = (0..3)
        .map(|_| {
            aim.client_builder()
                .clock(clock.clone())
                .token_store(FileStore::new(&dir))
                .build()
                .unwrap()
        })
        .collect();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(24 * 3600) {
        for c in &clients {
            let token = c.token().await.unwrap();
            assert!(token.remaining_at(aim_token::Clock::now(&*clock)) > Duration::from_secs(30));
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    // Refresh at 40..50 % of 600 s (the jitter is shared: derived from the
    // token): 288..360 periods a day. Alone, each client would make as many.
    let requests = aim.token_requests();
    assert!((288..=361).contains(&requests), "{requests} token requests");
    let own: u64 = clients.iter().map(|c| c.stats().token_requests).sum();
    assert_eq!(own, requests);
    let hits: u64 = clients.iter().map(|c| c.stats().store_hits).sum();
    assert!(
        hits >= 2 * (requests - 1),
        "{hits} store hits for {requests} requests"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A store whose every operation fails, or never answers.
#[derive(Debug)]
struct Broken {
    hang: bool,
    calls: AtomicU64,
}

impl Broken {
    fn op<T: Send + 'static>(&self) -> BoxFuture<'static, io::Result<T>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.hang {
            Box::pin(std::future::pending())
        } else {
            Box::pin(async { Err(io::Error::other("connection refused")) })
        }
    }
}

impl TokenStore for Broken {
    fn get<'a>(&'a self, _: &'a str) -> BoxFuture<'a, io::Result<Option<Vec<u8>>>> {
        self.op()
    }
    fn put<'a>(&'a self, _: &'a str, _: &'a [u8], _: Duration) -> BoxFuture<'a, io::Result<()>> {
        self.op()
    }
    fn delete_if<'a>(&'a self, _: &'a str, _: &'a [u8]) -> BoxFuture<'a, io::Result<bool>> {
        self.op()
    }
    fn try_lease<'a>(
        &'a self,
        _: &'a str,
        _: Duration,
    ) -> BoxFuture<'a, io::Result<Option<Lease>>> {
        self.op()
    }
    fn release(&self, _: Lease) -> BoxFuture<'_, io::Result<()>> {
        self.op()
    }
}

#[tokio::test]
async fn a_failing_or_hanging_store_costs_at_most_its_timeout_and_never_an_error() {
    for hang in [false, true] {
        let aim = AimEmulator::start().await.unwrap();
        let store = Arc::new(Broken {
            hang,
            calls: AtomicU64::new(0),
        });
        let client = aim
            .client_builder()
            .token_store(store.clone())
            .build()
            .unwrap();
        let started = Instant::now();
        let token = client.token().await.unwrap();
        let elapsed = started.elapsed();
        // One bounded read (250 ms), then AIM directly: no lease, no write.
        assert!(elapsed < Duration::from_millis(250 + 1750), "{elapsed:?}");
        if hang {
            assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
        }
        assert_eq!(store.calls.load(Ordering::Relaxed), 1);
        let stats = client.stats();
        assert_eq!(stats.store_errors, 1, "{stats:?}");
        assert_eq!(aim.token_requests(), 1);
        // A renewal soon after skips the failing store altogether.
        client.invalidate(&token);
        client.token().await.unwrap();
        assert_eq!(store.calls.load(Ordering::Relaxed), 1);
    }
    // A directory that cannot be created: a plain failure, no caller error.
    let aim = AimEmulator::start().await.unwrap();
    let file = temp_dir("file-blocked").join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let client = aim
        .client_builder()
        .token_store(FileStore::new(file.join("sub")))
        .build()
        .unwrap();
    client.token().await.unwrap();
    assert!(client.stats().store_errors >= 1, "{:?}", client.stats());
    assert_eq!(aim.token_requests(), 1);
}

#[tokio::test]
async fn the_store_is_not_touched_by_cached_calls() {
    let aim = AimEmulator::start().await.unwrap();
    let store = Arc::new(Counting::default());
    let client = aim
        .client_builder()
        .token_store(store.clone())
        .build()
        .unwrap();
    client.token().await.unwrap();
    let after_first = store.calls.load(Ordering::Relaxed);
    assert!(
        after_first >= 3,
        "read, lease, re-read, write, release: {after_first}"
    );
    for _ in 0..1000 {
        client.token().await.unwrap();
    }
    assert_eq!(store.calls.load(Ordering::Relaxed), after_first);
    assert_eq!(
        ErrorKind::Config,
        aim_token::store::from_spec("x").unwrap_err().kind()
    );
}

/// An in-memory store that counts its calls.
#[derive(Debug, Default)]
struct Counting {
    calls: AtomicU64,
    value: std::sync::Mutex<Option<Vec<u8>>>,
}

impl TokenStore for Counting {
    fn get<'a>(&'a self, _: &'a str) -> BoxFuture<'a, io::Result<Option<Vec<u8>>>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let v = self.value.lock().unwrap().clone();
        Box::pin(async move { Ok(v) })
    }
    fn put<'a>(
        &'a self,
        _: &'a str,
        value: &'a [u8],
        _: Duration,
    ) -> BoxFuture<'a, io::Result<()>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        *self.value.lock().unwrap() = Some(value.to_vec());
        Box::pin(async { Ok(()) })
    }
    fn delete_if<'a>(&'a self, _: &'a str, _: &'a [u8]) -> BoxFuture<'a, io::Result<bool>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(false) })
    }
    fn try_lease<'a>(
        &'a self,
        key: &'a str,
        _: Duration,
    ) -> BoxFuture<'a, io::Result<Option<Lease>>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { Ok(Some(Lease::new(key, Lease::random_owner()))) })
    }
    fn release(&self, _: Lease) -> BoxFuture<'_, io::Result<()>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

/// A store where another process always holds the lease and never writes.
#[derive(Debug, Default)]
struct LeasedForever {
    puts: AtomicU64,
}

impl TokenStore for LeasedForever {
    fn get<'a>(&'a self, _: &'a str) -> BoxFuture<'a, io::Result<Option<Vec<u8>>>> {
        Box::pin(async { Ok(None) })
    }
    fn put<'a>(&'a self, _: &'a str, _: &'a [u8], _: Duration) -> BoxFuture<'a, io::Result<()>> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
    fn delete_if<'a>(&'a self, _: &'a str, _: &'a [u8]) -> BoxFuture<'a, io::Result<bool>> {
        Box::pin(async { Ok(false) })
    }
    fn try_lease<'a>(
        &'a self,
        _: &'a str,
        _: Duration,
    ) -> BoxFuture<'a, io::Result<Option<Lease>>> {
        Box::pin(async { Ok(None) })
    }
    fn release(&self, _: Lease) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_waiter_asks_aim_itself_after_its_retry_deadline() {
    let aim = AimEmulator::start().await.unwrap();
    let store = Arc::new(LeasedForever::default());
    let client = aim
        .client_builder()
        .retry_deadline(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(1))
        .token_store(store.clone())
        .build()
        .unwrap();
    let started = Instant::now();
    client.token().await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(client.stats().lease_waits, 1);
    assert_eq!(aim.token_requests(), 1);
    assert_eq!(
        store.puts.load(Ordering::Relaxed),
        1,
        "stored for the others"
    );
}

/// The waiter that gave up on a slow holder stored a token; the holder's
/// own, answered last, expires first. Written last, it would replace the
/// longer-lived one for every process: the holder adopts the stored token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_writer_keeps_the_longer_lived_token_another_process_stored_meanwhile() {
    let aim = AimEmulator::start().await.unwrap();
    aim.set_token_lifetime(Duration::from_secs(3600));
    // The holder's token request is answered after 8 s.
    aim.inject_times(Endpoint::Token, Fault::Delay(Duration::from_secs(8)), 1);
    let dir = temp_dir("file-late");
    let mut env = file_env(&aim, &dir);
    env.push(("TASKS".into(), "1".into()));
    let mut holder = spawn_child("holder", &env);
    let deadline = Instant::now() + Duration::from_secs(20);
    while aim.token_requests() == 0 {
        assert!(Instant::now() < deadline, "the holder never asked AIM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // This one waits 1 s for the holder, then asks AIM and stores its token.
    let mut impatient = env.clone();
    impatient.push(("DEADLINE_MS".into(), "1000".into()));
    let waiter = reports(vec![spawn_child("waiter", &impatient)])
        .await
        .remove(0);
    assert_eq!(aim.token_requests(), 2);
    // From now on AIM issues 10-minute tokens: the holder's among them.
    aim.set_token_lifetime(Duration::from_secs(600));
    assert!(
        holder.try_wait().unwrap().is_none(),
        "inconclusive: the holder finished before the waiter (machine too slow)"
    );
    let holder = reports(vec![holder]).await.remove(0);
    assert_eq!(aim.token_requests(), 2);
    assert_eq!(
        holder.tokens, waiter.tokens,
        "the holder adopts the stored token"
    );
    let after = reports(vec![spawn_child("after", &env)]).await.remove(0);
    assert_eq!(
        after.tokens, waiter.tokens,
        "the store kept the longer-lived token"
    );
    assert_eq!(aim.token_requests(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A write that timed out must not land afterwards: here another process
/// sits in the entry's write critical section (its lock held) while the
/// client writes; the client gives up after the store timeout, MES refuses
/// the token, the client renews. When the lock is freed, the abandoned
/// write would put the refused token into the store for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_abandoned_at_its_timeout_does_not_land_later_with_a_refused_token() {
    let aim = AimEmulator::start().await.unwrap();
    let dir = temp_dir("file-late-put");
    let store = FileStore::new(&dir);
    let client = || {
        aim.client_builder()
            .token_store(store.clone())
            .min_refresh_interval(Duration::from_micros(1))
            .build()
            .unwrap()
    };
    // The entry's file name, from a first client; then an empty store.
    client().token().await.unwrap();
    let (entry, _) = token_entry(&dir);
    std::fs::remove_file(&entry).unwrap();
    let wlock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(entry.with_extension("wlock"))
        .unwrap();
    wlock.lock().unwrap();

    let a = client();
    let refused = a.token().await.unwrap();
    assert!(
        a.stats().store_errors >= 1,
        "the write timed out: {:?}",
        a.stats()
    );
    a.invalidate(&refused);
    let renewed = a.token().await.unwrap();
    assert_ne!(digest(renewed.secret()), digest(refused.secret()));

    // Closing the file frees the lock (Wine refuses an explicit unlock of
    // a whole-file lock with a lock violation).
    drop(wlock);
    // Time for an abandoned write to land, if it is going to.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = client();
    let got = b.token().await.unwrap();
    assert_ne!(
        digest(got.secret()),
        digest(refused.secret()),
        "the refused token came back"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A wall clock offset from the system's: another host's.
#[derive(Debug)]
struct Skewed {
    ahead: Duration,
}

impl aim_token::Clock for Skewed {
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now() + self.ahead
    }
}

/// A token stored by a host whose clock is 20 s ahead (within the expiry
/// margin, so it is taken) says it was issued in this host's future. Refused by MES here, it must still be
/// renewable: "issued less than min_refresh_interval ago" is not true of
/// a token from the future.
#[tokio::test]
async fn a_token_stored_by_a_host_whose_clock_is_ahead_can_still_be_renewed_after_a_401() {
    let aim = AimEmulator::start().await.unwrap();
    let dir = temp_dir("file-skew");
    let ahead = aim
        .client_builder()
        .clock(Arc::new(Skewed {
            ahead: Duration::from_secs(20),
        }))
        .token_store(FileStore::new(&dir))
        .build()
        .unwrap();
    let stored = ahead.token().await.unwrap();
    let here = aim
        .client_builder()
        .token_store(FileStore::new(&dir))
        .build()
        .unwrap();
    let adopted = here.token().await.unwrap();
    assert_eq!(digest(adopted.secret()), digest(stored.secret()));
    assert_eq!(here.stats().store_hits, 1);
    here.invalidate(&adopted);
    let renewed = here.token().await.unwrap();
    assert_ne!(
        digest(renewed.secret()),
        digest(stored.secret()),
        "the refused token again"
    );
    assert_eq!(aim.token_requests(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The token MES refused here is written back into the store after this
/// client renewed (a write from another process that lands late, a backup
/// restored): this client must not take it again, as long as it lasts.
#[tokio::test]
async fn a_refused_token_written_back_after_the_renewal_is_not_taken_again() {
    let aim = AimEmulator::start().await.unwrap();
    let dir = temp_dir("file-back");
    let client = aim
        .client_builder()
        .token_store(FileStore::new(&dir))
        .min_refresh_interval(Duration::from_micros(1))
        .build()
        .unwrap();
    let refused = client.token().await.unwrap();
    let (entry, sealed) = token_entry(&dir);
    client.invalidate(&refused);
    let renewed = client.token().await.unwrap();
    assert_ne!(digest(renewed.secret()), digest(refused.secret()));
    std::fs::write(&entry, sealed).unwrap();
    let refreshed = client.refresh().await.unwrap();
    assert_ne!(
        digest(refreshed.secret()),
        digest(refused.secret()),
        "the refused token again"
    );
    assert_eq!(aim.token_requests(), 3);
    std::fs::remove_dir_all(dir).unwrap();
}

/// MES refuses token after token (a misconfigured audience, a broken
/// node): more than the refusals a client keeps by name. The first refused
/// token, written back into the store afterwards, must still not be taken:
/// "never taken again while it lasts" holds for every refusal, not the last 8.
#[tokio::test]
async fn the_first_of_nine_refused_tokens_written_back_is_not_taken_again() {
    let aim = AimEmulator::start().await.unwrap();
    let dir = temp_dir("file-nine");
    let client = aim
        .client_builder()
        .token_store(FileStore::new(&dir))
        .min_refresh_interval(Duration::from_micros(1))
        .build()
        .unwrap();
    let first = client.token().await.unwrap();
    let (entry, sealed) = token_entry(&dir);
    client.invalidate(&first);
    for _ in 1..9 {
        let next = client.token().await.unwrap();
        client.invalidate(&next);
    }
    let renewed = client.token().await.unwrap();
    assert_eq!(aim.token_requests(), 10);
    assert_ne!(digest(renewed.secret()), digest(first.secret()));
    std::fs::write(&entry, sealed).unwrap();
    let refreshed = client.refresh().await.unwrap();
    assert_ne!(
        digest(refreshed.secret()),
        digest(first.secret()),
        "the first refused token again"
    );
    assert_eq!(aim.token_requests(), 11);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A store that keeps one value and records the lifetime of each write.
#[derive(Debug, Default)]
struct Recording {
    value: std::sync::Mutex<Option<Vec<u8>>>,
    ttls: std::sync::Mutex<Vec<Duration>>,
}

impl TokenStore for Recording {
    fn get<'a>(&'a self, _: &'a str) -> BoxFuture<'a, io::Result<Option<Vec<u8>>>> {
        let v = self.value.lock().unwrap().clone();
        Box::pin(async move { Ok(v) })
    }
    fn put<'a>(
        &'a self,
        _: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<()>> {
        *self.value.lock().unwrap() = Some(value.to_vec());
        self.ttls.lock().unwrap().push(ttl);
        Box::pin(async { Ok(()) })
    }
    fn delete_if<'a>(&'a self, _: &'a str, _: &'a [u8]) -> BoxFuture<'a, io::Result<bool>> {
        Box::pin(async { Ok(false) })
    }
    fn try_lease<'a>(
        &'a self,
        key: &'a str,
        _: Duration,
    ) -> BoxFuture<'a, io::Result<Option<Lease>>> {
        Box::pin(async move { Ok(Some(Lease::new(key, Lease::random_owner()))) })
    }
    fn release(&self, _: Lease) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// AIM took 20 s to answer: the entry must not outlive the token by that
/// much (its lifetime is what is left when it is written).
#[tokio::test(start_paused = true)]
async fn a_stored_entry_lives_as_long_as_the_token_has_left_when_written() {
    let clock = Arc::new(TokioClock::new());
    let aim = AimEmulator::builder()
        .clock(clock.clone())
        .token_lifetime(Duration::from_secs(600))
        .start()
        .await
        .unwrap();
    aim.inject_times(Endpoint::Token, Fault::Delay(Duration::from_secs(20)), 1);
    let store = Arc::new(Recording::default());
    let client = aim
        .client_builder()
        .clock(clock.clone())
        .token_store(store.clone())
        .build()
        .unwrap();
    let token = client.token().await.unwrap();
    let left = token.remaining_at(aim_token::Clock::now(&*clock));
    let ttls = store.ttls.lock().unwrap().clone();
    assert_eq!(ttls.len(), 1, "{ttls:?}");
    assert!(
        ttls[0] <= left + Duration::from_secs(1),
        "stored for {:?}, the token has {left:?} left",
        ttls[0]
    );
}

/// A store that answers every call correctly, each just before the store
/// timeout (250 ms): never a failure by the per-call rule.
#[derive(Debug, Default)]
struct JustInTime {
    inner: Recording,
}

impl JustInTime {
    const LATENCY: Duration = Duration::from_millis(240);

    fn late<'a, T: Send + 'a>(op: BoxFuture<'a, io::Result<T>>) -> BoxFuture<'a, io::Result<T>> {
        Box::pin(async move {
            tokio::time::sleep(Self::LATENCY).await;
            op.await
        })
    }
}

impl TokenStore for JustInTime {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<Option<Vec<u8>>>> {
        Self::late(self.inner.get(key))
    }
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<()>> {
        Self::late(self.inner.put(key, value, ttl))
    }
    fn delete_if<'a>(&'a self, key: &'a str, v: &'a [u8]) -> BoxFuture<'a, io::Result<bool>> {
        Self::late(self.inner.delete_if(key, v))
    }
    fn try_lease<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<Option<Lease>>> {
        Self::late(self.inner.try_lease(key, ttl))
    }
    fn release(&self, lease: Lease) -> BoxFuture<'_, io::Result<()>> {
        Self::late(self.inner.release(lease))
    }
}

/// Each call answers in time, but an acquisition makes several: the
/// store must not add more than twice its timeout to a token request.
#[tokio::test(start_paused = true)]
async fn a_store_answering_just_within_its_timeout_adds_at_most_twice_the_timeout() {
    let aim = AimEmulator::start().await.unwrap();
    let plain = aim.client_builder().build().unwrap();
    let started = Instant::now();
    plain.token().await.unwrap();
    let without = started.elapsed();

    let store = Arc::new(JustInTime::default());
    let client = aim
        .client_builder()
        .token_store(store.clone())
        .build()
        .unwrap();
    let started = Instant::now();
    client.token().await.unwrap();
    let added = started.elapsed().saturating_sub(without);
    assert!(
        added <= Duration::from_millis(2 * 250 + 20),
        "the store added {added:?}"
    );
}

/// Whether another process holds the lease file in `dir` (a lock test
/// that takes nothing: a free lock is let go at once).
#[cfg(unix)]
fn lease_is_held(dir: &std::path::Path) -> bool {
    files(dir)
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "lease"))
        .any(|(p, _)| {
            let file = std::fs::File::open(p).unwrap();
            matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
        })
}

/// A holder stopped mid-request (Ctrl-Z on `aim-token token`, a debugger,
/// a stalled process) keeps its OS lock: its lease must still end after
/// its lease time, as the `TokenStore` contract says, or every process of
/// the host waits its whole retry deadline on every acquisition.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_holder_loses_its_lease_after_the_lease_time() {
    let aim = AimEmulator::start().await.unwrap();
    let dir = temp_dir("file-stopped");
    let mut env = file_env(&aim, &dir);
    env.push(("TASKS".into(), "1".into()));
    // Deadline 1 s + 2 × request timeout 1 s + 2 × 250 ms + 1 s: a 4.5 s lease.
    let mut holder_env = env.clone();
    holder_env.push(("DEADLINE_MS".into(), "1000".into()));
    let signal = |name: &str, holder: &std::process::Child| {
        let status = std::process::Command::new("kill")
            .args([name, &holder.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    // On a loaded machine the holder's 1 s deadline can pass before it is
    // stopped (it then released the lease): stop another one.
    let mut tries = 0;
    let (mut holder, stopped, requests) = loop {
        tries += 1;
        assert!(tries <= 5, "no holder was stopped holding the lease");
        let before = aim.token_requests();
        aim.inject_times(Endpoint::Token, Fault::Delay(Duration::from_secs(3)), 1);
        let mut holder = spawn_child("holder", &holder_env);
        let deadline = Instant::now() + Duration::from_secs(20);
        while aim.token_requests() == before {
            assert!(Instant::now() < deadline, "the holder never asked AIM");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let stopped = Instant::now();
        signal("-STOP", &holder);
        if lease_is_held(&dir) {
            break (holder, stopped, aim.token_requests());
        }
        eprintln!("the holder let go of its lease before it was stopped (loaded machine); again");
        signal("-CONT", &holder);
        holder.kill().unwrap();
        holder.wait().unwrap();
    };
    // This one would wait up to 30 s (its retry deadline) for the holder.
    let mut patient = env.clone();
    patient.push(("RETRY_DEADLINE_MS".into(), "30000".into()));
    let r = reports(vec![spawn_child("patient", &patient)])
        .await
        .remove(0);
    let after = stopped.elapsed();
    signal("-CONT", &holder);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(r.tokens.len(), 1);
    assert!(r.stats.contains("lease_waits: 1"), "{r:?}");
    assert_eq!(aim.token_requests(), requests + 1);
    assert!(
        after < Duration::from_secs(15),
        "waited {after:?} for a stopped holder"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A backend of the user's that implements only the required methods (no
/// `replace_if` of its own) and grants every lease (no mutual exclusion):
/// the writer whose token was answered last and expires first still keeps
/// the longer-lived token stored meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_without_its_own_compare_and_set_is_fenced_too() {
    let aim = AimEmulator::start().await.unwrap();
    aim.set_token_lifetime(Duration::from_secs(3600));
    aim.inject_times(Endpoint::Token, Fault::Delay(Duration::from_secs(2)), 1);
    let store = Arc::new(Recording::default());
    let client = || {
        aim.client_builder()
            .token_store(store.clone())
            .build()
            .unwrap()
    };
    let (slow, quick) = (client(), client());
    let slow_token = tokio::spawn(async move {
        let token = slow.token().await.unwrap();
        (token, slow.stats())
    });
    while aim.token_requests() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stored = quick.token().await.unwrap();
    aim.set_token_lifetime(Duration::from_secs(600));
    let (late, stats) = slow_token.await.unwrap();
    assert_eq!(aim.token_requests(), 2);
    assert_eq!(digest(late.secret()), digest(stored.secret()));
    // One acquisition, one token request: one refresh, not two installs.
    assert_eq!((stats.token_requests, stats.refreshes), (1, 1), "{stats:?}");
    let third = client();
    assert_eq!(
        digest(third.token().await.unwrap().secret()),
        digest(stored.secret())
    );
    assert_eq!(third.stats().store_hits, 1);
}

/// A host whose clock is 2 hours ahead stores a 4-hour token: by that clock
/// it expires 6 hours from now, by AIM's in four. Adopted here, it would be
/// handed out for two hours after it expired. A token "issued" further in
/// this clock's future than the expiry margin is not taken; this host's own
/// token replaces it, and the fast host takes that one.
#[tokio::test]
async fn a_token_stored_by_a_host_whose_clock_is_far_ahead_is_not_taken() {
    let aim = AimEmulator::builder()
        .token_lifetime(Duration::from_secs(4 * 3600))
        .start()
        .await
        .unwrap();
    let dir = temp_dir("file-far-ahead");
    let fast = || {
        aim.client_builder()
            .clock(Arc::new(Skewed {
                ahead: Duration::from_secs(2 * 3600),
            }))
            // By this clock the other host's token is half spent, so due:
            // a background refresh would start at once, ask AIM a third
            // time and write into the directory while it is removed.
            .background_refresh(false)
            .token_store(FileStore::new(&dir))
            .build()
            .unwrap()
    };
    let skewed = fast().token().await.unwrap();
    let here = aim
        .client_builder()
        .token_store(FileStore::new(&dir))
        .build()
        .unwrap();
    let mine = here.token().await.unwrap();
    assert_ne!(digest(mine.secret()), digest(skewed.secret()));
    assert_eq!(here.stats().store_hits, 0, "{:?}", here.stats());
    assert!(mine.remaining_at(std::time::SystemTime::now()) <= Duration::from_secs(4 * 3600));
    // The fast host's next client takes this host's token (issued in its past).
    let next = fast();
    assert_eq!(
        digest(next.token().await.unwrap().secret()),
        digest(mine.secret())
    );
    assert_eq!(aim.token_requests(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}
