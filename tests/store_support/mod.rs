//! Shared by the store tests: a real `redis-server` on a free loopback port
//! (no persistence), real child processes (the test binary re-running
//! itself in a child role), and the emulator that children reach by URL.
//!
//! Without `redis-server` the Redis tests skip with a message saying how to
//! install it, except under `CI=true`, where they fail: CI must run them.
#![allow(dead_code)] // each test binary uses a different part

use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aim_token::emulator::AimEmulator;

/// The child role a re-run test binary plays (set by [`spawn_child`]).
pub const ROLE: &str = "AIM_STORE_TEST_ROLE";

/// A free TCP port on 127.0.0.1 (nothing listens on it when this returns).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "aim-token-{tag}-{}-{}",
        std::process::id(),
        aim_token::store::Lease::random_owner()
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A `redis-server` on 127.0.0.1 without persistence, stopped on drop.
pub struct Redis {
    port: u16,
    child: Option<Child>,
    /// `--tls-port` with this certificate and key instead of `--port`.
    tls: Option<(PathBuf, PathBuf)>,
}

impl Redis {
    /// Starts one, or `None` (after saying why) when `redis-server` is not
    /// installed and `CI` is not set. Under `CI=true` a missing server panics.
    pub fn start() -> Option<Redis> {
        Self::start_with(None)
    }

    /// Like [`start`](Self::start), serving only TLS (`rediss://`) with a
    /// fresh self-signed certificate for 127.0.0.1; returns its PEM too.
    pub fn start_tls() -> Option<(Redis, String)> {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("self-signed certificate");
        let dir = temp_dir("redis-tls");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let pem = certified.cert.pem();
        std::fs::write(&cert, &pem).expect("write cert");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        Self::start_with(Some((cert, key))).map(|r| (r, pem))
    }

    fn start_with(tls: Option<(PathBuf, PathBuf)>) -> Option<Redis> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            let message = "redis-server is not installed: install it (Debian/Ubuntu: \
                           apt-get install redis-server) to run the Redis store tests";
            if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
                panic!("{message} (CI is set, so this is a failure, not a skip)");
            }
            eprintln!("SKIPPED: {message}");
            return None;
        }
        let mut redis = Redis {
            port: free_port(),
            child: None,
            tls,
        };
        redis.restart();
        Some(redis)
    }

    /// The URL of this server, database 0.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: connected, silent.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Kills the server (SIGKILL) and waits until its port is closed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the server on the same port and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(cert)
                .args(["--tls-auth-clients", "no"]),
        };
        self.child = Some(command.spawn().expect("start redis-server"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ready = match self.tls {
                None => self.ping(),
                // Listening is enough; the TLS handshake is the test's business.
                Some(_) => TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
            };
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server did not answer on port {} within 10 s",
            self.port
        );
    }

    fn ping(&self) -> bool {
        use std::io::Write as _;
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The environment a child needs to reach `aim` with the default client.
pub fn aim_env(aim: &AimEmulator) -> Vec<(String, String)> {
    let mut env = vec![
        ("AIM_AUTHORITY".to_owned(), aim.authority()),
        (
            "AIM_CLIENT_ID".to_owned(),
            AimEmulator::CLIENT_ID.to_owned(),
        ),
        (
            "AIM_CLIENT_SECRET".to_owned(),
            AimEmulator::CLIENT_SECRET.to_owned(),
        ),
    ];
    if let Some(pem) = aim.ca_pem() {
        let path = temp_dir("ca").join("ca.pem");
        std::fs::write(&path, pem).expect("write CA");
        env.push(("AIM_CA_CERT".to_owned(), path.display().to_string()));
    }
    env
}

/// Re-runs this test binary as a child playing `role` (only the test named
/// `child_process` runs, and it calls [`child_main`]).
pub fn spawn_child(role: &str, env: &[(String, String)]) -> Child {
    let exe = std::env::current_exe().expect("current exe");
    Command::new(exe)
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child")
}

/// What a child reported: the tokens its tasks got (as [`digest`]s) and
/// its client's stats.
#[derive(Debug)]
pub struct Report {
    pub tokens: Vec<String>,
    pub stats: String,
    pub elapsed_ms: u64,
}

/// Waits for `child` and reads its report; panics with its output on failure.
pub fn report(child: Child) -> Report {
    let output = child.wait_with_output().expect("wait for child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.find(name).map(|at| &l[at + name.len()..]))
            .unwrap_or_else(|| panic!("no {name} in child output:\n{stdout}"))
            .to_owned()
    };
    Report {
        tokens: field("CHILD-TOKENS ")
            .split(' ')
            .map(str::to_owned)
            .collect(),
        stats: field("CHILD-STATS "),
        elapsed_ms: field("CHILD-ELAPSED-MS ").parse().expect("elapsed"),
    }
}

/// The child: `TASKS` tasks (default 50) ask one client built by
/// `AimClientBuilder::from_env` (so `AIM_TOKEN_STORE` picks the store) for
/// a token at once; prints the tokens, the stats and the time taken.
/// `DEADLINE_MS` sets the retry deadline and request timeout,
/// `RETRY_DEADLINE_MS` the retry deadline alone, `STORE_TIMEOUT_MS` the
/// store timeout (default 2 s, not 250 ms: these tests count token requests
/// across processes, and a store call that a loaded machine or Wine delays
/// past 250 ms would be a miss and one more request).
pub fn child_main() {
    let tasks: usize = std::env::var("TASKS").map_or(50, |t| t.parse().expect("TASKS"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let mut builder = aim_token::AimClientBuilder::from_env().expect("client from env");
        let store_ms = std::env::var("STORE_TIMEOUT_MS")
            .map_or(2000, |ms| ms.parse().expect("STORE_TIMEOUT_MS"));
        builder = builder.token_store_timeout(Duration::from_millis(store_ms));
        if let Ok(ms) = std::env::var("DEADLINE_MS") {
            let d = Duration::from_millis(ms.parse().expect("DEADLINE_MS"));
            builder = builder.retry_deadline(d).request_timeout(d);
        }
        if let Ok(ms) = std::env::var("RETRY_DEADLINE_MS") {
            let d = Duration::from_millis(ms.parse().expect("RETRY_DEADLINE_MS"));
            builder = builder.retry_deadline(d);
        }
        let client = builder.build().expect("build client");
        let started = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.token().await })
            })
            .collect();
        let mut tokens = Vec::new();
        for h in handles {
            let token = h.await.expect("task").expect("token");
            tokens.push(digest(token.secret()));
        }
        let elapsed = started.elapsed().as_millis();
        println!("\nCHILD-TOKENS {}", tokens.join(" "));
        println!("CHILD-STATS {:?}", client.stats());
        println!("CHILD-ELAPSED-MS {elapsed}");
    });
}

/// A short digest of a token (the same in every process), so that reports
/// and failure messages never carry the bearer value.
pub fn digest(token: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir` with its content.
/// The store's one token entry in `dir` (a FileStore): its path and sealed bytes.
pub fn token_entry(dir: &Path) -> (PathBuf, Vec<u8>) {
    files(dir)
        .into_iter()
        .find(|(p, _)| p.extension().is_some_and(|e| e == "token"))
        .expect("a .token entry in the store directory")
}

pub fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let content = std::fs::read(&p).expect("read file");
            (p, content)
        })
        .collect()
}
