//! The README teaches what AVEVA documents: its first snippet (compiled as a
//! doctest through `src/lib.rs`) requests no scope, and no invented MES
//! scope name appears anywhere a user copies from.

const README: &str = include_str!("../README.md");

#[test]
fn the_first_snippet_requests_no_scope() {
    let start = README.find("```rust").expect("a Rust snippet");
    let body = &README[start..];
    let end = body[7..].find("```").expect("closed") + 7;
    let first = &body[..end];
    assert!(first.contains("AimClient::builder()"), "{first}");
    let code = first.lines().filter(|l| !l.trim_start().starts_with("//"));
    assert!(code.clone().all(|l| !l.contains(".scope(")), "{first}");
}

#[test]
fn no_invented_scope_in_what_users_copy() {
    for (name, text) in [
        ("README.md", README),
        ("src/lib.rs", include_str!("../src/lib.rs")),
        (
            "examples/quickstart.rs",
            include_str!("../examples/quickstart.rs"),
        ),
        (
            "examples/mes_entities.rs",
            include_str!("../examples/mes_entities.rs"),
        ),
        (
            "examples/job_lifecycle.rs",
            include_str!("../examples/job_lifecycle.rs"),
        ),
        (
            "src/bin/aim-token/main.rs",
            include_str!("../src/bin/aim-token/main.rs"),
        ),
    ] {
        assert!(
            !text.contains("mes.api"),
            "{name} names the invented scope mes.api"
        );
    }
}
