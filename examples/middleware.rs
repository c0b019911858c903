//! A reqwest-middleware client that attaches the AIM token to every request.
//!
//! ```sh
//! cargo run --example middleware --features middleware
//! ```
//!
//! Runs against the built-in emulator, or against your plant when
//! `AIM_AUTHORITY`, `AIM_CLIENT_ID`, `AIM_CLIENT_SECRET` and `MES_BASE_URL`
//! are set.

use aim_token::emulator::AimEmulator;
use aim_token::middleware::BearerAuth;
use aim_token::AimClient;
use reqwest_middleware::ClientBuilder;

#[path = "support/aim_env.rs"]
mod aim_env;

#[tokio::main]
async fn main() {
    if let Err(err) = run().await {
        // Display: the message says what to fix.
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (_emulator, aim, mes_base) = connect().await?;
    let mes_host = url::Url::parse(&mes_base)?
        .host_str()
        .ok_or("MES_BASE_URL has no host")?
        .to_owned();

    // Trust what the AimClient trusts (AIM_CA_CERT, the PCS root CA): MES's
    // certificate usually comes from the same CA.
    let mut reqwest_client = reqwest::Client::builder();
    for pem in aim.root_certificates_pem() {
        reqwest_client =
            reqwest_client.tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem)?);
    }
    let http = ClientBuilder::new(reqwest_client.build()?)
        // The token goes to the MES server and nowhere else.
        .with(BearerAuth::new(aim).allow_host(&mes_host))
        .build();

    let response = http.get(format!("{mes_base}api/v3/entity")).send().await?;
    println!("GET api/v3/entity -> {}", response.status());
    println!("{}", response.text().await?);

    // A job by its key (AVEVA's parameter names), with a Microsoft time-zone ID.
    let response = http
        .get(format!(
            "{mes_base}api/v3/Jobs/key?woId=WO-1001&operId=Fill&seqNo=0"
        ))
        .header("tz_id", "W. Europe Standard Time")
        .send()
        .await?;
    println!("GET api/v3/Jobs/key -> {}", response.status());
    println!("{}", response.text().await?);
    Ok(())
}

async fn connect() -> Result<(Option<AimEmulator>, AimClient, String), Box<dyn std::error::Error>> {
    if aim_env::real_aim_selected() {
        // First: it names the AIM variable that is missing or wrong.
        let aim = AimClient::from_env()?;
        let mes_base = std::env::var("MES_BASE_URL")
            .map_err(|_| "set MES_BASE_URL, e.g. https://mes01.plant.local/mesmw/")?;
        let mes_base = if mes_base.ends_with('/') {
            mes_base
        } else {
            format!("{mes_base}/")
        };
        return Ok((None, aim, mes_base));
    }
    let emulator = AimEmulator::start().await?;
    println!("using the AIM + MES emulator at {}", emulator.base_url());
    let aim = emulator.client_builder().build()?;
    let mes_base = emulator.mes_base();
    Ok((Some(emulator), aim, mes_base))
}
