//! The cache-inputs device program: the first step of a decoder's causal self-attention over
//! its K/V cache as a chain member. From the f32 rows the q, k and v projections left on the
//! device (row-major, `heads · 64` wide) it writes the attention design's Q image (per head the
//! query codes and scales times `head_dim^-½`, as [`super::attention_inputs::query_program`])
//! and appends the call's `n` new key/value rows to a slot's K/V image **at the position the
//! arguments say**: per head the key codes, their scales and the values narrowed to bf16 (the
//! bits the host writes for the attention design: `q8::quant::quantize_row` per row and head,
//! as [`quantize_rows`]; [`bf16_round`]). The Q regions' headers are the host's.
//!
//! **Buffers** (runtime-sequence arguments): 0 = Q rows (f32, `q_rows × w`), 1 = the new K
//! rows (f32, `n × w`), 2 = the new V rows (same), 3 = the Q image, 4 = the slot's K/V image
//! plus `64 · pos` (where position `pos`'s key codes of head 0 would be), 5 = the image plus
//! `4 · pos` (its key scale), 6 = the image plus `128 · pos` (its bf16 values). The three
//! destinations are one image: the host patches the position into the addresses per call
//! (a real runtime patches BO addresses the same way), the stream's offsets are the image's
//! per-head regions ([`AttentionImages::k_codes`], [`AttentionImages::k_scales`],
//! [`AttentionImages::values`]), and `n` is fixed per stream (one stream per row count).
//!
//! **Stream**: head `h` runs on column `h mod cols` in round `h / cols`. Per head: MM2S 0 reads
//! its 64 columns of every Q row, MM2S 1 its columns of the `n` K rows, then of the `n` V rows
//! (two tasks); S2MM 0 writes its Q region after the header (one linear task, with a token);
//! S2MM 1 writes `64 · n` bytes of key codes, `4 · n` of scales and `128 · n` of values (three
//! linear tasks, the last with a token). BDs alternate between two sets per column (ids 0-6,
//! 8-14); before round `r` reuses a set the stream waits for the outputs of round `r − 2`.
//!
//! The array model ([`cache_inputs_array`]) is the cores' quantizer model per head. This
//! program exists on the emulated device only: no AIE C++ kernel and no xclbin of it have been
//! written or built (its arithmetic is [`super::attention_inputs`]'s).

use std::collections::BTreeMap;

use crate::kernels::attention::{quantize_rows, HEAD_DIM, Q_ROWS};
use crate::kernels::numerics::bf16_round;
use crate::program::attention::AttentionImages;
use crate::program::attention_inputs::{emit, head_columns, q_body, query_image};
use crate::program::replay::Channel;
use crate::txn::{Direction, ShimBd, Sync, Target, Txn};
use crate::AieError;

/// Runtime-sequence argument of the Q rows.
pub const ARG_Q_ROWS: u32 = 0;
/// Runtime-sequence argument of the new K rows.
pub const ARG_K_ROWS: u32 = 1;
/// Runtime-sequence argument of the new V rows.
pub const ARG_V_ROWS: u32 = 2;
/// Runtime-sequence argument of the Q image.
pub const ARG_Q_IMAGE: u32 = 3;
/// Runtime-sequence argument of the slot's K/V image plus `64 · pos`.
pub const ARG_KEY_CODES: u32 = 4;
/// Runtime-sequence argument of the slot's K/V image plus `4 · pos`.
pub const ARG_KEY_SCALES: u32 = 5;
/// Runtime-sequence argument of the slot's K/V image plus `128 · pos`.
pub const ARG_VALUES: u32 = 6;
/// Buffer arguments of the program.
pub const CACHE_INPUT_ARGS: usize = 7;

/// Bytes of one new row of one head in a K/V image: 64 codes, an f32 scale, 64 bf16 values.
pub const ROW_BYTES: usize = HEAD_DIM + 4 + 2 * HEAD_DIM;

/// Bytes of the seven buffer arguments for images `im` (a slot's K/V image of `im.keys`
/// positions, `im.q_rows` query rows) and `n` new rows, source rows `stride` f32 apart. The destinations are the whole slot
/// image: the caller keeps `pos + n <= im.keys`.
pub fn cache_arg_lens(im: &AttentionImages, n: usize, stride: usize) -> [usize; CACHE_INPUT_ARGS] {
    let w = stride;
    let kv = im.kv_image_len();
    [
        4 * w * im.q_rows,
        4 * w * n,
        4 * w * n,
        im.q_image_len(),
        kv,
        kv,
        kv,
    ]
}

/// The instruction stream that writes the Q image of `im` from `im.q_rows` Q rows and `n` new
/// K/V rows (source rows `stride` f32 apart, at least `heads · 64`) into the slot image
/// (arguments 4-6) on `target`.
pub fn cache_inputs_program(
    target: Target,
    im: &AttentionImages,
    n: usize,
    stride: usize,
) -> Result<Vec<u32>, AieError> {
    if stride < im.heads * HEAD_DIM {
        return Err(AieError::Shape {
            what: "row stride",
            value: stride,
            reason: "source rows hold every head: at least heads · 64 values apart",
        });
    }
    if n == 0 || n > im.keys {
        return Err(AieError::Shape {
            what: "new rows",
            value: n,
            reason: "a cache write takes 1 to the image's keys rows",
        });
    }
    let cols = target.cols as usize;
    let burst = target.generation.max_burst();
    let w = stride;
    let heads = im.heads;
    let rounds = heads.div_ceil(cols);
    let columns_of = |r: usize| (r * cols..((r + 1) * cols).min(heads)).map(|u| (u % cols) as u8);
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
        for h in r * cols..((r + 1) * cols).min(heads) {
            let c = (h % cols) as u8;
            let col0 = 4 * h * HEAD_DIM;
            let rows_of = |m: usize| head_columns(m, w, burst);
            emit(&mut txn, c, set, rows_of(im.q_rows), ARG_Q_ROWS, col0)?;
            txn.push_shim_task(c, Direction::Mm2s, 0, set, 1, false);
            emit(&mut txn, c, set + 1, rows_of(n), ARG_K_ROWS, col0)?;
            txn.push_shim_task(c, Direction::Mm2s, 1, set + 1, 1, false);
            emit(&mut txn, c, set + 2, rows_of(n), ARG_V_ROWS, col0)?;
            txn.push_shim_task(c, Direction::Mm2s, 1, set + 2, 1, false);
            let q = ShimBd::linear((q_body(im) / 4) as u32, burst);
            emit(&mut txn, c, set + 3, q, ARG_Q_IMAGE, im.q_codes(h))?;
            txn.push_shim_task(c, Direction::S2mm, 0, set + 3, 1, true);
            let codes = ShimBd::linear((n * HEAD_DIM / 4) as u32, burst);
            emit(&mut txn, c, set + 4, codes, ARG_KEY_CODES, im.k_codes(h))?;
            txn.push_shim_task(c, Direction::S2mm, 1, set + 4, 1, false);
            let scales = ShimBd::linear(n as u32, burst);
            emit(&mut txn, c, set + 5, scales, ARG_KEY_SCALES, im.k_scales(h))?;
            txn.push_shim_task(c, Direction::S2mm, 1, set + 5, 1, false);
            let values = ShimBd::linear((n * HEAD_DIM / 2) as u32, burst);
            emit(&mut txn, c, set + 6, values, ARG_VALUES, im.values(h))?;
            txn.push_shim_task(c, Direction::S2mm, 1, set + 6, 1, true);
        }
    }
    for r in rounds.saturating_sub(2)..rounds {
        wait(&mut txn, r);
    }
    Ok(txn.finish())
}

/// One head's new rows as the slot image holds them: `n × 64` key codes, `n` f32 scales,
/// `n × 64` bf16 values, from its `n × 64` keys `k` and values `v`.
pub fn new_rows(k: &[f32], v: &[f32]) -> Vec<u8> {
    let (codes, scales) = quantize_rows(k);
    let mut out = Vec::with_capacity(codes.len() + 4 * scales.len() + 2 * v.len());
    out.extend(codes.iter().map(|&c| c as u8));
    for s in &scales {
        out.extend_from_slice(&s.to_le_bytes());
    }
    for &x in v {
        out.extend_from_slice(&bf16_round(x).to_le_bytes());
    }
    out
}

/// The array model of [`cache_inputs_program`] for `heads` heads on `cols` columns: each
/// column's MM2S 0 (its heads' Q columns, head after head; the query rows follow from the
/// length) to its S2MM 0 (their Q regions after the headers), its MM2S 1 (per head its `n` K
/// rows' columns, then its V rows'; `n` from the length) to its S2MM 1 (per head the codes,
/// scales and values of [`new_rows`]).
///
/// # Errors
/// A column whose streams are not whole heads of whole query groups and of equal K and V rows,
/// or a missing one.
pub fn cache_inputs_array(
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
        let kv = sent
            .get(&(col, 1))
            .ok_or_else(|| format!("column {col}: queries but no keys/values"))?;
        let units = (0..heads)
            .filter(|h| h % cols as usize == col as usize)
            .count();
        let q_row = 4 * HEAD_DIM * units;
        let kv_row = 2 * 4 * HEAD_DIM * units;
        if units == 0
            || q.is_empty()
            || q.len() % (q_row * Q_ROWS) != 0
            || kv.is_empty()
            || kv.len() % kv_row != 0
        {
            return Err(format!(
                "column {col}: {} query and {} key/value bytes are not whole heads of whole \
                 query groups and rows of {units} heads",
                q.len(),
                kv.len()
            ));
        }
        let (q_rows, n) = (q.len() / q_row, kv.len() / kv_row);
        let im = AttentionImages::new(1, q_rows, 1).map_err(|e| e.to_string())?;
        let (mut qo, mut kvo) = (Vec::new(), Vec::new());
        let one = 4 * HEAD_DIM * n;
        for (qh, kvh) in q
            .chunks_exact(4 * HEAD_DIM * q_rows)
            .zip(kv.chunks_exact(2 * one))
        {
            qo.extend_from_slice(&query_image(&im, &f32s(qh)));
            let (k, v) = kvh.split_at(one);
            kvo.extend_from_slice(&new_rows(&f32s(k), &f32s(v)));
        }
        produced.insert((col, Direction::S2mm, 0), qo);
        produced.insert((col, Direction::S2mm, 1), kvo);
    }
    Ok(produced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::attention_inputs::query_program;
    use crate::program::replay::{run_shim, scatter};
    use crate::txn::{parse, Op};

    #[test]
    fn seven_tasks_per_head_and_every_token_awaited_once() {
        for (target, heads) in [(Target::NPU1, 8), (Target::NPU2, 6)] {
            let im = AttentionImages::new(heads, 8, 455).unwrap();
            let (_, ops) =
                parse(&cache_inputs_program(target, &im, 3, heads * 64).unwrap()).unwrap();
            let count = |f: fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
            assert_eq!(count(|o| matches!(o, Op::BlockWrite { .. })), 7 * heads);
            assert_eq!(count(|o| matches!(o, Op::DdrPatch { .. })), 7 * heads);
            assert_eq!(count(|o| matches!(o, Op::Sync { .. })), 2 * heads);
        }
        let im = AttentionImages::new(2, 4, 10).unwrap();
        assert!(cache_inputs_program(Target::NPU1, &im, 0, 128).is_err());
        assert!(cache_inputs_program(Target::NPU1, &im, 11, 128).is_err());
        assert!(cache_inputs_program(Target::NPU1, &im, 1, 64).is_err());
    }

    /// Q rows and `n` new K/V rows (rows wider than the heads) through the stream and model,
    /// the destinations at a
    /// position `pos` of a slot image: the Q regions are the query program's, each head's
    /// codes, scales and values land at `pos` of its regions (the quantizer's bits), and no
    /// other byte of the image changes.
    #[test]
    fn new_rows_land_at_the_position_in_the_slot_image() {
        let (heads, keys, n, pos) = (6, 40, 5, 17);
        let target = Target::NPU1;
        let im = AttentionImages::new(heads, n, keys).unwrap();
        // Source rows wider than the heads (as the decoder mapping's GEMM returns them).
        let stride = heads * HEAD_DIM + 128;
        let mut seed = 3u32;
        let mut f = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        let rows = |m: usize, f: &mut dyn FnMut() -> f32| -> Vec<f32> {
            (0..m * stride).map(|_| f()).collect()
        };
        let (q, k, v) = (rows(im.q_rows, &mut f), rows(n, &mut f), rows(n, &mut f));
        let bytes = |x: &[f32]| -> Vec<u8> { x.iter().flat_map(|v| v.to_le_bytes()).collect() };
        let (qb, kb, vb) = (bytes(&q), bytes(&k), bytes(&v));
        let words = cache_inputs_program(target, &im, n, stride).unwrap();
        // The three destinations as three views of one image, each from its position offset.
        let kv_len = im.kv_image_len();
        let before: Vec<u8> = (0..kv_len + 128 * pos)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut qi = vec![0u8; im.q_image_len()];
        let mut dst = [
            before[64 * pos..64 * pos + kv_len].to_vec(),
            before[4 * pos..4 * pos + kv_len].to_vec(),
            before[128 * pos..128 * pos + kv_len].to_vec(),
        ];
        let traffic = run_shim(&words, &[&qb, &kb, &vb, &qi, &dst[0], &dst[1], &dst[2]]).unwrap();
        let sent: BTreeMap<(u8, u8), Vec<u8>> = traffic
            .sent
            .iter()
            .map(|(&(c, _, ch), b)| ((c, ch), b.clone()))
            .collect();
        let produced = cache_inputs_array(heads, target.cols, &sent).unwrap();
        {
            let (mut a, mut b, mut c) = (qb.clone(), kb.clone(), vb.clone());
            let [d0, d1, d2] = &mut dst;
            scatter(
                &traffic,
                &produced,
                &mut [&mut a, &mut b, &mut c, &mut qi, d0, d1, d2],
            )
            .unwrap();
        }
        // The Q image: what the query program writes.
        let mut want_q = vec![0u8; im.q_image_len()];
        let t = run_shim(
            &query_program(target, &im, stride).unwrap(),
            &[&qb, &want_q],
        )
        .unwrap();
        let sent_q: BTreeMap<(u8, u8), Vec<u8>> = t
            .sent
            .iter()
            .map(|(&(c, _, ch), b)| ((c, ch), b.clone()))
            .collect();
        let pq =
            crate::program::attention_inputs::query_array(heads, target.cols, &sent_q).unwrap();
        let mut a = qb.clone();
        scatter(&t, &pq, &mut [&mut a, &mut want_q]).unwrap();
        assert_eq!(qi, want_q);
        // Each view: only its ranges changed, to the quantizer's bits of head h at `pos`.
        let mut want = [dst[0].clone(), dst[1].clone(), dst[2].clone()];
        for (i, b) in want.iter_mut().enumerate() {
            let off = [64, 4, 128][i] * pos;
            b.copy_from_slice(&before[off..off + kv_len]);
        }
        for h in 0..heads {
            let col = |x: &[f32]| -> Vec<f32> {
                (0..n)
                    .flat_map(|r| x[r * stride + h * HEAD_DIM..][..HEAD_DIM].to_vec())
                    .collect()
            };
            let r = new_rows(&col(&k), &col(&v));
            let (codes, rest) = r.split_at(n * HEAD_DIM);
            let (scales, values) = rest.split_at(4 * n);
            want[0][im.k_codes(h)..][..codes.len()].copy_from_slice(codes);
            want[1][im.k_scales(h)..][..scales.len()].copy_from_slice(scales);
            want[2][im.values(h)..][..values.len()].copy_from_slice(values);
        }
        for i in 0..3 {
            assert!(dst[i] == want[i], "destination {i}");
        }
        // A short key/value stream is refused.
        let mut short = sent.clone();
        short.get_mut(&(0, 1)).unwrap().truncate(100);
        assert!(cache_inputs_array(heads, target.cols, &short).is_err());
    }
}
