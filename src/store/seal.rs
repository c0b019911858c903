//! Sealing store values: AES-256-GCM under a key derived from the client
//! secret with HKDF-SHA256, bound to the entry's key.
//!
//! aws-lc-rs, which rustls already builds for TLS, provides HKDF, AES-GCM
//! and SHA-256 with a vetted implementation; no second crypto stack.

use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::token::AccessToken;

/// Format tag at the start of every value; anything else is a miss.
const MAGIC: &[u8; 4] = b"AIT1";
const SALT: &[u8] = b"aim-token/store-seal/v1";
/// Larger values are not this crate's (a token record is a few KiB): a
/// miss, without decrypting or parsing them.
const MAX_VALUE: usize = 256 * 1024;

/// Seals and opens the values of one entry.
pub(crate) struct Sealer {
    key: LessSafeKey,
    /// The entry key, authenticated with every value: a value copied under
    /// another key does not open.
    aad: Vec<u8>,
}

/// Why a value did not open (each is a miss for the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// Not this crate's format or version.
    Format,
    /// Sealed with another secret, or tampered with.
    Seal,
    /// Opened, but not a token record.
    Content,
}

/// What a sealed value holds.
#[derive(Serialize, Deserialize)]
struct Record {
    token: String,
    token_type: String,
    issued_at_ms: u64,
    expires_at_ms: u64,
    scopes: Vec<String>,
    /// The AIM node that issued the token.
    authority: String,
    /// Who wrote it (host and process), for diagnostics.
    writer: String,
}

impl Sealer {
    /// The sealer of `entry_key` for the client with `secret`.
    pub(crate) fn new(secret: &SecretString, entry_key: &str) -> Sealer {
        let prk = Salt::new(HKDF_SHA256, SALT).extract(secret.expose_secret().as_bytes());
        let info = [entry_key.as_bytes()];
        let key = prk
            .expand(&info, &AES_256_GCM)
            .map(UnboundKey::from)
            // Only fails for an output longer than 255 hashes; 32 bytes is not.
            .unwrap_or_else(|_| unreachable!("HKDF expands 32 bytes"));
        Sealer {
            key: LessSafeKey::new(key),
            aad: [MAGIC.as_slice(), entry_key.as_bytes()].concat(),
        }
    }

    /// The sealed value of `token`, written by `writer`; `None` only if the
    /// OS has no randomness for the nonce.
    pub(crate) fn seal(&self, token: &AccessToken, writer: &str) -> Option<Vec<u8>> {
        let record = Record {
            token: token.secret().to_owned(),
            token_type: token.token_type().to_owned(),
            issued_at_ms: crate::clock::unix_millis(token.issued_at()),
            expires_at_ms: token.expires_at_ms(),
            scopes: token.scopes().to_vec(),
            authority: token.authority().to_owned(),
            writer: writer.to_owned(),
        };
        let mut record = Zeroizing::new(record);
        let mut plain = Zeroizing::new(serde_json::to_vec(&*record).ok()?);
        record.token.clear();
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad.as_slice()),
                &mut *plain,
            )
            .ok()?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plain.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&plain);
        Some(out)
    }

    /// The token in `value`, if it is this crate's format, sealed with this
    /// secret for this entry, and intact.
    pub(crate) fn open(&self, value: &[u8]) -> Result<AccessToken, Unreadable> {
        if value.len() > MAX_VALUE {
            return Err(Unreadable::Format);
        }
        let rest = value.strip_prefix(MAGIC).ok_or(Unreadable::Format)?;
        if rest.len() < NONCE_LEN {
            return Err(Unreadable::Format);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unreadable::Format)?;
        let mut buffer = Zeroizing::new(sealed.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(self.aad.as_slice()), &mut buffer)
            .map_err(|_| Unreadable::Seal)?;
        let record: Record = serde_json::from_slice(plain).map_err(|_| Unreadable::Content)?;
        if record.expires_at_ms < record.issued_at_ms {
            return Err(Unreadable::Content);
        }
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        Ok(AccessToken::from_parts(
            SecretString::from(record.token),
            record.token_type,
            at(record.issued_at_ms),
            at(record.expires_at_ms),
            record.scopes,
            record.authority,
        ))
    }
}

impl zeroize::Zeroize for Record {
    fn zeroize(&mut self) {
        self.token.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    const KEY: &str = "0123abcd";

    fn token() -> AccessToken {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        AccessToken::from_parts(
            SecretString::from("eyJ.the-bearer-value".to_owned()),
            "Bearer".into(),
            now,
            now + Duration::from_secs(600),
            vec!["site.api".into()],
            "https://sms01/identitymanager".into(),
        )
    }

    fn sealer(secret: &str) -> Sealer {
        Sealer::new(&SecretString::from(secret.to_owned()), KEY)
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let t = token();
        let value = sealer("s3cr3t").seal(&t, "host/1").unwrap();
        let back = sealer("s3cr3t").open(&value).unwrap();
        assert_eq!(back.secret(), t.secret());
        assert_eq!(back.token_type(), "Bearer");
        assert_eq!(back.issued_at(), t.issued_at());
        assert_eq!(back.expires_at(), t.expires_at());
        assert_eq!(back.scopes(), t.scopes());
        assert_eq!(back.authority(), t.authority());
        assert!(back.expires_at() > SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn neither_token_nor_secret_in_clear_and_nonces_differ() {
        let a = sealer("s3cr3t-value").seal(&token(), "host/1").unwrap();
        let b = sealer("s3cr3t-value").seal(&token(), "host/1").unwrap();
        assert_ne!(a, b, "a fresh nonce per value");
        for value in [&a, &b] {
            assert!(!contains(value, b"the-bearer-value"));
            assert!(!contains(value, b"s3cr3t-value"));
            assert!(!contains(value, b"sms01"));
        }
    }

    #[test]
    fn another_secret_another_key_tampering_or_garbage_do_not_open() {
        let value = sealer("s3cr3t").seal(&token(), "w").unwrap();
        assert_eq!(sealer("other").open(&value).unwrap_err(), Unreadable::Seal);
        let elsewhere = Sealer::new(&SecretString::from("s3cr3t".to_owned()), "other-key");
        assert_eq!(elsewhere.open(&value).unwrap_err(), Unreadable::Seal);
        for i in 0..value.len() {
            let mut flipped = value.clone();
            flipped[i] ^= 0x01;
            assert!(sealer("s3cr3t").open(&flipped).is_err(), "byte {i}");
        }
        for garbage in [
            &b""[..],
            b"AIT1",
            b"AIT1short",
            b"{\"token\":\"x\"}",
            &value[..value.len() - 1],
        ] {
            assert!(sealer("s3cr3t").open(garbage).is_err());
        }
        let mut huge = value.clone();
        huge.resize(MAX_VALUE + 1, 0);
        assert_eq!(
            sealer("s3cr3t").open(&huge).unwrap_err(),
            Unreadable::Format
        );
        let mut v2 = value.clone();
        v2[3] = b'2';
        assert_eq!(sealer("s3cr3t").open(&v2).unwrap_err(), Unreadable::Format);
    }
}
