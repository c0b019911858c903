//! The README's examples as a user on a fresh machine runs them: with no
//! AIM variables, with only some, with a real AIM's (here an https
//! emulator standing in for it, trusted through a DER `.cer` as Windows
//! exports it). The examples are built by `cargo test` itself; this runs
//! those binaries.

use std::path::PathBuf;
use std::process::{Command, Output};

use aim_token::emulator::AimEmulator;

/// The example's binary, built by this `cargo test` run.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/examples-HASH -> target/<profile>/examples/NAME
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the whole `cargo test --all-features`, which builds the examples",
        path.display()
    );
    path
}

/// Example `name` with none of this process's AIM_* and MES_* variables.
fn command(name: &str) -> Command {
    let mut cmd = Command::new(example(name));
    for (var, _) in std::env::vars() {
        if var.starts_with("AIM_") || var.starts_with("MES_") {
            cmd.env_remove(var);
        }
    }
    cmd
}

/// Runs example `name` with exactly `vars` among the AIM_* and MES_* variables.
fn run(name: &str, vars: &[(&str, &str)]) -> Output {
    command(name).envs(vars.iter().copied()).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every example that can talk to a real AIM.
const REAL_AIM_EXAMPLES: [&str; 4] = ["quickstart", "mes_entities", "job_lifecycle", "middleware"];

/// Only the client ID and secret set, not the authority: the examples must
/// not quietly run against the emulator (the user meant their plant), but
/// say what is missing.
#[test]
fn some_aim_variables_say_what_is_missing() {
    let vars = [
        ("AIM_CLIENT_ID", "mes-reporting"),
        ("AIM_CLIENT_SECRET", "s3cr3t"),
        ("MES_BASE_URL", "https://mes01.invalid/mesmw/"),
    ];
    for name in REAL_AIM_EXAMPLES {
        let out = run(name, &vars);
        assert!(!out.status.success(), "{name}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("AIM_AUTHORITY"), "{name}: {}", text(&out));
    }
}

/// The emulator-only demos say so when AIM_* is set, instead of leaving
/// the user to believe they talked to their plant.
#[test]
fn emulator_only_examples_say_they_ignore_aim_variables() {
    let vars = [
        ("AIM_AUTHORITY", "sms01.invalid"),
        ("AIM_CLIENT_ID", "mes-reporting"),
        ("AIM_CLIENT_SECRET", "s3cr3t"),
    ];
    for name in ["concurrent", "tower"] {
        let out = run(name, &vars);
        assert!(out.status.success(), "{name}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("emulator") && stderr.contains("AIM_"),
            "{name}: {}",
            text(&out)
        );
    }
}

/// The quickstart against "a real AIM" whose CA the admin exported from
/// Windows as a DER `.cer`, with MES_BASE_URL: the token and the MES calls
/// both trust it (MES's certificate comes from the same CA).
#[test]
fn quickstart_trusts_a_der_ca_for_aim_and_mes() {
    real_aim_with_der_ca("quickstart");
}

/// The middleware example likewise; its own reqwest client trusts the CA
/// through reqwest's `tls_certs_merge`, which on Windows asks a second
/// chain engine that Wine refuses to build ("builder error"): skipped
/// under Wine (scripts/windows.sh), run on Linux.
#[test]
fn middleware_example_trusts_a_der_ca_for_aim_and_mes() {
    real_aim_with_der_ca("middleware");
}

fn real_aim_with_der_ca(name: &str) {
    use base64::Engine as _;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt
        .block_on(AimEmulator::builder().https(true).start())
        .unwrap();
    let pem = emu.ca_pem().unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let path = std::env::temp_dir().join(format!(
        "aim-token-example-ca-{name}-{}.cer",
        std::process::id()
    ));
    std::fs::write(&path, der).unwrap();
    let authority = emu.authority();
    let mes = emu.mes_base();
    let out = run(
        name,
        &[
            ("AIM_AUTHORITY", authority.as_str()),
            ("AIM_CLIENT_ID", AimEmulator::CLIENT_ID),
            ("AIM_CLIENT_SECRET", AimEmulator::CLIENT_SECRET),
            ("AIM_CA_CERT", path.to_str().unwrap()),
            ("MES_BASE_URL", mes.as_str()),
        ],
    );
    std::fs::remove_file(&path).unwrap();
    assert!(out.status.success(), "{name}: {}", text(&out));
    assert!(emu.counters().mes >= 1, "{name}: {}", text(&out));
}

/// Every example the README names, as its first reader runs it: no AIM
/// variables (fetch_token with `--emulator`, as the README says). Each
/// finishes successfully.
#[test]
fn every_readme_example_runs_on_a_fresh_machine() {
    for (name, args) in [
        ("quickstart", &[][..]),
        ("mes_entities", &[]),
        ("job_lifecycle", &[]),
        ("concurrent", &[]),
        ("middleware", &[]),
        ("tower", &[]),
        ("fetch_token", &["--emulator"]),
        ("shared_cache", &[]),
    ] {
        let out = command(name).args(args).output().unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out));
    }
}

/// A wrong AIM_AUTHORITY on the first run (nothing listens there): the
/// quickstart says which variable to check, within seconds rather than
/// after a silent minute of retries.
#[test]
fn quickstart_with_an_unreachable_authority_names_the_variable_soon() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let authority = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let out = run(
        "quickstart",
        &[
            ("AIM_AUTHORITY", authority.as_str()),
            ("AIM_CLIENT_ID", "mes-reporting"),
            ("AIM_CLIENT_SECRET", "s3cr3t"),
        ],
    );
    let took = started.elapsed();
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("check AIM_AUTHORITY") || stderr.contains("check that AIM_AUTHORITY"),
        "{}",
        text(&out)
    );
    assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
}
