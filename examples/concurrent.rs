//! A hundred tasks share one `AimClient`: AIM sees one token request.
//!
//! ```sh
//! cargo run --example concurrent
//! ```

use aim_token::emulator::AimEmulator;
use aim_token::MesClient;

#[path = "support/aim_env.rs"]
mod aim_env;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    aim_env::note_emulator_only("concurrent");
    let emulator = AimEmulator::start().await?;
    // One client for the whole application; clones share its cache.
    let aim = emulator.client_builder().build()?;
    let mes = MesClient::new(emulator.mes_base(), aim.clone())?;

    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let mes = mes.clone();
            tokio::spawn(async move {
                let entities: serde_json::Value = mes.get_json("api/v3/entity").await?;
                Ok::<_, aim_token::Error>((i, entities))
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        task.await??;
        ok += 1;
    }
    println!("{ok} tasks called MES with one shared AimClient");
    println!("MES requests:   {}", emulator.counters().mes);
    println!("token requests: {}", emulator.token_requests());
    Ok(())
}
