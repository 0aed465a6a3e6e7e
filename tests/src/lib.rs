//! End-to-end tests across crates live in `tests/`; this library only holds their shared helpers.
