//! Lists the plant's MES entities (site, areas, lines, ...) as a tree,
//! through the MES Web API V3 with `MesClient`.
//!
//! ```sh
//! cargo run --example mes_entities
//! ```
//!
//! Without configuration it starts the built-in AIM + MES emulator on
//! 127.0.0.1. To talk to your plant instead, set `AIM_AUTHORITY`,
//! `AIM_CLIENT_ID`, `AIM_CLIENT_SECRET` (optional `AIM_SCOPE`, `AIM_CA_CERT`:
//! MES is trusted like AIM) and `MES_BASE_URL` (e.g. `https://mes01.plant.local/mesmw/`).

use aim_token::emulator::AimEmulator;
use aim_token::mes::Entity;
use aim_token::{AimClient, MesClient};

#[path = "support/aim_env.rs"]
mod aim_env;

#[tokio::main]
async fn main() {
    if let Err(err) = run().await {
        // Display: the message says what to do (e.g. for the Default Background User).
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (_emulator, aim, mes_base) = connect().await?;
    let mes = MesClient::new(&mes_base, aim)?;
    let entities = mes.entities().await?;
    println!("{} entities at {}", entities.len(), mes.base_url());
    for root in entities.iter().filter(|e| e.parent_ent_id.is_none()) {
        print_tree(&entities, root, 1);
    }
    Ok(())
}

fn print_tree(all: &[Entity], entity: &Entity, depth: usize) {
    let runs = if entity.flag("can_run_jobs") == Some(true) {
        " [runs jobs]"
    } else {
        ""
    };
    let description = entity.description.as_deref().unwrap_or("");
    println!(
        "{:indent$}{} (ent_id {}) {description}{runs}",
        "",
        entity.ent_name,
        entity.ent_id,
        indent = depth * 2
    );
    // Bounded by the depth: a parent cycle in MES data cannot recurse forever.
    if depth > all.len() {
        return;
    }
    for child in all
        .iter()
        .filter(|e| e.parent_ent_id == Some(entity.ent_id))
    {
        print_tree(all, child, depth + 1);
    }
}

/// The emulator (kept alive by the caller), an AIM client and the MES base URL.
async fn connect() -> Result<(Option<AimEmulator>, AimClient, String), Box<dyn std::error::Error>> {
    if aim_env::real_aim_selected() {
        // First: it names the AIM variable that is missing or wrong.
        let aim = AimClient::from_env()?;
        let mes_base = std::env::var("MES_BASE_URL")
            .map_err(|_| "set MES_BASE_URL, e.g. https://mes01.plant.local/mesmw/")?;
        return Ok((None, aim, mes_base));
    }
    let emulator = AimEmulator::start().await?;
    println!("using the AIM + MES emulator at {}", emulator.base_url());
    let aim = emulator.client_builder().build()?;
    let mes_base = emulator.mes_base();
    Ok((Some(emulator), aim, mes_base))
}
