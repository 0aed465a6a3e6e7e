//! Start-up and shutdown of adapterd: open the stores, hash the base models, load the worker, spawn the
//! controller and worker loops, serve HTTP. With `--serve-only` only the worker's refresh loop and HTTP run (a
//! serving replica; see `serve_only.rs`).

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
use adapterci_registry::{ObjectStoreDatasetSource, ObjectStoreRegistry, ReleaseStore, open_object_store};
use adapterci_store::SeaStore;
use adapterci_worker::{Worker, WorkerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::base_release::EngineBaseReleaseBuilder;
use crate::events::{DeliveryPolicy, EventNotifier, PublishEvents};
use crate::kube_launcher::{JobTemplate, KubernetesLauncher, KubernetesSettings};
use crate::serve_only::{RegistryReleaseSource, upload_local_releases};
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
///
/// Every release in the releases folder goes to the registry's store (`releases`) at start and after each check,
/// unless it is there already, so serving replicas (`--serve-only`) can fetch the release an adapter is bound to; a
/// release is uploaded before its rebase queues any retrain, and a failed upload is retried at the next check.
async fn watch_base_models(
    controller: Arc<Controller>,
    catalog: Arc<WatchedBaseModels>,
    builder: EngineBaseReleaseBuilder,
    releases: ReleaseStore,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // what builds of the layout before the models' state folders left, which none reads any more
    let legacy = builder.clone();
    if let Err(error) = tokio::task::spawn_blocking(move || legacy.remove_legacy_state()).await {
        tracing::warn!(%error, "removing the previous layout's build state failed");
    }
    let builder = UploadingBuilder { builder, releases: releases.clone() };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // the releases found in the store or uploaded: each is looked at once per process, not at every pass
    let mut uploaded = std::collections::BTreeSet::new();
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
                upload_local_releases(&releases, &builder.builder.dir, &mut uploaded).await;
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// The engine's builder, each release it passes uploaded to the registry's store before the rebase goes on to
/// retrain (and publish) adapters bound to it, so no replica sees such an adapter before it can fetch the release.
struct UploadingBuilder {
    builder: EngineBaseReleaseBuilder,
    releases: ReleaseStore,
}

#[async_trait::async_trait]
impl adapterci_core::base_release::BaseReleaseBuilder for UploadingBuilder {
    async fn build(
        &self,
        request: adapterci_core::base_release::BaseReleaseRequest,
    ) -> Result<adapterci_core::base_release::BaseReleaseOutcome, adapterci_core::base_release::BaseReleaseError> {
        let outcome = self.builder.build(request).await?;
        if let adapterci_core::base_release::BaseReleaseOutcome::Released { release_digest } = &outcome {
            let dir = self.builder.dir.join(release_digest.hex());
            // not a failed build: the release is whole here, and the watcher's next pass retries the upload
            if let Err(error) = self.releases.upload(release_digest, &dir).await {
                tracing::error!(release = %release_digest, %error, "base release not uploaded for serving replicas; retried at the next check");
            }
        }
        Ok(outcome)
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
    if config.serve_only && config.refresh_secs == 0 {
        // the embedded worker also hears of each publish from the controller; a replica has only its refresh loop
        return Err(ServerError::ServeOnly(
            "--refresh-secs 0 would never pull a published version (no controller here tells of one): give a period"
                .to_string(),
        ));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| ServerError::DataDir { path: config.data_dir.display().to_string(), source })?;
    if config.threads > 0 {
        adapterci_engine::device::set_threads(config.threads);
    }
    // the Kubernetes executor's template and staging store are checked before anything else is opened
    let kubernetes = match config.executor {
        crate::config::ExecutorKind::Kubernetes if !config.serve_only => Some(kubernetes_settings(&config)?),
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

    // made before the launchers, which see it: on shutdown it turns true before the controller drops its runs
    let (shutdown, shutdown_receiver) = watch::channel(false);
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
        // a graceful stop (SIGTERM: an upgrade, a drain) leaves the Jobs training; the next adapterd re-attaches
        let launcher = KubernetesLauncher::new(client, settings).leave_jobs_on_shutdown(shutdown_receiver.clone());
        controller.set_launcher(Arc::new(launcher));
    }
    if config.executor == crate::config::ExecutorKind::Process && !config.serve_only {
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
    let releases = registry.releases();
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
                    // a release built by another adapterd (this one serving only, or after a move) is fetched
                    release_source: Some(Arc::new(RegistryReleaseSource(releases.clone()))),
                },
                registry,
            )
            .await?;
            controller.add_publish_listener(Arc::new(WorkerListener(worker.clone())));
            Some(worker)
        }
        _ => None,
    };
    if config.serve_only && worker.is_none() {
        return Err(ServerError::ServeOnly("no base model to serve (the model catalog is empty)".to_string()));
    }

    // A zero interval turns a loop off: tests then drive the controller and the worker step by step.
    let mut tasks = Vec::new();
    if config.serve_only {
        tracing::info!("serving only: no controller loop, base-model watcher, outbound events or training here");
    }
    if config.tick_ms > 0 && !config.serve_only {
        tasks.push(tokio::spawn(controller.clone().run_until(shutdown_receiver.clone())));
    }
    if config.base_watch_ms == 0 && !config.serve_only {
        // no watcher to upload them: the releases built before (by an earlier adapterd) go once, in the background
        let (releases, dir) = (releases.clone(), config.releases_dir());
        tasks.push(tokio::spawn(async move { upload_local_releases(&releases, &dir, &mut Default::default()).await }));
    }
    if config.base_watch_ms > 0 && !config.serve_only {
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
            releases,
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
    // A serving replica takes no events over: the controller's adapterd delivers them.
    if !config.serve_only {
        tasks.push(tokio::spawn(events.clone().run_until(config.event_retention(), shutdown_receiver.clone())));
    }
    let state = AppState {
        controller,
        worker,
        registry: Some(admin_registry),
        run_metrics: Some(run_metrics),
        events: (!config.serve_only).then_some(events),
        merged_exports: MergedExports::new(config.scratch_dir(), config.max_merged_exports),
        serve_only: config.serve_only,
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
