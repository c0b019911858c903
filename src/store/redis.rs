//! `RedisStore`: the shared store on Redis or Valkey, for the processes of
//! many hosts.

use std::fmt;
use std::io;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, Script};

use super::seal::MAX_VALUE;
use super::{BoxFuture, Lease, TokenStore};
use crate::authority::without_userinfo;
use crate::error::{Error, Result};

/// Deletes `KEYS[1]` only while it holds `ARGV[1]`: releases a lease only
/// for its owner, and deletes a refused token only if no newer one replaced it.
const COMPARE_AND_DELETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
";

/// Sets `KEYS[1]` to `ARGV[2]` for `ARGV[3]` ms only while it holds
/// `ARGV[1]` as `get` reads it (the first `ARGV[4]` + 1 bytes; a missing key
/// reads as empty): a write cannot replace a value its writer has not seen,
/// even one that reaches Redis late.
const COMPARE_AND_SET: &str = r"
if redis.call('GETRANGE', KEYS[1], 0, tonumber(ARGV[4])) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    return 1
end
return 0
";

/// A token store on Redis 6+ or Valkey (a single node; see the README for
/// replicas, Sentinel and Cluster). Values are `SET … PX` with the token's
/// remaining lifetime, leases `SET … NX PX` with a random owner, released by
/// a compare-and-delete script.
///
/// `redis://` or `rediss://` (TLS, checked against the CA certificates the
/// AIM client trusts beyond the OS store — `root_certificate_pem`,
/// `AIM_CA_CERT` — or this store's own
/// [`root_certificate_pem`](Self::root_certificate_pem), else the OS trust
/// store); ACL user and
/// password in the URL (`redis://user:password@host:6379/0`), or a password
/// alone (`redis://:password@host`). Keys start with `aim-token:` unless
/// [`key_prefix`](Self::key_prefix) says otherwise.
///
/// ```no_run
/// # fn run() -> Result<(), aim_token::Error> {
/// use aim_token::store::RedisStore;
///
/// let store = RedisStore::new("rediss://mes-reporting:pw@cache01.plant.local:6380/0")?
///     .key_prefix("plant1:aim-token:");
/// # Ok(()) }
/// ```
pub struct RedisStore {
    url: String,
    /// Replaced (before the first connection) when the AIM client hands
    /// over its trust anchors.
    client: Mutex<redis::Client>,
    /// `root_certificate_pem` was called: the AIM client's anchors do not replace it.
    own_ca: bool,
    prefix: String,
    /// Created on first use, inside the caller's runtime (no I/O before).
    connection: OnceLock<ConnectionManager>,
}

impl RedisStore {
    /// A store at `url` (`redis://…` or `rediss://…`). Parses only: no
    /// connection is made before the first token acquisition.
    pub fn new(url: &str) -> Result<Self> {
        let shown = without_userinfo(url);
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(Error::config(format!(
                "the Redis store URL must start with redis:// or rediss://, got {shown}"
            )));
        }
        let client = redis::Client::open(url).map_err(|e| {
            Error::config(format!(
                "the Redis store URL {shown} is not valid ({}); write it as redis://[user:password@]host[:port][/db]",
                e.category()
            ))
        })?;
        Ok(RedisStore {
            url: shown,
            client: Mutex::new(client),
            own_ca: false,
            prefix: "aim-token:".to_owned(),
            connection: OnceLock::new(),
        })
    }

    /// Starts every key with `prefix` (default `aim-token:`), e.g. to keep
    /// plants or environments apart in one Redis, or to match an ACL key pattern.
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Trusts `pem` (a CA certificate, e.g. the PCS root CA) for `rediss://`
    /// instead of the OS trust store. Fails if the URL is not a `rediss://`
    /// one or `pem` is not PEM.
    pub fn root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Result<Self> {
        let client = self.with_roots(pem.as_ref().to_vec()).map_err(|e| {
            Error::config(format!(
                "the CA certificate for the Redis store {} is not usable ({e}): give a PEM file and a rediss:// URL",
                self.url
            ))
        })?;
        self.client = Mutex::new(client);
        self.own_ca = true;
        Ok(self)
    }

    fn client(&self) -> redis::Client {
        self.client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// This store's client trusting only `pems` (PEM, one or more CAs).
    fn with_roots(&self, pems: Vec<u8>) -> redis::RedisResult<redis::Client> {
        let info = self.client().get_connection_info().clone();
        redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pems),
            },
        )
    }

    fn connection(&self) -> io::Result<ConnectionManager> {
        if let Some(c) = self.connection.get() {
            return Ok(c.clone());
        }
        // Timeouts of its own above ours; reconnects in the background.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(self.client(), config)
            .map_err(io::Error::other)?;
        Ok(self.connection.get_or_init(|| manager).clone())
    }

    fn token_key(&self, key: &str) -> String {
        format!("{}token:{key}", self.prefix)
    }

    fn lease_key(&self, key: &str) -> String {
        format!("{}lease:{key}", self.prefix)
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl TokenStore for RedisStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            let mut c = self.connection()?;
            // At most one byte past the largest value the crate opens (a
            // value can be 512 MB); a missing key reads as empty.
            let value: Vec<u8> = redis::cmd("GETRANGE")
                .arg(self.token_key(key))
                .arg(0)
                .arg(MAX_VALUE)
                .query_async(&mut c)
                .await
                .map_err(io::Error::other)?;
            Ok((!value.is_empty()).then_some(value))
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let mut c = self.connection()?;
            c.pset_ex(self.token_key(key), value, millis(ttl))
                .await
                .map_err(io::Error::other)
        })
    }

    fn replace_if<'a>(
        &'a self,
        key: &'a str,
        current: Option<&'a [u8]>,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<bool>> {
        Box::pin(async move {
            let mut c = self.connection()?;
            let replaced: i64 = Script::new(COMPARE_AND_SET)
                .key(self.token_key(key))
                .arg(current.unwrap_or_default())
                .arg(value)
                .arg(millis(ttl))
                .arg(MAX_VALUE)
                .invoke_async(&mut c)
                .await
                .map_err(io::Error::other)?;
            Ok(replaced > 0)
        })
    }

    fn delete_if<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
    ) -> BoxFuture<'a, io::Result<bool>> {
        Box::pin(async move {
            let mut c = self.connection()?;
            let deleted: i64 = Script::new(COMPARE_AND_DELETE)
                .key(self.token_key(key))
                .arg(expected)
                .invoke_async(&mut c)
                .await
                .map_err(io::Error::other)?;
            Ok(deleted > 0)
        })
    }

    fn try_lease<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<Option<Lease>>> {
        Box::pin(async move {
            let mut c = self.connection()?;
            let lease_key = self.lease_key(key);
            let owner = Lease::random_owner();
            let taken: Option<String> = redis::cmd("SET")
                .arg(&lease_key)
                .arg(&owner)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .query_async(&mut c)
                .await
                .map_err(io::Error::other)?;
            Ok(taken.map(|_| Lease::new(lease_key, owner)))
        })
    }

    /// `rediss://` trusts the AIM client's CA certificates (`AIM_CA_CERT`,
    /// `root_certificate_pem`) when it has any and this store was given none
    /// of its own; otherwise the OS trust store.
    fn trust_roots(&self, pems: &[Vec<u8>]) {
        if self.own_ca || pems.is_empty() || !self.url.starts_with("rediss://") {
            return;
        }
        let bundle: Vec<u8> = pems
            .iter()
            .flat_map(|p| p.iter().copied().chain([b'\n']))
            .collect();
        match self.with_roots(bundle) {
            Ok(client) => *self.client.lock().unwrap_or_else(PoisonError::into_inner) = client,
            Err(e) => tracing::warn!(
                target: "aim_token::store",
                store = %self.url,
                error = %e,
                "cannot use the AIM client's CA certificates for the Redis store; using the OS trust store"
            ),
        }
    }

    fn release(&self, lease: Lease) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            let mut c = self.connection()?;
            let _: i64 = Script::new(COMPARE_AND_DELETE)
                .key(lease.key())
                .arg(lease.owner())
                .invoke_async(&mut c)
                .await
                .map_err(io::Error::other)?;
            Ok(())
        })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_parses_without_io_and_hides_the_password() {
        let store = RedisStore::new("redis://reporter:hunter2@127.0.0.1:1/3").unwrap();
        let shown = format!("{store:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("127.0.0.1:1"));
        let client = store.client();
        let info = client.get_connection_info();
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.redis_settings().username(), Some("reporter"));
        RedisStore::new("rediss://cache01.plant.local:6380/0").unwrap();
        let err = RedisStore::new("http://u:hunter2@cache01").unwrap_err();
        assert!(
            err.is_config() && !err.to_string().contains("hunter2"),
            "{err}"
        );
        assert!(RedisStore::new("redis://h:notaport").is_err());
    }

    /// Generated passwords (base64) hold `/`, `+` and `=`: typed into the
    /// URL unencoded they must not reach an error message or Debug.
    #[test]
    fn a_password_with_a_slash_is_not_printed() {
        for url in [
            "redis://reporter:hun/ter2@cache01:6379/0",
            "redis://:hun/ter2+x=@cache01",
            "rediss://reporter:12/hunter2@cache01",
            "redis://u:hun@ter/2@cache01/0",
        ] {
            let shown = match RedisStore::new(url) {
                Ok(store) => format!("{store:?}"),
                Err(err) => format!("{err} {err:?}"),
            };
            assert!(!shown.contains("hun") && !shown.contains("ter2"), "{shown}");
            assert!(shown.contains("cache01"), "{shown}");
        }
        let err = super::super::from_spec("memcached://u:hun/ter2@cache01").unwrap_err();
        assert!(!err.to_string().contains("ter2"), "{err}");
    }

    #[test]
    fn a_ca_needs_rediss_and_pem() {
        let err = RedisStore::new("redis://u:hunter2@h")
            .unwrap()
            .root_certificate_pem("not pem")
            .unwrap_err();
        assert!(
            err.is_config() && !err.to_string().contains("hunter2"),
            "{err}"
        );
        let err = RedisStore::new("rediss://h")
            .unwrap()
            .root_certificate_pem("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
            .unwrap_err();
        assert!(err.to_string().contains("PEM"), "{err}");
    }

    #[test]
    fn keys_carry_the_prefix() {
        let store = RedisStore::new("redis://h").unwrap().key_prefix("p1:");
        assert_eq!(store.token_key("k"), "p1:token:k");
        assert_eq!(store.lease_key("k"), "p1:lease:k");
    }
}
