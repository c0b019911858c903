//! `aim-token token`: the bearer value on stdout, for shell pipelines.

use crate::config::{self, Global};
use crate::exit;

pub(crate) const AFTER_HELP: &str = "\
Only the token goes to stdout, so it can be used in a pipeline:
  curl -H \"Authorization: Bearer $(aim-token token)\" https://mes01/mesmw/api/...
Errors go to stderr, with the exit codes of `aim-token --help`.";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) async fn run(global: &Global, _args: Args) -> u8 {
    let client = match global.client() {
        Ok(c) => c,
        Err(f) => return f.report(),
    };
    config::progress(&format!("requesting a token from {}", client.authority()));
    match client.token().await {
        Ok(token) => {
            println!("{}", token.secret());
            exit::OK
        }
        Err(e) => exit::report(&e),
    }
}
