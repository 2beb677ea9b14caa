//! The decoder's key/value cache, allocated once per session.
//!
//! Self-attention K/V are appended one position at a time (sized for the whole text context,
//! 448 positions) in f32; cross-attention K/V are projected from the encoder output once per
//! window and handed to the backend to prepare ([`Backend::KeyValues`]: for the INT8 CPU
//! backend, packed bf16), since every decoded token reads all of them.

use amanuensis_runtime::backend::Backend;

use crate::config::Dims;

/// Keys and values of one attention module over `capacity` positions, `[capacity, d]` each.
pub struct KvBuffer {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

impl KvBuffer {
    /// Lazily mapped: self-attention fills positions one by one and rarely all 448.
    fn new(capacity: usize, d: usize) -> Self {
        Self {
            k: vec![0.0; capacity * d],
            v: vec![0.0; capacity * d],
        }
    }
}

/// Per-layer self- and cross-attention K/V.
///
/// Beam search keeps one self-attention history per beam: `self_attn` is slot 0 (the only one
/// greedy decoding uses), `beam_slots[s − 1]` slot `s`, added by [`KvCache::ensure_slots`].
/// Every slot shares `len` (beams advance together) and the cross-attention K/V.
pub struct KvCache<B: Backend> {
    /// Self-attention, one per decoder layer, `n_text_ctx` positions.
    pub self_attn: Vec<KvBuffer>,
    /// Further self-attention slots for beams, each one `KvBuffer` per layer.
    pub beam_slots: Vec<Vec<KvBuffer>>,
    /// Cross-attention, one per decoder layer, `n_audio_ctx` positions, prepared by the backend.
    pub cross_attn: Vec<B::KeyValues>,
    /// Positions filled in `self_attn`.
    pub len: usize,
    /// Capacity of `self_attn` in positions.
    pub capacity: usize,
}

impl<B: Backend> KvCache<B> {
    /// Allocates the whole cache for `dims`.
    pub fn new(backend: &B, dims: &Dims) -> Self {
        let d = dims.n_text_state;
        let heads = dims.n_text_head;
        Self {
            self_attn: (0..dims.n_text_layer)
                .map(|_| KvBuffer::new(dims.n_text_ctx, d))
                .collect(),
            cross_attn: (0..dims.n_text_layer)
                .map(|_| backend.key_values(heads, d / heads, dims.n_audio_ctx))
                .collect(),
            beam_slots: Vec::new(),
            len: 0,
            capacity: dims.n_text_ctx,
        }
    }

    /// Makes sure `slots` self-attention slots exist (allocating the missing ones, lazily
    /// mapped: a slot's pages become resident as beams fill it).
    pub fn ensure_slots(&mut self, slots: usize) {
        let (layers, d) = (
            self.self_attn.len(),
            self.self_attn[0].k.len() / self.capacity,
        );
        while self.beam_slots.len() + 1 < slots {
            self.beam_slots.push(
                (0..layers)
                    .map(|_| KvBuffer::new(self.capacity, d))
                    .collect(),
            );
        }
    }

    /// Slots available.
    pub fn slots(&self) -> usize {
        1 + self.beam_slots.len()
    }

    /// Layer `layer`'s buffer in slot `slot`.
    pub fn slot(&mut self, slot: usize, layer: usize) -> &mut KvBuffer {
        match slot {
            0 => &mut self.self_attn[layer],
            s => &mut self.beam_slots[s - 1][layer],
        }
    }

    /// Copies positions `..len` of every layer from slot `from` to slot `to`.
    pub fn copy_slot(&mut self, from: usize, to: usize) {
        if from == to {
            return;
        }
        let n = self.len * (self.self_attn[0].k.len() / self.capacity);
        for layer in 0..self.self_attn.len() {
            let (a, b) = if from < to {
                self.two_slots(from, to, layer)
            } else {
                let (b, a) = self.two_slots(to, from, layer);
                (a, b)
            };
            b.k[..n].copy_from_slice(&a.k[..n]);
            b.v[..n].copy_from_slice(&a.v[..n]);
        }
    }

    /// Slots `lo < hi` of one layer, both mutable.
    fn two_slots(&mut self, lo: usize, hi: usize, layer: usize) -> (&mut KvBuffer, &mut KvBuffer) {
        debug_assert!(lo < hi);
        if lo == 0 {
            (
                &mut self.self_attn[layer],
                &mut self.beam_slots[hi - 1][layer],
            )
        } else {
            let (left, right) = self.beam_slots.split_at_mut(hi - 1);
            (&mut left[lo - 1][layer], &mut right[0][layer])
        }
    }

    /// Forgets the self-attention history (a new window); keeps the allocation.
    pub fn reset(&mut self) {
        self.len = 0;
    }
}
