//! Inference worker: pulls published adapters, verifies them, caches them within a budget and serves completions
