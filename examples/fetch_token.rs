//! Print an AIM bearer token on stdout, for shell scripts:
//!
//! ```text
//! export AIM_AUTHORITY=sms01.plant.local AIM_CLIENT_ID=mes-reporting AIM_CLIENT_SECRET=...
//! TOKEN=$(cargo run -q --example fetch_token) || exit 1
//! curl -H "Authorization: Bearer $TOKEN" https://mes01.plant.local/mesmw/api/v3/entity
//! ```
//!
//! Needs `AIM_AUTHORITY`, `AIM_CLIENT_ID` and `AIM_CLIENT_SECRET` (optional:
//! `AIM_SCOPE`, `AIM_CA_CERT`), or `--emulator` to fetch from a throw-away
//! AIM emulator instead, to try it out:
//!
//! ```text
//! cargo run --example fetch_token -- --emulator
//! ```
//!
//! Only the token goes to stdout; diagnostics go to stderr, and a failure
//! exits non-zero with a message saying what to fix (which variable is
//! missing, for one).

use std::process::ExitCode;

use aim_token::emulator::AimEmulator;
use aim_token::{AimClient, Error, ErrorKind};

#[path = "support/aim_env.rs"]
mod aim_env;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let use_emulator = std::env::args().skip(1).any(|a| a == "--emulator");
    // Without --emulator, `AimClient::from_env` says which variable is
    // missing (it knows every place the secret may come from).
    match fetch(use_emulator).await {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("fetch_token: {err}");
            let hint = match err.kind() {
                ErrorKind::Config => Some(
                    "check AIM_AUTHORITY, AIM_CLIENT_ID, AIM_CLIENT_SECRET (optional: AIM_SCOPE, AIM_CA_CERT), or pass --emulator to try it out",
                ),
                _ => aim_env::hint(&err),
            };
            if let Some(hint) = hint {
                eprintln!("fetch_token: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn fetch(use_emulator: bool) -> Result<String, Error> {
    if use_emulator {
        let emulator = AimEmulator::start().await?;
        eprintln!(
            "fetch_token: using the AIM emulator at {}",
            emulator.authority()
        );
        let aim = emulator.client_builder().build()?;
        return Ok(aim.token().await?.secret().to_owned());
    }
    let aim = AimClient::from_env()?;
    eprintln!(
        "fetch_token: client {} at {}",
        aim.client_id(),
        aim.authority()
    );
    let token = aim.token().await?;
    eprintln!(
        "fetch_token: {} token, scopes [{}], valid for {} s",
        token.token_type(),
        token.scopes().join(" "),
        token.lifetime().as_secs()
    );
    Ok(token.secret().to_owned())
}
