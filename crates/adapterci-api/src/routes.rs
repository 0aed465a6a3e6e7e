//! The paths of adapterd's endpoints, in the template syntax of axum 0.8 (`{name}`, `{*rest}`), shared by the
//! server's router and this crate's client so the two cannot drift apart.

pub const HEALTHZ: &str = "/healthz";
/// Whether adapterd serves what is published (200) or not yet (503): its worker has finished its first pull.
pub const READYZ: &str = "/readyz";
pub const PIPELINES: &str = "/api/v1/pipelines";
pub const PIPELINE: &str = "/api/v1/pipelines/{name}";
pub const PIPELINE_TRIGGER: &str = "/api/v1/pipelines/{name}/trigger";
pub const RUNS: &str = "/api/v1/runs";
pub const RUN: &str = "/api/v1/runs/{id}";
pub const RUN_CANCEL: &str = "/api/v1/runs/{id}/cancel";
/// A run's captured training log from `?offset=` on (runs trained in child processes).
pub const RUN_LOGS: &str = "/api/v1/runs/{id}/logs";
/// Per-step training metrics of a run.
pub const RUN_METRICS: &str = "/api/v1/runs/{id}/metrics";
/// Webhook deliveries for the pipelines whose `webhook` trigger names the secret `name`.
pub const WEBHOOK: &str = "/api/v1/webhooks/{name}";
pub const ADAPTERS: &str = "/api/v1/adapters";
pub const ADAPTER_VERSIONS: &str = "/api/v1/adapters/{name}/versions";
pub const ADAPTER_VERSION: &str = "/api/v1/adapters/{name}/versions/{version}";
/// A PEFT adapter folder published as a new version (`POST`, body `PeftImportRequest`).
pub const ADAPTER_PEFT_IMPORT: &str = "/api/v1/adapters/{name}/peft";
/// One file of a version exported for Hugging Face PEFT: `adapter_config.json` or `adapter_model.safetensors`.
pub const ADAPTER_VERSION_PEFT: &str = "/api/v1/adapters/{name}/versions/{version}/peft/{file}";
/// The base model the version was trained on with the version merged into its weights: one f32 safetensors
/// state dict with Hugging Face Llama names.
pub const ADAPTER_VERSION_MERGED: &str = "/api/v1/adapters/{name}/versions/{version}/merged/model.safetensors";
pub const ADAPTER_VERSION_DEPRECATE: &str = "/api/v1/adapters/{name}/versions/{version}/deprecate";
pub const ADAPTER_CHANNELS: &str = "/api/v1/adapters/{name}/channels";
pub const ADAPTER_CHANNEL_PROMOTE: &str = "/api/v1/adapters/{name}/channels/{channel}/promote";
pub const ADAPTER_CHANNEL_ROLLBACK: &str = "/api/v1/adapters/{name}/channels/{channel}/rollback";
pub const ADAPTER_CHANNEL_PIN: &str = "/api/v1/adapters/{name}/channels/{channel}/pin";
/// Mark and sweep of unreferenced registry blobs.
pub const REGISTRY_GC: &str = "/api/v1/registry/gc";
/// The newest outbound event delivery attempts (`?limit=N`).
pub const REGISTRY_EVENTS: &str = "/api/v1/registry/events";
/// The location is the rest of the path and may contain `/`.
pub const DATASET: &str = "/api/v1/datasets/{*location}";
pub const COMPLETIONS: &str = "/v1/completions";
pub const CHAT_COMPLETIONS: &str = "/v1/chat/completions";
pub const MODELS: &str = "/v1/models";
