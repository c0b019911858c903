//! Reading a token request: the form body and the client's credentials
//! (`client_secret_post` or `client_secret_basic`, RFC 6749 §2.3.1).

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use percent_encoding::percent_decode_str;

use super::oauth::OAuthError;

/// A decoded `application/x-www-form-urlencoded` body.
#[derive(Debug, Default)]
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    /// Decodes `body`; a parameter sent twice is `invalid_request` (RFC 6749 §3.2).
    pub(crate) fn parse(body: &[u8]) -> Result<Form, OAuthError> {
        let mut params: Vec<(String, String)> = Vec::new();
        for (name, value) in url::form_urlencoded::parse(body) {
            if params.iter().any(|(n, _)| *n == name) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter '{name}' is included more than once"
                )));
            }
            params.push((name.into_owned(), value.into_owned()));
        }
        Ok(Form(params))
    }

    /// The value of `name`, if present (an empty value counts as absent).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// Whether the request carries a form body.
pub(crate) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The client credentials of a request, and how they came.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) id: String,
    pub(crate) secret: String,
    pub(crate) method: AuthMethod,
}

/// How a client authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthMethod {
    Post,
    Basic,
}

/// The credentials of a token (or introspection) request.
///
/// Errors: `invalid_request` when both methods are used at once (RFC 6749
/// §2.3: "MUST NOT use more than one authentication method"), `invalid_client`
/// when there are none or the `Authorization` header is malformed.
pub(crate) fn credentials(headers: &HeaderMap, form: &Form) -> Result<Credentials, OAuthError> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let value = auth.to_str().unwrap_or_default();
        if let Some((scheme, _)) = value.split_once(' ') {
            if scheme.eq_ignore_ascii_case("basic") {
                let (id, secret) = decode_basic(value).ok_or_else(|| {
                    OAuthError::invalid_client("malformed Basic authorization header")
                })?;
                if form.get("client_secret").is_some() {
                    return Err(OAuthError::invalid_request(
                        "the client authenticated with more than one method",
                    ));
                }
                if form.get("client_id").is_some_and(|body_id| body_id != id) {
                    return Err(OAuthError::invalid_request(
                        "client_id in the body differs from the Basic credentials",
                    ));
                }
                return Ok(Credentials {
                    id,
                    secret,
                    method: AuthMethod::Basic,
                });
            }
        }
    }
    let id = form
        .get("client_id")
        .ok_or_else(|| OAuthError::invalid_client("no client id found"))?;
    let secret = form
        .get("client_secret")
        .ok_or_else(|| OAuthError::invalid_client("no client secret found"))?;
    Ok(Credentials {
        id: id.to_owned(),
        secret: secret.to_owned(),
        method: AuthMethod::Post,
    })
}

/// Decodes `Basic base64(urlencode(id) ":" urlencode(secret))` per RFC 6749
/// §2.3.1: split at the first ':' (an encoded id has none), then
/// form-urldecode each half, so ids with ':' and secrets with '%', '+' or
/// spaces survive.
pub(crate) fn decode_basic(header_value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header_value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let id = form_urldecode(id)?;
    if id.is_empty() {
        return None;
    }
    Some((id, form_urldecode(secret)?))
}

/// `application/x-www-form-urlencoded` decoding of one value: '+' is a
/// space, `%XX` a byte; the result must be UTF-8.
fn form_urldecode(s: &str) -> Option<String> {
    let plus_as_space = s.replace('+', " ");
    percent_decode_str(&plus_as_space)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn basic(raw: &str) -> String {
        format!("Basic {}", STANDARD.encode(raw))
    }

    #[test]
    fn basic_splits_at_first_colon_then_decodes() {
        // id "plant:line 1", secret "s3cr3t P@ss&+=%/?#:" encoded per §2.3.1.
        let header = basic("plant%3Aline%201:s3cr3t%20P%40ss%26%2B%3D%25%2F%3F%23%3A");
        assert_eq!(
            decode_basic(&header),
            Some(("plant:line 1".into(), "s3cr3t P@ss&+=%/?#:".into()))
        );
    }

    #[test]
    fn basic_plus_is_space_and_empty_secret_allowed() {
        assert_eq!(
            decode_basic(&basic("a+b:c+d")),
            Some(("a b".into(), "c d".into()))
        );
        assert_eq!(decode_basic(&basic("id:")), Some(("id".into(), "".into())));
        assert_eq!(
            decode_basic(&format!("bAsIc {}", STANDARD.encode("x:y"))),
            Some(("x".into(), "y".into()))
        );
    }

    #[test]
    fn basic_rejects_malformed() {
        assert_eq!(decode_basic("Basic !!!notbase64"), None);
        assert_eq!(decode_basic(&basic("no-colon")), None);
        assert_eq!(decode_basic(&basic(":secret")), None);
        assert_eq!(decode_basic(&basic("id:%FF%FE")), None); // not UTF-8
        assert_eq!(decode_basic("Bearer abc"), None);
        assert_eq!(decode_basic("Basic"), None);
    }

    #[test]
    fn form_decodes_and_rejects_duplicates() {
        let form = Form::parse(b"client_secret=s3cr3t+P%40ss%26%2B%3D%25%2F%3F%23%3A&x=").unwrap();
        assert_eq!(form.get("client_secret"), Some("s3cr3t P@ss&+=%/?#:"));
        assert_eq!(form.get("x"), None);
        let err = Form::parse(b"scope=a&scope=b").unwrap_err();
        assert_eq!(err.error, "invalid_request");
    }

    #[test]
    fn credentials_post_basic_and_both() {
        let mut headers = HeaderMap::new();
        let form = Form::parse(b"client_id=a&client_secret=b").unwrap();
        let c = credentials(&headers, &form).unwrap();
        assert_eq!((c.id.as_str(), c.method), ("a", AuthMethod::Post));

        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&basic("a:b")).unwrap(),
        );
        let err = credentials(&headers, &form).unwrap_err();
        assert_eq!(err.error, "invalid_request");

        let form = Form::parse(b"client_id=a").unwrap();
        let c = credentials(&headers, &form).unwrap();
        assert_eq!((c.secret.as_str(), c.method), ("b", AuthMethod::Basic));

        let form = Form::parse(b"client_id=other").unwrap();
        assert_eq!(
            credentials(&headers, &form).unwrap_err().error,
            "invalid_request"
        );

        let err = credentials(&HeaderMap::new(), &Form::default()).unwrap_err();
        assert_eq!(err.error, "invalid_client");
    }
}
