//! [`MesClient`]: the AVEVA MES Web API V3 with the AIM token attached,
//! its typed helpers ([`Entity`], [`Job`], [`MesTransaction`]) and MES's
//! errors explained.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use crate::bearer::{self, HeaderCache, Refusal};
use crate::client::AimClient;
use crate::error::answer::{without_bom, Answer, Facts};
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::response::{content_type, retry_after_and_location};
use crate::exchange::scrub::Scrubber;
use crate::http::{read_capped_with, read_prefix};
use crate::token::AccessToken;

mod entities;
mod errors;

#[cfg(feature = "__fuzz")]
pub(crate) use errors::answer_error;
// `aim-token check` shows a 401's challenge as MesClient's errors do.
#[cfg(feature = "cli")]
pub(crate) use errors::challenge_shown;
use errors::{refused_answer_error, Refused};
mod jobs;
mod models;
mod transaction;

pub use models::{Entity, Job, JobState};
pub use transaction::MesTransaction;

/// The largest 2xx MES answer read (an entity list of a big site fits).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How much of an MES error answer is read: enough for its `Message`.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Calls the AVEVA MES Web API V3 (`https://HOST/mesmw/api/v3/...`) with
/// the AIM token attached.
///
/// Typed helpers call the documented routes: [`entities`](Self::entities),
/// [`entity_by_key`](Self::entity_by_key), [`entities_where`](Self::entities_where),
/// [`entity_id`](Self::entity_id), [`job`](Self::job),
/// [`start_job`](Self::start_job) / [`pause_job`](Self::pause_job) /
/// [`end_job`](Self::end_job), and [`transaction`](Self::transaction). Any
/// other endpoint is a path relative to the MES base for
/// [`get_json`](Self::get_json), [`post_json`](Self::post_json),
/// [`put_json`](Self::put_json) and [`delete`](Self::delete), e.g.
/// `api/v3/entity` (endpoint names are case-insensitive in MES; filters go
/// in the query string as strings, datetimes in ISO 8601, booleans as
/// `true`/`false` or `0`/`1`). The older V1 endpoints (`api/<Name>`, with
/// camelCase models) still exist beside V3 and work through the generic
/// calls too; the typed helpers speak V3.
///
/// It trusts what its [`AimClient`] trusts (the OS store plus every
/// [`root_certificate_pem`](crate::AimClientBuilder::root_certificate_pem):
/// MES's certificate is usually issued by the same CA as AIM's) and uses
/// its timeouts, unless given its own client with
/// [`with_http_client`](Self::with_http_client).
///
/// A 401 makes the client renew the token and try once more with a fresh
/// one (rate-limited: see
/// [`unauthorized_cooldown`](crate::AimClientBuilder::unauthorized_cooldown)).
/// Other failures become an [`Error`] whose
/// [`kind`](Error::kind) says what happened and whose message explains it in
/// MES's terms, followed by the status, content type and length and MES's
/// own `Message`, scrubbed of tokens and made one line (never the raw body,
/// which may echo the request):
///
/// | MES answer | [`ErrorKind`] | transient |
/// | --- | --- | --- |
/// | 400 (wrong parameter type or range, a business rule) | `BadRequest` | no |
/// | 401 twice | `Unauthorized` | no |
/// | 401 asking for Windows authentication (`Negotiate`, `NTLM`) or a missing scope (`insufficient_scope`): not renewed | `Unauthorized`, says which | no |
/// | 403 | `Forbidden` | no |
/// | 404 "You do not have the appropriate privileges ..." | `NotFound`, explains the Default Background User (attribute 199, cached up to an hour) | no |
/// | 404 "transaction ID ... doesn't exist" | `NotFound`, the transaction timed out | no |
/// | 404 "No HTTP resource was found ..." | `NotFound`, wrong endpoint or missing parameter | no |
/// | other 404 ("The specified entity does not exist") | `NotFound` | no |
/// | 404 that is not MES's JSON (a web server's HTML page) | `NotFound`, check the MES base URL | no |
/// | 405 | `BadRequest`, wrong HTTP method | no |
/// | 500 "token cannot be obtained or verified" | `Server`, "AIM unreachable from MES" | yes |
/// | other 500 | `Server` | no (MES reports application errors as 500) |
/// | 408, 429, 502, 503, 504 | `Server` | yes |
/// | 3xx (not followed: the token must not follow a redirect) | `InvalidResponse`, says where it points | no |
///
/// Cheap to clone; clones share the HTTP connection pool and the token cache.
///
/// ```no_run
/// # async fn run() -> Result<(), aim_token::Error> {
/// use aim_token::{AimClient, MesClient};
///
/// let aim = AimClient::from_env()?;
/// let mes = MesClient::new("https://mes01.plant.local/mesmw/", aim)?;
/// for entity in mes.entities().await? {
///     println!("{} {}", entity.ent_id, entity.ent_name);
/// }
/// let job = mes.job("WO-1001", "Fill", 0).await?;
/// let tx = mes.transaction().await?;
/// let running = tx.mes().start_job(&job.clone().on(job.ent_id)).await?;
/// tx.commit().await?;
/// # let _ = running;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MesClient {
    inner: Arc<Inner>,
    trans_id: Option<Arc<str>>,
    tz_id: Option<Arc<str>>,
    max_rows: Option<u32>,
    timeout: Option<Duration>,
}

struct Inner {
    base: Url,
    aim: AimClient,
    http: reqwest::Client,
    header: HeaderCache,
}

impl MesClient {
    /// A client for the MES Web API at `mes_base`, e.g.
    /// `https://mes01.plant.local/mesmw/` (a missing trailing slash is added).
    ///
    /// It trusts what `aim` trusts and uses its connect and request
    /// timeouts: one trust setting (`root_certificate_pem` / `AIM_CA_CERT`)
    /// for both servers, and its proxy, except for a plain-http (loopback)
    /// base, which is called directly: through a proxy the token would
    /// leave the machine in clear text. No redirects are followed: the token
    /// must not follow one to another host.
    ///
    /// Fails with [`ErrorKind::Config`] when `mes_base` is not an absolute
    /// https URL (plain http is accepted only for loopback: the token must
    /// not cross the network in clear text), or ends in the API's folder
    /// (`.../mesmw/api/v3/`: give `.../mesmw/`).
    pub fn new(mes_base: impl AsRef<str>, aim: AimClient) -> Result<Self> {
        let base = parse_base(mes_base.as_ref())?;
        let http = crate::http::build_client_for(aim.http_config(), &base)?;
        Ok(MesClient {
            inner: Arc::new(Inner {
                base,
                aim,
                http,
                header: HeaderCache::default(),
            }),
            trans_id: None,
            tz_id: None,
            max_rows: None,
            timeout: None,
        })
    }

    /// Uses this reqwest client instead of one that trusts what the
    /// [`AimClient`] trusts, e.g. when MES's certificate comes from another
    /// CA. Disable redirects on it (`reqwest::redirect::Policy::none()`)
    /// so the token cannot follow one, and for a plain-http (loopback) base
    /// its proxy (`.no_proxy()`): its settings are its own, and a proxy
    /// would carry the token off the machine in clear text.
    #[must_use]
    pub fn with_http_client(self, http: reqwest::Client) -> Self {
        MesClient {
            inner: Arc::new(Inner {
                base: self.inner.base.clone(),
                aim: self.inner.aim.clone(),
                http,
                header: HeaderCache::default(),
            }),
            ..self
        }
    }

    /// A client that sends the `trans_id` header with every request; `self`
    /// is unchanged, so this works per call. A `trans_id` is the ID that
    /// `POST api/v3/transaction` returned, not a label: MES fails a call
    /// whose transaction it does not know (404). [`transaction`](Self::transaction)
    /// does this for you. A blank value or one that is not printable ASCII
    /// fails every call with [`ErrorKind::Config`], before anything is sent.
    #[must_use]
    pub fn with_trans_id(&self, trans_id: impl AsRef<str>) -> Self {
        MesClient {
            trans_id: Some(trans_id.as_ref().into()),
            ..self.clone()
        }
    }

    /// A client that sends the `tz_id` header with every request: a
    /// Microsoft time-zone ID (e.g. `W. Europe Standard Time`) in which MES
    /// reads the dates of GET parameters that have no UTC suffix. A blank
    /// value or one that is not printable ASCII fails every call with
    /// [`ErrorKind::Config`], before anything is sent.
    #[must_use]
    pub fn with_tz_id(&self, tz_id: impl AsRef<str>) -> Self {
        MesClient {
            tz_id: Some(tz_id.as_ref().into()),
            ..self.clone()
        }
    }

    /// A client whose GETs return at most `max_rows` rows (the `max_rows`
    /// header MES documents for its GETs). It is sent as given, also `0`,
    /// whose meaning AVEVA does not document (the emulator answers no rows).
    #[must_use]
    pub fn with_max_rows(&self, max_rows: u32) -> Self {
        MesClient {
            max_rows: Some(max_rows),
            ..self.clone()
        }
    }

    /// A client whose requests each time out after `timeout` (default: the
    /// [`AimClient`]'s request timeout, 30 s unless configured). Waiting for
    /// a token from AIM is bounded by it too (without it, by the client's
    /// `retry_deadline`). Each wait is: a call renewed after a 401 waits for
    /// a token and for MES twice, so it can take up to four times `timeout`.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        MesClient {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// The MES base URL, with a trailing slash.
    pub fn base_url(&self) -> &str {
        self.inner.base.as_str()
    }

    /// The AIM client the tokens come from.
    pub fn aim(&self) -> &AimClient {
        &self.inner.aim
    }

    /// `GET path` and decode the JSON answer.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.execute(Method::GET, path, None).await?.json(path)
    }

    /// `POST path` with `body` as JSON and decode the JSON answer (an empty
    /// answer decodes as `null`, so `()` and `Option<T>` work).
    pub async fn post_json<B, T>(&self, path: &str, body: &B) -> Result<T>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        self.execute(Method::POST, path, Some(encode(body)?))
            .await?
            .json(path)
    }

    /// `PUT path` with `body` as JSON and decode the JSON answer (an empty
    /// answer decodes as `null`).
    pub async fn put_json<B, T>(&self, path: &str, body: &B) -> Result<T>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        self.execute(Method::PUT, path, Some(encode(body)?))
            .await?
            .json(path)
    }

    /// `DELETE path`; any answer body is ignored.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.execute(Method::DELETE, path, None).await.map(drop)
    }

    /// [`execute`](Self::execute) and decode the JSON answer (an empty
    /// answer as `null`).
    async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        self.execute(method, path, body).await?.json(path)
    }

    /// Sends one call, retrying once with a fresh token after a 401, and
    /// returns the body of a 2xx answer (read with a cap).
    async fn execute(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Reply> {
        let url = self.resolve(path)?;
        let context = format!("MES {method} {}", url.path());
        // hyper sends no length for an empty body, and HTTP.sys (under IIS,
        // so under MES) refuses such a POST or PUT with a 411.
        let empty_needs_length = body.is_none() && matches!(method, Method::POST | Method::PUT);
        let mut builder = self.inner.http.request(method, url.clone());
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        for (name, value) in self.extra_headers()? {
            builder = builder.header(name, value);
        }
        if let Some(body) = body {
            builder = builder
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        } else if empty_needs_length {
            builder = builder.header(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        let request = builder
            .build()
            .map_err(|e| transport(e).context(&context))?;
        let send = |mut request: reqwest::Request, token: &AccessToken| {
            let value = self.inner.header.value(token);
            async move {
                request.headers_mut().insert(AUTHORIZATION, value?);
                self.inner.http.execute(request).await.map_err(transport)
            }
        };

        let aim = &self.inner.aim;
        let token = self
            .within_timeout(aim.token())
            .await
            .map_err(|e| e.context(&context))?;
        // Taken before the header goes in; the body is bytes, so the copy
        // shares its buffer and is always there.
        let replay = request.try_clone();
        let mut response = send(request, &token)
            .await
            .map_err(|e| e.context(&context))?;
        let mut tokens = vec![token.clone()];
        // Renewed only when a fresh token can help (not for a 401 that asks
        // for Windows authentication or a scope the token lacks).
        let mut refusal = bearer::refusal_of(&response, &url);
        if refusal == Some(Refusal::Token) {
            if let Some(retry) = replay {
                let fresh = self
                    .within_timeout(aim.renew_refused(&token))
                    .await
                    .map_err(|e| e.context(&context))?;
                response = send(retry, &fresh).await.map_err(|e| e.context(&context))?;
                tokens.push(fresh);
                refusal = bearer::refusal_of(&response, &url);
            } else {
                aim.refused_unretried(&token);
            }
        }

        let status = response.status().as_u16();
        let (retry_after, location) =
            retry_after_and_location(response.headers(), std::time::SystemTime::now());
        // MES's reason for a 401 is in its challenge, not its body.
        let challenge = match refusal {
            Some(_) => bearer::stated(response.headers()),
            None => (None, None),
        };
        let content_type = content_type(response.headers());
        if (200..300).contains(&status) {
            if let Some(used) = tokens.last() {
                aim.accepted(used);
            }
            let body = read_capped_with(response, MAX_BODY_BYTES, url.as_str(), TOO_LARGE)
                .await
                .map_err(|e| e.context(&context))?;
            return Ok(Reply {
                body,
                content_type,
                url,
                tokens,
            });
        }
        // An error page is read only as far as its fields can be: a 20 MiB
        // IIS page must not fill memory, and its status is the news.
        let (body, body_len) = read_prefix(response, MAX_ERROR_BODY_BYTES)
            .await
            .map_err(|e| e.context(&context))?;
        let answer = Answer {
            status,
            retry_after,
            location,
            content_type,
            body: &body,
            body_len: Some(body_len),
        };
        let refused = Refused {
            refusal: refusal.as_ref(),
            challenge,
        };
        let mut err = refused_answer_error(&answer, url.as_str(), &tokens, &refused);
        if let Some(fresh) = tokens.get(1) {
            if refusal.is_some() {
                // The renewed token was refused too: no renewals for a while.
                err = err.context(aim.fresh_refused(fresh));
            }
        }
        Err(err.context(&context))
    }

    /// Waits for a token for at most the [`with_timeout`](Self::with_timeout)
    /// of this client, if it has one: no wait of the call outlasts the
    /// caller's timeout. The token request itself belongs to the cache and
    /// goes on, for the next call.
    async fn within_timeout(
        &self,
        wait: impl std::future::Future<Output = Result<AccessToken>>,
    ) -> Result<AccessToken> {
        let Some(limit) = self.timeout else {
            return wait.await;
        };
        tokio::time::timeout(limit, wait).await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "no access token from AIM within {limit:?} (this call's with_timeout); \
                     the token request goes on, for the next call"
                ),
            )
            .transient(true))
        })
    }

    /// `path` under the base, refusing anything that would leave it: an
    /// absolute URL must not receive the token.
    fn resolve(&self, path: &str) -> Result<Url> {
        // One leading slash is tolerated ("/api/v3/entity"); two would be a host.
        let relative = path.strip_prefix('/').unwrap_or(path);
        let bad = |why: &str| {
            Error::config(format!(
                "MES path {path:?} {why}: use a path relative to the MES base, like api/v3/entity"
            ))
        };
        if relative.is_empty() {
            return Err(bad("is empty"));
        }
        if relative.contains('\\') || relative.contains("://") {
            return Err(bad("is not a relative path"));
        }
        let path_part = relative.split(['?', '#']).next().unwrap_or_default();
        let escapes = path_part.split('/').any(|segment| {
            let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
            decoded == "." || decoded == ".." || decoded.contains('/') || decoded.contains('\\')
        });
        if escapes {
            return Err(bad("contains dot segments or encoded slashes"));
        }
        let url = self
            .inner
            .base
            .join(relative)
            .map_err(|_| bad("is not a valid URL path"))?;
        if !url.as_str().starts_with(self.inner.base.as_str()) {
            return Err(bad("leaves the MES base"));
        }
        Ok(url)
    }

    fn extra_headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>> {
        let mut headers = Vec::new();
        if let Some(max_rows) = self.max_rows {
            headers.push((
                HeaderName::from_static("max_rows"),
                HeaderValue::from(max_rows),
            ));
        }
        let fields = [
            (
                "trans_id",
                &self.trans_id,
                "the ID that POST api/v3/transaction returned",
            ),
            (
                "tz_id",
                &self.tz_id,
                "a Microsoft time-zone ID such as \"W. Europe Standard Time\"",
            ),
        ];
        for (name, value, what) in fields {
            if let Some(value) = value {
                let value = header_text(value).ok_or_else(|| {
                    Error::config(format!(
                        "{name} {value:?} cannot be sent: give {what} (printable ASCII, not empty)"
                    ))
                })?;
                headers.push((HeaderName::from_static(name), value));
            }
        }
        Ok(headers)
    }
}

impl fmt::Debug for MesClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MesClient")
            .field("base", &self.inner.base.as_str())
            .field("aim", &self.inner.aim)
            .field("trans_id", &self.trans_id)
            .field("tz_id", &self.tz_id)
            .field("max_rows", &self.max_rows)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `text` as the value of one of MES's own headers (`trans_id`, `tz_id`):
/// printable ASCII and not blank, trimmed. The `http` crate would also take
/// bytes above 0x7F, which IIS reads as Latin-1, not as what was meant.
pub(crate) fn header_text(text: &str) -> Option<HeaderValue> {
    let text = text.trim();
    let printable = text.bytes().all(|b| (0x20..0x7f).contains(&b));
    if text.is_empty() || !printable {
        return None;
    }
    HeaderValue::from_str(text).ok()
}

fn parse_base(mes_base: &str) -> Result<Url> {
    let mut base = Url::parse(mes_base.trim()).map_err(|e| {
        Error::config(format!(
            "MES base {mes_base:?} is not an absolute URL ({e}): use e.g. https://mes01.plant.local/mesmw/"
        ))
    })?;
    if base.query().is_some() || base.fragment().is_some() || !base.username().is_empty() {
        return Err(Error::config(format!(
            "MES base {mes_base:?} must not carry credentials, a query or a fragment"
        )));
    }
    // The base's origin is the only destination: `resolve` keeps every
    // call under it, so this one check covers them all.
    crate::bearer::check_token_destination(base.as_str())
        .map_err(|e| Error::config(format!("MES base {mes_base:?}: {e}")))?;
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    // Paths (and the helpers' api/v3/...) are relative to the Web API's
    // base: one that already ends in api/ or api/vN/ would double it.
    if let Some(web_api_base) = before_api_folder(base.path()) {
        let mut suggestion = base.clone();
        suggestion.set_path(web_api_base);
        return Err(Error::config(format!(
            "MES base {mes_base:?} ends in the API's folder: give the Web API's base, e.g. \
             {suggestion} (calls add api/v3/...)"
        )));
    }
    Ok(base)
}

/// `/mesmw/` for a path ending in `/api/` or `/api/vN/` (any case).
fn before_api_folder(path: &str) -> Option<&str> {
    let (head, last) = path.trim_end_matches('/').rsplit_once('/')?;
    let is_version = last
        .strip_prefix(['v', 'V'])
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let head = if is_version {
        let (above, api) = head.rsplit_once('/')?;
        api.eq_ignore_ascii_case("api").then_some(above)?
    } else if last.eq_ignore_ascii_case("api") {
        head
    } else {
        return None;
    };
    // `head` is a prefix of `path`; keep its trailing slash.
    path.get(..=head.len())
}

fn encode<B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>> {
    serde_json::to_vec(body).map_err(|e| {
        Error::config(format!("cannot serialize the request body as JSON: {e}")).with_source(e)
    })
}

/// A 2xx MES answer, read.
struct Reply {
    body: Vec<u8>,
    content_type: Option<String>,
    url: Url,
    /// The tokens sent, to scrub them from a decode error.
    tokens: Vec<AccessToken>,
}

impl Reply {
    /// The body as JSON (an empty body as `null`); a decode error says
    /// where and what shape, never the text (serde's messages quote values).
    fn json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        decode(path, &self.body).map_err(|e| {
            let answer = Answer {
                status: 200,
                retry_after: None,
                location: None,
                content_type: self.content_type.clone(),
                // As much as an error page: parsing and scrubbing up to
                // 32 MiB again would only multiply the memory a wrong type costs.
                body: &self.body[..self.body.len().min(MAX_ERROR_BODY_BYTES)],
                body_len: Some(self.body.len() as u64),
            };
            Facts::of(
                &answer,
                self.url.as_str(),
                WHAT,
                &scrubber_for(&self.tokens),
            )
            .error(
                ErrorKind::InvalidResponse,
                false,
                self.url.as_str(),
                WHAT,
                &e,
            )
        })
    }
}

/// `body` as JSON (an empty body as `null`), or why not, in words that
/// quote nothing of the body.
fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> std::result::Result<T, String> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"null"[..]
    } else {
        without_bom(body)
    };
    serde_json::from_slice(body).map_err(|e| {
        let problem = match e.classify() {
            serde_json::error::Category::Data => "JSON of another shape than expected",
            serde_json::error::Category::Eof => "truncated JSON",
            _ => "a body that is not JSON",
        };
        format!(
            "MES answered {path} with {problem} (at line {}, column {}): check the path and the type it is decoded into",
            e.line(),
            e.column()
        )
    })
}

/// `name=value&...`, form-encoded: parameters of a V3 GET are strings.
fn query<I, K, V>(params: I) -> String
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        query.append_pair(name.as_ref(), value.as_ref());
    }
    query.finish()
}

/// What MES calls are called in messages.
pub(crate) const WHAT: &str = "MES call";

/// A 2xx answer larger than [`MAX_BODY_BYTES`]: what to do.
const TOO_LARGE: &str = "ask MES for less (a filter, max_rows)";

/// Scrubs the tokens that were sent (and anything token-shaped) with the
/// same [`Scrubber`] that cleans AIM's answers.
pub(crate) fn scrubber_for(tokens: &[AccessToken]) -> Scrubber {
    Scrubber::for_secrets(tokens.iter().map(AccessToken::secret))
}

/// A reqwest failure as our error: timeout, TLS, a proxy's refusal or
/// plain transport.
fn transport(err: reqwest::Error) -> Error {
    let origin = err.url().map(|url| url.origin().ascii_serialization());
    if let Some(refusal) = crate::http::proxy_refusal(&err, origin.as_deref().unwrap_or("MES")) {
        return refusal.with_source(err.without_url());
    }
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else if crate::http::find_rustls_error(&err).is_some() {
        ErrorKind::Tls
    } else {
        ErrorKind::Transport
    };
    let mut message = String::from("request failed");
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if kind == ErrorKind::Tls {
        message.push_str(
            " (is the MES certificate issued by a CA this machine trusts? MesClient trusts what \
             its AimClient trusts: give the CA that issued it, usually the PCS root CA that also \
             issued AIM's, with AIM_CA_CERT or root_certificate_pem; Get-RootCertificate on the \
             AIM node shows the certificate AIM uses)",
        );
    }
    Error::new(kind, message)
        .transient(kind != ErrorKind::Tls)
        .with_source(err.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Result<MesClient> {
        let aim = AimClient::builder()
            .authority("https://sms01.plant.local/identitymanager")
            .client_id("id")
            .client_secret("secret")
            .build()?;
        MesClient::new(base, aim)
    }

    #[test]
    fn a_decode_error_reads_only_a_prefix_of_a_large_answer() {
        let mut body = br#"{"pad":""#.to_vec();
        body.resize(MAX_ERROR_BODY_BYTES + 10, b'x');
        body.extend_from_slice(br#"","Message":"far away"}"#);
        let len = body.len();
        let reply = Reply {
            body,
            content_type: None,
            url: Url::parse("https://mes01/mesmw/x").unwrap(),
            tokens: Vec::new(),
        };
        let msg = reply.json::<Vec<u8>>("x").unwrap_err().to_string();
        assert!(!msg.contains("far away"), "{msg}");
        assert!(msg.contains(&format!("{len} bytes")), "{msg}");
    }

    #[test]
    fn base_gets_a_trailing_slash() {
        let mes = client("https://mes01.plant.local/mesmw").unwrap();
        assert_eq!(mes.base_url(), "https://mes01.plant.local/mesmw/");
        let mes = client("http://127.0.0.1:8080/mesmw/").unwrap();
        assert_eq!(mes.base_url(), "http://127.0.0.1:8080/mesmw/");
    }

    #[test]
    fn bad_bases_are_config_errors() {
        let base = parse_base;
        assert_eq!(base("mes01/mesmw").unwrap_err().kind(), ErrorKind::Config);
        assert_eq!(base("not a url").unwrap_err().kind(), ErrorKind::Config);
        let err = base("http://mes01.plant.local/mesmw/").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("plain http"), "{err}");
        assert!(base("https://u:p@mes01/mesmw/").is_err());
        assert!(base("https://mes01/mesmw/?x=1").is_err());
        assert_eq!(
            base("https://MES01/mesmw").unwrap().as_str(),
            "https://mes01/mesmw/"
        );
        assert_eq!(base("https://mes01").unwrap().as_str(), "https://mes01/");
        // The Web API's base, not its api/v3 folder: the helpers add that,
        // and a base ending in it doubles it (404 on every call).
        for wrong in [
            "https://mes01/mesmw/api/v3",
            "https://mes01/mesmw/api/v3/",
            "https://mes01/mesmw/API/",
            "https://mes01/mesmw/api/V1",
        ] {
            let err = base(wrong).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{wrong}");
            assert!(err.to_string().contains("https://mes01/mesmw/"), "{err}");
        }
        assert!(base("https://mes01/apiserver/mesmw/").is_ok());
    }

    #[test]
    fn paths_stay_under_the_base() {
        let mes = MesClient {
            inner: Arc::new(Inner {
                base: parse_base("https://mes01/mesmw/").unwrap(),
                aim: AimClient::builder()
                    .authority("https://sms01/identitymanager")
                    .client_id("id")
                    .client_secret("s")
                    .build()
                    .unwrap(),
                http: reqwest::Client::new(),
                header: HeaderCache::default(),
            }),
            trans_id: None,
            tz_id: None,
            max_rows: None,
            timeout: None,
        };
        let ok = |p: &str| mes.resolve(p).unwrap().to_string();
        assert_eq!(ok("api/v3/entity"), "https://mes01/mesmw/api/v3/entity");
        assert_eq!(ok("/api/v3/entity"), "https://mes01/mesmw/api/v3/entity");
        assert_eq!(
            ok("api/v3/entity?name=Line%201"),
            "https://mes01/mesmw/api/v3/entity?name=Line%201"
        );
        for bad in [
            "",
            "https://evil.example/api",
            "//evil.example/api",
            "../api/v3/entity",
            "api/../../x",
            "api/%2e%2e/%2E%2e/x",
            "api/a%2fb",
            "api\\..\\x",
            "c:/x",
            "javascript:alert(1)",
        ] {
            let err = mes.resolve(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn query_is_form_encoded() {
        assert_eq!(
            query([("woId", "WO 1&2"), ("seqNo", "0")]),
            "woId=WO+1%262&seqNo=0"
        );
        assert_eq!(query(Vec::<(&str, &str)>::new()), "");
    }

    #[test]
    fn empty_answer_decodes_as_null() {
        decode::<()>("p", b"").unwrap();
        let none: Option<u32> = decode("p", b" \n").unwrap();
        assert_eq!(none, None);
        let why = decode::<u32>("p", b"<html>").unwrap_err();
        assert!(why.contains("not JSON"), "{why}");
        // serde would quote the value; the message does not.
        let why = decode::<u32>("p", br#""tok.secret.value""#).unwrap_err();
        assert!(!why.contains("tok.secret"), "{why}");
        assert!(why.contains("another shape"), "{why}");
    }
}
