//! The discovery document and its issuer check. Input: the authority on
//! the first line, the document after it (secret planted anywhere).
//! Accepted documents name this authority as issuer and a usable token
//! endpoint; the issuer comparison ignores exactly what it says it ignores.
#![no_main]

use aim_token::__fuzz;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::*;

fuzz_target!(|data: &[u8]| {
    let spellings = __fuzz::secret_spellings(SECRET);
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let authority = String::from_utf8_lossy(&data[..split]);
    let authority = if authority.trim().is_empty() {
        "sms01".into()
    } else {
        authority
    };
    let body = plant(data.get(split + 1..).unwrap_or_default(), &spellings);

    let Ok(base) = __fuzz::authority(&authority, false) else {
        return;
    };
    match __fuzz::discovery(&authority, &body, SECRET) {
        Ok((issuer, token_endpoint)) => {
            assert_eq!(
                __fuzz::issuer_matches(&authority, &issuer),
                Some(true),
                "{issuer}"
            );
            let url = url::Url::parse(token_endpoint.trim()).expect("checked token endpoint");
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            assert!(
                url.scheme() == "https" || (url.scheme() == "http" && loopback),
                "{url}"
            );
            assert!(
                url.username().is_empty() && url.password().is_none(),
                "{url}"
            );
        }
        // The authority is the user's configuration, shown in errors as
        // given: only a secret planted in the answer must never show.
        Err(err)
            if spellings
                .iter()
                .any(|s| base.contains(s.as_str()) || authority.contains(s.as_str())) =>
        {
            assert_clean(&err, &[]);
        }
        Err(err) => assert_clean(&err, &spellings),
    }

    // The issuer comparison: the authority's own base URL, with a trailing
    // slash or in upper case, is its issuer; case never matters.
    let issuer = String::from_utf8_lossy(&body);
    for same in [base.clone(), format!("{base}/"), base.to_ascii_uppercase()] {
        assert_eq!(
            __fuzz::issuer_matches(&authority, &same),
            Some(true),
            "{same}"
        );
    }
    assert_eq!(
        __fuzz::issuer_matches(&authority, &issuer),
        __fuzz::issuer_matches(&authority, &issuer.to_ascii_uppercase()),
        "{issuer:?}"
    );
});
