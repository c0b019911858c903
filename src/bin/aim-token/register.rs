//! `aim-token register`: RFC 7591 registration, or the PowerShell command
//! for the AIM administrator.

use std::time::Duration;

use aim_token::{ClientRegistration, ErrorKind};

use crate::check::scopes_text;
use crate::config::{progress, Failure, Global};
use crate::decode::human;
use crate::exit;

pub(crate) const AFTER_HELP: &str = "\
Real AIM has no dynamic registration endpoint: use --powershell and have the
AIM administrator run the printed commands in an elevated PowerShell on the
System Management Server. When the provider offers no endpoint, the command
is printed as well (exit code 6).

The secret is AIM_CLIENT_SECRET / --client-secret when set, otherwise a new
256-bit one is generated. A secret you supplied is never printed back
(except as the -Secret of the PowerShell command, which needs it); a generated
or provider-issued one is printed once on stdout: store it now.
Scopes are the global --scope / AIM_SCOPE.

Examples:
  aim-token --authority sms01.plant.local register --powershell --id mes-reporting
  AIM_INITIAL_ACCESS_TOKEN=... aim-token --authority https://idp.example register --id svc --verify";

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The client ID to register (default: --client-id / AIM_CLIENT_ID).
    #[arg(long, value_name = "ID")]
    id: Option<String>,

    /// The display name (default: the ID).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Access token lifetime in seconds (default 86400 = 24 h, as the MES script).
    #[arg(long, default_value_t = 86_400, value_name = "SECONDS")]
    lifetime: u64,

    /// Register the client disabled (PowerShell only).
    #[arg(long)]
    disabled: bool,

    /// Print the Add-IdentityManagerClient command instead of registering.
    #[arg(long)]
    powershell: bool,

    /// The -HostBase for the command (default: the authority's https://HOST).
    #[arg(long, value_name = "URL")]
    host_base: Option<String>,

    /// The initial access token for dynamic registration.
    #[arg(
        long,
        env = "AIM_INITIAL_ACCESS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    initial_access_token: Option<String>,

    /// After registering, fetch a token with the new credentials.
    #[arg(long)]
    verify: bool,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("lifetime", &self.lifetime)
            .field("disabled", &self.disabled)
            .field("powershell", &self.powershell)
            .field("host_base", &self.host_base)
            .field(
                "initial_access_token",
                &crate::config::redacted(&self.initial_access_token),
            )
            .field("verify", &self.verify)
            .finish()
    }
}

pub(crate) async fn run(global: &Global, args: Args) -> u8 {
    match register(global, args).await {
        Ok(code) => code,
        Err(f) => f.report(),
    }
}

async fn register(global: &Global, args: Args) -> Result<u8, Failure> {
    let id = match &args.id {
        Some(id) => id.as_str(),
        None => global.client_id()?,
    };
    let mut reg = ClientRegistration::new(id)
        .scopes(global.scopes())
        .access_token_lifetime(Duration::from_secs(args.lifetime))
        .enabled(!args.disabled);
    if let Some(name) = &args.name {
        reg = reg.name(name);
    }
    reg = match global.client_secret.as_deref().filter(|s| !s.is_empty()) {
        Some(secret) => reg.secret(secret),
        None => reg.generate_secret(),
    };
    reg.validate().map_err(|e| Failure::usage(e.to_string()))?;

    if args.powershell {
        print_powershell(&reg, global, args.host_base.as_deref())?;
        return Ok(exit::OK);
    }
    let Some(iat) = args
        .initial_access_token
        .as_deref()
        .filter(|t| !t.is_empty())
    else {
        return Err(Failure::usage(
            "no initial access token: set AIM_INITIAL_ACCESS_TOKEN (or --initial-access-token), \
             or print the PowerShell command with --powershell",
        ));
    };
    let connection = global.connection()?;
    progress("registering the client");
    let registered = match reg.register(&connection, iat).await {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            eprintln!("error: {e}");
            eprintln!("Run these commands on the AIM server instead:");
            print_powershell(&reg, global, args.host_base.as_deref())?;
            return Ok(exit::OTHER);
        }
        Err(e) => return Ok(exit::report(&e)),
    };

    println!("AIM_CLIENT_ID={}", registered.client_id());
    if let Some(secret) = registered.client_secret() {
        // Never echo a secret the user typed; print one that is new to them.
        if reg.secret_is_generated() || Some(secret) != reg.client_secret() {
            println!("AIM_CLIENT_SECRET={secret}");
        }
    }
    if let Some(uri) = registered.registration_client_uri() {
        println!("AIM_REGISTRATION_CLIENT_URI={uri}");
    }
    if let Some(rat) = registered.registration_access_token() {
        println!("AIM_REGISTRATION_ACCESS_TOKEN={rat}");
    }
    eprintln!(
        "registered client {:?}{}{}; store the secret now, it is shown only once",
        registered.client_id(),
        if registered.scopes().is_empty() {
            String::new()
        } else {
            format!(", scopes {}", registered.scopes().join(" "))
        },
        registered
            .access_token_lifetime()
            .map(|l| format!(", token lifetime {}", human(l)))
            .unwrap_or_default(),
    );

    if args.verify {
        progress("fetching a token with the new credentials");
        match registered.verify(connection, &global.scopes()).await {
            Ok(v) => eprintln!(
                "verified: got a token for {} with lifetime {} and scopes {}",
                v.client_id,
                human(v.lifetime),
                scopes_text(&v.scopes)
            ),
            Err(e) => return Ok(exit::report(&e)),
        }
    }
    Ok(exit::OK)
}

fn print_powershell(
    reg: &ClientRegistration,
    global: &Global,
    host_base: Option<&str>,
) -> Result<(), Failure> {
    let host_base = match host_base {
        Some(h) => h,
        None => global.authority()?,
    };
    let commands = reg
        .to_powershell(host_base)
        .map_err(|e| Failure::usage(e.to_string()))?;
    println!("# Run in an elevated PowerShell on the AIM server (System Management Server).");
    if reg.secret_is_generated() {
        println!("# The -Secret is newly generated: give it to the app as AIM_CLIENT_SECRET.");
    }
    println!("{commands}");
    println!("{}", ClientRegistration::powershell_follow_up());
    Ok(())
}
