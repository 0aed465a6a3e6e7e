//! Exit codes, in one place, and the error type every command returns: a message, its details, hints for what
//! to do next, and the exit code it maps to.

use std::fmt;
use std::process::ExitCode;

use adapterci_api::{ApiError, ErrorCode};

use crate::env_vars;

/// How adapterctl exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: done; for a run, it succeeded.
    Success,
    /// 1: an error, or a run that failed or was cancelled.
    Failure,
    /// 2: the command line is wrong (clap's usage errors).
    Usage,
    /// 3: a run finished and a gate rejected its adapter: a normal outcome, nothing was published.
    GateRejected,
    /// 4: the pipeline, run, adapter or version does not exist.
    NotFound,
    /// 130 (128 + SIGINT, as shells report it): ctrl-c stopped the command; what it was writing was removed.
    Interrupted,
    /// 143 (128 + SIGTERM): SIGTERM stopped the command; what it was writing was removed.
    Terminated,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::GateRejected => 3,
            ExitStatus::NotFound => 4,
            ExitStatus::Interrupted => 130,
            ExitStatus::Terminated => 143,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status.code())
    }
}

/// A failed command: printed as `error: ...`, then its details, then `hint: ...` lines, all on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub message: String,
    /// One problem a line (e.g. every error of an invalid pipeline).
    pub details: Vec<String>,
    pub hints: Vec<String>,
    pub status: ExitStatus,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> Self {
        CliError { message: message.into(), details: Vec::new(), hints: Vec::new(), status: ExitStatus::Failure }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        CliError { status: ExitStatus::NotFound, ..CliError::new(message) }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// Adds `hint` only when this is a not-found error.
    pub fn with_not_found_hint(self, hint: impl Into<String>) -> Self {
        if self.status == ExitStatus::NotFound { self.with_hint(hint) } else { self }
    }

    /// Converts an API error, naming `file` before each detail (for errors about a submitted pipeline).
    pub fn from_api(err: ApiError, file: Option<&str>) -> Self {
        let hint = err.hint();
        let mut cli_error = match err {
            ApiError::Http { error, status, .. } => {
                let exit = if error.code == ErrorCode::NotFound { ExitStatus::NotFound } else { ExitStatus::Failure };
                let mut message = error.message;
                if error.code == ErrorCode::Internal || status >= 500 {
                    message = format!("adapterd failed: {message} (http {status} {})", error.code);
                }
                CliError {
                    message,
                    details: error.details.iter().map(|detail| detail.render(file)).collect(),
                    hints: Vec::new(),
                    status: exit,
                }
            }
            ApiError::Unreachable { .. } => CliError::new(err.to_string()).with_hint(format!(
                "start adapterd, or point --server (or {}) at the one you use",
                env_vars::ADAPTERCI_SERVER
            )),
            other => CliError::new(other.to_string()),
        };
        if let Some(hint) = hint.filter(|_| cli_error.hints.is_empty()) {
            cli_error.hints.push(hint);
        }
        cli_error
    }
}

impl From<ApiError> for CliError {
    fn from(err: ApiError) -> Self {
        CliError::from_api(err, None)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}
