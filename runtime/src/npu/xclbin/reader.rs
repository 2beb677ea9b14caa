//! Bounds-checked little-endian reads inside one section (or the whole file).

use super::XclbinError;

/// A byte slice with a name, for error messages.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    section: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8], section: &'static str) -> Self {
        Self { bytes, section }
    }

    /// Check that `count` elements of `elem_size` bytes at `offset` lie inside the slice.
    pub(super) fn need(
        &self,
        offset: u64,
        elem_size: u64,
        count: u64,
        field: &'static str,
    ) -> Result<(), XclbinError> {
        let end = elem_size
            .checked_mul(count)
            .and_then(|n| n.checked_add(offset));
        match end {
            Some(end) if end <= self.bytes.len() as u64 => Ok(()),
            _ => Err(XclbinError::OutOfBounds {
                section: self.section,
                field,
                offset,
                count,
                elem_size,
                section_len: self.bytes.len() as u64,
            }),
        }
    }

    pub(super) fn slice(
        &self,
        at: usize,
        len: usize,
        field: &'static str,
    ) -> Result<&'a [u8], XclbinError> {
        self.need(at as u64, 1, len as u64, field)?;
        Ok(&self.bytes[at..at + len])
    }

    fn array_n<const N: usize>(
        &self,
        at: usize,
        field: &'static str,
    ) -> Result<[u8; N], XclbinError> {
        Ok(self.slice(at, N, field)?.try_into().expect("N bytes"))
    }

    pub(super) fn u8(&self, at: usize, field: &'static str) -> Result<u8, XclbinError> {
        Ok(self.array_n::<1>(at, field)?[0])
    }

    pub(super) fn u16(&self, at: usize, field: &'static str) -> Result<u16, XclbinError> {
        Ok(u16::from_le_bytes(self.array_n(at, field)?))
    }

    pub(super) fn u32(&self, at: usize, field: &'static str) -> Result<u32, XclbinError> {
        Ok(u32::from_le_bytes(self.array_n(at, field)?))
    }

    pub(super) fn u64(&self, at: usize, field: &'static str) -> Result<u64, XclbinError> {
        Ok(u64::from_le_bytes(self.array_n(at, field)?))
    }

    /// Read an `array_offset{u32 size; u32 offset}` at `at` and check that `size` elements of
    /// `elem_size` bytes at `offset` fit. Returns (offset, count) as usize.
    pub(super) fn array(
        &self,
        at: usize,
        elem_size: usize,
        field: &'static str,
    ) -> Result<(usize, usize), XclbinError> {
        let count = self.u32(at, field)?;
        let offset = self.u32(at + 4, field)?;
        self.need(offset as u64, elem_size as u64, count as u64, field)?;
        Ok((offset as usize, count as usize))
    }

    /// A fixed-size, NUL-padded string field (lossy UTF-8, up to the first NUL). The caller has
    /// checked that the field is in bounds; out-of-bounds bytes read as empty.
    pub(super) fn fixed_str(&self, at: usize, len: usize) -> String {
        let raw = self.bytes.get(at..at + len).unwrap_or(&[]);
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        String::from_utf8_lossy(&raw[..end]).into_owned()
    }
}
