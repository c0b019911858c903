//! `AimClient` and its builder: the public face of the crate.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::cache::{Cache, CacheConfig, Stats};
use crate::clock::{Clock, SystemClock};
use crate::credentials::{ClientAuthMethod, ClientCredentials};
use crate::error::{Error, Result};
use crate::exchange::{ExchangeConfig, Exchanger};
use crate::token::AccessToken;

/// Gets AIM access tokens for one client ID and keeps them fresh.
///
/// Cheap to clone (an `Arc`); clones share one cache, so share one client
/// across your application. Dropping the last clone stops its background
/// refresh.
///
/// ```no_run
/// # async fn run() -> Result<(), aim_token::Error> {
/// use aim_token::AimClient;
///
/// let aim = AimClient::builder()
///     .authority("sms01.plant.local")
///     .client_id("mes-reporting")
///     .client_secret("s3cr3t")
///     .scope("mes.api")
///     .build()?;
/// let token = aim.token().await?;
/// println!("expires at {:?}", token.expires_at());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AimClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    cache: Cache,
    client_id: String,
    authority: String,
}

impl AimClient {
    /// Starts configuring a client.
    pub fn builder() -> AimClientBuilder {
        AimClientBuilder::default()
    }

    /// A client configured from the environment: `AIM_AUTHORITY`,
    /// `AIM_CLIENT_ID`, `AIM_CLIENT_SECRET`, optional `AIM_SCOPE`
    /// (space-separated) and `AIM_CA_CERT` (path of a PEM file to trust).
    pub fn from_env() -> Result<Self> {
        AimClientBuilder::from_env()?.build()
    }

    /// A valid access token: from the cache when it has a usable one (an
    /// atomic load), otherwise from AIM (one request however many callers
    /// ask at once).
    pub async fn token(&self) -> Result<AccessToken> {
        self.inner.cache.token().await
    }

    /// Forces a new token from AIM, shared with any refresh already under way.
    pub async fn refresh(&self) -> Result<AccessToken> {
        self.inner.cache.refresh().await
    }

    /// Drops `token` from the cache if it is still the current one, e.g.
    /// after a resource server answered 401 for it. The next
    /// [`token`](Self::token) fetches a new one; a thousand callers
    /// invalidating the same token cause one refresh.
    pub fn invalidate(&self, token: &AccessToken) {
        self.inner.cache.invalidate(token)
    }

    /// A snapshot of the cache's counters.
    pub fn stats(&self) -> Stats {
        self.inner.cache.stats()
    }

    /// The client ID this client authenticates as.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The primary authority's base URL, e.g. `https://sms01/identitymanager`.
    pub fn authority(&self) -> &str {
        &self.inner.authority
    }
}

impl fmt::Debug for AimClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AimClient")
            .field("authority", &self.inner.authority)
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

/// Configures an [`AimClient`]. Setters never fail; [`build`](Self::build)
/// checks everything and says what to fix. No network I/O happens before the
/// first token request.
#[must_use]
#[derive(Default)]
pub struct AimClientBuilder {
    pub(crate) authority: Option<String>,
    pub(crate) fallback_authorities: Vec<String>,
    pub(crate) token_endpoint: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<SecretString>,
    pub(crate) scopes: Vec<String>,
    pub(crate) auth_method: ClientAuthMethod,
    pub(crate) form_params: Vec<(String, String)>,
    pub(crate) root_certificates: Vec<Vec<u8>>,
    pub(crate) danger_accept_invalid_certs: bool,
    pub(crate) allow_insecure_http: bool,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) default_lifetime: Option<Duration>,
    pub(crate) cache: CacheConfig,
    pub(crate) clock: Option<Arc<dyn Clock>>,
}

impl AimClientBuilder {
    /// The AIM server: `"sms01"`, `"sms01.plant.local"`,
    /// `"https://sms01.plant.local"` or `"https://sms01/identitymanager"` —
    /// all mean `https://HOST/identitymanager`.
    pub fn authority(mut self, authority: impl Into<String>) -> Self {
        self.authority = Some(authority.into());
        self
    }

    /// A redundant AIM node to fail over to when the primary is unreachable
    /// or failing (repeatable, tried in order). Tokens are per node.
    pub fn fallback_authority(mut self, authority: impl Into<String>) -> Self {
        self.fallback_authorities.push(authority.into());
        self
    }

    /// Use this token endpoint and skip discovery.
    pub fn token_endpoint(mut self, url: impl Into<String>) -> Self {
        self.token_endpoint = Some(url.into());
        self
    }

    /// The client ID registered with AIM.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// The client secret registered with AIM. Kept in a zeroize-on-drop
    /// secret type and never printed.
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(SecretString::from(secret.into()));
        self
    }

    /// A scope to request (repeatable). With none, AIM grants the client's
    /// default scopes.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Several scopes to request.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// How the client authenticates: [`ClientAuthMethod::Post`] (default,
    /// credentials in the form body) or [`ClientAuthMethod::Basic`].
    pub fn auth_method(mut self, method: ClientAuthMethod) -> Self {
        self.auth_method = method;
        self
    }

    /// An extra form parameter of the token request, e.g. `resource` or `audience`.
    pub fn form_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.form_params.push((name.into(), value.into()));
        self
    }

    /// An extra trust anchor in PEM, e.g. the PCS root CA (repeatable).
    /// Added to the operating system's trust store, not replacing it.
    pub fn root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.root_certificates.push(pem.as_ref().to_vec());
        self
    }

    /// Accept any TLS certificate, for a lab only: it lets anyone on the
    /// network read the client secret. Logs a warning at every build. Trust
    /// the PCS root CA with [`root_certificate_pem`](Self::root_certificate_pem) instead.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.danger_accept_invalid_certs = accept;
        self
    }

    /// Allow plain `http` to a non-loopback host (loopback is always allowed).
    /// The secret then crosses the network in clear text.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// Timeout for establishing a connection. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Timeout for one whole request. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Lifetime assumed when the server sends no `expires_in` and the token
    /// is not a JWT with `exp`. Default 1 h.
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = Some(lifetime);
        self
    }

    /// Refresh when this share of the token's lifetime has passed, in (0, 1).
    /// Default 0.5.
    pub fn refresh_ratio(mut self, ratio: f64) -> Self {
        self.cache.refresh_ratio = ratio;
        self
    }

    /// Up to this share of the token's lifetime is subtracted at random from
    /// the refresh instant, so that many clients started together do not
    /// refresh together. In [0, `refresh_ratio`). Default 0.1.
    pub fn refresh_jitter(mut self, share: f64) -> Self {
        self.cache.refresh_jitter = share;
        self
    }

    /// A token closer than this to expiry is never handed out (at most 10 %
    /// of its lifetime is used for short-lived tokens). Default 30 s.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.cache.expiry_margin = margin;
        self
    }

    /// Shortest time between two refreshes. Default 1 s.
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.cache.min_refresh_interval = interval;
        self
    }

    /// Bounds of the exponential backoff between retries. Default 200 ms to 30 s.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.cache.backoff_min = min;
        self.cache.backoff_max = max;
        self
    }

    /// Total time one acquisition may take, retries included. Default 60 s.
    pub fn retry_deadline(mut self, deadline: Duration) -> Self {
        self.cache.retry_deadline = deadline;
        self
    }

    /// How long a permanent error (`invalid_client`, ...) is remembered and
    /// returned without asking AIM again. Default 10 s.
    pub fn error_cooldown(mut self, cooldown: Duration) -> Self {
        self.cache.error_cooldown = cooldown;
        self
    }

    /// Whether a background task refreshes the token ahead of expiry.
    /// Default true.
    pub fn background_refresh(mut self, enabled: bool) -> Self {
        self.cache.background_refresh = enabled;
        self
    }

    /// The wall clock used for expiry. Default [`SystemClock`]; tests use
    /// [`TokioClock`](crate::TokioClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Reads `AIM_AUTHORITY`, `AIM_CLIENT_ID`, `AIM_CLIENT_SECRET`, optional
    /// `AIM_SCOPE` and `AIM_CA_CERT` into a builder that can be refined further.
    pub fn from_env() -> Result<Self> {
        todo_exchange("from_env")
    }

    /// Checks the configuration and builds the client. No network I/O.
    pub fn build(self) -> Result<AimClient> {
        let clock: Arc<dyn Clock> = self.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let client_id = self.client_id.clone().unwrap_or_default();
        let secret = self
            .client_secret
            .clone()
            .unwrap_or_else(|| SecretString::from(String::new()));
        let credentials = ClientCredentials::new(client_id.clone(), secret, self.auth_method);
        let exchanger = Exchanger::new(ExchangeConfig::from_builder(
            &self,
            credentials,
            clock.clone(),
        )?)?;
        let authority = exchanger.primary_label().to_owned();
        let cache = Cache::new(Arc::new(exchanger), self.cache, self.clock, &client_id)?;
        Ok(AimClient {
            inner: Arc::new(ClientInner {
                cache,
                client_id,
                authority,
            }),
        })
    }
}

fn todo_exchange<T>(what: &str) -> Result<T> {
    Err(Error::config(format!("{what} is not implemented yet")))
}

impl fmt::Debug for AimClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AimClientBuilder")
            .field("authority", &self.authority)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("scopes", &self.scopes)
            .field("auth_method", &self.auth_method)
            .finish_non_exhaustive()
    }
}
