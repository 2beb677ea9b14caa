//! All the BOs a model needs, allocated once at load; dispatches get views into them.
//!
//! An [`ArenaPlan`] lists named data buffers and instruction streams. [`BoArena::allocate`]
//! packs the data buffers into one SHARE BO and the instruction streams into one DEV BO (each
//! view page-aligned), and precomputes the EXEC_CMD handle list. After that nothing is
//! allocated: a view is an index, its device address and bytes are looked up in O(1).

use std::sync::Arc;

use super::bo::MappedBo;
use super::device::Device;
use super::error::{NpuError, Result};
use super::heap::{DevBo, Heap};

/// Alignment of each view inside its BO.
pub const VIEW_ALIGN: usize = 4096;

/// Identifies a view of a [`BoArena`]; returned by [`ArenaPlan`] before allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufferId(usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Region {
    Data,
    Instructions,
}

#[derive(Clone, Debug)]
struct View {
    name: String,
    region: Region,
    offset: usize,
    len: usize,
}

/// What to allocate.
#[derive(Clone, Debug, Default)]
pub struct ArenaPlan {
    views: Vec<View>,
    data_len: usize,
    instr_len: usize,
}

impl ArenaPlan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&mut self, name: &str, region: Region, len: usize) -> BufferId {
        let end = match region {
            Region::Data => &mut self.data_len,
            Region::Instructions => &mut self.instr_len,
        };
        let offset = *end;
        *end += len.max(1).next_multiple_of(VIEW_ALIGN);
        self.views.push(View {
            name: name.to_string(),
            region,
            offset,
            len,
        });
        BufferId(self.views.len() - 1)
    }

    /// A host-shared data buffer of `len` bytes (inputs, outputs, weights).
    pub fn buffer(&mut self, name: &str, len: usize) -> BufferId {
        self.add(name, Region::Data, len)
    }

    /// An instruction stream of `words` u32 words (lives in the device heap).
    pub fn instructions(&mut self, name: &str, words: usize) -> BufferId {
        self.add(name, Region::Instructions, 4 * words)
    }
}

/// The allocated BOs and their views.
pub struct BoArena {
    data: Option<MappedBo>,
    instr: Option<DevBo>,
    views: Vec<View>,
    handles: Vec<u32>,
}

impl std::fmt::Debug for BoArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoArena")
            .field("data", &self.data)
            .field("instr", &self.instr)
            .field("views", &self.views.len())
            .finish()
    }
}

impl BoArena {
    /// Create the (at most two) BOs of `plan`.
    pub fn allocate(device: &Device, heap: &Arc<Heap>, plan: &ArenaPlan) -> Result<Self> {
        let instr = (plan.instr_len > 0)
            .then(|| DevBo::create(heap, plan.instr_len))
            .transpose()?;
        let data = (plan.data_len > 0)
            .then(|| MappedBo::share(device, plan.data_len))
            .transpose()?;
        let handles = instr
            .iter()
            .map(|b| b.handle())
            .chain(data.iter().map(|b| b.handle()))
            .collect();
        Ok(Self {
            data,
            instr,
            views: plan.views.clone(),
            handles,
        })
    }

    fn view(&self, id: BufferId) -> &View {
        &self.views[id.0]
    }

    /// The view named `name`.
    pub fn id(&self, name: &str) -> Result<BufferId> {
        self.views
            .iter()
            .position(|v| v.name == name)
            .map(BufferId)
            .ok_or_else(|| NpuError::InvalidRequest {
                what: format!("no arena buffer named '{name}'"),
            })
    }

    /// Length of a view in bytes.
    pub fn len(&self, id: BufferId) -> usize {
        self.view(id).len
    }

    /// Whether the arena has no views.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// Device address of a view's first byte.
    pub fn device_addr(&self, id: BufferId) -> u64 {
        let v = self.view(id);
        let base = match v.region {
            Region::Data => self.data.as_ref().map(|b| b.device_addr()),
            Region::Instructions => self.instr.as_ref().map(|b| b.device_addr()),
        };
        base.expect("a planned region is allocated") + v.offset as u64
    }

    /// A view's bytes.
    pub fn bytes(&self, id: BufferId) -> &[u8] {
        let v = self.view(id);
        let all = match v.region {
            Region::Data => self.data.as_ref().map(|b| b.bytes()),
            Region::Instructions => self.instr.as_ref().map(|b| b.bytes()),
        };
        &all.expect("a planned region is allocated")[v.offset..v.offset + v.len]
    }

    /// A view's bytes, writable.
    pub fn bytes_mut(&mut self, id: BufferId) -> &mut [u8] {
        let v = &self.views[id.0];
        let all = match v.region {
            Region::Data => self.data.as_mut().map(|b| b.bytes_mut()),
            Region::Instructions => self.instr.as_mut().map(|b| b.bytes_mut()),
        };
        &mut all.expect("a planned region is allocated")[v.offset..v.offset + v.len]
    }

    /// Write instruction words into an instruction view (and flush them).
    pub fn write_instructions(&mut self, id: BufferId, words: &[u32]) -> Result<()> {
        let dst = self.bytes_mut(id);
        if dst.len() != 4 * words.len() {
            return Err(NpuError::InvalidRequest {
                what: format!(
                    "{} instruction words for a view of {} bytes",
                    words.len(),
                    dst.len()
                ),
            });
        }
        for (d, w) in dst.chunks_exact_mut(4).zip(words) {
            d.copy_from_slice(&w.to_le_bytes());
        }
        self.flush(id);
        Ok(())
    }

    /// Flush a view (before the device reads it, and before the CPU reads what it wrote).
    pub fn flush(&self, id: BufferId) {
        let v = self.view(id);
        match v.region {
            Region::Data => {
                if let Some(b) = &self.data {
                    b.flush(v.offset..v.offset + v.len)
                }
            }
            Region::Instructions => {
                if let Some(b) = &self.instr {
                    b.flush(v.offset..v.offset + v.len)
                }
            }
        }
    }

    /// The handles of every BO of the arena (instruction BO first): the EXEC_CMD argument list.
    pub fn handles(&self) -> &[u32] {
        &self.handles
    }
}
