//! The PowerShell rendering of a client registration. Property: the
//! command, read back by a model of PowerShell's tokenizer (single-quoted
//! strings, its typographic quotes, statement ends), gives exactly the
//! values put in — or the rendering refused.
#![no_main]

use std::collections::BTreeMap;
use std::time::Duration;

use aim_token::ClientRegistration;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    client_id: String,
    name: String,
    secret: String,
    scopes: Vec<String>,
    host: Option<String>,
    lifetime_secs: u32,
    enabled: bool,
}

#[derive(Debug, PartialEq)]
enum Value {
    Quoted(String),
    Bare(String),
}

/// PowerShell's single quotes: ASCII and U+2018..U+201B.
fn is_quote(c: char) -> bool {
    matches!(c, '\'' | '\u{2018}'..='\u{201B}')
}

/// One statement -> (command, parameter -> comma-separated values).
/// `Err` where PowerShell would read something else than a plain command.
fn parse_statement(line: &str) -> Result<(String, BTreeMap<String, Vec<Value>>), String> {
    let mut chars = line.chars().peekable();
    let mut words: Vec<Vec<Value>> = Vec::new();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut list = Vec::new();
        loop {
            match chars.peek().copied() {
                Some(c) if is_quote(c) => {
                    if c != '\'' {
                        return Err(format!("opens with typographic quote U+{:04X}", c as u32));
                    }
                    chars.next();
                    let mut s = String::new();
                    loop {
                        match chars.next() {
                            None => return Err("unterminated string".into()),
                            Some(c) if is_quote(c) => {
                                if chars.peek().copied().is_some_and(is_quote) {
                                    let next = chars.next().unwrap_or('\'');
                                    if c != '\'' || next != '\'' {
                                        return Err("typographic quote in a string".into());
                                    }
                                    s.push('\'');
                                } else {
                                    break;
                                }
                            }
                            Some(c) if c.is_control() => {
                                return Err(format!(
                                    "control character U+{:04X} in a string",
                                    c as u32
                                ))
                            }
                            Some(c) => s.push(c),
                        }
                    }
                    list.push(Value::Quoted(s));
                }
                Some(c) if c.is_ascii_alphanumeric() || c == '-' => {
                    let mut s = String::new();
                    while let Some(&c) = chars.peek() {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            s.push(c);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    list.push(Value::Bare(s));
                }
                Some(c) => return Err(format!("unexpected U+{:04X} outside a string", c as u32)),
                None => return Err("a list ends with a comma".into()),
            }
            match chars.peek() {
                Some(',') => {
                    chars.next();
                }
                Some(' ') | None => break,
                Some(&c) => return Err(format!("U+{:04X} right after a value", c as u32)),
            }
        }
        words.push(list);
    }
    let mut words = words.into_iter();
    let command = match words.next().as_deref() {
        Some([Value::Bare(c)]) => c.clone(),
        other => return Err(format!("no command: {other:?}")),
    };
    let mut params = BTreeMap::new();
    while let Some(word) = words.next() {
        let name = match word.as_slice() {
            [Value::Bare(p)] if p.starts_with('-') => p.clone(),
            other => return Err(format!("expected a parameter, found {other:?}")),
        };
        let value = words.next().ok_or(format!("{name} has no value"))?;
        if params.insert(name.clone(), value).is_some() {
            return Err(format!("{name} given twice"));
        }
    }
    Ok((command, params))
}

/// What `to_powershell`'s documentation says it refuses in a value:
/// control characters, Unicode line separators, text-direction marks and
/// overrides, and the quote lookalikes.
fn is_refused(c: char) -> bool {
    c.is_control()
        || is_quote(c) && c != '\''
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{061C}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

fn quoted(v: &str) -> Vec<Value> {
    vec![Value::Quoted(v.to_owned())]
}

fuzz_target!(|input: Input| {
    let host = input
        .host
        .clone()
        .unwrap_or_else(|| "sms01.plant.local".to_owned());
    let registration = ClientRegistration::new(input.client_id.clone())
        .name(input.name.clone())
        .secret(input.secret.clone())
        .scopes(input.scopes.clone())
        .access_token_lifetime(Duration::from_secs(u64::from(input.lifetime_secs)))
        .enabled(input.enabled);
    let commands = match registration.to_powershell(&host) {
        Ok(commands) => commands,
        // A refusal only for what the documentation says is refused: an
        // invalid registration, a host that is not one, or a value with a
        // character that could change or hide the command. A rendering that
        // refused everything would otherwise pass.
        Err(err) => {
            let values = [&input.client_id, &input.name, &input.secret]
                .into_iter()
                .chain(&input.scopes);
            let unsafe_char = values.flat_map(|v| v.chars()).any(is_refused);
            assert!(
                registration.validate().is_err() || input.host.is_some() || unsafe_char,
                "refused a valid registration with plain values: {err}: {input:?}"
            );
            return;
        }
    };
    // Two statements, ended by the newline between them and nothing else.
    let lines: Vec<&str> = commands.split(['\n', '\r']).collect();
    assert_eq!(lines.len(), 2, "{commands:?}");
    let (add, a) = parse_statement(lines[0]).unwrap_or_else(|e| panic!("{e}: {commands:?}"));
    let (get, g) = parse_statement(lines[1]).unwrap_or_else(|e| panic!("{e}: {commands:?}"));
    assert_eq!(add, "Add-IdentityManagerClient");
    assert_eq!(get, "Get-IdentityManagerClient");
    assert_eq!(a["-Id"], quoted(&input.client_id), "{commands:?}");
    assert_eq!(a["-Name"], quoted(&input.name), "{commands:?}");
    assert_eq!(a["-Secret"], quoted(&input.secret), "{commands:?}");
    assert_eq!(
        a["-Enabled"],
        vec![Value::Bare(u8::from(input.enabled).to_string())]
    );
    assert_eq!(
        a["-AllowedGrantTypes"],
        vec![Value::Bare("ClientCredentials".into())]
    );
    let scopes: Vec<Value> = input
        .scopes
        .iter()
        .map(|s| Value::Quoted(s.clone()))
        .collect();
    if scopes.is_empty() {
        assert!(!a.contains_key("-ScopeRestrictions"), "{commands:?}");
    } else {
        assert_eq!(a["-ScopeRestrictions"], scopes, "{commands:?}");
    }
    assert!(
        matches!(a["-AccessTokenLifetime"].as_slice(), [Value::Bare(n)] if n.parse::<u32>().is_ok())
    );
    assert_eq!(g["-Id"], a["-Id"]);
    assert_eq!(g["-HostBase"], a["-HostBase"]);
    assert_eq!(a.len(), 7 + usize::from(!scopes.is_empty()), "{commands:?}");
    assert_eq!(g.len(), 2);
});
