//! Per-layer key/value cache so that a decode step attends to the past without recomputing it.
//!
//! Keys and values live in preallocated `[B, n_kv, capacity, d_h]` buffers that grow in blocks of
//! [`KV_BLOCK`] positions: a decode step writes one slot in place instead of copying the whole
//! cache, and attention shapes change only once per block (fewer shader variants to compile).
//! Slots past `len` hold zeros and are hidden by the attention mask.

use burn::tensor::{Int, Tensor};

/// Capacity granularity, in positions.
pub const KV_BLOCK: usize = 64;

/// Keys and values of every layer.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
            len: 0,
        }
    }

    /// Number of filled positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The capacity the buffers will have once `t` more positions are written: the attention
    /// width S of the next step.
    pub fn capacity_after(&self, t: usize) -> usize {
        let current = self
            .layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dims()[2]);
        current.max((self.len + t).div_ceil(KV_BLOCK) * KV_BLOCK)
    }

    /// Write this step's k, v `[B, n_kv, T, d_h]` of layer `layer` at positions `len..len + T`
    /// and return the whole `[B, n_kv, S, d_h]` buffers (S = [`Self::capacity_after`]).
    /// Call [`Self::advance`] once all layers have been written.
    pub fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let [b, nkv, t, dh] = k.dims();
        let cap = self.capacity_after(t);
        let grow = |buf: Option<Tensor<4>>| match buf {
            None => Tensor::zeros([b, nkv, cap, dh], &k.device()),
            Some(old) if old.dims()[2] < cap => {
                let extra = Tensor::zeros([b, nkv, cap - old.dims()[2], dh], &old.device());
                Tensor::cat(vec![old, extra], 2)
            }
            Some(old) => old,
        };
        let (ck, cv) = match self.layers[layer].take() {
            Some((ck, cv)) => (grow(Some(ck)), grow(Some(cv))),
            None => (grow(None), grow(None)),
        };
        let slots = [0..b, 0..nkv, self.len..self.len + t, 0..dh];
        let ck = ck.slice_assign(slots.clone(), k);
        let cv = cv.slice_assign(slots, v);
        self.layers[layer] = Some((ck.clone(), cv.clone()));
        (ck, cv)
    }

    /// Mark `t` more positions as filled (after every layer has appended them).
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Keep only the batch rows in `rows` (drops finished sequences from a running batch).
    pub fn retain_rows(&mut self, rows: Tensor<1, Int>) {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.clone().select(0, rows.clone());
            *v = v.clone().select(0, rows.clone());
        }
    }
}
