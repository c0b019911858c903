//! `aim-token`: AIM access tokens, a connection doctor and client
//! registration from the command line.

mod check;
mod config;
mod decode;
mod exit;
mod register;
mod tls;
mod token;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

const AFTER_HELP: &str = "\
Configuration comes from the flags or the same environment variables as
AimClient::from_env: AIM_AUTHORITY, AIM_CLIENT_ID, AIM_CLIENT_SECRET,
AIM_SCOPE (space-separated) and AIM_CA_CERT (PEM file). Prefer the variable
for the secret: command-line flags are visible to other users in process lists.

Examples:
  export AIM_AUTHORITY=sms01.plant.local AIM_CLIENT_ID=mes-reporting
  export AIM_CLIENT_SECRET='...' AIM_CA_CERT=/etc/pki/pcs-root-ca.pem
  aim-token check --mes https://mes01/mesmw/api/v3/...
  curl -H \"Authorization: Bearer $(aim-token token)\" https://mes01/mesmw/api/...
  aim-token token | aim-token decode -
  aim-token register --powershell --id mes-reporting

Exit codes:
  0  success
  2  usage or configuration error (bad flag, missing client ID, unreadable CA file)
  3  network: name resolution, connection refused, timeout
  4  TLS: AIM's certificate is not trusted or the handshake failed
  5  authentication: AIM or MES refused the credentials or token
     (invalid_client, invalid_scope, unauthorized_client, 401, 403)
  6  server: unexpected or invalid answer, no registration endpoint
  7  clock: the local clock differs from the server's beyond --max-clock-skew";

/// AVEVA Identity Manager (AIM) access tokens from the command line.
#[derive(Debug, Parser)]
#[command(name = "aim-token", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    global: config::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a bearer access token on stdout (and nothing else).
    #[command(after_help = token::AFTER_HELP)]
    Token(token::Args),
    /// Diagnose the connection to AIM step by step: DNS, TCP, TLS,
    /// discovery, a token request, its claims, clock skew and optionally MES.
    #[command(after_help = check::AFTER_HELP)]
    Check(check::Args),
    /// Register a client: RFC 7591 dynamic registration, or print the
    /// Add-IdentityManagerClient command for the AIM administrator.
    #[command(after_help = register::AFTER_HELP)]
    Register(register::Args),
    /// Show a JWT's header, claims and expiry. The signature is NOT verified.
    #[command(after_help = decode::AFTER_HELP)]
    Decode(decode::Args),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if secret_from_command_line(&matches) {
        eprintln!(
            "warning: --client-secret is visible to other users in process lists; \
             prefer the AIM_CLIENT_SECRET environment variable"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::OTHER);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Token(args) => token::run(&cli.global, args).await,
            Command::Check(args) => check::run(&cli.global, args).await,
            Command::Register(args) => register::run(&cli.global, args).await,
            Command::Decode(args) => decode::run(args).await,
        }
    });
    ExitCode::from(code)
}

/// Whether the secret came from a flag (rather than the environment), at
/// the top level or after the subcommand.
fn secret_from_command_line(matches: &clap::ArgMatches) -> bool {
    let from_flag =
        |m: &clap::ArgMatches| m.value_source("client_secret") == Some(ValueSource::CommandLine);
    from_flag(matches) || matches.subcommand().is_some_and(|(_, sub)| from_flag(sub))
}
