//! Rules shared by everything that attaches the token to a request
//! (`middleware`, `layer`, `MesClient`): where a token may go, how the header
//! is built, and what counts as "the resource server rejected the token".

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use reqwest::header::HeaderValue;
use url::Host;

use crate::authority;
use crate::cache::{stripe, STRIPES};
use crate::error::{Error, ErrorKind, Result};
use crate::token::AccessToken;

mod challenge;

// `refusal` reads a 401 from its parts: the tower layer's http responses.
#[cfg_attr(not(feature = "tower"), allow(unused_imports))]
pub(crate) use challenge::refusal;
pub(crate) use challenge::{refusal_of, stated, Refusal};

/// The `Authorization` value for `token`, marked sensitive so that hyper,
/// reqwest and h2 keep it out of their debug output and HPACK tables.
pub(crate) fn authorization_value(token: &AccessToken) -> Result<HeaderValue> {
    let text = zeroize::Zeroizing::new(format!("Bearer {}", token.secret()));
    crate::http::secret_header(text).map_err(|_| {
        // Never echo the token: say only what is wrong with it.
        Error::new(
            ErrorKind::InvalidResponse,
            "the access token from AIM contains characters that are not allowed in an HTTP header",
        )
    })
}

/// The `Authorization` value of the last token seen, so the steady state
/// (one token, thousands of requests) neither formats nor re-validates a
/// JWT of a kilobyte per request: a pointer comparison and a refcount.
/// One value per stripe of threads (as the cache's token copies), so that
/// threads attaching at once do not all bump the reference count of one
/// shared buffer.
#[derive(Default)]
pub(crate) struct HeaderCache {
    stripes: [HeaderSlot; STRIPES],
}

#[derive(Default)]
#[repr(align(128))]
struct HeaderSlot(ArcSwapOption<(AccessToken, HeaderValue)>);

impl HeaderCache {
    /// The header value for `token`, built once per token and stripe.
    pub(crate) fn value(&self, token: &AccessToken) -> Result<HeaderValue> {
        let slot = &self.stripes[stripe()].0;
        if let Some(last) = slot.load().as_deref() {
            if last.0.same_as(token) {
                return Ok(last.1.clone());
            }
        }
        let value = authorization_value(token)?;
        slot.store(Some(Arc::new((token.clone(), value.clone()))));
        Ok(value)
    }
}

impl fmt::Debug for HeaderCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The value is the token: never printed.
        f.write_str("HeaderCache")
    }
}

/// Whether a resource server's status means "this token is not accepted":
/// the one case where invalidating the token and trying once more can help.
pub(crate) fn is_token_rejected(status: u16) -> bool {
    status == 401
}

/// Where a token may be sent. Nowhere until told: the hosts of an allow
/// list, or any https host when explicitly asked. Whatever the list says,
/// plain http only to loopback.
#[derive(Clone, Default)]
pub(crate) struct Destinations {
    allowed: Allowed,
}

#[derive(Clone, Default)]
enum Allowed {
    /// Neither `allow_host` nor `allow_any_https_host` was called.
    #[default]
    Unset,
    /// `allow_any_https_host()`.
    AnyHttps,
    /// `allow_host(..)` / `allowed_hosts(..)`.
    Hosts(Arc<[HostPattern]>),
}

// The allow list is configured only through the middleware and the layer.
#[cfg_attr(not(any(feature = "middleware", feature = "tower")), allow(dead_code))]
impl Destinations {
    /// Any https host (and plain http to loopback): `allow_any_https_host()`.
    #[cfg(test)]
    pub(crate) fn any_https() -> Self {
        Destinations {
            allowed: Allowed::AnyHttps,
        }
    }

    /// Replaces the allow list.
    pub(crate) fn allow_only<I, S>(&mut self, hosts: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let hosts: Vec<HostPattern> = hosts
            .into_iter()
            .map(|h| HostPattern::new(h.as_ref()))
            .collect();
        self.allowed = Allowed::Hosts(hosts.into());
    }

    /// Adds one host to the allow list (creating it if there was none;
    /// after `allow_any_https_host` it narrows "any" to the list).
    pub(crate) fn allow(&mut self, host: &str) {
        let mut hosts: Vec<HostPattern> = match &self.allowed {
            Allowed::Hosts(hosts) => hosts.to_vec(),
            Allowed::Unset | Allowed::AnyHttps => Vec::new(),
        };
        hosts.push(HostPattern::new(host));
        self.allowed = Allowed::Hosts(hosts.into());
    }

    /// Allows every https host: `allow_any_https_host()`.
    pub(crate) fn allow_any_https(&mut self) {
        self.allowed = Allowed::AnyHttps;
    }

    /// Checks that a token may be sent to `scheme://host`; the error
    /// ([`ErrorKind::Refused`]) says why not and what to do.
    pub(crate) fn check(&self, scheme: Option<&str>, host: Option<&str>) -> Result<()> {
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            return Err(refused(
                "the request URL has no host, so it cannot be checked where the token would go",
            ));
        };
        check_scheme(scheme.unwrap_or(""), host)?;
        let name = normalize_host(host);
        match &self.allowed {
            Allowed::AnyHttps => Ok(()),
            Allowed::Hosts(allowed) if allowed.iter().any(|p| p.matches(&name)) => Ok(()),
            Allowed::Hosts(_) => Err(refused(format!(
                "refusing to send the access token to {name}: it is not in the allowed hosts \
                 (add it with .allow_host(\"{name}\") if it should receive the token)"
            ))),
            Allowed::Unset => Err(refused(format!(
                "refusing to send the access token to {name}: no destinations are allowed yet. \
                 Call .allow_host(\"{name}\") for each host that may receive the AIM token, \
                 or .allow_any_https_host() to send it to every https host this client calls"
            ))),
        }
    }
}

/// The rule every attachment applies whatever its allow list: https, or
/// plain http to loopback by [`authority::is_loopback`] (so `localhost.`,
/// which the resolver sends to DNS, is not loopback).
fn check_scheme(scheme: &str, host: &str) -> Result<()> {
    if scheme.eq_ignore_ascii_case("https") {
        return Ok(());
    }
    if scheme.eq_ignore_ascii_case("http") {
        if is_loopback(host) {
            return Ok(());
        }
        return Err(refused(format!(
            "refusing to send the access token over plain http to {}: use https \
             (plain http is allowed only to loopback: 127.0.0.0/8, ::1, localhost)",
            normalize_host(host)
        )));
    }
    Err(refused(format!(
        "refusing to send the access token with URL scheme {scheme:?}: only https \
         (or http to loopback) is allowed"
    )))
}

/// Whether the access token may be sent to `url` at all: over https, or
/// over plain http to a loopback address (`127.0.0.0/8`, `::1`,
/// `localhost` — not `localhost.`, which resolvers send to DNS). This is
/// the rule [`MesClient`](crate::MesClient) and the attachments apply
/// before their allow lists; tools that send the token themselves can
/// apply it too.
///
/// ```
/// assert!(aim_token::check_token_destination("https://mes01.plant.local/mesmw/").is_ok());
/// assert!(aim_token::check_token_destination("http://127.0.0.1:8080/mesmw/").is_ok());
/// let err = aim_token::check_token_destination("http://mes01.plant.local/mesmw/").unwrap_err();
/// assert_eq!(err.kind(), aim_token::ErrorKind::Refused);
/// assert!(aim_token::check_token_destination("http://localhost.:8080/").is_err());
/// ```
///
/// # Errors
///
/// [`ErrorKind::Refused`] saying why, or for a URL that does not parse.
pub fn check_token_destination(url: &str) -> Result<()> {
    let parsed = url::Url::parse(url.trim()).map_err(|e| {
        refused(format!(
            "{} is not an absolute URL ({e}), so it cannot be checked where the token would go",
            authority::without_userinfo(url.trim())
        ))
    })?;
    let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| {
        refused("the URL has no host, so it cannot be checked where the token would go")
    })?;
    check_scheme(parsed.scheme(), host)
}

impl fmt::Debug for Destinations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.allowed {
            Allowed::Unset => f.write_str("none yet (allow_host or allow_any_https_host)"),
            Allowed::AnyHttps => f.write_str("any https host or loopback"),
            Allowed::Hosts(hosts) => f.debug_list().entries(hosts.iter()).finish(),
        }
    }
}

fn refused(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Refused, message)
}

/// An allowed host: an exact name or address, or `*.suffix` for any
/// subdomain of `suffix` (not `suffix` itself). Case-insensitive.
#[derive(Clone)]
struct HostPattern {
    host: String,
    wildcard: bool,
}

#[cfg_attr(not(any(feature = "middleware", feature = "tower")), allow(dead_code))]
impl HostPattern {
    fn new(pattern: &str) -> Self {
        let pattern = normalize_host(pattern.trim());
        match pattern.strip_prefix("*.") {
            Some(suffix) => HostPattern {
                host: format!(".{suffix}"),
                wildcard: true,
            },
            None => HostPattern {
                host: pattern.into_owned(),
                wildcard: false,
            },
        }
    }

    fn matches(&self, host: &str) -> bool {
        if self.wildcard {
            host.len() > self.host.len() && host.ends_with(&self.host)
        } else {
            host == self.host
        }
    }
}

impl fmt::Debug for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*{}", self.host)
        } else {
            f.write_str(&self.host)
        }
    }
}

/// Lower case, without IPv6 brackets and without a trailing dot, so that
/// `MES01.plant.local.` and `mes01.plant.local` are one host.
fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .trim_end_matches('.');
    // URL parsers already lower-case host names: no allocation on the hot path.
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Loopback by the rule the AIM authority is checked with
/// ([`authority::is_loopback`]), so "loopback" means one thing in the crate.
/// `host` as in a URL: brackets around IPv6 allowed, a trailing dot kept
/// (`localhost.` is a DNS name, not loopback).
fn is_loopback(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Host::Ipv4(ip),
        Ok(IpAddr::V6(ip)) => Host::Ipv6(ip),
        Err(_) => Host::Domain(bare),
    };
    authority::is_loopback(&host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn check(d: &Destinations, url: &str) -> Result<()> {
        let url = url::Url::parse(url).unwrap();
        d.check(Some(url.scheme()), url.host_str())
    }

    #[test]
    fn nothing_is_allowed_until_told() {
        let d = Destinations::default();
        for url in ["https://mes01.plant.local/", "http://127.0.0.1:9/"] {
            let err = check(&d, url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Refused, "{url}");
            let msg = err.to_string();
            assert!(msg.contains(".allow_host(\""), "{msg}");
            assert!(msg.contains(".allow_any_https_host()"), "{msg}");
        }
        assert!(format!("{d:?}").contains("allow_any_https_host"));
    }

    #[test]
    fn localhost_with_a_trailing_dot_is_not_loopback() {
        // glibc sends `localhost.` to DNS: whoever answers there gets the token.
        let d = Destinations::any_https();
        for url in [
            "http://localhost.:8080/",
            "http://LOCALHOST.:1/",
            "http://localhost../",
        ] {
            if let Ok(parsed) = url::Url::parse(url) {
                let err = d
                    .check(Some(parsed.scheme()), parsed.host_str())
                    .unwrap_err();
                assert!(err.to_string().contains("plain http"), "{err}");
            }
            assert!(check_token_destination(url).is_err(), "{url}");
        }
        assert!(check(&d, "https://localhost./").is_ok());
        let mut listed = Destinations::default();
        listed.allow("localhost.");
        assert!(check(&listed, "http://localhost.:8080/").is_err());
    }

    #[test]
    fn https_anywhere_http_only_to_loopback() {
        let d = Destinations::any_https();
        assert!(check(&d, "https://mes01.plant.local/mesmw/").is_ok());
        assert!(check(&d, "http://127.0.0.1:8080/").is_ok());
        assert!(check(&d, "http://127.10.0.1/").is_ok());
        assert!(check(&d, "http://[::1]:80/").is_ok());
        assert!(check(&d, "http://localhost/").is_ok());
        assert!(check(&d, "HTTP://LOCALHOST/").is_ok());
        for url in [
            "http://mes01.plant.local/",
            "http://10.0.0.5/",
            "http://[::2]/",
            "http://127.0.0.1.evil.example/",
            // Not loopback by the authority's rule either: one rule for both.
            "http://mes.localhost/",
            "http://[::ffff:127.0.0.1]/",
            "ftp://127.0.0.1/",
        ] {
            let err = check(&d, url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Refused, "{url}");
            assert!(!err.is_transient());
        }
        let err = check(&d, "http://mes01/").unwrap_err();
        assert!(err.to_string().contains("plain http"), "{err}");
    }

    #[test]
    fn missing_host_is_refused() {
        let d = Destinations::any_https();
        assert_eq!(
            d.check(Some("https"), None).unwrap_err().kind(),
            ErrorKind::Refused
        );
        assert_eq!(d.check(None, None).unwrap_err().kind(), ErrorKind::Refused);
    }

    #[test]
    fn allow_list_exact_and_wildcard() {
        let mut d = Destinations::default();
        d.allow_only(["MES01.plant.local.", "*.mes.plant.local"]);
        assert!(check(&d, "https://mes01.plant.local/").is_ok());
        assert!(check(&d, "https://a.mes.plant.local/").is_ok());
        assert!(check(&d, "https://mes.plant.local/").is_err());
        assert!(check(&d, "https://evilmes.plant.local/").is_err());
        let err = check(&d, "https://other.plant.local/").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused);
        assert!(err.to_string().contains("allowed hosts"), "{err}");
        // The allow list does not relax the https rule.
        d.allow("plainhttp.local");
        assert!(check(&d, "https://plainhttp.local/").is_ok());
        assert!(check(&d, "http://plainhttp.local/").is_err());
        // Nor does loopback bypass the allow list.
        assert!(check(&d, "http://127.0.0.1/").is_err());
        d.allow("127.0.0.1");
        assert!(check(&d, "http://127.0.0.1:9/").is_ok());
        assert!(format!("{d:?}").contains("*.mes.plant.local"));
    }

    #[test]
    fn header_is_sensitive_and_error_hides_token() {
        let exp = SystemTime::now() + Duration::from_secs(60);
        let value = authorization_value(&AccessToken::new("abc.def", exp)).unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().unwrap(), "Bearer abc.def");
        let err = authorization_value(&AccessToken::new("bad\ntoken-xyz", exp)).unwrap_err();
        assert!(!err.to_string().contains("token-xyz"));
        assert!(!format!("{err:?}").contains("token-xyz"));
    }

    #[test]
    fn header_cache_builds_once_per_token() {
        let exp = SystemTime::now() + Duration::from_secs(60);
        let cache = HeaderCache::default();
        let a = AccessToken::new("aaa", exp);
        let b = AccessToken::new("bbb", exp);
        let first = cache.value(&a).unwrap();
        assert!(first.is_sensitive());
        assert_eq!(cache.value(&a.clone()).unwrap(), "Bearer aaa");
        assert_eq!(cache.value(&b).unwrap(), "Bearer bbb");
        assert!(cache.value(&b).unwrap().is_sensitive());
        // Same text, different token: rebuilt, not confused by equal strings.
        let a2 = AccessToken::new("aaa", exp);
        assert_eq!(cache.value(&a2).unwrap(), "Bearer aaa");
        assert!(cache.value(&AccessToken::new("x\ny", exp)).is_err());
        assert_eq!(format!("{cache:?}"), "HeaderCache");
    }

    #[test]
    fn header_cache_gives_each_stripe_its_own_buffer() {
        let exp = SystemTime::now() + Duration::from_secs(60);
        let cache = HeaderCache::default();
        let token = AccessToken::new("aaa", exp);
        let here = cache.value(&token).unwrap().as_bytes().as_ptr() as usize;
        assert_eq!(
            cache.value(&token).unwrap().as_bytes().as_ptr() as usize,
            here
        );
        let there = std::thread::scope(|s| {
            s.spawn(|| cache.value(&token).unwrap().as_bytes().as_ptr() as usize)
                .join()
                .unwrap()
        });
        // Another thread (the next stripe) does not share this buffer's count.
        assert_ne!(here, there);
    }

    #[test]
    fn only_401_means_rejected_token() {
        assert!(is_token_rejected(401));
        assert!(!is_token_rejected(403));
        assert!(!is_token_rejected(200));
    }
}
