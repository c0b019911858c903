//! One token request: discovery when needed, the client-credentials form,
//! the answer parsed into a token or a classified error. No retries here:
//! the cache owns retries, backoff and failover.

pub(crate) mod response;
pub(crate) mod scrub;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use tracing::Instrument as _;
use url::Url;

use crate::authority::Authority;
use crate::cache::{BoxFuture, TokenSource};
use crate::clock::Clock;
use crate::credentials::{ClientAuthMethod, ClientCredentials};
use crate::discovery::{DiscoveryCache, DiscoveryRequest, ProviderMetadata};
use crate::error::{Error, ErrorKind, Result};
use crate::http::{
    build_client, build_client_for, from_reqwest, goes_direct, read_capped, secret_header,
    zeroized_on_drop, HttpConfig, MAX_BODY_BYTES,
};
use crate::token::AccessToken;

use self::response::{parse_token_answer, retry_after_and_location, Answer, TokenContext};
use self::scrub::Scrubber;

/// Everything one token request needs, checked (built by `crate::config`).
pub(crate) struct ExchangeConfig {
    /// Index 0 is the primary; the rest are `fallback_authority` entries.
    pub(crate) authorities: Vec<Authority>,
    /// `.token_endpoint(..)`: used for the primary authority instead of discovery.
    pub(crate) token_endpoint: Option<Url>,
    /// `.expected_issuer(..)`: an issuer every authority may report besides
    /// its own (fallback nodes also accept the primary's).
    pub(crate) expected_issuer: Option<Authority>,
    pub(crate) credentials: ClientCredentials,
    pub(crate) scopes: Vec<String>,
    pub(crate) form_params: Vec<(String, String)>,
    pub(crate) default_lifetime: Duration,
    pub(crate) allow_insecure_http: bool,
    pub(crate) http: HttpConfig,
    pub(crate) clock: Arc<dyn Clock>,
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
    /// For the origins that must not go through a proxy
    /// ([`goes_direct`]); built only when one is configured.
    direct: Option<reqwest::Client>,
    discovery: Vec<DiscoveryCache>,
    scrubber: Scrubber,
}

impl Exchanger {
    /// Builds the HTTP client (TLS roots, timeouts). No network I/O.
    pub(crate) fn new(config: ExchangeConfig) -> Result<Self> {
        let http = build_client(&config.http)?;
        // Discovery's endpoints share their authority's origin, so these
        // are all the origins a request goes to.
        let direct_origin = config
            .authorities
            .iter()
            .filter_map(|a| Url::parse(a.base_url()).ok())
            .chain(config.token_endpoint.clone())
            .find(goes_direct);
        let direct = match direct_origin {
            Some(origin) => Some(build_client_for(&config.http, &origin)?),
            None => None,
        };
        let discovery = config
            .authorities
            .iter()
            .map(|_| DiscoveryCache::default())
            .collect();
        let scrubber = Scrubber::new(config.credentials.secret_spellings());
        Ok(Exchanger {
            config,
            http,
            direct,
            discovery,
            scrubber,
        })
    }

    /// The client for requests to `url`: direct where [`goes_direct`] says.
    fn client_for(&self, url: &str) -> &reqwest::Client {
        match &self.direct {
            Some(direct) if Url::parse(url).is_ok_and(|u| goes_direct(&u)) => direct,
            _ => &self.http,
        }
    }

    /// The primary authority's base URL.
    pub(crate) fn primary_label(&self) -> &str {
        self.config.authorities[0].base_url()
    }

    async fn discover(&self, index: usize) -> Result<Arc<ProviderMetadata>> {
        let (authority, cache) = self.authority(index)?;
        let req = DiscoveryRequest {
            http: self.client_for(authority.base_url()),
            authority,
            scrubber: &self.scrubber,
            now: self.config.clock.now(),
            also_issuer: self
                .config
                .expected_issuer
                .as_ref()
                .or_else(|| (index > 0).then(|| &self.config.authorities[0])),
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
        let metadata = match self.discover(index).await {
            Ok(metadata) => metadata,
            // The node answered, but not with usable discovery (a 5xx, an
            // HTML error page): its fixed route may still work.
            Err(err) if err.status().is_some_and(|s| !(200..300).contains(&s)) => {
                let (authority, _) = self.authority(index)?;
                let fixed = authority.default_token_endpoint();
                tracing::warn!(
                    authority = authority.base_url(),
                    error = %err,
                    "discovery failed; trying AIM's fixed token endpoint {fixed}"
                );
                return Url::parse(&fixed).map_err(|e| Error::config(format!("{fixed}: {e}")));
            }
            Err(err) => return Err(err),
        };
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
                // answer proves the endpoint is right, and a transient
                // failure (a node down, a 503) says nothing about it: the
                // metadata is kept, so each retry costs one request.
                if err.kind() != ErrorKind::OAuth && !err.is_transient() {
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
            .client_for(endpoint.as_str())
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
        // The lifetime counts from before the request: the server started
        // it no earlier than this, and a slow answer must not stretch it.
        let sent_at = self.config.clock.now();
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
            now: sent_at,
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
        let config = crate::config::ClientConfig::from_builder(&builder).unwrap();
        Exchanger::new(config.exchange).unwrap()
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
