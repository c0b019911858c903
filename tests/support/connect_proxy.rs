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
    behaviour: Arc<Mutex<Behaviour>>,
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
        ConnectProxy::serve(behaviour, None).await
    }

    /// A tunnelling proxy spoken to over TLS (an `https://` proxy URL),
    /// with a certificate for 127.0.0.1 from a CA of its own; that CA's PEM.
    pub async fn over_tls() -> (ConnectProxy, String) {
        let (ca_pem, acceptor) = loopback_tls();
        (
            ConnectProxy::serve(Behaviour::Tunnel, Some(acceptor)).await,
            ca_pem,
        )
    }

    async fn serve(behaviour: Behaviour, tls: Option<tokio_rustls::TlsAcceptor>) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        let url_with_password = format!("{scheme}://user:hunter2@{addr}");
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = targets.clone();
        let behaviour = Arc::new(Mutex::new(behaviour));
        let now = behaviour.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let seen = seen.clone();
                let behaviour = *now.lock().unwrap();
                match tls.clone() {
                    None => {
                        tokio::spawn(tunnel(client, seen, behaviour));
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            if let Ok(client) = acceptor.accept(client).await {
                                tunnel(client, seen, behaviour).await;
                            }
                        });
                    }
                }
            }
        });
        ConnectProxy {
            url,
            url_with_password,
            targets,
            behaviour,
            task,
        }
    }

    /// What the proxy does with the connections it accepts from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// The `CONNECT` targets (`host:port`) asked for so far; a forwarded
    /// plain-http request as `METHOD URL` (refused with a 405).
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
/// anything else is recorded and gets a 405.
async fn tunnel<S>(mut client: S, seen: Arc<Mutex<Vec<String>>>, behaviour: Behaviour)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
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
        // A forwarded plain-http request: recorded, with whether it carried
        // credentials in clear text.
        let carried = head.to_ascii_lowercase().contains("\r\nauthorization:");
        let credentials = if carried { " with Authorization" } else { "" };
        seen.lock()
            .unwrap()
            .push(format!("{method} {target}{credentials}"));
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

/// A TLS acceptor for 127.0.0.1 with a certificate from a fresh CA, and
/// that CA's PEM.
fn loopback_tls() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "connect-proxy test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    (
        ca_cert.pem(),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}
