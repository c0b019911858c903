//! Client registration: RFC 7591 against the emulator, and the PowerShell
//! rendering against hostile input.

#[path = "support/peer.rs"]
mod peer;

use std::time::Duration;

use aim_token::emulator::AimEmulator;
use aim_token::{AimClient, ClientRegistration, ErrorKind};
use peer::PeerOptions;
use proptest::prelude::*;

const IAT: &str = "initial-access-token-for-tests";

async fn emulator(https: bool) -> AimEmulator {
    AimEmulator::builder()
        .https(https)
        .initial_access_token(IAT)
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn registered_credentials_get_a_token_from_the_emulator() {
    for https in [false, true] {
        let emu = emulator(https).await;
        let reg = ClientRegistration::new("new-service")
            .name("New service")
            .generate_secret()
            .scopes(["mes.api"])
            .access_token_lifetime(Duration::from_secs(3600));
        let registered = reg.register(&emu.client_builder(), IAT).await.unwrap();
        assert!(!registered.client_id().is_empty());
        let secret = registered.client_secret().unwrap();
        assert!(!format!("{registered:?}").contains(secret));
        assert_eq!(emu.counters().register, 1);

        let verified = registered
            .verify(emu.client_builder(), &["mes.api".to_owned()])
            .await
            .unwrap();
        assert_eq!(verified.client_id, registered.client_id());
        assert!(
            verified.scopes.iter().any(|s| s == "mes.api"),
            "{verified:?}"
        );
        // The requested lifetime reached the provider (not just any lifetime).
        assert_eq!(
            registered.access_token_lifetime(),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(verified.lifetime, Duration::from_secs(3600));
    }
}

#[tokio::test]
async fn wrong_initial_access_token_is_an_oauth_error() {
    let emu = emulator(false).await;
    let err = ClientRegistration::new("svc")
        .generate_secret()
        .register(&emu.client_builder(), "not-the-token")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OAuth, "{err}");
    assert_eq!(err.oauth_error(), Some("invalid_token"));
    assert!(err.to_string().contains("initial access token"), "{err}");
    assert!(!err.to_string().contains("not-the-token"));
}

#[tokio::test]
async fn zero_timeout_is_a_config_error_before_any_request() {
    let emu = emulator(false).await;
    let err = ClientRegistration::new("timeouts")
        .generate_secret()
        .register(
            &AimClient::builder()
                .authority(emu.authority())
                .connect_timeout(Duration::ZERO),
            "anything",
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("connect_timeout"), "{err}");
    assert_eq!(emu.counters().discovery, 0);
}

#[tokio::test]
async fn no_registration_endpoint_points_to_powershell() {
    // Registration disabled: the emulator behaves as AIM does today.
    let emu = AimEmulator::start().await.unwrap();
    let err = ClientRegistration::new("svc")
        .generate_secret()
        .register(&emu.client_builder(), IAT)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("to_powershell"), "{err}");
}

#[tokio::test]
async fn verify_reports_the_granted_lifetime_and_scopes() {
    let emu = AimEmulator::builder()
        .token_lifetime(Duration::from_secs(7200))
        .start()
        .await
        .unwrap();
    let verified = ClientRegistration::new(AimEmulator::CLIENT_ID)
        .secret(AimEmulator::CLIENT_SECRET)
        .scopes([AimEmulator::DEFAULT_SCOPE])
        .verify(emu.client_builder())
        .await
        .unwrap();
    assert_eq!(verified.lifetime.as_secs(), 7200);
    assert_eq!(verified.scopes, [AimEmulator::DEFAULT_SCOPE]);

    let err = ClientRegistration::new(AimEmulator::CLIENT_ID)
        .secret("wrong secret")
        .verify(emu.client_builder())
        .await
        .unwrap_err();
    assert_eq!(err.oauth_error(), Some("invalid_client"));
}

// ---- against oidc-provider (tests/interop) --------------------------------

/// Starts the oidc-provider peer, or skips (returns) when Node/npm are
/// missing outside CI, as the interop tests do.
macro_rules! start_peer {
    ($options:expr) => {
        match peer::start($options) {
            Some(peer) => peer,
            None => return,
        }
    };
}

#[tokio::test]
async fn registered_credentials_get_a_token_from_oidc_provider_over_http() {
    let peer = start_peer!(PeerOptions {
        initial_access_token: Some(IAT.into()),
        scopes: vec!["mes.api".into(), "mes.admin".into()],
        ..PeerOptions::default()
    });
    let connect = || AimClient::builder().authority(peer.issuer());

    // A scope the provider does not know: its RFC 7591 error comes through.
    let err = ClientRegistration::new("svc")
        .scopes(["no.such.scope"])
        .register(&connect(), IAT)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OAuth, "{err:?}");
    assert_eq!(
        err.oauth_error(),
        Some("invalid_client_metadata"),
        "{err:?}"
    );

    // The secret we chose is only a wish: oidc-provider issues its own.
    let registered = ClientRegistration::new("svc")
        .secret("our-own-secret-wish")
        .scopes(["mes.api"])
        .register(&connect(), IAT)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\npeer stderr:\n{}", peer.stderr()));
    let issued = registered.client_secret().unwrap();
    assert!(registered.registration_access_token().is_some());
    assert!(registered.registration_client_uri().is_some());
    assert_eq!(registered.scopes(), ["mes.api"]);

    let verified = ClientRegistration::new(registered.client_id())
        .secret(issued)
        .scopes(["mes.api"])
        .verify(connect())
        .await
        .unwrap();
    assert_eq!(verified.scopes, ["mes.api"]);
    assert_eq!(verified.lifetime, Duration::from_secs(3600));
    assert_eq!(peer.stats().await.registration_requests, 2);
}

// ---- PowerShell rendering -------------------------------------------------

/// Splits one rendered PowerShell command into its words, decoding
/// single-quoted strings; fails on anything that is neither a bare word of
/// safe characters nor a properly closed single-quoted string.
fn parse_powershell(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' => {
                chars.next();
            }
            '\'' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            value.push('\'');
                        }
                        Some('\'') => break,
                        Some(c) if c.is_control() || ('\u{2018}'..='\u{201B}').contains(&c) => {
                            return Err(format!("unsafe character U+{:04X} in a string", c as u32))
                        }
                        Some(c) => value.push(c),
                        None => return Err("unterminated string".into()),
                    }
                }
                // A string is followed by a space, a comma (array) or the end.
                match chars.peek() {
                    None | Some(' ') => words.push(value),
                    Some(',') => {
                        chars.next();
                        words.push(value + ",");
                    }
                    Some(c) => return Err(format!("{c:?} right after a string")),
                }
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ' ' {
                        break;
                    }
                    if !(c.is_ascii_alphanumeric() || c == '-' || c == ',') {
                        return Err(format!("unquoted {c:?}"));
                    }
                    word.push(c);
                    chars.next();
                }
                words.push(word);
            }
        }
    }
    Ok(words)
}

fn value_after<'a>(words: &'a [String], flag: &str) -> &'a str {
    let i = words.iter().position(|w| w == flag).unwrap();
    &words[i + 1]
}

#[test]
fn hostile_inputs_stay_literal() {
    let hostile = [
        "$(calc)",
        "`calc`",
        "'; Remove-Item -Recurse C:\\; '",
        "\"; Remove-Item C:\\ #",
        "${env:PATH}",
        "a'b''c'''",
        "@(1,2) | Out-Host",
    ];
    for h in hostile {
        let ps = ClientRegistration::new("svc")
            .name(h)
            .secret(h)
            .scopes([h.replace(' ', "_").replace('"', "q").replace('\\', "/")])
            .to_powershell("sms01.plant.local")
            .unwrap();
        let lines: Vec<&str> = ps.lines().collect();
        assert_eq!(lines.len(), 2, "{ps}");
        let words = parse_powershell(lines[0]).unwrap_or_else(|e| panic!("{e}: {ps}"));
        assert_eq!(words[0], "Add-IdentityManagerClient");
        assert_eq!(value_after(&words, "-Name"), h);
        assert_eq!(value_after(&words, "-Secret"), h);
        assert_eq!(value_after(&words, "-Id"), "svc");
        let get = parse_powershell(lines[1]).unwrap();
        assert_eq!(
            get,
            [
                "Get-IdentityManagerClient",
                "-HostBase",
                "https://sms01.plant.local",
                "-Id",
                "svc"
            ]
        );
    }
}

#[test]
fn newlines_nul_and_quote_lookalikes_are_rejected_with_the_field_named() {
    for bad in [
        "a\nRemove-Item x",
        "a\r",
        "a\0",
        "a\u{2019}; calc",
        "x\u{202E}y",
    ] {
        let err = ClientRegistration::new("svc")
            .name(bad)
            .secret("s")
            .to_powershell("sms01")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("name"), "{err}");
    }
    // The secret must be printable ASCII, and its error never shows it.
    let err = ClientRegistration::new("svc")
        .secret("line1\nline2")
        .to_powershell("sms01")
        .unwrap_err();
    assert!(!err.to_string().contains("line1"), "{err}");
    // A hostile client ID or host base is refused as well.
    assert!(ClientRegistration::new("a'; calc; '")
        .secret("s")
        .to_powershell("sms01")
        .is_err());
    assert!(ClientRegistration::new("svc")
        .secret("s")
        .to_powershell("https://sms01/'; calc; '")
        .is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever is accepted renders to quoting that a PowerShell tokenizer
    /// reads back as exactly the input.
    #[test]
    fn any_accepted_input_round_trips(
        name in "\\PC{0,40}|[\\x00-\\x7f\u{2018}-\u{201b}]{0,40}",
        secret in "[ -~]{1,40}|\\PC{1,10}",
        scope in "[!#-\\[\\]-~]{1,20}",
        id in "[A-Za-z0-9._~-]{1,30}|\\PC{1,10}",
    ) {
        let reg = ClientRegistration::new(id.clone()).name(name.clone()).secret(secret.clone()).scopes([scope.clone()]);
        // Inputs inside the documented rules must be accepted, or the
        // round trip below would pass by rejecting everything.
        let must_accept = id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
            && secret.chars().all(|c| matches!(c, ' '..='~'))
            && !name.is_empty()
            && name.chars().all(|c| matches!(c, ' '..='~'));
        let rendered = reg.to_powershell("https://sms01.plant.local");
        if let Err(e) = &rendered {
            prop_assert!(!must_accept, "rejected inputs within the rules: {}", e);
        }
        if let Ok(ps) = rendered {
            let lines: Vec<&str> = ps.lines().collect();
            prop_assert_eq!(lines.len(), 2);
            let words = parse_powershell(lines[0]).map_err(|e| TestCaseError::fail(format!("{e}: {ps:?}")))?;
            prop_assert_eq!(value_after(&words, "-Name"), name.as_str());
            prop_assert_eq!(value_after(&words, "-Secret"), secret.as_str());
            prop_assert_eq!(value_after(&words, "-Id"), id.as_str());
            prop_assert_eq!(value_after(&words, "-ScopeRestrictions"), scope.as_str());
            prop_assert!(parse_powershell(lines[1]).is_ok());
        }
    }
}
