//! `aim-token decode`: what a JWT says, without trusting it.

use std::io::Read as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::exit;

pub(crate) const AFTER_HELP: &str = "\
The signature is NOT verified: this shows what the token claims, not whether
it is genuine. The token itself is never printed.
Exit status: 0 when the token was decoded (a date claim out of range, such
as a negative exp or one past the year 9999, is reported, not fatal);
2 when the input is not a JWT.
  aim-token decode eyJhbGciOi...
  aim-token token | aim-token decode -";

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The JWT; `-` or nothing reads it from stdin.
    jwt: Option<String>,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The JWT is a bearer token: never shown.
        f.debug_struct("Args")
            .field("jwt", &crate::config::redacted(&self.jwt))
            .finish()
    }
}

/// A NumericDate claim (RFC 7519 §2): a time that can be shown, or the raw
/// value when it cannot (negative, not a number, past the year 9999).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Date {
    At(SystemTime),
    OutOfRange(String),
}

/// 9999-12-31T23:59:59Z: the last second an HTTP date can show.
const LAST_SHOWN_SECS: u64 = 253_402_300_799;

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

    /// A numeric date claim (`exp`, `iat`, `nbf`), when it is one that can
    /// be shown; see [`date`](Self::date) for why not.
    pub(crate) fn time(&self, claim: &str) -> Option<SystemTime> {
        match self.date(claim)? {
            Date::At(t) => Some(t),
            Date::OutOfRange(_) => None,
        }
    }

    /// A numeric date claim, or its raw value when it is out of range.
    pub(crate) fn date(&self, claim: &str) -> Option<Date> {
        let v = self.claims.get(claim)?;
        let secs = v.as_u64().or_else(|| {
            v.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f <= LAST_SHOWN_SECS as f64)
                .map(|f| f.trunc() as u64)
        });
        Some(
            match secs
                .filter(|s| *s <= LAST_SHOWN_SECS)
                .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
            {
                Some(t) => Date::At(t),
                None => Date::OutOfRange(v.to_string().chars().take(40).collect()),
            },
        )
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
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs());
    if !secs.is_ok_and(|s| s <= LAST_SHOWN_SECS) {
        // httpdate panics outside 1970..=9999.
        return "a date out of range".to_owned();
    }
    let date = httpdate::fmt_http_date(t);
    match t.duration_since(now) {
        Ok(ahead) => format!("{date} (in {})", human(ahead)),
        Err(e) => format!("{date} ({} ago)", human(e.duration())),
    }
}

/// `1d 2h 3m 4s`, leaving out leading zero units.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let mut out = Vec::new();
    if days > 0 {
        out.push(format!("{days}d"));
    }
    if hours > 0 || !out.is_empty() {
        out.push(format!("{hours}h"));
    }
    if minutes > 0 || !out.is_empty() {
        out.push(format!("{minutes}m"));
    }
    out.push(format!("{seconds}s"));
    out.join(" ")
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
    println!("Signature: NOT verified (this shows what the token claims, not that it is genuine)");
    println!("Header:\n{}", pretty(&jwt.header));
    println!("Claims:\n{}", pretty(&jwt.claims));
    for (claim, label) in [("iat", "Issued:    "), ("nbf", "Not before:")] {
        match jwt.date(claim) {
            Some(Date::At(t)) => println!("{label} {}", when(t, now)),
            Some(Date::OutOfRange(raw)) => println!("{label} out of range ({raw})"),
            None => {}
        }
    }
    match jwt.date("exp") {
        Some(Date::OutOfRange(raw)) => {
            println!("Expires:   out of range ({raw}): not a NumericDate between 1970 and 9999");
            println!("Status:    unknown (the exp claim is out of range)");
        }
        Some(Date::At(exp)) => {
            println!("Expires:   {}", when(exp, now));
            if let Some(lifetime) = jwt.time("iat").and_then(|iat| exp.duration_since(iat).ok()) {
                println!("Lifetime:  {}", human(lifetime));
            }
            if exp <= now {
                println!("Status:    EXPIRED");
            } else {
                println!("Status:    not expired");
            }
        }
        None => println!("Expires:   no exp claim"),
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

    #[test]
    fn dates_out_of_range_never_panic() {
        for (claims, expected) in [
            (r#"{"exp":253402300800}"#, Some("253402300800")),
            (r#"{"exp":-1}"#, Some("-1")),
            (r#"{"exp":1e300}"#, Some("1e+300")),
            (
                r#"{"exp":18446744073709551615}"#,
                Some("18446744073709551615"),
            ),
            (r#"{"exp":"soon"}"#, Some("\"soon\"")),
            (r#"{"exp":253402300799}"#, None),
            (r#"{"exp":0}"#, None),
            (r#"{"exp":1.5}"#, None),
        ] {
            let j = Jwt::parse(&jwt("{}", claims)).unwrap();
            match (j.date("exp").unwrap(), expected) {
                (Date::OutOfRange(raw), Some(want)) => assert_eq!(raw, want, "{claims}"),
                (Date::At(t), None) => {
                    let _ = when(t, SystemTime::now());
                }
                (got, want) => panic!("{claims}: {got:?}, expected {want:?}"),
            }
            assert_eq!(j.time("exp").is_some(), expected.is_none(), "{claims}");
        }
        let far = UNIX_EPOCH + Duration::from_secs(LAST_SHOWN_SECS + 1);
        assert_eq!(when(far, SystemTime::now()), "a date out of range");
        let format = format!(
            "{:?}",
            Args {
                jwt: Some("eyJ.secret.x".into())
            }
        );
        assert!(!format.contains("secret"), "{format}");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_secs(86_400)), "1d 0h 0m 0s");
        assert_eq!(human(Duration::from_secs(3_725)), "1h 2m 5s");
    }
}
