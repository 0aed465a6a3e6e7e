//! A base release end to end, from a source model: teacher text, calibration, per-operation sensitivity and bit
//! allocation, palettization, the recovery adapter (bound to the release), and the evaluation report. The
//! `adapterci-base` tool and the base-release pipeline stage both call [`analyze`] and [`build_release`].
//!
//! This file holds what a build decides and produces ([`BuildOptions`], [`BuildReport`], [`BuiltRelease`]) and
//! [`build_release`], which runs the steps in order; the steps live beside it: `steps.rs` (calibration, analysis,
//! palettization), `teacher_text.rs` (the teacher's text and its cache), `palettized_base.rs` (the palettized base
//! a recovery starts from, made or read from `palettized_cache.rs`), `recovery_text.rs` (what the recovery trains
//! on), `recovery_checkpoints.rs` (the folder of a build's recovery checkpoints) and `release_file.rs` (the
//! release file).

mod palettized_base;
mod palettized_cache;
mod recovery_checkpoints;
mod recovery_text;
mod release_file;
mod steps;
mod teacher_text;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use adapterci_core::Digest;
use adapterci_core::training::BasePrecision;
use serde::{Deserialize, Serialize};

use crate::EngineError;
use crate::allocate::{BitAnalysis, Method, Sensitivity};
use crate::calibrate::{Agreement, Hessians, TeacherTextSpec, chunk_tokens, compare};
use crate::model::BaseModel;
pub use crate::recover::RecoveryText;
use crate::recover::{
    DigestedText, RecoveryProgress, RecoveryReport, RecoverySpec, has_checkpoint, preferred_precision,
    recover_palettized_taking,
};
use crate::release::bind_recovery_adapter;
use palettized_base::{PalettizedBase, palettized_base};
use palettized_cache::PalettizedCache;
pub use recovery_checkpoints::remove_recovery_checkpoints;
pub use recovery_text::recovery_text;
pub use release_file::{release_file, tokenizer_spec};
use steps::calibration_statistics;
pub use steps::{
    analyze, calibrate, calibration_sequences, keep_what_analysis_and_palettization_share, palettize_model,
};
pub use teacher_text::cached_teacher_text;

/// Everything a base release build decides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildOptions {
    /// Average bits per weight of the linear operations (tables and scales counted).
    pub target_bpw: f64,
    pub method: Method,
    pub teacher: TeacherTextSpec,
    /// Teacher sequences the sensitivities are measured on.
    pub sensitivity_sequences: usize,
    /// What the sensitivities measure (the operation at 2 bits, or with its recovery adapter's calibrated start).
    /// Builds rank by the corrected one ([`Sensitivity::Corrected`]: after 60 CPU recovery steps it measured a
    /// recovery fraction of 0.59 where the plain ranking gave 0.52); absent in a stored record means the plain
    /// one, which was all there was before.
    #[serde(default, skip_serializing_if = "Sensitivity::is_default")]
    pub sensitivity: Sensitivity,
    pub recovery: RecoverySpec,
    /// Palettize the tied embedding to this many bits (4 or 8); `None` stores it as fp16.
    pub embedding_bits: Option<u8>,
    /// The share of recovery sequences drawn from the user corpus, when one is given (all of it is used; the
    /// corpus or the teacher's text is repeated to reach the share: [`recovery_text`]); `None`: each user
    /// sequence once, beside all of the teacher's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_corpus_share: Option<f64>,
    /// Quantize linear inputs per token to this many bits when serving (4-8; recorded in the release, and the
    /// recovery adapter is trained with it on); `None`: full-precision activations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_bits: Option<u8>,
    /// A directory where teacher text is kept between runs (keyed by the source model's digest and the teacher
    /// spec): `palettize` and `recover` then write it once. Where, not what: not part of the recorded options.
    #[serde(skip)]
    pub teacher_cache: Option<PathBuf>,
    /// A directory where [`build_release`] keeps the palettized base it recovers from (the release before
    /// recovery and its bit allocation, keyed by everything that decides them): a rerun with the same inputs
    /// (an interrupted build, restarted) reads it and goes straight to the recovery. Where, not what.
    #[serde(skip)]
    pub palettized_cache: Option<PathBuf>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            target_bpw: 3.5,
            method: Method::default(),
            teacher: TeacherTextSpec { sequences: 256, seq_len: 128, batch: 16, temperature: 1.0, seed: 11 },
            sensitivity_sequences: 2,
            sensitivity: Sensitivity::Corrected,
            // a build has the calibration statistics: the adapter starts at its calibrated correction
            recovery: RecoverySpec { calibrated_init: true, ..RecoverySpec::default() },
            embedding_bits: None,
            user_corpus_share: None,
            activation_bits: None,
            teacher_cache: None,
            palettized_cache: None,
        }
    }
}

/// The precision of a build's recovery (its frozen matmuls, [`RecoverySpec::base_precision`]): `asked` when
/// given, else the one that pays on the device `base` is loaded on ([`preferred_precision`]). `adapterci-base`
/// and adapterd's builder both take it from here, so that the two decide alike.
pub fn recovery_precision(asked: Option<BasePrecision>, base: &BaseModel) -> BasePrecision {
    asked.unwrap_or_else(|| preferred_precision(base.llama().device()))
}

/// Calibration state shared by the steps: the teacher's text, the sequences the statistics are taken on (a
/// quarter of the teacher's text, and the user corpus when there is one) and the linear inputs' statistics.
pub struct Calibrated {
    pub sequences: Vec<Vec<u32>>,
    pub calibration: Vec<Vec<u32>>,
    pub hessians: Hessians,
}

impl std::fmt::Debug for Calibrated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calibrated").field("sequences", &self.sequences.len()).finish()
    }
}

/// What `build_release` measured and produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildReport {
    pub source_model_digest: Digest,
    pub release_digest: Digest,
    pub recovery_adapter_digest: Digest,
    pub options: BuildOptions,
    pub linear_bpw: f64,
    pub whole_model_bpw: f64,
    /// The palettized base against the source, as palettized (before recovery) and as released with its
    /// recovery adapter (with the trained tables and scales when the palettes trained), on held-out text when
    /// given (else on teacher text the recovery did not train on).
    pub palettized: Agreement,
    pub recovered: Agreement,
    pub uncompressed: Agreement,
    /// `(CE_palettized - CE_recovered) / (CE_palettized - CE_uncompressed)`.
    pub recovery_fraction: f64,
    pub recovery: RecoveryReport,
    pub analysis: BitAnalysis,
}

/// A built release: the file, the bound recovery adapter file, and the report.
#[derive(Debug)]
pub struct BuiltRelease {
    pub release: Vec<u8>,
    pub recovery_adapter: Vec<u8>,
    pub report: BuildReport,
    /// The folder of this build's recovery checkpoints (under [`RecoverySpec::checkpoint_dir`], named by the
    /// palettized base, the recovery spec and the text it trained on), when the spec has one: the build is done,
    /// so nothing in it is left to resume, and whoever keeps the build's state may remove it, with the folder of
    /// the same base and spec from before the text was part of the name ([`remove_recovery_checkpoints`]).
    pub recovery_checkpoints: Option<PathBuf>,
}

/// The whole release: calibrate, analyze, palettize (or read the palettized base that a run with the same inputs
/// kept in `options.palettized_cache`), recover, evaluate (on `eval_text` when given, else on teacher text held
/// out of recovery), with `user_corpus` added to the recovery text when given.
pub fn build_release(
    base: &BaseModel,
    options: &BuildOptions,
    eval_text: Option<&str>,
    user_corpus: Option<&str>,
    progress: &mut dyn FnMut(&str),
    recovery_progress: &mut dyn FnMut(&RecoveryProgress),
) -> Result<BuiltRelease, EngineError> {
    let PalettizedBase { sequences, hessians, analysis, linear, embedding, student, release, release_digest } =
        palettized_base(base, options, user_corpus, progress)?;
    let seq_len = options.teacher.seq_len;
    let EvaluationSplit { train, held_out } = evaluation_split(base, &sequences, eval_text)?;
    let text = recovery_text(
        base,
        &train,
        user_corpus,
        seq_len,
        options.user_corpus_share,
        options.recovery.validation_sequences,
    )?;
    progress(&text.describe(seq_len));
    progress(&format!(
        "recovery: rank {} on every linear operation, {} sequences",
        options.recovery.rank,
        text.sequences.len()
    ));
    // digested once: the checkpoints' folder is named by it, and the recovery records it in them
    let digested = DigestedText::of(&text);
    let recovery =
        recovery_checkpoints::build_recovery_spec(&options.recovery, &release_digest, digested.digest(), progress)?;
    let calibrated_start = recovery.calibrated_init && !has_checkpoint(&recovery);
    let hessians = match hessians {
        // a palettization from the cache: the statistics again only for a calibrated start (a checkpoint's
        // adapter needs none)
        None if calibrated_start => Some(calibration_statistics(base, &sequences, options, user_corpus, progress)?.1),
        taken => taken,
    };
    let llama = base.llama();
    // the statistics (and the square roots kept for the calibrated start) go to the recovery, which drops them
    // once its start is made, before its first step
    let done = recover_palettized_taking(llama, &student, &linear, hessians, &digested, &recovery, recovery_progress)?;
    // the release is written after recovery: with trained palettes, its tables and scales are the trained ones;
    // else the palettes are the ones it started from, and so is the file
    let release = match options.recovery.palette_learning_rate {
        Some(_) => release_file(base, options, done.palettes, embedding)?,
        None => release,
    };
    let release_digest = Digest::of(&release);
    let recovery_adapter = bind_recovery_adapter(&done.lora.to_safetensors()?, &release_digest)?;
    let uncompressed = compare(llama, llama, None, &held_out, 2)?;
    let before = compare(llama, &student, None, &held_out, 2)?;
    let recovered = compare(llama, &done.student, Some(&done.lora), &held_out, 2)?;
    let gap = before.cross_entropy - uncompressed.cross_entropy;
    let report = BuildReport {
        source_model_digest: base.digest().clone(),
        release_digest,
        recovery_adapter_digest: Digest::of(&recovery_adapter),
        options: options.clone(),
        linear_bpw: analysis.achieved_bpw,
        whole_model_bpw: crate::release::BaseRelease::read(&release, base.path())?.manifest.whole_model_bpw,
        palettized: before,
        recovered,
        uncompressed,
        recovery_fraction: if gap.abs() < 1e-12 { 1.0 } else { (before.cross_entropy - recovered.cross_entropy) / gap },
        recovery: done.report,
        analysis,
    };
    Ok(BuiltRelease { release, recovery_adapter, report, recovery_checkpoints: recovery.checkpoint_dir })
}

/// What a build's recovery trains on and what the build is evaluated on.
struct EvaluationSplit {
    /// The teacher's sequences the recovery text is made of.
    train: Vec<Vec<u32>>,
    /// The text the palettized base, with and without its adapter, is scored on against the source.
    held_out: Vec<Vec<u32>>,
}

/// All of the teacher's `sequences` to train and `eval_text` in 256-token chunks to evaluate on, when given; else
/// all but the last tenth of the sequences (at least one) and that tenth.
fn evaluation_split(
    base: &BaseModel,
    sequences: &[Vec<u32>],
    eval_text: Option<&str>,
) -> Result<EvaluationSplit, EngineError> {
    let (train, held_out) = match eval_text {
        Some(text) => (sequences.to_vec(), chunk_tokens(base.tokenizer(), text, 256)),
        None => {
            let keep = sequences.len().saturating_sub((sequences.len() / 10).max(1));
            (sequences[..keep].to_vec(), sequences[keep..].to_vec())
        }
    };
    if held_out.is_empty() {
        return Err(EngineError::InvalidConfig("the evaluation text is shorter than one 256-token chunk".into()));
    }
    Ok(EvaluationSplit { train, held_out })
}

/// After a build of `base` with `options` (and `user_corpus`) has succeeded: removes from
/// `options.palettized_cache` the palettized bases that builds with other inputs kept there (each the size of a
/// release), and returns what it removed or failed to. The base of these inputs stays, so that a rerun that only
/// trains otherwise skips the sensitivities and the palettization; files the cache does not name as its own stay
/// too. Nothing
/// without a cache. A build of other inputs running in the same folder at the same time would lose its base
/// (a restart of it palettizes again).
pub fn remove_other_palettized_bases(
    base: &BaseModel,
    options: &BuildOptions,
    user_corpus: Option<&str>,
) -> Result<Vec<crate::files::Removal>, EngineError> {
    match &options.palettized_cache {
        Some(dir) => Ok(PalettizedCache::new(dir, base, options, user_corpus)?.remove_others()),
        None => Ok(Vec::new()),
    }
}
