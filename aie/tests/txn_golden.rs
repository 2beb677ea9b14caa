//! The encoder against the worked examples and literals of
//! `../shared/docs/npu-instruction-stream.md` (section numbers below), word for word, and the
//! decoder against the real mlir-aie streams in `../shared/npu-fixtures/1bit-monster/`.

use amanuensis_aie::program::replay::run_shim;
use amanuensis_aie::txn::{
    parse, shim_bd_address, Dim, Direction, Generation, MemtileBd, Op, ShimBd, Sync, Target, Txn,
};

const NPU1_1COL: Target = Target {
    generation: Generation::Npu1,
    cols: 1,
};

fn hex(words: &[u32]) -> String {
    words
        .iter()
        .map(|w| format!("{w:08X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn words(s: &str) -> Vec<u32> {
    s.split_whitespace()
        .map(|w| u32::from_str_radix(w, 16).unwrap())
        .collect()
}

#[test]
fn s13b_memtile_writebd_write32_sync() {
    let mut t = Txn::new(Target::NPU1);
    let bd = MemtileBd {
        length: 1,
        base: 2,
        next_bd: Some(5),
        d0: (6, 5),
        d1: (8, 7),
        d2: (0, 9),
        d3_stride: 0,
        iteration: (11, 13, 12),
        lock_release: (4, 3),
        lock_acquire: (true, 2, 1),
    };
    t.blockwrite(3 << 25 | 1 << 20 | (0xA0000 + 6 * 0x20), &bd.encode());
    t.write32_at(3, 4, 0xabc0_0def, 0x42);
    t.sync(Sync {
        dir: Direction::Mm2s,
        col: 3,
        row: 4,
        chan: 5,
        cols: 1,
        rows: 2,
    });
    let want = "06030100 00000104 00000003 00000068 \
                00000001 00000000 061A00C0 00000030 \
                00000001 00580002 000C0005 00100007 00000009 00000000 059A000C 84038201 \
                00000000 00000000 06400DEF 00000000 00000042 00000018 \
                00000080 00000010 00030401 05010200";
    assert_eq!(hex(&t.finish()), hex(&words(want)));
}

#[test]
fn s13c_dma_memcpy_nd_on_npu1_1col() {
    // dma_memcpy_nd(%arg0[1,0,0,0][1,2,32,32][4096,2048,64,1]) on memref<2x64x64xi32>, MM2S 0.
    let bd = ShimBd {
        length: 32 * 32 * 2,
        d0: Dim {
            wrap: 32,
            stride: 1,
        },
        d1: Dim {
            wrap: 32,
            stride: 64,
        },
        d2_stride: 2048,
        ..ShimBd::linear(0, Generation::Npu1.max_burst())
    };
    let mut t = Txn::new(NPU1_1COL);
    t.blockwrite(shim_bd_address(0, 0), &bd.encode(0).unwrap());
    t.ddr_patch(shim_bd_address(0, 0) + 4, 0, 16384);
    t.push_shim_task(0, Direction::Mm2s, 0, 0, 1, false);
    let stream = t.finish();
    let want = "06030100 00000101 00000003 00000088 \
                00000001 00000000 0001D000 00000030 \
                00000800 00000000 00000000 02000000 8200003F 020007FF 00000000 02000000 \
                00000081 00000030 00000000 00000000 00000000 00000000 0001D004 00000000 00000000 00000000 00004000 00000000 \
                00000000 00000000 0001D214 00000000 00000000 00000018";
    assert_eq!(hex(&stream), hex(&words(want)));

    // The replay reads exactly the elements mlir-aie's access pattern names.
    let buf: Vec<u8> = (0..2 * 64 * 64u32).flat_map(|i| i.to_le_bytes()).collect();
    let sent = run_shim(&stream, &[&buf]).unwrap().sent;
    let got: Vec<u32> = sent[&(0, Direction::Mm2s, 0)]
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let want: Vec<u32> = (0..2)
        .flat_map(|a| (0..32).flat_map(move |b| (0..32).map(move |c| 4096 + a * 2048 + b * 64 + c)))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn s13a_iree_bd_words() {
    // IREE writes AxCACHE 0 and the offset in word 1; the BD payloads are reproduced.
    let bd1 = ShimBd {
        ax_cache: 0,
        ..ShimBd::linear(32, 2)
    };
    assert_eq!(
        hex(&bd1.encode(1).unwrap()),
        "00000020 00000000 00000000 00000000 80000000 00000000 00000000 02000000"
    );
    let bd0 = ShimBd {
        length: 32,
        word1: 0x80,
        d0: Dim { wrap: 8, stride: 1 },
        d1: Dim { wrap: 2, stride: 8 },
        d2_stride: 16,
        ax_cache: 0,
        ..ShimBd::linear(0, 2)
    };
    assert_eq!(
        hex(&bd0.encode(0).unwrap()),
        "00000020 00000080 00000000 00800000 80200007 0000000F 00000000 02000000"
    );
}

#[test]
fn s6_shim_bd_with_every_field_set() {
    // IA npu_instgen.mlir: shim BD 6 of column 3.
    let bd = ShimBd {
        length: 1,
        word1: 4,
        d0: Dim { wrap: 6, stride: 5 },
        d1: Dim { wrap: 8, stride: 7 },
        d2_stride: 9,
        iteration_current: 11,
        iteration_wrap: 13,
        iteration_stride: 12,
        burst: 2,
        ax_cache: 0,
        next_bd: Some(5),
        lock_release: (4, 3),
        lock_acquire: (true, 2, 1),
        ..ShimBd::default()
    };
    assert_eq!(shim_bd_address(3, 6), 0x0601_D0C0);
    assert_eq!(
        hex(&bd.encode(6).unwrap()),
        "00000001 00000004 00000000 00600004 80800006 00000008 2CC0000B 2E107041"
    );
}

#[test]
fn s13d_gemm_bds() {
    let a = ShimBd {
        length: 2048,
        d0: Dim { wrap: 8, stride: 1 },
        d1: Dim {
            wrap: 32,
            stride: 64,
        },
        d2_stride: 8,
        ax_cache: 0,
        ..ShimBd::linear(0, 2)
    };
    assert_eq!(
        hex(&a.encode(1).unwrap()),
        "00000800 00000000 00000000 00800000 8200003F 00000007 00000000 02000000"
    );
    let b = ShimBd {
        d2_stride: 2048,
        iteration_wrap: 8,
        iteration_stride: 8,
        ..a
    };
    assert_eq!(
        hex(&b.encode(2).unwrap()),
        "00000800 00000000 00000000 00800000 8200003F 000007FF 00700007 02000000"
    );
    let c = ShimBd {
        length: 8192,
        d0: Dim {
            wrap: 32,
            stride: 1,
        },
        d1: Dim {
            wrap: 32,
            stride: 256,
        },
        d2_stride: 32,
        iteration_wrap: 2,
        iteration_stride: 8192,
        ..a
    };
    assert_eq!(
        hex(&c.encode(0).unwrap()),
        "00002000 00000000 00000000 02000000 820000FF 0000001F 00101FFF 02000000"
    );
}

#[test]
fn s3_s10_literals() {
    let mut t = Txn::new(Target::NPU2);
    t.write32(0xabc0_0def, 0x314);
    t.blockwrite_at(1, 1, 100, &(100..108).collect::<Vec<u32>>());
    t.maskwrite32(2 << 25 | 3 << 20 | 0x567A, 0x1001, 0xF00F_F00F);
    t.preempt(3);
    t.maskpoll32(0x0021_D000, 1, 0xFFFF_FFFF);
    t.ddr_patch(0x1D004, 0, 0);
    t.ddr_patch(0x1D004, 5, 0x100);
    t.ddr_patch(0x1D004, 0, 1 << 32);
    t.sync(Sync::shim(Direction::Mm2s, 2, 0));
    t.sync(Sync {
        cols: 4,
        ..Sync::shim(Direction::Mm2s, 0, 0)
    });
    t.push_shim_task(3, Direction::Mm2s, 1, 2, 64, false);
    t.push_shim_task(2, Direction::Mm2s, 0, 15, 256, true);
    let s = t.finish();
    let want = "06040100 00000108 0000000D 00000190 \
        00000000 00000000 ABC00DEF 00000000 00000314 00000018 \
        00000001 00000101 02100064 00000030 00000064 00000065 00000066 00000067 00000068 00000069 0000006A 0000006B \
        00000003 00000000 0430567A 00000000 00001001 F00FF00F 0000001C \
        00000306 \
        00000004 00000000 0021D000 00000000 00000001 FFFFFFFF 0000001C \
        00000081 00000030 00000000 00000000 00000000 00000000 0001D004 00000000 00000000 00000000 00000000 00000000 \
        00000081 00000030 00000000 00000000 00000000 00000000 0001D004 00000000 00000005 00000000 80000100 00000000 \
        00000081 00000030 00000000 00000000 00000000 00000000 0001D004 00000000 00000000 00000000 00000000 00000001 \
        00000080 00000010 00020001 00010100 \
        00000080 00000010 00000001 00040100 \
        00000000 00000000 0601D21C 00000000 003F0002 00000018 \
        00000003 00000000 0401D210 00000000 00000F00 00001F00 0000001C \
        00000000 00000000 0401D214 00000000 80FF000F 00000018";
    assert_eq!(hex(&s), hex(&words(want)));
    // The empty npu1 stream.
    assert_eq!(
        hex(&Txn::new(Target::NPU1).finish()),
        "06030100 00000104 00000000 00000010"
    );
    // And the decoder gives the ops back.
    let (h, ops) = parse(&s).unwrap();
    assert_eq!((h.dev_gen, h.cols, h.ops), (4, 8, 13));
    assert_eq!(
        ops[6],
        Op::DdrPatch {
            regaddr: 0x1D004,
            arg_idx: 5,
            arg_plus: 0x8000_0100
        }
    );
}

fn fixture(name: &str) -> Vec<u32> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/npu-fixtures/1bit-monster")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the shared fixtures sit beside the repository)",
            path.display()
        )
    });
    bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn real_mlir_aie_streams_decode_and_their_first_bd_is_reproduced() {
    // npu-fixtures README §1.6: op counts per file.
    for (name, each, s2mm) in [
        ("insts_i8_D_K512_N2048.txt", 272, 16),
        ("insts_i8_G_K2048_N512.txt", 260, 4),
        ("insts_i8_O_K4096_N2048.txt", 1552, 16),
    ] {
        let w = fixture(name);
        let (h, ops) = parse(&w).unwrap();
        assert_eq!(
            (h.dev_gen, h.cols, h.ops as usize),
            (4, 8, 5 * each),
            "{name}"
        );
        let n = |f: &dyn Fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
        assert_eq!(n(&|o| matches!(o, Op::BlockWrite { .. })), each);
        assert_eq!(
            n(&|o| matches!(
                o,
                Op::Sync {
                    dir: Direction::S2mm,
                    ..
                }
            )),
            s2mm
        );
    }
    // D (K = 512): the first A task, `len 128, d0 2×1, d1 8×(K/4), d2 step 2, iter 4×(2K)`,
    // 512-byte bursts, AxCACHE 2.
    let k = 512;
    let a = ShimBd {
        length: 128,
        d0: Dim { wrap: 2, stride: 1 },
        d1: Dim {
            wrap: 8,
            stride: k / 4,
        },
        d2_stride: 2,
        iteration_wrap: 4,
        iteration_stride: 2 * k,
        ..ShimBd::linear(0, Generation::Npu2.max_burst())
    };
    let d = fixture("insts_i8_D_K512_N2048.txt");
    assert_eq!(hex(&d[..4]), "06040100 00000108 00000550 0000AE50");
    assert_eq!(hex(&d[8..16]), hex(&a.encode(0).unwrap()));
}
