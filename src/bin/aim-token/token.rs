//! `aim-token token`: the bearer value on stdout, for shell pipelines.

use std::time::SystemTime;

use crate::advice;
use crate::config::{self, Failure, Global};
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
    let Some((host, port)) = host_and_port(client.authority()) else {
        return Failure::usage(format!("cannot tell the host of {}", client.authority())).report();
    };
    // A name that does not resolve will not resolve on a retry either: say
    // so now rather than after the retry deadline.
    // (Through a proxy, the proxy resolves it.)
    let scheme = client.authority().split(':').next().unwrap_or("https");
    if global.proxy_for(scheme).is_none() {
        config::progress(&format!("resolving {host}"));
        if let Err(advice) = crate::check::resolve(&host, port, global.timeout()).await {
            return advice.report();
        }
    }
    config::progress(&format!("requesting a token from {}", client.authority()));
    match client.token().await {
        Ok(token) => {
            // A token this machine calls expired (or not yet valid) would
            // fail wherever it is used: no token on stdout, the clock's code.
            let jwt = crate::decode::Jwt::parse(token.secret()).ok();
            if let Some(advice) = jwt.and_then(|jwt| advice::clock_problem(&jwt, SystemTime::now()))
            {
                return advice.report();
            }
            config::clear_progress();
            println!("{}", token.secret());
            exit::OK
        }
        Err(e) => {
            let cx = advice::Context {
                host: &host,
                timeout: global.timeout(),
                reached: false,
            };
            advice::token_error(&e, cx).report()
        }
    }
}

/// The host (as written in the URL) and port of the authority.
fn host_and_port(authority: &str) -> Option<(String, u16)> {
    let url = url::Url::parse(authority).ok()?;
    Some((url.host_str()?.to_owned(), url.port_or_known_default()?))
}
