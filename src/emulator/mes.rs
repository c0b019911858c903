//! A sliver of the MES Web API (`/mesmw/api/v3/...`) that checks bearer
//! tokens as MES does. Errors have ASP.NET Web API's `{"Message": ..}` shape.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use axum::middleware::{self, Next};
use axum::routing::{any, get, put};
use axum::Router;
use serde_json::{json, Value};

use super::client_auth;
use super::oauth::json;
use super::state::State;
use super::tokens;

/// The request headers MES clients send and this emulator echoes back, so
/// tests can see they arrived.
const ECHOED: [&str; 2] = ["trans_id", "tz_id"];

pub(crate) fn router(state: Arc<State>) -> Router<Arc<State>> {
    Router::new()
        .route("/mesmw/api/v3/entity", get(entities))
        .route("/mesmw/api/v3/Jobs/Start", put(start_job))
        .route("/mesmw/{*rest}", any(not_found))
        .layer(middleware::from_fn_with_state(state, guard))
}

/// Bearer check, forced rejections, privilege check and header echo,
/// around every MES route.
async fn guard(AxumState(st): AxumState<Arc<State>>, req: Request, next: Next) -> Response<Body> {
    let echoed = ECHOED.map(|name| req.headers().get(name).cloned());

    let mut resp = match authorize(&st, req.headers()) {
        Err(reason) => unauthorized(reason),
        Ok(()) if st.mes_forbidden.load(Ordering::Relaxed) => message(
            StatusCode::FORBIDDEN,
            "User 'Default Background User' does not have the privilege required to perform this operation. \
             Grant the privilege to the user's role in MES Client (system attribute 199).",
        ),
        Ok(()) => next.run(req).await,
    };
    for (name, value) in ECHOED.into_iter().zip(echoed) {
        if let Some(value) = value {
            resp.headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    resp
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

fn message(status: StatusCode, text: &str) -> Response<Body> {
    json(status, &json!({ "Message": text }))
}

async fn entities() -> Response<Body> {
    json(
        StatusCode::OK,
        &json!([
            {"id": 1, "name": "Site1", "description": "Plant site"},
            {"id": 2, "name": "Line1", "description": "Packaging line 1"},
            {"id": 3, "name": "Filler1", "description": "Bottle filler on line 1"},
            {"id": 4, "name": "Labeler1", "description": "Labeler on line 1"},
        ]),
    )
}

async fn start_job(headers: HeaderMap, body: Bytes) -> Response<Body> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let job = serde_json::from_slice::<Value>(&body).ok();
    // ASP.NET model binding matches member names case-insensitively.
    let job_id = job
        .as_ref()
        .and_then(Value::as_object)
        .and_then(|j| j.iter().find(|(k, _)| k.eq_ignore_ascii_case("jobId")))
        .map(|(_, id)| id)
        .filter(|id| id.is_string() || id.is_number());
    match job_id {
        Some(job_id) if is_json => json(
            StatusCode::OK,
            &json!({"jobId": job_id, "state": "Running", "message": "Job started"}),
        ),
        _ => message(
            StatusCode::BAD_REQUEST,
            "The request is invalid: the body must be a JSON object with a \"jobId\".",
        ),
    }
}

async fn not_found(req: Request) -> Response<Body> {
    message(
        StatusCode::NOT_FOUND,
        &format!(
            "No HTTP resource was found that matches the request URI '{}'.",
            req.uri().path()
        ),
    )
}
