//! `aim-token token`: the bearer value on stdout, for shell pipelines.

use std::time::{Duration, SystemTime};

use aim_token::store::{self, FileStore, TokenStore};

use crate::advice;
use crate::config::{self, Failure, Global};
use crate::exit;

pub(crate) const AFTER_HELP: &str = "\
Only the token goes to stdout, so it can be used in a pipeline:
  curl -H \"Authorization: Bearer $(aim-token token)\" https://mes01/mesmw/api/...
Errors go to stderr, with the exit codes of `aim-token --help`.

The token is kept (sealed with a key derived from the client secret, readable
by your user only) in your cache directory (~/.cache/aim-token, or
%LOCALAPPDATA%\\aim-token on Windows), so a job that runs every minute asks AIM
once per token lifetime, not every minute. --store or AIM_TOKEN_STORE choose
another store (file:DIR, redis://HOST:PORT/DB, rediss://...), --no-cache or
AIM_TOKEN_STORE=none ask AIM every time. A store that does not answer within
2 s is passed over: the run asks AIM instead.";

/// The bound of each store operation. A run that misses the cache asks AIM
/// for a token, which is what the cache is for: a one-shot run can wait
/// longer than a service's 250 ms (a virus scanner opening the cache file,
/// a loaded machine).
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Ask AIM for a new token every time instead of using the cached one
    /// (wins over --store and AIM_TOKEN_STORE).
    #[arg(long)]
    no_cache: bool,

    /// Where to keep the token: file:DIR, redis://HOST:PORT/DB, rediss://... or
    /// none. Default: the per-user cache directory.
    #[arg(long, env = "AIM_TOKEN_STORE", value_name = "STORE")]
    store: Option<String>,
}

pub(crate) async fn run(global: &Global, args: Args) -> u8 {
    let client = match global
        .client_builder()
        .and_then(|builder| {
            Ok(match chosen_store(&args)? {
                Some(store) => builder
                    .token_store(store)
                    .token_store_timeout(STORE_TIMEOUT),
                None => builder,
            })
        })
        .and_then(|builder| builder.build().map_err(|e| global.build_failure(e)))
    {
        Ok(c) => c,
        Err(f) => return f.report(),
    };
    let Some((host, port)) = host_and_port(client.authority()) else {
        return Failure::usage(format!("cannot tell the host of {}", client.authority())).report();
    };
    // A name that does not resolve will not resolve on a retry either: say
    // so now rather than after the retry deadline.
    // (Through a proxy, the proxy resolves it.)
    let proxy = global.proxy_for(client.authority());
    if proxy.is_none() {
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
                proxy: proxy.as_deref(),
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

/// The store of `--store`/`AIM_TOKEN_STORE`, none with `--no-cache`, else
/// the per-user cache (none, with a warning, if the OS names no such place).
fn chosen_store(args: &Args) -> Result<Option<std::sync::Arc<dyn TokenStore>>, Failure> {
    if args.no_cache {
        return Ok(None);
    }
    if let Some(spec) = args.store.as_deref().filter(|s| !s.trim().is_empty()) {
        return store::from_spec(spec).map_err(|e| Failure::usage(e.to_string()));
    }
    match FileStore::user_cache() {
        Ok(store) => Ok(Some(std::sync::Arc::new(store))),
        Err(e) => {
            eprintln!("warning: not caching the token: {e}");
            Ok(None)
        }
    }
}
