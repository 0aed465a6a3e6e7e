//! Every environment variable adapterd reads, in one place.

/// Address to listen on, e.g. `127.0.0.1:8080`.
pub const ADAPTERCI_LISTEN: &str = "ADAPTERCI_LISTEN";
/// Directory for the embedded defaults (SQLite file, local registry, local datasets).
pub const ADAPTERCI_DATA_DIR: &str = "ADAPTERCI_DATA_DIR";
/// Metadata store URL (`sqlite://...`, `postgres://...`).
pub const ADAPTERCI_DATABASE_URL: &str = "ADAPTERCI_DATABASE_URL";
/// Registry object store URL (`file:///...`, `s3://bucket/prefix`, `memory://`).
pub const ADAPTERCI_REGISTRY_URL: &str = "ADAPTERCI_REGISTRY_URL";
/// Dataset object store URL.
pub const ADAPTERCI_DATASETS_URL: &str = "ADAPTERCI_DATASETS_URL";
/// Path of the default base model GGUF (SmolLM2-135M-Instruct); set by scripts/bootstrap.sh.
pub const ADAPTERCI_BASE_MODEL: &str = "ADAPTERCI_BASE_MODEL";
/// Threads libtorch may use.
pub const ADAPTERCI_THREADS: &str = "ADAPTERCI_THREADS";
/// Merged exports that may load and merge at once (`--max-merged-exports`); more wait their turn.
pub const ADAPTERCI_MAX_MERGED_EXPORTS: &str = "ADAPTERCI_MAX_MERGED_EXPORTS";
/// Prefix of webhook secrets: `ADAPTERCI_WEBHOOK_SECRET_HF_DATASETS` is the value of the secret that pipelines
/// name `hf-datasets` (or `hf_datasets`).
pub const ADAPTERCI_WEBHOOK_SECRET_PREFIX: &str = "ADAPTERCI_WEBHOOK_SECRET_";
/// Log filter, as for `tracing_subscriber::EnvFilter` (e.g. `info,adapterci_controller=debug`).
pub const ADAPTERCI_LOG: &str = "ADAPTERCI_LOG";
/// Comma-separated URLs that receive outbound registry events (published, promoted, rolled back).
pub const ADAPTERCI_EVENT_WEBHOOK_URLS: &str = "ADAPTERCI_EVENT_WEBHOOK_URLS";
/// The HMAC-SHA256 key that signs outbound registry events (`X-Adapterci-Signature-256`).
pub const ADAPTERCI_EVENT_WEBHOOK_SECRET: &str = "ADAPTERCI_EVENT_WEBHOOK_SECRET";
/// Days a settled outbound registry event, and its delivery attempts, are kept (`--event-retention-days`; 0: for
/// ever).
pub const ADAPTERCI_EVENT_RETENTION_DAYS: &str = "ADAPTERCI_EVENT_RETENTION_DAYS";
/// A stable name for this adapterd, kept across its restarts and unique among the adapterd processes running at once
/// on one database (`--instance-id`): its registry event leases are held under it, so a restart after a crash takes
/// back at once the events the dead process held.
pub const ADAPTERCI_INSTANCE_ID: &str = "ADAPTERCI_INSTANCE_ID";
/// `true` runs adapterd as a serving replica (`--serve-only`): the read and inference routes and the worker only.
pub const ADAPTERCI_SERVE_ONLY: &str = "ADAPTERCI_SERVE_ONLY";
/// Where `adapterd train-job --staged` caches base models by digest (default `/tmp/adapterci-bases`).
pub const ADAPTERCI_BASE_CACHE: &str = "ADAPTERCI_BASE_CACHE";
/// Where runs train (`--executor`: `process`, `thread` or `kubernetes`).
pub const ADAPTERCI_EXECUTOR: &str = "ADAPTERCI_EXECUTOR";
/// The Kubernetes executor's pod template file (`--kube-job-template`).
pub const ADAPTERCI_KUBE_JOB_TEMPLATE: &str = "ADAPTERCI_KUBE_JOB_TEMPLATE";
/// The namespace of the training Jobs (`--kube-namespace`).
pub const ADAPTERCI_KUBE_NAMESPACE: &str = "ADAPTERCI_KUBE_NAMESPACE";
/// Where the Kubernetes executor stages jobs and base models (`--kube-staging-url`).
pub const ADAPTERCI_KUBE_STAGING_URL: &str = "ADAPTERCI_KUBE_STAGING_URL";
/// Seconds a finished training Job is kept (`--kube-job-ttl-secs`).
pub const ADAPTERCI_KUBE_JOB_TTL_SECS: &str = "ADAPTERCI_KUBE_JOB_TTL_SECS";
/// Seconds a training pod may fail to start before its attempt fails (`--kube-start-timeout-secs`; 0: no limit).
pub const ADAPTERCI_KUBE_START_TIMEOUT_SECS: &str = "ADAPTERCI_KUBE_START_TIMEOUT_SECS";
