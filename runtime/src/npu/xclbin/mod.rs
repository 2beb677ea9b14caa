//! xclbin (`axlf`) container parser: header, section table, AIE_PARTITION (PDI images by
//! `dpu_kernel_id`, column width, ops per cycle), IP_LAYOUT and the EMBEDDED_METADATA kernel
//! arguments (npu-driver.md §3).
//!
//! Every offset, size and count read from the file is bounds-checked with checked arithmetic
//! before use; nothing is allocated from a count that the file's length cannot back. Malformed
//! input gives an [`XclbinError`] naming the section, field and values; never a panic.

mod builder;
mod metadata;
mod reader;

pub use builder::{PdiSpec, XclbinBuilder};
pub use metadata::{mlir_aie_kernel_xml, KernelArg, KernelMeta};

use reader::Reader;

/// `m_magic`.
pub const MAGIC: &[u8; 8] = b"xclbin2\0";
/// Fixed part of `struct axlf` (the section headers start here).
pub const SECTION_TABLE_OFFSET: usize = 456;
/// Size of one `axlf_section_header`.
pub const SECTION_HEADER_SIZE: usize = 40;
/// File offset of `m_header.m_numSections`.
pub const NUM_SECTIONS_OFFSET: usize = 448;
/// File offset of `m_header.m_length`.
pub const LENGTH_OFFSET: usize = 304;
/// File offset of `m_header.uuid`.
pub const UUID_OFFSET: usize = 304 + 112;

/// Section kind `EMBEDDED_METADATA`.
pub const EMBEDDED_METADATA: u32 = 2;
/// Section kind `MEM_TOPOLOGY`.
pub const MEM_TOPOLOGY: u32 = 6;
/// Section kind `IP_LAYOUT`.
pub const IP_LAYOUT: u32 = 8;
/// Section kind `AIE_PARTITION`.
pub const AIE_PARTITION: u32 = 32;
/// The `dpu_kernel_id` mlir-aie emits.
pub const MLIR_AIE_DPU_KERNEL_ID: u64 = 0x901;

const AIE_PARTITION_SIZE: usize = 184;
const AIE_PDI_SIZE: usize = 96;
const CDO_GROUP_SIZE: usize = 96;
const IP_DATA_SIZE: usize = 80;

/// Why an xclbin was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XclbinError {
    /// The file is shorter than a structure that must be there.
    #[error("xclbin is {len} bytes, shorter than the {need} bytes of {what}")]
    TooShort {
        /// What did not fit.
        what: &'static str,
        /// Bytes needed.
        need: u64,
        /// Bytes present.
        len: u64,
    },
    /// `m_magic` is not `xclbin2\0`.
    #[error("bad magic {found:02x?} (expected \"xclbin2\\0\")")]
    BadMagic {
        /// The first 8 bytes.
        found: [u8; 8],
    },
    /// `m_header.m_length` claims more bytes than the file has.
    #[error("header m_length {claimed} exceeds the file size {len} (truncated file?)")]
    Truncated {
        /// `m_length`.
        claimed: u64,
        /// Actual size.
        len: u64,
    },
    /// The section table does not fit in the file.
    #[error("{count} sections need a table of {need} bytes, file has {len}")]
    TooManySections {
        /// `m_numSections`.
        count: u32,
        /// Bytes the table needs (from the start of the file).
        need: u64,
        /// Bytes available.
        len: u64,
    },
    /// A section's range is outside the file or inside the header/section table.
    #[error("section {index} (kind {kind}) at {offset}+{size} lies outside {valid_start}..{len}")]
    SectionOutOfBounds {
        /// Index in the section table.
        index: usize,
        /// Section kind.
        kind: u32,
        /// `m_sectionOffset`.
        offset: u64,
        /// `m_sectionSize`.
        size: u64,
        /// First byte after the section table.
        valid_start: u64,
        /// File length.
        len: u64,
    },
    /// Two sections share bytes.
    #[error("sections {first} and {second} overlap")]
    SectionsOverlap {
        /// Index of the earlier section.
        first: usize,
        /// Index of the later one.
        second: usize,
    },
    /// A required section is missing.
    #[error("no section of kind {kind} ({name})")]
    MissingSection {
        /// Section kind.
        kind: u32,
        /// Its XRT name.
        name: &'static str,
    },
    /// A field or array inside a section points outside that section.
    #[error("{section}.{field}: {count} × {elem_size} B at offset {offset} exceeds the section's {section_len} B")]
    OutOfBounds {
        /// Section name.
        section: &'static str,
        /// Field name.
        field: &'static str,
        /// Offset relative to the section start.
        offset: u64,
        /// Element count.
        count: u64,
        /// Element size.
        elem_size: u64,
        /// Section length.
        section_len: u64,
    },
    /// A field holds an impossible value.
    #[error("{section}.{field} = {value}: {why}")]
    BadField {
        /// Section name.
        section: &'static str,
        /// Field name.
        field: &'static str,
        /// The value read.
        value: i64,
        /// Why it is wrong.
        why: &'static str,
    },
    /// No PDI's CDO groups list this `dpu_kernel_id`.
    #[error("no AIE_PARTITION PDI serves dpu_kernel_id {0:#x}")]
    NoPdiForKernel(u64),
    /// The kernel XML is malformed.
    #[error("EMBEDDED_METADATA at byte {at}: {what}")]
    Metadata {
        /// What was wrong.
        what: String,
        /// Byte offset in the section.
        at: usize,
    },
}

/// One entry of the section table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// `m_sectionKind`.
    pub kind: u32,
    /// `m_sectionName` (up to the first NUL).
    pub name: String,
    /// `m_sectionOffset` (from the file start).
    pub offset: u64,
    /// `m_sectionSize`.
    pub size: u64,
}

/// A validated xclbin: header and section table checked; sections parsed on demand.
#[derive(Clone, Debug)]
pub struct Xclbin<'a> {
    bytes: &'a [u8],
    uuid: [u8; 16],
    sections: Vec<Section>,
}

/// The AIE_PARTITION section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AiePartition<'a> {
    /// `schema_version`.
    pub schema_version: u8,
    /// `operations_per_cycle` (passed to CREATE_HWCTX as `max_opc`).
    pub operations_per_cycle: u32,
    /// `info.column_width`: columns the partition spans.
    pub column_width: u16,
    /// `info.start_columns`.
    pub start_columns: Vec<u16>,
    /// The PDIs.
    pub pdis: Vec<AiePdi<'a>>,
}

/// One `aie_pdi` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AiePdi<'a> {
    /// `uuid`.
    pub uuid: [u8; 16],
    /// `pdi_image`: the bytes to put in the CU's DEV BO.
    pub image: &'a [u8],
    /// `cdo_groups`.
    pub cdo_groups: Vec<CdoGroup>,
}

/// One `cdo_group` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CdoGroup {
    /// `cdo_type` (1 = PRIMARY).
    pub cdo_type: u8,
    /// `pdi_id`.
    pub pdi_id: u64,
    /// `dpu_kernel_ids`.
    pub dpu_kernel_ids: Vec<u64>,
    /// `pre_cdo_groups`.
    pub pre_cdo_groups: Vec<u32>,
}

/// One IP_LAYOUT entry (`ip_data`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpData {
    /// `m_type` (7 = IP_PS_KERNEL).
    pub ip_type: u32,
    /// `properties` (PS kernels: subtype `[1:0]`, functional `[5:4]`, kernel_id `[27:16]`).
    pub properties: u32,
    /// `m_base_address`.
    pub base_address: u64,
    /// `m_name` (`"kernel:instance"`).
    pub name: String,
}

impl<'a> AiePartition<'a> {
    /// The PDI image whose CDO groups list `dpu_kernel_id` (first match, as XRT).
    pub fn pdi_for_kernel(&self, dpu_kernel_id: u64) -> Result<&'a [u8], XclbinError> {
        self.pdis
            .iter()
            .find(|p| {
                p.cdo_groups
                    .iter()
                    .any(|g| g.dpu_kernel_ids.contains(&dpu_kernel_id))
            })
            .map(|p| p.image)
            .ok_or(XclbinError::NoPdiForKernel(dpu_kernel_id))
    }
}

impl<'a> Xclbin<'a> {
    /// Validate the header and the section table of `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, XclbinError> {
        let len = bytes.len() as u64;
        if bytes.len() < SECTION_TABLE_OFFSET {
            return Err(XclbinError::TooShort {
                what: "axlf header",
                need: SECTION_TABLE_OFFSET as u64,
                len,
            });
        }
        let file = Reader::new(bytes, "axlf");
        let magic: [u8; 8] = bytes[..8].try_into().expect("8 bytes");
        if &magic != MAGIC {
            return Err(XclbinError::BadMagic { found: magic });
        }
        let claimed = file.u64(LENGTH_OFFSET, "m_length")?;
        if claimed > len {
            return Err(XclbinError::Truncated { claimed, len });
        }
        // Parse within m_length when it is plausible (a zero length is treated as "whole file").
        let bytes = if claimed >= SECTION_TABLE_OFFSET as u64 {
            &bytes[..claimed as usize]
        } else {
            bytes
        };
        let len = bytes.len() as u64;
        let file = Reader::new(bytes, "axlf");
        let count = file.u32(NUM_SECTIONS_OFFSET, "m_numSections")?;
        let table_end = SECTION_TABLE_OFFSET as u64 + count as u64 * SECTION_HEADER_SIZE as u64;
        if table_end > len {
            return Err(XclbinError::TooManySections {
                count,
                need: table_end,
                len,
            });
        }
        let mut sections = Vec::with_capacity(count as usize);
        for index in 0..count as usize {
            let at = SECTION_TABLE_OFFSET + index * SECTION_HEADER_SIZE;
            let kind = file.u32(at, "m_sectionKind")?;
            let name = file.fixed_str(at + 4, 16);
            let offset = file.u64(at + 24, "m_sectionOffset")?;
            let size = file.u64(at + 32, "m_sectionSize")?;
            let in_bounds =
                offset >= table_end && offset.checked_add(size).is_some_and(|e| e <= len);
            if !in_bounds {
                return Err(XclbinError::SectionOutOfBounds {
                    index,
                    kind,
                    offset,
                    size,
                    valid_start: table_end,
                    len,
                });
            }
            sections.push(Section {
                kind,
                name,
                offset,
                size,
            });
        }
        let mut order: Vec<usize> = (0..sections.len())
            .filter(|&i| sections[i].size > 0)
            .collect();
        order.sort_by_key(|&i| sections[i].offset);
        for pair in order.windows(2) {
            let (a, b) = (&sections[pair[0]], &sections[pair[1]]);
            if a.offset + a.size > b.offset {
                let (first, second) = (pair[0].min(pair[1]), pair[0].max(pair[1]));
                return Err(XclbinError::SectionsOverlap { first, second });
            }
        }
        let uuid = bytes[UUID_OFFSET..UUID_OFFSET + 16]
            .try_into()
            .expect("16 bytes");
        Ok(Self {
            bytes,
            uuid,
            sections,
        })
    }

    /// `m_header.uuid`.
    pub fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    /// The section table.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The bytes of the first section of `kind`, if any.
    pub fn section_bytes(&self, kind: u32) -> Option<&'a [u8]> {
        let s = self.sections.iter().find(|s| s.kind == kind)?;
        Some(&self.bytes[s.offset as usize..(s.offset + s.size) as usize])
    }

    fn required(&self, kind: u32, name: &'static str) -> Result<&'a [u8], XclbinError> {
        self.section_bytes(kind)
            .ok_or(XclbinError::MissingSection { kind, name })
    }

    /// Parse the (first) AIE_PARTITION section.
    pub fn aie_partition(&self) -> Result<AiePartition<'a>, XclbinError> {
        let sec = Reader::new(
            self.required(AIE_PARTITION, "AIE_PARTITION")?,
            "AIE_PARTITION",
        );
        sec.need(0, AIE_PARTITION_SIZE as u64, 1, "aie_partition")?;
        let column_width = sec.u16(32, "info.column_width")?;
        if column_width == 0 {
            return Err(XclbinError::BadField {
                section: "AIE_PARTITION",
                field: "info.column_width",
                value: 0,
                why: "a partition spans at least one column",
            });
        }
        let (off, n) = sec.array(40, 2, "info.start_columns")?;
        let start_columns = (0..n)
            .map(|i| sec.u16(off + 2 * i, "start_columns"))
            .collect::<Result<_, _>>()?;
        let (pdi_off, pdi_n) = sec.array(120, AIE_PDI_SIZE, "aie_pdi")?;
        let mut pdis = Vec::with_capacity(pdi_n);
        for i in 0..pdi_n {
            let at = pdi_off + i * AIE_PDI_SIZE;
            let uuid = sec
                .slice(at, 16, "aie_pdi.uuid")?
                .try_into()
                .expect("16 bytes");
            let (img_off, img_len) = sec.array(at + 16, 1, "aie_pdi.pdi_image")?;
            let image = sec.slice(img_off, img_len, "aie_pdi.pdi_image")?;
            let (g_off, g_n) = sec.array(at + 24, CDO_GROUP_SIZE, "aie_pdi.cdo_groups")?;
            let mut cdo_groups = Vec::with_capacity(g_n);
            for g in 0..g_n {
                let gat = g_off + g * CDO_GROUP_SIZE;
                let (k_off, k_n) = sec.array(gat + 16, 8, "cdo_group.dpu_kernel_ids")?;
                let (p_off, p_n) = sec.array(gat + 24, 4, "cdo_group.pre_cdo_groups")?;
                cdo_groups.push(CdoGroup {
                    cdo_type: sec.u8(gat + 4, "cdo_group.cdo_type")?,
                    pdi_id: sec.u64(gat + 8, "cdo_group.pdi_id")?,
                    dpu_kernel_ids: (0..k_n)
                        .map(|k| sec.u64(k_off + 8 * k, "dpu_kernel_ids"))
                        .collect::<Result<_, _>>()?,
                    pre_cdo_groups: (0..p_n)
                        .map(|k| sec.u32(p_off + 4 * k, "pre_cdo_groups"))
                        .collect::<Result<_, _>>()?,
                });
            }
            pdis.push(AiePdi {
                uuid,
                image,
                cdo_groups,
            });
        }
        Ok(AiePartition {
            schema_version: sec.u8(0, "schema_version")?,
            operations_per_cycle: sec.u32(8, "operations_per_cycle")?,
            column_width,
            start_columns,
            pdis,
        })
    }

    /// Parse the IP_LAYOUT section.
    pub fn ip_layout(&self) -> Result<Vec<IpData>, XclbinError> {
        let sec = Reader::new(self.required(IP_LAYOUT, "IP_LAYOUT")?, "IP_LAYOUT");
        let count = sec.u32(0, "m_count")? as i32;
        if count < 0 {
            return Err(XclbinError::BadField {
                section: "IP_LAYOUT",
                field: "m_count",
                value: count as i64,
                why: "negative count",
            });
        }
        let count = count as usize;
        sec.need(8, IP_DATA_SIZE as u64, count as u64, "ip_data")?;
        (0..count)
            .map(|i| {
                let at = 8 + i * IP_DATA_SIZE;
                Ok(IpData {
                    ip_type: sec.u32(at, "m_type")?,
                    properties: sec.u32(at + 4, "properties")?,
                    base_address: sec.u64(at + 8, "m_base_address")?,
                    name: sec.fixed_str(at + 16, 64),
                })
            })
            .collect()
    }

    /// Parse the kernels (name, `extended-data`, args) from the EMBEDDED_METADATA XML.
    pub fn kernels(&self) -> Result<Vec<KernelMeta>, XclbinError> {
        metadata::parse_kernels(self.required(EMBEDDED_METADATA, "EMBEDDED_METADATA")?)
    }
}

#[cfg(test)]
mod tests;
