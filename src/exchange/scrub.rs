//! Making server answers safe to show: a short, printable snippet without
//! the client secret (servers do echo it) or anything token-shaped.
//!
//! Servers echo a value in spellings of their own: HTML-escaped (`&amp;`,
//! `&#43;`), JSON-escaped the way .NET writes it (`\u0026`, `\u002B`),
//! percent-encoded in either case, or several of these nested. So the text
//! is decoded (HTML entities, JSON escapes, percent-encoding, until nothing
//! changes) and the secret is looked for, ASCII case-insensitively, before
//! and after every round. What is shown is the decoded, scrubbed text.

use base64::Engine as _;
use percent_encoding::utf8_percent_encode;
use zeroize::{Zeroize, Zeroizing};

/// The longest snippet of a server answer that goes into an error message.
const SNIPPET_CHARS: usize = 200;

const REDACTED: &str = "[redacted]";

/// Stands for a redaction until the text is done: a private-use character
/// no spelling contains, so a secret or token that is part of "[redacted]"
/// (`d`, `acte`) cannot match an earlier redaction and grow the text.
const MARK: char = '\u{e000}';

/// Decoding rounds: enough for an HTML page showing a percent-encoded,
/// JSON-escaped echo; bounded so a hostile body cannot make it loop.
const DECODE_ROUNDS: usize = 4;

/// JSON members whose values are never shown, even cut off.
const SECRET_FIELDS: [&str; 5] = [
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    // RFC 7591: the credential for managing a registered client.
    "registration_access_token",
];

/// Removes the client secret (in every spelling it was sent in) and
/// token-looking values from text.
#[derive(Clone, Default)]
pub(crate) struct Scrubber {
    /// Longest first, so a longer encoding is not half-replaced by a
    /// shorter one. ASCII lower case: matching ignores case. Zeroized on drop.
    spellings: Vec<String>,
}

impl Drop for Scrubber {
    fn drop(&mut self) {
        self.spellings.zeroize();
    }
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("spellings", &self.spellings.len())
            .finish()
    }
}

/// The ways a value is put on the wire and could come back: raw, percent-
/// encoded as in a Basic header, form-encoded (space as `+`, and that form
/// percent-decoded again), and base64 (standard and URL-safe).
///
/// Each is written into a buffer sized for it up front (base64 sizes its
/// own): a string that grows frees its old block unzeroized, and these are
/// copies of a secret.
pub(crate) fn spellings_of(value: &str) -> Vec<String> {
    if value.is_empty() {
        return Vec::new();
    }
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(value));
    let b64_url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value);
    let mut plus = String::with_capacity(value.len());
    plus.extend(value.chars().map(|c| if c == ' ' { '+' } else { c }));
    vec![
        value.to_owned(),
        escaped(
            utf8_percent_encode(value, crate::credentials::BASIC_ENCODE),
            value,
        ),
        escaped(
            url::form_urlencoded::byte_serialize(value.as_bytes()),
            value,
        ),
        plus,
        b64.trim_end_matches('=').to_owned(),
        b64_url,
    ]
}

/// The pieces of an escaping of `value` (percent or form encoding: at
/// most three characters per byte), in one buffer that never grows.
pub(crate) fn escaped<'a>(pieces: impl Iterator<Item = &'a str>, value: &str) -> String {
    let mut out = String::with_capacity(value.len().saturating_mul(3));
    out.extend(pieces);
    out
}

impl Scrubber {
    pub(crate) fn new(spellings: Vec<String>) -> Self {
        // Lower-cased in place and deduplicated by hand: a copy or a dropped
        // duplicate would free a spelling of the secret unzeroized.
        let mut sorted: Vec<String> = spellings
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(|mut s| {
                s.make_ascii_lowercase();
                s
            })
            .collect();
        sorted.sort_unstable();
        let mut spellings: Vec<String> = Vec::with_capacity(sorted.len());
        for mut s in sorted {
            if spellings.last() == Some(&s) {
                s.zeroize();
            } else {
                spellings.push(s);
            }
        }
        spellings.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Scrubber { spellings }
    }

    /// A scrubber for these secrets in all their [`spellings_of`].
    pub(crate) fn for_secrets<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        Self::new(secrets.into_iter().flat_map(spellings_of).collect())
    }

    /// This scrubber plus the token values a (possibly broken) JSON answer
    /// carries in its token members: a server that echoes the token it just
    /// issued elsewhere in the same body must not leak it that way.
    pub(crate) fn with_tokens_of(&self, body: &[u8]) -> Scrubber {
        let text = Zeroizing::new(String::from_utf8_lossy(body).into_owned());
        let mut spellings = self.spellings.clone();
        for field in SECRET_FIELDS {
            for value in json_string_members(&text, field) {
                spellings.extend(spellings_of(&value));
            }
        }
        Scrubber::new(spellings)
    }

    /// `text` decoded, without the secret, JSON token members and JWT-looking
    /// runs (what [`line`](Self::line) and [`snippet`](Self::snippet) build on).
    #[cfg(test)]
    pub(crate) fn scrub(&self, text: &str) -> String {
        self.scrub_marked(text).replace(MARK, REDACTED)
    }

    /// [`scrub`](Self::scrub) with each redaction still a [`MARK`], for
    /// whatever flattens and scrubs the text once more.
    fn scrub_marked(&self, text: &str) -> Zeroizing<String> {
        let mut out = Zeroizing::new(text.to_owned());
        let mut settled = false;
        for _ in 0..DECODE_ROUNDS {
            self.redact_spellings(&mut out);
            let decoded = Zeroizing::new(decode_once(&out));
            if *decoded == *out {
                settled = true;
                break;
            }
            out = decoded;
        }
        // Still encoded after the last round: what is left may spell the
        // secret once more decoded, so none of it is shown.
        if !settled && *Zeroizing::new(decode_once(&out)) != *out {
            return Zeroizing::new(MARK.to_string());
        }
        self.redact_spellings(&mut out);
        for field in SECRET_FIELDS {
            out = Zeroizing::new(redact_json_member(&out, field));
            out = Zeroizing::new(redact_form_field(&out, field));
        }
        Zeroizing::new(redact_jwts(&out))
    }

    /// Replaces every (ASCII case-insensitive) occurrence of a spelling.
    fn redact_spellings(&self, text: &mut Zeroizing<String>) {
        for spelling in &self.spellings {
            // ASCII lower-casing keeps byte offsets, so positions carry over.
            let lower = Zeroizing::new(text.to_ascii_lowercase());
            if !lower.contains(spelling.as_str()) {
                continue;
            }
            let mut out = Zeroizing::new(String::with_capacity(text.len()));
            let mut last = 0;
            for (at, _) in lower.match_indices(spelling.as_str()) {
                out.push_str(&text[last..at]);
                out.push(MARK);
                last = at + spelling.len();
            }
            out.push_str(&text[last..]);
            *text = out;
        }
    }

    /// A server string (an OAuth error code or description, a Location) for
    /// a message: decoded, secret-free, control and invisible characters as
    /// spaces (so CR/LF cannot forge a log line), at most `max` characters.
    pub(crate) fn line(&self, text: &str, max: usize) -> String {
        let scrubbed = self.scrub_marked(text);
        let flat: String = scrubbed
            .chars()
            .map(|c| {
                if c.is_control() || c.is_whitespace() || is_invisible(c) {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        truncate_chars(self.rescrub(flat).trim(), max)
    }

    /// `text` after flattening, scrubbed once more: a newline, a no-break
    /// space or a tag inside an echoed secret with a space in it became
    /// that space, and so the secret itself.
    fn rescrub(&self, text: String) -> Zeroizing<String> {
        let mut text = Zeroizing::new(text);
        self.redact_spellings(&mut text);
        Zeroizing::new(text.replace(MARK, REDACTED))
    }

    /// `body` read only up to a cap, without the bytes at the cut that may
    /// hold the start of a spelling (in the widest encoding the decoder
    /// undoes, `&#x0041;`, 8 bytes a character): the rest was never read,
    /// so a partial secret there could not be recognised.
    pub(crate) fn without_cut_tail<'b>(&self, body: &'b [u8]) -> &'b [u8] {
        let longest = self.spellings.first().map_or(0, String::len);
        &body[..body.len().saturating_sub(longest.saturating_mul(8))]
    }

    /// A short, printable, secret-free excerpt of a body: for TRACE events
    /// only, never for an error message.
    pub(crate) fn snippet(&self, body: &[u8]) -> String {
        // Scrubbed before the markup goes: a secret with `<` in it must
        // not be cut in two by the tag stripper.
        let text = self.scrub_marked(&String::from_utf8_lossy(body));
        let text = if looks_like_html(&text) {
            Zeroizing::new(strip_tags(&text))
        } else {
            text
        };
        // Printable, one line: control characters become spaces, runs collapse.
        let mut flat = String::with_capacity(text.len().min(4096));
        let mut last_space = true;
        for c in text.chars() {
            let c = if c.is_control() || c.is_whitespace() || is_invisible(c) {
                ' '
            } else {
                c
            };
            if c == ' ' {
                if !last_space {
                    flat.push(' ');
                }
                last_space = true;
            } else {
                flat.push(c);
                last_space = false;
            }
        }
        truncate_chars(self.rescrub(flat).trim(), SNIPPET_CHARS)
    }
}

/// One round of decoding: HTML character references, JSON string escapes,
/// percent-encoding (any case). Invalid sequences stay as they are.
fn decode_once(text: &str) -> String {
    let html = Zeroizing::new(decode_html_entities(text));
    let json = Zeroizing::new(decode_json_escapes(&html));
    percent_encoding::percent_decode_str(&json)
        .decode_utf8_lossy()
        .into_owned()
}

/// `&amp;`, `&#43;`, `&#x2B;` and the named references of the punctuation
/// a secret may contain.
fn decode_html_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match html_reference(rest) {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The character of the reference at the start of `text` (at its `&`) and
/// the reference's length: a numeric one as browsers read it (any leading
/// zeros, `;` optional), a UTF-16 surrogate pair written as two of them,
/// or a named one.
fn html_reference(text: &str) -> Option<(char, usize)> {
    let Some((code, len)) = numeric_reference(text) else {
        // Bytes, not a str slice: byte 12 may fall inside a character.
        let end = text.bytes().take(12).position(|b| b == b';')?;
        return Some((named_entity(&text[1..end])?, end + 1));
    };
    if (0xD800..=0xDBFF).contains(&code) {
        let (low, low_len) =
            numeric_reference(&text[len..]).filter(|(low, _)| (0xDC00..=0xDFFF).contains(low))?;
        let c = char::from_u32(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))?;
        return Some((c, len + low_len));
    }
    Some((char::from_u32(code)?, len))
}

/// `&#NN` or `&#xHH`, with or without `;`: the code point and the length.
fn numeric_reference(text: &str) -> Option<(u32, usize)> {
    let (digits_at, radix) = match text.as_bytes() {
        [b'&', b'#', b'x' | b'X', ..] => (3, 16),
        [b'&', b'#', ..] => (2, 10),
        _ => return None,
    };
    let digits = text.as_bytes()[digits_at..]
        .iter()
        .take_while(|b| char::from(**b).is_digit(radix))
        .count();
    if digits == 0 {
        return None;
    }
    let code = u32::from_str_radix(&text[digits_at..digits_at + digits], radix).ok()?;
    let end = digits_at + digits;
    Some((
        code,
        end + usize::from(text.as_bytes().get(end) == Some(&b';')),
    ))
}

fn named_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "plus" => '+',
        "percnt" => '%',
        "sol" => '/',
        "bsol" => '\\',
        "num" => '#',
        "colon" => ':',
        "semi" => ';',
        "quest" => '?',
        "equals" => '=',
        "excl" => '!',
        "commat" => '@',
        "dollar" => '$',
        "lpar" => '(',
        "rpar" => ')',
        "ast" | "midast" => '*',
        "comma" => ',',
        "period" => '.',
        "lowbar" => '_',
        "grave" => '`',
        "lbrace" | "lcub" => '{',
        "rbrace" | "rcub" => '}',
        "lsqb" | "lbrack" => '[',
        "rsqb" | "rbrack" => ']',
        "verbar" | "vert" => '|',
        "Hat" => '^',
        "tilde" => '~',
        "hyphen" | "dash" => '-',
        _ => return None,
    })
}

/// `\u0026`, `\u002b`, surrogate pairs, `\"`, `\/`, `\\`, `\n`...
fn decode_json_escapes(text: &str) -> String {
    if !text.contains('\\') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let (decoded, len) = match rest.as_bytes().get(1) {
            Some(b'u') => match hex4(rest, 2) {
                Some(high @ 0xD800..=0xDBFF) => {
                    let low = rest
                        .get(6..8)
                        .filter(|s| *s == "\\u")
                        .and_then(|_| hex4(rest, 8))
                        .filter(|l| (0xDC00..=0xDFFF).contains(l));
                    match low {
                        Some(low) => (
                            char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)),
                            12,
                        ),
                        None => (None, 0),
                    }
                }
                Some(code) => (char::from_u32(code), 6),
                None => (None, 0),
            },
            Some(b'"') => (Some('"'), 2),
            Some(b'/') => (Some('/'), 2),
            Some(b'\\') => (Some('\\'), 2),
            Some(b'n') => (Some('\n'), 2),
            Some(b'r') => (Some('\r'), 2),
            Some(b't') => (Some('\t'), 2),
            Some(b'b') => (Some('\u{8}'), 2),
            Some(b'f') => (Some('\u{c}'), 2),
            _ => (None, 0),
        };
        match decoded {
            Some(c) if len > 0 => {
                out.push(c);
                rest = &rest[len..];
            }
            _ => {
                out.push('\\');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Four hex digits at `text[at..at + 4]`.
fn hex4(text: &str, at: usize) -> Option<u32> {
    let digits = text.get(at..at + 4)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// Zero-width and bidi-control characters: invisible in a terminal, and
/// able to make a message read differently from what it says.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{feff}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}')
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if s[cut..].chars().count() > 1 => format!("{}…", &s[..cut]),
        _ => s.to_owned(),
    }
}

fn looks_like_html(text: &str) -> bool {
    let head = text.trim_start();
    head.starts_with('<')
}

/// IIS error pages: the words matter, the markup does not. Scripts and
/// styles go entirely.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(4096));
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        out.push(' ');
        let after = &rest[open..];
        let lower_head: String = after
            .chars()
            .take(8)
            .collect::<String>()
            .to_ascii_lowercase();
        let skip_to = if lower_head.starts_with("<style") {
            find_ci(after, "</style>").map(|i| i + "</style>".len())
        } else if lower_head.starts_with("<script") {
            find_ci(after, "</script>").map(|i| i + "</script>".len())
        } else {
            after.find('>').map(|i| i + 1)
        };
        match skip_to {
            Some(n) => rest = &after[n..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Case-insensitive `find` of an ASCII `needle`, scanning only up to the
/// match: lowercasing the whole rest per tag made `strip_tags` quadratic
/// (a 1 MiB page of `<style></style>` took minutes).
fn find_ci(haystack: &str, needle: &str) -> Option<usize> {
    let needle = needle.as_bytes();
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// `"field" : "value…` -> `"field" : "[redacted]`; handles values cut off
/// mid-way (truncated answers).
fn redact_json_member(text: &str, field: &str) -> String {
    let key = format!("\"{field}\"");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(&key) {
        let (before, after_key_start) = rest.split_at(pos + key.len());
        out.push_str(before);
        let after_key = after_key_start;
        let trimmed = after_key.trim_start();
        let Some(after_colon) = trimmed.strip_prefix(':') else {
            rest = after_key;
            continue;
        };
        let value = after_colon.trim_start();
        let consumed_prefix = after_key.len() - value.len();
        out.push_str(&after_key[..consumed_prefix]);
        if let Some(string_body) = value.strip_prefix('"') {
            out.push('"');
            out.push(MARK);
            match string_body.find('"') {
                Some(end) => rest = &string_body[end..],
                None => rest = "",
            }
        } else {
            // A non-string value: redact up to the next delimiter.
            let end = value.find([',', '}', ' ']).unwrap_or(value.len());
            out.push(MARK);
            rest = &value[end..];
        }
    }
    out.push_str(rest);
    out
}

/// The string values of `"field": "..."` in `text`, also when the JSON
/// around them is broken or cut off (then up to the end of the text).
fn json_string_members(text: &str, field: &str) -> Vec<String> {
    let key = format!("\"{field}\"");
    text.match_indices(&key)
        .filter_map(|(at, _)| {
            let rest = text[at + key.len()..].trim_start().strip_prefix(':')?;
            let value = rest.trim_start().strip_prefix('"')?;
            let end = value.find('"').unwrap_or(value.len());
            Some(value[..end].to_owned()).filter(|v| v.len() >= 4)
        })
        .collect()
}

/// `field=value&` (a form-encoded answer) -> `field=[redacted]&`.
fn redact_form_field(text: &str, field: &str) -> String {
    let key = format!("{field}=");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(&key) {
        out.push_str(&rest[..pos + key.len()]);
        let value = &rest[pos + key.len()..];
        let end = value
            .find(|c: char| c == '&' || c.is_whitespace())
            .unwrap_or(value.len());
        if end > 0 {
            out.push(MARK);
        }
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// Runs that start like a JWT (`eyJ` = base64 of `{"`) are tokens.
fn redact_jwts(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("eyJ") {
        out.push_str(&rest[..pos]);
        let run = &rest[pos..];
        let len = run
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=')))
            .unwrap_or(run.len());
        if len >= 10 {
            out.push(MARK);
        } else {
            out.push_str(&run[..len]);
        }
        rest = &run[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "P@ss w0rd&+=%:/?#";

    fn scrubber() -> Scrubber {
        Scrubber::new(vec![
            SECRET.to_owned(),
            "P%40ss%20w0rd%26%2B%3D%25%3A%2F%3F%23".to_owned(),
            "P%40ss+w0rd%26%2B%3D%25%3A%2F%3F%23".to_owned(),
        ])
    }

    #[test]
    fn echoed_secret_is_scrubbed_in_every_spelling() {
        let s = scrubber();
        for body in [
            format!("bad secret {SECRET} for client"),
            "client_secret=P%40ss+w0rd%26%2B%3D%25%3A%2F%3F%23&x=1".to_owned(),
            "auth P%40ss%20w0rd%26%2B%3D%25%3A%2F%3F%23".to_owned(),
        ] {
            let out = s.snippet(body.as_bytes());
            assert!(!out.contains("w0rd"), "{out}");
            assert!(out.contains(REDACTED), "{out}");
        }
    }

    #[test]
    fn echoes_are_found_after_decoding_in_any_spelling() {
        let secret = "Kx7&Vb+9 %Wm/\"<'>";
        let s = Scrubber::for_secrets([secret]);
        let html = secret
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('"', "&quot;")
            .replace('+', "&#43;")
            .replace('/', "&#x2F;");
        let dotnet = secret
            .replace('&', "\\u0026")
            .replace('+', "\\u002B")
            .replace('<', "\\u003c")
            .replace('"', "\\\"");
        let lower: String = secret
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect();
        let nested = lower.replace('%', "&#37;");
        for echo in [secret.to_owned(), html, dotnet, lower, nested] {
            for text in [format!("bad {echo} here"), format!("<p>{echo}</p>")] {
                for out in [
                    s.scrub(&text),
                    s.line(&text, 500),
                    s.snippet(text.as_bytes()),
                ] {
                    assert!(
                        !out.contains("Kx7") && !out.contains("Wm"),
                        "{text} -> {out}"
                    );
                    assert!(out.contains(REDACTED), "{text} -> {out}");
                }
            }
        }
        // A hostile body cannot make decoding loop: bounded rounds.
        let deep = "%25".repeat(10_000);
        assert!(s.scrub(&deep).len() <= deep.len());
        // Multi-byte characters after `&` or `\\` do not panic.
        for text in ["&ééééééééé;", "&é;", "&#é;", "\\é", "\\uéééé", "%é&", "&"] {
            let _ = s.scrub(text);
        }
        // Surrogate pairs and broken escapes do not panic.
        assert_eq!(
            s.scrub("\\ud83d\\ude00 \\ud83d \\u12 &#xZZ; &#99999999;"),
            "😀 \\ud83d \\u12 &#xZZ; &#99999999;"
        );
    }

    proptest::proptest! {
        /// Any text around the secret, in any of the echo spellings: no
        /// panic, and the secret never survives.
        #[test]
        fn no_panic_and_no_secret_whatever_surrounds_it(
            before in "\\PC{0,40}",
            after in "\\PC{0,40}",
            spelling in 0usize..4,
        ) {
            let secret = "Zq9&+ %Kw/<\"x";
            let s = Scrubber::for_secrets([secret]);
            let echo = match spelling {
                0 => secret.to_owned(),
                1 => secret.replace('&', "&amp;").replace('<', "&lt;").replace('"', "&quot;"),
                2 => secret.replace('&', "\\u0026").replace('+', "\\u002b").replace('"', "\\\""),
                _ => url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>().to_ascii_lowercase(),
            };
            let text = format!("{before}{echo}{after}");
            for out in [s.scrub(&text), s.line(&text, 1000), s.snippet(text.as_bytes())] {
                proptest::prop_assert!(!out.contains("Zq9"), "{:?} -> {:?}", text, out);
            }
        }
    }

    #[test]
    fn redactions_are_not_redacted_again() {
        // A secret or token that is part of "[redacted]" must not match the
        // redaction itself: the text would grow with every round.
        let s = Scrubber::for_secrets(["acte"]);
        assert_eq!(s.scrub("x acte y"), "x [redacted] y");
        let s = Scrubber::for_secrets(["d"]);
        assert_eq!(s.line("x d y", 100), "x [redacted] y");
        assert_eq!(s.snippet(b"x d y"), "x [redacted] y");
        let s = Scrubber::for_secrets(["d"]);
        let text = format!("{}%2525252541", "d".repeat(1000));
        let out = s.scrub(&text);
        assert!(
            out.len() <= 10 * text.len(),
            "{} -> {}",
            text.len(),
            out.len()
        );
    }

    #[test]
    fn nesting_deeper_than_the_rounds_shows_nothing() {
        // Whatever is still encoded after the last round may spell the secret.
        let s = Scrubber::for_secrets(["Kx7&secret"]);
        let deep = format!("Kx7&{}secret", "amp;".repeat(DECODE_ROUNDS + 1));
        let out = s.line(&deep, 300);
        assert!(!out.contains("secret"), "{deep} -> {out}");
        // Nesting within the rounds is decoded and shown.
        assert_eq!(s.line("a &amp;amp;amp; b", 300), "a & b");
    }

    #[test]
    fn numeric_references_in_every_form_browsers_read() {
        let s = Scrubber::for_secrets(["Kx7&secret"]);
        for text in [
            "Kx7&#x26secret",
            "Kx7&#38secret",
            "Kx7&#X26;secret",
            "Kx7&#0000000038;secret",
            "&#x000000004b;x7&amp;secret",
        ] {
            let out = s.line(text, 300);
            assert!(!out.contains("secret"), "{text} -> {out}");
        }
        // UTF-16 surrogates written as two references (naive encoders).
        let s = Scrubber::for_secrets(["\u{1F600}pass"]);
        for text in ["&#xD83D;&#xDE00;pass", "&#55357;&#56832;pass"] {
            assert_eq!(s.line(text, 300), REDACTED, "{text}");
        }
        assert_eq!(
            s.line("&#xD83D;x &#56832; &#x;", 300),
            "&#xD83D;x &#56832; &#x;"
        );
    }

    #[test]
    fn flattening_cannot_reassemble_the_secret() {
        // Scrubbing runs before a line or snippet is flattened: a newline,
        // a no-break space or a tag inside a secret with a space must not
        // become that secret afterwards.
        let s = Scrubber::for_secrets(["P@ss w0rd"]);
        for text in [
            "bad P@ss\nw0rd",
            "bad P@ss\tw0rd",
            "bad P@ss&#160;w0rd",
            "bad P@ss\u{a0}w0rd",
            "bad P@ss\u{2028}w0rd",
            "bad P@ss\u{200b}w0rd",
        ] {
            for out in [s.line(text, 300), s.snippet(text.as_bytes())] {
                assert!(!out.contains("w0rd"), "{text:?} -> {out:?}");
                assert!(out.contains(REDACTED), "{text:?} -> {out:?}");
            }
        }
        // Snippets strip tags (lines keep them, so nothing is joined there).
        let out = s.snippet(b"<p>bad P@ss<br>w0rd</p>");
        assert_eq!(out, "bad [redacted]");
        // A line separator is a line break to some log viewers.
        assert_eq!(s.line("a\u{2028}b\u{2029}c", 10), "a b c");
    }

    #[test]
    fn what_registration_issues_is_never_shown() {
        // A broken (cut) RFC 7591 answer carries a new secret and the
        // credential that manages the client.
        let cut = br#"{"client_id":"svc","registration_access_token":"rat-value-123","client_secret":"cs-value-456"#;
        let out = Scrubber::default().snippet(cut);
        assert!(
            !out.contains("rat-value") && !out.contains("cs-value"),
            "{out}"
        );
        let s = Scrubber::default().with_tokens_of(cut);
        assert_eq!(s.line("issued rat-value-123", 100), "issued [redacted]");
    }

    #[test]
    fn a_body_cut_at_a_cap_loses_the_tail_that_may_start_a_secret() {
        let s = Scrubber::for_secrets(["opaque-token-value"]);
        let page = format!("<html>{}<p>token opaque-tok", "<br>".repeat(100));
        let shown = s.snippet(s.without_cut_tail(page.as_bytes()));
        assert!(!shown.contains("opaque"), "{shown}");
        assert!(Scrubber::default().without_cut_tail(b"abc") == b"abc");
    }

    #[test]
    fn spellings_are_wiped_when_dropped() {
        let mut s = Scrubber::for_secrets(["Kx7-secret"]);
        assert!(!s.spellings.is_empty());
        s.spellings.zeroize();
        assert!(s.spellings.is_empty());
    }

    #[test]
    fn snippet_is_short_printable_and_one_line() {
        let body = format!("line1\r\n\tline2\u{7}\u{0}{}", "x".repeat(1000));
        let out = scrubber().snippet(body.as_bytes());
        assert!(
            out.chars().count() <= SNIPPET_CHARS,
            "{}",
            out.chars().count()
        );
        assert!(out.ends_with('…'));
        assert!(out.starts_with("line1 line2 "), "{out}");
        assert!(!out.chars().any(char::is_control));
        assert_eq!(
            scrubber().snippet("\u{feff}ok\u{202e}<<x>>".as_bytes()),
            "ok <<x>>"
        );
        // Invalid UTF-8 does not panic.
        let out = scrubber().snippet(&[0xff, 0xfe, b'a', 0xc3]);
        assert!(out.contains('a'));
        assert_eq!(scrubber().snippet(b""), "");
        assert_eq!(
            scrubber()
                .snippet("é".repeat(300).as_bytes())
                .chars()
                .count(),
            SNIPPET_CHARS
        );
    }

    #[test]
    fn spellings_are_deduplicated_longest_first() {
        let s = Scrubber::new(
            ["ab", "abc", "", "ab", "abc", "xy"]
                .map(str::to_owned)
                .to_vec(),
        );
        assert_eq!(s.spellings, ["abc", "ab", "xy"]);
    }

    #[test]
    fn line_is_printable_secret_free_and_bounded() {
        let s = scrubber();
        assert_eq!(
            s.line(&format!(" bad\r\n{SECRET}\u{202e}x\t"), 100),
            "bad  [redacted] x"
        );
        assert_eq!(s.line("abcde", 5), "abcde");
        assert_eq!(s.line("abcdef", 5), "abcd…");
        assert_eq!(s.line(&"é".repeat(10), 4), "ééé…");
    }

    #[test]
    fn html_error_pages_keep_their_words() {
        let page = "<!DOCTYPE html><html><head><title>500 - Internal server error.</title>\
                    <style type=\"text/css\">body{margin:0}</style></head>\
                    <body><h2>There is a problem with the resource you are looking for.</h2></body></html>";
        let out = scrubber().snippet(page.as_bytes());
        assert_eq!(
            out,
            "500 - Internal server error. There is a problem with the resource you are looking for."
        );
    }

    #[test]
    fn token_values_are_never_shown_even_cut_off() {
        let s = Scrubber::default();
        let cut =
            r#"{"access_token":"opaque-token-value-1234","token_type":"Bearer","expires_in":36"#;
        let out = s.snippet(cut.as_bytes());
        assert!(!out.contains("opaque-token-value"), "{out}");
        assert!(out.contains("token_type"), "{out}");
        let truncated = r#"{"access_token" : "opaque-tok"#;
        assert_eq!(s.scrub(truncated), r#"{"access_token" : "[redacted]"#);
        let jwt = "token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln and eyJ short";
        let out = s.scrub(jwt);
        assert_eq!(out, "token [redacted] and eyJ short");
        assert_eq!(
            s.scrub(r#"{"client_secret": 12345}"#),
            r#"{"client_secret": [redacted]}"#
        );
    }

    /// A server's 1 MiB answer of many `<style>` blocks: the snippet used to
    /// take minutes of CPU (quadratic tag stripping); now it is linear.
    #[test]
    fn many_style_blocks_are_stripped_in_linear_time() {
        let body = "<style>x</style>".repeat(65_536);
        let start = std::time::Instant::now();
        let snippet = Scrubber::default().snippet(body.as_bytes());
        assert_eq!(snippet, "");
        let body = format!(
            "<html><STYLE>a{{}}</Style>Error 500{}",
            " <style>b</style>".repeat(60_000)
        );
        assert_eq!(Scrubber::default().snippet(body.as_bytes()), "Error 500");
        // The quadratic version took 355 s for such a page (debug build);
        // the linear one a fraction of a second.
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
    }
}
