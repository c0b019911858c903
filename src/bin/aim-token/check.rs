//! `aim-token check`: the doctor. Each step passes or fails with the reason
//! and the fix; the exit code is the class of the first failure.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use aim_token::{AccessToken, ErrorKind};

use crate::config::{progress, Global};
use crate::decode::{human, when, Jwt};
use crate::exit;

pub(crate) const AFTER_HELP: &str = "\
Steps: config, dns, tcp, tls (https only), discovery, token, claims, clock,
mes (with --mes). A step that cannot run because an earlier one failed is
SKIPped. The exit code is that of the first failure (see aim-token --help):
2 config, 3 dns/tcp, 4 tls, 5 token refused / MES 401 or 403, 6 other, 7 clock.

Examples:
  AIM_CLIENT_SECRET=... aim-token --authority sms01.plant.local --client-id mes-reporting check
  aim-token check --ca-cert pcs-root-ca.pem --mes https://mes01/mesmw/api/v3/...";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Also call this MES Web API URL with the token (a GET).
    #[arg(long, value_name = "URL")]
    mes: Option<String>,

    /// The largest acceptable difference between the local and the server's
    /// clock, in seconds (IdentityServer tolerates 5 minutes).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    max_clock_skew: u64,
}

/// The doctor's output and verdict.
struct Report {
    first_failure: Option<(&'static str, u8)>,
}

impl Report {
    fn pass(&mut self, step: &str, detail: impl AsRef<str>) {
        println!("PASS  {step:<10} {}", detail.as_ref());
    }

    fn fail(
        &mut self,
        step: &'static str,
        code: u8,
        reason: impl AsRef<str>,
        fix: impl AsRef<str>,
    ) {
        println!("FAIL  {step:<10} {}", reason.as_ref());
        println!("      {:<10} fix: {}", "", fix.as_ref());
        self.first_failure.get_or_insert((step, code));
    }

    fn skip(&mut self, step: &str, why: &str) {
        println!("SKIP  {step:<10} {why}");
    }

    fn failed(&self) -> bool {
        self.first_failure.is_some()
    }

    fn finish(self) -> u8 {
        match self.first_failure {
            None => {
                println!("all checks passed");
                exit::OK
            }
            Some((step, code)) => {
                println!("check failed at step {step} (exit code {code})");
                code
            }
        }
    }
}

const EARLIER: &str = "an earlier step failed";

pub(crate) async fn run(global: &Global, args: Args) -> u8 {
    let mut report = Report {
        first_failure: None,
    };

    // config: everything that needs no network.
    let client = match global.client() {
        Ok(c) => c,
        Err(f) => {
            report.fail(
                "config",
                f.code,
                f.message,
                "set AIM_AUTHORITY, AIM_CLIENT_ID and AIM_CLIENT_SECRET (or the flags)",
            );
            return report.finish();
        }
    };
    let base = match url::Url::parse(client.authority()) {
        Ok(u) if u.host_str().is_some() => u,
        _ => {
            report.fail(
                "config",
                exit::USAGE,
                format!("cannot resolve the authority {:?}", client.authority()),
                "use a host name such as sms01.plant.local or https://sms01.plant.local/identitymanager",
            );
            return report.finish();
        }
    };
    let host = base.host_str().unwrap_or_default().to_owned();
    let port = base.port_or_known_default().unwrap_or(443);
    report.pass(
        "config",
        format!("authority {base}, client ID {}", client.client_id()),
    );

    // dns
    progress(&format!("resolving {host}"));
    let addrs = match tokio::time::timeout(
        global.timeout(),
        tokio::net::lookup_host((host.trim_matches(['[', ']']), port)),
    )
    .await
    {
        Ok(Ok(addrs)) => addrs.collect::<Vec<SocketAddr>>(),
        Ok(Err(e)) => {
            report.fail("dns", exit::NETWORK, format!("cannot resolve {host}: {e}"),
                "check the host name in --authority / AIM_AUTHORITY (the SMS node's FQDN) and this machine's DNS");
            Vec::new()
        }
        Err(_) => {
            report.fail(
                "dns",
                exit::NETWORK,
                format!("resolving {host} timed out"),
                "check this machine's DNS server",
            );
            Vec::new()
        }
    };
    if !report.failed() {
        let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        report.pass("dns", format!("{host} -> {}", list.join(", ")));
    }

    // tcp
    let tcp = if report.failed() {
        report.skip("tcp", EARLIER);
        None
    } else {
        progress(&format!("connecting to {host}:{port}"));
        connect(&mut report, &addrs, port, global.timeout()).await
    };

    // tls
    match (tcp, base.scheme()) {
        (Some(tcp), "https") => {
            progress("TLS handshake");
            let pem = global.ca_pem().ok().flatten();
            match tokio::time::timeout(
                global.timeout(),
                crate::tls::probe(tcp, host.trim_matches(['[', ']']), pem.as_deref()),
            )
            .await
            {
                Ok(Ok(tls)) => {
                    let what = format!(
                        "{}; subject {}; issuer {}{}; valid until {}",
                        tls.version,
                        tls.subject,
                        tls.issuer,
                        if tls.self_signed {
                            " (self-signed)"
                        } else {
                            ""
                        },
                        tls.not_after
                    );
                    match tls.trust {
                        Ok(()) => report.pass("tls", format!("{what}; trusted")),
                        Err((why, fix)) => {
                            report.fail("tls", exit::TLS, format!("{what}; {why}"), fix)
                        }
                    }
                }
                Ok(Err(e)) => report.fail(
                    "tls",
                    exit::TLS,
                    e,
                    "check that AIM serves https on this port (the IIS binding of the SMS node)",
                ),
                Err(_) => report.fail(
                    "tls",
                    exit::TLS,
                    "the TLS handshake timed out",
                    "check that AIM serves https on this port",
                ),
            }
        }
        (Some(_), _) => report.skip("tls", "plain http (allowed for loopback only)"),
        (None, _) => report.skip("tls", EARLIER),
    }

    // discovery (also gives the server's Date for the clock step)
    let mut server_date = None;
    if report.failed() {
        report.skip("discovery", EARLIER);
    } else {
        progress("fetching the discovery document");
        server_date = discovery(&mut report, global, &base).await;
    }

    // token
    let token = if report.failed() {
        report.skip("token", EARLIER);
        None
    } else {
        progress("requesting a token");
        match client.token().await {
            Ok(token) => {
                report.pass(
                    "token",
                    format!(
                        "{} token, lifetime {}, scopes: {}",
                        token.token_type(),
                        human(token.lifetime()),
                        scopes_text(token.scopes())
                    ),
                );
                Some(token)
            }
            Err(e) => {
                report.fail("token", exit::for_error(&e), e.to_string(), token_fix(&e));
                None
            }
        }
    };

    // claims
    match &token {
        Some(token) => claims(&mut report, token, client.client_id()),
        None => report.skip("claims", "no token"),
    }

    // clock
    match server_date {
        Some((server, local)) => match clock_verdict(server, local, args.max_clock_skew) {
            Ok(detail) => report.pass("clock", detail),
            Err(reason) => report.fail(
                "clock",
                exit::CLOCK,
                reason,
                "synchronize the clocks (w32tm /resync on Windows, chrony/timesyncd elsewhere): \
                 tokens will look expired or not yet valid",
            ),
        },
        None if report.failed() => report.skip("clock", EARLIER),
        None => report.skip("clock", "the server sent no Date header"),
    }

    // mes
    match (&args.mes, &token) {
        (None, _) => report.skip("mes", "no --mes URL given"),
        (Some(_), None) => report.skip("mes", "no token"),
        (Some(url), Some(token)) => {
            progress(&format!("calling MES at {url}"));
            mes(&mut report, global, url, token).await;
        }
    }

    report.finish()
}

async fn connect(
    report: &mut Report,
    addrs: &[SocketAddr],
    port: u16,
    timeout: Duration,
) -> Option<tokio::net::TcpStream> {
    let mut last = String::from("no address to connect to");
    for addr in addrs {
        let started = std::time::Instant::now();
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                report.pass(
                    "tcp",
                    format!(
                        "connected to {addr} in {} ms",
                        started.elapsed().as_millis()
                    ),
                );
                return Some(stream);
            }
            Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
            Err(_) => last = format!("connecting to {addr} timed out after {}", human(timeout)),
        }
    }
    report.fail(
        "tcp",
        exit::NETWORK,
        last,
        format!(
            "check that AIM (IIS) is running on the SMS node and that firewalls allow TCP port {port}"
        ),
    );
    None
}

/// Fetches discovery; returns the server's `Date` and the local time it arrived.
async fn discovery(
    report: &mut Report,
    global: &Global,
    base: &url::Url,
) -> Option<(SystemTime, SystemTime)> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        base.as_str().trim_end_matches('/')
    );
    let http = match global.http() {
        Ok(h) => h,
        Err(f) => {
            report.fail("discovery", f.code, f.message, "check --ca-cert");
            return None;
        }
    };
    let response = match http.get(&url).send().await {
        Ok(r) => r,
        Err(e) => {
            let (code, fix) = classify_http(&e);
            report.fail("discovery", code, format!("{url}: {}", chain(&e)), fix);
            return None;
        }
    };
    let local = SystemTime::now();
    let date = response
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .map(|server| (server, local));
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    if !status.is_success() {
        report.fail(
            "discovery",
            exit::OTHER,
            format!("{url}: HTTP {}", status.as_u16()),
            "check the authority: AIM's discovery lives at https://HOST/identitymanager/.well-known/openid-configuration",
        );
        return date;
    }
    let metadata: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => {
            report.fail(
                "discovery",
                exit::OTHER,
                format!("{url}: not a JSON discovery document"),
                "check the authority points at AIM (…/identitymanager), not another web site",
            );
            return date;
        }
    };
    let issuer = metadata.get("issuer").and_then(|v| v.as_str());
    if let Some(issuer) = issuer.filter(|i| !same_place(base, i)) {
        report.fail(
            "discovery",
            exit::OTHER,
            format!("the issuer is {issuer}, but the authority is {base}"),
            "configure the authority as the issuer AIM reports (often the FQDN AIM was installed with)",
        );
        return date;
    }
    let field = |name: &str| {
        metadata
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or("(missing)")
            .to_owned()
    };
    report.pass(
        "discovery",
        format!(
            "issuer {}; token endpoint {}; dynamic registration {}",
            field("issuer"),
            field("token_endpoint"),
            if metadata.get("registration_endpoint").is_some() {
                "offered"
            } else {
                "not offered"
            }
        ),
    );
    date
}

fn claims(report: &mut Report, token: &AccessToken, client_id: &str) {
    let jwt = match Jwt::parse(token.secret()) {
        Ok(jwt) => jwt,
        Err(_) => {
            report.pass("claims", "an opaque token (not a JWT): no claims to show");
            return;
        }
    };
    let now = SystemTime::now();
    let get = |c: &str| jwt.text(c).unwrap_or_else(|| "-".into());
    let mut detail = format!(
        "iss {}; aud {}; client_id {}; scope {}",
        get("iss"),
        get("aud"),
        get("client_id"),
        get("scope")
    );
    if let Some(exp) = jwt.time("exp") {
        detail.push_str(&format!("; expires {}", when(exp, now)));
        if let Some(lifetime) = jwt.time("iat").and_then(|iat| exp.duration_since(iat).ok()) {
            detail.push_str(&format!("; lifetime {}", human(lifetime)));
        }
        if exp <= now {
            report.fail(
                "claims",
                exit::CLOCK,
                format!("{detail}: already expired by this machine's clock"),
                "synchronize this machine's clock with the SMS node's",
            );
            return;
        }
    }
    if let Some(crate::decode::Date::OutOfRange(raw)) = jwt.date("exp") {
        detail.push_str(&format!("; exp {raw} is out of range"));
    }
    if jwt.text("client_id").is_some_and(|c| c != client_id) {
        detail.push_str(&format!(
            " (note: not the configured client ID {client_id})"
        ));
    }
    report.pass("claims", format!("{detail} (signature not verified)"));
}

async fn mes(report: &mut Report, global: &Global, url: &str, token: &AccessToken) {
    let http = match global.http() {
        Ok(h) => h,
        Err(f) => {
            report.fail("mes", f.code, f.message, "check --ca-cert");
            return;
        }
    };
    // The library's rule, not a copy: the token goes over https, or plain
    // http only to this machine.
    if let Err(e) = aim_token::check_token_destination(url) {
        report.fail(
            "mes",
            exit::USAGE,
            format!("{url}: the token was not sent: {e}"),
            "give --mes an https:// URL (plain http only to 127.0.0.1, ::1 or localhost)",
        );
        return;
    }
    match http.get(url).bearer_auth(token.secret()).send().await {
        Ok(r) if r.status().is_success() => {
            report.pass("mes", format!("{url}: HTTP {}", r.status().as_u16()))
        }
        Ok(r) if r.status().as_u16() == 401 => report.fail(
            "mes",
            exit::AUTH,
            format!("{url}: HTTP 401, MES rejected the token"),
            "MES must trust this AIM: check that MES is configured with the same AIM server (authority) that issued the token",
        ),
        Ok(r) if r.status().as_u16() == 403 => report.fail(
            "mes",
            exit::AUTH,
            format!("{url}: HTTP 403, the token is valid but the call is not allowed"),
            "service calls run as MES's Default Background User (system attribute 199): grant it the privilege this call needs",
        ),
        Ok(r) => report.fail(
            "mes",
            exit::OTHER,
            format!("{url}: HTTP {}", r.status().as_u16()),
            "check the MES URL (https://HOST/mesmw/api/...)",
        ),
        Err(e) => {
            let (code, fix) = classify_http(&e);
            report.fail("mes", code, format!("{url}: {}", chain(&e)), fix);
        }
    }
}

/// Whether `issuer` names the same place as `base`: scheme, host and port,
/// path ignoring case and a trailing slash.
fn same_place(base: &url::Url, issuer: &str) -> bool {
    let Ok(issuer) = url::Url::parse(issuer.trim()) else {
        return false;
    };
    base.scheme() == issuer.scheme()
        && base.host_str().map(str::to_ascii_lowercase)
            == issuer.host_str().map(str::to_ascii_lowercase)
        && base.port_or_known_default() == issuer.port_or_known_default()
        && base
            .path()
            .trim_end_matches('/')
            .eq_ignore_ascii_case(issuer.path().trim_end_matches('/'))
}

/// Compares the server's `Date` with the local time it arrived.
fn clock_verdict(
    server: SystemTime,
    local: SystemTime,
    max_skew_secs: u64,
) -> Result<String, String> {
    let (skew, ahead) = match server.duration_since(local) {
        Ok(d) => (d, "ahead of"),
        Err(e) => (e.duration(), "behind"),
    };
    if skew.as_secs() > max_skew_secs {
        Err(format!(
            "the server's clock is {} {ahead} this machine's (more than the {max_skew_secs} s allowed)",
            human(skew)
        ))
    } else {
        // Date has one-second resolution: less than that is noise.
        Ok(format!(
            "this machine's clock is within {} of the server's (Date header)",
            human(skew.max(Duration::from_secs(1)))
        ))
    }
}

/// Granted scopes for a message; AIM may report none.
pub(crate) fn scopes_text(scopes: &[String]) -> String {
    if scopes.is_empty() {
        "(none reported)".into()
    } else {
        scopes.join(" ")
    }
}

fn token_fix(err: &aim_token::Error) -> &'static str {
    match (err.kind(), err.oauth_error()) {
        (ErrorKind::OAuth, Some("invalid_client")) => {
            "check AIM_CLIENT_ID and AIM_CLIENT_SECRET against the registration \
             (Get-IdentityManagerClient on the SMS node) and that the client is enabled"
        }
        (ErrorKind::OAuth, Some("invalid_scope")) => {
            "request only scopes in the client's ScopeRestrictions (--scope / AIM_SCOPE), or none"
        }
        (ErrorKind::OAuth, Some("unauthorized_client")) => {
            "allow the ClientCredentials grant type for this client in AIM"
        }
        (ErrorKind::Tls, _) => "trust the PCS root CA with --ca-cert FILE or AIM_CA_CERT",
        (ErrorKind::Transport | ErrorKind::Timeout, _) => {
            "check that AIM is reachable from this machine"
        }
        _ => "see the reason above",
    }
}

/// The exit code and fix for a failed request of the doctor's own.
fn classify_http(err: &reqwest::Error) -> (u8, &'static str) {
    if is_tls(err) {
        (
            exit::TLS,
            "trust the PCS root CA with --ca-cert FILE or AIM_CA_CERT",
        )
    } else if err.is_timeout() || err.is_connect() {
        (
            exit::NETWORK,
            "check that the server is reachable from this machine",
        )
    } else {
        (exit::OTHER, "see the reason above")
    }
}

/// Whether a rustls error is in the source chain (reqwest wraps it in an
/// `io::Error`). Not by the text: the message carries the URL, and a host or
/// path with "tls" or "certificate" in it must not make a refused connection
/// a TLS failure.
fn is_tls(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    // Bounded, in case of a cyclic chain.
    for _ in 0..32 {
        let Some(e) = next else { return false };
        if e.is::<rustls::Error>() {
            return true;
        }
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_comparison() {
        let base = url::Url::parse("https://sms01.plant.local/identitymanager").unwrap();
        assert!(same_place(
            &base,
            "https://SMS01.plant.local:443/IdentityManager/"
        ));
        assert!(!same_place(&base, "https://sms01/identitymanager"));
        assert!(!same_place(
            &base,
            "http://sms01.plant.local/identitymanager"
        ));
        assert!(!same_place(&base, "not a url"));
    }

    /// A refused connection to a URL that says "tls" and "certificate" is a
    /// network failure, not a TLS one.
    #[tokio::test]
    async fn a_url_naming_tls_does_not_make_a_connect_error_tls() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = reqwest::get(format!("http://127.0.0.1:{port}/tls/certificate/handshake"))
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert_eq!(classify_http(&err).0, exit::NETWORK, "{}", chain(&err));
    }

    #[cfg(feature = "emulator")]
    #[tokio::test]
    async fn an_untrusted_certificate_is_tls() {
        let emu = aim_token::emulator::AimEmulator::builder()
            .https(true)
            .start()
            .await
            .unwrap();
        let err = reqwest::get(emu.authority()).await.unwrap_err();
        assert_eq!(classify_http(&err).0, exit::TLS, "{}", chain(&err));
    }

    #[test]
    fn clock_verdicts() {
        let now = SystemTime::now();
        let s = |secs| Duration::from_secs(secs);
        assert!(clock_verdict(now, now, 300).unwrap().contains("within 1s"));
        assert!(clock_verdict(now + s(300), now, 300).is_ok());
        let behind = clock_verdict(now - s(3600), now, 300).unwrap_err();
        assert!(behind.contains("1h 0m 0s behind"), "{behind}");
        let ahead = clock_verdict(now + s(301), now, 300).unwrap_err();
        assert!(ahead.contains("ahead of"), "{ahead}");
    }
}
