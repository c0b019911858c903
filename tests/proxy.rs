//! Token requests through a forward proxy: the builder's explicit proxy,
//! against a real `CONNECT` proxy on loopback that records what it tunnels.
//! (The proxy environment variables are tested through the CLI, in a child
//! process, in `tests/check_verdicts.rs`: setting them here would reach
//! every test of this binary.)

#[path = "support/connect_proxy.rs"]
mod connect_proxy;

mod attach_support;

use aim_token::emulator::AimEmulator;
use aim_token::ErrorKind;
use connect_proxy::{Behaviour, ConnectProxy};
use std::time::{Duration, Instant};

async fn https_emulator() -> AimEmulator {
    AimEmulator::builder().https(true).start().await.unwrap()
}

/// A client of `emu` (trusting its CA) whose requests go through `proxy`.
fn proxied_client(emu: &AimEmulator, proxy: &ConnectProxy) -> aim_token::AimClient {
    emu.client_builder()
        .root_certificate_pem(emu.ca_pem().unwrap())
        .proxy(&proxy.url)
        .build()
        .unwrap()
}

#[tokio::test]
async fn token_and_discovery_go_through_the_explicit_proxy() {
    let emu = https_emulator().await;
    let proxy = ConnectProxy::start().await;
    let aim = proxied_client(&emu, &proxy);
    let token = aim.token().await.unwrap();
    assert!(!token.secret().is_empty());
    let target = format!("127.0.0.1:{}", emu.port());
    let targets = proxy.targets();
    assert!(!targets.is_empty(), "the proxy saw no CONNECT");
    assert!(targets.iter().all(|t| *t == target), "{targets:?}");
    assert_eq!(emu.counters().tokens_issued, 1);
}

/// MesClient takes its AimClient's proxy with the rest of its connection
/// settings: its own connection pool opens its own tunnel, and nothing
/// reaches MES around the proxy.
#[tokio::test]
async fn mes_calls_go_through_the_aim_clients_proxy() {
    let emu = https_emulator().await;
    let proxy = ConnectProxy::start().await;
    let aim = proxied_client(&emu, &proxy);
    aim.token().await.unwrap();
    let tunnels = proxy.targets().len();
    let mes = aim_token::MesClient::new(emu.mes_base(), aim).unwrap();
    let entities: serde_json::Value = mes.get_json("api/v3/entity").await.unwrap();
    assert!(entities.is_array(), "{entities}");
    assert_eq!(emu.counters().mes, 1);
    assert!(
        proxy.targets().len() > tunnels,
        "MES was reached without the proxy: {:?}",
        proxy.targets()
    );
}

/// A MES call whose tunnel the proxy refuses for want of credentials gets
/// the same permanent, proxy-naming error as a token request.
#[tokio::test]
async fn a_mes_call_through_a_proxy_asking_for_credentials_names_the_fix() {
    let emu = https_emulator().await;
    let proxy = ConnectProxy::start().await;
    let aim = proxied_client(&emu, &proxy);
    aim.token().await.unwrap();
    proxy.set_behaviour(Behaviour::Refuse(
        "HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n",
    ));
    let mes = aim_token::MesClient::new(emu.mes_base(), aim).unwrap();
    let err = mes
        .get_json::<serde_json::Value>("api/v3/entity")
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    let text = err.to_string();
    for says in ["proxy", "407", "USER:PASSWORD@", "NO_PROXY"] {
        assert!(text.contains(says), "{says:?} missing in: {text}");
    }
    assert_eq!(emu.counters().mes, 0);
}

/// An `https://` proxy (the builder accepts one): the client speaks TLS to
/// it, trusting it by the same roots as AIM, and tunnels through it.
#[tokio::test]
async fn an_https_proxy_is_spoken_to_over_tls() {
    let emu = https_emulator().await;
    let (proxy, proxy_ca) = ConnectProxy::over_tls().await;
    assert!(proxy.url.starts_with("https://"), "{}", proxy.url);
    // Not trusting the proxy's CA: refused as TLS, nothing tunnelled.
    let untrusting = emu
        .client_builder()
        .root_certificate_pem(emu.ca_pem().unwrap())
        .proxy(&proxy.url)
        .retry_deadline(std::time::Duration::ZERO)
        .build()
        .unwrap();
    let err = untrusting.token().await.unwrap_err();
    assert!(proxy.targets().is_empty(), "{err:?}");
    let aim = emu
        .client_builder()
        .root_certificate_pem(emu.ca_pem().unwrap())
        .root_certificate_pem(proxy_ca)
        .proxy(&proxy.url)
        .build()
        .unwrap();
    let token = aim.token().await.unwrap();
    assert!(!token.secret().is_empty());
    let target = format!("127.0.0.1:{}", emu.port());
    assert!(proxy.targets().contains(&target), "{:?}", proxy.targets());
}

/// A proxy that asks for credentials (HTTP 407) will ask again: the token
/// request fails at once, not at the retry deadline, as a permanent error
/// that names the proxy and how to give it credentials, and never says
/// "check that AIM is running". Nothing reaches AIM.
#[tokio::test]
async fn a_proxy_asking_for_credentials_fails_at_once_and_names_the_fix() {
    let emu = https_emulator().await;
    let proxy = ConnectProxy::asking_for_credentials().await;
    let aim = emu
        .client_builder()
        .root_certificate_pem(emu.ca_pem().unwrap())
        .proxy(&proxy.url)
        .retry_deadline(Duration::from_secs(20))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = aim.token().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited {:?} for a proxy that will never let us through: {err}",
        started.elapsed()
    );
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    let text = err.to_string();
    for says in ["proxy", "407", "USER:PASSWORD@", "NO_PROXY"] {
        assert!(text.contains(says), "{says:?} missing in: {text}");
    }
    assert!(!text.contains("AIM is running"), "{text}");
    // Discovery, then the token endpoint it falls back to: at most one
    // CONNECT each, no retries.
    assert!(proxy.targets().len() <= 2, "{:?}", proxy.targets());
    assert_eq!(emu.counters().tokens_issued, 0);
}

/// A proxy that refuses the tunnel with another status (a 403 of its
/// policy, a 502 of its own upstream) may let us through later, so the
/// error stays transient; but it names the proxy, not AIM, as what refused.
#[tokio::test]
async fn a_proxy_refusing_the_tunnel_is_named_as_what_refused() {
    let emu = https_emulator().await;
    let proxy = ConnectProxy::behaving(Behaviour::Refuse(
        "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n",
    ))
    .await;
    let aim = emu
        .client_builder()
        .root_certificate_pem(emu.ca_pem().unwrap())
        .proxy(&proxy.url)
        .retry_deadline(Duration::ZERO)
        .build()
        .unwrap();
    let err = aim.token().await.unwrap_err();
    let last = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<aim_token::Error>())
        .unwrap_or(&err);
    assert!(last.is_transient(), "{last}");
    let text = last.to_string();
    for says in ["proxy", "refused", "tunnel", "NO_PROXY"] {
        assert!(text.contains(says), "{says:?} missing in: {text}");
    }
    assert!(!text.contains("AIM is running"), "{text}");
    assert!(!proxy.targets().is_empty());
}

#[tokio::test]
async fn without_a_proxy_nothing_goes_through_it() {
    let emu = https_emulator().await;
    let proxy = ConnectProxy::start().await;
    let aim = emu
        .client_builder()
        .root_certificate_pem(emu.ca_pem().unwrap())
        .build()
        .unwrap();
    aim.token().await.unwrap();
    assert!(proxy.targets().is_empty());
}

#[tokio::test]
async fn a_proxy_that_is_not_a_url_fails_at_build_without_its_password() {
    let emu = AimEmulator::start().await.unwrap();
    let err = emu
        .client_builder()
        .proxy("user:hunter2@proxy.plant.local:3128")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("proxy"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn the_builder_debug_hides_proxy_credentials() {
    let builder = aim_token::AimClient::builder().proxy("http://user:hunter2@proxy:3128");
    let debug = format!("{builder:?}");
    assert!(
        debug.contains("proxy:3128") && !debug.contains("hunter2"),
        "{debug}"
    );
}

/// Plain http is allowed only to loopback because it never leaves the
/// machine there; through a proxy it would, token and all, in clear text
/// (and a proxy on another host cannot reach this machine's loopback
/// anyway). A MesClient on a loopback http base goes direct, whatever
/// proxy its AimClient uses for AIM.
#[tokio::test]
async fn a_loopback_http_mes_is_called_directly_never_through_the_proxy() {
    let emu = https_emulator().await;
    let proxy = ConnectProxy::start().await;
    let aim = proxied_client(&emu, &proxy);
    let mes_server = http_mes_on_loopback().await;
    let mes = aim_token::MesClient::new(format!("{}/mesmw/", mes_server.base), aim).unwrap();
    let answer = mes
        .get_json::<Vec<serde_json::Value>>("api/v3/entity")
        .await;
    let mes_port = mes_server.base.rsplit(':').next().unwrap().to_owned();
    let through: Vec<String> = proxy
        .targets()
        .into_iter()
        .filter(|t| t.contains(&format!(":{mes_port}")))
        .collect();
    assert!(
        through.is_empty(),
        "MES traffic went to the proxy: {through:?}"
    );
    assert!(answer.unwrap().is_empty());
    assert_eq!(mes_server.requests(), 1, "MES was not reached directly");
}

/// A plain-http MES on loopback: the recording server of the attachment tests.
async fn http_mes_on_loopback() -> attach_support::Recorder {
    attach_support::Recorder::start(attach_support::Rule::Accept).await
}

/// The same for AIM: a plain-http (loopback) authority is asked directly.
/// Through the proxy, the client secret would cross the network in the
/// clear, in a forwarded POST.
#[tokio::test]
async fn a_loopback_http_aim_is_asked_directly_never_through_the_proxy() {
    let emu = AimEmulator::start().await.unwrap();
    assert!(emu.authority().starts_with("http://127.0.0.1"));
    let proxy = ConnectProxy::start().await;
    let aim = emu.client_builder().proxy(&proxy.url).build().unwrap();
    let token = aim.token().await;
    assert!(proxy.targets().is_empty(), "{:?}", proxy.targets());
    token.unwrap();
}

/// Dynamic registration at a plain-http (loopback) AIM goes direct too:
/// through the proxy, the initial access token (and the new client's
/// secret) would cross the network in the clear.
#[tokio::test]
async fn registration_at_a_loopback_http_aim_never_goes_through_the_proxy() {
    let emu = AimEmulator::builder()
        .initial_access_token("initial-T0ken")
        .start()
        .await
        .unwrap();
    let proxy = ConnectProxy::start().await;
    let builder = aim_token::AimClient::builder()
        .authority(emu.authority())
        .proxy(&proxy.url);
    let registered = aim_token::ClientRegistration::new("via-no-proxy")
        .scopes(["emulator.api"])
        .register(&builder, "initial-T0ken")
        .await;
    assert!(proxy.targets().is_empty(), "{:?}", proxy.targets());
    assert_eq!(registered.unwrap().client_id(), "via-no-proxy");
}
