//! The base-model watcher: a model catalog that follows its files, and the controller pass that turns a changed
//! base model into the rebase DAG (one base release, then every dependent pipeline retrained on it).
//!
//! A file's size and modification time say cheaply whether it may have changed; only then is it read and
//! hashed, and only a new content digest counts as a change (a touch starts nothing). The catalog takes the new
//! digest at once, so runs queued from then on train on the new file; the change stays pending until a rebase
//! for it ended (released, or refused by the release's own gate), so a build that broke is tried again at the
//! next pass rather than forgotten.
//!
//! The digest each model was last rebased for is kept in `<releases dir>/rebased.json`, so a model replaced while
//! adapterd was stopped is rebased at its next start.
//!
//! Releases are found where the engine's release builder writes them: `<releases dir>/<release digest hex>/`
//! holding `base.safetensors` and `recovery.safetensors`. A retrain queued by a rebase trains on that release
//! and starts from its recovery adapter.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use adapterci_core::Digest;
use adapterci_core::base_release::BaseReleaseBuilder;
use adapterci_pipeline::BaseModelRef;

use crate::{BaseModels, Controller, ControllerError, RebaseOutcome, ResolvedBase};

pub use adapterci_core::base_release::{RELEASE_RECOVERY_FILE, RELEASE_WEIGHTS_FILE};

/// File times are only as fine as the kernel's clock tick: a file modified this recently may change again
/// with the same size and time, so its stamp is not trusted and the next pass hashes it again ("racy" files,
/// as git calls them).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// The file below the releases directory that keeps the digest each model was last rebased for.
pub const REBASED_FILE: &str = "rebased.json";

/// The recorded digests; an unreadable file counts as none (every model then counts as rebased).
fn read_rebased(path: &Path) -> BTreeMap<String, Digest> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::warn!(path = %path.display(), %error, "unreadable record of rebased base models: ignored");
            BTreeMap::new()
        }),
        Err(_) => BTreeMap::new(),
    }
}

/// What the file looked like when it was last hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    /// The inode on Unix (a file renamed over the old one has a new one).
    inode: u64,
}

async fn stamp(path: &Path) -> Option<FileStamp> {
    let metadata = tokio::fs::metadata(path).await.ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileStamp { len: metadata.len(), modified: metadata.modified().ok(), inode })
}

/// `stamp`, or `None` (hash again next time) when it is too recent to be trusted.
fn trusted(stamp: Option<FileStamp>) -> Option<FileStamp> {
    let modified = stamp.as_ref()?.modified?;
    let age = SystemTime::now().duration_since(modified).unwrap_or(Duration::ZERO);
    (age >= RACY_WINDOW).then_some(stamp).flatten()
}

#[derive(Clone, Debug)]
struct Entry {
    base: ResolvedBase,
    stamp: Option<FileStamp>,
    /// The digest the last finished rebase was for (at start: the digest found then).
    rebased: Digest,
}

/// A catalog of named base models whose files are watched, with the releases built from them.
#[derive(Debug)]
pub struct WatchedBaseModels {
    entries: RwLock<BTreeMap<String, Entry>>,
    releases_dir: Option<PathBuf>,
}

impl WatchedBaseModels {
    /// `models` with the digests computed at start-up; releases are looked up below `releases_dir`, where the
    /// digest each model was last rebased for is kept (`rebased.json`), so that a model replaced while no
    /// controller ran is rebased at the next start. A model seen for the first time counts as rebased.
    pub async fn new(models: impl IntoIterator<Item = ResolvedBase>, releases_dir: Option<PathBuf>) -> Self {
        let recorded = match &releases_dir {
            Some(dir) => read_rebased(&dir.join(REBASED_FILE)),
            None => BTreeMap::new(),
        };
        let mut entries = BTreeMap::new();
        for base in models {
            let stamp = trusted(stamp(&base.path).await);
            let rebased = recorded.get(&base.name).cloned().unwrap_or_else(|| base.digest.clone());
            if rebased != base.digest {
                tracing::info!(model = %base.name, from = %rebased, to = %base.digest, "base model changed while stopped");
            }
            entries.insert(base.name.clone(), Entry { base, stamp, rebased });
        }
        let catalog = WatchedBaseModels { entries: RwLock::new(entries), releases_dir };
        catalog.save_rebased();
        catalog
    }

    /// Writes the rebased digests (a new file renamed over the old); failures are logged, not fatal.
    fn save_rebased(&self) {
        let Some(dir) = &self.releases_dir else { return };
        let rebased: BTreeMap<String, Digest> =
            self.snapshot().into_iter().map(|entry| (entry.base.name, entry.rebased)).collect();
        let path = dir.join(REBASED_FILE);
        let staging = dir.join(format!("{REBASED_FILE}.tmp"));
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&staging, serde_json::to_vec_pretty(&rebased).unwrap_or_default()))
            .and_then(|()| std::fs::rename(&staging, &path));
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot record the rebased base models");
        }
    }

    fn snapshot(&self) -> Vec<Entry> {
        self.entries.read().map(|entries| entries.values().cloned().collect()).unwrap_or_default()
    }

    /// Re-hashes every model whose file looks changed and takes its new digest; returns the models whose
    /// current digest has not been rebased yet, with that digest.
    pub async fn refresh(&self) -> Vec<(String, Digest)> {
        for entry in self.snapshot() {
            let Some(now) = stamp(&entry.base.path).await else { continue };
            if Some(&now) == entry.stamp.as_ref() {
                continue;
            }
            let bytes = match tokio::fs::read(&entry.base.path).await {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::warn!(model = %entry.base.name, path = %entry.base.path.display(), %error, "cannot read base model");
                    continue;
                }
            };
            // the file may have changed again while it was read: the stamp taken before reading makes the next
            // pass hash it once more
            let digest = tokio::task::spawn_blocking(move || Digest::of(&bytes))
                .await
                .unwrap_or_else(|_| entry.base.digest.clone());
            if let Ok(mut entries) = self.entries.write()
                && let Some(current) = entries.get_mut(&entry.base.name)
            {
                if current.base.digest != digest {
                    tracing::info!(model = %current.base.name, from = %current.base.digest, to = %digest, "base model changed");
                }
                current.base.digest = digest;
                current.stamp = trusted(Some(now));
            }
        }
        self.snapshot()
            .into_iter()
            .filter(|entry| entry.base.digest != entry.rebased)
            .map(|entry| (entry.base.name, entry.base.digest))
            .collect()
    }

    /// Records that the rebase of `name` at `digest` ended.
    fn rebased(&self, name: &str, digest: &Digest) {
        if let Ok(mut entries) = self.entries.write()
            && let Some(entry) = entries.get_mut(name)
        {
            entry.rebased = digest.clone();
        }
        self.save_rebased();
    }
}

impl BaseModels for WatchedBaseModels {
    fn resolve(&self, base: &BaseModelRef) -> Result<ResolvedBase, String> {
        let entries = self.entries.read().map_err(|_| "the model catalog is unavailable".to_string())?;
        let known = || entries.keys().cloned().collect::<Vec<_>>().join(", ");
        match base {
            BaseModelRef::Named(name) => entries
                .get(name)
                .map(|entry| entry.base.clone())
                .ok_or_else(|| format!("base model {name:?} is not in the catalog (known: {})", known())),
            BaseModelRef::Path(path) => {
                entries.values().find(|entry| &entry.base.path == path).map(|entry| entry.base.clone()).ok_or_else(
                    || format!("base model path {} is not in the catalog (known: {})", path.display(), known()),
                )
            }
        }
    }

    fn release(&self, base: &ResolvedBase, release: &Digest) -> Option<ResolvedBase> {
        let dir = self.releases_dir.as_ref()?.join(release.hex());
        let weights = dir.join(RELEASE_WEIGHTS_FILE);
        let recovery = dir.join(RELEASE_RECOVERY_FILE);
        weights.is_file().then(|| ResolvedBase {
            name: base.name.clone(),
            path: weights,
            digest: release.clone(),
            recovery_adapter: recovery.is_file().then_some(recovery),
        })
    }
}

impl Controller {
    /// One pass of the base-model watcher: for every catalog model whose content changed and is not rebased
    /// yet, runs the rebase DAG with `builder`. A build that fails is logged and tried again at the next pass.
    pub async fn poll_base_models(
        &self,
        catalog: &WatchedBaseModels,
        builder: &dyn BaseReleaseBuilder,
    ) -> Vec<(String, Result<RebaseOutcome, ControllerError>)> {
        let mut outcomes = Vec::new();
        for (name, digest) in catalog.refresh().await {
            let outcome = self.rebase(&name, digest.clone(), builder).await;
            match &outcome {
                Ok(_) => catalog.rebased(&name, &digest),
                Err(error) => tracing::warn!(model = %name, %error, "rebase failed: tried again at the next pass"),
            }
            outcomes.push((name, outcome));
        }
        outcomes
    }
}
