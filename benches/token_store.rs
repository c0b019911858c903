//! What the shared token store costs and saves, in one run.
//!
//! ```text
//! cargo bench --bench token_store
//! ```
//!
//! Groups:
//! - `cold_start`: the first `token()` of a fresh `AimClient` (built
//!   outside the timing) against the
//!   emulator on loopback: `no_store` asks AIM; `file_store_hit` finds the
//!   token another process stored (read + open the sealed file);
//!   `file_store_miss` finds nothing (read, lease, re-read, ask AIM, seal,
//!   write, release). AIM answers at once here; a real AIM over the plant
//!   network takes 10-500 ms, which a store hit saves entirely.
//! - `cached`: `token()` with a token in memory, without and with a store
//!   (the store is not touched: the same path).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use aim_token::emulator::AimEmulator;
use aim_token::store::FileStore;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let aim = runtime.block_on(AimEmulator::start()).unwrap();
    let dir = std::env::temp_dir().join(format!("aim-token-bench-{}", std::process::id()));
    let store = FileStore::new(&dir);
    // Fill the store once: the "hit" clients find this token.
    runtime.block_on(async {
        let filler = aim
            .client_builder()
            .token_store(store.clone())
            .build()
            .unwrap();
        filler.token().await.unwrap();
    });

    // Clients are built outside the timing (building one loads the OS
    // trust store, which would hide what is measured here).
    let mut cold = c.benchmark_group("cold_start");
    let build = |store: Option<FileStore>, param: Option<u64>| {
        let mut builder = aim.client_builder().background_refresh(false);
        if let Some(store) = store {
            builder = builder.token_store(store);
        }
        if let Some(n) = param {
            // Another form parameter: another entry, so nothing is found.
            builder = builder.form_param("bench_run", n.to_string());
        }
        builder.build().unwrap()
    };
    cold.bench_function("no_store", |b| {
        b.to_async(&runtime).iter_batched(
            || build(None, None),
            |client| async move { black_box(client.token().await.unwrap()) },
            BatchSize::SmallInput,
        )
    });
    cold.bench_function("file_store_hit", |b| {
        b.to_async(&runtime).iter_batched(
            || build(Some(store.clone()), None),
            |client| async move { black_box(client.token().await.unwrap()) },
            BatchSize::SmallInput,
        )
    });
    let unique = AtomicU64::new(0);
    cold.bench_function("file_store_miss", |b| {
        b.to_async(&runtime).iter_batched(
            || {
                build(
                    Some(store.clone()),
                    Some(unique.fetch_add(1, Ordering::Relaxed)),
                )
            },
            |client| async move { black_box(client.token().await.unwrap()) },
            BatchSize::SmallInput,
        )
    });
    cold.finish();

    let (plain, shared) = runtime.block_on(async {
        let plain = aim.client_builder().build().unwrap();
        let shared = aim
            .client_builder()
            .token_store(store.clone())
            .build()
            .unwrap();
        plain.token().await.unwrap();
        shared.token().await.unwrap();
        (plain, shared)
    });
    let mut cached = c.benchmark_group("cached");
    cached.bench_function("no_store", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(plain.token().await.unwrap()) })
    });
    cached.bench_function("with_file_store", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(shared.token().await.unwrap()) })
    });
    cached.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group! {
    name = store;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(store);
