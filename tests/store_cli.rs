//! `aim-token token` keeps its token in the per-user cache: a job that runs
//! it every minute asks AIM once, not every minute.

mod store_support;

use std::path::Path;
use std::process::Command;

use aim_token::emulator::AimEmulator;
use store_support::{aim_env, files, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_aim-token");

/// Runs `aim-token token ARGS` with `XDG_CACHE_HOME`/`HOME` (and
/// `LOCALAPPDATA`) under `home`; returns the token.
async fn token(aim: &AimEmulator, home: &Path, args: &[&str], extra: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.arg("token").args(args);
    cmd.envs(aim_env(aim));
    cmd.env_remove("AIM_TOKEN_STORE")
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("LOCALAPPDATA", home.join("cache"));
    cmd.envs(extra.iter().copied());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "aim-token token failed: {stderr}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_runs_make_one_token_request_and_the_cache_file_is_user_only() {
    let aim = AimEmulator::start().await.unwrap();
    let home = temp_dir("cli-home");
    let first = token(&aim, &home, &[], &[]).await;
    for _ in 1..30 {
        assert_eq!(token(&aim, &home, &[], &[]).await, first);
    }
    assert_eq!(aim.token_requests(), 1);

    let dir = home.join("cache").join("aim-token");
    let files = files(&dir);
    assert!(files
        .iter()
        .any(|(p, _)| p.extension().is_some_and(|e| e == "token")));
    for (path, content) in &files {
        assert!(
            !store_support::contains(content, first.as_bytes()),
            "{path:?}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{path:?} is {mode:o}");
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{dir:?} is {mode:o}");
    }
    std::fs::remove_dir_all(home).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_or_store_none_asks_aim_every_time() {
    let aim = AimEmulator::start().await.unwrap();
    let home = temp_dir("cli-nocache");
    for _ in 0..30 {
        token(&aim, &home, &["--no-cache"], &[]).await;
    }
    assert_eq!(aim.token_requests(), 30);
    for _ in 0..3 {
        token(&aim, &home, &[], &[("AIM_TOKEN_STORE", "none")]).await;
    }
    assert_eq!(aim.token_requests(), 33);
    assert!(!home.join("cache").join("aim-token").exists());

    // An explicit store is used instead of the user cache.
    let shared = temp_dir("cli-store");
    let spec = format!("file:{}", shared.display());
    let a = token(&aim, &home, &["--store", &spec], &[]).await;
    let b = token(&aim, &home, &[], &[("AIM_TOKEN_STORE", &spec)]).await;
    assert_eq!(a, b);
    assert_eq!(aim.token_requests(), 34);
    // --no-cache wins over a store in the environment (a scheduled job's
    // environment may set one; the flag is the caller's explicit wish).
    token(&aim, &home, &["--no-cache"], &[("AIM_TOKEN_STORE", &spec)]).await;
    assert_eq!(aim.token_requests(), 35);
    std::fs::remove_dir_all(home).unwrap();
    std::fs::remove_dir_all(shared).unwrap();
}
