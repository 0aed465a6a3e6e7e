//! The steps of a build before its recovery: calibration (the teacher's text and the linear inputs'
//! statistics), the analysis (each operation's sensitivity and the bit allocation) and the palettization.

use super::teacher_text::cached_teacher_text;
use super::{BuildOptions, Calibrated};
use crate::EngineError;
use crate::allocate::{
    BitAnalysis, LinearOp, Sensitivity, SensitivitySpec, allocate_bits, linear_ops, measure_sensitivities,
    palettize_op, palettize_sequential,
};
use crate::calibrate::{Hessians, chunk_tokens, collect_hessians};
use crate::llama::Llama;
use crate::model::BaseModel;
use crate::palettize::{Calibration, PaletteSpec, PalettizedTensor, palettize};

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
pub(super) fn calibration_statistics(
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
pub(super) fn palettized_student(
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
