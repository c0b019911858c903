//! Settings as Windows shells and env files leave them: cmd.exe's
//! `set AIM_AUTHORITY="sms01"` keeps the quotes in the value (only
//! `set "AIM_AUTHORITY=sms01"` drops them), and so do Docker's env files.
//! Used where a quote can never be part of the value: host names, file
//! paths on Windows, the client IDs AIM holds. Also files as Windows
//! PowerShell 5 writes them (`>` and `Out-File`: UTF-16 with a byte order
//! mark).

use std::path::Path;

use zeroize::Zeroizing;

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

/// A file's bytes as text when they start with a UTF-16 byte order mark
/// (little- or big-endian): `None` if they do not, `Some(Err(()))` if they
/// are no UTF-16 after all. Zeroized on drop: the file may hold a secret.
pub(crate) fn utf16_text(bytes: &[u8]) -> Option<Result<Zeroizing<String>, ()>> {
    let (body, little_endian) = match bytes {
        [0xFF, 0xFE, body @ ..] => (body, true),
        [0xFE, 0xFF, body @ ..] => (body, false),
        _ => return None,
    };
    let units = || {
        body.chunks_exact(2).map(|c| match little_endian {
            true => u16::from_le_bytes([c[0], c[1]]),
            false => u16::from_be_bytes([c[0], c[1]]),
        })
    };
    // Sized exactly before the first push: a String that grew would leave
    // the secret's first part behind, unzeroized.
    let len = char::decode_utf16(units())
        .map(|c| c.map_or(0, char::len_utf8))
        .sum();
    let mut text = Zeroizing::new(String::with_capacity(len));
    for c in char::decode_utf16(units()) {
        match c {
            Ok(c) => text.push(c),
            Err(_) => return Some(Err(())),
        }
    }
    // An odd byte left over is no UTF-16 either.
    if body.len() % 2 != 0 {
        return Some(Err(()));
    }
    Some(Ok(text))
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

    #[test]
    fn utf16_with_a_byte_order_mark_only() {
        assert_eq!(utf16_text(b"plain"), None);
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("aé".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(utf16_text(&le).unwrap().unwrap().as_str(), "aé");
        assert!(utf16_text(&[0xFF, 0xFE, 0x00, 0xD8]).unwrap().is_err());
        assert!(utf16_text(&[0xFF, 0xFE, 0x61, 0x00, 0x62])
            .unwrap()
            .is_err());
    }
}
