//! reqwest-middleware integration. SKELETON (issue #4).
