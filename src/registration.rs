//! Client registration. SKELETON (issue #5).

/// Registers a client ID with AIM.
#[derive(Debug, Clone)]
pub struct ClientRegistration {
    #[allow(dead_code)]
    client_id: String,
}
