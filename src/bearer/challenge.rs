//! Reading a 401: its `WWW-Authenticate` challenges (RFC 9110 §11.6.1,
//! RFC 6750 §3) say whether a fresh token can help, and why MES refused.

use super::is_token_rejected;

/// Why a resource server answered 401, by its `WWW-Authenticate`
/// challenges (RFC 9110 §11.6.1, RFC 6750 §3): only a refused token is
/// fixed by a fresh one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The token (a Bearer challenge, or none at all): renew and retry.
    Token,
    /// `Bearer error="insufficient_scope"`: a fresh token has the same scopes.
    Scope,
    /// Only other schemes, e.g. IIS's `Negotiate, NTLM` when Windows
    /// Authentication is on for the site: no bearer token is asked for.
    OtherSchemes(String),
}

impl Refusal {
    /// What the refusal of a 401 means, for an error message (`None` for
    /// a refused token: the caller words that one).
    pub(crate) fn explain(&self) -> Option<String> {
        match self {
            Refusal::Token => None,
            Refusal::Scope => Some(
                "MES accepts the token but it lacks a scope the call needs (WWW-Authenticate: \
                 Bearer error=\"insufficient_scope\"); a fresh token would have the same scopes: \
                 allow the scope for this client in AIM (its ScopeRestrictions, \
                 Update-IdentityManagerClient) and request it with .scope(..) / AIM_SCOPE"
                    .to_owned(),
            ),
            Refusal::OtherSchemes(schemes) => Some(format!(
                "MES (IIS) asks for {schemes} (WWW-Authenticate), not a bearer token, so no \
                 token can help: Windows authentication is enabled where the MES Web API \
                 expects AIM tokens. Check the MES base URL, and that the Web API's IIS \
                 application accepts anonymous requests carrying a token"
            )),
        }
    }
}

/// The refusal of a response to a request sent to `sent_to`: `None` unless
/// it is a 401 from there. A client that follows redirects (a reqwest
/// client's default) drops the token when one leads to another scheme,
/// host or port, so that server's 401 says nothing about the token.
pub(crate) fn refusal_of(response: &reqwest::Response, sent_to: &url::Url) -> Option<Refusal> {
    if !is_token_rejected(response.status().as_u16()) {
        return None; // every answer passes here: the common case first
    }
    let answered = response.url();
    let same_origin = answered.scheme() == sent_to.scheme()
        && answered.host_str() == sent_to.host_str()
        && answered.port_or_known_default() == sent_to.port_or_known_default();
    if !same_origin {
        return None;
    }
    refusal(response.status().as_u16(), response.headers())
}

/// Whether a response is a refusal and which: `None` unless `status` is 401.
pub(crate) fn refusal(status: u16, headers: &reqwest::header::HeaderMap) -> Option<Refusal> {
    if !is_token_rejected(status) {
        return None;
    }
    let mut others: Vec<&str> = Vec::new();
    let mut bearer: Option<Refusal> = None;
    let values = headers.get_all(reqwest::header::WWW_AUTHENTICATE);
    // Unreadable (non-ASCII) challenges say nothing: treated as absent.
    for challenge in values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(challenges)
    {
        if challenge.scheme.eq_ignore_ascii_case("bearer") {
            let scope = challenge.error.is_some_and(|e| e == "insufficient_scope");
            if bearer != Some(Refusal::Token) {
                bearer = Some(if scope {
                    Refusal::Scope
                } else {
                    Refusal::Token
                });
            }
        } else {
            // Named only when it is a scheme people know: a server's value
            // is no text to repeat (one may echo the token as a "scheme").
            let name = KNOWN_SCHEMES
                .iter()
                .find(|k| k.eq_ignore_ascii_case(challenge.scheme))
                .copied()
                .unwrap_or("another scheme");
            if !others.contains(&name) {
                others.push(name);
            }
        }
    }
    Some(match bearer {
        Some(refusal) => refusal,
        None if others.is_empty() => Refusal::Token,
        None => Refusal::OtherSchemes(others.join(", ")),
    })
}

/// The schemes a refusal names; any other is "another scheme".
const KNOWN_SCHEMES: [&str; 5] = ["Negotiate", "NTLM", "Kerberos", "Basic", "Digest"];

/// One challenge of a `WWW-Authenticate` value: its scheme and the two
/// parameters of RFC 6750 §3 that say why.
struct Challenge<'a> {
    scheme: &'a str,
    error: Option<&'a str>,
    description: Option<&'a str>,
}

/// What a 401's Bearer challenge states (RFC 6750 §3): its `error` and
/// `error_description`, raw: the caller scrubs them before showing them.
pub(crate) fn stated(headers: &reqwest::header::HeaderMap) -> (Option<String>, Option<String>) {
    let values = headers.get_all(reqwest::header::WWW_AUTHENTICATE);
    values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(challenges)
        .find(|c| {
            c.scheme.eq_ignore_ascii_case("bearer")
                && (c.error.is_some() || c.description.is_some())
        })
        .map(|c| (c.error.map(str::to_owned), c.description.map(str::to_owned)))
        .unwrap_or_default()
}

/// The challenges of one `WWW-Authenticate` value. A value may hold
/// several (`Negotiate, NTLM`), and commas also separate parameters
/// (`Bearer realm="mes", error="invalid_token"`), so an element that starts
/// with a name not followed by `=` starts a challenge.
fn challenges(value: &str) -> Vec<Challenge<'_>> {
    let mut out: Vec<Challenge<'_>> = Vec::new();
    for element in split_outside_quotes(value) {
        let (name, rest) = leading_token(element.trim());
        if name.is_empty() {
            continue;
        }
        if rest.trim_start().starts_with('=') {
            // A parameter of the challenge before it.
            if let Some(last) = out.last_mut() {
                last.note(name, rest);
            }
            continue;
        }
        let mut challenge = Challenge {
            scheme: name,
            error: None,
            description: None,
        };
        // Its first parameter shares the element: `Bearer error="..."`.
        let (param, value) = leading_token(rest.trim_start());
        if value.trim_start().starts_with('=') {
            challenge.note(param, value);
        }
        out.push(challenge);
    }
    out
}

impl<'a> Challenge<'a> {
    /// Keeps the parameter `name` (`rest` is `= value`) if it is `error`
    /// or `error_description`.
    fn note(&mut self, name: &str, rest: &'a str) {
        let value = rest.trim_start().trim_start_matches('=').trim();
        let value = Some(value.trim_matches('"'));
        if name.eq_ignore_ascii_case("error") {
            self.error = value;
        } else if name.eq_ignore_ascii_case("error_description") {
            self.description = value;
        }
    }
}

/// `text` split at the commas that are not inside a quoted string.
fn split_outside_quotes(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (at, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The RFC 9110 token at the start of `text`, and what follows it.
fn leading_token(text: &str) -> (&str, &str) {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let len = text.find(|c: char| !is_tchar(c)).unwrap_or(text.len());
    text.split_at(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn a_401_is_read_by_its_challenges() {
        let refusal = |values: &[&str]| {
            let mut headers = reqwest::header::HeaderMap::new();
            for v in values {
                headers.append(
                    reqwest::header::WWW_AUTHENTICATE,
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            refusal(401, &headers).unwrap()
        };
        let other = |s: &str| Refusal::OtherSchemes(s.to_owned());
        assert_eq!(refusal(&[]), Refusal::Token);
        assert_eq!(
            refusal(&[r#"Bearer error="invalid_token""#]),
            Refusal::Token
        );
        assert_eq!(refusal(&["Bearer"]), Refusal::Token);
        for scope in [
            r#"Bearer realm="mes", error="insufficient_scope", scope="a b""#,
            r#"Bearer error="insufficient_scope""#,
            "bearer error=insufficient_scope",
            r#"Bearer realm="a, b",error = "insufficient_scope""#,
        ] {
            assert_eq!(refusal(&[scope]), Refusal::Scope, "{scope}");
        }
        assert_eq!(refusal(&["Negotiate, NTLM"]), other("Negotiate, NTLM"));
        // A value that is not a scheme people know is not repeated.
        assert_eq!(
            refusal(&["eyJhbGciOi.eyJzdWIi.c2ln", "X-Custom realm=\"a\""]),
            other("another scheme")
        );
        assert_eq!(refusal(&["Negotiate", "NTLM"]), other("Negotiate, NTLM"));
        assert_eq!(
            refusal(&["Negotiate oYIBzw==", "negotiate"]),
            other("Negotiate")
        );
        // A quoted comma does not start a challenge; Bearer on offer wins.
        assert_eq!(refusal(&[r#"Basic realm="x, Bearer y""#]), other("Basic"));
        assert_eq!(refusal(&["Negotiate, Bearer"]), Refusal::Token);
        assert_eq!(
            refusal(&[r#"Bearer error_description="not error=\"insufficient_scope\"""#]),
            Refusal::Token
        );
        assert_eq!(refusal(&[r#"=,, "x"#, ""]), Refusal::Token);
        assert!(refusal(&["Negotiate"])
            .explain()
            .unwrap()
            .contains("Negotiate"));
        assert!(Refusal::Token.explain().is_none());
        let mut headers = reqwest::header::HeaderMap::new();
        for v in [
            "Negotiate",
            r#"Bearer realm="mes", error="invalid_token", error_description="expired, at 9:00""#,
        ] {
            headers.append(
                reqwest::header::WWW_AUTHENTICATE,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        assert_eq!(
            stated(&headers),
            (
                Some("invalid_token".to_owned()),
                Some("expired, at 9:00".to_owned())
            )
        );
        assert_eq!(stated(&reqwest::header::HeaderMap::new()), (None, None));
        assert_eq!(
            super::refusal(403, &reqwest::header::HeaderMap::new()),
            None
        );
    }
}
