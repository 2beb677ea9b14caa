//! Multi-head scaled dot-product attention over a whole layer (all heads at once).

use super::gemm_kernels::{dot_block, packed_tile, packed_tile_split, Isa, Tile, DOT_R, MR, NR};
use super::packed::packed_len;
use super::pool::{CpuPool, DisjointSlice};
use super::softmax::softmax_in_place;

/// Shape of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// Number of heads.
    pub heads: usize,
    /// Width of one head; rows of q, k, v and out are `heads · head_dim` wide.
    pub head_dim: usize,
    /// Number of query rows.
    pub q_len: usize,
    /// Number of key/value rows.
    pub kv_len: usize,
    /// `None`: every query sees every key. `Some(off)`: query `i` (absolute position `off + i`)
    /// sees keys `0..=off + i` only (requires `off + q_len <= kv_len`).
    pub causal_offset: Option<usize>,
}

impl AttentionShape {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Checks the slice lengths every attention kernel (`kernel` names it in the panic) relies
    /// on; returns false when there is nothing to compute (no queries or zero width).
    ///
    /// # Panics
    /// On a length that does not match the shape, or a causal window past the keys.
    pub(crate) fn check(&self, kernel: &str, q: &[f32], k: &[f32], v: &[f32], out: &[f32]) -> bool {
        self.check_split(kernel, q, SplitRows::whole(k), SplitRows::whole(v), out)
    }

    /// [`AttentionShape::check`] for keys and values in pieces.
    fn check_split(
        &self,
        kernel: &str,
        q: &[f32],
        k: SplitRows,
        v: SplitRows,
        out: &[f32],
    ) -> bool {
        k.check(kernel, "k", self.kv_len, self.width());
        v.check(kernel, "v", self.kv_len, self.width());
        self.check_queries(kernel, q, out)
    }

    /// The part of [`AttentionShape::check`] that does not look at the keys and values (for
    /// kernels that take them in another form): `q` and `out` lengths, keys present, causal
    /// window inside them; false when there is nothing to compute.
    ///
    /// # Panics
    /// On a length that does not match the shape, or a causal window past the keys.
    pub(crate) fn check_queries(&self, kernel: &str, q: &[f32], out: &[f32]) -> bool {
        let (width, q_len, kv_len) = (self.width(), self.q_len, self.kv_len);
        assert_eq!(
            q.len(),
            q_len * width,
            "{kernel}: q is not q_len·heads·head_dim"
        );
        assert_eq!(
            out.len(),
            q_len * width,
            "{kernel}: out is not q_len·heads·head_dim"
        );
        if q_len == 0 || width == 0 {
            return false;
        }
        assert!(kv_len > 0, "{kernel}: no keys");
        if let Some(off) = self.causal_offset {
            assert!(
                off + q_len <= kv_len,
                "{kernel}: causal_offset + q_len > kv_len"
            );
        }
        true
    }

    /// Number of keys query `i` attends to.
    pub(crate) fn visible(&self, i: usize) -> usize {
        match self.causal_offset {
            Some(off) => off + i + 1,
            None => self.kv_len,
        }
    }
}

/// Key or value rows (`[kv_len, heads·head_dim]`) held in two pieces, `head` then `tail`, each
/// a whole number of rows: a key/value cache slot whose first positions are another slot's
/// (see [`crate::cpu::F32KeyValueCache`]). Rows in one piece: [`SplitRows::whole`].
#[derive(Clone, Copy, Debug)]
pub struct SplitRows<'a> {
    /// The first rows.
    pub head: &'a [f32],
    /// The rows after them.
    pub tail: &'a [f32],
}

impl<'a> SplitRows<'a> {
    /// All rows in one piece.
    pub fn whole(rows: &'a [f32]) -> Self {
        Self {
            head: rows,
            tail: &[],
        }
    }

    /// Rows in `head` (`width > 0`).
    fn split(&self, width: usize) -> usize {
        self.head.len() / width
    }

    /// The values from row `j` to the end of its piece.
    fn from(&self, j: usize, width: usize) -> &'a [f32] {
        let split = self.split(width);
        if j < split {
            &self.head[j * width..]
        } else {
            &self.tail[(j - split) * width..]
        }
    }

    /// Checks that the pieces hold `kv_len` whole rows of `width` (`kernel` names the caller
    /// in the panic).
    fn check(&self, kernel: &str, name: &str, kv_len: usize, width: usize) {
        assert_eq!(
            self.head.len() + self.tail.len(),
            kv_len * width,
            "{kernel}: {name} is not kv_len·heads·head_dim"
        );
        assert!(
            width == 0 || self.head.len().is_multiple_of(width),
            "{kernel}: {name} split inside a row"
        );
    }
}

/// Queries per task on the fast path (4 micro-tile rows); their score rows (`kv_len` each)
/// are the per-thread scratch.
const SCORE_ROWS: usize = 4 * MR;
/// Up to this many queries, scores are dot products against the keys as stored; above, each
/// head's keys are first packed into micro-kernel panels (in `scratch`).
const DOT_MAX_Q: usize = 8;
/// Keys per dot-block call on the small-query path.
const DOT_KEYS: usize = 64;
/// Queries per task on the simple path (head_dim not a multiple of 16).
const SIMPLE_TASK_QUERIES: usize = 16;

/// Whether the micro-kernel path applies (it reads values in 16-column blocks).
fn fast_path(shape: &AttentionShape) -> bool {
    shape.head_dim.is_multiple_of(NR)
}

/// Whether the keys are packed per head before the scores are computed.
fn packs_keys(shape: &AttentionShape) -> bool {
    fast_path(shape) && shape.q_len > DOT_MAX_Q
}

/// Scratch length [`attention`] needs for `shape` (enough for any smaller shape too): score
/// rows for each pool thread, plus, when `q_len > 8`, every head's keys in packed form.
pub fn attention_scratch_len(pool: &CpuPool, shape: &AttentionShape) -> usize {
    let scores = pool.threads() * SCORE_ROWS * shape.kv_len;
    let keys = if packs_keys(shape) {
        shape.heads * packed_len(shape.kv_len, shape.head_dim)
    } else {
        0
    };
    scores + keys
}

/// `out = softmax(q·kᵀ · head_dim^-0.5 [+ causal mask]) · v`, per head.
///
/// `q`: `[q_len, heads·head_dim]`; `k`, `v`: `[kv_len, heads·head_dim]`; `out`:
/// `[q_len, heads·head_dim]`; head `h` occupies columns `h·head_dim..(h+1)·head_dim` of every
/// row. `scratch` must be at least [`attention_scratch_len`] long; nothing is allocated.
///
/// Parallel over (head, block of 24 queries). With `head_dim` a multiple of 16 (Whisper: 64)
/// both products run on the GEMM micro-kernels: scores as a 6×16 tile product against packed
/// keys (or register-tiled dot products for ≤ 8 queries, e.g. decoding), then softmax per row,
/// then probabilities × values read in place as 16-column blocks. Other head sizes take a
/// plain (slower) path.
///
/// # Panics
/// If a slice length does not match the shape, `kv_len == 0` (with `q_len > 0`), or
/// `causal_offset + q_len > kv_len`.
pub fn attention(
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scratch: &mut [f32],
    out: &mut [f32],
) {
    attention_split(
        pool,
        shape,
        q,
        SplitRows::whole(k),
        SplitRows::whole(v),
        scratch,
        out,
    );
}

/// [`attention()`] with the keys and values in two pieces each ([`SplitRows`]): the same
/// arithmetic in the same order, so the output is bit-identical to [`attention()`] over the
/// rows in one piece.
///
/// # Panics
/// As [`attention()`]; also if a piece does not hold whole rows.
pub fn attention_split(
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    k: SplitRows,
    v: SplitRows,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    assert!(
        scratch.len() >= attention_scratch_len(pool, shape),
        "attention: scratch shorter than attention_scratch_len"
    );
    if !shape.check_split("attention", q, k, v, out) {
        return;
    }
    if fast_path(shape) {
        attention_tiled(Isa::detect(), pool, shape, q, k, v, scratch, out);
    } else {
        attention_simple(pool, shape, q, k, v, scratch, out);
    }
}

/// The micro-kernel path (`head_dim % 16 == 0`); shapes already checked.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_tiled(
    isa: Isa,
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    k: SplitRows,
    v: SplitRows,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let AttentionShape {
        heads,
        head_dim: d,
        q_len,
        kv_len,
        ..
    } = *shape;
    let width = shape.width();
    let scale = (d as f32).powf(-0.5);
    let (score_buf, key_buf) = scratch.split_at_mut(pool.threads() * SCORE_ROWS * kv_len);
    let head_keys_len = packed_len(kv_len, d);
    let key_panels = kv_len.div_ceil(NR);
    if packs_keys(shape) {
        let key_buf = DisjointSlice::new(&mut key_buf[..heads * head_keys_len]);
        const PANELS_PER_TASK: usize = 16;
        let tasks_per_head = key_panels.div_ceil(PANELS_PER_TASK);
        pool.run(heads * tasks_per_head, |task| {
            let (h, t) = (task / tasks_per_head, task % tasks_per_head);
            for jp in t * PANELS_PER_TASK..((t + 1) * PANELS_PER_TASK).min(key_panels) {
                let at = h * head_keys_len + jp * d * NR;
                // SAFETY: every (head, panel) range is written by exactly one task.
                let panel = unsafe { key_buf.range(at..at + d * NR) };
                pack_key_panel(k, width, kv_len, h * d, d, jp, panel);
            }
        });
    }
    let key_buf: &[f32] = key_buf;
    let q_blocks = q_len.div_ceil(SCORE_ROWS);
    let score_buf = DisjointSlice::new(score_buf);
    let out = DisjointSlice::new(out);
    pool.run_on_threads(heads * q_blocks, |thread, task| {
        let (h, qb) = (task / q_blocks, task % q_blocks);
        let queries = qb * SCORE_ROWS..((qb + 1) * SCORE_ROWS).min(q_len);
        let n_q = queries.len();
        let at = thread * SCORE_ROWS * kv_len;
        // SAFETY: each thread uses only its own score rows, one task at a time.
        let scores = unsafe { score_buf.range(at..at + SCORE_ROWS * kv_len) };
        // Visible keys grow with the query index, so the last query sees the most.
        let seen_max = shape.visible(queries.end - 1);
        let q_head = &q[h * d..];
        let mut tile: Tile = [[0.0; NR]; MR];

        // 1. scores[r][j] = q_i · k_j · scale for j < seen_max (masked later per row).
        if packs_keys(shape) {
            let keys = &key_buf[h * head_keys_len..(h + 1) * head_keys_len];
            for jp in 0..seen_max.div_ceil(NR) {
                let panel = &keys[jp * d * NR..(jp + 1) * d * NR];
                let cols = NR.min(seen_max - jp * NR);
                for r0 in (0..n_q).step_by(MR) {
                    let rows = MR.min(n_q - r0);
                    let a = &q_head[(queries.start + r0) * width..];
                    packed_tile(isa, rows, d, a, width, panel, NR, &mut tile);
                    for (r, t) in tile.iter().enumerate().take(rows) {
                        let s = &mut scores[(r0 + r) * kv_len + jp * NR..][..cols];
                        s.iter_mut().zip(t).for_each(|(s, t)| *s = t * scale);
                    }
                }
            }
        } else {
            let mut sums = [0.0f32; DOT_KEYS * DOT_R];
            // Each key's dot product is the same whichever block it is in, so blocks end at
            // the split too.
            let split = k.split(width);
            let mut j0 = 0;
            while j0 < seen_max {
                let end = if j0 < split { split } else { seen_max };
                let cols = DOT_KEYS.min(seen_max.min(end) - j0);
                for r0 in (0..n_q).step_by(DOT_R) {
                    let rows = DOT_R.min(n_q - r0);
                    let a = &q_head[(queries.start + r0) * width..];
                    let keys = &k.from(j0, width)[h * d..];
                    dot_block(isa, rows, cols, d, a, width, keys, width, &mut sums);
                    for r in 0..rows {
                        let s = &mut scores[(r0 + r) * kv_len + j0..][..cols];
                        for (c, s) in s.iter_mut().enumerate() {
                            *s = sums[c * DOT_R + r] * scale;
                        }
                    }
                }
                j0 += cols;
            }
        }

        // 2. softmax over each query's visible keys; zero the masked rest up to seen_max.
        for (r, i) in queries.clone().enumerate() {
            let row = &mut scores[r * kv_len..r * kv_len + seen_max];
            let seen = shape.visible(i);
            softmax_in_place(&mut row[..seen]);
            row[seen..].fill(0.0);
        }

        // 3. out[i, head h] = Σ_j p_ij · v_j, 16 value columns at a time, read in place.
        let v_split = v.split(width).min(seen_max);
        for cb in 0..d / NR {
            let col = h * d + cb * NR;
            for r0 in (0..n_q).step_by(MR) {
                let rows = MR.min(n_q - r0);
                let a = &scores[r0 * kv_len..];
                if v_split == 0 {
                    packed_tile(
                        isa,
                        rows,
                        seen_max,
                        a,
                        kv_len,
                        &v.tail[col..],
                        width,
                        &mut tile,
                    );
                } else if v_split == seen_max {
                    packed_tile(
                        isa,
                        rows,
                        seen_max,
                        a,
                        kv_len,
                        &v.head[col..],
                        width,
                        &mut tile,
                    );
                } else {
                    let (head, tail) = (&v.head[col..], &v.tail[col..]);
                    packed_tile_split(
                        isa, rows, seen_max, a, kv_len, head, tail, v_split, width, &mut tile,
                    );
                }
                for (r, t) in tile.iter().enumerate().take(rows) {
                    let at = (queries.start + r0 + r) * width + h * d + cb * NR;
                    // SAFETY: tasks own disjoint (query rows, head) column ranges of `out`.
                    unsafe { out.range(at..at + NR) }.copy_from_slice(t);
                }
            }
        }
    });
}

/// Packs key panel `jp` of one head (columns `col..col + d` of each row) like
/// [`super::packed::pack_panel`] does for rows in one piece: key `j` of the panel is column
/// `j % NR` of `panel [d][NR]`, keys past `kv_len` zero.
fn pack_key_panel(
    k: SplitRows,
    width: usize,
    kv_len: usize,
    col: usize,
    d: usize,
    jp: usize,
    panel: &mut [f32],
) {
    assert_eq!(panel.len(), d * NR);
    for c in 0..NR {
        let j = jp * NR + c;
        if j < kv_len {
            let row = &k.from(j, width)[col..col + d];
            for (p, &x) in row.iter().enumerate() {
                panel[p * NR + c] = x;
            }
        } else {
            (0..d).for_each(|p| panel[p * NR + c] = 0.0);
        }
    }
}

/// Plain path for head sizes the micro-kernels do not cover; shapes already checked.
fn attention_simple(
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    k: SplitRows,
    v: SplitRows,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let width = shape.width();
    let (heads, head_dim, q_len, kv_len) = (shape.heads, shape.head_dim, shape.q_len, shape.kv_len);
    let scale = (head_dim as f32).powf(-0.5);
    let q_blocks = q_len.div_ceil(SIMPLE_TASK_QUERIES);
    let out = DisjointSlice::new(out);
    let scratch = DisjointSlice::new(scratch);
    pool.run_on_threads(heads * q_blocks, |thread, task| {
        let (h, qb) = (task / q_blocks, task % q_blocks);
        let cols = h * head_dim..(h + 1) * head_dim;
        // SAFETY: each thread uses only its own kv_len slot, and a thread runs one task at a
        // time.
        let scores = unsafe { scratch.range(thread * kv_len..(thread + 1) * kv_len) };
        for i in qb * SIMPLE_TASK_QUERIES..((qb + 1) * SIMPLE_TASK_QUERIES).min(q_len) {
            let seen = shape.visible(i);
            let scores = &mut scores[..seen];
            let q_row = &q[i * width + cols.start..i * width + cols.end];
            for (j, s) in scores.iter_mut().enumerate() {
                let k_row = &k.from(j, width)[cols.clone()];
                *s = dot(q_row, k_row) * scale;
            }
            softmax_in_place(scores);
            // SAFETY: tasks own disjoint (query row, head) column ranges of `out`.
            let o = unsafe { out.range(i * width + cols.start..i * width + cols.end) };
            o.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                let v_row = &v.from(j, width)[cols.clone()];
                for (ov, &vv) in o.iter_mut().zip(v_row) {
                    *ov += p * vv;
                }
            }
        }
    });
}

/// Dot product with 8 interleaved accumulators.
#[inline]
/// Attention probabilities of head `head` for `shape.q_len` query rows (no mask):
/// `out[r, kv_len] = softmax(q_head[r] · key(j)ᵀ / √head_dim)`, with `key(j, buf)` writing key
/// row `j` of the head into `buf [head_dim]` (`key_buf`). Scores in f32, one row at a time: for
/// reading out a few heads (word alignment), not for speed.
///
/// # Panics
/// If `q`, `out` or `key_buf` do not match the shape.
pub fn attention_weights_with(
    shape: &AttentionShape,
    q: &[f32],
    head: usize,
    key_buf: &mut [f32],
    mut key: impl FnMut(usize, &mut [f32]),
    out: &mut [f32],
) {
    let (d, w) = (shape.head_dim, shape.width());
    assert!(head < shape.heads && key_buf.len() == d);
    assert_eq!(q.len(), shape.q_len * w, "attention_weights: q");
    assert_eq!(
        out.len(),
        shape.q_len * shape.kv_len,
        "attention_weights: out"
    );
    let scale = (d as f32).powf(-0.5);
    for (r, row) in out.chunks_exact_mut(shape.kv_len).enumerate() {
        let qh = &q[r * w + head * d..][..d];
        for (j, s) in row.iter_mut().enumerate() {
            key(j, key_buf);
            *s = dot(qh, key_buf) * scale;
        }
        softmax_in_place(row);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::{attention_f64, Rng};

    fn check(pool: &CpuPool, rng: &mut Rng, shape: AttentionShape) {
        let width = shape.width();
        let q = rng.vec(shape.q_len * width, 1.5);
        let k = rng.vec(shape.kv_len * width, 1.5);
        let v = rng.vec(shape.kv_len * width, 1.0);
        let mut scratch = vec![f32::NAN; attention_scratch_len(pool, &shape)];
        let mut out = vec![f32::NAN; shape.q_len * width];
        attention(pool, &shape, &q, &k, &v, &mut scratch, &mut out);
        let want = attention_f64(&shape, &q, &k, &v);
        let mut outs = vec![out];
        if fast_path(&shape) {
            // The tiled path on the portable kernels as well (attention() picks the best ISA).
            let mut out = vec![f32::NAN; shape.q_len * width];
            attention_tiled(
                Isa::Portable,
                pool,
                &shape,
                &q,
                SplitRows::whole(&k),
                SplitRows::whole(&v),
                &mut scratch,
                &mut out,
            );
            outs.push(out);
        }
        // Outputs are convex combinations of |v| ≤ 1. Score errors (~ε·√d·|q||k|, scores are
        // O(5)) perturb the weights relatively by ~1e-6; the f32 weighted sum over kv_len rows
        // adds ~ε·√kv_len. 2e-5·(1 + √kv_len/10) absolute covers both with margin.
        let tol = 2e-5 * (1.0 + (shape.kv_len as f64).sqrt() / 10.0);
        for out in outs {
            for (idx, (&g, &w)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (g as f64 - w).abs() <= tol,
                    "{shape:?} element {idx}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn attention_matches_f64() {
        let mut rng = Rng::new(7);
        for threads in 1..=3 {
            let pool = CpuPool::new(threads);
            for (heads, head_dim, q_len, kv_len, causal_offset) in [
                (1, 1, 1, 1, None),
                (2, 8, 3, 5, None),
                (3, 7, 17, 33, None),
                (6, 64, 1, 1500, None),   // decoder cross-attention, one token
                (6, 64, 4, 1500, None),   // beam of 4 rows
                (2, 64, 40, 40, Some(0)), // decoder prompt, causal
                (6, 64, 1, 12, Some(11)), // one new token against the cache
                (3, 16, 5, 20, Some(15)), // several new tokens against the cache
                (2, 64, 70, 1500, None),  // encoder-like (truncated q)
            ] {
                let shape = AttentionShape {
                    heads,
                    head_dim,
                    q_len,
                    kv_len,
                    causal_offset,
                };
                check(&pool, &mut rng, shape);
            }
        }
    }

    /// `attention_split` over rows cut anywhere equals `attention` over the same rows in one
    /// piece bit for bit, on every path (dot and packed keys, the simple path) and ISA.
    #[test]
    fn split_rows_equal_whole_rows_bit_for_bit() {
        let mut rng = Rng::new(21);
        let mut isas = vec![Isa::Portable];
        if Isa::detect() != Isa::Portable {
            isas.push(Isa::detect());
        }
        for threads in [1, 2] {
            let pool = CpuPool::new(threads);
            for (heads, head_dim, q_len, kv_len, causal_offset) in [
                (6, 64, 1, 227, Some(226)), // a beam's token after a 200-token prompt
                (6, 64, 1, 1, Some(0)),
                (2, 64, 4, 70, None),       // dot path, several rows
                (2, 64, 12, 100, Some(88)), // packed keys
                (3, 16, 5, 20, Some(15)),
                (3, 7, 3, 9, Some(6)), // simple path
            ] {
                let shape = AttentionShape {
                    heads,
                    head_dim,
                    q_len,
                    kv_len,
                    causal_offset,
                };
                let w = heads * head_dim;
                let q = rng.vec(q_len * w, 1.5);
                let k = rng.vec(kv_len * w, 1.5);
                let v = rng.vec(kv_len * w, 1.0);
                let mut scratch = vec![f32::NAN; attention_scratch_len(&pool, &shape)];
                let mut whole = vec![f32::NAN; q_len * w];
                attention(&pool, &shape, &q, &k, &v, &mut scratch, &mut whole);
                let cuts = [0, 1, kv_len / 2, kv_len.saturating_sub(1), kv_len];
                for split in cuts {
                    let (kh, kt) = k.split_at(split * w);
                    let (vh, vt) = v.split_at(split * w);
                    let ks = SplitRows { head: kh, tail: kt };
                    let vs = SplitRows { head: vh, tail: vt };
                    let mut got = vec![f32::NAN; q_len * w];
                    attention_split(&pool, &shape, &q, ks, vs, &mut scratch, &mut got);
                    assert_eq!(got, whole, "{shape:?} split at {split}");
                    if fast_path(&shape) {
                        for &isa in &isas {
                            let mut one = vec![f32::NAN; q_len * w];
                            let wk = SplitRows::whole(&k);
                            let wv = SplitRows::whole(&v);
                            attention_tiled(isa, &pool, &shape, &q, wk, wv, &mut scratch, &mut one);
                            let mut two = vec![f32::NAN; q_len * w];
                            attention_tiled(isa, &pool, &shape, &q, ks, vs, &mut scratch, &mut two);
                            assert_eq!(one, two, "{isa:?} {shape:?} split at {split}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "split inside a row")]
    fn a_split_inside_a_row_is_refused() {
        let pool = CpuPool::new(1);
        let shape = AttentionShape {
            heads: 1,
            head_dim: 4,
            q_len: 1,
            kv_len: 2,
            causal_offset: None,
        };
        let (q, kv) = ([1.0; 4], [0.5; 8]);
        let k = SplitRows {
            head: &kv[..3],
            tail: &kv[3..],
        };
        let mut scratch = vec![0.0; attention_scratch_len(&pool, &shape)];
        let mut out = [0.0; 4];
        attention_split(&pool, &shape, &q, k, k, &mut scratch, &mut out);
    }

    #[test]
    fn causal_mask_hides_future_keys() {
        // With v = one-hot rows, an output component j > off + i must be exactly zero.
        let pool = CpuPool::new(2);
        let shape = AttentionShape {
            heads: 1,
            head_dim: 4,
            q_len: 3,
            kv_len: 4,
            causal_offset: Some(1),
        };
        let q = vec![1.0; 12];
        let k = vec![0.5; 16];
        let mut v = vec![0.0; 16];
        for j in 0..4 {
            v[j * 4 + j] = 1.0;
        }
        let mut scratch = vec![0.0; attention_scratch_len(&pool, &shape)];
        let mut out = vec![0.0; 12];
        attention(&pool, &shape, &q, &k, &v, &mut scratch, &mut out);
        for i in 0..3 {
            for j in 0..4 {
                let expected = if j <= 1 + i {
                    1.0 / (2 + i) as f32
                } else {
                    0.0
                };
                assert!((out[i * 4 + j] - expected).abs() < 1e-6, "[{i},{j}]");
            }
        }
    }
}
