//! Versioned, content-addressed adapter registry and dataset sources on object_store
