//! Build xclbins in code (tests, the emulated device, `profile-dispatch --backend emu`). Produces
//! the same byte layout the parser reads: `axlf` header, section table, 8-byte-aligned sections.

use super::*;

/// One PDI of an AIE_PARTITION: image bytes and the `dpu_kernel_ids` its (single) CDO group serves.
#[derive(Clone, Debug)]
pub struct PdiSpec {
    /// `pdi_image`.
    pub image: Vec<u8>,
    /// `dpu_kernel_ids` of its one PRIMARY CDO group.
    pub dpu_kernel_ids: Vec<u64>,
}

/// Assembles an xclbin.
#[derive(Clone, Debug, Default)]
pub struct XclbinBuilder {
    uuid: [u8; 16],
    sections: Vec<(u32, &'static str, Vec<u8>)>,
}

fn put(buf: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    if buf.len() < at + bytes.len() {
        buf.resize(at + bytes.len(), 0);
    }
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

fn append_aligned(buf: &mut Vec<u8>, bytes: &[u8], align: usize) -> u32 {
    let at = buf.len().next_multiple_of(align);
    put(buf, at, bytes);
    at as u32
}

fn array_offset(buf: &mut Vec<u8>, at: usize, count: usize, offset: u32) {
    put(buf, at, &(count as u32).to_le_bytes());
    put(buf, at + 4, &offset.to_le_bytes());
}

impl XclbinBuilder {
    /// An empty xclbin with the given UUID.
    pub fn new(uuid: [u8; 16]) -> Self {
        Self {
            uuid,
            sections: Vec::new(),
        }
    }

    /// Add a raw section.
    pub fn section(mut self, kind: u32, name: &'static str, bytes: Vec<u8>) -> Self {
        self.sections.push((kind, name, bytes));
        self
    }

    /// Add an AIE_PARTITION with `column_width`, `ops_per_cycle`, start column 0 and `pdis`.
    pub fn aie_partition(self, column_width: u16, ops_per_cycle: u32, pdis: &[PdiSpec]) -> Self {
        let mut s = vec![0u8; AIE_PARTITION_SIZE];
        s[0] = 1; // schema_version
        put(&mut s, 8, &ops_per_cycle.to_le_bytes());
        put(&mut s, 32, &column_width.to_le_bytes());
        let cols = append_aligned(&mut s, &0u16.to_le_bytes(), 8);
        array_offset(&mut s, 40, 1, cols);
        let pdi_table = append_aligned(&mut s, &vec![0u8; AIE_PDI_SIZE * pdis.len()], 8);
        array_offset(&mut s, 120, pdis.len(), pdi_table);
        for (i, pdi) in pdis.iter().enumerate() {
            let at = pdi_table as usize + i * AIE_PDI_SIZE;
            put(&mut s, at, &[i as u8 + 1; 16]);
            let img = append_aligned(&mut s, &pdi.image, 8);
            array_offset(&mut s, at + 16, pdi.image.len(), img);
            let ids: Vec<u8> = pdi
                .dpu_kernel_ids
                .iter()
                .flat_map(|k| k.to_le_bytes())
                .collect();
            let ids_at = append_aligned(&mut s, &ids, 8);
            let pre_at = append_aligned(&mut s, &0xC1u32.to_le_bytes(), 4);
            let mut group = vec![0u8; CDO_GROUP_SIZE];
            group[4] = 1; // PRIMARY
            put(&mut group, 8, &(i as u64 + 1).to_le_bytes());
            array_offset(&mut group, 16, pdi.dpu_kernel_ids.len(), ids_at);
            array_offset(&mut group, 24, 1, pre_at);
            let g_at = append_aligned(&mut s, &group, 8);
            array_offset(&mut s, at + 24, 1, g_at);
        }
        self.section(AIE_PARTITION, "AIE_PARTITION", s)
    }

    /// Add an IP_LAYOUT with one PS kernel entry per name.
    pub fn ip_layout(self, names: &[&str]) -> Self {
        let mut s = vec![0u8; 8 + IP_DATA_SIZE * names.len()];
        put(&mut s, 0, &(names.len() as i32).to_le_bytes());
        for (i, name) in names.iter().enumerate() {
            let at = 8 + i * IP_DATA_SIZE;
            put(&mut s, at, &7u32.to_le_bytes()); // IP_PS_KERNEL
            put(&mut s, at + 4, &(0x901u32 << 16).to_le_bytes());
            let n = name.as_bytes();
            put(&mut s, at + 16, &n[..n.len().min(63)]);
        }
        self.section(IP_LAYOUT, "IP_LAYOUT", s)
    }

    /// Add EMBEDDED_METADATA with this XML text.
    pub fn metadata(self, xml: &str) -> Self {
        self.section(
            EMBEDDED_METADATA,
            "EMBEDDED_METADATA",
            xml.as_bytes().to_vec(),
        )
    }

    /// The typical mlir-aie xclbin: one PDI for kernel 0x901, IP `MLIR_AIE:MLIRAIE`, kernel XML
    /// with `n_buffers` buffer args.
    pub fn mlir_aie(pdi: &[u8], column_width: u16, n_buffers: usize) -> Self {
        Self::new(*b"amanuensis-test!")
            .aie_partition(
                column_width,
                2048,
                &[PdiSpec {
                    image: pdi.to_vec(),
                    dpu_kernel_ids: vec![MLIR_AIE_DPU_KERNEL_ID],
                }],
            )
            .ip_layout(&["MLIR_AIE:MLIRAIE"])
            .metadata(&metadata::mlir_aie_kernel_xml(n_buffers))
    }

    /// An mlir-aie xclbin extended kernel by kernel (`aiecc.py --xclbin-input`): PDI `i` serves
    /// kernel `MLIR_AIE_{i}` (instance `MLIRAIE_{i}`, `dpu_kernel_id` 0x901 + i), every kernel
    /// with `n_buffers` buffer args. Loaded with [`super::super::hwctx::HwContext::load_kernels`],
    /// CU `i` of the context runs PDI `i`.
    pub fn mlir_aie_kernels(pdis: &[Vec<u8>], column_width: u16, n_buffers: usize) -> Self {
        let kernels: Vec<(Vec<u8>, usize)> = pdis.iter().map(|p| (p.clone(), n_buffers)).collect();
        Self::mlir_aie_kernels_args(&kernels, column_width)
    }

    /// As [`XclbinBuilder::mlir_aie_kernels`], kernel `i` from `(PDI, buffer args)` `kernels[i]`
    /// (designs with different argument lists in one context).
    pub fn mlir_aie_kernels_args(kernels: &[(Vec<u8>, usize)], column_width: u16) -> Self {
        let names: Vec<(String, String, u64)> = (0..kernels.len())
            .map(|i| {
                (
                    format!("MLIR_AIE_{i}"),
                    format!("MLIRAIE_{i}"),
                    MLIR_AIE_DPU_KERNEL_ID + i as u64,
                )
            })
            .collect();
        let specs: Vec<PdiSpec> = kernels
            .iter()
            .zip(&names)
            .map(|((image, _), n)| PdiSpec {
                image: image.clone(),
                dpu_kernel_ids: vec![n.2],
            })
            .collect();
        let ip: Vec<String> = names.iter().map(|n| format!("{}:{}", n.0, n.1)).collect();
        let ip: Vec<&str> = ip.iter().map(String::as_str).collect();
        let xml: Vec<(&str, &str, u64, usize)> = names
            .iter()
            .zip(kernels)
            .map(|(n, (_, b))| (n.0.as_str(), n.1.as_str(), n.2, *b))
            .collect();
        Self::new(*b"amanuensis-multi")
            .aie_partition(column_width, 2048, &specs)
            .ip_layout(&ip)
            .metadata(&metadata::mlir_aie_kernels_args_xml(&xml))
    }

    /// Serialise.
    pub fn build(&self) -> Vec<u8> {
        let n = self.sections.len();
        let mut out = vec![0u8; SECTION_TABLE_OFFSET + SECTION_HEADER_SIZE * n];
        put(&mut out, 0, MAGIC);
        put(&mut out, UUID_OFFSET, &self.uuid);
        put(&mut out, NUM_SECTIONS_OFFSET, &(n as u32).to_le_bytes());
        for (i, (kind, name, bytes)) in self.sections.iter().enumerate() {
            let at = append_aligned(&mut out, bytes, 8) as u64;
            let h = SECTION_TABLE_OFFSET + i * SECTION_HEADER_SIZE;
            put(&mut out, h, &kind.to_le_bytes());
            let nb = name.as_bytes();
            put(&mut out, h + 4, &nb[..nb.len().min(15)]);
            put(&mut out, h + 24, &at.to_le_bytes());
            put(&mut out, h + 32, &(bytes.len() as u64).to_le_bytes());
        }
        let len = out.len() as u64;
        put(&mut out, LENGTH_OFFSET, &len.to_le_bytes());
        out
    }
}
