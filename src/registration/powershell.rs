//! PowerShell rendering: single-quoted strings that no input can break out of.
//!
//! In a PowerShell single-quoted string nothing is expanded — `$( )`,
//! backticks and `"` are plain text — and the only special character is the
//! single quote, written twice to stand for itself. PowerShell also treats
//! the typographic quotes U+2018..U+201B as single quotes, so those are
//! rejected rather than trusted to doubling. Control characters (a newline
//! ends the command), Unicode line separators and bidirectional overrides
//! (which can make the command display differently from what it runs) are
//! rejected too: an administrator pastes this into an elevated shell.

use crate::authority::parse_endpoint;
use crate::error::{Error, Result};

/// What the administrator may need after `Add-IdentityManagerClient`, as
/// PowerShell comments: the cmdlets AVEVA documents on the AIM node for
/// changing a client and for the certificate AIM uses, and the service
/// restart some registrations need.
pub(crate) const FOLLOW_UP: &str = "\
# To change the token lifetime (or another setting) later: Update-IdentityManagerClient \
(see Get-Help Update-IdentityManagerClient).
# Some registrations take effect only after a restart of the AVEVA Identity Manager service on this node.
# If the app reports an untrusted certificate: Get-RootCertificate gives the certificate AIM uses; \
give it to the app as AIM_CA_CERT (PEM).";

/// `value` as a PowerShell single-quoted string, or an error naming `field`.
pub(crate) fn quote(field: &str, value: &str) -> Result<String> {
    if let Some(bad) = value.chars().find(|&c| is_unsafe(c)) {
        let why = if is_quote_lookalike(bad) {
            "a typographic quote that PowerShell treats as a quote; type a plain ' instead"
        } else {
            "a control, line-separator or text-direction character that could change or hide the command"
        };
        return Err(Error::config(format!(
            "cannot put the {field} into a PowerShell command: it contains U+{:04X}, {why}",
            bad as u32
        )));
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    Ok(out)
}

fn is_quote_lookalike(c: char) -> bool {
    matches!(c, '\u{2018}'..='\u{201B}')
}

fn is_unsafe(c: char) -> bool {
    c.is_control()
        || is_quote_lookalike(c)
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{200E}' | '\u{200F}' | '\u{061C}' // direction marks
            | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' // bidi embeddings, overrides, isolates
            | '\u{FEFF}' // zero-width no-break space / BOM
        )
}

/// The `-HostBase` value: `scheme://host[:port]`, from `https://FQDN`,
/// `FQDN`, or either with `/identitymanager`. The host is checked by the
/// authority's rules (bare IPv6 literals, no spaces, no user info — and a
/// password typed as `user:pass@` never reaches the message); plain http
/// is passed through, as the cmdlet takes what the administrator gives.
pub(crate) fn host_base(input: &str) -> Result<String> {
    let url = parse_endpoint(input, "host base", true)?;
    let path = url.path().trim_end_matches('/');
    let path_ok = path.is_empty() || path.eq_ignore_ascii_case("/identitymanager");
    if url.query().is_some() || !path_ok {
        // `url` has no user info: parse_endpoint refused it.
        return Err(Error::config(format!(
            "the host base `{url}` must be https://FQDN of the AIM server (no path or query)"
        )));
    }
    Ok(url.origin().ascii_serialization())
}

/// The `-AllowedGrantTypes` name of an RFC 7591 grant type.
pub(crate) fn grant_type(rfc_name: &str) -> Result<&'static str> {
    Ok(match rfc_name {
        "client_credentials" => "ClientCredentials",
        "authorization_code" => "Code",
        "implicit" => "Implicit",
        "password" => "ResourceOwnerPassword",
        "urn:ietf:params:oauth:grant-type:device_code" => "DeviceFlow",
        other => {
            return Err(Error::config(format!(
                "the grant type {other:?} has no Add-IdentityManagerClient equivalent; \
                 MES service clients use \"client_credentials\""
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_single_quotes_and_leaves_the_rest_literal() {
        assert_eq!(quote("x", "plain").unwrap(), "'plain'");
        assert_eq!(quote("x", "").unwrap(), "''");
        assert_eq!(
            quote("x", "'; Remove-Item C:\\ -Recurse; '").unwrap(),
            "'''; Remove-Item C:\\ -Recurse; '''"
        );
        assert_eq!(quote("x", "$(calc)").unwrap(), "'$(calc)'");
        assert_eq!(quote("x", "`$env:PATH`").unwrap(), "'`$env:PATH`'");
        assert_eq!(quote("x", "\"$x\"").unwrap(), "'\"$x\"'");
    }

    #[test]
    fn rejects_what_could_escape_or_hide() {
        for bad in [
            "a\nb",
            "a\r\nb",
            "a\0b",
            "a\u{1b}[2Jb",
            "a\u{7f}",
            "a\u{85}b",
            "a\u{2028}b",
            "a\u{202E}b",
            "a\u{2066}b",
        ] {
            let e = quote("name", bad).unwrap_err().to_string();
            assert!(e.contains("name") && e.contains("control"), "{bad:?}: {e}");
        }
        for bad in ["\u{2018}", "\u{2019}", "\u{201A}", "\u{201B}"] {
            let e = quote("name", bad).unwrap_err().to_string();
            assert!(e.contains("typographic quote"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn host_base_forms() {
        for input in [
            "sms01.plant.local",
            "https://sms01.plant.local",
            "https://sms01.plant.local/",
            "https://SMS01.plant.local/identitymanager/",
            " https://sms01.plant.local/IdentityManager ",
        ] {
            assert_eq!(
                host_base(input).unwrap(),
                "https://sms01.plant.local",
                "{input}"
            );
        }
        assert_eq!(
            host_base("https://sms01:8443").unwrap(),
            "https://sms01:8443"
        );
        assert_eq!(host_base("fd00::5").unwrap(), "https://[fd00::5]");
        let e = host_base("https://admin:Passw0rd@sms01").unwrap_err();
        assert!(!e.to_string().contains("Passw0rd"), "{e}");
        for bad in [
            "ftp://sms01",
            "https://u:p@sms01",
            "https://sms01/other",
            "https://sms01/?a=1",
            "https://",
            "https://sms01/'x",
        ] {
            assert!(host_base(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn follow_up_names_the_documented_cmdlets_as_comments() {
        for needle in [
            "Update-IdentityManagerClient",
            "Get-RootCertificate",
            "restart of the AVEVA Identity Manager service",
            "AIM_CA_CERT",
        ] {
            assert!(FOLLOW_UP.contains(needle), "{needle}");
        }
        // Pasted into the shell with the commands: comments only.
        assert!(
            FOLLOW_UP.lines().all(|l| l.starts_with("# ")),
            "{FOLLOW_UP}"
        );
    }

    #[test]
    fn grant_types_map_to_cmdlet_names() {
        assert_eq!(
            grant_type("client_credentials").unwrap(),
            "ClientCredentials"
        );
        assert!(grant_type("refresh_token").is_err());
    }
}
