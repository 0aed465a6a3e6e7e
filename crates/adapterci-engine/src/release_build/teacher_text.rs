//! Teacher text kept between runs: a build writes the source model's text once per model and teacher spec, and a
//! rerun (or the next command of `adapterci-base`) reads it back instead of writing it again.

use std::path::Path;

use adapterci_core::Digest;
use serde::{Deserialize, Serialize};

use crate::EngineError;
use crate::calibrate::{TeacherTextSpec, prompt_ids, teacher_text};
use crate::model::BaseModel;

/// Names how [`teacher_text`] draws its tokens, in the cache's file names: text drawn another way (torch's global
/// generator, before 2026-11-28) is not the text a spec names now, so it is not read back.
pub(super) const TEACHER_SAMPLER: &str = "icdf1";

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
