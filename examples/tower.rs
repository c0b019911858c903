//! A hyper client (hyper-util's legacy client) with the `BearerAuthLayer`.
//!
//! ```sh
//! cargo run --example tower --features tower
//! ```
//!
//! Runs against the built-in emulator (plain http on 127.0.0.1). The same
//! layer works for tonic and any other tower-based client.

use aim_token::emulator::AimEmulator;
use aim_token::layer::BearerAuthLayer;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};

#[path = "support/aim_env.rs"]
mod aim_env;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    aim_env::note_emulator_only("tower");
    let emulator = AimEmulator::start().await?;
    let aim = emulator.client_builder().build()?;
    let mes_base = emulator.mes_base();

    let hyper_client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    // `Full<Bytes>` is Clone, so every request may be retried once after a 401.
    let client = BearerAuthLayer::new(aim.clone())
        .allow_host("127.0.0.1")
        .clone_bodies()
        .layer(hyper_client);

    // Make MES reject the token once, to show the retry. A token younger
    // than min_refresh_interval (1 s) is not renewed after a 401 (MES
    // refusing a brand-new token does not trust this AIM; asking again would
    // only cost token requests), so let it age first, as in a running service.
    aim.token().await?; // fetched now, and cached
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    emulator.reject_next_mes_token();
    let request =
        http::Request::get(format!("{mes_base}api/v3/entity")).body(Full::new(Bytes::new()))?;
    let response = client.clone().oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!("GET api/v3/entity -> {status} (after one 401 and a fresh token)");
    println!("{}", String::from_utf8_lossy(&body));

    // A job of the emulator's work order, by its key (AVEVA's parameter names).
    let request = http::Request::get(format!(
        "{mes_base}api/v3/Jobs/key?woId=WO-1001&operId=Fill&seqNo=0"
    ))
    .header("tz_id", "W. Europe Standard Time")
    .body(Full::new(Bytes::new()))?;
    let response = client.oneshot(request).await?;
    println!("GET api/v3/Jobs/key -> {}", response.status());
    println!("token requests seen by AIM: {}", emulator.token_requests());
    Ok(())
}
