//! The palettized base a build recovers from, kept between runs ([`BuildOptions::palettized_cache`]): the release
//! file before recovery and the bit allocation it was palettized with, so that a rerun with the same inputs goes
//! straight to the recovery instead of calibrating, measuring sensitivities and palettizing again.
//!
//! Two files per key, `palettized-<key>.safetensors` (the release) and `palettized-<key>.json` (the record: the
//! key's inputs and digest, the release's digest and length, the allocation), each written to a temporary name
//! and renamed, the record last: a record names a release that was complete. What is read back is checked (the
//! record parses and names this key, the release has the recorded digest, reads as a release of this source
//! model and carries the recorded bits); anything else is reported through the progress callback and built again.
//! Once a build has succeeded, the other keys' files can go ([`PalettizedCache::remove_others`]): each is a
//! release the size of a palettized base.

use std::path::{Path, PathBuf};

use adapterci_core::Digest;
use serde::{Deserialize, Serialize};

use super::BuildOptions;
use super::teacher_text::TEACHER_SAMPLER;
use crate::EngineError;
use crate::allocate::{BitAnalysis, Method, Sensitivity, linear_ops};
use crate::calibrate::TeacherTextSpec;
use crate::files::{Removal, remove_recognized};
use crate::model::BaseModel;
use crate::palettize::PalettizedTensor;
use crate::release::BaseRelease;

/// What a cached palettization is and how it was made. Raise it when either changes (another file layout, a
/// palettization or calibration that gives other tables from the same inputs), so that no build takes an older
/// one for its own.
const PALETTIZED_CACHE_VERSION: u32 = 1;

/// Everything that decides the palettized base: the source model, the calibration (teacher text and user
/// corpus), the sensitivities and allocation, the palettization. The recovery's spec is not in it (a rerun that
/// only trains otherwise reuses the palettization), except the rank the corrected sensitivities are measured at.
#[derive(Serialize)]
struct PalettizedKey<'a> {
    cache_version: u32,
    engine_version: &'static str,
    teacher_sampler: &'static str,
    source_model_digest: &'a Digest,
    user_corpus_digest: Option<Digest>,
    teacher: &'a TeacherTextSpec,
    target_bpw: f64,
    method: &'a Method,
    sensitivity_sequences: usize,
    sensitivity: Sensitivity,
    correction_rank: Option<usize>,
    embedding_bits: Option<u8>,
    activation_bits: Option<u8>,
}

/// The record beside a cached release.
#[derive(Serialize, Deserialize)]
struct PalettizedRecord {
    /// The digest of the key's JSON.
    key_digest: Digest,
    /// The key itself, for whoever looks at the folder (the digest is what is compared).
    inputs: serde_json::Value,
    release_digest: Digest,
    release_bytes: u64,
    analysis: BitAnalysis,
}

/// A palettization read back from the cache.
pub(super) struct CachedPalettization {
    pub release: Vec<u8>,
    pub release_digest: Digest,
    pub linear: Vec<PalettizedTensor>,
    pub embedding: Option<PalettizedTensor>,
    pub analysis: BitAnalysis,
}

/// The start of every cache file's name; the key (16 hex digits) follows.
const FILE_PREFIX: &str = "palettized-";

/// The key of `name` when it is a name the cache writes: `palettized-<16 hex digits>` then `.safetensors` or
/// `.json`, each perhaps with the `.tmp` of a write a kill interrupted.
fn key_of_file(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(FILE_PREFIX)?;
    let (key, extension) = rest.split_at_checked(16)?;
    let extension = extension.strip_suffix(".tmp").unwrap_or(extension);
    let hex = key.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && (extension == ".safetensors" || extension == ".json")).then_some(key)
}

/// The cache files of one build's inputs.
pub(super) struct PalettizedCache {
    /// The key in the files' names: the first 16 hex digits of `key_digest`.
    key: String,
    key_digest: Digest,
    inputs: serde_json::Value,
    release_path: PathBuf,
    record_path: PathBuf,
}

impl PalettizedCache {
    /// The files under `dir` for building `base` with `options` (and `user_corpus`).
    pub fn new(
        dir: &Path,
        base: &BaseModel,
        options: &BuildOptions,
        user_corpus: Option<&str>,
    ) -> Result<PalettizedCache, EngineError> {
        let key = PalettizedKey {
            cache_version: PALETTIZED_CACHE_VERSION,
            engine_version: env!("CARGO_PKG_VERSION"),
            teacher_sampler: TEACHER_SAMPLER,
            source_model_digest: base.digest(),
            user_corpus_digest: user_corpus.map(|text| Digest::of(text.as_bytes())),
            teacher: &options.teacher,
            target_bpw: options.target_bpw,
            method: &options.method,
            sensitivity_sequences: options.sensitivity_sequences,
            sensitivity: options.sensitivity,
            correction_rank: (options.sensitivity == Sensitivity::Corrected).then_some(options.recovery.rank),
            embedding_bits: options.embedding_bits,
            activation_bits: options.activation_bits,
        };
        let inputs = serde_json::to_value(&key).map_err(|e| EngineError::InvalidConfig(format!("cache key: {e}")))?;
        let key_digest = Digest::of(inputs.to_string().as_bytes());
        let key = key_digest.hex()[..16].to_string();
        let stem = format!("{FILE_PREFIX}{key}");
        Ok(PalettizedCache {
            release_path: dir.join(format!("{stem}.safetensors")),
            record_path: dir.join(format!("{stem}.json")),
            key,
            key_digest,
            inputs,
        })
    }

    /// The release file's path (for progress output).
    pub fn path(&self) -> &Path {
        &self.release_path
    }

    /// The cached palettization, when there is one for these inputs and it reads back whole; a cache that does
    /// not is reported through `progress` (and left for [`PalettizedCache::store`] to replace).
    pub fn load(&self, base: &BaseModel, progress: &mut dyn FnMut(&str)) -> Option<CachedPalettization> {
        if !self.record_path.exists() {
            return None;
        }
        match self.read(base) {
            Ok(cached) => Some(cached),
            Err(why) => {
                progress(&format!(
                    "palettized base: ignoring the cached {} ({why}); palettizing again",
                    self.release_path.display()
                ));
                None
            }
        }
    }

    fn read(&self, base: &BaseModel) -> Result<CachedPalettization, String> {
        let json = std::fs::read(&self.record_path).map_err(|e| format!("reading its record: {e}"))?;
        let record: PalettizedRecord =
            serde_json::from_slice(&json).map_err(|e| format!("its record is unreadable: {e}"))?;
        if record.key_digest != self.key_digest {
            return Err(format!("its record is of other inputs (key {})", record.key_digest));
        }
        let release = std::fs::read(&self.release_path).map_err(|e| format!("reading it: {e}"))?;
        let release_digest = Digest::of(&release);
        if release.len() as u64 != record.release_bytes || release_digest != record.release_digest {
            return Err(format!(
                "{} bytes with digest {release_digest}, the record says {} bytes with digest {}: truncated or corrupt",
                release.len(),
                record.release_bytes,
                record.release_digest
            ));
        }
        let parsed = BaseRelease::read(&release, &self.release_path).map_err(|e| e.to_string())?;
        if &parsed.manifest.source_model_digest != base.digest() {
            return Err(format!("a release of model {}", parsed.manifest.source_model_digest));
        }
        let linear = parsed.linear_parts(&self.release_path).map_err(|e| e.to_string())?;
        let ops = linear_ops(base.config());
        let bits_match = record.analysis.rows.len() == ops.len()
            && record.analysis.rows.iter().zip(&linear).all(|(row, part)| row.bits == part.spec.bits);
        if !bits_match {
            return Err("its allocation does not match the release's bits".into());
        }
        let embedding = parsed.embedding_part().cloned();
        Ok(CachedPalettization { release, release_digest, linear, embedding, analysis: record.analysis })
    }

    /// Removes the files of every other key from the cache's folder (the palettized bases that builds with other
    /// inputs kept, and the temporaries a kill left of them), records first; files of this key, and any file
    /// the cache does not name so, are left.
    pub fn remove_others(&self) -> Vec<Removal> {
        let dir = self.release_path.parent().unwrap_or(Path::new("."));
        remove_recognized(dir, |name| key_of_file(name).is_some_and(|key| key != self.key))
    }

    /// Keeps `release` (the file before recovery) and the allocation it was palettized with.
    pub fn store(&self, release: &[u8], release_digest: &Digest, analysis: &BitAnalysis) -> Result<(), EngineError> {
        let dir = self.release_path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|source| EngineError::Io { path: dir.to_path_buf(), source })?;
        // the record goes first and comes back last: a record on disk always names a complete release
        match std::fs::remove_file(&self.record_path) {
            Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                return Err(EngineError::Io { path: self.record_path.clone(), source });
            }
            _ => {}
        }
        crate::files::write_atomic(&self.release_path, release)?;
        let record = PalettizedRecord {
            key_digest: self.key_digest.clone(),
            inputs: self.inputs.clone(),
            release_digest: release_digest.clone(),
            release_bytes: release.len() as u64,
            analysis: analysis.clone(),
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| EngineError::InvalidConfig(e.to_string()))?;
        crate::files::write_atomic(&self.record_path, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::key_of_file;

    fn check(name: &str, expect: Option<&str>) {
        assert_eq!(key_of_file(name), expect, "{name}");
    }

    #[test]
    fn only_the_names_the_cache_writes_have_a_key() {
        for name in [
            "palettized-0123456789abcdef.safetensors",
            "palettized-0123456789abcdef.json",
            "palettized-0123456789abcdef.safetensors.tmp",
            "palettized-0123456789abcdef.json.tmp",
        ] {
            check(name, Some("0123456789abcdef"));
        }
        for name in [
            "palettized-0123456789ABCDEF.json",
            "palettized-0123456789abcde.json",
            "palettized-0123456789abcdef0.json",
            "palettized-0123456789abcdef.json.bak",
            "palettized-0123456789abcdef.txt",
            "palettized-0123456789abcdef",
            "my-palettized-0123456789abcdef.json",
            "notes.txt",
            "palettized-é123456789abcdef.json",
        ] {
            check(name, None);
        }
    }
}
