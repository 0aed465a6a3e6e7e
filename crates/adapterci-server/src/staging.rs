//! The staging area of the Kubernetes executor: an object store prefix that adapterd and the training pods both
//! reach. Below it, `jobs/<run id>/` holds one run's job files (the layout of `job_files.rs`) and `bases/<sha256
//! hex>` the base models, content-addressed: uploaded once, verified by the pod after its download and cached on
//! the pod's disk.
//!
//! The store is opened by the registry crate's `open_object_store` (a local directory, `file://`, `s3://`), the
//! same code that opens the registry, and reached through the `object_store` it re-exports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use adapterci_core::Digest;
use adapterci_core::digest::DigestWriter;
use adapterci_registry::object_store::path::Path as StorePath;
use adapterci_registry::object_store::{self, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use adapterci_core::training::{TrainJob, TrainOutput, TrainingFailure};

use crate::job_files::{JOB_FILE, JobFolder, encode_job, read_failure, read_output, write_job_files};

/// Where a staged job's files are, below the staging prefix.
pub(crate) fn job_prefix(run_id: &str) -> String {
    format!("jobs/{run_id}")
}

/// Where a base model's bytes are, below the staging prefix.
pub(crate) fn base_key(digest: &Digest) -> String {
    format!("bases/{}", digest.hex())
}

/// Bytes read from a file per part of a multipart upload.
const UPLOAD_CHUNK: usize = 8 << 20;

/// A local file's digest with the length and modification time it was computed at.
type HashedFile = (u64, Option<SystemTime>, Digest);

/// The staging area: a store and, for messages, the URL it was opened from.
#[derive(Clone, Debug)]
pub struct Staging {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// Digests of local base files already hashed, by path, with the length and modification time they had.
    hashed: Arc<Mutex<HashMap<PathBuf, HashedFile>>>,
}

impl Staging {
    /// Opens the staging store at `url` (a local directory, `file:///…`, `s3://bucket/prefix`).
    pub fn open(url: &str) -> Result<Staging, String> {
        let store = adapterci_registry::open_object_store(url).map_err(|e| e.to_string())?;
        Ok(Staging::new(store, url))
    }

    pub fn new(store: Arc<dyn ObjectStore>, url: &str) -> Staging {
        Staging { store, url: url.trim_end_matches('/').to_string(), hashed: Arc::default() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The job folder of `run_id`.
    pub(crate) fn job_folder(&self, run_id: &str) -> Result<StagedJobDir, String> {
        crate::job_files::log_path(Path::new(""), run_id)?;
        let prefix = adapterci_registry::parse_key(&job_prefix(run_id))
            .map_err(|reason| format!("run id {run_id:?} cannot name a staging folder: {reason}"))?;
        Ok(StagedJobDir { store: self.store.clone(), prefix, url: format!("{}/{}", self.url, job_prefix(run_id)) })
    }

    /// Stages `job` under `jobs/<run id>/` (replacing what an earlier attempt left) with its base model under
    /// `bases/`, in the process executor's file layout.
    pub async fn stage_job(&self, run_id: &str, job: &TrainJob) -> Result<(), TrainingFailure> {
        let prepared = self.prepare_job(job).await?;
        self.stage_prepared(run_id, &prepared).await
    }

    /// Makes sure the base model of `job` is under `bases/` and encodes the job's files, without touching any run's
    /// folder: what [`Staging::stage_prepared`] writes, and what a launch compares with what an earlier attempt
    /// staged before it decides to re-attach to that attempt's Job.
    pub async fn prepare_job(&self, job: &TrainJob) -> Result<PreparedJob, TrainingFailure> {
        let blob =
            self.ensure_base(&job.base_model_path, &job.base_model_digest).await.map_err(TrainingFailure::Backend)?;
        Ok(PreparedJob { files: encode_job(job, Some(blob))? })
    }

    /// Writes `prepared` under `jobs/<run id>/`, replacing what an earlier attempt left there.
    pub async fn stage_prepared(&self, run_id: &str, prepared: &PreparedJob) -> Result<(), TrainingFailure> {
        let folder = self.job_folder(run_id).map_err(TrainingFailure::Backend)?;
        write_job_files(&folder, &prepared.files).await
    }

    /// Whether the inputs staged under `jobs/<run id>/` are those of `prepared` (each file there, with the same
    /// [`PreparedJob::trained_inputs`]); the files an earlier attempt's trainer wrote beside them are not looked at.
    pub async fn staged_inputs_match(&self, run_id: &str, prepared: &PreparedJob) -> Result<bool, String> {
        let folder = self.job_folder(run_id)?;
        let mut staged = Vec::with_capacity(prepared.files.len());
        for (name, _) in &prepared.files {
            match folder.read(name).await? {
                Some(bytes) => staged.push((*name, bytes)),
                None => return Ok(false),
            }
        }
        Ok(trained_inputs(&staged) == prepared.trained_inputs())
    }
    /// The adapter and results a staged trainer left for `run_id`.
    pub async fn read_output(&self, run_id: &str) -> Result<TrainOutput, TrainingFailure> {
        read_output(&self.job_folder(run_id).map_err(TrainingFailure::Backend)?).await
    }

    /// What a staged trainer said about its failure, if it wrote anything readable.
    pub async fn read_failure(&self, run_id: &str) -> Option<TrainingFailure> {
        read_failure(&self.job_folder(run_id).ok()?).await
    }

    /// Removes the staged files of `run_id` (not the base models, which other runs share).
    pub async fn remove_job(&self, run_id: &str) -> Result<(), String> {
        self.job_folder(run_id)?.remove_all().await
    }

    /// Makes sure the base model at `path` is under `bases/`; its key's digest. `claimed` (the job's base model
    /// digest) is tried first, so a base already staged is neither read nor hashed again; otherwise the file is
    /// hashed (once per content, remembered by path, length and modification time) and uploaded when missing.
    pub async fn ensure_base(&self, path: &Path, claimed: &Digest) -> Result<Digest, String> {
        if self.exists(claimed).await? {
            return Ok(claimed.clone());
        }
        let digest = self.file_digest(path).await?;
        if digest == *claimed || !self.exists(&digest).await? {
            self.upload_base(path, &digest).await?;
        }
        Ok(digest)
    }

    async fn exists(&self, digest: &Digest) -> Result<bool, String> {
        let key = StorePath::from(base_key(digest));
        match self.store.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(format!("looking for {}/{key}: {error}", self.url)),
        }
    }

    async fn file_digest(&self, path: &Path) -> Result<Digest, String> {
        let metadata = tokio::fs::metadata(path).await.map_err(|e| format!("reading {}: {e}", path.display()))?;
        let stamp = (metadata.len(), metadata.modified().ok());
        if let Ok(hashed) = self.hashed.lock()
            && let Some((len, modified, digest)) = hashed.get(path)
            && (*len, *modified) == stamp
        {
            return Ok(digest.clone());
        }
        let mut file = tokio::fs::File::open(path).await.map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut writer = DigestWriter::new();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = file.read(&mut buffer).await.map_err(|e| format!("reading {}: {e}", path.display()))?;
            if read == 0 {
                break;
            }
            writer.update(&buffer[..read]);
        }
        let digest = writer.finish();
        if let Ok(mut hashed) = self.hashed.lock() {
            hashed.insert(path.to_path_buf(), (stamp.0, stamp.1, digest.clone()));
        }
        Ok(digest)
    }

    /// Uploads the file at `path` as `bases/<digest>` in parts (a base model may be many GiB); the object appears
    /// only once complete.
    async fn upload_base(&self, path: &Path, digest: &Digest) -> Result<(), String> {
        let key = StorePath::from(base_key(digest));
        let failed =
            |error: &dyn std::fmt::Display| format!("uploading {} to {}/{key}: {error}", path.display(), self.url);
        let mut file = tokio::fs::File::open(path).await.map_err(|e| failed(&e))?;
        let upload = self.store.put_multipart(&key).await.map_err(|e| failed(&e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_CHUNK);
        let mut check = DigestWriter::new();
        let mut buffer = vec![0u8; UPLOAD_CHUNK];
        loop {
            let read = match file.read(&mut buffer).await {
                Ok(read) => read,
                Err(error) => {
                    let _ = writer.abort().await;
                    return Err(failed(&error));
                }
            };
            if read == 0 {
                break;
            }
            check.update(&buffer[..read]);
            if let Err(error) = writer.wait_for_capacity(4).await {
                return Err(failed(&error));
            }
            writer.write(&buffer[..read]);
        }
        // the file changed since it was hashed: what went up is not what the key says
        if check.finish() != *digest {
            let _ = writer.abort().await;
            return Err(failed(&"the file changed while it was uploaded"));
        }
        writer.finish().await.map_err(|e| failed(&e))?;
        tracing::info!(path = %path.display(), key = %key, "base model staged");
        Ok(())
    }

    /// The base model `bases/<digest>` as a file in `cache_dir`: downloaded when not cached yet, its digest verified
    /// before it is kept (a partial or corrupt download never takes the cached name).
    pub async fn fetch_base(&self, digest: &Digest, cache_dir: &Path) -> Result<PathBuf, String> {
        let cached = cache_dir.join(digest.hex());
        if tokio::fs::try_exists(&cached).await.unwrap_or(false) {
            return Ok(cached);
        }
        tokio::fs::create_dir_all(cache_dir).await.map_err(|e| format!("creating {}: {e}", cache_dir.display()))?;
        let key = StorePath::from(base_key(digest));
        let partial = cache_dir.join(format!(".{}.{}.partial", digest.hex(), std::process::id()));
        let failed = |error: &dyn std::fmt::Display| format!("downloading {}/{key}: {error}", self.url);
        let mut stream = self.store.get(&key).await.map_err(|e| failed(&e))?.into_stream();
        let mut file = tokio::fs::File::create(&partial).await.map_err(|e| failed(&e))?;
        let mut writer = DigestWriter::new();
        let copied: Result<(), String> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| failed(&e))?;
                writer.update(&chunk);
                file.write_all(&chunk).await.map_err(|e| failed(&e))?;
            }
            file.flush().await.map_err(|e| failed(&e))?;
            file.sync_all().await.map_err(|e| failed(&e))
        }
        .await;
        drop(file);
        let verified = copied.and_then(|()| {
            let got = writer.finish();
            if got == *digest { Ok(()) } else { Err(failed(&format!("its content has digest {got}, not {digest}"))) }
        });
        if let Err(error) = verified {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(error);
        }
        tokio::fs::rename(&partial, &cached).await.map_err(|e| failed(&e))?;
        Ok(cached)
    }
}

/// A job encoded as the files it is staged as ([`Staging::prepare_job`]), its base model staged already.
#[derive(Clone, Debug)]
pub struct PreparedJob {
    files: Vec<(&'static str, Vec<u8>)>,
}

impl PreparedJob {
    /// What the staged files say the trainer trains on, file by file: their bytes, except that the job file leaves
    /// out `base_model_path`, where the base model lies on the staging adapterd's own disk (a staged trainer fetches
    /// the base by its content digest, `base_model_blob`, which stays in).
    pub fn trained_inputs(&self) -> Vec<(&'static str, Vec<u8>)> {
        trained_inputs(&self.files)
    }
}

/// [`PreparedJob::trained_inputs`] of `files`; a job file that does not parse stays as it is (and so differs).
fn trained_inputs(files: &[(&'static str, Vec<u8>)]) -> Vec<(&'static str, Vec<u8>)> {
    let normalized = |name: &str, bytes: &[u8]| -> Option<Vec<u8>> {
        if name != JOB_FILE {
            return None;
        }
        let mut spec: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        spec.as_object_mut()?.remove("base_model_path");
        serde_json::to_vec(&spec).ok()
    };
    files.iter().map(|(name, bytes)| (*name, normalized(name, bytes).unwrap_or_else(|| bytes.clone()))).collect()
}

/// A job folder below the staging prefix, `jobs/<run id>/`.
#[derive(Clone, Debug)]
pub(crate) struct StagedJobDir {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    url: String,
}

impl StagedJobDir {
    fn key(&self, name: &str) -> StorePath {
        self.prefix.clone().join(name)
    }
}

#[async_trait]
impl JobFolder for StagedJobDir {
    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let read = match self.store.get(&self.key(name)).await {
            Ok(result) => result.bytes().await,
            Err(error) => Err(error),
        };
        match read {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(format!("reading {}/{name}: {error}", self.url)),
        }
    }

    async fn write(&self, name: &str, bytes: Vec<u8>) -> Result<(), String> {
        self.store
            .put(&self.key(name), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| format!("writing {}/{name}: {e}", self.url))
    }

    async fn remove_all(&self) -> Result<(), String> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| format!("listing {}: {e}", self.url))?;
        for location in listed {
            match self.store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(format!("removing {location} from {}: {error}", self.url)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job_files::{JobFolder, LocalJobDir};

    fn staging(dir: &Path) -> Staging {
        Staging::open(&dir.join("staging").display().to_string()).unwrap()
    }

    #[tokio::test]
    async fn a_base_is_uploaded_once_and_fetched_verified() {
        let temp = tempfile::tempdir().unwrap();
        let model = temp.path().join("model.gguf");
        std::fs::write(&model, b"not really a model").unwrap();
        let digest = Digest::of(b"not really a model");
        let staging = staging(temp.path());
        // a claimed digest that is not the file's (a release's identity): the content's digest is the key
        let other = Digest::of(b"other");
        assert_eq!(staging.ensure_base(&model, &other).await.unwrap(), digest);
        assert!(temp.path().join("staging/bases").join(digest.hex()).is_file());
        assert_eq!(staging.ensure_base(&model, &digest).await.unwrap(), digest, "found by HEAD");
        let cache = temp.path().join("cache");
        let fetched = staging.fetch_base(&digest, &cache).await.unwrap();
        assert_eq!(std::fs::read(&fetched).unwrap(), b"not really a model");
    }

    #[tokio::test]
    async fn a_corrupt_base_is_refused_and_not_cached() {
        let temp = tempfile::tempdir().unwrap();
        let staging = staging(temp.path());
        let digest = Digest::of(b"the real bytes");
        std::fs::create_dir_all(temp.path().join("staging/bases")).unwrap();
        std::fs::write(temp.path().join("staging/bases").join(digest.hex()), b"tampered").unwrap();
        let cache = temp.path().join("cache");
        let error = staging.fetch_base(&digest, &cache).await.unwrap_err();
        assert!(error.contains(&format!("not {digest}")), "{error}");
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0, "nothing kept");
        let missing = staging.fetch_base(&Digest::of(b"absent"), &cache).await.unwrap_err();
        assert!(missing.contains("bases/"), "{missing}");
    }

    #[tokio::test]
    async fn staged_and_local_folders_hold_the_same_files() {
        let temp = tempfile::tempdir().unwrap();
        let staged = staging(temp.path()).job_folder("run-1").unwrap();
        let local = LocalJobDir(temp.path().join("local/run-1"));
        for folder in [&staged as &dyn JobFolder, &local] {
            assert_eq!(folder.read("job.json").await.unwrap(), None);
            folder.write("job.json", b"{}".to_vec()).await.unwrap();
            folder.write("dataset.jsonl", b"x".to_vec()).await.unwrap();
            assert_eq!(folder.read("job.json").await.unwrap().as_deref(), Some(&b"{}"[..]));
            folder.remove_all().await.unwrap();
            assert_eq!(folder.read("dataset.jsonl").await.unwrap(), None, "{}", folder.describe());
            folder.remove_all().await.unwrap();
        }
        assert!(staged.describe().ends_with("staging/jobs/run-1"), "{}", staged.describe());
        assert!(staging(temp.path()).job_folder("../x").is_err());
    }
}
