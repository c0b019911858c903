//! # aim-token
//!
//! AVEVA Identity Manager (AIM) access tokens for AVEVA MES client
//! applications: get a token with the OAuth 2.0 client-credentials grant,
//! keep it fresh, and attach it to every MES Web API call.
//!
//! ## Quick start
//!
//! ```no_run
//! # async fn run() -> Result<(), aim_token::Error> {
//! use aim_token::AimClient;
//!
//! let aim = AimClient::builder()
//!     .authority("sms01.plant.local") // = https://sms01.plant.local/identitymanager
//!     .client_id("mes-reporting")
//!     .client_secret("s3cr3t")
//!     // No .scope(): AIM grants the client's allowed scopes, as in
//!     // AVEVA's own sample. Add .scope(..) only if your site restricts them.
//!     .build()?; // checks the configuration; no network I/O
//!
//! let token = aim.token().await?; // fetched once, then served from the cache
//! let auth_header = format!("Bearer {}", token.secret());
//! # let _ = auth_header;
//! # Ok(()) }
//! ```
//!
//! Build one [`AimClient`] per client ID and share it (clones share one cache).
//! Call [`AimClient::token`] before every request: while a usable token is
//! cached it is an atomic load and a reference-count increment; no lock, no
//! waiting. A background task refreshes the token at half its lifetime
//! (24 h tokens: after about 11–12 h), so an AIM outage of many hours goes
//! unnoticed by callers. However many tasks ask at once, at most one token
//! request is in flight.
//!
//! ## Configuration
//!
//! Everything is set on [`AimClientBuilder`]; setters never fail and
//! [`AimClientBuilder::build`] says what to fix. [`AimClient::from_env`] reads
//! `AIM_AUTHORITY`, `AIM_CLIENT_ID`, `AIM_CLIENT_SECRET` (or
//! `AIM_CLIENT_SECRET_FILE`, or systemd's `$CREDENTIALS_DIRECTORY/aim_client_secret`),
//! `AIM_SCOPE` and `AIM_CA_CERT` (the PCS root CA: a PEM file, or the DER `.cer` Windows exports).
//!
//! - **Authority**: `"sms01"`, `"sms01.plant.local"`, `"https://sms01"` or
//!   `"https://sms01/identitymanager"` all mean the same AIM. Plain `http` is
//!   refused except to loopback (or with `allow_insecure_http`).
//! - **TLS**: the operating system's trust store plus every
//!   [`root_certificate_pem`](AimClientBuilder::root_certificate_pem).
//! - **Proxies**: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`
//!   apply as reqwest reads them, or an explicit
//!   [`proxy`](AimClientBuilder::proxy).
//! - **Client authentication**: [`ClientAuthMethod::Post`] (default) or
//!   [`ClientAuthMethod::Basic`], both encoded correctly for any secret.
//! - **Redundant AIM nodes**: [`fallback_authority`](AimClientBuilder::fallback_authority).
//!   Tokens are per node; after a failover a new token is fetched.
//! - **Refresh policy**: [`refresh_ratio`](AimClientBuilder::refresh_ratio),
//!   [`expiry_margin`](AimClientBuilder::expiry_margin),
//!   [`retry_deadline`](AimClientBuilder::retry_deadline),
//!   [`backoff`](AimClientBuilder::backoff),
//!   [`error_cooldown`](AimClientBuilder::error_cooldown).
//!
//! ## Errors
//!
//! Every fallible call returns the one opaque [`Error`]. Ask it:
//! [`kind`](Error::kind) ([`ErrorKind::OAuth`], [`ErrorKind::Tls`],
//! [`ErrorKind::Transport`], ...), [`is_transient`](Error::is_transient),
//! [`status`](Error::status), [`oauth_error`](Error::oauth_error) and
//! [`retry_after`](Error::retry_after). Its message says what to do next, e.g.
//! `invalid_client: ... (check the client ID and secret registered with AIM,
//! and that the client is enabled)`. Neither the client secret nor a token
//! ever appears in an error, a `Debug` output or a log line.
//!
//! ```no_run
//! # async fn run(aim: aim_token::AimClient) {
//! use aim_token::ErrorKind;
//!
//! match aim.token().await {
//!     Ok(token) => println!("token valid until {:?}", token.expires_at()),
//!     Err(e) if e.kind() == ErrorKind::OAuth => eprintln!("AIM refused: {e}"),
//!     Err(e) if e.is_transient() => eprintln!("AIM unreachable, try later: {e}"),
//!     Err(e) => eprintln!("fix the configuration: {e}"),
//! }
//! # }
//! ```
//!
//! ## Attaching tokens
//!
//! - [`MesClient`]: the MES Web API V3 with the token attached — typed
//!   helpers on the documented routes (entities, jobs, [`MesTransaction`]),
//!   `get_json`/`post_json`/`put_json`/`delete` for the rest, and MES's
//!   answers turned into errors that explain them (a 404 for a missing
//!   privilege names the Default Background User; a 500 "token cannot be
//!   obtained or verified" is AIM unreachable from MES). It trusts what its
//!   [`AimClient`] trusts.
//! - `middleware::BearerAuth` (feature `middleware`): for a
//!   `reqwest_middleware::ClientWithMiddleware`.
//! - `layer::BearerAuthLayer` (feature `tower`): for hyper, tonic and other
//!   tower-based clients.
//!
//! All three send the token only over https (or to loopback) and only where
//! you said — `MesClient` under its base URL, the middleware and the layer
//! to the hosts given to `allow_host` (or every https host after an explicit
//! `allow_any_https_host()`; with neither they refuse every request) — fail
//! closed when no token can be had, and on a 401 drop the token and retry
//! once. That renewal is rate-limited: a token younger than
//! [`min_refresh_interval`](AimClientBuilder::min_refresh_interval) is not
//! renewed, and when the fresh token is refused too (MES does not trust this
//! AIM, or expects another audience) they answer `Unauthorized` without
//! asking AIM for [`unauthorized_cooldown`](AimClientBuilder::unauthorized_cooldown).
//! [`check_token_destination`] is that rule for code that sends the
//! token itself. What the crate protects, and against what, is in
//! `SECURITY.md`.
//!
//! ## Timeouts, runtimes and the background refresh
//!
//! - **Your timeouts are safe.** The token request runs in a task the client
//!   spawns on your tokio runtime; `token()` only awaits its outcome. Wrap it
//!   in `tokio::time::timeout` or a tower `Timeout` as you like: giving up
//!   cancels nothing, and the next call joins the same request.
//! - **[`retry_deadline`](AimClientBuilder::retry_deadline) is a deadline**
//!   (default 60 s): it bounds every attempt on every node, and when it runs
//!   out `token()` fails with [`ErrorKind::Timeout`] whose `source()` is the
//!   last attempt's error.
//! - **The refresher lives in the runtime that first needed a token.** If
//!   that runtime goes away (a set-up runtime, a test fixture,
//!   `Runtime::new().block_on(..)` per call), the first call after the
//!   refresh instant notices, restarts the refresher on its own runtime and
//!   refreshes itself, waiting at most about 2 s before it goes on with the
//!   still-valid token.
//! - **A current-thread runtime driven by short `block_on` calls** runs the
//!   refresher only while some `block_on` is running. That works: a refresh
//!   that falls due between calls happens inside the next call that sees it
//!   due (up to about 2 s late). If that is not acceptable, keep a runtime
//!   alive for the client (a multi-thread runtime, or a thread blocked in
//!   `block_on` on a long-lived future), or turn
//!   [`background_refresh`](AimClientBuilder::background_refresh) off: then
//!   callers always refresh themselves when due.
//! - **No server number can panic or park the client**: `Retry-After` is
//!   honoured up to 1 h and never past the deadline; `expires_in` and a JWT
//!   `exp` are clamped to between 1 s and 7 days.
//!
//! ## Many processes, many hosts
//!
//! Processes that share a client ID (scheduled jobs, a fleet of service
//! instances) share one token through a [`store`]:
//! [`AimClientBuilder::token_store`] with a [`store::FileStore`] (one host)
//! or `store::RedisStore` (feature `redis`, many hosts), or
//! `AIM_TOKEN_STORE` for [`AimClient::from_env`]. One token request for all
//! of them, values sealed with a key derived from the client secret, and a
//! failing store costs at most its timeout, never an error.
//!
//! ## Testing your own application with the emulator
//!
//! With the `emulator` feature (use it as a dev-dependency feature), the
//! `emulator::AimEmulator` is a real AIM + MES stand-in on 127.0.0.1: discovery,
//! RS256 JWT tokens, client registration, the MES Web API V3 as AVEVA
//! documents it (entities, jobs, transactions) over a small seeded plant,
//! injected faults (status codes, `Retry-After`, delays, dropped connections,
//! HTML error pages) and request counters.
//!
//! ```
//! # async fn run() -> Result<(), aim_token::Error> {
//! use aim_token::emulator::AimEmulator;
//!
//! let aim_server = AimEmulator::start().await?;
//! let aim = aim_server.client_builder().build()?;
//! let token = aim.token().await?;
//! assert_eq!(aim_server.token_requests(), 1);
//! # Ok(()) }
//! ```
//!
//! Time-dependent tests run a simulated day in milliseconds with
//! `#[tokio::test(start_paused = true)]` and a [`TokioClock`] given to both the
//! client ([`AimClientBuilder::clock`]) and the emulator.
//!
//! ## Feature flags
//!
//! | feature | adds |
//! | --- | --- |
//! | `middleware` | `middleware::BearerAuth` for reqwest-middleware |
//! | `tower` | `layer::BearerAuthLayer` and its service |
//! | `emulator` | `emulator::AimEmulator`, the AIM + MES stand-in server |
//! | `redis` | `store::RedisStore`: one token shared by many hosts through Redis or Valkey |
//! | `cli` | the `aim-token` command-line tool (`token`, `check`, `register`, `decode`) |
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod authority;
mod bearer;
mod ca_file;
mod cache;
mod client;
mod clock;
mod config;
mod credentials;
mod discovery;
mod duration_text;
mod env_value;
mod error;
mod exchange;
mod http;
pub mod mes;
mod registration;
mod secret_env;
pub mod store;
mod tls;
mod token;

// The CLI trusts by the same rule as the client; not API.
#[cfg(feature = "cli")]
#[doc(hidden)]
#[path = "cli_support.rs"]
pub mod __cli;

// The fuzz targets' door to the parsers (fuzz/); not API.
#[cfg(feature = "__fuzz")]
#[doc(hidden)]
#[path = "fuzz.rs"]
pub mod __fuzz;

#[cfg(feature = "emulator")]
#[cfg_attr(docsrs, doc(cfg(feature = "emulator")))]
pub mod emulator;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod layer;
#[cfg(feature = "middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "middleware")))]
pub mod middleware;

/// Compiles every Rust snippet of README.md as a doctest (some need the
/// `middleware` and `tower` features, as the README says beside them;
/// `tests/readme.rs` checks that the first one requests no scope).
#[cfg(all(doctest, feature = "middleware", feature = "tower"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use bearer::check_token_destination;
pub use cache::Stats;
pub use client::{AimClient, AimClientBuilder};
pub use clock::{Clock, SystemClock, TokioClock};
pub use credentials::ClientAuthMethod;
pub use error::{Error, ErrorKind, Result};
pub use mes::{MesClient, MesTransaction};
pub use registration::{ClientRegistration, RegisteredClient, SecretExpiry, Verification};
pub use token::AccessToken;
