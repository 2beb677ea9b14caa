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
pub struct KvCache<B: Backend> {
    /// Self-attention, one per decoder layer, `n_text_ctx` positions.
    pub self_attn: Vec<KvBuffer>,
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
            len: 0,
            capacity: dims.n_text_ctx,
        }
    }

    /// Forgets the self-attention history (a new window); keeps the allocation.
    pub fn reset(&mut self) {
        self.len = 0;
    }
}
