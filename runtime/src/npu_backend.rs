//! The NPU backend: the CPU INT8 backend with the linear layers whose shape matches a loaded
//! device GEMM program computed on the NPU (a real amdxdna device or the emulated one).
//!
//! A device GEMM program ([`GemmProgramFiles`]: an xclbin and its TXN instruction stream) is a
//! fixed 128-row tile `C[128×N] i32 = A[128×K] i8 · B[K×N] i8`, A and C row-major, B `K×N`
//! row-major (the transpose of the `[out, in]` weight). It does no scaling: the host quantizes
//! the activations per row exactly as the CPU INT8 path does ([`quantize_row`]), and applies
//! the dequantize / bias / epilogue with the same code ([`dequantize_into`]), so a device linear
//! is bit-identical to [`crate::q8::gemm_q8`]. Per linear call of `rows` rows: `⌈rows/128⌉`
//! submissions, each writing its rows of A (the rest zeroed; only the bytes that changed flushed), submitting
//! `(instr, A, B, C)`, waiting, invalidating the rows of C it reads; two A/C pairs keep two
//! submissions in flight (the host prepares block `i + 1` while the device runs block `i`).
//!
//! At load: one hardware context per program (its PDI), the instruction stream validated
//! against the buffer sizes ([`crate::npu::txn::validate`]) and copied once into a DEV BO;
//! every INT8 weight of a matching `(K, N)` repacked once into its B layout in its own BO. Per
//! workspace (stream): two A and two C BOs for the largest program, one command ring (two
//! slots) per program; nothing is allocated per call. Every other op (attention, norms, the other linears,
//! the conv stem) runs on the CPU INT8 kernels. Nothing here knows which network it runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{AttentionShape, Backend, BackendError, Epilogue, LayerKernels};
use crate::cpu_int8_backend::{CpuInt8Backend, Int8KeyValues, Int8OrF32Matrix, Int8Scratch};
use crate::dispatch::{DispatchLog, DispatchRecord};
use crate::host::HostWorkspace;
use crate::npu::bo::MappedBo;
use crate::npu::device::Device;
use crate::npu::driver::Backend as DriverBackend;
use crate::npu::emu::{EmuConfig, EmuDriver, Int8GemmModel};
use crate::npu::ert::{StartCu, MLIR_AIE_OPCODE_TXN};
use crate::npu::heap::{DevBo, Heap};
use crate::npu::hwctx::HwContext;
use crate::npu::program::RegmapLayout;
use crate::npu::ring::{CommandRing, Packet};
use crate::npu::txn::{self, Direction, Limits};
use crate::npu::xclbin::{Xclbin, MLIR_AIE_DPU_KERNEL_ID};
use crate::npu::NpuError;
use crate::q8::quant::quantize_row;
use crate::q8::{dequantize_into, QuantMatrix};
use crate::stage::{BufferId, Op, Program, StageArgs, StageId};

/// Rows of A and C one submission of a device GEMM program computes.
pub const GEMM_ROWS: usize = 128;

/// How long a submission may take before it is reported as timed out.
pub const SUBMISSION_TIMEOUT: Duration = Duration::from_secs(30);

/// Dispatch records each workspace keeps.
const LOG_CAPACITY: usize = 4096;

/// A device GEMM program as files: `C[128×n] i32 = A[128×k] i8 · B[k×n] i8`.
#[derive(Clone, Debug)]
pub struct GemmProgramFiles {
    /// Depth.
    pub k: usize,
    /// Output channels.
    pub n: usize,
    /// Where the xclbin came from (for messages).
    pub xclbin_path: PathBuf,
    /// The xclbin.
    pub xclbin: Vec<u8>,
    /// The instruction stream (TXN, little-endian u32 words, header included).
    pub insts: Vec<u32>,
}

impl GemmProgramFiles {
    /// Reads the pair `final_*_K{k}_N{n}.xclbin` + `insts_*_K{k}_N{n}.txt` for each wanted
    /// `(k, n)` from `dir` (the names the fixture build uses).
    pub fn find_in(dir: &Path, shapes: &[(usize, usize)]) -> Result<Vec<Self>, NpuError> {
        let entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| NpuError::InvalidRequest {
                what: format!("GEMM program directory {}: {e}", dir.display()),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        let named = |prefix: &str, suffix: &str| -> Option<&PathBuf> {
            entries.iter().find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
            })
        };
        let mut out = Vec::with_capacity(shapes.len());
        for &(k, n) in shapes {
            let tag = format!("_K{k}_N{n}");
            let (Some(x), Some(i)) = (
                named("final_", &format!("{tag}.xclbin")),
                named("insts_", &format!("{tag}.txt")),
            ) else {
                return Err(NpuError::InvalidRequest {
                    what: format!(
                        "no GEMM program for K{k}×N{n} in {} (final_*{tag}.xclbin + insts_*{tag}.txt)",
                        dir.display()
                    ),
                });
            };
            out.push(Self::read(k, n, x, i)?);
        }
        Ok(out)
    }

    /// Reads one program.
    pub fn read(k: usize, n: usize, xclbin: &Path, insts: &Path) -> Result<Self, NpuError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| NpuError::InvalidRequest {
                what: format!("{}: {e}", p.display()),
            })
        };
        let bytes = read(insts)?;
        let insts_words =
            txn::words_from_le_bytes(&bytes).ok_or_else(|| NpuError::InvalidRequest {
                what: format!(
                    "{}: {} bytes is not a multiple of 4",
                    insts.display(),
                    bytes.len()
                ),
            })?;
        Ok(Self {
            k,
            n,
            xclbin_path: xclbin.to_path_buf(),
            xclbin: read(xclbin)?,
            insts: insts_words,
        })
    }

    fn arg_lens(&self) -> [u64; 3] {
        [
            (GEMM_ROWS * self.k) as u64,
            (self.k * self.n) as u64,
            (4 * GEMM_ROWS * self.n) as u64,
        ]
    }

    /// The shim columns that return C (the design's width), from the validated stream.
    fn output_columns(&self, partition_cols: u8) -> Result<usize, NpuError> {
        let lens = self.arg_lens();
        let plan = txn::validate(
            &self.insts,
            &Limits {
                arg_lens: &lens,
                partition_cols: Some(partition_cols),
            },
        )?;
        let mut cols: Vec<u8> = plan
            .channel_bytes()
            .into_iter()
            .filter(|(c, _)| c.dir == Direction::S2mm)
            .map(|(c, _)| c.col)
            .collect();
        cols.sort_unstable();
        cols.dedup();
        Ok(cols.len())
    }
}

/// The emulated device for `programs`: an 8-column AIE2P-like array (the fixture programs are
/// npu2 designs) whose firmware runs each program's PDI with the INT8 GEMM array model
/// ([`Int8GemmModel`]), under the driver profile of `AMANUENSIS_EMU_PROFILE`.
pub fn emulated_device(
    programs: &[GemmProgramFiles],
) -> Result<(Arc<EmuDriver>, Device), NpuError> {
    let emu = Arc::new(EmuDriver::new(emulated_config()));
    register_gemm_models(&emu, programs)?;
    let device = Device::from_driver(emu.clone())?;
    Ok((emu, device))
}

/// The emulated device's geometry for the GEMM programs: 8 columns (npu2), the rest as
/// [`EmuConfig::default`].
pub fn emulated_config() -> EmuConfig {
    EmuConfig {
        cols: 8,
        ..EmuConfig::default()
    }
}

/// Registers the INT8 GEMM array model for each program's PDI on `emu` (the design's width is
/// read from the instruction stream: the shim columns that return C).
pub fn register_gemm_models(
    emu: &EmuDriver,
    programs: &[GemmProgramFiles],
) -> Result<(), NpuError> {
    for p in programs {
        let x = Xclbin::parse(&p.xclbin)?;
        let part = x.aie_partition()?;
        let pdi = part.pdi_for_kernel(dpu_kernel_id(&x))?;
        let cols = p.output_columns(part.column_width as u8)?;
        let model = Int8GemmModel::new(p.k, p.n, cols).ok_or_else(|| NpuError::InvalidRequest {
            what: format!(
                "{}: K{}×N{} on {cols} columns does not fit the INT8 GEMM array model",
                p.xclbin_path.display(),
                p.k,
                p.n
            ),
        })?;
        emu.register_kernel(pdi, move |io| model.run(io));
    }
    Ok(())
}

fn dpu_kernel_id(x: &Xclbin<'_>) -> u64 {
    x.kernels()
        .ok()
        .and_then(|ks| ks.into_iter().find_map(|k| k.dpu_kernel_id))
        .unwrap_or(MLIR_AIE_DPU_KERNEL_ID)
}

/// A loaded device GEMM program.
struct DeviceGemm {
    k: usize,
    n: usize,
    layout: RegmapLayout,
    instr: DevBo,
    instr_words: u32,
    ctx: Arc<HwContext>,
}

/// Totals over every workspace of a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NpuStats {
    /// Device submissions.
    pub submissions: u64,
    /// Linear calls computed on the device.
    pub device_linears: u64,
    /// Bytes the host wrote for the device and flushed (A rows of every submission).
    pub bytes_to_device: u64,
    /// Bytes the host read back (C rows of every submission).
    pub bytes_from_device: u64,
    /// Host time in submit + wait (on the emulator: its execution), ns.
    pub device_ns: u64,
    /// Weight bytes uploaded once at load (B layouts).
    pub weight_bytes: u64,
}

#[derive(Default)]
struct Counters {
    submissions: AtomicU64,
    device_linears: AtomicU64,
    bytes_to_device: AtomicU64,
    bytes_from_device: AtomicU64,
    device_ns: AtomicU64,
    weight_bytes: AtomicU64,
}

/// The NPU backend (see the module docs).
pub struct NpuBackend {
    cpu: CpuInt8Backend,
    // Field order is drop order: contexts and the instruction BOs before the heap, the heap
    // before the device.
    gemms: Vec<DeviceGemm>,
    _heap: Arc<Heap>,
    device: Device,
    counters: Counters,
    timeout: Duration,
}

/// A weight matrix of [`NpuBackend`]: the CPU INT8 form, and the B layout on the device when a
/// loaded program has its shape.
pub struct NpuMatrix {
    cpu: Int8OrF32Matrix,
    device: Option<DeviceWeights>,
}

struct DeviceWeights {
    gemm: usize,
    b: MappedBo,
}

impl NpuMatrix {
    /// Whether this matrix's linear runs on the device.
    pub fn on_device(&self) -> bool {
        self.device.is_some()
    }
}

/// Per-stream state of [`NpuBackend`]: the CPU INT8 scratch and the device session.
pub struct NpuScratch {
    cpu: Int8Scratch,
    session: Option<GemmSession>,
}

struct GemmSession {
    /// Two A/C pairs: block `i` uses pair `i % 2`, so the host prepares and finishes one block
    /// while the device runs the other.
    tiles: [TileBuffers; 2],
    rings: Vec<CommandRing>,
    regmap: Vec<u32>,
    log: DispatchLog,
}

struct TileBuffers {
    a: MappedBo,
    c: MappedBo,
    /// Row scales of the block in `a`.
    scales: [f32; GEMM_ROWS],
    /// Bytes of `a` that may be non-zero in device memory (the rest is zero).
    a_extent: usize,
}

/// A submitted block: its ticket, first row, rows, buffer pair, and its record so far.
#[derive(Clone, Copy)]
struct InFlight {
    ticket: crate::npu::ring::Ticket,
    r0: usize,
    m: usize,
    tile: usize,
    record: DispatchRecord,
}

fn device_err(op: &'static str) -> impl Fn(NpuError) -> BackendError {
    move |e| BackendError::Device {
        backend: "npu-int8",
        op,
        reason: e.to_string(),
    }
}

impl NpuBackend {
    /// Loads `programs` onto `device` (one context each; instruction streams validated and
    /// uploaded); host work runs on `threads` threads per stream.
    pub fn new(
        device: Device,
        programs: &[GemmProgramFiles],
        threads: usize,
    ) -> Result<Self, NpuError> {
        let heap = Heap::create(&device)?;
        let mut gemms = Vec::with_capacity(programs.len());
        for p in programs {
            let x = Xclbin::parse(&p.xclbin)?;
            let kernels = x.kernels()?;
            let kernel = kernels.iter().find(|k| k.kind == "dpu").ok_or_else(|| {
                NpuError::InvalidRequest {
                    what: format!("{}: no dpu kernel", p.xclbin_path.display()),
                }
            })?;
            let layout = RegmapLayout::from_kernel(kernel)?;
            if layout.buffers() < 3 {
                return Err(NpuError::InvalidRequest {
                    what: format!(
                        "{}: {} buffer arguments, a GEMM takes A, B, C",
                        p.xclbin_path.display(),
                        layout.buffers()
                    ),
                });
            }
            let ctx = HwContext::load(&device, &heap, &x, dpu_kernel_id(&x))?;
            let lens = p.arg_lens();
            let plan = txn::validate(
                &p.insts,
                &Limits {
                    arg_lens: &lens,
                    partition_cols: Some(ctx.columns() as u8),
                },
            )?;
            if plan.summary.unawaited != 0 {
                return Err(NpuError::InvalidRequest {
                    what: format!(
                        "{}: {} tasks never awaited",
                        p.xclbin_path.display(),
                        plan.summary.unawaited
                    ),
                });
            }
            let mut instr = DevBo::create(&heap, 4 * p.insts.len())?;
            for (d, w) in instr.bytes_mut().chunks_exact_mut(4).zip(&p.insts) {
                d.copy_from_slice(&w.to_le_bytes());
            }
            instr.flush(0..4 * p.insts.len());
            gemms.push(DeviceGemm {
                k: p.k,
                n: p.n,
                layout,
                instr,
                instr_words: p.insts.len() as u32,
                ctx: Arc::new(ctx),
            });
        }
        Ok(Self {
            cpu: CpuInt8Backend::new(threads),
            gemms,
            _heap: heap,
            device,
            counters: Counters::default(),
            timeout: SUBMISSION_TIMEOUT,
        })
    }

    /// The device (emulated or real).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the device is the emulator.
    pub fn emulated(&self) -> bool {
        self.device.backend() == DriverBackend::Emulated
    }

    /// `(K, N)` of every loaded program.
    pub fn shapes(&self) -> Vec<(usize, usize)> {
        self.gemms.iter().map(|g| (g.k, g.n)).collect()
    }

    /// Totals over every workspace so far.
    pub fn stats(&self) -> NpuStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NpuStats {
            submissions: l(&c.submissions),
            device_linears: l(&c.device_linears),
            bytes_to_device: l(&c.bytes_to_device),
            bytes_from_device: l(&c.bytes_from_device),
            device_ns: l(&c.device_ns),
            weight_bytes: l(&c.weight_bytes),
        }
    }

    /// The matrix for `q`: uploaded in B layout when a program has its `(K, N)`.
    fn load_matrix(&self, q: QuantMatrix) -> Result<NpuMatrix, BackendError> {
        let (k, n) = (q.k(), q.n_out());
        let device = match self.gemms.iter().position(|g| (g.k, g.n) == (k, n)) {
            None => None,
            Some(gemm) => {
                let mut b =
                    MappedBo::share(&self.device, k * n).map_err(device_err("allocate weights"))?;
                let bytes = b.bytes_mut();
                for j in 0..n {
                    for kk in 0..k {
                        bytes[kk * n + j] = q.get(j, kk) as u8;
                    }
                }
                b.flush(0..k * n);
                self.counters
                    .weight_bytes
                    .fetch_add((k * n) as u64, Ordering::Relaxed);
                Some(DeviceWeights { gemm, b })
            }
        };
        Ok(NpuMatrix {
            cpu: self.cpu.matrix_from_quantized(q),
            device,
        })
    }

    fn session(&self) -> Result<GemmSession, BackendError> {
        let k = self.gemms.iter().map(|g| g.k).max().unwrap_or(1);
        let n = self.gemms.iter().map(|g| g.n).max().unwrap_or(1);
        let words = self
            .gemms
            .iter()
            .map(|g| g.layout.words())
            .max()
            .unwrap_or(0);
        let tile = || -> Result<TileBuffers, BackendError> {
            Ok(TileBuffers {
                a: MappedBo::share(&self.device, GEMM_ROWS * k)
                    .map_err(device_err("allocate A"))?,
                c: MappedBo::share(&self.device, 4 * GEMM_ROWS * n)
                    .map_err(device_err("allocate C"))?,
                scales: [0.0; GEMM_ROWS],
                // Zeroed and flushed whole by the first submission.
                a_extent: GEMM_ROWS * k,
            })
        };
        let tiles = [tile()?, tile()?];
        let rings = self
            .gemms
            .iter()
            .map(|g| CommandRing::new(&self.device, g.ctx.clone(), 2, self.timeout))
            .collect::<Result<Vec<_>, _>>()
            .map_err(device_err("create command ring"))?;
        Ok(GemmSession {
            tiles,
            rings,
            regmap: vec![0; words],
            log: DispatchLog::with_capacity(LOG_CAPACITY),
        })
    }

    /// `out = epilogue(x · wᵀ + bias)` on the device, `⌈rows/128⌉` submissions, two in flight:
    /// block `i + 1` is quantized and submitted before block `i` is waited for and dequantized.
    #[allow(clippy::too_many_arguments)]
    fn device_linear(
        &self,
        s: &mut GemmSession,
        x: &[f32],
        rows: usize,
        w: &DeviceWeights,
        q: &QuantMatrix,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        let r = self.device_blocks(s, x, rows, w, q, bias, epilogue, out);
        if r.is_err() {
            // Leave no command of this call in flight (each ends or times out).
            let _ = s.rings[w.gemm].drain();
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn device_blocks(
        &self,
        s: &mut GemmSession,
        x: &[f32],
        rows: usize,
        w: &DeviceWeights,
        q: &QuantMatrix,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        let g = &self.gemms[w.gemm];
        let (k, n) = (g.k, g.n);
        let ns = |a: Instant, b: Instant| (b - a).as_nanos() as u64;
        let mut pending: Option<InFlight> = None;
        for (i, r0) in (0..rows).step_by(GEMM_ROWS).enumerate() {
            let m = (rows - r0).min(GEMM_ROWS);
            let tile = i % 2;
            let t0 = Instant::now();
            let tb = &mut s.tiles[tile];
            // A past `a_extent` is zero in device memory: write the `m` rows, zero what the
            // last submission left beyond them, and flush only those bytes (a decoder row is
            // 512-2048 bytes, not the whole 128-row tile).
            let extent = tb.a_extent.max(m * k);
            let a: &mut [i8] = bytemuck::cast_slice_mut(&mut tb.a.bytes_mut()[..extent]);
            for (r, codes) in a.chunks_exact_mut(k).take(m).enumerate() {
                tb.scales[r] = quantize_row(&x[(r0 + r) * k..(r0 + r + 1) * k], codes);
            }
            a[m * k..].fill(0);
            tb.a.flush(0..extent);
            tb.a_extent = m * k;
            // C needs no flush before submission (F3): the host never writes C (it only reads
            // rows back after invalidating them) and the BO was flushed when it was created,
            // so no line of C is CPU-dirty while the device writes it.
            let t1 = Instant::now();
            let ticket = Self::submit(g, s, w.gemm, tile, &w.b)?;
            let t2 = Instant::now();
            let record = DispatchRecord {
                bytes: (GEMM_ROWS * k + 4 * m * n) as u64,
                bytes_out: (4 * m * n) as u64,
                flush_ns: ns(t0, t1),
                submit_ns: ns(t1, t2),
                ..DispatchRecord::default()
            };
            if let Some(prev) = pending.take() {
                self.finish_block(s, prev, w.gemm, n, q, bias, epilogue, out)?;
            }
            pending = Some(InFlight {
                ticket,
                r0,
                m,
                tile,
                record,
            });
        }
        if let Some(last) = pending {
            self.finish_block(s, last, w.gemm, n, q, bias, epilogue, out)?;
        }
        self.counters.device_linears.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Submits program `gemm` on tile pair `tile` (A and C, already flushed) with weights `b`.
    fn submit(
        g: &DeviceGemm,
        s: &mut GemmSession,
        gemm: usize,
        tile: usize,
        b: &MappedBo,
    ) -> Result<crate::npu::ring::Ticket, BackendError> {
        let tb = &s.tiles[tile];
        let words = g
            .layout
            .write(
                MLIR_AIE_OPCODE_TXN,
                g.instr.device_addr(),
                g.instr_words,
                &[tb.a.device_addr(), b.device_addr(), tb.c.device_addr()],
                &mut s.regmap,
            )
            .map_err(|e| {
                device_err("build command")(NpuError::InvalidRequest {
                    what: e.to_string(),
                })
            })?;
        let handles = [g.instr.handle(), tb.a.handle(), b.handle(), tb.c.handle()];
        let packet = Packet::StartCu(StartCu {
            cu_mask: 1,
            regmap: &s.regmap[..words],
        });
        s.rings[gemm]
            .submit(&packet, &handles)
            .map_err(device_err("submit GEMM"))
    }

    /// Runs every program once on fixed pseudo-random int8 A and B (B in its own buffer) and
    /// checks `C == A·B` exactly against a host reference: the check `--device auto` makes
    /// before it takes the NPU. Not counted in [`NpuBackend::stats`].
    pub fn self_test(&self) -> Result<(), BackendError> {
        let mut s = self.session()?;
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 56) as u8 as i8
        };
        for (gi, g) in self.gemms.iter().enumerate() {
            let (k, n) = (g.k, g.n);
            let mut b = MappedBo::share(&self.device, k * n).map_err(device_err("self-test B"))?;
            let bb: &mut [i8] = bytemuck::cast_slice_mut(b.bytes_mut());
            bb.iter_mut().for_each(|v| *v = next().max(-127));
            b.flush(0..k * n);
            let tb = &mut s.tiles[0];
            let a: &mut [i8] = bytemuck::cast_slice_mut(&mut tb.a.bytes_mut()[..GEMM_ROWS * k]);
            a.iter_mut().for_each(|v| *v = next().max(-127));
            tb.a.flush(0..GEMM_ROWS * k);
            tb.c.flush(0..4 * GEMM_ROWS * n);
            let ticket = Self::submit(g, &mut s, gi, 0, &b)?;
            s.rings[gi]
                .wait(ticket)
                .map_err(device_err("self-test wait"))?;
            let tb = &s.tiles[0];
            tb.c.flush(0..4 * GEMM_ROWS * n);
            let a: &[i8] = bytemuck::cast_slice(&tb.a.bytes()[..GEMM_ROWS * k]);
            let c: &[i32] = bytemuck::cast_slice(&tb.c.bytes()[..4 * GEMM_ROWS * n]);
            let bb: &[i8] = bytemuck::cast_slice(b.bytes());
            let mut want = vec![0i32; n];
            for r in 0..GEMM_ROWS {
                want.fill(0);
                for (kk, &x) in a[r * k..(r + 1) * k].iter().enumerate() {
                    for (o, &y) in want.iter_mut().zip(&bb[kk * n..(kk + 1) * n]) {
                        *o += x as i32 * y as i32;
                    }
                }
                if let Some(j) = (0..n).find(|&j| c[r * n + j] != want[j]) {
                    return Err(BackendError::Device {
                        backend: "npu-int8",
                        op: "self-test",
                        reason: format!(
                            "K{k}×N{n}: C[{r}, {j}] = {} on the device, A·B = {}",
                            c[r * n + j],
                            want[j]
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Waits for a submitted block, invalidates its rows of C and dequantizes them into `out`.
    #[allow(clippy::too_many_arguments)]
    fn finish_block(
        &self,
        s: &mut GemmSession,
        b: InFlight,
        gemm: usize,
        n: usize,
        q: &QuantMatrix,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        let ns = |a: Instant, b: Instant| (b - a).as_nanos() as u64;
        let t2 = Instant::now();
        s.rings[gemm]
            .wait(b.ticket)
            .map_err(device_err("wait for GEMM"))?;
        let t3 = Instant::now();
        let tb = &s.tiles[b.tile];
        tb.c.flush(0..4 * b.m * n);
        let t4 = Instant::now();
        let c: &[i32] = bytemuck::cast_slice(&tb.c.bytes()[..4 * b.m * n]);
        for (r, acc) in c.chunks_exact(n).enumerate() {
            let o = &mut out[(b.r0 + r) * n..(b.r0 + r + 1) * n];
            dequantize_into(o, acc, tb.scales[r], q.scales(), bias, epilogue);
        }
        s.log.record(DispatchRecord {
            wait_ns: ns(t2, t3),
            invalidate_ns: ns(t3, t4),
            ..b.record
        });
        let c = &self.counters;
        c.submissions.fetch_add(1, Ordering::Relaxed);
        c.bytes_to_device
            .fetch_add(b.record.bytes - b.record.bytes_out, Ordering::Relaxed);
        c.bytes_from_device
            .fetch_add(b.record.bytes_out, Ordering::Relaxed);
        c.device_ns
            .fetch_add(b.record.submit_ns + ns(t2, t3), Ordering::Relaxed);
        Ok(())
    }
}

impl NpuScratch {
    /// This stream's dispatch records (one per submission), if it has a device session.
    pub fn dispatch_log(&self) -> Option<&DispatchLog> {
        self.session.as_ref().map(|s| &s.log)
    }
}

impl LayerKernels for NpuBackend {
    type Matrix = NpuMatrix;
    type KeyValues = Int8KeyValues;
    type Scratch = NpuScratch;

    fn name(&self) -> &'static str {
        if self.emulated() {
            "npu-emu-int8"
        } else {
            "npu-int8"
        }
    }

    fn default_threads(&self) -> usize {
        LayerKernels::default_threads(&self.cpu)
    }

    /// A host-only matrix (the device copy is made by [`Backend::matrix`]).
    fn matrix(&self, data: Vec<f32>, rows: usize, cols: usize) -> NpuMatrix {
        NpuMatrix {
            cpu: LayerKernels::matrix(&self.cpu, data, rows, cols),
            device: None,
        }
    }

    /// A host-only matrix (the device copy is made by [`Backend::matrix_q8`]).
    fn matrix_q8(&self, q: QuantMatrix) -> NpuMatrix {
        NpuMatrix {
            cpu: self.cpu.matrix_from_quantized(q),
            device: None,
        }
    }

    fn matrix_shape(&self, w: &NpuMatrix) -> (usize, usize) {
        (w.cpu.rows(), w.cpu.cols())
    }

    fn scratch(&self, threads: usize) -> NpuScratch {
        NpuScratch {
            cpu: self.cpu.scratch(threads),
            session: None,
        }
    }

    fn reserve_linear(&self, s: &mut NpuScratch, rows: usize, w: &NpuMatrix) {
        self.cpu.reserve_linear(&mut s.cpu, rows, &w.cpu);
    }

    fn reserve_attention(&self, s: &mut NpuScratch, shape: &AttentionShape) -> usize {
        self.cpu.reserve_attention(&mut s.cpu, shape)
    }

    fn reserve_attention_prepared(&self, s: &mut NpuScratch, shape: &AttentionShape) -> usize {
        self.cpu.reserve_attention_prepared(&mut s.cpu, shape)
    }

    /// The host kernels (device linears go through [`LayerKernels::try_linear`]).
    fn linear(
        &self,
        s: &mut NpuScratch,
        x: &[f32],
        rows: usize,
        w: &NpuMatrix,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &mut [f32],
    ) {
        self.cpu
            .linear(&mut s.cpu, x, rows, &w.cpu, bias, epilogue, out);
    }

    fn try_linear(
        &self,
        s: &mut NpuScratch,
        x: &[f32],
        rows: usize,
        w: &NpuMatrix,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        match (&w.device, &w.cpu, s.session.as_mut()) {
            (Some(dw), Int8OrF32Matrix::Int8(q), Some(session)) => {
                self.device_linear(session, x, rows, dw, q, bias, epilogue, out)
            }
            _ => {
                self.linear(s, x, rows, w, bias, epilogue, out);
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn conv1d_k3(
        &self,
        s: &mut NpuScratch,
        x: &[f32],
        t_in: usize,
        w: &NpuMatrix,
        bias: &[f32],
        stride: usize,
        epilogue: Epilogue,
        out: &mut [f32],
    ) {
        self.cpu
            .conv1d_k3(&mut s.cpu, x, t_in, &w.cpu, bias, stride, epilogue, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_norm(
        &self,
        s: &mut NpuScratch,
        x: &[f32],
        rows: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        out: &mut [f32],
    ) {
        self.cpu
            .layer_norm(&mut s.cpu, x, rows, gamma, beta, eps, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        s: &mut NpuScratch,
        shape: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        self.cpu.attention(&mut s.cpu, shape, q, k, v, scratch, out);
    }

    fn key_values(&self, heads: usize, head_dim: usize, capacity: usize) -> Int8KeyValues {
        self.cpu.key_values(heads, head_dim, capacity)
    }

    fn key_values_len(&self, kv: &Int8KeyValues) -> usize {
        self.cpu.key_values_len(kv)
    }

    fn prepare_key_values(&self, s: &mut NpuScratch, k: &[f32], v: &[f32], kv: &mut Int8KeyValues) {
        self.cpu.prepare_key_values(&mut s.cpu, k, v, kv);
    }

    fn attention_prepared(
        &self,
        s: &mut NpuScratch,
        shape: &AttentionShape,
        q: &[f32],
        kv: &Int8KeyValues,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        self.cpu
            .attention_prepared(&mut s.cpu, shape, q, kv, scratch, out);
    }

    fn attention_weights(
        &self,
        shape: &AttentionShape,
        q: &[f32],
        kv: &Int8KeyValues,
        head: usize,
        out: &mut [f32],
    ) {
        self.cpu.attention_weights(shape, q, kv, head, out);
    }

    fn gather_rows(&self, table: &NpuMatrix, ids: &[u32], out: &mut [f32]) {
        self.cpu.gather_rows(&table.cpu, ids, out);
    }
}

impl Backend for NpuBackend {
    type Matrix = NpuMatrix;
    type Workspace = HostWorkspace<NpuBackend>;

    fn name(&self) -> &'static str {
        LayerKernels::name(self)
    }

    fn default_threads(&self) -> usize {
        LayerKernels::default_threads(self)
    }

    /// Quantized per output channel (as the CPU INT8 backend does), then as
    /// [`Backend::matrix_q8`].
    fn matrix(&self, data: Vec<f32>, rows: usize, cols: usize) -> Result<NpuMatrix, BackendError> {
        if data.len() != rows * cols {
            return Err(BackendError::Unsupported {
                backend: LayerKernels::name(self),
                reason: format!("{} values for a {rows}x{cols} matrix", data.len()),
            });
        }
        self.load_matrix(QuantMatrix::quantize(&data, rows, cols))
    }

    fn matrix_q8(&self, q: QuantMatrix) -> Result<NpuMatrix, BackendError> {
        self.load_matrix(q)
    }

    fn workspace(
        &self,
        program: &Program<NpuMatrix>,
        threads: usize,
    ) -> Result<Self::Workspace, BackendError> {
        let mut ws = HostWorkspace::new(self, program, threads);
        if program.matrices().iter().any(NpuMatrix::on_device) {
            ws.scratch_mut().session = Some(self.session()?);
        }
        Ok(ws)
    }

    fn run(
        &self,
        program: &Program<NpuMatrix>,
        stage: StageId,
        args: &StageArgs,
        ws: &mut Self::Workspace,
    ) -> Result<(), BackendError> {
        ws.run(self, program, stage, args)
    }

    fn read<'a>(
        &self,
        ws: &'a Self::Workspace,
        buffer: BufferId,
        range: std::ops::Range<usize>,
    ) -> Result<&'a [f32], BackendError> {
        ws.read(LayerKernels::name(self), buffer, range)
    }

    fn write(
        &self,
        ws: &mut Self::Workspace,
        buffer: BufferId,
        offset: usize,
        data: &[f32],
    ) -> Result<(), BackendError> {
        ws.write(LayerKernels::name(self), buffer, offset, data)
    }

    /// Device submissions of one call of `stage` at its linears' declared most rows
    /// (`⌈max_rows/128⌉` per device linear); the host ops are not submissions.
    fn submissions(&self, program: &Program<NpuMatrix>, stage: StageId) -> usize {
        program
            .stage(stage)
            .ops
            .iter()
            .map(|op| match op {
                Op::Linear { w, max_rows, .. } if program.matrix(*w).on_device() => {
                    max_rows.div_ceil(GEMM_ROWS)
                }
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::Rng;
    use crate::npu::ert::CmdState;
    use crate::stage::{At, Extent, Residency};

    fn fixture_programs() -> Vec<GemmProgramFiles> {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/npu-fixtures/1bit-monster");
        GemmProgramFiles::find_in(&dir, &[(512, 2048), (2048, 512)]).unwrap()
    }

    /// One linear of `w` (`[n, k]`) as a program: x → out, up to `max_rows` rows.
    fn linear_program<B: Backend>(
        b: &B,
        w: &QuantMatrix,
        bias: Option<Vec<f32>>,
        epilogue: Epilogue,
        max_rows: usize,
    ) -> (Program<B::Matrix>, BufferId, BufferId, StageId) {
        let mut p = Program::new();
        let (n, k) = (w.n_out(), w.k());
        let m = p.add_matrix(b.matrix_q8(w.clone()).unwrap());
        let bias = bias.map(|v| p.add_vector(v));
        let x = p.add_buffer("x", max_rows * k, Residency::Resident);
        let out = p.add_buffer("out", max_rows * n, Residency::Resident);
        let s = p.add_stage(
            "linear",
            vec![Op::Linear {
                x: At::start(x),
                out: At::start(out),
                rows: Extent::rows(1),
                max_rows,
                w: m,
                bias,
                epilogue,
            }],
        );
        (p, x, out, s)
    }

    #[test]
    fn device_linears_equal_the_cpu_int8_linears_bit_for_bit() {
        let programs = fixture_programs();
        let (emu, device) = emulated_device(&programs).unwrap();
        let npu = NpuBackend::new(device, &programs, 2).unwrap();
        let cpu = CpuInt8Backend::new(2);
        assert_eq!(npu.shapes(), vec![(512, 2048), (2048, 512)]);
        let mut rng = Rng::new(14);
        let mut expected_submissions = 0;
        let mut device_linears = 0;
        // (n, k, rows, epilogue, bias): both programs, rows around the 128-row tile, every
        // epilogue, and a shape no program has (runs on the CPU kernels).
        let cases = [
            (2048, 512, 1, Epilogue::Gelu, true),
            (2048, 512, 129, Epilogue::Gelu, true),
            (2048, 512, 300, Epilogue::Store, false),
            (512, 2048, 5, Epilogue::AddInto, true),
            (512, 2048, 128, Epilogue::Store, true),
            (512, 2048, 257, Epilogue::AddInto, false),
            (512, 512, 70, Epilogue::Store, true),
        ];
        for (n, k, rows, epilogue, with_bias) in cases {
            let w = QuantMatrix::quantize(&rng.vec(n * k, 0.2), n, k);
            let bias = with_bias.then(|| rng.vec(n, 0.5));
            let x = rng.vec(rows * k, 2.0);
            let start = rng.vec(rows * n, 1.0); // AddInto adds to it
            let (pn, xn, on, sn) = linear_program(&npu, &w, bias.clone(), epilogue, rows);
            let (pc, xc, oc, sc) = linear_program(&cpu, &w, bias, epilogue, rows);
            let on_device = (k, n) != (512, 512);
            assert_eq!(pn.matrix(crate::stage::MatrixId(0)).on_device(), on_device);
            let mut wn = npu.workspace(&pn, 2).unwrap();
            let mut wc = cpu.workspace(&pc, 2).unwrap();
            let args = StageArgs {
                rows,
                ..Default::default()
            };
            npu.write(&mut wn, xn, 0, &x).unwrap();
            npu.write(&mut wn, on, 0, &start).unwrap();
            cpu.write(&mut wc, xc, 0, &x).unwrap();
            cpu.write(&mut wc, oc, 0, &start).unwrap();
            npu.run(&pn, sn, &args, &mut wn).unwrap();
            cpu.run(&pc, sc, &args, &mut wc).unwrap();
            let got = npu.read(&wn, on, 0..rows * n).unwrap();
            let want = cpu.read(&wc, oc, 0..rows * n).unwrap();
            let diff = got
                .iter()
                .zip(want)
                .position(|(g, w)| g.to_bits() != w.to_bits());
            assert_eq!(diff, None, "n {n} k {k} rows {rows} {epilogue:?}");
            if on_device {
                expected_submissions += rows.div_ceil(GEMM_ROWS) as u64;
                device_linears += 1;
                assert_eq!(
                    npu.submissions(&pn, sn),
                    rows.div_ceil(GEMM_ROWS),
                    "declared submissions"
                );
                let log = wn.scratch().dispatch_log().unwrap();
                assert_eq!(log.total(), rows.div_ceil(GEMM_ROWS) as u64);
            } else {
                assert_eq!(npu.submissions(&pn, sn), 0);
            }
        }
        let s = npu.stats();
        assert_eq!(s.submissions, expected_submissions);
        assert_eq!(s.device_linears, device_linears);
        assert_eq!(s.weight_bytes, 6 * 512 * 2048);
        assert_eq!(emu.stats().submitted, expected_submissions);
        assert!(
            emu.command_errors().is_empty(),
            "{:?}",
            emu.command_errors()
        );
    }

    #[test]
    fn the_self_test_checks_c_equals_a_times_b() {
        let programs = fixture_programs();
        let (emu, device) = emulated_device(&programs).unwrap();
        let npu = NpuBackend::new(device, &programs, 1).unwrap();
        npu.self_test().unwrap();
        assert_eq!(emu.stats().submitted, 2);
        assert_eq!(npu.stats().submissions, 0, "not counted");
        // A device whose array computes something else fails it, naming the element.
        let emu = Arc::new(EmuDriver::new(emulated_config()));
        for p in &programs {
            let x = Xclbin::parse(&p.xclbin).unwrap();
            let pdi = x
                .aie_partition()
                .unwrap()
                .pdi_for_kernel(dpu_kernel_id(&x))
                .unwrap()
                .to_vec();
            let model = Int8GemmModel::new(p.k, p.n, 4).unwrap();
            emu.register_kernel(&pdi, move |io| {
                model.run(io)?;
                // One wrong bit in the last word of column 0's output.
                let out = io.output(0, 0).ok_or("no output")?;
                let last = out.len() - 1;
                out[last] ^= 1;
                Ok(())
            });
        }
        let device = Device::from_driver(emu.clone()).unwrap();
        let npu = NpuBackend::new(device, &programs, 1).unwrap();
        match npu.self_test() {
            Err(BackendError::Device { op, reason, .. }) => {
                assert_eq!(op, "self-test");
                assert!(reason.contains("on the device, A·B ="), "{reason}");
            }
            other => panic!("expected a failed self-test, got {other:?}"),
        }
    }

    #[test]
    fn a_failed_command_is_a_device_error_not_a_result() {
        let programs = fixture_programs();
        let (emu, device) = emulated_device(&programs).unwrap();
        let npu = NpuBackend::new(device, &programs, 1).unwrap();
        let mut rng = Rng::new(3);
        let w = QuantMatrix::quantize(&rng.vec(2048 * 512, 0.2), 2048, 512);
        let (p, x, out, s) = linear_program(&npu, &w, None, Epilogue::Store, 300);
        let mut ws = npu.workspace(&p, 1).unwrap();
        npu.write(&mut ws, x, 0, &rng.vec(300 * 512, 1.0)).unwrap();
        let args = StageArgs {
            rows: 300,
            ..Default::default()
        };
        // With a device that takes time, two blocks are in flight at once (never more).
        emu.set_latency(Duration::from_millis(20));
        npu.run(&p, s, &args, &mut ws).unwrap();
        assert_eq!(emu.stats().max_in_flight, 2);
        emu.set_latency(Duration::ZERO);
        let want = npu.read(&ws, out, 0..300 * 2048).unwrap().to_vec();
        // The 1st, then the 2nd (with the 1st in flight), then the 3rd block of a call fails.
        for nth in 1..=3 {
            emu.fail_exec(nth, CmdState::Error);
            match npu.run(&p, s, &args, &mut ws) {
                Err(BackendError::Device { op, reason, .. }) => {
                    assert_eq!(op, "wait for GEMM");
                    assert!(reason.contains("Error"), "{reason}");
                }
                other => panic!("block {nth}: expected a device error, got {other:?}"),
            }
            // The stream recovers: the next call runs and gives the same result.
            npu.run(&p, s, &args, &mut ws).unwrap();
            assert!(npu.read(&ws, out, 0..300 * 2048).unwrap() == want);
        }
    }
}
