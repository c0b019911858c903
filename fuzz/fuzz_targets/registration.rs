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
            if client.client_secret().is_some() {
                assert!(format!("{client:?}").contains("[redacted]"), "{client:?}");
            }
        }
        Err(err) => {
            assert_clean(&err, &secrets);
            assert_eq!(err.status(), Some(input.status), "{err}");
        }
    }
});
