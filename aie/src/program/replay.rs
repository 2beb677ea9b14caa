//! A functional replay of an instruction stream: the shim DMA tasks it pushes are executed on
//! host buffers (BD address generation, DDR patches, repeat counts and iteration strides as
//! npu-instruction-stream.md §5-§10 describe them), and a Rust model of the array turns the
//! MM2S byte streams into the S2MM byte streams. Timing is not modelled (a task's data is
//! complete when it is pushed); the runtime's emulator is the timed, validated path.
//!
//! What it checks on the way: every BD it runs was written and patched, every access stays
//! inside its buffer, every task pushed with a token is awaited exactly once, and each S2MM
//! channel receives exactly the bytes its tasks describe.

use std::collections::BTreeMap;

use crate::design::{GemmDesign, Mapping, CORE_ROWS};
use crate::kernels::layout::{block_a, block_w, A_BYTES, C_ELEMS, TILE_M, W_BYTES};
use crate::kernels::matmul::{epilogue, matmul_i8_i32_unblocked, zero, EpilogueMode};
use crate::txn::{parse, DecodeError, Direction, Op, BD_WORDS};

/// Why a replay failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    /// The stream does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A task started on a BD that was never written or never patched.
    #[error("column {col}: task on BD {bd}, which has no {what}")]
    UnsetBd {
        /// Column.
        col: u8,
        /// BD id.
        bd: u8,
        /// "BLOCKWRITE" or "DDR_PATCH".
        what: &'static str,
    },
    /// A patch names a buffer the replay was not given.
    #[error("DDR_PATCH to argument {0}, which is not provided")]
    NoArgument(u32),
    /// A transfer leaves its buffer.
    #[error("column {col} BD {bd}: byte {offset} is outside argument {arg} ({len} bytes)")]
    OutOfBounds {
        /// Column.
        col: u8,
        /// BD id.
        bd: u8,
        /// Argument.
        arg: u32,
        /// Byte offset reached.
        offset: u64,
        /// Buffer length.
        len: usize,
    },
    /// Tokens and waits disagree on a channel.
    #[error("column {col} {dir:?} channel {chan}: {pending} token(s) pending at {at}")]
    Tokens {
        /// Column.
        col: u8,
        /// Direction.
        dir: Direction,
        /// Channel.
        chan: u8,
        /// Tokens outstanding (negative: a wait with nothing to wait for).
        pending: i64,
        /// "a wait" or "the end".
        at: &'static str,
    },
    /// A task moves more than the replay takes ([`MAX_TASK_WORDS`]).
    #[error("column {col} BD {bd}: a task of {words} words is more than the replay takes")]
    TooLarge {
        /// Column.
        col: u8,
        /// BD id.
        bd: u8,
        /// Words (length × runs).
        words: u64,
    },
    /// The array model and the streams disagree in length.
    #[error("{what}: {got} bytes, the design moves {want}")]
    StreamLength {
        /// Which stream.
        what: String,
        /// Bytes present.
        got: usize,
        /// Bytes the design consumes or produces.
        want: usize,
    },
}

/// Largest task (length × runs, 32-bit words) the replay runs: 1 GiB.
pub const MAX_TASK_WORDS: u64 = 1 << 28;

/// Key of a shim channel.
pub type Channel = (u8, Direction, u8);

/// The shim side of a replay: bytes each MM2S channel sent, and where each S2MM channel's
/// incoming words go (argument, byte offset).
#[derive(Default, Debug)]
pub struct ShimTraffic {
    /// MM2S channel → bytes in order.
    pub sent: BTreeMap<Channel, Vec<u8>>,
    /// S2MM channel → (argument, byte offset) of each incoming word, in order.
    pub sinks: BTreeMap<Channel, Vec<(u32, u64)>>,
    /// Tasks started.
    pub tasks: usize,
}

/// Executes the shim side of `words` against the argument buffers (`args[i]` = runtime
/// sequence buffer `i`; S2MM destinations are recorded, not written).
pub fn run_shim(words: &[u32], args: &[&[u8]]) -> Result<ShimTraffic, ReplayError> {
    let (_, ops) = parse(words)?;
    let mut bds: BTreeMap<(u8, u8), [u32; BD_WORDS]> = BTreeMap::new();
    let mut patches: BTreeMap<(u8, u8), (u32, u64)> = BTreeMap::new();
    let mut tokens: BTreeMap<Channel, i64> = BTreeMap::new();
    let mut t = ShimTraffic::default();
    for op in &ops {
        match op {
            Op::BlockWrite { addr, data } if is_shim_bd(*addr, data.len()) => {
                let (col, bd) = shim_bd_of(*addr);
                bds.insert((col, bd), data[..BD_WORDS].try_into().unwrap());
            }
            Op::DdrPatch {
                regaddr,
                arg_idx,
                arg_plus,
            } if is_shim_bd(regaddr.wrapping_sub(4), BD_WORDS) => {
                let plus = if *arg_idx >= 5 {
                    arg_plus.wrapping_sub(0x8000_0000)
                } else {
                    *arg_plus
                };
                patches.insert(shim_bd_of(regaddr - 4), (*arg_idx, plus));
            }
            Op::Write { addr, value } => {
                if let Some(ch) = shim_queue(*addr) {
                    let bd = (*value & 0xF) as u8;
                    let runs = ((*value >> 16) & 0xFF) as usize + 1;
                    if *value >> 31 == 1 {
                        *tokens.entry(ch).or_default() += 1;
                    }
                    start_task(&mut t, &bds, &patches, args, ch, bd, runs)?;
                }
            }
            Op::Sync {
                dir,
                col,
                chan,
                row: 0,
                cols: 1,
                rows: 1,
            } => {
                let ch = (*col, *dir, *chan);
                let n = tokens.entry(ch).or_default();
                *n -= 1;
                if *n < 0 {
                    let (col, dir, chan) = ch;
                    return Err(ReplayError::Tokens {
                        col,
                        dir,
                        chan,
                        pending: *n,
                        at: "a wait",
                    });
                }
            }
            _ => {}
        }
    }
    if let Some((&(col, dir, chan), &pending)) = tokens.iter().find(|(_, &n)| n != 0) {
        return Err(ReplayError::Tokens {
            col,
            dir,
            chan,
            pending,
            at: "the end",
        });
    }
    Ok(t)
}

fn is_shim_bd(addr: u32, len: usize) -> bool {
    let off = addr & 0xF_FFFF;
    (addr >> 20) & 0x1F == 0
        && (0x1D000..0x1D200).contains(&off)
        && off.is_multiple_of(0x20)
        && len >= BD_WORDS
}

fn shim_bd_of(addr: u32) -> (u8, u8) {
    (
        (addr >> 25) as u8,
        (((addr & 0xF_FFFF) - 0x1D000) / 0x20) as u8,
    )
}

fn shim_queue(addr: u32) -> Option<Channel> {
    if (addr >> 20) & 0x1F != 0 {
        return None;
    }
    let col = (addr >> 25) as u8;
    match addr & 0xF_FFFF {
        0x1D204 => Some((col, Direction::S2mm, 0)),
        0x1D20C => Some((col, Direction::S2mm, 1)),
        0x1D214 => Some((col, Direction::Mm2s, 0)),
        0x1D21C => Some((col, Direction::Mm2s, 1)),
        _ => None,
    }
}

/// Word offsets (from the patched base) of one run of a BD, per §6 / §8.
struct BdWalk {
    len: u64,
    base: u64,
    /// `(d0 wrap, d0 stride, d1 wrap, d1 stride, d2 stride)`; `None` = linear.
    nd: Option<(u64, u64, u64, u64, u64)>,
}

impl BdWalk {
    fn new(bd: &[u32; BD_WORDS], run: usize) -> BdWalk {
        let iter_wrap = ((bd[6] >> 20) & 0x3F) as u64 + 1;
        let iter_stride = (bd[6] & 0xF_FFFF) as u64 + 1;
        let base = if iter_wrap > 1 {
            (run as u64 % iter_wrap) * iter_stride
        } else {
            0
        };
        let w0 = ((bd[3] >> 20) & 0x3FF) as u64;
        let nd = (w0 != 0).then(|| {
            let s0 = (bd[3] & 0xF_FFFF) as u64 + 1;
            let w1 = (((bd[4] >> 20) & 0x3FF) as u64).max(1);
            let s1 = (bd[4] & 0xF_FFFF) as u64 + 1;
            let s2 = (bd[5] & 0xF_FFFF) as u64 + 1;
            (w0, s0, w1, s1, s2)
        });
        BdWalk {
            len: bd[0] as u64,
            base,
            nd,
        }
    }

    /// Offset of word `i` (< `len`).
    fn at(&self, i: u64) -> u64 {
        match self.nd {
            None => self.base + i,
            Some((w0, s0, w1, s1, s2)) => {
                self.base + (i % w0) * s0 + (i / w0 % w1) * s1 + (i / (w0 * w1)) * s2
            }
        }
    }
}

fn start_task(
    t: &mut ShimTraffic,
    bds: &BTreeMap<(u8, u8), [u32; BD_WORDS]>,
    patches: &BTreeMap<(u8, u8), (u32, u64)>,
    args: &[&[u8]],
    ch: Channel,
    bd: u8,
    runs: usize,
) -> Result<(), ReplayError> {
    let col = ch.0;
    let words = bds.get(&(col, bd)).ok_or(ReplayError::UnsetBd {
        col,
        bd,
        what: "BLOCKWRITE",
    })?;
    let &(arg, plus) = patches.get(&(col, bd)).ok_or(ReplayError::UnsetBd {
        col,
        bd,
        what: "DDR_PATCH",
    })?;
    let buf = *args.get(arg as usize).ok_or(ReplayError::NoArgument(arg))?;
    let total = words[0] as u64 * runs as u64;
    if total > MAX_TASK_WORDS {
        return Err(ReplayError::TooLarge {
            col,
            bd,
            words: total,
        });
    }
    t.tasks += 1;
    for run in 0..runs {
        let walk = BdWalk::new(words, run);
        for w in (0..walk.len).map(|i| walk.at(i)) {
            let byte = plus.saturating_add(4 * w);
            if byte.saturating_add(4) > buf.len() as u64 {
                return Err(ReplayError::OutOfBounds {
                    col,
                    bd,
                    arg,
                    offset: byte,
                    len: buf.len(),
                });
            }
            match ch.1 {
                Direction::Mm2s => t
                    .sent
                    .entry(ch)
                    .or_default()
                    .extend_from_slice(&buf[byte as usize..byte as usize + 4]),
                Direction::S2mm => t.sinks.entry(ch).or_default().push((arg, byte)),
            }
        }
    }
    Ok(())
}

/// The GEMM design's array, functionally: consumes the row and column streams exactly as the
/// cores acquire their objects, runs the kernel models, and returns each column's S2MM stream.
pub fn gemm_array(
    d: &GemmDesign,
    m: usize,
    mode: EpilogueMode,
    sent: &BTreeMap<Channel, Vec<u8>>,
) -> Result<BTreeMap<Channel, Vec<u8>>, ReplayError> {
    let blocks = d.row_blocks(m);
    let kt1 = d.k_tiles() + 1;
    let groups = d.channel_groups();
    let empty = Vec::new();
    let stream = |ch: Channel, want: usize| -> Result<&Vec<u8>, ReplayError> {
        let s = sent.get(&ch).unwrap_or(&empty);
        if s.len() == want {
            Ok(s)
        } else {
            Err(ReplayError::StreamLength {
                what: format!("{ch:?}"),
                got: s.len(),
                want,
            })
        }
    };
    let mut outs = BTreeMap::new();
    let mut core = Core::default();
    for c in 0..d.cols() {
        let g_c = d.groups_of(c);
        if g_c == 0 {
            continue;
        }
        let out: &mut Vec<u8> = outs.entry((c as u8, Direction::S2mm, 0)).or_default();
        match d.mapping {
            Mapping::RowBlocks => {
                // Row stream j feeds core row j in every column; column c's cores skip the
                // groups they have no block for.
                let col = stream((c as u8, Direction::Mm2s, 1), blocks * g_c * kt1 * W_BYTES)?;
                for rb in 0..blocks {
                    for g in 0..g_c {
                        for j in 0..CORE_ROWS {
                            let row = stream(
                                (j as u8, Direction::Mm2s, 0),
                                blocks * groups * kt1 * A_BYTES,
                            )?;
                            let a_at = |t: usize| ((rb * groups + g) * kt1 + t) * A_BYTES;
                            let w_at = |t: usize| ((rb * g_c + g) * kt1 + t) * W_BYTES;
                            core.run(d, mode, row, a_at, col, w_at, out);
                        }
                    }
                }
            }
            Mapping::ChannelSpread => {
                // Column c: its own copy of the rows (once per quad), and per quad and depth
                // step the four blocks' tiles, tile j to core j.
                let row = stream((c as u8, Direction::Mm2s, 0), blocks * g_c * kt1 * A_BYTES)?;
                let col = stream(
                    (c as u8, Direction::Mm2s, 1),
                    blocks * g_c * kt1 * CORE_ROWS * W_BYTES,
                )?;
                for rb in 0..blocks {
                    for g in 0..g_c {
                        for j in 0..CORE_ROWS {
                            let a_at = |t: usize| ((rb * g_c + g) * kt1 + t) * A_BYTES;
                            let w_at =
                                |t: usize| (((rb * g_c + g) * kt1 + t) * CORE_ROWS + j) * W_BYTES;
                            core.run(d, mode, row, a_at, col, w_at, out);
                        }
                    }
                }
            }
        }
    }
    Ok(outs)
}

/// One compute tile's buffers.
#[derive(Default)]
struct Core {
    acc: Vec<i32>,
    res: Vec<f32>,
    /// The row-scale and parameter objects as received, then blocked.
    raw_s: Vec<i8>,
    raw_p: Vec<i8>,
    s: Vec<i8>,
    p: Vec<i8>,
}

impl Core {
    /// One output tile: `k/64` steps from objects at `a_at(t)` / `w_at(t)` of the two streams,
    /// the epilogue with the objects of step `k/64`, the 32 × 64 f32 result appended to `out`.
    /// The depth steps take the objects before blocking ([`matmul_i8_i32_unblocked`]: the same
    /// exact i32 sums as the blocked kernel); the epilogue takes them blocked, as the core does.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        d: &GemmDesign,
        mode: EpilogueMode,
        rows: &[u8],
        a_at: impl Fn(usize) -> usize,
        cols: &[u8],
        w_at: impl Fn(usize) -> usize,
        out: &mut Vec<u8>,
    ) {
        self.acc.resize(C_ELEMS, 0);
        self.res.resize(C_ELEMS, 0.0);
        for v in [&mut self.raw_s, &mut self.s] {
            v.resize(A_BYTES, 0);
        }
        for v in [&mut self.raw_p, &mut self.p] {
            v.resize(W_BYTES, 0);
        }
        zero(&mut self.acc);
        for t in 0..d.k_tiles() {
            matmul_i8_i32_unblocked(
                &rows[a_at(t)..a_at(t) + A_BYTES],
                &cols[w_at(t)..w_at(t) + W_BYTES],
                &mut self.acc,
            );
        }
        let (s_at, p_at) = (a_at(d.k_tiles()), w_at(d.k_tiles()));
        to_i8(&rows[s_at..s_at + A_BYTES], &mut self.raw_s);
        to_i8(&cols[p_at..p_at + W_BYTES], &mut self.raw_p);
        block_a(&self.raw_s, &mut self.s);
        block_w(&self.raw_p, &mut self.p);
        epilogue(&self.acc, &self.s, &self.p, mode, &mut self.res);
        debug_assert_eq!(self.res.len(), TILE_M * 64);
        out.extend(self.res.iter().flat_map(|v| v.to_le_bytes()));
    }
}

fn to_i8(b: &[u8], out: &mut [i8]) {
    for (o, &x) in out.iter_mut().zip(b) {
        *o = x as i8;
    }
}

/// Writes each S2MM stream to the places its tasks named (`outputs[arg]`); a destination
/// outside its output buffer is an [`ReplayError::OutOfBounds`] with `bd = 255`.
pub fn scatter(
    traffic: &ShimTraffic,
    produced: &BTreeMap<Channel, Vec<u8>>,
    outputs: &mut [&mut [u8]],
) -> Result<(), ReplayError> {
    for (ch, sinks) in &traffic.sinks {
        let empty = Vec::new();
        let data = produced.get(ch).unwrap_or(&empty);
        if data.len() != 4 * sinks.len() {
            let what = format!("{ch:?} output");
            return Err(ReplayError::StreamLength {
                what,
                got: data.len(),
                want: 4 * sinks.len(),
            });
        }
        for (&(arg, byte), word) in sinks.iter().zip(data.chunks_exact(4)) {
            let buf = outputs
                .get_mut(arg as usize)
                .ok_or(ReplayError::NoArgument(arg))?;
            let len = buf.len();
            let (col, _, _) = *ch;
            let at = usize::try_from(byte)
                .ok()
                .filter(|&b| b.saturating_add(4) <= len);
            let b = at.ok_or(ReplayError::OutOfBounds {
                col,
                bd: u8::MAX,
                arg,
                offset: byte,
                len,
            })?;
            buf[b..b + 4].copy_from_slice(word);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::design::GemmDesign;
    use crate::program::gemm::gemm_program;
    use crate::program::images::{activation_image_len, output_len, weight_image_len};
    use crate::txn::Target;

    /// Mutated and random streams give a result or a typed error, never a panic (the stable
    /// stand-in for `aie/fuzz`).
    #[test]
    fn never_panics_on_mutated_or_random_streams() {
        let d = GemmDesign::new(Target::NPU1, 128, 256).unwrap();
        let m = 40;
        let good = gemm_program(&d, m).unwrap();
        let a = vec![1u8; activation_image_len(&d, m)];
        let w = vec![2u8; weight_image_len(&d)];
        let o = vec![0u8; output_len(&d, m)];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut ok, mut refused) = (0, 0);
        for i in 0..10_000 {
            let mut words = good.clone();
            match i % 4 {
                0 => {
                    let at = next() as usize % words.len();
                    words[at] ^= 1 << (next() % 32);
                }
                1 => {
                    let at = next() as usize % words.len();
                    words[at] = next() as u32;
                }
                2 => words.truncate(next() as usize % words.len()),
                _ => words = (0..next() % 64).map(|_| next() as u32).collect(),
            }
            match run_shim(&words, &[&a, &w, &o]) {
                Ok(t) => {
                    ok += 1;
                    // The array model is the slow part: run it on every 64th stream that replays.
                    if ok % 64 != 1 {
                        continue;
                    }
                    if let Ok(p) = gemm_array(&d, m, EpilogueMode::Store, &t.sent) {
                        let (mut x, mut y, mut z) = (vec![0u8; 8], vec![0u8; 8], vec![0u8; 64]);
                        let _ = scatter(&t, &p, &mut [&mut x, &mut y, &mut z]);
                    }
                }
                Err(_) => refused += 1,
            }
        }
        assert!(ok > 100 && refused > 5_000, "ok {ok}, refused {refused}");
    }
}
