//! Where a base-release build keeps its recovery's checkpoints: a folder under the recovery's checkpoint folder
//! named by what the recovery starts from, how it trains and what it trains on, so that a rerun resumes only the
//! recovery it would itself train, and says why when it starts afresh beside checkpoints made on other text; and,
//! once a build has succeeded, the removal of its checkpoints and of the folder of the same base and spec left by a
//! build from before the text was part of the name.

use std::path::{Path, PathBuf};

use adapterci_core::Digest;

use crate::EngineError;
use crate::files::Removal;
use crate::recover::{RecoverySpec, foreign_entries, holds_checkpoint, remove_checkpoint};

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
                     cannot be told to be this text's; starting the recovery afresh (once this build succeeds, \
                     its cleanup removes that folder unless it holds files a checkpoint does not write)",
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

/// After a build has succeeded, removes its recovery checkpoints (`folder`,
/// [`BuiltRelease::recovery_checkpoints`](super::BuiltRelease::recovery_checkpoints): the recovery is done, nothing
/// in it is left to resume) and the folder beside it of the same palettized base and spec named in the layout from
/// before the training text was part of the name (`<spec key>`: its checkpoint is never resumed, since its text
/// cannot be told): each file a checkpoint writes, then the folder once it is empty. Returns what it removed or
/// failed to. Files a checkpoint does not write are never removed: `folder` keeps them, and an old folder that
/// holds any is left whole, with a line through `note` naming them.
pub fn remove_recovery_checkpoints(folder: &Path, note: &mut dyn FnMut(&str)) -> Vec<Removal> {
    let mut removed = remove_checkpoint(folder);
    let Some(old) = old_layout_folder(folder) else { return removed };
    match foreign_entries(&old) {
        Ok(foreign) if foreign.is_empty() => removed.extend(remove_checkpoint(&old)),
        Ok(foreign) => note(&format!(
            "recovery: left {}, the checkpoints of this base and spec from before the training text was part of \
             the folder's name (never resumed): it holds what a checkpoint does not write ({}); remove it yourself \
             to free its space",
            old.display(),
            foreign.join(", ")
        )),
        Err(e) => note(&format!(
            "recovery: left {}, the checkpoints of this base and spec from before the training text was part of \
             the folder's name (never resumed): it cannot be listed ({e})",
            old.display()
        )),
    }
    removed
}

/// The folder of the same palettized base and spec as `folder` (named by [`checkpoint_folder`]) in the layout
/// before the text was part of the name, `<spec key>` beside it, when there is one (a link or a file under that
/// name is not a folder a build made).
fn old_layout_folder(folder: &Path) -> Option<PathBuf> {
    let (spec_key, _) = folder.file_name()?.to_str()?.split_once('-')?;
    let old = folder.with_file_name(spec_key);
    std::fs::symlink_metadata(&old).is_ok_and(|m| m.is_dir()).then_some(old)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::{Path, PathBuf};

    use adapterci_core::Digest;

    use super::{checkpoint_folder, remove_recovery_checkpoints};
    use crate::recover::RecoverySpec;

    /// A checkpoint's files (an earlier step's optimizer and a temporary a kill left among them).
    const CHECKPOINT: &[&str] = &[
        "recovery-checkpoint.json",
        "recovery-checkpoint.safetensors",
        "recovery-optimizer-00000002.safetensors",
        "recovery-optimizer-00000004.safetensors.tmp",
    ];

    /// The folder of a build of `base` on `text` under `root`, and the one of the same base and spec in the
    /// layout before the text was part of the name.
    fn folders(root: &Path, base: &[u8], text: &[u8]) -> (PathBuf, PathBuf) {
        let folder = checkpoint_folder(root, &Digest::of(base), &RecoverySpec::default(), &Digest::of(text)).unwrap();
        let spec_key = folder.file_name().unwrap().to_str().unwrap().split_once('-').unwrap().0.to_string();
        (folder, root.join(spec_key))
    }

    fn write(dir: &Path, names: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        for name in names {
            std::fs::write(dir.join(name), name.as_bytes()).unwrap();
        }
    }

    /// The names in `dir`, sorted (none when it is gone).
    fn names(dir: &Path) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut names: Vec<String> = entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    /// Removes the checkpoints of `folder`: the paths removed (each freed) and the notes.
    fn remove(folder: &Path) -> (Vec<PathBuf>, Vec<String>) {
        let mut notes = Vec::new();
        let removed = remove_recovery_checkpoints(folder, &mut |n| notes.push(n.to_string()));
        let paths = removed
            .into_iter()
            .map(|r| {
                assert!(r.freed.is_ok(), "{}: {:?}", r.path.display(), r.freed);
                r.path
            })
            .collect();
        (paths, notes)
    }

    #[test]
    fn a_success_removes_its_checkpoints_and_the_old_layouts_folder_of_its_base_and_spec_only() {
        let root = tempfile::tempdir().unwrap();
        let (folder, old) = folders(root.path(), b"base", b"text");
        write(&folder, CHECKPOINT);
        write(&folder, &["notes.txt"]);
        write(&old, CHECKPOINT);
        // another text's checkpoints of the same base and spec (an interrupted build), and another base's old
        // folder: neither is this build's to remove
        let (other_text, _) = folders(root.path(), b"base", b"other text");
        let (_, other_base) = folders(root.path(), b"other base", b"text");
        write(&other_text, CHECKPOINT);
        write(&other_base, CHECKPOINT);

        let (removed, notes) = remove(&folder);
        let mut expect: Vec<PathBuf> = Vec::new();
        for dir in [&folder, &old] {
            // the record first, then the rest in name order
            expect.extend(CHECKPOINT.iter().map(|name| dir.join(name)));
        }
        assert_eq!(removed, expect);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(names(&folder), ["notes.txt"], "the user's file stays, and its folder with it");
        assert!(!old.exists(), "the old folder goes once empty");
        assert_eq!(names(&other_text), CHECKPOINT);
        assert_eq!(names(&other_base), CHECKPOINT);
    }

    #[test]
    fn an_old_layouts_folder_holding_anything_a_checkpoint_does_not_write_is_left_whole_and_named() {
        let root = tempfile::tempdir().unwrap();
        let (folder, old) = folders(root.path(), b"base", b"text");
        write(&folder, CHECKPOINT);
        write(&old, CHECKPOINT);
        write(&old, &["notes.txt"]);
        // a folder under a checkpoint file's name is not a checkpoint's either
        std::fs::create_dir(old.join("recovery-palettes.safetensors")).unwrap();

        let (removed, notes) = remove(&folder);
        assert_eq!(removed, CHECKPOINT.iter().map(|name| folder.join(name)).collect::<Vec<_>>());
        assert!(!folder.exists());
        let mut left: Vec<&str> = CHECKPOINT.to_vec();
        left.extend(["notes.txt", "recovery-palettes.safetensors"]);
        left.sort();
        assert_eq!(names(&old), left, "nothing of it is removed");
        let line = format!("recovery: left {}, the checkpoints of this base and spec from before", old.display());
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with(&line), "{notes:?}");
        assert!(notes[0].contains("(notes.txt, recovery-palettes.safetensors)"), "{notes:?}");
    }

    #[test]
    fn without_an_old_layouts_folder_only_the_builds_checkpoints_go() {
        let root = tempfile::tempdir().unwrap();
        let (folder, old) = folders(root.path(), b"base", b"text");
        write(&folder, CHECKPOINT);
        // a file under the old folder's name is not a folder a build made
        std::fs::write(&old, "mine").unwrap();
        let (removed, notes) = remove(&folder);
        assert_eq!(removed.len(), CHECKPOINT.len());
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "mine");
    }
}
