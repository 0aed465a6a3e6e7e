//! The key/value cache of one generation: allocated once at its full length, written in place.
//!
//! Each layer holds `k` and `v` of shape `[batch, kv_heads, capacity, head_dim]`. A forward pass at positions
//! `[start, start + t)` copies its keys and values into that slice (`narrow` + `copy_`) and attends over the
//! view `[0, start + t)`, so decoding never reallocates or concatenates.

use tch::{Device, Kind, Tensor};

use crate::config::LlamaConfig;

/// Per-layer keys and values for `batch` sequences of up to `capacity` positions.
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    batch: usize,
    len: usize,
    capacity: usize,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("layers", &self.keys.len())
            .field("batch", &self.batch)
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl KvCache {
    /// Allocates `layers x (k, v)` zero tensors of `[batch, kv_heads, max_len, head_dim]` f32 on `device`.
    pub fn new(config: &LlamaConfig, batch: usize, max_len: usize, device: Device) -> KvCache {
        let shape = [batch as i64, config.num_kv_heads as i64, max_len as i64, config.head_dim as i64];
        let zeros = || Tensor::zeros(shape, (Kind::Float, device));
        KvCache {
            keys: (0..config.num_layers).map(|_| zeros()).collect(),
            values: (0..config.num_layers).map(|_| zeros()).collect(),
            batch,
            len: 0,
            capacity: max_len,
        }
    }

    /// Positions filled so far (the next forward pass normally starts here).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn num_layers(&self) -> usize {
        self.keys.len()
    }

    /// Forgets every position; the storage is kept for the next sequence.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Storage addresses of layer `layer`'s key and value tensors (tests check they never move).
    pub fn storage_ptrs(&self, layer: usize) -> (usize, usize) {
        (self.keys[layer].data_ptr() as usize, self.values[layer].data_ptr() as usize)
    }

    /// Writes `k`, `v` (`[batch, kv_heads, t, head_dim]`) at `[start, start + t)` of `layer` and returns views
    /// of the keys and values at `[0, start + t)`.
    pub(crate) fn write(&mut self, layer: usize, start: usize, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let t = k.size()[2];
        let end = start as i64 + t;
        self.keys[layer].narrow(2, start as i64, t).copy_(k);
        self.values[layer].narrow(2, start as i64, t).copy_(v);
        (self.keys[layer].narrow(2, 0, end), self.values[layer].narrow(2, 0, end))
    }

    /// Records that positions `[0, len)` are now valid (after every layer was written).
    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }
}
