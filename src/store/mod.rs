//! A token shared by many processes and hosts: the store behind
//! [`AimClientBuilder::token_store`](crate::AimClientBuilder::token_store).
//!
//! The in-memory cache stays in front: a cached
//! [`token()`](crate::AimClient::token) never touches the store. When a
//! client needs a token (none yet, refresh due, or after a 401) it takes a
//! *lease* in the store, re-reads it (another process may just have written
//! one), asks AIM only if the store has nothing usable, writes the new token
//! and releases the lease. The other processes wait for the entry meanwhile,
//! so a fleet restarted at once sends **one** token request, and refreshes
//! ahead of expiry are shared the same way.
//!
//! - **Writes are fenced.** A token is written only where the store still
//!   holds what its writer read ([`TokenStore::replace_if`]): a holder that
//!   outlived its lease, a waiter that gave up, a host whose clock is behind
//!   cannot replace a token it has not seen. If another process stored a
//!   usable token lasting at least as long meanwhile, that one is used.
//!   A token a resource server refused here is never taken from the store
//!   again while it lasts, whoever writes it back.
//! - **Encrypted at rest.** An entry's key is a hash of what identifies the
//!   token (authority, client ID, scopes, extra form parameters), never the
//!   secret; its value is sealed with AES-256-GCM under a key derived from
//!   the client secret (HKDF-SHA256). Without the client secret the store
//!   holds nothing usable. An entry sealed with another secret, tampered
//!   with or of an unknown format is a miss, never an error.
//! - **The store can fail; the client cannot.** Every store operation has a
//!   short timeout (250 ms), and all of one acquisition's together twice
//!   that. A failing store means: ask AIM directly, log one warning per
//!   outage, try the store again a little later.
//!
//! Backends: [`FileStore`] (a directory, with OS file locks: the processes
//! of one host) and `RedisStore` (feature `redis`: Redis or Valkey, the
//! processes of many hosts). Bring your own by implementing [`TokenStore`];
//! sealing, keys and the lease protocol stay in this crate, a backend only
//! moves opaque bytes.
//!
//! ```no_run
//! # fn run() -> Result<(), aim_token::Error> {
//! use aim_token::{store::FileStore, AimClient};
//!
//! let aim = AimClient::builder()
//!     .authority("sms01.plant.local")
//!     .client_id("mes-reporting")
//!     .client_secret("s3cr3t")
//!     .token_store(FileStore::user_cache()?)
//!     .build()?;
//! # Ok(()) }
//! ```

mod engine;
mod file;
mod file_lease;
mod key;
#[cfg(feature = "redis")]
mod redis;
mod refusals;
mod seal;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use self::engine::{
    lease_time, shared_jitter_unit, Attached, Judge, Obtained, DEFAULT_OP_TIMEOUT,
};
pub use self::file::FileStore;
#[cfg(feature = "redis")]
pub use self::redis::RedisStore;

use crate::error::{Error, Result};

/// The future a [`TokenStore`] method returns (boxed, so the trait is
/// object-safe and a client can hold any backend).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A backend of the shared token store: opaque bytes under string keys, and
/// leases. The crate seals the values, derives the keys and runs the lease
/// protocol; a backend only stores what it is given.
///
/// Keys are short ASCII strings (64 hex digits). Every method may fail with
/// any [`io::Error`]; the client then asks AIM directly, so a backend need
/// not retry. Each call is bounded by the client's store timeout, so a
/// backend need not time out either, but must tolerate being cancelled.
///
/// ```
/// use std::collections::HashMap;
/// use std::io;
/// use std::sync::Mutex;
/// use std::time::Duration;
/// use aim_token::store::{BoxFuture, Lease, TokenStore};
///
/// /// Shares tokens between the clients of one process (a toy backend).
/// #[derive(Debug, Default)]
/// struct InMemory {
///     values: Mutex<HashMap<String, Vec<u8>>>,
///     leases: Mutex<HashMap<String, String>>,
/// }
///
/// impl TokenStore for InMemory {
///     fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<Option<Vec<u8>>>> {
///         Box::pin(async move { Ok(self.values.lock().unwrap().get(key).cloned()) })
///     }
///     fn put<'a>(&'a self, key: &'a str, value: &'a [u8], _ttl: Duration) -> BoxFuture<'a, io::Result<()>> {
///         Box::pin(async move {
///             self.values.lock().unwrap().insert(key.to_owned(), value.to_vec());
///             Ok(())
///         })
///     }
///     fn delete_if<'a>(&'a self, key: &'a str, expected: &'a [u8]) -> BoxFuture<'a, io::Result<bool>> {
///         Box::pin(async move {
///             let mut values = self.values.lock().unwrap();
///             let holds = values.get(key).is_some_and(|v| v.as_slice() == expected);
///             if holds {
///                 values.remove(key);
///             }
///             Ok(holds)
///         })
///     }
///     fn try_lease<'a>(&'a self, key: &'a str, _ttl: Duration) -> BoxFuture<'a, io::Result<Option<Lease>>> {
///         Box::pin(async move {
///             let mut leases = self.leases.lock().unwrap();
///             if leases.contains_key(key) {
///                 return Ok(None);
///             }
///             let lease = Lease::new(key, Lease::random_owner());
///             leases.insert(key.to_owned(), lease.owner().to_owned());
///             Ok(Some(lease))
///         })
///     }
///     fn release(&self, lease: Lease) -> BoxFuture<'_, io::Result<()>> {
///         Box::pin(async move {
///             let mut leases = self.leases.lock().unwrap();
///             if leases.get(lease.key()).map(String::as_str) == Some(lease.owner()) {
///                 leases.remove(lease.key());
///             }
///             Ok(())
///         })
///     }
/// }
/// ```
pub trait TokenStore: fmt::Debug + Send + Sync + 'static {
    /// The value stored under `key`, or `None`. A value longer than 256 KiB
    /// is a miss, so a backend need read no more than 256 KiB + 1 bytes.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<Option<Vec<u8>>>>;

    /// Stores `value` under `key`, replacing any value atomically (a reader
    /// sees the old or the new value, never a mix). The store may forget it
    /// after `ttl`.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<()>>;

    /// Deletes `key` only if it still holds exactly `expected` (atomically);
    /// says whether it did.
    fn delete_if<'a>(&'a self, key: &'a str, expected: &'a [u8])
        -> BoxFuture<'a, io::Result<bool>>;

    /// Stores `value` under `key` (like [`put`](Self::put)) only if `key`
    /// still holds `current` as [`get`](Self::get) returns it (`None`:
    /// nothing); says whether it did. The crate writes tokens through this,
    /// so that a write cannot replace a token its writer has not seen: one
    /// from a holder that outlived its lease, a writer that slept between
    /// its read and its write, a write that arrives late.
    ///
    /// The default compares with [`get`](Self::get), then calls
    /// [`put`](Self::put): a writer stalled between the two can still
    /// replace a newer value. Override it with the backend's own
    /// compare-and-set where it has one ([`FileStore`] and `RedisStore` do).
    /// A backend that wraps another one (to count or log its calls) must
    /// forward this method too: the default would call the inner store's
    /// `get` and `put` and lose its compare-and-set.
    fn replace_if<'a>(
        &'a self,
        key: &'a str,
        current: Option<&'a [u8]>,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<bool>> {
        Box::pin(async move {
            if self.get(key).await?.as_deref() != current {
                return Ok(false);
            }
            self.put(key, value, ttl).await.map(|()| true)
        })
    }

    /// Takes the lease on `key` without waiting: `None` while another holder
    /// has it. The lease ends at [`release`](Self::release), when its holder
    /// dies, or after `ttl`, whichever comes first.
    fn try_lease<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<Option<Lease>>>;

    /// Ends `lease` if it is still held by its owner (never someone else's
    /// lease that took over after it expired).
    fn release(&self, lease: Lease) -> BoxFuture<'_, io::Result<()>>;

    /// Called once by [`AimClientBuilder::build`](crate::AimClientBuilder::build)
    /// with the client's extra trust anchors (`root_certificate_pem`,
    /// `AIM_CA_CERT`), so a backend that speaks TLS can trust what the AIM
    /// client trusts. The default ignores them.
    fn trust_roots(&self, pems: &[Vec<u8>]) {
        let _ = pems;
    }
}

/// A lease taken by [`TokenStore::try_lease`]: the key, a random owner ID
/// (for a compare-and-delete release) and whatever the backend must keep
/// alive while it is held (e.g. a locked file).
pub struct Lease {
    key: String,
    owner: String,
    hold: Option<Box<dyn Any + Send + Sync>>,
}

impl Lease {
    /// A lease on `key` owned by `owner` (use [`random_owner`](Self::random_owner)).
    pub fn new(key: impl Into<String>, owner: impl Into<String>) -> Self {
        Lease {
            key: key.into(),
            owner: owner.into(),
            hold: None,
        }
    }

    /// The same lease, keeping `resource` alive (e.g. a locked file) until
    /// it is released or dropped.
    #[must_use]
    pub fn holding(mut self, resource: impl Any + Send + Sync) -> Self {
        self.hold = Some(Box::new(resource));
        self
    }

    /// A fresh random owner ID (128 bits, hex).
    pub fn random_owner() -> String {
        let mut bytes = [0u8; 16];
        // No entropy is a broken OS; a fixed owner then still works for
        // mutual exclusion (only stealing an expired lease is affected).
        let _ = getrandom::fill(&mut bytes);
        key::hex(&bytes)
    }

    /// The key the lease is on.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The owner ID.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The resource kept alive by [`holding`](Self::holding), if any.
    pub fn resource(&self) -> Option<&(dyn Any + Send + Sync)> {
        self.hold.as_deref()
    }
}

/// A shared handle is a store too (what [`from_spec`] returns).
impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<Option<Vec<u8>>>> {
        (**self).get(key)
    }
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<()>> {
        (**self).put(key, value, ttl)
    }
    fn delete_if<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
    ) -> BoxFuture<'a, io::Result<bool>> {
        (**self).delete_if(key, expected)
    }
    fn replace_if<'a>(
        &'a self,
        key: &'a str,
        current: Option<&'a [u8]>,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<bool>> {
        (**self).replace_if(key, current, value, ttl)
    }
    fn try_lease<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<Option<Lease>>> {
        (**self).try_lease(key, ttl)
    }
    fn release(&self, lease: Lease) -> BoxFuture<'_, io::Result<()>> {
        (**self).release(lease)
    }
    fn trust_roots(&self, pems: &[Vec<u8>]) {
        (**self).trust_roots(pems)
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// The environment variable that selects the store for `AimClient::from_env`
/// and the CLI.
pub const ENV: &str = "AIM_TOKEN_STORE";

/// The store a value of `AIM_TOKEN_STORE` names: `file:DIR` (a
/// [`FileStore`]), `redis://…` or `rediss://…` (a `RedisStore`, feature
/// `redis`), or `none` (`Ok(None)`: no shared store). No I/O; the error
/// says what to write instead. [`AimClient::from_env`](crate::AimClient::from_env)
/// and the `aim-token` CLI read the variable through this.
///
/// ```
/// use aim_token::store;
///
/// assert!(store::from_spec("none")?.is_none());
/// assert!(store::from_spec("file:/var/cache/mes-reporting")?.is_some());
/// assert!(store::from_spec("memcached://cache01").is_err());
/// # Ok::<(), aim_token::Error>(())
/// ```
pub fn from_spec(spec: &str) -> Result<Option<Arc<dyn TokenStore>>> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if let Some(dir) = spec.strip_prefix("file:") {
        if dir.trim().is_empty() {
            return Err(Error::config(format!(
                "{ENV}=file: needs a directory, e.g. {ENV}=file:/var/cache/mes-reporting"
            )));
        }
        // `~` is not expanded here, and a relative directory differs with
        // each process's working directory: the processes would not share.
        if !std::path::Path::new(dir).has_root() {
            return Err(Error::config(format!(
                "{ENV}=file:{dir} needs the directory's full path (no ~, not relative), e.g. {ENV}=file:/var/cache/mes-reporting"
            )));
        }
        return Ok(Some(Arc::new(FileStore::new(dir))));
    }
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        return redis_from_spec(spec);
    }
    Err(Error::config(format!(
        "{ENV} must be file:DIR, redis://HOST:PORT/DB, rediss://HOST:PORT/DB or none, got {:?}",
        crate::authority::without_userinfo(spec)
    )))
}

#[cfg(feature = "redis")]
fn redis_from_spec(spec: &str) -> Result<Option<Arc<dyn TokenStore>>> {
    Ok(Some(Arc::new(RedisStore::new(spec)?)))
}

#[cfg(not(feature = "redis"))]
fn redis_from_spec(_spec: &str) -> Result<Option<Arc<dyn TokenStore>>> {
    Err(Error::config(format!(
        "{ENV} names a Redis store, but this build has no Redis support: build aim-token with the feature \"redis\", or use {ENV}=file:DIR"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_every_form() {
        assert!(from_spec("none").unwrap().is_none());
        assert!(from_spec(" NONE ").unwrap().is_none());
        assert!(from_spec("file:/tmp/x").unwrap().is_some());
        let err = from_spec("file:").unwrap_err();
        assert!(err.is_config() && err.to_string().contains("directory"));
        let err = from_spec("memcached://u:hunter2@h").unwrap_err();
        assert!(err.to_string().contains("AIM_TOKEN_STORE"));
        assert!(!err.to_string().contains("hunter2"), "{err}");
        #[cfg(feature = "redis")]
        assert!(from_spec("rediss://user:pw@cache01:6380/2")
            .unwrap()
            .is_some());
        #[cfg(not(feature = "redis"))]
        assert!(from_spec("redis://h")
            .unwrap_err()
            .to_string()
            .contains("feature"));
    }

    /// `~` is not expanded in service definitions, and a relative directory
    /// depends on each process's working directory: no sharing, silently.
    #[test]
    fn a_file_store_needs_a_directory_from_the_root() {
        for spec in ["file:~/.cache/aim-token", "file:cache", "file:./x"] {
            let err = from_spec(spec).expect_err(spec);
            assert!(
                err.is_config() && err.to_string().contains("full path"),
                "{err}"
            );
        }
    }

    #[test]
    fn from_env_reads_aim_token_store() {
        let vars = |store: &'static str| {
            move |name: &str| {
                let value = match name {
                    "AIM_AUTHORITY" => "sms01",
                    "AIM_CLIENT_ID" => "mes-reporting",
                    "AIM_CLIENT_SECRET" => "s3cr3t",
                    "AIM_TOKEN_STORE" => store,
                    _ => return None,
                };
                Some(value.to_owned())
            }
        };
        let builder = crate::AimClientBuilder::from_lookup(vars("file:/var/cache/x")).unwrap();
        assert!(format!("{:?}", builder.token_store).contains("/var/cache/x"));
        let builder = crate::AimClientBuilder::from_lookup(vars("none")).unwrap();
        assert!(builder.token_store.is_none());
        let builder = crate::AimClientBuilder::from_lookup(vars("")).unwrap();
        assert!(builder.token_store.is_none());
        let err = crate::AimClientBuilder::from_lookup(vars("tmp/x")).unwrap_err();
        assert!(
            err.is_config() && err.to_string().contains("AIM_TOKEN_STORE"),
            "{err}"
        );
    }

    #[test]
    fn owners_are_random_hex() {
        let (a, b) = (Lease::random_owner(), Lease::random_owner());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
