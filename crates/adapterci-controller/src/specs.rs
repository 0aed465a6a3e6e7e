//! Parsed pipeline specs cached by spec digest: the loop looks at every pipeline each tick, and parsing the
//! same YAML again each time would cost more than the watch itself. A changed spec has a new digest, so an
//! entry never goes stale; entries of specs no longer stored are dropped when the loop lists the pipelines.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use adapterci_core::Digest;
use adapterci_core::ports::PipelineRecord;
use adapterci_pipeline::{PipelineError, PipelineSpec};

/// The cache.
#[derive(Debug, Default)]
pub(crate) struct SpecCache {
    by_digest: Mutex<HashMap<Digest, Arc<PipelineSpec>>>,
}

impl SpecCache {
    /// The spec of `record`, parsed once per digest.
    pub fn get(&self, record: &PipelineRecord) -> Result<Arc<PipelineSpec>, PipelineError> {
        if let Some(spec) = self.by_digest.lock().ok().and_then(|cache| cache.get(&record.spec_digest).cloned()) {
            return Ok(spec);
        }
        let spec = Arc::new(adapterci_pipeline::parse_pipeline(&record.spec_yaml, None)?);
        if let Ok(mut cache) = self.by_digest.lock() {
            cache.insert(record.spec_digest.clone(), spec.clone());
        }
        Ok(spec)
    }

    /// Drops every entry whose digest is not among `live`.
    pub fn retain(&self, live: &[PipelineRecord]) {
        let live: HashSet<&Digest> = live.iter().map(|record| &record.spec_digest).collect();
        if let Ok(mut cache) = self.by_digest.lock() {
            cache.retain(|digest, _| live.contains(digest));
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_digest.lock().map(|cache| cache.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adapterci_core::PipelineName;
    use chrono::Utc;

    fn record(yaml: &str) -> PipelineRecord {
        PipelineRecord {
            name: PipelineName::new("demo").unwrap_or_else(|_| unreachable!()),
            revision: 1,
            spec_yaml: yaml.to_string(),
            spec_digest: Digest::of(yaml.as_bytes()),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    const YAML: &str =
        "version: v1\nname: demo\nbase:\n  model: tiny\ndataset:\n  location: d.jsonl\npublish:\n  adapter: demo\n";

    #[test]
    fn a_spec_is_parsed_once_per_digest_and_dropped_when_gone() {
        let cache = SpecCache::default();
        let first = cache.get(&record(YAML)).expect("parses");
        let again = cache.get(&record(YAML)).expect("parses");
        assert!(Arc::ptr_eq(&first, &again), "the second lookup must not parse again");
        let changed = YAML.replace("adapter: demo", "adapter: other");
        cache.get(&record(&changed)).expect("parses");
        assert_eq!(cache.len(), 2);
        cache.retain(&[record(&changed)]);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&record("version: v1\nname: [")).is_err());
    }
}
