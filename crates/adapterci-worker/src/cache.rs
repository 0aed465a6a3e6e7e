//! The adapter cache of the engine thread: loaded adapters keyed by manifest digest, evicted least recently
//! used first when their total size passes the budget. Keys are content digests, so a new version can never be
//! answered from an old version's entry.

use std::collections::HashMap;

use adapterci_core::Digest;

/// Something with a size in bytes.
pub(crate) trait Sized_ {
    fn size_bytes(&self) -> usize;
}

/// An LRU map bounded by total bytes.
pub(crate) struct AdapterCache<T> {
    budget_bytes: usize,
    used_bytes: usize,
    clock: u64,
    entries: HashMap<Digest, (T, u64)>,
}

impl<T: Sized_> AdapterCache<T> {
    pub fn new(budget_bytes: usize) -> Self {
        AdapterCache { budget_bytes, used_bytes: 0, clock: 0, entries: HashMap::new() }
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.entries.contains_key(digest)
    }

    /// The entry, marked as used now.
    pub fn get(&mut self, digest: &Digest) -> Option<&T> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(digest).map(|(value, used)| {
            *used = clock;
            &*value
        })
    }

    /// Inserts `value` and evicts least recently used entries (never the new one) until within budget.
    /// Returns the digests evicted.
    pub fn insert(&mut self, digest: Digest, value: T) -> Vec<Digest> {
        self.clock += 1;
        self.used_bytes += value.size_bytes();
        if let Some((old, _)) = self.entries.insert(digest.clone(), (value, self.clock)) {
            self.used_bytes -= old.size_bytes();
        }
        let mut evicted = Vec::new();
        while self.used_bytes > self.budget_bytes {
            let Some(oldest) = self
                .entries
                .iter()
                .filter(|(key, _)| **key != digest)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some((old, _)) = self.entries.remove(&oldest) {
                self.used_bytes -= old.size_bytes();
            }
            evicted.push(oldest);
        }
        evicted
    }

    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Blob(usize);
    impl Sized_ for Blob {
        fn size_bytes(&self) -> usize {
            self.0
        }
    }

    fn key(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn least_recently_used_is_evicted_first() {
        let mut cache = AdapterCache::new(100);
        cache.insert(key(1), Blob(40));
        cache.insert(key(2), Blob(40));
        assert!(cache.get(&key(1)).is_some()); // 1 is now newer than 2
        let evicted = cache.insert(key(3), Blob(40));
        assert_eq!(evicted, vec![key(2)]);
        assert!(cache.contains(&key(1)) && cache.contains(&key(3)));
        assert_eq!(cache.used_bytes(), 80);
    }

    #[test]
    fn an_entry_larger_than_the_budget_is_still_kept_alone() {
        let mut cache = AdapterCache::new(10);
        cache.insert(key(1), Blob(5));
        let evicted = cache.insert(key(2), Blob(50));
        assert_eq!(evicted, vec![key(1)]);
        assert_eq!(cache.len(), 1);
        assert!(cache.contains(&key(2)));
    }

    #[test]
    fn reinserting_a_key_does_not_double_count() {
        let mut cache = AdapterCache::new(100);
        cache.insert(key(1), Blob(30));
        cache.insert(key(1), Blob(30));
        assert_eq!(cache.used_bytes(), 30);
    }
}
