//! adapterd's settings: command-line flags with environment fallbacks and the embedded defaults.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::env_vars;

/// The name the default base model is known by in pipelines.
pub const DEFAULT_MODEL_NAME: &str = "smollm2-135m-instruct";
/// Where scripts/bootstrap.sh puts the default base model, relative to the working directory.
pub const DEFAULT_MODEL_PATH: &str = ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// adapterd: adapter lifecycle service (controller, registry API, embedded inference worker).
#[derive(Clone, Debug, Parser)]
#[command(name = "adapterd", version, about)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = env_vars::ADAPTERCI_LISTEN, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory of the embedded defaults: SQLite database, local registry and datasets.
    #[arg(long, env = env_vars::ADAPTERCI_DATA_DIR, default_value = "data")]
    pub data_dir: PathBuf,
    /// Metadata store URL; default: SQLite in the data directory.
    #[arg(long, env = env_vars::ADAPTERCI_DATABASE_URL)]
    pub database_url: Option<String>,
    /// Registry object store URL; default: the `registry` folder of the data directory.
    #[arg(long, env = env_vars::ADAPTERCI_REGISTRY_URL)]
    pub registry_url: Option<String>,
    /// Dataset object store URL; default: the `datasets` folder of the data directory.
    #[arg(long, env = env_vars::ADAPTERCI_DATASETS_URL)]
    pub datasets_url: Option<String>,
    /// Base models pipelines may name, as NAME=PATH (repeatable). Default: the SmolLM2 GGUF.
    #[arg(long = "model", value_name = "NAME=PATH", value_parser = parse_model)]
    pub models: Vec<(String, PathBuf)>,
    /// Path of the default model when no --model is given.
    #[arg(long, env = env_vars::ADAPTERCI_BASE_MODEL, default_value = DEFAULT_MODEL_PATH)]
    pub default_model_path: PathBuf,
    /// Do not start the embedded inference worker.
    #[arg(long)]
    pub no_worker: bool,
    /// Serve only: the read and inference routes of the API and the worker's refresh loop, on the same database
    /// and registry as the adapterd that runs the controller. No controller loop, base-model watcher, outbound
    /// events or training; requests that change state are refused (409). A base release an adapter is bound to is
    /// fetched from the registry's store into this adapterd's releases folder. For serving replicas: PostgreSQL and
    /// an object store every replica reaches (`s3://`, or a directory shared with the controller's adapterd).
    #[arg(long, env = env_vars::ADAPTERCI_SERVE_ONLY, conflicts_with = "no_worker")]
    pub serve_only: bool,
    /// Threads for libtorch (0: libtorch's default).
    #[arg(long, env = env_vars::ADAPTERCI_THREADS, default_value_t = 0)]
    pub threads: usize,
    /// How often the controller polls watches and claims runs, in milliseconds (0: never, for tests).
    #[arg(long, default_value_t = 1000)]
    pub tick_ms: u64,
    /// How often the worker checks for new adapter versions, in seconds (0: only when told of a publish).
    #[arg(long, default_value_t = 10)]
    pub refresh_secs: u64,
    /// Memory budget of the worker's adapter cache, in MiB.
    #[arg(long, default_value_t = 512)]
    pub adapter_cache_mib: usize,
    /// Largest accepted request body (datasets), in MiB.
    #[arg(long, default_value_t = 256)]
    pub max_body_mib: usize,
    /// Merged exports (`adapterctl adapters export --merged`) that may load and merge at once: each holds its base
    /// in f32 and the merged tensors in memory, about 8 bytes per parameter. More requests wait their turn.
    #[arg(long, env = env_vars::ADAPTERCI_MAX_MERGED_EXPORTS, default_value_t = NonZeroUsize::MIN)]
    pub max_merged_exports: NonZeroUsize,
    /// Days a settled outbound registry event is kept, with its delivery attempts (`registry_events`,
    /// `registry_event_attempts`); older ones are deleted at start and daily after. Unsettled events are kept
    /// whatever their age. 0 keeps them for ever.
    #[arg(long, env = env_vars::ADAPTERCI_EVENT_RETENTION_DAYS, default_value_t = 30)]
    pub event_retention_days: u64,
    /// A stable name for this adapterd, kept across its restarts, under which it holds the leases of outbound
    /// registry events: after a crash, the restarted process takes back at start the events the dead one held,
    /// instead of waiting for their leases to run out (up to about five minutes). It MUST be unique among the
    /// adapterd processes running at the same time on one database: two live processes with one id each deliver
    /// and settle the other's events as their own. Set it only where a process with this id is stopped before the
    /// next one starts (one replica with the Recreate strategy, a systemd unit); never on replicas or a rolling
    /// update that overlaps two pods. Letters, digits and `.-_:/`, at most 128. Default: a fresh id per process.
    #[arg(long, env = env_vars::ADAPTERCI_INSTANCE_ID, value_name = "ID", value_parser = parse_instance_id)]
    pub instance_id: Option<String>,
    /// How long a run stays leased to this adapterd without a heartbeat, in seconds: after a crash, the next
    /// adapterd takes the run over once its lease expires. Heartbeats come every third of it.
    #[arg(long, default_value_t = 30)]
    pub lease_secs: u64,
    /// Quiet time after a dataset change or webhook delivery before its run starts, in milliseconds: a burst
    /// inside it joins one run.
    #[arg(long, default_value_t = 5000)]
    pub debounce_ms: u64,
    /// How often the base-model watcher checks the catalog's model files, in milliseconds (0: never). A model
    /// whose content changed is rebased: one base release is built from it, then every pipeline on it retrained.
    #[arg(long, default_value_t = 30_000)]
    pub base_watch_ms: u64,
    /// Where base releases are written (one folder per release digest); default: `releases` in the data directory.
    #[arg(long)]
    pub releases_dir: Option<PathBuf>,
    /// The base-release gate: the recovered release's perplexity may be at most this multiple of its source
    /// model's, or nothing is retrained on it.
    #[arg(long, default_value_t = 1.5)]
    pub base_release_max_perplexity_ratio: f64,
    /// The recovery adapter of a base release trains for at most this many minutes (its schedule fitted to the
    /// budget), or its step budget, whichever ends first.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub base_release_minutes: u64,
    /// Calibration and recovery budgets of base releases (embedding only; the engine's defaults otherwise).
    #[arg(skip)]
    pub base_release_options: Option<adapterci_engine::release_build::BuildOptions>,
    /// Where runs train: `process` (a child process per run, its log kept and streamable, killed on cancel),
    /// `thread` (inside adapterd) or `kubernetes` (a Kubernetes Job per run, from --kube-job-template).
    #[arg(long, env = env_vars::ADAPTERCI_EXECUTOR, value_enum, default_value_t = ExecutorKind::Process)]
    pub executor: ExecutorKind,
    /// The program the process executor runs as `PROGRAM train-job DIR`; default: this adapterd.
    #[arg(long)]
    pub trainer: Option<PathBuf>,
    /// The Kubernetes executor's pod template, a YAML file (`metadata` and `spec` of a pod: the image with
    /// adapterd, env and secrets, service account, node selector, tolerations, security contexts). adapterd sets
    /// the trainer container's args and resources. Required with `--executor kubernetes`.
    #[arg(long, env = env_vars::ADAPTERCI_KUBE_JOB_TEMPLATE, value_name = "FILE")]
    pub kube_job_template: Option<PathBuf>,
    /// The namespace of the training Jobs; default: adapterd's own (from its service account), else `default`.
    #[arg(long, env = env_vars::ADAPTERCI_KUBE_NAMESPACE)]
    pub kube_namespace: Option<String>,
    /// Where the Kubernetes executor stages jobs and base models for the training pods, an object store URL that
    /// the pods reach too (`s3://…`, or a directory on a volume mounted at the same path in both); default:
    /// `staging` below the registry URL.
    #[arg(long, env = env_vars::ADAPTERCI_KUBE_STAGING_URL, value_name = "URL")]
    pub kube_staging_url: Option<String>,
    /// How long a finished training Job is kept, with its pod and the pod's log, in seconds
    /// (`ttlSecondsAfterFinished`).
    #[arg(long, env = env_vars::ADAPTERCI_KUBE_JOB_TTL_SECS, default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(60..))]
    pub kube_job_ttl_secs: u64,
    /// How long a training pod may fail to start (unschedulable, its image not pulled, a missing secret) or to be
    /// created (a quota refuses it) before the attempt fails and its Job is deleted, in seconds; 0 waits until the run's `resources.timeout`. Leave room for
    /// a cluster autoscaler to add a GPU node.
    #[arg(long, env = env_vars::ADAPTERCI_KUBE_START_TIMEOUT_SECS, default_value_t = 1800)]
    pub kube_start_timeout_secs: u64,
}

/// Where runs train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    Process,
    Thread,
    Kubernetes,
}

/// `url` with a scheme as it is; a plain path made absolute.
fn absolute_if_local(url: &str) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    std::path::absolute(url).map_or_else(|_| url.to_string(), |path| path.display().to_string())
}

fn parse_model(value: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = value.split_once('=').ok_or_else(|| format!("expected NAME=PATH, got {value:?}"))?;
    if name.is_empty() || path.is_empty() {
        return Err(format!("expected NAME=PATH, got {value:?}"));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

/// The longest `--instance-id`: the lease owner column is text, but an id is a name, not a document.
const MAX_INSTANCE_ID_LEN: usize = 128;

fn parse_instance_id(value: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_:/".contains(c);
    if value.is_empty() || value.len() > MAX_INSTANCE_ID_LEN {
        return Err(format!("expected 1 to {MAX_INSTANCE_ID_LEN} characters, got {}", value.len()));
    }
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        return Err(format!("{bad:?} in {value:?}: use letters, digits and .-_:/ only"));
    }
    Ok(value.to_string())
}

impl ServerConfig {
    /// The settings for tests and embedding: defaults under `data_dir`, listening on a free port.
    pub fn embedded(data_dir: PathBuf, model_path: PathBuf) -> ServerConfig {
        let mut config = ServerConfig::parse_from(["adapterd"]);
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.data_dir = data_dir;
        config.default_model_path = model_path;
        // embedded in another program, there is no adapterd binary to run as the trainer
        config.executor = ExecutorKind::Thread;
        config
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", self.data_dir.join("adapterci.db").display()))
    }

    pub fn registry_url(&self) -> String {
        self.registry_url.clone().unwrap_or_else(|| self.data_dir.join("registry").display().to_string())
    }

    /// The Kubernetes executor's staging URL: `--kube-staging-url`, else `staging` below the registry URL (a local
    /// path made absolute, so that it names the same place on a shared volume). A `memory://` registry has no
    /// place a pod could reach.
    pub fn kube_staging_url(&self) -> Result<String, String> {
        if let Some(url) = &self.kube_staging_url {
            return Ok(absolute_if_local(url));
        }
        let registry = self.registry_url();
        if registry.starts_with("memory:") {
            return Err(format!(
                "the registry {registry} is in adapterd's memory, where training pods cannot read: set \
                 --kube-staging-url"
            ));
        }
        Ok(absolute_if_local(&format!("{}/staging", registry.trim_end_matches('/'))))
    }

    pub fn datasets_url(&self) -> String {
        self.datasets_url.clone().unwrap_or_else(|| self.data_dir.join("datasets").display().to_string())
    }

    /// The model catalog: `--model` entries, or the default model alone.
    pub fn model_catalog(&self) -> Vec<(String, PathBuf)> {
        if self.models.is_empty() {
            vec![(DEFAULT_MODEL_NAME.to_string(), self.default_model_path.clone())]
        } else {
            self.models.clone()
        }
    }

    pub fn releases_dir(&self) -> PathBuf {
        self.releases_dir.clone().unwrap_or_else(|| self.data_dir.join("releases"))
    }

    /// Where adapterd writes files it only sends (a merged export): `scratch` in the data directory.
    pub fn scratch_dir(&self) -> PathBuf {
        self.data_dir.join("scratch")
    }

    /// How long settled registry events are kept; `None`: for ever.
    pub fn event_retention(&self) -> Option<Duration> {
        (self.event_retention_days > 0).then(|| Duration::from_secs(self.event_retention_days.saturating_mul(86_400)))
    }

    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_flags_parse_and_bad_ones_are_refused() {
        let config =
            ServerConfig::try_parse_from(["adapterd", "--model", "a=/m/a.gguf", "--model", "b=b.gguf"]).unwrap();
        assert_eq!(config.model_catalog()[1], ("b".to_string(), PathBuf::from("b.gguf")));
        let error = ServerConfig::try_parse_from(["adapterd", "--model", "nopath"]).unwrap_err().to_string();
        assert!(error.contains("expected NAME=PATH"), "{error}");
    }

    #[test]
    fn embedded_defaults_live_in_the_data_dir() {
        let config = ServerConfig::embedded(PathBuf::from("/tmp/x"), PathBuf::from("m.gguf"));
        assert_eq!(config.database_url(), "sqlite:///tmp/x/adapterci.db?mode=rwc");
        assert_eq!(config.registry_url(), "/tmp/x/registry");
        assert_eq!(config.model_catalog(), vec![(DEFAULT_MODEL_NAME.to_string(), PathBuf::from("m.gguf"))]);
        assert_eq!(config.scratch_dir(), PathBuf::from("/tmp/x/scratch"));
    }

    #[test]
    fn settled_events_are_kept_thirty_days_unless_told() {
        let days = |days: u64| Some(Duration::from_secs(days * 86_400));
        assert_eq!(ServerConfig::try_parse_from(["adapterd"]).unwrap().event_retention(), days(30));
        let config = ServerConfig::try_parse_from(["adapterd", "--event-retention-days", "7"]).unwrap();
        assert_eq!(config.event_retention(), days(7));
        let config = ServerConfig::try_parse_from(["adapterd", "--event-retention-days", "0"]).unwrap();
        assert_eq!(config.event_retention(), None, "0 keeps them for ever");
        let config = ServerConfig::try_parse_from(["adapterd", "--event-retention-days", &u64::MAX.to_string()]);
        assert!(config.unwrap().event_retention().is_some(), "no overflow");
        assert!(ServerConfig::try_parse_from(["adapterd", "--event-retention-days", "-1"]).is_err());
    }

    #[test]
    fn the_kubernetes_staging_url_defaults_below_the_registry() {
        let staging = |args: &[&str]| {
            let config = ServerConfig::try_parse_from([&["adapterd"], args].concat()).unwrap();
            config.kube_staging_url()
        };
        assert_eq!(staging(&["--registry-url", "s3://bucket/adapterci/"]).unwrap(), "s3://bucket/adapterci/staging");
        assert_eq!(staging(&["--registry-url", "s3://bucket"]).unwrap(), "s3://bucket/staging");
        assert_eq!(staging(&["--registry-url", "file:///srv/registry"]).unwrap(), "file:///srv/registry/staging");
        assert_eq!(staging(&["--data-dir", "/srv/data"]).unwrap(), "/srv/data/registry/staging");
        let relative = staging(&["--data-dir", "data"]).unwrap();
        assert!(relative.starts_with('/') && relative.ends_with("data/registry/staging"), "{relative}");
        assert_eq!(staging(&["--kube-staging-url", "s3://other/x"]).unwrap(), "s3://other/x");
        let error = staging(&["--registry-url", "memory://"]).unwrap_err();
        assert!(error.contains("--kube-staging-url"), "{error}");
        let config = ServerConfig::try_parse_from(["adapterd", "--executor", "kubernetes"]).unwrap();
        assert_eq!(config.executor, ExecutorKind::Kubernetes);
        assert_eq!(config.kube_job_ttl_secs, 3600);
        assert_eq!(config.kube_start_timeout_secs, 1800);
        assert!(ServerConfig::try_parse_from(["adapterd", "--kube-job-ttl-secs", "0"]).is_err(), "gone too soon");
    }

    #[test]
    fn serving_only_is_off_unless_asked_and_needs_the_worker() {
        assert!(!ServerConfig::try_parse_from(["adapterd"]).unwrap().serve_only);
        assert!(ServerConfig::try_parse_from(["adapterd", "--serve-only"]).unwrap().serve_only);
        let error = ServerConfig::try_parse_from(["adapterd", "--serve-only", "--no-worker"]).unwrap_err().to_string();
        assert!(error.contains("--serve-only") && error.contains("--no-worker"), "{error}");
    }

    #[test]
    fn an_instance_id_is_optional_and_a_plain_name() {
        assert_eq!(ServerConfig::try_parse_from(["adapterd"]).unwrap().instance_id, None, "a fresh id per process");
        let config = ServerConfig::try_parse_from(["adapterd", "--instance-id", "adapterci/prod-adapterci"]).unwrap();
        assert_eq!(config.instance_id.as_deref(), Some("adapterci/prod-adapterci"));
        for bad in ["", "two words", "é", &"x".repeat(129)] {
            let error = ServerConfig::try_parse_from(["adapterd", "--instance-id", bad]).unwrap_err().to_string();
            assert!(error.contains("--instance-id"), "{bad:?}: {error}");
        }
        let error = ServerConfig::try_parse_from(["adapterd", "--instance-id", "a b"]).unwrap_err().to_string();
        assert!(error.contains("' '") && error.contains("letters, digits"), "{error}");
    }

    #[test]
    fn one_merged_export_at_a_time_unless_told() {
        assert_eq!(ServerConfig::try_parse_from(["adapterd"]).unwrap().max_merged_exports.get(), 1);
        let config = ServerConfig::try_parse_from(["adapterd", "--max-merged-exports", "3"]).unwrap();
        assert_eq!(config.max_merged_exports.get(), 3);
        assert!(ServerConfig::try_parse_from(["adapterd", "--max-merged-exports", "0"]).is_err(), "none would hang");
    }
}
