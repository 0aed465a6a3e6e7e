//! The engine's base-release stage behind the controller's `BaseReleaseBuilder` port: builds the release of a
//! catalog model (palettize, recovery adapter, evaluation) on a blocking thread, writes the bundle under
//! `<dir>/<release digest>/` and gates it on the recovered model's perplexity relative to the source model. A build
//! that a restart interrupted reads back its palettized base and resumes its recovery from the last checkpoint
//! (both under `<dir>/.build/`); what the layout before that folder's per-model folders left is removed once, when
//! the builder starts ([`EngineBaseReleaseBuilder::remove_legacy_state`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use adapterci_core::Digest;
use adapterci_core::base_release::{BaseReleaseBuilder, BaseReleaseError, BaseReleaseOutcome, BaseReleaseRequest};
use adapterci_core::training::BasePrecision;
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::files::write_atomic;
use adapterci_engine::model::BaseModel;
use adapterci_engine::release_build::{BuildOptions, build_release, recovery_precision};
use async_trait::async_trait;

/// The folder under [`EngineBaseReleaseBuilder::dir`] where builds keep what a restart resumes from: one folder
/// per catalog model ([`EngineBaseReleaseBuilder::state_dir`]) with its teacher's text (`teacher-cache/`), its
/// palettized base (`palettized/`) and its recovery checkpoints (`checkpoints/`), each keyed inside by what it was
/// made from; a model's finished build removes its folder, whatever source digest or spec left things there, and
/// no other model's. Bundle folders are named by digests, so the name cannot clash.
pub const BUILD_STATE: &str = ".build";

/// Where the models' folders are, under [`BUILD_STATE`].
const MODELS_STATE: &str = "models";

/// What builds kept under [`BUILD_STATE`] before the models' folders: every model's teacher text and every source
/// digest's checkpoints, which nothing reads (or removes) any more.
const LEGACY_STATE: [&str; 2] = ["teacher-cache", "checkpoints"];

/// Recovery steps between checkpoints when the build options ask for none (an adapter of a 135M model is ~10 MB).
const CHECKPOINT_EVERY: usize = 50;

/// Builds base releases with the engine.
#[derive(Clone, Debug)]
pub struct EngineBaseReleaseBuilder {
    /// Catalog name -> source model file.
    pub models: BTreeMap<String, PathBuf>,
    /// Where release bundles are written.
    pub dir: PathBuf,
    pub options: BuildOptions,
    /// The gate: the recovered release's perplexity may be at most this multiple of the source model's (on
    /// teacher text held out of recovery).
    pub max_perplexity_ratio: f64,
    pub device: DeviceChoice,
    /// The recovery's frozen-matmul precision; `None`: the engine's choice for the device the model loads on
    /// ([`recovery_precision`]: bf16 on a CPU with AVX-512 BF16, where a step runs ~1.6x faster at the same
    /// recovered perplexity), whatever `options.recovery` says.
    pub precision: Option<BasePrecision>,
}

impl EngineBaseReleaseBuilder {
    /// The folder where builds of catalog model `model_name` keep their state: `<dir>/.build/models/<name>-<16 hex
    /// digits of the name's digest>/`, the name reduced to letters, digits, `-` and `_` (at most 40 of them), so
    /// that any two names, even ones that reduce alike, have folders of their own.
    pub fn state_dir(&self, model_name: &str) -> PathBuf {
        let readable: String = model_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .take(40)
            .collect();
        let digest = Digest::of(model_name.as_bytes()).hex();
        self.dir.join(BUILD_STATE).join(MODELS_STATE).join(format!("{readable}-{}", &digest[..16]))
    }

    /// Removes the folders that builds of the layout before the models' folders left under `<dir>/.build/`
    /// (`teacher-cache/`, `checkpoints/`: no build reads them, so they would stay forever), logging each one
    /// removed, and returns them; a folder that cannot be removed is logged and left. adapterd calls it once,
    /// when its base-model watcher starts (it blocks: a large folder takes a while to remove).
    pub fn remove_legacy_state(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for name in LEGACY_STATE {
            let dir = self.dir.join(BUILD_STATE).join(name);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "removed the previous layout's build state (now kept per model)");
                    removed.push(dir);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "could not remove the previous layout's build state: {e}")
                }
            }
        }
        removed
    }

    /// The options a build of `model_name` (loaded as `base`) runs with: the builder's, the recovery at the
    /// precision for the device, and where its state is kept ([`EngineBaseReleaseBuilder::state_dir`]) unless the
    /// options name places of their own.
    pub fn build_options(&self, model_name: &str, base: &BaseModel) -> BuildOptions {
        let mut options = self.options.clone();
        options.recovery.base_precision = recovery_precision(self.precision, base);
        // what a restart picks up: the teacher's text, the palettized base, the recovery at its last checkpoint
        let state = self.state_dir(model_name);
        options.teacher_cache.get_or_insert_with(|| state.join("teacher-cache"));
        options.palettized_cache.get_or_insert_with(|| state.join("palettized"));
        if options.recovery.checkpoint_dir.is_none() {
            options.recovery.checkpoint_dir = Some(state.join("checkpoints"));
            if options.recovery.checkpoint_every == 0 {
                options.recovery.checkpoint_every = CHECKPOINT_EVERY;
            }
        }
        options
    }
}

#[async_trait]
impl BaseReleaseBuilder for EngineBaseReleaseBuilder {
    async fn build(&self, request: BaseReleaseRequest) -> Result<BaseReleaseOutcome, BaseReleaseError> {
        let fail = |reason: String| BaseReleaseError { base_model_name: request.base_model_name.clone(), reason };
        let path = self
            .models
            .get(&request.base_model_name)
            .cloned()
            .ok_or_else(|| fail(format!("no model named {:?} in the catalog", request.base_model_name)))?;
        let this = self.clone();
        let wanted = request.base_model_digest.clone();
        let model_name = request.base_model_name.clone();
        let built = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let base = BaseModel::load(&path, this.device).map_err(|e| e.to_string())?;
            if base.digest() != &wanted {
                return Err(format!("{} now has digest {}, not {wanted}", path.display(), base.digest()));
            }
            let options = this.build_options(&model_name, &base);
            let built = build_release(
                &base,
                &options,
                None,
                None,
                &mut |message| tracing::info!(model = %path.display(), "{message}"),
                &mut |p| {
                    for v in &p.validation {
                        let (kl, cross_entropy, top1) = (v.kl, v.cross_entropy, v.top1_agreement);
                        tracing::info!(step = v.step, set = %v.set, kl, cross_entropy, top1, "recovery validation");
                    }
                    if p.validation.is_empty() && (p.step % 25 == 0 || p.step == p.total_steps) {
                        tracing::info!(step = p.step, total = p.total_steps, kl = p.kl, "recovery");
                    }
                },
            )
            .map_err(|e| e.to_string())?;
            let dir = this.dir.join(built.report.release_digest.hex());
            std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let report = serde_json::to_vec_pretty(&built.report).map_err(|e| e.to_string())?;
            // each file whole or not at all: the folder is named by the release's digest, so a torn file in it
            // would pass for the release
            for (name, bytes) in [
                ("base.safetensors", &built.release[..]),
                ("recovery.safetensors", &built.recovery_adapter[..]),
                ("report.json", &report[..]),
            ] {
                write_atomic(&dir.join(name), bytes).map_err(|e| e.to_string())?;
            }
            // the bundle holds the finished build: nothing of this model's state (of this source, or of an earlier
            // one, another palettization or spec) is left to resume
            let state = this.state_dir(&model_name);
            match std::fs::remove_dir_all(&state) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(dir = %state.display(), "could not remove a finished build's state: {e}");
                }
                _ => {}
            }
            Ok(built.report)
        })
        .await
        .map_err(|e| fail(format!("the build thread failed: {e}")))?
        .map_err(fail)?;
        let ratio = built.recovered.perplexity / built.uncompressed.perplexity;
        // a NaN ratio (a diverged model) fails the gate too
        let passes = ratio.is_finite() && ratio <= self.max_perplexity_ratio;
        if !passes {
            return Ok(BaseReleaseOutcome::GateFailed {
                reason: format!(
                    "recovered perplexity {:.2} is {:.3}x the source model's {:.2} (gate: at most {:.3}x)",
                    built.recovered.perplexity, ratio, built.uncompressed.perplexity, self.max_perplexity_ratio
                ),
            });
        }
        Ok(BaseReleaseOutcome::Released { release_digest: built.release_digest })
    }
}
