//! An AIM + MES stand-in server on 127.0.0.1, for examples, for this
//! crate's tests and for the tests of your own application.
//!
//! [`AimEmulator`] is a real HTTP(S) server that behaves like AVEVA Identity
//! Manager (an IdentityServer): discovery, JWKS, `/connect/token` with
//! `client_secret_post` and `client_secret_basic`, RS256 JWT access tokens,
//! `/connect/introspect`, `/connect/register` (RFC 7591), plus a sliver of
//! the MES Web API (`/mesmw/api/v3/...`) that checks bearer tokens as MES
//! does. Knobs inject faults ([`Fault`]) and counters ([`Counters`]) say what
//! it saw, so tests assert behaviour rather than luck.
//!
//! ```no_run
//! # async fn run() -> Result<(), aim_token::Error> {
//! use aim_token::emulator::{AimEmulator, Endpoint, Fault};
//!
//! let aim = AimEmulator::builder().https(true).start().await?;
//! // The next token request fails like an AIM behind a failing IIS.
//! aim.inject(Endpoint::Token, Fault::Html);
//! let client = aim.client_builder().build()?;
//! assert!(client.token().await.is_err());
//! let token = client.token().await?;
//! assert_eq!(aim.counters().tokens_issued, 1);
//! # let _ = token;
//! # Ok(()) }
//! ```
//!
//! # What it serves
//!
//! | route | behaviour |
//! | --- | --- |
//! | `GET /identitymanager/.well-known/openid-configuration` | discovery; `registration_endpoint` only with an [initial access token](AimEmulatorBuilder::initial_access_token); 404 when [disabled](AimEmulatorBuilder::discovery) |
//! | `GET /identitymanager/.well-known/openid-configuration/jwks` | the RS256 public key (`kid` = RFC 7638 thumbprint) |
//! | `POST /identitymanager/connect/token` | `client_credentials` with `client_secret_post` or `client_secret_basic` (RFC 6749 §2.3.1 decoding); errors are HTTP 400 `invalid_client`, `invalid_scope`, `invalid_request`, `unauthorized_client` (a grant type IdentityServer knows, e.g. `password`), `unsupported_grant_type` |
//! | `POST /identitymanager/connect/introspect` | RFC 7662, client-authenticated like the token endpoint |
//! | `POST /identitymanager/connect/register` | RFC 7591 behind the initial access token; extensions `client_id` and `access_token_lifetime` (seconds), like the `Add-IdentityManagerClient` cmdlet |
//! | `GET /identitymanager/connect/register/{client_id}` | RFC 7592 read, with the `registration_access_token` |
//! | `GET /mesmw/api/v3/entity` (+ `/key?entId=`, `/filter?...`, `/name?entName=&siteName=`) | the [plant](MesPlant)'s entities, MES V3 columns in snake_case |
//! | `GET /mesmw/api/v3/Jobs/key?woId=&operId=&seqNo=` | one job |
//! | `PUT /mesmw/api/v3/Jobs/Start`, `/Pause`, `/End` | the Job model; MES's state rules |
//! | `POST /mesmw/api/v3/transaction`, `PUT ...?action=commit\|abort` | transactions that the `trans_id` of other calls joins |
//! | any other path | 404 (a plain one outside `/mesmw/api/`, without a token check) |
//!
//! # The MES Web API V3
//!
//! Endpoint names and parameter names are case-insensitive, as in MES.
//! A call to `/mesmw/api/...` is checked in this order:
//!
//! | check | answer |
//! | --- | --- |
//! | "AIM" is [offline for MES](AimEmulator::set_mes_aim_offline) | 500, "... an authentication token cannot be obtained or verified" |
//! | bearer token missing, not signed by this emulator, another issuer, expired (by the emulator's clock) | 401 with `WWW-Authenticate: Bearer error="invalid_token"` |
//! | [`set_mes_forbidden`](AimEmulator::set_mes_forbidden) | 403 |
//! | unknown endpoint | 404 "No HTTP resource was found that matches the request URI ..." |
//! | known endpoint, other method | 405 with `Allow` |
//! | [revoked privilege](AimEmulator::revoke_mes_privilege) | 404 "You do not have the appropriate privileges to access this entity" |
//! | `trans_id` (header, else URL) unknown, ended or timed out | 404 "The transaction ID '...' doesn't exist: it timed out or was not started." |
//! | required parameter missing | 404, as an unknown endpoint (ASP.NET matches no action) |
//! | parameter of the wrong type, Job model member missing | 400 |
//! | entity or job not in the plant | 404 "The specified entity does not exist" (AVEVA's text) / "The specified job does not exist" |
//! | job state rule broken (start a Running, Complete or Canceled job; no free job position; pause a job that is not Running; end one that is neither Running nor Suspended) | 400 with the reason (AVEVA passes MES's business-logic message on without naming the status; this emulator chose 400) |
//!
//! GETs answer JSON arrays of rows (also `/key` and `/name`, one row) and
//! honour `max_rows` (header, else URL). `Jobs/Start` sets `state_cd` 3
//! (Running) and a `job_pos`; `Pause` sets 5 (Suspended; 6, On Hold, when
//! the model says so); `End` sets 4 (Complete). As at MES, a PUT carries
//! the whole model: a column of the stored job that the body leaves out
//! becomes null. A change made with a `trans_id` is seen only by calls
//! with that `trans_id` until `action=commit` (204); `abort` (204) or a
//! [timeout](AimEmulatorBuilder::mes_transaction_timeout) drops it.
//! Errors have ASP.NET Web API's `{"Message": ...}` shape; `trans_id` and
//! `tz_id` request headers are echoed in the answer.
//!
//! Access tokens are RS256 JWTs with `iss` (the [authority](AimEmulator::authority)),
//! `aud` ([`audience`](AimEmulatorBuilder::audience), by default
//! IdentityServer's static `{issuer}/resources`), `exp`, `nbf`, `iat`,
//! `client_id`, `scope` (an array, as IdentityServer writes it) and `jti`.
//! The default client is [`AimEmulator::CLIENT_ID`] with
//! [`AimEmulator::CLIENT_SECRET`], a secret that breaks any client that does
//! not encode it. Like IdentityServer, a request without `scope` gets all
//! the client's allowed scopes (by default [`AimEmulator::DEFAULT_SCOPE`],
//! a name of the emulator's own: AVEVA documents no MES scope and its own
//! sample requests none); a scope the client is not allowed is `invalid_scope`.
//!
//! # Time
//!
//! The emulator's clock ([`AimEmulatorBuilder::clock`]) dates tokens, judges
//! their expiry at MES and introspection, and dates `Retry-After`. With a
//! [`TokioClock`](crate::TokioClock) and `#[tokio::test(start_paused = true)]`
//! a day of token lifetimes passes in milliseconds; [`Fault::Delay`] sleeps
//! on tokio's clock too. Nothing in the emulator blocks a thread, so it
//! runs on a current-thread runtime beside the code under test.
//!
//! ```no_run
//! # async fn run() -> Result<(), aim_token::Error> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use aim_token::TokioClock;
//! use aim_token::emulator::AimEmulator;
//!
//! let clock = Arc::new(TokioClock::new());
//! let aim = AimEmulator::builder()
//!     .clock(clock.clone())
//!     .token_lifetime(Duration::from_secs(3600))
//!     .start()
//!     .await?;
//! let client = aim.client_builder().clock(clock.clone()).build()?;
//! let first = client.token().await?;
//! clock.jump(Duration::from_secs(3600)); // the PC slept for an hour
//! let second = client.token().await?;
//! assert_ne!(first.secret(), second.secret());
//! # Ok(()) }
//! ```
//!
//! # Performance
//!
//! Signing dominates a token request (2048-bit RSA, about 0.3-0.6 ms); the
//! key is generated once per process (a few hundred milliseconds, on the
//! first start), after which an emulator starts in well under a
//! millisecond. Over https it offers h2, so thousands of concurrent
//! requests share one connection.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::Result;

pub use mes::plant::MesPlant;

mod client_auth;
mod faults;
mod identity;
mod keys;
mod mes;
mod oauth;
mod register;
mod server;
mod state;
mod tls;
mod tokens;

use server::Server;
use state::{Settings, State};

/// An endpoint of the emulator, for faults and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `GET /identitymanager/.well-known/openid-configuration`
    Discovery,
    /// `GET /identitymanager/.well-known/openid-configuration/jwks`
    Jwks,
    /// `POST /identitymanager/connect/token`
    Token,
    /// `POST /identitymanager/connect/register`
    Register,
    /// `POST /identitymanager/connect/introspect`
    Introspect,
    /// any `/mesmw/api/...` route
    Mes,
}

/// A fault to inject into the answer of an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this status, an optional `Retry-After` (seconds) and body.
    Status {
        /// HTTP status code.
        status: u16,
        /// `Retry-After` in seconds, if any.
        retry_after: Option<u64>,
        /// The body (empty if `None`).
        body: Option<String>,
    },
    /// Answer `Retry-After` as an HTTP date this far in the future, with this status.
    RetryAfterDate {
        /// HTTP status code.
        status: u16,
        /// How far in the future the date lies.
        after: Duration,
    },
    /// An OAuth error answer: `{"error": .., "error_description": ..}` with this status.
    OAuth {
        /// HTTP status code (AIM uses 400).
        status: u16,
        /// The `error` code.
        error: String,
    },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Close the connection without answering.
    DropConnection,
    /// 200 with a body that is not JSON.
    Garbage,
    /// 500 with an IIS-style HTML error page.
    Html,
    /// 200 with an empty body.
    Empty,
    /// 200 with JSON cut off in the middle.
    Truncated,
    /// A redirect: this 3xx status with this `Location` (IIS sending http
    /// to https, a load balancer to another node, a login page).
    Redirect {
        /// HTTP status code (301, 302, 307, 308).
        status: u16,
        /// The `Location` header.
        location: String,
    },
}

/// How the emulator writes `expires_in` in token answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ExpiresInFormat {
    /// `"expires_in": 86400` (AIM).
    #[default]
    Number,
    /// `"expires_in": "86400"`.
    String,
    /// No `expires_in` at all (the JWT `exp` still carries it).
    Missing,
}

/// A client the emulator knows. Its `Debug` does not show the secret.
#[derive(Clone)]
pub struct EmulatorClient {
    /// The client ID.
    pub id: String,
    /// The client secret.
    pub secret: String,
    /// Scopes it may request; requesting none grants all of them; any other is `invalid_scope`.
    pub scopes: Vec<String>,
    /// Per-client token lifetime; `None` uses the emulator's.
    pub lifetime: Option<Duration>,
    /// A disabled client gets `invalid_client`.
    pub enabled: bool,
}

impl EmulatorClient {
    /// An enabled client allowed the scope [`AimEmulator::DEFAULT_SCOPE`].
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        EmulatorClient {
            id: id.into(),
            secret: secret.into(),
            scopes: vec![AimEmulator::DEFAULT_SCOPE.into()],
            lifetime: None,
            enabled: true,
        }
    }
}

impl fmt::Debug for EmulatorClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorClient")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("lifetime", &self.lifetime)
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// Counters of the requests the emulator saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Discovery requests.
    pub discovery: u64,
    /// JWKS requests.
    pub jwks: u64,
    /// Token requests (all, including faulted ones).
    pub token: u64,
    /// Tokens issued.
    pub tokens_issued: u64,
    /// Registration requests.
    pub register: u64,
    /// Introspection requests.
    pub introspect: u64,
    /// MES API requests.
    pub mes: u64,
}

/// Configures an [`AimEmulator`].
#[must_use]
pub struct AimEmulatorBuilder {
    https: bool,
    clients: Vec<EmulatorClient>,
    lifetime: Duration,
    expires_in_format: ExpiresInFormat,
    discovery: bool,
    clock: Arc<dyn Clock>,
    initial_access_token: Option<String>,
    issuer: Option<String>,
    port: u16,
    default_scopes: Option<Vec<String>>,
    audience: Option<String>,
    mes_plant: MesPlant,
    mes_transaction_timeout: Duration,
}

impl Default for AimEmulatorBuilder {
    fn default() -> Self {
        AimEmulatorBuilder {
            https: false,
            clients: vec![EmulatorClient::new(
                AimEmulator::CLIENT_ID,
                AimEmulator::CLIENT_SECRET,
            )],
            lifetime: Duration::from_secs(24 * 3600),
            expires_in_format: ExpiresInFormat::Number,
            discovery: true,
            clock: Arc::new(SystemClock),
            initial_access_token: None,
            issuer: None,
            port: 0,
            default_scopes: None,
            audience: None,
            mes_plant: MesPlant::seeded(),
            mes_transaction_timeout: Duration::from_secs(120),
        }
    }
}

impl fmt::Debug for AimEmulatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AimEmulatorBuilder")
            .field("https", &self.https)
            .field("clients", &self.clients)
            .field("lifetime", &self.lifetime)
            .field("expires_in_format", &self.expires_in_format)
            .field("discovery", &self.discovery)
            .field("clock", &self.clock)
            .field(
                "initial_access_token",
                &self.initial_access_token.as_ref().map(|_| "<redacted>"),
            )
            .field("issuer", &self.issuer)
            .field("port", &self.port)
            .field("default_scopes", &self.default_scopes)
            .field("audience", &self.audience)
            .field("mes_plant", &self.mes_plant)
            .field("mes_transaction_timeout", &self.mes_transaction_timeout)
            .finish()
    }
}

impl AimEmulatorBuilder {
    /// Report (and sign tokens with) this issuer instead of the emulator's
    /// own authority, like a Redundant SSO node that issues tokens "as if
    /// sent from the System Management Server". Endpoints stay on the emulator.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Serve https with a freshly generated CA (see [`AimEmulator::ca_pem`]).
    pub fn https(mut self, https: bool) -> Self {
        self.https = https;
        self
    }
    /// Add a client (the default client `mes-client` is always there; a
    /// client with its ID replaces it).
    pub fn client(mut self, client: EmulatorClient) -> Self {
        self.clients.push(client);
        self
    }
    /// Token lifetime. Default 24 h, as AIM's MES clients.
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }
    /// How `expires_in` is written.
    pub fn expires_in_format(mut self, format: ExpiresInFormat) -> Self {
        self.expires_in_format = format;
        self
    }
    /// Whether discovery is served (404 when not). Default true.
    pub fn discovery(mut self, enabled: bool) -> Self {
        self.discovery = enabled;
        self
    }
    /// The wall clock for `iat`/`exp` and for checking tokens at MES.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// The initial access token required by `/connect/register`. Default: registration disabled.
    pub fn initial_access_token(mut self, token: impl Into<String>) -> Self {
        self.initial_access_token = Some(token.into());
        self
    }
    /// Bind this port on 127.0.0.1 (default 0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    /// The scopes the default client may have (and gets when it asks for
    /// none). Default: [`AimEmulator::DEFAULT_SCOPE`]. Use your site's
    /// names if your AIM restricts scopes (`-ScopeRestrictions`).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.default_scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }
    /// The `aud` claim of every token. Default: IdentityServer's static
    /// `{issuer}/resources` (AVEVA documents no audience for MES).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }
    /// The entities and jobs MES serves. Default: [`MesPlant::seeded`].
    pub fn mes_plant(mut self, plant: MesPlant) -> Self {
        self.mes_plant = plant;
        self
    }
    /// How long an MES transaction stays open (by the emulator's clock)
    /// before it times out and its changes are dropped. Default 2 min;
    /// a real MES's timeout is its own setting.
    pub fn mes_transaction_timeout(mut self, timeout: Duration) -> Self {
        self.mes_transaction_timeout = timeout;
        self
    }
    /// Starts the server on 127.0.0.1.
    ///
    /// Fails when the port cannot be bound, when a [`MesPlant`] row lacks
    /// its key columns, or (never in practice) when key or certificate
    /// generation fails.
    pub async fn start(mut self) -> Result<AimEmulator> {
        let mes_rows = self.mes_plant.checked()?;
        if let (Some(scopes), Some(default)) = (self.default_scopes, self.clients.first_mut()) {
            default.scopes = scopes;
        }
        // Key and certificate generation is CPU work of up to a few hundred
        // milliseconds: off the executor, so other tasks keep running.
        let https = self.https;
        let (key, tls) = tokio::task::spawn_blocking(move || -> Result<_> {
            let tls = if https { Some(tls::generate()?) } else { None };
            Ok((Arc::new(keys::generate()?), tls))
        })
        .await
        .map_err(|e| {
            crate::Error::config(format!("emulator: key generation did not finish: {e}"))
        })??;
        let listener = server::bind(self.port)?;
        let port = listener
            .local_addr()
            .map_err(|e| crate::Error::new(crate::ErrorKind::Transport, format!("emulator: {e}")))?
            .port();
        let scheme = if self.https { "https" } else { "http" };
        let base_url = format!("{scheme}://127.0.0.1:{port}");
        let settings = Settings {
            clients: self.clients,
            lifetime: self.lifetime,
            expires_in_format: self.expires_in_format,
            discovery: self.discovery,
            clock: self.clock,
            initial_access_token: self.initial_access_token,
            mes_rows,
            mes_transaction_timeout: self.mes_transaction_timeout,
            audience: self.audience,
            issuer: self.issuer,
        };
        let state = Arc::new(State::new(base_url, key, settings));
        let (acceptor, ca_pem) = match tls {
            Some(tls) => (Some(tls.acceptor), Some(tls.ca_pem)),
            None => (None, None),
        };
        let server = Server::start(listener, port, state.clone(), acceptor);
        Ok(AimEmulator {
            state,
            server,
            ca_pem,
        })
    }
}

/// An AIM + MES stand-in server on 127.0.0.1; stops when dropped.
///
/// Dropping it closes the listener and every connection. See the
/// [module documentation](self) for what it serves.
pub struct AimEmulator {
    state: Arc<State>,
    server: Server,
    ca_pem: Option<String>,
}

impl fmt::Debug for AimEmulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AimEmulator")
            .field("base_url", &self.state.base_url)
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl AimEmulator {
    /// The ID of the default client.
    pub const CLIENT_ID: &'static str = "mes-client";
    /// The secret of the default client: it needs encoding on the wire on purpose.
    pub const CLIENT_SECRET: &'static str = "s3cr3t P@ss&+=%/?#:";
    /// The scope clients may have unless told otherwise: the emulator's own
    /// name, not an AIM or MES one (AVEVA documents none).
    pub const DEFAULT_SCOPE: &'static str = "emulator.api";

    /// Configures an emulator.
    pub fn builder() -> AimEmulatorBuilder {
        AimEmulatorBuilder::default()
    }
    /// Starts an http emulator with the defaults.
    pub async fn start() -> Result<AimEmulator> {
        Self::builder().start().await
    }
    /// `http(s)://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }
    /// `http(s)://127.0.0.1:PORT/identitymanager`, for [`AimClientBuilder::authority`](crate::AimClientBuilder::authority).
    pub fn authority(&self) -> String {
        self.state.authority.clone()
    }
    /// The token endpoint URL.
    pub fn token_endpoint(&self) -> String {
        format!("{}/connect/token", self.state.authority)
    }
    /// `http(s)://127.0.0.1:PORT/mesmw/`, for [`MesClient::new`](crate::MesClient).
    pub fn mes_base(&self) -> String {
        format!("{}/mesmw/", self.state.base_url)
    }
    /// The PEM of the generated CA when serving https.
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.clone()
    }
    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.server.port()
    }
    /// An [`AimClientBuilder`](crate::AimClientBuilder) for the default client, trusting the CA when https.
    pub fn client_builder(&self) -> crate::AimClientBuilder {
        let builder = crate::AimClient::builder()
            .authority(self.authority())
            .client_id(Self::CLIENT_ID)
            .client_secret(Self::CLIENT_SECRET);
        match &self.ca_pem {
            Some(pem) => builder.root_certificate_pem(pem),
            None => builder,
        }
    }
    /// Adds or replaces a client while running.
    pub fn add_client(&self, client: EmulatorClient) {
        self.state.put_client(client);
    }
    /// Changes the token lifetime for tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state.set_lifetime(lifetime);
    }
    /// Queues a one-shot fault for the next request to `endpoint`.
    pub fn inject(&self, endpoint: Endpoint, fault: Fault) {
        self.state.faults.push(endpoint, fault, 1);
    }
    /// Queues the same fault for the next `times` requests.
    pub fn inject_times(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        self.state.faults.push(endpoint, fault, times);
    }
    /// A fault for every request to `endpoint` until cleared (`None`): an outage.
    /// Queued one-shot faults go first.
    pub fn set_outage(&self, endpoint: Endpoint, fault: Option<Fault>) {
        self.state.faults.set_outage(endpoint, fault);
    }
    /// Clears all queued faults and outages.
    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }
    /// MES answers 403 (no permission for the request) while set.
    pub fn set_mes_forbidden(&self, forbidden: bool) {
        self.state.mes_forbidden.store(forbidden, Ordering::Relaxed);
    }
    /// The Default Background User loses the privilege for `endpoint`
    /// (e.g. `"Jobs/Start"`, case-insensitive, the part after `api/v3/`):
    /// MES answers 404 "You do not have the appropriate privileges to
    /// access this entity", as documented.
    pub fn revoke_mes_privilege(&self, endpoint: &str) {
        self.state.mes.revoke(endpoint);
    }
    /// Gives back every privilege taken with [`revoke_mes_privilege`](Self::revoke_mes_privilege).
    pub fn restore_mes_privileges(&self) {
        self.state.mes.restore_privileges();
    }
    /// Every open MES transaction times out now: its changes are dropped
    /// and calls with its `trans_id` get 404.
    pub fn expire_mes_transactions(&self) {
        self.state.mes.expire_all();
    }
    /// Changes the MES transaction timeout for every open and future transaction.
    pub fn set_mes_transaction_timeout(&self, timeout: Duration) {
        self.state.mes.set_timeout(timeout);
    }
    /// While set, MES cannot reach AIM: every MES call answers 500 "...
    /// an authentication token cannot be obtained or verified", whatever
    /// the token (the token endpoint itself keeps working).
    pub fn set_mes_aim_offline(&self, offline: bool) {
        self.state.mes.aim_offline.store(offline, Ordering::Relaxed);
    }
    /// The plant as committed now (changes of open transactions excluded).
    pub fn mes_plant(&self) -> MesPlant {
        let rows = self.state.mes.committed();
        let plant = rows.entities.into_iter().fold(MesPlant::new(), |p, e| {
            p.entity(serde_json::Value::Object(e))
        });
        rows.jobs
            .into_iter()
            .fold(plant, |p, j| p.job(serde_json::Value::Object(j)))
    }
    /// MES rejects the next request with 401 `invalid_token`, whatever its token.
    pub fn reject_next_mes_token(&self) {
        self.state.reject_next_mes.store(true, Ordering::Relaxed);
    }
    /// Stops accepting connections (connection refused) until
    /// [`resume`](Self::resume), and closes open connections: an AIM node
    /// going down.
    pub async fn suspend(&self) {
        self.server.suspend().await;
    }
    /// Listens again on the same port.
    pub async fn resume(&self) -> Result<()> {
        self.server.resume().await
    }
    /// The requests seen so far.
    pub fn counters(&self) -> Counters {
        self.state.counters.snapshot()
    }
    /// Shorthand for `counters().token`.
    pub fn token_requests(&self) -> u64 {
        self.state.counters.token_requests()
    }
}
