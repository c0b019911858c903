//! The RS256 key that signs the emulator's access tokens, and its JWKS.
//!
//! One 2048-bit RSA key per emulator, as every AIM node has its own: a token
//! of emulator A fails B's JWKS, as a token of one node fails at another.
//! Generating one takes 60-350 ms (debug build, shared 2-core machine), so
//! [`AimEmulator::start`](super::AimEmulator) generates it on a blocking
//! thread, not on the async executor.

use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    KeyPair as _, RsaKeyPair, RsaPublicKeyComponents, UnparsedPublicKey,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// An RSA signing key with its public half in the forms a JWT needs.
pub(crate) struct SigningKey {
    pair: RsaKeyPair,
    /// PKCS#1 `RSAPublicKey` DER, for verifying our own tokens.
    public_der: Vec<u8>,
    /// RFC 7638 thumbprint, the `kid` of header and JWK.
    kid: String,
    /// `base64url(header).`, the same for every token.
    header_prefix: String,
    jwk: Value,
    rng: SystemRandom,
}

/// A new signing key. CPU-bound for a noticeable time: call it off the
/// async executor (`spawn_blocking`).
pub(crate) fn generate() -> Result<SigningKey> {
    SigningKey::generate().map_err(|e| {
        Error::config(format!(
            "emulator: cannot generate the RSA signing key: {e}"
        ))
    })
}

impl SigningKey {
    fn generate() -> std::result::Result<Self, String> {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| e.to_string())?;
        let public = pair.public_key();
        let public_der = public.as_ref().to_vec();
        let components = RsaPublicKeyComponents::<Vec<u8>>::from(public);
        let n = URL_SAFE_NO_PAD.encode(&components.n);
        let e = URL_SAFE_NO_PAD.encode(&components.e);
        let kid = thumbprint(&n, &e);
        let header = json!({"alg": "RS256", "kid": kid, "typ": "at+jwt"});
        let header_prefix = format!("{}.", URL_SAFE_NO_PAD.encode(header.to_string()));
        let jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": n,
            "e": e,
        });
        Ok(SigningKey {
            pair,
            public_der,
            kid,
            header_prefix,
            jwk,
            rng: SystemRandom::new(),
        })
    }

    /// The `kid` of this key.
    #[cfg(test)]
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document: `{"keys": [jwk]}`.
    pub(crate) fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// A compact JWS (RS256) over `claims`.
    pub(crate) fn sign(&self, claims: &Value) -> Result<String> {
        let mut jwt = self.header_prefix.clone();
        URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut jwt);
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &self.rng, jwt.as_bytes(), &mut sig)
            .map_err(|_| Error::config("emulator: RSA signing failed"))?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&sig, &mut jwt);
        Ok(jwt)
    }

    /// The claims of `jwt` if it is an RS256 JWS signed by this key; `None`
    /// for anything else (malformed, other algorithm, bad signature).
    pub(crate) fn verify(&self, jwt: &str) -> Option<Map<String, Value>> {
        let (signed, sig) = jwt.rsplit_once('.')?;
        let (header, claims) = signed.split_once('.')?;
        if claims.contains('.') {
            return None;
        }
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.get("alg")? != "RS256" {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.public_der)
            .verify(signed.as_bytes(), &sig)
            .ok()?;
        match serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()? {
            Value::Object(map) => Some(map),
            _ => None,
        }
    }
}

/// RFC 7638 JWK thumbprint of an RSA key: SHA-256 over the required members
/// in lexicographic order, base64url.
fn thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &"RS256")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// One key for these tests (generation is slow).
    fn signing_key() -> Result<&'static SigningKey> {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        Ok(KEY.get_or_init(|| generate().unwrap()))
    }

    #[test]
    fn every_key_is_its_own() {
        let a = generate().unwrap();
        let b = signing_key().unwrap();
        assert_ne!(a.kid(), b.kid());
        let jwt = a.sign(&json!({"sub": "x"})).unwrap();
        assert!(a.verify(&jwt).is_some());
        assert!(
            b.verify(&jwt).is_none(),
            "a token of one node fails at another"
        );
    }

    #[test]
    fn signs_and_verifies_its_own_tokens() {
        let key = signing_key().unwrap();
        let jwt = key.sign(&json!({"sub": "x", "n": 1})).unwrap();
        let claims = key.verify(&jwt).unwrap();
        assert_eq!(claims["sub"], "x");

        // Any change to the signed part or the signature is rejected.
        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        let forged_claims = URL_SAFE_NO_PAD.encode(r#"{"sub":"y","n":1}"#);
        let header = signed.split('.').next().unwrap();
        assert!(key
            .verify(&format!("{header}.{forged_claims}.{sig}"))
            .is_none());
        assert!(key.verify(&format!("{signed}.{}", &sig[1..])).is_none());
        assert!(key.verify(&format!("{jwt}.x")).is_none());
        assert!(key.verify("not a jwt").is_none());
    }

    #[test]
    fn rejects_other_algorithms() {
        let key = signing_key().unwrap();
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let claims = URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#);
        assert!(key.verify(&format!("{header}.{claims}.")).is_none());
    }

    #[test]
    fn jwk_matches_key_and_thumbprint() {
        let key = signing_key().unwrap();
        let jwks = key.jwks();
        let jwk = &jwks["keys"][0];
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(jwk["e"], "AQAB"); // 65537
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256);
        assert_eq!(
            thumbprint(jwk["n"].as_str().unwrap(), "AQAB"),
            key.kid(),
            "kid is the RFC 7638 thumbprint"
        );
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            thumbprint(n, "AQAB"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
