//! `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP date, from
//! any header text; seconds and dates round-trip.
#![no_main]

use std::time::Duration;

use aim_token::__fuzz;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::*;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = __fuzz::retry_after(&text, now());
    // Delay-seconds mean exactly that many seconds.
    if let Ok(secs) = text.trim().parse::<u64>() {
        assert_eq!(parsed, Some(Duration::from_secs(secs)), "{text:?}");
    }
    // A date is whole seconds from now, never negative.
    if let Ok(date) = httpdate::parse_http_date(text.trim()) {
        let expected = date.duration_since(now()).unwrap_or_default();
        assert_eq!(parsed, Some(expected), "{text:?}");
    }
    // Round trip of the number in the input as seconds and as a date.
    if data.len() >= 4 {
        let secs = u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]]));
        let d = Duration::from_secs(secs);
        assert_eq!(__fuzz::retry_after(&secs.to_string(), now()), Some(d));
        let date = httpdate::fmt_http_date(now() + d);
        assert_eq!(__fuzz::retry_after(&date, now()), Some(d), "{date}");
    }
});
