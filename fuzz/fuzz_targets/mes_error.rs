//! MES error answers: any status and body (the bearer token planted
//! anywhere) give an error of the status' kind, short, without the token.
#![no_main]

use aim_token::{__fuzz, ErrorKind};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::*;

fuzz_target!(|data: &[u8]| {
    let input = frame(data, &[]);
    if (200..300).contains(&input.status) {
        return; // success bodies are the caller's JSON, not an error
    }
    let Some(err) = __fuzz::mes_error(input.status, &input.body, TOKEN) else {
        return;
    };
    let text = format!("{err} {err:?}");
    assert!(!text.contains(TOKEN), "token in {text}");
    assert!(
        err.to_string().len() <= 2000,
        "{} bytes",
        err.to_string().len()
    );
    assert_eq!(err.status(), Some(input.status));
    let expected = match input.status {
        400 => Some(ErrorKind::BadRequest),
        401 => Some(ErrorKind::Unauthorized),
        403 => Some(ErrorKind::Forbidden),
        404 => Some(ErrorKind::NotFound),
        408 | 429 | 502 | 503 | 504 => Some(ErrorKind::Server),
        _ => None,
    };
    if let Some(kind) = expected {
        assert_eq!(err.kind(), kind, "{err}");
    }
    if matches!(input.status, 408 | 429 | 502 | 503 | 504) {
        assert!(err.is_transient(), "{err}");
    }
});
