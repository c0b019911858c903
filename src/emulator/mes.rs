//! The emulator's MES Web API V3 (`/mesmw/api/...`): the routes AVEVA
//! documents for entities, jobs and transactions, matched
//! case-insensitively as MES does, behind MES's checks in MES's order:
//! a declared length on POST and PUT (else HTTP.sys's 411), AIM reachable (else 500), bearer token (else 401), permission (403),
//! endpoint and method (404, 405), privilege of the Default Background User
//! (404), transaction (404), parameters (404 missing, 400 wrong type).
//! Errors have ASP.NET Web API's `{"Message": ..}` shape. Only V3 is
//! emulated: a V1 path (`api/<Name>`) gets the 404 of an unknown endpoint.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use axum::Router;
use serde_json::{json, Map, Value};

use super::client_auth;
use super::oauth::{json, respond};
use super::state::State;
use super::tokens;

mod entities;
mod jobs;
pub(crate) mod plant;
pub(crate) mod transactions;

/// The request headers MES clients send and this emulator echoes back, so
/// tests can see they arrived.
const ECHOED: [&str; 2] = ["trans_id", "tz_id"];

/// A body larger than this is refused (413) rather than read.
const MAX_BODY: usize = 1024 * 1024;

/// The 404 bodies AVEVA documents, and the emulator's wording of the others.
pub(crate) const NO_SUCH_ENTITY: &str = "The specified entity does not exist";
pub(crate) const NO_PRIVILEGE: &str =
    "You do not have the appropriate privileges to access this entity";
pub(crate) const AIM_OFFLINE: &str = "An error has occurred: the System Management Server running \
     AVEVA Identity Manager is offline, an authentication token cannot be obtained or verified.";

pub(crate) fn router() -> Router<Arc<State>> {
    // One handler for every path: MES matches endpoint names
    // case-insensitively, and paths outside `/mesmw/api/` get a plain 404.
    Router::new().fallback(handle)
}

/// One routed MES call: what the handlers read.
pub(crate) struct Call<'a> {
    st: &'a State,
    uri: String,
    query: Vec<(String, String)>,
    trans_id: Option<String>,
    max_rows: Option<usize>,
    /// Declared `application/json`: ASP.NET binds a model only from such a body.
    json_body: bool,
    body: Bytes,
}

impl Call<'_> {
    /// A URL parameter; names bind case-insensitively, as in ASP.NET.
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The endpoints, by lowercase path after `/mesmw/`.
#[derive(Debug, Clone, Copy)]
enum Route {
    Entities,
    EntityByKey,
    EntityFilter,
    EntityName,
    JobByKey,
    Job(jobs::Action),
    Transaction,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        Some(match path.trim_end_matches('/') {
            "api/v3/entity" => Route::Entities,
            "api/v3/entity/key" => Route::EntityByKey,
            "api/v3/entity/filter" => Route::EntityFilter,
            "api/v3/entity/name" => Route::EntityName,
            "api/v3/jobs/key" => Route::JobByKey,
            "api/v3/jobs/start" => Route::Job(jobs::Action::Start),
            "api/v3/jobs/pause" => Route::Job(jobs::Action::Pause),
            "api/v3/jobs/end" => Route::Job(jobs::Action::End),
            "api/v3/transaction" => Route::Transaction,
            _ => return None,
        })
    }

    fn methods(self) -> &'static [Method] {
        match self {
            Route::Job(_) => &[Method::PUT],
            Route::Transaction => &[Method::POST, Method::PUT],
            _ => &[Method::GET],
        }
    }
}

async fn handle(AxumState(st): AxumState<Arc<State>>, req: Request) -> Response<Body> {
    let lower = req.uri().path().to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix("/mesmw/") else {
        return plain_not_found();
    };
    if !rest.starts_with("api/") {
        return plain_not_found();
    }
    if !declares_length(&req) {
        return length_required();
    }
    let echoed = ECHOED.map(|name| req.headers().get(name).cloned());
    let mut resp = answer(&st, rest.to_owned(), req).await;
    for (name, value) in ECHOED.into_iter().zip(echoed) {
        if let Some(value) = value {
            resp.headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    resp
}

/// HTTP.sys, under IIS, refuses a POST or PUT that says neither how long
/// its body is nor that it is chunked, before MES sees it: even an empty
/// body needs `Content-Length: 0` (RFC 9110 §8.6 asks clients for it).
fn declares_length(req: &Request) -> bool {
    let headers = req.headers();
    !matches!(*req.method(), Method::POST | Method::PUT)
        || headers.contains_key(header::CONTENT_LENGTH)
        || headers.contains_key(header::TRANSFER_ENCODING)
}

/// HTTP.sys's own 411 page.
fn length_required() -> Response<Body> {
    respond(
        StatusCode::LENGTH_REQUIRED,
        "text/html; charset=us-ascii",
        "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\"\"http://www.w3.org/TR/html4/strict.dtd\">\r\n\
         <HTML><HEAD><TITLE>Length Required</TITLE>\r\n\
         <META HTTP-EQUIV=\"Content-Type\" Content=\"text/html; charset=us-ascii\"></HEAD>\r\n\
         <BODY><h2>Length Required</h2>\r\n<hr><p>HTTP Error 411. The request must be chunked \
         or have a content length.</p>\r\n</BODY></HTML>\r\n",
    )
}

async fn answer(st: &State, path: String, req: Request) -> Response<Body> {
    if st.mes.aim_offline.load(Ordering::Relaxed) {
        return message(StatusCode::INTERNAL_SERVER_ERROR, AIM_OFFLINE);
    }
    if let Err(reason) = authorize(st, req.headers()) {
        return unauthorized(reason);
    }
    if st.mes_forbidden.load(Ordering::Relaxed) {
        return message(
            StatusCode::FORBIDDEN,
            "You do not have permission to make this request.",
        );
    }
    let uri = req.uri().to_string();
    let Some(route) = Route::of(&path) else {
        return no_resource_at(&uri);
    };
    let method = req.method().clone();
    if !route.methods().contains(&method) {
        return method_not_allowed(&method, route.methods());
    }
    let endpoint = path.trim_end_matches('/').trim_start_matches("api/v3/");
    if st.mes.is_revoked(endpoint) {
        return message(StatusCode::NOT_FOUND, NO_PRIVILEGE);
    }
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let headers = req.headers().clone();
    let Ok(body) = axum::body::to_bytes(req.into_body(), MAX_BODY).await else {
        return message(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The request body is too large.",
        );
    };
    // Header first, then the URL: AVEVA's precedence for trans_id and max_rows.
    let common = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                query
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            })
            .filter(|v| !v.is_empty())
    };
    let trans_id = common("trans_id");
    let max_rows = match common("max_rows").map(|v| v.trim().parse::<usize>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return bad_request("The request is invalid: max_rows must be a whole number.")
        }
    };
    let now = st.now_millis();
    let starts_transaction = matches!(route, Route::Transaction) && method == Method::POST;
    if let Some(id) = &trans_id {
        if !starts_transaction && !st.mes.is_open(id, now) {
            return no_transaction(id);
        }
    }
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    let call = Call {
        st,
        uri,
        query,
        trans_id,
        max_rows,
        json_body,
        body,
    };
    match route {
        Route::Entities => entities::all(&call),
        Route::EntityByKey => entities::by_key(&call),
        Route::EntityFilter => entities::filter(&call),
        Route::EntityName => entities::by_name(&call),
        Route::JobByKey => jobs::by_key(&call),
        Route::Job(action) => jobs::change(&call, action),
        Route::Transaction if starts_transaction => begin_transaction(&call),
        Route::Transaction => end_transaction(&call),
    }
}

/// `POST api/v3/transaction`: the MesTransaction model.
fn begin_transaction(call: &Call<'_>) -> Response<Body> {
    let Ok(hex) = tokens::random_hex::<16>() else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "An error has occurred.");
    };
    let id = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    let now = call.st.now_millis();
    call.st.mes.begin(id.clone(), now);
    json(
        StatusCode::OK,
        &json!({ "trans_id": id, "trans_start_utc": iso_utc(now) }),
    )
}

/// `PUT api/v3/transaction?action=commit|abort` with the `trans_id`.
/// V3_Transaction_Put: `commit` commits, "any string entry other than
/// commit" rolls back.
fn end_transaction(call: &Call<'_>) -> Response<Body> {
    let (Some(action), Some(id)) = (call.param("action"), call.trans_id.as_deref()) else {
        return no_resource(call);
    };
    let commit = action.trim().eq_ignore_ascii_case("commit");
    match call.st.mes.end(id, commit, call.st.now_millis()) {
        Ok(()) => respond(
            StatusCode::NO_CONTENT,
            "application/json; charset=utf-8",
            "",
        ),
        Err(transactions::NoSuchTransaction) => no_transaction(id),
    }
}

fn authorize(st: &State, headers: &HeaderMap) -> Result<(), &'static str> {
    // One forced rejection, whatever the token (a token revoked at AIM).
    if st.reject_next_mes.swap(false, Ordering::AcqRel) {
        return Err("the token was rejected");
    }
    let bearer = client_auth::bearer(headers).ok_or("no bearer token")?;
    tokens::validate(st, bearer)
        .map(|_| ())
        .map_err(tokens::Invalid::describe)
}

fn unauthorized(reason: &str) -> Response<Body> {
    let mut resp = message(
        StatusCode::UNAUTHORIZED,
        "Authorization has been denied for this request.",
    );
    let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{reason}\"");
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// `{"Message": text}` with `status`.
pub(crate) fn message(status: StatusCode, text: &str) -> Response<Body> {
    json(status, &json!({ "Message": text }))
}

fn bad_request(text: &str) -> Response<Body> {
    message(StatusCode::BAD_REQUEST, text)
}

/// ASP.NET Web API's 404 for a URL no action matches: an unknown endpoint
/// or a missing required parameter (AVEVA documents both as 404).
fn no_resource(call: &Call<'_>) -> Response<Body> {
    no_resource_at(&call.uri)
}

fn no_resource_at(uri: &str) -> Response<Body> {
    message(
        StatusCode::NOT_FOUND,
        &format!("No HTTP resource was found that matches the request URI '{uri}'."),
    )
}

fn no_transaction(id: &str) -> Response<Body> {
    message(
        StatusCode::NOT_FOUND,
        &format!("The transaction ID '{id}' doesn't exist: it timed out or was not started."),
    )
}

fn method_not_allowed(method: &Method, allowed: &[Method]) -> Response<Body> {
    let mut resp = message(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("The requested resource does not support http method '{method}'."),
    );
    let allow = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(v) = HeaderValue::from_str(&allow) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

/// What a path outside the MES Web API gets: a plain 404, no MES body and
/// no token check (the bearer token is MES's business only under `api/`).
fn plain_not_found() -> Response<Body> {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "Not Found",
    )
}

/// The rows of a GET, at most `max_rows` of them.
fn rows(mut rows: Vec<Map<String, Value>>, max_rows: Option<usize>) -> Response<Body> {
    if let Some(max) = max_rows {
        rows.truncate(max);
    }
    json(
        StatusCode::OK,
        &Value::Array(rows.into_iter().map(Value::Object).collect()),
    )
}

fn json_row(row: Map<String, Value>) -> Response<Body> {
    json(StatusCode::OK, &Value::Object(row))
}

/// The body as a JSON object, if it is one.
fn json_object(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(body).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Parameters every call may carry, which are not filters.
fn is_common_parameter(name: &str) -> bool {
    ["trans_id", "tz_id", "max_rows"]
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}

/// `2026-12-01T08:54:21Z` for milliseconds since the Unix epoch.
fn iso_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(1_796_028_861_000), "2026-11-30T08:54:21Z");
        assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn routes_ignore_case_and_a_trailing_slash() {
        assert!(matches!(
            Route::of("api/v3/jobs/start/"),
            Some(Route::Job(_))
        ));
        assert!(matches!(Route::of("api/v3/entity"), Some(Route::Entities)));
        assert!(Route::of("api/v3/entities").is_none());
        assert!(Route::of("api/entity").is_none(), "V1 is not emulated");
    }
}
