//! `aim-token decode`: what a JWT says, without trusting it.

use std::io::Read as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::exit;

pub(crate) const AFTER_HELP: &str = "\
The signature is NOT verified: this shows what the token claims, not whether
it is genuine. The token itself is never printed.
  aim-token decode eyJhbGciOi...
  aim-token token | aim-token decode -";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The JWT; `-` or nothing reads it from stdin.
    jwt: Option<String>,
}

/// A JWT's header and claims, unverified.
#[derive(Debug)]
pub(crate) struct Jwt {
    pub(crate) header: serde_json::Value,
    pub(crate) claims: serde_json::Value,
}

impl Jwt {
    /// Splits and decodes a compact JWS; says why when it is not one.
    pub(crate) fn parse(token: &str) -> Result<Jwt, String> {
        let token = token.trim();
        let token = token
            .strip_prefix("Bearer ")
            .or_else(|| token.strip_prefix("bearer "))
            .unwrap_or(token);
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 {
            return Err(format!(
                "not a JWT: expected three dot-separated parts, found {}",
                parts.len()
            ));
        }
        let part = |i: usize, what: &str| -> Result<serde_json::Value, String> {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[i].trim_end_matches('='))
                .map_err(|_| format!("not a JWT: the {what} is not base64url"))?;
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|_| format!("not a JWT: the {what} is not JSON"))?;
            if value.is_object() {
                Ok(value)
            } else {
                Err(format!("not a JWT: the {what} is not a JSON object"))
            }
        };
        Ok(Jwt {
            header: part(0, "header")?,
            claims: part(1, "claims part")?,
        })
    }

    /// A numeric date claim (`exp`, `iat`, `nbf`).
    pub(crate) fn time(&self, claim: &str) -> Option<SystemTime> {
        let v = self.claims.get(claim)?;
        let secs = v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))?;
        UNIX_EPOCH.checked_add(Duration::from_secs(secs))
    }

    /// A claim as text: strings as they are, arrays joined with spaces.
    pub(crate) fn text(&self, claim: &str) -> Option<String> {
        match self.claims.get(claim)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(items) => Some(
                items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            other => Some(other.to_string()),
        }
    }
}

/// `Tue, 24 Nov 2026 10:00:00 GMT (in 23h 59m 58s)`.
pub(crate) fn when(t: SystemTime, now: SystemTime) -> String {
    let date = httpdate::fmt_http_date(t);
    match t.duration_since(now) {
        Ok(ahead) => format!("{date} (in {})", human(ahead)),
        Err(e) => format!("{date} ({} ago)", human(e.duration())),
    }
}

// The library's formatter, one source for both: "6.8 s", "23 h 59 min".
#[path = "../../duration_text.rs"]
mod duration_text;
pub(crate) use duration_text::human;

/// One labelled line; the values line up under each other.
fn line(label: &str, value: &str) {
    println!("{label:<11} {value}");
}

pub(crate) async fn run(args: Args) -> u8 {
    let input = match args.jwt.as_deref() {
        Some(jwt) if jwt != "-" => jwt.to_owned(),
        _ => {
            let mut buf = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut buf) {
                eprintln!("error: cannot read the token from stdin: {e}");
                return exit::USAGE;
            }
            buf
        }
    };
    let jwt = match Jwt::parse(&input) {
        Ok(jwt) => jwt,
        Err(why) => {
            eprintln!("error: {why}");
            return exit::USAGE;
        }
    };
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let now = SystemTime::now();
    line(
        "Signature:",
        "NOT verified (this shows what the token claims, not that it is genuine)",
    );
    println!("Header:\n{}", pretty(&jwt.header));
    println!("Claims:\n{}", pretty(&jwt.claims));
    if let Some(iat) = jwt.time("iat") {
        line("Issued:", &when(iat, now));
    }
    if let Some(nbf) = jwt.time("nbf") {
        line("Not before:", &when(nbf, now));
    }
    match jwt.time("exp") {
        Some(exp) => {
            line("Expires:", &when(exp, now));
            if let Some(lifetime) = jwt.time("iat").and_then(|iat| exp.duration_since(iat).ok()) {
                line("Lifetime:", &human(lifetime));
            }
            if exp <= now {
                line("Status:", "EXPIRED");
            } else {
                line("Status:", "not expired");
            }
        }
        None => line("Expires:", "no exp claim"),
    }
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(header: &str, claims: &str) -> String {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.sig", b.encode(header), b.encode(claims))
    }

    #[test]
    fn parses_and_reads_claims() {
        let t = jwt(
            r#"{"alg":"RS256"}"#,
            r#"{"exp":100,"aud":["a","b"],"scope":"x"}"#,
        );
        let j = Jwt::parse(&format!("Bearer {t}\n")).unwrap();
        assert_eq!(j.header["alg"], "RS256");
        assert_eq!(j.time("exp"), Some(UNIX_EPOCH + Duration::from_secs(100)));
        assert_eq!(j.text("aud").unwrap(), "a b");
        assert_eq!(j.text("scope").unwrap(), "x");
    }

    #[test]
    fn says_why_it_is_not_a_jwt() {
        assert!(Jwt::parse("opaque").unwrap_err().contains("three"));
        assert!(Jwt::parse("a.!.c").unwrap_err().contains("base64url"));
        assert!(Jwt::parse(&jwt("{}", "[1]"))
            .unwrap_err()
            .contains("JSON object"));
    }
}
