//! The error body every adapterd endpoint answers with, the one mapping from error codes to HTTP statuses, and
//! [`ApiError`], the error of the client.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `{"error": {...}}`: the body of every answer with a 4xx or 5xx status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorPayload,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody { error: ErrorPayload { code, message: message.into(), details: Vec::new() } }
    }
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorPayload {
    pub code: ErrorCode,
    /// One line for people, lowercase, no trailing period.
    pub message: String,
    /// Every problem with its place, e.g. each error of an invalid pipeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ErrorDetail>,
}

/// One problem, with where it is when that is known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// 1-based line in the submitted document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based column in the submitted document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// The field, e.g. `train.learning_rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub message: String,
}

impl ErrorDetail {
    /// `file:line:col: path: message`, leaving out the parts that are unknown.
    pub fn render(&self, file: Option<&str>) -> String {
        let mut place = String::new();
        if let Some(file) = file {
            place.push_str(file);
        }
        if let Some(line) = self.line {
            if !place.is_empty() {
                place.push(':');
            }
            place.push_str(&line.to_string());
            if let Some(column) = self.column {
                place.push_str(&format!(":{column}"));
            }
        }
        let mut parts: Vec<&str> = Vec::new();
        if !place.is_empty() {
            parts.push(&place);
        }
        if let Some(path) = self.path.as_deref().filter(|path| !path.is_empty()) {
            parts.push(path);
        }
        parts.push(&self.message);
        parts.join(": ")
    }
}

/// The kind of an error. Codes this client does not know decode as [`ErrorCode::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: the request body or a parameter is malformed.
    InvalidRequest,
    /// 400: the pipeline YAML does not validate; `details` has every problem.
    InvalidPipeline,
    /// 401: a webhook's secret or signature is wrong.
    Unauthorized,
    /// 404: no such pipeline, run, adapter, version or model.
    NotFound,
    /// 409: the request conflicts with the current state (e.g. a base model mismatch).
    Conflict,
    /// 413: the body is larger than the server accepts.
    PayloadTooLarge,
    /// 500: a bug or an unexpected failure in adapterd.
    Internal,
    /// 502: a dependency of adapterd (object store, database, worker) failed.
    BadGateway,
    /// 503: adapterd cannot serve this now (e.g. the model is still loading).
    Unavailable,
    /// A code from a newer server.
    Other(String),
}

impl ErrorCode {
    const KNOWN: [ErrorCode; 9] = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidPipeline,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Internal,
        ErrorCode::BadGateway,
        ErrorCode::Unavailable,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidPipeline => "invalid_pipeline",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Internal => "internal",
            ErrorCode::BadGateway => "bad_gateway",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Other(code) => code,
        }
    }

    /// The HTTP status the server answers with for this code: the one mapping, used by server and client.
    pub fn http_status(&self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::InvalidPipeline => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Internal | ErrorCode::Other(_) => 500,
            ErrorCode::BadGateway => 502,
            ErrorCode::Unavailable => 503,
        }
    }

    /// The code for an error answer whose body is not an [`ErrorBody`] (e.g. from a proxy).
    pub fn from_http_status(status: u16) -> ErrorCode {
        match status {
            401 | 403 => ErrorCode::Unauthorized,
            404 | 405 => ErrorCode::NotFound,
            409 => ErrorCode::Conflict,
            413 => ErrorCode::PayloadTooLarge,
            400..=499 => ErrorCode::InvalidRequest,
            502 | 504 => ErrorCode::BadGateway,
            503 => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for ErrorCode {
    fn from(code: &str) -> Self {
        ErrorCode::KNOWN
            .into_iter()
            .find(|known| known.as_str() == code)
            .unwrap_or_else(|| ErrorCode::Other(code.to_string()))
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Ok(ErrorCode::from(code.as_str()))
    }
}

/// Why a call of [`crate::ApiClient`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server URL given to the client is not a usable `http(s)://` URL.
    #[error("invalid server url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// Nothing answered at the server URL (connection refused, unknown host, connect timeout).
    #[error("adapterd is not reachable at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// The connection broke or timed out after it was made.
    #[error("{method} {url} failed: {reason}")]
    Transport { method: String, url: String, reason: String },
    /// The server answered with an error status; `error` is its decoded body.
    #[error("{} (http {status} {})", error.message, error.code)]
    Http { method: String, url: String, status: u16, error: ErrorPayload },
    /// The server answered success with a body this client cannot read.
    #[error("could not decode the answer to {method} {url}: {reason}")]
    Decode { method: String, url: String, reason: String },
}

impl ApiError {
    /// The HTTP status, for [`ApiError::Http`].
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The decoded error code, for [`ApiError::Http`].
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            ApiError::Http { error, .. } => Some(&error.code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(&ErrorCode::NotFound)
    }

    /// What a person can try next, when there is something useful to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            ApiError::Unreachable { .. } => {
                Some("is adapterd running? start it, or point the client at the right server url".to_string())
            }
            ApiError::Decode { .. } => {
                Some("the server may run a different adapterci version than this client".to_string())
            }
            _ => None,
        }
    }
}
