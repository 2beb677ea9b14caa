//! The shim-tile DMA buffer descriptor (AIE2 and AIE2P, 8 words at `c<<25 | 0x1D000 + bd·0x20`,
//! `npu-instruction-stream.md` §6) and its address generator. Units: lengths, wraps and steps
//! count 32-bit words; steps and the iteration wrap are stored minus one.

/// Register offset of shim BD 0 word 0.
pub const BD_BASE: u32 = 0x1D000;
/// Bytes between BDs.
pub const BD_STRIDE: u32 = 0x20;
/// BDs per shim tile.
pub const BDS: usize = 16;
/// Words per shim BD.
pub const BD_WORDS: usize = 8;
/// Register offset of the first channel control register (S2MM0).
pub const CHANNEL_BASE: u32 = 0x1D200;

/// A decoded shim BD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShimBd {
    /// Words per run (`Buffer_Length`).
    pub length: u32,
    /// Byte address from words 1 and 2 (bits `[47:0]`) before any patch.
    pub address: u64,
    /// `D0_Wrap` (0 = linear mode).
    pub d0_wrap: u32,
    /// D0 stride in words (decoded: stored + 1).
    pub d0_step: u32,
    /// `D1_Wrap`.
    pub d1_wrap: u32,
    /// D1 stride in words.
    pub d1_step: u32,
    /// D2 stride in words (the d2 count is implicit in the length).
    pub d2_step: u32,
    /// Iterations (decoded: stored + 1).
    pub iter_wrap: u32,
    /// Iteration stride in words (decoded: stored + 1).
    pub iter_step: u32,
    /// `Iteration_Current`.
    pub iter_current: u32,
    /// `Valid_BD`.
    pub valid: bool,
    /// `Use_Next_BD`.
    pub use_next: bool,
    /// `Next_BD`.
    pub next_bd: u8,
    /// `Lock_Acq_Enable`.
    pub lock_acquire: bool,
    /// `Enable_Packet`.
    pub packet: bool,
}

impl ShimBd {
    /// Decode the 8 BD words.
    pub fn decode(w: &[u32; BD_WORDS]) -> Self {
        Self {
            length: w[0],
            address: (w[1] & !3) as u64 | ((w[2] & 0xFFFF) as u64) << 32,
            d0_wrap: (w[3] >> 20) & 0x3FF,
            d0_step: (w[3] & 0xF_FFFF) + 1,
            d1_wrap: (w[4] >> 20) & 0x3FF,
            d1_step: (w[4] & 0xF_FFFF) + 1,
            d2_step: (w[5] & 0xF_FFFF) + 1,
            iter_wrap: ((w[6] >> 20) & 0x3F) + 1,
            iter_step: (w[6] & 0xF_FFFF) + 1,
            iter_current: (w[6] >> 26) & 0x3F,
            valid: w[7] >> 25 & 1 == 1,
            use_next: w[7] >> 26 & 1 == 1,
            next_bd: ((w[7] >> 27) & 0xF) as u8,
            lock_acquire: w[7] >> 12 & 1 == 1,
            packet: w[2] >> 30 & 1 == 1,
        }
    }

    /// Encode into the 8 BD words (inverse of [`ShimBd::decode`]; burst length 256 B, AxCACHE 2
    /// as mlir-aie writes them; `iter_current` and the lock fields are written as decoded).
    pub fn encode(&self) -> [u32; BD_WORDS] {
        let minus1 = |v: u32| v.saturating_sub(1) & 0xF_FFFF;
        [
            self.length,
            self.address as u32 & !3,
            ((self.address >> 32) as u32 & 0xFFFF) | (self.packet as u32) << 30,
            (self.d0_wrap & 0x3FF) << 20 | minus1(self.d0_step),
            2 << 30 | (self.d1_wrap & 0x3FF) << 20 | minus1(self.d1_step),
            2 << 24 | minus1(self.d2_step),
            (self.iter_current & 0x3F) << 26
                | (self.iter_wrap.saturating_sub(1) & 0x3F) << 20
                | minus1(self.iter_step),
            (self.next_bd as u32 & 0xF) << 27
                | (self.use_next as u32) << 26
                | (self.valid as u32) << 25
                | (self.lock_acquire as u32) << 12,
        ]
    }

    /// A valid linear BD of `words` words (one iteration).
    pub fn linear(words: u32) -> Self {
        Self {
            length: words,
            d0_step: 1,
            d1_step: 1,
            d2_step: 1,
            iter_wrap: 1,
            iter_step: 1,
            valid: true,
            ..Self::default()
        }
    }

    /// Whether the BD walks its words linearly (`D0_Wrap` = 0).
    pub fn is_linear(&self) -> bool {
        self.d0_wrap == 0
    }

    /// Word offset (from the BD's base) of the `k`th word of run `run` of a task.
    pub fn word_offset(&self, run: u32, k: u32) -> u64 {
        let iter = (run % self.iter_wrap) as u64 * self.iter_step as u64;
        iter + self.pattern_offset(k)
    }

    fn pattern_offset(&self, k: u32) -> u64 {
        if self.is_linear() {
            return k as u64;
        }
        let (w0, w1) = (self.d0_wrap as u64, self.d1_wrap.max(1) as u64);
        let k = k as u64;
        let i0 = k % w0;
        let i1 = (k / w0) % w1;
        let i2 = k / (w0 * w1);
        i0 * self.d0_step as u64 + i1 * self.d1_step as u64 + i2 * self.d2_step as u64
    }

    /// The largest word offset any of `runs` runs touches, in O(1) (steps are all ≥ 1, so the
    /// maximum lies at the end of a full d0/d1 block or of the partial last one).
    pub fn max_word_offset(&self, runs: u32) -> Option<u64> {
        if self.length == 0 || runs == 0 {
            return None;
        }
        let len = self.length as u64;
        let pattern = if self.is_linear() {
            len - 1
        } else {
            let (w0, w1) = (self.d0_wrap as u64, self.d1_wrap.max(1) as u64);
            let (s0, s1, s2) = (
                self.d0_step as u64,
                self.d1_step as u64,
                self.d2_step as u64,
            );
            let block = w0 * w1;
            let (full, rest) = (len / block, len % block);
            let mut best = 0;
            if full > 0 {
                best = (full - 1) * s2 + (w1 - 1) * s1 + (w0 - 1) * s0;
            }
            if rest > 0 {
                let (rows, tail) = (rest / w0, rest % w0);
                if rows > 0 {
                    best = best.max(full * s2 + (rows - 1) * s1 + (w0 - 1) * s0);
                }
                if tail > 0 {
                    best = best.max(full * s2 + rows * s1 + (tail - 1) * s0);
                }
            }
            best
        };
        let iters = runs.min(self.iter_wrap) as u64;
        Some(pattern + (iters - 1) * self.iter_step as u64)
    }
}

/// `(col, row, offset)` of a register address.
pub fn split_addr(addr: u64) -> (u32, u32, u32) {
    (
        (addr >> 25) as u32,
        ((addr >> 20) & 0x1F) as u32,
        (addr & 0xF_FFFF) as u32,
    )
}

/// A shim DMA channel register: `(direction, channel, is_task_queue)` for offsets
/// `0x1D200..0x1D220` (control = `0x1D200 + 8·ch (+0x10 for MM2S)`, queue = control + 4).
pub fn channel_register(offset: u32) -> Option<(super::op::Direction, u8, bool)> {
    use super::op::Direction;
    if !(CHANNEL_BASE..CHANNEL_BASE + 0x20).contains(&offset) || !offset.is_multiple_of(4) {
        return None;
    }
    let rel = offset - CHANNEL_BASE;
    let dir = if rel < 0x10 {
        Direction::S2mm
    } else {
        Direction::Mm2s
    };
    let ch = ((rel % 0x10) / 8) as u8;
    Some((dir, ch, rel % 8 == 4))
}

/// `(bd, word)` of a shim BD register offset.
pub fn bd_register(offset: u32) -> Option<(usize, usize)> {
    let end = BD_BASE + BDS as u32 * BD_STRIDE;
    if !(BD_BASE..end).contains(&offset) || !offset.is_multiple_of(4) {
        return None;
    }
    let rel = offset - BD_BASE;
    Some(((rel / BD_STRIDE) as usize, ((rel % BD_STRIDE) / 4) as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_every_field_literal() {
        // IREE npu_instgen.mlir shim BD 6 (npu-instruction-stream.md §6).
        let w = [
            0x0000_0001,
            0x0000_0004,
            0,
            0x0060_0004,
            0x8080_0006,
            0x0000_0008,
            0x2CC0_000B,
            0x2E10_7041,
        ];
        let bd = ShimBd::decode(&w);
        assert_eq!(bd.length, 1);
        assert_eq!(bd.address, 4);
        assert_eq!((bd.d0_wrap, bd.d0_step), (6, 5));
        assert_eq!((bd.d1_wrap, bd.d1_step), (8, 7));
        assert_eq!(bd.d2_step, 9);
        assert_eq!((bd.iter_current, bd.iter_wrap, bd.iter_step), (11, 13, 12));
        assert!(bd.valid && bd.use_next && bd.lock_acquire);
        assert_eq!(bd.next_bd, 5);
    }

    #[test]
    fn encode_is_the_inverse_of_decode() {
        let w = [
            0x0000_0001,
            0x0000_0004,
            0,
            0x0060_0004,
            0x8080_0006,
            0x0000_0008,
            0x2CC0_000B,
            0x2E10_7041,
        ];
        let bd = ShimBd::decode(&w);
        assert_eq!(ShimBd::decode(&bd.encode()), bd);
        let lin = ShimBd::linear(256);
        assert_eq!(ShimBd::decode(&lin.encode()), lin);
        assert!(lin.is_linear() && lin.valid);
    }

    #[test]
    fn max_offset_equals_brute_force() {
        let mut seed = 12345u64;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        for _ in 0..2000 {
            let bd = ShimBd {
                length: 1 + next(300) as u32,
                d0_wrap: next(6) as u32,
                d0_step: 1 + next(5) as u32,
                d1_wrap: 1 + next(5) as u32,
                d1_step: 1 + next(40) as u32,
                d2_step: 1 + next(90) as u32,
                iter_wrap: 1 + next(4) as u32,
                iter_step: 1 + next(500) as u32,
                ..ShimBd::default()
            };
            let runs = 1 + next(6) as u32;
            let brute = (0..runs)
                .flat_map(|r| (0..bd.length).map(move |k| (r, k)))
                .map(|(r, k)| bd.word_offset(r, k))
                .max();
            assert_eq!(bd.max_word_offset(runs), brute, "{bd:?} runs {runs}");
        }
    }

    #[test]
    fn the_gemm_a_tile_walks_8x8_blocks() {
        // 1bit-MONSTER A BD for K = 512: len 128, d0 2×1, d1 8×(K/4), d2 step 2 (README §1.6).
        let k = 512u32;
        let bd = ShimBd {
            length: 128,
            d0_wrap: 2,
            d0_step: 1,
            d1_wrap: 8,
            d1_step: k / 4,
            d2_step: 2,
            iter_wrap: 4,
            iter_step: 2 * k,
            ..ShimBd::default()
        };
        // Word 2 of run 0 = the first word of row 1 of the first 8×8 block.
        assert_eq!(bd.word_offset(0, 2), (k / 4) as u64);
        // Word 16 = the second block (8 bytes = 2 words to the right).
        assert_eq!(bd.word_offset(0, 16), 2);
        // Run 1 starts 8 rows down.
        assert_eq!(bd.word_offset(1, 0), (2 * k) as u64);
    }

    #[test]
    fn register_decoding() {
        use super::super::op::Direction;
        assert_eq!(channel_register(0x1D204), Some((Direction::S2mm, 0, true)));
        assert_eq!(channel_register(0x1D21C), Some((Direction::Mm2s, 1, true)));
        assert_eq!(channel_register(0x1D210), Some((Direction::Mm2s, 0, false)));
        assert_eq!(channel_register(0x1D220), None);
        assert_eq!(bd_register(0x1D004), Some((0, 1)));
        assert_eq!(bd_register(0x1D1FC), Some((15, 7)));
        assert_eq!(bd_register(0x1D200), None);
        assert_eq!(split_addr(0x0401_D064), (2, 0, 0x1D064));
    }
}
