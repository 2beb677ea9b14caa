//! The decoder's key/value cache, allocated once per session.
//!
//! Self-attention K/V are appended one position at a time (sized for the whole text context,
//! 448 positions); cross-attention K/V are projected from the encoder output once per window.

use crate::config::Dims;

/// Keys and values of one attention module over `capacity` positions, `[capacity, d]` each.
pub struct KvBuffer {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

impl KvBuffer {
    fn new(capacity: usize, d: usize) -> Self {
        Self {
            k: vec![0.0; capacity * d],
            v: vec![0.0; capacity * d],
        }
    }
}

/// Per-layer self- and cross-attention K/V.
pub struct KvCache {
    /// Self-attention, one per decoder layer, `n_text_ctx` positions.
    pub self_attn: Vec<KvBuffer>,
    /// Cross-attention, one per decoder layer, `n_audio_ctx` positions.
    pub cross_attn: Vec<KvBuffer>,
    /// Positions filled in `self_attn`.
    pub len: usize,
    /// Capacity of `self_attn` in positions.
    pub capacity: usize,
}

impl KvCache {
    /// Allocates the whole cache for `dims`.
    pub fn new(dims: &Dims) -> Self {
        let d = dims.n_text_state;
        Self {
            self_attn: (0..dims.n_text_layer)
                .map(|_| KvBuffer::new(dims.n_text_ctx, d))
                .collect(),
            cross_attn: (0..dims.n_text_layer)
                .map(|_| KvBuffer::new(dims.n_audio_ctx, d))
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
