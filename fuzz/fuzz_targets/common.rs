//! What every target shares: the secrets planted in answers, the framing of
//! an input (an optional `HTTP <status> [<header>]` first line, then the
//! body) and the invariants of every error text.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The client secret of every exchange: characters that every spelling
/// (raw, percent-encoded, form-encoded) writes differently.
pub const SECRET: &str = "P@ss w0rd&+=%:/?#Zq9";
/// A bearer token / initial access token that answers may echo.
pub const TOKEN: &str = "tok-Zq9-8f3kLmN0pQ";

/// A fixed "now", so that runs are reproducible.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// An input: status (default 200), an optional header value, and the body
/// with the secrets planted where the input has `\u{1}S<n>` / `\u{1}T`.
pub struct Framed {
    pub status: u16,
    pub header: Option<String>,
    pub body: Vec<u8>,
}

pub fn frame(data: &[u8], spellings: &[String]) -> Framed {
    let mut status = 200;
    let mut header = None;
    let mut rest = data;
    if let Some(line) = data.strip_prefix(b"HTTP ") {
        let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
        let head = String::from_utf8_lossy(&line[..end]).into_owned();
        let mut parts = head.splitn(2, ' ');
        if let Some(s) = parts.next().and_then(|s| s.trim().parse().ok()) {
            status = s;
        }
        header = parts.next().map(str::to_owned);
        rest = line.get(end + 1..).unwrap_or_default();
    }
    Framed {
        status,
        header,
        body: plant(rest, spellings),
    }
}

/// Replaces `\x01S<digit>` by a spelling of the secret and `\x01T` by
/// [`TOKEN`], so the fuzzer can put them anywhere without guessing them.
pub fn plant(data: &[u8], spellings: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        match (data[i], data.get(i + 1), data.get(i + 2)) {
            (1, Some(b'S'), Some(d)) if !spellings.is_empty() => {
                out.extend_from_slice(spellings[usize::from(*d) % spellings.len()].as_bytes());
                i += 3;
            }
            (1, Some(b'T'), _) => {
                out.extend_from_slice(TOKEN.as_bytes());
                i += 2;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// An error's text (Display and Debug) holds none of `secrets` and no
/// control character (it goes into logs and terminals as one line).
pub fn assert_clean(err: &aim_token::Error, secrets: &[String]) {
    let shown = err.to_string();
    let debug = format!("{err:?}");
    for s in secrets {
        assert!(!shown.contains(s.as_str()), "secret {s:?} in {shown:?}");
        assert!(!debug.contains(s.as_str()), "secret {s:?} in {debug:?}");
    }
    assert!(
        !shown.chars().any(|c| c.is_control()),
        "control character in {shown:?}"
    );
}
