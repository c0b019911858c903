//! Lists MES entities through the MES Web API with `MesClient`.
//!
//! ```sh
//! cargo run --example mes_entities
//! ```
//!
//! Without configuration it starts the built-in AIM + MES emulator on
//! 127.0.0.1. To talk to your plant instead, set `AIM_AUTHORITY`,
//! `AIM_CLIENT_ID`, `AIM_CLIENT_SECRET` (optional `AIM_SCOPE`, `AIM_CA_CERT`)
//! and `MES_BASE_URL` (e.g. `https://mes01.plant.local/mesmw/`).

use aim_token::emulator::AimEmulator;
use aim_token::{AimClient, ErrorKind, MesClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_emulator, aim, mes_base) = connect().await?;
    let mes = MesClient::new(&mes_base, aim)?.with_tz_id("UTC");

    match mes.get_json::<serde_json::Value>("api/v3/entity").await {
        Ok(entities) => {
            let list = entities
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![entities]);
            println!("{} entities at {}", list.len(), mes.base_url());
            for entity in list {
                println!("  {entity}");
            }
        }
        Err(err) if err.kind() == ErrorKind::Forbidden => {
            // The usual first-day problem: the Default Background User lacks a privilege.
            eprintln!("{err}");
        }
        Err(err) => return Err(err.into()),
    }
    Ok(())
}

/// The emulator (kept alive by the caller), an AIM client and the MES base URL.
async fn connect() -> Result<(Option<AimEmulator>, AimClient, String), Box<dyn std::error::Error>> {
    if std::env::var_os("AIM_AUTHORITY").is_some() {
        let mes_base = std::env::var("MES_BASE_URL")
            .map_err(|_| "set MES_BASE_URL, e.g. https://mes01.plant.local/mesmw/")?;
        return Ok((None, AimClient::from_env()?, mes_base));
    }
    let emulator = AimEmulator::start().await?;
    println!("using the AIM + MES emulator at {}", emulator.base_url());
    let aim = emulator.client_builder().build()?;
    let mes_base = emulator.mes_base();
    Ok((Some(emulator), aim, mes_base))
}
