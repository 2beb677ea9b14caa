//! Buffer descriptors: the shim BD (§6, 8 words) with limits checked, and the memory-tile BD
//! (§12, 8 words) in mlir-aie's register-value form.

use crate::AieError;

/// Words of a shim or memory-tile BD.
pub const BD_WORDS: usize = 8;

/// One address dimension of a shim BD: `wrap` elements `stride` words apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dim {
    /// Count (not minus one). For d0, 0 = linear mode (no ND addressing).
    pub wrap: u32,
    /// Stride in 32-bit words (stored minus one; 0 and 1 both store 0).
    pub stride: u32,
}

/// A shim DMA buffer descriptor in logical units (strides and iteration count as counted, not
/// as stored); [`ShimBd::encode`] applies the minus-one rules and checks every field width.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShimBd {
    /// Buffer_Length: words per run (not minus one).
    pub length: u32,
    /// Word 1: base address bits `[31:2]` — the DDR_PATCH target. Generators write the patch's
    /// `arg_plus` here (as real mlir-aie streams do) or 0 (the doc's rule); the patch
    /// overwrites it either way.
    pub word1: u32,
    /// `(Packet_Type, Packet_ID)` when packets are enabled.
    pub packet: Option<(u8, u8)>,
    /// Out_Of_Order_BD_ID.
    pub out_of_order_id: u8,
    /// d0 (wrap 0 = linear: d0/d1/d2 all unused).
    pub d0: Dim,
    /// d1.
    pub d1: Dim,
    /// d2 stride in words (the d2 count is implied by `length`).
    pub d2_stride: u32,
    /// Iteration_Current.
    pub iteration_current: u8,
    /// Iterations (count, not minus one; 0 or 1 = none).
    pub iteration_wrap: u32,
    /// Iteration stride in words.
    pub iteration_stride: u32,
    /// Burst_Length encoding (0 = 64 B … 3 = 512 B, npu2 only).
    pub burst: u8,
    /// AxCACHE (mlir-aie writes 2).
    pub ax_cache: u8,
    /// Next BD when chained.
    pub next_bd: Option<u8>,
    /// `(Lock_Rel_Value, Lock_Rel_ID)`.
    pub lock_release: (i8, u8),
    /// `(Lock_Acq_Enable, Lock_Acq_Value, Lock_Acq_ID)`.
    pub lock_acquire: (bool, i8, u8),
}

fn check(bd: u8, field: &'static str, value: u64, limit: u64) -> Result<u32, AieError> {
    if value > limit {
        Err(AieError::BdField {
            bd,
            field,
            value,
            limit,
        })
    } else {
        Ok(value as u32)
    }
}

fn stride(bd: u8, field: &'static str, s: u32) -> Result<u32, AieError> {
    // Stored minus one in 20 bits: strides up to 2^20 words (§8 limits).
    check(bd, field, s as u64, 1 << 20).map(|s| s.saturating_sub(1))
}

impl ShimBd {
    /// A linear transfer of `length` words.
    pub fn linear(length: u32, burst: u8) -> ShimBd {
        ShimBd {
            length,
            burst,
            ax_cache: 2,
            ..ShimBd::default()
        }
    }

    /// The 8 register words of BD `bd` (Valid_BD set), or the first field out of range.
    pub fn encode(&self, bd: u8) -> Result<[u32; 8], AieError> {
        check(bd, "BD id", bd as u64, 15)?;
        let (ptype, pid) = self.packet.unwrap_or((0, 0));
        let w2 = (self.packet.is_some() as u32) << 30
            | check(bd, "Out_Of_Order_BD_ID", self.out_of_order_id as u64, 63)? << 24
            | check(bd, "Packet_ID", pid as u64, 31)? << 19
            | check(bd, "Packet_Type", ptype as u64, 7)? << 16;
        let w3 = check(bd, "D0_Wrap", self.d0.wrap as u64, 1023)? << 20
            | stride(bd, "D0_Stepsize", self.d0.stride)?;
        let w4 = check(bd, "Burst_Length", self.burst as u64, 3)? << 30
            | check(bd, "D1_Wrap", self.d1.wrap as u64, 1023)? << 20
            | stride(bd, "D1_Stepsize", self.d1.stride)?;
        let w5 = check(bd, "AxCACHE", self.ax_cache as u64, 15)? << 24
            | stride(bd, "D2_Stepsize", self.d2_stride)?;
        let iter = check(bd, "Iteration_Wrap", self.iteration_wrap as u64, 64)?;
        let w6 = check(bd, "Iteration_Current", self.iteration_current as u64, 63)? << 26
            | iter.saturating_sub(1) << 20
            | stride(bd, "Iteration_Stepsize", self.iteration_stride)?;
        let (rel_v, rel_id) = self.lock_release;
        let (acq_en, acq_v, acq_id) = self.lock_acquire;
        let next = match self.next_bd {
            Some(n) => check(bd, "Next_BD", n as u64, 15)? << 27 | 1 << 26,
            None => 0,
        };
        let w7 = next
            | 1 << 25
            | ((rel_v as u8 as u32) & 0x7F) << 18
            | check(bd, "Lock_Rel_ID", rel_id as u64, 15)? << 13
            | (acq_en as u32) << 12
            | ((acq_v as u8 as u32) & 0x7F) << 5
            | check(bd, "Lock_Acq_ID", acq_id as u64, 15)?;
        Ok([self.length, self.word1, w2, w3, w4, w5, w6, w7])
    }
}

/// A memory-tile BD (§12) in register values, as mlir-aie's `aiex.npu.writebd` takes them
/// (no minus-one applied).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemtileBd {
    /// Buffer_Length.
    pub length: u32,
    /// Base_Address (words).
    pub base: u32,
    /// Next_BD when chained.
    pub next_bd: Option<u8>,
    /// `(D0_Wrap, D0_Stepsize)`.
    pub d0: (u32, u32),
    /// `(D1_Wrap, D1_Stepsize)`.
    pub d1: (u32, u32),
    /// `(D2_Wrap, D2_Stepsize)`.
    pub d2: (u32, u32),
    /// D3_Stepsize.
    pub d3_stride: u32,
    /// `(Iteration_Current, Iteration_Wrap, Iteration_Stepsize)`.
    pub iteration: (u32, u32, u32),
    /// `(Lock_Rel_Value, Lock_Rel_ID)`.
    pub lock_release: (u32, u32),
    /// `(Lock_Acq_Enable, Lock_Acq_Value, Lock_Acq_ID)`.
    pub lock_acquire: (bool, u32, u32),
}

impl MemtileBd {
    /// The 8 register words (Valid_BD set).
    pub fn encode(&self) -> [u32; 8] {
        let next = self
            .next_bd
            .map_or(0, |n| (n as u32 & 0x3F) << 20 | 1 << 19);
        let (ic, iw, is) = self.iteration;
        let (rv, rid) = self.lock_release;
        let (ae, av, aid) = self.lock_acquire;
        [
            self.length & 0x1_FFFF,
            next | (self.base & 0x7_FFFF),
            (self.d0.0 & 0x3FF) << 17 | (self.d0.1 & 0x1_FFFF),
            (self.d1.0 & 0x3FF) << 17 | (self.d1.1 & 0x1_FFFF),
            (self.d2.0 & 0x3FF) << 17 | (self.d2.1 & 0x1_FFFF),
            self.d3_stride & 0x1_FFFF,
            (ic & 0x3F) << 23 | (iw & 0x3F) << 17 | (is & 0x1_FFFF),
            1 << 31
                | (rv & 0x7F) << 24
                | (rid & 0xFF) << 16
                | (ae as u32) << 15
                | (av & 0x7F) << 8
                | (aid & 0xFF),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_fields_are_named() {
        let mut bd = ShimBd::linear(16, 2);
        bd.d1 = Dim {
            wrap: 1024,
            stride: 4,
        };
        assert_eq!(
            bd.encode(3),
            Err(AieError::BdField {
                bd: 3,
                field: "D1_Wrap",
                value: 1024,
                limit: 1023
            })
        );
        bd.d1.wrap = 8;
        bd.iteration_wrap = 65;
        assert!(matches!(
            bd.encode(3),
            Err(AieError::BdField {
                field: "Iteration_Wrap",
                ..
            })
        ));
        bd.iteration_wrap = 64;
        bd.d2_stride = (1 << 20) + 1;
        assert!(matches!(
            bd.encode(3),
            Err(AieError::BdField {
                field: "D2_Stepsize",
                ..
            })
        ));
        assert!(matches!(
            ShimBd::linear(1, 2).encode(16),
            Err(AieError::BdField { field: "BD id", .. })
        ));
    }
}
