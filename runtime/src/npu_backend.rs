//! The NPU backend: the CPU INT8 backend with the linear layers computed on the NPU (a real
//! amdxdna device or the emulated one) by one of two kinds of device program.
//!
//! **Fixture GEMM programs** ([`GemmProgramFiles`]: a prebuilt xclbin and its TXN instruction
//! stream, real compiled kernels) are a fixed 128-row tile `C[128×N] i32 = A[128×K] i8 ·
//! B[K×N] i8`, A and C row-major, B `K×N` row-major (the transpose of the `[out, in]` weight).
//! They do no scaling: the host quantizes the activations per row exactly as the CPU INT8 path
//! does ([`quantize_row`]), and applies the dequantize / bias / epilogue with the same code
//! ([`dequantize_into`]), so a device linear is bit-identical to [`crate::q8::gemm_q8`]. Per
//! linear call of `rows` rows: `⌈rows/128⌉` submissions, each writing its rows of A (the rest
//! zeroed; only the bytes that changed flushed), submitting `(instr, A, B, C)`, waiting,
//! invalidating the rows of C it reads; two A/C pairs keep two submissions in flight (the host
//! prepares block `i + 1` while the device runs block `i`). At load: one hardware context per
//! program, the stream validated against the buffer sizes ([`crate::npu::txn::validate`]) and
//! copied once into a DEV BO; every INT8 weight of a matching `(K, N)` repacked once into its B
//! layout in its own BO.
//!
//! **Our GEMM design** ([`crate::aie_gemm`], enabled by [`NpuBackend::with_emulated_designs`];
//! on the emulated device only, since none of its xclbins has been built) takes every other
//! INT8 linear whose `(K, N)` are multiples of 64: one submission per linear call for any row
//! count, the dequantize / bias / GELU epilogue on the device (`AddInto`: the host adds the
//! device's result), the weight image (the file's INT8 tiles byte for byte, then each block's
//! scales and bias) uploaded once, when the first workspace declares the linear (its bias and
//! epilogue are known then). Bit-identical to `gemm_q8` as well.
//!
//! Per workspace (stream): the fixture programs' two A and two C BOs, one activation image and
//! one output BO for our design sized for the program's largest linear, one command ring per
//! program and design; nothing is allocated per call. Every other op (attention, norms, the
//! conv stem, linears no program takes, such as a vocabulary-wide logits projection) runs on
//! the CPU INT8 kernels. Nothing here knows which network it runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use amanuensis_aie::design::Mapping;
use amanuensis_aie::kernels::matmul::EpilogueMode;
use amanuensis_aie::program::images::{activation_image_len, output_len, weight_image};
use amanuensis_aie::txn::Target;

use crate::aie_gemm::{
    emulated_xclbin, register_array_model, AieGemm, DesignKey, EMULATED_TARGET, SPREAD_MAX_ROWS,
};
use crate::backend::{AttentionShape, Backend, BackendError, Epilogue, LayerKernels};
use crate::cpu_int8_backend::{
    CpuInt8Backend, Int8KeyValueCache, Int8KeyValues, Int8OrF32Matrix, Int8Scratch,
};
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
use crate::stage::{BufferId, KeyValueCacheSpec, Op, Program, StageArgs, StageId};

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
    aie: Option<AieDesigns>,
    heap: Arc<Heap>,
    device: Device,
    counters: Counters,
    timeout: Duration,
}

/// Our GEMM design's programs ([`crate::aie_gemm`]) on the emulated device: loaded the first
/// time a workspace declares a linear of their shape.
struct AieDesigns {
    emu: Arc<EmuDriver>,
    target: Target,
    /// Every loaded design; a design's `id` is its index.
    loaded: Mutex<Vec<Arc<AieGemm>>>,
}

/// A weight matrix of [`NpuBackend`]: the CPU INT8 form, and the B layout on the device when a
/// loaded fixture program has its shape, or else the weight image of our GEMM design (made
/// when the first workspace declares the linear: its bias and epilogue go into the image).
pub struct NpuMatrix {
    cpu: Int8OrF32Matrix,
    device: Option<DeviceWeights>,
    aie: OnceLock<AieWeights>,
}

/// A matrix's weight image for our GEMM design (`amanuensis_aie::program::images`): the
/// file's INT8 tiles byte for byte per 64-channel block, then the block's scales and bias.
struct AieWeights {
    /// The design for encoder-sized row counts.
    rows: Arc<AieGemm>,
    /// The decoder mapping, for up to [`SPREAD_MAX_ROWS`] rows, when it takes the shape.
    spread: Option<Arc<AieGemm>>,
    image: MappedBo,
    /// The bias vector the image holds (address and length) and the epilogue compiled in:
    /// a linear with another bias or epilogue on the same matrix runs on the host.
    bias: Option<(usize, usize)>,
    mode: EpilogueMode,
}

impl AieWeights {
    /// Whether a linear with `bias` and `epilogue` is what the image and design compute
    /// (`AddInto` = `Store` on the device, the host adds).
    fn computes(&self, bias: Option<&[f32]>, epilogue: Epilogue) -> bool {
        self.bias == bias.map(|b| (b.as_ptr() as usize, b.len())) && self.mode == mode_of(epilogue)
    }

    /// The design for `rows` rows.
    fn design_for(&self, rows: usize) -> &Arc<AieGemm> {
        match &self.spread {
            Some(s) if rows <= SPREAD_MAX_ROWS => s,
            _ => &self.rows,
        }
    }
}

fn mode_of(e: Epilogue) -> EpilogueMode {
    match e {
        Epilogue::Gelu => EpilogueMode::Gelu,
        Epilogue::Store | Epilogue::AddInto => EpilogueMode::Store,
    }
}

struct DeviceWeights {
    gemm: usize,
    b: MappedBo,
}

impl NpuMatrix {
    /// Whether this matrix's linear runs on the device.
    pub fn on_device(&self) -> bool {
        self.device.is_some() || self.aie.get().is_some()
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
    /// Buffers of our GEMM design's submissions.
    aie: Option<AieSession>,
}

/// A stream's buffers for our GEMM design: one activation image and one output, sized for the
/// largest linear its program declares, and one command ring per design loaded when it was made.
struct AieSession {
    a: MappedBo,
    c: MappedBo,
    /// Bytes of `a` that may be non-zero in device memory (the rest is zero).
    a_extent: usize,
    rings: Vec<CommandRing>,
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
            aie: None,
            heap,
            device,
            counters: Counters::default(),
            timeout: SUBMISSION_TIMEOUT,
        })
    }

    /// Also runs every other INT8 linear whose `(K, N)` are multiples of 64 on our own GEMM
    /// design ([`crate::aie_gemm`]), on the emulated device `emu` (this backend's device):
    /// its xclbins exist only there (see the module docs of `aie_gemm`).
    pub fn with_emulated_designs(mut self, emu: Arc<EmuDriver>) -> Self {
        self.aie = Some(AieDesigns {
            emu,
            target: EMULATED_TARGET,
            loaded: Mutex::new(Vec::new()),
        });
        self
    }

    /// Why commands of the emulated device ended in a state other than COMPLETED (a stream
    /// the validator refused, an array-model failure), oldest first; empty on a real device
    /// (its failures are errors of the calls that waited for them).
    pub fn emulator_command_errors(&self) -> Vec<String> {
        self.aie
            .as_ref()
            .map_or_else(Vec::new, |a| a.emu.command_errors())
    }

    /// The designs loaded so far: `(K, N, GELU, decoder mapping)`.
    pub fn designs(&self) -> Vec<(usize, usize, bool, bool)> {
        self.aie.as_ref().map_or_else(Vec::new, |a| {
            a.loaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|g| {
                    let k = g.key;
                    (
                        k.k,
                        k.n,
                        k.mode == EpilogueMode::Gelu,
                        k.mapping == Mapping::ChannelSpread,
                    )
                })
                .collect()
        })
    }

    /// The design `key`, loaded (context, emulated array model) if it is not yet.
    fn aie_design(
        &self,
        aie: &AieDesigns,
        loaded: &mut Vec<Arc<AieGemm>>,
        key: DesignKey,
    ) -> Result<Arc<AieGemm>, BackendError> {
        if let Some(g) = loaded.iter().find(|g| g.key == key) {
            return Ok(g.clone());
        }
        register_array_model(&aie.emu, aie.target, key).map_err(device_err("load GEMM design"))?;
        let g = AieGemm::load(
            loaded.len(),
            &self.device,
            &self.heap,
            aie.target,
            key,
            &emulated_xclbin(aie.target, &key),
        )
        .map_err(device_err("load GEMM design"))?;
        let g = Arc::new(g);
        loaded.push(g.clone());
        Ok(g)
    }

    /// The weight image of `q` with `bias` for `mode`, uploaded once; `None` when our design
    /// does not take the shape (the linear stays on the host).
    fn aie_weights(
        &self,
        aie: &AieDesigns,
        loaded: &mut Vec<Arc<AieGemm>>,
        q: &QuantMatrix,
        bias: Option<&[f32]>,
        mode: EpilogueMode,
    ) -> Result<Option<AieWeights>, BackendError> {
        let (k, n) = (q.k(), q.n_out());
        if k % 64 != 0 || n % 64 != 0 {
            return Ok(None);
        }
        let key = |mapping| DesignKey {
            k,
            n,
            mode,
            mapping,
        };
        if key(Mapping::RowBlocks).design(aie.target).is_err() {
            return Ok(None);
        }
        let rows = self.aie_design(aie, loaded, key(Mapping::RowBlocks))?;
        let spread = match key(Mapping::ChannelSpread).design(aie.target) {
            Ok(_) => Some(self.aie_design(aie, loaded, key(Mapping::ChannelSpread))?),
            Err(_) => None,
        };
        // The decoder mapping's image (whole quads of blocks) also serves the row mapping,
        // which reads only the first `n/64` blocks: one image per matrix.
        let d = spread.as_ref().map_or(&rows.design, |s| &s.design);
        let image = weight_image(d, q.data(), q.scales(), bias);
        let mut bo =
            MappedBo::share(&self.device, image.len()).map_err(device_err("allocate weights"))?;
        bo.bytes_mut()[..image.len()].copy_from_slice(&image);
        bo.flush(0..image.len());
        self.counters
            .weight_bytes
            .fetch_add(image.len() as u64, Ordering::Relaxed);
        Ok(Some(AieWeights {
            rows,
            spread,
            image: bo,
            bias: bias.map(|b| (b.as_ptr() as usize, b.len())),
            mode,
        }))
    }

    /// For every linear of `program` our design computes: its weight image (once per matrix)
    /// and its instruction streams up to the declared rows. Returns the activation-image and
    /// output bytes a session needs, if any linear is on the design.
    fn prepare_aie(
        &self,
        program: &Program<NpuMatrix>,
    ) -> Result<Option<(usize, usize)>, BackendError> {
        let Some(aie) = &self.aie else {
            return Ok(None);
        };
        let mut loaded = aie.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sizes: Option<(usize, usize)> = None;
        for op in program.stages().iter().flat_map(|s| &s.ops) {
            let Op::Linear {
                w,
                bias,
                epilogue,
                max_rows,
                ..
            } = op
            else {
                continue;
            };
            let m = program.matrix(*w);
            let (Int8OrF32Matrix::Int8(q), None) = (&m.cpu, &m.device) else {
                continue;
            };
            let bias = bias.map(|b| program.vector(b));
            if m.aie.get().is_none() {
                match self.aie_weights(aie, &mut loaded, q, bias, mode_of(*epilogue))? {
                    Some(wts) => {
                        let _ = m.aie.set(wts);
                    }
                    None => continue,
                }
            }
            let Some(wts) = m.aie.get().filter(|w| w.computes(bias, *epilogue)) else {
                continue;
            };
            let rows = (*max_rows).max(1);
            wts.rows
                .ensure_rows(&self.heap, rows)
                .map_err(device_err("load GEMM stream"))?;
            let (mut a, mut c) = (
                activation_image_len(&wts.rows.design, rows),
                output_len(&wts.rows.design, rows),
            );
            if let Some(sp) = &wts.spread {
                sp.ensure_rows(&self.heap, rows.min(SPREAD_MAX_ROWS))
                    .map_err(device_err("load GEMM stream"))?;
                a = a.max(activation_image_len(&sp.design, SPREAD_MAX_ROWS));
                c = c.max(output_len(&sp.design, SPREAD_MAX_ROWS));
            }
            let (sa, sc) = sizes.unwrap_or((0, 0));
            sizes = Some((sa.max(a), sc.max(c)));
        }
        Ok(sizes)
    }

    /// A stream's buffers for our design's linears: `a_len` / `c_len` bytes, a ring per design.
    fn aie_session(&self, a_len: usize, c_len: usize) -> Result<AieSession, BackendError> {
        let designs: Vec<Arc<AieGemm>> = self.aie.as_ref().map_or_else(Vec::new, |a| {
            a.loaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        });
        let rings = designs
            .iter()
            .map(|g| CommandRing::new(&self.device, g.ctx.clone(), 1, self.timeout))
            .collect::<Result<Vec<_>, _>>()
            .map_err(device_err("create command ring"))?;
        Ok(AieSession {
            a: MappedBo::share(&self.device, a_len).map_err(device_err("allocate A"))?,
            c: MappedBo::share(&self.device, c_len).map_err(device_err("allocate C"))?,
            // Zeroed and flushed whole by the first submission.
            a_extent: a_len,
            rings,
        })
    }

    /// `out = epilogue(x · wᵀ + bias)` on our design in one submission: the rows quantized
    /// into the activation image (as the CPU INT8 path quantizes them), the dequantize / bias /
    /// GELU on the device, `AddInto` added by the host. `Ok(false)`: this session has no ring
    /// or stream for it (the caller runs it on the host).
    #[allow(clippy::too_many_arguments)]
    fn aie_linear(
        &self,
        s: &mut GemmSession,
        x: &[f32],
        rows: usize,
        w: &AieWeights,
        epilogue: Epilogue,
        out: &mut [f32],
    ) -> Result<bool, BackendError> {
        if rows == 0 {
            return Ok(true);
        }
        let g = w.design_for(rows);
        let (Some(session), Some((instr_addr, instr_handle, instr_words))) =
            (s.aie.as_mut(), g.stream(rows))
        else {
            return Ok(false);
        };
        let Some(ring) = session.rings.get_mut(g.id) else {
            return Ok(false);
        };
        let d = &g.design;
        let (k, n, width) = (d.k, d.n, d.out_width());
        let row_bytes = d.activation_row_bytes();
        let ns = |a: Instant, b: Instant| (b - a).as_nanos() as u64;
        let t0 = Instant::now();
        // Rows: k codes, the row's scale (f32 LE), zeros; rows past `rows` zero in device
        // memory (only what the last call left beyond them is cleared and flushed).
        let used = rows * row_bytes;
        let extent = session.a_extent.max(used);
        let a = &mut session.a.bytes_mut()[..extent];
        for (r, row) in a[..used].chunks_exact_mut(row_bytes).enumerate() {
            let (codes, tail) = row.split_at_mut(k);
            let scale = quantize_row(&x[r * k..(r + 1) * k], bytemuck::cast_slice_mut(codes));
            tail[..4].copy_from_slice(&scale.to_le_bytes());
            tail[4..].fill(0);
        }
        a[used..].fill(0);
        session.a.flush(0..extent);
        session.a_extent = used;
        let t1 = Instant::now();
        let words = g
            .layout
            .write(
                MLIR_AIE_OPCODE_TXN,
                instr_addr,
                instr_words,
                &[
                    session.a.device_addr(),
                    w.image.device_addr(),
                    session.c.device_addr(),
                ],
                &mut s.regmap,
            )
            .map_err(|e| {
                device_err("build command")(NpuError::InvalidRequest {
                    what: e.to_string(),
                })
            })?;
        let handles = [
            instr_handle,
            session.a.handle(),
            w.image.handle(),
            session.c.handle(),
        ];
        let packet = Packet::StartCu(StartCu {
            cu_mask: 1,
            regmap: &s.regmap[..words],
        });
        let ticket = ring
            .submit(&packet, &handles)
            .map_err(device_err("submit GEMM"))?;
        let t2 = Instant::now();
        if let Err(e) = ring.wait(ticket) {
            let _ = ring.drain();
            return Err(device_err("wait for GEMM")(e));
        }
        let t3 = Instant::now();
        let c_bytes = 4 * rows * width;
        session.c.flush(0..c_bytes);
        let t4 = Instant::now();
        let c: &[f32] = bytemuck::cast_slice(&session.c.bytes()[..c_bytes]);
        for (o, r) in out[..rows * n]
            .chunks_exact_mut(n)
            .zip(c.chunks_exact(width))
        {
            match epilogue {
                Epilogue::AddInto => o.iter_mut().zip(r).for_each(|(o, v)| *o += v),
                Epilogue::Store | Epilogue::Gelu => o.copy_from_slice(&r[..n]),
            }
        }
        let record = DispatchRecord {
            bytes: (extent + c_bytes) as u64,
            bytes_out: c_bytes as u64,
            flush_ns: ns(t0, t1),
            submit_ns: ns(t1, t2),
            wait_ns: ns(t2, t3),
            invalidate_ns: ns(t3, t4),
            macs: (d.padded_rows(rows) * k * width) as u64,
        };
        s.log.record(record);
        let c = &self.counters;
        c.submissions.fetch_add(1, Ordering::Relaxed);
        c.device_linears.fetch_add(1, Ordering::Relaxed);
        c.bytes_to_device
            .fetch_add(extent as u64, Ordering::Relaxed);
        c.bytes_from_device
            .fetch_add(c_bytes as u64, Ordering::Relaxed);
        c.device_ns.fetch_add(ns(t1, t3), Ordering::Relaxed);
        Ok(true)
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
            aie: OnceLock::new(),
        })
    }

    fn session(&self) -> Result<GemmSession, BackendError> {
        let k = self.gemms.iter().map(|g| g.k).max().unwrap_or(1);
        let n = self.gemms.iter().map(|g| g.n).max().unwrap_or(1);
        let aie_words = self.aie.as_ref().map_or(0, |a| {
            a.loaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|g| g.layout.words())
                .max()
                .unwrap_or(0)
        });
        let words = self
            .gemms
            .iter()
            .map(|g| g.layout.words())
            .max()
            .unwrap_or(0)
            .max(aie_words);
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
            aie: None,
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
                macs: (GEMM_ROWS * k * n) as u64,
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
    type KeyValueCache = Int8KeyValueCache;

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
            aie: OnceLock::new(),
        }
    }

    /// A host-only matrix (the device copy is made by [`Backend::matrix_q8`]).
    fn matrix_q8(&self, q: QuantMatrix) -> NpuMatrix {
        NpuMatrix {
            cpu: self.cpu.matrix_from_quantized(q),
            device: None,
            aie: OnceLock::new(),
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
                return self.device_linear(session, x, rows, dw, q, bias, epilogue, out);
            }
            (None, Int8OrF32Matrix::Int8(_), Some(session)) => {
                if let Some(aw) = w.aie.get().filter(|a| a.computes(bias, epilogue)) {
                    if self.aie_linear(session, x, rows, aw, epilogue, out)? {
                        return Ok(());
                    }
                }
            }
            _ => {}
        }
        self.linear(s, x, rows, w, bias, epilogue, out);
        Ok(())
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

    fn key_value_cache(&self, spec: &KeyValueCacheSpec) -> Int8KeyValueCache {
        self.cpu.key_value_cache(spec)
    }

    fn reserve_cache_attention(&self, s: &mut NpuScratch, shape: &AttentionShape) -> usize {
        self.cpu.reserve_cache_attention(&mut s.cpu, shape)
    }

    fn cache_write(
        &self,
        cache: &mut Int8KeyValueCache,
        slot: usize,
        pos: usize,
        k: &[f32],
        v: &[f32],
    ) {
        self.cpu.cache_write(cache, slot, pos, k, v);
    }

    fn cache_attention(
        &self,
        s: &mut NpuScratch,
        shape: &AttentionShape,
        q: &[f32],
        cache: &Int8KeyValueCache,
        slot: usize,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        self.cpu
            .cache_attention(&mut s.cpu, shape, q, cache, slot, scratch, out);
    }

    fn cache_copy_slot(&self, cache: &mut Int8KeyValueCache, from: usize, to: usize, len: usize) {
        self.cpu.cache_copy_slot(cache, from, to, len);
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
        let aie = self.prepare_aie(program)?;
        if program.matrices().iter().any(NpuMatrix::on_device) {
            let mut session = self.session()?;
            if let Some((a_len, c_len)) = aie {
                session.aie = Some(self.aie_session(a_len, c_len)?);
            }
            ws.scratch_mut().session = Some(session);
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
                Op::Linear {
                    w,
                    max_rows,
                    bias,
                    epilogue,
                    ..
                } => {
                    let m = program.matrix(*w);
                    let bias = bias.map(|b| program.vector(b));
                    if m.device.is_some() {
                        max_rows.div_ceil(GEMM_ROWS)
                    } else if m.aie.get().is_some_and(|a| a.computes(bias, *epilogue)) {
                        1
                    } else {
                        0
                    }
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
    fn our_gemm_design_equals_the_cpu_int8_linears_bit_for_bit() {
        // No fixture program: every INT8 linear with K, N multiples of 64 on our design.
        let (emu, device) = emulated_device(&[]).unwrap();
        let npu = NpuBackend::new(device, &[], 2)
            .unwrap()
            .with_emulated_designs(emu.clone());
        let cpu = CpuInt8Backend::new(2);
        let mut rng = Rng::new(41);
        // (n, k, rows, epilogue, bias): tiny's and base's shapes, decoder rows (the decoder
        // mapping), encoder rows around the 128-row super-blocks, every epilogue, and a shape
        // the design does not take (n not a multiple of 64: on the host).
        let cases = [
            (384, 384, 1, Epilogue::Store, true),
            (1536, 384, 5, Epilogue::Gelu, true),
            (384, 1536, 32, Epilogue::AddInto, true),
            (384, 384, 33, Epilogue::Store, false),
            (1536, 384, 129, Epilogue::Gelu, true),
            (512, 2048, 300, Epilogue::AddInto, true),
            (512, 512, 3, Epilogue::AddInto, false),
            (100, 384, 7, Epilogue::Store, true),
        ];
        let mut submissions = 0;
        for (n, k, rows, epilogue, with_bias) in cases {
            let w = QuantMatrix::quantize(&rng.vec(n * k, 0.2), n, k);
            let bias = with_bias.then(|| rng.vec(n, 0.5));
            let x = rng.vec(rows * k, 2.0);
            let start = rng.vec(rows * n, 1.0);
            let (pn, xn, on, sn) = linear_program(&npu, &w, bias.clone(), epilogue, rows);
            let (pc, xc, oc, sc) = linear_program(&cpu, &w, bias, epilogue, rows);
            let mut wn = npu.workspace(&pn, 2).unwrap();
            let mut wc = cpu.workspace(&pc, 2).unwrap();
            let on_device = n % 64 == 0;
            assert_eq!(pn.matrix(crate::stage::MatrixId(0)).on_device(), on_device);
            let args = StageArgs {
                rows,
                ..Default::default()
            };
            // Twice: the second call finds the activation image dirty from the first.
            for _ in 0..2 {
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
            }
            assert_eq!(npu.submissions(&pn, sn), usize::from(on_device));
            submissions += 2 * u64::from(on_device);
            if on_device {
                assert_eq!(wn.scratch().dispatch_log().unwrap().total(), 2);
            }
        }
        assert_eq!(npu.stats().submissions, submissions);
        assert_eq!(emu.stats().submitted, submissions);
        assert!(
            emu.command_errors().is_empty(),
            "{:?}",
            emu.command_errors()
        );
        // Both mappings of each (K, N, epilogue) that ran, loaded once.
        let designs = npu.designs();
        assert!(designs.contains(&(384, 1536, true, true)), "{designs:?}");
        assert!(designs.contains(&(384, 1536, true, false)), "{designs:?}");
        assert!(designs.len() <= 2 * 6, "{designs:?}");
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
