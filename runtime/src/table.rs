//! Row tables that a stage adds to its rows ([`crate::stage::Op::AddTableRows`]: Whisper's
//! position embeddings): f32 values owned, or f16 values read in place from shared bytes (a
//! model file's memory map), widened as they are read. Widening f16 to f32 is exact, so a table
//! read in place adds the same f32 values as its widened copy would, bit for bit, without the
//! copy's time and fresh memory at load.

use std::ops::Range;
use std::sync::Arc;

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::q8::layout::SharedBytes;

/// Values widened per call of [`Table::add_to`] (a stack buffer).
const CHUNK: usize = 256;

/// A table of f32 values, owned or f16 in place.
#[derive(Clone)]
pub enum Table {
    /// Owned f32 values.
    F32(Vec<f32>),
    /// f16 values read in place: `len` values from byte `start` of `bytes`.
    F16 {
        bytes: SharedBytes,
        start: usize,
        len: usize,
    },
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Table::F32(v) => f.debug_tuple("F32").field(&v.len()).finish(),
            Table::F16 { start, len, .. } => f
                .debug_struct("F16")
                .field("start", start)
                .field("len", len)
                .finish(),
        }
    }
}

impl Table {
    /// The f16 values in byte `range` of `bytes`, read in place. `None` when the range lies
    /// outside the bytes, is not a whole number of f16 values, or is not 2-byte aligned in
    /// memory (the caller then widens a copy).
    pub fn f16_in_place(bytes: &SharedBytes, range: Range<usize>) -> Option<Table> {
        let all: &[u8] = (**bytes).as_ref();
        let slice = all.get(range.clone())?;
        let values: &[f16] = bytemuck::try_cast_slice(slice).ok()?;
        Some(Table::F16 {
            bytes: Arc::clone(bytes),
            start: range.start,
            len: values.len(),
        })
    }

    /// Values in the table.
    pub fn len(&self) -> usize {
        match self {
            Table::F32(v) => v.len(),
            Table::F16 { len, .. } => *len,
        }
    }

    /// Whether the table holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The f16 values of an in-place table.
    fn halves(&self) -> Option<&[f16]> {
        match self {
            Table::F32(_) => None,
            Table::F16 { bytes, start, len } => {
                let all: &[u8] = (**bytes).as_ref();
                Some(bytemuck::cast_slice(&all[*start..*start + 2 * len]))
            }
        }
    }

    /// `out[i] += table[start + i]` for every `i < out.len()`, in f32.
    ///
    /// # Panics
    /// If `start + out.len()` exceeds [`Table::len`].
    pub fn add_to(&self, start: usize, out: &mut [f32]) {
        match self {
            Table::F32(v) => {
                let t = &v[start..start + out.len()];
                out.iter_mut().zip(t).for_each(|(x, p)| *x += p);
            }
            Table::F16 { .. } => {
                let halves = self.halves().expect("an f16 table");
                let halves = &halves[start..start + out.len()];
                let mut wide = [0f32; CHUNK];
                for (o, h) in out.chunks_mut(CHUNK).zip(halves.chunks(CHUNK)) {
                    let wide = &mut wide[..h.len()];
                    h.convert_to_f32_slice(wide);
                    o.iter_mut().zip(wide.iter()).for_each(|(x, p)| *x += p);
                }
            }
        }
    }

    /// The values widened to f32 (a copy).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Table::F32(v) => v.clone(),
            Table::F16 { .. } => self.halves().expect("an f16 table").to_f32_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(bytes: Vec<u8>) -> SharedBytes {
        Arc::new(bytes)
    }

    #[test]
    fn f16_in_place_adds_what_its_widened_copy_adds() {
        // Every f16 bit pattern but NaNs: normals, subnormals, zeros, infinities; an odd
        // length and offsets that cross the widening chunks.
        let halves: Vec<f16> = (0..=u16::MAX)
            .map(f16::from_bits)
            .filter(|h| !h.is_nan())
            .collect();
        let mut bytes = vec![0u8; 2];
        bytes.extend_from_slice(bytemuck::cast_slice(&halves));
        let bytes = shared(bytes);
        let table = Table::f16_in_place(&bytes, 2..2 + 2 * halves.len()).expect("aligned");
        assert_eq!(table.len(), halves.len());
        let widened = Table::F32(halves.iter().map(|h| h.to_f32()).collect());
        assert_eq!(table.to_f32(), widened.to_f32());
        for (start, n) in [
            (0, 1),
            (3, CHUNK + 1),
            (1000, 3 * CHUNK - 7),
            (0, halves.len()),
        ] {
            let base: Vec<f32> = (0..n).map(|i| (i as f32 - 400.5) * 0.37).collect();
            let (mut a, mut b) = (base.clone(), base);
            table.add_to(start, &mut a);
            widened.add_to(start, &mut b);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "start {start}, {n} values");
        }
    }

    #[test]
    fn f16_in_place_refuses_what_it_cannot_read() {
        let bytes = shared(vec![0u8; 10]);
        assert!(
            Table::f16_in_place(&bytes, 0..12).is_none(),
            "outside the bytes"
        );
        assert!(Table::f16_in_place(&bytes, 0..3).is_none(), "half a value");
        assert!(Table::f16_in_place(&bytes, 1..5).is_none(), "misaligned");
        let empty = Table::f16_in_place(&bytes, 4..4).expect("empty range");
        assert!(empty.is_empty());
    }
}
