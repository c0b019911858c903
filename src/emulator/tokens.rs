//! The emulator's access tokens: what goes into them and how a resource
//! server (MES, introspection) judges them.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::state::State;
use crate::error::{Error, Result};

/// A freshly issued token.
pub(crate) struct Issued {
    pub(crate) jwt: String,
    pub(crate) lifetime_secs: u64,
}

/// Signs an access token for `client_id` with `scopes`, valid for
/// `lifetime` from now by the emulator's clock.
pub(crate) fn issue(
    state: &State,
    client_id: &str,
    scopes: &[String],
    lifetime: Duration,
) -> Result<Issued> {
    let now = state.now_secs();
    // Whole seconds, as AIM; at least one so a token is never born expired.
    let lifetime_secs = lifetime.as_secs().max(1);
    // A setting: AVEVA documents no audience for MES; IdentityServer's
    // static `{issuer}/resources` by default.
    let aud = Value::from(state.audience.as_str());
    let claims = json!({
        "iss": state.issuer,
        "nbf": now,
        "iat": now,
        "exp": now + lifetime_secs,
        "aud": aud,
        "client_id": client_id,
        "scope": scopes,
        "jti": random_hex::<16>()?,
    });
    Ok(Issued {
        jwt: state.key.sign(&claims)?,
        lifetime_secs,
    })
}

/// Why a bearer token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalid {
    Malformed,
    Issuer,
    Expired,
    NotYetValid,
}

impl Invalid {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Invalid::Malformed => "the token is malformed or its signature is invalid",
            Invalid::Issuer => "the token was issued by another authority",
            Invalid::Expired => "the token is expired",
            Invalid::NotYetValid => "the token is not valid yet",
        }
    }
}

/// The claims of `jwt` if it is a token this emulator issued and it is
/// valid now by the emulator's clock.
pub(crate) fn validate(state: &State, jwt: &str) -> Result<Map<String, Value>, Invalid> {
    let claims = state.key.verify(jwt).ok_or(Invalid::Malformed)?;
    if claims.get("iss").and_then(Value::as_str) != Some(state.issuer.as_str()) {
        return Err(Invalid::Issuer);
    }
    let now = state.now_secs();
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(Invalid::Malformed)?;
    if now >= exp {
        return Err(Invalid::Expired);
    }
    if claims
        .get("nbf")
        .and_then(Value::as_u64)
        .is_some_and(|nbf| nbf > now)
    {
        return Err(Invalid::NotYetValid);
    }
    Ok(claims)
}

/// `N` bytes from the operating system's random generator (the one
/// [`ClientRegistration::generate_secret`](crate::ClientRegistration::generate_secret) uses).
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::config(format!("emulator: no random numbers: {e}")))?;
    Ok(bytes)
}

/// `N` random bytes as lowercase hex.
pub(crate) fn random_hex<const N: usize>() -> Result<String> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let bytes = random_bytes::<N>()?;
    let mut hex = String::with_capacity(2 * N);
    for b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{SystemTime, UNIX_EPOCH};

    use crate::clock::Clock;
    use crate::emulator::state::Settings;
    use crate::emulator::ExpiresInFormat;

    /// A wall clock a test sets, forwards or backwards.
    #[derive(Debug, Default)]
    struct SetClock(AtomicU64);

    impl SetClock {
        fn set(&self, secs: u64) {
            self.0.store(secs, Ordering::Relaxed);
        }
    }

    impl Clock for SetClock {
        fn now(&self) -> SystemTime {
            UNIX_EPOCH + Duration::from_secs(self.0.load(Ordering::Relaxed))
        }
    }

    fn state(base_url: &str, clock: Arc<SetClock>) -> State {
        state_with_key(
            base_url,
            clock,
            Arc::new(crate::emulator::keys::generate().unwrap()),
        )
    }

    fn state_with_key(
        base_url: &str,
        clock: Arc<SetClock>,
        key: Arc<crate::emulator::keys::SigningKey>,
    ) -> State {
        let settings = Settings {
            clients: Vec::new(),
            lifetime: Duration::from_secs(60),
            expires_in_format: ExpiresInFormat::Number,
            discovery: true,
            clock,
            initial_access_token: None,
            mes_rows: Default::default(),
            mes_transaction_timeout: Duration::from_secs(60),
            audience: None,
        };
        State::new(base_url.to_owned(), key, settings)
    }

    #[test]
    fn validate_checks_issuer_expiry_and_not_before() {
        let clock = Arc::new(SetClock::default());
        clock.set(1_700_000_000);
        let st = state("http://127.0.0.1:1", clock.clone());
        let scopes = vec!["emulator.api".to_owned()];
        let jwt = issue(&st, "c", &scopes, Duration::from_secs(60))
            .unwrap()
            .jwt;

        let claims = validate(&st, &jwt).unwrap();
        assert_eq!(claims["client_id"], "c");
        assert_eq!(
            claims["aud"],
            "http://127.0.0.1:1/identitymanager/resources"
        );

        // Same key, another issuer.
        let other = state_with_key("http://127.0.0.1:2", clock.clone(), st.key.clone());
        assert_eq!(validate(&other, &jwt).unwrap_err(), Invalid::Issuer);
        // Another node has its own key: its signature check fails first.
        let node = state("http://127.0.0.1:1", clock.clone());
        assert_eq!(validate(&node, &jwt).unwrap_err(), Invalid::Malformed);

        // The clock went back before the token's nbf.
        clock.set(1_700_000_000 - 1);
        assert_eq!(validate(&st, &jwt).unwrap_err(), Invalid::NotYetValid);

        clock.set(1_700_000_000 + 59);
        assert!(validate(&st, &jwt).is_ok(), "valid until exp");
        clock.set(1_700_000_000 + 60);
        assert_eq!(validate(&st, &jwt).unwrap_err(), Invalid::Expired);

        assert_eq!(validate(&st, "a.b.c").unwrap_err(), Invalid::Malformed);
    }

    #[test]
    fn random_hex_is_lowercase_hex_of_n_bytes() {
        let a = random_hex::<16>().unwrap();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{a}"
        );
        assert_ne!(a, random_hex::<16>().unwrap());
    }
}
