//! The global flags (mirroring the AIM_* variables) and the client built from them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use aim_token::{AimClient, AimClientBuilder};

use crate::exit;

#[derive(clap::Args, Clone)]
pub(crate) struct Global {
    /// The AIM server: sms01, sms01.plant.local, https://sms01.plant.local or
    /// https://sms01/identitymanager.
    #[arg(long, env = "AIM_AUTHORITY", global = true, value_name = "URL")]
    pub(crate) authority: Option<String>,

    /// The client ID registered with AIM.
    #[arg(long, env = "AIM_CLIENT_ID", global = true, value_name = "ID")]
    pub(crate) client_id: Option<String>,

    /// The client secret. Prefer AIM_CLIENT_SECRET or AIM_CLIENT_SECRET_FILE
    /// (a file holding it; or systemd's $CREDENTIALS_DIRECTORY/aim_client_secret):
    /// flags are visible in process lists.
    #[arg(
        long,
        env = "AIM_CLIENT_SECRET",
        global = true,
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub(crate) client_secret: Option<String>,

    /// Whether `client_secret` came from the flag (set by `main`): otherwise
    /// the library finds the secret, files included, as `from_env` does.
    #[arg(skip)]
    pub(crate) secret_from_flag: bool,

    /// A scope to request (repeatable; AIM_SCOPE separates them with spaces or commas). None: AIM's default.
    #[arg(
        long = "scope",
        env = "AIM_SCOPE",
        global = true,
        value_delimiter = ' ',
        value_name = "SCOPE"
    )]
    pub(crate) scopes: Vec<String>,

    /// The CA that issued AIM's certificate (the PCS root CA), a PEM or DER
    /// (.cer) file, trusted in addition to the operating system's store.
    #[arg(long, env = "AIM_CA_CERT", global = true, value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,

    /// An HTTP proxy for every request, e.g. http://proxy.plant.local:3128.
    /// Without it HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY apply.
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) proxy: Option<String>,

    /// Seconds to wait for each network step (at least 1).
    #[arg(
        long,
        global = true,
        default_value_t = 15,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub(crate) timeout: u64,
}

/// Where the secret goes, whatever was wrong with it.
const SECRET_FIX: &str = "set AIM_CLIENT_SECRET to the secret registered with AIM, \
     or AIM_CLIENT_SECRET_FILE to a readable file holding it (not both)";

/// What to give as the CA file when the one given holds no certificate.
const CA_EXPORT_FIX: &str = "export the PCS root CA as Base-64 encoded X.509 (certutil -encode ca.cer ca.pem) and give that file with --ca-cert / AIM_CA_CERT";

/// `[redacted]` for a secret that is set: what every secret-holding flag
/// shows in `Debug`.
pub(crate) fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "[redacted]")
}

impl fmt::Debug for Global {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Global")
            .field("authority", &self.authority)
            .field("client_id", &self.client_id)
            .field("client_secret", &redacted(&self.client_secret))
            .field("scopes", &self.scopes)
            .field("secret_from_flag", &self.secret_from_flag)
            .field("ca_cert", &self.ca_cert)
            .field(
                "proxy",
                &self
                    .proxy
                    .as_deref()
                    .map(aim_token::__cli::without_userinfo),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A failure before any network I/O, with its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    /// What to do, when the message does not already say it.
    pub(crate) fix: Option<String>,
    pub(crate) code: u8,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            fix: None,
            code: exit::USAGE,
        }
    }

    /// A usage failure with its fix.
    pub(crate) fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// Prints the failure and returns its exit code.
    pub(crate) fn report(self) -> u8 {
        clear_progress();
        eprintln!("error: {}", self.message);
        if let Some(fix) = &self.fix {
            eprintln!("fix: {fix}");
        }
        self.code
    }
}

impl Global {
    /// The proxy a request to `url` goes through, for output (password
    /// hidden): `--proxy`, else the variables as reqwest reads them
    /// (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY; NO_PROXY exempts hosts).
    pub(crate) fn proxy_for(&self, url: &str) -> Option<String> {
        aim_token::__cli::proxy_shown_for(self.proxy.as_deref(), url)
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    pub(crate) fn authority(&self) -> Result<&str, Failure> {
        self.authority
            .as_deref()
            .filter(|a| !a.trim().is_empty())
            .ok_or_else(|| {
                Failure::usage("no authority").fix("pass --authority HOST or set AIM_AUTHORITY")
            })
    }

    /// The scopes, split as `AimClientBuilder::from_env` splits AIM_SCOPE:
    /// at commas and whitespace, so one variable means the same to the app
    /// and to this tool.
    pub(crate) fn scopes(&self) -> Vec<String> {
        aim_token::__cli::scope_list(&self.scopes)
    }

    /// The PEM bytes of `--ca-cert`, if given.
    pub(crate) fn ca_pem(&self) -> Result<Option<Vec<u8>>, Failure> {
        let Some(path) = &self.ca_cert else {
            return Ok(None);
        };
        // The library reads it, as it reads AIM_CA_CERT for from_env.
        let pem = aim_token::__cli::read_ca_file(path).map_err(|e| match e {
            aim_token::__cli::CaFileError::Unreadable(e) => Failure::usage(format!(
                "cannot read the CA certificate {}: {e}",
                path.display()
            ))
            .fix(
                "check the path given with --ca-cert / AIM_CA_CERT and that this user may read the file",
            ),
            aim_token::__cli::CaFileError::NotACertificate(why) => Failure::usage(format!(
                "the CA file {} holds no usable certificate: {why}",
                path.display()
            ))
            .fix(CA_EXPORT_FIX),
        })?;
        Ok(Some(pem))
    }

    /// A builder with the authority, trust and timeouts (no credentials).
    pub(crate) fn connection(&self) -> Result<AimClientBuilder, Failure> {
        let builder = self.connection_without_ca()?;
        Ok(match self.ca_pem()? {
            Some(pem) => builder.root_certificate_pem(pem),
            None => builder,
        })
    }

    /// [`connection`](Self::connection) without `--ca-cert`.
    fn connection_without_ca(&self) -> Result<AimClientBuilder, Failure> {
        let mut builder = AimClient::builder()
            .authority(self.authority()?)
            .connect_timeout(self.timeout())
            .request_timeout(self.timeout())
            .retry_deadline(self.timeout())
            .background_refresh(false);
        if let Some(proxy) = &self.proxy {
            builder = builder.proxy(proxy);
        }
        Ok(builder)
    }

    /// The client ID, or the error that says how to give one.
    pub(crate) fn client_id(&self) -> Result<&str, Failure> {
        // As the client reads it (AimClient::from_env): without cmd.exe's quotes.
        self.client_id
            .as_deref()
            .map(aim_token::__cli::client_id)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Failure::usage("no client ID").fix("pass --client-id ID or set AIM_CLIENT_ID")
            })
    }

    /// A token client from the flags.
    pub(crate) fn client(&self) -> Result<AimClient, Failure> {
        self.client_builder()?
            .build()
            .map_err(|e| self.build_failure(e))
    }

    /// The builder of [`client`](Self::client), to refine before building.
    pub(crate) fn client_builder(&self) -> Result<AimClientBuilder, Failure> {
        let connection = self.connection()?;
        let client_id = self.client_id()?;
        let connection = connection.client_id(client_id);
        // A secret of only whitespace is no secret: AIM would only say invalid_client.
        let connection = match self.client_secret.as_deref() {
            Some(secret) if self.secret_from_flag && !secret.trim().is_empty() => {
                connection.client_secret(secret)
            }
            Some(_) if self.secret_from_flag => {
                return Err(
                    Failure::usage("--client-secret is empty or only whitespace").fix(
                        "give the secret registered with AIM, preferably in AIM_CLIENT_SECRET",
                    ),
                )
            }
            _ => connection
                .client_secret_from_env()
                .map_err(|e| Failure::usage(e.to_string()).fix(SECRET_FIX))?,
        };
        Ok(connection.scopes(self.scopes()))
    }

    /// A build error in the tool's terms where it has its own (the
    /// library's text names builder methods).
    pub(crate) fn build_failure(&self, err: aim_token::Error) -> Failure {
        // Plain http to a remote host: the library's rule, asked by building
        // again with http allowed rather than copied here.
        let probe = |builder: Result<AimClientBuilder, Failure>| {
            builder.is_ok_and(|b| {
                b.client_id("probe")
                    .client_secret("probe")
                    .allow_insecure_http(true)
                    .build()
                    .is_ok()
            })
        };
        // A CA file that looks like PEM but holds no usable certificate.
        if let Some(path) = self
            .ca_cert
            .as_ref()
            .filter(|_| !probe(self.connection()) && probe(self.connection_without_ca()))
        {
            return Failure::usage(format!(
                "the CA file {} holds no usable certificate: {}",
                path.display(),
                crate::advice::root_cause(&err)
            ))
            .fix(CA_EXPORT_FIX);
        }
        // A --proxy the builder refuses: asked by building without it.
        let without_proxy = Global {
            proxy: None,
            ..self.clone()
        };
        if self.proxy.is_some() && !probe(self.connection()) && probe(without_proxy.connection()) {
            return Failure::usage(crate::advice::root_cause(&err)).fix(
                "give the proxy as --proxy http://HOST:PORT (or https://HOST:PORT), with USER:PASSWORD@ \
                 before the host if it asks for them",
            );
        }
        let builds = |allow_http: bool| {
            self.connection().is_ok_and(|b| {
                b.client_id("probe")
                    .client_secret("probe")
                    .allow_insecure_http(allow_http)
                    .build()
                    .is_ok()
            })
        };
        let insecure_http = !builds(false) && builds(true);
        if insecure_http {
            return Failure::usage(format!(
                "the authority {} uses plain http: the client secret would cross the network in clear text (plain http is accepted for loopback addresses only)",
                self.authority.as_deref().unwrap_or_default()
            ))
            .fix("give AIM's https address in --authority / AIM_AUTHORITY (just the host name means https://HOST/identitymanager)");
        }
        // The authority alone, by the library's rules (which it checks first).
        let authority_builds = self.authority().is_ok_and(|authority| {
            AimClient::builder()
                .authority(authority)
                .client_id("probe")
                .client_secret("probe")
                .allow_insecure_http(true)
                .build()
                .is_ok()
        });
        if !authority_builds {
            // The library's reason, without its advice (which names its methods).
            let message = err.to_string();
            let reason = message.split("; ").next().unwrap_or(&message);
            return Failure::usage(format!("--authority / AIM_AUTHORITY: {reason}")).fix(
                "give the AIM server as its host name (sms01.plant.local, optionally :PORT) or as \
                 https://sms01.plant.local/identitymanager, without user info, query or quotes",
            );
        }
        Failure::usage(err.to_string())
            .fix("correct the setting the reason names: its flag or AIM_* variable (see aim-token --help)")
    }

    /// An HTTP client for the doctor's own requests: same trust, no redirects.
    /// The client for requests to `url`: through the proxy, unless the
    /// library's rule sends it direct (plain http to loopback).
    pub(crate) fn http_for(&self, url: &str) -> Result<reqwest::Client, Failure> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.timeout())
            .timeout(self.timeout());
        if aim_token::__cli::goes_direct(url) {
            builder = builder.no_proxy();
        } else if let Some(url) = &self.proxy {
            // The builder's rule, so the doctor goes the client's way.
            let proxy = aim_token::__cli::proxy(url).map_err(|e| {
                Failure::usage(format!("--proxy: {e}"))
                    .fix("give the proxy as --proxy http://HOST:PORT")
            })?;
            builder = builder.proxy(proxy);
        }
        if let Some(pem) = self.ca_pem()? {
            reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Failure::usage(format!("the CA certificate is not valid PEM: {e}")))?;
            // The OS store plus the CA, by the library's rule.
            let tls = aim_token::__cli::tls_config_with_roots(&[pem])
                .map_err(|e| Failure::usage(e.to_string()))?;
            builder = builder.tls_backend_preconfigured(tls);
        }
        builder
            .build()
            .map_err(|e| Failure::usage(format!("cannot set up HTTP: {e}")))
    }
}

/// Whether a progress line is showing (and must be cleared before output).
static PROGRESS_SHOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Shows progress for a slow step on stderr, when a person is watching: one
/// line, overwritten by the next step and cleared by [`clear_progress`].
pub(crate) fn progress(message: &str) {
    use std::io::{IsTerminal, Write};
    let mut stderr = std::io::stderr();
    if stderr.is_terminal() {
        // Carriage return and "erase line": the next message takes its place.
        let _ = write!(stderr, "\r\x1b[2K... {message}");
        let _ = stderr.flush();
        PROGRESS_SHOWN.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Erases the progress line, if one is showing, before real output.
pub(crate) fn clear_progress() {
    use std::io::Write;
    if PROGRESS_SHOWN.swap(false, std::sync::atomic::Ordering::Relaxed) {
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, "\r\x1b[2K");
        let _ = stderr.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        global: Global,
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let cli = Cli::parse_from([
            "aim-token",
            "--client-id",
            "svc",
            "--client-secret",
            "hunter2-secret",
        ]);
        let shown = format!("{cli:?} {cli:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("[redacted]") && shown.contains("svc"),
            "{shown}"
        );
    }
}
