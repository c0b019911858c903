//! Interop tests against a real, independently written OpenID provider: the
//! npm package `oidc-provider` (pinned in `tests/interop/package-lock.json`),
//! run by Node on 127.0.0.1 and shaped like AIM by `tests/interop/server.mjs`
//! (`/identitymanager`, `/connect/token`, RS256 JWT access tokens).
//!
//! Every test starts its own peer (about 0.4 s), so request counts belong to
//! that test alone. Without Node/npm the tests fail, saying what to install
//! (never reported as passed; see `tests/support/peer.rs`).

#[path = "support/peer.rs"]
mod peer;

use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use aim_token::{
    AccessToken, AimClient, AimClientBuilder, ClientAuthMethod, ClientRegistration, Error,
    ErrorKind,
};
use base64::Engine as _;
use peer::{Peer, PeerClient, PeerOptions, TestCa};

/// A secret that breaks every naive encoder: form (`&`, `+`, `=`, `%`, space)
/// and Basic (`:`) alike.
const SECRET: &str = "P@ss w0rd&+=%:/?#";
/// A client ID that breaks an unencoded form body.
const POST_ID: &str = "mes post&id=1+x";
/// A client ID that breaks an unencoded Basic header (`:`) and needs `%20`.
const BASIC_ID: &str = "mes:basic client%";
const SCOPE: &str = "mes.api";
/// Known to the server, not allowed for the clients.
const OTHER_SCOPE: &str = "mes.admin";
const TTL: u64 = 3600;

fn clients() -> Vec<PeerClient> {
    vec![
        PeerClient {
            client_id: POST_ID.into(),
            client_secret: SECRET.into(),
            auth_method: "client_secret_post",
            scope: SCOPE.into(),
        },
        PeerClient {
            client_id: BASIC_ID.into(),
            client_secret: SECRET.into(),
            auth_method: "client_secret_basic",
            scope: SCOPE.into(),
        },
    ]
}

fn options(tls: bool) -> PeerOptions {
    PeerOptions {
        clients: clients(),
        scopes: vec![SCOPE.into(), OTHER_SCOPE.into()],
        access_token_ttl: TTL,
        tls,
        ..PeerOptions::default()
    }
}

/// Starts a peer; fails the test when Node/npm are unavailable.
macro_rules! start_peer {
    ($options:expr) => {
        match peer::start($options) {
            Some(peer) => peer,
            None => return,
        }
    };
}

/// A builder for `client_id` against `peer`, trusting the peer's CA when it
/// serves https. Short retry bounds so a wrongly retried error shows up as
/// extra requests, not as a hung test.
fn client_for(peer: &Peer, client_id: &str, method: ClientAuthMethod) -> AimClientBuilder {
    let mut builder = AimClient::builder()
        .authority(peer.issuer())
        .client_id(client_id)
        .client_secret(SECRET)
        .scope(SCOPE)
        .auth_method(method)
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .retry_deadline(Duration::from_secs(5));
    if peer.issuer().starts_with("https:") {
        builder = builder.root_certificate_pem(peer.ca_pem());
    }
    builder
}

/// The claims of a JWT access token (signature not checked: the peer made it).
fn jwt_claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT access token");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// A usable bearer token for `client_id`, issued by this peer, with the
/// granted scope and an expiry about `TTL` ahead.
fn assert_good_token(token: &AccessToken, peer: &Peer, client_id: &str) {
    assert!(!token.secret().is_empty(), "empty access token");
    assert!(
        token.token_type().eq_ignore_ascii_case("bearer"),
        "token type {}",
        token.token_type()
    );
    let now = SystemTime::now();
    let expires_at = token.expires_at();
    assert!(
        expires_at > now + Duration::from_secs(TTL - 120),
        "expiry not ~{TTL}s ahead: {expires_at:?} (now {now:?})"
    );
    assert!(
        expires_at <= now + Duration::from_secs(TTL + 5),
        "expiry beyond the granted lifetime: {expires_at:?} (now {now:?})"
    );
    assert_eq!(token.scopes(), [SCOPE]);

    // The peer says who it authenticated: proves the ID survived encoding.
    let claims = jwt_claims(token.secret());
    assert_eq!(claims["client_id"], client_id);
    assert_eq!(claims["iss"], peer.issuer());
    assert_eq!(claims["scope"], SCOPE);

    assert!(!format!("{token:?}").contains(token.secret()));
}

async fn gets_token(tls: bool, client_id: &str, method: ClientAuthMethod) {
    let peer = start_peer!(options(tls));
    let aim = client_for(&peer, client_id, method).build().unwrap();

    let token = aim
        .token()
        .await
        .unwrap_or_else(|e| panic!("{e:?}\npeer stderr:\n{}", peer.stderr()));
    assert_good_token(&token, &peer, client_id);

    // Cached: the second call does not ask again.
    let again = aim.token().await.unwrap();
    assert!(again.same_as(&token));
    let stats = peer.stats().await;
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!(stats.token_successes, 1, "{stats:?}");
    // Discovery found the token endpoint (the authority is the issuer).
    assert!(stats.discovery_requests >= 1, "{stats:?}");
}

#[tokio::test]
async fn post_over_http_gets_token() {
    gets_token(false, POST_ID, ClientAuthMethod::Post).await;
}

#[tokio::test]
async fn post_over_https_gets_token() {
    gets_token(true, POST_ID, ClientAuthMethod::Post).await;
}

#[tokio::test]
async fn basic_over_http_gets_token() {
    gets_token(false, BASIC_ID, ClientAuthMethod::Basic).await;
}

#[tokio::test]
async fn basic_over_https_gets_token() {
    gets_token(true, BASIC_ID, ClientAuthMethod::Basic).await;
}

/// `err` is the permanent OAuth `error` of AIM's shape (never retried),
/// and the peer saw `requests` token requests, one of them answered `error`.
async fn assert_permanent(
    err: &Error,
    error: &str,
    status: Option<u16>,
    peer: &Peer,
    requests: u64,
) {
    assert_eq!(err.kind(), ErrorKind::OAuth, "{err:?}");
    assert_eq!(err.oauth_error(), Some(error), "{err:?}");
    if let Some(status) = status {
        assert_eq!(err.status(), Some(status), "{err:?}");
    }
    assert!(!err.is_transient(), "{err:?}");
    let stats = peer.stats().await;
    assert_eq!(stats.token_requests, requests, "{stats:?}");
    assert_eq!(stats.token_errors.get(error), Some(&1), "{stats:?}");
}

async fn wrong_secret_is_invalid_client(tls: bool, client_id: &str, method: ClientAuthMethod) {
    let peer = start_peer!(options(tls));
    let wrong = "Wr0ng s3cret&=%";
    let aim = client_for(&peer, client_id, method)
        .client_secret(wrong)
        .build()
        .unwrap();

    let err = aim.token().await.unwrap_err();
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains(wrong), "secret leaked: {shown}");
    }
    // oidc-provider answers 401; exactly one request: a permanent error is
    // not retried.
    assert_permanent(&err, "invalid_client", Some(401), &peer, 1).await;
}

#[tokio::test]
async fn wrong_secret_post_is_invalid_client_and_not_retried() {
    wrong_secret_is_invalid_client(false, POST_ID, ClientAuthMethod::Post).await;
}

#[tokio::test]
async fn wrong_secret_basic_is_invalid_client_and_not_retried() {
    wrong_secret_is_invalid_client(true, BASIC_ID, ClientAuthMethod::Basic).await;
}

#[tokio::test]
async fn disallowed_scope_is_invalid_scope_and_not_retried() {
    let peer = start_peer!(options(false));
    let aim = client_for(&peer, POST_ID, ClientAuthMethod::Post)
        .scope(OTHER_SCOPE)
        .build()
        .unwrap();

    let err = aim.token().await.unwrap_err();
    assert_permanent(&err, "invalid_scope", Some(400), &peer, 1).await;
}

#[tokio::test]
async fn a_crowd_meeting_a_permanent_error_sends_one_request() {
    let peer = start_peer!(options(false));
    let aim = client_for(&peer, POST_ID, ClientAuthMethod::Post)
        .client_secret("wrong")
        .error_cooldown(Duration::from_secs(60))
        .build()
        .unwrap();

    let calls: Vec<_> = (0..32)
        .map(|_| {
            let aim = aim.clone();
            tokio::spawn(async move { aim.token().await })
        })
        .collect();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.oauth_error(), Some("invalid_client"), "{err:?}");
    }
    // And once more after the crowd: still remembered.
    let err = aim.token().await.unwrap_err();
    assert_eq!(err.oauth_error(), Some("invalid_client"), "{err:?}");

    let stats = peer.stats().await;
    assert_eq!(stats.token_requests, 1, "{stats:?}");
}

#[tokio::test]
async fn untrusted_ca_is_a_tls_error() {
    let peer = start_peer!(options(true));
    let stranger = TestCa::new("some other CA");
    let untrusted = [
        ("OS trust store only", None),
        ("another CA", Some(stranger.ca_pem.clone())),
    ];
    for (label, extra_ca) in untrusted {
        let mut builder = AimClient::builder()
            .authority(peer.issuer())
            .client_id(POST_ID)
            .client_secret(SECRET)
            .scope(SCOPE)
            .retry_deadline(Duration::from_secs(5));
        if let Some(pem) = extra_ca {
            builder = builder.root_certificate_pem(pem);
        }
        let aim = builder.build().unwrap();
        let err = aim.token().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls, "{label}: {err:?}");
        let message = err.to_string();
        assert!(
            message.contains("root_certificate_pem") || message.contains("AIM_CA_CERT"),
            "{label}: the message should name the fix: {message}"
        );
    }
    // Nothing got through the handshake.
    let stats = peer.stats().await;
    assert_eq!(stats.token_requests, 0, "{stats:?}");
    assert_eq!(stats.discovery_requests, 0, "{stats:?}");

    // The CA that issued the certificate makes it work.
    let aim = client_for(&peer, POST_ID, ClientAuthMethod::Post)
        .build()
        .unwrap();
    let token = aim.token().await.unwrap();
    assert_good_token(&token, &peer, POST_ID);
}

#[tokio::test]
async fn authority_without_path_finds_identitymanager() {
    let peer = start_peer!(options(false));
    let host = format!("http://127.0.0.1:{}", peer.urls().port);
    let aim = AimClient::builder()
        .authority(&host)
        .client_id(POST_ID)
        .client_secret(SECRET)
        .scope(SCOPE)
        .build()
        .unwrap();
    let token = aim.token().await.unwrap();
    assert_good_token(&token, &peer, POST_ID);
}

/// The issuer in oidc-provider's discovery must match the authority: a
/// trailing slash or scheme case does not matter, another host name does,
/// and then no credentials are sent.
#[tokio::test]
async fn discovery_issuer_is_checked() {
    let peer = start_peer!(options(false));
    let port = peer.urls().port;
    let aim = AimClient::builder()
        .authority(format!("HTTP://127.0.0.1:{port}/identitymanager/"))
        .client_id(POST_ID)
        .client_secret(SECRET)
        .scope(SCOPE)
        .build()
        .unwrap();
    let token = aim.token().await.unwrap();
    assert_good_token(&token, &peer, POST_ID);

    // Same server, but not the name it calls itself.
    let aim = AimClient::builder()
        .authority(format!("http://localhost:{port}/identitymanager"))
        .client_id(POST_ID)
        .client_secret(SECRET)
        .scope(SCOPE)
        .retry_deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = aim.token().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err:?}");
    assert!(err.to_string().contains("issuer"), "{err}");

    let stats = peer.stats().await;
    assert_eq!(
        stats.token_requests, 1,
        "only the first client asked: {stats:?}"
    );
}

#[tokio::test]
async fn explicit_token_endpoint_skips_discovery() {
    let peer = start_peer!(options(false));
    let aim = client_for(&peer, BASIC_ID, ClientAuthMethod::Basic)
        .token_endpoint(&peer.urls().token_endpoint)
        .build()
        .unwrap();
    let token = aim.token().await.unwrap();
    assert_good_token(&token, &peer, BASIC_ID);

    let stats = peer.stats().await;
    assert_eq!(stats.discovery_requests, 0, "{stats:?}");
    assert_eq!(stats.token_requests, 1, "{stats:?}");
}

/// AIM clients often ask for no scope at all: the token still comes.
#[tokio::test]
async fn no_scope_requested_still_gets_a_token() {
    let peer = start_peer!(options(false));
    let aim = AimClient::builder()
        .authority(peer.issuer())
        .client_id(POST_ID)
        .client_secret(SECRET)
        .build()
        .unwrap();
    let token = aim.token().await.unwrap();
    assert!(!token.secret().is_empty());
    assert!(token.expires_at() > SystemTime::now() + Duration::from_secs(TTL - 120));
    assert_eq!(jwt_claims(token.secret())["client_id"], POST_ID);
    // oidc-provider grants no scope unless asked (AIM grants the client's
    // allowed scopes): nothing granted, nothing claimed.
    assert!(token.scopes().is_empty(), "{:?}", token.scopes());
}

/// Extra form parameters reach the provider: oidc-provider implements
/// RFC 8707 resource indicators, so `resource` decides the token's audience,
/// and an unknown one is a permanent `invalid_target`.
#[tokio::test]
async fn resource_form_param_reaches_the_provider() {
    let peer = start_peer!(options(false));
    let aim = client_for(&peer, POST_ID, ClientAuthMethod::Post)
        .form_param("resource", "urn:aveva:mes")
        .build()
        .unwrap();
    let token = aim.token().await.unwrap();
    assert_good_token(&token, &peer, POST_ID);
    assert_eq!(jwt_claims(token.secret())["aud"], "urn:aveva:mes");

    let aim = client_for(&peer, POST_ID, ClientAuthMethod::Post)
        .form_param("resource", "urn:somewhere:else")
        .build()
        .unwrap();
    let err = aim.token().await.unwrap_err();
    assert_permanent(&err, "invalid_target", None, &peer, 2).await;
}

/// Redundant AIM nodes (RSSO) do not share tokens: when the node that issued
/// the token goes away, the client gets a new one from the fallback node.
#[tokio::test]
async fn failover_to_a_second_provider() {
    let primary = start_peer!(options(false));
    let secondary = start_peer!(options(false));
    let aim = client_for(&primary, POST_ID, ClientAuthMethod::Post)
        .fallback_authority(secondary.issuer())
        .build()
        .unwrap();

    let first = aim.token().await.unwrap();
    assert_good_token(&first, &primary, POST_ID);

    drop(primary); // the node is gone: connections are refused
                   // refresh() answers with a token younger than min_refresh_interval (1 s).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = aim.refresh().await.unwrap();
    assert_good_token(&second, &secondary, POST_ID);
    assert_eq!(
        second.authority().trim_end_matches('/'),
        secondary.issuer(),
        "the token says which node issued it"
    );
    assert!(aim.stats().failovers >= 1, "{:?}", aim.stats());
    let stats = secondary.stats().await;
    assert_eq!(stats.token_requests, 1, "{stats:?}");
}

#[tokio::test]
async fn many_callers_share_one_token_request() {
    let peer = start_peer!(options(true));
    let aim = client_for(&peer, POST_ID, ClientAuthMethod::Post)
        .build()
        .unwrap();
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let aim = aim.clone();
            tokio::spawn(async move { aim.token().await })
        })
        .collect();
    let mut tokens = Vec::new();
    for call in calls {
        tokens.push(call.await.unwrap().unwrap());
    }
    assert!(tokens.iter().all(|t| t.secret() == tokens[0].secret()));
    let stats = peer.stats().await;
    assert_eq!(stats.token_requests, 1, "{stats:?}");
}

#[tokio::test]
async fn refresh_fetches_a_new_token() {
    let peer = start_peer!(options(false));
    let aim = client_for(&peer, POST_ID, ClientAuthMethod::Post)
        .build()
        .unwrap();
    let first = aim.token().await.unwrap();
    // refresh() answers with a token younger than min_refresh_interval (1 s).
    assert!(aim.refresh().await.unwrap().same_as(&first));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = aim.refresh().await.unwrap();
    assert_good_token(&second, &peer, POST_ID);
    assert_ne!(
        jwt_claims(first.secret())["jti"],
        jwt_claims(second.secret())["jti"]
    );
    let stats = peer.stats().await;
    assert_eq!(stats.token_requests, 2, "{stats:?}");
}

/// RFC 7591 registration at the peer (raw HTTP, as any registration client
/// would), then a token with the issued credentials through the crate.
#[tokio::test]
async fn dynamically_registered_client_gets_token() {
    let iat = "iat-9f8e3c1d-interop";
    let peer = start_peer!(PeerOptions {
        initial_access_token: Some(iat.into()),
        ..options(true)
    });
    let http = peer.http_client();
    let registration_endpoint = peer.urls().registration_endpoint.clone().unwrap();
    let body = serde_json::json!({
        "client_name": "aim-token interop",
        "grant_types": ["client_credentials"],
        "response_types": [],
        "redirect_uris": [],
        "token_endpoint_auth_method": "client_secret_post",
        "scope": SCOPE,
    });

    let refused = http
        .post(&registration_endpoint)
        .bearer_auth("not-the-initial-access-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let response = http
        .post(&registration_endpoint)
        .bearer_auth(iat)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let registered: serde_json::Value = response.json().await.unwrap();
    let client_id = registered["client_id"].as_str().unwrap();
    let secret = registered["client_secret"].as_str().unwrap();

    let aim = AimClient::builder()
        .authority(peer.issuer())
        .client_id(client_id)
        .client_secret(secret)
        .scope(SCOPE)
        .root_certificate_pem(peer.ca_pem())
        .build()
        .unwrap();
    let token = aim.token().await.unwrap();
    assert_good_token(&token, &peer, client_id);
    assert_eq!(peer.stats().await.registration_requests, 2);
}

/// The crate's RFC 7591 client against the peer: register, then the issued
/// credentials get a token; a wrong initial access token is refused.
#[tokio::test]
async fn client_registration_registers_and_verifies() {
    let iat = "iat-5b0c77e1-interop";
    let peer = start_peer!(PeerOptions {
        initial_access_token: Some(iat.into()),
        ..options(true)
    });
    let connect = || {
        AimClient::builder()
            .authority(peer.issuer())
            .root_certificate_pem(peer.ca_pem())
    };
    let registration = ClientRegistration::new("mes-reporting")
        .name("MES reporting (interop)")
        .scopes([SCOPE]);

    let err = registration
        .register(&connect(), "not-the-initial-access-token")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OAuth, "{err:?}");
    assert_eq!(err.oauth_error(), Some("invalid_token"), "{err:?}");

    let registered = registration
        .register(&connect(), iat)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\npeer stderr:\n{}", peer.stderr()));
    let secret = registered.client_secret().expect("an issued secret");
    assert!(!format!("{registered:?}").contains(secret));

    let verification = registered
        .verify(connect(), &[SCOPE.to_owned()])
        .await
        .unwrap();
    assert_eq!(verification.client_id, registered.client_id());
    assert_eq!(verification.scopes, [SCOPE]);
    assert_eq!(verification.lifetime, Duration::from_secs(TTL));

    let aim = connect()
        .client_id(registered.client_id())
        .client_secret(secret)
        .scope(SCOPE)
        .build()
        .unwrap();
    let token = aim.token().await.unwrap();
    assert_good_token(&token, &peer, registered.client_id());
    assert_eq!(peer.stats().await.registration_requests, 2);
}

/// The peer on its own, through plain reqwest: proves it is AIM-shaped and
/// decodes encoded credentials, so a failure above is the crate's.
#[tokio::test]
async fn peer_is_aim_shaped() {
    let peer = start_peer!(options(true));
    let http = peer.http_client();
    let discovery: serde_json::Value = http
        .get(&peer.urls().discovery)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let port = peer.urls().port;
    assert_eq!(
        discovery["issuer"],
        format!("https://127.0.0.1:{port}/identitymanager")
    );
    assert_eq!(
        discovery["token_endpoint"],
        format!("https://127.0.0.1:{port}/identitymanager/connect/token")
    );
    let methods = discovery["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(methods.contains(&"client_secret_post".into()));
    assert!(methods.contains(&"client_secret_basic".into()));

    let answer: serde_json::Value = http
        .post(&peer.urls().token_endpoint)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", POST_ID),
            ("client_secret", SECRET),
            ("scope", SCOPE),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["expires_in"], TTL);
    assert_eq!(answer["scope"], SCOPE);
    let claims = jwt_claims(answer["access_token"].as_str().unwrap());
    assert_eq!(claims["client_id"], POST_ID);
}

#[test]
fn peer_stops_when_dropped() {
    let peer = start_peer!(options(false));
    let address = ("127.0.0.1", peer.urls().port);
    TcpStream::connect(address).expect("the peer listens");
    drop(peer);
    // Killed and reaped in drop: nothing listens any more.
    assert!(TcpStream::connect(address).is_err());
}
