//! A read-only memory map of a whole file: the one place the model file is mapped.
//!
//! The model crate forbids `unsafe`, and mapping a file is an `unsafe` operation in `memmap2`
//! (the map aliases memory another process could change), so the map lives here, behind a safe
//! API that hands out `&[u8]`.

use std::fs::File;
use std::path::Path;

/// A file mapped read-only into memory for as long as this value lives.
#[derive(Debug)]
pub struct MappedFile {
    map: memmap2::Mmap,
}

impl MappedFile {
    /// Maps `path` read-only. An empty file maps to an empty slice.
    pub fn open(path: &Path) -> std::io::Result<MappedFile> {
        let file = File::open(path)?;
        // SAFETY: the map is read-only and private to this process. The only hazard is another
        // process truncating or rewriting the file while it is mapped (a truncation turns reads
        // into SIGBUS). Model files are written once, atomically (write to a temporary file, then
        // rename), so a published path is never modified in place; this is the same contract
        // every mmap-based weight loader (safetensors, llama.cpp, CTranslate2) relies on.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(MappedFile { map })
    }

    /// The whole file. The address is page-aligned (so at least 8-byte aligned).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Tells the kernel the whole pages inside `range` are not needed for now: they leave this
    /// process's resident set (a loader calls it once a tensor is copied out, so the file is
    /// never resident twice). The contents do not change: a later read maps the pages in again
    /// from the page cache. Errors are ignored (it is advice).
    pub fn release(&self, range: std::ops::Range<usize>) {
        const PAGE: usize = 4096;
        let end = range.end.min(self.map.len());
        let (start, end) = (range.start.next_multiple_of(PAGE), end / PAGE * PAGE);
        if start < end {
            // SAFETY: DONTNEED on a read-only private file mapping only drops this process's
            // copies of the pages; the next access refaults them from the file, so every
            // outstanding `&[u8]` keeps seeing the same bytes (under the file contract of
            // `open`). The range lies inside the map.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }
}

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_file_contents() {
        let dir = std::env::temp_dir().join(format!("amanuensis-mapped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.bin");
        std::fs::write(&path, b"hello map").unwrap();
        let m = MappedFile::open(&path).unwrap();
        assert_eq!(m.bytes(), b"hello map");
        m.release(0..9); // less than a page: nothing to drop
        assert_eq!(m.bytes(), b"hello map");
        let big: Vec<u8> = (0..5 * 4096u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("big"), &big).unwrap();
        let m = MappedFile::open(&dir.join("big")).unwrap();
        assert_eq!(m.bytes(), &big[..]);
        m.release(100..4 * 4096 + 7);
        assert_eq!(m.bytes(), &big[..], "released pages read back the same");
        assert_eq!(m.bytes().as_ptr() as usize % 8, 0);
        std::fs::write(dir.join("empty"), b"").unwrap();
        assert_eq!(MappedFile::open(&dir.join("empty")).unwrap().bytes(), b"");
        assert!(MappedFile::open(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
