//! `AimClient` and its builder: the public face of the crate.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::authority::without_userinfo;
use crate::cache::{Cache, CacheConfig, Stats};
use crate::clock::Clock;
use crate::config::ClientConfig;
use crate::credentials::ClientAuthMethod;
use crate::error::{Error, Result};
use crate::exchange::Exchanger;
use crate::http::HttpConfig;
use crate::store::{lease_time, Attached, TokenStore, DEFAULT_OP_TIMEOUT};
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
///     .scope("site.api") // only where the site restricts scopes; none = the client's allowed scopes
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
    /// What AIM's HTTP client trusts, for the MES client to trust too.
    http: HttpConfig,
}

impl AimClient {
    /// Starts configuring a client.
    pub fn builder() -> AimClientBuilder {
        AimClientBuilder::default()
    }

    /// A client configured from the environment: `AIM_AUTHORITY`,
    /// `AIM_CLIENT_ID`, `AIM_CLIENT_SECRET`, optional `AIM_SCOPE` (separated
    /// by spaces or commas), `AIM_CA_CERT` (path of a PEM or DER CA file to
    /// trust) and
    /// `AIM_TOKEN_STORE` (`file:DIR`, `redis://…`, `rediss://…` or `none`:
    /// see [`store::from_spec`](crate::store::from_spec)).
    /// See [`AimClientBuilder::from_env`] to refine the configuration further.
    pub fn from_env() -> Result<Self> {
        AimClientBuilder::from_env()?.build()
    }

    /// A valid access token: from the cache when it has a usable one (an
    /// atomic load), otherwise from AIM (one request however many callers
    /// ask at once).
    #[inline] // the cached path is a few nanoseconds; let callers inline it
    pub async fn token(&self) -> Result<AccessToken> {
        self.inner.cache.token().await
    }

    /// Forces a new token from AIM, shared with any refresh already under
    /// way; a token fetched less than `min_refresh_interval` ago counts as
    /// new (so a crowd calling `refresh()` makes one request).
    pub async fn refresh(&self) -> Result<AccessToken> {
        self.inner.cache.refresh().await
    }

    /// Drops `token` from the cache if it is still the current one, e.g.
    /// after a resource server answered 401 for it. The next
    /// [`token`](Self::token) fetches a new one; a thousand callers
    /// invalidating the same token cause one refresh, and a token fetched
    /// less than `min_refresh_interval` ago is kept (no request storms).
    pub fn invalidate(&self, token: &AccessToken) {
        self.inner.cache.invalidate(token)
    }

    /// After a 401 for `refused`: the fresh token to retry with, or the
    /// `Unauthorized` error to return (the one renewal policy, see
    /// `cache::rejection`; every attachment calls it).
    pub(crate) async fn renew_refused(&self, refused: &AccessToken) -> Result<AccessToken> {
        self.inner.cache.renew_refused(refused).await
    }

    /// The retry with the fresh token was refused too: starts the cool-down
    /// and returns the error to report.
    pub(crate) fn fresh_refused(&self, fresh: &AccessToken) -> Error {
        self.inner.cache.fresh_refused(fresh)
    }

    /// A 401 that is not retried (the body cannot be replayed): the same
    /// policy, without the retry.
    pub(crate) fn refused_unretried(&self, refused: &AccessToken) {
        self.inner.cache.refused_unretried(refused)
    }

    /// A resource server served a request made with `token` (a 2xx): the
    /// same policy learns that MES takes it.
    pub(crate) fn accepted(&self, token: &AccessToken) {
        self.inner.cache.accepted(token)
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

    /// The CA certificates this client trusts besides the OS store, as PEM:
    /// what [`root_certificate_pem`](AimClientBuilder::root_certificate_pem)
    /// was given, or the `AIM_CA_CERT` file (a DER `.cer` or UTF-16 file
    /// already turned into PEM). For an HTTP client of your own that calls
    /// MES, whose certificate usually comes from the same CA
    /// ([`MesClient`](crate::MesClient) trusts them by itself).
    ///
    /// ```no_run
    /// # fn run(aim: aim_token::AimClient) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut http = reqwest::Client::builder();
    /// for pem in aim.root_certificates_pem() {
    ///     http = http.tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem)?);
    /// }
    /// let http = http.build()?;
    /// # let _ = http; Ok(()) }
    /// ```
    pub fn root_certificates_pem(&self) -> &[Vec<u8>] {
        &self.inner.http.root_certificates
    }

    /// Trust anchors, TLS switches and timeouts of the requests to AIM.
    pub(crate) fn http_config(&self) -> &HttpConfig {
        &self.inner.http
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
    /// The variable the authority came from (`from_env`), for its errors.
    pub(crate) authority_variable: Option<&'static str>,
    pub(crate) fallback_authorities: Vec<String>,
    pub(crate) token_endpoint: Option<String>,
    pub(crate) expected_issuer: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<SecretString>,
    pub(crate) scopes: Vec<String>,
    pub(crate) auth_method: ClientAuthMethod,
    pub(crate) form_params: Vec<(String, String)>,
    pub(crate) root_certificates: Vec<Vec<u8>>,
    pub(crate) danger_accept_invalid_certs: bool,
    pub(crate) allow_insecure_http: bool,
    pub(crate) proxy: Option<String>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) default_lifetime: Option<Duration>,
    pub(crate) cache: CacheConfig,
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) token_store: Option<Arc<dyn TokenStore>>,
    pub(crate) token_store_timeout: Option<Duration>,
}

impl AimClientBuilder {
    /// The AIM server: `"sms01"`, `"sms01.plant.local"`,
    /// `"https://sms01.plant.local"` or `"https://SMS01/IdentityManager/"` —
    /// all mean `https://HOST/identitymanager` (host lowercased, trailing
    /// slash dropped). A port (`sms01:8443`) and IPv6 literals (`[fd00::5]`)
    /// are fine; another explicit path is kept as given. Plain `http` is
    /// accepted only for loopback hosts unless
    /// [`allow_insecure_http`](Self::allow_insecure_http) is set.
    pub fn authority(mut self, authority: impl Into<String>) -> Self {
        self.authority = Some(authority.into());
        self.authority_variable = None;
        self
    }

    /// The issuer AIM's discovery document reports, when it is not the
    /// authority's own base URL (AIM installed under another name). Every
    /// node may report it; fallback nodes also accept the primary's issuer
    /// without it, since a Redundant SSO node issues tokens "as if sent from
    /// the System Management Server".
    pub fn expected_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.expected_issuer = Some(issuer.into());
        self
    }

    /// A redundant AIM node to fail over to when the primary cannot answer
    /// (unreachable, TLS failure, timeouts, 5xx, an answer that is not
    /// OAuth such as an HTML page or a 404); repeatable, tried in order.
    /// An OAuth refusal from a fallback node does not cool the primary down.
    /// Tokens are per node.
    pub fn fallback_authority(mut self, authority: impl Into<String>) -> Self {
        self.fallback_authorities.push(authority.into());
        self
    }

    /// Use this token endpoint for the primary authority and skip discovery
    /// there, e.g. `https://sms01/identitymanager/connect/token`. Checked by
    /// the same rules as the authority (https, or http to loopback).
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
    /// `grant_type`, `client_id`, `client_secret` and `scope` are set by the
    /// client itself; naming them here is a configuration error.
    pub fn form_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.form_params.push((name.into(), value.into()));
        self
    }

    /// The RFC 8707 `resource` the token is for (repeatable); shorthand for
    /// `.form_param("resource", uri)`.
    pub fn resource(self, uri: impl Into<String>) -> Self {
        self.form_param("resource", uri)
    }

    /// The `audience` the token is for, as some providers expect it;
    /// shorthand for `.form_param("audience", audience)`.
    pub fn audience(self, audience: impl Into<String>) -> Self {
        self.form_param("audience", audience)
    }

    /// An extra trust anchor in PEM, e.g. the PCS root CA (repeatable; a
    /// bundle of several certificates is fine). Added to the operating
    /// system's trust store, not replacing it: a certificate the OS refuses
    /// for another reason than an unknown issuer (revoked, distrusted,
    /// expired, another name) stays refused. Anything that is not a PEM
    /// certificate makes [`build`](Self::build) fail with
    /// [`ErrorKind::Config`](crate::ErrorKind::Config).
    ///
    /// ```no_run
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let aim = aim_token::AimClient::builder()
    ///     .authority("sms01.plant.local")
    ///     .client_id("mes-reporting")
    ///     .client_secret("s3cr3t")
    ///     .root_certificate_pem(std::fs::read("pcs-root-ca.pem")?)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.root_certificates.push(pem.as_ref().to_vec());
        self
    }

    /// Accept any TLS certificate. For a lab only: anyone who can intercept
    /// the connection can then pose as AIM, read the client secret and hand
    /// the application tokens of its choosing. Logs a warning every time a
    /// client is built. Trust the PCS root CA with
    /// [`root_certificate_pem`](Self::root_certificate_pem) (or `AIM_CA_CERT`)
    /// instead.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.danger_accept_invalid_certs = accept;
        self
    }

    /// Send every request of this client (token, discovery, registration)
    /// through this HTTP proxy, e.g. `http://proxy.plant.local:3128` (user
    /// and password in the URL are sent as proxy credentials, and never
    /// printed). HTTPS goes through it with `CONNECT`, so the proxy sees the
    /// host name, never the secret or the token.
    ///
    /// Without it, the proxy environment variables apply as reqwest reads
    /// them: `HTTPS_PROXY` (for https), `HTTP_PROXY` (for http), `ALL_PROXY`
    /// (both), each also lowercase, and `NO_PROXY`, a comma-separated list
    /// of hosts, domains (`.plant.local`) and IP ranges that bypass the
    /// proxy. Windows' and macOS's own proxy settings are not read. A URL
    /// that is not a proxy URL fails at [`build`](Self::build).
    ///
    /// A proxy that asks for credentials (HTTP 407) fails the request at
    /// once with a permanent [`ErrorKind::Transport`](crate::ErrorKind)
    /// error: asking again cannot help. A proxy refusing the tunnel for
    /// another reason is retried like a failed connection; both errors name
    /// the proxy, not AIM, as what refused.
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = Some(url.into());
        self
    }

    /// Allow plain `http` to a non-loopback host (127.0.0.0/8, `::1` and
    /// `localhost` are always allowed). The secret and the token then cross
    /// the network in clear text; without this, such an authority is a
    /// configuration error.
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

    /// After a resource server (MES) refused a freshly fetched token too,
    /// the attachments (`MesClient`, `BearerAuth`, `BearerAuthLayer`) stop
    /// renewing tokens after a 401 for this long and answer `Unauthorized`:
    /// such a server does not trust this AIM or expects another audience,
    /// and asking AIM again would only cost token requests. Default 30 s.
    pub fn unauthorized_cooldown(mut self, cooldown: Duration) -> Self {
        self.cache.unauthorized_cooldown = cooldown;
        self
    }

    /// Whether a background task refreshes the token ahead of expiry.
    /// Default true.
    pub fn background_refresh(mut self, enabled: bool) -> Self {
        self.cache.background_refresh = enabled;
        self
    }

    /// Shares tokens with other processes and hosts through `store`
    /// ([`FileStore`](crate::store::FileStore), `RedisStore` with the feature
    /// `redis`, or your own [`TokenStore`]): one token request for the whole
    /// fleet, values sealed with a key derived from the client secret. The
    /// in-memory cache stays in front; see [`store`](crate::store).
    pub fn token_store(mut self, store: impl TokenStore) -> Self {
        self.token_store = Some(Arc::new(store));
        self
    }

    /// The bound of every token store operation. Default 250 ms: a slow or
    /// failing store costs at most this before the client asks AIM directly.
    pub fn token_store_timeout(mut self, timeout: Duration) -> Self {
        self.token_store_timeout = Some(timeout);
        self
    }

    /// The wall clock used for expiry. Default [`SystemClock`](crate::SystemClock); tests use
    /// [`TokioClock`](crate::TokioClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Reads `AIM_AUTHORITY`, `AIM_CLIENT_ID`, the client secret, optional
    /// `AIM_SCOPE` (separated by spaces or commas) and `AIM_CA_CERT` (path of
    /// the PCS root CA: PEM or a bundle, or DER `.cer` as Windows exports it;
    /// UTF-16 too) into a builder that can be refined further. A missing
    /// required variable, or an `AIM_CA_CERT` that cannot be read or holds no
    /// certificate, is an [`ErrorKind::Config`](crate::ErrorKind::Config)
    /// error naming it; so is an `AIM_AUTHORITY` that [`build`](Self::build)
    /// refuses.
    ///
    /// The secret comes from `AIM_CLIENT_SECRET`, or from the file named by
    /// `AIM_CLIENT_SECRET_FILE` (Docker and Kubernetes secrets; setting both
    /// is an error), or else from systemd's
    /// `$CREDENTIALS_DIRECTORY/aim_client_secret` (`LoadCredential=`); see
    /// [`client_secret_from_env`](Self::client_secret_from_env). Blank
    /// values count as unset; trailing line breaks (CR, LF) are not part of
    /// the secret.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), aim_token::Error> {
    /// use std::time::Duration;
    ///
    /// let aim = aim_token::AimClientBuilder::from_env()?
    ///     .request_timeout(Duration::from_secs(10))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Sets the client secret from the environment, as
    /// [`from_env`](Self::from_env) finds it: `AIM_CLIENT_SECRET`, else the
    /// file named by `AIM_CLIENT_SECRET_FILE` (without trailing line breaks),
    /// else systemd's `$CREDENTIALS_DIRECTORY/aim_client_secret`. Fails with
    /// [`ErrorKind::Config`](crate::ErrorKind::Config), naming the variable,
    /// when there is none, both variables are set, or the file is missing,
    /// unreadable or empty. A secret of only whitespace is no secret.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), aim_token::Error> {
    /// let aim = aim_token::AimClient::builder()
    ///     .authority("sms01.plant.local")
    ///     .client_id("mes-reporting")
    ///     .client_secret_from_env()? // e.g. AIM_CLIENT_SECRET_FILE=/run/secrets/aim
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn client_secret_from_env(mut self) -> Result<Self> {
        self.client_secret = Some(crate::secret_env::client_secret(|name| {
            std::env::var(name).ok()
        })?);
        Ok(self)
    }

    /// [`from_env`](Self::from_env) with the variables from `lookup`, so tests
    /// need not touch the process environment. Empty values count as unset.
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let require = |name: &str, what: &str| {
            get(name).ok_or_else(|| {
                Error::config(format!(
                    "the environment variable {name} is not set: set it to {what}"
                ))
            })
        };
        let mut builder = AimClient::builder()
            .authority(require(
                env::AUTHORITY,
                "the AIM server, e.g. sms01.plant.local or https://sms01.plant.local/identitymanager",
            )?)
            .client_id(require(env::CLIENT_ID, "the client ID registered with AIM")?);
        builder.authority_variable = Some(env::AUTHORITY);
        builder.client_secret = Some(crate::secret_env::client_secret(&lookup)?);
        if let Some(scopes) = get(env::SCOPE) {
            builder =
                builder.scopes(crate::config::split_scope_list(&scopes).filter(|s| !s.is_empty()));
        }
        if let Some(path) = get(env::CA_CERT) {
            builder = builder.root_certificate_pem(crate::ca_file::read(
                std::path::Path::new(&path),
                env::CA_CERT,
            )?);
        }
        if let Some(spec) = get(crate::store::ENV) {
            builder.token_store = crate::store::from_spec(&spec)?;
        }
        Ok(builder)
    }

    /// Checks the configuration and builds the client. No network I/O.
    ///
    /// Fails with [`ErrorKind::Config`](crate::ErrorKind::Config) and a
    /// message saying what to fix: no or a malformed authority, plain http to
    /// a remote host, no client ID or secret, a root certificate that is not
    /// PEM, a reserved `form_param`, nonsensical cache knobs.
    pub fn build(self) -> Result<AimClient> {
        let mut config = ClientConfig::from_builder(&self)?;
        let client_id = config.exchange.credentials.client_id.clone();
        if let Some(store) = self.token_store {
            store.trust_roots(&self.root_certificates);
            let exchange = &config.exchange;
            let timeout = self.token_store_timeout.unwrap_or(DEFAULT_OP_TIMEOUT);
            let lease_ttl = lease_time(
                config.cache.retry_deadline,
                exchange.http.request_timeout,
                exchange.authorities.len(),
                timeout,
            );
            // Zero (one attempt, no retries) still waits one request's time.
            let wait_limit = config
                .cache
                .retry_deadline
                .max(exchange.http.request_timeout);
            config.cache.store = Some(Arc::new(Attached::new(
                store, exchange, lease_ttl, wait_limit, timeout,
            )));
        }
        let http = config.exchange.http.clone();
        let exchanger = Arc::new(Exchanger::new(config.exchange)?);
        let authority = exchanger.primary_label().to_owned();
        let cache = Cache::new(exchanger, config.cache, config.clock, &client_id)?;
        Ok(AimClient {
            inner: Arc::new(ClientInner {
                cache,
                client_id,
                authority,
                http,
            }),
        })
    }
}

/// The environment variables of [`AimClient::from_env`].
pub(crate) mod env {
    /// The AIM server.
    pub(crate) const AUTHORITY: &str = "AIM_AUTHORITY";
    /// The client ID.
    pub(crate) const CLIENT_ID: &str = "AIM_CLIENT_ID";
    // The client secret and its file: see `secret_env`.
    /// Scopes, separated by spaces or commas.
    pub(crate) const SCOPE: &str = "AIM_SCOPE";
    /// Path of a PEM file with extra trust anchors.
    pub(crate) const CA_CERT: &str = "AIM_CA_CERT";
}

impl fmt::Debug for AimClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AimClientBuilder")
            .field(
                "authority",
                &self.authority.as_deref().map(without_userinfo),
            )
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("scopes", &self.scopes)
            .field("auth_method", &self.auth_method)
            .field(
                "fallback_authorities",
                &self
                    .fallback_authorities
                    .iter()
                    .map(|a| without_userinfo(a))
                    .collect::<Vec<_>>(),
            )
            .field(
                "token_endpoint",
                &self.token_endpoint.as_deref().map(without_userinfo),
            )
            .field(
                "expected_issuer",
                &self.expected_issuer.as_deref().map(without_userinfo),
            )
            .field("form_params", &self.form_params)
            .field("root_certificates", &self.root_certificates.len())
            .field(
                "danger_accept_invalid_certs",
                &self.danger_accept_invalid_certs,
            )
            .field("proxy", &self.proxy.as_deref().map(without_userinfo))
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("token_store", &self.token_store)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::error::ErrorKind;

    const SECRET: &str = "P@ss w0rd&+=%:/?#";

    /// The token exchange `builder.build()` puts behind its cache.
    fn exchanger(builder: &AimClientBuilder) -> Exchanger {
        let config = ClientConfig::from_builder(builder).unwrap();
        Exchanger::new(config.exchange).unwrap()
    }

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn full() -> Vec<(&'static str, &'static str)> {
        vec![
            (env::AUTHORITY, "SMS01.plant.local"),
            (env::CLIENT_ID, "mes:client one"),
            (crate::secret_env::CLIENT_SECRET, SECRET),
        ]
    }

    #[test]
    fn from_lookup_reads_every_variable() {
        let mut vars = full();
        vars.push((env::SCOPE, "mes.api, openid  extra,,"));
        let b = AimClientBuilder::from_lookup(lookup(&vars)).unwrap();
        assert_eq!(b.authority.as_deref(), Some("SMS01.plant.local"));
        assert_eq!(b.client_id.as_deref(), Some("mes:client one"));
        assert_eq!(b.scopes, ["mes.api", "openid", "extra"]);
        assert!(b.root_certificates.is_empty());
        let aim = b.build().unwrap();
        assert_eq!(aim.authority(), "https://sms01.plant.local/identitymanager");
        assert_eq!(aim.client_id(), "mes:client one");
    }

    /// AIM_SCOPE as admins write it: cmd.exe keeps the quotes of
    /// `set AIM_SCOPE="site.api openid"`, lists repeat a scope. What is
    /// requested is each scope once, without quotes (RFC 6749 §3.3: no
    /// scope-token holds `"`; the scope is a set).
    #[test]
    fn aim_scope_with_quotes_and_repeats() {
        let mut vars = full();
        vars.push((env::SCOPE, "\"site.api, openid\"\tsite.api\nopenid"));
        let b = AimClientBuilder::from_lookup(lookup(&vars)).unwrap();
        let config = ClientConfig::from_builder(&b).unwrap();
        assert_eq!(config.exchange.scopes, ["site.api", "openid"]);
        // The builder's own scopes are deduplicated too, in order.
        let b = AimClient::builder()
            .authority("sms01")
            .client_id("x")
            .client_secret("s")
            .scope("b a")
            .scope("a");
        let config = ClientConfig::from_builder(&b).unwrap();
        assert_eq!(config.exchange.scopes, ["b", "a"]);
    }

    /// cmd.exe's `set AIM_CLIENT_ID="mes-reporting"` keeps the quotes; no
    /// client ID registered with AIM is wrapped in them.
    #[test]
    fn a_quoted_client_id_is_the_id_between_the_quotes() {
        let mut vars = full();
        vars.retain(|(k, _)| *k != env::CLIENT_ID);
        vars.push((env::CLIENT_ID, " \"mes-reporting\" "));
        let b = AimClientBuilder::from_lookup(lookup(&vars)).unwrap();
        assert_eq!(b.build().unwrap().client_id(), "mes-reporting");
    }

    /// A fallback that is the primary (or another fallback) again is a
    /// typo that leaves the client without the redundancy it was given.
    #[test]
    fn a_fallback_that_repeats_a_node_is_refused() {
        for fallbacks in [
            &["https://SMS01.plant.local/IdentityManager/"][..],
            &["sms02", "https://sms02/identitymanager"],
        ] {
            let mut b = AimClient::builder()
                .authority("sms01.plant.local")
                .client_id("x")
                .client_secret("s");
            for f in fallbacks {
                b = b.fallback_authority(*f);
            }
            let err = b.build().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{fallbacks:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("fallback_authority") && msg.contains("twice"),
                "{msg}"
            );
        }
    }

    #[test]
    fn missing_variables_are_named() {
        for missing in [
            env::AUTHORITY,
            env::CLIENT_ID,
            crate::secret_env::CLIENT_SECRET,
        ] {
            for value in [None, Some(""), Some("   ")] {
                let mut vars: Vec<_> = full().into_iter().filter(|(k, _)| *k != missing).collect();
                if let Some(v) = value {
                    vars.push((missing, v));
                }
                let err = AimClientBuilder::from_lookup(lookup(&vars)).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Config);
                assert!(err.to_string().contains(missing), "{err}");
            }
        }
    }

    #[test]
    fn unreadable_ca_cert_names_the_path() {
        let mut vars = full();
        vars.push((env::CA_CERT, "/nonexistent/pcs-root-ca.pem"));
        let err = AimClientBuilder::from_lookup(lookup(&vars)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/pcs-root-ca.pem"), "{msg}");
        assert!(msg.contains(env::CA_CERT), "{msg}");
    }

    #[test]
    fn ca_cert_file_is_read_and_checked_at_from_env() {
        let dir = std::env::temp_dir().join(format!("aim-token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-a-cert.pem");
        std::fs::write(&path, "hello").unwrap();
        let mut vars = full();
        let path_str = path.to_str().unwrap().to_owned();
        vars.push((env::CA_CERT, &path_str));
        // Refused where the variable is still known, so the error names it.
        let err = AimClientBuilder::from_lookup(lookup(&vars)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let msg = err.to_string();
        assert!(msg.contains("PEM") && msg.contains(env::CA_CERT), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_builder_settings_name_method_and_variable() {
        let cases = [
            (
                AimClient::builder().client_id("x").client_secret("s"),
                ".authority(",
                "AIM_AUTHORITY",
            ),
            (
                AimClient::builder().authority("sms01").client_secret("s"),
                ".client_id(",
                "AIM_CLIENT_ID",
            ),
            (
                AimClient::builder()
                    .authority("sms01")
                    .client_id("  ")
                    .client_secret("s"),
                ".client_id(",
                "AIM_CLIENT_ID",
            ),
            (
                AimClient::builder().authority("sms01").client_id("x"),
                ".client_secret(",
                "AIM_CLIENT_SECRET",
            ),
            (
                AimClient::builder()
                    .authority("sms01")
                    .client_id("x")
                    .client_secret(""),
                ".client_secret(",
                "AIM_CLIENT_SECRET",
            ),
        ];
        for (builder, method, var) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            let msg = err.to_string();
            assert!(msg.contains(method) && msg.contains(var), "{msg}");
        }
    }

    #[test]
    fn other_bad_settings() {
        let ok = || {
            AimClient::builder()
                .authority("sms01")
                .client_id("x")
                .client_secret("s")
        };
        for (builder, words) in [
            (ok().form_param("client_secret", "x"), "override"),
            (ok().form_param("scope", "x"), ".scope("),
            (ok().form_param("", "x"), "empty name"),
            (ok().default_lifetime(Duration::ZERO), "default_lifetime"),
            (ok().connect_timeout(Duration::ZERO), "connect_timeout"),
            (
                ok().token_endpoint("http://sms01/connect/token"),
                "allow_insecure_http",
            ),
            (ok().fallback_authority("ftp://sms02"), "fallback_authority"),
            (
                ok().root_certificate_pem(
                    "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
                ),
                "PEM",
            ),
            (ok().root_certificate_pem(""), "no PEM certificate"),
        ] {
            let err = builder.build().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{words}");
            assert!(err.to_string().contains(words), "{words}: {err}");
        }
        // Fine: resource/audience are ordinary parameters; insecure http with the opt-in.
        ok().resource("urn:mes").audience("mes").build().unwrap();
        ok().authority("http://sms01")
            .allow_insecure_http(true)
            .build()
            .unwrap();
    }

    #[test]
    fn secret_is_redacted_everywhere() {
        let builder = AimClient::builder()
            .authority("sms01")
            .client_id("id")
            .client_secret(SECRET);
        let shown = format!("{builder:?}");
        assert!(!shown.contains("w0rd"), "{shown}");
        let x = exchanger(&builder);
        let aim = builder.build().unwrap();
        let shown = format!("{aim:?} {x:?}");
        assert!(!shown.contains("w0rd"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    #[test]
    fn userinfo_in_a_configured_url_is_not_printed() {
        let b = AimClient::builder()
            .authority("https://admin:hunter2@sms01/identitymanager")
            .fallback_authority("admin:hunter2@sms02")
            .token_endpoint("https://u:hunter2@sms01/connect/token?x=a@b");
        let shown = format!("{b:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("https://[redacted]@sms01/identitymanager"),
            "{shown}"
        );
        assert_eq!(
            without_userinfo("https://sms01/x?mail=a@b"),
            "https://sms01/x?mail=a@b"
        );
        let err = b.client_id("x").client_secret("y").build().unwrap_err();
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    }

    #[test]
    fn fallback_authorities_become_more_sources() {
        use crate::cache::TokenSource;
        let builder = AimClient::builder()
            .authority("sms01")
            .fallback_authority("https://SMS02/IdentityManager/")
            .fallback_authority("sms03:8443")
            .client_id("id")
            .client_secret("s");
        let x = exchanger(&builder);
        builder.build().unwrap();
        assert_eq!(x.authority_count(), 3);
        assert_eq!(x.authority_label(0), "https://sms01/identitymanager");
        assert_eq!(x.authority_label(1), "https://sms02/identitymanager");
        assert_eq!(x.authority_label(2), "https://sms03:8443/identitymanager");
    }
}
