//! Whether an example talks to a real AIM or to the built-in emulator:
//! one rule for every example (included with `#[path]`).
//!
//! Any of these variables set means the user meant their plant: then every
//! setting comes from `AimClient::from_env`, which names what is missing,
//! rather than quietly falling back to the emulator.

/// The variables that select a real AIM. What each must hold, and where
/// else the secret may come from (systemd's credentials), is
/// `AimClient::from_env`'s to decide.
pub const REAL_AIM: [&str; 4] = [
    "AIM_AUTHORITY",
    "AIM_CLIENT_ID",
    "AIM_CLIENT_SECRET",
    "AIM_CLIENT_SECRET_FILE",
];

/// Whether any variable of [`REAL_AIM`] is set (blank counts as unset).
pub fn real_aim_selected() -> bool {
    REAL_AIM
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// For the examples that demonstrate the emulator only: says so when the
/// user set AIM variables, so nobody takes its output for their plant's.
#[allow(dead_code)] // used by the emulator-only examples
pub fn note_emulator_only(example: &str) {
    if real_aim_selected() {
        eprintln!(
            "note: the {example} example runs against the built-in emulator only; \
             the AIM_* variables are ignored (cargo run --example quickstart uses them)"
        );
    }
}

/// What to check for an error from a real AIM, in the variables' words
/// (the error itself says what happened).
#[allow(dead_code)] // used by the examples that print errors themselves
pub fn hint(err: &aim_token::Error) -> Option<&'static str> {
    use aim_token::ErrorKind;
    Some(match err.kind() {
        ErrorKind::Tls => {
            "trust the PCS root CA: AIM_CA_CERT=/path/to/pcs-root-ca.pem (PEM, or the .cer Windows exports)"
        }
        ErrorKind::Transport | ErrorKind::Timeout => {
            "check that AIM_AUTHORITY names the System Management Server (its FQDN) and that it is reachable from this machine"
        }
        _ => return None,
    })
}
