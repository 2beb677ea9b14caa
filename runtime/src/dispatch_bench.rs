//! The dispatch-overhead benchmark behind `amanuensis profile-dispatch`: load a program (an
//! xclbin and its TXN instruction stream) with two buffers (bo0 in, bo1 out), run N dispatches
//! through the full path (flush, ERT_START_CU packet, EXEC_CMD, syncobj wait, state check,
//! invalidate) with 1–4 commands in flight, and keep every per-dispatch sample.

use std::sync::Arc;
use std::time::Duration;

use crate::dispatch::{DispatchRecord, DispatchSummary, Dispatcher};
use crate::npu::arena::{ArenaPlan, BoArena};
use crate::npu::device::Device;
use crate::npu::driver::Backend;
use crate::npu::emu::{EmuConfig, EmuDriver};
use crate::npu::heap::Heap;
use crate::npu::hwctx::HwContext;
use crate::npu::program::{Program, RegmapLayout};
use crate::npu::ring::{CommandRing, MAX_DEPTH};
use crate::npu::txn::encode::copy_stream;
use crate::npu::txn::ArrayIo;
use crate::npu::xclbin::{Xclbin, XclbinBuilder, MLIR_AIE_DPU_KERNEL_ID};
use crate::npu::{NpuError, Result};

/// The PDI bytes the emulated copy kernel is registered under.
pub const EMU_COPY_PDI: &[u8] = b"AMANUENSIS-EMULATED-COPY-KERNEL";
/// How long one dispatch may take before it counts as hung.
pub const DISPATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Dispatches run before measuring (first-use costs, power-state wake-up on hardware).
pub const WARMUP: usize = 3;

/// The array model of the emulated copy program: shim column 0 MM2S0 → S2MM0 unchanged.
pub fn copy_array(io: &mut ArrayIo) -> Result<(), String> {
    let input = io.input(0, 0).ok_or("no input on MM2S0")?.to_vec();
    let out = io.output(0, 0).ok_or("no output on S2MM0")?;
    if out.len() != input.len() {
        return Err(format!("{} bytes in, {} out", input.len(), out.len()));
    }
    out.copy_from_slice(&input);
    Ok(())
}

/// An emulated device (default profile) with the copy kernel registered.
pub fn emulated_device() -> Result<(Arc<EmuDriver>, Device)> {
    emulated_device_with(EmuConfig::default())
}

/// An emulated device configured by `config` with the copy kernel registered.
pub fn emulated_device_with(config: EmuConfig) -> Result<(Arc<EmuDriver>, Device)> {
    let emu = Arc::new(EmuDriver::new(config));
    emu.register_kernel(EMU_COPY_PDI, copy_array);
    let device = Device::from_driver(emu.clone())?;
    Ok((emu, device))
}

/// The xclbin and TXN instruction words of the emulated copy program for `bytes` bytes (a
/// multiple of 4): one column, bo0 → MM2S0, S2MM0 → bo1.
pub fn emulated_program(bytes: usize) -> (Vec<u8>, Vec<u32>) {
    (
        XclbinBuilder::mlir_aie(EMU_COPY_PDI, 1, 2).build(),
        copy_stream(3, bytes as u32, &[]),
    )
}

/// What a benchmark run measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Real NPU or emulated.
    pub backend: Backend,
    /// Dispatches measured.
    pub dispatches: usize,
    /// Commands kept in flight (ring depth).
    pub depth: usize,
    /// The most commands that were in flight at once during the measured dispatches.
    pub max_in_flight: usize,
    /// Bytes per buffer.
    pub bytes: usize,
    /// Per-stage statistics.
    pub summary: DispatchSummary,
    /// Every measured dispatch, in order.
    pub samples: Vec<DispatchRecord>,
    /// Wall time of the measured dispatches, ns (throughput with `depth` in flight).
    pub wall_ns: u64,
    /// Whether the output was checked against the input (emulated copy kernel only).
    pub verified: bool,
}

/// The regmap layout of the xclbin's first DPU kernel (mlir-aie's with 2 buffers if the xclbin
/// has no kernel metadata).
pub fn layout_of(xclbin: &Xclbin<'_>) -> Result<RegmapLayout> {
    match xclbin.kernels() {
        Ok(ks) => match ks.iter().find(|k| k.kind == "dpu").or(ks.first()) {
            Some(k) => RegmapLayout::from_kernel(k),
            None => Ok(RegmapLayout::mlir_aie(2)),
        },
        Err(_) => Ok(RegmapLayout::mlir_aie(2)),
    }
}

/// Run `n` dispatches of the program on `device`, `depth` (1..=4) in flight, with input and
/// output buffers of `bytes`.
pub fn run(
    device: &Device,
    xclbin: &[u8],
    instructions: &[u32],
    bytes: usize,
    n: usize,
    depth: usize,
) -> Result<BenchReport> {
    if bytes == 0 || n == 0 || instructions.is_empty() || !(1..=MAX_DEPTH).contains(&depth) {
        return Err(NpuError::InvalidRequest {
            what: format!(
                "benchmark needs bytes ≥ 1 ({bytes}), n ≥ 1 ({n}), instructions ({}) and depth 1..=4 ({depth})",
                instructions.len()
            ),
        });
    }
    let heap = Heap::create(device)?;
    let xclbin = Xclbin::parse(xclbin)?;
    let layout = layout_of(&xclbin)?;
    let ctx = Arc::new(HwContext::load(
        device,
        &heap,
        &xclbin,
        MLIR_AIE_DPU_KERNEL_ID,
    )?);
    let mut plan = ArenaPlan::new();
    let instr = plan.instructions("instr", instructions.len());
    let input = plan.buffer("in", bytes);
    let output = plan.buffer("out", bytes);
    let mut arena = BoArena::allocate(device, &heap, &plan)?;
    arena.write_instructions(instr, instructions)?;
    for (i, b) in arena.bytes_mut(input).iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
    }
    // A CPU-written output: flushed before submission, so the device's result survives (F3).
    arena.bytes_mut(output).fill(0xA5);
    let program = Program::new(
        &layout,
        &arena,
        instr,
        &[input, output],
        Some(ctx.columns() as u8),
    )?;
    let ring = CommandRing::new(device, ctx, depth, DISPATCH_TIMEOUT)?;
    let mut d = Dispatcher::new(ring, n);
    for _ in 0..WARMUP {
        d.dispatch(&arena, &program, &[input], &[output])?;
    }
    d.clear_log();
    let t0 = std::time::Instant::now();
    let mut max_in_flight = 0;
    for _ in 0..n {
        d.submit(&arena, &program, &[input], &[output])?;
        max_in_flight = max_in_flight.max(d.ring().in_flight());
    }
    d.complete_all(&arena, &[output])?;
    let wall_ns = t0.elapsed().as_nanos() as u64;
    let backend = device.backend();
    let verified = backend == Backend::Emulated;
    if verified && arena.bytes(input) != arena.bytes(output) {
        return Err(NpuError::Protocol {
            what: "emulated copy kernel output differs from its input".into(),
        });
    }
    Ok(BenchReport {
        backend,
        dispatches: n,
        depth,
        max_in_flight,
        bytes,
        summary: d.log().summary(),
        samples: d.log().records().to_vec(),
        wall_ns,
        verified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulated_benchmark_runs_and_verifies_at_every_depth_and_profile() {
        use crate::npu::emu::DriverProfile;
        for (profile, depth) in DriverProfile::ALL
            .into_iter()
            .flat_map(|p| (1..=4).map(move |d| (p, d)))
        {
            // Jobs complete only when waited for, so `depth` stay in flight however slowly the
            // host runs (on a loaded machine a 100 µs job could end before the next submission).
            let (emu, device) = emulated_device_with(EmuConfig {
                retire_in_waits_only: true,
                ..EmuConfig::with_profile(profile)
            })
            .unwrap();
            // Each command takes 100 µs, so the host keeps `depth` queued behind it.
            emu.set_latency(Duration::from_micros(100));
            let (xclbin, instr) = emulated_program(4096);
            let r = run(&device, &xclbin, &instr, 4096, 50, depth).unwrap();
            assert_eq!(
                (r.backend, r.dispatches, r.depth, r.verified),
                (Backend::Emulated, 50, depth, true)
            );
            assert_eq!((r.summary.count, r.samples.len()), (50, 50));
            assert_eq!(r.summary.bytes.min, 8192, "in + out flushed per dispatch");
            assert!(r.summary.total.min > 0 && r.summary.total.min <= r.summary.total.median);
            assert!(r
                .samples
                .iter()
                .all(|s| s.total_ns() > 0 && s.submit_ns > 0));
            assert_eq!(emu.stats().completed, (50 + WARMUP) as u64);
            assert_eq!(
                emu.stats().max_in_flight,
                depth,
                "{profile:?}: depth {depth} kept in flight"
            );
            assert_eq!(r.max_in_flight, depth);
            let h = crate::dispatch::Histogram::log2(r.samples.iter().map(|s| s.total_ns()));
            assert_eq!(h.count(), 50);
            assert_eq!(emu.stats().live_bos, 0, "everything released after the run");
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        let (_, device) = emulated_device().unwrap();
        let (xclbin, instr) = emulated_program(16);
        assert!(matches!(
            run(&device, &xclbin, &instr, 0, 1, 1),
            Err(NpuError::InvalidRequest { .. })
        ));
        assert!(matches!(
            run(&device, &xclbin, &instr, 16, 1, 5),
            Err(NpuError::InvalidRequest { .. })
        ));
        assert!(matches!(
            run(&device, b"junk", &instr, 16, 1, 1),
            Err(NpuError::Xclbin(_))
        ));
    }
}
