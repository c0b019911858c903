//! Starts an MES job inside a transaction, commits it, and shows the error
//! MES gives a second start of the same job; then pauses and ends it.
//!
//! ```sh
//! cargo run --example job_lifecycle
//! ```
//!
//! Without configuration it runs against the built-in AIM + MES emulator
//! (job `WO-1001`/`Fill`/0 on `Line1`). Against your plant set
//! `AIM_AUTHORITY`, `AIM_CLIENT_ID`, `AIM_CLIENT_SECRET` (optional
//! `AIM_SCOPE`, `AIM_CA_CERT`), `MES_BASE_URL`, and the job: `MES_WO_ID`,
//! `MES_OPER_ID`, `MES_SEQ_NO` and `MES_RUN_ENT_ID` (the entity it runs on).
//! It really starts, pauses and ends that job: use a test work order.

use aim_token::emulator::AimEmulator;
use aim_token::{AimClient, MesClient};

#[path = "support/aim_env.rs"]
mod aim_env;

#[tokio::main]
async fn main() {
    if let Err(err) = run().await {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

struct Target {
    wo_id: String,
    oper_id: String,
    seq_no: i64,
    run_ent_id: Option<i64>,
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (_emulator, aim, mes_base, target) = connect().await?;
    let mes = MesClient::new(&mes_base, aim)?;

    let job = mes
        .job(&target.wo_id, &target.oper_id, target.seq_no)
        .await?;
    let run_on = target.run_ent_id.unwrap_or(job.ent_id);
    println!(
        "job {}/{}/{} on entity {}: state {:?}",
        job.wo_id, job.oper_id, job.seq_no, job.ent_id, job.state_cd
    );
    let job = job.on(run_on);

    // Start it inside a transaction: nobody sees it running before commit.
    let tx = mes.transaction().await?;
    println!("transaction {} opened", tx.id());
    let running = tx.mes().start_job(&job).await?;
    tx.commit().await?;
    println!(
        "started and committed: state {:?}, job position {:?}",
        running.state_cd, running.job_pos
    );

    // MES refuses to start a running job; the error says why.
    match mes.start_job(&job).await {
        Ok(_) => println!("second start: accepted (unexpected)"),
        Err(err) => println!("second start refused, as it should be:\n  {err}"),
    }

    let paused = mes.pause_job(&running).await?;
    println!("paused: state {:?}", paused.state_cd);
    let ended = mes.end_job(&paused).await?;
    println!("ended: state {:?}", ended.state_cd);
    Ok(())
}

type Connection = (Option<AimEmulator>, AimClient, String, Target);

/// The emulator (kept alive by the caller), an AIM client, the MES base URL
/// and the job to run.
async fn connect() -> Result<Connection, Box<dyn std::error::Error>> {
    if aim_env::real_aim_selected() {
        // First: it names the AIM variable that is missing or wrong.
        let aim = AimClient::from_env()?;
        let var = |name: &str| {
            std::env::var(name).map_err(|_| format!("set {name} (see the example's documentation)"))
        };
        let target = Target {
            wo_id: var("MES_WO_ID")?,
            oper_id: var("MES_OPER_ID")?,
            seq_no: var("MES_SEQ_NO")?
                .trim()
                .parse()
                .map_err(|_| "MES_SEQ_NO must be a whole number")?,
            run_ent_id: Some(
                var("MES_RUN_ENT_ID")?
                    .trim()
                    .parse()
                    .map_err(|_| "MES_RUN_ENT_ID must be an entity ID (a whole number)")?,
            ),
        };
        return Ok((None, aim, var("MES_BASE_URL")?, target));
    }
    let emulator = AimEmulator::start().await?;
    println!("using the AIM + MES emulator at {}", emulator.base_url());
    let aim = emulator.client_builder().build()?;
    let mes_base = emulator.mes_base();
    let target = Target {
        wo_id: "WO-1001".into(),
        oper_id: "Fill".into(),
        seq_no: 0,
        run_ent_id: None,
    };
    Ok((Some(emulator), aim, mes_base, target))
}
