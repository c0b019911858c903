//! `aim-token check`: the doctor. Each step passes or fails with the reason
//! and the fix; the exit code is the class of the first failure.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use aim_token::AccessToken;

use crate::advice::{self, Advice};
use crate::config::{clear_progress, progress, Global};
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
        clear_progress();
        println!("PASS  {step:<10} {}", detail.as_ref());
    }

    fn fail(
        &mut self,
        step: &'static str,
        code: u8,
        reason: impl AsRef<str>,
        fix: impl AsRef<str>,
    ) {
        clear_progress();
        println!("FAIL  {step:<10} {}", reason.as_ref());
        println!("      {:<10} fix: {}", "", fix.as_ref());
        self.first_failure.get_or_insert((step, code));
    }

    fn skip(&mut self, step: &str, why: &str) {
        clear_progress();
        println!("SKIP  {step:<10} {why}");
    }

    fn failed(&self) -> bool {
        self.first_failure.is_some()
    }

    fn finish(self) -> u8 {
        clear_progress();
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
            let fix = f
                .fix
                .as_deref()
                .unwrap_or("set AIM_AUTHORITY, AIM_CLIENT_ID and AIM_CLIENT_SECRET (or the flags)");
            report.fail("config", f.code, &f.message, fix);
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

    // dns, tcp, tls: direct connections, which a proxy replaces.
    let proxy = global.proxy_for(base.as_str());
    match &proxy {
        Some(proxy) => {
            let why = format!(
                "a proxy is configured ({proxy}): the discovery and token steps test the way to AIM"
            );
            for step in ["dns", "tcp", "tls"] {
                report.skip(step, &why);
            }
        }
        None => direct_steps(&mut report, global, &base, &host, port).await,
    }

    // discovery (also gives the server's Date for the clock step)
    let mut server_date = None;
    if report.failed() {
        report.skip("discovery", EARLIER);
    } else {
        progress("fetching the discovery document");
        server_date = discovery(&mut report, global, &base, proxy.as_deref()).await;
    }

    // token
    let token = if report.failed() {
        report.skip("token", EARLIER);
        None
    } else {
        progress("requesting a token");
        match client.token().await {
            Ok(token) => {
                let detail = format!(
                    "{} token, lifetime {}, scopes: {}",
                    token.token_type(),
                    human(token.lifetime()),
                    scopes_text(token.scopes())
                );
                match missing_scopes(&global.scopes(), &token) {
                    None => report.pass("token", detail),
                    Some(missing) => report.fail(
                        "token",
                        exit::AUTH,
                        format!("{detail}; AIM did not grant the requested {missing}"),
                        "allow the scope for this client in AIM (its ScopeRestrictions, \
                         Update-IdentityManagerClient on the SMS node), or stop requesting it (--scope / AIM_SCOPE)",
                    ),
                }
                Some(token)
            }
            Err(e) => {
                let advice = advice::token_error(
                    &e,
                    advice::Context {
                        host: &host,
                        timeout: global.timeout(),
                        reached: true,
                        proxy: proxy.as_deref(),
                    },
                );
                report.fail("token", advice.code, advice.reason, advice.fix);
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

/// The steps that connect directly: dns, tcp, tls.
async fn direct_steps(
    report: &mut Report,
    global: &Global,
    base: &url::Url,
    host: &str,
    port: u16,
) {
    let host = host.to_owned();
    // dns
    progress(&format!("resolving {host}"));
    let addrs = match resolve(&host, port, global.timeout()).await {
        Ok(addrs) => addrs,
        Err(advice) => {
            report.fail("dns", advice.code, advice.reason, advice.fix);
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
        connect(report, &addrs, port, global.timeout()).await
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
                            "{}; subject {}; issuer {}{}; valid until {}; for {}",
                            tls.version,
                            tls.subject,
                            tls.issuer,
                            if tls.self_signed {
                                " (self-signed)"
                            } else {
                                ""
                            },
                            tls.not_after,
                            if tls.names.is_empty() {
                                "(no subject alternative names)".to_owned()
                            } else {
                                tls.names.join(", ")
                            }
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
                    // The TCP connection was accepted: a listener that never
                    // answers is a hung server or something holding the
                    // connection, not a certificate problem.
                    Err(_) => report.fail(
                        "tls",
                        exit::NETWORK,
                        format!(
                            "{host}:{port} accepted the connection but sent no TLS answer within {}",
                            human(global.timeout())
                        ),
                        "the server on that port is hung or something in between (a proxy, a firewall) \
                         holds the connection: check AIM (IIS) on the SMS node, or allow more time with --timeout SECONDS",
                    ),
                }
        }
        (Some(_), _) => report.skip("tls", "plain http (allowed for loopback only)"),
        (None, _) => report.skip("tls", EARLIER),
    }
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
    proxy: Option<&str>,
) -> Option<(SystemTime, SystemTime)> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        base.as_str().trim_end_matches('/')
    );
    let http = match global.http_for(&url) {
        Ok(h) => h,
        Err(f) => {
            report.fail("discovery", f.code, f.message, "check --ca-cert");
            return None;
        }
    };
    let response = match http.get(&url).send().await {
        Ok(r) => r,
        Err(e) => {
            let (code, through, fix) = classify_http(&e, proxy);
            report.fail(
                "discovery",
                code,
                format!("{url}: {through}{}", chain(&e)),
                fix,
            );
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
            advice::NOT_AIM_FIX,
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
                advice::NOT_AIM_FIX,
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
            "set --authority / AIM_AUTHORITY to the issuer AIM reports (often the FQDN AIM was installed with)",
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
    }
    if let Some(advice) = advice::clock_problem(&jwt, now) {
        report.fail(
            "claims",
            advice.code,
            format!("{detail}: {}", advice.reason),
            advice.fix,
        );
        return;
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
    let http = match global.http_for(url) {
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
        Ok(r) if r.status().as_u16() == 401 => {
            let stated = aim_token::__cli::bearer_reason(r.headers(), token)
                .map(|why| format!(": {why}"))
                .unwrap_or_default();
            report.fail(
                "mes",
                exit::AUTH,
                format!("{url}: HTTP 401, MES rejected the token{stated}"),
                "MES must trust this AIM: check that MES is configured with the same AIM server (authority) that issued the token",
            )
        }
        Ok(r) if r.status().as_u16() == 403 => report.fail(
            "mes",
            exit::AUTH,
            format!("{url}: HTTP 403, the token is valid but the call is not allowed"),
            "service calls run as MES's Default Background User (system attribute 199): grant it the privilege this call needs",
        ),
        // MES's 404 means a wrong route, a missing parameter or a missing
        // privilege (AVEVA's documentation): the fix names both.
        Ok(r) if r.status().as_u16() == 404 => report.fail(
            "mes",
            exit::OTHER,
            format!("{url}: HTTP 404"),
            "check the URL given with --mes (https://HOST/mesmw/api/v3/...); MES also answers 404 when its \
             Default Background User (system attribute 199) lacks the privilege for the entity",
        ),
        Ok(r) => report.fail(
            "mes",
            exit::OTHER,
            format!("{url}: HTTP {}", r.status().as_u16()),
            "check the URL given with --mes (https://HOST/mesmw/api/v3/...), and MES's log",
        ),
        Err(e) => match aim_token::__cli::find_rustls_error(&e) {
            Some(tls) => {
                let host = e.url().and_then(|u| u.host_str()).unwrap_or("MES");
                let (why, fix) = crate::tls::explain(tls, host, &crate::tls::Presented::default());
                // An untrusted issuer here, once AIM's passed: MES's CA.
                let fix = match tls {
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::UnknownIssuer
                        | rustls::CertificateError::BadSignature,
                    ) => "MES's certificate is not issued by a CA this machine trusts (it may be another CA than \
                          AIM's): add that CA to the --ca-cert / AIM_CA_CERT file, which may hold several CA \
                          certificates (concatenate the PEM files, e.g. the PCS root CA and MES's CA)"
                        .to_owned(),
                    _ => fix,
                };
                report.fail("mes", exit::TLS, format!("{url}: TLS with MES: {why}"), fix);
            }
            None => {
                let proxy = global.proxy_for(url);
                let (code, through, fix) = classify_http(&e, proxy.as_deref());
                report.fail("mes", code, format!("{url}: {through}{}", chain(&e)), fix);
            }
        },
    }
}

/// The requested scopes the token does not carry, if the token says what
/// it carries (the JWT's `scope` claim, else the answer's `scope`).
fn missing_scopes(requested: &[String], token: &AccessToken) -> Option<String> {
    let claimed = Jwt::parse(token.secret())
        .ok()
        .and_then(|jwt| jwt.text("scope"))
        .map(|text| text.split_whitespace().map(str::to_owned).collect());
    let granted: Vec<String> = match claimed {
        Some(scopes) => scopes,
        None => token.scopes().to_vec(),
    };
    let missing: Vec<&str> = requested
        .iter()
        .filter(|s| !granted.iter().any(|g| g == *s))
        .map(String::as_str)
        .collect();
    match missing.len() {
        0 => None,
        1 => Some(format!("scope {}", missing[0])),
        _ => Some(format!("scopes {}", missing.join(" "))),
    }
}

/// Resolves `host`, or the advice for a name that does not resolve.
pub(crate) async fn resolve(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, Advice> {
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host.trim_matches(['[', ']']), port))).await {
        Ok(Ok(addrs)) => Ok(addrs.collect()),
        Ok(Err(e)) => Err(Advice::new(
            exit::NETWORK,
            format!("cannot resolve {host}: {e}"),
            "check the host name in --authority / AIM_AUTHORITY (the SMS node's FQDN) and this machine's DNS",
        )),
        Err(_) => Err(Advice::new(
            exit::NETWORK,
            format!("resolving {host} timed out"),
            "check this machine's DNS server",
        )),
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
            human(Duration::from_secs(skew.as_secs().max(1)))
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

/// The exit code, where the request failed (through which proxy) and the
/// fix for a failed request of the doctor's own through `proxy`, if any.
fn classify_http(err: &reqwest::Error, proxy: Option<&str>) -> (u8, String, &'static str) {
    if is_tls(err) && advice::is_https_proxy(proxy) {
        (
            exit::TLS,
            format!("through the https proxy {}: ", proxy.unwrap_or_default()),
            advice::HTTPS_PROXY_TRUST_FIX,
        )
    } else if is_tls(err) {
        (exit::TLS, String::new(), crate::tls::TRUST_FIX)
    } else if let Some(proxy) = proxy.filter(|_| err.is_connect()) {
        // Through a proxy, connecting is the proxy's part (its tunnel).
        (
            exit::NETWORK,
            format!("through the proxy {proxy}: "),
            advice::PROXY_FIX,
        )
    } else if err.is_timeout() || err.is_connect() {
        (
            exit::NETWORK,
            String::new(),
            "check that the server is reachable from this machine",
        )
    } else {
        (exit::OTHER, String::new(), "see the reason above")
    }
}

fn is_tls(err: &(dyn std::error::Error + 'static)) -> bool {
    aim_token::__cli::find_rustls_error(err).is_some()
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
        assert_eq!(
            classify_http(&err, None).0,
            exit::NETWORK,
            "{}",
            chain(&err)
        );
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
        assert_eq!(classify_http(&err, None).0, exit::TLS, "{}", chain(&err));
    }

    #[test]
    fn clock_verdicts() {
        let now = SystemTime::now();
        let s = |secs| Duration::from_secs(secs);
        assert!(clock_verdict(now, now, 300).unwrap().contains("within 1 s"));
        assert!(clock_verdict(now + s(300), now, 300).is_ok());
        let behind = clock_verdict(now - s(3600), now, 300).unwrap_err();
        assert!(behind.contains("1 h behind"), "{behind}");
        let ahead = clock_verdict(now + s(301), now, 300).unwrap_err();
        assert!(ahead.contains("ahead of"), "{ahead}");
    }
}
