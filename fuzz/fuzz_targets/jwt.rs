//! JWT payload decoding for the `exp` lifetime fallback: any string, and
//! a round trip of the `exp` claim in every JSON number spelling.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use aim_token::__fuzz;
use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Exp {
    Int(u32),
    Float(u32, u16),
    Negative(i32),
    Text(String),
}

fuzz_target!(|data: &[u8]| {
    // Any text as a token.
    let text = String::from_utf8_lossy(data);
    if let Some(exp) = __fuzz::jwt_expiry(&text) {
        assert!(exp >= UNIX_EPOCH);
    }
    // A well-formed JWT whose exp the fuzzer chooses.
    let mut u = Unstructured::new(data);
    let Ok(exp) = Exp::arbitrary(&mut u) else {
        return;
    };
    let extra = String::arbitrary(&mut u).unwrap_or_default();
    let (claim, expected) = match &exp {
        Exp::Int(n) => (n.to_string(), Some(u64::from(*n))),
        Exp::Float(n, frac) => (format!("{n}.{frac}"), Some(u64::from(*n))),
        Exp::Negative(n) if *n < 0 => (n.to_string(), None),
        Exp::Negative(n) => (n.to_string(), u64::try_from(*n).ok()),
        Exp::Text(s) => (serde_json::json!(s).to_string(), None),
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = format!(r#"{{"exp":{claim},"x":{}}}"#, serde_json::json!(extra));
    for padded in [false, true] {
        let mut body = b64.encode(&payload);
        if padded {
            while body.len() % 4 != 0 {
                body.push('=');
            }
        }
        let token = format!("{}.{body}.c2ln", b64.encode(r#"{"alg":"RS256"}"#));
        assert_eq!(
            __fuzz::jwt_expiry(&token),
            expected.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            "{payload}"
        );
    }
});
