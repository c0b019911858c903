//! A small forward proxy on 127.0.0.1 that speaks `CONNECT` (what https
//! through a proxy uses) and records every target it was asked for, so
//! tests assert the traffic really went through it.
#![allow(dead_code)] // each test binary that includes this uses a different part

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The running proxy; stops when dropped.
pub struct ConnectProxy {
    pub url: String,
    /// `url` with `user:hunter2@` in it, for tests of redaction.
    pub url_with_password: String,
    targets: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

/// What the proxy does with a `CONNECT`.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Tunnels it.
    Tunnel,
    /// Answers this status line and header block, and closes.
    Refuse(&'static str),
    /// Reads it and closes the connection without a word.
    Close,
}

impl ConnectProxy {
    pub async fn start() -> ConnectProxy {
        ConnectProxy::behaving(Behaviour::Tunnel).await
    }

    /// A proxy that asks for credentials it never accepts (HTTP 407).
    pub async fn asking_for_credentials() -> ConnectProxy {
        ConnectProxy::behaving(Behaviour::Refuse(
            "HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"plant\"\r\ncontent-length: 0\r\n\r\n",
        ))
        .await
    }

    pub async fn behaving(behaviour: Behaviour) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let url_with_password = format!("http://user:hunter2@{addr}");
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = targets.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(tunnel(client, seen.clone(), behaviour));
            }
        });
        ConnectProxy {
            url,
            url_with_password,
            targets,
            task,
        }
    }

    /// The `CONNECT` targets (`host:port`) asked for so far.
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads `CONNECT host:port HTTP/1.1` and its headers, connects, answers
/// 200 and copies bytes both ways (or refuses, as `behaviour` says);
/// anything else gets a 405.
async fn tunnel(mut client: TcpStream, seen: Arc<Mutex<Vec<String>>>, behaviour: Behaviour) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte).await {
            Ok(1) if head.len() < 16 * 1024 => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "CONNECT" {
        let _ = client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    }
    seen.lock().unwrap().push(target.to_owned());
    match behaviour {
        Behaviour::Tunnel => {}
        Behaviour::Refuse(answer) => {
            let _ = client.write_all(answer.as_bytes()).await;
            return;
        }
        Behaviour::Close => return,
    }
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
