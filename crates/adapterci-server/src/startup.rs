//! Start-up and shutdown of adapterd: open the stores, hash the base models, load the worker, spawn the
//! controller and worker loops, serve HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use adapterci_controller::{
    Controller, ControllerConfig, Ports, PublishListener, ResolvedBase, SchedulingConfig, WatchedBaseModels,
};
use adapterci_core::Digest;
use adapterci_core::ports::{AdapterVersionRecord, SystemClock};
use adapterci_engine::backend::EngineBackend;
use adapterci_engine::device::DeviceChoice;
use adapterci_registry::{ObjectStoreDatasetSource, ObjectStoreRegistry, open_object_store};
use adapterci_store::SeaStore;
use adapterci_worker::{Worker, WorkerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::base_release::EngineBaseReleaseBuilder;
use crate::events::{DeliveryPolicy, EventNotifier, PublishEvents};
use crate::kube_launcher::{JobTemplate, KubernetesLauncher, KubernetesSettings};
use crate::staging::Staging;
use crate::{AppState, MergedExports, ProcessLauncher, ServerConfig, ServerError, ThreadExecutor, app};

/// A started adapterd.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// The base URL, e.g. `http://127.0.0.1:8080`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the loops and the HTTP server and waits for them.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Waits until the server stops (on a shutdown signal).
    pub async fn wait(mut self) {
        if let Some(server) = self.tasks.pop() {
            let _ = server.await;
        }
        self.shutdown().await;
    }

    /// A receiver that turns true when shutdown begins.
    pub fn shutdown_sender(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

struct WorkerListener(Arc<Worker>);

#[async_trait::async_trait]
impl PublishListener for WorkerListener {
    async fn published(&self, version: &AdapterVersionRecord) {
        self.0.on_published(version);
    }
}

/// Reads `path` and computes its digest on a blocking thread.
async fn digest_file(name: &str, path: PathBuf) -> Result<ResolvedBase, ServerError> {
    let shown = path.display().to_string();
    let error = |reason: String| ServerError::BaseModel { name: name.to_string(), path: shown.clone(), reason };
    let read_path = path.clone();
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(read_path))
        .await
        .map_err(|join| error(join.to_string()))?
        .map_err(|io| {
            let hint = if io.kind() == std::io::ErrorKind::NotFound {
                " (run `bash scripts/bootstrap.sh` to download the default model)"
            } else {
                ""
            };
            error(format!("{io}{hint}"))
        })?;
    // a base release written by `adapterci-base release` has its recovery adapter beside it
    let recovery = path.with_file_name("recovery.safetensors");
    let recovery_adapter =
        (adapterci_engine::release::looks_like_release(&bytes) && recovery.is_file()).then_some(recovery);
    Ok(ResolvedBase { name: name.to_string(), path, digest: Digest::of(&bytes), recovery_adapter })
}

/// The base-model watcher's loop: every `interval`, rebase the catalog models whose content changed (a build
/// runs to its end before the next check; one that broke is tried again at the next check).
async fn watch_base_models(
    controller: Arc<Controller>,
    catalog: Arc<WatchedBaseModels>,
    builder: EngineBaseReleaseBuilder,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // what builds of the layout before the models' state folders left, which none reads any more
    let legacy = builder.clone();
    if let Err(error) = tokio::task::spawn_blocking(move || legacy.remove_legacy_state()).await {
        tracing::warn!(%error, "removing the previous layout's build state failed");
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                // a stop during a build drops it (its blocking thread's result is discarded)
                let outcomes = tokio::select! {
                    outcomes = controller.poll_base_models(&catalog, &builder) => outcomes,
                    _ = shutdown.changed() => return,
                };
                for (model, outcome) in outcomes {
                    match outcome {
                        Ok(outcome) => tracing::info!(
                            model,
                            release = ?outcome.release_digest.map(|digest| digest.to_string()),
                            gate_failure = ?outcome.gate_failure,
                            retrains = outcome.runs.len(),
                            "base model rebased"
                        ),
                        Err(error) => tracing::warn!(model, %error, "base model rebase failed"),
                    }
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// The Kubernetes executor's settings from `config`: its pod template read and checked, its staging store opened.
fn kubernetes_settings(config: &ServerConfig) -> Result<KubernetesSettings, ServerError> {
    let refused = ServerError::Kubernetes;
    let path = config.kube_job_template.as_ref().ok_or_else(|| {
        refused(
            "--kube-job-template FILE (ADAPTERCI_KUBE_JOB_TEMPLATE) is required: the training pods' template".into(),
        )
    })?;
    let template = JobTemplate::load(path).map_err(refused)?;
    let staging_url = config.kube_staging_url().map_err(refused)?;
    let staging = Staging::open(&staging_url).map_err(|e| refused(format!("the staging store {staging_url}: {e}")))?;
    Ok(KubernetesSettings {
        namespace: config.kube_namespace.clone().unwrap_or_else(crate::kube_launcher::own_namespace),
        template,
        staging,
        pod_staging_url: staging_url,
        logs_dir: config.data_dir.join("logs"),
        ttl_after_finished: Some(Duration::from_secs(config.kube_job_ttl_secs)),
        poll_interval: Duration::from_secs(2),
        start_timeout: (config.kube_start_timeout_secs > 0)
            .then(|| Duration::from_secs(config.kube_start_timeout_secs)),
        old_job_delete_timeout: crate::kube_launcher::OLD_JOB_DELETE_TIMEOUT,
    })
}

/// Opens everything `config` names and starts serving.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| ServerError::DataDir { path: config.data_dir.display().to_string(), source })?;
    if config.threads > 0 {
        adapterci_engine::device::set_threads(config.threads);
    }
    // the Kubernetes executor's template and staging store are checked before anything else is opened
    let kubernetes = match config.executor {
        crate::config::ExecutorKind::Kubernetes => Some(kubernetes_settings(&config)?),
        _ => None,
    };
    let database_url = config.database_url();
    let store = Arc::new(
        SeaStore::connect(&database_url).await.map_err(|source| ServerError::Store { url: database_url, source })?,
    );
    let run_metrics: Arc<dyn adapterci_core::run_metrics::RunMetricsStore> = store.clone();
    let open = |url: String| open_object_store(&url).map_err(|source| ServerError::ObjectStore { url, source });
    let registry =
        Arc::new(ObjectStoreRegistry::new(open(config.registry_url())?, store.clone()).with_retention(store.clone()));
    let event_log: Arc<dyn adapterci_core::events::EventDeliveryLog> = store.clone();
    let datasets = Arc::new(ObjectStoreDatasetSource::new(open(config.datasets_url())?));

    let mut catalog = Vec::new();
    for (name, path) in config.model_catalog() {
        let base = digest_file(&name, path).await?;
        tracing::info!(model = %base.name, path = %base.path.display(), digest = %base.digest, "base model");
        catalog.push(base);
    }
    let served_base = catalog.first().cloned();
    let model_paths = catalog.iter().map(|base| (base.name.clone(), base.path.clone())).collect();
    let watched_models = Arc::new(WatchedBaseModels::new(catalog, Some(config.releases_dir())).await);
    let ports = Ports {
        scheduler: store.clone(),
        deliveries: store.clone(),
        store,
        registry: registry.clone(),
        datasets,
        executor: Arc::new(ThreadExecutor::new(Arc::new(EngineBackend::new(DeviceChoice::Auto)))),
        base_models: watched_models.clone(),
        clock: Arc::new(SystemClock),
    };
    let controller = Arc::new(Controller::new(
        ports,
        ControllerConfig {
            tick: config.tick(),
            progress_write_interval: Duration::from_secs(1),
            scheduling: SchedulingConfig {
                lease: Duration::from_secs(config.lease_secs.max(1)),
                heartbeat: Duration::from_secs(config.lease_secs.max(1)).div_f64(3.0),
                debounce: Duration::from_millis(config.debounce_ms),
                ..SchedulingConfig::default()
            },
            ..ControllerConfig::default()
        },
    ));
    controller.set_run_metrics(run_metrics.clone());

    if let Some(settings) = kubernetes {
        let client = kube::Client::try_default().await.map_err(|error| {
            ServerError::Kubernetes(format!(
                "no Kubernetes API server configured (in-cluster service account or KUBECONFIG): {error}"
            ))
        })?;
        tracing::info!(
            namespace = %settings.namespace,
            template = %settings.template.path().display(),
            staging = %settings.pod_staging_url,
            "runs train as Kubernetes Jobs"
        );
        controller.set_launcher(Arc::new(KubernetesLauncher::new(client, settings)));
    }
    if config.executor == crate::config::ExecutorKind::Process {
        let program = match &config.trainer {
            Some(program) => program.clone(),
            None => std::env::current_exe().map_err(ServerError::Trainer)?,
        };
        let launcher = ProcessLauncher::adapterd(program, &config.data_dir, config.threads);
        tracing::info!(trainer = %launcher.program.display(), logs = %launcher.logs_dir.display(), "runs train in child processes");
        controller.set_launcher(Arc::new(launcher));
    }

    for (key, value) in std::env::vars() {
        if let Some(name) = key.strip_prefix(crate::env_vars::ADAPTERCI_WEBHOOK_SECRET_PREFIX) {
            // Environment names cannot hold '-': the secret is known under both spellings.
            let name = name.to_ascii_lowercase();
            controller.set_webhook_secret(&name, value.as_bytes());
            controller.set_webhook_secret(&name.replace('_', "-"), value.as_bytes());
        }
    }

    let admin_registry = registry.clone();
    let events = EventNotifier::new(event_log, Arc::new(SystemClock), DeliveryPolicy::default());
    let events = Arc::new(match &config.instance_id {
        Some(instance_id) => {
            tracing::info!(instance = %instance_id, "registry event leases are held under a stable instance id: events a crashed process with it left are taken back at start");
            events.with_instance_id(instance_id.clone())
        }
        None => events,
    });
    crate::events::subscribers_from_env().into_iter().for_each(|subscriber| events.add_subscriber(subscriber));
    controller.add_publish_listener(Arc::new(PublishEvents(events.clone())));
    let worker = match (config.no_worker, served_base) {
        (false, Some(base)) => {
            let worker = Worker::start(
                WorkerConfig {
                    model_path: base.path.clone(),
                    model_name: base.name.clone(),
                    device: DeviceChoice::Auto,
                    adapter_cache_bytes: config.adapter_cache_mib << 20,
                    refresh_interval: Duration::from_secs(config.refresh_secs.max(1)),
                    releases_dir: Some(config.releases_dir()),
                },
                registry,
            )
            .await?;
            controller.add_publish_listener(Arc::new(WorkerListener(worker.clone())));
            Some(worker)
        }
        _ => None,
    };

    let (shutdown, shutdown_receiver) = watch::channel(false);
    // A zero interval turns a loop off: tests then drive the controller and the worker step by step.
    let mut tasks = Vec::new();
    if config.tick_ms > 0 {
        tasks.push(tokio::spawn(controller.clone().run_until(shutdown_receiver.clone())));
    }
    if config.base_watch_ms > 0 {
        let builder = EngineBaseReleaseBuilder {
            models: model_paths,
            dir: config.releases_dir(),
            options: {
                let mut options = config.base_release_options.clone().unwrap_or_default();
                options.recovery.max_seconds = Some(config.base_release_minutes as f64 * 60.0);
                options
            },
            max_perplexity_ratio: config.base_release_max_perplexity_ratio,
            device: DeviceChoice::Auto,
            // embedded options say their precision; the defaults leave it to the device
            precision: config.base_release_options.as_ref().map(|options| options.recovery.base_precision),
        };
        tasks.push(tokio::spawn(watch_base_models(
            controller.clone(),
            watched_models,
            builder,
            Duration::from_millis(config.base_watch_ms),
            shutdown_receiver.clone(),
        )));
    }
    if let (Some(worker), true) = (&worker, config.refresh_secs > 0) {
        tasks.push(tokio::spawn(worker.clone().run_refresh_loop(shutdown_receiver.clone())));
    }
    // Events a stopped process stored but did not finish delivering (it stopped during a backoff, or before the
    // first attempt) go out again, to the subscribers configured now, once their lease has run out: at start, and
    // every minute after, so a replica also takes over what another one left. Settled events past the retention
    // are deleted at start and daily.
    tasks.push(tokio::spawn(events.clone().run_until(config.event_retention(), shutdown_receiver.clone())));
    let state = AppState {
        controller,
        worker,
        registry: Some(admin_registry),
        run_metrics: Some(run_metrics),
        events: Some(events),
        merged_exports: MergedExports::new(config.scratch_dir(), config.max_merged_exports),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Listen { addr: config.listen.to_string(), source })?;
    let addr =
        listener.local_addr().map_err(|source| ServerError::Listen { addr: config.listen.to_string(), source })?;
    let router = app(state.clone(), config.max_body_mib << 20);
    let mut stop = shutdown_receiver;
    tasks.push(tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            while stop.changed().await.is_ok() {
                if *stop.borrow() {
                    break;
                }
            }
        });
        if let Err(error) = serve.await {
            tracing::error!(%error, "http server failed");
        }
    }));
    tracing::info!(%addr, "adapterd listening");
    Ok(RunningServer { addr, state, shutdown, tasks })
}
