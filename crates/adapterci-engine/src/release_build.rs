//! A base release end to end, from a source model: teacher text, calibration, per-operation sensitivity and bit
//! allocation, palettization, the recovery adapter (bound to the release), and the evaluation report. The
//! `adapterci-base` tool and the base-release pipeline stage both call [`analyze`] and [`build_release`].

mod palettized_cache;
mod recovery_checkpoints;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use adapterci_core::Digest;
use adapterci_core::training::BasePrecision;
use serde::{Deserialize, Serialize};

use crate::EngineError;
use crate::allocate::{
    BitAnalysis, LinearOp, Method, Sensitivity, SensitivitySpec, allocate_bits, linear_ops, measure_sensitivities,
    palettize_op, palettize_sequential,
};
use crate::calibrate::{
    Agreement, Hessians, TeacherTextSpec, chunk_tokens, collect_hessians, compare, prompt_ids, teacher_text,
};
use crate::llama::Llama;
use crate::model::BaseModel;
use crate::palettize::{Calibration, PaletteSpec, PalettizedTensor, palettize};
pub use crate::recover::RecoveryText;
use crate::recover::{
    RecoveryProgress, RecoveryReport, RecoverySpec, ValidationSet, has_checkpoint, hold_out, holds_checkpoint,
    preferred_precision, recover_palettized_taking,
};
use crate::release::{ReleaseContents, bind_recovery_adapter, write_release};
use crate::tokenizer::TokenizerSpec;
use palettized_cache::PalettizedCache;
use recovery_checkpoints::{checkpoint_folder, not_resumed};

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
    /// so nothing in it is left to resume, and whoever keeps the build's state may remove it
    /// ([`crate::recover::remove_checkpoint`]).
    pub recovery_checkpoints: Option<PathBuf>,
}

/// Writes teacher text and collects the linear inputs' statistics on a quarter of it and, when given, on as many
/// sequences of `user_corpus` (natural text of the user's domain: the palettization then also fits the inputs
/// the model sees there, not only on its own writing).
pub fn calibrate(
    base: &BaseModel,
    options: &BuildOptions,
    user_corpus: Option<&str>,
    progress: &mut dyn FnMut(&str),
) -> Result<Calibrated, EngineError> {
    let sequences = cached_teacher_text(base, &options.teacher, options.teacher_cache.as_deref(), progress)?;
    let (calibration, hessians) = calibration_statistics(base, &sequences, options, user_corpus, progress)?;
    Ok(Calibrated { sequences, calibration, hessians })
}

/// The sequences the statistics are taken on ([`calibration_sequences`] of a quarter of the teacher's
/// `sequences`, at most 256) and the linear inputs' statistics over them.
fn calibration_statistics(
    base: &BaseModel,
    sequences: &[Vec<u32>],
    options: &BuildOptions,
    user_corpus: Option<&str>,
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<Vec<u32>>, Hessians), EngineError> {
    let count = (sequences.len() / 4).clamp(1, 256);
    let calibration = calibration_sequences(base, &sequences[..count], user_corpus, options.teacher.seq_len)?;
    let hessians = collect_hessians(base.llama(), &calibration, 4)?;
    progress(&format!(
        "calibration: input statistics over {} tokens ({} sequences of the user corpus)",
        hessians.tokens,
        calibration.len() - count
    ));
    Ok((calibration, hessians))
}

/// Names how [`teacher_text`] draws its tokens, in the cache's file names: text drawn another way (torch's global
/// generator, before 2026-11-28) is not the text a spec names now, so it is not read back.
const TEACHER_SAMPLER: &str = "icdf1";

/// Teacher text as [`teacher_text`] writes it for `spec`, read from `cache` when a run wrote it there for the same
/// source model and spec, else written (and stored there when `cache` is given). A cache file that does not read
/// back as that text is noted and written again.
pub fn cached_teacher_text(
    base: &BaseModel,
    spec: &TeacherTextSpec,
    cache: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Vec<u32>>, EngineError> {
    let path = cache.map(|dir| {
        dir.join(format!(
            "teacher-{}-{}x{}-b{}-t{}-s{}-{TEACHER_SAMPLER}.json",
            &base.digest().hex()[..16],
            spec.sequences,
            spec.seq_len,
            spec.batch,
            spec.temperature,
            spec.seed
        ))
    });
    if let Some(path) = path.as_ref().filter(|p| p.exists()) {
        match read_teacher_cache(path, base.digest(), spec, base.config().vocab_size) {
            Ok(sequences) => {
                progress(&format!("teacher text: {} sequences from {}", sequences.len(), path.display()));
                return Ok(sequences);
            }
            Err(why) => progress(&format!("teacher text: ignoring {} ({why}); writing it again", path.display())),
        }
    }
    let prompts = prompt_ids(base.tokenizer(), None)?;
    let mut last = 0;
    let sequences = teacher_text(base.llama(), &prompts, spec, &mut |done, total| {
        if done * 10 / total.max(1) > last {
            last = done * 10 / total.max(1);
            progress(&format!("teacher text: {done}/{total} sequences"));
        }
    })?;
    if let Some(path) = &path {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|source| EngineError::Io { path: dir.to_path_buf(), source })?;
        let file = TeacherCache { model_digest: base.digest().clone(), spec: spec.clone(), sequences };
        let json = serde_json::to_vec(&file).map_err(|e| EngineError::InvalidConfig(e.to_string()))?;
        crate::files::write_atomic(path, &json)?;
        return Ok(file.sequences);
    }
    Ok(sequences)
}

#[derive(Serialize, Deserialize)]
struct TeacherCache {
    model_digest: Digest,
    spec: TeacherTextSpec,
    sequences: Vec<Vec<u32>>,
}

/// The cached text at `path`, when it is the text of `spec` from the model with `digest`.
fn read_teacher_cache(
    path: &Path,
    digest: &Digest,
    spec: &TeacherTextSpec,
    vocab_size: usize,
) -> Result<Vec<Vec<u32>>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let file: TeacherCache = serde_json::from_slice(&bytes).map_err(|e| format!("not a teacher-text cache: {e}"))?;
    if &file.model_digest != digest {
        return Err(format!("written by model {}", file.model_digest));
    }
    if &file.spec != spec {
        return Err("written for another teacher spec".into());
    }
    if file.sequences.len() != spec.sequences || file.sequences.iter().any(|s| s.len() != spec.seq_len) {
        return Err(format!("not {} sequences of {} tokens", spec.sequences, spec.seq_len));
    }
    if let Some(t) = file.sequences.iter().flatten().find(|&&t| t as usize >= vocab_size) {
        return Err(format!("token id {t} is outside the model's {vocab_size}-token vocabulary"));
    }
    Ok(file.sequences)
}

/// The sequences the input statistics are taken on: `teacher` and, when given, as many `seq_len`-token
/// sequences of `user_corpus`, evenly spread over it.
pub fn calibration_sequences(
    base: &BaseModel,
    teacher: &[Vec<u32>],
    user_corpus: Option<&str>,
    seq_len: usize,
) -> Result<Vec<Vec<u32>>, EngineError> {
    let mut calibration = teacher.to_vec();
    if let Some(corpus) = user_corpus {
        let user = chunk_tokens(base.tokenizer(), corpus, seq_len);
        if user.is_empty() {
            return Err(EngineError::InvalidConfig(format!(
                "the user corpus is shorter than one {seq_len}-token sequence"
            )));
        }
        let step = (user.len() / teacher.len().max(1)).max(1);
        calibration.extend(user.into_iter().step_by(step).take(teacher.len()));
    }
    Ok(calibration)
}

/// Every operation's sensitivity and the allocation that meets `options.target_bpw`.
pub fn analyze(
    base: &BaseModel,
    calibrated: &Calibrated,
    options: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<BitAnalysis, EngineError> {
    let llama = base.llama();
    let ops = linear_ops(llama.config());
    let count = options.sensitivity_sequences.clamp(1, calibrated.sequences.len());
    let mut last = 0;
    let spec = SensitivitySpec {
        method: options.method,
        correction_rank: (options.sensitivity == Sensitivity::Corrected).then_some(options.recovery.rank),
        batch: 2,
    };
    let sensitivities = measure_sensitivities(
        llama,
        &calibrated.hessians,
        &ops,
        &calibrated.sequences[..count],
        spec,
        &mut |done, total| {
            if done * 10 / total.max(1) > last {
                last = done * 10 / total.max(1);
                progress(&format!("sensitivity: {done}/{total} operations"));
            }
        },
    )?;
    let bits = allocate_bits(&ops, &sensitivities, options.method, options.target_bpw)?;
    let lm_head_bytes = (llama.config().vocab_size * llama.config().hidden_size * 2) as u64;
    let analysis = BitAnalysis::new(&ops, &bits, &sensitivities, options.method, options.target_bpw, lm_head_bytes);
    Ok(BitAnalysis { sensitivity: options.sensitivity, ..analysis })
}

/// Has the statistics of `calibrated` keep, for every layer, what [`analyze`] and then [`palettize_model`] with
/// `options` both derive from them, so that each input's is made once for the two passes instead of once in
/// each: its rotated statistics, which both palettize every operation under (not when the palettization is
/// sequential: it takes statistics of its own), as large as the statistics; and its square root, twice their
/// size, when both solve with it: the corrected sensitivities' low-rank corrections, and the palettization's
/// low-rank rounds (the sensitivities palettize without them). What is kept is the same to the bit as what
/// would be made again, so the release is the same; once the palettization is done,
/// [`Hessians::forget_rotated`] and [`Hessians::forget_square_roots`] (or dropping them) give the memory back.
pub fn keep_what_analysis_and_palettization_share(calibrated: &mut Calibrated, options: &BuildOptions) {
    if options.method.sequential {
        return;
    }
    if options.method.rotation.is_some() {
        calibrated.hessians.keep_rotated();
    }
    if options.method.low_rank_rounds > 0 && options.sensitivity == Sensitivity::Corrected {
        calibrated.hessians.keep_square_roots();
    }
}

/// Palettizes every operation with the bits of `analysis` (in [`linear_ops`] order) and the embedding when
/// asked; returns the tensors and the palettized decoder (the source with their dequantized weights and the
/// activation bits of `options`, made as for a build that reads its palettization from the cache).
pub fn palettize_model(
    base: &BaseModel,
    calibrated: &Calibrated,
    bits: &[u8],
    options: &BuildOptions,
) -> Result<(Vec<PalettizedTensor>, Option<PalettizedTensor>, Llama), EngineError> {
    let llama = base.llama();
    let ops: Vec<LinearOp> = linear_ops(llama.config());
    if bits.len() != ops.len() {
        return Err(EngineError::InvalidConfig(format!("{} bit choices for {} operations", bits.len(), ops.len())));
    }
    crate::release::check_activation_bits(options.activation_bits).map_err(EngineError::InvalidConfig)?;
    let linear = if options.method.sequential {
        // the decoder it palettized along the way has the weights the student is given below
        palettize_sequential(llama, &ops, bits, options.method, &calibrated.calibration, 4, &mut |_, _| {})?.0
    } else {
        ops.iter()
            .zip(bits)
            .map(|(op, &b)| palettize_op(llama, Some(&calibrated.hessians), op, b, options.method))
            .collect::<Result<Vec<_>, _>>()?
    };
    let embedding = match options.embedding_bits {
        Some(bits) => {
            let spec = PaletteSpec { bits, group_rows: 64, row_scale: true, rotation: None };
            Some(palettize(llama.embedding_weight(), spec, Calibration::default())?)
        }
        None => None,
    };
    let student = palettized_student(base, options, &linear, embedding.as_ref())?;
    Ok((linear, embedding, student))
}

/// `base` with its linear operations (and embedding, when given) replaced by the dequantized `linear` (in
/// [`linear_ops`] order) and the activation bits of `options`: the decoder [`palettize_model`] returns, and the
/// one a build that reads its palettization from the cache recovers.
fn palettized_student(
    base: &BaseModel,
    options: &BuildOptions,
    linear: &[PalettizedTensor],
    embedding: Option<&PalettizedTensor>,
) -> Result<Llama, EngineError> {
    let llama = base.llama();
    let mut student = llama.shallow_copy();
    student.set_activation_bits(options.activation_bits);
    for (op, part) in linear_ops(llama.config()).iter().zip(linear) {
        student.set_linear_weight(op.layer, op.target, part.dequantize(llama.device()))?;
    }
    if let Some(p) = embedding {
        student.set_embedding(p.dequantize(llama.device()))?;
    }
    Ok(student)
}

/// The palettized base a recovery starts from, and what the build goes on with.
struct PalettizedBase {
    /// The teacher's text.
    sequences: Vec<Vec<u32>>,
    /// The calibration statistics, when this run took them (not when the palettization came from the cache).
    hessians: Option<Hessians>,
    analysis: BitAnalysis,
    linear: Vec<PalettizedTensor>,
    embedding: Option<PalettizedTensor>,
    /// The source model with the palettized weights.
    student: Llama,
    /// The release file before recovery, and its digest.
    release: Vec<u8>,
    release_digest: Digest,
}

/// Calibrates, analyzes and palettizes `base`, or reads what a run with the same inputs kept in
/// `options.palettized_cache` (then only the teacher's text is needed, which its own cache keeps).
fn palettized_base(
    base: &BaseModel,
    options: &BuildOptions,
    user_corpus: Option<&str>,
    progress: &mut dyn FnMut(&str),
) -> Result<PalettizedBase, EngineError> {
    let cache = match &options.palettized_cache {
        Some(dir) => Some(PalettizedCache::new(dir, base, options, user_corpus)?),
        None => None,
    };
    if let Some(cache) = &cache
        && let Some(cached) = cache.load(base, progress)
    {
        progress(&format!(
            "palettized base: reused from {} ({:.4} bits per weight on the linear operations)",
            cache.path().display(),
            cached.analysis.achieved_bpw
        ));
        let sequences = cached_teacher_text(base, &options.teacher, options.teacher_cache.as_deref(), progress)?;
        let student = palettized_student(base, options, &cached.linear, cached.embedding.as_ref())?;
        return Ok(PalettizedBase {
            sequences,
            hessians: None,
            analysis: cached.analysis,
            linear: cached.linear,
            embedding: cached.embedding,
            student,
            release: cached.release,
            release_digest: cached.release_digest,
        });
    }
    let mut calibrated = calibrate(base, options, user_corpus, progress)?;
    keep_what_analysis_and_palettization_share(&mut calibrated, options);
    if options.recovery.calibrated_init {
        // the corrected sensitivities (and the low-rank rounds) solve with each input's square root, and so does
        // the calibrated start: made once, kept until the start has read them (twice the statistics' size)
        calibrated.hessians.keep_square_roots();
    }
    let analysis = analyze(base, &calibrated, options, progress)?;
    let bits: Vec<u8> = analysis.rows.iter().map(|r| r.bits).collect();
    progress(&format!("palettizing: {:.4} bits per weight on the linear operations", analysis.achieved_bpw));
    let (linear, embedding, student) = palettize_model(base, &calibrated, &bits, options)?;
    calibrated.hessians.forget_rotated();
    if !options.recovery.calibrated_init {
        // kept for the low-rank rounds only: no start reads them
        calibrated.hessians.forget_square_roots(None);
    }
    let release = release_file(base, options, linear.clone(), embedding.clone())?;
    let release_digest = Digest::of(&release);
    // the cache saves a restart's time, the build does not depend on it
    if let Some(cache) = &cache
        && let Err(e) = cache.store(&release, &release_digest, &analysis)
    {
        progress(&format!("palettized base: not kept in {} ({e}); a restart palettizes again", cache.path().display()));
    }
    let Calibrated { sequences, hessians, .. } = calibrated;
    Ok(PalettizedBase {
        sequences,
        hessians: Some(hessians),
        analysis,
        linear,
        embedding,
        student,
        release,
        release_digest,
    })
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
    let (train, held_out): (Vec<Vec<u32>>, Vec<Vec<u32>>) = match eval_text {
        Some(text) => (sequences.clone(), chunk_tokens(base.tokenizer(), text, 256)),
        None => {
            let keep = sequences.len().saturating_sub((sequences.len() / 10).max(1));
            (sequences[..keep].to_vec(), sequences[keep..].to_vec())
        }
    };
    if held_out.is_empty() {
        return Err(EngineError::InvalidConfig("the evaluation text is shorter than one 256-token chunk".into()));
    }
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
    let mut recovery = options.recovery.clone();
    if let Some(root) = &options.recovery.checkpoint_dir {
        let dir = checkpoint_folder(root, &release_digest, &options.recovery, &text.digest())?;
        progress(&format!(
            "recovery checkpoints in {} (a rerun that palettizes the same base and trains with the same spec on \
             the same text resumes them)",
            dir.display()
        ));
        if !holds_checkpoint(&dir) {
            // nothing to resume here: say why the checkpoints of this base and spec beside it are not
            for line in not_resumed(&dir) {
                progress(&line);
            }
        }
        recovery.checkpoint_dir = Some(dir);
    }
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
    let done = recover_palettized_taking(llama, &student, &linear, hessians, &text, &recovery, recovery_progress)?;
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

/// The teacher's sequences plus, when given, `user_corpus` cut into `seq_len`-token sequences, mixed so that the
/// corpus makes up about `share` of the whole: all of the corpus is used, and whichever side is short of its
/// share is repeated (the corpus when it is smaller than the share asks for, the teacher's text when it is
/// larger: distinct text is what a recovery transfers from, so none of it is left out). `None`: each sequence
/// once; a share of 0 trains on the teacher's text alone. Up to `held_out` sequences of each source
/// ([`hold_out`]) are kept out of training as its validation sets, "teacher text" and "user corpus".
pub fn recovery_text(
    base: &BaseModel,
    teacher: &[Vec<u32>],
    user_corpus: Option<&str>,
    seq_len: usize,
    share: Option<f64>,
    held_out: usize,
) -> Result<RecoveryText, EngineError> {
    if let Some(s) = share.filter(|s| !(0.0..1.0).contains(s)) {
        return Err(EngineError::InvalidConfig(format!("user corpus share {s}: use a fraction in [0, 1)")));
    }
    let (teacher, teacher_held) = hold_out(teacher.to_vec(), held_out);
    let mut validation = Vec::new();
    if !teacher_held.is_empty() {
        validation.push(ValidationSet { name: "teacher text".into(), sequences: teacher_held });
    }
    let Some(corpus) = user_corpus.filter(|_| share != Some(0.0)) else {
        return Ok(RecoveryText { validation, ..RecoveryText::plain(teacher) });
    };
    let user = chunk_tokens(base.tokenizer(), corpus, seq_len);
    if user.is_empty() {
        return Err(EngineError::InvalidConfig(format!(
            "the user corpus is shorter than one {seq_len}-token sequence"
        )));
    }
    let (user, user_held) = hold_out(user, held_out);
    if !user_held.is_empty() {
        validation.push(ValidationSet { name: "user corpus".into(), sequences: user_held });
    }
    // how many times each side goes in: repeats r_u, r_t with u·r_u / (u·r_u + t·r_t) about `share`, one of
    // them 1
    let (u, t) = (user.len() as f64, teacher.len().max(1) as f64);
    let (user_repeats, teacher_repeats) = match share {
        None => (1, 1),
        Some(s) if s / (1.0 - s) * t > u => ((s / (1.0 - s) * t / u).round().max(1.0) as usize, 1),
        Some(s) => (1, ((1.0 - s) / s * u / t).round().max(1.0) as usize),
    };
    let mut sequences = Vec::with_capacity(teacher.len() * teacher_repeats + user.len() * user_repeats);
    for _ in 0..teacher_repeats {
        sequences.extend(teacher.iter().cloned());
    }
    for _ in 0..user_repeats {
        sequences.extend(user.iter().cloned());
    }
    Ok(RecoveryText { sequences, user: user.len(), repeats: user_repeats, teacher_repeats, validation })
}

/// The release file of `base` palettized into `linear` (in [`linear_ops`] order) and, when given, `embedding`,
/// with the method and activation bits of `options`.
pub fn release_file(
    base: &BaseModel,
    options: &BuildOptions,
    linear: Vec<PalettizedTensor>,
    embedding: Option<PalettizedTensor>,
) -> Result<Vec<u8>, EngineError> {
    let tokenizer = tokenizer_spec(base)?;
    write_release(&ReleaseContents {
        source_model_digest: base.digest().clone(),
        source_model_name: base.name().to_string(),
        method: options.method,
        config: base.llama().config(),
        tokenizer: &tokenizer,
        linear,
        embedding,
        source: base.llama(),
        activation_bits: options.activation_bits,
    })
}

/// The tokenizer of a base model as its source file describes it (GGUF or release).
pub fn tokenizer_spec(base: &BaseModel) -> Result<TokenizerSpec, EngineError> {
    let path = base.path();
    if crate::release::is_release_path(path)? {
        let (release, _) = crate::release::BaseRelease::open(path)?;
        return Ok(release.tokenizer);
    }
    TokenizerSpec::from_gguf(&crate::gguf::GgufFile::open(path)?)
}
