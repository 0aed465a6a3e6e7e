//! Versioned, content-addressed adapter registry and dataset sources on object_store.
//!
//! - [`ObjectStoreRegistry`] implements the core `AdapterRegistry` port: files and manifests are blobs under
//!   `blobs/sha256/<hex>`, every read is verified against its digest, and version numbers come from the
//!   metadata store's `AdapterIndex`.
//! - [`ObjectStoreDatasetSource`] implements the `DatasetSource` port with validated relative keys.
//! - [`ReleaseStore`] keeps base releases under `releases/<release digest hex>/`, beside the blobs but outside what
//!   garbage collection sweeps, so serving replicas fetch the release an adapter is bound to.
//! - [`open_object_store`] turns a URL (`file://`, a plain path, `memory://`, `s3://`) into a store.
//!
//! This is the only crate that names `object_store`; it re-exports it for the code that wires stores together.
//! Errors are the ports' own `RegistryError` and `SourceError` from core; this crate adds no error type.

mod blobs;
mod dataset;
pub mod failpoint;
mod gc;
mod location;
mod open;
mod registry;
mod releases;
mod retention;

pub use blobs::DEFAULT_MULTIPART_THRESHOLD;
pub use dataset::ObjectStoreDatasetSource;
pub use gc::GcReport;
pub use location::parse_key;
pub use open::{
    ENV_AWS_ACCESS_KEY_ID, ENV_AWS_ALLOW_HTTP, ENV_AWS_DEFAULT_REGION, ENV_AWS_ENDPOINT_URL, ENV_AWS_REGION,
    ENV_AWS_SECRET_ACCESS_KEY, ENV_AWS_SESSION_TOKEN, open_object_store, open_object_store_with_env,
};
pub use registry::{ObjectStoreRegistry, parse_manifest};
pub use releases::{RELEASE_INDEX_FILE, RELEASES_FOLDER, ReleaseStore, ReleaseUpload};
pub use retention::RetentionReport;

pub use object_store;
