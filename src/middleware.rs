//! [`BearerAuth`]: a [reqwest-middleware](reqwest_middleware) middleware that
//! attaches the AIM access token to every request.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use aim_token::{middleware::BearerAuth, AimClient};
//!
//! let aim = AimClient::from_env()?;
//! let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(BearerAuth::new(aim).allow_host("mes01.plant.local"))
//!     .build();
//! let entities = http
//!     .get("https://mes01.plant.local/mesmw/api/v3/entity")
//!     .send()
//!     .await?
//!     .text()
//!     .await?;
//! println!("{entities}");
//! # Ok(()) }
//! ```
//!
//! Rules:
//! - A request that already carries `Authorization` is passed on untouched.
//! - The token goes only where you said: the hosts given to
//!   [`allow_host`](BearerAuth::allow_host) /
//!   [`allowed_hosts`](BearerAuth::allowed_hosts), or every https host after
//!   an explicit [`allow_any_https_host`](BearerAuth::allow_any_https_host).
//!   With neither, every request fails with an error naming both calls: a
//!   client shared with other APIs must not hand them the AIM token.
//! - Whatever the list, only over https, or plain http to loopback. Anything
//!   else fails with an [`ErrorKind::Refused`](crate::ErrorKind::Refused)
//!   error before a byte is sent. The reqwest client's own proxy settings
//!   are out of its sight: give plain-http loopback hosts `NO_PROXY`
//!   (`127.0.0.1,localhost`), or a proxy receives the token in clear text.
//! - Fail closed: when no token can be had, the request is not sent; the
//!   error is `reqwest_middleware::Error::Middleware` wrapping an
//!   [`aim_token::Error`](crate::Error) that says why (get it back with
//!   `anyhow::Error::downcast_ref`).
//! - A 401 that no fresh token fixes is passed on as it is: one whose
//!   `WWW-Authenticate` asks only for another scheme (IIS's `Negotiate`)
//!   or says `Bearer error="insufficient_scope"`.
//! - On another 401 the token is renewed (many requests rejecting the same
//!   token cause one refresh; a token younger than `min_refresh_interval`
//!   is not renewed) and the request is retried once with a fresh
//!   token when its body can be replayed ([`reqwest::Request::try_clone`]);
//!   when the fresh token is refused too, the call fails with an
//!   `Unauthorized` error and 401 renewals stop for
//!   [`unauthorized_cooldown`](crate::AimClientBuilder::unauthorized_cooldown).
//!   If no fresh token can be had for the
//!   retry, the call fails with that error rather than resending a token
//!   that was just rejected. A request whose body cannot be replayed gets
//!   its 401 back and the token is invalidated for the next request; a 401
//!   for that next token, before any request with it succeeded, starts the
//!   cool-down, as a refused retry does.

use std::fmt;
use std::sync::Arc;

use http::Extensions;
use reqwest::header::AUTHORIZATION;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::bearer::{self, Destinations, HeaderCache};
use crate::client::AimClient;
use crate::token::AccessToken;

/// Attaches `Authorization: Bearer <AIM token>` to outgoing reqwest requests.
///
/// See the [module documentation](self) for the rules it follows.
#[derive(Clone)]
pub struct BearerAuth {
    aim: AimClient,
    destinations: Destinations,
    header: Arc<HeaderCache>,
}

impl BearerAuth {
    /// A middleware taking tokens from `aim`. It sends the token nowhere
    /// until told where: call [`allow_host`](Self::allow_host) (or
    /// [`allow_any_https_host`](Self::allow_any_https_host)).
    pub fn new(aim: AimClient) -> Self {
        BearerAuth {
            aim,
            destinations: Destinations::default(),
            header: Arc::default(),
        }
    }

    /// Sends the token only to these hosts (replacing any earlier list).
    /// Entries are host names or IP addresses compared case-insensitively,
    /// without port; `*.plant.local` allows every subdomain of `plant.local`.
    #[must_use]
    pub fn allowed_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.destinations.allow_only(hosts);
        self
    }

    /// Adds one host to the allow list (see [`allowed_hosts`](Self::allowed_hosts)).
    #[must_use]
    pub fn allow_host(mut self, host: impl AsRef<str>) -> Self {
        self.destinations.allow(host.as_ref());
        self
    }

    /// Sends the token to every https host (and plain http only to
    /// loopback). Only for a client that talks to nothing but servers
    /// trusting this AIM: a client shared with other APIs would hand them
    /// the token. A later [`allow_host`](Self::allow_host) narrows it to
    /// the listed hosts.
    #[must_use]
    pub fn allow_any_https_host(mut self) -> Self {
        self.destinations.allow_any_https();
        self
    }

    async fn bearer(&self, req: &mut Request) -> reqwest_middleware::Result<AccessToken> {
        let token = self
            .aim
            .token()
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        self.attach(req, &token)?;
        Ok(token)
    }

    fn attach(&self, req: &mut Request, token: &AccessToken) -> reqwest_middleware::Result<()> {
        let value = self
            .header
            .value(token)
            .map_err(reqwest_middleware::Error::middleware)?;
        req.headers_mut().insert(AUTHORIZATION, value);
        Ok(())
    }
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("aim", &self.aim)
            .field("allowed_hosts", &self.destinations)
            .finish()
    }
}

#[async_trait::async_trait]
impl Middleware for BearerAuth {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if req.headers().contains_key(AUTHORIZATION) {
            // The caller chose its own credentials; not ours to replace.
            return next.run(req, extensions).await;
        }
        let url = req.url();
        self.destinations
            .check(Some(url.scheme()), url.host_str())
            .map_err(reqwest_middleware::Error::middleware)?;

        // Taken before sending because sending consumes the request (and
        // before the header goes in, so the copy is cheaper); `None` for
        // streaming bodies, which therefore are not retried.
        let replay = req.try_clone();
        // Where the token goes (the client may follow a redirect elsewhere):
        // the copy's URL, so the common case copies nothing more.
        let own_url;
        let sent_to = match &replay {
            Some(copy) => copy.url(),
            None => {
                own_url = req.url().clone();
                &own_url
            }
        };
        let token = self.bearer(&mut req).await?;
        let response = next.clone().run(req, extensions).await?;
        let refusal = bearer::refusal_of(&response, sent_to);
        if refusal != Some(bearer::Refusal::Token) {
            // Served, or refused for a reason no fresh token fixes.
            if response.status().is_success() {
                self.aim.accepted(&token);
            }
            return Ok(response);
        }

        let Some(mut retry) = replay else {
            self.aim.refused_unretried(&token);
            tracing::debug!(
                "resource server rejected the token (401); body not replayable, not retrying"
            );
            return Ok(response);
        };
        let fresh = self
            .aim
            .renew_refused(&token)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        self.attach(&mut retry, &fresh)?;
        tracing::debug!("resource server rejected the token (401); retrying once with a fresh one");
        drop(response);
        let sent_to = retry.url().clone();
        let response = next.run(retry, extensions).await?;
        if bearer::refusal_of(&response, &sent_to).is_some() {
            return Err(reqwest_middleware::Error::middleware(
                self.aim.fresh_refused(&fresh),
            ));
        }
        if response.status().is_success() {
            self.aim.accepted(&fresh);
        }
        Ok(response)
    }
}
