//! The global flags (mirroring the AIM_* variables) and the client built from them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use aim_token::{AimClient, AimClientBuilder};

use crate::exit;

#[derive(clap::Args)]
pub(crate) struct Global {
    /// The AIM server: sms01, sms01.plant.local, https://sms01.plant.local or
    /// https://sms01/identitymanager.
    #[arg(long, env = "AIM_AUTHORITY", global = true, value_name = "URL")]
    pub(crate) authority: Option<String>,

    /// The client ID registered with AIM.
    #[arg(long, env = "AIM_CLIENT_ID", global = true, value_name = "ID")]
    pub(crate) client_id: Option<String>,

    /// The client secret. Prefer AIM_CLIENT_SECRET: flags are visible in process lists.
    #[arg(
        long,
        env = "AIM_CLIENT_SECRET",
        global = true,
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub(crate) client_secret: Option<String>,

    /// A scope to request (repeatable; AIM_SCOPE separates them with spaces or commas). None: AIM's default.
    #[arg(
        long = "scope",
        env = "AIM_SCOPE",
        global = true,
        value_delimiter = ' ',
        value_name = "SCOPE"
    )]
    pub(crate) scopes: Vec<String>,

    /// A PEM file with the CA that issued AIM's certificate (the PCS root CA),
    /// trusted in addition to the operating system's store.
    #[arg(long, env = "AIM_CA_CERT", global = true, value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,

    /// Seconds to wait for each network step.
    #[arg(long, global = true, default_value_t = 15, value_name = "SECONDS")]
    pub(crate) timeout: u64,
}

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
            .field("ca_cert", &self.ca_cert)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A failure before any network I/O, with its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) code: u8,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: exit::USAGE,
        }
    }

    /// Prints the failure and returns its exit code.
    pub(crate) fn report(self) -> u8 {
        eprintln!("error: {}", self.message);
        self.code
    }
}

impl Global {
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.max(1))
    }

    pub(crate) fn authority(&self) -> Result<&str, Failure> {
        self.authority
            .as_deref()
            .filter(|a| !a.trim().is_empty())
            .ok_or_else(|| {
                Failure::usage("no authority: pass --authority HOST or set AIM_AUTHORITY")
            })
    }

    /// The scopes, split as `AimClientBuilder::from_env` splits AIM_SCOPE:
    /// at commas and whitespace, so one variable means the same to the app
    /// and to this tool.
    pub(crate) fn scopes(&self) -> Vec<String> {
        self.scopes
            .iter()
            .flat_map(|s| s.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The PEM bytes of `--ca-cert`, if given.
    pub(crate) fn ca_pem(&self) -> Result<Option<Vec<u8>>, Failure> {
        let Some(path) = &self.ca_cert else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|e| {
            Failure::usage(format!(
                "cannot read the CA certificate {}: {e}",
                path.display()
            ))
        })?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(Failure::usage(format!(
                "{} is not a PEM certificate (no -----BEGIN CERTIFICATE-----); \
                 export the PCS root CA as Base-64 encoded X.509",
                path.display()
            )));
        }
        Ok(Some(pem))
    }

    /// A builder with the authority, trust and timeouts (no credentials).
    pub(crate) fn connection(&self) -> Result<AimClientBuilder, Failure> {
        let mut builder = AimClient::builder()
            .authority(self.authority()?)
            .connect_timeout(self.timeout())
            .request_timeout(self.timeout())
            .retry_deadline(self.timeout())
            .background_refresh(false);
        if let Some(pem) = self.ca_pem()? {
            builder = builder.root_certificate_pem(pem);
        }
        Ok(builder)
    }

    /// The client ID, or the error that says how to give one.
    pub(crate) fn client_id(&self) -> Result<&str, Failure> {
        self.client_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Failure::usage("no client ID: pass --client-id ID or set AIM_CLIENT_ID"))
    }

    /// A token client from the flags.
    pub(crate) fn client(&self) -> Result<AimClient, Failure> {
        self.client_builder()?
            .build()
            .map_err(|e| Failure::usage(e.to_string()))
    }

    /// The builder of [`client`](Self::client), to refine before building.
    pub(crate) fn client_builder(&self) -> Result<AimClientBuilder, Failure> {
        let connection = self.connection()?;
        let client_id = self.client_id()?;
        let secret = self
            .client_secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Failure::usage("no client secret: set AIM_CLIENT_SECRET"))?;
        Ok(connection
            .client_id(client_id)
            .client_secret(secret)
            .scopes(self.scopes()))
    }

    /// An HTTP client for the doctor's own requests: same trust, no redirects.
    pub(crate) fn http(&self) -> Result<reqwest::Client, Failure> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.timeout())
            .timeout(self.timeout());
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

/// Writes progress for a slow step on stderr, when a person is watching.
pub(crate) fn progress(message: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprintln!("... {message}");
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
