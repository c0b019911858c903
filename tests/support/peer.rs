//! The interop peer: the real npm package `oidc-provider`, run by Node on
//! 127.0.0.1 by `tests/interop/server.mjs`, shaped like AIM
//! (`/identitymanager`, `/connect/token`).
//!
//! [`start`] installs the peer's dependencies when they are missing or stale
//! (`npm ci` from the committed lockfile, once per process and safe against
//! other test binaries doing the same), starts the server, and waits for its
//! ready line. The returned [`Peer`] kills the server when dropped; the server
//! also exits by itself when its stdin closes, so a test process that dies
//! (even by SIGKILL) leaves no orphan behind.
//!
//! When Node or npm is missing, too old, or `npm ci` fails, [`start`] panics
//! with what to install: a test that did not run is never reported as
//! passed (libtest cannot mark it ignored at run time).
#![allow(dead_code)] // each test binary that includes this uses a different part

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Oldest Node that `oidc-provider` 9 supports (its `engines` field).
const MIN_NODE: (u32, u32) = (20, 19);
/// How long the peer may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `npm ci` may take (a cold npm cache on a slow network).
const NPM_CI_TIMEOUT: Duration = Duration::from_secs(300);

/// One client registered with the peer at start-up.
#[derive(Debug, Clone)]
pub struct PeerClient {
    pub client_id: String,
    pub client_secret: String,
    /// `client_secret_post` or `client_secret_basic`.
    pub auth_method: &'static str,
    /// Space-separated scopes the client may ask for.
    pub scope: String,
}

/// What the peer is started with.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    pub clients: Vec<PeerClient>,
    /// Every scope the server knows (the clients may be allowed fewer).
    pub scopes: Vec<String>,
    /// Enables RFC 7591 dynamic registration with this initial access token.
    pub initial_access_token: Option<String>,
    /// Access token lifetime in seconds.
    pub access_token_ttl: u64,
    /// Serve https with a certificate issued by a freshly generated CA.
    pub tls: bool,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            clients: Vec::new(),
            scopes: vec!["mes.api".into()],
            initial_access_token: None,
            access_token_ttl: 3600,
            tls: false,
        }
    }
}

/// The ready line the peer prints on stdout.
#[derive(Debug, Clone, Deserialize)]
pub struct PeerUrls {
    pub port: u16,
    /// `http(s)://127.0.0.1:PORT/identitymanager`
    pub issuer: String,
    pub discovery: String,
    pub token_endpoint: String,
    pub registration_endpoint: Option<String>,
    /// `GET` this for [`PeerStats`].
    pub stats: String,
}

/// What the peer has seen since it started (`GET /__stats`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PeerStats {
    pub requests: u64,
    pub discovery_requests: u64,
    pub token_requests: u64,
    pub token_successes: u64,
    /// OAuth error code -> how often the token endpoint answered it.
    pub token_errors: HashMap<String, u64>,
    pub registration_requests: u64,
}

/// A running peer. Dropping it stops the server.
pub struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    urls: PeerUrls,
    ca_pem: Option<String>,
    dir: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Peer {
    pub fn urls(&self) -> &PeerUrls {
        &self.urls
    }

    /// `http(s)://127.0.0.1:PORT/identitymanager`
    pub fn issuer(&self) -> &str {
        &self.urls.issuer
    }

    /// The PEM of the CA that issued the peer's certificate (https only).
    pub fn ca_pem(&self) -> &str {
        self.ca_pem
            .as_deref()
            .expect("the peer was started without tls")
    }

    /// What Node printed on stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A reqwest client that trusts the peer (and nothing else when https).
    pub fn http_client(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10));
        if let Some(pem) = &self.ca_pem {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes()).expect("CA PEM");
            builder = builder.tls_certs_only([ca]);
        }
        builder.build().expect("reqwest client")
    }

    /// The peer's request counters.
    pub async fn stats(&self) -> PeerStats {
        let response = self
            .http_client()
            .get(&self.urls.stats)
            .send()
            .await
            .expect("GET /__stats");
        assert!(
            response.status().is_success(),
            "GET /__stats: {}",
            response.status()
        );
        response.json().await.expect("stats JSON")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Closing stdin alone stops the server; kill it too in case it hangs.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Starts a peer. Panics, saying what to install, when Node/npm are
/// unavailable (never `None`: the `Option` keeps the callers' macros), and
/// when the peer itself fails.
pub fn start(options: PeerOptions) -> Option<Peer> {
    let node = match toolchain() {
        Ok(node) => node,
        Err(why) => skip_or_fail(why),
    };
    // One retry: a peer that hangs at start-up (Node itself, under heavy
    // load) says nothing about the crate. Twice in a row is a real failure.
    match spawn(&node, &options) {
        Ok(peer) => Some(peer),
        Err(first) => {
            let _ = writeln!(
                std::io::stderr(),
                "interop: the peer failed to start, retrying once: {first}"
            );
            match spawn(&node, &options) {
                Ok(peer) => Some(peer),
                Err(second) => panic!("{second}\n(first attempt: {first})"),
            }
        }
    }
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("interop")
}

fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Fails the test: an interop test that cannot run must not be counted as
/// passed, and libtest has no way to mark a test ignored at run time (that
/// needs a build script probing for Node in every build of the library, or a
/// custom harness whose dependencies every `cargo run --example` would build).
fn skip_or_fail(why: &str) -> ! {
    let ci = if on_ci() { " (CI=true)" } else { "" };
    panic!(
        "the oidc-provider interop tests cannot run{ci}: {why}. Install Node >= {}.{} with npm; \
         the tests run `npm ci --prefix tests/interop` themselves. They fail rather than pass unrun.",
        MIN_NODE.0, MIN_NODE.1
    );
}

/// Node found, new enough, and the peer's dependencies installed: once per
/// process, whatever the number of test threads.
fn toolchain() -> Result<PathBuf, &'static str> {
    static TOOLCHAIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = TOOLCHAIN.get_or_init(|| {
        let node = PathBuf::from("node");
        check_node(&node)?;
        ensure_dependencies()?;
        Ok(node)
    });
    match found {
        Ok(node) => Ok(node.clone()),
        Err(why) => Err(why),
    }
}

fn check_node(node: &Path) -> Result<(), String> {
    let output = Command::new(node)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `node --version`: {e}"))?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let mut parts = version.trim_start_matches('v').split('.');
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) < MIN_NODE {
        return Err(format!(
            "node {version} is too old: oidc-provider needs >= {}.{}",
            MIN_NODE.0, MIN_NODE.1
        ));
    }
    Ok(())
}

/// Whether `node_modules` holds exactly what `package-lock.json` pins, judged
/// by the hidden lockfile npm writes after every install.
fn dependencies_fresh(dir: &Path) -> bool {
    fn packages(path: &Path) -> Option<HashMap<String, String>> {
        let json: serde_json::Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        let packages = json.get("packages")?.as_object()?;
        Some(
            packages
                .iter()
                .filter(|(name, _)| name.starts_with("node_modules/"))
                .map(|(name, meta)| {
                    let version = meta.get("version").and_then(|v| v.as_str()).unwrap_or("");
                    (name.clone(), version.to_owned())
                })
                .collect(),
        )
    }
    let (Some(wanted), Some(installed)) = (
        packages(&dir.join("package-lock.json")),
        packages(&dir.join("node_modules").join(".package-lock.json")),
    ) else {
        return false;
    };
    !wanted.is_empty()
        && wanted
            .iter()
            .all(|(name, version)| installed.get(name) == Some(version))
        && dir
            .join("node_modules/oidc-provider/package.json")
            .is_file()
}

/// Runs `npm ci` in a private staging directory and moves the result into
/// place with one atomic rename, so parallel test binaries never see (or
/// write) a half-installed `node_modules`.
fn ensure_dependencies() -> Result<(), String> {
    let dir = interop_dir();
    if dependencies_fresh(&dir) {
        return Ok(());
    }
    let staging = dir.join(format!(".staging-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    let result = install_into(&dir, &staging);
    let _ = fs::remove_dir_all(&staging);
    result
}

fn install_into(dir: &Path, staging: &Path) -> Result<(), String> {
    fs::create_dir_all(staging).map_err(|e| format!("create {}: {e}", staging.display()))?;
    for file in ["package.json", "package-lock.json", ".npmrc"] {
        fs::copy(dir.join(file), staging.join(file)).map_err(|e| format!("copy {file}: {e}"))?;
    }
    let _ = writeln!(
        std::io::stderr(),
        "interop: installing oidc-provider with `npm ci` (node_modules missing or stale)"
    );
    run_with_timeout(
        Command::new(if cfg!(windows) { "npm.cmd" } else { "npm" })
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(staging),
        NPM_CI_TIMEOUT,
    )
    .map_err(|e| format!("`npm ci` in tests/interop failed: {e}"))?;

    let target = dir.join("node_modules");
    if target.exists() && !dependencies_fresh(dir) {
        // Move the stale tree out of the way; it is deleted with the staging dir.
        let _ = fs::rename(&target, staging.join("stale_node_modules"));
    }
    match fs::rename(staging.join("node_modules"), &target) {
        Ok(()) => Ok(()),
        // Another test binary won the race: fine, if what it installed is right.
        Err(_) if dependencies_fresh(dir) => Ok(()),
        Err(e) => Err(format!("move node_modules into {}: {e}", dir.display())),
    }
}

fn run_with_timeout(command: &mut Command, timeout: Duration) -> Result<(), String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("timed out after {timeout:?}"));
            }
            Err(e) => break Err(e.to_string()),
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("{status}\n{stdout}\n{stderr}")),
        Err(e) => Err(format!("{e}\n{stdout}\n{stderr}")),
    }
}

/// A CA and a server certificate for 127.0.0.1 it issued.
pub struct TestCa {
    pub ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// A fresh CA, e.g. to show that a certificate from another CA is refused.
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            ca_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// (certificate PEM, private key PEM) for 127.0.0.1 and localhost.
    pub fn server_certificate(&self) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        (cert.pem(), key.serialize_pem())
    }
}

fn spawn(node: &Path, options: &PeerOptions) -> Result<Peer, String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "interop-peer-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).expect("peer temp dir");

    let mut tls = serde_json::Value::Null;
    let mut ca_pem = None;
    if options.tls {
        let ca = TestCa::new("aim-token interop test CA");
        let (cert, key) = ca.server_certificate();
        let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
        fs::write(&cert_path, cert).expect("write server.pem");
        fs::write(&key_path, key).expect("write server.key");
        tls = serde_json::json!({ "cert": cert_path, "key": key_path });
        ca_pem = Some(ca.ca_pem);
    }
    let clients: Vec<_> = options
        .clients
        .iter()
        .map(|c| {
            serde_json::json!({
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "token_endpoint_auth_method": c.auth_method,
                "scope": c.scope,
            })
        })
        .collect();
    let mut config = serde_json::json!({
        "clients": clients,
        "scopes": options.scopes,
        "access_token_ttl": options.access_token_ttl,
    });
    if let Some(iat) = &options.initial_access_token {
        config["initial_access_token"] = iat.clone().into();
    }
    if !tls.is_null() {
        config["tls"] = tls;
    }

    let mut child = Command::new(node)
        .arg("server.mjs")
        .arg(config.to_string())
        .current_dir(interop_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node server.mjs");

    let stderr = Arc::new(Mutex::new(String::new()));
    let err_pipe = child.stderr.take().expect("piped stderr");
    let err_log = stderr.clone();
    thread::spawn(move || {
        for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
            if let Ok(mut log) = err_log.lock() {
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
    let (ready_tx, ready_rx) = mpsc::channel();
    let out_pipe = child.stdout.take().expect("piped stdout");
    thread::spawn(move || {
        // The ready line is the one JSON object with "ready"; anything else
        // a dependency might print is skipped. Keep draining afterwards so
        // the peer never blocks on a full pipe.
        let mut ready_tx = Some(ready_tx);
        for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
            if line.starts_with("{\"ready\"") {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(line);
                }
            }
        }
    });

    let stdin = child.stdin.take();
    let mut peer = Peer {
        child,
        stdin,
        urls: PeerUrls {
            port: 0,
            issuer: String::new(),
            discovery: String::new(),
            token_endpoint: String::new(),
            registration_endpoint: None,
            stats: String::new(),
        },
        ca_pem,
        dir,
        stderr,
    };
    let line = match ready_rx.recv_timeout(READY_TIMEOUT) {
        Ok(line) => line,
        Err(e) => {
            // Give the stderr reader a moment to collect the reason.
            thread::sleep(Duration::from_millis(200));
            return Err(format!(
                "the interop peer did not get ready in {READY_TIMEOUT:?} ({e}); its stderr:\n{}",
                peer.stderr()
            ));
        }
    };
    peer.urls = serde_json::from_str(&line)
        .map_err(|e| format!("bad ready line from the interop peer ({e}): {line}"))?;
    Ok(peer)
}
