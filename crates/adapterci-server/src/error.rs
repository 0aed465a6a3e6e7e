//! The one mapping from errors to HTTP responses, and the errors of starting the server.

use adapterci_api::{ErrorBody, ErrorCode, ErrorDetail};
use adapterci_controller::ControllerError;
use adapterci_core::ports::{RegistryError, SourceError, StoreError};
use adapterci_worker::WorkerError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct AppError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Vec<ErrorDetail>,
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> AppError {
        AppError { code, message: message.into(), details: Vec::new() }
    }

    pub fn not_found(message: impl Into<String>) -> AppError {
        AppError::new(ErrorCode::NotFound, message)
    }

    pub fn invalid_request(message: impl Into<String>) -> AppError {
        AppError::new(ErrorCode::InvalidRequest, message)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code = self.code.as_str(), message = %self.message, "request failed");
        }
        let mut body = ErrorBody::new(self.code, self.message);
        body.error.details = self.details;
        (status, Json(body)).into_response()
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        let code = match &error {
            StoreError::NotFound { .. } => ErrorCode::NotFound,
            StoreError::Conflict { .. } | StoreError::InvalidTransition(_) => ErrorCode::Conflict,
            StoreError::Backend(_) => ErrorCode::BadGateway,
        };
        AppError::new(code, error.to_string())
    }
}

impl From<RegistryError> for AppError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::NotFound { .. } => AppError::new(ErrorCode::NotFound, error.to_string()),
            RegistryError::Store(store) => store.into(),
            other => AppError::new(ErrorCode::BadGateway, other.to_string()),
        }
    }
}

impl From<SourceError> for AppError {
    fn from(error: SourceError) -> Self {
        let code = match &error {
            SourceError::InvalidLocation { .. } => ErrorCode::InvalidRequest,
            SourceError::NotFound { .. } => ErrorCode::NotFound,
            SourceError::Backend(_) => ErrorCode::BadGateway,
        };
        AppError::new(code, error.to_string())
    }
}

impl From<ControllerError> for AppError {
    fn from(error: ControllerError) -> Self {
        match error {
            ControllerError::InvalidPipeline(invalid) => {
                let details = invalid
                    .problems()
                    .iter()
                    .map(|problem| ErrorDetail {
                        line: problem.position.map(|position| position.line as u32),
                        column: problem.position.map(|position| position.column as u32),
                        path: (!problem.path.is_empty()).then(|| problem.path.clone()),
                        message: problem.message.clone(),
                    })
                    .collect();
                AppError { code: ErrorCode::InvalidPipeline, message: invalid.to_string(), details }
            }
            ControllerError::PipelineNotFound(_) | ControllerError::RunNotFound(_) => {
                AppError::new(ErrorCode::NotFound, error.to_string())
            }
            ControllerError::BaseModel { .. } => AppError::new(ErrorCode::InvalidPipeline, error.to_string()),
            ControllerError::Store(store) => store.into(),
            ControllerError::Registry(registry) => registry.into(),
            ControllerError::Source(source) => source.into(),
            ControllerError::StoredPipeline { .. }
            | ControllerError::Logs(_)
            | ControllerError::Channel(_)
            | ControllerError::Promotion(_) => AppError::new(ErrorCode::Internal, error.to_string()),
        }
    }
}

impl From<WorkerError> for AppError {
    fn from(error: WorkerError) -> Self {
        let code = match &error {
            WorkerError::UnknownModel(_) => ErrorCode::NotFound,
            WorkerError::BaseMismatch { .. } => ErrorCode::Conflict,
            WorkerError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            WorkerError::Registry(_) | WorkerError::ReleaseFetch { .. } => ErrorCode::BadGateway,
            WorkerError::Engine(_) => ErrorCode::Internal,
            WorkerError::EngineStopped => ErrorCode::Unavailable,
        };
        AppError::new(code, error.to_string())
    }
}

/// Why adapterd could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("base model {name:?} at {path}: {reason}")]
    BaseModel { name: String, path: String, reason: String },
    #[error("metadata store {url}: {source}")]
    Store { url: String, source: StoreError },
    #[error("object store {url}: {source}")]
    ObjectStore { url: String, source: RegistryError },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("cannot create {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("--executor kubernetes: {0}")]
    Kubernetes(String),
    #[error("--serve-only: {0}")]
    ServeOnly(String),
    #[error("cannot locate adapterd's own executable to run training jobs with (name one with --trainer): {0}")]
    Trainer(std::io::Error),
}
