//! Nothing to see here: this package exists for its criterion benches
//! (`token_cache.rs`, `bearer_overhead.rs`, `token_store.rs`), which keep criterion out of
//! aim-token's own dev-dependencies. See the manifest for the commands.
