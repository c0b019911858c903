//! [`BearerAuthLayer`]: a tower [`Layer`] that attaches the AIM access token
//! to every request of a hyper, tonic or other tower-based client.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use aim_token::{layer::BearerAuthLayer, AimClient};
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{Layer, ServiceExt};
//!
//! let aim = AimClient::from_env()?;
//! // In production, build it with an https connector such as hyper-rustls.
//! let hyper = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let client = BearerAuthLayer::new(aim)
//!     .allow_host("mes01.plant.local")
//!     .clone_bodies() // Full<Bytes> is Clone: any request may be retried once after a 401
//!     .layer(hyper);
//! let request = http::Request::get("https://mes01.plant.local/mesmw/api/v3/entity")
//!     .body(Full::new(Bytes::new()))?;
//! let response = client.oneshot(request).await?;
//! println!("{}", response.status());
//! # Ok(()) }
//! ```
//!
//! The rules are those of the reqwest middleware: an existing
//! `Authorization` header is left alone; the token goes only over https (or
//! http to loopback) and only to the allowed hosts
//! ([`allow_host`](BearerAuthLayer::allow_host), or every https host after
//! [`allow_any_https_host`](BearerAuthLayer::allow_any_https_host); with
//! neither, requests fail with an error naming both); when no token can be had
//! the request is not sent ([`BearerError::Auth`]); a 401 renews the
//! token and the request is retried once with a fresh one **if its body can
//! be replayed**. When the fresh token is refused too, the call fails with
//! an `Unauthorized` [`BearerError::Auth`] and 401 renewals stop for
//! [`unauthorized_cooldown`](crate::AimClientBuilder::unauthorized_cooldown);
//! a token younger than `min_refresh_interval` is not renewed either, nor
//! is one refused by a 401 that no fresh token fixes (a `WWW-Authenticate`
//! asking only for another scheme, or `insufficient_scope`).
//!
//! # Which bodies are replayed
//!
//! A body is consumed when it is sent, so a retry needs a second copy made
//! beforehand. As in `tower-http`'s `FollowRedirect`, bodies whose
//! [`size_hint`](http_body::Body::size_hint) is exactly zero (GET, DELETE)
//! are recreated with `B::default()` — hence the `B: Default` bound — and
//! others are copied by a [`ReplayBody`] policy: [`EmptyBodies`] (the
//! default) copies nothing, [`CloneBodies`] clones `B: Clone` bodies such as
//! `Full<Bytes>` or `String`, and your own policy or closure can copy any
//! body type that knows how. A body that cannot be copied is sent once; its
//! 401 still invalidates the token, so the next request gets a fresh one,
//! and a 401 for that fresh one, before any request with it succeeded,
//! starts the `unauthorized_cooldown` as a refused retry does (a MES refusing every token costs no token request
//! per upload).
//!
//! # Redirects
//!
//! hyper follows none. A redirect-following service (tower-http's
//! `FollowRedirect`) belongs *outside* this layer, so that every hop is
//! checked against the allowed hosts. Below it, only the first hop is:
//! its standard policy drops `Authorization` on a cross-origin redirect,
//! but a policy without `FilterCredentials` resends the token wherever a
//! redirect points.
//!
//! # Relative URIs
//!
//! Some clients (tonic's `Channel`) add scheme and host below the layer, so
//! requests reach it with a path-only URI. The layer refuses those unless
//! you tell it where they go with [`origin`](BearerAuthLayer::origin).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response, Uri};
use http_body::Body;
use tower::{Layer, Service};

use crate::bearer::{self, Destinations, HeaderCache};
use crate::client::AimClient;
use crate::error::{Error, ErrorKind};
use crate::token::AccessToken;

/// Decides whether (and how) a request body can be copied for a retry after
/// a 401. Empty bodies never reach it: they are recreated with `B::default()`.
pub trait ReplayBody<B> {
    /// A copy of `body` to send again, or `None` if it cannot be replayed.
    fn clone_body(&self, body: &B) -> Option<B>;
}

/// Replays only empty bodies: the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyBodies;

impl<B> ReplayBody<B> for EmptyBodies {
    fn clone_body(&self, _body: &B) -> Option<B> {
        None
    }
}

/// Replays every body by cloning it (`B: Clone`, e.g. `Full<Bytes>`, `String`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneBodies;

impl<B: Clone> ReplayBody<B> for CloneBodies {
    fn clone_body(&self, body: &B) -> Option<B> {
        Some(body.clone())
    }
}

impl<B, F> ReplayBody<B> for F
where
    F: Fn(&B) -> Option<B>,
{
    fn clone_body(&self, body: &B) -> Option<B> {
        self(body)
    }
}

/// A [`Layer`] producing [`BearerAuth`] services. See the [module
/// documentation](self).
#[derive(Clone)]
pub struct BearerAuthLayer<P = EmptyBodies> {
    config: Config,
    replay: P,
}

#[derive(Clone)]
struct Config {
    aim: AimClient,
    destinations: Destinations,
    origin: Option<(String, String)>,
    header: Arc<HeaderCache>,
}

impl BearerAuthLayer {
    /// A layer taking tokens from `aim`, replaying only empty bodies. It
    /// sends the token nowhere until told where: call
    /// [`allow_host`](Self::allow_host) (or
    /// [`allow_any_https_host`](Self::allow_any_https_host)).
    pub fn new(aim: AimClient) -> Self {
        BearerAuthLayer {
            config: Config {
                aim,
                destinations: Destinations::default(),
                origin: None,
                header: Arc::default(),
            },
            replay: EmptyBodies,
        }
    }
}

impl<P> BearerAuthLayer<P> {
    /// Sends the token only to these hosts (replacing any earlier list).
    /// Entries are host names or IP addresses compared case-insensitively,
    /// without port; `*.plant.local` allows every subdomain of `plant.local`.
    #[must_use]
    pub fn allowed_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.config.destinations.allow_only(hosts);
        self
    }

    /// Adds one host to the allow list (see [`allowed_hosts`](Self::allowed_hosts)).
    #[must_use]
    pub fn allow_host(mut self, host: impl AsRef<str>) -> Self {
        self.config.destinations.allow(host.as_ref());
        self
    }

    /// Sends the token to every https host (and plain http only to
    /// loopback). Only for a client that talks to nothing but servers
    /// trusting this AIM: a client shared with other APIs would hand them
    /// the token. A later [`allow_host`](Self::allow_host) narrows it to
    /// the listed hosts.
    #[must_use]
    pub fn allow_any_https_host(mut self) -> Self {
        self.config.destinations.allow_any_https();
        self
    }

    /// Where requests with a path-only URI go (e.g. the endpoint of a tonic
    /// `Channel`), so the https and allow-list checks can be made for them.
    /// An origin without scheme or host is ignored.
    #[must_use]
    pub fn origin(mut self, origin: Uri) -> Self {
        self.config.origin = match (origin.scheme_str(), origin.host()) {
            (Some(scheme), Some(host)) => Some((scheme.to_owned(), host.to_owned())),
            _ => None,
        };
        self
    }

    /// Replays bodies with this policy after a 401 (see [`ReplayBody`]).
    #[must_use]
    pub fn replay<Q>(self, policy: Q) -> BearerAuthLayer<Q> {
        BearerAuthLayer {
            config: self.config,
            replay: policy,
        }
    }

    /// Replays every body by cloning it: shorthand for `.replay(CloneBodies)`.
    #[must_use]
    pub fn clone_bodies(self) -> BearerAuthLayer<CloneBodies> {
        self.replay(CloneBodies)
    }
}

impl<S, P: Clone> Layer<S> for BearerAuthLayer<P> {
    type Service = BearerAuth<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            config: self.config.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl<P> fmt::Debug for BearerAuthLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuthLayer")
            .field("aim", &self.config.aim)
            .field("allowed_hosts", &self.config.destinations)
            .finish_non_exhaustive()
    }
}

/// A tower [`Service`] that attaches the AIM token to requests of the inner
/// service `S`. Made by [`BearerAuthLayer`].
#[derive(Clone)]
pub struct BearerAuth<S, P = EmptyBodies> {
    inner: S,
    config: Config,
    replay: P,
}

impl<S: fmt::Debug, P> fmt::Debug for BearerAuth<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("inner", &self.inner)
            .field("aim", &self.config.aim)
            .field("allowed_hosts", &self.config.destinations)
            .finish_non_exhaustive()
    }
}

/// The error of a [`BearerAuth`] service: ours, or the inner service's.
#[derive(Debug)]
pub enum BearerError<E> {
    /// No token was attached, so the request was not sent: AIM failed, or
    /// the destination was refused ([`ErrorKind::Refused`]).
    Auth(Error),
    /// The inner service failed.
    Service(E),
}

impl<E> BearerError<E> {
    /// The token error, if this is one.
    pub fn auth(&self) -> Option<&Error> {
        match self {
            BearerError::Auth(e) => Some(e),
            BearerError::Service(_) => None,
        }
    }

    /// The inner service's error, if this is one.
    pub fn into_service(self) -> Option<E> {
        match self {
            BearerError::Auth(_) => None,
            BearerError::Service(e) => Some(e),
        }
    }
}

impl<E: fmt::Display> fmt::Display for BearerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BearerError::Auth(e) => write!(f, "no access token attached: {e}"),
            BearerError::Service(e) => e.fmt(f),
        }
    }
}

impl<E: StdError + 'static> StdError for BearerError<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            BearerError::Auth(e) => Some(e),
            BearerError::Service(e) => Some(e),
        }
    }
}

/// The future of a [`BearerAuth`] call.
pub struct ResponseFuture<T, E> {
    inner: Pin<Box<dyn Future<Output = Result<T, BearerError<E>>> + Send>>,
}

impl<T, E> Future for ResponseFuture<T, E> {
    type Output = Result<T, BearerError<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T, E> fmt::Debug for ResponseFuture<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for BearerAuth<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    P: ReplayBody<ReqBody>,
    ReqBody: Body + Default + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = BearerError<S::Error>;
    type Future = ResponseFuture<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BearerError::Service)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The ready service goes into the future; `self` keeps a fresh clone
        // (the usual tower idiom, so readiness is not lost).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);

        if req.headers().contains_key(AUTHORIZATION) {
            let fut = inner.call(req);
            return ResponseFuture {
                inner: Box::pin(async move { fut.await.map_err(BearerError::Service) }),
            };
        }

        let checked = self.config.check(req.uri());
        let replay = checked
            .is_ok()
            .then(|| replayable(&req, &self.replay))
            .flatten();
        let aim = self.config.aim.clone();
        let header = self.config.header.clone();
        ResponseFuture {
            inner: Box::pin(async move {
                checked.map_err(BearerError::Auth)?;
                let token = attach(&aim, &header, &mut req).await?;
                let response = inner.call(req).await.map_err(BearerError::Service)?;
                let refusal = bearer::refusal(response.status().as_u16(), response.headers());
                if refusal != Some(bearer::Refusal::Token) {
                    // Served, or refused for a reason no fresh token fixes.
                    if response.status().is_success() {
                        aim.accepted(&token);
                    }
                    return Ok(response);
                }
                let Some(mut retry) = replay else {
                    aim.refused_unretried(&token);
                    return Ok(response);
                };
                let fresh = aim.renew_refused(&token).await.map_err(BearerError::Auth)?;
                let value = header.value(&fresh).map_err(BearerError::Auth)?;
                retry.headers_mut().insert(AUTHORIZATION, value);
                drop(response);
                std::future::poll_fn(|cx| inner.poll_ready(cx))
                    .await
                    .map_err(BearerError::Service)?;
                let response = inner.call(retry).await.map_err(BearerError::Service)?;
                if bearer::is_token_rejected(response.status().as_u16()) {
                    return Err(BearerError::Auth(aim.fresh_refused(&fresh)));
                }
                if response.status().is_success() {
                    aim.accepted(&fresh);
                }
                Ok(response)
            }),
        }
    }
}

impl Config {
    fn check(&self, uri: &Uri) -> Result<(), Error> {
        match (uri.scheme_str(), uri.host(), &self.origin) {
            (None, None, Some((scheme, host))) => self.destinations.check(Some(scheme), Some(host)),
            (None, None, None) => Err(Error::new(
                ErrorKind::Refused,
                "the request URI has no scheme and host, so it cannot be checked where the \
                 token would go; set BearerAuthLayer::origin for clients that add it later",
            )),
            (scheme, host, _) => self.destinations.check(scheme, host),
        }
    }
}

/// Fetches the token and sets the header; fails closed.
async fn attach<B, E>(
    aim: &AimClient,
    header: &HeaderCache,
    req: &mut Request<B>,
) -> Result<AccessToken, BearerError<E>> {
    let token = aim.token().await.map_err(BearerError::Auth)?;
    let value = header.value(&token).map_err(BearerError::Auth)?;
    req.headers_mut().insert(AUTHORIZATION, value);
    Ok(token)
}

/// A copy of `req` for a retry, before the header is attached, if its body
/// can be replayed.
fn replayable<B, P>(req: &Request<B>, policy: &P) -> Option<Request<B>>
where
    B: Body + Default,
    P: ReplayBody<B>,
{
    let body = if req.body().size_hint().exact() == Some(0) {
        B::default()
    } else {
        policy.clone_body(req.body())?
    };
    let mut copy = Request::new(body);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    Some(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> Request<String> {
        let mut req = Request::post("https://mes01/mesmw/api/v3/Jobs/Start")
            .header("trans_id", "T1")
            .body(body.to_owned())
            .unwrap();
        req.extensions_mut().insert(7u32);
        req
    }

    #[test]
    fn empty_bodies_are_recreated_others_need_a_policy() {
        let copy = replayable(&request(""), &EmptyBodies).expect("empty body replays");
        assert_eq!(copy.body(), "");
        assert_eq!(copy.method(), http::Method::POST);
        assert_eq!(copy.uri(), "https://mes01/mesmw/api/v3/Jobs/Start");
        assert_eq!(copy.headers()["trans_id"], "T1");
        assert_eq!(copy.extensions().get::<u32>(), Some(&7));

        assert!(replayable(&request("{}"), &EmptyBodies).is_none());
        let copy = replayable(&request("{}"), &CloneBodies).expect("clonable body");
        assert_eq!(copy.body(), "{}");
        let never = |_: &String| -> Option<String> { None };
        assert!(replayable(&request("{}"), &never).is_none());
    }

    #[test]
    fn errors_say_whose_they_are() {
        let ours: BearerError<std::io::Error> =
            BearerError::Auth(Error::new(ErrorKind::Refused, "refusing"));
        assert!(ours.auth().is_some());
        assert!(ours
            .to_string()
            .starts_with("no access token attached: refusing"));
        let theirs: BearerError<std::io::Error> =
            BearerError::Service(std::io::Error::other("connection reset"));
        assert!(theirs.auth().is_none());
        assert_eq!(theirs.to_string(), "connection reset");
        assert!(theirs.into_service().is_some());
    }
}
