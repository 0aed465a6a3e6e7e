//! The error type of the core crate: validation failures of domain values.

/// Errors raised when a domain value is built from untrusted input.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// A digest string is not `sha256:<64 lowercase hex>`.
    #[error("invalid digest {value:?}: {reason}")]
    InvalidDigest { value: String, reason: &'static str },
    /// A name (adapter, pipeline) breaks the naming rules.
    #[error("invalid {kind} name {value:?}: {reason}")]
    InvalidName { kind: &'static str, value: String, reason: &'static str },
    /// A run cannot move from one state to another.
    #[error("run cannot go from {from} to {to}")]
    InvalidTransition { from: String, to: String },
}
