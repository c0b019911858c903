//! Reading what a request carries: the form body, the client's credentials
//! (`client_secret_post` or `client_secret_basic`, RFC 6749 §2.3.1) and
//! bearer tokens.

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use percent_encoding::percent_decode_str;

use super::oauth::OAuthError;

/// A decoded `application/x-www-form-urlencoded` body.
#[derive(Debug, Default)]
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    /// The form of a request that must send one (token, introspection).
    pub(crate) fn from_request(headers: &HeaderMap, body: &[u8]) -> Result<Form, OAuthError> {
        if !is_form(headers) {
            return Err(OAuthError::invalid_request(
                "the request must be application/x-www-form-urlencoded",
            ));
        }
        Form::parse(body)
    }

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
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The client credentials of a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) id: String,
    pub(crate) secret: String,
}

/// The credentials of a token (or introspection) request.
///
/// Errors: `invalid_request` when both methods are used at once (RFC 6749
/// §2.3: "MUST NOT use more than one authentication method"), `invalid_client`
/// when there are none or the `Authorization` header is malformed.
pub(crate) fn credentials(headers: &HeaderMap, form: &Form) -> Result<Credentials, OAuthError> {
    if let Some(encoded) = authorization(headers, "basic") {
        let (id, secret) = decode_basic(encoded)
            .ok_or_else(|| OAuthError::invalid_client("malformed Basic authorization header"))?;
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
        return Ok(Credentials { id, secret });
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
    })
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    authorization(headers, "bearer")
}

/// What follows `scheme` (compared case-insensitively) in the
/// `Authorization` header, if the header uses that scheme.
fn authorization<'h>(headers: &'h HeaderMap, scheme: &str) -> Option<&'h str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (name, rest) = value.trim().split_once(' ')?;
    name.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// Decodes the `base64(urlencode(id) ":" urlencode(secret))` of a Basic
/// header per RFC 6749 §2.3.1: split at the first ':' (an encoded id has
/// none), then form-urldecode each half, so ids with ':' and secrets with
/// '%', '+' or spaces survive.
fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let decoded = STANDARD.decode(encoded).ok()?;
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
        STANDARD.encode(raw)
    }

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
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

    proptest::proptest! {
        /// Whatever the id and secret, a client that encodes per §2.3.1
        /// (percent-encoding, space as %20 or '+') is understood.
        #[test]
        fn basic_roundtrips_any_credentials(id in "\\PC{1,40}", secret in "\\PC{0,40}", plus in proptest::bool::ANY) {
            use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
            let enc = |s: &str| {
                let e = utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
                if plus { e.replace("%20", "+") } else { e }
            };
            let header = basic(&format!("{}:{}", enc(&id), enc(&secret)));
            proptest::prop_assert_eq!(decode_basic(&header), Some((id, secret)));
        }
    }

    #[test]
    fn basic_plus_is_space_and_empty_secret_allowed() {
        assert_eq!(
            decode_basic(&basic("a+b:c+d")),
            Some(("a b".into(), "c d".into()))
        );
        assert_eq!(decode_basic(&basic("id:")), Some(("id".into(), "".into())));
    }

    #[test]
    fn authorization_scheme_is_case_insensitive_and_required() {
        let headers = with_authorization(&format!("bAsIc {}", basic("x:y")));
        assert_eq!(
            authorization(&headers, "basic"),
            Some(basic("x:y").as_str())
        );
        assert_eq!(bearer(&headers), None);
        assert_eq!(bearer(&with_authorization("BEARER abc ")), Some("abc"));
        assert_eq!(
            authorization(&with_authorization("Bearer abc"), "basic"),
            None
        );
        assert_eq!(authorization(&with_authorization("Basic"), "basic"), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn basic_rejects_malformed() {
        assert_eq!(decode_basic("!!!notbase64"), None);
        assert_eq!(decode_basic(&basic("no-colon")), None);
        assert_eq!(decode_basic(&basic(":secret")), None);
        assert_eq!(decode_basic(&basic("id:%FF%FE")), None); // not UTF-8
        assert_eq!(decode_basic(""), None);
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
        let form = Form::parse(b"client_id=a&client_secret=b").unwrap();
        let c = credentials(&HeaderMap::new(), &form).unwrap();
        assert_eq!((c.id.as_str(), c.secret.as_str()), ("a", "b"));

        let headers = with_authorization(&format!("Basic {}", basic("a:from-header")));
        let err = credentials(&headers, &form).unwrap_err();
        assert_eq!(err.error, "invalid_request");

        // The secret can only have come from the Basic header.
        let form = Form::parse(b"client_id=a").unwrap();
        let c = credentials(&headers, &form).unwrap();
        assert_eq!((c.id.as_str(), c.secret.as_str()), ("a", "from-header"));

        let form = Form::parse(b"client_id=other").unwrap();
        assert_eq!(
            credentials(&headers, &form).unwrap_err().error,
            "invalid_request"
        );

        let malformed = with_authorization("Basic !!!");
        assert_eq!(
            credentials(&malformed, &form).unwrap_err().error,
            "invalid_client"
        );

        let err = credentials(&HeaderMap::new(), &Form::default()).unwrap_err();
        assert_eq!(err.error, "invalid_client");
    }

    #[test]
    fn from_request_needs_a_form_content_type() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            Form::from_request(&headers, b"a=b").unwrap_err().error,
            "invalid_request"
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
        );
        assert_eq!(
            Form::from_request(&headers, b"a=b").unwrap().get("a"),
            Some("b")
        );
    }
}
