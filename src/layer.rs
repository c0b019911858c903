//! tower integration. SKELETON (issue #4).
