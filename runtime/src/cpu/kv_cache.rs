//! Key/value caches (a decoder's self-attention history, one slot per beam) in f32 and in bf16,
//! and attention of new queries over one slot.
//!
//! Both are allocated once per workspace, mapped lazily (a page on its first write: greedy
//! decoding touches slot 0 only), and written a few rows per call, so nothing is allocated per
//! token.
//!
//! - [`F32KeyValueCache`]: row-major `[slots][positions][heads·head_dim]` f32 keys and values,
//!   attended by [`crate::cpu::attention()`] on the slot's rows as stored: exactly the f32
//!   reference. A copy out of slot 0 shares its positions instead of copying them (beams
//!   forked after a prompt keep one copy of the prompt; see the type).
//! - [`Bf16KeyValueCache`]: one [`Bf16KeyValues`] per slot (the packed layout of the
//!   cross-attention keys/values), rows rounded to bf16 (nearest even) as they are written, and
//!   attended by [`crate::cpu::attention_bf16()`]: half the bytes of f32 stored and read per
//!   token, `vdpbf16ps` products where the CPU has AVX-512 BF16. Accuracy: see
//!   [the bf16 kernel](mod@crate::cpu::attention_bf16) (each stored value within 2⁻⁹
//!   relatively of its f32 projection) and the tests below.

use super::attention::{attention_split, AttentionShape, SplitRows};
use super::attention_bf16::{attention_bf16, Bf16KeyValues};
use super::attention_bf16_kv::attention_bf16_kv;
use super::pool::CpuPool;
use crate::resident::Buffer;

/// Self-attention history in f32: `slots` × `positions` rows of keys and values.
///
/// **Shared prefixes.** Slot 0 is the root. A copy out of it copies nothing: the target slot
/// records that its positions `..len` are slot 0's ("shared"). Every other slot stores its own
/// positions from where its shared ones end, at the start of its rows (position `p` in row
/// `p − shared`), and attention over it reads the shared positions from slot 0 and the rest
/// from its own rows ([`SplitRows`]: bit-identical to attention over a copy). So beams forked
/// after a prompt hold the prompt once, and each beam's rows hold only what it generated: the
/// same few rows in every window, not rows further down per window. A copy out of another slot
/// shares what that slot shares (up to `len`) and copies the rest. Copy semantics are kept
/// exactly: before slot 0's positions `p..` are overwritten (a write, or a copy into slot 0),
/// every slot sharing some of them first gets its own copy of those (`detach`). A copy of no
/// positions (`len = 0`) releases a slot: nothing is copied for it later.
pub struct F32KeyValueCache {
    k: Buffer,
    v: Buffer,
    width: usize,
    positions: usize,
    slots: usize,
    /// Per slot: how many of its first positions are read from slot 0 (0 for slot 0).
    shared: Vec<usize>,
    /// Per slot: the positions it holds (`..held`), as far as writes and copies tell.
    held: Vec<usize>,
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
            shared: vec![0; slots],
            held: vec![0; slots],
        }
    }

    /// Values of stored rows `rows` of `slot` (a row is position `shared + row`).
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

    /// Checks that positions `..end` fit a slot.
    fn check_positions(&self, slot: usize, end: usize) {
        assert!(
            slot < self.slots && end <= self.positions,
            "F32KeyValueCache: slot {slot} positions ..{end} outside {} × {}",
            self.slots,
            self.positions
        );
    }

    /// Writes rows `k`, `v` (`[rows, width]`) at positions `pos..` of `slot` (which then holds
    /// positions `..pos + rows`).
    ///
    /// # Panics
    /// If the rows do not fit the slot or `k`, `v` differ in length.
    pub fn write(&mut self, slot: usize, pos: usize, k: &[f32], v: &[f32]) {
        assert_eq!(k.len(), v.len(), "F32KeyValueCache::write: k and v differ");
        let end = pos + k.len() / self.width.max(1);
        self.check_positions(slot, end);
        if slot == 0 {
            self.detach(pos);
        } else if pos < self.shared[slot] {
            // Positions ..pos stay shared; the slot's own rows start again at pos.
            self.shared[slot] = pos;
        }
        let first = pos - self.shared[slot];
        let r = self.slot_range(slot, first..first + (end - pos));
        self.k[r.clone()].copy_from_slice(k);
        self.v[r].copy_from_slice(v);
        self.held[slot] = end;
    }

    /// Keys and values of positions `..len` of `slot`: those it shares with slot 0 (read
    /// there), then its own.
    pub fn rows(&self, slot: usize, len: usize) -> (SplitRows<'_>, SplitRows<'_>) {
        self.check_positions(slot, len);
        let shared = self.shared[slot].min(len);
        let head = 0..shared * self.width;
        let tail = self.slot_range(slot, 0..len - shared);
        let (k, v) = (&*self.k, &*self.v);
        (
            SplitRows {
                head: &k[head.clone()],
                tail: &k[tail.clone()],
            },
            SplitRows {
                head: &v[head],
                tail: &v[tail],
            },
        )
    }

    /// Positions `..len` of slot `from` become those of slot `to`: shared where `from` is
    /// slot 0 or shares them, copied otherwise.
    pub fn copy_slot(&mut self, from: usize, to: usize, len: usize) {
        self.check_positions(from, len);
        self.check_positions(to, len);
        if from == to {
            return;
        }
        let shared = self.shared[from].min(len);
        // `from`'s own rows 0..own are positions shared..len.
        let own = len - shared;
        if to == 0 {
            // Slot 0 already holds positions ..shared (they are what `from` shares).
            self.detach(shared);
            let (fr, tr) = (
                self.slot_range(from, 0..own),
                self.slot_range(0, shared..len),
            );
            self.k.copy_within(fr.clone(), tr.start);
            self.v.copy_within(fr, tr.start);
        } else {
            self.shared[to] = if from == 0 { len } else { shared };
            if from != 0 {
                let (fr, tr) = (self.slot_range(from, 0..own), self.slot_range(to, 0..own));
                self.k.copy_within(fr.clone(), tr.start);
                self.v.copy_within(fr, tr.start);
            }
        }
        self.held[to] = len;
    }

    /// Before slot 0's positions `pos..` change: every slot sharing some of them gets its own
    /// copy of those (its own rows move down to make room).
    fn detach(&mut self, pos: usize) {
        for slot in 1..self.slots {
            let shared = self.shared[slot];
            if shared <= pos {
                continue;
            }
            let (own, shift) = (self.held[slot].saturating_sub(shared), shared - pos);
            let (fr, to) = (
                self.slot_range(slot, 0..own),
                self.slot_range(slot, shift..shift + own).start,
            );
            self.k.copy_within(fr.clone(), to);
            self.v.copy_within(fr, to);
            let (fr, to) = (
                self.slot_range(0, pos..shared),
                self.slot_range(slot, 0..shift).start,
            );
            self.k.copy_within(fr.clone(), to);
            self.v.copy_within(fr, to);
            self.shared[slot] = pos;
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
        attention_split(pool, shape, q, k, v, scratch, out);
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
    use crate::cpu::attention::{attention, attention_scratch_len};
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

    /// The f32 cache's shared prefixes against a copying model: random forks (out of slot 0,
    /// between beams, into slot 0), releases, beam steps, prompts rewritten in slot 0 while
    /// other slots share it, and multi-row writes into sharing slots; attention over every
    /// slot equals f32 attention over the model's copy bit for bit.
    #[test]
    fn shared_prefixes_attend_exactly_as_copies() {
        const SLOTS: usize = 5;
        let pool = CpuPool::new(2);
        let mut rng = Rng::new(5);
        let mut cache = F32KeyValueCache::new(SLOTS, POSITIONS, W);
        let mut model: Vec<(Vec<f32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); SLOTS];
        let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
        let mut vals = Rng::new(6);
        let (mut checked, mut split_reads) = (0, 0);
        for step in 0..3000 {
            let held = |m: &Vec<(Vec<f32>, Vec<f32>)>, s: usize| m[s].0.len() / W;
            let slot = pick(SLOTS);
            match pick(10) {
                // A prompt: rows rewritten from some position at or below what the slot holds.
                0 => {
                    let (pos, rows) = (pick(held(&model, slot) + 1), 1 + pick(6));
                    if pos + rows > POSITIONS {
                        continue;
                    }
                    let (k, v) = (vals.vec(rows * W, 1.0), vals.vec(rows * W, 1.0));
                    cache.write(slot, pos, &k, &v);
                    let (mk, mv) = &mut model[slot];
                    mk.truncate(pos * W);
                    mv.truncate(pos * W);
                    mk.extend_from_slice(&k);
                    mv.extend_from_slice(&v);
                }
                // A fork (len 0: a release).
                1..=3 => {
                    let from = if pick(2) == 0 { 0 } else { pick(SLOTS) };
                    let len = if pick(8) == 0 { 0 } else { held(&model, from) };
                    cache.copy_slot(from, slot, len);
                    let (k, v) = &model[from];
                    model[slot] = (k[..len * W].to_vec(), v[..len * W].to_vec());
                }
                // A beam step: one row appended.
                _ => {
                    let pos = held(&model, slot);
                    if pos == POSITIONS {
                        continue;
                    }
                    let (k, v) = (vals.vec(W, 1.0), vals.vec(W, 1.0));
                    cache.write(slot, pos, &k, &v);
                    model[slot].0.extend_from_slice(&k);
                    model[slot].1.extend_from_slice(&v);
                }
            }
            if step % 7 != 0 {
                continue;
            }
            for s in 0..SLOTS {
                let len = held(&model, s);
                if len == 0 {
                    continue;
                }
                let q_len = 1 + (s + step) % 3.min(len);
                let q = vals.vec(q_len * W, 4.0);
                let shape = shape(q_len, len);
                let mut scratch = vec![f32::NAN; attention_scratch_len(&pool, &shape)];
                let mut got = vec![f32::NAN; q.len()];
                cache.attention(&pool, &shape, &q, s, &mut scratch, &mut got);
                let (k, v) = &model[s];
                assert_eq!(got, f32_attention(&pool, &q, k, v), "step {step} slot {s}");
                checked += 1;
                let (ks, _) = cache.rows(s, len);
                split_reads += usize::from(!ks.head.is_empty() && !ks.tail.is_empty());
            }
        }
        assert!(
            checked > 1000 && split_reads > 200,
            "{checked} checks, {split_reads} split"
        );
    }

    /// Forks out of slot 0 touch none of the target's rows, and a beam's own rows start at
    /// its first unshared position: after a 60-position prompt, four forks and ten steps,
    /// each beam's rows past its tenth are untouched (zero).
    #[test]
    fn forks_out_of_slot_0_copy_nothing() {
        let mut cache = F32KeyValueCache::new(5, POSITIONS, W);
        let mut rng = Rng::new(8);
        let (k, v) = (rng.vec(60 * W, 1.0), rng.vec(60 * W, 1.0));
        cache.write(0, 0, &k, &v);
        for slot in 1..5 {
            cache.copy_slot(0, slot, 60);
        }
        for pos in 60..70 {
            for slot in 0..5 {
                let (k, v) = (rng.vec(W, 1.0), rng.vec(W, 1.0));
                cache.write(slot, pos, &k, &v);
            }
        }
        for slot in 1..5 {
            let own = cache.slot_range(slot, 0..POSITIONS);
            let used = cache.slot_range(slot, 0..10);
            assert!(cache.k[used.clone()].iter().all(|&x| x != 0.0));
            assert!(cache.k[used.end..own.end].iter().all(|&x| x == 0.0));
            let (ks, _) = cache.rows(slot, 70);
            assert_eq!((ks.head.len(), ks.tail.len()), (60 * W, 10 * W));
            assert_eq!(ks.head, &k[..]);
        }
    }

    #[test]
    #[should_panic(expected = "rows 3..4 with 2 held")]
    fn bf16_cache_refuses_a_gap() {
        let mut c = Bf16KeyValueCache::new(1, 8, 1, 64);
        c.write(0, 0, &[0.5; 128], &[0.5; 128]);
        c.write(0, 3, &[0.5; 64], &[0.5; 64]);
    }
}
