//! An AIM + MES stand-in server on 127.0.0.1. SKELETON: the public contract
//! that tests, examples and other modules compile against; the emulator
//! helper fills in the bodies (issue #2, item 6).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::error::{Error, Result};

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

/// A client the emulator knows.
#[derive(Debug, Clone)]
pub struct EmulatorClient {
    /// The client ID.
    pub id: String,
    /// The client secret.
    pub secret: String,
    /// Scopes it may request; requesting none grants all of them.
    pub scopes: Vec<String>,
    /// Per-client token lifetime; `None` uses the emulator's.
    pub lifetime: Option<Duration>,
    /// A disabled client gets `invalid_client`.
    pub enabled: bool,
}

impl EmulatorClient {
    /// An enabled client with the scopes `mes.api` and `openid`.
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        EmulatorClient {
            id: id.into(),
            secret: secret.into(),
            scopes: vec!["mes.api".into(), "openid".into()],
            lifetime: None,
            enabled: true,
        }
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
#[derive(Debug, Default)]
pub struct AimEmulatorBuilder {
    _p: (),
}

impl AimEmulatorBuilder {
    /// Serve https with a freshly generated CA (see [`AimEmulator::ca_pem`]).
    pub fn https(self, _https: bool) -> Self {
        self
    }
    /// Add a client (the default client `mes-client` is always there).
    pub fn client(self, _client: EmulatorClient) -> Self {
        self
    }
    /// Token lifetime. Default 24 h, as AIM's MES clients.
    pub fn token_lifetime(self, _lifetime: Duration) -> Self {
        self
    }
    /// How `expires_in` is written.
    pub fn expires_in_format(self, _format: ExpiresInFormat) -> Self {
        self
    }
    /// Whether discovery is served (404 when not). Default true.
    pub fn discovery(self, _enabled: bool) -> Self {
        self
    }
    /// The wall clock for `iat`/`exp` and for checking tokens at MES.
    pub fn clock(self, _clock: Arc<dyn Clock>) -> Self {
        self
    }
    /// The initial access token required by `/connect/register`. Default: registration disabled.
    pub fn initial_access_token(self, _token: impl Into<String>) -> Self {
        self
    }
    /// Bind this port on 127.0.0.1 (default 0: any free port).
    pub fn port(self, _port: u16) -> Self {
        self
    }
    /// Starts the server on 127.0.0.1.
    pub async fn start(self) -> Result<AimEmulator> {
        Err(Error::config("emulator not implemented yet"))
    }
}

/// An AIM + MES stand-in server on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct AimEmulator {
    _p: (),
}

impl AimEmulator {
    /// The ID of the default client.
    pub const CLIENT_ID: &'static str = "mes-client";
    /// The secret of the default client: it needs encoding on the wire on purpose.
    pub const CLIENT_SECRET: &'static str = "s3cr3t P@ss&+=%/?#:";

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
        String::new()
    }
    /// `http(s)://127.0.0.1:PORT/identitymanager`, for [`AimClientBuilder::authority`](crate::AimClientBuilder::authority).
    pub fn authority(&self) -> String {
        String::new()
    }
    /// The token endpoint URL.
    pub fn token_endpoint(&self) -> String {
        String::new()
    }
    /// `http(s)://127.0.0.1:PORT/mesmw/`, for [`MesClient::new`](crate::MesClient).
    pub fn mes_base(&self) -> String {
        String::new()
    }
    /// The PEM of the generated CA when serving https.
    pub fn ca_pem(&self) -> Option<String> {
        None
    }
    /// The port it listens on.
    pub fn port(&self) -> u16 {
        0
    }
    /// An [`AimClientBuilder`](crate::AimClientBuilder) for the default client, trusting the CA when https.
    pub fn client_builder(&self) -> crate::AimClientBuilder {
        crate::AimClient::builder()
    }
    /// Adds or replaces a client while running.
    pub fn add_client(&self, _client: EmulatorClient) {}
    /// Changes the token lifetime for tokens issued from now on.
    pub fn set_token_lifetime(&self, _lifetime: Duration) {}
    /// Queues a one-shot fault for the next request to `endpoint`.
    pub fn inject(&self, _endpoint: Endpoint, _fault: Fault) {}
    /// Queues the same fault for the next `times` requests.
    pub fn inject_times(&self, _endpoint: Endpoint, _fault: Fault, _times: usize) {}
    /// A fault for every request to `endpoint` until cleared (`None`): an outage.
    pub fn set_outage(&self, _endpoint: Endpoint, _fault: Option<Fault>) {}
    /// Clears all queued faults and outages.
    pub fn clear_faults(&self) {}
    /// MES answers 403 (the Default Background User lacks a privilege) while set.
    pub fn set_mes_forbidden(&self, _forbidden: bool) {}
    /// MES rejects the next request with 401 `invalid_token`, whatever its token.
    pub fn reject_next_mes_token(&self) {}
    /// Stops accepting connections (connection refused) until [`resume`](Self::resume).
    pub async fn suspend(&self) {}
    /// Listens again on the same port.
    pub async fn resume(&self) -> Result<()> {
        Ok(())
    }
    /// The requests seen so far.
    pub fn counters(&self) -> Counters {
        Counters::default()
    }
    /// Shorthand for `counters().token`.
    pub fn token_requests(&self) -> u64 {
        0
    }
}
