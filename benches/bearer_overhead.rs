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
//! is as large as it can be (a real MES call takes milliseconds). After the
//! criterion run, the bench prints the ratio of the two means.

use std::time::Duration;

use aim_token::emulator::AimEmulator;
use aim_token::middleware::BearerAuth;
use criterion::{criterion_group, Criterion, Throughput};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest_middleware::ClientBuilder;

/// Requests per iteration, sent concurrently over the pooled connections, so
/// an iteration measures throughput rather than one round trip's latency.
const BATCH: u64 = 16;

fn bearer_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (emulator, aim, url) = rt.block_on(async {
        let emulator = AimEmulator::start().await.expect("emulator");
        let aim = emulator.client_builder().build().expect("aim client");
        let app = axum::Router::new().fallback(|| async { "ok" });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/mesmw/api/v3/entity",
            listener.local_addr().expect("addr")
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (emulator, aim, url)
    });
    let token = rt.block_on(aim.token()).expect("token");
    let mut fixed = HeaderValue::try_from(format!("Bearer {}", token.secret())).expect("header");
    fixed.set_sensitive(true);

    // One reqwest client (one connection pool) for both sides.
    let http = reqwest::Client::new();
    let with_middleware = ClientBuilder::new(http.clone())
        .with(BearerAuth::new(aim.clone()))
        .build();
    // reqwest-middleware without any middleware: its own share of the cost.
    let empty_chain = ClientBuilder::new(http.clone()).build();

    let mut group = c.benchmark_group("bearer_overhead");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("fixed_header", |b| {
        b.to_async(&rt).iter(|| async {
            let requests = (0..BATCH).map(|_| {
                let request = http.get(&url).header(AUTHORIZATION, fixed.clone());
                async move {
                    request
                        .send()
                        .await
                        .expect("send")
                        .bytes()
                        .await
                        .expect("body")
                }
            });
            futures::future::join_all(requests).await
        })
    });
    group.bench_function("empty_chain_fixed_header", |b| {
        b.to_async(&rt).iter(|| async {
            let requests = (0..BATCH).map(|_| {
                let request = empty_chain.get(&url).header(AUTHORIZATION, fixed.clone());
                async move {
                    request
                        .send()
                        .await
                        .expect("send")
                        .bytes()
                        .await
                        .expect("body")
                }
            });
            futures::future::join_all(requests).await
        })
    });
    group.bench_function("bearer_auth", |b| {
        b.to_async(&rt).iter(|| async {
            let requests = (0..BATCH).map(|_| {
                let request = with_middleware.get(&url);
                async move {
                    request
                        .send()
                        .await
                        .expect("send")
                        .bytes()
                        .await
                        .expect("body")
                }
            });
            futures::future::join_all(requests).await
        })
    });
    group.finish();
    assert_eq!(
        emulator.token_requests(),
        1,
        "the token came from the cache"
    );
    drop(rt);
}

/// Reads criterion's estimates of this run and prints the throughput ratio.
fn report_ratio() {
    let dir = std::path::Path::new("target/criterion/bearer_overhead");
    let mean = |name: &str| -> Option<f64> {
        let text = std::fs::read_to_string(dir.join(name).join("new/estimates.json")).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["mean"]["point_estimate"].as_f64()
    };
    let per_sec = |ns: f64| BATCH as f64 / (ns / 1e9);
    if let (Some(fixed), Some(bearer)) = (mean("fixed_header"), mean("bearer_auth")) {
        println!(
            "bearer_overhead: fixed_header {:.0} req/s, bearer_auth {:.0} req/s, ratio {:.3}",
            per_sec(fixed),
            per_sec(bearer),
            fixed / bearer
        );
    }
    if let Some(empty) = mean("empty_chain_fixed_header") {
        println!(
            "bearer_overhead: empty reqwest-middleware chain with a fixed header {:.0} req/s",
            per_sec(empty)
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bearer_overhead
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report_ratio();
}
