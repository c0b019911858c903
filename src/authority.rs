//! The AIM authority: what the user typed -> one canonical base URL.
//!
//! `sms01`, `sms01.plant.local`, `https://sms01/identitymanager` and
//! `https://SMS01/IdentityManager/` all mean `https://HOST/identitymanager`.
//! https is required, except to loopback addresses (tests, a local proxy)
//! or with an explicit opt-in, because the client secret travels in the
//! token request.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use url::{Host, Url};

use crate::error::{Error, Result};

/// AIM's path below the host, as IdentityServer is mounted on the SMS node.
const AIM_SEGMENT: &str = "identitymanager";

/// A checked AIM base URL, e.g. `https://sms01.plant.local/identitymanager`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Authority {
    /// Always without a trailing slash.
    base: String,
}

impl Authority {
    /// Parses what a user configured. `allow_insecure_http` permits plain
    /// http to a non-loopback host.
    pub(crate) fn parse(input: &str, allow_insecure_http: bool) -> Result<Self> {
        let input = configured(input);
        let mut url = parse_http_url(input, "authority", allow_insecure_http, &as_given)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::config(format!(
                "the authority `{}` has a query or fragment: give only the server, e.g. `https://sms01.plant.local/identitymanager`",
                printable(input)
            )));
        }
        let mut segments: Vec<String> = url
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                // AIM's segment in any case and with any trailing slash is the same place.
                if s.eq_ignore_ascii_case(AIM_SEGMENT) {
                    AIM_SEGMENT.to_owned()
                } else {
                    s.to_owned()
                }
            })
            .collect();
        // The discovery document's or the token endpoint's URL, pasted as
        // the authority: their base is meant (IdentityServer's fixed routes).
        for [first, second] in [
            [".well-known", "openid-configuration"],
            ["connect", "token"],
        ] {
            if let [.., a, b] = segments.as_slice() {
                if a.eq_ignore_ascii_case(first) && b.eq_ignore_ascii_case(second) {
                    segments.truncate(segments.len().saturating_sub(2));
                }
            }
        }
        if segments.is_empty() {
            url.set_path(AIM_SEGMENT);
        } else {
            url.set_path(&segments.join("/"));
        }
        let base = url.as_str().trim_end_matches('/').to_owned();
        Ok(Authority { base })
    }

    /// `https://HOST[:PORT]/identitymanager`, without a trailing slash.
    pub(crate) fn base_url(&self) -> &str {
        &self.base
    }

    /// `{base}/.well-known/openid-configuration`
    pub(crate) fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.base)
    }

    /// `{base}/connect/token`: AIM's fixed route, used when discovery is missing.
    pub(crate) fn default_token_endpoint(&self) -> String {
        format!("{}/connect/token", self.base)
    }

    /// `scheme://host[:port]` of the authority: where the client secret may go.
    pub(crate) fn origin(&self) -> String {
        Url::parse(&self.base)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| self.base.clone())
    }

    /// Whether `url` has this authority's origin: the same scheme, host and
    /// port after normalisation (host case, a default port spelled out). So
    /// never https -> http, never another host or port, never a loopback
    /// endpoint for a remote authority.
    pub(crate) fn same_origin(&self, url: &Url) -> bool {
        let Ok(ours) = Url::parse(&self.base) else {
            return false;
        };
        ours.scheme() == url.scheme()
            && ours.host() == url.host()
            && ours.port_or_known_default() == url.port_or_known_default()
    }

    /// Whether `issuer` (from discovery) names this authority, tolerating
    /// host case, a default port spelled out, path case and a trailing slash.
    pub(crate) fn matches_issuer(&self, issuer: &str) -> bool {
        let (Ok(ours), Ok(theirs)) = (Url::parse(&self.base), Url::parse(issuer.trim())) else {
            return false;
        };
        ours.scheme() == theirs.scheme()
            && ours.host_str().map(str::to_ascii_lowercase)
                == theirs.host_str().map(str::to_ascii_lowercase)
            && ours.port_or_known_default() == theirs.port_or_known_default()
            && ours
                .path()
                .trim_end_matches('/')
                .eq_ignore_ascii_case(theirs.path().trim_end_matches('/'))
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Authority").field(&self.base).finish()
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

/// Checks a token endpoint URL (from `.token_endpoint(..)` or discovery)
/// by the same rules as the authority; its path is kept as given.
pub(crate) fn parse_endpoint(input: &str, what: &str, allow_insecure_http: bool) -> Result<Url> {
    parse_endpoint_shown(configured(input), what, allow_insecure_http, &as_given)
}

/// A URL an admin configured, without the quotes cmd.exe's
/// `set AIM_AUTHORITY="sms01"` keeps (no URL holds one). Not for what a
/// server sent: that is parsed as written.
fn configured(input: &str) -> &str {
    crate::env_value::unquoted(input, &['"', '\''])
}

/// [`parse_endpoint`] for a URL a server sent (quotes kept): `scrub` cleans whatever of
/// it an error shows before anything of it is cut (the `user@` hiding, the
/// length limit), so no part of a secret the server echoed is shown.
pub(crate) fn parse_endpoint_shown(
    input: &str,
    what: &str,
    allow_insecure_http: bool,
    scrub: &dyn Fn(&str) -> String,
) -> Result<Url> {
    let url = parse_http_url(input, what, allow_insecure_http, scrub)?;
    if url.fragment().is_some() {
        return Err(Error::config(format!(
            "the {what} `{}` has a #fragment: remove it",
            printable(&scrub(input))
        )));
    }
    Ok(url)
}

/// What the user configured, shown as given (user info still hidden).
fn as_given(input: &str) -> String {
    input.to_owned()
}

/// The shared rules: http(s) only, a host without spaces or user info,
/// https unless loopback or explicitly allowed. A missing scheme means https.
fn parse_http_url(
    input: &str,
    what: &str,
    allow_insecure_http: bool,
    scrub: &dyn Fn(&str) -> String,
) -> Result<Url> {
    let show = |s: &str| printable(&scrub(s));
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(Error::config(format!(
            "the {what} is empty: set it to the AIM server, e.g. `sms01.plant.local` or `https://sms01.plant.local/identitymanager` (.authority(..) or AIM_AUTHORITY)"
        )));
    }
    let shown = show(trimmed);
    // `https:/sms01` or `https:sms01` is not a scheme-less host: read as one,
    // its host would be `https` (and the secret would go there).
    let head = trimmed.split(':').next().unwrap_or_default();
    if !trimmed.contains("://")
        && trimmed.contains(':')
        && (head.eq_ignore_ascii_case("https") || head.eq_ignore_ascii_case("http"))
    {
        return Err(Error::config(format!(
            "the {what} `{shown}` lacks the `//` after `{}:`: write it as `https://HOST/...`",
            show(head)
        )));
    }
    let with_scheme = match trimmed.find("://") {
        Some(_) => trimmed.to_owned(),
        // A bare IPv6 literal has colons that would read as a port.
        None if trimmed.parse::<Ipv6Addr>().is_ok() => format!("https://[{trimmed}]"),
        None => format!("https://{trimmed}"),
    };
    let (scheme, rest) = with_scheme
        .split_once("://")
        .unwrap_or(("https", &with_scheme));
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return Err(Error::config(format!(
            "the {what} `{shown}` uses the scheme `{}`: use https://, e.g. `https://sms01.plant.local/identitymanager`",
            show(&scheme)
        )));
    }
    let host_part = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host_part.chars().any(char::is_whitespace) {
        return Err(Error::config(format!(
            "the host of the {what} `{shown}` contains a space: give a host name such as `sms01.plant.local`"
        )));
    }
    if trimmed.chars().any(char::is_whitespace) {
        return Err(Error::config(format!(
            "the {what} `{shown}` contains a space: remove it"
        )));
    }
    let userinfo = || {
        Error::config(format!(
            "the {what} `{shown}` contains user info (`user@`): remove it; the client ID and secret are set with .client_id(..) and .client_secret(..)"
        ))
    };
    if host_part.contains('@') {
        return Err(userinfo());
    }
    // Also checked before parsing, so `https://` gets this message and not the url crate's.
    let no_host = || {
        Error::config(format!(
            "the {what} `{shown}` has no host: give the AIM server, e.g. `sms01.plant.local`"
        ))
    };
    if host_part.is_empty() {
        return Err(no_host());
    }
    let url = Url::parse(&format!("{scheme}://{rest}")).map_err(|e| {
        Error::config(format!(
            "the {what} `{shown}` is not a valid URL ({e}): give the AIM server, e.g. `sms01.plant.local`"
        ))
    })?;
    // The parse decides, not the split above: the url crate reads `\` as
    // `/`, so `\\//\\[x@host` has user info that the split did not see.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(userinfo());
    }
    let Some(host) = url.host() else {
        return Err(no_host());
    };
    // The url crate keeps `"`, `'`, `!`, `$` ... in a domain (WHATWG allows
    // them); DNS does not, so such a host could only fail later as
    // "cannot resolve". An IDN host is already punycode here.
    if let Host::Domain(domain) = &host {
        if let Some(bad) = domain
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
        {
            let why = if matches!(bad, '"' | '\'') {
                "a quote: remove the quotes around the value"
            } else {
                "a character that no host name has: give a host name such as `sms01.plant.local`"
            };
            return Err(Error::config(format!(
                "the host of the {what} `{shown}` contains {why}"
            )));
        }
    }
    if scheme == "http" && !allow_insecure_http && !is_loopback(&host) {
        return Err(Error::config(format!(
            "the {what} `{shown}` uses plain http, which would send the client secret and token in clear text: use https://, or call .allow_insecure_http(true) for a lab (loopback addresses are always allowed)"
        )));
    }
    Ok(url)
}

/// 127.0.0.0/8, ::1 and `localhost`: traffic that never leaves the machine.
pub(crate) fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

/// A URL as configured, with any `user:password@` (which is rejected)
/// hidden: a password typed there must not reach a message or a log.
pub(crate) fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    // Up to the last `@` before a query: a password typed unencoded may
    // hold `/` (base64 does). A path with an `@` is then hidden too.
    let query = rest.find(['?', '#']).unwrap_or(rest.len());
    match rest[..query].rfind('@') {
        Some(at) => format!("{scheme}[redacted]@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// User input for an error message: user info hidden, control characters
/// replaced, bounded length.
fn printable(s: &str) -> String {
    let s = &without_userinfo(s);
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(120)
        .collect();
    if s.chars().count() > 120 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn base(input: &str) -> String {
        Authority::parse(input, false)
            .unwrap_or_else(|e| panic!("{input}: {e}"))
            .base_url()
            .to_owned()
    }

    fn config_error(input: &str) -> String {
        let err = Authority::parse(input, false).expect_err(input);
        assert_eq!(err.kind(), ErrorKind::Config, "{input}");
        err.to_string()
    }

    #[test]
    fn spellings_of_one_server_map_to_one_base_url() {
        let table = [
            ("sms01", "https://sms01/identitymanager"),
            (
                "sms01.plant.local",
                "https://sms01.plant.local/identitymanager",
            ),
            (
                "https://sms01/identitymanager",
                "https://sms01/identitymanager",
            ),
            (
                "https://SMS01/IdentityManager/",
                "https://sms01/identitymanager",
            ),
            (
                "HTTPS://SMS01/IDENTITYMANAGER//",
                "https://sms01/identitymanager",
            ),
            (
                "  sms01.plant.local  ",
                "https://sms01.plant.local/identitymanager",
            ),
            (
                "https://sms01.plant.local",
                "https://sms01.plant.local/identitymanager",
            ),
            (
                "https://sms01.plant.local/",
                "https://sms01.plant.local/identitymanager",
            ),
            ("sms01/identitymanager", "https://sms01/identitymanager"),
            ("sms01:8443", "https://sms01:8443/identitymanager"),
            (
                "https://sms01:443/identitymanager",
                "https://sms01/identitymanager",
            ),
            (
                "https://sms01:8443/IdentityManager",
                "https://sms01:8443/identitymanager",
            ),
            // cmd.exe's `set AIM_AUTHORITY="sms01"` keeps the quotes.
            ("\"sms01\"", "https://sms01/identitymanager"),
            (" 'https://SMS01/' ", "https://sms01/identitymanager"),
            ("10.0.0.5", "https://10.0.0.5/identitymanager"),
            ("[fe80::1]", "https://[fe80::1]/identitymanager"),
            ("fe80::1", "https://[fe80::1]/identitymanager"),
            ("::1", "https://[::1]/identitymanager"),
            ("[::1]:8443", "https://[::1]:8443/identitymanager"),
            (
                "https://[2001:db8::1]:9443/",
                "https://[2001:db8::1]:9443/identitymanager",
            ),
            // Loopback http: tests, a local proxy.
            (
                "http://127.0.0.1:3000/identitymanager",
                "http://127.0.0.1:3000/identitymanager",
            ),
            (
                "http://127.1.2.3:3000",
                "http://127.1.2.3:3000/identitymanager",
            ),
            (
                "http://localhost:8080/",
                "http://localhost:8080/identitymanager",
            ),
            ("http://[::1]:8080", "http://[::1]:8080/identitymanager"),
            // The discovery document's or the token endpoint's URL, pasted
            // from AVEVA's documentation or a browser: the authority is the base.
            (
                "https://sms01/identitymanager/.well-known/openid-configuration",
                "https://sms01/identitymanager",
            ),
            (
                "https://SMS01/IdentityManager/.well-known/openid-configuration/",
                "https://sms01/identitymanager",
            ),
            (
                "sms01/identitymanager/connect/token",
                "https://sms01/identitymanager",
            ),
            (
                "https://idp.example/realms/aim/Connect/Token",
                "https://idp.example/realms/aim",
            ),
            // Other explicit paths are kept.
            (
                "https://idp.example/auth/realms/aim",
                "https://idp.example/auth/realms/aim",
            ),
            (
                "https://gw.plant.local/aim/IdentityManager/",
                "https://gw.plant.local/aim/identitymanager",
            ),
        ];
        for (input, expected) in table {
            assert_eq!(base(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn derived_urls() {
        let a = Authority::parse("sms01", false).unwrap();
        assert_eq!(
            a.discovery_url(),
            "https://sms01/identitymanager/.well-known/openid-configuration"
        );
        assert_eq!(
            a.default_token_endpoint(),
            "https://sms01/identitymanager/connect/token"
        );
        assert_eq!(a.to_string(), "https://sms01/identitymanager");
    }

    #[test]
    fn bad_input_says_what_to_fix() {
        assert!(config_error("").contains("empty"));
        assert!(config_error("   ").contains("empty"));
        assert!(config_error("ftp://sms01").contains("use https://"));
        assert!(config_error("ldap://sms01/identitymanager").contains("`ldap`"));
        let http = config_error("http://sms01/identitymanager");
        assert!(http.contains("allow_insecure_http"), "{http}");
        assert!(http.contains("clear text"), "{http}");
        assert!(config_error("http://10.0.0.5").contains("allow_insecure_http"));
        assert!(config_error("sms 01").contains("space"));
        // The url crate takes these in a domain; DNS never resolves them.
        assert!(config_error("\"sms01").contains("remove the quotes"));
        assert!(config_error("https://sms01'/identitymanager").contains("quote"));
        assert!(config_error("sms$01.plant.local").contains("no host name has"));
        assert!(config_error("https://sms 01.plant.local/identitymanager").contains("space"));
        assert!(config_error("https://sms01/identity manager").contains("space"));
        // Found by fuzz/authority: backslashes hid the `@` from the
        // pre-parse check, and the url crate made `%5B!` the user name.
        let hidden = config_error("\\\\\\/////\\[!@nti");
        assert!(hidden.contains("user info"), "{hidden}");
        let userinfo = config_error("https://admin:hunter2@sms01/identitymanager");
        assert!(userinfo.contains("user info"), "{userinfo}");
        assert!(!userinfo.contains("hunter2"), "{userinfo}");
        // Whatever else is wrong, a password in the input is not repeated.
        for input in [
            "ftp://admin:hunter2@sms01",
            "http://admin:hunter2@sms01",
            "https://a:hunter2@sms 01",
            "admin:hunter2@sms01",
        ] {
            let msg = config_error(input);
            assert!(!msg.contains("hunter2"), "{msg}");
        }
        assert!(config_error("https://sms01/identitymanager?x=1").contains("query"));
        assert!(config_error("https://sms01/identitymanager#top").contains("fragment"));
        assert!(config_error("https://").contains("no host"));
        // Not host `https`: the `//` is missing.
        for input in [
            "https:/sms01/identitymanager",
            "HTTP:sms01",
            "https:\\\\sms01",
        ] {
            assert!(config_error(input).contains("lacks the `//`"), "{input}");
        }
        assert!(config_error("https:///identitymanager").contains("no host"));
    }

    #[test]
    fn insecure_http_needs_opt_in() {
        let a = Authority::parse("http://sms01/IdentityManager", true).unwrap();
        assert_eq!(a.base_url(), "http://sms01/identitymanager");
    }

    #[test]
    fn issuer_matching_tolerates_case_and_slash() {
        let a = Authority::parse("sms01.plant.local", false).unwrap();
        assert!(a.matches_issuer("https://sms01.plant.local/identitymanager"));
        assert!(a.matches_issuer("https://SMS01.Plant.Local/IdentityManager/"));
        assert!(a.matches_issuer("https://sms01.plant.local:443/identitymanager"));
        assert!(!a.matches_issuer("https://sms02.plant.local/identitymanager"));
        assert!(!a.matches_issuer("http://sms01.plant.local/identitymanager"));
        assert!(!a.matches_issuer("https://sms01.plant.local:8443/identitymanager"));
        assert!(!a.matches_issuer("https://sms01.plant.local/other"));
        assert!(!a.matches_issuer("not a url"));
    }

    #[test]
    fn endpoints_follow_the_same_rules_but_keep_their_path() {
        let url = parse_endpoint(
            "https://SMS01/IdentityManager/connect/token",
            "token endpoint",
            false,
        )
        .unwrap();
        assert_eq!(url.as_str(), "https://sms01/IdentityManager/connect/token");
        let url = parse_endpoint("http://127.0.0.1:9/t?x=1", "token endpoint", false).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9/t?x=1");
        for bad in [
            "http://sms01/connect/token",
            "ftp://x/t",
            "https://u:p@x/t",
            "https://x/t#f",
            "https:/x/t",
            "",
        ] {
            let err = parse_endpoint(bad, "token endpoint", false).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().contains("token endpoint"), "{err}");
        }
    }
}
