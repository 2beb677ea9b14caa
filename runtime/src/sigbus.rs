//! Turns SIGBUS on a guarded memory map into a recorded fault instead of a process death.
//!
//! A read from a file mapping whose page lies past the file's end (the file was truncated after
//! it was mapped), or whose page the kernel cannot read (an I/O error), raises SIGBUS; its
//! default action kills the process without a word. [`MappedFile`](crate::mapped_file) registers
//! every map it makes here. The process-wide handler, installed on the first registration,
//! looks up the faulting address: inside a registered map, it maps anonymous zero pages over
//! the rest of that map (so the faulting read, retried, returns zeros and no page of the map
//! faults again), records the offset of the first fault for [`fault`], and returns; the owner
//! checks [`fault`] after reading and reports a named error. Any other SIGBUS goes to the
//! handler installed before (Rust's standard library installs one for stack overflows), or,
//! without one, the default action is restored and the fault repeats, killing the process as
//! it would have.
//!
//! The handler only reads atomics and makes one `mmap` system call (rustix's raw syscall: no
//! lock, no allocation, no errno), so it is async-signal-safe.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};

const PAGE: usize = 4096;
/// Maps guarded at once (a model and a VAD per process is the usual count; more go unguarded).
const SLOTS: usize = 64;

struct Slot {
    /// Map start address.
    start: AtomicUsize,
    /// Map length in bytes; 0: the slot is free. Written last on registration, first on
    /// release, so the handler never matches a half-written slot.
    len: AtomicUsize,
    /// Offset of the first faulting page + 1; 0: no fault.
    fault: AtomicU64,
    /// Bumped on release, so a stale [`Guard`] reads no fault of a later map.
    generation: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)] // a template for the static array only
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    fault: AtomicU64::new(0),
    generation: AtomicU64::new(0),
};
static SLOT: [Slot; SLOTS] = [FREE; SLOTS];
/// Serialises registration and release (never taken by the handler).
static REGISTRY: Mutex<()> = Mutex::new(());
static INSTALL: Once = Once::new();
/// The SIGBUS action installed before ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A registered map: its slot and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    slot: usize,
    generation: u64,
}

/// Guards `len` bytes from `start` (a live mapping). `None` when every slot is taken (the map
/// then works unguarded) or `len` is 0.
pub fn register(start: *const u8, len: usize) -> Option<Guard> {
    if len == 0 {
        return None;
    }
    INSTALL.call_once(install);
    let _lock = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let slot = SLOT
        .iter()
        .position(|s| s.len.load(Ordering::Acquire) == 0)?;
    let s = &SLOT[slot];
    s.fault.store(0, Ordering::Relaxed);
    s.start.store(start as usize, Ordering::Relaxed);
    s.len.store(len, Ordering::Release);
    Some(Guard {
        slot,
        generation: s.generation.load(Ordering::Relaxed),
    })
}

/// Releases `guard` (before the map is unmapped).
pub fn release(guard: Guard) {
    let _lock = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let s = &SLOT[guard.slot];
    if s.generation.load(Ordering::Relaxed) == guard.generation {
        s.len.store(0, Ordering::Release);
        s.generation.fetch_add(1, Ordering::Release);
    }
}

/// The offset into the map of the first page that faulted, if any did (`None` too once the
/// map is released).
pub fn fault(guard: Guard) -> Option<u64> {
    let s = &SLOT[guard.slot];
    let f = s.fault.load(Ordering::Acquire);
    (f != 0 && s.generation.load(Ordering::Acquire) == guard.generation).then(|| f - 1)
}

fn install() {
    // SAFETY: a zeroed `sigaction` is a valid value (no handler, empty mask, no flags);
    // `sigaction` with a valid action and a valid out-pointer for the old one has no other
    // precondition. Our handler is `extern "C"` with the SA_SIGINFO signature.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, &action, &mut old) == 0 {
            let _ = PREVIOUS.set(old);
        }
    }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler; `si_addr` is the
    // faulting address for SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    for s in &SLOT {
        let len = s.len.load(Ordering::Acquire);
        if len == 0 {
            continue;
        }
        let start = s.start.load(Ordering::Relaxed);
        if addr < start || addr >= start + len {
            continue;
        }
        let page = addr & !(PAGE - 1);
        let end = (start + len).next_multiple_of(PAGE);
        // SAFETY: [page, end) lies inside a live read-only mapping this process made (the slot
        // is registered only while its `MappedFile` lives, and the faulting read borrows it).
        // MAP_FIXED replaces those pages with zero pages; the mapping's owner unmaps the whole
        // range later as before. No Rust reference sees the bytes change mid-read except the
        // faulting one, whose data is gone either way, and the owner reports the fault.
        let zeroed = unsafe {
            rustix::mm::mmap_anonymous(
                page as *mut std::ffi::c_void,
                end - page,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::FIXED,
            )
        };
        if zeroed.is_ok() {
            let _ = s.fault.compare_exchange(
                0,
                (page - start) as u64 + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
            return;
        }
        break;
    }
    chain(sig, info, ctx);
}

/// Hands a SIGBUS that is not ours to the previous action (or restores the default, so the
/// retried fault ends the process as it would have without us).
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    match PREVIOUS.get() {
        Some(prev) if prev.sa_sigaction != libc::SIG_DFL && prev.sa_sigaction != libc::SIG_IGN => {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: an SA_SIGINFO action's handler has this signature.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig, info, ctx);
            } else {
                // SAFETY: a plain action's handler takes the signal number only.
                let f: extern "C" fn(libc::c_int) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig);
            }
        }
        _ => {
            // SAFETY: restoring the default action with a zeroed (valid) sigaction.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            }
        }
    }
}
