//! The authority parser: whatever a user types becomes one canonical
//! `scheme://host[:port]/path` without a trailing slash, query, fragment
//! or user info — parsing it again gives itself — or a configuration error
//! that never shows a password typed as `user:password@`.
#![no_main]

use aim_token::{__fuzz, ErrorKind};
use libfuzzer_sys::fuzz_target;

const PASSWORD: &str = "Zq9-pw-Kx7";

fn loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    let allow_http = flag & 1 == 1;
    let input = String::from_utf8_lossy(rest);
    match __fuzz::authority(&input, allow_http) {
        Ok(base) => {
            let url = url::Url::parse(&base).expect("a canonical authority is a URL");
            assert!(url.scheme() == "https" || url.scheme() == "http", "{base}");
            assert!(
                url.scheme() == "https" || allow_http || loopback(&url),
                "{base}"
            );
            assert!(!base.ends_with('/'), "{base}");
            assert!(url.query().is_none() && url.fragment().is_none(), "{base}");
            assert!(
                url.username().is_empty() && url.password().is_none(),
                "{base}"
            );
            assert_eq!(
                __fuzz::authority(&base, allow_http).ok().as_ref(),
                Some(&base),
                "not canonical"
            );
            assert_eq!(__fuzz::issuer_matches(&base, &base), Some(true));
        }
        Err(err) => {
            assert_eq!(err.kind(), ErrorKind::Config, "{err}");
            assert!(!err.to_string().chars().any(char::is_control), "{err}");
        }
    }
    // With a password typed in: refused, and the password is not shown.
    let typed = format!("https://svc:{PASSWORD}@{input}");
    if let Err(err) = __fuzz::authority(&typed, allow_http) {
        assert!(!format!("{err} {err:?}").contains(PASSWORD), "{err}");
    } else {
        panic!("user info accepted: {typed}");
    }
});
