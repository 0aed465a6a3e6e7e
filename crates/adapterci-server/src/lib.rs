//! adapterd: the HTTP API, the controller loop and the embedded inference worker, wired together.
//!
//! `app(state)` builds the axum router (tested without a socket); `start(config)` opens the stores, loads the
//! base model, spawns the controller and worker loops and serves HTTP until shut down.

pub mod base_release;
pub mod config;
pub mod env_vars;
mod error;
pub mod events;
mod executor;
mod job_files;
pub mod kube_launcher;
pub mod process_launcher;
mod routes;
pub mod serve_only;
pub mod staging;
mod startup;
mod state;
pub mod trainer;

pub use config::ServerConfig;
pub use error::{AppError, ServerError};
pub use executor::ThreadExecutor;
pub use kube_launcher::KubernetesLauncher;
pub use process_launcher::ProcessLauncher;
pub use routes::app;
pub use startup::{RunningServer, start};
pub use state::{AppState, MergedExports};
