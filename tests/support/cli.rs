//! The `aim-token` binary run as a child process, the one way every CLI
//! test runs it: none of the caller's AIM_*, proxy or systemd credential
//! variables leak in, and no token cache is shared between runs.
#![allow(dead_code)] // each test binary that includes this uses a different part

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aim_token::emulator::AimEmulator;

pub const BIN: &str = env!("CARGO_BIN_EXE_aim-token");

/// No variables beyond the cleaned environment.
pub const NO_ENV: &[(&str, &str)] = &[];

/// What a run printed and returned.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs the binary with `args` and, of the variables it reads, only `env`.
/// The emulator lives in the test's runtime, which keeps serving while the
/// child runs.
pub async fn aim_token<K, V>(args: &[&str], env: &[(K, V)]) -> Output
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args).kill_on_drop(true);
    for (name, _) in std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
        .filter(|(k, _)| k.starts_with("AIM_") || k.ends_with("_PROXY") || k.ends_with("_proxy"))
    {
        cmd.env_remove(name);
    }
    cmd.env_remove("CREDENTIALS_DIRECTORY");
    // No token cache between runs (tests count token requests), and none
    // in the real user's cache directory (tests/store_cli.rs covers it).
    cmd.env("AIM_TOKEN_STORE", "none");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("aim-token did not finish within 60 s")
        .unwrap();
    let output = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    };
    eprintln!(
        "$ aim-token {}\n-- exit {} after {:?}\n-- stdout:\n{}-- stderr:\n{}",
        args.join(" "),
        output.code,
        output.took,
        output.stdout,
        output.stderr
    );
    output
}

/// The AIM_* variables of the emulator's own client at `authority`.
pub fn emulator_env(authority: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AIM_AUTHORITY", authority.to_owned()),
        ("AIM_CLIENT_ID", AimEmulator::CLIENT_ID.to_owned()),
        ("AIM_CLIENT_SECRET", AimEmulator::CLIENT_SECRET.to_owned()),
    ]
}

/// [`emulator_env`] of an https emulator, with its CA in a file named for
/// `name` as AIM_CA_CERT (as the PCS root CA would be).
pub fn trusting_env(emu: &AimEmulator, name: &str) -> Vec<(&'static str, String)> {
    let ca = temp_file(name, &emu.ca_pem().expect("an https emulator"));
    let mut env = emulator_env(&emu.authority());
    env.push(("AIM_CA_CERT", ca.to_string_lossy().into_owned()));
    env
}

/// A file in the test target's temporary directory, named for this test
/// process (so parallel test binaries do not share it).
pub fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("aim-token-cli-{name}-{}.pem", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

/// The line of `check`'s step `name` (PASS, FAIL or SKIP and the detail).
pub fn step<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| {
            l.get(6..)
                .is_some_and(|rest| rest.starts_with(&format!("{name} ")))
        })
        .unwrap_or_else(|| panic!("no step {name} in:\n{stdout}"))
}
