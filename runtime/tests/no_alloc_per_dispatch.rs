//! The host side of a dispatch allocates nothing: flushes, packet, EXEC_CMD, wait, state check,
//! record, and (debug builds, which tests are) the instruction-stream check. A counting global allocator (this test binary only) counts every allocation made
//! outside the driver; calls into the (emulated) driver are excluded by a thread-local flag,
//! since the real driver is the kernel and allocates nothing in our process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use amanuensis_runtime::dispatch::Dispatcher;
use amanuensis_runtime::dispatch_bench::{copy_array, emulated_program, EMU_COPY_PDI};
use amanuensis_runtime::npu::arena::{ArenaPlan, BoArena};
use amanuensis_runtime::npu::device::Device;
use amanuensis_runtime::npu::driver::{Backend, BoInfo, BoType, Driver};
use amanuensis_runtime::npu::emu::{EmuConfig, EmuDriver};
use amanuensis_runtime::npu::error::Errno;
use amanuensis_runtime::npu::heap::Heap;
use amanuensis_runtime::npu::hwctx::HwContext;
use amanuensis_runtime::npu::ioctl::DrmVersion;
use amanuensis_runtime::npu::mapping::MappedRange;
use amanuensis_runtime::npu::program::{Program, RegmapLayout};
use amanuensis_runtime::npu::ring::CommandRing;
use amanuensis_runtime::npu::uapi;
use amanuensis_runtime::npu::xclbin::{Xclbin, MLIR_AIE_DPU_KERNEL_ID};

struct Counting;

thread_local! {
    /// Set while the current thread is inside a driver call.
    static IN_DRIVER: Cell<bool> = const { Cell::new(false) };
    /// Allocations made by the current thread outside driver calls (other test-harness threads
    /// do not count).
    static HOST_ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count_host_alloc() {
    let _ = IN_DRIVER.try_with(|inside| {
        if !inside.get() {
            let _ = HOST_ALLOCS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

fn host_allocs() -> usize {
    HOST_ALLOCS.with(|n| n.get())
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_host_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_host_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Forwards to the emulator with the "inside the driver" flag set.
struct Fenced(Arc<EmuDriver>);

fn inside<T>(f: impl FnOnce() -> T) -> T {
    IN_DRIVER.with(|c| c.set(true));
    let r = f();
    IN_DRIVER.with(|c| c.set(false));
    r
}

impl Driver for Fenced {
    fn backend(&self) -> Backend {
        self.0.backend()
    }
    fn version(&self) -> Result<DrmVersion, Errno> {
        inside(|| self.0.version())
    }
    fn query_aie_version(&self) -> Result<uapi::amdxdna_drm_query_aie_version, Errno> {
        inside(|| self.0.query_aie_version())
    }
    fn query_aie_metadata(&self) -> Result<uapi::amdxdna_drm_query_aie_metadata, Errno> {
        inside(|| self.0.query_aie_metadata())
    }
    fn query_firmware_version(&self) -> Result<uapi::amdxdna_drm_query_firmware_version, Errno> {
        inside(|| self.0.query_firmware_version())
    }
    fn query_clock_metadata(&self) -> Result<uapi::amdxdna_drm_query_clock_metadata, Errno> {
        inside(|| self.0.query_clock_metadata())
    }
    fn create_bo(&self, bo_type: BoType, size: u64) -> Result<u32, Errno> {
        inside(|| self.0.create_bo(bo_type, size))
    }
    fn bo_info(&self, handle: u32) -> Result<BoInfo, Errno> {
        inside(|| self.0.bo_info(handle))
    }
    fn mmap(&self, map_offset: u64, len: usize, align: usize) -> Result<MappedRange, Errno> {
        inside(|| self.0.mmap(map_offset, len, align))
    }
    fn munmap(&self, range: &MappedRange) -> Result<(), Errno> {
        inside(|| self.0.munmap(range))
    }
    fn gem_close(&self, handle: u32) -> Result<(), Errno> {
        inside(|| self.0.gem_close(handle))
    }
    fn create_hwctx(
        &self,
        qos: &[u8; 32],
        max_opc: u32,
        num_tiles: u32,
    ) -> Result<(u32, u32), Errno> {
        inside(|| self.0.create_hwctx(qos, max_opc, num_tiles))
    }
    fn config_cu(&self, hwctx: u32, cus: &[uapi::amdxdna_cu_config]) -> Result<(), Errno> {
        inside(|| self.0.config_cu(hwctx, cus))
    }
    fn destroy_hwctx(&self, hwctx: u32) -> Result<(), Errno> {
        inside(|| self.0.destroy_hwctx(hwctx))
    }
    fn syncobj_destroy(&self, syncobj: u32) -> Result<(), Errno> {
        inside(|| self.0.syncobj_destroy(syncobj))
    }
    fn exec_cmd(&self, hwctx: u32, cmd_bo: u32, arg_bos: &[u32]) -> Result<u64, Errno> {
        inside(|| self.0.exec_cmd(hwctx, cmd_bo, arg_bos))
    }
    fn timeline_wait(&self, syncobj: u32, point: u64, deadline_ns: i64) -> Result<(), Errno> {
        inside(|| self.0.timeline_wait(syncobj, point, deadline_ns))
    }
    unsafe fn cache_flush(&self, addr: *const u8, len: usize) {
        // SAFETY: forwarded with the caller's guarantee.
        inside(|| unsafe { self.0.cache_flush(addr, len) })
    }
    fn module_param(&self, name: &str) -> Option<String> {
        inside(|| self.0.module_param(name))
    }
}

#[test]
fn a_dispatch_allocates_nothing_on_the_host() {
    let emu = Arc::new(EmuDriver::new(EmuConfig::default()));
    emu.register_kernel(EMU_COPY_PDI, copy_array);
    let device = Device::from_driver(Arc::new(Fenced(emu.clone()))).unwrap();
    let heap = Heap::create(&device).unwrap();
    let (xclbin, instr_words) = emulated_program(512);
    let ctx = HwContext::load(
        &device,
        &heap,
        &Xclbin::parse(&xclbin).unwrap(),
        MLIR_AIE_DPU_KERNEL_ID,
    )
    .unwrap();
    let mut plan = ArenaPlan::new();
    let instr = plan.instructions("instr", instr_words.len());
    let input = plan.buffer("in", 512);
    let output = plan.buffer("out", 512);
    let mut arena = BoArena::allocate(&device, &heap, &plan).unwrap();
    arena.write_instructions(instr, &instr_words).unwrap();
    arena.bytes_mut(input).fill(7);
    let program = Program::new(
        &RegmapLayout::mlir_aie(2),
        &arena,
        instr,
        &[input, output],
        Some(1),
    )
    .unwrap();
    let ring = CommandRing::new(&device, Arc::new(ctx), 1, Duration::from_secs(5)).unwrap();
    let mut d = Dispatcher::new(ring, 64);
    d.dispatch(&arena, &program, &[input], &[output]).unwrap(); // first use of the slot
                                                                // The counter does count host allocations.
    let probe = host_allocs();
    let v = std::hint::black_box(vec![1u8; 10]);
    assert_eq!(host_allocs(), probe + 1);
    drop(v);
    let before = host_allocs();
    for _ in 0..200 {
        d.dispatch(&arena, &program, &[input], &[output]).unwrap();
    }
    let host = host_allocs() - before;
    assert_eq!(host, 0, "{host} host allocations in 200 dispatches");
    assert_eq!(emu.stats().completed, 201);
    assert!(arena.bytes(output).iter().all(|&b| b == 7));
}

/// A linear through the NPU backend (quantize into A, flushes, regmap, EXEC_CMD, wait,
/// invalidate, dequantize, record) allocates nothing on the host once the stream's workspace
/// exists: 300 rows = 3 tiles in one chain per call, on the fixture GEMM program K512×N2048.
#[test]
fn an_npu_backend_linear_allocates_nothing_on_the_host() {
    use amanuensis_runtime::backend::{Backend as _, Epilogue};
    use amanuensis_runtime::npu_backend::{
        emulated_config, register_gemm_models, GemmProgramFiles, NpuBackend,
    };
    use amanuensis_runtime::q8::QuantMatrix;
    use amanuensis_runtime::stage::{At, Extent, Op, Program as Stages, Residency, StageArgs};

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/npu-fixtures/1bit-monster");
    let programs = GemmProgramFiles::find_in(&dir, &[(512, 2048)]).unwrap();
    let emu = Arc::new(EmuDriver::new(emulated_config()));
    register_gemm_models(&emu, &programs).unwrap();
    let device = Device::from_driver(Arc::new(Fenced(emu.clone()))).unwrap();
    let npu = NpuBackend::new(device, &programs, 1).unwrap();
    let (n, k, rows) = (2048, 512, 300);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
        .collect();
    let mut p = Stages::new();
    let m = p.add_matrix(npu.matrix_q8(QuantMatrix::quantize(&w, n, k)).unwrap());
    let bias = p.add_vector(vec![0.25; n]);
    let x = p.add_buffer("x", rows * k, Residency::Resident);
    let out = p.add_buffer("out", rows * n, Residency::Resident);
    let stage = p.add_stage(
        "linear",
        vec![Op::Linear {
            x: At::start(x),
            out: At::start(out),
            rows: Extent::rows(1),
            max_rows: rows,
            w: m,
            bias: Some(bias),
            epilogue: Epilogue::Gelu,
        }],
    );
    let mut ws = npu.workspace(&p, 1).unwrap();
    let input: Vec<f32> = (0..rows * k).map(|i| (i % 13) as f32 - 6.0).collect();
    npu.write(&mut ws, x, 0, &input).unwrap();
    let args = StageArgs {
        rows,
        ..Default::default()
    };
    npu.run(&p, stage, &args, &mut ws).unwrap(); // first use of the ring slot
    let before = host_allocs();
    for _ in 0..3 {
        npu.run(&p, stage, &args, &mut ws).unwrap();
    }
    let host = host_allocs() - before;
    assert_eq!(host, 0, "{host} host allocations in 3 device linears");
    assert_eq!(npu.stats().submissions, 4);
    assert!(
        emu.command_errors().is_empty(),
        "{:?}",
        emu.command_errors()
    );
}

#[test]
fn a_linear_on_our_gemm_design_allocates_nothing_on_the_host() {
    use amanuensis_runtime::backend::{Backend as _, Epilogue};
    use amanuensis_runtime::npu_backend::{emulated_config, NpuBackend};
    use amanuensis_runtime::q8::QuantMatrix;
    use amanuensis_runtime::stage::{At, Extent, Op, Program as Stages, Residency, StageArgs};

    let emu = Arc::new(EmuDriver::new(emulated_config()));
    let device = Device::from_driver(Arc::new(Fenced(emu.clone()))).unwrap();
    let npu = NpuBackend::new(device, &[], 1)
        .unwrap()
        .with_emulated_designs(emu.clone());
    let (n, k, max_rows) = (1536, 384, 300);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
        .collect();
    let mut p = Stages::new();
    let m = p.add_matrix(npu.matrix_q8(QuantMatrix::quantize(&w, n, k)).unwrap());
    let bias = p.add_vector(vec![0.25; n]);
    let x = p.add_buffer("x", max_rows * k, Residency::Resident);
    let out = p.add_buffer("out", max_rows * n, Residency::Resident);
    let stage = p.add_stage(
        "linear",
        vec![Op::Linear {
            x: At::start(x),
            out: At::start(out),
            rows: Extent::rows(1),
            max_rows,
            w: m,
            bias: Some(bias),
            epilogue: Epilogue::Gelu,
        }],
    );
    let mut ws = npu.workspace(&p, 1).unwrap();
    let input: Vec<f32> = (0..max_rows * k).map(|i| (i % 13) as f32 - 6.0).collect();
    npu.write(&mut ws, x, 0, &input).unwrap();
    // Encoder-sized rows (the row mapping) and a decoder step (the decoder mapping).
    for rows in [max_rows, 1] {
        let args = StageArgs {
            rows,
            ..Default::default()
        };
        npu.run(&p, stage, &args, &mut ws).unwrap(); // first use of the ring slot
        let before = host_allocs();
        for _ in 0..3 {
            npu.run(&p, stage, &args, &mut ws).unwrap();
        }
        let host = host_allocs() - before;
        assert_eq!(
            host, 0,
            "{host} host allocations in 3 device linears of {rows} rows"
        );
    }
    assert_eq!(npu.stats().submissions, 8);
    assert!(
        emu.command_errors().is_empty(),
        "{:?}",
        emu.command_errors()
    );
}

/// A stage whose q/k/v projections go as one chain (three CUs' worth of sub-commands, one
/// activation image), then a host op, then one more linear: the chain's packets, sub-command
/// BOs, A/C regions and records are all preallocated with the stream's workspace.
#[test]
fn a_chained_stage_allocates_nothing_on_the_host() {
    use amanuensis_runtime::backend::{Backend as _, Epilogue};
    use amanuensis_runtime::npu_backend::{emulated_config, NpuBackend};
    use amanuensis_runtime::q8::QuantMatrix;
    use amanuensis_runtime::stage::{At, Extent, Op, Program as Stages, Residency, StageArgs};

    let emu = Arc::new(EmuDriver::new(emulated_config()));
    let device = Device::from_driver(Arc::new(Fenced(emu.clone()))).unwrap();
    let npu = NpuBackend::new(device, &[], 1)
        .unwrap()
        .with_emulated_designs(emu.clone());
    let (d, max_rows) = (384, 300);
    let mut p = Stages::new();
    let ms: Vec<_> = (0..4)
        .map(|j| {
            let w: Vec<f32> = (0..d * d)
                .map(|i| ((i * (37 + j) % 101) as f32 - 50.0) / 500.0)
                .collect();
            p.add_matrix(npu.matrix_q8(QuantMatrix::quantize(&w, d, d)).unwrap())
        })
        .collect();
    let gamma = p.add_vector(vec![1.0; d]);
    let beta = p.add_vector(vec![0.0; d]);
    let bufs: Vec<_> = ["x", "q", "k", "v", "a"]
        .into_iter()
        .map(|name| p.add_buffer(name, max_rows * d, Residency::Resident))
        .collect();
    let lin = |x: usize, out: usize, w: usize, epilogue| Op::Linear {
        x: At::start(bufs[x]),
        out: At::start(bufs[out]),
        rows: Extent::rows(1),
        max_rows,
        w: ms[w],
        bias: None,
        epilogue,
    };
    let stage = p.add_stage(
        "attention-like",
        vec![
            lin(0, 1, 0, Epilogue::Store),
            lin(0, 2, 1, Epilogue::Store),
            lin(0, 3, 2, Epilogue::Store),
            Op::LayerNorm {
                x: At::start(bufs[1]),
                out: At::start(bufs[4]),
                rows: Extent::rows(1),
                gamma,
                beta,
                eps: 1e-5,
            },
            lin(4, 0, 3, Epilogue::AddInto),
        ],
    );
    let mut ws = npu.workspace(&p, 1).unwrap();
    // Declared once the workspace made the designs (their weight images know the epilogues).
    assert_eq!(npu.submissions(&p, stage), 2);
    let input: Vec<f32> = (0..max_rows * d).map(|i| (i % 13) as f32 - 6.0).collect();
    npu.write(&mut ws, bufs[0], 0, &input).unwrap();
    for rows in [max_rows, 1] {
        let args = StageArgs {
            rows,
            ..Default::default()
        };
        npu.run(&p, stage, &args, &mut ws).unwrap(); // first use of the ring slots
        let before = host_allocs();
        for _ in 0..3 {
            npu.run(&p, stage, &args, &mut ws).unwrap();
        }
        let host = host_allocs() - before;
        assert_eq!(
            host, 0,
            "{host} host allocations in 3 chained stages of {rows} rows"
        );
    }
    let s = npu.stats();
    assert_eq!((s.submissions, s.device_linears), (2 * 4 * 2, 2 * 4 * 4));
    assert!(
        emu.command_errors().is_empty(),
        "{:?}",
        emu.command_errors()
    );
}

/// A stage with norms on the device: a norm and the two linears reading its image, then a
/// linear reading the first one's result through the device quantize and adding into the
/// norm's input, the next norm taking its result as the residual and a linear reading that
/// norm's image (one chain); a last norm on the host. The norms' x regions, parameter objects,
/// streams, the quantize's and the image regions are all made with the stream's workspace.
#[test]
fn a_stage_with_device_norms_allocates_nothing_on_the_host() {
    use amanuensis_runtime::backend::{Backend as _, Epilogue};
    use amanuensis_runtime::npu_backend::{emulated_config, NpuBackend};
    use amanuensis_runtime::q8::QuantMatrix;
    use amanuensis_runtime::stage::{At, Extent, Op, Program as Stages, Residency, StageArgs};

    let emu = Arc::new(EmuDriver::new(emulated_config()));
    let device = Device::from_driver(Arc::new(Fenced(emu.clone()))).unwrap();
    let npu = NpuBackend::new(device, &[], 1)
        .unwrap()
        .with_emulated_designs(emu.clone());
    let (d, max_rows) = (512, 300);
    let mut p = Stages::new();
    let ms: Vec<_> = (0..4)
        .map(|j| {
            let w: Vec<f32> = (0..d * d)
                .map(|i| ((i * (37 + j) % 101) as f32 - 50.0) / 500.0)
                .collect();
            p.add_matrix(npu.matrix_q8(QuantMatrix::quantize(&w, d, d)).unwrap())
        })
        .collect();
    let gamma = p.add_vector(vec![1.0; d]);
    let beta = p.add_vector(vec![0.0; d]);
    let bufs: Vec<_> = ["x", "h", "q", "k", "v"]
        .into_iter()
        .map(|name| p.add_buffer(name, max_rows * d, Residency::Resident))
        .collect();
    let lin = |x: usize, out: usize, w: usize, epilogue| Op::Linear {
        x: At::start(bufs[x]),
        out: At::start(bufs[out]),
        rows: Extent::rows(1),
        max_rows,
        w: ms[w],
        bias: None,
        epilogue,
    };
    let norm = |x: usize| Op::LayerNorm {
        x: At::start(bufs[x]),
        out: At::start(bufs[1]),
        rows: Extent::rows(1),
        gamma,
        beta,
        eps: 1e-5,
    };
    let stage = p.add_stage(
        "norm-chains",
        vec![
            norm(0),
            lin(1, 2, 0, Epilogue::Store),
            lin(1, 3, 1, Epilogue::Store),
            lin(2, 0, 2, Epilogue::AddInto),
            norm(0),
            lin(1, 4, 3, Epilogue::Store),
            norm(3),
        ],
    );
    let mut ws = npu.workspace(&p, 1).unwrap();
    assert_eq!(npu.submissions(&p, stage), 1);
    let input: Vec<f32> = (0..max_rows * d).map(|i| (i % 13) as f32 - 6.0).collect();
    for rows in [max_rows, 1] {
        let args = StageArgs {
            rows,
            ..Default::default()
        };
        npu.write(&mut ws, bufs[0], 0, &input).unwrap();
        npu.run(&p, stage, &args, &mut ws).unwrap(); // first use of the ring slots
        let before = host_allocs();
        for _ in 0..3 {
            npu.write(&mut ws, bufs[0], 0, &input).unwrap();
            npu.run(&p, stage, &args, &mut ws).unwrap();
        }
        let host = host_allocs() - before;
        assert_eq!(
            host, 0,
            "{host} host allocations in 3 stages with device norms of {rows} rows"
        );
    }
    let s = npu.stats();
    assert_eq!((s.submissions, s.device_linears), (2 * 4, 2 * 4 * 4));
    assert!(
        emu.command_errors().is_empty(),
        "{:?}",
        emu.command_errors()
    );
}

/// The encoder's MLP in chunks (fixed rows): each chunk's fc1 and, through the device
/// quantize, its fc2 adding into its rows of x; the next norm takes the chunks' results
/// together as its residual (each at its rows of one C region) and a linear reads its image:
/// one chain, whose residual region is laid out per call without allocating.
#[test]
fn a_residual_of_chunks_allocates_nothing_on_the_host() {
    use amanuensis_runtime::backend::{Backend as _, Epilogue};
    use amanuensis_runtime::npu_backend::{emulated_config, NpuBackend};
    use amanuensis_runtime::q8::QuantMatrix;
    use amanuensis_runtime::stage::{At, Extent, Op, Program as Stages, Residency, StageArgs};

    let emu = Arc::new(EmuDriver::new(emulated_config()));
    let device = Device::from_driver(Arc::new(Fenced(emu.clone()))).unwrap();
    let npu = NpuBackend::new(device, &[], 1)
        .unwrap()
        .with_emulated_designs(emu.clone());
    let (d, t, chunk) = (512, 96, 48);
    let mut p = Stages::new();
    let ms: Vec<_> = (0..3)
        .map(|j| {
            let w: Vec<f32> = (0..d * d)
                .map(|i| ((i * (37 + j) % 101) as f32 - 50.0) / 500.0)
                .collect();
            p.add_matrix(npu.matrix_q8(QuantMatrix::quantize(&w, d, d)).unwrap())
        })
        .collect();
    let gamma = p.add_vector(vec![1.0; d]);
    let beta = p.add_vector(vec![0.0; d]);
    let [x, h, hidden, q]: [_; 4] =
        ["x", "h", "hidden", "q"].map(|name| p.add_buffer(name, t * d, Residency::Resident));
    let lin = |x: At, out: At, rows: usize, w: usize, epilogue| Op::Linear {
        x,
        out,
        rows: Extent::fixed(rows),
        max_rows: rows,
        w: ms[w],
        bias: None,
        epilogue,
    };
    let norm = |x| Op::LayerNorm {
        x: At::start(x),
        out: At::start(h),
        rows: Extent::fixed(t),
        gamma,
        beta,
        eps: 1e-5,
    };
    let mut ops = vec![norm(x)];
    for r0 in (0..t).step_by(chunk) {
        let at = |b| At::fixed(b, r0 * d);
        ops.push(lin(at(h), At::start(hidden), chunk, 0, Epilogue::Gelu));
        ops.push(lin(At::start(hidden), at(x), chunk, 1, Epilogue::AddInto));
    }
    ops.extend([
        norm(x),
        lin(At::start(h), At::start(q), t, 2, Epilogue::Store),
        norm(q),
    ]);
    let stage = p.add_stage("chunk-residual", ops);
    let mut ws = npu.workspace(&p, 1).unwrap();
    assert_eq!(npu.submissions(&p, stage), 1);
    let input: Vec<f32> = (0..t * d).map(|i| (i % 13) as f32 - 6.0).collect();
    let args = StageArgs::default();
    npu.write(&mut ws, x, 0, &input).unwrap();
    npu.run(&p, stage, &args, &mut ws).unwrap(); // first use of the ring slots
    let before = host_allocs();
    for _ in 0..3 {
        npu.write(&mut ws, x, 0, &input).unwrap();
        npu.run(&p, stage, &args, &mut ws).unwrap();
    }
    let host = host_allocs() - before;
    assert_eq!(
        host, 0,
        "{host} host allocations in 3 stages with a residual of chunks"
    );
    let s = npu.stats();
    assert_eq!((s.submissions, s.device_linears), (4, 4 * 5));
    assert!(
        emu.command_errors().is_empty(),
        "{:?}",
        emu.command_errors()
    );
}

#[test]
fn pipelined_dispatches_allocate_nothing_at_every_depth() {
    for depth in 1..=4 {
        let emu = Arc::new(EmuDriver::new(EmuConfig::default()));
        emu.register_kernel(EMU_COPY_PDI, copy_array);
        // Commands take 20 us, so up to `depth` stay queued behind the running one.
        emu.set_latency(Duration::from_micros(20));
        let device = Device::from_driver(Arc::new(Fenced(emu.clone()))).unwrap();
        let heap = Heap::create(&device).unwrap();
        let (xclbin, instr_words) = emulated_program(512);
        let ctx = HwContext::load(
            &device,
            &heap,
            &Xclbin::parse(&xclbin).unwrap(),
            MLIR_AIE_DPU_KERNEL_ID,
        )
        .unwrap();
        let mut plan = ArenaPlan::new();
        let instr = plan.instructions("instr", instr_words.len());
        let input = plan.buffer("in", 512);
        let output = plan.buffer("out", 512);
        let mut arena = BoArena::allocate(&device, &heap, &plan).unwrap();
        arena.write_instructions(instr, &instr_words).unwrap();
        arena.bytes_mut(input).fill(9);
        let program = Program::new(
            &RegmapLayout::mlir_aie(2),
            &arena,
            instr,
            &[input, output],
            Some(1),
        )
        .unwrap();
        let ring = CommandRing::new(&device, Arc::new(ctx), depth, Duration::from_secs(5)).unwrap();
        let mut d = Dispatcher::new(ring, 64);
        // First use of every slot.
        for _ in 0..depth {
            d.submit(&arena, &program, &[input], &[output]).unwrap();
        }
        d.complete_all(&arena, &[output]).unwrap();
        let before = host_allocs();
        for _ in 0..200 {
            d.submit(&arena, &program, &[input], &[output]).unwrap();
        }
        d.complete_all(&arena, &[output]).unwrap();
        let host = host_allocs() - before;
        assert_eq!(
            host, 0,
            "depth {depth}: {host} host allocations in 200 dispatches"
        );
        assert_eq!(emu.stats().max_in_flight, depth);
        assert!(arena.bytes(output).iter().all(|&b| b == 9));
    }
}

/// Attention on the device (the attention design on the emulated device): a self-attention
/// call (queries, keys and values quantized into the session's images), the preparation of
/// cross-attention keys/values into their resident image, and attention over them for a
/// decoder step's rows: the images, instruction streams and ring all exist with the workspace.
#[test]
fn device_attention_allocates_nothing_on_the_host() {
    use amanuensis_runtime::backend::Backend as _;
    use amanuensis_runtime::npu_backend::{emulated_config, NpuBackend};
    use amanuensis_runtime::stage::{
        At, AttentionDims, Extent, KeyValuesSpec, Op, Program as Stages, Residency, StageArgs,
        StageId,
    };

    let emu = Arc::new(EmuDriver::new(emulated_config()));
    let device = Device::from_driver(Arc::new(Fenced(emu.clone()))).unwrap();
    let npu = NpuBackend::new(device, &[], 1)
        .unwrap()
        .with_emulated_designs(emu.clone())
        .with_emulated_attention()
        .unwrap();
    let (heads, t, max_q) = (6, 150, 8);
    let w = heads * 64;
    let mut p = Stages::new();
    let b: Vec<_> = ["x", "k", "v", "out"]
        .into_iter()
        .map(|name| p.add_buffer(name, t * w, Residency::Resident))
        .collect();
    let kv = p.add_key_values(KeyValuesSpec {
        heads,
        head_dim: 64,
        capacity: t,
    });
    let dims = |q_len, max_q_len| AttentionDims {
        heads,
        head_dim: 64,
        q_len,
        kv_len: Extent::fixed(t),
        causal_offset: None,
        max_q_len,
        max_kv_len: t,
    };
    p.add_stage(
        "self",
        vec![Op::Attention {
            q: At::start(b[0]),
            k: At::start(b[1]),
            v: At::start(b[2]),
            out: At::start(b[3]),
            dims: dims(Extent::fixed(t), t),
        }],
    );
    p.add_stage(
        "prepare and cross",
        vec![
            Op::PrepareKeyValues {
                k: At::start(b[1]),
                v: At::start(b[2]),
                rows: t,
                kv,
            },
            Op::AttentionPrepared {
                q: At::start(b[0]),
                kv,
                out: At::start(b[3]),
                dims: dims(Extent::rows(1), max_q),
            },
        ],
    );
    let mut ws = npu.workspace(&p, 1).unwrap();
    let input: Vec<f32> = (0..t * w)
        .map(|i| ((i * 7 % 23) as f32 - 11.0) / 8.0)
        .collect();
    for &buf in &b[..3] {
        npu.write(&mut ws, buf, 0, &input).unwrap();
    }
    for (stage, rows) in [(0, t), (1, 1), (1, 5)] {
        let args = StageArgs {
            rows,
            ..Default::default()
        };
        npu.run(&p, StageId(stage), &args, &mut ws).unwrap(); // first use of the ring slot
        let before = host_allocs();
        for _ in 0..3 {
            npu.run(&p, StageId(stage), &args, &mut ws).unwrap();
        }
        let host = host_allocs() - before;
        assert_eq!(
            host, 0,
            "{host} host allocations in 3 calls of stage {stage} with {rows} rows"
        );
    }
    assert_eq!(npu.attention_stats().unwrap().submissions, 12);
    assert!(
        emu.command_errors().is_empty(),
        "{:?}",
        emu.command_errors()
    );
}

/// The decoder's self-attention on the device: rows appended to a slot of the device K/V cache
/// and attended causally, one row per beam slot, and a beam fork's slot copy. The cache images
/// (every slot, every position), the slot streams and the ring all exist with the workspace.
#[test]
fn device_self_attention_over_the_kv_cache_allocates_nothing_on_the_host() {
    use amanuensis_runtime::backend::Backend as _;
    use amanuensis_runtime::npu_backend::{emulated_config, NpuBackend};
    use amanuensis_runtime::stage::{
        At, AttentionDims, Extent, KeyValueCacheSpec, Op, Program as Stages, Residency, StageArgs,
        StageId,
    };

    let emu = Arc::new(EmuDriver::new(emulated_config()));
    let device = Device::from_driver(Arc::new(Fenced(emu.clone()))).unwrap();
    let npu = NpuBackend::new(device, &[], 1)
        .unwrap()
        .with_emulated_designs(emu.clone())
        .with_emulated_attention()
        .unwrap();
    let (heads, positions, slots) = (6, 448, 5);
    let w = heads * 64;
    let mut p = Stages::new();
    let b: Vec<_> = ["x", "k", "v", "out"]
        .into_iter()
        .map(|name| p.add_buffer(name, 8 * w, Residency::Resident))
        .collect();
    let cache = p.add_key_value_cache(KeyValueCacheSpec {
        name: "self k/v",
        heads,
        head_dim: 64,
        slots,
        positions,
    });
    let dims = AttentionDims {
        heads,
        head_dim: 64,
        q_len: Extent::rows(1),
        kv_len: Extent::pos_plus_rows(1),
        causal_offset: Some(Extent::pos(1)),
        max_q_len: 8,
        max_kv_len: positions,
    };
    let (q, k_new, v_new, out) = (
        At::start(b[0]),
        At::start(b[1]),
        At::start(b[2]),
        At::start(b[3]),
    );
    p.add_stage(
        "cached",
        vec![Op::CachedSelfAttention {
            q,
            k_new,
            v_new,
            cache,
            slot: 0,
            out,
            dims,
        }],
    );
    p.add_stage(
        "slots",
        vec![Op::SlotSelfAttention {
            q,
            k_new,
            v_new,
            cache,
            out,
            dims: AttentionDims {
                q_len: Extent::fixed(1),
                max_q_len: 1,
                ..dims
            },
        }],
    );
    p.add_stage(
        "fork",
        vec![Op::CopySlot {
            cache,
            len: Extent::pos(1),
        }],
    );
    let mut ws = npu.workspace(&p, 1).unwrap();
    let input: Vec<f32> = (0..8 * w)
        .map(|i| ((i * 7 % 23) as f32 - 11.0) / 8.0)
        .collect();
    for &buf in &b[..3] {
        npu.write(&mut ws, buf, 0, &input).unwrap();
    }
    let beams = [0, 1, 2, 3, 4];
    let calls: [(u16, StageArgs, &[usize]); 6] = [
        (
            0,
            StageArgs {
                rows: 8,
                ..Default::default()
            },
            &[],
        ),
        (
            0,
            StageArgs {
                rows: 1,
                pos: 8,
                ..Default::default()
            },
            &[],
        ),
        (
            2,
            StageArgs {
                pos: 9,
                ..Default::default()
            },
            &[0, 1],
        ),
        (
            2,
            StageArgs {
                pos: 9,
                ..Default::default()
            },
            &[0, 2],
        ),
        (
            2,
            StageArgs {
                pos: 9,
                ..Default::default()
            },
            &[1, 3],
        ),
        (
            1,
            StageArgs {
                rows: 4,
                pos: 9,
                ..Default::default()
            },
            &beams[..4],
        ),
    ];
    let fork_4 = [3, 4];
    for (stage, args, slots) in calls.into_iter().chain([(
        2,
        StageArgs {
            pos: 9,
            ..Default::default()
        },
        &fork_4[..],
    )]) {
        let args = StageArgs { slots, ..args };
        npu.run(&p, StageId(stage), &args, &mut ws).unwrap(); // first use of the ring slot
        let before = host_allocs();
        for _ in 0..3 {
            npu.run(&p, StageId(stage), &args, &mut ws).unwrap();
        }
        let host = host_allocs() - before;
        assert_eq!(
            host, 0,
            "{host} host allocations in 3 calls of stage {stage} with {} rows",
            args.rows
        );
    }
    let beams = StageArgs {
        rows: 5,
        pos: 9,
        slots: &beams,
        ..Default::default()
    };
    npu.run(&p, StageId(1), &beams, &mut ws).unwrap();
    let before = host_allocs();
    npu.run(&p, StageId(1), &beams, &mut ws).unwrap();
    assert_eq!(host_allocs() - before, 0, "a beam-5 step");
    let stats = npu.attention_stats().unwrap();
    assert_eq!(stats.submissions, 4 * 2 + 4 + 2);
    assert_eq!(stats.slot_copies, 4 * 4);
    assert!(
        emu.command_errors().is_empty(),
        "{:?}",
        emu.command_errors()
    );
}

/// A self-attention as a chain member (device attention on, query and key counts fixed): norm,
/// q and k into one buffer, v, the attention (its inputs step and the row-major attention), the
/// out-projection through the device quantize: one chain; the attention images, the Q headers
/// and the write-back of its rows allocate nothing.
#[test]
fn a_chained_attention_allocates_nothing_on_the_host() {
    use amanuensis_runtime::backend::{Backend as _, Epilogue};
    use amanuensis_runtime::npu_backend::{emulated_config, NpuBackend};
    use amanuensis_runtime::q8::QuantMatrix;
    use amanuensis_runtime::stage::{
        At, AttentionDims, Extent, Op, Program as Stages, Residency, StageArgs,
    };

    let emu = Arc::new(EmuDriver::new(emulated_config()));
    let device = Device::from_driver(Arc::new(Fenced(emu.clone()))).unwrap();
    let npu = NpuBackend::new(device, &[], 1)
        .unwrap()
        .with_emulated_designs(emu.clone())
        .with_emulated_attention()
        .unwrap();
    let (d, t) = (256, 40);
    let mut p = Stages::new();
    let ms: Vec<_> = (0..4)
        .map(|j| {
            let w: Vec<f32> = (0..d * d)
                .map(|i| ((i * (37 + j) % 101) as f32 - 50.0) / 500.0)
                .collect();
            p.add_matrix(npu.matrix_q8(QuantMatrix::quantize(&w, d, d)).unwrap())
        })
        .collect();
    let gamma = p.add_vector(vec![1.0; d]);
    let beta = p.add_vector(vec![0.0; d]);
    let (x, h, qk, v) = (
        p.add_buffer("x", t * d, Residency::Resident),
        p.add_buffer("h", t * d, Residency::Resident),
        p.add_buffer("qk", 2 * t * d, Residency::Resident),
        p.add_buffer("v", t * d, Residency::Resident),
    );
    let rows = Extent::fixed(t);
    let lin = |x: At, out: At, w: usize, epilogue| Op::Linear {
        x,
        out,
        rows,
        max_rows: t,
        w: ms[w],
        bias: None,
        epilogue,
    };
    let norm = Op::LayerNorm {
        x: At::start(x),
        out: At::start(h),
        rows,
        gamma,
        beta,
        eps: 1e-5,
    };
    let stage = p.add_stage(
        "attention-chain",
        vec![
            norm.clone(),
            lin(At::start(h), At::start(qk), 0, Epilogue::Store),
            lin(At::start(h), At::fixed(qk, t * d), 1, Epilogue::Store),
            lin(At::start(h), At::start(v), 2, Epilogue::Store),
            Op::Attention {
                q: At::start(qk),
                k: At::fixed(qk, t * d),
                v: At::start(v),
                out: At::start(h),
                dims: AttentionDims {
                    heads: d / 64,
                    head_dim: 64,
                    q_len: rows,
                    kv_len: rows,
                    causal_offset: None,
                    max_q_len: t,
                    max_kv_len: t,
                },
            },
            lin(At::start(h), At::start(x), 3, Epilogue::AddInto),
            norm,
        ],
    );
    let mut ws = npu.workspace(&p, 1).unwrap();
    assert_eq!(npu.submissions(&p, stage), 1);
    let input: Vec<f32> = (0..t * d).map(|i| (i % 13) as f32 - 6.0).collect();
    let args = StageArgs {
        rows: t,
        ..Default::default()
    };
    npu.write(&mut ws, x, 0, &input).unwrap();
    npu.run(&p, stage, &args, &mut ws).unwrap(); // first use of the ring slots
    let before = host_allocs();
    for _ in 0..3 {
        npu.write(&mut ws, x, 0, &input).unwrap();
        npu.run(&p, stage, &args, &mut ws).unwrap();
    }
    let host = host_allocs() - before;
    assert_eq!(
        host, 0,
        "{host} host allocations in 3 chained attention stages"
    );
    assert_eq!(npu.stats().submissions, 4);
    assert!(
        emu.command_errors().is_empty(),
        "{:?}",
        emu.command_errors()
    );
}

/// The decoder's causal self-attention over a device K/V cache as a chain member: norm, q, k
/// and v (v after k's rows in one buffer), the attention (its cache-inputs step appending the
/// new rows at the call's position, and the row-major attention over the slot's image), the
/// out-projection through the device quantize: one chain per step; single-row steps at
/// increasing positions (as the decoder's tokens) allocate nothing.
#[test]
fn a_chained_cache_attention_allocates_nothing_on_the_host() {
    use amanuensis_runtime::backend::{Backend as _, Epilogue};
    use amanuensis_runtime::npu_backend::{emulated_config, NpuBackend};
    use amanuensis_runtime::q8::QuantMatrix;
    use amanuensis_runtime::stage::{
        At, AttentionDims, Extent, KeyValueCacheSpec, Op, Program as Stages, Residency, StageArgs,
    };

    let emu = Arc::new(EmuDriver::new(emulated_config()));
    let device = Device::from_driver(Arc::new(Fenced(emu.clone()))).unwrap();
    let npu = NpuBackend::new(device, &[], 1)
        .unwrap()
        .with_emulated_designs(emu.clone())
        .with_emulated_attention()
        .unwrap();
    let (d, t) = (256, 40);
    let mut p = Stages::new();
    let ms: Vec<_> = (0..4)
        .map(|j| {
            let w: Vec<f32> = (0..d * d)
                .map(|i| ((i * (37 + j) % 101) as f32 - 50.0) / 500.0)
                .collect();
            p.add_matrix(npu.matrix_q8(QuantMatrix::quantize(&w, d, d)).unwrap())
        })
        .collect();
    let gamma = p.add_vector(vec![1.0; d]);
    let beta = p.add_vector(vec![0.0; d]);
    let (x, h, q, kv, a) = (
        p.add_buffer("x", t * d, Residency::Resident),
        p.add_buffer("h", t * d, Residency::Resident),
        p.add_buffer("q", t * d, Residency::Resident),
        p.add_buffer("k, v", 2 * t * d, Residency::Resident),
        p.add_buffer("a", t * d, Residency::Resident),
    );
    let cache = p.add_key_value_cache(KeyValueCacheSpec {
        name: "k/v",
        heads: d / 64,
        head_dim: 64,
        slots: 2,
        positions: t,
    });
    let rows = Extent::rows(1);
    let lin = |x: At, out: At, w: usize, epilogue| Op::Linear {
        x,
        out,
        rows,
        max_rows: t,
        w: ms[w],
        bias: None,
        epilogue,
    };
    let norm = Op::LayerNorm {
        x: At::start(x),
        out: At::start(h),
        rows,
        gamma,
        beta,
        eps: 1e-5,
    };
    let v_new = At {
        buffer: kv,
        offset: Extent::rows(d),
    };
    let stage = p.add_stage(
        "cache-attention-chain",
        vec![
            norm.clone(),
            lin(At::start(h), At::start(q), 0, Epilogue::Store),
            lin(At::start(h), At::start(kv), 1, Epilogue::Store),
            lin(At::start(h), v_new, 2, Epilogue::Store),
            Op::CachedSelfAttention {
                q: At::start(q),
                k_new: At::start(kv),
                v_new,
                cache,
                slot: 0,
                out: At::start(a),
                dims: AttentionDims {
                    heads: d / 64,
                    head_dim: 64,
                    q_len: rows,
                    kv_len: Extent::pos_plus_rows(1),
                    causal_offset: Some(Extent::pos(1)),
                    max_q_len: t,
                    max_kv_len: t,
                },
            },
            lin(At::start(a), At::start(x), 3, Epilogue::AddInto),
            norm,
        ],
    );
    let mut ws = npu.workspace(&p, 1).unwrap();
    assert_eq!(npu.submissions(&p, stage), 1);
    let input: Vec<f32> = (0..3 * d).map(|i| (i % 13) as f32 - 6.0).collect();
    let args = |rows, pos| StageArgs {
        rows,
        pos,
        ..Default::default()
    };
    npu.write(&mut ws, x, 0, &input).unwrap();
    npu.run(&p, stage, &args(3, 0), &mut ws).unwrap(); // a prompt; first use of the ring slots
    let before = host_allocs();
    for pos in 3..8 {
        npu.write(&mut ws, x, 0, &input[..d]).unwrap();
        npu.run(&p, stage, &args(1, pos), &mut ws).unwrap();
    }
    let host = host_allocs() - before;
    assert_eq!(
        host, 0,
        "{host} host allocations in 5 chained cache attention steps"
    );
    assert_eq!(npu.stats().submissions, 6);
    assert!(
        emu.command_errors().is_empty(),
        "{:?}",
        emu.command_errors()
    );
}
