//! The validator and interpreter on real streams (`../shared/npu-fixtures`, read in place) and
//! on the golden words of `npu-instruction-stream.md`; the 1bit-MONSTER INT8 GEMM streams
//! executed against a Rust model of the array its README describes.

use std::path::PathBuf;

use super::encode::{copy_stream, TxnBuilder};
use super::*;

pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/npu-fixtures")
}

pub(crate) fn fixture_words(name: &str) -> Vec<u32> {
    let p = fixtures().join(name);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    words_from_le_bytes(&bytes).expect("multiple of 4")
}

/// A 1bit-MONSTER GEMM pair: (tag, K, N, shim columns, buffer lengths A/B/C, README §1.6 facts).
pub(crate) struct Gemm {
    pub tag: &'static str,
    pub k: usize,
    pub n: usize,
    pub cols: usize,
    pub ops: u32,
    pub tasks_per_kind: u32,
    pub patches: [u32; 3],
    pub max_plus: [u64; 3],
}

pub(crate) const M: usize = 128;

pub(crate) const GEMMS: [Gemm; 3] = [
    Gemm {
        tag: "D_K512_N2048",
        k: 512,
        n: 2048,
        cols: 4,
        ops: 1360,
        tasks_per_kind: 272,
        patches: [128, 128, 16],
        max_plus: [49600, 919424, 7680],
    },
    Gemm {
        tag: "G_K2048_N512",
        k: 2048,
        n: 512,
        cols: 4,
        ops: 1300,
        tasks_per_kind: 260,
        patches: [128, 128, 4],
        max_plus: [198592, 1016192, 1536],
    },
    Gemm {
        tag: "O_K4096_N2048",
        k: 4096,
        n: 2048,
        cols: 8,
        ops: 7760,
        tasks_per_kind: 1552,
        patches: [512, 1024, 16],
        max_plus: [397248, 8259456, 7680],
    },
];

impl Gemm {
    pub fn insts(&self) -> Vec<u32> {
        fixture_words(&format!("1bit-monster/insts_i8_{}.txt", self.tag))
    }
    #[allow(dead_code)] // used by the emulator tests in npu/tests.rs
    pub fn xclbin_name(&self) -> String {
        format!("1bit-monster/final_i8_{}.xclbin", self.tag)
    }
    pub fn arg_lens(&self) -> [u64; 3] {
        [
            (M * self.k) as u64,
            (self.k * self.n) as u64,
            (4 * M * self.n) as u64,
        ]
    }
}

#[test]
fn gemm_streams_validate_with_the_readme_facts() {
    for g in &GEMMS {
        let words = g.insts();
        let s = parse(&words).unwrap();
        let h = s.header();
        assert_eq!(words[..2], [0x0604_0100, 0x0000_0108], "{}", g.tag);
        assert_eq!((h.dev_gen, h.rows, h.cols, h.mem_tile_rows), (4, 6, 8, 1));
        assert_eq!((h.num_ops, h.txn_size as usize), (g.ops, 4 * words.len()));
        let plan = validate(
            &words,
            &Limits {
                arg_lens: &g.arg_lens(),
                partition_cols: Some(8),
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", g.tag));
        let sum = &plan.summary;
        for opcode in [OP_BLOCKWRITE, OP_DDR_PATCH, OP_MASKWRITE, OP_WRITE, OP_TCT] {
            assert_eq!(
                sum.ops_by_opcode.get(&opcode),
                Some(&g.tasks_per_kind),
                "{} opcode {opcode:#x}",
                g.tag
            );
        }
        assert_eq!(sum.ops_by_opcode.len(), 5, "no other opcodes");
        let patches: Vec<u32> = (0..3).map(|a| sum.patches_by_arg[&a]).collect();
        assert_eq!(patches, g.patches, "{}", g.tag);
        let plus: Vec<u64> = (0..3).map(|a| sum.max_offset_by_arg[&a]).collect();
        assert_eq!(plus, g.max_plus, "{}", g.tag);
        assert_eq!(sum.unawaited, 0, "every task is awaited");
        assert_eq!(sum.columns, (0..g.cols as u8).collect::<Vec<_>>());
        assert_eq!(plan.tasks.len() as u32, g.tasks_per_kind);
        assert!(plan.tasks.iter().all(|t| t.token));
        // Every C byte written once, every B byte read once (README §1.3).
        let bytes = plan.channel_bytes();
        let s2mm: u64 = bytes
            .iter()
            .filter(|(c, _)| c.dir == Direction::S2mm)
            .map(|(_, b)| b)
            .sum();
        assert_eq!(s2mm, g.arg_lens()[2], "{}", g.tag);
    }
}

#[test]
fn a_buffer_one_byte_short_is_refused_with_the_bd_named() {
    let g = &GEMMS[0];
    let words = g.insts();
    for arg in 0..3 {
        let mut lens = g.arg_lens();
        lens[arg] -= 4;
        let e = validate(
            &words,
            &Limits {
                arg_lens: &lens,
                partition_cols: None,
            },
        )
        .unwrap_err();
        match e {
            TxnError::BdOutOfBounds {
                arg_idx, end, len, ..
            } => {
                assert_eq!((arg_idx, end, len), (arg, lens[arg] + 4, lens[arg]), "{e}");
            }
            other => panic!("arg {arg}: {other}"),
        }
    }
    // Two buffers only: the patches of arg 2 name a buffer the command does not pass.
    let e = validate(
        &words,
        &Limits {
            arg_lens: &g.arg_lens()[..2],
            partition_cols: None,
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            TxnError::PatchArgIndex {
                arg_idx: 2,
                args: 2,
                ..
            }
        ),
        "{e}"
    );
    // A 4-column partition cannot run the 8-column O stream.
    let o = &GEMMS[2];
    let e = validate(
        &o.insts(),
        &Limits {
            arg_lens: &o.arg_lens(),
            partition_cols: Some(4),
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            TxnError::RegisterOutOfRange {
                col: 4,
                cols: 4,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn riallto_sequences_are_recognised_as_legacy() {
    for name in [
        "color_threshold_v1_720p",
        "color_threshold_v2_720p",
        "edge_detect_720p",
    ] {
        let p = fixtures().join(format!("riallto/{name}.seq"));
        let text = std::fs::read_to_string(&p).unwrap();
        let words: Vec<u32> = text
            .lines()
            .map(|l| u32::from_str_radix(l.trim(), 16).unwrap())
            .collect();
        assert_eq!(words[0], 0x11, "{name}: 17-word prolog");
        assert_eq!(parse(&words).unwrap_err(), TxnError::LegacyIpuSequence);
        // The text file itself as bytes is not TXN either.
        let raw = std::fs::read(&p).unwrap();
        if let Some(w) = words_from_le_bytes(&raw) {
            assert!(parse(&w).is_err());
        }
    }
}

/// IREE's golden stream (npu-instruction-stream.md §13.A, aie-rt flavour): 64 words.
const IREE_13A: [u32; 64] = [
    0x0603_0100,
    0x0000_0104,
    0x0000_0006,
    0x0000_0100, // header
    0x0020_0001,
    0,
    0x0001_D020,
    0x0000_0030, // BLOCKWRITE BD1
    0x20,
    0,
    0,
    0,
    0x8000_0000,
    0,
    0,
    0x0200_0000, //
    0x81,
    0x30,
    0,
    0,
    0,
    0,
    0x0001_D024,
    0,
    2,
    0,
    0,
    0, // DDR_PATCH arg 2
    0x0004_0000,
    0,
    0x0001_D204,
    0,
    0x8000_0001,
    0x18, // S2MM0 push BD1 token
    0x0000_0001,
    0,
    0x0001_D000,
    0x0000_0030, // BLOCKWRITE BD0
    0x20,
    0x80,
    0,
    0x0080_0000,
    0x8020_0007,
    0x0000_000F,
    0,
    0x0200_0000, //
    0x81,
    0x30,
    0,
    0,
    0,
    0,
    0x0001_D004,
    0,
    0,
    0,
    0x80,
    0, // DDR_PATCH arg 0 + 0x80
    0x0014_0000,
    0,
    0x0001_D214,
    0,
    0,
    0x18, // MM2S0 push BD0
];

#[test]
fn the_iree_golden_stream_runs_its_strided_read() {
    // %in: 4x2x8 i32 (256 B), %buf: 32 i32, %out: 64 i32.
    let lens = [256u64, 128, 256];
    let plan = validate(
        &IREE_13A,
        &Limits {
            arg_lens: &lens,
            partition_cols: Some(4),
        },
    )
    .unwrap();
    assert_eq!(plan.tasks.len(), 2);
    assert_eq!(
        plan.summary.unawaited, 1,
        "the S2MM token is never awaited here"
    );
    // %in[0,2,0,0][1,2,2,8][0,16,8,1]: elements (i, j, k) at 16·? — replay and compare.
    let input: Vec<u8> = (0..64u32).flat_map(|i| i.to_le_bytes()).collect();
    let mut mem = vec![input, vec![0; 128], vec![0; 256]];
    let mut seen = Vec::new();
    execute(&plan, mem.as_mut_slice(), &mut |io: &mut ArrayIo| {
        let got = io.input(0, 0).ok_or("no MM2S0 input")?.to_vec();
        seen = got
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        // Echo the 32 words to the 32-word S2MM task.
        let out = io.output(0, 0).ok_or("no S2MM0 output")?;
        out.copy_from_slice(&got[..128]);
        Ok(())
    })
    .unwrap();
    // Offset 0x80 B = element 32; d0 8 × 1, d1 2 × 8, d2 × 16 (elements).
    let expected: Vec<u32> = (0..2)
        .flat_map(|d2| (0..2).flat_map(move |d1| (0..8).map(move |d0| 32 + d2 * 16 + d1 * 8 + d0)))
        .collect();
    assert_eq!(seen, expected);
    let out: Vec<u32> = mem[2][..128]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(out, expected);
}

#[test]
fn the_derived_mlir_aie_memcpy_stream_validates() {
    // npu-instruction-stream.md §13.C (npu1_1col, 2x64x64 i32, reads the second 64x64 plane).
    let words = [
        0x0603_0100,
        0x0000_0101,
        3,
        0x88, //
        1,
        0,
        0x0001_D000,
        0x30,
        0x800,
        0,
        0,
        0x0200_0000,
        0x8200_003F,
        0x0200_07FF,
        0,
        0x0200_0000, //
        0x81,
        0x30,
        0,
        0,
        0,
        0,
        0x0001_D004,
        0,
        0,
        0,
        0x4000,
        0, //
        0,
        0,
        0x0001_D214,
        0,
        0,
        0x18,
    ];
    let plan = validate(
        &words,
        &Limits {
            arg_lens: &[2 * 64 * 64 * 4],
            partition_cols: Some(1),
        },
    )
    .unwrap();
    let t = plan.tasks[0];
    assert_eq!((t.offset, t.bytes()), (16384, 8192));
    // Last element read: 4096 + 2048 + 31·64 + 31 = 8159, so 32640 bytes suffice, 32636 do not.
    validate(
        &words,
        &Limits {
            arg_lens: &[32640],
            partition_cols: Some(1),
        },
    )
    .unwrap();
    let e = validate(
        &words,
        &Limits {
            arg_lens: &[32636],
            partition_cols: Some(1),
        },
    )
    .unwrap_err();
    assert!(matches!(e, TxnError::BdOutOfBounds { .. }), "{e}");
}

#[test]
fn malformed_streams_get_named_errors() {
    let good = copy_stream(3, 64, &[7]);
    let lims = Limits {
        arg_lens: &[64, 64],
        partition_cols: Some(1),
    };
    validate(&good, &lims).unwrap();
    let with = |f: &dyn Fn(&mut Vec<u32>)| {
        let mut w = good.clone();
        f(&mut w);
        validate(&w, &lims).unwrap_err()
    };
    assert_eq!(
        validate(&[], &lims).unwrap_err(),
        TxnError::TooShort { words: 0 }
    );
    assert!(matches!(
        with(&|w| w[0] = 0x0603_0001),
        TxnError::Version { major: 1, minor: 0 }
    ));
    assert!(matches!(
        with(&|w| w[0] = 0x0607_0100),
        TxnError::BadHeader {
            field: "DevGen",
            ..
        }
    ));
    assert!(matches!(
        with(&|w| w[3] += 4),
        TxnError::SizeMismatch { .. }
    ));
    assert!(matches!(with(&|w| w[2] += 1), TxnError::OpCount { .. }));
    assert!(matches!(
        with(&|w| w[4] = 0x42),
        TxnError::UnknownOpcode { opcode: 0x42, .. }
    ));
    assert!(matches!(with(&|w| w[7] = 17), TxnError::BadOpSize { .. }));
    assert!(matches!(
        with(&|w| {
            w.truncate(w.len() - 2);
            w[3] -= 8
        }),
        TxnError::Truncated { .. }
    ));
    // The RTP BLOCKWRITE to column 1 of a 1-column stream.
    assert!(matches!(
        with(&|w| w[6] |= 1 << 25),
        TxnError::RegisterOutOfRange { col: 1, .. }
    ));
    // First shim BLOCKWRITE starts at word 9 (header 4 + RTP op 5); its BD word 7 is word 20.
    assert!(
        matches!(with(&|w| w[20] = 0), TxnError::BadTask { .. }),
        "valid bit cleared"
    );
    // The DDR_PATCH target moved to BD word 0.
    let e = with(&|w| w[27] -= 4);
    assert!(matches!(e, TxnError::PatchTarget { .. }), "{e}");
    // Pushed BD 0 gets BD 5 (never written).
    let e = with(&|w| w[37] = (w[37] & !0xF) | 5);
    assert!(
        matches!(&e, TxnError::BadTask { bd: 5, why, .. } if why.contains("never written")),
        "{e}"
    );
    // A sync with nothing outstanding.
    let mut b = TxnBuilder::new(3, 1);
    b.sync(0, Direction::Mm2s, 0);
    assert!(matches!(
        validate(&b.finish(), &lims).unwrap_err(),
        TxnError::SyncWithoutTask { .. }
    ));
    // Rewriting a BD whose task awaits its sync.
    let mut b = TxnBuilder::new(3, 1);
    let bd = ShimBd::linear(4);
    b.shim_transfer(0, Direction::Mm2s, 0, 0, &bd, 0, 0, 1);
    b.shim_transfer(0, Direction::Mm2s, 1, 0, &bd, 0, 0, 1);
    assert!(matches!(
        validate(&b.finish(), &lims).unwrap_err(),
        TxnError::BdRewrittenWhileQueued { bd: 0, .. }
    ));
    // arg_idx 5 without the aperture.
    let mut b = TxnBuilder::new(3, 1);
    b.ddr_patch(0x1D004, 0, 0);
    let mut w = b.finish();
    w[4 + 8] = 5;
    let six = Limits {
        arg_lens: &[64; 6],
        partition_cols: None,
    };
    assert!(matches!(
        validate(&w, &six).unwrap_err(),
        TxnError::PatchAperture { .. }
    ));
}

#[test]
fn copy_stream_moves_bytes_and_passes_run_time_parameters() {
    let words = copy_stream(3, 256, &[5, 6]);
    let plan = validate(
        &words,
        &Limits {
            arg_lens: &[256, 256],
            partition_cols: Some(1),
        },
    )
    .unwrap();
    let mut mem = vec![(0..=255).collect::<Vec<u8>>(), vec![0; 256]];
    let r = execute(&plan, mem.as_mut_slice(), &mut |io: &mut ArrayIo| {
        let add = io.register_writes()[0].value as u8;
        let inp: Vec<u8> = io
            .input(0, 0)
            .unwrap()
            .iter()
            .map(|b| b.wrapping_add(add))
            .collect();
        io.output(0, 0).unwrap().copy_from_slice(&inp);
        Ok(())
    })
    .unwrap();
    assert_eq!((r.bytes_read, r.bytes_written), (256, 256));
    assert_eq!(plan.register_writes[1].addr, (2 << 20) + 4);
    assert!(mem[1]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i as u8).wrapping_add(5)));
}

/// The 1bit-MONSTER array (README §1.2): core (row j, column c) computes, per column group g,
/// C[32j..32j+32, (g·cols + c)·128 ..+128] = Σ_t A_tile · B_tile over K/64 tiles, where A tiles
/// (32×64, 8×8 blocks row-major) arrive on shim column j MM2S0 and B tiles (64×128, same
/// blocking) on shim column c (MM2S1, or MM2S0 on columns 4–7 of the 8-column design); each
/// memtile joins the four 32×128 C tiles of its column into a 128×128 tile (8×8 blocks of i32)
/// sent on S2MM0.
pub(crate) fn gemm_array(
    k: usize,
    n: usize,
    cols: usize,
) -> impl FnMut(&mut ArrayIo) -> Result<(), String> {
    move |io: &mut ArrayIo| {
        let n_k = k / 64;
        let groups = n / (128 * cols);
        let b_channel = |c: usize| if c >= 4 { 0 } else { 1 };
        let a: Vec<Vec<u8>> = (0..4)
            .map(|j| {
                io.input(j as u8, 0)
                    .map(<[u8]>::to_vec)
                    .ok_or(format!("no A on shim {j}"))
            })
            .collect::<Result<_, _>>()?;
        for (j, a) in a.iter().enumerate() {
            if a.len() != groups * n_k * 32 * 64 {
                return Err(format!("A stream {j}: {} bytes", a.len()));
            }
        }
        for c in 0..cols {
            let b = io
                .input(c as u8, b_channel(c))
                .ok_or(format!("no B on shim {c}"))?
                .to_vec();
            if b.len() != groups * n_k * 64 * 128 {
                return Err(format!("B stream {c}: {} bytes", b.len()));
            }
            let out = io.output(c as u8, 0).ok_or(format!("no C on shim {c}"))?;
            if out.len() != groups * 128 * 128 * 4 {
                return Err(format!("C stream {c}: {} bytes", out.len()));
            }
            for g in 0..groups {
                // B tiles of this group, unblocked to 64×128 row-major i8.
                let b_tiles: Vec<Vec<i8>> = (0..n_k)
                    .map(|t| {
                        let tile = &b[(g * n_k + t) * 8192..][..8192];
                        let mut rm = vec![0i8; 64 * 128];
                        for (i, &v) in tile.iter().enumerate() {
                            let (blk, e) = (i / 64, i % 64);
                            let (kb, nb) = (blk / 16, blk % 16);
                            rm[(kb * 8 + e / 8) * 128 + nb * 8 + e % 8] = v as i8;
                        }
                        rm
                    })
                    .collect();
                for (j, a) in a.iter().enumerate() {
                    let mut acc = vec![0i32; 32 * 128];
                    for (t, bt) in b_tiles.iter().enumerate() {
                        let tile = &a[(g * n_k + t) * 2048..][..2048];
                        let mut at = [0i8; 32 * 64];
                        for (i, &v) in tile.iter().enumerate() {
                            let (blk, e) = (i / 64, i % 64);
                            let (rb, kb) = (blk / 8, blk % 8);
                            at[(rb * 8 + e / 8) * 64 + kb * 8 + e % 8] = v as i8;
                        }
                        for r in 0..32 {
                            let row = &mut acc[r * 128..][..128];
                            for kk in 0..64 {
                                let x = at[r * 64 + kk] as i32;
                                let brow = &bt[kk * 128..][..128];
                                for (o, &y) in row.iter_mut().zip(brow) {
                                    *o += x * y as i32;
                                }
                            }
                        }
                    }
                    for r in 0..32 {
                        for col in 0..128 {
                            let gr = 32 * j + r;
                            let at = g * 65536
                                + ((gr / 8) * 16 + col / 8) * 256
                                + ((gr % 8) * 8 + col % 8) * 4;
                            out[at..at + 4].copy_from_slice(&acc[r * 128 + col].to_le_bytes());
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn random_i8(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

pub(crate) fn reference_gemm(a: &[u8], b: &[u8], k: usize, n: usize) -> Vec<u8> {
    let mut c = vec![0i32; M * n];
    for m in 0..M {
        let row = &mut c[m * n..][..n];
        for kk in 0..k {
            let x = a[m * k + kk] as i8 as i32;
            for (o, &y) in row.iter_mut().zip(&b[kk * n..][..n]) {
                *o += x * y as i8 as i32;
            }
        }
    }
    c.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn gemm_streams_compute_a_times_b_through_the_shim_dmas() {
    // D and G here; O (8 columns, 1 G MAC) runs in the emulator test of npu/tests.rs.
    for g in &GEMMS[..2] {
        let words = g.insts();
        let lens = g.arg_lens();
        let plan = validate(
            &words,
            &Limits {
                arg_lens: &lens,
                partition_cols: None,
            },
        )
        .unwrap();
        let a = random_i8(lens[0] as usize, 1);
        let b = random_i8(lens[1] as usize, 2);
        let mut mem = vec![a.clone(), b.clone(), vec![0xEE; lens[2] as usize]];
        let r = execute(&plan, mem.as_mut_slice(), &mut gemm_array(g.k, g.n, g.cols)).unwrap();
        assert_eq!(r.bytes_written, lens[2]);
        assert!(
            mem[2] == reference_gemm(&a, &b, g.k, g.n),
            "{}: C != A·B",
            g.tag
        );
        // Control: B stored transposed gives a different C (the layout matters).
        let mut bt = vec![0u8; b.len()];
        for kk in 0..g.k {
            for nn in 0..g.n {
                bt[nn * g.k + kk] = b[kk * g.n + nn];
            }
        }
        let mut mem = vec![a.clone(), bt, vec![0; lens[2] as usize]];
        execute(&plan, mem.as_mut_slice(), &mut gemm_array(g.k, g.n, g.cols)).unwrap();
        assert!(mem[2] != reference_gemm(&a, &b, g.k, g.n));
    }
}

#[test]
fn mutated_streams_never_panic() {
    // Stable stand-in for the fuzz target: deterministic byte mutations of a real stream and of
    // the copy stream, through parse, validate and execute.
    let mut seed = 0x5EED_u64;
    let mut rnd = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    // Bases: the copy stream, and the first 60 ops of the real G stream (header rewritten).
    let real = GEMMS[1].insts();
    let cut = parse(&real).unwrap().ops().nth(60).unwrap().unwrap().word;
    let mut head = real[..cut].to_vec();
    head[2] = 60;
    head[3] = 4 * cut as u32;
    let bases = [
        (copy_stream(3, 64, &[1]), vec![64u64, 64, 64]),
        (head, GEMMS[1].arg_lens().to_vec()),
    ];
    for i in 0..6000 {
        let (base, lens) = &bases[i % 2];
        let mut w = base.clone();
        for _ in 0..1 + rnd() % 4 {
            if w.is_empty() {
                break;
            }
            let at = (rnd() as usize) % w.len();
            let bit = rnd() % 32;
            match rnd() % 3 {
                0 => w[at] ^= 1 << bit,
                1 => w[at] = rnd() as u32,
                _ => {
                    let n = (rnd() as usize % 8).min(w.len() - at);
                    w.drain(at..at + n);
                }
            }
        }
        if rnd() % 2 == 0 && w.len() >= 4 {
            w[3] = 4 * w.len() as u32; // keep the size right so deeper checks run
        }
        if let Ok(plan) = validate(
            &w,
            &Limits {
                arg_lens: lens,
                partition_cols: None,
            },
        ) {
            let mut mem: Vec<Vec<u8>> = lens.iter().map(|&l| vec![1u8; l as usize]).collect();
            let _ = execute(&plan, mem.as_mut_slice(), &mut |io: &mut ArrayIo| {
                let outs: Vec<_> = io.output_channels().collect();
                for (c, _) in outs {
                    io.output(c.col, c.channel).unwrap().fill(9);
                }
                Ok(())
            });
        }
    }
}

#[test]
fn check_agrees_with_validate() {
    for g in &GEMMS {
        let words = g.insts();
        let lims = Limits {
            arg_lens: &g.arg_lens(),
            partition_cols: None,
        };
        let plan = validate(&words, &lims).unwrap();
        let c = check(&words, &lims).unwrap();
        let bytes = plan.channel_bytes();
        let dir_sum = |d| {
            bytes
                .iter()
                .filter(|(c, _)| c.dir == d)
                .map(|(_, b)| *b)
                .sum::<u64>()
        };
        assert_eq!(c.ops, g.ops);
        assert_eq!(c.tasks as usize, plan.tasks.len());
        assert_eq!(c.bytes_read, dir_sum(Direction::Mm2s));
        assert_eq!(c.bytes_written, dir_sum(Direction::S2mm));
        assert_eq!(c.unawaited, 0);
        let mut short = g.arg_lens();
        short[1] -= 4;
        let lims = Limits {
            arg_lens: &short,
            partition_cols: None,
        };
        assert_eq!(
            check(&words, &lims).unwrap_err(),
            validate(&words, &lims).unwrap_err()
        );
    }
}
