//! The MES Web API client. SKELETON (issue #4).

use crate::client::AimClient;

/// Calls the AVEVA MES Web API (`/mesmw/api/...`) with the AIM token attached.
#[derive(Debug, Clone)]
pub struct MesClient {
    #[allow(dead_code)]
    aim: AimClient,
}
