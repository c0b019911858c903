//! Round trip of a token's lifetime: every spelling of `expires_in` (JSON
//! integer, float, string, padded string) and a JWT `exp` gives exactly the
//! lifetime it says, clamped to [MIN_LIFETIME, MAX_LIFETIME]; a claim that is
//! not a positive number (or a JWT `exp` not in the future) gives the default.
#![no_main]

use std::time::Duration;

use aim_token::__fuzz;
use arbitrary::Arbitrary;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::*;

const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Arbitrary, Debug)]
enum Spelling {
    Integer(i64),
    Float(f64),
    IntegerString(i64),
    FloatString(f64),
    Padded(u32),
    JwtExp(i64),
    JwtExpFloat(f64),
}

fn jwt(exp: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.sig",
        b64.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        b64.encode(format!(r#"{{"sub":"svc","exp":{exp}}}"#))
    )
}

fuzz_target!(|spelling: Spelling| {
    let now_secs = 1_800_000_000_f64;
    // serde_json reads a JSON float to within one ULP (no `float_roundtrip`),
    // where str::parse (a string spelling) is exact: nanoseconds of an
    // `expires_in`, and a whole second of an `exp` just below an integer.
    let tolerance = match spelling {
        Spelling::Float(_) => Duration::from_micros(1),
        Spelling::JwtExpFloat(_) => Duration::from_secs(1),
        _ => Duration::ZERO,
    };
    let (body, said) = match spelling {
        Spelling::Integer(n) => (
            format!(r#"{{"access_token":"a","expires_in":{n}}}"#),
            n as f64,
        ),
        Spelling::Float(f) if f.is_finite() => (
            format!(
                r#"{{"access_token":"a","expires_in":{}}}"#,
                serde_json::json!(f)
            ),
            f,
        ),
        Spelling::Float(_) => return,
        Spelling::IntegerString(n) => (
            format!(r#"{{"access_token":"a","expires_in":"{n}"}}"#),
            n as f64,
        ),
        Spelling::FloatString(f) => (format!(r#"{{"access_token":"a","expires_in":"{f}"}}"#), f),
        Spelling::Padded(n) => (
            format!(r#"{{"access_token":"a","expires_in":" {n} "}}"#),
            f64::from(n),
        ),
        Spelling::JwtExp(exp) => (
            format!(
                r#"{{"access_token":"{}","token_type":"Bearer"}}"#,
                jwt(&exp.to_string())
            ),
            exp as f64 - now_secs,
        ),
        Spelling::JwtExpFloat(exp) if exp.is_finite() => (
            format!(
                r#"{{"access_token":"{}"}}"#,
                jwt(&serde_json::json!(exp).to_string())
            ),
            // `exp` is whole seconds: the fraction is dropped.
            exp.trunc() - now_secs,
        ),
        Spelling::JwtExpFloat(_) => return,
    };
    let token = __fuzz::token_answer(200, None, body.as_bytes(), SECRET, now(), DEFAULT_LIFETIME)
        .unwrap_or_else(|e| panic!("{body}: {e}"));
    let lifetime = token.lifetime();
    assert!(
        (__fuzz::MIN_LIFETIME..=__fuzz::MAX_LIFETIME).contains(&lifetime)
            || lifetime == DEFAULT_LIFETIME,
        "{body}: said {said} s, got {lifetime:?}"
    );
    // A JWT exp in the past or now is not a lifetime: the default. So is a
    // non-positive expires_in (and no JWT to fall back on: `a`).
    let positive = said > 0.0;
    if !positive {
        // Within a float's tolerance of zero either answer is right.
        if tolerance.is_zero() || said < -1.0 {
            assert_eq!(lifetime, DEFAULT_LIFETIME, "{body}: said {said} s");
        }
        return;
    }
    let expected = Duration::try_from_secs_f64(said)
        .unwrap_or(Duration::MAX)
        .clamp(__fuzz::MIN_LIFETIME, __fuzz::MAX_LIFETIME);
    assert!(
        lifetime.abs_diff(expected) <= tolerance
            // a float read one ULP across zero: no lifetime, so the default
            || (!tolerance.is_zero() && said <= 2.0 && lifetime == DEFAULT_LIFETIME),
        "{body}: said {said} s, expected {expected:?}, got {lifetime:?}"
    );
});
