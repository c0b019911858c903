//! Eight processes, one token: copies of this program share a token store,
//! and AIM (the emulator, answering in half a second) sees one request.
//!
//! ```sh
//! cargo run --example shared_cache                     # a FileStore in a temp dir
//! AIM_TOKEN_STORE=redis://127.0.0.1:6379/0 \
//!     cargo run --example shared_cache --features redis  # one Redis for all
//! cargo run --example shared_cache -- 16               # more copies
//! ```

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aim_token::emulator::{AimEmulator, Endpoint, Fault};
use aim_token::AimClient;

/// Set in the copies: they fetch a token and print it (as a short digest).
const COPY: &str = "SHARED_CACHE_COPY";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(COPY).is_some() {
        return copy().await;
    }
    let copies: usize = std::env::args().nth(1).map_or(Ok(8), |n| n.parse())?;
    let emulator = AimEmulator::start().await?;
    emulator.set_outage(
        Endpoint::Token,
        Some(Fault::Delay(Duration::from_millis(500))),
    );
    let store = std::env::var("AIM_TOKEN_STORE").unwrap_or_else(|_| {
        let dir =
            std::env::temp_dir().join(format!("aim-token-shared-cache-{}", std::process::id()));
        format!("file:{}", dir.display())
    });
    println!("{copies} processes sharing {}", redact(&store));

    let started = Instant::now();
    let exe = std::env::current_exe()?;
    let children = (0..copies)
        .map(|_| {
            Command::new(&exe)
                .env(COPY, "1")
                .env("AIM_AUTHORITY", emulator.authority())
                .env("AIM_CLIENT_ID", AimEmulator::CLIENT_ID)
                .env("AIM_CLIENT_SECRET", AimEmulator::CLIENT_SECRET)
                .env("AIM_TOKEN_STORE", &store)
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Wait off the runtime: the emulator keeps serving meanwhile.
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output())
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;
    let mut digests: Vec<String> = outputs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .collect();
    digests.sort();
    digests.dedup();
    println!("all done in {:?}", started.elapsed());
    println!("distinct tokens: {}", digests.len());
    println!("token requests:  {}", emulator.token_requests());
    if let Some(dir) = store.strip_prefix("file:") {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

/// One copy: a client from the environment (AIM_TOKEN_STORE picks the store).
async fn copy() -> Result<(), Box<dyn std::error::Error>> {
    let aim = AimClient::from_env()?;
    let token = aim.token().await?;
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.secret().hash(&mut h);
    println!("{:016x}", h.finish());
    Ok(())
}

/// The store without a password.
fn redact(store: &str) -> String {
    match (store.find("://"), store.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…{}", &store[..scheme], &store[at..])
        }
        _ => store.to_owned(),
    }
}
