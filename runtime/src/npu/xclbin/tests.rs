//! Parser tests on xclbins built in code, hand-corrupted ones, and a deterministic
//! pseudo-random mutation run (the stable stand-in for the cargo-fuzz target).

use super::*;

fn sample() -> Vec<u8> {
    XclbinBuilder::mlir_aie(b"PDI-IMAGE-BYTES!", 4, 5).build()
}

fn section_header_at(bytes: &[u8], kind: u32) -> usize {
    let n = u32::from_le_bytes(bytes[448..452].try_into().unwrap()) as usize;
    (0..n)
        .map(|i| SECTION_TABLE_OFFSET + i * SECTION_HEADER_SIZE)
        .find(|&h| u32::from_le_bytes(bytes[h..h + 4].try_into().unwrap()) == kind)
        .unwrap()
}

fn section_offset(bytes: &[u8], kind: u32) -> usize {
    let h = section_header_at(bytes, kind);
    u64::from_le_bytes(bytes[h + 24..h + 32].try_into().unwrap()) as usize
}

#[test]
fn parses_a_built_mlir_aie_xclbin() {
    let bytes = sample();
    let x = Xclbin::parse(&bytes).unwrap();
    assert_eq!(x.uuid(), *b"amanuensis-test!");
    assert_eq!(x.sections().len(), 3);
    assert_eq!(x.sections()[0].name, "AIE_PARTITION");
    let p = x.aie_partition().unwrap();
    assert_eq!(
        (p.column_width, p.operations_per_cycle, p.schema_version),
        (4, 2048, 1)
    );
    assert_eq!(p.start_columns, vec![0]);
    assert_eq!(p.pdi_for_kernel(0x901).unwrap(), b"PDI-IMAGE-BYTES!");
    assert_eq!(
        p.pdi_for_kernel(0x902),
        Err(XclbinError::NoPdiForKernel(0x902))
    );
    assert_eq!(p.pdis[0].cdo_groups[0].pre_cdo_groups, vec![0xC1]);
    let ip = x.ip_layout().unwrap();
    assert_eq!(ip.len(), 1);
    assert_eq!(ip[0].name, "MLIR_AIE:MLIRAIE");
    assert_eq!(ip[0].ip_type, 7);
    let k = &x.kernels().unwrap()[0];
    assert_eq!((k.name.as_str(), k.kind.as_str()), ("MLIR_AIE", "dpu"));
    assert_eq!((k.functional, k.dpu_kernel_id), (Some(0), Some(0x901)));
    let offsets: Vec<u32> = k.args.iter().map(|a| a.offset).collect();
    assert_eq!(offsets, [0x00, 0x08, 0x10, 0x14, 0x1c, 0x24, 0x2c, 0x34]);
    assert_eq!(k.regmap_words(), 15, "(0x34 + 8) / 4");
    assert_eq!(k.arg("ninstr").unwrap().size, 4);
}

#[test]
fn picks_the_pdi_by_dpu_kernel_id() {
    let bytes = XclbinBuilder::new([0; 16])
        .aie_partition(
            2,
            64,
            &[
                PdiSpec {
                    image: vec![1, 2, 3],
                    dpu_kernel_ids: vec![0x900],
                },
                PdiSpec {
                    image: vec![4, 5],
                    dpu_kernel_ids: vec![0x7, 0x901],
                },
            ],
        )
        .build();
    let p = Xclbin::parse(&bytes).unwrap().aie_partition().unwrap();
    assert_eq!(p.pdi_for_kernel(0x901).unwrap(), &[4, 5]);
    assert_eq!(p.pdi_for_kernel(0x900).unwrap(), &[1, 2, 3]);
}

#[test]
fn rejects_short_and_foreign_files() {
    assert!(matches!(
        Xclbin::parse(&[0; 100]),
        Err(XclbinError::TooShort {
            need: 456,
            len: 100,
            ..
        })
    ));
    let mut b = sample();
    b[0] = b'X';
    assert!(matches!(
        Xclbin::parse(&b),
        Err(XclbinError::BadMagic { .. })
    ));
}

#[test]
fn rejects_truncation() {
    let b = sample();
    let cut = &b[..b.len() - 1];
    assert_eq!(
        Xclbin::parse(cut).unwrap_err(),
        XclbinError::Truncated {
            claimed: b.len() as u64,
            len: b.len() as u64 - 1
        }
    );
}

#[test]
fn rejects_huge_section_counts() {
    let mut b = sample();
    b[448..452].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = Xclbin::parse(&b).unwrap_err();
    assert!(
        matches!(
            e,
            XclbinError::TooManySections {
                count: u32::MAX,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn rejects_sections_past_the_end_or_inside_the_table() {
    let mut b = sample();
    let h = section_header_at(&b, IP_LAYOUT);
    let near_end = b.len() as u64 - 4;
    b[h + 24..h + 32].copy_from_slice(&near_end.to_le_bytes());
    assert!(matches!(
        Xclbin::parse(&b),
        Err(XclbinError::SectionOutOfBounds {
            index: 1,
            kind: 8,
            ..
        })
    ));
    // Offset + size overflowing u64.
    let mut b = sample();
    b[h + 24..h + 32].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
    assert!(matches!(
        Xclbin::parse(&b),
        Err(XclbinError::SectionOutOfBounds { .. })
    ));
    // A section that starts inside the section table.
    let mut b = sample();
    b[h + 24..h + 32].copy_from_slice(&(SECTION_TABLE_OFFSET as u64).to_le_bytes());
    assert!(matches!(
        Xclbin::parse(&b),
        Err(XclbinError::SectionOutOfBounds { .. })
    ));
}

#[test]
fn rejects_overlapping_sections() {
    let mut b = sample();
    let ip = section_offset(&b, IP_LAYOUT) as u64;
    let h = section_header_at(&b, EMBEDDED_METADATA);
    b[h + 24..h + 32].copy_from_slice(&(ip + 8).to_le_bytes());
    b[h + 32..h + 40].copy_from_slice(&16u64.to_le_bytes());
    assert_eq!(
        Xclbin::parse(&b).unwrap_err(),
        XclbinError::SectionsOverlap {
            first: 1,
            second: 2
        }
    );
}

#[test]
fn rejects_arrays_outside_the_partition_section() {
    // pdi_image.size huge.
    let mut b = sample();
    let s = section_offset(&b, AIE_PARTITION);
    let pdi_table = u32::from_le_bytes(b[s + 124..s + 128].try_into().unwrap()) as usize;
    b[s + pdi_table + 16..s + pdi_table + 20].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = Xclbin::parse(&b).unwrap().aie_partition().unwrap_err();
    assert!(
        matches!(
            e,
            XclbinError::OutOfBounds {
                field: "aie_pdi.pdi_image",
                ..
            }
        ),
        "{e}"
    );
    // aie_pdi count huge.
    let mut b = sample();
    b[s + 120..s + 124].copy_from_slice(&0x0100_0000u32.to_le_bytes());
    let e = Xclbin::parse(&b).unwrap().aie_partition().unwrap_err();
    assert!(
        matches!(
            e,
            XclbinError::OutOfBounds {
                field: "aie_pdi",
                count: 0x0100_0000,
                ..
            }
        ),
        "{e}"
    );
    // column_width 0.
    let mut b = sample();
    b[s + 32..s + 34].copy_from_slice(&0u16.to_le_bytes());
    assert!(matches!(
        Xclbin::parse(&b).unwrap().aie_partition(),
        Err(XclbinError::BadField {
            field: "info.column_width",
            ..
        })
    ));
}

#[test]
fn rejects_bad_ip_layout_counts() {
    let mut b = sample();
    let s = section_offset(&b, IP_LAYOUT);
    b[s..s + 4].copy_from_slice(&(-1i32).to_le_bytes());
    assert!(matches!(
        Xclbin::parse(&b).unwrap().ip_layout(),
        Err(XclbinError::BadField { value: -1, .. })
    ));
    b[s..s + 4].copy_from_slice(&1000i32.to_le_bytes());
    assert!(matches!(
        Xclbin::parse(&b).unwrap().ip_layout(),
        Err(XclbinError::OutOfBounds { count: 1000, .. })
    ));
}

#[test]
fn missing_sections_are_named() {
    let b = XclbinBuilder::new([0; 16]).build();
    let x = Xclbin::parse(&b).unwrap();
    assert_eq!(
        x.aie_partition().unwrap_err(),
        XclbinError::MissingSection {
            kind: 32,
            name: "AIE_PARTITION"
        }
    );
    assert!(matches!(
        x.kernels(),
        Err(XclbinError::MissingSection { kind: 2, .. })
    ));
}

#[test]
fn metadata_errors_are_precise() {
    let bad = |xml: &str| {
        let b = XclbinBuilder::new([0; 16]).metadata(xml).build();
        Xclbin::parse(&b).unwrap().kernels().unwrap_err()
    };
    assert!(matches!(
        bad("<kernel name=\"k\"><arg name=\"a\" offset=\"zz\" size=\"4\"/></kernel>"),
        XclbinError::Metadata { .. }
    ));
    assert!(matches!(
        bad("<kernel name=\"k\">"),
        XclbinError::Metadata { .. }
    ));
    assert!(matches!(
        bad("<kernel name=\"k\"><arg name=\"a\" size=\"4\"/></kernel>"),
        XclbinError::Metadata { .. }
    ));
    assert!(matches!(
        bad("<kernel name=\"k"),
        XclbinError::Metadata { .. }
    ));
    assert!(matches!(
        bad("<kernel name=\"&bogus;\"/>"),
        XclbinError::Metadata { .. }
    ));
    let e = bad(
        "<a/>\n<kernel name=\"k\"><arg name=\"x\" offset=\"0x100000000\" size=\"4\"/></kernel>",
    );
    assert!(e.to_string().contains("does not fit 32 bits"), "{e}");
}

/// xorshift64*: deterministic pseudo-random numbers for the mutation run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Run every parser entry point; it may fail but must never panic.
pub(crate) fn exercise(bytes: &[u8]) {
    if let Ok(x) = Xclbin::parse(bytes) {
        if let Ok(p) = x.aie_partition() {
            let _ = p.pdi_for_kernel(MLIR_AIE_DPU_KERNEL_ID);
        }
        let _ = x.ip_layout();
        if let Ok(ks) = x.kernels() {
            for k in ks {
                let _ = k.regmap_words();
            }
        }
    }
}

#[test]
fn never_panics_on_mutated_or_random_input() {
    let base = sample();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let interesting: [u64; 8] = [0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, u64::MAX];
    let mut parsed_ok = 0;
    for round in 0..20_000 {
        let mut b = base.clone();
        for _ in 0..1 + rng.below(4) {
            if b.len() < 8 {
                break;
            }
            match rng.below(5) {
                0 => {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
                1 => {
                    // Overwrite an aligned word with an interesting value.
                    let i = rng.below(b.len() / 4) * 4;
                    let v = interesting[rng.below(interesting.len())].to_le_bytes();
                    let n = (b.len() - i).min(if rng.below(2) == 0 { 4 } else { 8 });
                    b[i..i + n].copy_from_slice(&v[..n]);
                }
                2 => b.truncate(rng.below(b.len() + 1)),
                3 => {
                    let extra = rng.below(64);
                    b.extend((0..extra).map(|_| rng.next() as u8));
                }
                _ => {
                    // Corrupt the section table or the partition header specifically.
                    let i = SECTION_TABLE_OFFSET + rng.below(3 * SECTION_HEADER_SIZE + 184);
                    if i < b.len() {
                        b[i] ^= 1 << rng.below(8);
                    }
                }
            }
        }
        if round % 7 == 0 {
            // Wholly random bytes, sometimes with a valid magic.
            let n = rng.below(2048);
            b = (0..n).map(|_| rng.next() as u8).collect();
            if n >= 8 && rng.below(2) == 0 {
                b[..8].copy_from_slice(MAGIC);
            }
        }
        exercise(&b);
        parsed_ok += Xclbin::parse(&b).is_ok() as usize;
    }
    // The mutations must not all be rejected at the header (or the deep parsers never run).
    assert!(
        parsed_ok > 2_000,
        "only {parsed_ok} mutated files passed the header check"
    );
}
