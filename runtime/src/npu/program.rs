//! A program: an xclbin kernel's regmap layout, its instruction stream and its buffer arguments,
//! as the packet a dispatch submits.
//!
//! [`RegmapLayout`] places each argument where the xclbin's EMBEDDED_METADATA says (name →
//! offset/size), zero-fills the rest and always sends the full length, as XRT does
//! (`xrt_kernel.cpp`, npu-driver.md §2.7): the mlir-aie layout (`opcode`@0, `instr`@8,
//! `ninstr`@0x10, `bo0..bo4`@0x14+8i) and Riallto's (`instr`@0, `ninstr`@8 u64, `in`, `tmp`,
//! `out`) come out of the same code (F4). [`Program`] builds the packet once; in debug builds
//! [`Program::check`] validates the instruction stream against the buffers before every
//! submission ([`crate::npu::txn::check`], allocation-free).

use super::arena::{BoArena, BufferId};
use super::error::{NpuError, Result};
use super::ert::{PacketError, StartCu, MLIR_AIE_OPCODE_TXN};
use super::ring::Packet;
use super::txn::{self, CheckReport, Limits};
use super::xclbin::KernelMeta;

/// What a regmap argument carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgRole {
    /// The transaction opcode (`opcode`, mlir-aie: 3).
    Opcode,
    /// Device address of the instruction BO (`instr`).
    Instructions,
    /// Instruction count in 32-bit words (`ninstr`).
    InstructionCount,
    /// Device address of buffer argument `i` (DDR_PATCH `arg_idx` i).
    Buffer(usize),
}

/// One argument's place in the regmap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegmapArg {
    /// Name in the xclbin.
    pub name: String,
    /// Byte offset.
    pub offset: u32,
    /// Size in bytes (4 or 8).
    pub size: u32,
    /// What it carries.
    pub role: ArgRole,
}

/// Where each argument goes in the `ERT_START_CU` regmap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegmapLayout {
    args: Vec<RegmapArg>,
    words: usize,
    buffers: usize,
}

impl RegmapLayout {
    /// The layout of `kernel`'s `<arg>`s: `opcode`, `instr` and `ninstr` by name, every other
    /// 8-byte argument a buffer in document order. Refuses overlapping, misaligned or
    /// oddly sized arguments, and kernels without `instr`/`ninstr`.
    pub fn from_kernel(kernel: &KernelMeta) -> Result<Self> {
        let bad = |what: String| NpuError::InvalidRequest {
            what: format!("kernel '{}': {what}", kernel.name),
        };
        let mut args = Vec::with_capacity(kernel.args.len());
        let mut buffers = 0;
        for a in &kernel.args {
            let role = match a.name.as_str() {
                "opcode" => ArgRole::Opcode,
                "instr" => ArgRole::Instructions,
                "ninstr" => ArgRole::InstructionCount,
                _ if a.size == 8 => {
                    buffers += 1;
                    ArgRole::Buffer(buffers - 1)
                }
                _ => {
                    return Err(bad(format!(
                        "argument '{}' ({} bytes, type {}) is neither opcode/instr/ninstr nor an 8-byte buffer address",
                        a.name, a.size, a.ty
                    )))
                }
            };
            if a.offset % 4 != 0 || !(a.size == 4 || a.size == 8) {
                return Err(bad(format!(
                    "argument '{}' at offset {:#x} size {}: not 4-byte aligned 4- or 8-byte",
                    a.name, a.offset, a.size
                )));
            }
            if role == ArgRole::Opcode && a.size != 8 {
                return Err(bad(format!("opcode argument of {} bytes", a.size)));
            }
            args.push(RegmapArg {
                name: a.name.clone(),
                offset: a.offset,
                size: a.size,
                role,
            });
        }
        for (i, a) in args.iter().enumerate() {
            for b in &args[..i] {
                if a.offset < b.offset + b.size && b.offset < a.offset + a.size {
                    return Err(bad(format!(
                        "arguments '{}' and '{}' overlap",
                        b.name, a.name
                    )));
                }
            }
        }
        for role in [ArgRole::Instructions, ArgRole::InstructionCount] {
            if !args.iter().any(|a| a.role == role) {
                return Err(bad(format!("no {role:?} argument")));
            }
        }
        let words = kernel.regmap_words();
        Ok(Self {
            args,
            words,
            buffers,
        })
    }

    /// mlir-aie's layout with `buffers` buffer arguments (`opcode`@0, `instr`@8,
    /// `ninstr`@0x10, `bo{i}`@0x14 + 8·i).
    pub fn mlir_aie(buffers: usize) -> Self {
        let mut args = vec![
            RegmapArg {
                name: "opcode".into(),
                offset: 0,
                size: 8,
                role: ArgRole::Opcode,
            },
            RegmapArg {
                name: "instr".into(),
                offset: 8,
                size: 8,
                role: ArgRole::Instructions,
            },
            RegmapArg {
                name: "ninstr".into(),
                offset: 0x10,
                size: 4,
                role: ArgRole::InstructionCount,
            },
        ];
        for i in 0..buffers {
            args.push(RegmapArg {
                name: format!("bo{i}"),
                offset: 0x14 + 8 * i as u32,
                size: 8,
                role: ArgRole::Buffer(i),
            });
        }
        Self {
            args,
            words: 5 + 2 * buffers,
            buffers,
        }
    }

    /// Regmap words of [`RegmapLayout::mlir_aie`] with `buffers` buffer arguments.
    pub const fn mlir_aie_words(buffers: usize) -> usize {
        5 + 2 * buffers
    }

    /// Regmap length in words (`max(offset + size) / 4`).
    pub fn words(&self) -> usize {
        self.words
    }

    /// Buffer arguments.
    pub fn buffers(&self) -> usize {
        self.buffers
    }

    /// The arguments.
    pub fn args(&self) -> &[RegmapArg] {
        &self.args
    }

    /// Fill `out[..words]`: every argument at its offset, zero elsewhere; buffers past
    /// `buffers.len()` stay 0. Returns the word count.
    pub fn write(
        &self,
        opcode: u64,
        instr_addr: u64,
        instr_words: u32,
        buffers: &[u64],
        out: &mut [u32],
    ) -> Result<usize, PacketError> {
        if out.len() < self.words {
            return Err(PacketError::TooLong {
                needed: self.words,
                room: out.len(),
            });
        }
        if buffers.len() > self.buffers {
            return Err(PacketError::TooManyArgs {
                words: buffers.len(),
                limit: self.buffers,
            });
        }
        out[..self.words].fill(0);
        for a in &self.args {
            let v = match a.role {
                ArgRole::Opcode => opcode,
                ArgRole::Instructions => instr_addr,
                ArgRole::InstructionCount => instr_words as u64,
                ArgRole::Buffer(i) => buffers.get(i).copied().unwrap_or(0),
            };
            let w = a.offset as usize / 4;
            out[w] = v as u32;
            if a.size == 8 {
                out[w + 1] = (v >> 32) as u32;
            }
        }
        Ok(self.words)
    }
}

/// A kernel invocation ready to dispatch: the packet (built once) and what the debug check
/// needs.
#[derive(Clone, Debug)]
pub struct Program {
    regmap: Vec<u32>,
    instr: BufferId,
    instr_words: usize,
    arg_lens: Vec<u64>,
    partition_cols: Option<u8>,
}

impl Program {
    /// A TXN program (opcode 3): `instr` holds the stream, `buffers` are the buffer arguments
    /// in order (`arg_idx` 0, 1, …), run on a partition `partition_cols` wide.
    pub fn new(
        layout: &RegmapLayout,
        arena: &BoArena,
        instr: BufferId,
        buffers: &[BufferId],
        partition_cols: Option<u8>,
    ) -> Result<Self> {
        let instr_words = arena.len(instr) / 4;
        let addrs: Vec<u64> = buffers.iter().map(|&b| arena.device_addr(b)).collect();
        let mut regmap = vec![0u32; layout.words()];
        layout
            .write(
                MLIR_AIE_OPCODE_TXN,
                arena.device_addr(instr),
                instr_words as u32,
                &addrs,
                &mut regmap,
            )
            .map_err(|e| NpuError::InvalidRequest {
                what: format!("regmap: {e}"),
            })?;
        Ok(Self {
            regmap,
            instr,
            instr_words,
            arg_lens: buffers.iter().map(|&b| arena.len(b) as u64).collect(),
            partition_cols,
        })
    }

    /// The `ERT_START_CU` packet (CU 0).
    pub fn packet(&self) -> Packet<'_> {
        Packet::StartCu(StartCu {
            cu_mask: 1,
            regmap: &self.regmap,
        })
    }

    /// The regmap words.
    pub fn regmap(&self) -> &[u32] {
        &self.regmap
    }

    /// Validate the instruction stream in `arena` against the buffer lengths (allocation-free).
    pub fn check(&self, arena: &BoArena) -> Result<CheckReport> {
        let bytes = arena.bytes(self.instr);
        let words: &[u32] =
            bytemuck::try_cast_slice(&bytes[..4 * self.instr_words]).map_err(|e| {
                NpuError::InvalidRequest {
                    what: format!("instruction view not word aligned: {e}"),
                }
            })?;
        txn::check(
            words,
            &Limits {
                arg_lens: &self.arg_lens,
                partition_cols: self.partition_cols,
            },
        )
        .map_err(NpuError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npu::txn::tests::fixtures;
    use crate::npu::xclbin::Xclbin;

    fn kernel(file: &str) -> KernelMeta {
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        let x = Xclbin::parse(&bytes).unwrap();
        let ks = x.kernels().unwrap();
        let dpu: Vec<_> = ks.into_iter().filter(|k| k.kind == "dpu").collect();
        assert_eq!(dpu.len(), 1, "{file}");
        dpu.into_iter().next().unwrap()
    }

    #[test]
    fn mlir_aie_xclbins_give_the_full_15_word_regmap() {
        for tag in ["D_K512_N2048", "G_K2048_N512", "O_K4096_N2048"] {
            let k = kernel(&format!("1bit-monster/final_i8_{tag}.xclbin"));
            let l = RegmapLayout::from_kernel(&k).unwrap();
            assert_eq!((l.words(), l.buffers()), (15, 5), "{tag}");
            assert_eq!(l, RegmapLayout::mlir_aie(5));
            // XRT sends all 15 words with bo3/bo4 zero when three buffers are passed.
            let mut out = [0xDEADu32; 16];
            let n = l
                .write(3, 0x400_8000, 11156, &[0xA000, 0xB000, 0xC000], &mut out)
                .unwrap();
            assert_eq!(n, 15);
            assert_eq!(
                out[..15],
                [3, 0, 0x400_8000, 0, 11156, 0xA000, 0, 0xB000, 0, 0xC000, 0, 0, 0, 0, 0]
            );
            assert_eq!(out[15], 0xDEAD);
        }
    }

    #[test]
    fn riallto_xclbins_put_instr_first_and_ninstr_as_u64() {
        for app in [
            "color_threshold_v1_720p",
            "color_threshold_v2_720p",
            "edge_detect_720p",
        ] {
            let k = kernel(&format!("riallto/{app}.xclbin"));
            let l = RegmapLayout::from_kernel(&k).unwrap();
            assert_eq!((l.words(), l.buffers()), (10, 3), "{app}");
            let mut out = [0u32; 10];
            l.write(3, 0x400_8000, 60, &[0x1000, 0x2000], &mut out)
                .unwrap();
            // instr@0, ninstr@8 (u64), in@0x10, tmp@0x18, out@0x20 (unset: 0); no opcode.
            assert_eq!(
                out,
                [0x400_8000, 0, 60, 0, 0x1000, 0, 0x2000, 0, 0, 0],
                "{app}"
            );
            assert!(!l.args().iter().any(|a| a.role == ArgRole::Opcode));
        }
    }

    #[test]
    fn bad_layouts_are_refused() {
        use crate::npu::xclbin::KernelArg;
        let arg = |name: &str, offset, size| KernelArg {
            name: name.into(),
            offset,
            size,
            ty: "void*".into(),
        };
        let mut k = KernelMeta {
            name: "k".into(),
            args: vec![arg("instr", 0, 8), arg("ninstr", 8, 4), arg("a", 12, 8)],
            ..KernelMeta::default()
        };
        assert_eq!(RegmapLayout::from_kernel(&k).unwrap().words(), 5);
        k.args.push(arg("b", 16, 8));
        assert!(RegmapLayout::from_kernel(&k)
            .unwrap_err()
            .to_string()
            .contains("overlap"));
        k.args.pop();
        k.args.push(arg("scalar", 20, 2));
        assert!(RegmapLayout::from_kernel(&k).is_err());
        k.args.pop();
        k.args.remove(1);
        assert!(RegmapLayout::from_kernel(&k)
            .unwrap_err()
            .to_string()
            .contains("InstructionCount"));
    }
}
