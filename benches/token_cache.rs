//! The cost of a cached `AimClient::token()` against the patterns other
//! libraries use, in one run, and the wall time of 10,000 cold callers
//! against one single request.
//!
//! ```text
//! cargo bench --bench token_cache
//! ```
//!
//! Groups:
//! - `cached/1_thread`: one call on one thread. `arc_swap_load_full` is the
//!   floor (an atomic load and a reference count, nothing else);
//!   `tokio_rwlock_read` and `tokio_mutex` clone an `Option<Arc<_>>` out of
//!   a tokio lock. The baselines do no expiry check; `token()` does (a
//!   wall-clock read) and counts the hit.
//! - `cached/2_threads`: the same on two threads at once (both cores of the
//!   bench machine), time per call per thread. Contended locks park
//!   (`blocking_lock`/`blocking_read`), as they would under load.
//! - `attach/1_thread`, `attach/2_threads` (with `--features tower`): the
//!   attachment path, i.e. `BearerAuthLayer` around a service that does
//!   nothing, against the same service behind a step that inserts a fixed
//!   `Authorization` value (`fixed_header`, one shared `HeaderValue`) and
//!   one that loads a shared `ArcSwap<AccessToken>` and inserts one shared
//!   `HeaderValue` (`shared_token_and_header`: the cache without its
//!   per-stripe copies, and no expiry check).
//! - `cold_callers`: a fresh client, then 10,000 tasks calling `token()` at
//!   once, against the emulator (asserting exactly one token request); one
//!   `token()` call alone; and 10,000 tasks doing nothing, the cost of the
//!   spawning itself.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use aim_token::emulator::AimEmulator;
use aim_token::{AccessToken, AimClient};
use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use futures::FutureExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// A minimal token endpoint on 127.0.0.1: the cached path needs one token,
/// and not depending on more than that keeps the measurement about the cache.
async fn serve_one_token_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head and the form body (Content-Length).
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let body =
                    r#"{"access_token":"bench-token","token_type":"Bearer","expires_in":86400}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/identitymanager")
}

fn cached(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (aim, token) = runtime.block_on(async {
        let authority = serve_one_token_endpoint().await;
        let aim = AimClient::builder()
            .authority(authority.clone())
            .token_endpoint(format!("{authority}/connect/token"))
            .client_id("bench")
            .client_secret("bench")
            .build()
            .unwrap();
        let token = aim.token().await.unwrap();
        (aim, token)
    });
    let swap = ArcSwap::from_pointee(token.clone());
    let rwlock = tokio::sync::RwLock::new(Some(Arc::new(token.clone())));
    let mutex = tokio::sync::Mutex::new(Some(Arc::new(token.clone())));
    let token_now = || -> AccessToken {
        aim.token()
            .now_or_never()
            .expect("a cached token() never waits")
            .unwrap()
    };

    let mut group = c.benchmark_group("cached/1_thread");
    group.bench_function("aim_client_token", |b| b.iter(|| black_box(token_now())));
    group.bench_function("arc_swap_load_full", |b| {
        b.iter(|| black_box(swap.load_full()))
    });
    group.bench_function("tokio_rwlock_read", |b| {
        b.iter(|| black_box(rwlock.read().now_or_never().unwrap().clone()))
    });
    group.bench_function("tokio_mutex", |b| {
        b.iter(|| black_box(mutex.lock().now_or_never().unwrap().clone()))
    });
    group.finish();

    let mut group = c.benchmark_group("cached/2_threads");
    group.bench_function("aim_client_token", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || drop(black_box(token_now()))))
    });
    group.bench_function("arc_swap_load_full", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || drop(black_box(swap.load_full()))))
    });
    group.bench_function("tokio_rwlock_read", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, || drop(black_box(rwlock.blocking_read().clone())))
        })
    });
    group.bench_function("tokio_mutex", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, || drop(black_box(mutex.blocking_lock().clone())))
        })
    });
    group.finish();

    #[cfg(feature = "tower")]
    attach(c, &aim, &token);

    let stats = aim.stats();
    assert_eq!(
        stats.token_requests, 1,
        "the benchmark left the cached path"
    );
    drop(aim);
    drop(runtime);
}

/// The attachment path, see the module docs.
#[cfg(feature = "tower")]
fn attach(c: &mut Criterion, aim: &AimClient, token: &AccessToken) {
    use aim_token::layer::BearerAuthLayer;
    use http::header::AUTHORIZATION;
    use http::{HeaderValue, Request, Response};
    use tower::{Layer as _, Service as _, ServiceExt as _};

    type Req = Request<String>;
    let nothing = tower::service_fn(|req: Req| async move {
        black_box(req);
        Ok::<_, std::convert::Infallible>(Response::new(String::new()))
    });
    let layered = BearerAuthLayer::new(aim.clone())
        .allow_host("mes01.plant.local")
        .layer(nothing);
    let fixed = HeaderValue::try_from(format!("Bearer {}", token.secret())).unwrap();
    let swap = ArcSwap::from_pointee(token.clone());
    let shared_header = fixed.clone();
    let request = || {
        Request::get("https://mes01.plant.local/mesmw/api/v3/entity")
            .body(String::new())
            .unwrap()
    };

    let via_layer = || {
        let mut svc = layered.clone();
        let response = svc
            .ready()
            .now_or_never()
            .unwrap()
            .unwrap()
            .call(request())
            .now_or_never()
            .expect("the cached path never waits")
            .expect("the token is attached");
        drop(black_box(response));
    };
    let fixed_header = || {
        let mut svc = nothing;
        let mut req = request();
        req.headers_mut().insert(AUTHORIZATION, fixed.clone());
        drop(black_box(svc.call(req).now_or_never()));
    };
    let shared_token_and_header = || {
        let mut svc = nothing;
        let mut req = request();
        let token = swap.load_full();
        if token.secret().is_empty() {
            return;
        }
        req.headers_mut()
            .insert(AUTHORIZATION, shared_header.clone());
        drop(black_box(svc.call(req).now_or_never()));
    };

    let mut group = c.benchmark_group("attach/1_thread");
    group.bench_function("bearer_auth_layer", |b| b.iter(via_layer));
    group.bench_function("fixed_header", |b| b.iter(fixed_header));
    group.bench_function("shared_token_and_header", |b| {
        b.iter(shared_token_and_header)
    });
    group.finish();

    let mut group = c.benchmark_group("attach/2_threads");
    group.bench_function("bearer_auth_layer", |b| {
        b.iter_custom(|iters| on_two_threads(iters, via_layer))
    });
    group.bench_function("fixed_header", |b| {
        b.iter_custom(|iters| on_two_threads(iters, fixed_header))
    });
    group.bench_function("shared_token_and_header", |b| {
        b.iter_custom(|iters| on_two_threads(iters, shared_token_and_header))
    });
    group.finish();
}

/// Runs `op` `iters` times on each of two threads started together; the
/// wall time until both finish, i.e. the time per call per thread. The clock
/// starts before the threads are released, so a descheduled main thread
/// (the machine is shared) can only over-count, never under-count.
fn on_two_threads(iters: u64, op: impl Fn() + Sync) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..iters {
                    op();
                }
            });
        }
        let started = Instant::now();
        barrier.wait();
        started
    })
    .elapsed()
}

fn cold_callers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let emulator = match runtime.block_on(AimEmulator::start()) {
        Ok(emulator) => emulator,
        Err(err) => {
            eprintln!("cold_callers skipped: the emulator did not start: {err}");
            return;
        }
    };
    let mut group = c.benchmark_group("cold_callers");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for callers in [1usize, 10_000] {
        group.bench_function(format!("{callers}_callers"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let aim = emulator.client_builder().build().unwrap();
                    let before = emulator.token_requests();
                    total += runtime.block_on(async {
                        let started = Instant::now();
                        let tasks: Vec<_> = (0..callers)
                            .map(|_| {
                                let aim = aim.clone();
                                tokio::spawn(async move { aim.token().await })
                            })
                            .collect();
                        for task in tasks {
                            task.await.unwrap().unwrap();
                        }
                        started.elapsed()
                    });
                    assert_eq!(emulator.token_requests() - before, 1);
                }
                total
            })
        });
    }
    // The same 10,000 tasks without a token: what spawning and joining costs.
    group.bench_function("10000_tasks_without_token", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += runtime.block_on(async {
                    let started = Instant::now();
                    let tasks: Vec<_> = (0..10_000)
                        .map(|_| tokio::spawn(async { black_box(1) }))
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                    started.elapsed()
                });
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, cached, cold_callers);
criterion_main!(benches);
