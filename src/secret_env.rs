//! Where [`AimClientBuilder::from_env`](crate::AimClientBuilder::from_env)
//! (and the CLI) find the client secret, the ways deployments provide it:
//!
//! 1. `AIM_CLIENT_SECRET`, the value itself;
//! 2. `AIM_CLIENT_SECRET_FILE`, the path of a file holding it (Docker and
//!    Kubernetes secrets; UTF-8, or UTF-16 with a byte order mark as
//!    Windows PowerShell 5 writes it; a leading UTF-8 byte order mark is
//!    not part of the secret);
//!    setting both is an error, not a guess;
//! 3. otherwise `$CREDENTIALS_DIRECTORY/aim_client_secret`, when systemd
//!    passes it with `LoadCredential=aim_client_secret:/path`.
//!
//! Trailing line breaks (CR, LF) are not part of the secret, wherever it
//! comes from; a secret of only whitespace is no secret.

use std::path::{Path, PathBuf};

use secrecy::SecretString;

use crate::error::{Error, Result};

/// The secret itself.
pub(crate) const CLIENT_SECRET: &str = "AIM_CLIENT_SECRET";
/// The path of a file holding the secret.
pub(crate) const CLIENT_SECRET_FILE: &str = "AIM_CLIENT_SECRET_FILE";
/// systemd's directory of credentials passed to the service.
pub(crate) const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";
/// The credential's name in [`CREDENTIALS_DIRECTORY`].
pub(crate) const CREDENTIAL_NAME: &str = "aim_client_secret";

/// The client secret from `lookup`'s variables, or the error that says
/// which variable to fix. Blank variables count as unset.
pub(crate) fn client_secret(lookup: impl Fn(&str) -> Option<String>) -> Result<SecretString> {
    let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    match (get(CLIENT_SECRET), get(CLIENT_SECRET_FILE)) {
        (Some(_), Some(_)) => Err(Error::config(format!(
            "both {CLIENT_SECRET} and {CLIENT_SECRET_FILE} are set: set only one of them"
        ))),
        (Some(secret), None) => {
            // The copy without line breaks is the secret; the value it was
            // cut from is zeroized too.
            let secret = zeroize::Zeroizing::new(secret);
            Ok(SecretString::from(without_line_ends(&secret).to_owned()))
        }
        (None, Some(path)) => read(
            crate::env_value::unquoted_path(Path::new(&path)),
            CLIENT_SECRET_FILE,
        ),
        (None, None) => {
            let directory = get(CREDENTIALS_DIRECTORY).map(|dir| PathBuf::from(dir.trim()));
            let credential = directory
                .as_ref()
                .map(|dir| dir.join(CREDENTIAL_NAME))
                .filter(|path| path.exists());
            match (credential, directory) {
                (Some(path), _) => read(&path, "$CREDENTIALS_DIRECTORY/aim_client_secret"),
                // systemd passed credentials, just not this one (often a
                // LoadCredential= line with another name).
                (None, Some(dir)) => Err(Error::config(format!(
                    "no client secret: {CREDENTIALS_DIRECTORY} = {} holds no {CREDENTIAL_NAME}; name the credential LoadCredential={CREDENTIAL_NAME}:/path/to/secret in the service unit, or set {CLIENT_SECRET} or {CLIENT_SECRET_FILE}",
                    dir.display()
                ))),
                (None, None) => Err(Error::config(format!(
                    "no client secret: set {CLIENT_SECRET} to the secret registered with AIM, or {CLIENT_SECRET_FILE} to a file holding it (or pass it as the systemd credential {CREDENTIAL_NAME})"
                ))),
            }
        }
    }
}

/// `secret` without trailing CR and LF: files and `Get-Content -Raw` end
/// with them, and no secret AIM holds does (the `-Secret` of
/// `Add-IdentityManagerClient` is one line). Spaces are kept: they may be
/// part of a secret.
fn without_line_ends(secret: &str) -> &str {
    secret.trim_end_matches(['\r', '\n'])
}

/// [`client_secret`], or `None` when no source is set at all (the CLI's
/// `register` then generates one). A source that is set but unusable (an
/// unreadable file, both variables) is still an error.
#[cfg(feature = "cli")]
pub(crate) fn client_secret_if_set(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<SecretString>> {
    let set = |name: &str| lookup(name).is_some_and(|v| !v.trim().is_empty());
    let credential = lookup(CREDENTIALS_DIRECTORY)
        .filter(|dir| !dir.trim().is_empty())
        .is_some_and(|dir| Path::new(dir.trim()).join(CREDENTIAL_NAME).exists());
    if !set(CLIENT_SECRET) && !set(CLIENT_SECRET_FILE) && !credential {
        return Ok(None);
    }
    client_secret(lookup).map(Some)
}

/// No client secret is this long; a bigger file (or `/dev/zero`) is not one.
const MAX_SECRET_BYTES: u64 = 4096;

/// Reads a secret file; `what` names where the path came from.
fn read(path: &Path, what: &str) -> Result<SecretString> {
    use std::io::Read as _;
    let unreadable = |e: &dyn std::fmt::Display| {
        Error::config(format!(
            "{what} = {}: cannot read the client secret ({e}); give the path of a readable file holding it",
            path.display()
        ))
    };
    // Sized once: a buffer that grew while reading would leave copies of
    // the secret behind, unzeroized.
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(MAX_SECRET_BYTES as usize + 1));
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SECRET_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| unreadable(&e))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(unreadable(&format_args!(
            "it is larger than {MAX_SECRET_BYTES} bytes, so not a client secret"
        )));
    }
    // Windows PowerShell 5's `>` and `Out-File` write UTF-16 with a BOM.
    let utf16 = crate::env_value::utf16_text(&bytes)
        .transpose()
        .map_err(|()| unreadable(&"it starts like UTF-16 text but is not"))?;
    let text = match &utf16 {
        Some(text) => text.as_str(),
        None => std::str::from_utf8(&bytes)
            .map_err(|_| unreadable(&"it is neither UTF-8 nor UTF-16 text"))?,
    };
    // Notepad starts UTF-8 files with a byte order mark; no secret does.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Files end with a newline (echo, editors, kubectl create secret --from-file).
    let secret = without_line_ends(text);
    if secret.trim().is_empty() {
        return Err(Error::config(format!(
            "{what} = {}: the file is empty (or holds only whitespace); put the client secret registered with AIM in it",
            path.display()
        )));
    }
    Ok(SecretString::from(secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;
    use crate::ErrorKind;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("aim-token-secret-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn config_error(vars: &[(&str, &str)]) -> String {
        let err = client_secret(lookup(vars)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        err.to_string()
    }

    #[test]
    fn the_variable_itself() {
        let secret = client_secret(lookup(&[(CLIENT_SECRET, " s3 cr3t ")])).unwrap();
        assert_eq!(secret.expose_secret(), " s3 cr3t ");
    }

    /// `$env:AIM_CLIENT_SECRET = Get-Content secret.txt -Raw` keeps the
    /// file's CRLF; `export AIM_CLIENT_SECRET=$(cat secret.txt)` keeps the
    /// CR of a Windows file. No secret AIM holds ends in a line break.
    #[test]
    fn the_variable_loses_trailing_line_breaks() {
        for value in ["s3 cr3t\r\n", "s3 cr3t\r", "s3 cr3t\n\n"] {
            let secret = client_secret(lookup(&[(CLIENT_SECRET, value)])).unwrap();
            assert_eq!(secret.expose_secret(), "s3 cr3t", "{value:?}");
        }
    }

    #[test]
    fn a_file_loses_its_trailing_line_breaks_only() {
        let dir = dir("file");
        for (contents, expected) in [
            ("s3cr3t\n", "s3cr3t"),
            ("s3cr3t\r\n", "s3cr3t"),
            ("s3cr3t", "s3cr3t"),
            ("s3cr3t \n\n", "s3cr3t "),
            ("s3cr3t\r\n\r\n", "s3cr3t"),
        ] {
            let path = dir.join("secret");
            std::fs::write(&path, contents).unwrap();
            let path = path.to_str().unwrap();
            let secret = client_secret(lookup(&[(CLIENT_SECRET_FILE, path)])).unwrap();
            assert_eq!(secret.expose_secret(), expected, "{contents:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Notepad (and PowerShell's `Out-File -Encoding utf8` before 6.0)
    /// begin a UTF-8 file with a byte order mark: not part of the secret.
    #[test]
    fn a_file_loses_a_byte_order_mark() {
        let dir = dir("bom");
        let path = dir.join("secret");
        std::fs::write(&path, "\u{feff}s3cr3t\r\n").unwrap();
        let secret =
            client_secret(lookup(&[(CLIENT_SECRET_FILE, path.to_str().unwrap())])).unwrap();
        assert_eq!(secret.expose_secret(), "s3cr3t");
        std::fs::write(&path, "\u{feff}\r\n").unwrap();
        let msg = config_error(&[(CLIENT_SECRET_FILE, path.to_str().unwrap())]);
        assert!(msg.contains("empty"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// cmd.exe's `set AIM_CLIENT_SECRET_FILE="C:\secrets\aim secret.txt"`
    /// keeps the quotes: the path is the one between them.
    #[test]
    fn a_quoted_file_path_is_read() {
        let dir = dir("quoted");
        let path = dir.join("aim secret.txt");
        std::fs::write(&path, "s3cr3t\r\n").unwrap();
        let quoted = format!("\"{}\" ", path.display());
        let secret = client_secret(lookup(&[(CLIENT_SECRET_FILE, &quoted)])).unwrap();
        assert_eq!(secret.expose_secret(), "s3cr3t");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Windows PowerShell 5's `"s3cr3t" > secret.txt` (and `Out-File`)
    /// write UTF-16LE with a byte order mark.
    #[test]
    fn a_utf16_file_is_read() {
        let dir = dir("utf16");
        let path = dir.join("secret");
        for (bom, to_bytes) in [
            ([0xFF, 0xFE], u16::to_le_bytes as fn(u16) -> [u8; 2]),
            ([0xFE, 0xFF], u16::to_be_bytes),
        ] {
            let mut bytes = bom.to_vec();
            bytes.extend("s3 cr3t\r\n".encode_utf16().flat_map(to_bytes));
            std::fs::write(&path, bytes).unwrap();
            let secret =
                client_secret(lookup(&[(CLIENT_SECRET_FILE, path.to_str().unwrap())])).unwrap();
            assert_eq!(secret.expose_secret(), "s3 cr3t");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn both_variables_is_an_error() {
        let msg = config_error(&[
            (CLIENT_SECRET, "a"),
            (CLIENT_SECRET_FILE, "/run/secrets/aim"),
        ]);
        assert!(
            msg.contains("both") && msg.contains(CLIENT_SECRET_FILE),
            "{msg}"
        );
    }

    #[test]
    fn missing_unreadable_and_empty_files_are_named() {
        let dir = dir("bad");
        let missing = dir.join("missing");
        let msg = config_error(&[(CLIENT_SECRET_FILE, missing.to_str().unwrap())]);
        assert!(
            msg.contains(CLIENT_SECRET_FILE) && msg.contains("missing"),
            "{msg}"
        );
        // A directory cannot be read as a file, whoever runs the test.
        let msg = config_error(&[(CLIENT_SECRET_FILE, dir.to_str().unwrap())]);
        assert!(msg.contains("cannot read"), "{msg}");
        // Nor is an endless file a secret: bounded, not read forever.
        let msg = config_error(&[(CLIENT_SECRET_FILE, "/dev/zero")]);
        assert!(msg.contains("larger than"), "{msg}");
        for blank in ["", "\n", "  \t\r\n"] {
            let path = dir.join("blank");
            std::fs::write(&path, blank).unwrap();
            let msg = config_error(&[(CLIENT_SECRET_FILE, path.to_str().unwrap())]);
            assert!(msg.contains("empty"), "{blank:?}: {msg}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn systemd_credentials_directory() {
        let dir = dir("systemd");
        std::fs::write(dir.join(CREDENTIAL_NAME), "from-systemd\n").unwrap();
        let dir_str = dir.to_str().unwrap();
        let secret = client_secret(lookup(&[(CREDENTIALS_DIRECTORY, dir_str)])).unwrap();
        assert_eq!(secret.expose_secret(), "from-systemd");
        // An explicit variable wins over the credential.
        let secret = client_secret(lookup(&[
            (CREDENTIALS_DIRECTORY, dir_str),
            (CLIENT_SECRET, "x"),
        ]))
        .unwrap();
        assert_eq!(secret.expose_secret(), "x");
        std::fs::write(dir.join(CREDENTIAL_NAME), " \n").unwrap();
        let msg = config_error(&[(CREDENTIALS_DIRECTORY, dir_str)]);
        assert!(
            msg.contains("CREDENTIALS_DIRECTORY") && msg.contains("empty"),
            "{msg}"
        );
        // A directory without the credential is no secret, and the error
        // says what systemd passed instead (a credential named otherwise).
        std::fs::remove_file(dir.join(CREDENTIAL_NAME)).unwrap();
        std::fs::write(dir.join("aim-secret"), "x").unwrap();
        let msg = config_error(&[(CREDENTIALS_DIRECTORY, dir_str)]);
        assert!(msg.contains("no client secret"), "{msg}");
        assert!(
            msg.contains("holds no aim_client_secret")
                && msg.contains("LoadCredential=aim_client_secret:"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn whitespace_is_no_secret() {
        let msg = config_error(&[(CLIENT_SECRET, " \t ")]);
        assert!(msg.contains("no client secret"), "{msg}");
    }
}
