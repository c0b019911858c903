//! Client credentials and how they are put on the wire. SKELETON (issue #2).

use std::fmt;

use secrecy::SecretString;

/// How the client proves its identity to the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientAuthMethod {
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    /// The default, as in AVEVA's sample.
    #[default]
    Post,
    /// `client_secret_basic`: an `Authorization: Basic` header with the
    /// form-urlencoded ID and secret.
    Basic,
}

/// A client ID and its secret.
#[derive(Clone)]
pub(crate) struct ClientCredentials {
    pub(crate) client_id: String,
    pub(crate) secret: SecretString,
    pub(crate) method: ClientAuthMethod,
}

impl ClientCredentials {
    pub(crate) fn new(client_id: String, secret: SecretString, method: ClientAuthMethod) -> Self {
        ClientCredentials {
            client_id,
            secret,
            method,
        }
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("secret", &"[redacted]")
            .field("method", &self.method)
            .finish()
    }
}
