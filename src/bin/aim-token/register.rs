//! `aim-token register`: RFC 7591 registration, or the PowerShell command
//! for the AIM administrator.

use std::time::{Duration, SystemTime};

use aim_token::{ClientRegistration, ErrorKind, SecretExpiry};
use secrecy::ExposeSecret as _;

use crate::check::scopes_text;
use crate::config::{clear_progress, progress, Failure, Global};
use crate::decode::{human, when};
use crate::exit;

pub(crate) const AFTER_HELP: &str = "\
Real AIM has no dynamic registration endpoint: use --powershell and have the
AIM administrator run the printed commands in an elevated PowerShell on the
System Management Server. When the provider offers no endpoint, the command
is printed as well (exit code 6).

The secret is --client-secret, or the app's (AIM_CLIENT_SECRET or
AIM_CLIENT_SECRET_FILE, as AimClient::from_env reads them) when set;
otherwise a new 256-bit one is generated. A secret you supplied is never printed back
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

    /// The RFC 7591 endpoint to register at, when the provider's discovery
    /// document advertises it on another origin (e.g. behind IIS/ARR).
    #[arg(long, value_name = "URL")]
    registration_endpoint: Option<String>,

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
            .field("registration_endpoint", &self.registration_endpoint)
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
    let (id, id_flag) = match &args.id {
        Some(id) => (id.as_str(), "--id"),
        None => (
            global.client_id().map_err(|f| {
                Failure::usage(f.message)
                    .fix("pass --id ID (or --client-id ID, or set AIM_CLIENT_ID)")
            })?,
            "--client-id / AIM_CLIENT_ID",
        ),
    };
    let mut reg = ClientRegistration::new(id)
        .scopes(global.scopes())
        .access_token_lifetime(Duration::from_secs(args.lifetime))
        .enabled(!args.disabled);
    if let Some(name) = &args.name {
        reg = reg.name(name);
    }
    // From the flag as given; from the environment as the app reads it.
    let env_secret = match global.secret_from_flag {
        true => None,
        false => {
            aim_token::__cli::client_secret_from_env().map_err(|e| Failure::usage(e.to_string()))?
        }
    };
    let given_secret = match global.secret_from_flag {
        true => global.client_secret.as_deref().filter(|s| !s.is_empty()),
        false => env_secret.as_ref().map(|s| s.expose_secret()),
    };
    reg = match given_secret {
        Some(secret) => reg.secret(secret),
        None => reg.generate_secret(),
    };
    if let Err(err) = reg.validate() {
        return Err(invalid_setting(
            &err,
            id,
            id_flag,
            &args,
            given_secret,
            global,
        ));
    }

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
    if let Some(url) = &args.registration_endpoint {
        reg = reg.registration_endpoint(url);
    }
    // The authority, CA file and proxy, checked by the library's rules and
    // worded by the tool's (the library names its methods).
    if let Err(e) = global
        .connection()?
        .client_id("probe")
        .client_secret("probe")
        .build()
    {
        return Err(global.build_failure(e));
    }
    let connection = global.connection()?;
    progress("registering the client");
    let registered = match reg.register(&connection, iat).await {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            clear_progress();
            eprintln!("error: {}", in_flag_words(&e.to_string()));
            print_powershell(&reg, global, args.host_base.as_deref())?;
            return Ok(exit::OTHER);
        }
        Err(e) => {
            clear_progress();
            eprintln!("error: {}", in_flag_words(&e.to_string()));
            return Ok(exit::for_error(&e));
        }
    };

    clear_progress();
    println!("AIM_CLIENT_ID={}", registered.client_id());
    let issued_secret = registered.client_secret();
    if let Some(secret) = issued_secret {
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
    let Some(_) = issued_secret else {
        // Registered, but unusable for client credentials: the ID and the
        // registration URI and token above let the administrator fix or delete it.
        eprintln!(
            "error: the provider registered client {:?} but issued no client secret, so it cannot get tokens with client credentials \
             (registered as a public client?): check the client at the provider, or delete it with the registration access token above",
            registered.client_id()
        );
        return Ok(exit::OTHER);
    };
    if let Some(code) = secret_expiry(&registered) {
        return Ok(code);
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
        let verified = registered.verify(connection, &global.scopes()).await;
        clear_progress();
        match verified {
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

/// A registration error in this tool's words: the library's
/// `ClientRegistration::to_powershell` is `--powershell`, its setter for
/// the endpoint (`ClientRegistration::registration_endpoint("URL")`) is
/// `--registration-endpoint URL`.
fn in_flag_words(message: &str) -> String {
    let message = message.replace(
        "ClientRegistration::to_powershell (`aim-token register --powershell`)",
        "aim-token register --powershell (printed below)",
    );
    const SETTER: &str = "ClientRegistration::registration_endpoint(\"";
    let Some(start) = message.find(SETTER) else {
        return message;
    };
    let rest = &message[start + SETTER.len()..];
    match rest.find("\")") {
        Some(end) => format!(
            "{}--registration-endpoint {}{}",
            &message[..start],
            &rest[..end],
            &rest[end + 2..]
        ),
        None => message.replace(
            "ClientRegistration::registration_endpoint",
            "--registration-endpoint",
        ),
    }
}

/// Says when the issued secret expires (RFC 7591 `client_secret_expires_at`,
/// read by the library); the exit code when it already has.
fn secret_expiry(registered: &aim_token::RegisteredClient) -> Option<u8> {
    let now = SystemTime::now();
    match registered.client_secret_expiry() {
        SecretExpiry::At(at) if at <= now => {
            eprintln!(
                "error: the client secret the provider issued already expired: {}; \
                 check this machine's clock and the provider's (w32tm /resync on Windows), or the provider's secret lifetime",
                when(at, now)
            );
            Some(exit::CLOCK)
        }
        SecretExpiry::At(at) => {
            eprintln!(
                "note: the client secret expires {}: register the client again (or rotate its secret) before then, or the app's token requests fail with invalid_client",
                when(at, now)
            );
            None
        }
        SecretExpiry::Unreadable => {
            eprintln!(
                "note: the provider's client_secret_expires_at is not a time, so when the secret expires is unknown: ask the provider, or the app's token requests may one day fail with invalid_client"
            );
            None
        }
        _ => None,
    }
}

/// What `validate` refused, in the tool's words: the library decides which
/// setting AIM cannot take (asked one setting at a time), the tool names
/// the flag or variable that gave it and how to fix it.
fn invalid_setting(
    err: &aim_token::Error,
    id: &str,
    id_flag: &str,
    args: &Args,
    secret: Option<&str>,
    global: &Global,
) -> Failure {
    let base = || ClientRegistration::new("probe");
    let refuses = |reg: ClientRegistration| reg.validate().is_err();
    let (flag, fix) = if refuses(ClientRegistration::new(id)) {
        (
            id_flag,
            "use only ASCII letters, digits, '-', '.', '_' and '~' (at most 200 characters)",
        )
    } else if args.name.as_ref().is_some_and(|n| refuses(base().name(n))) {
        (
            "--name",
            "give a display name of at most 200 characters on one line, without control characters",
        )
    } else if secret.is_some_and(|s| refuses(base().secret(s))) {
        (
            "AIM_CLIENT_SECRET / --client-secret",
            "unset AIM_CLIENT_SECRET and --client-secret to have a strong secret generated, or give one of printable ASCII",
        )
    } else if refuses(base().scopes(global.scopes())) {
        (
            "--scope / AIM_SCOPE",
            "give scopes of printable ASCII without '\"' and '\\', separated by spaces or commas",
        )
    } else if refuses(base().access_token_lifetime(Duration::from_secs(args.lifetime))) {
        (
            "--lifetime",
            "give --lifetime SECONDS from 1 to 2147483647 (default 86400 = 24 h)",
        )
    } else {
        (
            "a setting",
            "correct the setting the reason names (see aim-token register --help)",
        )
    };
    // The library's reason, without its advice (which names its methods).
    let message = err.to_string();
    let reason = message.split("; ").next().unwrap_or(&message);
    Failure::usage(format!("{flag}: {reason}")).fix(fix)
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
