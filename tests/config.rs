//! Configuration through the public API: the builder's checks, and
//! `AimClient::from_env()` run in child processes (so no test mutates this
//! process's environment while others read it).

use std::process::Command;

use aim_token::{AimClient, ErrorKind};

const SECRET: &str = "P@ss w0rd&+=%:/?#";

fn client(authority: &str) -> Result<AimClient, aim_token::Error> {
    AimClient::builder()
        .authority(authority)
        .client_id("mes:client one")
        .client_secret(SECRET)
        .build()
}

#[test]
fn authority_spellings() {
    for (input, base) in [
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
            "sms01.plant.local:8443",
            "https://sms01.plant.local:8443/identitymanager",
        ),
        ("[fd00::5]:8443", "https://[fd00::5]:8443/identitymanager"),
        (
            "http://127.0.0.1:3000/identitymanager",
            "http://127.0.0.1:3000/identitymanager",
        ),
        ("http://localhost", "http://localhost/identitymanager"),
    ] {
        assert_eq!(client(input).unwrap().authority(), base, "{input}");
    }
}

#[test]
fn bad_configuration_is_a_config_error_saying_what_to_fix() {
    for (input, words) in [
        ("", "empty"),
        ("ftp://sms01", "https://"),
        ("http://sms01.plant.local", "allow_insecure_http"),
        ("sms 01", "space"),
        ("https://user:pw@sms01", "user info"),
        ("https://sms01/identitymanager?a=b", "query"),
    ] {
        let err = client(input).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{input}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains(words), "{input}: {err}");
        assert!(!err.to_string().contains(SECRET));
    }
    let plain = AimClient::builder()
        .authority("http://sms01.plant.local")
        .allow_insecure_http(true)
        .client_id("x")
        .client_secret("y")
        .build()
        .unwrap();
    assert_eq!(
        plain.authority(),
        "http://sms01.plant.local/identitymanager"
    );
}

#[test]
fn build_does_no_network_io() {
    // An address that would hang or fail if contacted: build() is instant and fine.
    let started = std::time::Instant::now();
    client("https://10.255.255.1/identitymanager").unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn debug_output_is_redacted() {
    let builder = AimClient::builder()
        .authority("sms01")
        .client_id("id")
        .client_secret(SECRET);
    assert!(!format!("{builder:?}").contains("w0rd"));
    let aim = builder.build().unwrap();
    assert!(!format!("{aim:?}").contains("w0rd"));
}

// ---------------------------------------------------------------------------
// from_env, in a child process per case.

const CHILD: &str = "AIM_TOKEN_TEST_ENV_CHILD";

/// Runs [`from_env_child`] in a child process with exactly `vars` as AIM_*
/// variables; returns its one-line report.
fn from_env_with(vars: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "from_env_child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD, "1");
    for (name, _) in std::env::vars() {
        if name.starts_with("AIM_") && name != CHILD {
            cmd.env_remove(name);
        }
    }
    for (name, value) in vars {
        cmd.env(name, value);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    stdout
        .lines()
        .find_map(|l| l.find("REPORT ").map(|i| &l[i + "REPORT ".len()..]))
        .unwrap_or_else(|| panic!("no report from the child: {stdout}"))
        .to_owned()
}

/// The child's side: report what `from_env` made of the environment. In an
/// ordinary run (no marker variable) it is the harness's entry point only
/// and does nothing.
#[test]
fn from_env_child() {
    match std::env::var(CHILD).as_deref() {
        Ok("no-trust-store") => return no_trust_store_child(),
        Ok(_) => {}
        Err(_) => return,
    }
    match AimClient::from_env() {
        Ok(aim) => println!("REPORT ok {} {}", aim.authority(), aim.client_id()),
        Err(err) => println!("REPORT err {:?} {}", err.kind(), err),
    }
}

const BASE_VARS: [(&str, &str); 3] = [
    ("AIM_AUTHORITY", "SMS01.plant.local"),
    ("AIM_CLIENT_ID", "mes-reporting"),
    ("AIM_CLIENT_SECRET", SECRET),
];

#[test]
fn from_env_reads_the_variables() {
    let mut vars = BASE_VARS.to_vec();
    vars.push(("AIM_SCOPE", "mes.api,openid"));
    assert_eq!(
        from_env_with(&vars),
        "ok https://sms01.plant.local/identitymanager mes-reporting"
    );
}

#[test]
fn from_env_names_missing_variables() {
    for missing in ["AIM_AUTHORITY", "AIM_CLIENT_ID", "AIM_CLIENT_SECRET"] {
        let vars: Vec<_> = BASE_VARS
            .into_iter()
            .filter(|(n, _)| *n != missing)
            .collect();
        let report = from_env_with(&vars);
        assert!(report.starts_with("err Config"), "{report}");
        assert!(report.contains(missing), "{report}");
    }
    let report = from_env_with(&[]);
    assert!(report.contains("AIM_AUTHORITY"), "{report}");
}

#[test]
fn from_env_reads_the_ca_certificate() {
    let dir = std::env::temp_dir().join(format!("aim-token-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["sms01".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let good = dir.join("pcs-root-ca.pem");
    std::fs::write(&good, cert.pem()).unwrap();
    let bad = dir.join("not-pem.txt");
    std::fs::write(&bad, "this is not a certificate").unwrap();
    let missing = dir.join("missing.pem");

    let mut vars = BASE_VARS.to_vec();
    let good_s = good.to_string_lossy().into_owned();
    vars.push(("AIM_CA_CERT", &good_s));
    assert!(from_env_with(&vars).starts_with("ok "));

    let missing_s = missing.to_string_lossy().into_owned();
    let mut vars = BASE_VARS.to_vec();
    vars.push(("AIM_CA_CERT", &missing_s));
    let report = from_env_with(&vars);
    assert!(report.starts_with("err Config"), "{report}");
    assert!(
        report.contains(&missing_s) && report.contains("AIM_CA_CERT"),
        "{report}"
    );

    let bad_s = bad.to_string_lossy().into_owned();
    let mut vars = BASE_VARS.to_vec();
    vars.push(("AIM_CA_CERT", &bad_s));
    let report = from_env_with(&vars);
    assert!(report.starts_with("err Config"), "{report}");
    assert!(report.contains("PEM"), "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With an empty OS trust store (a bare container), clients still build:
/// loopback http works, https works with the CA given, and without it the
/// error is Tls and names the fix.
#[test]
fn without_an_os_trust_store() {
    let dir = std::env::temp_dir().join(format!("aim-token-nostore-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let empty_s = empty.to_string_lossy().into_owned();
    let dir_s = dir.to_string_lossy().into_owned();
    let report = from_env_with(&[
        (CHILD, "no-trust-store"),
        ("SSL_CERT_FILE", &empty_s),
        ("SSL_CERT_DIR", &dir_s),
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        report,
        "http ok, https with CA ok, https without CA Tls (names the fix: true)"
    );
}

fn no_trust_store_child() {
    use aim_token::emulator::AimEmulator;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = AimEmulator::start().await.unwrap();
        http.client_builder()
            .build()
            .unwrap()
            .token()
            .await
            .unwrap();
        let https = AimEmulator::builder().https(true).start().await.unwrap();
        https
            .client_builder()
            .build()
            .unwrap()
            .token()
            .await
            .unwrap();
        let err = AimClient::builder()
            .authority(https.authority())
            .client_id(AimEmulator::CLIENT_ID)
            .client_secret(AimEmulator::CLIENT_SECRET)
            .retry_deadline(std::time::Duration::ZERO)
            .build()
            .unwrap()
            .token()
            .await
            .unwrap_err();
        println!(
            "REPORT http ok, https with CA ok, https without CA {:?} (names the fix: {})",
            err.kind(),
            err.to_string().contains("AIM_CA_CERT")
        );
    });
}

/// A self-signed CA certificate: (PEM, DER).
fn ca_certificate() -> (String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["sms01".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), cert.der().to_vec())
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("aim-token-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn with_ca_cert(path: &str) -> String {
    let mut vars = BASE_VARS.to_vec();
    vars.push(("AIM_CA_CERT", path));
    from_env_with(&vars)
}

/// AIM_CA_CERT as Windows machines hold it: the certificate export wizard
/// writes DER (`.cer`) by default, Windows PowerShell's `>` writes UTF-16LE
/// with a byte order mark, Notepad writes CRLF and a UTF-8 BOM, and cmd.exe's
/// `set AIM_CA_CERT="C:\certs\pcs root.cer"` keeps the quotes.
#[test]
fn from_env_reads_ca_files_as_windows_writes_them() {
    let dir = temp_dir("ca-windows");
    let (pem, der) = ca_certificate();
    let (other_pem, _) = ca_certificate();
    let crlf = pem.replace('\n', "\r\n");
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(crlf.encode_utf16().flat_map(u16::to_le_bytes));
    let mut utf16be = vec![0xFE, 0xFF];
    utf16be.extend(pem.encode_utf16().flat_map(u16::to_be_bytes));
    let files: [(&str, Vec<u8>); 5] = [
        ("pcs-root.cer", der),
        ("utf16.pem", utf16),
        ("utf16be.pem", utf16be),
        (
            "crlf-bom.pem",
            [&b"\xEF\xBB\xBF"[..], crlf.as_bytes()].concat(),
        ),
        ("bundle.pem", format!("{pem}{other_pem}").into_bytes()),
    ];
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let report = with_ca_cert(&path.to_string_lossy());
        assert!(report.starts_with("ok "), "{name}: {report}");
    }
    let quoted = format!("\"{}\"", dir.join("pcs-root.cer").to_string_lossy());
    let report = with_ca_cert(&quoted);
    assert!(report.starts_with("ok "), "quoted path: {report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A CA file that holds no certificate fails at `from_env`, naming
/// AIM_CA_CERT and the file, and saying what to put there.
#[test]
fn from_env_names_ca_cert_for_files_without_a_certificate() {
    let dir = temp_dir("ca-bad");
    let key_pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    // A PFX export turned into PEM (`openssl pkcs12 -nodes`) carries the
    // server's private key: a file that every client machine would then
    // hold. Refused, as the .pfx itself is, not used without a word.
    let (pem, _) = ca_certificate();
    let with_key = format!("{key_pem}{pem}");
    let encrypted_key = format!(
        "{pem}-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQww\n-----END ENCRYPTED PRIVATE KEY-----\n"
    );
    let cases: [(&str, &[u8], &str); 7] = [
        ("with-key.pem", with_key.as_bytes(), "private key"),
        (
            "with-encrypted-key.pem",
            encrypted_key.as_bytes(),
            "private key",
        ),
        ("empty.pem", b"", "empty"),
        ("blank.pem", b" \r\n\r\n", "empty"),
        ("text.txt", b"this is not a certificate", "PEM"),
        ("key-only.pem", key_pem.as_bytes(), "private key"),
        ("garbage.cer", b"\x30\x82\x01\x00garbage", "X.509"),
    ];
    for (name, bytes, words) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let path_s = path.to_string_lossy().into_owned();
        let report = with_ca_cert(&path_s);
        assert!(report.starts_with("err Config"), "{name}: {report}");
        assert!(
            report.contains("AIM_CA_CERT") && report.contains(&path_s),
            "{name}: {report}"
        );
        assert!(report.contains(words), "{name}: {report}");
    }
    let dir_s = dir.to_string_lossy().into_owned();
    let report = with_ca_cert(&dir_s);
    assert!(
        report.starts_with("err Config") && report.contains("AIM_CA_CERT"),
        "{report}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// AIM_AUTHORITY as admins write it: with the quotes cmd.exe keeps, or a
/// trailing slash, works; a wrong one fails naming the variable.
#[test]
fn from_env_authority_as_admins_write_it() {
    let with_authority = |value: &str| {
        let mut vars: Vec<_> = BASE_VARS
            .into_iter()
            .filter(|(n, _)| *n != "AIM_AUTHORITY")
            .collect();
        vars.push(("AIM_AUTHORITY", value));
        from_env_with(&vars)
    };
    for value in [
        "\"sms01.plant.local\"",
        "'https://sms01.plant.local/identitymanager/'",
        " \"SMS01.plant.local\" ",
        "https://sms01.plant.local/",
    ] {
        assert_eq!(
            with_authority(value),
            "ok https://sms01.plant.local/identitymanager mes-reporting",
            "{value}"
        );
    }
    for (value, words) in [
        ("ftp://sms01", "https://"),
        ("http://sms01.plant.local", "clear text"),
        ("sms 01", "space"),
        ("https://sms01/identitymanager?x=1", "query"),
        ("\"sms01.plant.local", "quote"),
    ] {
        let report = with_authority(value);
        assert!(report.starts_with("err Config"), "{value}: {report}");
        assert!(
            report.contains("AIM_AUTHORITY") && report.contains(words),
            "{value}: {report}"
        );
    }
}

/// Every duration knob at `Duration::MAX` (a caller's "never"): the client
/// builds, fetches, refreshes and renews without a panic or an overflow.
#[tokio::test]
async fn durations_at_their_maximum_do_not_panic() {
    use std::time::Duration;
    let emulator = aim_token::emulator::AimEmulator::start().await.unwrap();
    let max = Duration::MAX;
    let aim = emulator
        .client_builder()
        .connect_timeout(max)
        .request_timeout(max)
        .retry_deadline(max)
        .backoff(max, max)
        .expiry_margin(max)
        .min_refresh_interval(max)
        .error_cooldown(max)
        .unauthorized_cooldown(max)
        .default_lifetime(max)
        .token_store_timeout(max)
        .build()
        .unwrap();
    let token = aim.token().await.unwrap();
    aim.invalidate(&token);
    aim.refresh().await.unwrap();
    aim.token().await.unwrap();
}
