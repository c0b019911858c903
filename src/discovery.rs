//! OpenID provider metadata. SKELETON (issue #2).
