//! Client credentials and how they are put on the wire.
//!
//! AVEVA's own sample concatenates the secret into the form body unencoded,
//! so a secret with `&`, `+`, `%` or a space breaks it. Here the body is
//! always form-urlencoded, and for `client_secret_basic` the ID and secret
//! are percent-encoded before base64, as RFC 6749 §2.3.1 says.

use std::fmt;

use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

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

impl ClientAuthMethod {
    /// The OAuth name of the method, as in discovery metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::Post => "client_secret_post",
            ClientAuthMethod::Basic => "client_secret_basic",
        }
    }
}

impl fmt::Display for ClientAuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 3986 unreserved characters stay; everything else (space included,
/// as `%20`, never `+`) is percent-encoded.
pub(crate) const BASIC_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

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

    /// The `Authorization` header value for `client_secret_basic`:
    /// `Basic base64(urlencode(id) ":" urlencode(secret))`. Zeroized on drop.
    pub(crate) fn basic_authorization(&self) -> Zeroizing<String> {
        // Sized up front: a string that grows frees its old block unzeroized.
        let (id, secret) = (self.client_id.as_str(), self.secret.expose_secret());
        let mut pair = Zeroizing::new(String::with_capacity(
            id.len()
                .saturating_add(secret.len())
                .saturating_mul(3)
                .saturating_add(1),
        ));
        pair.extend(utf8_percent_encode(id, BASIC_ENCODE));
        pair.push(':');
        pair.extend(utf8_percent_encode(secret, BASIC_ENCODE));
        let encoded = pair.len().div_ceil(3).saturating_mul(4);
        let mut header = Zeroizing::new(String::with_capacity(encoded.saturating_add(6)));
        header.push_str("Basic ");
        base64::engine::general_purpose::STANDARD.encode_string(pair.as_bytes(), &mut header);
        header
    }

    /// The form body of a client-credentials token request:
    /// `grant_type`, the scopes space-joined, the extra parameters, and for
    /// `client_secret_post` the ID and secret. Zeroized on drop.
    pub(crate) fn token_request_body(
        &self,
        scopes: &[String],
        extra: &[(String, String)],
    ) -> Zeroizing<String> {
        // Sized up front: a string that grows frees its old block, with the
        // secret in it, unzeroized.
        let capacity = self.form_capacity(scopes, extra);
        let mut form = url::form_urlencoded::Serializer::new(String::with_capacity(capacity));
        form.append_pair("grant_type", "client_credentials");
        if !scopes.is_empty() {
            form.append_pair("scope", &scopes.join(" "));
        }
        for (name, value) in extra {
            form.append_pair(name, value);
        }
        if self.method == ClientAuthMethod::Post {
            form.append_pair("client_id", &self.client_id);
            form.append_pair("client_secret", self.secret.expose_secret());
        }
        Zeroizing::new(form.finish())
    }

    /// An upper bound of the form body's length: every byte escaped to
    /// three characters, the names and separators included.
    fn form_capacity(&self, scopes: &[String], extra: &[(String, String)]) -> usize {
        const NAMES: &str = "grant_type=client_credentials&scope=&client_id=&client_secret=";
        [self.client_id.len(), self.secret.expose_secret().len()]
            .into_iter()
            .chain(scopes.iter().map(|s| s.len().saturating_add(1)))
            .chain(
                extra
                    .iter()
                    .map(|(n, v)| n.len().saturating_add(v.len()).saturating_add(2)),
            )
            .fold(NAMES.len(), usize::saturating_add)
            .saturating_mul(3)
    }

    /// The spellings of the secret that a server could echo back (raw, as in
    /// the Basic header, as in the form), for [`Scrubber::new`], which orders
    /// and deduplicates them. Empty secrets yield none.
    ///
    /// [`Scrubber::new`]: crate::exchange::scrub::Scrubber::new
    pub(crate) fn secret_spellings(&self) -> Vec<String> {
        let raw = self.secret.expose_secret();
        if raw.is_empty() {
            return Vec::new();
        }
        let mut spellings = crate::exchange::scrub::spellings_of(raw);
        // The Basic credentials as sent, without the `Basic ` prefix.
        let basic = self.basic_authorization();
        if let Some(b64) = basic.strip_prefix("Basic ") {
            spellings.push(b64.trim_end_matches('=').to_owned());
        }
        spellings
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

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "mes:client one";
    const SECRET: &str = "P@ss w0rd&+=%:/?#";

    fn creds(method: ClientAuthMethod) -> ClientCredentials {
        ClientCredentials::new(ID.into(), SecretString::from(SECRET), method)
    }

    /// Decodes `application/x-www-form-urlencoded` as a server does.
    fn decode_form(body: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn post_body_round_trips_an_awkward_secret() {
        let body = creds(ClientAuthMethod::Post).token_request_body(
            &["mes.api".into(), "openid".into()],
            &[("resource".into(), "urn:mes".into())],
        );
        assert_eq!(
            body.as_str(),
            "grant_type=client_credentials&scope=mes.api+openid&resource=urn%3Ames\
             &client_id=mes%3Aclient+one&client_secret=P%40ss+w0rd%26%2B%3D%25%3A%2F%3F%23"
        );
        let pairs = decode_form(&body);
        assert_eq!(
            pairs,
            vec![
                ("grant_type".into(), "client_credentials".into()),
                ("scope".into(), "mes.api openid".into()),
                ("resource".into(), "urn:mes".into()),
                ("client_id".into(), ID.into()),
                ("client_secret".into(), SECRET.into()),
            ]
        );
    }

    /// Every buffer that holds the secret is sized up front and never
    /// grows (a growing string frees its old block unzeroized): its
    /// capacity at the end is the one it was made with, even when every
    /// byte of every value is escaped to three characters.
    #[test]
    fn buffers_holding_the_secret_never_grow() {
        let secret = "é&+=%\u{1F512} /?#".repeat(20);
        let worst = ClientCredentials::new(
            "&=+%é".repeat(10),
            SecretString::from(secret.clone()),
            ClientAuthMethod::Post,
        );
        let scopes = vec!["é&".repeat(5), "=+".into()];
        let extra = vec![("ré&".into(), "v%=".repeat(7))];
        let body = worst.token_request_body(&scopes, &extra);
        assert!(body.contains("client_secret="), "{}", body.as_str());
        assert_eq!(body.capacity(), worst.form_capacity(&scopes, &extra));
        let plain = creds(ClientAuthMethod::Post).token_request_body(&[], &[]);
        assert_eq!(
            plain.capacity(),
            creds(ClientAuthMethod::Post).form_capacity(&[], &[])
        );

        // Base64 with its padding fills the header exactly.
        let header = worst.basic_authorization();
        assert_eq!(header.capacity(), header.len());
    }

    #[test]
    fn basic_body_has_no_credentials_and_no_scope_when_none() {
        let body = creds(ClientAuthMethod::Basic).token_request_body(&[], &[]);
        assert_eq!(body.as_str(), "grant_type=client_credentials");
    }

    #[test]
    fn basic_header_percent_encodes_then_base64() {
        let header = creds(ClientAuthMethod::Basic).basic_authorization();
        let b64 = header.strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let decoded = String::from_utf8(decoded).unwrap();
        // Space as %20 (not +), every reserved character encoded, one unencoded colon.
        assert_eq!(
            decoded,
            "mes%3Aclient%20one:P%40ss%20w0rd%26%2B%3D%25%3A%2F%3F%23"
        );
        let (id, secret) = decoded.split_once(':').unwrap();
        let unescape = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .unwrap()
                .into_owned()
        };
        assert_eq!(unescape(id), ID);
        assert_eq!(unescape(secret), SECRET);
    }

    #[test]
    fn unreserved_characters_stay_as_they_are() {
        let c = ClientCredentials::new(
            "a-b.c_d~e".into(),
            SecretString::from("Zz09"),
            ClientAuthMethod::Basic,
        );
        let header = c.basic_authorization();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(header.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"a-b.c_d~e:Zz09");
    }

    #[test]
    fn debug_is_redacted() {
        let c = creds(ClientAuthMethod::Post);
        let shown = format!("{c:?}");
        assert!(!shown.contains("w0rd"), "{shown}");
        assert!(shown.contains("mes:client one"));
    }

    #[test]
    fn secret_spellings_cover_encodings() {
        let s = creds(ClientAuthMethod::Post).secret_spellings();
        assert!(s.contains(&SECRET.to_owned()));
        assert!(s.contains(&"P%40ss%20w0rd%26%2B%3D%25%3A%2F%3F%23".to_owned()));
        assert!(s.contains(&"P%40ss+w0rd%26%2B%3D%25%3A%2F%3F%23".to_owned()));
        let empty =
            ClientCredentials::new("x".into(), SecretString::from(""), ClientAuthMethod::Post);
        assert!(empty.secret_spellings().is_empty());
    }

    #[test]
    fn method_names() {
        assert_eq!(ClientAuthMethod::Post.to_string(), "client_secret_post");
        assert_eq!(ClientAuthMethod::Basic.as_str(), "client_secret_basic");
    }
}
