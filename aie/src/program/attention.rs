//! The attention device program: the buffer images the host writes, the TXN instruction stream
//! that moves them (shim side), and the array model the emulated firmware runs on the streams
//! (the kernels of `aie/kernels/attention.cc` through their bit-exact Rust models,
//! [`crate::kernels::attention`]).
//!
//! One command computes every head of one attention call: `n_q` queries over `n_keys` keys, with
//! no mask (the encoder's self-attention, the decoder's cross-attention) or a causal one (the
//! decoder's self-attention over its K/V cache: query `i` sees keys `..=pos + i`).
//!
//! A **slot command** ([`slot_attention_program`]) computes one query per K/V-cache slot (a beam
//! each): unit `(slot, head)` reads its Q region `slot · heads + head` and the K/V region of that
//! head in that slot's image, all slots' images one after another in one buffer.
//!
//! **Buffers** (runtime-sequence arguments, all per head, heads one after another):
//! - **0, Q image** ([`AttentionImages::q_region`] per head): a 64-byte header (`n_q`,
//!   `n_keys`, `q_rows`, `keys`, `causal` as u32 LE, then zeros: what the IRON design passes as
//!   run-time parameters; `causal` 0 for no mask, else `pos + 1`, the keys query 0 sees — query
//!   `i` then sees `pos + 1 + i`, the key limits of the design's Q objects), the query codes (`q_rows × 64` int8, row-major, rows past `n_q` zero), then
//!   their f32 scales (`q_rows`, each already times `head_dim^-½`), padded to 64 bytes;
//! - **1, K/V image** ([`AttentionImages::kv_region`] per head): key codes (`keys × 64` int8,
//!   row-major), their f32 scales (padded to 64 bytes), then V as bf16 (`keys × 64`);
//! - **2, output** (`q_rows × 64` f32 per head).
//!
//! The host writes row-major objects; the memory tile re-lays Q into the kernel's 4×8 blocks
//! and K into 8×8 blocks (`aie/designs/attention.py`, as the GEMM design does for its
//! activations), which the model does with [`crate::kernels::attention::attend`].
//!
//! **Stream**: head `h` runs on column `h mod cols` in round `h / cols`. Per head, one linear
//! task each on MM2S 0 (its Q region), MM2S 1 (its K/V region) and S2MM 0 (its output, with a
//! token). BDs alternate between two sets per column (ids 0-2, 8-10); before round `r` reuses
//! a set the stream waits for the outputs of round `r − 2`; every token is awaited once.
//!
//! This is the data movement of the design's **decoder mapping** (a head per column here, its
//! four cores taking query groups); the encoder mapping's memory-tile replay of K/V is inside
//! the PDI and moves the same shim bytes. No xclbin of it has been built (`aie/README.md`).

use std::collections::BTreeMap;

use crate::kernels::attention::{attend, HEAD_DIM, MAX_KEYS, Q_ROWS};
use crate::txn::{shim_bd_address, Dim, Direction, ShimBd, Sync, Target, Txn};
use crate::AieError;

/// Runtime-sequence argument of the Q image.
pub const ARG_Q: u32 = 0;
/// Runtime-sequence argument of the K/V image.
pub const ARG_KV: u32 = 1;
/// Runtime-sequence argument of the output.
pub const ARG_OUT: u32 = 2;
/// Bytes of a Q region's header.
pub const HEADER_BYTES: usize = 64;

/// Geometry of one attention command's images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionImages {
    /// Heads (each of width [`HEAD_DIM`]).
    pub heads: usize,
    /// Query rows each head's Q region and output hold (a multiple of [`Q_ROWS`]).
    pub q_rows: usize,
    /// Keys each head's K/V region holds (at most [`MAX_KEYS`]).
    pub keys: usize,
}

impl AttentionImages {
    /// The images for `heads` heads, `q_rows` query rows (rounded up to whole groups of
    /// [`Q_ROWS`]) and `keys` keys.
    pub fn new(heads: usize, q_rows: usize, keys: usize) -> Result<Self, AieError> {
        let shape = |what, value, reason| {
            Err(AieError::Shape {
                what,
                value,
                reason,
            })
        };
        if heads == 0 {
            return shape("heads", 0, "attention needs at least one head");
        }
        if q_rows == 0 {
            return shape("q_rows", 0, "attention needs at least one query");
        }
        if keys == 0 || keys > MAX_KEYS {
            return shape("keys", keys, "the kernel takes 1 to MAX_KEYS (1536) keys");
        }
        Ok(Self {
            heads,
            q_rows: q_rows.next_multiple_of(Q_ROWS),
            keys,
        })
    }

    /// Bytes of the query codes' scales, padded.
    fn q_scales_bytes(&self) -> usize {
        (4 * self.q_rows).next_multiple_of(64)
    }

    /// Bytes of one head's Q region.
    pub fn q_region(&self) -> usize {
        HEADER_BYTES + self.q_rows * HEAD_DIM + self.q_scales_bytes()
    }

    /// Bytes of the key scales, padded.
    fn k_scales_bytes(&self) -> usize {
        (4 * self.keys).next_multiple_of(64)
    }

    /// Bytes of one head's K/V region.
    pub fn kv_region(&self) -> usize {
        self.keys * HEAD_DIM + self.k_scales_bytes() + 2 * self.keys * HEAD_DIM
    }

    /// Bytes of one head's output.
    pub fn out_region(&self) -> usize {
        4 * self.q_rows * HEAD_DIM
    }

    /// Bytes of the Q image.
    pub fn q_image_len(&self) -> usize {
        self.heads * self.q_region()
    }

    /// Bytes of the K/V image.
    pub fn kv_image_len(&self) -> usize {
        self.heads * self.kv_region()
    }

    /// Bytes of the output.
    pub fn out_len(&self) -> usize {
        self.heads * self.out_region()
    }

    /// Offset of head `h`'s header in the Q image.
    pub fn q_header(&self, h: usize) -> usize {
        h * self.q_region()
    }

    /// Offset of head `h`'s query codes in the Q image.
    pub fn q_codes(&self, h: usize) -> usize {
        self.q_header(h) + HEADER_BYTES
    }

    /// Offset of head `h`'s query scales in the Q image.
    pub fn q_scales(&self, h: usize) -> usize {
        self.q_codes(h) + self.q_rows * HEAD_DIM
    }

    /// Offset of head `h`'s key codes in the K/V image.
    pub fn k_codes(&self, h: usize) -> usize {
        h * self.kv_region()
    }

    /// Offset of head `h`'s key scales in the K/V image.
    pub fn k_scales(&self, h: usize) -> usize {
        self.k_codes(h) + self.keys * HEAD_DIM
    }

    /// Offset of head `h`'s values (bf16) in the K/V image.
    pub fn values(&self, h: usize) -> usize {
        self.k_scales(h) + self.k_scales_bytes()
    }

    /// Offset of head `h`'s output.
    pub fn out(&self, h: usize) -> usize {
        h * self.out_region()
    }

    /// The header of a call with `n_q` queries over `n_keys` keys; `causal: Some(pos)` masks
    /// query `i` to keys `..=pos + i`.
    pub fn header(&self, n_q: usize, n_keys: usize, causal: Option<usize>) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        let causal = causal.map_or(0, |pos| pos + 1);
        for (i, v) in [n_q, n_keys, self.q_rows, self.keys, causal]
            .into_iter()
            .enumerate()
        {
            h[4 * i..4 * i + 4].copy_from_slice(&(v as u32).to_le_bytes());
        }
        h
    }
}

fn bd_ids(round: usize) -> (u8, u8, u8) {
    let b = (8 * (round % 2)) as u8;
    (b, b + 1, b + 2)
}

fn emit(
    txn: &mut Txn,
    col: u8,
    bd_id: u8,
    bytes: usize,
    arg: u32,
    plus: usize,
) -> Result<(), AieError> {
    let bd = ShimBd::linear((bytes / 4) as u32, txn.target().generation.max_burst());
    emit_bd(txn, col, bd_id, bd, arg, plus)
}

fn emit_bd(
    txn: &mut Txn,
    col: u8,
    bd_id: u8,
    bd: ShimBd,
    arg: u32,
    plus: usize,
) -> Result<(), AieError> {
    let bd = ShimBd {
        word1: plus as u32,
        ..bd
    };
    let words = bd.encode(bd_id)?;
    let addr = shim_bd_address(col, bd_id);
    txn.blockwrite(addr, &words);
    txn.ddr_patch(addr + 4, arg, plus as u64);
    Ok(())
}

/// The instruction stream of one attention command with images `im` on `target`.
pub fn attention_program(target: Target, im: &AttentionImages) -> Result<Vec<u32>, AieError> {
    let units: Vec<Unit> = (0..im.heads)
        .map(|h| Unit {
            q: im.q_header(h),
            kv: im.k_codes(h),
            out: im.out(h),
        })
        .collect();
    units_program(target, im, &units, false)
}

/// [`attention_program`] writing the output **row-major** (`q_rows` rows of `heads · 64`
/// f32, head `h` in columns `64·h ..`): the S2MM BD of head `h` puts its 64 values of each row
/// `heads · 64` words apart (`d0 = 64 words`, `d2` step the row). So the rows land where a
/// GEMM's f32 input rows are, and the plain quantize of the norm design reads them for the
/// out-projection (the gather of the heads is the DMA's addressing, no core work).
pub fn attention_program_rows(target: Target, im: &AttentionImages) -> Result<Vec<u32>, AieError> {
    let units: Vec<Unit> = (0..im.heads)
        .map(|h| Unit {
            q: im.q_header(h),
            kv: im.k_codes(h),
            out: 4 * h * HEAD_DIM,
        })
        .collect();
    units_program(target, im, &units, true)
}

/// The instruction stream of one slot command on `target`: for every slot `s < slots` and
/// head `h`, unit `s · heads + h` (Q region and output `s · heads + h` of images sized for
/// `slots · heads` heads of `im.q_rows` rows) over the K/V region of head `h` in slot `s`'s
/// image (`im`, `keys` = the cache's positions), slot images one after another
/// ([`AttentionImages::kv_image_len`] apart) in argument [`ARG_KV`].
pub fn slot_attention_program(
    target: Target,
    im: &AttentionImages,
    slots: usize,
) -> Result<Vec<u32>, AieError> {
    let units: Vec<Unit> = (0..slots * im.heads)
        .map(|u| Unit {
            q: u * im.q_region(),
            kv: (u / im.heads) * im.kv_image_len() + im.k_codes(u % im.heads),
            out: u * im.out_region(),
        })
        .collect();
    units_program(target, im, &units, false)
}

/// Where one unit (a head's attention) finds its regions: byte offsets in the Q image, the K/V
/// buffer and the output.
struct Unit {
    q: usize,
    kv: usize,
    out: usize,
}

/// Unit `u` runs on column `u mod cols` in round `u / cols`, its regions sized by `im`; with
/// `rows_out` its output goes into row-major rows of every unit's width (see
/// [`attention_program_rows`]).
fn units_program(
    target: Target,
    im: &AttentionImages,
    units: &[Unit],
    rows_out: bool,
) -> Result<Vec<u32>, AieError> {
    let cols = target.cols as usize;
    let n = units.len();
    let rounds = n.div_ceil(cols);
    let columns_of = |r: usize| (r * cols..((r + 1) * cols).min(n)).map(|u| (u % cols) as u8);
    let mut txn = Txn::new(target);
    for r in 0..rounds {
        if r >= 2 {
            for c in columns_of(r - 2) {
                txn.sync(Sync::shim(Direction::S2mm, c, 0));
            }
        }
        let (q_bd, kv_bd, out_bd) = bd_ids(r);
        for (u, unit) in units
            .iter()
            .enumerate()
            .take(((r + 1) * cols).min(n))
            .skip(r * cols)
        {
            let c = (u % cols) as u8;
            emit(&mut txn, c, q_bd, im.q_region(), ARG_Q, unit.q)?;
            txn.push_shim_task(c, Direction::Mm2s, 0, q_bd, 1, false);
            emit(&mut txn, c, kv_bd, im.kv_region(), ARG_KV, unit.kv)?;
            txn.push_shim_task(c, Direction::Mm2s, 1, kv_bd, 1, false);
            if rows_out {
                let bd = ShimBd {
                    length: (im.q_rows * HEAD_DIM) as u32,
                    d0: Dim {
                        wrap: HEAD_DIM as u32,
                        stride: 1,
                    },
                    d1: Dim { wrap: 1, stride: 1 },
                    d2_stride: (im.heads * HEAD_DIM) as u32,
                    ..ShimBd::linear(0, target.generation.max_burst())
                };
                emit_bd(&mut txn, c, out_bd, bd, ARG_OUT, unit.out)?;
            } else {
                emit(&mut txn, c, out_bd, im.out_region(), ARG_OUT, unit.out)?;
            }
            txn.push_shim_task(c, Direction::S2mm, 0, out_bd, 1, true);
        }
    }
    for r in rounds.saturating_sub(2)..rounds {
        for c in columns_of(r) {
            txn.sync(Sync::shim(Direction::S2mm, c, 0));
        }
    }
    Ok(txn.finish())
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// One head on its column: `q` its Q region, `kv` its K/V region; returns its output region.
fn head(q: &[u8], kv: &[u8]) -> Result<Vec<u8>, String> {
    if q.len() < HEADER_BYTES {
        return Err(format!("a Q region of {} bytes has no header", q.len()));
    }
    let (n_q, n_keys, q_rows, keys) = (u32_at(q, 0), u32_at(q, 4), u32_at(q, 8), u32_at(q, 12));
    let causal = u32_at(q, 16);
    let im = AttentionImages::new(1, q_rows, keys).map_err(|e| format!("header: {e}"))?;
    if im.q_rows != q_rows || n_q > q_rows || n_keys > keys || n_keys == 0 {
        return Err(format!(
            "header: {n_q} queries over {n_keys} keys in regions of {q_rows} rows and {keys} keys"
        ));
    }
    if causal > n_keys {
        return Err(format!(
            "header: causal mask from {causal} keys, past the call's {n_keys}"
        ));
    }
    if q.len() != im.q_region() || kv.len() != im.kv_region() {
        return Err(format!(
            "regions of {} and {} bytes, the header says {} and {}",
            q.len(),
            kv.len(),
            im.q_region(),
            im.kv_region()
        ));
    }
    let codes = |b: &[u8]| -> Vec<i8> { b.iter().map(|&x| x as i8).collect() };
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let qc = codes(&q[im.q_codes(0)..im.q_codes(0) + n_q * HEAD_DIM]);
    let qs = f32s(&q[im.q_scales(0)..im.q_scales(0) + 4 * n_q]);
    let kc = codes(&kv[..n_keys * HEAD_DIM]);
    let ks = f32s(&kv[im.k_scales(0)..im.k_scales(0) + 4 * n_keys]);
    let v: Vec<u16> = kv[im.values(0)..im.values(0) + 2 * n_keys * HEAD_DIM]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let limits: Vec<u32> = (0..n_q)
        .map(|i| match causal {
            0 => n_keys,
            first => (first + i).min(n_keys),
        } as u32)
        .collect();
    let o = attend(&qc, &qs, &kc, &ks, &v, &limits);
    let mut out = vec![0u8; im.out_region()];
    for (d, x) in out.chunks_exact_mut(4).zip(&o) {
        d.copy_from_slice(&x.to_le_bytes());
    }
    Ok(out)
}

/// The array model: from the bytes that arrived on each column's MM2S 0 (Q regions) and MM2S 1
/// (K/V regions), head after head, the bytes each column's S2MM 0 sends (outputs), running the
/// kernels' Rust models. Heads are independent; they run on up to `threads` host threads.
pub fn attention_array(
    inputs: &BTreeMap<(u8, u8), Vec<u8>>,
    threads: usize,
) -> Result<BTreeMap<u8, Vec<u8>>, String> {
    // Split every column's streams into (Q, K/V) regions, by the headers.
    let mut work: Vec<(u8, usize, &[u8], &[u8])> = Vec::new();
    for (&(col, chan), q) in inputs {
        if chan != 0 {
            continue;
        }
        let kv = inputs
            .get(&(col, 1))
            .ok_or_else(|| format!("column {col}: queries but no keys/values"))?;
        let (mut qa, mut ka, mut i) = (0usize, 0usize, 0usize);
        while qa < q.len() {
            if q.len() - qa < HEADER_BYTES {
                return Err(format!("column {col}: {} stray bytes", q.len() - qa));
            }
            let im = AttentionImages::new(1, u32_at(q, qa + 8), u32_at(q, qa + 12))
                .map_err(|e| format!("column {col}, head {i}: header: {e}"))?;
            let (qe, ke) = (qa + im.q_region(), ka + im.kv_region());
            if qe > q.len() || ke > kv.len() {
                return Err(format!("column {col}, head {i}: regions past the streams"));
            }
            work.push((col, i, &q[qa..qe], &kv[ka..ke]));
            (qa, ka, i) = (qe, ke, i + 1);
        }
        if ka != kv.len() {
            return Err(format!(
                "column {col}: {} key/value bytes unused",
                kv.len() - ka
            ));
        }
    }
    let threads = threads.clamp(1, work.len().max(1));
    let results: Vec<Result<Vec<u8>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let work = &work;
                s.spawn(move || {
                    work.iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|w| head(w.2, w.3))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut per: Vec<std::vec::IntoIter<Result<Vec<u8>, String>>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err("a head panicked".into())])
                    .into_iter()
            })
            .collect();
        (0..work.len())
            .map(|i| {
                per[i % threads]
                    .next()
                    .unwrap_or(Err("a head is missing".into()))
            })
            .collect()
    });
    let mut out: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    for (w, r) in work.iter().zip(results) {
        let bytes = r.map_err(|e| format!("column {}, head {}: {e}", w.0, w.1))?;
        out.entry(w.0).or_default().extend_from_slice(&bytes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::attention::quantize_rows;
    use crate::kernels::numerics::bf16_round;
    use crate::txn::{parse, Op};

    #[test]
    fn regions_are_whole_64_byte_objects() {
        let im = AttentionImages::new(6, 1499, 1500).unwrap();
        assert_eq!(im.q_rows, 1500);
        for n in [im.q_region(), im.kv_region(), im.out_region()] {
            assert_eq!(n % 64, 0, "{n}");
        }
        assert_eq!(im.kv_region(), 1500 * 64 + 6016 + 1500 * 128);
        assert!(AttentionImages::new(6, 4, MAX_KEYS + 1).is_err());
        assert!(AttentionImages::new(0, 4, 4).is_err());
    }

    #[test]
    fn stream_has_three_tasks_per_head_and_awaits_every_token_once() {
        for (target, heads) in [(Target::NPU2, 6), (Target::NPU1, 8), (Target::NPU1, 20)] {
            let im = AttentionImages::new(heads, 8, 1500).unwrap();
            let words = attention_program(target, &im).unwrap();
            let (_, ops) = parse(&words).unwrap();
            let count = |f: fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
            assert_eq!(count(|o| matches!(o, Op::BlockWrite { .. })), 3 * heads);
            assert_eq!(count(|o| matches!(o, Op::DdrPatch { .. })), 3 * heads);
            assert_eq!(count(|o| matches!(o, Op::Sync { .. })), heads);
        }
    }

    #[test]
    fn a_slot_stream_reads_each_slots_kv_image() {
        let im = AttentionImages::new(2, 4, 40).unwrap();
        let words = slot_attention_program(Target::NPU1, &im, 3).unwrap();
        let (_, ops) = parse(&words).unwrap();
        let kv: Vec<u64> = ops
            .iter()
            .filter_map(|o| match o {
                Op::DdrPatch {
                    arg_idx: ARG_KV,
                    arg_plus,
                    ..
                } => Some(*arg_plus),
                _ => None,
            })
            .collect();
        let slot = im.kv_image_len() as u64;
        let head = im.kv_region() as u64;
        assert_eq!(kv, [0, head, slot, slot + head, 2 * slot, 2 * slot + head]);
        let q: Vec<u64> = ops
            .iter()
            .filter_map(|o| match o {
                Op::DdrPatch {
                    arg_idx: ARG_Q,
                    arg_plus,
                    ..
                } => Some(*arg_plus),
                _ => None,
            })
            .collect();
        let region = im.q_region() as u64;
        assert_eq!(q, (0..6).map(|u| u * region).collect::<Vec<_>>());
    }

    /// One head through the array model with a causal header equals `attend` with the causal
    /// limits (query `i` over keys `..=pos + i`); a mask past the call's keys is refused.
    #[test]
    fn a_causal_header_masks_each_query_to_its_position() {
        let im = AttentionImages::new(1, 6, 48).unwrap();
        let (n_q, pos) = (6, 30);
        let n_keys = pos + n_q;
        let mut seed = 3u32;
        let mut f = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        let q: Vec<f32> = (0..n_q * 64).map(|_| f()).collect();
        let k: Vec<f32> = (0..n_keys * 64).map(|_| f()).collect();
        let v: Vec<u16> = (0..n_keys * 64).map(|_| bf16_round(f())).collect();
        let (qc, qs) = quantize_rows(&q);
        let (kc, ks) = quantize_rows(&k);
        let mut qi = vec![0u8; im.q_image_len()];
        let mut kvi = vec![0u8; im.kv_image_len()];
        qi[..HEADER_BYTES].copy_from_slice(&im.header(n_q, n_keys, Some(pos)));
        for (i, &c) in qc.iter().enumerate() {
            qi[im.q_codes(0) + i] = c as u8;
        }
        for (i, s) in qs.iter().enumerate() {
            qi[im.q_scales(0) + 4 * i..][..4].copy_from_slice(&s.to_le_bytes());
        }
        for (i, &c) in kc.iter().enumerate() {
            kvi[im.k_codes(0) + i] = c as u8;
        }
        for (i, s) in ks.iter().enumerate() {
            kvi[im.k_scales(0) + 4 * i..][..4].copy_from_slice(&s.to_le_bytes());
        }
        for (i, x) in v.iter().enumerate() {
            kvi[im.values(0) + 2 * i..][..2].copy_from_slice(&x.to_le_bytes());
        }
        let limits: Vec<u32> = (0..n_q).map(|i| (pos + 1 + i) as u32).collect();
        let want = attend(&qc, &qs, &kc, &ks, &v, &limits);
        let unmasked = attend(&qc, &qs, &kc, &ks, &v, &vec![n_keys as u32; n_q]);
        assert_ne!(want, unmasked);
        let mut inputs = BTreeMap::from([((0u8, 0u8), qi), ((0, 1), kvi)]);
        let out = attention_array(&inputs, 1).unwrap();
        let got: Vec<f32> = out[&0][..n_q * 256]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(got, want);
        inputs.get_mut(&(0, 0)).unwrap()[..HEADER_BYTES].copy_from_slice(&im.header(
            n_q,
            n_keys,
            Some(n_keys),
        ));
        assert!(attention_array(&inputs, 1).unwrap_err().contains("causal"));
    }

    /// Images written as the runtime writes them, through the array model, equal `attend` on
    /// the same codes (and a header that lies is refused).
    #[test]
    fn the_array_model_runs_attend_per_head() {
        let im = AttentionImages::new(3, 5, 40).unwrap();
        let (n_q, n_keys) = (5, 37);
        let mut seed = 7u32;
        let mut f = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        let mut qi = vec![0u8; im.q_image_len()];
        let mut kvi = vec![0u8; im.kv_image_len()];
        let mut want = Vec::new();
        for h in 0..3 {
            let q: Vec<f32> = (0..n_q * 64).map(|_| f()).collect();
            let k: Vec<f32> = (0..n_keys * 64).map(|_| f()).collect();
            let v: Vec<u16> = (0..n_keys * 64).map(|_| bf16_round(f())).collect();
            let (qc, mut qs) = quantize_rows(&q);
            qs.iter_mut().for_each(|s| *s *= 0.125);
            let (kc, ks) = quantize_rows(&k);
            qi[im.q_header(h)..im.q_codes(h)].copy_from_slice(&im.header(n_q, n_keys, None));
            for (i, &c) in qc.iter().enumerate() {
                qi[im.q_codes(h) + i] = c as u8;
            }
            for (i, s) in qs.iter().enumerate() {
                qi[im.q_scales(h) + 4 * i..][..4].copy_from_slice(&s.to_le_bytes());
            }
            for (i, &c) in kc.iter().enumerate() {
                kvi[im.k_codes(h) + i] = c as u8;
            }
            for (i, s) in ks.iter().enumerate() {
                kvi[im.k_scales(h) + 4 * i..][..4].copy_from_slice(&s.to_le_bytes());
            }
            for (i, x) in v.iter().enumerate() {
                kvi[im.values(h) + 2 * i..][..2].copy_from_slice(&x.to_le_bytes());
            }
            want.push(attend(&qc, &qs, &kc, &ks, &v, &vec![n_keys as u32; n_q]));
        }
        // Two columns: heads 0 and 2 on column 0, head 1 on column 1.
        let mut inputs = BTreeMap::new();
        for (col, heads) in [(0u8, vec![0, 2]), (1, vec![1])] {
            let (mut q, mut kv) = (Vec::new(), Vec::new());
            for h in heads {
                q.extend_from_slice(&qi[im.q_header(h)..im.q_header(h) + im.q_region()]);
                kv.extend_from_slice(&kvi[im.k_codes(h)..im.k_codes(h) + im.kv_region()]);
            }
            inputs.insert((col, 0), q);
            inputs.insert((col, 1), kv);
        }
        let out = attention_array(&inputs, 2).unwrap();
        for (col, h, slot) in [(0u8, 0usize, 0usize), (0, 2, 1), (1, 1, 0)] {
            let bytes = &out[&col][slot * im.out_region()..][..n_q * 64 * 4];
            let got: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            assert_eq!(got, want[h], "head {h}");
            assert!(
                out[&col][slot * im.out_region() + n_q * 256..(slot + 1) * im.out_region()]
                    .iter()
                    .all(|&b| b == 0)
            );
        }
        // More queries than the region holds.
        inputs.get_mut(&(1, 0)).unwrap()[..4].copy_from_slice(&9u32.to_le_bytes());
        assert!(attention_array(&inputs, 1).unwrap_err().contains("header"));
    }
}
