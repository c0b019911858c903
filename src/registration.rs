//! Registering a client ID with AIM: RFC 7591 dynamic registration where the
//! provider offers it, and the `Add-IdentityManagerClient` command for the
//! AIM administrator where it does not (AIM today).

pub(crate) mod dcr;
mod powershell;

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};

use crate::client::AimClientBuilder;
use crate::error::{Error, Result};

pub use dcr::{RegisteredClient, SecretExpiry};

/// The longest client ID, name, scope or secret accepted, in characters.
const MAX_LEN: usize = 200;

/// The grant type of MES service clients.
const CLIENT_CREDENTIALS: &str = "client_credentials";

/// A client to register with AIM: its ID, secret, scopes and token lifetime.
///
/// Build it, then either
/// [`register`](Self::register) it through the provider's RFC 7591 endpoint
/// (with an initial access token), or hand the AIM administrator the
/// PowerShell command from [`to_powershell`](Self::to_powershell) — real AIM
/// has no registration endpoint today. [`verify`](Self::verify) then proves
/// the credentials work.
///
/// Setters never fail; problems surface, with what to fix, when the
/// registration is used (or from [`validate`](Self::validate)).
///
/// ## What AIM can take
///
/// * **client ID**: 1 to 200 of the RFC 3986 unreserved characters —
///   ASCII letters, digits, `-`, `.`, `_`, `~`. They need no encoding in a
///   URL, a form body, a Basic header or a PowerShell string.
/// * **secret**: 1 to 200 printable ASCII characters (space to `~`).
///   Anything else is a typing accident waiting to happen.
/// * **name**: up to 200 characters, no control characters.
/// * **scopes**: RFC 6749 scope tokens (printable ASCII without space, `"`
///   and `\`), up to 200 characters each.
/// * **lifetime**: whole seconds, from 1 s up to `i32::MAX` seconds (AIM
///   stores an `int`). Default 24 h, as the MES registration script.
///
/// ```
/// use aim_token::ClientRegistration;
/// use std::time::Duration;
///
/// let reg = ClientRegistration::new("mes-reporting")
///     .name("MES reporting service")
///     .generate_secret()
///     .scopes(["site.api"])
///     .access_token_lifetime(Duration::from_secs(8 * 3600));
/// let commands = reg.to_powershell("https://sms01.plant.local")?;
/// assert!(commands.starts_with("Add-IdentityManagerClient -HostBase 'https://sms01.plant.local' -Id 'mes-reporting'"));
/// assert!(!format!("{reg:?}").contains(reg.client_secret().unwrap()));
/// # Ok::<(), aim_token::Error>(())
/// ```
#[must_use]
#[derive(Clone)]
pub struct ClientRegistration {
    client_id: String,
    name: Option<String>,
    secret: Secret,
    scopes: Vec<String>,
    grant_types: Vec<String>,
    lifetime: Duration,
    enabled: bool,
    registration_endpoint: Option<String>,
}

#[derive(Clone)]
enum Secret {
    None,
    Given(SecretString),
    Generated(SecretString),
    /// The OS random generator failed; reported when the secret is needed.
    Failed(String),
}

impl ClientRegistration {
    /// A registration for `client_id`, enabled, for the client credentials
    /// grant, with a 24 h token lifetime and no secret yet.
    pub fn new(client_id: impl Into<String>) -> Self {
        ClientRegistration {
            client_id: client_id.into(),
            name: None,
            secret: Secret::None,
            scopes: Vec::new(),
            grant_types: vec![CLIENT_CREDENTIALS.to_owned()],
            lifetime: Duration::from_secs(24 * 3600),
            enabled: true,
            registration_endpoint: None,
        }
    }

    /// The secret to register. Prefer [`generate_secret`](Self::generate_secret).
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Secret::Given(SecretString::from(secret.into()));
        self
    }

    /// Generates the secret: 256 bits from the operating system's random
    /// generator, URL-safe base64 without padding (43 characters). Read it
    /// with [`client_secret`](Self::client_secret) to give it to the app.
    pub fn generate_secret(mut self) -> Self {
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        self.secret = match getrandom::fill(bytes.as_mut_slice()) {
            Ok(()) => Secret::Generated(SecretString::from(
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_slice()),
            )),
            Err(e) => Secret::Failed(e.to_string()),
        };
        self
    }

    /// The display name (`-Name`, RFC 7591 `client_name`). Default: the ID.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The scopes the client may request (`-ScopeRestrictions`, RFC 7591
    /// `scope`). Replaces any set before.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The grant types, as RFC 7591 names. Default `["client_credentials"]`,
    /// which is what a service needs; replaces any set before.
    pub fn grant_types<I, S>(mut self, grant_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.grant_types = grant_types.into_iter().map(Into::into).collect();
        self
    }

    /// The lifetime of the client's access tokens. Default 24 h.
    pub fn access_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Whether the client is enabled. Default true.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The RFC 7591 endpoint that [`register`](Self::register) posts to,
    /// instead of the `registration_endpoint` of the provider's discovery
    /// document. Discovery's endpoint is used only when it is on the
    /// authority's origin (scheme, host and port), so that a discovery
    /// document cannot send the initial access token elsewhere; set the
    /// endpoint here when the provider really registers clients at another
    /// origin. Checked like the authority (https, or http to loopback).
    pub fn registration_endpoint(mut self, url: impl Into<String>) -> Self {
        self.registration_endpoint = Some(url.into());
        self
    }

    /// The client ID.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The secret, given or generated: hand it to the app (e.g. as
    /// `AIM_CLIENT_SECRET`), then forget it.
    pub fn client_secret(&self) -> Option<&str> {
        match &self.secret {
            Secret::Given(s) | Secret::Generated(s) => Some(s.expose_secret()),
            Secret::None | Secret::Failed(_) => None,
        }
    }

    /// Whether the secret was generated by [`generate_secret`](Self::generate_secret).
    pub fn secret_is_generated(&self) -> bool {
        matches!(self.secret, Secret::Generated(_))
    }

    /// The scopes.
    pub fn scope_list(&self) -> &[String] {
        &self.scopes
    }

    /// The access token lifetime.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Checks everything AIM cannot take and says what to fix.
    pub fn validate(&self) -> Result<()> {
        check_client_id(&self.client_id)?;
        if let Some(name) = &self.name {
            check_name(name)?;
        }
        match &self.secret {
            Secret::Given(s) => check_secret(s.expose_secret())?,
            Secret::Failed(e) => {
                return Err(Error::config(format!(
                "could not generate a secret: the operating system's random generator failed: {e}"
            )))
            }
            Secret::None | Secret::Generated(_) => {}
        }
        for scope in &self.scopes {
            check_token("scope", scope)?;
        }
        if self.grant_types.is_empty() {
            return Err(Error::config(
                "no grant type: a service client needs \"client_credentials\"",
            ));
        }
        for grant in &self.grant_types {
            check_token("grant type", grant)?;
        }
        lifetime_secs(self.lifetime)?;
        Ok(())
    }

    /// The secret, or an error saying how to set one.
    fn required_secret(&self) -> Result<&str> {
        self.validate()?;
        self.client_secret().ok_or_else(|| {
            Error::config("no client secret: call .secret(...) or .generate_secret()")
        })
    }

    /// The display name: the one set, else the ID.
    fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.client_id)
    }

    /// The `Add-IdentityManagerClient` command that registers this client on
    /// the AIM server, and on a second line the `Get-IdentityManagerClient`
    /// command that shows it was registered. Run them in an elevated
    /// PowerShell on the System Management Server.
    ///
    /// `host_base` is the AIM server as `https://FQDN` (`FQDN` alone and a
    /// trailing `/identitymanager` are accepted too).
    ///
    /// Every value is a PowerShell single-quoted string with `'` doubled, in
    /// which `$( )`, backticks and `"` are plain characters. Values that
    /// could still change the command's meaning or hide part of it —
    /// control characters (newlines, NUL, ...), Unicode line separators,
    /// bidirectional overrides and the quote lookalikes `‘ ’ ‚ ‛` that
    /// PowerShell treats as `'` — are rejected with an error naming the field.
    ///
    /// ```
    /// use aim_token::ClientRegistration;
    ///
    /// let ps = ClientRegistration::new("mes-reporting")
    ///     .name("O'Brien's $(calc) `n")
    ///     .secret("s3cr3t")
    ///     .scopes(["site.api"])
    ///     .to_powershell("sms01.plant.local")?;
    /// assert_eq!(ps.lines().next().unwrap(),
    ///     "Add-IdentityManagerClient -HostBase 'https://sms01.plant.local' -Id 'mes-reporting' \
    ///      -Name 'O''Brien''s $(calc) `n' -Secret 's3cr3t' -Enabled 1 \
    ///      -AllowedGrantTypes ClientCredentials -ScopeRestrictions 'site.api' -AccessTokenLifetime 86400");
    /// # Ok::<(), aim_token::Error>(())
    /// ```
    pub fn to_powershell(&self, host_base: &str) -> Result<String> {
        let secret = self.required_secret()?;
        let host_base = powershell::host_base(host_base)?;
        let quote = powershell::quote;
        let mut grants = Vec::with_capacity(self.grant_types.len());
        for grant in &self.grant_types {
            grants.push(powershell::grant_type(grant)?);
        }
        let mut add = format!(
            "Add-IdentityManagerClient -HostBase {} -Id {} -Name {} -Secret {} -Enabled {} -AllowedGrantTypes {}",
            quote("host base", &host_base)?,
            quote("client ID", &self.client_id)?,
            quote("name", self.display_name())?,
            quote("secret", secret)?,
            u8::from(self.enabled),
            grants.join(","),
        );
        if !self.scopes.is_empty() {
            let scopes = self
                .scopes
                .iter()
                .map(|s| quote("scope", s))
                .collect::<Result<Vec<_>>>()?;
            add.push_str(" -ScopeRestrictions ");
            add.push_str(&scopes.join(","));
        }
        add.push_str(&format!(
            " -AccessTokenLifetime {}",
            lifetime_secs(self.lifetime)?
        ));
        let get = format!(
            "Get-IdentityManagerClient -HostBase {} -Id {}",
            quote("host base", &host_base)?,
            quote("client ID", &self.client_id)?,
        );
        Ok(format!("{add}\n{get}"))
    }

    /// PowerShell comment lines to print after [`to_powershell`](Self::to_powershell):
    /// how to change the client later (`Update-IdentityManagerClient`), the
    /// restart of the AVEVA Identity Manager service that some registrations
    /// need, and `Get-RootCertificate`, the certificate AIM uses (the fix for
    /// an app that reports an untrusted certificate).
    pub fn powershell_follow_up() -> &'static str {
        powershell::FOLLOW_UP
    }

    /// Registers the client by RFC 7591 dynamic registration at the
    /// `registration_endpoint` that the provider's discovery document names,
    /// authorized by `initial_access_token` (`Authorization: Bearer`).
    ///
    /// `aim` says where and how to connect, as for the token client: its
    /// authority, extra trust anchors (`root_certificate_pem`), timeouts and
    /// `allow_insecure_http`. Its client ID and secret are not used.
    ///
    /// The provider may issue its own client ID and secret (most do); use
    /// the ones in the returned [`RegisteredClient`].
    ///
    /// # Errors
    ///
    /// * [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) when the
    ///   provider has no registration endpoint — real AIM today: render the
    ///   command with [`to_powershell`](Self::to_powershell) instead.
    /// * [`ErrorKind::OAuth`](crate::ErrorKind::OAuth) for an RFC 7591 error
    ///   answer: `invalid_token` (wrong initial access token),
    ///   `invalid_client_metadata` (a scope or grant the provider refuses), ...
    /// * [`ErrorKind::Config`](crate::ErrorKind::Config) for what
    ///   [`validate`](Self::validate) rejects, and for `enabled(false)`,
    ///   which RFC 7591 cannot express.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), aim_token::Error> {
    /// use aim_token::{AimClient, ClientRegistration};
    ///
    /// let ca = std::fs::read("pcs-root-ca.pem").unwrap_or_default();
    /// let aim = AimClient::builder().authority("sms01.plant.local").root_certificate_pem(ca);
    /// let registered = ClientRegistration::new("mes-reporting")
    ///     .scopes(["site.api"])
    ///     .register(&aim, "initial-access-token")
    ///     .await?;
    /// println!("client ID {}", registered.client_id());
    /// # Ok(()) }
    /// ```
    pub async fn register(
        &self,
        aim: &AimClientBuilder,
        initial_access_token: &str,
    ) -> Result<RegisteredClient> {
        self.validate()?;
        if !self.enabled {
            return Err(Error::config(
                "dynamic registration (RFC 7591) cannot register a disabled client: \
                 register it enabled, or use to_powershell with enabled(false)",
            ));
        }
        let request = dcr::RegistrationRequest {
            client_id: &self.client_id,
            client_secret: self.client_secret(),
            client_name: self.display_name(),
            grant_types: &self.grant_types,
            scope: (!self.scopes.is_empty()).then(|| self.scopes.join(" ")),
            access_token_lifetime: lifetime_secs(self.lifetime)?,
        };
        let connection = crate::config::ConnectionConfig::from_builder(aim)?;
        dcr::register(
            &connection,
            initial_access_token,
            &request,
            self.registration_endpoint.as_deref(),
        )
        .await
    }

    /// Fetches a token with this registration's client ID and secret through
    /// an [`AimClient`](crate::AimClient) built from `aim` (authority, trust,
    /// timeouts), requesting the registration's scopes, and reports what AIM
    /// actually granted. Use it after the administrator ran the
    /// [`to_powershell`](Self::to_powershell) command.
    pub async fn verify(&self, aim: AimClientBuilder) -> Result<Verification> {
        let secret = self.required_secret()?;
        verify(aim, &self.client_id, secret, &self.scopes).await
    }
}

impl fmt::Debug for ClientRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = match &self.secret {
            Secret::None => "none",
            Secret::Given(_) => "[redacted]",
            Secret::Generated(_) => "[redacted, generated]",
            Secret::Failed(_) => "generation failed",
        };
        f.debug_struct("ClientRegistration")
            .field("client_id", &self.client_id)
            .field("name", &self.name)
            .field("secret", &secret)
            .field("scopes", &self.scopes)
            .field("grant_types", &self.grant_types)
            .field("access_token_lifetime", &self.lifetime)
            .field("enabled", &self.enabled)
            .field(
                "registration_endpoint",
                &self
                    .registration_endpoint
                    .as_deref()
                    .map(crate::authority::without_userinfo),
            )
            .finish()
    }
}

/// What AIM granted a client when asked for a token: the outcome of
/// [`ClientRegistration::verify`] and [`RegisteredClient::verify`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Verification {
    /// The client ID that got the token.
    pub client_id: String,
    /// The token's lifetime as granted (`expires_in`, else the JWT `exp`).
    pub lifetime: Duration,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// When the token expires.
    pub expires_at: SystemTime,
    /// The AIM node that issued it.
    pub authority: String,
}

pub(crate) async fn verify(
    aim: AimClientBuilder,
    client_id: &str,
    secret: &str,
    scopes: &[String],
) -> Result<Verification> {
    let client = aim
        .client_id(client_id)
        .client_secret(secret)
        .scopes(scopes.iter().cloned())
        .background_refresh(false)
        .build()?;
    let token = client.token().await?;
    Ok(Verification {
        client_id: client_id.to_owned(),
        lifetime: token.lifetime(),
        scopes: token.scopes().to_vec(),
        expires_at: token.expires_at(),
        authority: token.authority().to_owned(),
    })
}

fn check_len(what: &str, value: &str) -> Result<()> {
    let n = value.chars().count();
    if n == 0 {
        return Err(Error::config(format!("the {what} is empty")));
    }
    if n > MAX_LEN {
        return Err(Error::config(format!(
            "the {what} is {n} characters long; AIM takes at most {MAX_LEN}"
        )));
    }
    Ok(())
}

fn check_client_id(id: &str) -> Result<()> {
    check_len("client ID", id)?;
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
    {
        return Err(Error::config(format!(
            "the client ID contains {}: use only ASCII letters, digits, '-', '.', '_' and '~'",
            describe(bad)
        )));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    check_len("name", name)?;
    if let Some(bad) = name.chars().find(|c| c.is_control()) {
        return Err(Error::config(format!(
            "the name contains {}: control characters are not allowed",
            describe(bad)
        )));
    }
    Ok(())
}

fn check_secret(secret: &str) -> Result<()> {
    check_len("secret", secret)?;
    // Never name the character: it is part of the secret.
    if !secret.chars().all(|c| matches!(c, ' '..='~')) {
        return Err(Error::config(
            "the secret contains a character outside printable ASCII (space to '~'); \
             use .generate_secret() for a safe one",
        ));
    }
    Ok(())
}

/// RFC 6749 §3.3 scope-token (grant types are drawn from the same set).
fn check_token(what: &str, value: &str) -> Result<()> {
    check_len(what, value)?;
    if let Some(bad) = value
        .chars()
        .find(|c| !matches!(c, '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e'))
    {
        return Err(Error::config(format!(
            "the {what} {value:?} contains {}: use printable ASCII without spaces, '\"' and '\\'",
            describe(bad)
        )));
    }
    Ok(())
}

fn lifetime_secs(lifetime: Duration) -> Result<u32> {
    let secs = lifetime.as_secs();
    if secs == 0 {
        return Err(Error::config(
            "the access token lifetime is shorter than one second; AIM needs at least 1 s (default 24 h)",
        ));
    }
    if lifetime.subsec_nanos() != 0 {
        return Err(Error::config(format!(
            "the access token lifetime {lifetime:?} is not a whole number of seconds"
        )));
    }
    u32::try_from(secs)
        .ok()
        .filter(|s| i32::try_from(*s).is_ok())
        .ok_or_else(|| {
            Error::config(format!(
                "the access token lifetime of {secs} s is too long; AIM takes at most {} s",
                i32::MAX
            ))
        })
}

/// A character for an error message, visible even when it is invisible.
fn describe(c: char) -> String {
    if c.is_control() || c.is_whitespace() || !c.is_ascii() {
        format!("the character U+{:04X}", c as u32)
    } else {
        format!("the character {c:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn err(reg: &ClientRegistration) -> String {
        let e = reg.validate().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        e.to_string()
    }

    #[test]
    fn defaults() {
        let reg = ClientRegistration::new("mes-reporting");
        assert_eq!(reg.lifetime(), Duration::from_secs(86_400));
        assert_eq!(reg.grant_types, ["client_credentials"]);
        assert!(reg.enabled);
        assert!(reg.client_secret().is_none());
        reg.validate().unwrap();
    }

    #[test]
    fn client_id_rules() {
        assert!(err(&ClientRegistration::new("")).contains("empty"));
        assert!(err(&ClientRegistration::new("a".repeat(201))).contains("at most 200"));
        ClientRegistration::new("a".repeat(200)).validate().unwrap();
        ClientRegistration::new("MES.Client-1_x~y")
            .validate()
            .unwrap();
        for bad in ["a b", "a'b", "a\"b", "a\nb", "a:b", "é", "a/b", "a`b"] {
            let msg = err(&ClientRegistration::new(bad));
            assert!(msg.contains("client ID"), "{bad:?}: {msg}");
        }
        assert!(err(&ClientRegistration::new("a\u{0}b")).contains("U+0000"));
    }

    #[test]
    fn lifetime_rules() {
        let reg = |d| ClientRegistration::new("x").access_token_lifetime(d);
        assert!(err(&reg(Duration::ZERO)).contains("at least 1 s"));
        assert!(err(&reg(Duration::from_millis(1500))).contains("whole number"));
        assert!(err(&reg(Duration::from_secs(u64::from(u32::MAX)))).contains("too long"));
        reg(Duration::from_secs(i32::MAX as u64))
            .validate()
            .unwrap();
    }

    #[test]
    fn name_scope_grant_rules() {
        let base = || ClientRegistration::new("x");
        assert!(err(&base().name("a\u{7}")).contains("control"));
        base().name("Zoë's \"MES\" $(x)").validate().unwrap();
        assert!(err(&base().scopes(["mes api"])).contains("scope"));
        assert!(err(&base().scopes([""])).contains("empty"));
        assert!(err(&base().grant_types(Vec::<String>::new())).contains("client_credentials"));
        assert!(err(&base().grant_types(["client credentials"])).contains("grant type"));
    }

    #[test]
    fn secret_rules_never_echo_the_secret() {
        let msg = err(&ClientRegistration::new("x").secret("topsecret\u{e9}"));
        assert!(msg.contains("printable ASCII"));
        assert!(!msg.contains("topsecret"));
        assert!(err(&ClientRegistration::new("x").secret("")).contains("empty"));
        ClientRegistration::new("x")
            .secret("s3cr3t P@ss&+=%/?#:'\"")
            .validate()
            .unwrap();
    }

    #[test]
    fn generated_secret_is_256_bits_urlsafe_and_fresh() {
        let a = ClientRegistration::new("x").generate_secret();
        let b = ClientRegistration::new("x").generate_secret();
        let s = a.client_secret().unwrap();
        assert_eq!(s.len(), 43);
        assert!(s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap();
        assert_eq!(bytes.len(), 32);
        assert_ne!(s, b.client_secret().unwrap());
        assert!(a.secret_is_generated());
        a.validate().unwrap();
    }

    #[test]
    fn debug_is_redacted() {
        let given = ClientRegistration::new("x").secret("hunter2-secret");
        assert!(!format!("{given:?}").contains("hunter2"));
        // A password typed into the endpoint is refused when used, and not shown.
        let endpoint = ClientRegistration::new("x")
            .registration_endpoint("https://admin:hunter2@sms01/identitymanager/connect/register");
        assert!(!format!("{endpoint:?}").contains("hunter2"), "{endpoint:?}");
        let generated = ClientRegistration::new("x").generate_secret();
        let dbg = format!("{generated:?}");
        assert!(!dbg.contains(generated.client_secret().unwrap()));
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn powershell_needs_a_secret() {
        let e = ClientRegistration::new("x")
            .to_powershell("https://sms01")
            .unwrap_err();
        assert!(e.to_string().contains("generate_secret"));
    }

    #[test]
    fn powershell_exact_command() {
        let ps = ClientRegistration::new("mes-reporting")
            .name("MES Reporting")
            .secret("s3cr3t")
            .scopes(["mes.api", "openid"])
            .access_token_lifetime(Duration::from_secs(3600))
            .enabled(false)
            .to_powershell("https://sms01.plant.local/identitymanager")
            .unwrap();
        assert_eq!(
            ps,
            "Add-IdentityManagerClient -HostBase 'https://sms01.plant.local' -Id 'mes-reporting' \
             -Name 'MES Reporting' -Secret 's3cr3t' -Enabled 0 -AllowedGrantTypes ClientCredentials \
             -ScopeRestrictions 'mes.api','openid' -AccessTokenLifetime 3600\n\
             Get-IdentityManagerClient -HostBase 'https://sms01.plant.local' -Id 'mes-reporting'"
        );
    }

    #[tokio::test]
    async fn register_refuses_disabled_and_invalid_before_any_io() {
        let aim = crate::AimClient::builder().authority("https://192.0.2.1");
        let e = ClientRegistration::new("x")
            .enabled(false)
            .register(&aim, "iat")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("disabled"));
        let e = ClientRegistration::new("a b")
            .register(&aim, "iat")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
    }
}
