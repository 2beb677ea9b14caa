//! Multi-head attention with bf16 operands and f32 accumulation: same contract as
//! [`crate::cpu::attention()`], for `head_dim` a multiple of 64 (Whisper: 64).
//!
//! Keys and values are first packed into [`Bf16KeyValues`] (rounded to bf16, nearest-even):
//! once per call for self-attention, once per audio window for the decoder's cross-attention
//! (then attended to by every token, at half the memory traffic of f32). Per (head, block of 24
//! queries): scores `q·kᵀ` from bf16 pairs into f32 (12 queries × 32 keys per micro-tile; `q`
//! is scaled by `head_dim^-0.5` before rounding, exact for 64); unnormalised probabilities
//! `exp(s - max)` (a degree-4 exponential, ample for bf16) rounded to bf16; `P·V` from bf16 pairs into f32 (6 queries × 64 columns per
//! micro-tile), divided by the f32 sum of the very bf16 probabilities used.
//!
//! On x86-64 with AVX-512 BF16 the micro-tiles are `vdpbf16ps` (two products per f32 lane per
//! instruction: twice the f32 FMA rate on AMD Zen 4). Elsewhere a portable path computes the
//! same bf16 products (exact in f32) with f32 accumulation; the two agree within f32 rounding
//! of the sums (accumulation order and `vdpbf16ps`'s flush of denormals differ), not bit for bit.
//!
//! Accuracy against f32 attention: bf16 keeps 8 significant bits, so each operand is off by at
//! most 2⁻⁸ relatively; a score `Σ q_c k_c / 8` moves by ≈ 2⁻⁹·√2·‖q‖‖k‖/(8·√d) (random
//! rounding signs, mean error a third of the bound), and each output by ≈ 2⁻⁹ of its value plus the score error times the
//! spread of `v`. The tests bound it on random data; the model-level gates (encoder cosine,
//! WER) in `tests/int8.rs` bound its effect on transcripts.

use super::attention::AttentionShape;
use super::pool::{CpuPool, DisjointSlice};
use super::softmax::row_max;
use crate::resident::Buffer;

/// Queries per task.
const BLOCK_Q: usize = 24;
/// Queries per score micro-tile.
const QK_ROWS: usize = 12;
/// Keys per score micro-tile (one packed key panel).
pub(super) const PANEL: usize = 32;
/// Queries per `P·V` micro-tile.
const PV_ROWS: usize = 6;
/// Value columns per `P·V` micro-tile.
const PV_COLS: usize = 64;

/// `x` rounded to bf16 (nearest, ties to even), as its bit pattern. Inputs are finite.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 value of bf16 bits.
#[inline(always)]
pub fn bf16_value(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// Two bf16 values in one 32-bit word, `lo` in the low half (the order `vdpbf16ps` reads).
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) as u32 | (bf16_bits(hi) as u32) << 16
}

/// Whether this machine runs the `vdpbf16ps` micro-tiles (else the portable ones):
/// AVX-512F + AVX-512 BF16 and no `AMANUENSIS_NO_BF16` in the environment. Decided once per
/// process (every attention call asks).
pub fn has_native_bf16() -> bool {
    static NATIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NATIVE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::env::var_os("AMANUENSIS_NO_BF16").is_none()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Whether [`attention_bf16`] takes `shape` (`head_dim` a positive multiple of 64).
pub fn bf16_supports(shape: &AttentionShape) -> bool {
    shape.head_dim > 0 && shape.head_dim.is_multiple_of(PV_COLS)
}

/// Keys and values of `heads` heads, packed in bf16 for [`attention_bf16`].
///
/// Per head, keys in panels of 32: `[kv_pad/32][head_dim/2][32]` words, each word the pair
/// (`k[j][2t]`, `k[j][2t+1]`); values as `[kv_pad/2][head_dim]` words, each the pair
/// (`v[2s][c]`, `v[2s+1][c]`). `kv_pad` = capacity rounded up to 32; padding is zero.
pub struct Bf16KeyValues {
    heads: usize,
    head_dim: usize,
    capacity: usize,
    kv_len: usize,
    /// Keys (the first `words`), then values: one buffer, so its huge pages are shared.
    packed: Buffer<u32>,
    words: usize,
}

impl Bf16KeyValues {
    /// Room for up to `capacity` rows of `heads × head_dim` (allocated here, once, every page
    /// resident).
    ///
    /// # Panics
    /// If `head_dim` is odd.
    pub fn new(heads: usize, head_dim: usize, capacity: usize) -> Self {
        Self::with_buffer(heads, head_dim, capacity, Buffer::resident)
    }

    /// As [`Bf16KeyValues::new`], with pages mapped on first write (a cache slot that is
    /// filled a row at a time, and often not at all).
    ///
    /// # Panics
    /// If `head_dim` is odd.
    pub fn lazy(heads: usize, head_dim: usize, capacity: usize) -> Self {
        Self::with_buffer(heads, head_dim, capacity, Buffer::lazy)
    }

    fn with_buffer(
        heads: usize,
        head_dim: usize,
        capacity: usize,
        alloc: fn(usize) -> Buffer<u32>,
    ) -> Self {
        assert!(head_dim.is_multiple_of(2), "Bf16KeyValues: odd head_dim");
        let words = heads * capacity.next_multiple_of(PANEL) * head_dim / 2;
        Self {
            heads,
            head_dim,
            capacity,
            kv_len: 0,
            packed: alloc(2 * words),
            words,
        }
    }

    /// Writes rows `k`, `v` (`[rows, heads·head_dim]` each) at rows `at..at + rows`, rounded to
    /// bf16 (nearest even) in the packed layout; the buffer then holds rows `..at + rows` (an
    /// append when `at` is the current length; earlier rows are kept, later ones dropped).
    /// One thread, no allocation: for a few rows (a decoded token, a prompt).
    ///
    /// # Panics
    /// If `k`, `v` are not whole rows of equal length, `at` is past the rows held, or the rows
    /// exceed the capacity.
    pub fn write_rows(&mut self, at: usize, k: &[f32], v: &[f32]) {
        let (heads, d) = (self.heads, self.head_dim);
        let width = heads * d;
        assert_eq!(
            k.len(),
            v.len(),
            "Bf16KeyValues::write_rows: k and v differ"
        );
        assert!(
            width > 0 && k.len().is_multiple_of(width),
            "Bf16KeyValues::write_rows: k is not rows of heads·head_dim"
        );
        let rows = k.len() / width;
        assert!(
            at <= self.kv_len && at + rows <= self.capacity,
            "Bf16KeyValues::write_rows: rows {at}..{} with {} held, capacity {}",
            at + rows,
            self.kv_len,
            self.capacity
        );
        let (head_words, half) = (self.head_words(), d / 2);
        let (keys, values) = self.packed.split_at_mut(self.words);
        for r in 0..rows {
            let j = at + r;
            for h in 0..heads {
                let base = h * head_words;
                let src = &k[r * width + h * d..][..d];
                let kb = base + (j / PANEL) * PANEL * half + j % PANEL;
                for (t, two) in src.chunks_exact(2).enumerate() {
                    keys[kb + t * PANEL] = pair(two[0], two[1]);
                }
                let src = &v[r * width + h * d..][..d];
                let step = &mut values[base + (j / 2) * d..][..d];
                if j.is_multiple_of(2) {
                    // Row j in the low halves; the high halves (row j + 1, not held) zero, as
                    // a pack leaves them, so P·V multiplies them by a zero probability only.
                    for (w, &x) in step.iter_mut().zip(src) {
                        *w = bf16_bits(x) as u32;
                    }
                } else {
                    for (w, &x) in step.iter_mut().zip(src) {
                        *w = (*w & 0xffff) | (bf16_bits(x) as u32) << 16;
                    }
                }
            }
        }
        self.kv_len = at + rows;
    }

    /// Makes this buffer hold the first `len` rows of `from` (same heads, widths and
    /// capacity), copying packed words; allocates nothing.
    ///
    /// # Panics
    /// If the shapes differ or `from` holds fewer than `len` rows.
    pub fn copy_rows_from(&mut self, from: &Bf16KeyValues, len: usize) {
        assert!(
            (self.heads, self.head_dim, self.capacity)
                == (from.heads, from.head_dim, from.capacity),
            "Bf16KeyValues::copy_rows_from: another shape"
        );
        assert!(
            len <= from.kv_len,
            "Bf16KeyValues::copy_rows_from: {len} rows of {}",
            from.kv_len
        );
        let (head_words, half, d) = (self.head_words(), self.head_dim / 2, self.head_dim);
        let key_words = len.div_ceil(PANEL) * PANEL * half;
        let value_words = len.div_ceil(2) * d;
        let (keys, values) = self.packed.split_at_mut(self.words);
        for h in 0..self.heads {
            let base = h * head_words;
            keys[base..base + key_words].copy_from_slice(&from.keys()[base..base + key_words]);
            values[base..base + value_words]
                .copy_from_slice(&from.values()[base..base + value_words]);
            if len % 2 == 1 {
                // Row `len` (in the last step's high halves) is not held: zero, as after a pack.
                let last = &mut values[base + (len / 2) * d..][..d];
                last.iter_mut().for_each(|w| *w &= 0xffff);
            }
        }
        self.kv_len = len;
    }

    pub(super) fn keys(&self) -> &[u32] {
        &self.packed[..self.words]
    }

    pub(super) fn values(&self) -> &[u32] {
        &self.packed[self.words..]
    }

    /// Rows currently packed.
    pub fn kv_len(&self) -> usize {
        self.kv_len
    }

    /// Heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Rows this buffer can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Key `j` of head `h` as packed (its bf16 values widened), into `out [head_dim]`.
    ///
    /// # Panics
    /// If `h`, `j` or `out` do not fit.
    pub fn key_into(&self, h: usize, j: usize, out: &mut [f32]) {
        assert!(h < self.heads && j < self.kv_len && out.len() == self.head_dim);
        let half = self.head_dim / 2;
        let base = h * self.head_words() + (j / PANEL) * PANEL * half + j % PANEL;
        for (t, pair) in out.chunks_exact_mut(2).enumerate() {
            let (lo, hi) = unpair(self.keys()[base + t * PANEL]);
            pair[0] = lo;
            pair[1] = hi;
        }
    }

    fn kv_pad(&self) -> usize {
        self.capacity.next_multiple_of(PANEL)
    }

    /// Words per head in `keys` and in `values`.
    pub(super) fn head_words(&self) -> usize {
        self.kv_pad() * self.head_dim / 2
    }

    /// Packs `k`, `v` (`[kv_len, heads·head_dim]` each) on `pool`; allocates nothing.
    ///
    /// # Panics
    /// If the lengths are not a whole number of rows, the rows exceed the capacity, or `k` and
    /// `v` differ in length.
    pub fn pack(&mut self, pool: &CpuPool, k: &[f32], v: &[f32]) {
        let (heads, d) = (self.heads, self.head_dim);
        let width = heads * d;
        assert_eq!(k.len(), v.len(), "Bf16KeyValues::pack: k and v differ");
        assert!(
            width > 0 && k.len().is_multiple_of(width),
            "Bf16KeyValues::pack: k is not rows of heads·head_dim"
        );
        let kv_len = k.len() / width;
        assert!(
            kv_len <= self.capacity,
            "Bf16KeyValues::pack: more rows than capacity"
        );
        let (head_words, half, kv_pad) = (self.head_words(), d / 2, self.kv_pad());
        let panels = kv_len.div_ceil(PANEL);
        // Padding rows that an earlier, longer pack left behind are cleared, so both
        // products see zeros past kv_len.
        let stale = self.kv_len.max(kv_len);
        let (keys, values) = self.packed.split_at_mut(self.words);
        let keys = DisjointSlice::new(keys);
        let values = DisjointSlice::new(values);
        const CHUNK: usize = 4; // key panels (128 rows) per task
        let chunks = stale.div_ceil(PANEL).max(panels).div_ceil(CHUNK).max(1);
        pool.run(heads * chunks, |task| {
            let (h, c) = (task / chunks, task % chunks);
            let rows = c * CHUNK * PANEL..((c + 1) * CHUNK * PANEL).min(kv_pad);
            if rows.is_empty() {
                return;
            }
            let base = h * head_words;
            // SAFETY: each (head, row chunk) owns disjoint word ranges of keys and values
            // (key panels [rows]/32, value steps [rows]/2; chunks are whole panels).
            let kp = unsafe { keys.range(base + rows.start * half..base + rows.end * half) };
            // SAFETY: as above.
            let vp = unsafe { values.range(base + rows.start * half..base + rows.end * half) };
            for (pi, panel) in kp.chunks_exact_mut(PANEL * half).enumerate() {
                for jj in 0..PANEL {
                    let j = rows.start + pi * PANEL + jj;
                    if j < kv_len {
                        let src = &k[j * width + h * d..][..d];
                        for t in 0..half {
                            panel[t * PANEL + jj] = pair(src[2 * t], src[2 * t + 1]);
                        }
                    } else {
                        (0..half).for_each(|t| panel[t * PANEL + jj] = 0);
                    }
                }
            }
            for (si, step) in vp.chunks_exact_mut(d).enumerate() {
                let s = rows.start / 2 + si;
                let (j0, j1) = (2 * s, 2 * s + 1);
                if j1 < kv_len {
                    let (a, b) = (&v[j0 * width + h * d..][..d], &v[j1 * width + h * d..][..d]);
                    for (w, (&a, &b)) in step.iter_mut().zip(a.iter().zip(b)) {
                        *w = pair(a, b);
                    }
                } else if j0 < kv_len {
                    let a = &v[j0 * width + h * d..][..d];
                    for (w, &a) in step.iter_mut().zip(a) {
                        *w = bf16_bits(a) as u32;
                    }
                } else {
                    step.fill(0);
                }
            }
        });
        self.kv_len = kv_len;
    }
}

/// The contract the two attention kernels over a [`Bf16KeyValues`] share (this file's and
/// `attention_bf16_kv`'s): what [`Bf16Call::check`] asserts, named for the caller's messages.
pub(super) struct Bf16Call {
    /// The public entry point, for the panic messages.
    pub name: &'static str,
    /// Scratch words the call needs.
    pub scratch_needed: usize,
    /// The instructions the `native` kernels use.
    pub native_isa: &'static str,
    /// Whether this CPU has them.
    pub native_available: bool,
}

impl Bf16Call {
    /// Panics unless `head_dim` is a multiple of 64, `kv` holds `shape`'s keys and values,
    /// `scratch` is long enough and `native` is only asked for where it runs; then
    /// [`AttentionShape::check_queries`] (false: nothing to compute).
    pub fn check(
        &self,
        native: bool,
        shape: &AttentionShape,
        q: &[f32],
        kv: &Bf16KeyValues,
        scratch: &[f32],
        out: &[f32],
    ) -> bool {
        let name = self.name;
        assert!(
            bf16_supports(shape),
            "{name}: head_dim is not a multiple of 64"
        );
        assert!(
            shape.heads == kv.heads && shape.head_dim == kv.head_dim && shape.kv_len == kv.kv_len,
            "{name}: keys/values hold another shape"
        );
        assert!(
            scratch.len() >= self.scratch_needed,
            "{name}: scratch shorter than {name}_scratch_len"
        );
        assert!(
            !native || self.native_available,
            "{name}: no {} on this CPU",
            self.native_isa
        );
        shape.check_queries(name, q, out)
    }
}

/// Per-thread scratch words [`attention_bf16`] needs (in f32 units, any smaller shape too).
pub fn attention_bf16_scratch_len(pool: &CpuPool, shape: &AttentionShape) -> usize {
    pool.threads() * thread_words(shape.kv_len, shape.head_dim)
}

/// Queries of the largest block a thread's scratch holds (the AMX tiles take 32).
const SCRATCH_Q: usize = 32;

/// Scores (f32), probabilities (bf16 pairs) and query pairs for one block of queries.
fn thread_words(kv_len: usize, head_dim: usize) -> usize {
    let kv_pad = kv_len.next_multiple_of(PANEL);
    SCRATCH_Q * kv_pad + SCRATCH_Q * kv_pad / 2 + SCRATCH_Q * head_dim / 2
}

/// The micro-tiles that compute the two products of [`attention_bf16`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Tiles {
    /// bf16 products in f32 arithmetic, any CPU.
    Portable,
    /// `vdpbf16ps` (AVX-512 BF16).
    Avx512,
    /// `TDPBF16PS` (AMX-BF16, see `attention_bf16_amx.rs`), 32 queries per block.
    Amx,
}

impl Bf16Tiles {
    /// The fastest tiles of this CPU for `native` (see [`has_native_bf16`]): AMX-BF16 where
    /// usable, else AVX-512 BF16; the portable ones for `native == false`.
    pub fn best(native: bool) -> Bf16Tiles {
        #[cfg(target_arch = "x86_64")]
        if native && super::attention_bf16_amx::usable() {
            return Bf16Tiles::Amx;
        }
        if native {
            Bf16Tiles::Avx512
        } else {
            Bf16Tiles::Portable
        }
    }

    /// Every kind this CPU runs (for tests and benchmarks).
    pub fn available() -> Vec<Bf16Tiles> {
        let mut v = vec![Bf16Tiles::Portable];
        if has_native_bf16() {
            v.push(Bf16Tiles::Avx512);
            if Bf16Tiles::best(true) == Bf16Tiles::Amx {
                v.push(Bf16Tiles::Amx);
            }
        }
        v
    }
}

/// `out = softmax(q·kᵀ · head_dim^-0.5 [+ causal mask]) · v` per head, with `k`, `v` from
/// `kv` (packed by [`Bf16KeyValues::pack`]; `shape.kv_len` must equal its `kv_len`).
///
/// # Panics
/// As [`crate::cpu::attention()`]; also if `head_dim` is not a multiple of 64, `kv` was packed
/// for another shape, or `scratch` is shorter than [`attention_bf16_scratch_len`].
pub fn attention_bf16(
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    kv: &Bf16KeyValues,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    attention_bf16_with(has_native_bf16(), pool, shape, q, kv, scratch, out)
}

/// [`attention_bf16`] on the `vdpbf16ps` tiles (`native`, if the CPU has them) or the
/// portable ones.
///
/// # Panics
/// As [`attention_bf16`], or if `native` is asked for on a CPU without AVX-512 BF16.
pub fn attention_bf16_with(
    native: bool,
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    kv: &Bf16KeyValues,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let tiles = Bf16Tiles::best(native);
    attention_bf16_on(tiles, pool, shape, q, kv, scratch, out)
}

/// [`attention_bf16`] on the chosen micro-tiles.
///
/// # Panics
/// As [`attention_bf16`], or if `tiles` are not among [`Bf16Tiles::available`].
pub fn attention_bf16_on(
    tiles: Bf16Tiles,
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    kv: &Bf16KeyValues,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let native = tiles != Bf16Tiles::Portable;
    assert!(
        tiles != Bf16Tiles::Amx || Bf16Tiles::best(true) == Bf16Tiles::Amx,
        "attention_bf16: no AMX-BF16 tiles in this process"
    );
    let call = Bf16Call {
        name: "attention_bf16",
        scratch_needed: attention_bf16_scratch_len(pool, shape),
        native_isa: "AVX-512 BF16",
        native_available: has_native_bf16(),
    };
    // K and V are in `kv` (checked against the shape).
    if !call.check(native, shape, q, kv, scratch, out) {
        return;
    }
    let width = shape.heads * shape.head_dim;

    let (heads, d, q_len, kv_len) = (shape.heads, shape.head_dim, shape.q_len, shape.kv_len);
    let half = d / 2;
    let scale = (d as f32).powf(-0.5);
    let kv_pad = kv_len.next_multiple_of(PANEL);
    let per_thread = thread_words(kv_len, d);
    let head_words = kv.head_words();
    let block_q = if tiles == Bf16Tiles::Amx {
        SCRATCH_Q
    } else {
        BLOCK_Q
    };
    let q_blocks = q_len.div_ceil(block_q);
    let scratch = DisjointSlice::new(&mut scratch[..pool.threads() * per_thread]);
    let out = DisjointSlice::new(out);
    pool.run_on_threads(heads * q_blocks, |thread, task| {
        let (h, qb) = (task / q_blocks, task % q_blocks);
        let queries = qb * block_q..((qb + 1) * block_q).min(q_len);
        let n_q = queries.len();
        // SAFETY: each thread uses only its own region, one task at a time.
        let mine = unsafe { scratch.range(thread * per_thread..(thread + 1) * per_thread) };
        let (scores, rest) = mine.split_at_mut(SCRATCH_Q * kv_pad);
        let (probs, q_pairs) = rest.split_at_mut(SCRATCH_Q * kv_pad / 2);
        let probs: &mut [u16] = bytemuck::cast_slice_mut(probs);
        let q_pairs: &mut [u32] = bytemuck::cast_slice_mut(&mut q_pairs[..SCRATCH_Q * half]);
        let keys = &kv.keys()[h * head_words..(h + 1) * head_words];
        let values = &kv.values()[h * head_words..(h + 1) * head_words];
        let seen_max = shape.visible(queries.end - 1);

        // Queries pre-scaled by head_dim^-0.5 (a power of two for Whisper's 64: exact).
        for (r, i) in queries.clone().enumerate() {
            let src = &q[i * width + h * d..][..d];
            for t in 0..half {
                q_pairs[r * half + t] = pair(src[2 * t] * scale, src[2 * t + 1] * scale);
            }
        }

        #[cfg(target_arch = "x86_64")]
        if tiles == Bf16Tiles::Amx {
            // Rows n_q..32 of the block hold an earlier block's queries and probabilities:
            // each result row depends only on its own row, and those rows are not written.
            use super::attention_bf16_amx as amx;
            let tiles = amx::Tiles::new();
            let panels = seen_max.div_ceil(PANEL);
            for p in 0..panels {
                let panel = &keys[p * PANEL * half..(p + 1) * PANEL * half];
                amx::scores(
                    &tiles,
                    q_pairs,
                    half,
                    panel,
                    &mut scores[p * PANEL..],
                    kv_pad,
                );
            }
            // Probabilities to the end of the last panel (zero past each row's keys).
            let mut inv_sum = [0.0f32; SCRATCH_Q];
            for (r, i) in queries.clone().enumerate() {
                let row = &scores[r * kv_pad..r * kv_pad + shape.visible(i)];
                let prow = &mut probs[r * kv_pad..r * kv_pad + panels * PANEL];
                inv_sum[r] = 1.0 / exp_to_bf16(native, row, prow);
            }
            let probs: &[u32] = bytemuck::cast_slice(&probs[..]);
            let mut acc = [[0.0f32; PV_COLS]; SCRATCH_Q];
            for cb in 0..d / PV_COLS {
                amx::values(
                    &tiles,
                    probs,
                    kv_pad / 2,
                    panels,
                    values,
                    d,
                    cb * PV_COLS,
                    &mut acc,
                );
                for (r, a) in acc.iter().enumerate().take(n_q) {
                    let at = (queries.start + r) * width + h * d + cb * PV_COLS;
                    // SAFETY: tasks own disjoint (query rows, head) column ranges of `out`.
                    let o = unsafe { out.range(at..at + PV_COLS) };
                    let inv = inv_sum[r];
                    o.iter_mut().zip(a).for_each(|(o, a)| *o = a * inv);
                }
            }
            return;
        }

        // 1. Scores for keys below seen_max, a 32-key panel at a time.
        let mut tile = [[0.0f32; PANEL]; QK_ROWS];
        for p in 0..seen_max.div_ceil(PANEL) {
            let panel = &keys[p * PANEL * half..(p + 1) * PANEL * half];
            let cols = PANEL.min(seen_max - p * PANEL);
            for r0 in (0..n_q).step_by(QK_ROWS) {
                let rows = QK_ROWS.min(n_q - r0);
                score_tile(native, rows, &q_pairs[r0 * half..], half, panel, &mut tile);
                for (r, t) in tile.iter().enumerate().take(rows) {
                    scores[(r0 + r) * kv_pad + p * PANEL..][..cols].copy_from_slice(&t[..cols]);
                }
            }
        }

        // 2. Unnormalised probabilities exp(s - max) in bf16 (zero past each query's visible
        //    keys), and the sum of exactly those bf16 values.
        let steps = seen_max.div_ceil(2);
        let mut inv_sum = [0.0f32; BLOCK_Q];
        for (r, i) in queries.clone().enumerate() {
            let seen = shape.visible(i);
            let row = &scores[r * kv_pad..r * kv_pad + seen];
            let prow = &mut probs[r * kv_pad..r * kv_pad + 2 * steps];
            inv_sum[r] = 1.0 / exp_to_bf16(native, row, prow);
        }
        let probs: &[u32] = bytemuck::cast_slice(&probs[..]);

        // 3. out = (P·V) / Σ P, 6 queries × 64 columns at a time.
        let mut acc = [[0.0f32; PV_COLS]; PV_ROWS];
        for cb in 0..d / PV_COLS {
            for r0 in (0..n_q).step_by(PV_ROWS) {
                let rows = PV_ROWS.min(n_q - r0);
                let p = &probs[r0 * kv_pad / 2..];
                let vals = &values[cb * PV_COLS..];
                value_tile(native, rows, p, kv_pad / 2, steps, vals, d, &mut acc);
                for (r, a) in acc.iter().enumerate().take(rows) {
                    let at = (queries.start + r0 + r) * width + h * d + cb * PV_COLS;
                    // SAFETY: tasks own disjoint (query rows, head) column ranges of `out`.
                    let o = unsafe { out.range(at..at + PV_COLS) };
                    let inv = inv_sum[r0 + r];
                    o.iter_mut().zip(a).for_each(|(o, a)| *o = a * inv);
                }
            }
        }
    });
}

/// `out[j] = bf16(exp(row[j] - max row))` for `j < row.len()`, zero for the rest of `out`;
/// returns the sum of the bf16 values written.
fn exp_to_bf16(native: bool, row: &[f32], out: &mut [u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if native {
        // SAFETY: AVX-512 BF16 (and so AVX-512F) checked by the caller; the body is safe code.
        return unsafe { exp_to_bf16_avx512(row, out) };
    }
    let _ = native;
    exp_to_bf16_body(row, out)
}

/// [`exp_to_bf16_body`] in AVX-512 intrinsics, bit for bit: the row maximum over four
/// independent accumulators (the compiler's version kept one 8-lane chain, a third of the
/// function's time on the Xeon), then per 16 lanes the same exponential, rounding and
/// per-lane sums, the lanes and the tail added in the body's order.
///
/// # Safety
/// AVX-512F available; `out.len() >= row.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn exp_to_bf16_avx512(row: &[f32], out: &mut [u16]) -> f32 {
    use std::arch::x86_64::*;
    let n = row.len();
    assert!(out.len() >= n);
    let x = row.as_ptr();
    // The maximum: exact, so any order gives the body's value (a NaN is skipped by both:
    // `maxps` returns its second operand, the body's compare-select keeps the old one).
    let mut m = [_mm512_set1_ps(f32::NEG_INFINITY); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (u, m) in m.iter_mut().enumerate() {
            // SAFETY: i + 16u + 16 <= n.
            *m = _mm512_max_ps(unsafe { _mm512_loadu_ps(x.add(i + 16 * u)) }, *m);
        }
        i += 64;
    }
    while i < n {
        let lanes = (n - i).min(16);
        let k: __mmask16 = if lanes == 16 { !0 } else { (1 << lanes) - 1 };
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        // SAFETY: the lanes below `lanes` are inside `row`; the others are not read.
        m[0] = _mm512_max_ps(unsafe { _mm512_mask_loadu_ps(ninf, k, x.add(i)) }, m[0]);
        i += 16;
    }
    let m = _mm512_max_ps(_mm512_max_ps(m[0], m[1]), _mm512_max_ps(m[2], m[3]));
    let mut lanes = [0.0f32; 16];
    // SAFETY: 16 floats into a 16-float array.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), m) };
    let max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);

    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0;
    let vmax = _mm512_set1_ps(max);
    let (floor, log2e, round) = (
        _mm512_set1_ps(-87.0),
        _mm512_set1_ps(LOG2E),
        _mm512_set1_ps(ROUND),
    );
    let c = [
        _mm512_set1_ps(std::f32::consts::LN_2),
        _mm512_set1_ps(0.240_226_5),
        _mm512_set1_ps(0.055_504_11),
        _mm512_set1_ps(0.009_618_129),
    ];
    let (one, bias) = (_mm512_set1_ps(1.0), _mm512_set1_epi32(0x4B40_0000 - 127));
    let (half_ulp, lsb) = (_mm512_set1_epi32(0x7fff), _mm512_set1_epi32(1));
    let mut sum = _mm512_setzero_ps();
    let full = n / 16 * 16;
    let o = out.as_mut_ptr();
    let mut i = 0;
    let mut tail = 0.0f32;
    while i < n {
        let lanes = (n - i).min(16);
        let k: __mmask16 = if lanes == 16 { !0 } else { (1 << lanes) - 1 };
        // SAFETY: the lanes below `lanes` are inside `row` and `out`; the others are not
        // touched.
        unsafe {
            let d = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, x.add(i)), vmax);
            let xc = _mm512_max_ps(d, floor); // `f32::max`: a NaN `d` gives −87
            let t = _mm512_mul_ps(xc, log2e);
            let shifted = _mm512_add_ps(t, round);
            let nn = _mm512_sub_ps(shifted, round);
            let f = _mm512_sub_ps(t, nn);
            let p = _mm512_add_ps(c[2], _mm512_mul_ps(f, c[3]));
            let p = _mm512_add_ps(c[1], _mm512_mul_ps(f, p));
            let p = _mm512_add_ps(c[0], _mm512_mul_ps(f, p));
            let p = _mm512_add_ps(one, _mm512_mul_ps(f, p));
            let scale =
                _mm512_slli_epi32::<23>(_mm512_sub_epi32(_mm512_castps_si512(shifted), bias));
            let e = _mm512_mul_ps(p, _mm512_castsi512_ps(scale));
            let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(d, floor);
            let e = _mm512_castps_si512(_mm512_maskz_mov_ps(!below, e));
            // bf16, nearest even: (b + 0x7fff + ((b >> 16) & 1)) >> 16.
            let b = _mm512_add_epi32(e, half_ulp);
            let b = _mm512_add_epi32(b, _mm512_and_si512(_mm512_srli_epi32::<16>(e), lsb));
            let b = _mm512_srli_epi32::<16>(b);
            _mm512_mask_cvtepi32_storeu_epi16(o.add(i).cast(), k, b);
            let v = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(b));
            if i < full {
                sum = _mm512_add_ps(sum, v);
            } else {
                let mut t = [0.0f32; 16];
                _mm512_storeu_ps(t.as_mut_ptr(), v);
                tail = t[..lanes].iter().sum();
            }
        }
        i += 16;
    }
    out[n..].fill(0);
    // SAFETY: 16 floats into a 16-float array.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
fn exp_to_bf16_body(row: &[f32], out: &mut [u16]) -> f32 {
    let max = row_max(row);
    let (live, rest) = out.split_at_mut(row.len());
    live.iter_mut()
        .zip(row)
        .for_each(|(o, &x)| *o = bf16_bits(exp_for_bf16(x - max)));
    rest.fill(0);
    let mut lanes = [0.0f32; 16];
    let chunks = live.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&b| bf16_value(b)).sum();
    for c in chunks {
        for (l, &b) in lanes.iter_mut().zip(c) {
            *l += bf16_value(b);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `e^x` for `x ≤ 0`, accurate to 6e-5 relatively (then rounded to bf16, whose half step is
/// 2⁻⁹ ≈ 2e-3): `2^n · p(f)` with `x·log₂e = n + f`, `|f| ≤ ½`, `p` the degree-4 Taylor
/// polynomial of `2^f` (remainder ≤ (ln 2)⁵/120 · 2⁻⁵ ≈ 4e-5). Half the work of the f32
/// softmax's `exp_nonpositive`; 0 below −87 (as there).
#[inline(always)]
fn exp_for_bf16(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    const C: [f32; 4] = [
        std::f32::consts::LN_2,
        0.240_226_5,   // (ln 2)²/2
        0.055_504_11,  // (ln 2)³/6
        0.009_618_129, // (ln 2)⁴/24
    ];
    let xc = x.max(-87.0);
    let t = xc * LOG2E;
    let shifted = t + ROUND;
    let n = shifted - ROUND;
    let f = t - n;
    let p = 1.0 + f * (C[0] + f * (C[1] + f * (C[2] + f * C[3])));
    let scale = f32::from_bits(shifted.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

/// `tile[r][c] = Σ_t q_pairs[r·half + t] · panel[t·32 + c]` (bf16 pairs) for `rows` queries.
fn score_tile(
    native: bool,
    rows: usize,
    q_pairs: &[u32],
    half: usize,
    panel: &[u32],
    tile: &mut [[f32; PANEL]; QK_ROWS],
) {
    assert!(rows <= QK_ROWS && q_pairs.len() >= (rows - 1) * half + half);
    assert!(panel.len() >= half * PANEL);
    #[cfg(target_arch = "x86_64")]
    if native {
        // SAFETY: AVX-512 BF16 checked by the caller; lengths checked above.
        unsafe { native::score_tile(rows, q_pairs, half, panel, tile) };
        return;
    }
    let _ = native;
    for (r, out) in tile.iter_mut().enumerate().take(rows) {
        let qr = &q_pairs[r * half..(r + 1) * half];
        *out = [0.0; PANEL];
        for (t, &qw) in qr.iter().enumerate() {
            let (a0, a1) = unpair(qw);
            let kw = &panel[t * PANEL..(t + 1) * PANEL];
            for (o, &k) in out.iter_mut().zip(kw) {
                let (b0, b1) = unpair(k);
                *o += a0 * b0 + a1 * b1;
            }
        }
    }
}

/// `acc[r][c] = Σ_s probs[r·p_stride + s] · values[s·v_stride + c]` (bf16 pairs), `s < steps`,
/// 64 columns, for `rows` queries.
#[allow(clippy::too_many_arguments)]
fn value_tile(
    native: bool,
    rows: usize,
    probs: &[u32],
    p_stride: usize,
    steps: usize,
    values: &[u32],
    v_stride: usize,
    acc: &mut [[f32; PV_COLS]; PV_ROWS],
) {
    assert!(rows <= PV_ROWS && rows > 0);
    assert!(probs.len() >= (rows - 1) * p_stride + steps);
    assert!(steps == 0 || values.len() >= (steps - 1) * v_stride + PV_COLS);
    #[cfg(target_arch = "x86_64")]
    if native {
        // SAFETY: AVX-512 BF16 checked by the caller; lengths checked above.
        unsafe { native::value_tile(rows, probs, p_stride, steps, values, v_stride, acc) };
        return;
    }
    let _ = native;
    for (r, out) in acc.iter_mut().enumerate().take(rows) {
        *out = [0.0; PV_COLS];
        for s in 0..steps {
            let (a0, a1) = unpair(probs[r * p_stride + s]);
            let vw = &values[s * v_stride..][..PV_COLS];
            for (o, &v) in out.iter_mut().zip(vw) {
                let (b0, b1) = unpair(v);
                *o += a0 * b0 + a1 * b1;
            }
        }
    }
}

#[inline(always)]
fn unpair(w: u32) -> (f32, f32) {
    (f32::from_bits(w << 16), f32::from_bits(w & 0xffff_0000))
}

#[cfg(target_arch = "x86_64")]
mod native {
    //! The `vdpbf16ps` micro-tiles (AVX-512 BF16).
    use super::{PANEL, PV_COLS, PV_ROWS, QK_ROWS};
    use std::arch::x86_64::*;

    /// 32 bf16 values from 16 words at `p`.
    ///
    /// # Safety
    /// AVX-512F present; `p` readable for 64 bytes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load_bf16(p: *const u32) -> __m512bh {
        // SAFETY: same size and no invalid bit patterns (both are plain 512-bit vectors).
        std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.cast()))
    }

    /// The word `w` (a bf16 pair) in every 32-bit lane.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn splat_pair(w: u32) -> __m512bh {
        // SAFETY: same size and no invalid bit patterns (both are plain 512-bit vectors).
        unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(w as i32)) }
    }

    /// See [`super::score_tile`].
    ///
    /// # Safety
    /// AVX-512F and AVX-512 BF16 present; `q_pairs` holds `rows` rows of `half` words at
    /// stride `half`; `panel` holds `half · 32` words.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn score_tile(
        rows: usize,
        q_pairs: &[u32],
        half: usize,
        panel: &[u32],
        tile: &mut [[f32; PANEL]; QK_ROWS],
    ) {
        macro_rules! rows {
            ($($n:literal)*) => {
                match rows {
                    $($n => score_rows::<$n>(q_pairs.as_ptr(), half, panel.as_ptr(), tile),)*
                    _ => unreachable!(),
                }
            };
        }
        rows!(1 2 3 4 5 6 7 8 9 10 11 12)
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn score_rows<const R: usize>(
        q: *const u32,
        half: usize,
        panel: *const u32,
        tile: &mut [[f32; PANEL]; QK_ROWS],
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for t in 0..half {
            // SAFETY: t < half, panel holds half · 32 words (caller).
            let b0: __m512bh = load_bf16(panel.add(t * PANEL));
            let b1: __m512bh = load_bf16(panel.add(t * PANEL + 16));
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: r < rows, t < half (caller).
                let a: __m512bh = splat_pair(*q.add(r * half + t));
                acc[0] = _mm512_dpbf16_ps(acc[0], a, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], a, b1);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(tile[r].as_mut_ptr(), acc[0]);
            _mm512_storeu_ps(tile[r].as_mut_ptr().add(16), acc[1]);
        }
    }

    /// See [`super::value_tile`].
    ///
    /// # Safety
    /// AVX-512F and AVX-512 BF16 present; slice extents as asserted by the caller.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn value_tile(
        rows: usize,
        probs: &[u32],
        p_stride: usize,
        steps: usize,
        values: &[u32],
        v_stride: usize,
        acc: &mut [[f32; PV_COLS]; PV_ROWS],
    ) {
        let (p, v) = (probs.as_ptr(), values.as_ptr());
        match rows {
            1 => value_rows::<1>(p, p_stride, steps, v, v_stride, acc),
            2 => value_rows::<2>(p, p_stride, steps, v, v_stride, acc),
            3 => value_rows::<3>(p, p_stride, steps, v, v_stride, acc),
            4 => value_rows::<4>(p, p_stride, steps, v, v_stride, acc),
            5 => value_rows::<5>(p, p_stride, steps, v, v_stride, acc),
            6 => value_rows::<6>(p, p_stride, steps, v, v_stride, acc),
            _ => unreachable!(),
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn value_rows<const R: usize>(
        p: *const u32,
        p_stride: usize,
        steps: usize,
        v: *const u32,
        v_stride: usize,
        out: &mut [[f32; PV_COLS]; PV_ROWS],
    ) {
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        for s in 0..steps {
            let row = v.add(s * v_stride);
            // SAFETY: s < steps; each step row holds 64 words (caller).
            let b: [__m512bh; 4] = [
                load_bf16(row),
                load_bf16(row.add(16)),
                load_bf16(row.add(32)),
                load_bf16(row.add(48)),
            ];
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: r < rows, s < steps (caller).
                let a: __m512bh = splat_pair(*p.add(r * p_stride + s));
                for (acc, &b) in acc.iter_mut().zip(&b) {
                    *acc = _mm512_dpbf16_ps(*acc, a, b);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (c, &a) in acc.iter().enumerate() {
                _mm512_storeu_ps(out[r].as_mut_ptr().add(16 * c), a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::attention::{attention, attention_scratch_len};
    use crate::cpu::testing::Rng;

    fn run(
        tiles: Bf16Tiles,
        pool: &CpuPool,
        shape: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
    ) -> Vec<f32> {
        let mut kv = Bf16KeyValues::new(shape.heads, shape.head_dim, shape.kv_len + 40);
        kv.pack(pool, k, v);
        let mut scratch = vec![f32::NAN; attention_bf16_scratch_len(pool, shape)];
        let mut out = vec![f32::NAN; q.len()];
        attention_bf16_on(tiles, pool, shape, q, &kv, &mut scratch, &mut out);
        out
    }

    #[test]
    fn exp_for_bf16_is_within_1e_4() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp_for_bf16(x) as f64) - want).abs() / want);
        }
        assert!(worst < 1e-4, "relative error {worst}");
        assert_eq!(exp_for_bf16(0.0), 1.0);
        assert_eq!(exp_for_bf16(-100.0), 0.0);
    }

    /// The AVX-512 probabilities and their sum equal the portable body's bit for bit.
    #[test]
    fn native_exp_to_bf16_equals_the_body() {
        if !has_native_bf16() {
            eprintln!("skipped: no AVX-512 BF16");
            return;
        }
        let mut rng = Rng::new(5);
        for len in [1, 15, 16, 17, 63, 64, 65, 100, 1500] {
            for special in [false, true] {
                let mut row = rng.vec(len, 20.0);
                if special {
                    row[len / 2] = f32::NAN;
                    row[len - 1] = -1e30;
                    row[0] = 200.0; // everything else underflows to 0
                }
                let pad = len.next_multiple_of(32) + 32;
                let (mut a, mut b) = (vec![7u16; pad], vec![9u16; pad]);
                let sa = exp_to_bf16(true, &row, &mut a);
                let sb = exp_to_bf16(false, &row, &mut b);
                assert_eq!(a, b, "len {len} special {special}");
                assert_eq!(sa.to_bits(), sb.to_bits(), "len {len} special {special}");
            }
        }
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // The bf16 step at 1.0 is 2⁻⁷ = 2/256.
        assert_eq!(bf16_value(bf16_bits(1.0 + 1.0 / 256.0)), 1.0); // tie → even
        assert_eq!(bf16_value(bf16_bits(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0); // tie → even
        assert_eq!(bf16_value(bf16_bits(1.0 + 1.1 / 256.0)), 1.0 + 2.0 / 256.0);
        assert_eq!(bf16_value(bf16_bits(-2.5)), -2.5);
    }

    #[test]
    fn bf16_attention_is_close_to_f32() {
        let mut rng = Rng::new(11);
        for threads in 1..=3 {
            let pool = CpuPool::new(threads);
            for (heads, q_len, kv_len, causal_offset) in [
                (1, 1, 1, None),
                (6, 1, 1500, None),   // decoder cross-attention, one token
                (6, 5, 1500, None),   // five beams
                (2, 40, 40, Some(0)), // causal prompt
                (3, 3, 20, Some(17)), // new tokens against a cache
                (2, 70, 333, None),   // odd kv_len, several blocks
                (1, 30, 1500, None),  // encoder-like
            ] {
                let shape = AttentionShape {
                    heads,
                    head_dim: 64,
                    q_len,
                    kv_len,
                    causal_offset,
                };
                let width = heads * 64;
                let q = rng.vec(q_len * width, 1.5);
                let k = rng.vec(kv_len * width, 1.5);
                let v = rng.vec(kv_len * width, 1.0);
                let mut s = vec![0.0; attention_scratch_len(&pool, &shape)];
                let mut want = vec![0.0; q.len()];
                attention(&pool, &shape, &q, &k, &v, &mut s, &mut want);
                let portable = run(Bf16Tiles::Portable, &pool, &shape, &q, &k, &v);
                // Scores here are O(5): a bf16 score error is ≈ 2⁻⁹·√2·‖q‖‖k‖/(8·√64) ≲ 0.02, i.e.
                // ≲ 2 % on a weight; with |v| ≤ 1 and bf16 v (2⁻⁹) an output moves ≲ 0.02.
                let worst = |got: &[f32]| {
                    got.iter()
                        .zip(&want)
                        .map(|(g, w)| (g - w).abs())
                        .fold(0.0f32, f32::max)
                };
                let w = worst(&portable);
                assert!(w < 2e-2, "{shape:?}: portable bf16 off by {w}");
                // The AVX-512 and (where the CPU has them) AMX tiles.
                for tiles in Bf16Tiles::available().into_iter().skip(1) {
                    let native = run(tiles, &pool, &shape, &q, &k, &v);
                    let w = worst(&native);
                    assert!(w < 2e-2, "{shape:?}: {tiles:?} bf16 off by {w}");
                    // Same bf16 products; only f32 summation order differs.
                    let gap = native
                        .iter()
                        .zip(&portable)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0f32, f32::max);
                    assert!(gap < 1e-5, "{shape:?}: {tiles:?} vs portable {gap}");
                }
            }
        }
    }

    #[test]
    fn repacking_shorter_clears_old_rows() {
        // A long pack then a short one: the short result must not see the old rows.
        let pool = CpuPool::new(2);
        let mut rng = Rng::new(3);
        let shape = AttentionShape {
            heads: 2,
            head_dim: 64,
            q_len: 3,
            kv_len: 37,
            causal_offset: None,
        };
        let width = 128;
        let (k_long, v_long) = (rng.vec(200 * width, 1.0), rng.vec(200 * width, 1.0));
        let (k, v) = (rng.vec(37 * width, 1.0), rng.vec(37 * width, 1.0));
        let q = rng.vec(3 * width, 1.0);
        let mut kv = Bf16KeyValues::new(2, 64, 200);
        kv.pack(&pool, &k_long, &v_long);
        kv.pack(&pool, &k, &v);
        let mut scratch = vec![0.0; attention_bf16_scratch_len(&pool, &shape)];
        let mut a = vec![0.0; q.len()];
        attention_bf16(&pool, &shape, &q, &kv, &mut scratch, &mut a);
        let mut fresh = Bf16KeyValues::new(2, 64, 200);
        fresh.pack(&pool, &k, &v);
        let mut b = vec![0.0; q.len()];
        attention_bf16(&pool, &shape, &q, &fresh, &mut scratch, &mut b);
        assert_eq!(a, b);
    }

    /// Both kernels over a [`Bf16KeyValues`] refuse, under their own names, keys and values
    /// packed for another shape and short scratch.
    #[test]
    fn both_entry_points_check_the_shared_contract() {
        use crate::cpu::attention_bf16_kv::{attention_bf16_kv, attention_bf16_kv_scratch_len};
        let pool = CpuPool::new(1);
        let shape = AttentionShape {
            heads: 2,
            head_dim: 64,
            q_len: 1,
            kv_len: 8,
            causal_offset: None,
        };
        let mut kv = Bf16KeyValues::new(2, 64, 16);
        let k = vec![0.5; 7 * 128];
        kv.pack(&pool, &k, &k); // 7 keys, not 8
        let q = vec![0.5; 128];
        let message = |f: &dyn Fn()| {
            let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_err();
            e.downcast_ref::<String>().cloned().unwrap_or_default()
        };
        let long = vec![0.0; 1 << 16];
        let m = message(&|| {
            let mut scratch = long.clone();
            attention_bf16(&pool, &shape, &q, &kv, &mut scratch, &mut vec![0.0; 128]);
        });
        assert_eq!(m, "attention_bf16: keys/values hold another shape");
        let m = message(&|| {
            let mut scratch = long.clone();
            attention_bf16_kv(&pool, &shape, &q, &kv, &mut scratch, &mut vec![0.0; 128]);
        });
        assert_eq!(m, "attention_bf16_kv: keys/values hold another shape");
        let k = vec![0.5; 8 * 128];
        kv.pack(&pool, &k, &k);
        let m = message(&|| {
            let mut scratch = vec![0.0; attention_bf16_kv_scratch_len(&pool, &shape) - 1];
            attention_bf16_kv(&pool, &shape, &q, &kv, &mut scratch, &mut vec![0.0; 128]);
        });
        assert_eq!(
            m,
            "attention_bf16_kv: scratch shorter than attention_bf16_kv_scratch_len"
        );
    }
}
