//! The adapterd service: HTTP API, webhooks, controller and embedded worker
