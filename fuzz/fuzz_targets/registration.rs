//! RFC 7591 registration answers: a client with an ID, or an error that
//! shows neither the initial access token nor the client secret (planted
//! anywhere in the answer).
#![no_main]

use aim_token::__fuzz;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::*;

fuzz_target!(|data: &[u8]| {
    let secrets = vec![TOKEN.to_owned(), SECRET.to_owned()];
    let input = frame(data, std::slice::from_ref(&secrets[1]));
    match __fuzz::registration_answer(input.status, &input.body, TOKEN, SECRET) {
        Ok(client) => {
            assert!((200..300).contains(&input.status));
            assert!(!client.client_id().is_empty());
            // Debug shows neither the secret nor the registration access
            // token. What it shows on purpose (field names, the ID, the
            // URI, scopes) is cut out first, longest first: a secret `id`
            // is not leaked by "client_id".
            let mut shown = format!("{client:?}");
            let mut parts: Vec<&str> = [
                "RegisteredClient",
                "client_id",
                "client_secret",
                "registration_access_token",
                "registration_client_uri",
                "scopes",
                "access_token_lifetime",
                "[redacted]",
                "Some",
                "None",
                client.client_id(),
            ]
            .into_iter()
            .chain(client.registration_client_uri())
            .chain(client.scopes().iter().map(String::as_str))
            .collect();
            parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for part in parts.into_iter().filter(|p| !p.is_empty()) {
                shown = shown.replace(part, "\u{1}");
            }
            for secret in [client.client_secret(), client.registration_access_token()]
                .into_iter()
                .flatten()
            {
                assert!(
                    secret.len() < 4 || !shown.contains(secret),
                    "{secret:?} in {client:?}"
                );
            }
        }
        Err(err) => {
            assert_clean(&err, &secrets);
            assert_eq!(err.status(), Some(input.status), "{err}");
        }
    }
});
