//! Key/value caches (a decoder's self-attention history, one slot per beam) in f32 and in bf16,
//! and attention of new queries over one slot.
//!
//! Both are allocated once per workspace, mapped lazily (a page on its first write: greedy
//! decoding touches slot 0 only), and written a few rows per call, so nothing is allocated per
//! token.
//!
//! - [`F32KeyValueCache`]: row-major `[slots][positions][heads·head_dim]` f32 keys and values,
//!   attended by [`crate::cpu::attention()`] on the slot's rows as stored: exactly the f32
//!   reference.
//! - [`Bf16KeyValueCache`]: one [`Bf16KeyValues`] per slot (the packed layout of the
//!   cross-attention keys/values), rows rounded to bf16 (nearest even) as they are written, and
//!   attended by [`crate::cpu::attention_bf16()`]: half the bytes of f32 stored and read per
//!   token, `vdpbf16ps` products where the CPU has AVX-512 BF16. Accuracy: see
//!   [the bf16 kernel](mod@crate::cpu::attention_bf16) (each stored value within 2⁻⁹
//!   relatively of its f32 projection) and the tests below.

use super::attention::{attention, AttentionShape};
use super::attention_bf16::{attention_bf16, Bf16KeyValues};
use super::attention_bf16_kv::attention_bf16_kv;
use super::pool::CpuPool;
use crate::resident::Buffer;

/// Self-attention history in f32: `slots` × `positions` rows of keys and values.
pub struct F32KeyValueCache {
    k: Buffer,
    v: Buffer,
    width: usize,
    positions: usize,
    slots: usize,
}

impl F32KeyValueCache {
    /// `slots` slots of `positions` rows of `width` values (lazily mapped).
    pub fn new(slots: usize, positions: usize, width: usize) -> Self {
        let len = slots * positions * width;
        Self {
            k: Buffer::lazy(len),
            v: Buffer::lazy(len),
            width,
            positions,
            slots,
        }
    }

    fn slot_range(&self, slot: usize, rows: std::ops::Range<usize>) -> std::ops::Range<usize> {
        assert!(
            slot < self.slots && rows.start <= rows.end && rows.end <= self.positions,
            "F32KeyValueCache: slot {slot} rows {rows:?} outside {} × {}",
            self.slots,
            self.positions
        );
        let base = slot * self.positions * self.width;
        base + rows.start * self.width..base + rows.end * self.width
    }

    /// Writes rows `k`, `v` (`[rows, width]`) at positions `pos..` of `slot`.
    ///
    /// # Panics
    /// If the rows do not fit the slot or `k`, `v` differ in length.
    pub fn write(&mut self, slot: usize, pos: usize, k: &[f32], v: &[f32]) {
        assert_eq!(k.len(), v.len(), "F32KeyValueCache::write: k and v differ");
        let r = self.slot_range(slot, pos..pos + k.len() / self.width.max(1));
        self.k[r.clone()].copy_from_slice(k);
        self.v[r].copy_from_slice(v);
    }

    /// Keys and values of positions `..len` of `slot`.
    pub fn rows(&self, slot: usize, len: usize) -> (&[f32], &[f32]) {
        let r = self.slot_range(slot, 0..len);
        (&self.k[r.clone()], &self.v[r])
    }

    /// Copies positions `..len` of slot `from` to slot `to`.
    pub fn copy_slot(&mut self, from: usize, to: usize, len: usize) {
        let (fr, tr) = (self.slot_range(from, 0..len), self.slot_range(to, 0..len));
        if from != to {
            self.k.copy_within(fr.clone(), tr.start);
            self.v.copy_within(fr, tr.start);
        }
    }

    /// [`crate::cpu::attention()`] of `q` over positions `..shape.kv_len` of `slot`.
    pub fn attention(
        &self,
        pool: &CpuPool,
        shape: &AttentionShape,
        q: &[f32],
        slot: usize,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        let (k, v) = self.rows(slot, shape.kv_len);
        attention(pool, shape, q, k, v, scratch, out);
    }
}

/// Self-attention history in bf16: one packed [`Bf16KeyValues`] per slot.
pub struct Bf16KeyValueCache {
    slots: Vec<Bf16KeyValues>,
    f32_arithmetic: bool,
}

impl Bf16KeyValueCache {
    /// `slots` slots of `positions` rows of `heads × head_dim` (lazily mapped).
    ///
    /// # Panics
    /// If `head_dim` is odd.
    pub fn new(slots: usize, positions: usize, heads: usize, head_dim: usize) -> Self {
        Self {
            slots: (0..slots)
                .map(|_| Bf16KeyValues::lazy(heads, head_dim, positions))
                .collect(),
            f32_arithmetic: false,
        }
    }

    /// Attends with [`crate::cpu::attention_bf16_kv()`] (f32 queries, softmax and
    /// probabilities; only the stored keys/values bf16) when `on`, else with
    /// [`crate::cpu::attention_bf16()`] (queries and probabilities rounded to bf16 too).
    pub fn with_f32_arithmetic(mut self, on: bool) -> Self {
        self.f32_arithmetic = on;
        self
    }

    /// Whether [`Bf16KeyValueCache::attention`] runs [`crate::cpu::attention_bf16_kv()`].
    pub fn f32_arithmetic(&self) -> bool {
        self.f32_arithmetic
    }

    /// Slot `slot` (its rows as stored).
    pub fn slot(&self, slot: usize) -> &Bf16KeyValues {
        &self.slots[slot]
    }

    /// Writes rows `k`, `v` at positions `pos..` of `slot`, rounded to bf16; the slot then holds
    /// positions `..pos + rows` (see [`Bf16KeyValues::write_rows`]).
    pub fn write(&mut self, slot: usize, pos: usize, k: &[f32], v: &[f32]) {
        self.slots[slot].write_rows(pos, k, v);
    }

    /// Copies positions `..len` of slot `from` to slot `to`.
    pub fn copy_slot(&mut self, from: usize, to: usize, len: usize) {
        if from == to {
            assert!(len <= self.slots[from].kv_len(), "copy_slot: rows not held");
            return;
        }
        let (src, dst) = if from < to {
            let (a, b) = self.slots.split_at_mut(to);
            (&a[from], &mut b[0])
        } else {
            let (a, b) = self.slots.split_at_mut(from);
            (&b[0], &mut a[to])
        };
        dst.copy_rows_from(src, len);
    }

    /// [`crate::cpu::attention_bf16()`] of `q` over slot `slot`, which must hold exactly
    /// `shape.kv_len` positions.
    pub fn attention(
        &self,
        pool: &CpuPool,
        shape: &AttentionShape,
        q: &[f32],
        slot: usize,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        if self.f32_arithmetic {
            attention_bf16_kv(pool, shape, q, &self.slots[slot], scratch, out);
        } else {
            attention_bf16(pool, shape, q, &self.slots[slot], scratch, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::attention::attention_scratch_len;
    use crate::cpu::attention_bf16::{attention_bf16_scratch_len, bf16_bits, bf16_value};
    use crate::cpu::attention_bf16_kv::attention_bf16_kv_scratch_len;
    use crate::cpu::testing::Rng;

    const HEADS: usize = 3;
    const D: usize = 64;
    const W: usize = HEADS * D;
    /// Two full key panels and an odd tail: the last position is a value step's low half.
    const POSITIONS: usize = 71;

    fn shape(q_len: usize, kv_len: usize) -> AttentionShape {
        AttentionShape {
            heads: HEADS,
            head_dim: D,
            q_len,
            kv_len,
            causal_offset: Some(kv_len - q_len),
        }
    }

    fn round(x: &[f32]) -> Vec<f32> {
        x.iter().map(|&x| bf16_value(bf16_bits(x))).collect()
    }

    fn f32_attention(pool: &CpuPool, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let s = shape(q.len() / W, k.len() / W);
        let mut scratch = vec![0.0; attention_scratch_len(pool, &s)];
        let mut out = vec![0.0; q.len()];
        attention(pool, &s, q, k, v, &mut scratch, &mut out);
        out
    }

    /// Slots of both caches and the f32 history the test keeps of each.
    struct Caches {
        f32: F32KeyValueCache,
        bf16: Bf16KeyValueCache,
        /// bf16 storage attended in f32 ([`attention_bf16_kv`]).
        bf16_kv: Bf16KeyValueCache,
        history: Vec<(Vec<f32>, Vec<f32>)>,
    }

    impl Caches {
        fn write(&mut self, slot: usize, pos: usize, k: &[f32], v: &[f32]) {
            self.f32.write(slot, pos, k, v);
            self.bf16.write(slot, pos, k, v);
            self.bf16_kv.write(slot, pos, k, v);
            let (hk, hv) = &mut self.history[slot];
            hk.truncate(pos * W);
            hv.truncate(pos * W);
            hk.extend_from_slice(k);
            hv.extend_from_slice(v);
        }

        fn copy(&mut self, from: usize, to: usize, len: usize) {
            self.f32.copy_slot(from, to, len);
            self.bf16.copy_slot(from, to, len);
            self.bf16_kv.copy_slot(from, to, len);
            let (k, v) = &self.history[from];
            self.history[to] = (k[..len * W].to_vec(), v[..len * W].to_vec());
        }

        /// Attends `q` over `slot` in both caches and checks them against f32 attention over
        /// the history: the f32 cache exactly; the bf16 cache within the bounds derived below.
        /// Returns the bf16 output.
        fn check(&self, pool: &CpuPool, slot: usize, q: &[f32]) -> Vec<f32> {
            let (k, v) = &self.history[slot];
            let s = shape(q.len() / W, k.len() / W);
            let mut scratch = vec![
                f32::NAN;
                attention_scratch_len(pool, &s)
                    .max(attention_bf16_scratch_len(pool, &s))
                    .max(attention_bf16_kv_scratch_len(pool, &s))
            ];
            let mut got32 = vec![f32::NAN; q.len()];
            self.f32
                .attention(pool, &s, q, slot, &mut scratch, &mut got32);
            let want = f32_attention(pool, q, k, v);
            assert_eq!(got32, want, "f32 cache, slot {slot}, {s:?}");

            let mut got = vec![f32::NAN; q.len()];
            self.bf16
                .attention(pool, &s, q, slot, &mut scratch, &mut got);
            // (a) Against f32 attention over the same inputs rounded to bf16 (q·d^-0.5 rounds
            // as q does: the scale is a power of two), the kernel's only rounding left is P:
            // each exp(s - max) is computed within 6e-5 and rounded to bf16 (within 2⁻⁹
            // relatively), and normalised by the sum of those very values, so each weight is
            // within (1 + 2⁻⁹ + 6e-5)/(1 - 2⁻⁹ - 6e-5) - 1 ≤ 4.2e-3 relatively, an output
            // within 4.2e-3 · max|v| (Σ weights = 1), plus f32 summation order (≤ 1e-5 here).
            let rounded = f32_attention(pool, &round(q), &round(k), &round(v));
            // bf16 storage attended in f32: only k and v are rounded, so it is f32 attention
            // over q and the rounded k, v, up to f32 summation order (≤ 1e-5 here: scores up
            // to ±32 over 64 terms, outputs ≤ 1).
            let mut got_kv = vec![f32::NAN; q.len()];
            self.bf16_kv
                .attention(pool, &s, q, slot, &mut scratch, &mut got_kv);
            let stored = f32_attention(pool, q, &round(k), &round(v));
            for (i, (g, r)) in got_kv.iter().zip(&stored).enumerate() {
                assert!(
                    (g - r).abs() <= 1e-5,
                    "slot {slot}, {s:?}, value {i}: {g} vs {r}, bf16 storage in f32"
                );
            }
            let max_v = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            for (i, (g, r)) in got.iter().zip(&rounded).enumerate() {
                assert!(
                    (g - r).abs() <= 4.2e-3 * max_v + 1e-5,
                    "slot {slot}, {s:?}, value {i}: {g} vs {r} on bf16 inputs"
                );
            }
            // (b) Against f32 attention over the unrounded inputs: q and k are each within 2⁻⁹
            // relatively (bf16 keeps 8 significant bits, round to nearest), so a score
            // Σ_c q_c k_c / 8 moves by at most δ = (2⁻⁸ + 2⁻¹⁸) · Σ_c |q_c k_c| / 8; a weight
            // ∝ exp(score) then by a factor within e^{±2δ} (its normaliser moves too), times the
            // 4.2e-3 of (a); v is within 2⁻⁹. Bound per (query, head), from the data.
            let eps = 2f32.powi(-8) + 2f32.powi(-18);
            for i in 0..s.q_len {
                for h in 0..HEADS {
                    let qh = &q[i * W + h * D..][..D];
                    let delta = (0..s.visible(i))
                        .map(|j| {
                            let kh = &k[j * W + h * D..][..D];
                            eps * qh.iter().zip(kh).map(|(a, b)| (a * b).abs()).sum::<f32>() / 8.0
                        })
                        .fold(0.0f32, f32::max);
                    let weights = (2.0 * delta).exp() * (1.0 + 4.2e-3) - 1.0;
                    let bound = (weights + 2f32.powi(-9)) * max_v + 1e-5;
                    for c in 0..D {
                        let at = i * W + h * D + c;
                        let err = (got[at] - want[at]).abs();
                        assert!(
                            err <= bound,
                            "slot {slot}, {s:?}, row {i} head {h}: {err} > {bound}"
                        );
                    }
                }
            }
            got
        }
    }

    #[test]
    fn bf16_cache_attention_is_f32_attention_within_bf16_rounding() {
        let pool = CpuPool::new(2);
        let mut rng = Rng::new(77);
        let mut c = Caches {
            f32: F32KeyValueCache::new(3, POSITIONS, W),
            bf16: Bf16KeyValueCache::new(3, POSITIONS, HEADS, D),
            bf16_kv: Bf16KeyValueCache::new(3, POSITIONS, HEADS, D).with_f32_arithmetic(true),
            history: vec![(Vec::new(), Vec::new()); 3],
        };
        // Queries up to 4 (peaked weights: scores up to ±32), keys and values up to 1.
        let mut rows = |n: usize| {
            (
                rng.vec(n * W, 4.0),
                rng.vec(n * W, 1.0),
                rng.vec(n * W, 1.0),
            )
        };

        // Position 0 alone (one key: every weight 1, the output is v rounded).
        let (q, k, v) = rows(1);
        c.write(0, 0, &k, &v);
        let got = c.check(&pool, 0, &q);
        assert_eq!(got, round(&v), "one key: the output is its bf16 value");

        // A prompt rewritten from position 0: 6 causal rows (the old row is dropped).
        let (q, k, v) = rows(6);
        c.write(0, 0, &k, &v);
        c.check(&pool, 0, &q);

        // Forks at an even (6) and, below, an odd length: slot copies attend exactly as the
        // original.
        c.copy(0, 1, 6);
        c.copy(0, 2, 6);
        let (q, _, _) = rows(1);
        let a = c.check(&pool, 0, &q);
        assert_eq!(a, c.check(&pool, 1, &q));
        assert_eq!(a, c.check(&pool, 2, &q));

        // Beams: one row per step into slots 2 and 1 up to the last position; slot 1 forks
        // from slot 2 at an odd length on the way.
        for pos in 6..POSITIONS {
            for slot in [2, 1] {
                let (q, k, v) = rows(1);
                c.write(slot, pos, &k, &v);
                c.check(&pool, slot, &q);
            }
            if pos == 40 {
                c.copy(2, 1, 41);
                let (q, _, _) = rows(1);
                assert_eq!(c.check(&pool, 2, &q), c.check(&pool, 1, &q));
            }
        }
        // Full slots, several causal rows at the end, and a fork back over a shorter slot.
        let (q, k, v) = rows(3);
        c.write(1, POSITIONS - 3, &k, &v);
        c.check(&pool, 1, &q);
        c.copy(1, 0, POSITIONS);
        let (q, _, _) = rows(2);
        assert_eq!(c.check(&pool, 0, &q), c.check(&pool, 1, &q));
    }

    #[test]
    #[should_panic(expected = "rows 3..4 with 2 held")]
    fn bf16_cache_refuses_a_gap() {
        let mut c = Bf16KeyValueCache::new(1, 8, 1, 64);
        c.write(0, 0, &[0.5; 128], &[0.5; 128]);
        c.write(0, 3, &[0.5; 64], &[0.5; 64]);
    }
}
