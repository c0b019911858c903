//! Making server answers safe to show: a short, printable snippet without
//! the client secret (servers do echo it) or anything token-shaped.

/// The longest snippet of a server answer that goes into an error message.
const SNIPPET_CHARS: usize = 200;

const REDACTED: &str = "[redacted]";

/// JSON members whose values are never shown, even cut off.
const SECRET_FIELDS: [&str; 4] = ["access_token", "refresh_token", "id_token", "client_secret"];

/// Removes the client secret (in every spelling it was sent in) and
/// token-looking values from text.
#[derive(Clone, Default)]
pub(crate) struct Scrubber {
    /// Longest first, so a longer encoding is not half-replaced by a shorter one.
    spellings: Vec<String>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("spellings", &self.spellings.len())
            .finish()
    }
}

impl Scrubber {
    pub(crate) fn new(mut spellings: Vec<String>) -> Self {
        spellings.retain(|s| !s.is_empty());
        spellings.sort_unstable();
        spellings.dedup();
        spellings.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Scrubber { spellings }
    }

    /// `text` without the secret, JSON token members and JWT-looking runs.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for spelling in &self.spellings {
            if out.contains(spelling.as_str()) {
                out = out.replace(spelling.as_str(), REDACTED);
            }
        }
        for field in SECRET_FIELDS {
            out = redact_json_member(&out, field);
            out = redact_form_field(&out, field);
        }
        redact_jwts(&out)
    }

    /// A server string (an OAuth error code or description, a Location) for
    /// a message: control and invisible characters as spaces, secret-free,
    /// at most `max` characters.
    pub(crate) fn line(&self, text: &str, max: usize) -> String {
        let flat: String = text
            .chars()
            .map(|c| {
                if c.is_control() || is_invisible(c) {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        truncate_chars(&self.scrub(flat.trim()), max)
    }

    /// A short, printable, secret-free excerpt of a body for an error message.
    pub(crate) fn snippet(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let text = if looks_like_html(&text) {
            strip_tags(&text)
        } else {
            text.into_owned()
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
        let scrubbed = self.scrub(flat.trim());
        truncate_chars(&scrubbed, SNIPPET_CHARS)
    }
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
            out.push_str(REDACTED);
            match string_body.find('"') {
                Some(end) => rest = &string_body[end..],
                None => rest = "",
            }
        } else {
            // A non-string value: redact up to the next delimiter.
            let end = value.find([',', '}', ' ']).unwrap_or(value.len());
            out.push_str(REDACTED);
            rest = &value[end..];
        }
    }
    out.push_str(rest);
    out
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
            out.push_str(REDACTED);
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
            out.push_str(REDACTED);
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
