//! The AIM + MES emulator, driven over real HTTP with plain reqwest.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aim_token::emulator::{AimEmulator, EmulatorClient, Endpoint, ExpiresInFormat, Fault};
use aim_token::TokioClock;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde_json::Value;

const ID: &str = AimEmulator::CLIENT_ID;
const SECRET: &str = AimEmulator::CLIENT_SECRET;

/// The default client's `client_secret_post` token request.
const CLIENT_CREDENTIALS: [(&str, &str); 3] = [
    ("grant_type", "client_credentials"),
    ("client_id", ID),
    ("client_secret", SECRET),
];

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A client that trusts the CA of an https emulator.
fn trusting(aim: &AimEmulator) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(aim.ca_pem().unwrap().as_bytes()).unwrap();
    // Only the emulator's CA (rustls' WebPKI): also runs under Wine, whose
    // CryptoAPI refuses the platform verifier's extra-root chain engine.
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .build()
        .unwrap()
}

fn discovery_url(aim: &AimEmulator) -> String {
    format!("{}/.well-known/openid-configuration", aim.authority())
}

fn jwks_url(aim: &AimEmulator) -> String {
    format!("{}/.well-known/openid-configuration/jwks", aim.authority())
}

/// GET `url` (http) and parse the answer as JSON.
async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> T {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

/// `Basic base64(urlencode(id):urlencode(secret))`, RFC 6749 §2.3.1.
fn basic(id: &str, secret: &str) -> String {
    let pair = format!(
        "{}:{}",
        utf8_percent_encode(id, NON_ALPHANUMERIC),
        utf8_percent_encode(secret, NON_ALPHANUMERIC)
    );
    format!("Basic {}", STANDARD.encode(pair))
}

async fn post_token(aim: &AimEmulator, form: &[(&str, &str)]) -> reqwest::Response {
    http()
        .post(aim.token_endpoint())
        .form(form)
        .send()
        .await
        .unwrap()
}

/// The default client's token request (post), unanswered when a fault drops it.
async fn cc(aim: &AimEmulator) -> reqwest::Result<reqwest::Response> {
    http()
        .post(aim.token_endpoint())
        .form(&CLIENT_CREDENTIALS)
        .send()
        .await
}

/// A token for the default client (post).
async fn token(aim: &AimEmulator) -> String {
    let resp = cc(aim).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// Asserts an IdentityServer-shaped 400 with `error`.
async fn assert_oauth_error(resp: reqwest::Response, error: &str) {
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "for {error}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], error);
    assert!(body["error_description"].is_string());
}

async fn mes_get(aim: &AimEmulator, path: &str, bearer: Option<&str>) -> reqwest::Response {
    let mut req = http().get(format!("{}{path}", aim.mes_base()));
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

fn assert_invalid_token(resp: &reqwest::Response) {
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()[WWW_AUTHENTICATE].to_str().unwrap();
    assert!(
        challenge.starts_with(r#"Bearer error="invalid_token""#),
        "{challenge}"
    );
}

// ---------------------------------------------------------------- discovery

#[tokio::test]
async fn discovery_document_describes_the_endpoints() {
    let aim = AimEmulator::start().await.unwrap();
    assert_eq!(
        aim.authority(),
        format!("http://127.0.0.1:{}/identitymanager", aim.port())
    );
    let doc: Value = get_json(&discovery_url(&aim)).await;
    let issuer = aim.authority();
    assert_eq!(doc["issuer"], issuer.as_str());
    assert_eq!(doc["token_endpoint"], aim.token_endpoint().as_str());
    assert_eq!(doc["jwks_uri"], jwks_url(&aim).as_str());
    assert_eq!(
        doc["introspection_endpoint"],
        format!("{issuer}/connect/introspect").as_str()
    );
    assert!(
        doc.get("registration_endpoint").is_none(),
        "no registration without an initial access token"
    );
    let methods = doc["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(methods.contains(&"client_secret_post".into()));
    assert!(methods.contains(&"client_secret_basic".into()));
    assert!(doc["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&"client_credentials".into()));
    assert!(doc["scopes_supported"]
        .as_array()
        .unwrap()
        .contains(&AimEmulator::DEFAULT_SCOPE.into()));
    // No invented MES scope: AVEVA documents none.
    assert!(!doc.to_string().contains("mes.api"));
}

#[tokio::test]
async fn discovery_lists_registration_only_when_configured_and_can_be_disabled() {
    let aim = AimEmulator::builder()
        .initial_access_token("iat")
        .start()
        .await
        .unwrap();
    let doc: Value = get_json(&discovery_url(&aim)).await;
    assert_eq!(
        doc["registration_endpoint"],
        format!("{}/connect/register", aim.authority()).as_str()
    );

    let aim = AimEmulator::builder()
        .discovery(false)
        .start()
        .await
        .unwrap();
    let resp = http().get(discovery_url(&aim)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(aim.counters().discovery, 1);
}

// ---------------------------------------------------------------- tokens

#[tokio::test]
async fn token_with_client_secret_post_and_a_secret_that_needs_encoding() {
    let aim = AimEmulator::start().await.unwrap();
    let resp = cc(&aim).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[CACHE_CONTROL], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 86400);
    // No scope requested: the client's allowed scopes, like IdentityServer.
    assert_eq!(body["scope"], AimEmulator::DEFAULT_SCOPE);
    assert_eq!(body["access_token"].as_str().unwrap().split('.').count(), 3);
    let c = aim.counters();
    assert_eq!((c.token, c.tokens_issued), (1, 1));
    assert_eq!(aim.token_requests(), 1);
}

#[tokio::test]
async fn token_with_client_secret_basic_and_an_id_with_colon_and_space() {
    let aim = AimEmulator::start().await.unwrap();
    aim.add_client(EmulatorClient::new("plant:line 1", "p%s+w d"));
    for (id, secret) in [("plant:line 1", "p%s+w d"), (ID, SECRET)] {
        let resp = http()
            .post(aim.token_endpoint())
            .header(AUTHORIZATION, basic(id, secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", AimEmulator::DEFAULT_SCOPE),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "client {id}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["scope"], AimEmulator::DEFAULT_SCOPE);
    }
    assert_eq!(aim.counters().tokens_issued, 2);
}

#[tokio::test]
async fn token_errors_are_identityserver_shaped() {
    let aim = AimEmulator::builder()
        .client(EmulatorClient {
            enabled: false,
            ..EmulatorClient::new("disabled", "x")
        })
        .start()
        .await
        .unwrap();
    let cc = ("grant_type", "client_credentials");
    let id = ("client_id", ID);
    let secret = ("client_secret", SECRET);

    let unknown = [cc, ("client_id", "nobody"), secret];
    assert_oauth_error(post_token(&aim, &unknown).await, "invalid_client").await;
    let wrong = [cc, id, ("client_secret", "wrong")];
    assert_oauth_error(post_token(&aim, &wrong).await, "invalid_client").await;
    let disabled = [cc, ("client_id", "disabled"), ("client_secret", "x")];
    assert_oauth_error(post_token(&aim, &disabled).await, "invalid_client").await;
    let no_secret = [cc, id];
    assert_oauth_error(post_token(&aim, &no_secret).await, "invalid_client").await;

    let other = [("grant_type", "urn:example:magic"), id, secret];
    assert_oauth_error(post_token(&aim, &other).await, "unsupported_grant_type").await;
    assert_oauth_error(
        post_token(&aim, &[id, secret]).await,
        "unsupported_grant_type",
    )
    .await;
    let password = [("grant_type", "password"), id, secret];
    assert_oauth_error(post_token(&aim, &password).await, "unauthorized_client").await;

    let scope = [cc, id, secret, ("scope", "emulator.api mes.api")];
    assert_oauth_error(post_token(&aim, &scope).await, "invalid_scope").await;

    // Both authentication methods at once.
    let both = http()
        .post(aim.token_endpoint())
        .header(AUTHORIZATION, basic(ID, SECRET))
        .form(&[cc, id, secret])
        .send()
        .await
        .unwrap();
    assert_oauth_error(both, "invalid_request").await;
    // A parameter twice.
    let twice = http()
        .post(aim.token_endpoint())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_oauth_error(twice, "invalid_request").await;
    // Not a form.
    let json = http()
        .post(aim.token_endpoint())
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_oauth_error(json, "invalid_request").await;

    let c = aim.counters();
    assert_eq!((c.token, c.tokens_issued), (11, 0));
}

#[tokio::test]
async fn secret_sent_unencoded_in_basic_is_rejected() {
    // AVEVA's sample mistake, in Basic form: '+' and '%' are not encoded.
    let aim = AimEmulator::start().await.unwrap();
    let raw = format!("Basic {}", STANDARD.encode(format!("{ID}:{SECRET}")));
    let resp = http()
        .post(aim.token_endpoint())
        .header(AUTHORIZATION, raw)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_oauth_error(resp, "invalid_client").await;
}

/// Verifies an RS256 JWT with the JWK of its `kid` from `jwks`: the
/// signature over `header.claims` (aws-lc-rs, which the emulator signs with;
/// the JWK's `n` and `e` are the key) and returns the claims.
fn verify_rs256(jwt: &str, jwks: &Value) -> Result<Value, String> {
    use aws_lc_rs::signature::{RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let b64 = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string());
    let (signed, signature) = jwt.rsplit_once('.').ok_or("no signature")?;
    let (header, claims) = signed.split_once('.').ok_or("no claims")?;
    let header: Value = serde_json::from_slice(&b64(header)?).map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == header["kid"]))
        .ok_or("the token's kid is not in the JWKS")?;
    assert_eq!(jwk["kty"], "RSA");
    let component = |name: &str| b64(jwk[name].as_str().unwrap_or_default());
    let key = RsaPublicKeyComponents {
        n: component("n")?,
        e: component("e")?,
    };
    key.verify(
        &RSA_PKCS1_2048_8192_SHA256,
        signed.as_bytes(),
        &b64(signature)?,
    )
    .map_err(|_| "bad signature".to_owned())?;
    serde_json::from_slice(&b64(claims)?).map_err(|e| e.to_string())
}

#[tokio::test]
async fn jwt_verifies_against_the_jwks() {
    let aim = AimEmulator::start().await.unwrap();
    let jwt = token(&aim).await;
    let jwks: Value = get_json(&jwks_url(&aim)).await;
    let claims = verify_rs256(&jwt, &jwks).unwrap();
    assert_eq!(claims["iss"], aim.authority().as_str());
    assert_eq!(
        claims["aud"],
        format!("{}/resources", aim.authority()).as_str()
    );
    assert_eq!(claims["client_id"], ID);
    assert_eq!(
        claims["scope"],
        serde_json::json!([AimEmulator::DEFAULT_SCOPE])
    );
    let (iat, nbf, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["nbf"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        nbf <= now + 60 && now < exp,
        "valid now: {nbf} <= {now} < {exp}"
    );
    assert_eq!(exp - iat, 86400);
    assert_eq!(nbf, iat);
    assert!(claims["jti"].as_str().unwrap().len() >= 16);

    // A tampered signature, or tampered claims, do not verify.
    let (signed, sig) = jwt.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{signed}.{flipped}{}", &sig[1..]);
    assert!(verify_rs256(&tampered, &jwks).is_err());
    let (header, rest) = jwt.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let forged_claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&serde_json::json!({"client_id": "someone-else"})).unwrap());
    let forged = format!("{header}.{forged_claims}.{signature}");
    assert!(verify_rs256(&forged, &jwks).is_err());
}

#[tokio::test]
async fn audience_and_scope_names_are_settings() {
    // Neutral defaults: IdentityServer's static audience.
    let aim = AimEmulator::start().await.unwrap();
    let claims = jwt_claims(&token(&aim).await);
    assert_eq!(
        claims["aud"],
        format!("{}/resources", aim.authority()).as_str()
    );
    // A site that restricts scopes and names its API resource.
    let aim = AimEmulator::builder()
        .scopes(["site.api", "site.read"])
        .audience("site-resource")
        .start()
        .await
        .unwrap();
    let claims = jwt_claims(&token(&aim).await);
    assert_eq!(claims["aud"], "site-resource");
    assert_eq!(
        claims["scope"],
        serde_json::json!(["site.api", "site.read"])
    );
    let one = [CLIENT_CREDENTIALS.as_slice(), &[("scope", "site.read")]].concat();
    let body: Value = post_token(&aim, &one).await.json().await.unwrap();
    assert_eq!(body["scope"], "site.read");
    for unknown in ["emulator.api", "mes.api", "openid"] {
        let form = [CLIENT_CREDENTIALS.as_slice(), &[("scope", unknown)]].concat();
        assert_oauth_error(post_token(&aim, &form).await, "invalid_scope").await;
    }
}

fn jwt_claims(jwt: &str) -> Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
}

#[tokio::test]
async fn expires_in_formats_and_lifetimes() {
    let form = CLIENT_CREDENTIALS;
    let aim = AimEmulator::builder()
        .expires_in_format(ExpiresInFormat::String)
        .token_lifetime(Duration::from_secs(600))
        .start()
        .await
        .unwrap();
    let body: Value = post_token(&aim, &form).await.json().await.unwrap();
    assert_eq!(body["expires_in"], "600");

    aim.set_token_lifetime(Duration::from_secs(120));
    let body: Value = post_token(&aim, &form).await.json().await.unwrap();
    assert_eq!(body["expires_in"], "120");

    let aim = AimEmulator::builder()
        .expires_in_format(ExpiresInFormat::Missing)
        .client(EmulatorClient {
            lifetime: Some(Duration::from_secs(30)),
            ..EmulatorClient::new("short", "lived")
        })
        .start()
        .await
        .unwrap();
    let body: Value = post_token(&aim, &form).await.json().await.unwrap();
    assert!(body.get("expires_in").is_none());
    let claims = jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        86400,
        "the JWT still carries the lifetime"
    );
    let short = [
        ("grant_type", "client_credentials"),
        ("client_id", "short"),
        ("client_secret", "lived"),
    ];
    let body: Value = post_token(&aim, &short).await.json().await.unwrap();
    let claims = jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        30
    );
}

#[tokio::test(start_paused = true)]
async fn token_times_follow_the_configured_clock() {
    let clock = Arc::new(TokioClock::new());
    let aim = AimEmulator::builder()
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    clock.jump(Duration::from_secs(10 * 86400));
    let claims = jwt_claims(&token(&aim).await);
    let iat = SystemTime::UNIX_EPOCH + Duration::from_secs(claims["iat"].as_u64().unwrap());
    let ahead = iat.duration_since(SystemTime::now()).unwrap();
    assert!(ahead > Duration::from_secs(9 * 86400), "{ahead:?}");
}

#[tokio::test]
async fn many_concurrent_token_requests_are_all_served() {
    let aim = AimEmulator::builder().https(true).start().await.unwrap();
    let client = trusting(&aim);
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let client = client.clone();
            let url = aim.token_endpoint();
            tokio::spawn(async move {
                let body: Value = client
                    .post(url)
                    .form(&CLIENT_CREDENTIALS)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                jwt_claims(body["access_token"].as_str().unwrap())["jti"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect();
    let mut jtis = std::collections::HashSet::new();
    for t in tasks {
        jtis.insert(t.await.unwrap());
    }
    assert_eq!(jtis.len(), 300, "every token is distinct");
    let c = aim.counters();
    assert_eq!((c.token, c.tokens_issued), (300, 300));
}

// ---------------------------------------------------------------- MES

#[tokio::test]
async fn mes_serves_entities_to_a_valid_token_and_echoes_headers() {
    let aim = AimEmulator::start().await.unwrap();
    let jwt = token(&aim).await;
    let resp = http()
        .get(format!("{}api/v3/entity", aim.mes_base()))
        .bearer_auth(&jwt)
        .header("tz_id", "W. Europe Standard Time")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["tz_id"], "W. Europe Standard Time");
    let entities: Value = resp.json().await.unwrap();
    let entities = entities.as_array().unwrap();
    assert!(entities.len() >= 5);
    // MES V3's columns in snake_case, not an invented id/name shape.
    assert!(entities.iter().all(|e| e["ent_id"].is_number()
        && e["ent_name"].is_string()
        && e.get("parent_ent_id").is_some()
        && e["can_run_jobs"].is_boolean()
        && e.get("id").is_none()));
    assert_eq!(aim.counters().mes, 1);
}

#[tokio::test(start_paused = true)]
async fn mes_rejects_missing_bad_and_expired_tokens() {
    let clock = Arc::new(TokioClock::new());
    let aim = AimEmulator::builder()
        .clock(clock.clone())
        .token_lifetime(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let jwt = token(&aim).await;

    assert_invalid_token(&mes_get(&aim, "api/v3/entity", None).await);
    assert_invalid_token(&mes_get(&aim, "api/v3/entity", Some("not-a-jwt")).await);
    // Signed by a stranger: same claims, other signature.
    let (signed, _) = jwt.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", "A".repeat(342));
    assert_invalid_token(&mes_get(&aim, "api/v3/entity", Some(&forged)).await);
    // Issued by another emulator: same clock, but its own signing key (as
    // every AIM node has), so the signature fails before the issuer is read.
    let other = AimEmulator::builder()
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let foreign = token(&other).await;
    let resp = mes_get(&aim, "api/v3/entity", Some(&foreign)).await;
    assert_invalid_token(&resp);
    let challenge = resp.headers()[WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.contains("signature is invalid"), "{challenge}");

    let ok = mes_get(&aim, "api/v3/entity", Some(&jwt)).await;
    assert_eq!(ok.status(), StatusCode::OK);
    clock.jump(Duration::from_secs(3599));
    let ok = mes_get(&aim, "api/v3/entity", Some(&jwt)).await;
    assert_eq!(ok.status(), StatusCode::OK, "valid until exp");
    clock.jump(Duration::from_secs(2));
    let expired = mes_get(&aim, "api/v3/entity", Some(&jwt)).await;
    assert_invalid_token(&expired);
    let challenge = expired.headers()[WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.contains("expired"), "{challenge}");
    assert_eq!(aim.counters().mes, 7);
}

#[tokio::test]
async fn mes_forbidden_reject_once_and_not_found() {
    let aim = AimEmulator::start().await.unwrap();
    let jwt = token(&aim).await;

    aim.set_mes_forbidden(true);
    let resp = mes_get(&aim, "api/v3/entity", Some(&jwt)).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    aim.set_mes_forbidden(false);

    aim.reject_next_mes_token();
    assert_invalid_token(&mes_get(&aim, "api/v3/entity", Some(&jwt)).await);
    let again = mes_get(&aim, "api/v3/entity", Some(&jwt)).await;
    assert_eq!(again.status(), StatusCode::OK, "only once");

    let resp = mes_get(&aim, "api/v3/NoSuchThing", Some(&jwt)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.text().await.unwrap().contains("NoSuchThing"));
    // Authentication comes before routing, as on the real server.
    assert_invalid_token(&mes_get(&aim, "api/v3/NoSuchThing", None).await);
}

#[tokio::test]
async fn mes_jobs_start_binds_the_job_model() {
    let aim = AimEmulator::start().await.unwrap();
    let jwt = token(&aim).await;
    let url = format!("{}api/v3/Jobs/Start", aim.mes_base());
    let job = serde_json::json!({
        "ent_id": 4, "wo_id": "WO-1001", "oper_id": "Fill", "seq_no": 0, "run_ent_id": 4,
        "job_pos": null, "state_cd": 2
    });
    for bad in [
        http().put(&url).bearer_auth(&jwt).body("ent_id=4"),
        // A JSON body is not bound unless it is declared JSON.
        http()
            .put(&url)
            .bearer_auth(&jwt)
            .header(CONTENT_TYPE, "text/plain")
            .body(job.to_string()),
        // The old invented shape.
        http()
            .put(&url)
            .bearer_auth(&jwt)
            .json(&serde_json::json!({"jobId": "J-1"})),
    ] {
        let resp = bad.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
    // Member names bind case-insensitively, as in ASP.NET Web API.
    let pascal: serde_json::Map<String, Value> = job
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.to_uppercase(), v.clone()))
        .collect();
    let ok = http()
        .put(&url)
        .bearer_auth(&jwt)
        .json(&pascal)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["state_cd"], 3);
    assert_eq!(body["job_pos"], 0);

    let unauth = http().put(&url).json(&job);
    assert_invalid_token(&unauth.send().await.unwrap());
}

// ---------------------------------------------------------------- introspection

#[tokio::test(start_paused = true)]
async fn introspection_reports_active_and_inactive_tokens() {
    let clock = Arc::new(TokioClock::new());
    let aim = AimEmulator::builder()
        .clock(clock.clone())
        .token_lifetime(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let url = format!("{}/connect/introspect", aim.authority());
    let jwt = token(&aim).await;
    let introspect = |token: String| {
        http()
            .post(&url)
            .header(AUTHORIZATION, basic(ID, SECRET))
            .form(&[("token", token)])
            .send()
    };
    let body: Value = introspect(jwt.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(body["active"], true);
    assert_eq!(body["client_id"], ID);
    assert_eq!(body["scope"], AimEmulator::DEFAULT_SCOPE);
    assert_eq!(body["iss"], aim.authority().as_str());

    let body: Value = introspect("garbage".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, serde_json::json!({"active": false}));

    clock.jump(Duration::from_secs(61));
    let body: Value = introspect(jwt.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(body, serde_json::json!({"active": false}));

    let unauth = http()
        .post(&url)
        .form(&[("token", jwt.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), StatusCode::UNAUTHORIZED);
    let body: Value = unauth.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    // A wrong secret, sent the other way (client_secret_post): 401 as well.
    let wrong = http()
        .post(&url)
        .form(&[
            ("client_id", ID),
            ("client_secret", "wrong"),
            ("token", jwt.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(aim.counters().introspect, 5);
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn fault_status_with_retry_after_and_body() {
    let aim = AimEmulator::start().await.unwrap();
    aim.inject(
        Endpoint::Token,
        Fault::Status {
            status: 503,
            retry_after: Some(7),
            body: Some("busy".into()),
        },
    );
    let resp = cc(&aim).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()[RETRY_AFTER], "7");
    assert_eq!(resp.text().await.unwrap(), "busy");
    assert_eq!(cc(&aim).await.unwrap().status(), StatusCode::OK, "one-shot");
    let c = aim.counters();
    assert_eq!((c.token, c.tokens_issued), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn fault_retry_after_date_comes_from_the_clock() {
    let clock = Arc::new(TokioClock::new());
    clock.jump(Duration::from_secs(3600));
    let aim = AimEmulator::builder()
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    aim.inject(
        Endpoint::Token,
        Fault::RetryAfterDate {
            status: 429,
            after: Duration::from_secs(120),
        },
    );
    let resp = cc(&aim).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let date = httpdate::parse_http_date(resp.headers()[RETRY_AFTER].to_str().unwrap()).unwrap();
    let expected = aim_token::Clock::now(&*clock) + Duration::from_secs(120);
    let diff = expected
        .duration_since(date)
        .unwrap_or_else(|e| e.duration());
    assert!(diff <= Duration::from_secs(2), "{date:?} vs {expected:?}");
}

/// A Retry-After date past what HTTP dates can say (or past what a
/// `SystemTime` can hold) still gets its status, without the header: the
/// emulator neither panics nor drops the connection.
#[tokio::test]
async fn fault_retry_after_date_beyond_year_9999_answers_without_the_header() {
    let aim = AimEmulator::start().await.unwrap();
    for after in [Duration::from_secs(9_000 * 365 * 86_400), Duration::MAX] {
        aim.inject(
            Endpoint::Token,
            Fault::RetryAfterDate { status: 503, after },
        );
        let resp = cc(&aim).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{after:?}");
        assert!(resp.headers().get(RETRY_AFTER).is_none(), "{after:?}");
    }
}

#[tokio::test]
async fn fault_oauth_error() {
    let aim = AimEmulator::start().await.unwrap();
    aim.inject(
        Endpoint::Token,
        Fault::OAuth {
            status: 400,
            error: "temporarily_unavailable".into(),
        },
    );
    assert_oauth_error(cc(&aim).await.unwrap(), "temporarily_unavailable").await;
}

#[tokio::test(start_paused = true)]
async fn fault_delay_then_normal_answer() {
    let aim = AimEmulator::start().await.unwrap();
    aim.inject(Endpoint::Token, Fault::Delay(Duration::from_secs(30)));
    let t0 = tokio::time::Instant::now();
    let resp = cc(&aim).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(30));
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(aim.counters().tokens_issued, 1);
}

#[tokio::test]
async fn fault_drop_connection() {
    let aim = AimEmulator::start().await.unwrap();
    aim.inject(Endpoint::Token, Fault::DropConnection);
    let err = cc(&aim).await.unwrap_err();
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    assert_eq!(cc(&aim).await.unwrap().status(), StatusCode::OK);
    assert_eq!(aim.counters().token, 2);
}

#[tokio::test]
async fn fault_drop_connection_over_https_h2() {
    let aim = AimEmulator::builder().https(true).start().await.unwrap();
    let client = trusting(&aim);
    let form = CLIENT_CREDENTIALS;
    let ok = client
        .post(aim.token_endpoint())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.version(), reqwest::Version::HTTP_2, "ALPN offers h2");
    aim.inject(Endpoint::Token, Fault::DropConnection);
    let err = client
        .post(aim.token_endpoint())
        .form(&form)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    let again = client
        .post(aim.token_endpoint())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let c = aim.counters();
    assert_eq!((c.token, c.tokens_issued), (3, 2));
}

#[tokio::test]
async fn fault_bodies_garbage_html_empty_truncated() {
    let aim = AimEmulator::start().await.unwrap();
    aim.inject(Endpoint::Token, Fault::Garbage);
    aim.inject(Endpoint::Token, Fault::Html);
    aim.inject(Endpoint::Token, Fault::Empty);
    aim.inject(Endpoint::Token, Fault::Truncated);

    let garbage = cc(&aim).await.unwrap();
    assert_eq!(garbage.status(), StatusCode::OK);
    let text = garbage.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    let html = cc(&aim).await.unwrap();
    assert_eq!(html.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(html.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(html
        .text()
        .await
        .unwrap()
        .contains("500 - Internal server error."));

    let empty = cc(&aim).await.unwrap();
    assert_eq!(empty.status(), StatusCode::OK);
    assert!(empty.text().await.unwrap().is_empty());

    let truncated = cc(&aim).await.unwrap();
    assert_eq!(truncated.status(), StatusCode::OK);
    let text = truncated.text().await.unwrap();
    assert!(text.starts_with(r#"{"access_token":"#));
    assert!(serde_json::from_str::<Value>(&text).is_err());

    assert_eq!(cc(&aim).await.unwrap().status(), StatusCode::OK);
    let c = aim.counters();
    assert_eq!((c.token, c.tokens_issued), (5, 1));
}

#[tokio::test]
async fn faults_times_outage_and_clear() {
    let aim = AimEmulator::start().await.unwrap();
    aim.inject_times(Endpoint::Token, Fault::Html, 2);
    aim.set_outage(
        Endpoint::Token,
        Some(Fault::Status {
            status: 502,
            retry_after: None,
            body: None,
        }),
    );
    let statuses = [
        cc(&aim).await.unwrap().status(),
        cc(&aim).await.unwrap().status(),
        cc(&aim).await.unwrap().status(),
        cc(&aim).await.unwrap().status(),
    ];
    assert_eq!(statuses.map(|s| s.as_u16()), [500, 500, 502, 502]);
    // Faults are per endpoint: MES and discovery are unaffected.
    let discovery = http().get(discovery_url(&aim)).send().await.unwrap();
    assert_eq!(discovery.status(), 200);
    aim.set_outage(Endpoint::Token, None);
    assert_eq!(cc(&aim).await.unwrap().status(), StatusCode::OK);

    aim.set_outage(Endpoint::Mes, Some(Fault::Html));
    aim.inject(Endpoint::Token, Fault::Empty);
    aim.clear_faults();
    let jwt = token(&aim).await;
    assert_eq!(
        mes_get(&aim, "api/v3/entity", Some(&jwt)).await.status(),
        200
    );
    let c = aim.counters();
    assert_eq!((c.token, c.tokens_issued, c.discovery, c.mes), (6, 2, 1, 1));
}

#[tokio::test]
async fn faults_apply_to_mes_and_jwks_too() {
    let aim = AimEmulator::start().await.unwrap();
    let jwt = token(&aim).await;
    aim.inject(
        Endpoint::Mes,
        Fault::Status {
            status: 503,
            retry_after: Some(1),
            body: None,
        },
    );
    assert_eq!(
        mes_get(&aim, "api/v3/entity", Some(&jwt)).await.status(),
        503
    );
    aim.inject(Endpoint::Jwks, Fault::Garbage);
    let jwks = http().get(jwks_url(&aim)).send().await.unwrap();
    let text = jwks.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err());
    let c = aim.counters();
    assert_eq!((c.mes, c.jwks), (1, 1));
}

// ---------------------------------------------------------------- TLS, lifecycle

#[tokio::test]
async fn https_with_the_generated_ca_and_refused_without() {
    let aim = AimEmulator::builder().https(true).start().await.unwrap();
    assert!(aim.base_url().starts_with("https://127.0.0.1:"));
    let pem = aim.ca_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let err = http().get(discovery_url(&aim)).send().await.unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");

    let client = trusting(&aim);
    for host in ["127.0.0.1", "localhost"] {
        let resp = client
            .post(format!(
                "https://{host}:{}/identitymanager/connect/token",
                aim.port()
            ))
            .form(&CLIENT_CREDENTIALS)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "via {host}");
    }
    assert_eq!(AimEmulator::start().await.unwrap().ca_pem(), None);
}

#[tokio::test]
async fn suspend_refuses_connections_and_resume_serves_again() {
    let aim = AimEmulator::start().await.unwrap();
    let port = aim.port();
    assert_eq!(cc(&aim).await.unwrap().status(), StatusCode::OK);
    // A kept-alive connection, to see suspend close it too.
    let pooled = http();
    let url = discovery_url(&aim);
    assert_eq!(pooled.get(&url).send().await.unwrap().status(), 200);
    aim.suspend().await;
    let err = cc(&aim).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert!(
        pooled.get(&url).send().await.is_err(),
        "no answer while suspended"
    );
    aim.suspend().await; // idempotent
    aim.resume().await.unwrap();
    aim.resume().await.unwrap(); // idempotent
    assert_eq!(aim.port(), port);
    assert_eq!(cc(&aim).await.unwrap().status(), StatusCode::OK);
    assert_eq!(aim.counters().tokens_issued, 2);
}

#[tokio::test]
async fn drop_stops_the_server() {
    let aim = AimEmulator::start().await.unwrap();
    let url = aim.token_endpoint();
    let client = http();
    // Keep a connection open, to see it closed too.
    let _ = client.get(&url).send().await.unwrap();
    drop(aim);
    let mut refused = false;
    for _ in 0..100 {
        // A fresh client each time: no pooled connection to reuse.
        match http().get(&url).send().await {
            Err(e) if e.is_connect() => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(refused, "the listener is closed after drop");
    assert!(
        client.get(&url).send().await.is_err(),
        "open connections are closed after drop"
    );
}

#[tokio::test]
async fn fixed_port_is_used() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let aim = AimEmulator::builder().port(port).start().await.unwrap();
    assert_eq!(aim.port(), port);
    assert_eq!(aim.base_url(), format!("http://127.0.0.1:{port}"));
    let err = AimEmulator::builder().port(port).start().await.unwrap_err();
    assert_eq!(err.kind(), aim_token::ErrorKind::Transport);
}

// ---------------------------------------------------------------- registration

#[tokio::test]
async fn registration_then_token_for_the_new_client() {
    let aim = AimEmulator::builder()
        .initial_access_token("initial-T0ken")
        .start()
        .await
        .unwrap();
    let url = format!("{}/connect/register", aim.authority());
    let metadata = serde_json::json!({
        "client_name": "MES reporting",
        "client_id": "mes-reporting",
        "grant_types": ["client_credentials"],
        "scope": "site.api",
        "access_token_lifetime": 3600,
    });

    let missing = http().post(&url).json(&metadata).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let wrong = http()
        .post(&url)
        .bearer_auth("nope")
        .json(&metadata)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");

    // A registration request with the right initial access token.
    let register = |metadata: &Value| {
        http()
            .post(&url)
            .bearer_auth("initial-T0ken")
            .json(metadata)
            .send()
    };
    let resp = register(&metadata).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let reg: Value = resp.json().await.unwrap();
    assert_eq!(reg["client_id"], "mes-reporting");
    assert_eq!(reg["client_secret"].as_str().unwrap().len(), 43);
    assert_eq!(reg["client_secret_expires_at"], 0);
    assert!(reg["client_id_issued_at"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(
        reg["grant_types"],
        serde_json::json!(["client_credentials"])
    );
    assert_eq!(reg["scope"], "site.api");
    assert_eq!(reg["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(reg["client_name"], "MES reporting");

    // The new client gets a token at once, with its lifetime.
    let secret = reg["client_secret"].as_str().unwrap();
    let tok = http()
        .post(aim.token_endpoint())
        .header(AUTHORIZATION, basic("mes-reporting", secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(tok.status(), StatusCode::OK);
    let tok: Value = tok.json().await.unwrap();
    assert_eq!(tok["expires_in"], 3600);
    assert_eq!(tok["scope"], "site.api");

    // Reading the registration back needs its registration access token.
    let client_uri = reg["registration_client_uri"].as_str().unwrap();
    let read = http()
        .get(client_uri)
        .bearer_auth(reg["registration_access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["client_id"], "mes-reporting");
    let denied = http()
        .get(client_uri)
        .bearer_auth("initial-T0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);

    // The same ID twice, and grant types it cannot have.
    let again = register(&metadata).await.unwrap();
    assert_oauth_error(again, "invalid_client_metadata").await;
    let code = register(&serde_json::json!({"grant_types": ["authorization_code"]}))
        .await
        .unwrap();
    assert_oauth_error(code, "invalid_client_metadata").await;
    let not_json = http()
        .post(&url)
        .bearer_auth("initial-T0ken")
        .body("client_name=x")
        .send()
        .await
        .unwrap();
    assert_oauth_error(not_json, "invalid_client_metadata").await;

    // Without an ID one is generated.
    let generated: Value = register(&serde_json::json!({"client_name": "anon"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let generated_id = generated["client_id"].as_str().unwrap();
    let hex = generated_id.strip_prefix("client-").unwrap();
    assert_eq!(hex.len(), 16, "{generated_id}");
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{generated_id}");
    assert_eq!(generated["scope"], AimEmulator::DEFAULT_SCOPE);
    assert_eq!(aim.counters().register, 9);
}

#[tokio::test]
async fn registration_is_404_when_not_configured() {
    let aim = AimEmulator::start().await.unwrap();
    let resp = http()
        .post(format!("{}/connect/register", aim.authority()))
        .bearer_auth("anything")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------- misc

#[tokio::test]
async fn client_builder_targets_the_emulator() {
    let aim = AimEmulator::builder().https(true).start().await.unwrap();
    let client = aim.client_builder().build().unwrap();
    assert_eq!(client.client_id(), ID);
    // Authority, credentials and the CA are all set: a token comes back.
    client.token().await.unwrap();
    assert_eq!(aim.counters().tokens_issued, 1);
}

#[test]
fn debug_output_hides_secrets() {
    let client = EmulatorClient::new("id", "super-secret-value");
    let debug = format!("{client:?}");
    assert!(!debug.contains("super-secret-value"), "{debug}");
    let builder = AimEmulator::builder()
        .client(client)
        .initial_access_token("initial-secret-token");
    let debug = format!("{builder:?}");
    assert!(!debug.contains("super-secret-value"), "{debug}");
    assert!(!debug.contains("initial-secret-token"), "{debug}");
    assert!(!debug.contains(SECRET), "{debug}");
}

#[tokio::test]
async fn emulator_and_its_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let aim = AimEmulator::start().await.unwrap();
    send_sync(&aim);
    send(&AimEmulator::builder().start());
    let suspend = aim.suspend();
    send(&suspend);
    suspend.await;
    let resume = aim.resume();
    send(&resume);
    resume.await.unwrap();
    // Shared across tasks, as tests of concurrent apps do.
    let aim = Arc::new(aim);
    let task = tokio::spawn({
        let aim = aim.clone();
        async move { cc(&aim).await.unwrap().status() }
    });
    assert_eq!(task.await.unwrap(), StatusCode::OK);
}

/// The `Date` header follows the emulator's clock, so a skewed clock looks
/// like a real server's clock skew (hyper alone would send the real time).
#[tokio::test]
async fn date_header_follows_the_emulator_clock() {
    #[derive(Debug)]
    struct Behind;
    impl aim_token::Clock for Behind {
        fn now(&self) -> SystemTime {
            SystemTime::now() - Duration::from_secs(2 * 3600)
        }
    }
    let aim = AimEmulator::builder()
        .clock(Arc::new(Behind))
        .start()
        .await
        .unwrap();
    for url in [discovery_url(&aim), aim.token_endpoint()] {
        let resp = http().get(&url).send().await.unwrap();
        let date = resp.headers()[reqwest::header::DATE].to_str().unwrap();
        let date = httpdate::parse_http_date(date).unwrap();
        let behind = SystemTime::now().duration_since(date).unwrap();
        assert!(
            behind.as_secs().abs_diff(2 * 3600) <= 5,
            "{url}: Date is {behind:?} behind"
        );
    }
}

/// Tokens are per AIM node: each emulator has its own signing key, so a
/// token of emulator A fails B's JWKS (and B's MES), as at a real failover.
#[tokio::test]
async fn tokens_of_one_emulator_fail_another_emulators_jwks() {
    let (a, b) = tokio::join!(AimEmulator::start(), AimEmulator::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    let jwt = token(&a).await;
    let a_keys: Value = get_json(&jwks_url(&a)).await;
    let mut b_keys: Value = get_json(&jwks_url(&b)).await;
    assert!(verify_rs256(&jwt, &a_keys).is_ok());
    let err = verify_rs256(&jwt, &b_keys).unwrap_err();
    assert!(err.contains("kid"), "B does not know A's key: {err}");
    // Even with B's key under A's kid, A's signature does not verify.
    let kid = a_keys["keys"][0]["kid"].clone();
    b_keys["keys"][0]["kid"] = kid;
    assert_eq!(
        verify_rs256(&jwt, &b_keys).unwrap_err(),
        "bad signature",
        "A's signature fails with B's key"
    );
    assert!(b.ca_pem().is_none() && a.ca_pem().is_none());
    let resp = mes_get(&b, "api/v3/entity", Some(&jwt)).await;
    assert_eq!(resp.status(), 401);
}
