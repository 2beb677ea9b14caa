//! The dispatch-overhead benchmark behind `amanuensis profile-dispatch`: load a program (an
//! xclbin and its instruction words) with two buffers (bo0 in, bo1 out), run N synchronous
//! dispatches through the full path (flush, ERT_START_CU packet, EXEC_CMD, syncobj wait, state
//! check, flush) and summarise per stage.

use std::sync::Arc;
use std::time::Duration;

use crate::dispatch::{DispatchSummary, Dispatcher};
use crate::npu::arena::{ArenaPlan, BoArena};
use crate::npu::device::Device;
use crate::npu::driver::Backend;
use crate::npu::emu::{EmuConfig, EmuDriver, KernelCall};
use crate::npu::ert::{StartCu, MLIR_AIE_OPCODE_TXN};
use crate::npu::heap::Heap;
use crate::npu::hwctx::HwContext;
use crate::npu::ring::{CommandRing, Packet};
use crate::npu::xclbin::{Xclbin, XclbinBuilder, MLIR_AIE_DPU_KERNEL_ID};
use crate::npu::{NpuError, Result};

/// The PDI bytes the emulated copy kernel is registered under.
pub const EMU_COPY_PDI: &[u8] = b"AMANUENSIS-EMULATED-COPY-KERNEL";
/// How long one dispatch may take before it counts as hung.
pub const DISPATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Dispatches run before measuring (first-use costs, power-state wake-up on hardware).
pub const WARMUP: usize = 3;

fn copy_kernel(call: &mut KernelCall<'_>) -> Result<(), String> {
    let n = *call.instructions()?.first().ok_or("no instruction words")? as usize;
    let input = call
        .buffer(0)?
        .get(..n)
        .ok_or("bo0 shorter than the byte count")?
        .to_vec();
    call.buffer(1)?
        .get_mut(..n)
        .ok_or("bo1 shorter than the byte count")?
        .copy_from_slice(&input);
    Ok(())
}

/// An emulated device with the copy kernel registered.
pub fn emulated_device() -> Result<(Arc<EmuDriver>, Device)> {
    let emu = Arc::new(EmuDriver::new(EmuConfig::default()));
    emu.register_kernel(EMU_COPY_PDI, copy_kernel);
    let device = Device::from_driver(emu.clone())?;
    Ok((emu, device))
}

/// The xclbin and instruction words of the emulated copy program for `bytes` bytes.
pub fn emulated_program(bytes: usize) -> (Vec<u8>, Vec<u32>) {
    (
        XclbinBuilder::mlir_aie(EMU_COPY_PDI, 1, 2).build(),
        vec![bytes as u32],
    )
}

/// What a benchmark run measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Real NPU or emulated.
    pub backend: Backend,
    /// Dispatches measured.
    pub dispatches: usize,
    /// Bytes per buffer.
    pub bytes: usize,
    /// Per-stage statistics.
    pub summary: DispatchSummary,
    /// Whether the output was checked against the input (emulated copy kernel only).
    pub verified: bool,
}

/// Run `n` dispatches of the program on `device`, with input and output buffers of `bytes`.
pub fn run(
    device: &Device,
    xclbin: &[u8],
    instructions: &[u32],
    bytes: usize,
    n: usize,
) -> Result<BenchReport> {
    if bytes == 0 || n == 0 || instructions.is_empty() {
        return Err(NpuError::InvalidRequest {
            what: format!(
                "benchmark needs bytes ≥ 1 ({bytes}), n ≥ 1 ({n}) and instructions ({})",
                instructions.len()
            ),
        });
    }
    let heap = Heap::create(device)?;
    let xclbin = Xclbin::parse(xclbin)?;
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
    arena.bytes_mut(output).fill(0);
    let buffers = [arena.device_addr(input), arena.device_addr(output)];
    let packet = Packet::StartCu(StartCu {
        cu_mask: 1,
        opcode: MLIR_AIE_OPCODE_TXN,
        instr_addr: arena.device_addr(instr),
        instr_words: instructions.len() as u32,
        buffers: &buffers,
    });
    let ring = CommandRing::new(device, ctx, 1, DISPATCH_TIMEOUT)?;
    let mut d = Dispatcher::new(ring, n);
    for _ in 0..WARMUP {
        d.dispatch(&arena, &packet, &[input], &[output])?;
    }
    d.clear_log();
    for _ in 0..n {
        d.dispatch(&arena, &packet, &[input], &[output])?;
    }
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
        bytes,
        summary: d.log().summary(),
        verified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulated_benchmark_runs_and_verifies() {
        let (emu, device) = emulated_device().unwrap();
        let (xclbin, instr) = emulated_program(4096);
        let r = run(&device, &xclbin, &instr, 4096, 50).unwrap();
        assert_eq!(
            (r.backend, r.dispatches, r.verified),
            (Backend::Emulated, 50, true)
        );
        assert_eq!(r.summary.count, 50);
        assert_eq!(r.summary.bytes.min, 8192, "in + out flushed per dispatch");
        assert!(r.summary.total.min > 0 && r.summary.total.min <= r.summary.total.median);
        assert!(r.summary.total.median <= r.summary.total.p99);
        assert_eq!(emu.stats().completed, (50 + WARMUP) as u64);
        assert_eq!(emu.stats().live_bos, 0, "everything released after the run");
    }

    #[test]
    fn bad_parameters_are_refused() {
        let (_, device) = emulated_device().unwrap();
        let (xclbin, instr) = emulated_program(16);
        assert!(matches!(
            run(&device, &xclbin, &instr, 0, 1),
            Err(NpuError::InvalidRequest { .. })
        ));
        assert!(matches!(
            run(&device, b"junk", &instr, 16, 1),
            Err(NpuError::Xclbin(_))
        ));
    }
}
