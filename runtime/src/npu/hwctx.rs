//! Hardware contexts (npu-driver.md §2.4, §2.5, §2.9): create with the QoS buffer and
//! `num_tiles = column_width × core rows`, configure its CUs (1..=32, each a PDI in a DEV BO;
//! CU index = position, the bit of a command's CU mask), destroy (syncobj first, then the
//! context, then the PDI BOs). The sub-commands of one `ERT_CMD_CHAIN` may run on different CUs
//! of their context, never on another context's.

use std::sync::Arc;

use super::device::Device;
use super::driver::{release, retry_eintr, Driver};
use super::error::{ioctl_err, NpuError, Result};
use super::heap::{DevBo, Heap};
use super::uapi::{self, amdxdna_cu_config};
use super::xclbin::{AiePartition, Xclbin};

/// The 32-byte QoS buffer: zero (every QoS field "don't care"; priority 0 → firmware HIGH), with
/// `user_start_col` (bytes 24..28) = `USER_START_COL_NOT_REQUESTED` for a kernel that reads the
/// 32-byte layout (npu-driver.md §1.3 item 3).
pub fn qos_buffer() -> [u8; uapi::QOS_BUFFER_SIZE] {
    let mut q = [0u8; uapi::QOS_BUFFER_SIZE];
    q[24..28].copy_from_slice(&uapi::USER_START_COL_NOT_REQUESTED.to_le_bytes());
    q
}

/// Most CUs a context holds (`MAX_NUM_CUS`, `aie2_ctx.c`).
pub const MAX_CUS: usize = 32;

/// A hardware context with its timeline syncobj and (once configured) its PDI BOs.
pub struct HwContext {
    driver: Arc<dyn Driver>,
    handle: u32,
    syncobj: u32,
    columns: u16,
    pdis: Vec<DevBo>,
}

impl std::fmt::Debug for HwContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HwContext")
            .field("handle", &self.handle)
            .field("syncobj", &self.syncobj)
            .field("columns", &self.columns)
            .field("pdis", &self.pdis)
            .finish()
    }
}

impl HwContext {
    /// CREATE_HWCTX for a partition `columns` wide running up to `ops_per_cycle`.
    pub fn create(device: &Device, columns: u16, ops_per_cycle: u32) -> Result<Self> {
        let info = device.info();
        if columns == 0 || columns > info.columns() {
            return Err(NpuError::InvalidRequest {
                what: format!(
                    "partition of {columns} columns on a {}-column device",
                    info.columns()
                ),
            });
        }
        let num_tiles = columns as u32 * info.core_rows() as u32;
        let driver = device.driver().clone();
        let (handle, syncobj) =
            retry_eintr(|| driver.create_hwctx(&qos_buffer(), ops_per_cycle, num_tiles))
                .map_err(ioctl_err("CREATE_HWCTX"))?;
        if handle == 0 || syncobj == 0 {
            // Handle 0 is the driver's invalid marker: never destroy it; a valid context with
            // an invalid syncobj is destroyed (F8), so nothing leaks.
            if handle != 0 {
                let _ = release(|| driver.destroy_hwctx(handle));
            }
            return Err(NpuError::Protocol {
                what: format!("CREATE_HWCTX returned handle {handle}, syncobj {syncobj}"),
            });
        }
        Ok(Self {
            driver,
            handle,
            syncobj,
            columns,
            pdis: Vec::new(),
        })
    }

    /// CONFIG_HWCTX(CONFIG_CU) with one CU running `pdi` (copied into a new DEV BO and flushed).
    pub fn configure_cu(&mut self, heap: &Arc<Heap>, pdi: &[u8], cu_func: u8) -> Result<()> {
        self.configure_cus(heap, &[(pdi, cu_func)])
    }

    /// CONFIG_HWCTX(CONFIG_CU) with CU `i` running `cus[i]`'s PDI (each copied into its own
    /// DEV BO and flushed), at most [`MAX_CUS`]; a context is configured once.
    pub fn configure_cus(&mut self, heap: &Arc<Heap>, cus: &[(&[u8], u8)]) -> Result<()> {
        if !self.pdis.is_empty() {
            return Err(NpuError::InvalidRequest {
                what: "the CUs of this context are already configured".into(),
            });
        }
        if cus.is_empty() || cus.len() > MAX_CUS {
            return Err(NpuError::InvalidRequest {
                what: format!("{} CUs, a context takes 1..={MAX_CUS}", cus.len()),
            });
        }
        let mut bos = Vec::with_capacity(cus.len());
        let mut configs = Vec::with_capacity(cus.len());
        for &(pdi, cu_func) in cus {
            let mut bo = DevBo::create(heap, pdi.len())?;
            bo.bytes_mut().copy_from_slice(pdi);
            bo.flush(0..pdi.len());
            configs.push(amdxdna_cu_config {
                cu_bo: bo.handle(),
                cu_func,
                pad: [0; 3],
            });
            bos.push(bo);
        }
        retry_eintr(|| self.driver.config_cu(self.handle, &configs))
            .map_err(ioctl_err("CONFIG_HWCTX"))?;
        self.pdis = bos;
        Ok(())
    }

    /// Create a context for `xclbin`'s AIE partition with one CU per kernel of
    /// `dpu_kernel_ids`, in that order (CU `i` runs the PDI serving `dpu_kernel_ids[i]`).
    pub fn load_kernels(
        device: &Device,
        heap: &Arc<Heap>,
        xclbin: &Xclbin<'_>,
        dpu_kernel_ids: &[u64],
    ) -> Result<Self> {
        let partition: AiePartition<'_> = xclbin.aie_partition()?;
        let cus = dpu_kernel_ids
            .iter()
            .map(|&id| Ok((partition.pdi_for_kernel(id)?, cu_func_of(xclbin, id)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut ctx = Self::create(
            device,
            partition.column_width,
            partition.operations_per_cycle,
        )?;
        ctx.configure_cus(heap, &cus)?;
        Ok(ctx)
    }

    /// CUs configured.
    pub fn cus(&self) -> usize {
        self.pdis.len()
    }

    /// Create and configure a context for `xclbin`'s AIE partition and the PDI that serves
    /// `dpu_kernel_id` (mlir-aie: [`super::xclbin::MLIR_AIE_DPU_KERNEL_ID`]); `cu_func` from the
    /// kernel metadata's `functional` (0 when absent).
    pub fn load(
        device: &Device,
        heap: &Arc<Heap>,
        xclbin: &Xclbin<'_>,
        dpu_kernel_id: u64,
    ) -> Result<Self> {
        let partition: AiePartition<'_> = xclbin.aie_partition()?;
        let pdi = partition.pdi_for_kernel(dpu_kernel_id)?;
        let cu_func = cu_func_of(xclbin, dpu_kernel_id)?;
        let mut ctx = Self::create(
            device,
            partition.column_width,
            partition.operations_per_cycle,
        )?;
        ctx.configure_cu(heap, pdi, cu_func)?;
        Ok(ctx)
    }

    /// Context handle.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// The context's timeline syncobj.
    pub fn syncobj(&self) -> u32 {
        self.syncobj
    }

    /// Partition width in columns.
    pub fn columns(&self) -> u16 {
        self.columns
    }

    /// The driver.
    pub(crate) fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }
}

/// The CU function code of the kernel with `dpu_kernel_id` (its `functional` attribute; 0 when
/// the xclbin has no kernel metadata).
pub fn cu_func_of(xclbin: &Xclbin<'_>, dpu_kernel_id: u64) -> Result<u8> {
    let cu_func = match xclbin.kernels() {
        Ok(ks) => ks
            .iter()
            .find(|k| k.dpu_kernel_id == Some(dpu_kernel_id))
            .and_then(|k| k.functional)
            .unwrap_or(0),
        Err(_) => 0,
    };
    u8::try_from(cu_func).map_err(|_| NpuError::InvalidRequest {
        what: format!("cu_func {cu_func} does not fit 8 bits"),
    })
}

impl Drop for HwContext {
    fn drop(&mut self) {
        // SYNCOBJ_DESTROY then DESTROY_HWCTX (the XRT shim's order); the PDI BOs are closed after,
        // when the field drops. Errors cannot be reported from Drop.
        let _ = release(|| self.driver.syncobj_destroy(self.syncobj));
        let _ = release(|| self.driver.destroy_hwctx(self.handle));
    }
}
