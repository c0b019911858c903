//! The token endpoint's answer: success (every `expires_in` spelling, JWT
//! `exp` fallback, scopes, token types) and RFC 6749 §5.2 errors under any
//! status, with the client secret planted anywhere in it.
#![no_main]

use std::time::Duration;

use aim_token::__fuzz;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::*;

const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

fuzz_target!(|data: &[u8]| {
    let spellings = __fuzz::secret_spellings(SECRET);
    let input = frame(data, &spellings);
    let result = __fuzz::token_answer(
        input.status,
        input.header.as_deref(),
        &input.body,
        SECRET,
        now(),
        DEFAULT_LIFETIME,
    );
    match result {
        Ok(token) => {
            assert!(
                (200..300).contains(&input.status),
                "a token from HTTP {}",
                input.status
            );
            let secret = token.secret();
            assert!(!secret.is_empty() && secret.trim() == secret, "{secret:?}");
            assert_eq!(token.token_type(), "Bearer");
            assert_eq!(token.issued_at(), now());
            let lifetime = token.lifetime();
            assert!(
                lifetime > Duration::ZERO && lifetime <= __fuzz::MAX_LIFETIME,
                "lifetime {lifetime:?} outside (0, {:?}]",
                __fuzz::MAX_LIFETIME
            );
            // The token's Debug never shows its secret. What Debug shows
            // besides (field names, the type "Bearer", scopes, the node, the
            // expiry's seconds) is cut out first: a token `arer` is not
            // leaked by "Bearer", nor `0000` by `tv_sec: 1800003600`. The
            // server's own values are cut as Debug writes them (quoted and
            // escaped: a scope with a NUL is shown with `\0`).
            let mut shown = format!("{token:?}");
            let known = [
                "AccessToken",
                "[redacted]",
                "secret",
                "token_type",
                "expires_at",
                "scopes",
                "authority",
                "SystemTime",
                "tv_sec",
                "tv_nsec",
            ]
            .map(str::to_owned);
            // Longest first: a one-letter scope must not cut a longer one.
            let mut parts: Vec<String> = token
                .scopes()
                .iter()
                .map(String::as_str)
                .chain([token.token_type(), token.authority()])
                .map(|value| format!("{value:?}"))
                .chain([format!("{:?}", token.expires_at())])
                .chain(known)
                .collect();
            parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for part in parts.iter().filter(|p| !p.is_empty()) {
                shown = shown.replace(part.as_str(), "\u{1}");
            }
            let escaped = format!("{secret:?}");
            let escaped = &escaped[1..escaped.len() - 1];
            assert!(
                secret.len() < 4 || !(shown.contains(secret) || shown.contains(escaped)),
                "{secret:?} in {token:?}"
            );
        }
        Err(err) => {
            assert_clean(&err, &spellings);
            if err.oauth_error().is_some() && (input.status == 429 || input.status >= 500) {
                assert!(err.is_transient(), "{err}");
            }
            if (200..300).contains(&input.status) && err.oauth_error().is_none() {
                assert!(!err.is_transient(), "{err}");
            }
        }
    }
});
