//! Where a base-release build keeps its recovery's checkpoints: a folder under the recovery's checkpoint folder
//! named by what the recovery starts from, how it trains and what it trains on, so that a rerun resumes only the
//! recovery it would itself train, and says why when it starts afresh beside checkpoints made on other text.

use std::path::{Path, PathBuf};

use adapterci_core::Digest;

use crate::EngineError;
use crate::recover::{RecoverySpec, holds_checkpoint};

/// The recovery spec of a build: `recovery` with, when it keeps checkpoints, this build's folder under its
/// `checkpoint_dir` ([`checkpoint_folder`] of the palettized base `palettized` and the training text `text`) in its
/// place; says where that folder is and, when it holds no checkpoint to resume, why those beside it of the same
/// base and spec are not resumed ([`not_resumed`]).
pub(super) fn build_recovery_spec(
    recovery: &RecoverySpec,
    palettized: &Digest,
    text: &Digest,
    progress: &mut dyn FnMut(&str),
) -> Result<RecoverySpec, EngineError> {
    let mut spec = recovery.clone();
    if let Some(root) = &recovery.checkpoint_dir {
        let dir = checkpoint_folder(root, palettized, recovery, text)?;
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
        spec.checkpoint_dir = Some(dir);
    }
    Ok(spec)
}

/// The folder, under `root`, of a build's checkpoints: `<spec key>-<text key>`, 16 hex digits each. The spec key
/// names the palettized base the recovery starts from (`palettized`, the digest of the release file before
/// recovery) and what its steps do ([`RecoverySpec::resume_identity`]); the text key names what they train and
/// validate on (`text`, [`crate::recover::training_text_digest`]: the teacher's text, the user corpus and its
/// share, the evaluation split, the held-out sequences). A rerun that reads the same palettized base from the
/// cache, or whose calibration reproduces it, and trains the same way on the same text resumes the interrupted
/// recovery; one that differs in any of them starts in a folder of its own instead of resuming an adapter trained
/// against another base or on other text, or stopping at a checkpoint it cannot use. Folders named by the spec
/// key alone are those of builds made before the text was part of the name.
fn checkpoint_folder(
    root: &Path,
    palettized: &Digest,
    recovery: &RecoverySpec,
    text: &Digest,
) -> Result<PathBuf, EngineError> {
    Ok(root.join(format!("{}-{}", spec_key(palettized, recovery)?, &text.hex()[..16])))
}

/// The first part of [`checkpoint_folder`]'s name (the whole name before the text was part of it).
fn spec_key(palettized: &Digest, recovery: &RecoverySpec) -> Result<String, EngineError> {
    let spec = serde_json::to_vec(&recovery.resume_identity())
        .map_err(|e| EngineError::InvalidConfig(format!("recovery spec: {e}")))?;
    let mut identity = palettized.hex().into_bytes();
    identity.extend_from_slice(&spec);
    Ok(Digest::of(&identity).hex()[..16].to_string())
}

/// For a recovery about to start afresh in `folder` (named by [`checkpoint_folder`]): a line for each checkpoint
/// beside it of the same palettized base and spec that it does not resume, saying why: made on other training
/// text, or by a build from before the text was part of the name (whose text cannot be told).
fn not_resumed(folder: &Path) -> Vec<String> {
    let (Some(root), Some(name)) = (folder.parent(), folder.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let Some((spec_key, _)) = name.split_once('-') else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let mut lines: Vec<String> = entries
        .flatten()
        .filter(|entry| holds_checkpoint(&entry.path()))
        .filter_map(|entry| {
            let other = entry.file_name().into_string().ok()?;
            let path = entry.path();
            if other == spec_key {
                Some(format!(
                    "recovery: checkpoint {} was written before checkpoints recorded their training text, so it \
                     cannot be told to be this text's; starting the recovery afresh (remove that folder to free \
                     its space)",
                    path.display()
                ))
            } else if other != name && other.split_once('-').is_some_and(|(key, _)| key == spec_key) {
                Some(format!(
                    "recovery: checkpoint {} was made on other training text; starting the recovery afresh (it \
                     stays, for a rerun on its text)",
                    path.display()
                ))
            } else {
                None
            }
        })
        .collect();
    lines.sort();
    lines
}
