//! Requests per second through `BearerAuth` versus the same reqwest client
//! sending a fixed `Authorization` header, against one local server, in one run.
//!
//! ```sh
//! cargo bench --bench bearer_overhead --features middleware -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! The token comes from the AIM emulator once and is then served from the
//! cache, as in steady state. The resource server is a minimal axum app on
//! 127.0.0.1 that answers `200 ok`, so the middleware's share of each request
//! is as large as it can be (a real MES call takes milliseconds).
//!
//! Criterion measures the variants one after the other. On a shared, busy
//! machine the load changes between them, so the bench then runs a paired
//! pass: the variants alternate in short rounds (ABBA order) and it prints
//! the median of the per-round ratios, by wall clock and by process CPU
//! time (under saturation throughput is CPU per request, and the CPU clock
//! does not count other processes' load).

use std::future::Future;
use std::time::Instant;

use aim_token::emulator::AimEmulator;
use aim_token::middleware::BearerAuth;
use criterion::{criterion_group, Criterion, Throughput};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

/// Requests per iteration, sent concurrently over the pooled connections, so
/// an iteration measures throughput rather than one round trip's latency.
const BATCH: u64 = 16;
/// Paired pass: rounds, and batches per variant per round.
const ROUNDS: usize = 60;
const BATCHES: usize = 30;

/// What the bench compares; all share one reqwest connection pool.
struct Setup {
    url: String,
    fixed: HeaderValue,
    /// The baseline: plain reqwest with a fixed header.
    http: reqwest::Client,
    /// reqwest-middleware with `BearerAuth`.
    bearer: ClientWithMiddleware,
    /// reqwest-middleware without any middleware, fixed header: the chain's own cost.
    empty_chain: ClientWithMiddleware,
}

impl Setup {
    async fn fixed_header(&self) {
        let requests = (0..BATCH).map(|_| {
            let request = self
                .http
                .get(&self.url)
                .header(AUTHORIZATION, self.fixed.clone());
            async move { request.send().await.expect("send").bytes().await }
        });
        futures::future::join_all(requests).await;
    }

    async fn bearer_auth(&self) {
        let requests = (0..BATCH).map(|_| {
            let request = self.bearer.get(&self.url);
            async move { request.send().await.expect("send").bytes().await }
        });
        futures::future::join_all(requests).await;
    }

    async fn empty_chain_fixed_header(&self) {
        let requests = (0..BATCH).map(|_| {
            let request = self
                .empty_chain
                .get(&self.url)
                .header(AUTHORIZATION, self.fixed.clone());
            async move { request.send().await.expect("send").bytes().await }
        });
        futures::future::join_all(requests).await;
    }
}

fn bearer_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (emulator, setup) = rt.block_on(async {
        let emulator = AimEmulator::start().await.expect("emulator");
        let aim = emulator.client_builder().build().expect("aim client");
        let app = axum::Router::new().fallback(|| async { "ok" });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let token = aim.token().await.expect("token");
        let mut fixed =
            HeaderValue::try_from(format!("Bearer {}", token.secret())).expect("header");
        fixed.set_sensitive(true);
        let http = reqwest::Client::new();
        let setup = Setup {
            url: format!("http://{addr}/mesmw/api/v3/entity"),
            fixed,
            bearer: ClientBuilder::new(http.clone())
                .with(BearerAuth::new(aim).allow_any_https_host())
                .build(),
            empty_chain: ClientBuilder::new(http.clone()).build(),
            http,
        };
        (emulator, setup)
    });

    let mut group = c.benchmark_group("bearer_overhead");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("fixed_header", |b| {
        b.to_async(&rt).iter(|| setup.fixed_header())
    });
    group.bench_function("bearer_auth", |b| {
        b.to_async(&rt).iter(|| setup.bearer_auth())
    });
    group.bench_function("empty_chain_fixed_header", |b| {
        b.to_async(&rt).iter(|| setup.empty_chain_fixed_header())
    });
    group.finish();

    rt.block_on(async {
        paired(
            "fixed_header vs bearer_auth",
            || setup.fixed_header(),
            || setup.bearer_auth(),
        )
        .await;
        paired(
            "fixed_header vs empty_chain_fixed_header",
            || setup.fixed_header(),
            || setup.empty_chain_fixed_header(),
        )
        .await;
        paired(
            "empty_chain_fixed_header vs bearer_auth",
            || setup.empty_chain_fixed_header(),
            || setup.bearer_auth(),
        )
        .await;
    });
    assert_eq!(
        emulator.token_requests(),
        1,
        "the token came from the cache"
    );
}

/// Alternates `a` and `b` in rounds (ABBA) and prints req/s and the median
/// per-round ratio `time(a) / time(b)` (>= 1 means `b` is as fast as `a`).
async fn paired<A, FA, B, FB>(label: &str, a: A, b: B)
where
    A: Fn() -> FA,
    FA: Future<Output = ()>,
    B: Fn() -> FB,
    FB: Future<Output = ()>,
{
    async fn round<F: Future<Output = ()>>(batch: impl Fn() -> F) -> (f64, f64) {
        let start = Clocks::now();
        for _ in 0..BATCHES {
            batch().await;
        }
        start.elapsed()
    }
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    let (mut a_total, mut b_total) = ((0.0, 0.0), (0.0, 0.0));
    for i in 0..ROUNDS {
        let (ta, tb) = if i % 2 == 0 {
            let ta = round(&a).await;
            (ta, round(&b).await)
        } else {
            let tb = round(&b).await;
            (round(&a).await, tb)
        };
        a_total = (a_total.0 + ta.0, a_total.1 + ta.1);
        b_total = (b_total.0 + tb.0, b_total.1 + tb.1);
        wall.push(ta.0 / tb.0);
        cpu.push(ta.1 / tb.1);
    }
    let requests = (ROUNDS * BATCHES) as f64 * BATCH as f64;
    println!(
        "paired {label}, {ROUNDS} rounds of {} requests each:\n  \
         wall clock:  {:.0} vs {:.0} req/s, median ratio {}\n  \
         process CPU: {:.0} vs {:.0} req/CPU-s, median ratio {}",
        BATCHES as u64 * BATCH,
        requests / a_total.0,
        requests / b_total.0,
        median_and_quartiles(&mut wall),
        requests / a_total.1,
        requests / b_total.1,
        median_and_quartiles(&mut cpu),
    );
}

fn median_and_quartiles(ratios: &mut [f64]) -> String {
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    format!(
        "{:.3} (quartiles {:.3}..{:.3})",
        ratios[n / 2],
        ratios[n / 4],
        ratios[3 * n / 4]
    )
}

/// Wall-clock and process CPU time together.
struct Clocks {
    wall: Instant,
    cpu: f64,
}

impl Clocks {
    fn now() -> Self {
        Clocks {
            wall: Instant::now(),
            cpu: process_cpu_seconds(),
        }
    }

    /// (wall seconds, CPU seconds) since `self`.
    fn elapsed(&self) -> (f64, f64) {
        (
            self.wall.elapsed().as_secs_f64(),
            process_cpu_seconds() - self.cpu,
        )
    }
}

/// `CLOCK_PROCESS_CPUTIME_ID` (std has no process CPU clock, nor does
/// criterion), read through rustix, which the crate already uses on Linux
/// for its coarse clock: no `unsafe`, no extra dependency.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn process_cpu_seconds() -> f64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn process_cpu_seconds() -> f64 {
    f64::NAN
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bearer_overhead
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
