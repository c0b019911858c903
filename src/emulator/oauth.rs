//! The emulator's answers: OAuth errors, JSON documents, any body.

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use axum::response::IntoResponse;
use serde_json::Value;

/// An RFC 6749 §5.2 error answer, as AIM sends it: HTTP 400 (or the given
/// status) with `{"error": .., "error_description": ..}`.
#[derive(Debug)]
pub(crate) struct OAuthError {
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) description: String,
}

impl OAuthError {
    pub(crate) fn new(error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
        }
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    pub(crate) fn invalid_client(description: impl Into<String>) -> Self {
        Self::new("invalid_client", description)
    }

    /// HTTP 500 `server_error`: the emulator itself failed.
    pub(crate) fn server_error(cause: impl std::fmt::Display) -> Self {
        Self::new("server_error", cause.to_string()).with_status(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({
            "error": self.error,
            "error_description": self.description,
        });
        let mut resp = json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = format!("Bearer error=\"{}\"", self.error);
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

/// A JSON answer with `status`.
pub(crate) fn json(status: StatusCode, value: &Value) -> Response<Body> {
    respond(status, "application/json; charset=UTF-8", value.to_string())
}

/// An answer with `status`, `content_type` and `body`.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response<Body> {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A JSON answer that caches must not keep (token endpoint, RFC 6749 §5.1).
pub(crate) fn json_no_store(status: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = json(status, value);
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}
