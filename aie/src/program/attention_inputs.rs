//! The attention-inputs device program: the step that lets an attention be a sub-command of a
//! chain. It reads the f32 rows of Q, K and V (row-major, `heads · 64` wide: what the GEMM
//! design wrote for the q/k/v projections) and writes the attention design's images
//! ([`AttentionImages`]): per head the query codes and scales (each times `head_dim^-½`,
//! [`QUERY_SCALE`]), the key codes and scales, and the values narrowed to bf16, bit for bit what
//! the host writes for the attention design (`q8::quant::quantize_row` per row and head, as
//! [`quantize_rows`]; [`bf16_round`]). The Q regions' 64-byte headers are not written: the
//! host writes them (they carry the call's query and key counts).
//!
//! **Buffers** (runtime-sequence arguments): 0 = Q rows (f32, `q_rows × w`), 1 = K rows (f32,
//! `keys × w`), 2 = V rows (same), 3 = the Q image, 4 = the K/V image (`w = heads · 64`).
//!
//! **Stream**: head `h` runs on column `h mod cols` in round `h / cols`. Per head: MM2S 0 reads
//! its 64 columns of every Q row (a BD `d0 = 64 words`, `d1` one run, `d2` step `w` words),
//! MM2S 1 its columns of every K row, then of every V row (two tasks); S2MM 0 writes its Q
//! region after the header (codes, then scales: one linear task), S2MM 1 its whole K/V region
//! (one linear task), both with tokens. BDs alternate between two sets per column (ids 0-4,
//! 8-12); before round `r` reuses a set the stream waits for the outputs of round `r − 2`.
//!
//! The array model ([`inputs_array`]) runs one head per call of the cores' quantizer model
//! ([`head_images`]). This program exists on the emulated device only: no AIE C++ kernel and no
//! xclbin of it have been written or built (its arithmetic is the quantizer of the norm design's
//! `nq_quant` on 64-wide rows and a bf16 narrowing).

use std::collections::BTreeMap;

use crate::kernels::attention::{quantize_rows, HEAD_DIM};
use crate::kernels::numerics::bf16_round;
use crate::program::attention::{AttentionImages, HEADER_BYTES};
use crate::program::replay::Channel;
use crate::txn::{shim_bd_address, Dim, Direction, ShimBd, Sync, Target, Txn};
use crate::AieError;

/// Runtime-sequence argument of the Q rows.
pub const ARG_Q_ROWS: u32 = 0;
/// Runtime-sequence argument of the K rows.
pub const ARG_K_ROWS: u32 = 1;
/// Runtime-sequence argument of the V rows.
pub const ARG_V_ROWS: u32 = 2;
/// Runtime-sequence argument of the Q image.
pub const ARG_Q_IMAGE: u32 = 3;
/// Runtime-sequence argument of the K/V image.
pub const ARG_KV_IMAGE: u32 = 4;
/// Buffer arguments of the program.
pub const INPUT_ARGS: usize = 5;
/// `1 / √64`, exact in f32: folded into the query scales.
pub const QUERY_SCALE: f32 = 0.125;

/// Bytes of the five buffer arguments for images `im`, the Q, K and V rows `stride` f32 apart
/// (at least `heads · 64`: a GEMM result may be wider than its outputs).
pub fn arg_lens(im: &AttentionImages, stride: usize) -> [usize; INPUT_ARGS] {
    let w = stride;
    [
        4 * w * im.q_rows,
        4 * w * im.keys,
        4 * w * im.keys,
        im.q_image_len(),
        im.kv_image_len(),
    ]
}

/// Bytes of one head's Q region after its header.
pub(crate) fn q_body(im: &AttentionImages) -> usize {
    im.q_region() - HEADER_BYTES
}

/// The columns of head `h` of `rows` rows `w` values wide: 64 words per row, rows `w` apart.
pub(crate) fn head_columns(rows: usize, w: usize, burst: u8) -> ShimBd {
    ShimBd {
        length: (rows * HEAD_DIM) as u32,
        d0: Dim {
            wrap: HEAD_DIM as u32,
            stride: 1,
        },
        d1: Dim { wrap: 1, stride: 1 },
        d2_stride: w as u32,
        ..ShimBd::linear(0, burst)
    }
}

pub(crate) fn emit(
    txn: &mut Txn,
    col: u8,
    id: u8,
    bd: ShimBd,
    arg: u32,
    plus: usize,
) -> Result<(), AieError> {
    let bd = ShimBd {
        word1: plus as u32,
        ..bd
    };
    let words = bd.encode(id)?;
    let addr = shim_bd_address(col, id);
    txn.blockwrite(addr, &words);
    txn.ddr_patch(addr + 4, arg, plus as u64);
    Ok(())
}

/// A source row stride below the heads' width.
fn check_stride(im: &AttentionImages, stride: usize) -> Result<(), AieError> {
    if stride < im.heads * HEAD_DIM {
        return Err(AieError::Shape {
            what: "row stride",
            value: stride,
            reason: "source rows hold every head: at least heads · 64 values apart",
        });
    }
    Ok(())
}

/// The instruction stream that writes the images `im` from Q rows (`im.q_rows` of them) and K,
/// V rows (`im.keys`), each `stride` f32 apart, on `target`.
pub fn inputs_program(
    target: Target,
    im: &AttentionImages,
    stride: usize,
) -> Result<Vec<u32>, AieError> {
    check_stride(im, stride)?;
    let cols = target.cols as usize;
    let burst = target.generation.max_burst();
    let w = stride;
    let n = im.heads;
    let rounds = n.div_ceil(cols);
    let columns_of = |r: usize| (r * cols..((r + 1) * cols).min(n)).map(|u| (u % cols) as u8);
    let mut txn = Txn::new(target);
    let wait = |txn: &mut Txn, r: usize| {
        for c in columns_of(r) {
            txn.sync(Sync::shim(Direction::S2mm, c, 0));
            txn.sync(Sync::shim(Direction::S2mm, c, 1));
        }
    };
    for r in 0..rounds {
        if r >= 2 {
            wait(&mut txn, r - 2);
        }
        let set = (8 * (r % 2)) as u8;
        for h in r * cols..((r + 1) * cols).min(n) {
            let c = (h % cols) as u8;
            let col0 = 4 * h * HEAD_DIM;
            emit(
                &mut txn,
                c,
                set,
                head_columns(im.q_rows, w, burst),
                ARG_Q_ROWS,
                col0,
            )?;
            txn.push_shim_task(c, Direction::Mm2s, 0, set, 1, false);
            emit(
                &mut txn,
                c,
                set + 1,
                head_columns(im.keys, w, burst),
                ARG_K_ROWS,
                col0,
            )?;
            txn.push_shim_task(c, Direction::Mm2s, 1, set + 1, 1, false);
            emit(
                &mut txn,
                c,
                set + 2,
                head_columns(im.keys, w, burst),
                ARG_V_ROWS,
                col0,
            )?;
            txn.push_shim_task(c, Direction::Mm2s, 1, set + 2, 1, false);
            let q = ShimBd::linear((q_body(im) / 4) as u32, burst);
            emit(&mut txn, c, set + 3, q, ARG_Q_IMAGE, im.q_codes(h))?;
            txn.push_shim_task(c, Direction::S2mm, 0, set + 3, 1, true);
            let kv = ShimBd::linear((im.kv_region() / 4) as u32, burst);
            emit(&mut txn, c, set + 4, kv, ARG_KV_IMAGE, im.k_codes(h))?;
            txn.push_shim_task(c, Direction::S2mm, 1, set + 4, 1, true);
        }
    }
    for r in rounds.saturating_sub(2)..rounds {
        wait(&mut txn, r);
    }
    Ok(txn.finish())
}

/// The query-only variant, for an attention over K/V images already on the device (the
/// decoder's cross-attention over the window's prepared K/V): per head MM2S 0 reads its 64
/// columns of every Q row (argument 0, `im.q_rows` rows), S2MM 0 writes its Q region after the
/// header (argument 1, the Q image). Two buffer arguments; Q rows `stride` f32 apart.
pub fn query_program(
    target: Target,
    im: &AttentionImages,
    stride: usize,
) -> Result<Vec<u32>, AieError> {
    check_stride(im, stride)?;
    let cols = target.cols as usize;
    let burst = target.generation.max_burst();
    let w = stride;
    let n = im.heads;
    let rounds = n.div_ceil(cols);
    let columns_of = |r: usize| (r * cols..((r + 1) * cols).min(n)).map(|u| (u % cols) as u8);
    let mut txn = Txn::new(target);
    for r in 0..rounds {
        if r >= 2 {
            for c in columns_of(r - 2) {
                txn.sync(Sync::shim(Direction::S2mm, c, 0));
            }
        }
        let set = (8 * (r % 2)) as u8;
        for h in r * cols..((r + 1) * cols).min(n) {
            let c = (h % cols) as u8;
            let rows = head_columns(im.q_rows, w, burst);
            emit(&mut txn, c, set, rows, ARG_Q_ROWS, 4 * h * HEAD_DIM)?;
            txn.push_shim_task(c, Direction::Mm2s, 0, set, 1, false);
            let q = ShimBd::linear((q_body(im) / 4) as u32, burst);
            emit(&mut txn, c, set + 1, q, 1, im.q_codes(h))?;
            txn.push_shim_task(c, Direction::S2mm, 0, set + 1, 1, true);
        }
    }
    for r in rounds.saturating_sub(2)..rounds {
        for c in columns_of(r) {
            txn.sync(Sync::shim(Direction::S2mm, c, 0));
        }
    }
    Ok(txn.finish())
}

/// Bytes of the two buffer arguments of [`query_program`] (Q rows `stride` f32 apart).
pub fn query_arg_lens(im: &AttentionImages, stride: usize) -> [usize; 2] {
    [4 * stride * im.q_rows, im.q_image_len()]
}

/// The array model of [`query_program`] for `heads` heads on `cols` columns: each column's
/// MM2S 0 (its heads' Q columns, head after head; the query rows follow from the length) to
/// its S2MM 0 (their Q regions after the headers).
///
/// # Errors
/// A column whose stream is not whole heads of whole query groups.
pub fn query_array(
    heads: usize,
    cols: u8,
    sent: &BTreeMap<(u8, u8), Vec<u8>>,
) -> Result<BTreeMap<Channel, Vec<u8>>, String> {
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect()
    };
    let mut produced = BTreeMap::new();
    for (&(col, chan), q) in sent {
        if chan != 0 {
            continue;
        }
        let units = (0..heads)
            .filter(|h| h % cols as usize == col as usize)
            .count();
        let per_row = 4 * HEAD_DIM * units;
        let group = per_row * crate::kernels::attention::Q_ROWS;
        if units == 0 || q.is_empty() || q.len() % group != 0 {
            return Err(format!(
                "column {col}: {} query bytes are not whole query groups of {units} heads",
                q.len()
            ));
        }
        let q_rows = q.len() / per_row;
        let im = AttentionImages::new(1, q_rows, 1).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(units * q_body(&im));
        for qh in q.chunks_exact(4 * HEAD_DIM * q_rows) {
            out.extend_from_slice(&query_image(&im, &f32s(qh)));
        }
        produced.insert((col, Direction::S2mm, 0), out);
    }
    Ok(produced)
}

/// One head's Q region after the header (codes, then scales times [`QUERY_SCALE`], zero
/// padding) from its `q_rows × 64` query values.
pub fn query_image(im: &AttentionImages, q: &[f32]) -> Vec<u8> {
    let one = AttentionImages { heads: 1, ..*im };
    let mut qo = vec![0u8; q_body(im)];
    let (qc, qs) = quantize_rows(q);
    for (d, &c) in qo.iter_mut().zip(&qc) {
        *d = c as u8;
    }
    let at = one.q_scales(0) - HEADER_BYTES;
    for (d, s) in qo[at..].chunks_exact_mut(4).zip(&qs) {
        d.copy_from_slice(&(s * QUERY_SCALE).to_le_bytes());
    }
    qo
}

/// The cores' work for one head (the kernel's model): `q` its `q_rows × 64` query values, `k`
/// and `v` its `keys × 64` keys and values; returns its Q region after the header (codes, then
/// scales times [`QUERY_SCALE`], zero padding) and its K/V region (codes, scales, zero padding,
/// bf16 values), laid out as [`AttentionImages`] says.
pub fn head_images(im: &AttentionImages, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<u8>, Vec<u8>) {
    let one = AttentionImages { heads: 1, ..*im };
    let qo = query_image(im, q);
    let mut kvo = vec![0u8; im.kv_region()];
    let (kc, ks) = quantize_rows(k);
    for (d, &c) in kvo.iter_mut().zip(&kc) {
        *d = c as u8;
    }
    for (d, s) in kvo[one.k_scales(0)..].chunks_exact_mut(4).zip(&ks) {
        d.copy_from_slice(&s.to_le_bytes());
    }
    for (d, &x) in kvo[one.values(0)..].chunks_exact_mut(2).zip(v) {
        d.copy_from_slice(&bf16_round(x).to_le_bytes());
    }
    (qo, kvo)
}

/// The array model: from each column's MM2S 0 (every head's Q columns, head after head) and
/// MM2S 1 (per head its K columns, then its V columns), what its S2MM 0 (Q regions after the
/// headers) and S2MM 1 (K/V regions) send, keyed by `(column, Direction::S2mm, channel)`.
///
/// # Errors
/// A column whose streams are not whole heads of `im`'s geometry, or a missing one.
pub fn inputs_array(
    im: &AttentionImages,
    sent: &BTreeMap<(u8, u8), Vec<u8>>,
) -> Result<BTreeMap<Channel, Vec<u8>>, String> {
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect()
    };
    let (q_head, kv_head) = (4 * im.q_rows * HEAD_DIM, 4 * im.keys * HEAD_DIM);
    let mut produced = BTreeMap::new();
    for (&(col, chan), q) in sent {
        if chan != 0 {
            continue;
        }
        let kv = sent
            .get(&(col, 1))
            .ok_or_else(|| format!("column {col}: queries but no keys/values"))?;
        if q.is_empty() || q.len() % q_head != 0 || kv.len() != 2 * kv_head * (q.len() / q_head) {
            return Err(format!(
                "column {col}: {} query and {} key/value bytes are not whole heads of {q_head} \
                 and {}",
                q.len(),
                kv.len(),
                2 * kv_head
            ));
        }
        let (mut qo, mut kvo) = (Vec::new(), Vec::new());
        for (qh, kvh) in q.chunks_exact(q_head).zip(kv.chunks_exact(2 * kv_head)) {
            let (k, v) = kvh.split_at(kv_head);
            let (a, b) = head_images(im, &f32s(qh), &f32s(k), &f32s(v));
            qo.extend_from_slice(&a);
            kvo.extend_from_slice(&b);
        }
        produced.insert((col, Direction::S2mm, 0), qo);
        produced.insert((col, Direction::S2mm, 1), kvo);
    }
    Ok(produced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{parse, Op};

    #[test]
    fn five_tasks_per_head_and_every_token_awaited_once() {
        for (target, heads) in [(Target::NPU1, 8), (Target::NPU2, 6)] {
            let im = AttentionImages::new(heads, 1500, 1500).unwrap();
            let (_, ops) = parse(&inputs_program(target, &im, heads * 64).unwrap()).unwrap();
            let count = |f: fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
            assert_eq!(count(|o| matches!(o, Op::BlockWrite { .. })), 5 * heads);
            assert_eq!(count(|o| matches!(o, Op::DdrPatch { .. })), 5 * heads);
            assert_eq!(count(|o| matches!(o, Op::Sync { .. })), 2 * heads);
        }
    }

    /// Head 1 of two on one column: its images are the quantizer's codes and scales of its own
    /// columns, the query scales times 1/8, the values bf16; a short stream is refused.
    #[test]
    fn the_array_model_writes_each_heads_images() {
        let im = AttentionImages::new(2, 4, 5).unwrap();
        let mut seed = 11u32;
        let mut f = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        let heads: Vec<[Vec<f32>; 3]> = (0..2)
            .map(|_| {
                [
                    (0..4 * 64).map(|_| f()).collect(),
                    (0..5 * 64).map(|_| f()).collect(),
                    (0..5 * 64).map(|_| f()).collect(),
                ]
            })
            .collect();
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let mut q = Vec::new();
        let mut kv = Vec::new();
        for [hq, hk, hv] in &heads {
            q.extend(bytes(hq));
            kv.extend(bytes(hk));
            kv.extend(bytes(hv));
        }
        let mut sent = BTreeMap::from([((0u8, 0u8), q), ((0, 1), kv)]);
        let out = inputs_array(&im, &sent).unwrap();
        let (qo, kvo) = (
            &out[&(0, Direction::S2mm, 0)],
            &out[&(0, Direction::S2mm, 1)],
        );
        let [hq, hk, hv] = &heads[1];
        let (qc, qs) = quantize_rows(hq);
        let (kc, ks) = quantize_rows(hk);
        let qb = &qo[im.q_region() - HEADER_BYTES..];
        let kvb = &kvo[im.kv_region()..];
        for (i, &c) in qc.iter().enumerate() {
            assert_eq!(qb[i] as i8, c);
        }
        let at = im.q_scales(0) - HEADER_BYTES;
        for (i, s) in qs.iter().enumerate() {
            assert_eq!(qb[at + 4 * i..][..4], (s / 8.0).to_le_bytes());
        }
        for (i, &c) in kc.iter().enumerate() {
            assert_eq!(kvb[i] as i8, c);
        }
        for (i, s) in ks.iter().enumerate() {
            assert_eq!(kvb[im.k_scales(0) + 4 * i..][..4], s.to_le_bytes());
        }
        for (i, &x) in hv.iter().enumerate() {
            assert_eq!(
                kvb[im.values(0) + 2 * i..][..2],
                bf16_round(x).to_le_bytes()
            );
        }
        sent.get_mut(&(0, 1)).unwrap().pop();
        assert!(inputs_array(&im, &sent)
            .unwrap_err()
            .contains("whole heads"));
    }

    /// Q/K/V rows through the inputs stream and model, the headers written as the host
    /// does, then the attention stream with row-major output: equal to the images the
    /// quantizer writes and to the head-major attention, gathered, bit for bit.
    #[test]
    fn rows_to_images_to_row_major_attention_through_the_shim() {
        use crate::program::attention::{
            attention_array, attention_program, attention_program_rows,
        };
        use crate::program::replay::{run_shim, scatter};
        let (heads, n) = (6, 37);
        let im = AttentionImages::new(heads, n, n).unwrap();
        let w = heads * HEAD_DIM;
        let mut seed = 5u32;
        let mut f = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        let rows = |m: usize, f: &mut dyn FnMut() -> f32| -> Vec<u8> {
            (0..m * w).flat_map(|_| f().to_le_bytes()).collect()
        };
        let (q, k, v) = (rows(im.q_rows, &mut f), rows(n, &mut f), rows(n, &mut f));
        let target = Target::NPU1;
        let words = inputs_program(target, &im, w).unwrap();
        let (mut qi, mut kvi) = (vec![0u8; im.q_image_len()], vec![0u8; im.kv_image_len()]);
        let traffic = run_shim(&words, &[&q, &k, &v, &qi, &kvi]).unwrap();
        let sent: BTreeMap<(u8, u8), Vec<u8>> = traffic
            .sent
            .iter()
            .map(|(&(c, _, ch), b)| ((c, ch), b.clone()))
            .collect();
        let produced = inputs_array(&im, &sent).unwrap();
        {
            let (mut a, mut b, mut c) =
                (vec![0u8; q.len()], vec![0u8; k.len()], vec![0u8; v.len()]);
            scatter(
                &traffic,
                &produced,
                &mut [&mut a, &mut b, &mut c, &mut qi, &mut kvi],
            )
            .unwrap();
        }
        // The images equal the model head by head.
        let f32s = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
                .collect()
        };
        let (qf, kf, vf) = (f32s(&q), f32s(&k), f32s(&v));
        let col = |x: &[f32], m: usize, h: usize| -> Vec<f32> {
            (0..m)
                .flat_map(|r| x[r * w + h * 64..r * w + h * 64 + 64].to_vec())
                .collect()
        };
        for h in 0..heads {
            let (a, b) = head_images(
                &im,
                &col(&qf, im.q_rows, h),
                &col(&kf, n, h),
                &col(&vf, n, h),
            );
            assert_eq!(
                qi[im.q_codes(h)..im.q_header(h) + im.q_region()],
                a[..],
                "head {h}"
            );
            assert_eq!(
                kvi[im.k_codes(h)..im.k_codes(h) + im.kv_region()],
                b[..],
                "head {h}"
            );
            qi[im.q_header(h)..im.q_codes(h)].copy_from_slice(&im.header(n, n, None));
        }
        // Attention, row-major and head-major.
        let run = |words: &[u32], out_len: usize| -> Vec<u8> {
            let mut out = vec![0u8; out_len];
            let t = run_shim(words, &[&qi, &kvi, &out]).unwrap();
            let sent: BTreeMap<(u8, u8), Vec<u8>> = t
                .sent
                .iter()
                .map(|(&(c, _, ch), b)| ((c, ch), b.clone()))
                .collect();
            let produced: BTreeMap<_, _> = attention_array(&sent, 2)
                .unwrap()
                .into_iter()
                .map(|(c, b)| ((c, Direction::S2mm, 0u8), b))
                .collect();
            let (mut a, mut b) = (qi.clone(), kvi.clone());
            scatter(&t, &produced, &mut [&mut a, &mut b, &mut out]).unwrap();
            out
        };
        let by_rows = f32s(&run(
            &attention_program_rows(target, &im).unwrap(),
            im.out_len(),
        ));
        let by_heads = f32s(&run(&attention_program(target, &im).unwrap(), im.out_len()));
        for h in 0..heads {
            for r in 0..n {
                assert_eq!(
                    by_rows[r * w + h * 64..][..64],
                    by_heads[im.out(h) / 4 + r * 64..][..64],
                    "head {h} row {r}"
                );
            }
        }
    }

    /// The query-only stream and model write the Q regions [`inputs_program`] writes.
    #[test]
    fn the_query_program_writes_the_inputs_programs_q_regions() {
        use crate::program::replay::{run_shim, scatter};
        let (heads, n) = (6, 9);
        let im = AttentionImages::new(heads, n, 40).unwrap();
        let mut seed = 8u32;
        let q: Vec<u8> = (0..im.q_rows * heads * 64)
            .flat_map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((seed >> 8) as f32 / (1 << 24) as f32 - 0.5).to_le_bytes()
            })
            .collect();
        let target = Target::NPU1;
        let words = query_program(target, &im, heads * 64).unwrap();
        let mut qi = vec![0u8; im.q_image_len()];
        let traffic = run_shim(&words, &[&q, &qi]).unwrap();
        let sent: BTreeMap<(u8, u8), Vec<u8>> = traffic
            .sent
            .iter()
            .map(|(&(c, _, ch), b)| ((c, ch), b.clone()))
            .collect();
        let produced = query_array(heads, target.cols, &sent).unwrap();
        let mut a = vec![0u8; q.len()];
        scatter(&traffic, &produced, &mut [&mut a, &mut qi]).unwrap();
        let f32s: Vec<f32> = q
            .chunks_exact(4)
            .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
            .collect();
        for h in 0..heads {
            let col: Vec<f32> = (0..im.q_rows)
                .flat_map(|r| f32s[r * heads * 64 + h * 64..][..64].to_vec())
                .collect();
            let want = query_image(&im, &col);
            assert_eq!(
                qi[im.q_codes(h)..im.q_header(h) + im.q_region()],
                want[..],
                "head {h}"
            );
        }
        let mut short = sent.clone();
        short.get_mut(&(0, 0)).unwrap().truncate(100);
        assert!(query_array(heads, target.cols, &short).is_err());
    }
}
