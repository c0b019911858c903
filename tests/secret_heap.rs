//! No copy of the client secret is freed unzeroized (DESIGN: secrets are
//! zeroized on drop): a global allocator looks into every heap block freed
//! while a check runs, for a canary secret read from the environment or a
//! file the ways plant machines hold it. A copy made to drop a line break,
//! or a buffer grown while decoding, would be found here.
//!
//! One test in its own binary: it sets process variables and owns the
//! allocator (a second test would run beside it, on the same allocator).

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

use aim_token::{AimClient, ClientAuthMethod};

/// The secret looked for in freed blocks (ASCII, so it is the same bytes
/// in every String that holds it).
const CANARY: &str = "canary-7f3e9a1c-0d2b-aim-secret";

static ARMED: AtomicBool = AtomicBool::new(false);
static FOUND: AtomicBool = AtomicBool::new(false);

struct Scanning;

// SAFETY: every call is forwarded to `System` unchanged; `dealloc` only
// reads the block it is about to free, which is still allocated and
// `layout.size()` bytes long. `realloc` is the default (alloc, copy,
// dealloc), so a moved block passes through `dealloc` too.
unsafe impl GlobalAlloc for Scanning {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::SeqCst) {
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            // A prefix is enough: a half-decoded secret is a leak too.
            let needle = &CANARY.as_bytes()[..16];
            if block.windows(needle.len()).any(|w| w == needle) {
                FOUND.store(true, Ordering::SeqCst);
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Scanning = Scanning;

/// Whether reading the secret from the environment (and dropping it)
/// freed a block that still held it.
fn leaks() -> bool {
    leaks_in(|| {
        let builder = AimClient::builder().client_secret_from_env();
        assert!(builder.is_ok(), "{:?}", builder.err());
    })
}

/// Whether `run` freed a block that still held the canary.
fn leaks_in(run: impl FnOnce()) -> bool {
    FOUND.store(false, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    run();
    ARMED.store(false, Ordering::SeqCst);
    FOUND.load(Ordering::SeqCst)
}

/// Whether building a client (with `method`) and dropping it freed a block
/// that still held the secret. Building makes the secret's spellings for
/// the scrubber and the Basic header, each in a buffer that never grows, so
/// no half-written copy is freed on the way. (What hyper copies into its
/// own write buffers on a request is out of this crate's reach.)
fn building_leaks(method: ClientAuthMethod) -> bool {
    // A secret that every spelling writes differently, long enough that a
    // growing buffer would reallocate more than once.
    let secret = format!("{CANARY} &+=%:/?#é{}", "s p".repeat(40));
    leaks_in(|| {
        let aim = AimClient::builder()
            .authority("https://sms01.plant.local/identitymanager")
            .client_id("mes-reporting")
            .client_secret(secret.clone())
            .auth_method(method)
            .build();
        assert!(aim.is_ok(), "{:?}", aim.err());
    })
}

#[test]
fn no_unzeroized_copy_of_the_secret_is_freed() {
    let dir = std::env::temp_dir().join(format!("aim-token-secret-heap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("secret.txt");
    // Longer than a first read's probe, so a growing buffer would show.
    let utf8 = format!("{CANARY}{}\n", "x".repeat(200)).into_bytes();
    // Characters of 3 UTF-8 bytes from 2 UTF-16 bytes: a decoder that
    // sizes its buffer by the UTF-16 length has to grow it.
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(
        format!("{CANARY}{}\r\n", "設定".repeat(60))
            .encode_utf16()
            .flat_map(u16::to_le_bytes),
    );
    let mut leaked = Vec::new();
    // `Get-Content secret.txt -Raw` into the variable keeps the CRLF.
    std::env::set_var("AIM_CLIENT_SECRET", format!("{CANARY}\r\n"));
    if leaks() {
        leaked.push("AIM_CLIENT_SECRET with CRLF");
    }
    std::env::remove_var("AIM_CLIENT_SECRET");
    std::env::set_var("AIM_CLIENT_SECRET_FILE", &path);
    for (what, bytes) in [("a UTF-8 file", &utf8), ("a UTF-16 file", &utf16)] {
        std::fs::write(&path, bytes).unwrap();
        if leaks() {
            leaked.push(what);
        }
    }
    std::env::remove_var("AIM_CLIENT_SECRET_FILE");
    std::fs::remove_dir_all(&dir).unwrap();
    for (what, method) in [
        (
            "building a client_secret_post client",
            ClientAuthMethod::Post,
        ),
        (
            "building a client_secret_basic client",
            ClientAuthMethod::Basic,
        ),
    ] {
        if building_leaks(method) {
            leaked.push(what);
        }
    }
    assert!(
        leaked.is_empty(),
        "a copy of the secret was freed without being zeroized: {leaked:?}"
    );
}
