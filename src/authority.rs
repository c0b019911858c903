//! Parsing the AIM authority. SKELETON (issue #2).
