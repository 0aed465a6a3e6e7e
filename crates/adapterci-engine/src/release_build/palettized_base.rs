//! The palettized base a build's recovery starts from: calibrated, analyzed and palettized by this run, or read
//! back from the palettized cache where a run with the same inputs kept it.

use adapterci_core::Digest;

use super::palettized_cache::PalettizedCache;
use super::release_file::release_file;
use super::steps::{
    analyze, calibrate, keep_what_analysis_and_palettization_share, palettize_model, palettized_student,
};
use super::teacher_text::cached_teacher_text;
use super::{BuildOptions, Calibrated};
use crate::EngineError;
use crate::allocate::BitAnalysis;
use crate::calibrate::Hessians;
use crate::llama::Llama;
use crate::model::BaseModel;
use crate::palettize::PalettizedTensor;

/// The palettized base a recovery starts from, and what the build goes on with.
pub(super) struct PalettizedBase {
    /// The teacher's text.
    pub(super) sequences: Vec<Vec<u32>>,
    /// The calibration statistics, when this run took them (not when the palettization came from the cache).
    pub(super) hessians: Option<Hessians>,
    pub(super) analysis: BitAnalysis,
    pub(super) linear: Vec<PalettizedTensor>,
    pub(super) embedding: Option<PalettizedTensor>,
    /// The source model with the palettized weights.
    pub(super) student: Llama,
    /// The release file before recovery, and its digest.
    pub(super) release: Vec<u8>,
    pub(super) release_digest: Digest,
}

/// Calibrates, analyzes and palettizes `base`, or reads what a run with the same inputs kept in
/// `options.palettized_cache` (then only the teacher's text is needed, which its own cache keeps).
pub(super) fn palettized_base(
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
