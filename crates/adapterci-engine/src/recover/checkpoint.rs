//! Recovery checkpoints: what a recovery killed at any moment resumes from, so that the steps it has left are the
//! ones an uninterrupted run would have taken (the same adapter and palettes, to rounding, and the same KL curve).
//!
//! The checkpoint of step `s` is, in the checkpoint folder: `recovery-checkpoint.safetensors` (the adapter as
//! stored, f16), `recovery-palettes.safetensors` (when the palettes train: their tables and scale factors),
//! `recovery-optimizer-<s>.safetensors` and, when the palettes train, `recovery-palette-optimizer-<s>.safetensors`
//! (each optimizer's f32 parameters, Adam moments and step count, in the task trainer's checkpoint format,
//! [`crate::train::checkpoint`]), and `recovery-checkpoint.json` ([`CheckpointState`]: the step, the KL and
//! validation curves, the training time, the schedule's length and the spec), written last. Each file is written
//! whole or not at all; the record is what makes the checkpoint, and a resume takes the adapter's and palettes'
//! values from the optimizer files of the record's step (the adapter file, f16, gives its shape), so a kill
//! between the files resumes the previous checkpoint whole: its optimizer files go only once the next record is
//! written.
//!
//! The record names the text the recovery trains and validates on ([`training_text_digest`]): a checkpoint made on
//! other text (another user corpus or share of it, another evaluation split, other teacher text...) is refused
//! rather than resumed, since its adapter and optimizer moments were trained on that text; so is a record written
//! before the field, whose text cannot be told. (A base-release build keeps each text's checkpoints in a folder of
//! their own, so it starts afresh instead: `release_build/recovery_checkpoints.rs`.)
//!
//! A record written before the optimizers' state was kept (no `optimizer_state`) still resumes, from the adapter
//! and palettes files, with Adam's moments and step counts at zero and, under a time budget, a provisional schedule
//! until the run has timed its pace (what every resumed run did then).
//!
//! [`remove_checkpoint`] removes these files (record first) once nothing is left to resume.

use std::path::Path;

use adapterci_core::Digest;
use adapterci_core::digest::DigestWriter;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::{RecoverySpec, ValidationPoint, ValidationSet};
use crate::EngineError;
use crate::files::{Removal, remove_recognized, write_atomic, write_atomic_with};
use crate::llama::Llama;
use crate::lora::LoraWeights;
use crate::palettize::TrainablePalettes;
use crate::train::AdamW;
use crate::train::checkpoint::Checkpoint;

const CHECKPOINT_ADAPTER: &str = "recovery-checkpoint.safetensors";
const CHECKPOINT_STATE: &str = "recovery-checkpoint.json";
const CHECKPOINT_PALETTES: &str = "recovery-palettes.safetensors";
/// The optimizers' files: the prefix, the step (8 digits), `.safetensors`.
const ADAPTER_OPTIMIZER: &str = "recovery-optimizer-";
const PALETTE_OPTIMIZER: &str = "recovery-palette-optimizer-";
/// What each optimizer file says it holds, so that one is never restored into the other.
const ADAPTER_FINGERPRINT: &str = "recovery adapter";
const PALETTE_FINGERPRINT: &str = "recovery palettes";

fn optimizer_file(prefix: &str, step: usize) -> String {
    format!("{prefix}{step:08}.safetensors")
}

/// The record of a checkpoint (`recovery-checkpoint.json`), written after its other files.
#[derive(Serialize, Deserialize)]
pub(super) struct CheckpointState {
    pub step: usize,
    pub kl_curve: Vec<(usize, f64)>,
    pub spec: RecoverySpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation: Vec<ValidationPoint>,
    /// Seconds of training up to this checkpoint, over every run that led to it: a resumed run's time budget
    /// goes on from here. Checkpoints written before the field read as 0 (their run's time is not known, so a
    /// resumed run has its whole budget again, as it had then).
    #[serde(default)]
    pub elapsed_seconds: f64,
    /// The schedule's length the run was on after this step (under a time budget, the one refitted to its pace):
    /// a resumed run goes on with it until it has timed its own pace. Absent in records written before the
    /// field: a provisional schedule, as then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<usize>,
    /// Whether the optimizers' files of this step were written before the record (always, since the field
    /// exists). Absent: the resumed run's Adam moments and step counts start at zero.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optimizer_state: bool,
    /// The text the run trained and validated on ([`training_text_digest`]): a checkpoint resumes only on the
    /// same text. Absent in records written before the field (their text cannot be told: not resumed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_digest: Option<Digest>,
}

impl CheckpointState {
    /// Where a run without a checkpoint starts: step 0, nothing spent.
    pub fn start(spec: &RecoverySpec) -> CheckpointState {
        CheckpointState {
            step: 0,
            kl_curve: Vec::new(),
            spec: spec.clone(),
            validation: Vec::new(),
            elapsed_seconds: 0.0,
            total_steps: None,
            optimizer_state: false,
            text_digest: None,
        }
    }
}

/// What a recovery trains on and is validated on, as one digest: sha256 over the training sequences' token ids in
/// order (repeats included, so the user corpus's share counts) and each validation set's name and sequences, each
/// list and sequence prefixed with its length. Whatever changes the text (teacher text, user corpus, its share,
/// the evaluation split, the sequences held out, the sequence length) changes it; nothing else does.
pub fn training_text_digest(sequences: &[Vec<u32>], validation: &[ValidationSet]) -> Digest {
    fn put_sequences(digest: &mut DigestWriter, sequences: &[Vec<u32>]) {
        digest.update(&(sequences.len() as u64).to_le_bytes());
        let mut bytes = Vec::new();
        for sequence in sequences {
            bytes.clear();
            bytes.extend_from_slice(&(sequence.len() as u64).to_le_bytes());
            bytes.extend(sequence.iter().flat_map(|token| token.to_le_bytes()));
            digest.update(&bytes);
        }
    }
    let mut digest = DigestWriter::new();
    digest.update(b"adapterci recovery text v1\n");
    put_sequences(&mut digest, sequences);
    digest.update(&(validation.len() as u64).to_le_bytes());
    for set in validation {
        digest.update(&(set.name.len() as u64).to_le_bytes());
        digest.update(set.name.as_bytes());
        put_sequences(&mut digest, &set.sequences);
    }
    digest.finish()
}

/// The optimizers a recovery trains with: the adapter's, and the palettes' when they train.
pub(super) struct Optimizers<'a> {
    pub adapter: &'a AdamW,
    pub palettes: Option<&'a AdamW>,
}

/// Writes the checkpoint of `state.step` into `spec.checkpoint_dir` (nothing without one): the adapter, the
/// palettes, the optimizers' state, then the record; then removes the optimizer files of earlier checkpoints.
pub(super) fn write_checkpoint(
    spec: &RecoverySpec,
    lora: &LoraWeights,
    palettes: Option<&TrainablePalettes>,
    optimizers: Optimizers<'_>,
    state: CheckpointState,
    tokens: usize,
) -> Result<(), EngineError> {
    let Some(dir) = &spec.checkpoint_dir else { return Ok(()) };
    std::fs::create_dir_all(dir).map_err(|source| EngineError::Io { path: dir.clone(), source })?;
    let bytes = lora.to_safetensors()?;
    write_atomic(&dir.join(CHECKPOINT_ADAPTER), &bytes)?;
    if let Some(p) = palettes {
        write_atomic_with(&dir.join(CHECKPOINT_PALETTES), |tmp| {
            Tensor::write_safetensors(&p.state(), tmp)
                .map_err(|e| EngineError::Training(format!("{}: {e}", tmp.display())))
        })?;
    }
    let step = state.step;
    let saved = [
        (ADAPTER_OPTIMIZER, ADAPTER_FINGERPRINT, Some(optimizers.adapter)),
        (PALETTE_OPTIMIZER, PALETTE_FINGERPRINT, optimizers.palettes),
    ];
    for (prefix, fingerprint, optimizer) in saved {
        if let Some(optimizer) = optimizer {
            let path = dir.join(optimizer_file(prefix, step));
            optimizer.snapshot(step, state.kl_curve.clone(), tokens, fingerprint).write_to(&path)?;
        }
    }
    let state = CheckpointState { optimizer_state: true, ..state };
    let json = serde_json::to_vec_pretty(&state).map_err(|e| EngineError::Training(e.to_string()))?;
    write_atomic(&dir.join(CHECKPOINT_STATE), &json)?;
    remove_earlier_optimizer_files(dir, step);
    Ok(())
}

/// Removes the optimizer files (and any temporary one a kill left) of every step but `step`, whose record was
/// just written; one that cannot be removed costs only its disk space, so it is not an error.
fn remove_earlier_optimizer_files(dir: &Path, step: usize) {
    let keep = [optimizer_file(ADAPTER_OPTIMIZER, step), optimizer_file(PALETTE_OPTIMIZER, step)];
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let optimizer = name.starts_with(ADAPTER_OPTIMIZER) || name.starts_with(PALETTE_OPTIMIZER);
        if optimizer && !keep.iter().any(|kept| kept == name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether `name` is a file [`write_checkpoint`] writes (or the temporary of one a kill left).
fn is_checkpoint_file(name: &str) -> bool {
    let name = name.strip_suffix(".tmp").unwrap_or(name);
    let optimizer = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(".safetensors"))
            .is_some_and(|step| step.len() == 8 && step.bytes().all(|b| b.is_ascii_digit()))
    };
    [CHECKPOINT_ADAPTER, CHECKPOINT_STATE, CHECKPOINT_PALETTES].contains(&name)
        || optimizer(ADAPTER_OPTIMIZER)
        || optimizer(PALETTE_OPTIMIZER)
}

/// Removes the checkpoint in `dir`, for a recovery that has nothing left to resume: the record first (a rerun
/// then starts afresh, even when a removal after it fails), then the adapter's, palettes' and optimizers' files
/// and the temporaries a kill left, then `dir` itself once it is empty. Files the recovery did not write are
/// left, and so is `dir` with them.
pub fn remove_checkpoint(dir: &Path) -> Vec<Removal> {
    let removed = remove_recognized(dir, is_checkpoint_file);
    // not empty (a file of someone else's, one that could not be removed) or already gone: either way, left
    let _ = std::fs::remove_dir(dir);
    removed
}

/// The names of what [`remove_checkpoint`] would leave in `dir` (sorted): anything but a regular file under a
/// name a checkpoint writes. Empty when `dir` holds only a checkpoint's files (or nothing); an error when it cannot
/// be listed.
pub(crate) fn foreign_entries(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut foreign = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        // a link or a folder under a recognized name is not one of ours (as for remove_recognized)
        let file = entry.metadata().is_ok_and(|m| m.is_file());
        if !(file && name.to_str().is_some_and(is_checkpoint_file)) {
            foreign.push(name.to_string_lossy().into_owned());
        }
    }
    foreign.sort();
    Ok(foreign)
}

/// Whether `spec.checkpoint_dir` holds a checkpoint that a recovery with `spec` would start from (or refuse):
/// then it needs no calibrated start.
pub(crate) fn has_checkpoint(spec: &RecoverySpec) -> bool {
    spec.checkpoint_dir.as_deref().is_some_and(holds_checkpoint)
}

/// Whether `dir` holds a checkpoint's record.
pub(crate) fn holds_checkpoint(dir: &Path) -> bool {
    dir.join(CHECKPOINT_STATE).is_file()
}

/// A checkpoint read back.
pub(super) struct Resumed {
    pub lora: LoraWeights,
    pub state: CheckpointState,
    pub optimizers: SavedOptimizers,
}

/// The optimizers' state of a checkpoint (none in a record written before it was kept).
#[derive(Default)]
pub(super) struct SavedOptimizers {
    adapter: Option<Checkpoint>,
    palettes: Option<Checkpoint>,
}

impl SavedOptimizers {
    /// Gives the optimizers the saved parameters (the adapter's and palettes' f32 values), moments and step
    /// counts; with nothing saved, they keep what they have (the values loaded from the adapter and palettes
    /// files, moments at zero).
    pub fn restore(&self, adapter: &mut AdamW, palettes: Option<&mut AdamW>) -> Result<(), EngineError> {
        let pairs = [
            (self.adapter.as_ref(), Some(adapter), ADAPTER_FINGERPRINT),
            (self.palettes.as_ref(), palettes, PALETTE_FINGERPRINT),
        ];
        for (saved, optimizer, what) in pairs {
            if let (Some(saved), Some(optimizer)) = (saved, optimizer) {
                optimizer
                    .restore(saved)
                    .map_err(|e| EngineError::Training(format!("recovery checkpoint, optimizer of the {what}: {e}")))?;
            }
        }
        Ok(())
    }
}

/// The checkpoint in `spec.checkpoint_dir`, when there is one for the same spec (steps aside) and the same text
/// (`text_digest`, [`training_text_digest`]); loads the trained palettes into `palettes` when they train. One of
/// another spec or text (or whose text is not recorded) is refused, not resumed.
pub(super) fn resume(
    spec: &RecoverySpec,
    text_digest: &Digest,
    student: &Llama,
    palettes: Option<&mut TrainablePalettes>,
) -> Result<Option<Resumed>, EngineError> {
    let Some(dir) = &spec.checkpoint_dir else { return Ok(None) };
    let state_path = dir.join(CHECKPOINT_STATE);
    let Ok(json) = std::fs::read(&state_path) else { return Ok(None) };
    let state: CheckpointState = serde_json::from_slice(&json)
        .map_err(|e| EngineError::Training(format!("{}: unreadable recovery checkpoint: {e}", state_path.display())))?;
    if state.spec.resume_identity() != spec.resume_identity() {
        return Err(EngineError::Training(format!(
            "{}: the checkpoint was written for a different recovery spec; remove it or use another directory",
            state_path.display()
        )));
    }
    match &state.text_digest {
        Some(recorded) if recorded == text_digest => {}
        Some(recorded) => {
            return Err(EngineError::Training(format!(
                "{}: the checkpoint was made on other training text ({}, this recovery's is {}); resuming it would \
                 mix the two: remove it or use another directory",
                state_path.display(),
                recorded.short(),
                text_digest.short()
            )));
        }
        None => {
            return Err(EngineError::Training(format!(
                "{}: the checkpoint was written before checkpoints recorded their training text, so it cannot be \
                 told to be this recovery's: remove it or use another directory",
                state_path.display()
            )));
        }
    }
    let adapter_path = dir.join(CHECKPOINT_ADAPTER);
    let bytes =
        std::fs::read(&adapter_path).map_err(|source| EngineError::Io { path: adapter_path.clone(), source })?;
    let lora = LoraWeights::from_safetensors(&bytes, student.config(), student.device())?;
    let trains_palettes = palettes.is_some();
    if let Some(p) = palettes {
        let path = dir.join(CHECKPOINT_PALETTES);
        let named = Tensor::read_safetensors(&path)
            .map_err(|e| EngineError::Training(format!("{}: unreadable palette checkpoint: {e}", path.display())))?;
        p.load_state(&named).map_err(|e| EngineError::Training(format!("{}: {e}", path.display())))?;
    }
    let read_optimizer = |prefix: &str, fingerprint: &str| -> Result<Option<Checkpoint>, EngineError> {
        let path = dir.join(optimizer_file(prefix, state.step));
        let refuse = |why: &str| EngineError::Training(format!("{}: {why}", path.display()));
        let saved = Checkpoint::read_from(&path, student.device())?
            .ok_or_else(|| refuse("the recovery checkpoint's optimizer state is missing"))?;
        if saved.step != state.step || saved.fingerprint != fingerprint {
            return Err(refuse(&format!(
                "holds the optimizer of the {} at step {}, not of the {fingerprint} at step {}",
                saved.fingerprint, saved.step, state.step
            )));
        }
        Ok(Some(saved))
    };
    let optimizers = if state.optimizer_state {
        SavedOptimizers {
            adapter: read_optimizer(ADAPTER_OPTIMIZER, ADAPTER_FINGERPRINT)?,
            palettes: if trains_palettes { read_optimizer(PALETTE_OPTIMIZER, PALETTE_FINGERPRINT)? } else { None },
        }
    } else {
        SavedOptimizers::default()
    };
    Ok(Some(Resumed { lora, state, optimizers }))
}

#[cfg(test)]
mod tests {
    use super::{ValidationSet, is_checkpoint_file, training_text_digest};

    #[test]
    fn the_text_digest_changes_with_the_text_and_nothing_else() {
        let set = |name: &str, sequences: &[&[u32]]| ValidationSet {
            name: name.into(),
            sequences: sequences.iter().map(|s| s.to_vec()).collect(),
        };
        let digest = |train: &[&[u32]], validation: &[ValidationSet]| {
            training_text_digest(&train.iter().map(|s| s.to_vec()).collect::<Vec<_>>(), validation)
        };
        let text = digest(&[&[1, 2], &[3, 4]], &[set("teacher text", &[&[5, 6]])]);
        assert_eq!(text, digest(&[&[1, 2], &[3, 4]], &[set("teacher text", &[&[5, 6]])]), "the same text");
        let others = [
            ("another order", digest(&[&[3, 4], &[1, 2]], &[set("teacher text", &[&[5, 6]])])),
            ("a sequence repeated", digest(&[&[1, 2], &[3, 4], &[3, 4]], &[set("teacher text", &[&[5, 6]])])),
            ("cut otherwise", digest(&[&[1, 2, 3], &[4]], &[set("teacher text", &[&[5, 6]])])),
            ("held out otherwise", digest(&[&[1, 2], &[3, 4], &[5, 6]], &[set("teacher text", &[])])),
            ("nothing held out", digest(&[&[1, 2], &[3, 4]], &[])),
            ("another source held out", digest(&[&[1, 2], &[3, 4]], &[set("user corpus", &[&[5, 6]])])),
            ("a token", digest(&[&[1, 2], &[3, 5]], &[set("teacher text", &[&[5, 6]])])),
        ];
        for (what, other) in others {
            assert_ne!(other, text, "{what}");
        }
    }

    #[test]
    fn only_the_files_a_checkpoint_writes_are_recognized() {
        for name in [
            "recovery-checkpoint.safetensors",
            "recovery-checkpoint.json",
            "recovery-palettes.safetensors",
            "recovery-optimizer-00000050.safetensors",
            "recovery-palette-optimizer-00000050.safetensors",
            "recovery-checkpoint.json.tmp",
            "recovery-optimizer-00000100.safetensors.tmp",
        ] {
            assert!(is_checkpoint_file(name), "{name}");
        }
        for name in [
            "recovery-optimizer-50.safetensors",
            "recovery-optimizer-0000005x.safetensors",
            "recovery-checkpoint.json.bak",
            "recovery-checkpoint.safetensors.tmp.tmp",
            "adapter.safetensors",
            "notes.txt",
        ] {
            assert!(!is_checkpoint_file(name), "{name}");
        }
    }
}
