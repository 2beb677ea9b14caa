//! A read-only memory map of a whole file: the one place the model file is mapped. Or, on
//! request ([`MappedFile::read`]), the whole file read into page-aligned memory.
//!
//! The model crate forbids `unsafe`, and mapping a file is an `unsafe` operation in `memmap2`
//! (the map aliases memory another process could change), so the map lives here, behind a safe
//! API that hands out `&[u8]`.
//!
//! A mapped file truncated while mapped would make reads of the lost pages raise SIGBUS and
//! kill the process; every map is registered with [`crate::sigbus`], which turns that into
//! zero bytes plus a recorded fault, reported by [`MappedFile::fault`] (the loader turns it into
//! a named error). A file rewritten in place (same size) is not detected here: the pages read
//! then are the new bytes; the checksums (`--verify-model`) catch that.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::sigbus;

/// One page of an in-memory copy (page-aligned like a map, so every dtype view is aligned).
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

#[derive(Debug)]
enum Storage {
    Map {
        map: memmap2::Mmap,
        guard: Option<sigbus::Guard>,
        /// Kept open to see the file's current size.
        file: File,
    },
    Memory {
        pages: Vec<Page>,
        len: usize,
    },
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Page")
    }
}

/// A file mapped read-only into memory (or read into memory) for as long as this value lives.
#[derive(Debug)]
pub struct MappedFile {
    storage: Storage,
}

impl MappedFile {
    /// Maps `path` read-only. An empty file maps to an empty slice.
    pub fn open(path: &Path) -> std::io::Result<MappedFile> {
        let file = File::open(path)?;
        // SAFETY: the map is read-only and private to this process. The hazard is another
        // process truncating or rewriting the file while it is mapped: a truncation turns reads
        // of the lost pages into SIGBUS, which `sigbus` (registered below) turns into zero pages
        // and a fault that `fault` reports; a rewrite in place changes the bytes under `&[u8]`
        // views (the checksums detect it). Model files are written once, atomically (write to a
        // temporary file, then rename), so a published path is never modified in place; this is
        // the contract every mmap-based weight loader (safetensors, llama.cpp, CTranslate2)
        // relies on.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let guard = sigbus::register(map.as_ptr(), map.len());
        Ok(MappedFile {
            storage: Storage::Map { map, guard, file },
        })
    }

    /// Reads the whole of `path` into page-aligned memory (no map: a later change to the file
    /// cannot affect it). A file that changes size while being read is an error.
    pub fn read(path: &Path) -> std::io::Result<MappedFile> {
        let mut file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
        let mut pages = vec![Page([0; 4096]); len.div_ceil(4096)];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut pages);
        let bytes = &mut bytes[..len];
        let mut filled = 0;
        while filled < len {
            match file.read(&mut bytes[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let mut probe = [0u8; 1];
        if filled < len || file.read(&mut probe)? != 0 {
            return Err(std::io::Error::other(format!(
                "the file changed size while being read (it had {len} bytes, {filled} were read)"
            )));
        }
        Ok(MappedFile {
            storage: Storage::Memory { pages, len },
        })
    }

    /// The whole file. The address is page-aligned (so at least 8-byte aligned).
    pub fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Map { map, .. } => map,
            Storage::Memory { pages, len } => &bytemuck::cast_slice(pages)[..*len],
        }
    }

    /// Whether the bytes are a map of the file (else a copy in memory).
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Map { .. })
    }

    /// The offset of the first page that could not be read from the file since it was mapped
    /// (truncated under the map, or an I/O error): reads there returned zeros. `None`: every
    /// read so far was of the file's bytes (always `None` for [`MappedFile::read`]).
    ///
    /// Also `Some(new length)` when the file is now shorter than the map: reads past the new
    /// end inside its last page return zeros without a fault, so the size is checked too (one
    /// `fstat`).
    pub fn fault(&self) -> Option<u64> {
        let Storage::Map { map, file, .. } = &self.storage else {
            return None;
        };
        let faulted = self.guard().and_then(sigbus::fault);
        let shrunk = file
            .metadata()
            .ok()
            .map(|m| m.len())
            .filter(|&n| n < map.len() as u64);
        match (faulted, shrunk) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The SIGBUS guard of this map, to check [`sigbus::fault`] from elsewhere (`None`: read
    /// into memory, or no guard slot was free).
    pub fn guard(&self) -> Option<sigbus::Guard> {
        match &self.storage {
            Storage::Map { guard, .. } => *guard,
            Storage::Memory { .. } => None,
        }
    }

    /// Tells the kernel the whole pages inside `range` are not needed for now: they leave this
    /// process's resident set (a loader calls it once a tensor is copied out, so the file is
    /// never resident twice). The contents do not change: a later read maps the pages in again
    /// from the page cache. Errors are ignored (it is advice).
    pub fn release(&self, range: std::ops::Range<usize>) {
        const PAGE: usize = 4096;
        let Storage::Map { map, .. } = &self.storage else {
            return; // an in-memory copy is the process's own memory: nothing to drop
        };
        let end = range.end.min(map.len());
        let (start, end) = (range.start.next_multiple_of(PAGE), end / PAGE * PAGE);
        if start < end {
            // SAFETY: DONTNEED on a read-only private file mapping only drops this process's
            // copies of the pages; the next access refaults them from the file, so every
            // outstanding `&[u8]` keeps seeing the same bytes (under the file contract of
            // `open`). The range lies inside the map.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        if let Some(guard) = self.guard() {
            sigbus::release(guard); // before `map` unmaps
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

    /// Without the SIGBUS guard this test dies of the signal (and takes the test binary down).
    #[test]
    fn a_file_truncated_under_the_map_reads_zeros_and_reports_the_fault() {
        let dir = std::env::temp_dir().join(format!("amanuensis-sigbus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.bin");
        let big: Vec<u8> = (0..6 * 4096u32).map(|i| (i % 251) as u8 | 1).collect();
        std::fs::write(&path, &big).unwrap();
        let m = MappedFile::open(&path).unwrap();
        assert!(m.is_mapped());
        assert_eq!(m.fault(), None);
        // Nothing read yet: truncate to 2.5 pages, then read everything.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(2 * 4096 + 100)
            .unwrap();
        let bytes = m.bytes();
        let sum: u64 = bytes.iter().map(|&b| b as u64).sum();
        // The page holding the new end reads the file, zero-filled past it; later pages fault.
        assert_eq!(&bytes[..2 * 4096 + 100], &big[..2 * 4096 + 100]);
        assert!(bytes[3 * 4096..].iter().all(|&b| b == 0));
        assert_eq!(
            sum,
            big[..2 * 4096 + 100].iter().map(|&b| b as u64).sum::<u64>()
        );
        assert_eq!(
            m.fault(),
            Some(2 * 4096 + 100),
            "the new length, before the fault"
        );
        assert_eq!(sigbus::fault(m.guard().unwrap()), Some(3 * 4096));
        let guard = m.guard().unwrap();
        drop(m);
        assert_eq!(
            sigbus::fault(guard),
            None,
            "a released guard reports nothing"
        );

        // A fresh map of the (now short) file is clean.
        let m = MappedFile::open(&path).unwrap();
        assert_eq!(m.bytes().len(), 2 * 4096 + 100);
        assert_eq!(m.fault(), None);

        // Read into memory: later changes to the file do not reach the copy.
        std::fs::write(&path, &big).unwrap();
        let r = MappedFile::read(&path).unwrap();
        assert!(!r.is_mapped());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        assert_eq!(r.bytes(), &big[..]);
        assert_eq!(r.bytes().as_ptr() as usize % 4096, 0);
        assert_eq!(r.fault(), None);
        r.release(0..big.len()); // a no-op on a copy
        assert_eq!(r.bytes(), &big[..]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
