//! The state every request handler shares: clients, settings, counters.
//! Locks here are std locks held for a lookup, never across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use super::faults::Faults;
use super::keys::SigningKey;
use super::mes::plant::Rows;
use super::mes::transactions::Mes;
use super::register::Registrations;
use super::{Counters, EmulatorClient, Endpoint, ExpiresInFormat};
use crate::clock::{unix_millis, Clock};

pub(crate) struct State {
    /// `http(s)://127.0.0.1:PORT`
    pub(crate) base_url: String,
    /// `{base_url}/identitymanager`
    pub(crate) issuer: String,
    /// This emulator's own key (per node, as in AIM).
    pub(crate) key: Arc<SigningKey>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) expires_in_format: ExpiresInFormat,
    pub(crate) discovery: bool,
    pub(crate) initial_access_token: Option<String>,
    pub(crate) faults: Faults,
    pub(crate) counters: AtomicCounters,
    pub(crate) mes_forbidden: AtomicBool,
    pub(crate) reject_next_mes: AtomicBool,
    pub(crate) registrations: Registrations,
    /// The MES plant, its transactions and knobs.
    pub(crate) mes: Mes,
    /// The `aud` claim of every token.
    pub(crate) audience: String,
    clients: RwLock<HashMap<String, EmulatorClient>>,
    lifetime_ms: AtomicU64,
}

/// What [`State::new`] needs besides the address.
pub(crate) struct Settings {
    pub(crate) clients: Vec<EmulatorClient>,
    pub(crate) lifetime: Duration,
    pub(crate) expires_in_format: ExpiresInFormat,
    pub(crate) discovery: bool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) initial_access_token: Option<String>,
    pub(crate) mes_rows: Rows,
    pub(crate) mes_transaction_timeout: Duration,
    /// `None`: IdentityServer's static `{issuer}/resources`.
    pub(crate) audience: Option<String>,
}

impl State {
    pub(crate) fn new(base_url: String, key: Arc<SigningKey>, settings: Settings) -> Self {
        let clients = settings
            .clients
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        let issuer = format!("{base_url}/identitymanager");
        State {
            audience: settings
                .audience
                .unwrap_or_else(|| format!("{issuer}/resources")),
            mes: Mes::new(settings.mes_rows, settings.mes_transaction_timeout),
            issuer,
            base_url,
            key,
            clock: settings.clock,
            expires_in_format: settings.expires_in_format,
            discovery: settings.discovery,
            initial_access_token: settings.initial_access_token,
            faults: Faults::default(),
            counters: AtomicCounters::default(),
            mes_forbidden: AtomicBool::new(false),
            reject_next_mes: AtomicBool::new(false),
            registrations: Registrations::default(),
            clients: RwLock::new(clients),
            lifetime_ms: AtomicU64::new(millis(settings.lifetime)),
        }
    }

    /// A copy of the client `id`, if known.
    pub(crate) fn client(&self, id: &str) -> Option<EmulatorClient> {
        self.clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// The scopes any client may have, for discovery's `scopes_supported`.
    pub(crate) fn scopes_supported(&self) -> Vec<String> {
        let clients = self.clients.read().unwrap_or_else(PoisonError::into_inner);
        let mut scopes: Vec<String> = clients.values().flat_map(|c| c.scopes.clone()).collect();
        scopes.sort();
        scopes.dedup();
        scopes
    }

    /// Adds or replaces a client.
    pub(crate) fn put_client(&self, client: EmulatorClient) {
        self.clients
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(client.id.clone(), client);
    }

    /// Adds `client` unless its ID is taken; `false` when it was.
    pub(crate) fn insert_new_client(&self, client: EmulatorClient) -> bool {
        let mut clients = self.clients.write().unwrap_or_else(PoisonError::into_inner);
        if clients.contains_key(&client.id) {
            return false;
        }
        clients.insert(client.id.clone(), client);
        true
    }

    /// The lifetime of tokens issued now to a client without its own.
    pub(crate) fn lifetime(&self) -> Duration {
        Duration::from_millis(self.lifetime_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn set_lifetime(&self, lifetime: Duration) {
        self.lifetime_ms.store(millis(lifetime), Ordering::Relaxed);
    }

    /// Seconds since the Unix epoch by the configured clock.
    pub(crate) fn now_secs(&self) -> u64 {
        self.now_millis() / 1000
    }

    /// Milliseconds since the Unix epoch by the configured clock.
    pub(crate) fn now_millis(&self) -> u64 {
        unix_millis(self.clock.now())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Request counters, one per endpoint.
#[derive(Default)]
pub(crate) struct AtomicCounters {
    discovery: AtomicU64,
    jwks: AtomicU64,
    token: AtomicU64,
    tokens_issued: AtomicU64,
    register: AtomicU64,
    introspect: AtomicU64,
    mes: AtomicU64,
}

impl AtomicCounters {
    pub(crate) fn hit(&self, endpoint: Endpoint) {
        let counter = match endpoint {
            Endpoint::Discovery => &self.discovery,
            Endpoint::Jwks => &self.jwks,
            Endpoint::Token => &self.token,
            Endpoint::Register => &self.register,
            Endpoint::Introspect => &self.introspect,
            Endpoint::Mes => &self.mes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn token_issued(&self) {
        self.tokens_issued.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn token_requests(&self) -> u64 {
        self.token.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> Counters {
        Counters {
            discovery: self.discovery.load(Ordering::Relaxed),
            jwks: self.jwks.load(Ordering::Relaxed),
            token: self.token.load(Ordering::Relaxed),
            tokens_issued: self.tokens_issued.load(Ordering::Relaxed),
            register: self.register.load(Ordering::Relaxed),
            introspect: self.introspect.load(Ordering::Relaxed),
            mes: self.mes.load(Ordering::Relaxed),
        }
    }
}

impl Endpoint {
    /// The endpoint a request path belongs to; `None` for paths the
    /// emulator does not serve (they are neither counted nor faulted).
    pub(crate) fn of_path(path: &str) -> Option<Endpoint> {
        if let Some(rest) = path.strip_prefix("/identitymanager") {
            return match rest.trim_end_matches('/') {
                "/.well-known/openid-configuration" => Some(Endpoint::Discovery),
                "/.well-known/openid-configuration/jwks" => Some(Endpoint::Jwks),
                "/connect/token" => Some(Endpoint::Token),
                "/connect/introspect" => Some(Endpoint::Introspect),
                r if r == "/connect/register" || r.starts_with("/connect/register/") => {
                    Some(Endpoint::Register)
                }
                _ => None,
            };
        }
        // MES matches its paths case-insensitively.
        let mes = path
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("/mesmw"));
        if mes && (path.len() == 6 || path.as_bytes().get(6) == Some(&b'/')) {
            return Some(Endpoint::Mes);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_endpoints() {
        let of = Endpoint::of_path;
        assert_eq!(
            of("/identitymanager/.well-known/openid-configuration"),
            Some(Endpoint::Discovery)
        );
        assert_eq!(
            of("/identitymanager/.well-known/openid-configuration/jwks"),
            Some(Endpoint::Jwks)
        );
        assert_eq!(of("/identitymanager/connect/token"), Some(Endpoint::Token));
        assert_eq!(
            of("/identitymanager/connect/register/abc"),
            Some(Endpoint::Register)
        );
        assert_eq!(
            of("/identitymanager/connect/introspect"),
            Some(Endpoint::Introspect)
        );
        assert_eq!(of("/mesmw/api/v3/entity"), Some(Endpoint::Mes));
        assert_eq!(of("/MESMW/API/V3/Entity"), Some(Endpoint::Mes));
        assert_eq!(of("/mesmw"), Some(Endpoint::Mes));
        assert_eq!(of("/identitymanager/connect/tokenx"), None);
        assert_eq!(of("/mesmwx"), None);
        assert_eq!(of("/"), None);
    }
}
