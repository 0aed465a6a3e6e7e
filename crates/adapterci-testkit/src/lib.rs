//! Test-only helpers: tiny models, in-memory fakes, fixtures
