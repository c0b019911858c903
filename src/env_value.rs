//! Settings as Windows shells and env files leave them: cmd.exe's
//! `set AIM_AUTHORITY="sms01"` keeps the quotes in the value (only
//! `set "AIM_AUTHORITY=sms01"` drops them), and so do Docker's env files.
//! Used where a quote can never be part of the value: host names, file
//! paths on Windows, the client IDs AIM holds.

use std::path::Path;

/// `value` without surrounding whitespace and one pair of surrounding
/// `quotes` (either of them, the same at both ends).
pub(crate) fn unquoted<'a>(value: &'a str, quotes: &[char]) -> &'a str {
    let value = value.trim();
    quotes
        .iter()
        .find_map(|&q| value.strip_prefix(q).and_then(|v| v.strip_suffix(q)))
        .map_or(value, str::trim)
}

/// A path without one pair of surrounding double quotes (Windows forbids
/// `"` in file names).
pub(crate) fn unquoted_path(path: &Path) -> &Path {
    match path.to_str() {
        Some(text) => Path::new(unquoted(text, &['"'])),
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pair_of_matching_quotes_goes() {
        for (given, quotes, left) in [
            ("\"sms01\"", &['"', '\''][..], "sms01"),
            (" 'sms01' ", &['"', '\''], "sms01"),
            ("\" sms01 \"", &['"'], "sms01"),
            ("'sms01'", &['"'], "'sms01'"),
            ("\"sms01'", &['"', '\''], "\"sms01'"),
            ("\"sms01", &['"'], "\"sms01"),
            ("\"\"", &['"'], ""),
            ("\"", &['"'], "\""),
            ("sms01", &['"'], "sms01"),
        ] {
            assert_eq!(unquoted(given, quotes), left, "{given}");
        }
        assert_eq!(
            unquoted_path(Path::new("\"C:\\certs\\pcs root.cer\"")),
            Path::new("C:\\certs\\pcs root.cer")
        );
    }
}
