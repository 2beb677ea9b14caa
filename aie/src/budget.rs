//! The dispatch budget of Whisper through these designs: per 30 s window and per decoded
//! token, the submissions, the bytes the host writes to and reads from device buffers, the
//! bytes the shim DMAs move, and a **projected** time on Phoenix and Strix.
//!
//! The projection is arithmetic on published peaks (`../shared/docs/npu-hardware.md`) and the
//! assumptions in [`Assumptions`] — nothing here has run on an NPU. Per submission it takes
//! `max(compute, shim DMA) / efficiency + host overhead`, where compute counts every MAC the
//! design performs (padding rows and idle columns included) at the per-core peak and the
//! epilogue and softmax at the cycles per element assumed. Not included (CPU work in this
//! design): mel, the conv stem, layer norms and residual adds, quantizing activations, the
//! logits GEMV and the search.

use crate::design::{GemmDesign, Mapping, WhisperDims, CORE_ROWS, ENCODER_ROWS};
use crate::kernels::attention::{HEAD_DIM, KEY_CHUNK, Q_ROWS};
use crate::kernels::layout::{TILE_K, TILE_M, TILE_N};
use crate::program::images::{activation_image_len, output_len, weight_image_len};
use crate::txn::Target;

/// Published peaks of one NPU (`npu-hardware.md` §2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Platform {
    /// Name.
    pub name: &'static str,
    /// Device model the streams are generated for.
    pub target: Target,
    /// Compute tiles.
    pub cores: usize,
    /// int8 MACs per cycle per core.
    pub int8_macs: f64,
    /// bf16 MACs per cycle per core.
    pub bf16_macs: f64,
    /// Array clock, Hz.
    pub clock_hz: f64,
    /// DDR ↔ array bandwidth ceiling, bytes/s (shim or DRAM, the lower).
    pub dma_bytes_per_s: f64,
}

/// Phoenix / Hawk Point (npu1, 4 usable columns): 16 cores × 256 int8 MACs at 1.024 GHz
/// (8.4 TOPS), shim ceiling 4 × 8 B/cycle = 32 GB/s.
pub const PHOENIX: Platform = Platform {
    name: "Phoenix (npu1, 4 columns)",
    target: Target::NPU1,
    cores: 16,
    int8_macs: 256.0,
    bf16_macs: 128.0,
    clock_hz: 1.024e9,
    dma_bytes_per_s: 32e9,
};

/// Strix (npu2, 8 columns): 32 cores × 512 int8 MACs at 1.8 GHz (59 TOPS), LPDDR5X 120 GB/s.
pub const STRIX: Platform = Platform {
    name: "Strix (npu2, 8 columns)",
    target: Target::NPU2,
    cores: 32,
    int8_macs: 512.0,
    bf16_macs: 256.0,
    clock_hz: 1.8e9,
    dma_bytes_per_s: 120e9,
};

/// What the projection assumes where nothing was measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assumptions {
    /// Host time per submission (flush, EXEC_CMD, wait, invalidate), seconds. Default 45 µs:
    /// an empty XRT kernel call (`npu-hardware.md` §3b); not measured by this project.
    pub host_overhead_s: f64,
    /// Fraction of the MAC and DMA peaks reached (1.0 = peak; §3a measured 0.2-0.5).
    pub efficiency: f64,
    /// Core cycles per output element of the dequantize/bias epilogue (8-lane emulated f32;
    /// GELU adds [`Self::gelu_cycles_per_element`]).
    pub epilogue_cycles_per_element: f64,
    /// Extra cycles per element for the GELU rational (≈ 30 f32 operations incl. a divide).
    pub gelu_cycles_per_element: f64,
    /// Core cycles per score for the softmax (scalar emulated f32 exp, max, sum, scale: the
    /// kernel as written today; a vectorised bf16 exp would be ~1-2).
    pub softmax_cycles_per_score: f64,
    /// Tokens decoded per 30 s window (≈ 75 words of speech + timestamps and specials).
    pub tokens_per_window: usize,
    /// Decoder rows per step: 1 = greedy, 5 = beam 5.
    pub beams: usize,
    /// Mean self-attention keys per step (prompt + half the window's tokens).
    pub mean_self_keys: usize,
}

impl Default for Assumptions {
    fn default() -> Self {
        Assumptions {
            host_overhead_s: 45e-6,
            efficiency: 1.0,
            epilogue_cycles_per_element: 1.0,
            gelu_cycles_per_element: 8.0,
            softmax_cycles_per_score: 40.0,
            tokens_per_window: 120,
            beams: 1,
            mean_self_keys: 64,
        }
    }
}

/// Totals of a set of submissions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    /// Submissions (ERT commands).
    pub submissions: usize,
    /// Bytes the host writes into device-read buffers (activation images, Q/K/V images).
    pub bytes_to_device: usize,
    /// Bytes the host reads back (outputs).
    pub bytes_from_device: usize,
    /// Bytes the shim DMAs move (DDR reads + writes), resident weights included.
    pub dma_bytes: usize,
    /// Projected seconds (device + host overhead). A projection, not a measurement.
    pub projected_s: f64,
    /// Of which host overhead.
    pub overhead_s: f64,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Totals) {
        self.submissions += o.submissions;
        self.bytes_to_device += o.bytes_to_device;
        self.bytes_from_device += o.bytes_from_device;
        self.dma_bytes += o.dma_bytes;
        self.projected_s += o.projected_s;
        self.overhead_s += o.overhead_s;
    }
}

impl std::ops::Mul<usize> for Totals {
    type Output = Totals;
    fn mul(self, n: usize) -> Totals {
        Totals {
            submissions: self.submissions * n,
            bytes_to_device: self.bytes_to_device * n,
            bytes_from_device: self.bytes_from_device * n,
            dma_bytes: self.dma_bytes * n,
            projected_s: self.projected_s * n as f64,
            overhead_s: self.overhead_s * n as f64,
        }
    }
}

fn finish(
    p: &Platform,
    a: &Assumptions,
    to: usize,
    from: usize,
    dma: usize,
    cycles: f64,
) -> Totals {
    let compute = cycles / p.clock_hz;
    let transfer = dma as f64 / p.dma_bytes_per_s;
    let device = compute.max(transfer) / a.efficiency;
    Totals {
        submissions: 1,
        bytes_to_device: to,
        bytes_from_device: from,
        dma_bytes: dma,
        projected_s: device + a.host_overhead_s,
        overhead_s: a.host_overhead_s,
    }
}

/// One GEMM submission: `m` rows through the `k × n` design (`gelu` epilogue or not).
pub fn gemm(p: &Platform, a: &Assumptions, m: usize, k: usize, n: usize, gelu: bool) -> Totals {
    let d = GemmDesign::new(p.target, k, n).expect("Whisper GEMM shapes fit the design");
    gemm_on(p, a, &d, m, gelu)
}

/// One GEMM submission through the decoder mapping (`Mapping::ChannelSpread`, M of 1-5).
pub fn decoder_gemm(
    p: &Platform,
    a: &Assumptions,
    m: usize,
    k: usize,
    n: usize,
    gelu: bool,
) -> Totals {
    let d = GemmDesign::decoder(p.target, k, n).expect("Whisper GEMM shapes fit the design");
    gemm_on(p, a, &d, m, gelu)
}

/// One GEMM submission on design `d`.
pub fn gemm_on(p: &Platform, a: &Assumptions, d: &GemmDesign, m: usize, gelu: bool) -> Totals {
    let blocks = d.row_blocks(m);
    let groups = d.channel_groups();
    // Row streams: RowBlocks sends each core row's rows once per group (4 streams);
    // ChannelSpread sends the rows to every column once per quad of that column.
    let row_objects = match d.mapping {
        Mapping::RowBlocks => CORE_ROWS * groups,
        Mapping::ChannelSpread => (0..d.cols()).map(|c| d.groups_of(c)).sum(),
    };
    let a_reads = blocks * row_objects * TILE_M * d.activation_row_bytes();
    let w_reads = blocks * d.image_tiles() * d.weight_block_bytes();
    let c_writes = output_len(d, m);
    // Cores work in parallel: per super-block each core runs `groups` tiles of k/64 steps.
    let mac_cycles = (TILE_M * TILE_K * TILE_N) as f64 / p.int8_macs;
    let epi = (TILE_M * TILE_N) as f64
        * (a.epilogue_cycles_per_element + if gelu { a.gelu_cycles_per_element } else { 0.0 });
    let cycles = (blocks * groups) as f64 * (d.k_tiles() as f64 * mac_cycles + epi);
    // The host writes and reads back only its `m` rows; the DMAs move whole super-blocks.
    let to = m * d.activation_row_bytes();
    let from = m * d.n * 4;
    debug_assert!(to <= activation_image_len(d, m));
    finish(p, a, to, from, a_reads + w_reads + c_writes, cycles)
}

/// One attention submission: `heads` heads, `n_q` queries each, `n_keys` keys; `kv_fresh`
/// says whether the K/V images are written by the host for this submission (self-attention
/// appends, the encoder's K/V) or resident (cross-attention K/V after the window's first).
pub fn attention(
    p: &Platform,
    a: &Assumptions,
    heads: usize,
    n_q: usize,
    n_keys: usize,
    kv_to_device: usize,
) -> Totals {
    let groups = n_q.div_ceil(Q_ROWS);
    let chunks = n_keys.div_ceil(KEY_CHUNK);
    let q_bytes = heads * groups * (Q_ROWS * HEAD_DIM + 8 * Q_ROWS);
    let kv_bytes = heads * chunks * KEY_CHUNK * (HEAD_DIM + 4 + 2 * HEAD_DIM);
    let out = heads * groups * Q_ROWS * HEAD_DIM * 4;
    let rows = n_q.min(Q_ROWS);
    // Work: `heads · groups` query groups spread over the cores.
    let per_group = {
        let scores = (Q_ROWS * chunks * KEY_CHUNK * HEAD_DIM) as f64 / p.int8_macs;
        let pv = (Q_ROWS * chunks * KEY_CHUNK * HEAD_DIM) as f64 / p.bf16_macs;
        // Padding rows (limit 0) skip the softmax.
        let softmax = (rows * n_keys) as f64 * a.softmax_cycles_per_score;
        scores + pv + softmax
    };
    let rounds = (heads * groups).div_ceil(p.cores);
    let cycles = rounds as f64 * per_group;
    let read_back = heads * n_q * HEAD_DIM * 4;
    finish(
        p,
        a,
        q_bytes + kv_to_device,
        read_back,
        q_bytes + kv_bytes + out,
        cycles,
    )
}

/// K/V image bytes for `keys` keys of all heads.
fn kv_image(heads: usize, keys: usize) -> usize {
    heads * keys * (HEAD_DIM + 4 + 2 * HEAD_DIM)
}

/// The encoder of one window: per layer fused QKV, attention, output projection, fc1 (GELU),
/// fc2 — 5 submissions a layer.
pub fn encoder(p: &Platform, a: &Assumptions, w: &WhisperDims) -> Totals {
    let m = ENCODER_ROWS;
    let mut layer = gemm(p, a, m, w.d, 3 * w.d, false);
    layer += attention(p, a, w.heads, m, m, kv_image(w.heads, m));
    layer += gemm(p, a, m, w.d, w.d, false);
    layer += gemm(p, a, m, w.d, w.mlp, true);
    layer += gemm(p, a, m, w.mlp, w.d, false);
    layer * w.encoder_layers
}

/// The cross-attention K/V of one window: one fused K/V GEMM per decoder layer (the K/V then
/// stay on the device for every token of the window).
pub fn cross_kv(p: &Platform, a: &Assumptions, w: &WhisperDims) -> Totals {
    gemm(p, a, ENCODER_ROWS, w.d, 2 * w.d, false) * w.decoder_layers
}

/// One decoder step: per layer self QKV, self-attention, self output, cross query,
/// cross-attention (resident K/V), cross output, fc1, fc2 — 8 submissions a layer; the GEMMs
/// through the decoder mapping.
pub fn decoder_step(p: &Platform, a: &Assumptions, w: &WhisperDims) -> Totals {
    let m = a.beams;
    let mut layer = decoder_gemm(p, a, m, w.d, 3 * w.d, false);
    // The step appends one K/V row per beam and head.
    layer += attention(p, a, w.heads, m, a.mean_self_keys, kv_image(w.heads, m));
    layer += decoder_gemm(p, a, m, w.d, w.d, false);
    layer += decoder_gemm(p, a, m, w.d, w.d, false);
    layer += attention(p, a, w.heads, m, ENCODER_ROWS, 0);
    layer += decoder_gemm(p, a, m, w.d, w.d, false);
    layer += decoder_gemm(p, a, m, w.d, w.mlp, true);
    layer += decoder_gemm(p, a, m, w.mlp, w.d, false);
    layer * w.decoder_layers
}

/// A 30 s window: encoder + cross K/V + `tokens_per_window` decoder steps.
pub fn window(p: &Platform, a: &Assumptions, w: &WhisperDims) -> Totals {
    let mut t = encoder(p, a, w);
    t += cross_kv(p, a, w);
    t += decoder_step(p, a, w) * a.tokens_per_window;
    t
}

/// Weight image bytes uploaded once at load: per encoder layer fused QKV, output, fc1, fc2
/// (row mapping); per decoder layer self QKV, self output, cross query, cross output, fc1, fc2
/// (decoder mapping, padded to whole quads) and the fused cross K/V (row mapping).
pub fn resident_weight_bytes(w: &WhisperDims) -> usize {
    let t = Target::NPU1;
    let img = |k: usize, n: usize| weight_image_len(&GemmDesign::new(t, k, n).expect("fits"));
    let quads = |k: usize, n: usize| weight_image_len(&GemmDesign::decoder(t, k, n).expect("fits"));
    let enc = img(w.d, 3 * w.d) + img(w.d, w.d) + img(w.d, w.mlp) + img(w.mlp, w.d);
    let dec = quads(w.d, 3 * w.d)
        + 3 * quads(w.d, w.d)
        + quads(w.d, w.mlp)
        + quads(w.mlp, w.d)
        + img(w.d, 2 * w.d);
    enc * w.encoder_layers + dec * w.decoder_layers
}

/// The table `examples/dispatch_budget.rs` prints and `aie/README.md` quotes.
pub fn report(models: &[WhisperDims], platforms: &[Platform], a: &Assumptions) -> String {
    let mb = |b: usize| b as f64 / 1e6;
    let mut s = format!(
        "PROJECTION (not measured; no NPU): host overhead {:.0} µs/submission, efficiency {:.0} %, \
         softmax {} cycles/score, {} tokens/window, {} beam(s)\n",
        a.host_overhead_s * 1e6,
        a.efficiency * 100.0,
        a.softmax_cycles_per_score,
        a.tokens_per_window,
        a.beams
    );
    s += "model | platform | per window: submissions, MB to / from device, MB shim DMA, projected s (of which overhead), x realtime | per token: submissions, KB to / from, projected ms\n";
    for w in models {
        for p in platforms {
            let win = window(p, a, w);
            let tok = decoder_step(p, a, w);
            s += &format!(
                "{} | {} | {}, {:.1} / {:.1}, {:.0}, {:.3} ({:.3}), {:.0}x | {}, {:.1} / {:.1}, {:.3}\n",
                w.name,
                p.name,
                win.submissions,
                mb(win.bytes_to_device),
                mb(win.bytes_from_device),
                mb(win.dma_bytes),
                win.projected_s,
                win.overhead_s,
                30.0 / win.projected_s,
                tok.submissions,
                tok.bytes_to_device as f64 / 1e3,
                tok.bytes_from_device as f64 / 1e3,
                tok.projected_s * 1e3,
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::design::{BASE, BLOCK_ROWS, TINY};

    #[test]
    fn submission_counts_follow_the_designs() {
        let a = Assumptions::default();
        for w in [TINY, BASE] {
            let win = window(&PHOENIX, &a, &w);
            let want = 5 * w.encoder_layers + w.decoder_layers + 120 * 8 * w.decoder_layers;
            assert_eq!(win.submissions, want);
            assert_eq!(
                decoder_step(&STRIX, &a, &w).submissions,
                8 * w.decoder_layers
            );
            assert!((win.overhead_s - want as f64 * 45e-6).abs() < 1e-9);
        }
    }

    #[test]
    fn gemm_bytes_are_the_buffers_the_program_moves() {
        let a = Assumptions::default();
        let t = gemm(&PHOENIX, &a, 1500, 512, 2048, true);
        // The host writes 1500 activation rows of 512 + 64 bytes and reads 1500 × 2048 f32.
        assert_eq!(t.bytes_to_device, 1500 * 576);
        assert_eq!(t.bytes_from_device, 1500 * 2048 * 4);
        // Shim: A once per channel group (8), the weight image once per super-block (12).
        let w_img = 32 * 9 * 4096;
        assert_eq!(
            t.dma_bytes,
            12 * 8 * 128 * 576 + 12 * w_img + 1536 * 2048 * 4
        );
        // fc1 of base: 1536·512·2048 MACs at 16 × 256 / cycle = 384 µs at 1.024 GHz, plus the
        // GELU epilogue (9 cycles × 2048 elements per tile, 96 tiles per core) and 45 µs of
        // overhead; compute-bound (the 34 MB of DMA take 1.06 ms at 32 GB/s).
        let macs = 1536.0 * 512.0 * 2048.0 / (16.0 * 256.0) / 1.024e9;
        let epi = 12.0 * 8.0 * 2048.0 * 9.0 / 1.024e9;
        let want = macs + epi + 45e-6;
        assert!(
            (t.projected_s - want).abs() < 1e-9,
            "{} vs {want}",
            t.projected_s
        );
    }

    #[test]
    fn projections_order_platforms_and_assumptions_sensibly() {
        let a = Assumptions::default();
        for w in [TINY, BASE] {
            let (ph, sx) = (window(&PHOENIX, &a, &w), window(&STRIX, &a, &w));
            assert!(sx.projected_s < ph.projected_s);
            let slow = Assumptions {
                efficiency: 0.3,
                ..a
            };
            assert!(window(&PHOENIX, &slow, &w).projected_s > ph.projected_s);
            let fast_softmax = Assumptions {
                softmax_cycles_per_score: 1.0,
                ..a
            };
            assert!(
                encoder(&PHOENIX, &fast_softmax, &w).projected_s
                    < encoder(&PHOENIX, &a, &w).projected_s
            );
        }
        let r = report(&[BASE], &[PHOENIX], &a);
        assert!(r.starts_with("PROJECTION (not measured; no NPU)"));
        assert_eq!(CORE_ROWS * TILE_M, BLOCK_ROWS);
        assert!(resident_weight_bytes(&BASE) > 6 * 12 * 512 * 512);
    }
}
