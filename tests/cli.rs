//! The `aim-token` binary driven as a process against the emulator.

use std::path::PathBuf;
use std::time::Duration;

use aim_token::emulator::{AimEmulator, EmulatorClient};
use cli::{aim_token, emulator_env, step, temp_file, trusting_env, NO_ENV};

#[path = "support/cli.rs"]
mod cli;

fn write_ca(emu: &AimEmulator, name: &str) -> PathBuf {
    temp_file(name, &emu.ca_pem().unwrap())
}

async fn https_emulator() -> AimEmulator {
    AimEmulator::builder().https(true).start().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_every_step() {
    let emu = https_emulator().await;
    let mes = format!("{}api/v3/entity", emu.mes_base());
    let out = aim_token(&["check", "--mes", &mes], &trusting_env(&emu, "pass")).await;
    assert_eq!(out.code, 0);
    for name in [
        "config",
        "dns",
        "tcp",
        "tls",
        "discovery",
        "token",
        "claims",
        "clock",
        "mes",
    ] {
        assert!(
            step(&out.stdout, name).starts_with("PASS"),
            "{name}: {}",
            out.stdout
        );
    }
    assert!(step(&out.stdout, "tls").contains("trusted"));
    assert!(step(&out.stdout, "claims").contains(AimEmulator::CLIENT_ID));
    assert!(out.stdout.contains("all checks passed"));
    // Secrets are never echoed.
    assert!(!out.stdout.contains(AimEmulator::CLIENT_SECRET));
    assert!(!out.stderr.contains(AimEmulator::CLIENT_SECRET));
    assert_eq!(emu.counters().mes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_with_invalid_client_for_a_wrong_secret() {
    let emu = AimEmulator::start().await.unwrap();
    let authority = emu.authority();
    let out = aim_token(
        &["check"],
        &[
            ("AIM_AUTHORITY", authority.as_str()),
            ("AIM_CLIENT_ID", AimEmulator::CLIENT_ID),
            ("AIM_CLIENT_SECRET", "wrong-secret-value"),
        ],
    )
    .await;
    assert_eq!(out.code, 5);
    let token = step(&out.stdout, "token");
    assert!(
        token.starts_with("FAIL") && token.contains("invalid_client"),
        "{token}"
    );
    assert!(out.stdout.contains("AIM_CLIENT_SECRET"));
    assert!(step(&out.stdout, "discovery").starts_with("PASS"));
    assert!(!out.stdout.contains("wrong-secret-value"));
    assert!(!out.stderr.contains("wrong-secret-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_with_the_fix_for_an_untrusted_ca() {
    let emu = https_emulator().await;
    let authority = emu.authority();
    let out = aim_token(&["check"], &emulator_env(&authority)).await;
    assert_eq!(out.code, 4);
    let tls = step(&out.stdout, "tls");
    assert!(
        tls.starts_with("FAIL") && tls.contains("not trusted"),
        "{tls}"
    );
    assert!(tls.contains("issuer"), "{tls}");
    assert!(out.stdout.contains("--ca-cert"));
    assert!(step(&out.stdout, "token").starts_with("SKIP"));
    assert_eq!(emu.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_with_a_network_error_for_an_unreachable_host() {
    // A port that was free a moment ago: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let authority = format!("https://127.0.0.1:{port}/identitymanager");
    let out = aim_token(
        &["--timeout", "5", "check"],
        &[
            ("AIM_AUTHORITY", authority.as_str()),
            ("AIM_CLIENT_ID", "x"),
            ("AIM_CLIENT_SECRET", "y"),
        ],
    )
    .await;
    assert_eq!(out.code, 3);
    let tcp = step(&out.stdout, "tcp");
    assert!(
        tcp.starts_with("FAIL") && tcp.contains(&port.to_string()),
        "{tcp}"
    );
    assert!(out.stdout.contains("firewall"));
    assert!(step(&out.stdout, "tls").starts_with("SKIP"));

    let out = aim_token(
        &["check"],
        &[
            ("AIM_AUTHORITY", "https://no-such-host.invalid"),
            ("AIM_CLIENT_ID", "x"),
            ("AIM_CLIENT_SECRET", "y"),
        ],
    )
    .await;
    assert_eq!(out.code, 3);
    assert!(step(&out.stdout, "dns").starts_with("FAIL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_without_configuration_is_a_usage_error() {
    let out = aim_token(&["check"], NO_ENV).await;
    assert_eq!(out.code, 2);
    assert!(step(&out.stdout, "config").starts_with("FAIL"));
    let out = aim_token(&["no-such-command"], NO_ENV).await;
    assert_eq!(out.code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_prints_only_the_token_and_decode_reads_it() {
    let emu = AimEmulator::builder()
        .client(EmulatorClient::new("cli-client", "cli-secret"))
        .start()
        .await
        .unwrap();
    let authority = emu.authority();
    let out = aim_token(
        &["token", "--client-secret", "cli-secret"],
        &[
            ("AIM_AUTHORITY", authority.as_str()),
            ("AIM_CLIENT_ID", "cli-client"),
        ],
    )
    .await;
    assert_eq!(out.code, 0);
    let token = out.stdout.trim_end();
    assert_eq!(out.stdout.lines().count(), 1);
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert!(out.stderr.contains("process lists"), "warns about the flag");
    assert!(!out.stderr.contains("cli-secret"));

    let out = aim_token(&["decode", token], NO_ENV).await;
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("NOT verified"));
    assert!(out.stdout.contains("\"client_id\": \"cli-client\""));
    assert!(out.stdout.contains("Expires:"));
    assert!(out.stdout.contains("not expired"));
    assert!(
        !out.stdout.contains(token),
        "the token itself is not echoed"
    );

    let out = aim_token(&["decode", "not-a-jwt"], NO_ENV).await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("not a JWT"));

    let out = aim_token(
        &["token"],
        &[
            ("AIM_AUTHORITY", authority.as_str()),
            ("AIM_CLIENT_ID", "cli-client"),
            ("AIM_CLIENT_SECRET", "nope"),
        ],
    )
    .await;
    assert_eq!(out.code, 5);
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("invalid_client"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_prints_powershell_or_registers_dynamically() {
    let out = aim_token(
        &[
            "register",
            "--powershell",
            "--id",
            "mes-reporting",
            "--scope",
            "mes.api",
            "--name",
            "O'Brien $(calc)",
        ],
        &[("AIM_AUTHORITY", "sms01.plant.local")],
    )
    .await;
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains(
        "Add-IdentityManagerClient -HostBase 'https://sms01.plant.local' -Id 'mes-reporting' -Name 'O''Brien $(calc)' -Secret '"
    ));
    assert!(out.stdout.contains(
        "-Enabled 1 -AllowedGrantTypes ClientCredentials -ScopeRestrictions 'mes.api' -AccessTokenLifetime 86400"
    ));
    assert!(out.stdout.contains(
        "Get-IdentityManagerClient -HostBase 'https://sms01.plant.local' -Id 'mes-reporting'"
    ));

    // Dynamic registration against the emulator, then a token with the new credentials.
    let emu = AimEmulator::builder()
        .initial_access_token("cli-iat")
        .start()
        .await
        .unwrap();
    let authority = emu.authority();
    let out = aim_token(
        &[
            "register",
            "--id",
            "dyn-client",
            "--scope",
            "mes.api",
            "--verify",
        ],
        &[
            ("AIM_AUTHORITY", authority.as_str()),
            ("AIM_INITIAL_ACCESS_TOKEN", "cli-iat"),
        ],
    )
    .await;
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("AIM_CLIENT_ID="));
    assert!(out.stdout.contains("AIM_CLIENT_SECRET="));
    assert!(out.stderr.contains("verified"));
    assert!(!out.stderr.contains("cli-iat"));
    assert_eq!(emu.counters().register, 1);

    // No registration endpoint (AIM today): the PowerShell command, exit 6.
    let plain = AimEmulator::start().await.unwrap();
    let authority = plain.authority();
    let out = aim_token(
        &["register", "--id", "svc"],
        &[
            ("AIM_AUTHORITY", authority.as_str()),
            ("AIM_INITIAL_ACCESS_TOKEN", "x"),
        ],
    )
    .await;
    assert_eq!(out.code, 6);
    assert!(out.stderr.contains("no dynamic client registration"));
    assert!(out.stdout.contains("Add-IdentityManagerClient"));
}

/// AIM_SCOPE means what it means to `AimClient::from_env`: spaces or commas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aim_scope_separated_by_commas_is_several_scopes() {
    let out = aim_token(
        &["register", "--powershell", "--id", "svc"],
        &[
            ("AIM_AUTHORITY", "sms01.plant.local"),
            ("AIM_SCOPE", "mes.api,openid\tprofile"),
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("-ScopeRestrictions 'mes.api','openid','profile' "),
        "{}",
        out.stdout
    );
    // cmd.exe's `set AIM_SCOPE="site.api openid"` keeps the quotes; a
    // repeated scope is one scope.
    let out = aim_token(
        &["register", "--powershell", "--id", "svc"],
        &[
            ("AIM_AUTHORITY", "sms01.plant.local"),
            ("AIM_SCOPE", "\"site.api openid,site.api\""),
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("-ScopeRestrictions 'site.api','openid' "),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_explains_a_mes_403_as_a_missing_privilege() {
    let emu = AimEmulator::start().await.unwrap();
    emu.set_mes_forbidden(true);
    let authority = emu.authority();
    let mes = format!("{}api/v3/entity", emu.mes_base());
    let out = aim_token(&["check", "--mes", &mes], &emulator_env(&authority)).await;
    assert_eq!(out.code, 5);
    assert!(step(&out.stdout, "token").starts_with("PASS"));
    let mes = step(&out.stdout, "mes");
    assert!(mes.starts_with("FAIL") && mes.contains("403"), "{mes}");
    assert!(out.stdout.contains("Default Background User"));
}

/// A server whose clock runs two days behind issues tokens that are already
/// expired here: the claims step says so, with the clock's exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_with_the_clock_code_when_tokens_are_expired_on_arrival() {
    #[derive(Debug)]
    struct Behind;
    impl aim_token::Clock for Behind {
        fn now(&self) -> std::time::SystemTime {
            std::time::SystemTime::now() - Duration::from_secs(2 * 86_400)
        }
    }
    let emu = AimEmulator::builder()
        .clock(std::sync::Arc::new(Behind))
        .start()
        .await
        .unwrap();
    let authority = emu.authority();
    let out = aim_token(&["check"], &emulator_env(&authority)).await;
    assert_eq!(out.code, 7);
    let claims = step(&out.stdout, "claims");
    assert!(
        claims.starts_with("FAIL") && claims.contains("expired"),
        "{claims}"
    );
    // The fix, not just the word: every run prints a `clock` step line.
    assert!(
        out.stdout.contains("synchronize this machine's clock"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_over_https_needs_the_ca_and_says_so() {
    let emu = https_emulator().await;
    let ca = write_ca(&emu, "token");
    let authority = emu.authority();
    let env = emulator_env(&authority);
    let out = aim_token(&["--timeout", "5", "token"], &env).await;
    assert_eq!(out.code, 4, "an untrusted certificate is a TLS failure");
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains("AIM_CA_CERT") || out.stderr.contains("root_certificate_pem"),
        "{}",
        out.stderr
    );

    let out = aim_token(&["token", "--ca-cert", ca.to_str().unwrap()], &env).await;
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout.trim_end().split('.').count(), 3);

    let missing = aim_token(&["token", "--ca-cert", "/no/such/ca.pem"], &env).await;
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("/no/such/ca.pem"));
}

/// An unsigned JWT with these claims (decode does not verify signatures).
fn jwt_with(claims: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.sig",
        b64.encode(r#"{"alg":"RS256"}"#),
        b64.encode(claims)
    )
}

#[tokio::test]
async fn decode_reports_dates_out_of_range_without_panicking() {
    for exp in ["253402300800", "-1"] {
        let jwt = jwt_with(&format!(r#"{{"exp":{exp},"iat":{exp},"nbf":{exp}}}"#));
        let out = aim_token(&["decode", &jwt], NO_ENV).await;
        assert_eq!(
            out.code, 0,
            "documented: decoded, the range problem reported"
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        assert!(
            out.stdout
                .contains(&format!("Expires:    out of range ({exp})")),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("Status:     unknown"), "{}", out.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_sends_the_token_to_mes_only_over_https_or_loopback() {
    let emu = AimEmulator::start().await.unwrap();
    let authority = emu.authority();
    for mes in [
        "http://mes01.plant.invalid/mesmw/api/v3/entity",
        "http://localhost.:9/mesmw/api/v3/entity",
    ] {
        let before = emu.counters().mes;
        let out = aim_token(&["check", "--mes", mes], &emulator_env(&authority)).await;
        assert_eq!(out.code, 2, "a usage error: the flag is wrong");
        assert!(step(&out.stdout, "token").starts_with("PASS"));
        let step = step(&out.stdout, "mes");
        assert!(
            step.starts_with("FAIL") && step.contains("not sent"),
            "{step}"
        );
        assert!(out.stdout.contains("https://"), "{}", out.stdout);
        assert_eq!(emu.counters().mes, before);
    }
}

/// `--timeout 0` is refused with the flag's name, not silently made one
/// second (nor read as "no limit", as some tools do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_timeout_is_refused_by_name() {
    let out = aim_token(&["--timeout", "0", "check"], NO_ENV).await;
    assert_eq!(out.code, 2);
    assert!(out.stdout.is_empty(), "nothing ran: {}", out.stdout);
    assert!(out.stderr.contains("--timeout"), "{}", out.stderr);
}

/// The PCS root CA as Windows' certificate export writes it by default
/// (DER, `.cer`), or as Windows PowerShell's `>` writes a PEM (UTF-16LE
/// with a byte order mark): `--ca-cert` takes both, as AIM_CA_CERT does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_trusts_a_der_or_utf16_ca_file() {
    use base64::Engine as _;
    let emu = https_emulator().await;
    let pem = emu.ca_pem().unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(
        pem.replace('\n', "\r\n")
            .encode_utf16()
            .flat_map(u16::to_le_bytes),
    );
    let dir = std::env::temp_dir().join(format!("aim-token-cli-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in [("pcs-root.cer", der), ("utf16.pem", utf16)] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = aim_token(
            &["token", "--no-cache", "--ca-cert", path.to_str().unwrap()],
            &emulator_env(&emu.authority()),
        )
        .await;
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        assert!(
            out.stdout.trim().starts_with("ey"),
            "{name}: {}",
            out.stdout
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `register` refuses what AIM cannot take in the tool's words: the flag or
/// variable to fix, never a library method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_errors_name_flags_not_methods() {
    /// Arguments after `register --powershell`, extra variables, the flag
    /// or variable the error must name.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 6] = [
        (&["--id", "svc", "--lifetime", "0"], &[], "--lifetime"),
        (
            &["--id", "svc", "--lifetime", "99999999999"],
            &[],
            "--lifetime",
        ),
        (&["--id", "svc one"], &[], "--id"),
        (&["--id", "svc", "--name", "a\nb"], &[], "--name"),
        (&["--id", "svc", "--scope", "a\"b"], &[], "--scope"),
        (
            &["--id", "svc"],
            &[("AIM_CLIENT_SECRET", "Pässwort\r")],
            "AIM_CLIENT_SECRET",
        ),
    ];
    for (args, vars, flag) in cases {
        let mut argv = vec!["register", "--powershell"];
        argv.extend_from_slice(args);
        let mut env = vec![("AIM_AUTHORITY", "sms01.plant.local")];
        env.extend_from_slice(vars);
        let out = aim_token(&argv, &env).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(flag), "{args:?}: {}", out.stderr);
        for method in [
            ".secret(",
            ".generate_secret(",
            ".name(",
            "access_token_lifetime",
        ] {
            assert!(!out.stderr.contains(method), "{args:?}: {}", out.stderr);
        }
        assert!(!out.stderr.contains("Pässwort"), "{}", out.stderr);
    }
}

/// `set AIM_CLIENT_ID="mes-reporting"` in cmd.exe keeps the quotes; the
/// app (`AimClient::from_env`) uses the ID between them, so `register`
/// registers that ID too instead of refusing the variable the app accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_reads_a_quoted_client_id_as_the_app_does() {
    let out = aim_token(
        &["register", "--powershell"],
        &[
            ("AIM_AUTHORITY", "sms01.plant.local"),
            ("AIM_CLIENT_ID", "\"mes-reporting\""),
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("-Id 'mes-reporting' "),
        "{}",
        out.stdout
    );
}

/// `register --powershell` finds the app's secret where the app does
/// (`AimClient::from_env`): AIM_CLIENT_SECRET without the CRLF that
/// `Get-Content -Raw` keeps, or AIM_CLIENT_SECRET_FILE; only with neither
/// is a new one generated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_takes_the_secret_as_the_app_reads_it() {
    let file = temp_file("register-secret", "from-the-file-0123\r\n");
    let file = file.to_string_lossy().into_owned();
    for (var, value, secret) in [
        ("AIM_CLIENT_SECRET", "typed-in-0123\r\n", "typed-in-0123"),
        (
            "AIM_CLIENT_SECRET_FILE",
            file.as_str(),
            "from-the-file-0123",
        ),
    ] {
        let out = aim_token(
            &["register", "--powershell", "--id", "svc"],
            &[("AIM_AUTHORITY", "sms01.plant.local"), (var, value)],
        )
        .await;
        assert_eq!(out.code, 0, "{var}: {}", out.stderr);
        assert!(
            out.stdout.contains(&format!("-Secret '{secret}' ")),
            "{var}: {}",
            out.stdout
        );
        assert!(!out.stdout.contains("newly generated"), "{}", out.stdout);
    }
    let missing = format!("{file}.missing");
    let out = aim_token(
        &["register", "--powershell", "--id", "svc"],
        &[
            ("AIM_AUTHORITY", "sms01.plant.local"),
            ("AIM_CLIENT_SECRET_FILE", missing.as_str()),
        ],
    )
    .await;
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("AIM_CLIENT_SECRET_FILE"),
        "{}",
        out.stderr
    );
}

/// What an RFC 7591 answer means for the app's future, said where the
/// administrator reads it: when the issued secret expires, that it already
/// has (exit 7, a clock's or the provider's fault), that no secret was issued at all (exit 6: the client
/// cannot use client credentials) — and the CLI's own words when the
/// provider has no registration endpoint, not a library method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_says_what_the_issued_secret_is_good_for() {
    use aim_token::emulator::{Endpoint, Fault};
    let emu = AimEmulator::builder()
        .initial_access_token("cli-iat")
        .start()
        .await
        .unwrap();
    let authority = emu.authority();
    let env = [
        ("AIM_AUTHORITY", authority.as_str()),
        ("AIM_INITIAL_ACCESS_TOKEN", "cli-iat"),
    ];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let answer = |extra: String| Fault::Status {
        status: 201,
        retry_after: None,
        body: Some(format!(r#"{{"client_id":"svc-issued"{extra}}}"#)),
    };
    let secret = r#","client_secret":"issued-0123456789""#;
    let cases = [
        (
            format!(
                r#"{secret},"client_secret_expires_at":{}"#,
                now + 30 * 86_400 + 60
            ),
            0,
            "expires",
        ),
        (
            format!(r#"{secret},"client_secret_expires_at":{}"#, now - 3600),
            7,
            "already expired",
        ),
        (String::new(), 6, "no client secret"),
        (
            format!(r#"{secret},"client_secret_expires_at":-1"#),
            0,
            "not a time",
        ),
    ];
    for (extra, code, words) in cases {
        emu.inject(Endpoint::Register, answer(extra.clone()));
        let out = aim_token(&["register", "--id", "svc"], &env).await;
        assert_eq!(out.code, code, "{extra}: {}", out.stderr);
        assert!(out.stderr.contains(words), "{extra}: {}", out.stderr);
        // The registration happened: its ID is printed whatever else.
        assert!(
            out.stdout.contains("AIM_CLIENT_ID=svc-issued"),
            "{}",
            out.stdout
        );
    }
    let out = aim_token(&["register", "--id", "svc", "--lifetime", "0"], &env).await;
    assert_eq!(out.code, 2);

    let plain = AimEmulator::start().await.unwrap();
    let authority = plain.authority();
    let out = aim_token(
        &["register", "--id", "svc"],
        &[
            ("AIM_AUTHORITY", authority.as_str()),
            ("AIM_INITIAL_ACCESS_TOKEN", "x"),
        ],
    )
    .await;
    assert_eq!(out.code, 6);
    assert!(out.stderr.contains("--powershell"), "{}", out.stderr);
    assert!(!out.stderr.contains("ClientRegistration"), "{}", out.stderr);
}

/// A provider behind IIS/ARR advertises its registration endpoint on
/// another origin (`http://localhost:5000/...`): the initial access token
/// is not sent there, and the error names the tool's flag to set the real
/// endpoint, which then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_names_its_flag_for_an_endpoint_on_another_origin() {
    use aim_token::emulator::{Endpoint, Fault};
    let emu = AimEmulator::builder()
        .initial_access_token("cli-iat")
        .start()
        .await
        .unwrap();
    let authority = emu.authority();
    let discovery = format!(
        r#"{{"issuer":"{authority}","token_endpoint":"{authority}/connect/token","registration_endpoint":"http://localhost:5000/identitymanager/connect/register"}}"#
    );
    let env = [
        ("AIM_AUTHORITY", authority.as_str()),
        ("AIM_INITIAL_ACCESS_TOKEN", "cli-iat"),
    ];
    emu.inject(
        Endpoint::Discovery,
        Fault::Status {
            status: 200,
            retry_after: None,
            body: Some(discovery),
        },
    );
    let out = aim_token(&["register", "--id", "svc"], &env).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("--registration-endpoint"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("ClientRegistration::"),
        "{}",
        out.stderr
    );
    assert_eq!(emu.counters().register, 0);

    let endpoint = format!("{authority}/connect/register");
    let out = aim_token(
        &[
            "register",
            "--id",
            "svc",
            "--registration-endpoint",
            &endpoint,
        ],
        &env,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.counters().register, 1);
}

/// A malformed --authority / AIM_AUTHORITY: the error names the flag and
/// the variable (not only "the authority"), and no library method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_authority_is_named_by_flag_and_variable() {
    for authority in [
        "ftp://sms01",
        "https://admin:hunter2@sms01",
        "sms01/identitymanager?x=1",
        "\"sms01.plant.local",
        "sms01:99999",
    ] {
        for command in [&["token", "--no-cache"][..], &["check"]] {
            let out = aim_token(
                command,
                &[
                    ("AIM_AUTHORITY", authority),
                    ("AIM_CLIENT_ID", "x"),
                    ("AIM_CLIENT_SECRET", "y"),
                ],
            )
            .await;
            assert_eq!(out.code, 2, "{authority} {command:?}: {}", out.stderr);
            let said = format!("{}{}", out.stdout, out.stderr);
            assert!(
                said.contains("--authority / AIM_AUTHORITY"),
                "{authority} {command:?}: {said}"
            );
            assert!(!said.contains(".client_id("), "{said}");
            assert!(!said.contains("hunter2"), "{said}");
        }
    }
}

/// `register` without an ID names its own flag, --id, first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_without_an_id_names_its_flag() {
    let out = aim_token(
        &["register", "--powershell"],
        &[("AIM_AUTHORITY", "sms01.plant.local")],
    )
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--id ID"), "{}", out.stderr);
}
