//! The key of a store entry: a hash of what identifies the token, never the
//! secret.

use aws_lc_rs::digest;

use crate::exchange::ExchangeConfig;

/// Changing what goes into the hash changes this, so old entries are
/// simply not found (a miss), never misread.
const DOMAIN: &[u8] = b"aim-token/store-key/v1";

/// The key of the token `config` asks for: SHA-256 over the normalised
/// primary authority, the token endpoint override, the client ID, the sorted
/// scopes and the sorted extra form parameters (`resource`, `audience`, ...),
/// each length-prefixed so that no two configurations collide. The secret
/// is not part of it: clients rotating the secret share the entry, and the
/// one with the other secret reads a miss.
pub(crate) fn derive(config: &ExchangeConfig) -> String {
    let mut scopes: Vec<&str> = config.scopes.iter().map(String::as_str).collect();
    scopes.sort_unstable();
    scopes.dedup();
    let mut params: Vec<(&str, &str)> = config
        .form_params
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    params.sort_unstable();
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut field = |bytes: &[u8]| {
        hash.update(&(bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(DOMAIN);
    field(config.authorities[0].base_url().as_bytes());
    field(
        config
            .token_endpoint
            .as_ref()
            .map_or("", |u| u.as_str())
            .as_bytes(),
    );
    field(config.credentials.client_id.as_bytes());
    field(&(scopes.len() as u64).to_be_bytes());
    for scope in scopes {
        field(scope.as_bytes());
    }
    field(&(params.len() as u64).to_be_bytes());
    for (name, value) in params {
        field(name.as_bytes());
        field(value.as_bytes());
    }
    hex(hash.finish().as_ref())
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::AimClient;
    use std::sync::Arc;

    fn key(f: impl FnOnce(crate::AimClientBuilder) -> crate::AimClientBuilder) -> String {
        let builder = f(AimClient::builder()
            .authority("sms01.plant.local")
            .client_id("mes-reporting")
            .client_secret("s3cr3t"));
        derive(&ExchangeConfig::from_builder(&builder, Arc::new(SystemClock)).unwrap())
    }

    #[test]
    fn same_token_same_key_whatever_the_spelling() {
        let base = key(|b| b.scope("b").scope("a"));
        assert_eq!(base.len(), 64);
        assert_eq!(base, key(|b| b.scope("a b")));
        assert_eq!(base, key(|b| b.scope("a").scope("b").scope("a")));
        assert_eq!(
            base,
            key(|b| b
                .authority("https://SMS01.plant.local/IdentityManager/")
                .scope("a b"))
        );
        assert_eq!(
            key(|b| b.resource("r").audience("x")),
            key(|b| b.audience("x").resource("r"))
        );
    }

    #[test]
    fn anything_that_identifies_the_token_changes_the_key_but_the_secret_does_not() {
        let base = key(|b| b.scope("a"));
        assert_eq!(base, key(|b| b.scope("a").client_secret("other")));
        for other in [
            key(|b| b.scope("b")),
            key(|b| b.scope("a").client_id("mes-other")),
            key(|b| b.scope("a").authority("sms02.plant.local")),
            key(|b| b.scope("a").resource("urn:mes")),
            key(|b| b.scope("a").audience("mes")),
            key(|b| b.scope("a").form_param("tenant", "x")),
            key(|b| b.scope("a").token_endpoint("https://sms01.plant.local/t")),
            key(|b| b),
        ] {
            assert_ne!(base, other);
        }
        // Length prefixes: moving a character between fields changes the key.
        assert_ne!(
            key(|b| b.scope("ab").scope("c")),
            key(|b| b.scope("a").scope("bc"))
        );
    }
}
