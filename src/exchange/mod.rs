//! One token request: discovery when needed, the client-credentials form,
//! the answer parsed into a token or a classified error. No retries here:
//! the cache owns retries, backoff and failover.

pub(crate) mod response;
pub(crate) mod scrub;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use secrecy::ExposeSecret;
use tracing::Instrument as _;
use url::Url;

use crate::authority::{parse_endpoint, Authority};
use crate::cache::{BoxFuture, TokenSource};
use crate::client::AimClientBuilder;
use crate::clock::Clock;
use crate::credentials::{ClientAuthMethod, ClientCredentials};
use crate::discovery::{DiscoveryCache, DiscoveryRequest, ProviderMetadata};
use crate::error::{Error, ErrorKind, Result};
use crate::http::{
    build_client, from_reqwest, read_capped, secret_header, zeroized_on_drop, HttpConfig,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, MAX_BODY_BYTES,
};
use crate::token::AccessToken;

use self::response::{parse_token_answer, retry_after_and_location, Answer, TokenContext};
use self::scrub::Scrubber;

/// Lifetime of a token whose answer and JWT do not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Form parameters the exchange sets itself; `form_param` may not override them.
const RESERVED_PARAMS: [&str; 4] = ["grant_type", "client_id", "client_secret", "scope"];

/// Everything one token request needs, checked.
pub(crate) struct ExchangeConfig {
    /// Index 0 is the primary; the rest are `fallback_authority` entries.
    pub(crate) authorities: Vec<Authority>,
    /// `.token_endpoint(..)`: used for the primary authority instead of discovery.
    pub(crate) token_endpoint: Option<Url>,
    pub(crate) credentials: ClientCredentials,
    pub(crate) scopes: Vec<String>,
    pub(crate) form_params: Vec<(String, String)>,
    pub(crate) default_lifetime: Duration,
    pub(crate) allow_insecure_http: bool,
    pub(crate) http: HttpConfig,
    pub(crate) clock: Arc<dyn Clock>,
}

impl ExchangeConfig {
    /// Checks the builder's settings; every error says what to fix.
    pub(crate) fn from_builder(builder: &AimClientBuilder, clock: Arc<dyn Clock>) -> Result<Self> {
        let allow = builder.allow_insecure_http;
        let mut authorities = vec![primary_authority(builder)?];
        for fallback in &builder.fallback_authorities {
            authorities.push(
                Authority::parse(fallback, allow).map_err(|e| e.context("fallback_authority"))?,
            );
        }
        let token_endpoint = builder
            .token_endpoint
            .as_deref()
            .map(|url| parse_endpoint(url, "token endpoint", allow))
            .transpose()?;
        let client_id = builder
            .client_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                Error::config(
                    "no client ID: set .client_id(\"...\") or the AIM_CLIENT_ID environment variable to the ID registered with AIM",
                )
            })?;
        let secret = builder
            .client_secret
            .clone()
            .filter(|s| !s.expose_secret().is_empty())
            .ok_or_else(|| {
                Error::config(
                    "no client secret: set .client_secret(..) or the AIM_CLIENT_SECRET environment variable to the secret registered with AIM",
                )
            })?;
        let scopes: Vec<String> = builder
            .scopes
            .iter()
            .flat_map(|s| s.split_whitespace())
            .map(str::to_owned)
            .collect();
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
            credentials: ClientCredentials::new(client_id.to_owned(), secret, builder.auth_method),
            scopes,
            form_params: builder.form_params.clone(),
            default_lifetime,
            allow_insecure_http: allow,
            http: http_config(builder)?,
            clock,
        })
    }
}

/// The builder's primary authority, parsed. Shared with registration, which
/// talks to the same AIM without client credentials.
pub(crate) fn primary_authority(builder: &AimClientBuilder) -> Result<Authority> {
    let primary = builder.authority.as_deref().ok_or_else(|| {
        Error::config(
            "no authority: set .authority(\"sms01.plant.local\") or the AIM_AUTHORITY environment variable",
        )
    })?;
    Authority::parse(primary, builder.allow_insecure_http)
}

/// The builder's trust, timeouts and redirect policy as an HTTP client
/// configuration, checked. Shared with registration.
pub(crate) fn http_config(builder: &AimClientBuilder) -> Result<HttpConfig> {
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
    })
}

impl fmt::Debug for ExchangeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExchangeConfig")
            .field(
                "authorities",
                &self
                    .authorities
                    .iter()
                    .map(Authority::base_url)
                    .collect::<Vec<_>>(),
            )
            .field(
                "token_endpoint",
                &self.token_endpoint.as_ref().map(Url::as_str),
            )
            .field("credentials", &self.credentials)
            .field("scopes", &self.scopes)
            .field("form_params", &self.form_params)
            .field("default_lifetime", &self.default_lifetime)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

/// Sends token requests, one per [`TokenSource::fetch`].
pub(crate) struct Exchanger {
    config: ExchangeConfig,
    http: reqwest::Client,
    discovery: Vec<DiscoveryCache>,
    scrubber: Scrubber,
}

impl Exchanger {
    /// Builds the HTTP client (TLS roots, timeouts). No network I/O.
    pub(crate) fn new(config: ExchangeConfig) -> Result<Self> {
        let http = build_client(&config.http)?;
        let discovery = config
            .authorities
            .iter()
            .map(|_| DiscoveryCache::default())
            .collect();
        let scrubber = Scrubber::new(config.credentials.secret_spellings());
        Ok(Exchanger {
            config,
            http,
            discovery,
            scrubber,
        })
    }

    /// The primary authority's base URL.
    pub(crate) fn primary_label(&self) -> &str {
        self.config.authorities[0].base_url()
    }

    async fn discover(&self, index: usize) -> Result<Arc<ProviderMetadata>> {
        let (authority, cache) = self.authority(index)?;
        let req = DiscoveryRequest {
            http: &self.http,
            authority,
            allow_insecure_http: self.config.allow_insecure_http,
            scrubber: &self.scrubber,
            now: self.config.clock.now(),
        };
        cache.get(&req).await
    }

    fn authority(&self, index: usize) -> Result<(&Authority, &DiscoveryCache)> {
        match (
            self.config.authorities.get(index),
            self.discovery.get(index),
        ) {
            (Some(a), Some(c)) => Ok((a, c)),
            _ => Err(Error::config(format!(
                "there is no authority #{index}; {} are configured",
                self.config.authorities.len()
            ))),
        }
    }

    /// The token endpoint of authority `index`: the configured one, or discovery's.
    async fn token_endpoint(&self, index: usize) -> Result<Url> {
        if index == 0 {
            if let Some(url) = &self.config.token_endpoint {
                return Ok(url.clone());
            }
        }
        let metadata = self.discover(index).await?;
        // Checked when the metadata was parsed.
        Url::parse(&metadata.token_endpoint).map_err(|e| {
            Error::new(
                ErrorKind::InvalidResponse,
                format!("discovery advertises an invalid token endpoint: {e}"),
            )
        })
    }

    /// One token request against authority `index`, with its span.
    async fn fetch_one(&self, index: usize) -> Result<AccessToken> {
        let label = self.authority_label(index);
        let span = tracing::info_span!(
            "aim_token.exchange",
            authority = label,
            client_id = self.config.credentials.client_id.as_str(),
            status = tracing::field::Empty,
            outcome = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = async {
            let endpoint = self.token_endpoint(index).await?;
            let result = self.request(index, &endpoint).await;
            if let Err(err) = &result {
                // The server may have moved: look again next time. A §5.2
                // answer proves the endpoint is right.
                if err.kind() != ErrorKind::OAuth {
                    if let Ok((_, cache)) = self.authority(index) {
                        cache.invalidate();
                    }
                }
            }
            result
        }
        .instrument(span.clone())
        .await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        span.record("latency_ms", latency_ms);
        match &result {
            Ok(token) => {
                span.record("outcome", "ok");
                span.in_scope(|| {
                    tracing::debug!(
                        lifetime_s = token.lifetime().as_secs(),
                        scopes = %token.scopes().join(" "),
                        "token issued"
                    )
                });
            }
            Err(err) => {
                span.record("outcome", tracing::field::debug(err.kind()));
                if let Some(status) = err.status() {
                    span.record("status", status);
                }
                span.in_scope(|| tracing::debug!(error = %err, "token request failed"));
            }
        }
        result
    }

    /// POSTs the client-credentials form to `endpoint` and parses the answer.
    async fn request(&self, index: usize, endpoint: &Url) -> Result<AccessToken> {
        let creds = &self.config.credentials;
        let body = creds.token_request_body(&self.config.scopes, &self.config.form_params);
        let mut request = self
            .http
            .post(endpoint.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(zeroized_on_drop(body));
        if creds.method == ClientAuthMethod::Basic {
            let value = secret_header(creds.basic_authorization()).map_err(|_| {
                Error::config("the client ID or secret cannot be put in an Authorization header")
            })?;
            request = request.header(AUTHORIZATION, value);
        }
        let url = endpoint.as_str();
        let response = request.send().await.map_err(|e| from_reqwest(e, url))?;
        let status = response.status().as_u16();
        tracing::Span::current().record("status", status);
        let now = self.config.clock.now();
        let (retry_after, location) = retry_after_and_location(response.headers(), now);
        let content_type = response::content_type(response.headers());
        let body = read_capped(response, MAX_BODY_BYTES, url)
            .await
            .map_err(|e| e.with_retry_after(retry_after))?;
        let answer = Answer {
            status,
            retry_after,
            location,
            content_type,
            body: &body,
            body_len: None,
        };
        let ctx = TokenContext {
            now,
            requested_scopes: &self.config.scopes,
            default_lifetime: self.config.default_lifetime,
            authority: self.authority_label(index),
            url,
        };
        parse_token_answer(&answer, &ctx, &self.scrubber)
    }
}

impl fmt::Debug for Exchanger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchanger")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TokenSource for Exchanger {
    fn authority_count(&self) -> usize {
        self.config.authorities.len()
    }

    fn authority_label(&self, index: usize) -> &str {
        self.config
            .authorities
            .get(index)
            .map_or("?", Authority::base_url)
    }

    fn fetch(&self, index: usize) -> BoxFuture<'_, Result<AccessToken>> {
        Box::pin(self.fetch_one(index))
    }
}

#[cfg(all(test, feature = "emulator"))]
mod tests {
    use super::*;
    use crate::emulator::AimEmulator;

    fn exchanger(emu: &AimEmulator) -> Exchanger {
        let builder = emu.client_builder().scope(AimEmulator::DEFAULT_SCOPE);
        let config = ExchangeConfig::from_builder(&builder, Arc::new(crate::SystemClock)).unwrap();
        Exchanger::new(config).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_fetches_share_one_discovery() {
        let emu = AimEmulator::start().await.unwrap();
        let x = Arc::new(exchanger(&emu));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let x = x.clone();
                tokio::spawn(async move { x.fetch(0).await })
            })
            .collect();
        for t in tasks {
            let token = t.await.unwrap().unwrap();
            assert_eq!(token.authority(), emu.authority());
            assert_eq!(token.scopes(), [AimEmulator::DEFAULT_SCOPE]);
        }
        let c = emu.counters();
        assert_eq!(
            (c.discovery, c.token, c.tokens_issued),
            (1, 50, 50),
            "{c:?}"
        );
    }

    #[tokio::test]
    async fn discovery_reads_every_endpoint_and_is_cached() {
        let emu = AimEmulator::builder()
            .initial_access_token("iat")
            .start()
            .await
            .unwrap();
        let x = exchanger(&emu);
        let m = x.discover(0).await.unwrap();
        assert!(m.discovered);
        assert_eq!(m.token_endpoint, emu.token_endpoint());
        assert!(m.jwks_uri.is_some(), "{m:?}");
        assert!(m.introspection_endpoint.is_some(), "{m:?}");
        assert_eq!(
            m.registration_endpoint,
            Some(format!("{}/connect/register", emu.authority()))
        );
        assert!(m
            .token_endpoint_auth_methods_supported
            .iter()
            .any(|a| a == "client_secret_basic"));
        // Cached: the token request reuses it.
        x.fetch(0).await.unwrap();
        assert_eq!(emu.counters().discovery, 1);
        let err = x.discover(7).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }
}
