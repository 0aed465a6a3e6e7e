//! The catalog of base models a pipeline may name: resolves `base.model` / `base.path` to a file and its digest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use adapterci_core::Digest;
use adapterci_pipeline::BaseModelRef;

/// A base model file with its identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedBase {
    pub name: String,
    pub path: PathBuf,
    pub digest: Digest,
    /// The accuracy-recovery adapter of this base when it is a base release: task adapters start from it
    /// (the run's "initial adapter" stage) instead of LoRA's standard initialisation.
    pub recovery_adapter: Option<PathBuf>,
}

/// Resolves a pipeline's base model reference.
pub trait BaseModels: Send + Sync {
    fn resolve(&self, base: &BaseModelRef) -> Result<ResolvedBase, String>;

    /// The base release `release` built from `base` (its weights, digest and recovery adapter), when this
    /// catalog knows where it lies; `None` leaves a rebase run training on `base` itself, bound to the release
    /// only in its lineage.
    fn release(&self, _base: &ResolvedBase, _release: &Digest) -> Option<ResolvedBase> {
        None
    }
}

/// A fixed catalog of named models whose digests were computed once (at start-up). Paths not in the catalog
/// are refused: hashing an arbitrary file on every run would be slow and would let a pipeline read any file.
#[derive(Clone, Debug, Default)]
pub struct StaticBaseModels {
    by_name: BTreeMap<String, ResolvedBase>,
}

impl StaticBaseModels {
    pub fn new(models: impl IntoIterator<Item = ResolvedBase>) -> Self {
        StaticBaseModels { by_name: models.into_iter().map(|model| (model.name.clone(), model)).collect() }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

impl BaseModels for StaticBaseModels {
    fn resolve(&self, base: &BaseModelRef) -> Result<ResolvedBase, String> {
        let known = || self.by_name.keys().cloned().collect::<Vec<_>>().join(", ");
        match base {
            BaseModelRef::Named(name) => self
                .by_name
                .get(name)
                .cloned()
                .ok_or_else(|| format!("base model {name:?} is not in the catalog (known: {})", known())),
            BaseModelRef::Path(path) => {
                self.by_name.values().find(|model| &model.path == path).cloned().ok_or_else(|| {
                    format!("base model path {} is not in the catalog (known: {})", path.display(), known())
                })
            }
        }
    }
}
