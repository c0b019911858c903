//! `aim-token check` (and `token`) against the misconfigurations plant
//! engineers meet, one test per row of [`ROWS`]: the exit code, the step
//! that fails, the reason and the fix, in the tool's terms (flags and
//! variables, never library method names).
//!
//! README.md's table "symptom → what `check` says → what to do" is rendered
//! from [`ROWS`] and checked by `readme_table_matches_the_verdicts`
//! (`AIM_TOKEN_BLESS=1` rewrites it).

#[path = "attach_support/mod.rs"]
mod attach_support;
#[path = "support/cli.rs"]
mod cli;
#[path = "support/connect_proxy.rs"]
mod connect_proxy;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aim_token::emulator::{AimEmulator, Endpoint, Fault};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cli::{aim_token, emulator_env, step, temp_file, trusting_env, Output, NO_ENV};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// One misconfiguration and the verdict it must get.
struct Row {
    symptom: &'static str,
    /// `check`, or `token` where the row is about that command.
    command: &'static str,
    /// The failing step of `check`.
    step: &'static str,
    code: i32,
    /// A part of the reason (the rest names hosts, ports, times).
    says: &'static str,
    /// The fix line, whole.
    fix: &'static str,
}

const CLOCK_FIX: &str = "synchronize this machine's clock with the SMS node's (w32tm /resync on Windows, chrony or systemd-timesyncd elsewhere); a wrong time zone setting shifts it by whole hours";

const PROXY_FIX: &str = "check the proxy (--proxy, or HTTPS_PROXY / HTTP_PROXY): that it runs, that it lets this machine CONNECT to AIM's host and port, and the user and password it asks for (--proxy http://USER:PASSWORD@HOST:PORT); or exempt AIM from it with NO_PROXY=HOST";

const NOT_AIM_FIX: &str = "check --authority / AIM_AUTHORITY: it must name the AIM server (https://HOST/identitymanager), not another web site on the same host";

const HTTPS_PROXY_TRUST_FIX: &str = "trust the CA of AIM's certificate and that of the https proxy's: put both in the --ca-cert / AIM_CA_CERT file (concatenated PEM), or speak to the proxy over plain http (--proxy http://HOST:PORT)";

const ROWS: &[Row] = &[
    Row {
        symptom: "AIM accepts the connection and never answers (https)",
        command: "check",
        step: "tls",
        code: 3,
        says: "accepted the connection but sent no TLS answer",
        fix: "the server on that port is hung or something in between (a proxy, a firewall) holds the connection: check AIM (IIS) on the SMS node, or allow more time with --timeout SECONDS",
    },
    Row {
        symptom: "discovery works, then the token endpoint hangs",
        command: "check",
        step: "token",
        code: 3,
        says: "AIM answered the discovery request, but the token request got no answer",
        fix: "AIM is reachable but its token endpoint hangs: check the AIM service and its IIS application pool on the SMS node, or allow more time with --timeout SECONDS",
    },
    Row {
        symptom: "a self-signed CA certificate (CA:TRUE) is AIM's server certificate",
        command: "check",
        step: "tls",
        code: 4,
        says: "the server's certificate is a CA certificate (basic constraints CA:TRUE)",
        fix: "re-issue AIM's certificate as an end-entity one (CA:FALSE, the SMS node's FQDN as subject alternative name), signed by the PCS root CA; trusting this certificate does not help",
    },
    Row {
        symptom: "AIM's certificate is self-signed and not trusted",
        command: "check",
        step: "tls",
        code: 4,
        says: "not trusted: issued by a CA that is not in the trust store",
        fix: "AIM's certificate is self-signed: trust it (or better, re-issue it from the PCS root CA; on the AIM node, Get-RootCertificate shows the certificate AIM uses) with --ca-cert FILE or AIM_CA_CERT=FILE",
    },
    Row {
        symptom: "AIM's certificate is not for TLS servers (its extended key usage lacks serverAuth)",
        command: "check",
        step: "tls",
        code: 4,
        says: "the certificate is not for TLS servers",
        fix: "re-issue AIM's certificate with the Server Authentication purpose (extended key usage serverAuth, 1.3.6.1.5.5.7.3.1), signed by the PCS root CA; trusting it does not help",
    },
    Row {
        symptom: "AIM's certificate is valid for other names",
        command: "check",
        step: "tls",
        code: 4,
        says: "(it is valid for aim.plant.test, 10.0.4.17)",
        fix: "use a name the certificate is valid for (often the SMS node's FQDN) in --authority / AIM_AUTHORITY",
    },
    Row {
        symptom: "AIM's certificate is issued by a CA this machine does not trust",
        command: "check",
        step: "tls",
        code: 4,
        says: "not trusted: issued by a CA that is not in the trust store",
        fix: "trust the CA that issued AIM's certificate (usually the PCS root CA; on the AIM node, Get-RootCertificate shows the certificate AIM uses; export it as Base-64 X.509): --ca-cert FILE or AIM_CA_CERT=FILE",
    },
    Row {
        symptom: "plain http to a host that is not loopback",
        command: "check",
        step: "config",
        code: 2,
        says: "uses plain http: the client secret would cross the network in clear text",
        fix: "give AIM's https address in --authority / AIM_AUTHORITY (just the host name means https://HOST/identitymanager)",
    },
    Row {
        symptom: "the CA file cannot be read",
        command: "check",
        step: "config",
        code: 2,
        says: "cannot read the CA certificate",
        fix: "check the path given with --ca-cert / AIM_CA_CERT and that this user may read the file",
    },
    Row {
        symptom: "the CA file looks like PEM but holds no certificate",
        command: "check",
        step: "config",
        code: 2,
        says: "holds no usable certificate",
        fix: "export the PCS root CA as Base-64 encoded X.509 (certutil -encode ca.cer ca.pem) and give that file with --ca-cert / AIM_CA_CERT",
    },
    Row {
        symptom: "the client secret is only whitespace",
        command: "check",
        step: "config",
        code: 2,
        says: "no client secret",
        fix: "set AIM_CLIENT_SECRET to the secret registered with AIM, or AIM_CLIENT_SECRET_FILE to a readable file holding it (not both)",
    },
    Row {
        symptom: "AIM silently drops a requested scope",
        command: "check",
        step: "token",
        code: 5,
        says: "AIM did not grant the requested scope site.api",
        fix: "allow the scope for this client in AIM (its ScopeRestrictions, Update-IdentityManagerClient on the SMS node), or stop requesting it (--scope / AIM_SCOPE)",
    },
    Row {
        symptom: "MES answers 401 and says why in `WWW-Authenticate`",
        command: "check",
        step: "mes",
        code: 5,
        says: "HTTP 401, MES rejected the token: invalid_token (",
        fix: "MES must trust this AIM: check that MES is configured with the same AIM server (authority) that issued the token",
    },
    Row {
        symptom: "MES's certificate is from another CA than AIM's",
        command: "check",
        step: "mes",
        code: 4,
        says: "TLS with MES: not trusted",
        fix: "MES's certificate is not issued by a CA this machine trusts (it may be another CA than AIM's): add that CA to the --ca-cert / AIM_CA_CERT file, which may hold several CA certificates (concatenate the PEM files, e.g. the PCS root CA and MES's CA)",
    },
    Row {
        symptom: "the host name does not resolve",
        command: "token",
        step: "dns",
        code: 3,
        says: "cannot resolve no-such-host.invalid",
        fix: "check the host name in --authority / AIM_AUTHORITY (the SMS node's FQDN) and this machine's DNS",
    },
    Row {
        symptom: "a plain web server at the authority (HTML 501)",
        command: "token",
        step: "token",
        code: 6,
        says: "answered the token request with HTTP 501: it is not AIM's token endpoint",
        fix: NOT_AIM_FIX,
    },
    Row {
        symptom: "AIM's clock is hours behind: tokens arrive expired",
        command: "token",
        step: "claims",
        code: 7,
        says: "the token is already expired by this machine's clock",
        fix: CLOCK_FIX,
    },
    Row {
        symptom: "AIM's clock is hours ahead: tokens are not valid yet",
        command: "token",
        step: "claims",
        code: 7,
        says: "the token is not valid for another",
        fix: CLOCK_FIX,
    },
    Row {
        symptom: "a plain web server at the authority (no discovery document, HTML 404)",
        command: "check",
        step: "discovery",
        code: 6,
        says: "HTTP 404",
        fix: NOT_AIM_FIX,
    },
    Row {
        symptom: "AIM reports another issuer than the configured authority",
        command: "check",
        step: "discovery",
        code: 6,
        says: "the issuer is http://sms01.plant.local/identitymanager, but the authority is",
        fix: "set --authority / AIM_AUTHORITY to the issuer AIM reports (often the FQDN AIM was installed with)",
    },
    Row {
        symptom: "the --mes URL is not a MES Web API route (HTTP 404)",
        command: "check",
        step: "mes",
        code: 6,
        says: "HTTP 404",
        fix: "check the URL given with --mes (https://HOST/mesmw/api/v3/...); MES also answers 404 when its Default Background User (system attribute 199) lacks the privilege for the entity",
    },
    Row {
        symptom: "an https:// proxy whose certificate this machine does not trust",
        command: "check",
        step: "discovery",
        code: 4,
        says: "through the https proxy https://127.0.0.1:",
        fix: HTTPS_PROXY_TRUST_FIX,
    },
    Row {
        symptom: "an https:// proxy whose certificate this machine does not trust (`aim-token token`)",
        command: "token",
        step: "token",
        code: 4,
        says: "or with the https proxy https://127.0.0.1:",
        fix: HTTPS_PROXY_TRUST_FIX,
    },
    Row {
        symptom: "--proxy is not a proxy URL",
        command: "check",
        step: "config",
        code: 2,
        says: "the proxy `[redacted]@proxy.plant.local:3128` is not a proxy URL",
        fix: "give the proxy as --proxy http://HOST:PORT (or https://HOST:PORT), with USER:PASSWORD@ before the host if it asks for them",
    },
    Row {
        symptom: "the proxy asks for credentials (HTTP 407)",
        command: "check",
        step: "discovery",
        code: 3,
        says: "through the proxy http://[redacted]@127.0.0.1:",
        fix: PROXY_FIX,
    },
    Row {
        symptom: "the proxy closes the connection instead of tunnelling to AIM",
        command: "check",
        step: "discovery",
        code: 3,
        says: "through the proxy http://127.0.0.1:",
        fix: PROXY_FIX,
    },
    Row {
        symptom: "the proxy asks for credentials (HTTP 407) (`aim-token token`)",
        command: "token",
        step: "token",
        code: 3,
        says: "through the proxy http://127.0.0.1:",
        fix: PROXY_FIX,
    },
];

fn row(symptom: &str) -> &'static Row {
    ROWS.iter()
        .find(|r| r.symptom == symptom)
        .unwrap_or_else(|| panic!("no row {symptom:?}"))
}

/// Asserts the row's verdict: exit code, the failing step (or `token`'s
/// stderr), the reason and the fix line; no library names anywhere.
fn assert_verdict(row: &Row, out: &Output) {
    assert_eq!(out.code, row.code, "{}: exit code", row.symptom);
    let (reason, fix) = if row.command == "check" {
        let lines: Vec<&str> = out.stdout.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("FAIL  {:<10} ", row.step)))
            .unwrap_or_else(|| panic!("{}: no FAIL {} in\n{}", row.symptom, row.step, out.stdout));
        let fix = lines
            .get(at + 1)
            .and_then(|l| l.trim().strip_prefix("fix: "));
        (
            lines[at],
            fix.unwrap_or_else(|| panic!("no fix line:\n{}", out.stdout)),
        )
        // The first failure is this one.
    } else {
        assert!(out.stdout.is_empty(), "{}: no token on stdout", row.symptom);
        let reason = out
            .stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or("");
        let fix = out
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("fix: "))
            .unwrap_or("");
        (reason, fix)
    };
    assert!(
        reason.contains(row.says),
        "{}: reason {reason:?}",
        row.symptom
    );
    assert_eq!(fix, row.fix, "{}: fix", row.symptom);
    if row.command == "check" {
        assert!(
            out.stdout.contains(&format!(
                "check failed at step {} (exit code {})",
                row.step, row.code
            )),
            "{}: not the first failure:\n{}",
            row.symptom,
            out.stdout
        );
    }
    for library_word in [
        ".allow_insecure_http",
        "connect_timeout",
        "request_timeout",
        "root_certificate_pem",
        ".client_secret(",
    ] {
        assert!(
            !out.stdout.contains(library_word) && !out.stderr.contains(library_word),
            "{}: names {library_word}",
            row.symptom
        );
    }
}

/// A TLS server on 127.0.0.1 presenting `cert_pem` that completes
/// handshakes and then closes; the port.
async fn tls_server(cert_pem: &str, key: &KeyPair) -> u16 {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    port
}

/// A plain HTTP/1.1 server on 127.0.0.1 answering every request with
/// `answer(method, path)` = (status, content type, body); counts POSTs.
async fn http_server(
    answer: fn(&str, &str, u16) -> (u16, &'static str, String),
) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let posts = Arc::new(AtomicU64::new(0));
    let counter = posts.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let Ok(n) = tcp.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let mut words = head.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    let Ok(n) = tcp.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                if method == "POST" {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                let (status, content_type, body) = answer(method, path, port);
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(response.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    (port, posts)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_and_never_answers_tls_is_a_network_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds every connection, answering nothing.
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let authority = format!("https://127.0.0.1:{port}/identitymanager");
    let out = aim_token(&["--timeout", "2", "check"], &emulator_env(&authority)).await;
    assert_verdict(
        row("AIM accepts the connection and never answers (https)"),
        &out,
    );
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_hangs_after_discovery_is_not_unreachable() {
    let emu = AimEmulator::start().await.unwrap();
    emu.set_outage(Endpoint::Token, Some(Fault::Delay(Duration::from_secs(30))));
    let out = aim_token(
        &["--timeout", "2", "check"],
        &emulator_env(&emu.authority()),
    )
    .await;
    assert_verdict(row("discovery works, then the token endpoint hangs"), &out);
    assert!(
        step(&out.stdout, "discovery").starts_with("PASS"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_certificate_as_server_certificate_must_be_reissued_not_trusted() {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "sms01.plant.local");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let port = tls_server(&cert.pem(), &key).await;
    // Even trusted explicitly, it cannot work: the fix is not "trust it".
    let ca = temp_file("ca-as-leaf", &cert.pem());
    let authority = format!("https://127.0.0.1:{port}");
    let env = emulator_env(&authority);
    let out = aim_token(
        &["--timeout", "5", "check", "--ca-cert", ca.to_str().unwrap()],
        &env,
    )
    .await;
    assert_verdict(
        row("a self-signed CA certificate (CA:TRUE) is AIM's server certificate"),
        &out,
    );
    assert!(!out.stdout.contains("OtherError"), "{}", out.stdout);
}

/// A CA and a server certificate it issued for `names`: (CA PEM, cert PEM, key).
fn ca_and_server_cert(names: &[&str]) -> (String, String, KeyPair) {
    ca_and_cert(names, |_| {})
}

/// A CA and a certificate it issued for `names`, made by `params`.
fn ca_and_cert(
    names: &[&str],
    params: impl FnOnce(&mut CertificateParams),
) -> (String, String, KeyPair) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "check-verdicts test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut cert = CertificateParams::new(names).unwrap();
    params(&mut cert);
    let cert = cert.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_says_trust_it_or_reissue_it() {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let port = tls_server(&cert.pem(), &key).await;
    let authority = format!("https://127.0.0.1:{port}");
    let out = aim_token(&["--timeout", "5", "check"], &emulator_env(&authority)).await;
    assert_verdict(
        row("AIM's certificate is self-signed and not trusted"),
        &out,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_only_certificate_must_be_reissued_not_trusted() {
    // A certificate from the PCS CA's "client authentication" template.
    let (ca, cert, key) = ca_and_cert(&["127.0.0.1"], |params| {
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    });
    let port = tls_server(&cert, &key).await;
    let ca = temp_file("client-only", &ca);
    let authority = format!("https://127.0.0.1:{port}");
    let out = aim_token(
        &["--timeout", "5", "check", "--ca-cert", ca.to_str().unwrap()],
        &emulator_env(&authority),
    )
    .await;
    assert_verdict(
        row("AIM's certificate is not for TLS servers (its extended key usage lacks serverAuth)"),
        &out,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_other_names_lists_the_names() {
    let (ca, cert, key) = ca_and_server_cert(&["aim.plant.test", "10.0.4.17"]);
    let port = tls_server(&cert, &key).await;
    let ca = temp_file("other-names", &ca);
    let authority = format!("https://127.0.0.1:{port}");
    let env = emulator_env(&authority);
    let out = aim_token(
        &["--timeout", "5", "check", "--ca-cert", ca.to_str().unwrap()],
        &env,
    )
    .await;
    assert_verdict(row("AIM's certificate is valid for other names"), &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_ca_names_get_root_certificate() {
    let emu = AimEmulator::builder().https(true).start().await.unwrap();
    let out = aim_token(
        &["--timeout", "5", "check"],
        &emulator_env(&emu.authority()),
    )
    .await;
    assert_verdict(
        row("AIM's certificate is issued by a CA this machine does not trust"),
        &out,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_remote_host_says_use_https() {
    let env = emulator_env("http://sms01.plant.invalid/identitymanager");
    let out = aim_token(&["check"], &env).await;
    assert_verdict(row("plain http to a host that is not loopback"), &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_ca_file_says_check_the_path() {
    let env = emulator_env("sms01.plant.invalid");
    let out = aim_token(
        &["check", "--ca-cert", "/no/such/dir/pcs-root-ca.pem"],
        &env,
    )
    .await;
    assert_verdict(row("the CA file cannot be read"), &out);
    assert!(out.stdout.contains("/no/such/dir/pcs-root-ca.pem"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_without_a_usable_certificate_says_export_it_again() {
    let bad = temp_file(
        "bad-pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let env = emulator_env("sms01.plant.invalid");
    let out = aim_token(&["check", "--ca-cert", bad.to_str().unwrap()], &env).await;
    assert_verdict(
        row("the CA file looks like PEM but holds no certificate"),
        &out,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whitespace_secret_is_no_secret_and_never_sent() {
    let emu = AimEmulator::start().await.unwrap();
    let mut env = emulator_env(&emu.authority());
    env[2].1 = " \t \n".to_owned();
    let out = aim_token(&["check"], &env).await;
    assert_verdict(row("the client secret is only whitespace"), &out);
    let out = aim_token(&["token"], &env).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(emu.counters().token, 0, "a blank secret went to AIM");
}

/// A provider that grants `openid` whatever was asked, and says so.
fn scope_dropping_provider(method: &str, path: &str, port: u16) -> (u16, &'static str, String) {
    let json = "application/json";
    match (method, path) {
        ("GET", "/identitymanager/.well-known/openid-configuration") => {
            let base = format!("http://127.0.0.1:{port}/identitymanager");
            (200, json, serde_json::json!({"issuer": base, "token_endpoint": format!("{base}/connect/token"), "jwks_uri": format!("{base}/jwks")}).to_string())
        }
        ("POST", "/identitymanager/connect/token") => {
            let now = unix_now();
            let claims = serde_json::json!({"iss": "x", "client_id": AimEmulator::CLIENT_ID, "scope": ["openid"], "iat": now, "nbf": now, "exp": now + 3600});
            let jwt = format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"at+jwt"}"#),
                URL_SAFE_NO_PAD.encode(claims.to_string()),
                URL_SAFE_NO_PAD.encode(b"sig")
            );
            (200, json, serde_json::json!({"access_token": jwt, "expires_in": 3600, "token_type": "Bearer", "scope": "openid"}).to_string())
        }
        _ => (404, "text/html", "<html>Not Found</html>".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dropped_scope_fails_the_token_step() {
    let (port, _) = http_server(scope_dropping_provider).await;
    let authority = format!("http://127.0.0.1:{port}/identitymanager");
    let env = emulator_env(&authority);
    let out = aim_token(&["check", "--scope", "site.api"], &env).await;
    assert_verdict(row("AIM silently drops a requested scope"), &out);
    // Asking for nothing, or for what is granted, passes.
    let out = aim_token(&["check", "--scope", "openid"], &env).await;
    assert!(
        step(&out.stdout, "token").starts_with("PASS"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mes_401_shows_what_mes_said() {
    let emu = AimEmulator::builder().https(true).start().await.unwrap();
    let ca = temp_file("mes-401", &emu.ca_pem().unwrap());
    emu.reject_next_mes_token();
    let mes = format!("{}api/v3/entity", emu.mes_base());
    let env = emulator_env(&emu.authority());
    let out = aim_token(
        &["check", "--ca-cert", ca.to_str().unwrap(), "--mes", &mes],
        &env,
    )
    .await;
    assert_verdict(
        row("MES answers 401 and says why in `WWW-Authenticate`"),
        &out,
    );
}

/// A MES whose 401 challenge quotes the token it refused: `check` shows
/// what MES said, without the token (its output goes into tickets and
/// chat), whole or cut at the length limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mes_401_quoting_the_token_shows_the_reason_without_it() {
    let emu = AimEmulator::start().await.unwrap();
    let mes = attach_support::Recorder::start(attach_support::Rule::RejectSayingWhy).await;
    let env = emulator_env(&emu.authority());
    let out = aim_token(&["check", "--mes", &mes.url("mesmw/api/v3/entity")], &env).await;
    let sent = mes.distinct_tokens();
    let token = sent[0].trim_start_matches("Bearer ");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("expired at"), "MES's reason is shown: {all}");
    let signature = token.rsplit('.').next().unwrap();
    for part in [&token[..24], &signature[..24]] {
        assert!(!all.contains(part), "the token is shown: {all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mes_from_another_ca_says_the_file_may_hold_both() {
    let aim = AimEmulator::builder().https(true).start().await.unwrap();
    let mes = AimEmulator::builder().https(true).start().await.unwrap();
    let ca = temp_file("aim-only", &aim.ca_pem().unwrap());
    let url = format!("{}api/v3/entity", mes.mes_base());
    let env = emulator_env(&aim.authority());
    let out = aim_token(
        &["check", "--ca-cert", ca.to_str().unwrap(), "--mes", &url],
        &env,
    )
    .await;
    assert_verdict(row("MES's certificate is from another CA than AIM's"), &out);
    // And it is true: with one file holding both CAs, TLS with MES passes
    // (that MES then refuses a token of another AIM is another matter).
    let both = temp_file(
        "both",
        &format!("{}{}", aim.ca_pem().unwrap(), mes.ca_pem().unwrap()),
    );
    let out = aim_token(
        &["check", "--ca-cert", both.to_str().unwrap(), "--mes", &url],
        &env,
    )
    .await;
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL  mes") || l.starts_with("PASS  mes"));
    assert!(
        line.is_some_and(|l| l.contains("HTTP 401")),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_fails_fast_when_the_host_name_does_not_resolve() {
    let env = emulator_env("https://no-such-host.invalid/identitymanager");
    let out = aim_token(&["--timeout", "30", "token"], &env).await;
    assert_verdict(row("the host name does not resolve"), &out);
    assert!(
        out.took < Duration::from_secs(10),
        "took {:?}: retried",
        out.took
    );
}

fn plain_web_server(method: &str, _path: &str, _port: u16) -> (u16, &'static str, String) {
    match method {
        "GET" => (404, "text/html", "<html><body><h1>404 Not Found</h1></body></html>".into()),
        _ => (501, "text/html", "<html><body><h1>Error response</h1><p>Error code: 501</p><p>Message: Unsupported method ('POST').</p></body></html>".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_a_plain_web_server_says_it_is_not_aim_without_retrying() {
    let (port, posts) = http_server(plain_web_server).await;
    let env = emulator_env(&format!("http://127.0.0.1:{port}"));
    let out = aim_token(&["token"], &env).await;
    assert_verdict(row("a plain web server at the authority (HTML 501)"), &out);
    assert_eq!(posts.load(Ordering::SeqCst), 1, "a 501 was retried");
}

#[derive(Debug)]
struct Skewed(i64);

impl aim_token::Clock for Skewed {
    fn now(&self) -> SystemTime {
        let offset = Duration::from_secs(self.0.unsigned_abs());
        if self.0 < 0 {
            SystemTime::now() - offset
        } else {
            SystemTime::now() + offset
        }
    }
}

async fn skewed_emulator(seconds: i64, lifetime: Duration) -> AimEmulator {
    AimEmulator::builder()
        .clock(Arc::new(Skewed(seconds)))
        .token_lifetime(lifetime)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refuses_tokens_that_this_clock_calls_expired_or_not_yet_valid() {
    let behind = row("AIM's clock is hours behind: tokens arrive expired");
    // 30 h behind, 24 h tokens; 2 h behind, 1 h tokens.
    for (skew, lifetime) in [(-30 * 3600, 86_400), (-2 * 3600, 3600)] {
        let emu = skewed_emulator(skew, Duration::from_secs(lifetime)).await;
        let out = aim_token(&["token"], &emulator_env(&emu.authority())).await;
        assert_verdict(behind, &out);
    }
    // 2 h ahead: the token starts in two hours here.
    let emu = skewed_emulator(2 * 3600, Duration::from_secs(86_400)).await;
    let out = aim_token(&["token"], &emulator_env(&emu.authority())).await;
    assert_verdict(
        row("AIM's clock is hours ahead: tokens are not valid yet"),
        &out,
    );
    // A clock within the tolerance still gets its token.
    let emu = skewed_emulator(60, Duration::from_secs(86_400)).await;
    let out = aim_token(&["token"], &emulator_env(&emu.authority())).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// `check` sees the same clock problems, in its claims and clock steps (the
/// emulator's `Date` follows its clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_server_clock_skew_from_the_date_header() {
    let emu = skewed_emulator(2 * 3600, Duration::from_secs(86_400)).await;
    let out = aim_token(&["check"], &emulator_env(&emu.authority())).await;
    assert_eq!(out.code, 7);
    let clock = out
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL  clock"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(clock.contains("ahead of this machine's"), "{clock}");
}

/// The README table, rendered from [`ROWS`].
fn render_table() -> String {
    let mut table =
        String::from("| symptom | what it says (exit code) | what to do |\n| --- | --- | --- |\n");
    for row in ROWS {
        let says = if row.command == "check" {
            format!("`FAIL {}` ({}): …{}…", row.step, row.code, row.says)
        } else {
            format!("`aim-token token` ({}): …{}…", row.code, row.says)
        };
        table.push_str(&format!(
            "| {} | {} | {} |\n",
            row.symptom,
            says.replace('|', "\\|"),
            row.fix.replace('|', "\\|")
        ));
    }
    table
}

#[test]
fn readme_table_matches_the_verdicts() {
    const START: &str = "<!-- check-verdicts: generated by tests/check_verdicts.rs -->\n";
    const END: &str = "<!-- /check-verdicts -->";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let start = readme
        .find(START)
        .expect("README has the check-verdicts table")
        + START.len();
    let end = start + readme[start..].find(END).expect("the table ends");
    let expected = render_table();
    if readme[start..end] != expected {
        if std::env::var_os("AIM_TOKEN_BLESS").is_some() {
            std::fs::write(
                path,
                format!("{}{expected}{}", &readme[..start], &readme[end..]),
            )
            .unwrap();
        } else {
            panic!("README's check table differs from the tests; AIM_TOKEN_BLESS=1 rewrites it:\n{expected}");
        }
    }
}

/// Secrets the way deployments provide them: a file (Docker, Kubernetes)
/// or systemd's credentials directory; both variables at once is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_reads_the_secret_from_a_file_or_systemd_credentials() {
    let emu = AimEmulator::start().await.unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("check-verdicts-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("aim_client_secret");
    std::fs::write(&file, format!("{}\n", AimEmulator::CLIENT_SECRET)).unwrap();
    let file = file.to_str().unwrap().to_owned();
    let base = || emulator_env(&emu.authority())[..2].to_vec();

    let mut env = base();
    env.push(("AIM_CLIENT_SECRET_FILE", file.clone()));
    let out = aim_token(&["token"], &env).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim_end().split('.').count(), 3);

    let mut env = base();
    env.push(("CREDENTIALS_DIRECTORY", dir.to_str().unwrap().to_owned()));
    let out = aim_token(&["token"], &env).await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    let mut env = emulator_env(&emu.authority());
    env.push(("AIM_CLIENT_SECRET_FILE", file.clone()));
    let out = aim_token(&["token"], &env).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("both AIM_CLIENT_SECRET and AIM_CLIENT_SECRET_FILE"),
        "{}",
        out.stderr
    );

    for (name, contents) in [("missing", None), ("empty", Some("\n"))] {
        let path = dir.join(name);
        if let Some(contents) = contents {
            std::fs::write(&path, contents).unwrap();
        }
        let mut env = base();
        env.push(("AIM_CLIENT_SECRET_FILE", path.to_str().unwrap().to_owned()));
        let out = aim_token(&["check"], &env).await;
        assert_eq!(out.code, 2, "{name}");
        let config = out.stdout.lines().next().unwrap_or_default();
        assert!(
            config.starts_with("FAIL  config") && config.contains("AIM_CLIENT_SECRET_FILE"),
            "{name}: {config}"
        );
    }
    let before = emu.counters().token;
    assert_eq!(before, 2, "only the two good secrets reached AIM");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--proxy` and the proxy variables, through a real CONNECT proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_check_go_through_the_proxy_they_are_given() {
    let emu = AimEmulator::builder().https(true).start().await.unwrap();
    let target = format!("127.0.0.1:{}", emu.port());
    let env = trusting_env(&emu, "proxy");

    let proxy = connect_proxy::ConnectProxy::start().await;
    let out = aim_token(&["token", "--proxy", &proxy.url], &env).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(proxy.targets().contains(&target), "{:?}", proxy.targets());

    let proxy = connect_proxy::ConnectProxy::start().await;
    let mut with_var = env.clone();
    with_var.push(("HTTPS_PROXY", proxy.url.clone()));
    let out = aim_token(&["token"], &with_var).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        proxy.targets().contains(&target),
        "HTTPS_PROXY: {:?}",
        proxy.targets()
    );

    // NO_PROXY exempts the host.
    let proxy = connect_proxy::ConnectProxy::start().await;
    let mut exempt = env.clone();
    exempt.push(("HTTPS_PROXY", proxy.url.clone()));
    exempt.push(("NO_PROXY", "127.0.0.1".to_owned()));
    let out = aim_token(&["token"], &exempt).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        proxy.targets().is_empty(),
        "NO_PROXY: {:?}",
        proxy.targets()
    );

    // check: the direct steps say why they are skipped, the rest pass
    // through the proxy; its credentials are never printed.
    let proxy = connect_proxy::ConnectProxy::start().await;
    let with_password = proxy.url.replace("http://", "http://user:hunter2@");
    let out = aim_token(&["check", "--proxy", &with_password], &env).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    let tcp = step(&out.stdout, "tcp");
    assert!(
        tcp.starts_with("SKIP") && tcp.contains("a proxy is configured"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"));
    assert!(proxy.targets().contains(&target), "{:?}", proxy.targets());
}

/// One wording for AIM_SCOPE everywhere in the help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_says_one_thing_about_aim_scope() {
    let out = aim_token(&["--help"], NO_ENV).await;
    assert_eq!(out.code, 0);
    let help = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(!help.contains("space-separated"), "{help}");
    assert!(
        help.contains("AIM_SCOPE (separated by spaces or commas)"),
        "{help}"
    );
    assert!(
        help.contains("AIM_SCOPE separates them with spaces or commas"),
        "{help}"
    );
    assert!(help.contains("AIM_CLIENT_SECRET_FILE"), "{help}");
}

/// `decode`'s labelled lines line up, and durations read like "1 d".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_lines_up_its_columns() {
    let now = unix_now();
    let claims = serde_json::json!({"iat": now, "nbf": now, "exp": now + 86_400});
    let jwt = format!(
        "{}.{}.sig",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let out = aim_token(&["decode", &jwt], NO_ENV).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let labelled: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| {
            [
                "Signature:",
                "Issued:",
                "Not before:",
                "Expires:",
                "Lifetime:",
                "Status:",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .collect();
    assert_eq!(labelled.len(), 6, "{}", out.stdout);
    for line in &labelled {
        assert!(
            line.len() > 12 && line.as_bytes()[11] == b' ' && line.as_bytes()[12] != b' ',
            "{line:?}"
        );
    }
    assert!(out.stdout.contains("Lifetime:   1 d\n"), "{}", out.stdout);
}

/// On a terminal, progress is one line rewritten in place and erased
/// before each result line (a pty from util-linux `script`, part of every
/// Debian system).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_overwritten_on_a_terminal() {
    let emu = AimEmulator::start().await.unwrap();
    let bin = cli::BIN;
    let command = format!(
        "AIM_TOKEN_STORE=none AIM_AUTHORITY='{}' AIM_CLIENT_ID='{}' AIM_CLIENT_SECRET='{}' '{bin}' check",
        emu.authority(),
        AimEmulator::CLIENT_ID,
        AimEmulator::CLIENT_SECRET
    );
    let out = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .output()
        .await
        .expect("util-linux `script` runs the tool on a pty");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    const ERASE: &str = "\r\x1b[2K";
    assert!(
        shown.contains(&format!("{ERASE}... resolving 127.0.0.1")),
        "{shown:?}"
    );
    // Every result line starts after an erased progress line or on a fresh
    // line: never glued to a progress message.
    for line in shown.split("\r\n") {
        let visible = line.rsplit(ERASE).next().unwrap_or(line);
        assert!(
            !visible.starts_with("..."),
            "a progress line was left: {line:?}"
        );
        if line.contains("... ") {
            assert!(line.contains(ERASE), "{line:?}");
        }
    }
    assert!(shown.contains("all checks passed"), "{shown}");
}

/// A proxy that refuses the tunnel is the proxy's problem, and the fix says
/// how to configure the proxy, not "check that AIM is running"; its
/// password is never printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_refuses_the_tunnel_names_the_proxy() {
    let emu = AimEmulator::builder().https(true).start().await.unwrap();
    let env = trusting_env(&emu, "proxy-refuses");

    let proxy = connect_proxy::ConnectProxy::asking_for_credentials().await;
    let out = aim_token(&["check", "--proxy", &proxy.url_with_password], &env).await;
    assert_verdict(row("the proxy asks for credentials (HTTP 407)"), &out);
    assert!(!out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"));
    assert!(!proxy.targets().is_empty(), "the proxy was asked");

    let proxy = connect_proxy::ConnectProxy::behaving(connect_proxy::Behaviour::Close).await;
    let mut via_variable = env.clone();
    via_variable.push(("HTTPS_PROXY", proxy.url.clone()));
    let out = aim_token(&["check"], &via_variable).await;
    assert_verdict(
        row("the proxy closes the connection instead of tunnelling to AIM"),
        &out,
    );

    // A 407 will be asked again: `token` gives up at once, not at the end
    // of its retry deadline (30 s by default).
    let proxy = connect_proxy::ConnectProxy::asking_for_credentials().await;
    let started = std::time::Instant::now();
    let out = aim_token(&["token", "--proxy", &proxy.url], &env).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_verdict(
        row("the proxy asks for credentials (HTTP 407) (`aim-token token`)"),
        &out,
    );
    assert_eq!(emu.counters().token, 0, "nothing reached AIM");
}

/// NO_PROXY exempting AIM means `check` connects directly, so the direct
/// steps run (not "a proxy is configured"); and a proxy variable written
/// without a scheme (reqwest reads it as http://) keeps its password out of
/// the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_follows_no_proxy_and_hides_a_schemeless_proxy_password() {
    let emu = AimEmulator::builder().https(true).start().await.unwrap();
    let env = trusting_env(&emu, "no-proxy");

    let proxy = connect_proxy::ConnectProxy::start().await;
    let mut exempt = env.clone();
    exempt.push(("HTTPS_PROXY", proxy.url.clone()));
    exempt.push(("NO_PROXY", "localhost,127.0.0.1".to_owned()));
    let out = aim_token(&["check"], &exempt).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    for name in ["dns", "tcp", "tls"] {
        assert!(
            step(&out.stdout, name).starts_with("PASS"),
            "{name} must run when NO_PROXY exempts AIM:\n{}",
            out.stdout
        );
    }
    assert!(proxy.targets().is_empty(), "{:?}", proxy.targets());

    let proxy = connect_proxy::ConnectProxy::start().await;
    let mut schemeless = env.clone();
    let url = proxy
        .url_with_password
        .trim_start_matches("http://")
        .to_owned();
    schemeless.push(("HTTPS_PROXY", url));
    let out = aim_token(&["check"], &schemeless).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("a proxy is configured"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"),
        "{}",
        out.stdout
    );
    assert!(!proxy.targets().is_empty(), "the proxy was used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_a_plain_web_server_names_the_authority_flag() {
    let (port, _) = http_server(plain_web_server).await;
    let env = emulator_env(&format!("http://127.0.0.1:{port}"));
    let out = aim_token(&["check"], &env).await;
    assert_verdict(
        row("a plain web server at the authority (no discovery document, HTML 404)"),
        &out,
    );
}

fn other_issuer_provider(method: &str, path: &str, _port: u16) -> (u16, &'static str, String) {
    match (method, path) {
        ("GET", "/identitymanager/.well-known/openid-configuration") => {
            let base = "http://sms01.plant.local/identitymanager";
            let doc = serde_json::json!({"issuer": base, "token_endpoint": format!("{base}/connect/token")});
            (200, "application/json", doc.to_string())
        }
        _ => (404, "text/html", "<html>Not Found</html>".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_issuer_says_which_flag_to_set() {
    let (port, posts) = http_server(other_issuer_provider).await;
    let env = emulator_env(&format!("http://127.0.0.1:{port}/identitymanager"));
    let out = aim_token(&["check"], &env).await;
    assert_verdict(
        row("AIM reports another issuer than the configured authority"),
        &out,
    );
    assert_eq!(posts.load(Ordering::SeqCst), 0, "no secret sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mes_404_names_the_mes_flag_and_the_privilege() {
    let emu = AimEmulator::start().await.unwrap();
    let mes = format!("{}api/v3/no-such-route", emu.mes_base());
    let out = aim_token(&["check", "--mes", &mes], &emulator_env(&emu.authority())).await;
    assert_verdict(
        row("the --mes URL is not a MES Web API route (HTTP 404)"),
        &out,
    );
}

/// A TLS failure through an https:// proxy may be the proxy's certificate:
/// the fix says to trust both CAs, not only AIM's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_https_proxy_says_to_trust_both_cas() {
    let emu = AimEmulator::builder().https(true).start().await.unwrap();
    let env = trusting_env(&emu, "https-proxy");
    let (proxy, proxy_ca) = connect_proxy::ConnectProxy::over_tls().await;
    let out = aim_token(&["check", "--proxy", &proxy.url], &env).await;
    assert_verdict(
        row("an https:// proxy whose certificate this machine does not trust"),
        &out,
    );
    let out = aim_token(&["--timeout", "2", "token", "--proxy", &proxy.url], &env).await;
    assert_verdict(
        row("an https:// proxy whose certificate this machine does not trust (`aim-token token`)"),
        &out,
    );
    // With both CAs in the file, it works.
    let both = temp_file(
        "https-proxy-both",
        &format!("{}{proxy_ca}", emu.ca_pem().unwrap()),
    );
    let mut env = emulator_env(&emu.authority());
    env.push(("AIM_CA_CERT", both.to_string_lossy().into_owned()));
    let out = aim_token(&["token", "--proxy", &proxy.url], &env).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_flag_that_is_not_a_url_names_the_flag_not_aim_variables() {
    let env = emulator_env("sms01.plant.invalid");
    let out = aim_token(
        &["check", "--proxy", "user:hunter2@proxy.plant.local:3128"],
        &env,
    )
    .await;
    assert_verdict(row("--proxy is not a proxy URL"), &out);
    assert!(!out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"));
}

/// A plain-http loopback AIM and MES with a proxy configured: `token` and
/// `check` (its discovery and `--mes` steps) go direct, as the library
/// does, so neither the client secret nor the token crosses the network in
/// a forwarded request; `check` runs its direct steps and names no proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_http_aim_and_mes_never_go_through_the_proxy() {
    let emu = AimEmulator::start().await.unwrap();
    let env = emulator_env(&emu.authority());
    let proxy = connect_proxy::ConnectProxy::start().await;
    let out = aim_token(&["token", "--proxy", &proxy.url], &env).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mes = format!("{}api/v3/entity", emu.mes_base());
    let mut with_var = env.clone();
    with_var.push(("HTTP_PROXY", proxy.url.clone()));
    let out = aim_token(&["check", "--mes", &mes], &with_var).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        step(&out.stdout, "tcp").starts_with("PASS"),
        "{}",
        out.stdout
    );
    assert!(proxy.targets().is_empty(), "{:?}", proxy.targets());
}
