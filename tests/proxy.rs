//! Token requests through a forward proxy: the builder's explicit proxy,
//! against a real `CONNECT` proxy on loopback that records what it tunnels.
//! (The proxy environment variables are tested through the CLI, in a child
//! process, in `tests/check_verdicts.rs`: setting them here would reach
//! every test of this binary.)

#[path = "support/connect_proxy.rs"]
mod connect_proxy;

use aim_token::emulator::AimEmulator;
use aim_token::ErrorKind;
use connect_proxy::ConnectProxy;

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
