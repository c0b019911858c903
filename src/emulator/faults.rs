//! Injected faults: a one-shot queue and a standing outage per endpoint,
//! and what each fault does to an answer.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};

use super::oauth::respond;
use super::{Endpoint, Fault};
use crate::clock::Clock;

/// The faults waiting for each endpoint.
#[derive(Default)]
pub(crate) struct Faults {
    /// Whether any fault is queued or standing: the common case, none,
    /// then costs an atomic load instead of a lock.
    armed: AtomicBool,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    queued: HashMap<Endpoint, VecDeque<Fault>>,
    outage: HashMap<Endpoint, Fault>,
}

impl Table {
    fn is_empty(&self) -> bool {
        self.queued.values().all(VecDeque::is_empty) && self.outage.is_empty()
    }
}

impl Faults {
    fn with_table<T>(&self, f: impl FnOnce(&mut Table) -> T) -> T {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let out = f(&mut table);
        self.armed.store(!table.is_empty(), Ordering::Release);
        out
    }

    /// Queues `fault` for the next `times` requests to `endpoint`.
    pub(crate) fn push(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        if times == 0 {
            return;
        }
        self.with_table(|t| {
            t.queued
                .entry(endpoint)
                .or_default()
                .extend(std::iter::repeat_n(fault, times));
        });
    }

    /// Sets or clears the standing fault of `endpoint`.
    pub(crate) fn set_outage(&self, endpoint: Endpoint, fault: Option<Fault>) {
        self.with_table(|t| match fault {
            Some(fault) => {
                t.outage.insert(endpoint, fault);
            }
            None => {
                t.outage.remove(&endpoint);
            }
        });
    }

    pub(crate) fn clear(&self) {
        self.with_table(|t| {
            t.queued.clear();
            t.outage.clear();
        });
    }

    /// The fault for this request to `endpoint`: the queue first, then the outage.
    pub(crate) fn next(&self, endpoint: Endpoint) -> Option<Fault> {
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        self.with_table(|t| {
            if let Some(fault) = t.queued.get_mut(&endpoint).and_then(VecDeque::pop_front) {
                return Some(fault);
            }
            t.outage.get(&endpoint).cloned()
        })
    }
}

/// What a fault does to the request.
pub(crate) enum Action {
    /// Answer this instead of the real answer.
    Respond(Response<Body>),
    /// Wait, then answer normally.
    Delay(Duration),
    /// Close the connection without answering.
    Drop,
}

/// The effect of `fault` on a request to `endpoint`.
pub(crate) fn apply(fault: Fault, endpoint: Endpoint, clock: &dyn Clock) -> Action {
    match fault {
        Fault::Delay(d) => Action::Delay(d),
        Fault::DropConnection => Action::Drop,
        Fault::Status {
            status,
            retry_after,
            body,
        } => {
            let body = body.unwrap_or_default();
            let content_type = if body.trim_start().starts_with(['{', '[']) {
                "application/json; charset=utf-8"
            } else {
                "text/plain; charset=utf-8"
            };
            let mut resp = respond(status_code(status), content_type, body);
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Action::Respond(resp)
        }
        Fault::RetryAfterDate { status, after } => {
            let mut resp = respond(status_code(status), "text/plain; charset=utf-8", "");
            if let Some(value) = super::server::http_date(clock.now().checked_add(after)) {
                resp.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Action::Respond(resp)
        }
        Fault::OAuth { status, error } => {
            let body = serde_json::json!({
                "error": error,
                "error_description": "fault injected by the AIM emulator",
            });
            Action::Respond(respond(
                status_code(status),
                "application/json; charset=utf-8",
                body.to_string(),
            ))
        }
        Fault::Garbage => Action::Respond(respond(
            StatusCode::OK,
            "application/json; charset=utf-8",
            "\u{feff}ok<<this is not JSON>>",
        )),
        Fault::Html => Action::Respond(respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/html",
            IIS_500,
        )),
        Fault::Empty => Action::Respond(respond(
            StatusCode::OK,
            "application/json; charset=utf-8",
            "",
        )),
        Fault::Redirect { status, location } => {
            let mut resp = respond(status_code(status), "text/html", "");
            if let Ok(value) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, value);
            }
            Action::Respond(resp)
        }
        Fault::Truncated => Action::Respond(respond(
            StatusCode::OK,
            "application/json; charset=utf-8",
            truncated_body(endpoint),
        )),
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The start of a real answer of `endpoint`, cut off mid-value.
fn truncated_body(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Token => {
            r#"{"access_token":"eyJhbGciOiJSUzI1NiIsImtpZCI6IjRGM0Q","expires_in":864"#
        }
        Endpoint::Discovery => {
            r#"{"issuer":"https://sms01/identitymanager","jwks_uri":"https://sm"#
        }
        Endpoint::Jwks => r#"{"keys":[{"kty":"RSA","use":"sig","kid":"4F3D"#,
        Endpoint::Register => r#"{"client_id":"mes-reporting","client_secret":"#,
        Endpoint::Introspect => r#"{"active":true,"client_id":"#,
        Endpoint::Mes => r#"[{"ent_id":4,"ent_name":"Line1","description":"Bottl"#,
    }
}

/// What IIS answers when the application behind it fails.
const IIS_500: &str = r#"<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"/>
<title>500 - Internal server error.</title>
</head>
<body>
<div id="header"><h1>Server Error</h1></div>
<div id="content">
 <div class="content-container"><fieldset>
  <h2>500 - Internal server error.</h2>
  <h3>There is a problem with the resource you are looking for, and it cannot be displayed.</h3>
 </fieldset></div>
</div>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_before_outage_and_clear() {
        let faults = Faults::default();
        assert_eq!(faults.next(Endpoint::Token), None);
        faults.set_outage(Endpoint::Token, Some(Fault::Html));
        faults.push(Endpoint::Token, Fault::Garbage, 2);
        assert_eq!(faults.next(Endpoint::Token), Some(Fault::Garbage));
        assert_eq!(faults.next(Endpoint::Token), Some(Fault::Garbage));
        assert_eq!(faults.next(Endpoint::Token), Some(Fault::Html));
        assert_eq!(faults.next(Endpoint::Token), Some(Fault::Html));
        assert_eq!(faults.next(Endpoint::Mes), None);
        faults.set_outage(Endpoint::Token, None);
        assert_eq!(faults.next(Endpoint::Token), None);
        faults.push(Endpoint::Mes, Fault::Empty, 1);
        faults.clear();
        assert_eq!(faults.next(Endpoint::Mes), None);
        assert!(!faults.armed.load(Ordering::Acquire));
    }

    #[test]
    fn truncated_bodies_are_not_json() {
        for ep in [
            Endpoint::Discovery,
            Endpoint::Jwks,
            Endpoint::Token,
            Endpoint::Register,
            Endpoint::Introspect,
            Endpoint::Mes,
        ] {
            assert!(serde_json::from_str::<serde_json::Value>(truncated_body(ep)).is_err());
        }
    }
}
