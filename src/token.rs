//! The access token and its expiry maths.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};

use crate::clock::unix_millis;

/// An access token from AIM: cheap to clone (one reference count), redacted
/// in `Debug`.
///
/// Get the bearer value with [`secret`](AccessToken::secret) — the one,
/// greppable place where it leaves this type.
///
/// It has no `Display`, as `secrecy`'s secrets have none: with one,
/// `format!("Bearer {token}")` would compile and send `Bearer [redacted]`,
/// a header that looks right and fails at the server. Without it that line
/// does not compile, and the fix is to write what is meant:
/// `format!("Bearer {}", token.secret())` for a header, or
/// `{token:?}` (redacted) for a log line.
///
/// ```compile_fail
/// let token = aim_token::AccessToken::new("abc", std::time::SystemTime::now());
/// let header = format!("Bearer {token}"); // no Display: does not compile
/// ```
///
/// ```
/// use aim_token::AccessToken;
/// use std::time::{Duration, SystemTime};
///
/// let token = AccessToken::new("eyJhbGciOi...", SystemTime::now() + Duration::from_secs(3600));
/// assert_eq!(token.secret(), "eyJhbGciOi...");
/// assert!(!format!("{token:?}").contains("eyJ"));
/// ```
#[derive(Clone)]
pub struct AccessToken {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    /// Identity of this issue of a token, shared by every copy of it.
    id: u64,
    secret: SecretString,
    token_type: String,
    issued_at: SystemTime,
    expires_at: SystemTime,
    expires_at_ms: u64,
    scopes: Vec<String>,
    authority: String,
}

impl AccessToken {
    /// A bearer token valid until `expires_at`, issued now. For tests and for
    /// tokens obtained elsewhere; [`AimClient`](crate::AimClient) builds its own.
    pub fn new(secret: impl Into<String>, expires_at: SystemTime) -> Self {
        Self::from_parts(
            SecretString::from(secret.into()),
            "Bearer".to_owned(),
            SystemTime::now(),
            expires_at,
            Vec::new(),
            String::new(),
        )
    }

    pub(crate) fn from_parts(
        secret: SecretString,
        token_type: String,
        issued_at: SystemTime,
        expires_at: SystemTime,
        scopes: Vec<String>,
        authority: String,
    ) -> Self {
        // Relaxed: ids only need to be unique, not ordered.
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        AccessToken {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                secret,
                token_type,
                issued_at,
                expires_at,
                expires_at_ms: unix_millis(expires_at),
                scopes,
                authority,
            }),
        }
    }

    /// The same token with these granted scopes.
    #[must_use]
    pub fn with_scopes<I, S>(self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let i = &self.inner;
        Self::from_parts(
            i.secret.clone(),
            i.token_type.clone(),
            i.issued_at,
            i.expires_at,
            scopes.into_iter().map(Into::into).collect(),
            i.authority.clone(),
        )
    }

    /// The bearer value to put after `Authorization: Bearer `.
    /// Handle with care: whoever has it can call MES as this client.
    pub fn secret(&self) -> &str {
        self.inner.secret.expose_secret()
    }

    /// The token type the server reported, normally `"Bearer"`.
    pub fn token_type(&self) -> &str {
        &self.inner.token_type
    }

    /// When the client received the token (wall clock).
    pub fn issued_at(&self) -> SystemTime {
        self.inner.issued_at
    }

    /// When the token expires (wall clock).
    pub fn expires_at(&self) -> SystemTime {
        self.inner.expires_at
    }

    /// The lifetime the server granted: `expires_at - issued_at`.
    pub fn lifetime(&self) -> Duration {
        self.inner
            .expires_at
            .duration_since(self.inner.issued_at)
            .unwrap_or_default()
    }

    /// The time left until expiry at `now`; zero once expired.
    pub fn remaining_at(&self, now: SystemTime) -> Duration {
        self.inner
            .expires_at
            .duration_since(now)
            .unwrap_or_default()
    }

    /// Whether the token has expired at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now >= self.inner.expires_at
    }

    /// The granted scopes (from the answer's `scope`, else the requested ones).
    pub fn scopes(&self) -> &[String] {
        &self.inner.scopes
    }

    /// The base URL of the AIM node that issued the token. Tokens are per
    /// node: after a failover the client fetches a new one.
    pub fn authority(&self) -> &str {
        &self.inner.authority
    }

    /// Expiry as milliseconds since the Unix epoch, for the cache's hot path.
    #[inline]
    pub(crate) fn expires_at_ms(&self) -> u64 {
        self.inner.expires_at_ms
    }

    /// Whether two handles are the same token (same issue), not merely equal strings.
    pub fn same_as(&self, other: &AccessToken) -> bool {
        self.inner.id == other.inner.id
    }

    /// The identity shared by every copy of this token.
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// The same token (same id) behind its own reference count, so that one
    /// thread's clones never touch a cache line other threads write.
    pub(crate) fn private_copy(&self) -> Self {
        AccessToken {
            inner: Arc::new(Inner::clone(&self.inner)),
        }
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"[redacted]")
            .field("token_type", &self.inner.token_type)
            .field("expires_at", &self.inner.expires_at)
            .field("scopes", &self.inner.scopes)
            .field("authority", &self.inner.authority)
            .finish()
    }
}

/// The `exp` claim of a JWT, read without verifying the signature: used only
/// to learn the lifetime when the server sent no `expires_in`.
pub(crate) fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let secs = exp
        .as_u64()
        .or_else(|| exp.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            b64.encode(r#"{"alg":"RS256"}"#),
            b64.encode(payload)
        )
    }

    #[test]
    fn reads_exp_claim() {
        let t = jwt(r#"{"exp":1700000000,"sub":"x"}"#);
        assert_eq!(
            jwt_expiry(&t),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
    }

    #[test]
    fn no_exp_or_not_a_jwt_is_none() {
        assert_eq!(jwt_expiry(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(jwt_expiry("opaque-token"), None);
        assert_eq!(jwt_expiry("a.!!!.c"), None);
        assert_eq!(jwt_expiry(&jwt(r#"{"exp":-5}"#)), None);
    }

    #[test]
    fn debug_is_redacted() {
        let token = AccessToken::new("super-secret-value", SystemTime::now());
        assert!(!format!("{token:?}").contains("super-secret-value"));
        assert!(!format!("{token:#?}").contains("super-secret-value"));
        assert_eq!(token.secret(), "super-secret-value");
    }

    #[test]
    fn expiry_maths() {
        let now = SystemTime::now();
        let token = AccessToken::new("t", now + Duration::from_secs(60));
        assert!(!token.is_expired_at(now));
        assert!(token.is_expired_at(now + Duration::from_secs(60)));
        assert_eq!(
            token.remaining_at(now + Duration::from_secs(70)),
            Duration::ZERO
        );
        assert!(token.same_as(&token.clone()));
        assert!(!token.same_as(&AccessToken::new("t", now)));
        let copy = token.private_copy();
        assert!(copy.same_as(&token));
        assert!(!Arc::ptr_eq(&copy.inner, &token.inner));
        assert_eq!(copy.secret(), "t");
    }
}
