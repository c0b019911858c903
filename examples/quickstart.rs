//! Get an AIM access token and call the MES Web API with it.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Needs nothing but Rust. With none of `AIM_AUTHORITY`, `AIM_CLIENT_ID`,
//! `AIM_CLIENT_SECRET` set it starts the AIM emulator on 127.0.0.1 (https
//! with its own CA, which the client is told to trust, as you would trust
//! the PCS root CA). With all three set (optionally `AIM_SCOPE`,
//! `AIM_CA_CERT`) it talks to that AIM instead; set `MES_BASE_URL` (e.g.
//! `https://mes01.plant.local/mesmw/`) to also call MES there. With only
//! some of them set it says what is missing rather than guess.

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use aim_token::emulator::AimEmulator;
use aim_token::{AccessToken, AimClient, AimClientBuilder, MesClient};

#[path = "support/aim_env.rs"]
mod aim_env;

/// How long the quickstart retries AIM before it says what to check.
const FIRST_RUN_DEADLINE: Duration = Duration::from_secs(15);

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Display, not Debug: the error says what to fix.
            eprintln!("quickstart: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let real_aim = aim_env::real_aim_selected();
    // Kept alive until the end: dropping the emulator stops it.
    let mut _emulator = None;
    let (aim, mes_base) = if !real_aim {
        eprintln!("AIM_AUTHORITY, AIM_CLIENT_ID and AIM_CLIENT_SECRET are not set: starting the AIM emulator on 127.0.0.1 (https, with its own CA).");
        eprintln!(
            "Set AIM_AUTHORITY, AIM_CLIENT_ID and AIM_CLIENT_SECRET to talk to a real AIM.\n"
        );
        let emulator = AimEmulator::builder().https(true).start().await?;
        let ca_pem = emulator.ca_pem().ok_or("the https emulator has no CA")?;
        let aim = AimClient::builder()
            .authority(emulator.authority())
            .client_id(AimEmulator::CLIENT_ID)
            .client_secret(AimEmulator::CLIENT_SECRET)
            // Trust the emulator's CA, as you would trust the PCS root CA.
            .root_certificate_pem(&ca_pem)
            .build()?;
        let mes_base = Some(emulator.mes_base());
        _emulator = Some(emulator);
        (aim, mes_base)
    } else {
        // A first run should not retry a typo for the default minute.
        let aim = AimClientBuilder::from_env()
            .and_then(|b| b.retry_deadline(FIRST_RUN_DEADLINE).build())
            .map_err(|e| {
                format!("{e} (or unset the AIM_* variables to use the built-in emulator)")
            })?;
        eprintln!(
            "AIM_* variables set: using the AIM at {} as client {}.\n",
            aim.authority(),
            aim.client_id()
        );
        (aim, std::env::var("MES_BASE_URL").ok())
    };

    let token = aim.token().await.map_err(|e| match aim_env::hint(&e) {
        Some(hint) => format!("{e}\n{hint}"),
        None => e.to_string(),
    })?;
    print_token(&token);

    let Some(mes_base) = mes_base else {
        println!("\n(set MES_BASE_URL, e.g. https://mes01.plant.local/mesmw/, to call MES too)");
        return Ok(());
    };
    // MesClient trusts what the AimClient trusts (the OS store plus the
    // emulator's CA, or AIM_CA_CERT: MES's certificate usually comes from
    // the PCS root CA too), sends the token only to MES, and explains MES's
    // errors (a 404 for a missing privilege of the Default Background User).
    let mes = MesClient::new(&mes_base, aim.clone())?;
    let entities: serde_json::Value = mes.get_json("api/v3/entity").await?;
    println!("\nGET {}api/v3/entity\n  -> OK", with_slash(&mes_base));
    let body = serde_json::to_string_pretty(&entities)?;
    println!("{}", shorten(&body, 2000));
    Ok(())
}

fn print_token(token: &AccessToken) {
    let expires = jiff::Timestamp::try_from(token.expires_at())
        .map(|t| {
            t.to_zoned_datetime(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        })
        .unwrap_or_else(|_| format!("{:?}", token.expires_at()));
    println!("Got an access token from AIM");
    println!("  authority : {}", token.authority());
    println!("  type      : {}", token.token_type());
    println!("  scopes    : {}", token.scopes().join(" "));
    println!("  expires   : {expires} (local time)");
    println!("  lifetime  : {}", human(token.lifetime()));
    println!("  token     : [redacted] (token.secret() gives the value)");
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

fn with_slash(base: &str) -> String {
    if base.ends_with('/') {
        base.to_owned()
    } else {
        format!("{base}/")
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}
