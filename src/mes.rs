//! [`MesClient`]: the AVEVA MES Web API with the AIM token attached.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use crate::bearer::{self, Destinations, HeaderCache};
use crate::client::AimClient;
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::response::parse_retry_after;
use crate::exchange::scrub::Scrubber;
use crate::token::AccessToken;

/// At most this much of an MES error body is kept in an [`Error`].
const MAX_ERROR_TEXT: usize = 1000;

/// Calls the AVEVA MES Web API (`https://HOST/mesmw/api/...`) with the AIM
/// token attached.
///
/// Paths are relative to the MES base, e.g. `api/v3/entity`. A 401 makes the
/// client invalidate the token and try once more with a fresh one; other
/// failures become an [`Error`] whose [`kind`](Error::kind) says what
/// happened and whose message carries the (truncated) MES response text:
///
/// | MES answer | [`ErrorKind`] | transient |
/// | --- | --- | --- |
/// | 400 | `BadRequest` | no |
/// | 401 twice | `Unauthorized` | no |
/// | 403 | `Forbidden` (explains the Default Background User) | no |
/// | 404 | `NotFound` | no |
/// | 500 "token cannot be obtained/verified" | `Server`, "AIM unreachable from MES" | yes |
/// | other 500 | `Server` | no (MES reports application errors as 500) |
/// | 429, 502, 503, 504 | `Server` | yes |
///
/// Cheap to clone; clones share the HTTP connection pool and the token cache.
///
/// ```no_run
/// # async fn run() -> Result<(), aim_token::Error> {
/// use aim_token::{AimClient, MesClient};
///
/// let aim = AimClient::from_env()?;
/// let mes = MesClient::new("https://mes01.plant.local/mesmw/", aim)?;
/// let entities: serde_json::Value = mes.get_json("api/v3/entity").await?;
/// let started: serde_json::Value = mes
///     .with_trans_id("job-start-42")
///     .put_json("api/v3/Jobs/Start", &serde_json::json!({ "JobId": "J1" }))
///     .await?;
/// # let _ = (entities, started);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MesClient {
    inner: Arc<Inner>,
    trans_id: Option<Arc<str>>,
    tz_id: Option<Arc<str>>,
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
    /// Fails with [`ErrorKind::Config`] when `mes_base` is not an absolute
    /// https URL (plain http is accepted only for loopback: the token must
    /// not cross the network in clear text).
    pub fn new(mes_base: impl AsRef<str>, aim: AimClient) -> Result<Self> {
        let base = parse_base(mes_base.as_ref())?;
        let http = reqwest::Client::builder()
            // The token must not follow a redirect to another host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::config("cannot build the HTTP client for MES").with_source(e))?;
        Ok(MesClient {
            inner: Arc::new(Inner {
                base,
                aim,
                http,
                header: HeaderCache::default(),
            }),
            trans_id: None,
            tz_id: None,
        })
    }

    /// Uses this reqwest client, e.g. one that trusts the PCS root CA
    /// (`reqwest::ClientBuilder::tls_certs_merge`) or has other timeouts.
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

    /// A client that sends the `trans_id` header (MES transaction ID) with
    /// every request; `self` is unchanged, so this works per call:
    /// `mes.with_trans_id("T1").put_json(...)`.
    #[must_use]
    pub fn with_trans_id(&self, trans_id: impl AsRef<str>) -> Self {
        MesClient {
            trans_id: Some(trans_id.as_ref().into()),
            ..self.clone()
        }
    }

    /// A client that sends the `tz_id` header (the time zone MES uses to
    /// interpret and report times) with every request.
    #[must_use]
    pub fn with_tz_id(&self, tz_id: impl AsRef<str>) -> Self {
        MesClient {
            tz_id: Some(tz_id.as_ref().into()),
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
        let body = self.execute(Method::GET, path, None).await?;
        decode(path, body.as_ref())
    }

    /// `POST path` with `body` as JSON and decode the JSON answer (an empty
    /// answer decodes as `null`, so `()` and `Option<T>` work).
    pub async fn post_json<B, T>(&self, path: &str, body: &B) -> Result<T>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let answer = self
            .execute(Method::POST, path, Some(encode(body)?))
            .await?;
        decode(path, answer.as_ref())
    }

    /// `PUT path` with `body` as JSON and decode the JSON answer (an empty
    /// answer decodes as `null`).
    pub async fn put_json<B, T>(&self, path: &str, body: &B) -> Result<T>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let answer = self.execute(Method::PUT, path, Some(encode(body)?)).await?;
        decode(path, answer.as_ref())
    }

    /// `DELETE path`; any answer body is ignored.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.execute(Method::DELETE, path, None).await.map(drop)
    }

    /// Sends one call, retrying once with a fresh token after a 401, and
    /// returns the body of a 2xx answer.
    async fn execute(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<impl AsRef<[u8]>> {
        let url = self.resolve(path)?;
        let context = format!("MES {method} {}", url.path());
        let mut builder = self.inner.http.request(method, url);
        for (name, value) in self.extra_headers()? {
            builder = builder.header(name, value);
        }
        if let Some(body) = body {
            builder = builder
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
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
        let token = aim.token().await.map_err(|e| e.context(&context))?;
        // Taken before the header goes in; the body is bytes, so the copy
        // shares its buffer and is always there.
        let replay = request.try_clone();
        let mut response = send(request, &token)
            .await
            .map_err(|e| e.context(&context))?;
        let mut retried_with = None;
        if bearer::is_token_rejected(response.status().as_u16()) {
            aim.invalidate(&token);
            if let Some(retry) = replay {
                let fresh = aim.token().await.map_err(|e| e.context(&context))?;
                if !fresh.same_as(&token) {
                    response = send(retry, &fresh).await.map_err(|e| e.context(&context))?;
                    retried_with = Some(fresh);
                }
            }
        }

        let status = response.status();
        let retry_after = retry_after(response.headers().get(RETRY_AFTER));
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport(e).context(&context))?;
        if status.is_success() {
            return Ok(bytes);
        }
        let text = error_text(&bytes, std::iter::once(&token).chain(&retried_with));
        Err(status_error(status, &text)
            .with_retry_after(retry_after)
            .context(&context))
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
        for (name, value) in [("trans_id", &self.trans_id), ("tz_id", &self.tz_id)] {
            if let Some(value) = value {
                let value = HeaderValue::from_str(value).map_err(|_| {
                    Error::config(format!(
                        "{name} contains characters that are not allowed in an HTTP header"
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
            .finish()
    }
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
    Destinations::default()
        .check(Some(base.scheme()), base.host_str())
        .map_err(|e| Error::config(format!("MES base {mes_base:?}: {e}")))?;
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Ok(base)
}

fn encode<B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>> {
    serde_json::to_vec(body).map_err(|e| {
        Error::config(format!("cannot serialize the request body as JSON: {e}")).with_source(e)
    })
}

fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"null"[..]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(body);
        Error::new(
            ErrorKind::InvalidResponse,
            format!(
                "MES answered {path} with a body that is not the expected JSON ({e}): {}",
                truncate(&text)
            ),
        )
        .with_source(e)
    })
}

/// The error for a non-2xx MES answer, with a hint where the status has a
/// usual cause.
pub(crate) fn status_error(status: StatusCode, text: &str) -> Error {
    let code = status.as_u16();
    let said = if text.is_empty() {
        String::from("(empty body)")
    } else {
        text.to_owned()
    };
    let (kind, transient, message) = match code {
        400 => (
            ErrorKind::BadRequest,
            false,
            format!("MES rejected the request as malformed (HTTP 400): {said}"),
        ),
        401 => (
            ErrorKind::Unauthorized,
            false,
            format!(
                "MES rejected the access token (HTTP 401), also a freshly fetched one: check that \
                 MES trusts this AIM (same identity manager, the scope MES expects) and that the \
                 clocks of MES and AIM agree. MES said: {said}"
            ),
        ),
        403 => (
            ErrorKind::Forbidden,
            false,
            format!(
                "MES refused the call (HTTP 403). The token is valid, but MES runs \
                 service-to-service calls as the Default Background User (MES system attribute \
                 199), and that user may lack the privilege for this operation: grant it in MES, \
                 or point attribute 199 at a user who has it. MES said: {said}"
            ),
        ),
        404 => (
            ErrorKind::NotFound,
            false,
            format!("MES does not know this resource (HTTP 404): {said}"),
        ),
        500 if says_token_unavailable(text) => (
            ErrorKind::Server,
            true,
            format!(
                "AIM unreachable from MES: MES could not obtain or verify the access token \
                 (HTTP 500). Check that the MES server can reach AIM and trusts its certificate; \
                 retrying later may succeed. MES said: {said}"
            ),
        ),
        408 | 429 | 502 | 503 | 504 => (
            ErrorKind::Server,
            true,
            format!("MES is unavailable (HTTP {code}); retry later: {said}"),
        ),
        _ => (
            ErrorKind::Server,
            false,
            format!("MES failed (HTTP {code}): {said}"),
        ),
    };
    Error::new(kind, message)
        .with_status(code)
        .transient(transient)
}

/// Whether a 500's text says MES could not get or check the token at AIM.
fn says_token_unavailable(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    text.contains("token")
        && ["obtain", "verif", "validat", "retriev", "acquir"]
            .iter()
            .any(|verb| text.contains(verb))
}

/// The MES body as text: truncated, and without our tokens (in case the
/// server echoed the request) or anything else token-shaped, by the same
/// [`Scrubber`] that cleans AIM's answers.
pub(crate) fn error_text<'a>(
    bytes: &[u8],
    tokens: impl IntoIterator<Item = &'a AccessToken>,
) -> String {
    let scrubber = Scrubber::new(tokens.into_iter().map(|t| t.secret().to_owned()).collect());
    truncate(&scrubber.scrub(String::from_utf8_lossy(bytes).trim()))
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_ERROR_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    parse_retry_after(value?.to_str().ok()?, std::time::SystemTime::now())
}

/// A reqwest failure as our error: timeout, TLS or plain transport.
fn transport(err: reqwest::Error) -> Error {
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
            " (is the MES certificate issued by a CA this machine trusts? pass a reqwest client \
             that trusts the PCS root CA with MesClient::with_http_client)",
        );
    }
    Error::new(kind, message)
        .transient(kind != ErrorKind::Tls)
        .with_source(err.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn client(base: &str) -> Result<MesClient> {
        let aim = AimClient::builder()
            .authority("https://sms01.plant.local/identitymanager")
            .client_id("id")
            .client_secret("secret")
            .build()?;
        MesClient::new(base, aim)
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
    fn statuses_map_to_kinds() {
        let cases = [
            (400, ErrorKind::BadRequest, false),
            (401, ErrorKind::Unauthorized, false),
            (403, ErrorKind::Forbidden, false),
            (404, ErrorKind::NotFound, false),
            (500, ErrorKind::Server, false),
            (503, ErrorKind::Server, true),
            (409, ErrorKind::Server, false),
        ];
        for (code, kind, transient) in cases {
            let err = status_error(StatusCode::from_u16(code).unwrap(), "boom text");
            assert_eq!(err.kind(), kind, "{code}");
            assert_eq!(err.status(), Some(code));
            assert_eq!(err.is_transient(), transient, "{code}");
            assert!(err.to_string().contains("boom text"), "{err}");
        }
        let err = status_error(StatusCode::FORBIDDEN, "");
        assert!(err.to_string().contains("Default Background User"));
        assert!(err.to_string().contains("199"));
        let err = status_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The access token cannot be obtained or verified",
        );
        assert!(err.is_transient());
        assert!(err.to_string().starts_with("AIM unreachable from MES"));
    }

    #[test]
    fn error_text_is_truncated_and_token_free() {
        let token = AccessToken::new("tok.secret.value", SystemTime::now());
        let text = error_text(b"echo: Bearer tok.secret.value", &[token]);
        assert_eq!(text, "echo: Bearer [redacted]");
        // Tokens that are not ours are not shown either.
        let text = error_text(b"{\"access_token\":\"opaque\"} eyJhbGciOi.x.y", &[]);
        assert!(!text.contains("opaque") && !text.contains("eyJ"), "{text}");
        let long = "é".repeat(2000);
        let t = truncate(&long);
        assert!(t.len() < 1100 && t.ends_with("(4000 bytes in all)"), "{t}");
    }

    #[test]
    fn empty_answer_decodes_as_null() {
        decode::<()>("p", b"").unwrap();
        let none: Option<u32> = decode("p", b" \n").unwrap();
        assert_eq!(none, None);
        let err = decode::<u32>("p", b"<html>").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static("7"))),
            Some(Duration::from_secs(7))
        );
        assert_eq!(retry_after(Some(&HeaderValue::from_static("soon"))), None);
        assert_eq!(retry_after(None), None);
    }
}
