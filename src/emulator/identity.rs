//! The AIM (IdentityServer) routes under `/identitymanager`: discovery,
//! JWKS, the token endpoint and introspection.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::client_auth::{self, Form};
use super::oauth::{json, json_no_store, OAuthError};
use super::state::State;
use super::{tokens, EmulatorClient, ExpiresInFormat};

type St = AxumState<Arc<State>>;

pub(crate) fn router() -> Router<Arc<State>> {
    Router::new()
        .route(
            "/identitymanager/.well-known/openid-configuration",
            get(discovery),
        )
        .route(
            "/identitymanager/.well-known/openid-configuration/jwks",
            get(jwks),
        )
        .route("/identitymanager/connect/token", post(token))
        .route("/identitymanager/connect/introspect", post(introspect))
}

async fn discovery(AxumState(st): St) -> Response<Body> {
    if !st.discovery {
        return StatusCode::NOT_FOUND.into_response();
    }
    let issuer = &st.issuer;
    let mut doc = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/openid-configuration/jwks"),
        "authorization_endpoint": format!("{issuer}/connect/authorize"),
        "token_endpoint": format!("{issuer}/connect/token"),
        "introspection_endpoint": format!("{issuer}/connect/introspect"),
        "scopes_supported": st.scopes_supported(),
        "claims_supported": ["sub", "name", "client_id", "scope"],
        "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token", "implicit"],
        "response_types_supported": ["code", "token", "id_token", "id_token token", "code id_token"],
        "response_modes_supported": ["form_post", "query", "fragment"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["plain", "S256"],
    });
    if st.initial_access_token.is_some() {
        doc["registration_endpoint"] = Value::from(format!("{issuer}/connect/register"));
    }
    json(StatusCode::OK, &doc)
}

async fn jwks(AxumState(st): St) -> Response<Body> {
    json(StatusCode::OK, &st.key.jwks())
}

async fn token(AxumState(st): St, headers: HeaderMap, body: Bytes) -> Response<Body> {
    match issue_token(&st, &headers, &body) {
        Ok(resp) => resp,
        Err(err) => err.into_response(),
    }
}

/// Grant types IdentityServer knows but that AIM clients for MES are not
/// allowed: `unauthorized_client`. Anything else is `unsupported_grant_type`.
const KNOWN_GRANT_TYPES: &[&str] = &[
    "authorization_code",
    "password",
    "refresh_token",
    "implicit",
    "hybrid",
    "urn:ietf:params:oauth:grant-type:device_code",
];

fn issue_token(st: &State, headers: &HeaderMap, body: &[u8]) -> Result<Response<Body>, OAuthError> {
    let form = Form::from_request(headers, body)?;
    let client = authenticate(st, headers, &form)?;

    match form.get("grant_type") {
        Some("client_credentials") => {}
        Some(g) if KNOWN_GRANT_TYPES.contains(&g) => {
            return Err(OAuthError::new(
                "unauthorized_client",
                format!("the client is not allowed the grant type '{g}'"),
            ))
        }
        Some(g) => {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                format!("grant type '{g}' is not supported"),
            ))
        }
        None => {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                "grant_type is missing",
            ))
        }
    }

    let scopes = granted_scopes(&client, form.get("scope"))?;
    let lifetime = client.lifetime.unwrap_or_else(|| st.lifetime());
    let issued =
        tokens::issue(st, &client.id, &scopes, lifetime).map_err(OAuthError::server_error)?;
    st.counters.token_issued();

    let mut answer = json!({
        "access_token": issued.jwt,
        "token_type": "Bearer",
        "scope": scopes.join(" "),
    });
    match st.expires_in_format {
        ExpiresInFormat::Number => answer["expires_in"] = Value::from(issued.lifetime_secs),
        ExpiresInFormat::String => {
            answer["expires_in"] = Value::from(issued.lifetime_secs.to_string())
        }
        ExpiresInFormat::Missing => {}
    }
    Ok(json_no_store(StatusCode::OK, &answer))
}

/// The client a token or introspection request authenticates as, if it
/// exists, is enabled and the secret matches.
fn authenticate(
    st: &State,
    headers: &HeaderMap,
    form: &Form,
) -> Result<EmulatorClient, OAuthError> {
    let creds = client_auth::credentials(headers, form)?;
    let client = st
        .client(&creds.id)
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    if !client.enabled {
        return Err(OAuthError::invalid_client("the client is disabled"));
    }
    let secret_ok = aws_lc_rs::constant_time::verify_slices_are_equal(
        client.secret.as_bytes(),
        creds.secret.as_bytes(),
    )
    .is_ok();
    if !secret_ok {
        return Err(OAuthError::invalid_client("invalid client secret"));
    }
    Ok(client)
}

/// The scopes to grant: all of the client's when none are requested,
/// else the requested ones if the client may have every one of them.
fn granted_scopes(
    client: &EmulatorClient,
    requested: Option<&str>,
) -> Result<Vec<String>, OAuthError> {
    let Some(requested) = requested else {
        return Ok(client.scopes.clone());
    };
    let mut granted: Vec<String> = Vec::new();
    for scope in requested.split_ascii_whitespace() {
        if !client.scopes.iter().any(|s| s == scope) {
            return Err(OAuthError::new(
                "invalid_scope",
                format!("the client is not allowed the scope '{scope}'"),
            ));
        }
        if !granted.iter().any(|s| s == scope) {
            granted.push(scope.to_owned());
        }
    }
    if granted.is_empty() {
        return Ok(client.scopes.clone());
    }
    Ok(granted)
}

async fn introspect(AxumState(st): St, headers: HeaderMap, body: Bytes) -> Response<Body> {
    match introspection(&st, &headers, &body) {
        Ok(resp) => resp,
        Err(err) => err.into_response(),
    }
}

/// RFC 7662: the caller authenticates like at the token endpoint.
fn introspection(
    st: &State,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response<Body>, OAuthError> {
    let form = Form::from_request(headers, body)?;
    authenticate(st, headers, &form).map_err(|e| e.with_status(StatusCode::UNAUTHORIZED))?;
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    let answer = match tokens::validate(st, token) {
        Ok(claims) => {
            let mut answer = json!({"active": true, "token_type": "access_token"});
            for (name, value) in claims {
                // RFC 7662 §2.2: `scope` is a space-separated string.
                let value = match (name.as_str(), value) {
                    ("scope", Value::Array(scopes)) => Value::from(
                        scopes
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    (_, value) => value,
                };
                answer[name] = value;
            }
            answer
        }
        Err(_) => json!({"active": false}),
    };
    Ok(json(StatusCode::OK, &answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_default_subset_and_refusal() {
        let client = EmulatorClient {
            scopes: vec!["site.api".into(), "site.read".into()],
            ..EmulatorClient::new("a", "b")
        };
        assert_eq!(granted_scopes(&client, None).unwrap(), client.scopes);
        assert_eq!(granted_scopes(&client, Some("  ")).unwrap(), client.scopes);
        assert_eq!(
            granted_scopes(&client, Some("site.api site.api")).unwrap(),
            vec!["site.api".to_owned()]
        );
        let err = granted_scopes(&client, Some("site.api admin")).unwrap_err();
        assert_eq!(err.error, "invalid_scope");
    }
}
