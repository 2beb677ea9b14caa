//! Attention on a compute tile: the Rust model of `aie/kernels/attention.cc` (bit for bit,
//! `tests/host_build.rs`).
//!
//! One call group handles [`Q_ROWS`] queries of one head (head width [`HEAD_DIM`]) against up
//! to [`MAX_KEYS`] keys, streamed in chunks of [`KEY_CHUNK`] keys, in three passes:
//!
//! 1. **scores** ([`scores`]): `Q·Kᵀ` with int8 operands and **i32 accumulation** (exact), then
//!    `s = acc as f32 · (qs[i]·log2 e) · ks[j]` in f32, where `qs` already includes
//!    `head_dim^-½`: the scores are in log2 units, so the softmax takes `2^(s − max)`;
//! 2. **softmax** ([`softmax`]) over the whole row **in f32**, 16 lanes at a time as the
//!    kernel's vector code runs it: the maximum; `e = 2^(s − max)` ([`exp2_nonpos`]) stored
//!    over the scores (in place: no second L1 row, no second exponential); the sum in 16
//!    interleaved lanes (`lane[j % 16] += e[j]`) added as a tree (8 + 8, 4 + 4, 2 + 2, 1 + 1);
//!    `p = e · (1/sum)`, and only then narrowed to bf16 (round to nearest even). Scores are
//!    never narrowed (an earlier NPU attempt clamped them to int8 before the softmax and
//!    reached a correlation of 0.18 with the reference);
//! 3. **P·V** ([`pv`]): bf16 × bf16 products (exact in f32) accumulated in f32, one key at a
//!    time in increasing key order — the AIE2 native bf16 `mmul<4, 8, 4>` with an f32
//!    accumulator. The order inside one hardware `mac` is not documented; on the array the
//!    f32 sums may round differently (not checked: no NPU here). On the host build it is this
//!    order.
//!
//! L1 per tile: Q 256 B, K chunks 2 × 2 KB, V chunks 2 × 4 KB, scores 4 × 1536 × 4 = 24 KB,
//! P 4 × 1536 × 2 = 12 KB, output 1 KB: ≈ 50 KB of the 64 KB (`crate::design::attention`).

use super::layout::{a_offset, w_offset};
use super::numerics::{bf16_round, bf16_to_f32, exp2_nonpos, LOG2_E};

/// Queries per call group (one `mmul` block row).
pub const Q_ROWS: usize = 4;
/// Head width of every Whisper model.
pub const HEAD_DIM: usize = 64;
/// Keys per K / V chunk.
pub const KEY_CHUNK: usize = 32;
/// Largest key count (1500 audio frames, rounded up to whole chunks with room).
pub const MAX_KEYS: usize = 1536;
/// f32 lanes of the softmax's vectors (one AIE2 512-bit register).
pub const SOFTMAX_LANES: usize = 16;
/// Bytes of a Q object: 4 × 64 int8 in one row of 4×8 blocks (the A-object order).
pub const Q_BYTES: usize = Q_ROWS * HEAD_DIM;
/// Bytes of a K chunk: 32 keys × 64 int8 in 8×8 blocks (the W-object order).
pub const K_BYTES: usize = KEY_CHUNK * HEAD_DIM;
/// Elements of a V chunk: 32 keys × 64 bf16, row-major (already the `mmul` B order).
pub const V_ELEMS: usize = KEY_CHUNK * HEAD_DIM;

/// Offset of query `i`, dimension `d` in a Q object.
#[inline]
pub const fn q_offset(i: usize, d: usize) -> usize {
    a_offset(i, d)
}

/// Offset of key `j` (within the chunk), dimension `d` in a K chunk.
#[inline]
pub const fn k_offset(j: usize, d: usize) -> usize {
    w_offset(j, d)
}

/// Pass 1 for one K chunk: `scores[i·MAX_KEYS + key0 + j] = acc · (qs[i]·log2 e) · ks[j]`.
pub fn scores(q: &[i8], qs: &[f32], k: &[i8], ks: &[f32], key0: usize, scores: &mut [f32]) {
    for i in 0..Q_ROWS {
        let qsl = qs[i] * LOG2_E;
        for j in 0..KEY_CHUNK {
            let mut acc = 0i32;
            for d in 0..HEAD_DIM {
                acc += q[q_offset(i, d)] as i32 * k[k_offset(j, d)] as i32;
            }
            scores[i * MAX_KEYS + key0 + j] = acc as f32 * qsl * ks[j];
        }
    }
}

/// Pass 2: row `i` keeps keys `0..limits[i]` (`limits[i] ≤ MAX_KEYS`; a causal row passes its
/// position + 1, a padding row 0), writes their probabilities as bf16 to `p[i·MAX_KEYS..]` and
/// zeros to the rest of the row up to `n_keys` (the keys pass 3 will read; a multiple of
/// [`SOFTMAX_LANES`]). The kept keys' scores, in whole vectors of 16, are replaced by
/// `e = 2^(s − max)`: masked keys of the last vector first become −∞ (so `e = 0` there).
///
/// # Panics
/// If `n_keys` is not a multiple of [`SOFTMAX_LANES`] or exceeds [`MAX_KEYS`].
pub fn softmax(scores: &mut [f32], limits: &[u32], n_keys: usize, p: &mut [u16]) {
    assert!(
        n_keys.is_multiple_of(SOFTMAX_LANES) && n_keys <= MAX_KEYS,
        "softmax: n_keys = {n_keys}"
    );
    for i in 0..Q_ROWS {
        let row = &mut scores[i * MAX_KEYS..(i + 1) * MAX_KEYS];
        let prow = &mut p[i * MAX_KEYS..(i + 1) * MAX_KEYS];
        let lim = (limits[i] as usize).min(n_keys);
        if lim == 0 {
            prow[..n_keys].fill(0);
            continue;
        }
        let whole = lim.next_multiple_of(SOFTMAX_LANES);
        row[lim..whole].fill(f32::NEG_INFINITY);
        // The maximum is exact: any order gives the kernel's value.
        let max = row[..whole]
            .iter()
            .fold(f32::NEG_INFINITY, |m, &s| if m < s { s } else { m });
        let mut lanes = [0.0f32; SOFTMAX_LANES];
        for (j, s) in row[..whole].iter_mut().enumerate() {
            *s = exp2_nonpos(*s - max);
            lanes[j % SOFTMAX_LANES] += *s;
        }
        let inv = 1.0 / tree_sum(lanes);
        for (d, &e) in prow[..whole].iter_mut().zip(&row[..whole]) {
            *d = bf16_round(e * inv);
        }
        prow[whole..n_keys].fill(0);
    }
}

/// The kernel's reduction of its 16 sum lanes: halves added lane by lane (8, 4, 2, 1).
fn tree_sum(mut lanes: [f32; SOFTMAX_LANES]) -> f32 {
    let mut n = SOFTMAX_LANES / 2;
    while n > 0 {
        let (lo, hi) = lanes.split_at_mut(n);
        for (a, &b) in lo.iter_mut().zip(&hi[..n]) {
            *a += b;
        }
        n /= 2;
    }
    lanes[0]
}

/// Pass 3 for one V chunk: `out[i·HEAD_DIM + c] += Σ_j p[i, key0 + j] · v[j, c]`, one key at a
/// time in increasing order.
pub fn pv(p: &[u16], v: &[u16], key0: usize, out: &mut [f32]) {
    for i in 0..Q_ROWS {
        for c in 0..HEAD_DIM {
            let mut acc = out[i * HEAD_DIM + c];
            for j in 0..KEY_CHUNK {
                let pj = bf16_to_f32(p[i * MAX_KEYS + key0 + j]);
                acc += pj * bf16_to_f32(v[j * HEAD_DIM + c]);
            }
            out[i * HEAD_DIM + c] = acc;
        }
    }
}

/// One head's attention for any number of queries through the tile kernels (the order the
/// device program runs them), for tests and the emulator: `q` (`n_q × 64` codes, row-major)
/// with per-row scales `qs` (including `head_dim^-½`), `k` (`n_keys × 64` codes) with `ks`,
/// `v` (`n_keys × 64` bf16), `limits[i]` keys for query `i`. Returns `n_q × 64` f32.
pub fn attend(q: &[i8], qs: &[f32], k: &[i8], ks: &[f32], v: &[u16], limits: &[u32]) -> Vec<f32> {
    let n_q = qs.len();
    let n_keys = ks.len();
    assert!(n_keys <= MAX_KEYS, "attend: {n_keys} keys > {MAX_KEYS}");
    let chunks = n_keys.div_ceil(KEY_CHUNK);
    let mut out = vec![0.0f32; n_q * HEAD_DIM];
    let mut sc = vec![0.0f32; Q_ROWS * MAX_KEYS];
    let mut p = vec![0u16; Q_ROWS * MAX_KEYS];
    let mut qo = [0i8; Q_BYTES];
    let mut ko = [0i8; K_BYTES];
    let mut vo = [0u16; V_ELEMS];
    for g in 0..n_q.div_ceil(Q_ROWS) {
        let mut qsg = [0.0f32; Q_ROWS];
        let mut lim = [0u32; Q_ROWS];
        qo.fill(0);
        for i in 0..Q_ROWS.min(n_q - g * Q_ROWS) {
            let r = g * Q_ROWS + i;
            qsg[i] = qs[r];
            lim[i] = limits[r];
            for d in 0..HEAD_DIM {
                qo[q_offset(i, d)] = q[r * HEAD_DIM + d];
            }
        }
        for c in 0..chunks {
            let mut ksc = [0.0f32; KEY_CHUNK];
            ko.fill(0);
            for j in 0..KEY_CHUNK.min(n_keys - c * KEY_CHUNK) {
                let key = c * KEY_CHUNK + j;
                ksc[j] = ks[key];
                for d in 0..HEAD_DIM {
                    ko[k_offset(j, d)] = k[key * HEAD_DIM + d];
                }
            }
            scores(&qo, &qsg, &ko, &ksc, c * KEY_CHUNK, &mut sc);
        }
        softmax(&mut sc, &lim, chunks * KEY_CHUNK, &mut p);
        let mut og = [0.0f32; Q_ROWS * HEAD_DIM];
        for c in 0..chunks {
            vo.fill(0);
            let keys = KEY_CHUNK.min(n_keys - c * KEY_CHUNK);
            vo[..keys * HEAD_DIM]
                .copy_from_slice(&v[c * KEY_CHUNK * HEAD_DIM..(c * KEY_CHUNK + keys) * HEAD_DIM]);
            pv(&p, &vo, c * KEY_CHUNK, &mut og);
        }
        let rows = Q_ROWS.min(n_q - g * Q_ROWS);
        out[g * Q_ROWS * HEAD_DIM..(g * Q_ROWS + rows) * HEAD_DIM]
            .copy_from_slice(&og[..rows * HEAD_DIM]);
    }
    out
}

/// Quantizes rows of width 64 per row, as the CPU INT8 path does
/// (`amanuensis_runtime::q8::quant::quantize_row`: `round_half_away(x · 127/max)`, ±127):
/// returns (codes, scales).
pub fn quantize_rows(x: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let mut codes = vec![0i8; x.len()];
    let mut scales = Vec::with_capacity(x.len() / HEAD_DIM);
    for (row, out) in x
        .chunks_exact(HEAD_DIM)
        .zip(codes.chunks_exact_mut(HEAD_DIM))
    {
        let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if !(max > 0.0 && max.is_finite()) {
            scales.push(0.0);
            continue;
        }
        let inv = 127.0 / max;
        for (o, &v) in out.iter_mut().zip(row) {
            let y = v * inv;
            let t = y.trunc();
            let r = if (y - t).abs() >= 0.5 {
                t + y.signum()
            } else {
                t
            };
            *o = r.clamp(-127.0, 127.0) as i8;
        }
        scales.push(max / 127.0);
    }
    (codes, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn f(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// f64 softmax attention on the unquantized inputs.
    fn reference(q: &[f32], k: &[f32], v: &[f32], limits: &[u32]) -> Vec<f32> {
        let n_q = q.len() / HEAD_DIM;
        let mut out = vec![0.0; q.len()];
        for i in 0..n_q {
            let lim = limits[i] as usize;
            let s: Vec<f64> = (0..lim)
                .map(|j| {
                    (0..HEAD_DIM)
                        .map(|d| q[i * 64 + d] as f64 * k[j * 64 + d] as f64)
                        .sum::<f64>()
                        / 8.0
                })
                .collect();
            let max = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for c in 0..HEAD_DIM {
                let o: f64 = (0..lim).map(|j| e[j] / sum * v[j * 64 + c] as f64).sum();
                out[i * 64 + c] = o as f32;
            }
        }
        out
    }

    fn run(n_q: usize, n_keys: usize, causal: bool, amp: f32) -> (f32, f64) {
        let mut r = Rng(n_q as u64 * 1000 + n_keys as u64);
        let q: Vec<f32> = (0..n_q * 64).map(|_| r.f() * amp).collect();
        let k: Vec<f32> = (0..n_keys * 64).map(|_| r.f() * amp).collect();
        let v: Vec<f32> = (0..n_keys * 64).map(|_| r.f()).collect();
        let limits: Vec<u32> = (0..n_q)
            .map(|i| {
                if causal {
                    (n_keys - n_q + i + 1) as u32
                } else {
                    n_keys as u32
                }
            })
            .collect();
        let (qc, mut qs) = quantize_rows(&q);
        let (kc, ks) = quantize_rows(&k);
        qs.iter_mut().for_each(|s| *s *= 0.125);
        let vb: Vec<u16> = v.iter().map(|&x| bf16_round(x)).collect();
        let got = attend(&qc, &qs, &kc, &ks, &vb, &limits);
        let want = reference(&q, &k, &v, &limits);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        let (mut sab, mut saa, mut sbb) = (0.0f64, 0.0f64, 0.0f64);
        for (a, b) in got.iter().zip(&want) {
            sab += *a as f64 * *b as f64;
            saa += *a as f64 * *a as f64;
            sbb += *b as f64 * *b as f64;
        }
        (err, sab / (saa * sbb).sqrt())
    }

    #[test]
    fn close_to_f64_attention_at_whisper_shapes() {
        // Encoder self-attention (one group of the 1500 × 1500), cross-attention of a beam of
        // 5, causal decoder self-attention. Error sources: int8 Q/K (score error ≲ 0.02·|s|),
        // bf16 P and V (2^-9 relative each): the output error stays below 2e-2·max|V| (the CPU
        // INT8 attention's bound, docs/int8-layout.md §5).
        for (n_q, n_keys, causal, amp) in [
            (8, 1500, false, 1.5),
            (5, 1500, false, 1.5),
            (5, 37, true, 2.0),
            (1, 1, true, 1.0),
        ] {
            let (err, corr) = run(n_q, n_keys, causal, amp);
            assert!(err < 2e-2, "{n_q}×{n_keys}: max error {err}");
            assert!(corr > 0.999, "{n_q}×{n_keys}: correlation {corr}");
        }
    }

    #[test]
    fn padding_rows_and_masked_keys_get_zero_probability() {
        let mut sc = vec![1.0f32; Q_ROWS * MAX_KEYS];
        // Masked keys score higher than the kept ones: they must not set the row's maximum.
        sc[3..64].fill(50.0);
        let mut p = vec![7u16; Q_ROWS * MAX_KEYS];
        softmax(&mut sc, &[3, 0, 64, 1], 64, &mut p);
        assert!(p[..3].iter().all(|&x| x == bf16_round(1.0 / 3.0)));
        assert!(p[3..64].iter().all(|&x| x == 0));
        assert!(p[MAX_KEYS..MAX_KEYS + 64].iter().all(|&x| x == 0));
        assert_eq!(p[3 * MAX_KEYS], bf16_round(1.0));
        // Beyond n_keys nothing is written.
        assert_eq!(p[64], 7);
        // The kept keys' weights replace their scores; the last vector's masked lanes hold 0.
        assert_eq!(&sc[..4], &[1.0, 1.0, 1.0, 0.0]);
        assert_eq!(sc[16], 50.0);
    }

    #[test]
    fn softmax_is_within_bf16_rounding_of_the_exact_softmax() {
        // Scores in log2 units spread over ±40 (far keys underflow to 0 through the floor),
        // full, causal and single-key rows. Per probability: the bf16 narrowing (2^-8
        // relative at most: 7 stored mantissa bits) plus the f32 softmax before it (2^t within 3.5e-6, the 16-lane sums of ≤ 96
        // terms within ~6e-6, 1/sum and the product 2^-24 each): under 2^-8 + 2e-5 relative.
        let mut r = Rng(77);
        let n_keys = 1504;
        let mut sc: Vec<f32> = (0..Q_ROWS * MAX_KEYS).map(|_| r.f() * 40.0).collect();
        let orig = sc.clone();
        let limits = [1500, 37, 1, 1504];
        let mut p = vec![0u16; Q_ROWS * MAX_KEYS];
        softmax(&mut sc, &limits, n_keys, &mut p);
        let mut worst = 0.0f64;
        for (i, &lim) in limits.iter().enumerate() {
            let row = &orig[i * MAX_KEYS..][..lim as usize];
            let max = row.iter().fold(f64::MIN, |m, &s| m.max(s as f64));
            let sum: f64 = row.iter().map(|&s| (s as f64 - max).exp2()).sum();
            let mut total = 0.0f64;
            for (j, &s) in row.iter().enumerate() {
                let want = (s as f64 - max).exp2() / sum;
                let got = bf16_to_f32(p[i * MAX_KEYS + j]) as f64;
                total += got;
                if got == 0.0 {
                    // Only below the floor (2^-100 of the row's largest weight).
                    assert!(
                        s as f64 - max < -100.0,
                        "row {i} key {j}: {want:e} became 0"
                    );
                } else {
                    worst = worst.max(((got - want) / want).abs());
                }
            }
            assert!(
                (total - 1.0).abs() < 1e-2,
                "row {i}: probabilities sum to {total}"
            );
            assert!(p[i * MAX_KEYS + lim as usize..][..n_keys - lim as usize]
                .iter()
                .all(|&x| x == 0));
        }
        let bound = 1.0 / 256.0 + 2e-5;
        assert!(worst < bound, "worst relative error {worst:e}");
        assert!(
            worst > 1.0 / 512.0,
            "bf16 rounding is visible (worst {worst:e})"
        );
    }
}

#[cfg(test)]
mod cpu_quantizer {
    #[test]
    fn quantize_rows_equals_the_cpu_int8_quantizer() {
        let x: Vec<f32> = (0..64 * 40)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.031)
            .collect();
        let (codes, scales) = super::quantize_rows(&x);
        for (r, row) in x.chunks_exact(64).enumerate() {
            let mut want = [0i8; 64];
            let s = amanuensis_runtime::q8::quant::quantize_row(row, &mut want);
            assert_eq!(s.to_bits(), scales[r].to_bits());
            assert_eq!(&codes[r * 64..(r + 1) * 64], &want[..]);
        }
    }
}
