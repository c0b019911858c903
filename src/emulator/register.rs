//! Dynamic client registration (RFC 7591) behind an initial access token,
//! and reading a registration back (RFC 7592 §2.1).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::client_auth;
use super::oauth::{json, OAuthError};
use super::state::State;
use super::tokens::{random_bytes, random_hex};
use super::EmulatorClient;

type St = AxumState<Arc<State>>;

pub(crate) fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/identitymanager/connect/register", post(register))
        .route("/identitymanager/connect/register/{client_id}", get(read))
}

/// The registrations made through the endpoint, by client ID: the answer
/// to send back on read, and the token that allows reading it.
#[derive(Default)]
pub(crate) struct Registrations(RwLock<HashMap<String, (String, Value)>>);

/// The RFC 7591 request members the emulator understands.
#[derive(Deserialize)]
struct Metadata {
    client_name: Option<String>,
    grant_types: Option<Vec<String>>,
    scope: Option<String>,
    token_endpoint_auth_method: Option<String>,
    /// Extension: the ID to register (AIM's cmdlet takes one); generated if absent.
    client_id: Option<String>,
    /// Extension: the token lifetime in seconds (the cmdlet's `-AccessTokenLifetime`).
    access_token_lifetime: Option<u64>,
}

fn invalid_metadata(description: impl Into<String>) -> OAuthError {
    OAuthError::new("invalid_client_metadata", description)
}

/// The bearer token of `headers`, if it is `expected` (compared in constant time).
fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    client_auth::bearer(headers).is_some_and(|token| {
        aws_lc_rs::constant_time::verify_slices_are_equal(token.as_bytes(), expected.as_bytes())
            .is_ok()
    })
}

fn invalid_token() -> Response<Body> {
    OAuthError::new(
        "invalid_token",
        "the initial access token is missing or wrong",
    )
    .with_status(StatusCode::UNAUTHORIZED)
    .into_response()
}

async fn register(AxumState(st): St, headers: HeaderMap, body: Bytes) -> Response<Body> {
    let Some(initial) = st.initial_access_token.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !bearer_matches(&headers, initial) {
        return invalid_token();
    }
    match create(&st, &body) {
        Ok(answer) => json(StatusCode::CREATED, &answer),
        Err(err) => err.into_response(),
    }
}

fn create(st: &State, body: &[u8]) -> Result<Value, OAuthError> {
    let meta: Metadata = serde_json::from_slice(body)
        .map_err(|e| invalid_metadata(format!("the body is not valid client metadata: {e}")))?;
    let grant_types = meta
        .grant_types
        .unwrap_or_else(|| vec!["client_credentials".to_owned()]);
    if grant_types.iter().any(|g| g != "client_credentials") {
        return Err(invalid_metadata(
            "only the client_credentials grant type can be registered",
        ));
    }
    let auth_method = meta
        .token_endpoint_auth_method
        .unwrap_or_else(|| "client_secret_basic".to_owned());
    if !matches!(
        auth_method.as_str(),
        "client_secret_basic" | "client_secret_post"
    ) {
        return Err(invalid_metadata(format!(
            "token_endpoint_auth_method '{auth_method}' is not supported"
        )));
    }
    let client_id = match meta.client_id {
        Some(id) if id.is_empty() => return Err(invalid_metadata("client_id is empty")),
        Some(id) => id,
        None => format!(
            "client-{}",
            random_hex::<8>().map_err(OAuthError::server_error)?
        ),
    };
    let mut client = EmulatorClient::new(client_id.clone(), random_secret()?);
    if let Some(scope) = meta.scope.as_deref() {
        client.scopes = scope.split_ascii_whitespace().map(str::to_owned).collect();
    }
    client.lifetime = meta.access_token_lifetime.map(Duration::from_secs);
    let scope = client.scopes.join(" ");
    let secret = client.secret.clone();
    if !st.insert_new_client(client) {
        return Err(invalid_metadata(format!(
            "a client with the ID '{client_id}' already exists"
        )));
    }

    let registration_token = random_secret()?;
    let client_id_path: String =
        url::form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
    let mut answer = json!({
        "client_id": client_id,
        "client_secret": secret,
        "client_id_issued_at": st.now_secs(),
        "client_secret_expires_at": 0,
        "registration_access_token": registration_token,
        "registration_client_uri": format!("{}/connect/register/{client_id_path}", st.authority),
        "grant_types": grant_types,
        "scope": scope,
        "token_endpoint_auth_method": auth_method,
    });
    if let Some(name) = meta.client_name {
        answer["client_name"] = Value::from(name);
    }
    if let Some(secs) = meta.access_token_lifetime {
        answer["access_token_lifetime"] = Value::from(secs);
    }
    st.registrations
        .0
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(client_id, (registration_token, answer.clone()));
    Ok(answer)
}

async fn read(
    AxumState(st): St,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    if st.initial_access_token.is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let found = st
        .registrations
        .0
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&client_id)
        .cloned();
    match found {
        Some((token, answer)) if bearer_matches(&headers, &token) => json(StatusCode::OK, &answer),
        // RFC 7592 §2.1: an unknown client and a wrong token look the same.
        _ => invalid_token(),
    }
}

/// 256 random bits, URL-safe: a client secret or registration token.
fn random_secret() -> Result<String, OAuthError> {
    let bytes = random_bytes::<32>().map_err(OAuthError::server_error)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_256_bit_url_safe() {
        let a = random_secret().unwrap();
        assert_eq!(a.len(), 43);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a, random_secret().unwrap());
    }
}
