//! The builder's settings, checked and turned into the plain configurations
//! the parts below the client receive: data flows one way, builder ->
//! config -> exchange / cache / registration, and nothing below `client.rs`
//! reads the builder.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::authority::{parse_endpoint, Authority};
use crate::cache::CacheConfig;
use crate::client::AimClientBuilder;
use crate::clock::{Clock, SystemClock};
use crate::credentials::ClientCredentials;
use crate::error::{Error, Result};
use crate::exchange::ExchangeConfig;
use crate::http::{HttpConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};

/// Lifetime of a token whose answer and JWT do not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Form parameters the exchange sets itself; `form_param` may not override them.
const RESERVED_PARAMS: [&str; 4] = ["grant_type", "client_id", "client_secret", "scope"];

/// Everything an `AimClient` is made of, checked.
#[derive(Debug)]
pub(crate) struct ClientConfig {
    pub(crate) exchange: ExchangeConfig,
    pub(crate) cache: CacheConfig,
    /// The injected clock; `None`: the cache reads the coarse system clock
    /// inline on its hot path (the exchange gets `SystemClock`).
    pub(crate) clock: Option<Arc<dyn Clock>>,
}

impl ClientConfig {
    /// Checks the builder's settings; every error says what to fix.
    pub(crate) fn from_builder(builder: &AimClientBuilder) -> Result<Self> {
        let clock: Arc<dyn Clock> = builder
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(SystemClock));
        let cache = builder.cache.clone();
        cache.validate()?;
        Ok(ClientConfig {
            exchange: exchange_config(builder, clock)?,
            cache,
            clock: builder.clock.clone(),
        })
    }
}

/// Where and how to reach the primary AIM without client credentials:
/// what registration receives.
#[derive(Debug)]
pub(crate) struct ConnectionConfig {
    pub(crate) authority: Authority,
    pub(crate) allow_insecure_http: bool,
    pub(crate) http: HttpConfig,
}

impl ConnectionConfig {
    /// The builder's authority, trust and timeouts, checked.
    pub(crate) fn from_builder(builder: &AimClientBuilder) -> Result<Self> {
        Ok(ConnectionConfig {
            authority: primary_authority(builder)?,
            allow_insecure_http: builder.allow_insecure_http,
            http: http_config(builder)?,
        })
    }
}

/// The exchange's part of the builder, checked; every error says what to fix.
fn exchange_config(builder: &AimClientBuilder, clock: Arc<dyn Clock>) -> Result<ExchangeConfig> {
    let allow = builder.allow_insecure_http;
    let mut authorities = vec![primary_authority(builder)?];
    for fallback in &builder.fallback_authorities {
        let fallback =
            Authority::parse(fallback, allow).map_err(|e| e.context("fallback_authority"))?;
        // A typo that leaves the client without the redundancy it was given.
        if authorities.contains(&fallback) {
            return Err(Error::config(format!(
                "fallback_authority {fallback} names an AIM node twice (the primary or another fallback): give each redundant node once"
            )));
        }
        authorities.push(fallback);
    }
    let token_endpoint = builder
        .token_endpoint
        .as_deref()
        .map(|url| parse_endpoint(url, "token endpoint", allow))
        .transpose()?;
    let expected_issuer = builder
        .expected_issuer
        .as_deref()
        .map(|issuer| Authority::parse(issuer, allow).map_err(|e| e.context("expected_issuer")))
        .transpose()?;
    let client_id = builder
        .client_id
        .as_deref()
        .map(client_id_as_configured)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            Error::config(
                "no client ID: set .client_id(\"...\") or the AIM_CLIENT_ID environment variable to the ID registered with AIM",
            )
        })?;
    let secret = builder
        .client_secret
        .clone()
        // Only whitespace is no secret either (a stray newline from a file).
        .filter(|s| !s.expose_secret().trim().is_empty())
        .ok_or_else(|| {
            Error::config(
                "no client secret: set .client_secret(..) or the AIM_CLIENT_SECRET environment variable to the secret registered with AIM",
            )
        })?;
    let scopes = scope_set(builder.scopes.iter().flat_map(|s| s.split_whitespace()));
    for (name, _) in &builder.form_params {
        if name.trim().is_empty() {
            return Err(Error::config(
                "form_param with an empty name: give the parameter's name",
            ));
        }
        if RESERVED_PARAMS.contains(&name.as_str()) {
            return Err(Error::config(format!(
                "form_param(\"{name}\", ..) would override what the client sets itself: use .scope(..), .client_id(..) or .client_secret(..) instead"
            )));
        }
    }
    let default_lifetime = builder.default_lifetime.unwrap_or(DEFAULT_LIFETIME);
    if default_lifetime.is_zero() {
        return Err(Error::config("default_lifetime must be greater than zero"));
    }
    Ok(ExchangeConfig {
        authorities,
        token_endpoint,
        expected_issuer,
        credentials: ClientCredentials::new(client_id.to_owned(), secret, builder.auth_method),
        scopes,
        form_params: builder.form_params.clone(),
        default_lifetime,
        allow_insecure_http: allow,
        http: http_config(builder)?,
        clock,
    })
}

/// The client ID as configured, without surrounding whitespace and the
/// quotes cmd.exe's `set AIM_CLIENT_ID="..."` keeps (no client ID AIM holds
/// is wrapped in them).
pub(crate) fn client_id_as_configured(id: &str) -> &str {
    crate::env_value::unquoted(id, &['"'])
}

/// A list of scopes as `AIM_SCOPE` (and the CLI's `--scope`) give it:
/// separated by commas or whitespace.
pub(crate) fn split_scope_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(|c: char| c == ',' || c.is_whitespace())
}

/// The scopes to request: each once, in order (the scope is a set, RFC 6749
/// §3.3), without the `"` that cmd.exe's `set AIM_SCOPE="a b"` keeps (no
/// scope-token holds one).
pub(crate) fn scope_set<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut set: Vec<String> = Vec::new();
    for scope in scopes.into_iter().map(|s| s.trim_matches('"')) {
        if !scope.is_empty() && !set.iter().any(|s| s == scope) {
            set.push(scope.to_owned());
        }
    }
    set
}

/// The builder's primary authority, parsed. Registration talks to the
/// same AIM without client credentials.
fn primary_authority(builder: &AimClientBuilder) -> Result<Authority> {
    let primary = builder.authority.as_deref().ok_or_else(|| {
        Error::config(
            "no authority: set .authority(\"sms01.plant.local\") or the AIM_AUTHORITY environment variable",
        )
    })?;
    Authority::parse(primary, builder.allow_insecure_http).map_err(|e| {
        // From the environment: say which variable to fix.
        match builder.authority_variable {
            Some(variable) => e.context(variable),
            None => e,
        }
    })
}

/// The builder's trust, timeouts and redirect policy as an HTTP client
/// configuration, checked.
fn http_config(builder: &AimClientBuilder) -> Result<HttpConfig> {
    let connect_timeout = builder.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let request_timeout = builder.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
    if connect_timeout.is_zero() || request_timeout.is_zero() {
        return Err(Error::config(
            "connect_timeout and request_timeout must be greater than zero",
        ));
    }
    Ok(HttpConfig {
        root_certificates: builder.root_certificates.clone(),
        danger_accept_invalid_certs: builder.danger_accept_invalid_certs,
        connect_timeout,
        request_timeout,
        proxy: builder.proxy.clone(),
    })
}
