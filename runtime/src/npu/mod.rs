//! The amdxdna NPU layer: raw ioctls on `/dev/accel/accelN` through rustix, no XRT.
//!
//! Layers, bottom up (see `runtime/README.md`):
//! - [`uapi`]: `repr(C)` structs and request numbers; [`ioctl`]: the only ioctl calls;
//!   [`mapping`]: the only mmap calls; [`cache`]: user-space cache flush; [`clock`].
//! - [`driver::Driver`]: the ioctl-level trait, implemented by [`amdxdna::AmdxdnaDriver`] (the
//!   real device) and [`emu::EmuDriver`] (an emulated device for tests).
//! - Safe owners over any driver: [`device::Device`] (queries) found by [`discovery`],
//!   [`heap::Heap`] and [`heap::DevBo`], [`bo::MappedBo`] (SHARE/CMD), [`arena::BoArena`],
//!   [`hwctx::HwContext`], [`ring::CommandRing`]; [`ert`] builds command packets; [`xclbin`]
//!   parses the container.

pub mod amdxdna;
pub mod arena;
pub mod bo;
pub mod cache;
pub mod clock;
pub mod device;
pub mod discovery;
pub mod driver;
pub mod emu;
pub mod error;
pub mod ert;
pub mod heap;
pub mod hwctx;
pub mod ioctl;
pub mod mapping;
pub mod program;
pub mod ring;
pub mod selftest;
pub mod trace;
pub mod txn;
pub mod uapi;
pub mod xclbin;

pub use error::{NpuError, Result};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod faults_tests;

#[cfg(test)]
mod chain_tests;
