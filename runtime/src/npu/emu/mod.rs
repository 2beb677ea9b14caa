//! An emulated amdxdna device implementing [`Driver`]: BOs with the driver's address rules and
//! non-coherent device memory (`memory.rs`: the device sees host writes only after a flush, the
//! host sees device writes only after one), hardware contexts whose firmware validates and runs
//! the TXN instruction stream of each command, performing its shim DMA transfers on device
//! memory for the Rust array model registered for the CU's PDI (`firmware.rs`; an
//! `ERT_CMD_CHAIN` runs its `ERT_START_CU` sub-commands in order, each the same way, under the
//! driver's chain-buffer rules), up to 32 CUs (PDIs) per context, the same command
//! states, the 4-in-flight limit, syncobj timeline waits with absolute deadlines, the driver's
//! scheduler timeout, three driver profiles (`profile.rs`), fault injection (fail the Nth call,
//! the Nth call of one op, or the next call of an op with an errno; hang a command; end a
//! command in a chosen state), and counters for leak checks (live BOs, mappings, contexts,
//! syncobjs per device; calls per op; open emulated devices, the stand-in for accel fds).
//!
//! Deviations from the real driver, all documented where they occur: a wait for a point nobody
//! submitted sleeps at most [`MAX_SLEEP`] before returning ETIME; duplicate handles in EXEC_CMD
//! fail with EALREADY (ww_mutex semantics, inferred, not observed); CREATE_HWCTX with the heap
//! unmapped fails with EINVAL (the driver's `aie2_map_host_buf` fails; its errno is inferred).

mod firmware;
mod int8_gemm;
mod memory;
mod profile;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustix::io::Errno;

pub use firmware::{KernelFn, EXECBUF_PAYLOAD_WORDS};
pub use int8_gemm::Int8GemmModel;
pub use memory::{DEV_BO_ALIGN, HEAP_DEVICE_BASE, HEAP_MAX, LINE, STALE};
pub use profile::{DriverProfile, LongRegmap, PROFILE_ENV};

use firmware::{Context, Job, JobFault};
use memory::Memory;

use super::clock::monotonic_ns;
use super::driver::{Backend, BoInfo, BoType, Driver};
use super::ert::CmdState;
use super::ioctl::DrmVersion;
use super::mapping::MappedRange;
use super::txn::ArrayIo;
use super::uapi;

/// Commands a context accepts in flight (`HWCTX_MAX_CMDS`).
pub const MAX_IN_FLIGHT: usize = 4;
/// The longest a single wait sleeps for a point nobody submitted.
pub const MAX_SLEEP: Duration = Duration::from_secs(5);
/// Required alignment of the heap mapping (firmware INVALID_PARAM otherwise, npu-driver.md §2.3).
pub const HEAP_ALIGN: usize = 64 << 20;

/// Geometry and identity the emulated device reports.
#[derive(Clone, Debug)]
pub struct EmuConfig {
    /// DRM driver name (set something else to emulate a foreign node).
    pub driver_name: String,
    /// Driver (major, minor, patch): upstream 0.1 by default.
    pub driver_version: (i32, i32, i32),
    /// AIE version (major, minor).
    pub aie_version: (u32, u32),
    /// Columns.
    pub cols: u16,
    /// Rows (shim + mem + core).
    pub rows: u16,
    /// Compute rows.
    pub core_rows: u16,
    /// Firmware (major, minor, patch, build).
    pub firmware: (u32, u32, u32, u32),
    /// H-clock MHz.
    pub h_clock_mhz: u32,
    /// Time from submission (or the previous command's completion) to completion.
    pub latency: Duration,
    /// The driver version modelled.
    pub profile: DriverProfile,
    /// The scheduler timeout that ends a hung command (the profile's, or shorter in tests).
    pub tdr: Duration,
    /// `force_cmdlist` as the module parameter reads (the profile's by default).
    pub force_cmdlist: Option<bool>,
    /// Make CREATE_HWCTX return syncobj 0 (a driver bug the runtime must survive, F8).
    pub syncobj_zero: bool,
    /// Retire due jobs only where the driver blocks (SYNCOBJ_TIMELINE_WAIT, EXEC_CMD on a full
    /// queue, DESTROY_HWCTX), never on entering any other call. A command header then turns
    /// final only once the host has waited for it, so which waits a run makes, and how many
    /// commands are in flight, follow from the calls alone and not from how fast the host ran
    /// between them. Tests that count calls set it; by default (false) a job also completes
    /// behind the host's back, as on the device, and a header poll can see it done.
    pub retire_in_waits_only: bool,
}

impl EmuConfig {
    /// The default device under `profile` (its driver version, TDR and `force_cmdlist`).
    pub fn with_profile(profile: DriverProfile) -> Self {
        Self {
            driver_version: profile.driver_version(),
            profile,
            tdr: profile.tdr(),
            force_cmdlist: profile.force_cmdlist(),
            ..Self::base()
        }
    }

    fn base() -> Self {
        Self {
            driver_name: uapi::AMDXDNA_DRIVER_NAME.into(),
            driver_version: (0, 1, 0),
            aie_version: (2, 0),
            cols: 5,
            rows: 6,
            core_rows: 4,
            firmware: (1, 5, 2, 380),
            h_clock_mhz: 1024,
            latency: Duration::ZERO,
            profile: DriverProfile::UpstreamCurrent,
            tdr: DriverProfile::UpstreamCurrent.tdr(),
            force_cmdlist: None,
            syncobj_zero: false,
            retire_in_waits_only: false,
        }
    }
}

impl Default for EmuConfig {
    /// A Phoenix-like NPU1 (AIE2, 5 columns, 6 rows, 4 core rows) under the profile named by
    /// `AMANUENSIS_EMU_PROFILE` (current upstream when unset).
    fn default() -> Self {
        Self::with_profile(DriverProfile::from_env())
    }
}

/// Counters for tests and the profiler.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmuStats {
    /// Successful EXEC_CMDs.
    pub submitted: u64,
    /// Jobs that reached a final state.
    pub completed: u64,
    /// Highest number of jobs in flight on one context at any time.
    pub max_in_flight: usize,
    /// Live (not closed) BOs.
    pub live_bos: usize,
    /// BOs currently mapped.
    pub mapped_bos: usize,
    /// Live hardware contexts.
    pub live_hwctxs: usize,
    /// Live syncobjs.
    pub live_syncobjs: usize,
}

#[derive(Default)]
struct Faults {
    calls: u64,
    fail_at_call: BTreeMap<u64, Errno>,
    fail_next_op: Vec<(&'static str, Errno)>,
    /// Calls per op so far (failed ones included).
    op_calls: BTreeMap<&'static str, u64>,
    /// (op, that op's call number, errno).
    fail_at_op_call: Vec<(&'static str, u64, Errno)>,
    execs: u64,
    exec_faults: BTreeMap<u64, JobFault>,
}

struct State {
    config: EmuConfig,
    memory: Memory,
    contexts: BTreeMap<u32, Context>,
    syncobjs: BTreeMap<u32, u32>,
    next_ctx: u32,
    next_syncobj: u32,
    kernels: Vec<(Vec<u8>, KernelFn)>,
    faults: Faults,
    stats: EmuStats,
    log: Vec<(&'static str, u64)>,
    errors: Vec<String>,
}

/// The emulated device. Share it as `Arc<EmuDriver>` and hand a clone to
/// [`super::device::Device::from_driver`]. Each one stands for an open `/dev/accel/accelN`
/// file descriptor: [`EmuDriver::open_devices`] counts the live ones in the process.
pub struct EmuDriver {
    state: Mutex<State>,
}

/// Live [`EmuDriver`]s in this process (the emulated device's open file descriptors).
static OPEN_DEVICES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Drop for EmuDriver {
    fn drop(&mut self) {
        OPEN_DEVICES.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl std::fmt::Debug for EmuDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuDriver").finish_non_exhaustive()
    }
}

impl EmuDriver {
    /// A fresh device with no BOs and no registered kernels.
    pub fn new(config: EmuConfig) -> Self {
        OPEN_DEVICES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self {
            state: Mutex::new(State {
                config,
                memory: Memory::default(),
                contexts: BTreeMap::new(),
                syncobjs: BTreeMap::new(),
                next_ctx: 0,
                next_syncobj: 0,
                kernels: Vec::new(),
                faults: Faults::default(),
                stats: EmuStats::default(),
                log: Vec::new(),
                errors: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic inside a kernel poisons the lock; the state is still consistent per job.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register the array model a CU runs when CONFIG_HWCTX hands it a DEV BO starting with
    /// `pdi`: it gets the bytes the shim DMAs fetched (per column and channel) and fills the
    /// bytes they will store.
    pub fn register_kernel(
        &self,
        pdi: &[u8],
        f: impl Fn(&mut ArrayIo) -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.lock().kernels.push((pdi.to_vec(), Arc::new(f)));
    }

    /// Set the per-command latency.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().config.latency = latency;
    }

    /// Fail the `n`th driver call from now (1 = the next one, any op) with `errno`.
    pub fn fail_nth_call(&self, n: u64, errno: Errno) {
        let mut s = self.lock();
        let at = s.faults.calls + n;
        s.faults.fail_at_call.insert(at, errno);
    }

    /// Emulated devices alive in this process: each stands for an open accel file descriptor,
    /// so a count that does not return to its old value is a leaked descriptor.
    pub fn open_devices() -> usize {
        OPEN_DEVICES.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Fail the `n`th call of `op` from now (1 = its next call) with `errno`. Ops are named as
    /// the driver calls them: `DRM_IOCTL_VERSION`, `GET_INFO`, `CREATE_BO`, `GET_BO_INFO`,
    /// `mmap`, `munmap`, `GEM_CLOSE`, `CREATE_HWCTX`, `CONFIG_HWCTX`, `DESTROY_HWCTX`,
    /// `SYNCOBJ_DESTROY`, `EXEC_CMD`, `SYNCOBJ_TIMELINE_WAIT`.
    pub fn fail_nth(&self, op: &'static str, n: u64, errno: Errno) {
        let mut s = self.lock();
        let at = s.faults.op_calls.get(op).copied().unwrap_or(0) + n;
        s.faults.fail_at_op_call.push((op, at, errno));
    }

    /// Calls of `op` so far, failed ones included.
    pub fn calls_of(&self, op: &str) -> u64 {
        self.lock().faults.op_calls.get(op).copied().unwrap_or(0)
    }

    /// Fail the next call of `op` (e.g. `"EXEC_CMD"`, `"CREATE_BO"`) with `errno`.
    pub fn fail_next(&self, op: &'static str, errno: Errno) {
        self.lock().faults.fail_next_op.push((op, errno));
    }

    /// Make the `n`th EXEC_CMD from now (1 = next) hang: it never completes by itself; the
    /// driver's TDR ends it ([`EmuConfig::tdr`] after it started), or destroying its context.
    pub fn hang_exec(&self, n: u64) {
        let mut s = self.lock();
        let at = s.faults.execs + n;
        s.faults.exec_faults.insert(at, JobFault::Hang);
    }

    /// Make the `n`th EXEC_CMD from now complete in `state` (ERROR, ABORT, …) without running.
    pub fn fail_exec(&self, n: u64, state: CmdState) {
        let mut s = self.lock();
        let at = s.faults.execs + n;
        s.faults.exec_faults.insert(at, JobFault::State(state));
    }

    /// Counters.
    pub fn stats(&self) -> EmuStats {
        let s = self.lock();
        EmuStats {
            live_bos: s.memory.live_count(),
            mapped_bos: s.memory.mapped_count(),
            live_hwctxs: s.contexts.len(),
            live_syncobjs: s.syncobjs.len(),
            ..s.stats.clone()
        }
    }

    /// The configuration.
    pub fn config(&self) -> EmuConfig {
        self.lock().config.clone()
    }

    /// Every successful call so far as (op, main argument), in order.
    pub fn ops(&self) -> Vec<(&'static str, u64)> {
        self.lock().log.clone()
    }

    /// Why commands ended in a non-COMPLETED state, oldest first.
    pub fn command_errors(&self) -> Vec<String> {
        self.lock().errors.clone()
    }

    /// Enter the device: count the call, apply injected faults, retire due jobs (unless
    /// [`EmuConfig::retire_in_waits_only`]).
    fn enter(&self, op: &'static str) -> Result<MutexGuard<'_, State>, Errno> {
        let mut s = self.lock();
        s.faults.calls += 1;
        let n = s.faults.calls;
        let k = {
            let c = s.faults.op_calls.entry(op).or_insert(0);
            *c += 1;
            *c
        };
        if let Some(e) = s.faults.fail_at_call.remove(&n) {
            return Err(e);
        }
        if let Some(i) = s
            .faults
            .fail_at_op_call
            .iter()
            .position(|&(o, at, _)| o == op && at == k)
        {
            return Err(s.faults.fail_at_op_call.remove(i).2);
        }
        if let Some(i) = s.faults.fail_next_op.iter().position(|(o, _)| *o == op) {
            return Err(s.faults.fail_next_op.remove(i).1);
        }
        if !s.config.retire_in_waits_only {
            s.retire(monotonic_ns());
        }
        Ok(s)
    }
}

impl State {
    /// Complete every job whose time has come, in order per context.
    fn retire(&mut self, now: i64) {
        let State {
            config,
            memory,
            contexts,
            stats,
            errors,
            ..
        } = self;
        let profile = config.profile;
        for ctx in contexts.values_mut() {
            while let Some(job) = ctx.pending.front() {
                if job.complete_at > now {
                    break;
                }
                let job = ctx.pending.pop_front().expect("front exists");
                if job.fault == JobFault::Hang {
                    // The scheduler's timeout: the hung job and every job queued behind it.
                    let state = profile.timed_out_state();
                    firmware::finish(memory, job.cmd_bo, state);
                    errors.push(format!(
                        "seq {}: timed out by the driver after {:?}, header state {state:?}",
                        job.seq, config.tdr
                    ));
                    let mut last = job.seq;
                    for other in ctx.pending.drain(..) {
                        let state = profile.cancelled_state();
                        firmware::finish(memory, other.cmd_bo, state);
                        errors.push(format!(
                            "seq {}: cancelled with timed-out seq {}, header state {state:?}",
                            other.seq, job.seq
                        ));
                        last = other.seq;
                        stats.completed += 1;
                    }
                    ctx.signaled = Some(last);
                    stats.completed += 1;
                    break;
                }
                let (state, why) =
                    firmware::execute(memory, ctx, &job, profile, config.force_cmdlist);
                firmware::finish(memory, job.cmd_bo, state);
                if let Some(why) = why {
                    errors.push(format!("seq {}: {why}", job.seq));
                }
                ctx.signaled = Some(job.seq);
                stats.completed += 1;
            }
        }
    }

    fn ctx_mut(&mut self, hwctx: u32) -> Result<&mut Context, Errno> {
        self.contexts.get_mut(&hwctx).ok_or(Errno::INVAL)
    }
}

impl Driver for EmuDriver {
    fn backend(&self) -> Backend {
        Backend::Emulated
    }

    unsafe fn cache_flush(&self, addr: *const u8, len: usize) {
        // Not an ioctl: no fault injection, no call count.
        self.lock().memory.flush(addr as usize, len);
    }

    fn module_param(&self, name: &str) -> Option<String> {
        match name {
            "force_cmdlist" => self
                .lock()
                .config
                .force_cmdlist
                .map(|on| if on { "Y" } else { "N" }.to_string()),
            _ => None,
        }
    }

    fn version(&self) -> Result<DrmVersion, Errno> {
        let s = self.enter("DRM_IOCTL_VERSION")?;
        let (major, minor, patchlevel) = s.config.driver_version;
        Ok(DrmVersion {
            major,
            minor,
            patchlevel,
            name: s.config.driver_name.clone(),
        })
    }

    fn query_aie_version(&self) -> Result<uapi::amdxdna_drm_query_aie_version, Errno> {
        let s = self.enter("GET_INFO")?;
        let (major, minor) = s.config.aie_version;
        Ok(uapi::amdxdna_drm_query_aie_version { major, minor })
    }

    fn query_aie_metadata(&self) -> Result<uapi::amdxdna_drm_query_aie_metadata, Errno> {
        let s = self.enter("GET_INFO")?;
        let c = &s.config;
        let tile = |row_start, row_count| uapi::amdxdna_drm_query_aie_tile_metadata {
            row_count,
            row_start,
            dma_channel_count: 2,
            lock_count: 16,
            event_reg_count: 4,
            pad: [0; 3],
        };
        Ok(uapi::amdxdna_drm_query_aie_metadata {
            col_size: 1 << 25,
            cols: c.cols,
            rows: c.rows,
            version: uapi::amdxdna_drm_query_aie_version {
                major: c.aie_version.0,
                minor: c.aie_version.1,
            },
            core: tile(c.rows - c.core_rows, c.core_rows),
            mem: tile(1, c.rows - c.core_rows - 1),
            shim: tile(0, 1),
        })
    }

    fn query_firmware_version(&self) -> Result<uapi::amdxdna_drm_query_firmware_version, Errno> {
        let s = self.enter("GET_INFO")?;
        let (major, minor, patch, build) = s.config.firmware;
        Ok(uapi::amdxdna_drm_query_firmware_version {
            major,
            minor,
            patch,
            build,
        })
    }

    fn query_clock_metadata(&self) -> Result<uapi::amdxdna_drm_query_clock_metadata, Errno> {
        let s = self.enter("GET_INFO")?;
        let clock = |name: &str, freq_mhz| {
            let mut n = [0u8; 16];
            n[..name.len()].copy_from_slice(name.as_bytes());
            uapi::amdxdna_drm_query_clock {
                name: n,
                freq_mhz,
                pad: 0,
            }
        };
        Ok(uapi::amdxdna_drm_query_clock_metadata {
            mp_npu_clock: clock("MP-NPU Clock", 400),
            h_clock: clock("H Clock", s.config.h_clock_mhz),
        })
    }

    fn create_bo(&self, bo_type: BoType, size: u64) -> Result<u32, Errno> {
        let mut s = self.enter("CREATE_BO")?;
        let errno = s.config.profile.unmapped_heap_errno();
        let h = s.memory.create(bo_type, size, errno)?;
        s.log.push(("CREATE_BO", h as u64));
        Ok(h)
    }

    fn bo_info(&self, handle: u32) -> Result<BoInfo, Errno> {
        self.enter("GET_BO_INFO")?.memory.info(handle)
    }

    fn mmap(&self, map_offset: u64, len: usize, align: usize) -> Result<MappedRange, Errno> {
        let mut s = self.enter("mmap")?;
        let r = s.memory.mmap(map_offset, len, align)?;
        s.log.push(("mmap", r.addr() as u64));
        Ok(r)
    }

    fn munmap(&self, range: &MappedRange) -> Result<(), Errno> {
        let mut s = self.enter("munmap")?;
        let addr = range.addr() as u64;
        s.memory.munmap(range)?;
        s.log.push(("munmap", addr));
        Ok(())
    }

    fn gem_close(&self, handle: u32) -> Result<(), Errno> {
        let mut s = self.enter("GEM_CLOSE")?;
        s.memory.close(handle)?;
        s.log.push(("GEM_CLOSE", handle as u64));
        Ok(())
    }

    fn create_hwctx(
        &self,
        qos: &[u8; uapi::QOS_BUFFER_SIZE],
        max_opc: u32,
        num_tiles: u32,
    ) -> Result<(u32, u32), Errno> {
        let _ = (qos, max_opc); // stored but unused by aie2
        let mut s = self.enter("CREATE_HWCTX")?;
        if s.memory.heap.is_none() {
            return Err(Errno::NOENT); // "The client dev heap object not exist"
        }
        if s.memory.heap_addr().is_none() {
            return Err(Errno::INVAL); // aie2_map_host_buf needs the heap's mapping
        }
        let core_rows = s.config.core_rows as u32;
        let cols = num_tiles / core_rows;
        if !num_tiles.is_multiple_of(core_rows) || cols == 0 || cols > s.config.cols as u32 {
            return Err(Errno::INVAL);
        }
        s.next_ctx += 1;
        let ctx = s.next_ctx;
        s.contexts.insert(ctx, Context::new(cols as u8));
        let sync = if s.config.syncobj_zero {
            0
        } else {
            s.next_syncobj += 1;
            let sync = s.next_syncobj;
            s.syncobjs.insert(sync, ctx);
            sync
        };
        s.log.push(("CREATE_HWCTX", ctx as u64));
        Ok((ctx, sync))
    }

    fn config_cu(&self, hwctx: u32, cus: &[uapi::amdxdna_cu_config]) -> Result<(), Errno> {
        let mut s = self.enter("CONFIG_HWCTX")?;
        if cus.is_empty() || cus.len() > 32 || cus.iter().any(|c| c.pad != [0; 3]) {
            return Err(Errno::INVAL);
        }
        if s.ctx_mut(hwctx)?.cus.is_some() {
            return Err(Errno::INVAL); // "Not support re-config CU"
        }
        if s.memory.heap_addr().is_none_or(|a| a % HEAP_ALIGN != 0) {
            return Err(Errno::INVAL); // firmware rejects a heap that is not 64 MiB aligned
        }
        let mut kernels = Vec::with_capacity(cus.len());
        for cu in cus {
            if s.memory.bo_type(cu.cu_bo)? != BoType::Dev {
                return Err(Errno::INVAL); // "Invalid BO type"
            }
            let addr = s.memory.info(cu.cu_bo)?.xdna_addr;
            let (p, len, _) = s.memory.resolve(addr).ok_or(Errno::INVAL)?;
            // SAFETY: `resolve` returned `len` live bytes of the PDI BO; read-only here.
            let image = unsafe { std::slice::from_raw_parts(p, len) };
            let k = s
                .kernels
                .iter()
                .find(|(pdi, _)| image.starts_with(pdi))
                .map(|(_, f)| f.clone());
            kernels.push(k);
        }
        s.ctx_mut(hwctx)?.cus = Some(kernels);
        s.log.push(("CONFIG_HWCTX", hwctx as u64));
        Ok(())
    }

    fn destroy_hwctx(&self, hwctx: u32) -> Result<(), Errno> {
        let mut s = self.enter("DESTROY_HWCTX")?;
        // The driver waits for outstanding jobs: finish the ones that will complete, abort hung ones.
        let due = s
            .ctx_mut(hwctx)?
            .pending
            .iter()
            .filter(|j| j.fault != JobFault::Hang)
            .map(|j| j.complete_at)
            .max();
        if let Some(t) = due {
            drop(s);
            let wait = t.saturating_sub(monotonic_ns());
            if wait > 0 {
                std::thread::sleep(Duration::from_nanos(wait as u64).min(MAX_SLEEP));
            }
            s = self.lock();
            s.retire(monotonic_ns());
        }
        let mut ctx = s.contexts.remove(&hwctx).ok_or(Errno::INVAL)?;
        let state = s.config.profile.cancelled_state();
        for job in ctx.pending.drain(..) {
            firmware::finish(&s.memory, job.cmd_bo, state);
            s.errors.push(format!(
                "seq {}: aborted by DESTROY_HWCTX, header state {state:?}",
                job.seq
            ));
        }
        s.log.push(("DESTROY_HWCTX", hwctx as u64));
        Ok(())
    }

    fn syncobj_destroy(&self, syncobj: u32) -> Result<(), Errno> {
        let mut s = self.enter("SYNCOBJ_DESTROY")?;
        s.syncobjs.remove(&syncobj).ok_or(Errno::NOENT)?;
        s.log.push(("SYNCOBJ_DESTROY", syncobj as u64));
        Ok(())
    }

    fn exec_cmd(&self, hwctx: u32, cmd_bo: u32, arg_bos: &[u32]) -> Result<u64, Errno> {
        let mut s = self.enter("EXEC_CMD")?;
        if arg_bos.len() > 4095 {
            return Err(Errno::INVAL);
        }
        if s.memory.bo_type(cmd_bo)? != BoType::Cmd {
            return Err(Errno::INVAL);
        }
        for (i, &h) in arg_bos.iter().enumerate() {
            s.memory.bo_type(h)?; // ENOENT for a stale handle
            if arg_bos[..i].contains(&h) {
                // drm_gem_lock_reservations locks each BO once per acquire context; locking
                // the same ww_mutex twice gives EALREADY (inferred from ww_mutex semantics).
                return Err(Errno::ALREADY);
            }
        }
        if s.ctx_mut(hwctx)?.cus.is_none() {
            return Err(Errno::INVAL);
        }
        // At most MAX_IN_FLIGHT: a further submission waits for the oldest (EBUSY if it is hung).
        loop {
            let ctx = s.ctx_mut(hwctx)?;
            if ctx.pending.len() < MAX_IN_FLIGHT {
                break;
            }
            // Blocks (down_interruptible(&job_sem)) until the oldest ends: completes, or the
            // TDR ends it if hung.
            let t = ctx.pending.front().map_or(0, |j| j.complete_at);
            drop(s);
            let wait = t.saturating_sub(monotonic_ns());
            if wait > 0 {
                std::thread::sleep(Duration::from_nanos(wait as u64));
            }
            s = self.lock();
            let now = monotonic_ns();
            let through = if s.config.retire_in_waits_only {
                now.min(t)
            } else {
                now
            };
            s.retire(through);
        }
        s.faults.execs += 1;
        let n = s.faults.execs;
        let fault = s.faults.exec_faults.remove(&n).unwrap_or(JobFault::None);
        let latency = i64::try_from(s.config.latency.as_nanos()).unwrap_or(i64::MAX);
        let tdr = i64::try_from(s.config.tdr.as_nanos()).unwrap_or(i64::MAX);
        let now = monotonic_ns();
        let ctx = s.ctx_mut(hwctx)?;
        let start = ctx.pending.back().map_or(now, |j| j.complete_at).max(now);
        let complete_at = if fault == JobFault::Hang {
            start.saturating_add(tdr)
        } else {
            start.saturating_add(latency)
        };
        let seq = ctx.next_seq;
        ctx.next_seq += 1;
        ctx.pending.push_back(Job {
            seq,
            cmd_bo,
            arg_bos: arg_bos.to_vec(),
            complete_at,
            fault,
        });
        let in_flight = ctx.pending.len();
        s.stats.submitted += 1;
        s.stats.max_in_flight = s.stats.max_in_flight.max(in_flight);
        s.log.push(("EXEC_CMD", seq));
        // A zero-latency job is due now; retire it so a header poll sees it done.
        if !s.config.retire_in_waits_only {
            s.retire(monotonic_ns());
        }
        Ok(seq)
    }

    fn timeline_wait(&self, syncobj: u32, point: u64, deadline_ns: i64) -> Result<(), Errno> {
        let mut s = self.enter("SYNCOBJ_TIMELINE_WAIT")?;
        // drm_syncobj_array_find: an unknown handle is ENOENT.
        let hwctx = *s.syncobjs.get(&syncobj).ok_or(Errno::NOENT)?;
        loop {
            let ctx = s.contexts.get(&hwctx).ok_or(Errno::INVAL)?;
            // Point 0 waits for the latest submitted job (dma_fence_chain_find_seqno quirk).
            let target = if point == 0 {
                ctx.next_seq.checked_sub(1)
            } else {
                Some(point)
            };
            let done = match (target, ctx.signaled) {
                (Some(t), Some(sig)) => sig >= t,
                _ => false,
            };
            if done {
                return Ok(());
            }
            // When does the target complete? (WAIT_FOR_SUBMIT: an unsubmitted point waits.)
            let due = target
                .and_then(|t| ctx.pending.iter().find(|j| j.seq == t))
                .map(|j| j.complete_at);
            let now = monotonic_ns();
            if now >= deadline_ns {
                return Err(Errno::TIME);
            }
            let until = due.unwrap_or(i64::MAX).min(deadline_ns);
            drop(s);
            let nap = Duration::from_nanos(until.saturating_sub(now).max(0) as u64);
            if due.is_none() && nap > MAX_SLEEP {
                std::thread::sleep(MAX_SLEEP);
                return Err(Errno::TIME);
            }
            std::thread::sleep(nap);
            s = self.lock();
            let now = monotonic_ns();
            // Waiting retires the target and what precedes it; the jobs after it too when
            // they are due, unless only waits decide what is done.
            let through = match due {
                Some(t) if s.config.retire_in_waits_only => now.min(t),
                _ => now,
            };
            s.retire(through);
        }
    }
}

#[cfg(test)]
mod tests;
