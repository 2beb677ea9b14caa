//! The kernel part of EMBEDDED_METADATA: a small XML tag scanner that reads `<kernel>` elements
//! (`name`, `type`), their `<extended-data>` (`functional`, `dpu_kernel_id`) and `<arg>`s
//! (`name`, `offset`, `size`, `type`). Everything else in the document is skipped.

use super::XclbinError;

/// One kernel of the xclbin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelMeta {
    /// `name` attribute (mlir-aie: `MLIR_AIE`).
    pub name: String,
    /// `type` attribute (mlir-aie: `dpu`).
    pub kind: String,
    /// `extended-data functional` (the CU's `cu_func`).
    pub functional: Option<u32>,
    /// `extended-data dpu_kernel_id` (selects the PDI).
    pub dpu_kernel_id: Option<u64>,
    /// Arguments in document order.
    pub args: Vec<KernelArg>,
}

/// One `<arg>` of a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelArg {
    /// `name`.
    pub name: String,
    /// `offset`: byte offset in the regmap.
    pub offset: u32,
    /// `size` in bytes.
    pub size: u32,
    /// `type` (C type name).
    pub ty: String,
}

impl KernelMeta {
    /// Regmap size in words as XRT computes it: max over args of `(offset + size) / 4`.
    pub fn regmap_words(&self) -> usize {
        self.args
            .iter()
            .map(|a| (a.offset as usize + a.size as usize) / 4)
            .max()
            .unwrap_or(0)
    }

    /// The argument named `name`.
    pub fn arg(&self, name: &str) -> Option<&KernelArg> {
        self.args.iter().find(|a| a.name == name)
    }
}

struct Tag<'a> {
    name: &'a str,
    closing: bool,
    self_closing: bool,
    attrs: Vec<(&'a str, String)>,
    at: usize,
}

impl Tag<'_> {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn err(what: impl Into<String>, at: usize) -> XclbinError {
    XclbinError::Metadata {
        what: what.into(),
        at,
    }
}

fn unescape(raw: &str, at: usize) -> Result<String, XclbinError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail
            .find(';')
            .ok_or_else(|| err("unterminated entity", at))?;
        out.push(match &tail[..=end] {
            "&amp;" => '&',
            "&lt;" => '<',
            "&gt;" => '>',
            "&quot;" => '"',
            "&apos;" => '\'',
            other => return Err(err(format!("unknown entity {other}"), at)),
        });
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Split `text` into tags, skipping declarations, comments and character data.
fn tags(text: &str) -> Result<Vec<Tag<'_>>, XclbinError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(rel) = text[pos..].find('<') {
        let start = pos + rel;
        let rest = &text[start..];
        if rest.starts_with("<!--") {
            let end = rest
                .find("-->")
                .ok_or_else(|| err("unterminated comment", start))?;
            pos = start + end + 3;
            continue;
        }
        let end = rest
            .find('>')
            .ok_or_else(|| err("unterminated tag", start))?;
        pos = start + end + 1;
        let inner = &rest[1..end];
        if inner.starts_with('?') || inner.starts_with('!') {
            continue;
        }
        let (closing, inner) = match inner.strip_prefix('/') {
            Some(s) => (true, s),
            None => (false, inner),
        };
        let (self_closing, inner) = match inner.strip_suffix('/') {
            Some(s) => (true, s),
            None => (false, inner),
        };
        let inner = inner.trim();
        let name_end = inner
            .find(|c: char| c.is_whitespace())
            .unwrap_or(inner.len());
        let name = &inner[..name_end];
        if name.is_empty() {
            return Err(err("empty tag name", start));
        }
        let mut attrs = Vec::new();
        let mut a = inner[name_end..].trim_start();
        while !a.is_empty() {
            let eq = a
                .find('=')
                .ok_or_else(|| err(format!("attribute without '=' in <{name}>"), start))?;
            let key = a[..eq].trim();
            let after = a[eq + 1..].trim_start();
            let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'');
            let quote =
                quote.ok_or_else(|| err(format!("unquoted attribute {key} in <{name}>"), start))?;
            let close = after[1..]
                .find(quote)
                .ok_or_else(|| err(format!("unterminated attribute {key} in <{name}>"), start))?;
            attrs.push((key, unescape(&after[1..1 + close], start)?));
            a = after[close + 2..].trim_start();
        }
        out.push(Tag {
            name,
            closing,
            self_closing,
            attrs,
            at: start,
        });
    }
    Ok(out)
}

fn parse_num(tag: &Tag<'_>, key: &str) -> Result<Option<u64>, XclbinError> {
    let Some(v) = tag.attr(key) else {
        return Ok(None);
    };
    let v = v.trim();
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse::<u64>(),
    };
    parsed.map(Some).map_err(|_| {
        err(
            format!("<{}> {key}=\"{v}\" is not a number", tag.name),
            tag.at,
        )
    })
}

fn parse_u32(tag: &Tag<'_>, key: &str) -> Result<Option<u32>, XclbinError> {
    match parse_num(tag, key)? {
        Some(v) => u32::try_from(v).map(Some).map_err(|_| {
            err(
                format!("<{}> {key}={v} does not fit 32 bits", tag.name),
                tag.at,
            )
        }),
        None => Ok(None),
    }
}

/// Parse every `<kernel>` of the metadata document.
pub(super) fn parse_kernels(section: &[u8]) -> Result<Vec<KernelMeta>, XclbinError> {
    // The section may be NUL-terminated.
    let end = section
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(section.len());
    let text =
        std::str::from_utf8(&section[..end]).map_err(|e| err("not UTF-8", e.valid_up_to()))?;
    let mut kernels = Vec::new();
    let mut current: Option<KernelMeta> = None;
    for tag in tags(text)? {
        match (tag.name, tag.closing) {
            ("kernel", false) => {
                if current.is_some() {
                    return Err(err("nested <kernel>", tag.at));
                }
                let name = tag
                    .attr("name")
                    .ok_or_else(|| err("<kernel> without name", tag.at))?;
                let k = KernelMeta {
                    name: name.to_string(),
                    kind: tag.attr("type").unwrap_or_default().to_string(),
                    ..Default::default()
                };
                if tag.self_closing {
                    kernels.push(k);
                } else {
                    current = Some(k);
                }
            }
            ("kernel", true) => {
                kernels.push(
                    current
                        .take()
                        .ok_or_else(|| err("</kernel> without <kernel>", tag.at))?,
                );
            }
            ("extended-data", false) => {
                if let Some(k) = current.as_mut() {
                    k.functional = parse_u32(&tag, "functional")?;
                    k.dpu_kernel_id = parse_num(&tag, "dpu_kernel_id")?;
                }
            }
            ("arg", false) => {
                if let Some(k) = current.as_mut() {
                    let name = tag
                        .attr("name")
                        .ok_or_else(|| err("<arg> without name", tag.at))?;
                    let offset = parse_u32(&tag, "offset")?
                        .ok_or_else(|| err(format!("<arg {name}> without offset"), tag.at))?;
                    let size = parse_u32(&tag, "size")?
                        .ok_or_else(|| err(format!("<arg {name}> without size"), tag.at))?;
                    if offset.checked_add(size).is_none() {
                        return Err(err(format!("<arg {name}> offset+size overflows"), tag.at));
                    }
                    k.args.push(KernelArg {
                        name: name.to_string(),
                        offset,
                        size,
                        ty: tag.attr("type").unwrap_or_default().to_string(),
                    });
                }
            }
            _ => {}
        }
    }
    if current.is_some() {
        return Err(err("unterminated <kernel>", text.len()));
    }
    Ok(kernels)
}

/// The kernel XML mlir-aie's `aiecc` emits through `xclbinutil --add-kernel` (npu-driver.md §4),
/// with `n_buffers` buffer arguments `bo0..`.
pub fn mlir_aie_kernel_xml(n_buffers: usize) -> String {
    mlir_aie_kernels_xml(&[("MLIR_AIE", "MLIRAIE", 0x901)], n_buffers)
}

/// Kernel XML with several mlir-aie kernels `(name, instance, dpu_kernel_id)`, each with the
/// same `n_buffers` buffer arguments: what `aiecc.py --xclbin-input=<previous>
/// --xclbin-kernel-name=… --xclbin-instance-name=… --xclbin-kernel-id=…` produces when it
/// extends an xclbin by one kernel at a time.
pub fn mlir_aie_kernels_xml(kernels: &[(&str, &str, u64)], n_buffers: usize) -> String {
    let kernels: Vec<(&str, &str, u64, usize)> = kernels
        .iter()
        .map(|&(name, instance, id)| (name, instance, id, n_buffers))
        .collect();
    mlir_aie_kernels_args_xml(&kernels)
}

/// As [`mlir_aie_kernels_xml`], each kernel `(name, instance, dpu_kernel_id, n_buffers)` with
/// its own number of buffer arguments.
pub fn mlir_aie_kernels_args_xml(kernels: &[(&str, &str, u64, usize)]) -> String {
    let args = |n_buffers: usize| {
        let mut args = String::from(
            r#"<arg name="opcode" addressQualifier="0" id="0" size="0x8" offset="0x00" hostOffset="0x0" hostSize="0x8" type="uint64_t"/>
<arg name="instr" addressQualifier="1" id="1" size="0x8" offset="0x08" hostOffset="0x0" hostSize="0x8" type="char *"/>
<arg name="ninstr" addressQualifier="0" id="2" size="0x4" offset="0x10" hostOffset="0x0" hostSize="0x4" type="uint32_t"/>
"#,
        );
        for i in 0..n_buffers {
            args.push_str(&format!(
                "<arg name=\"bo{i}\" addressQualifier=\"1\" id=\"{}\" size=\"0x8\" offset=\"{:#x}\" hostOffset=\"0x0\" hostSize=\"0x8\" type=\"void*\"/>\n",
                3 + i,
                0x14 + 8 * i
            ));
        }
        args
    };
    let kernels: String = kernels
        .iter()
        .map(|&(name, instance, id, n_buffers)| {
            let args = args(n_buffers);
            format!(
                r#"<kernel name="{name}" language="c" type="dpu">
<extended-data subtype="DPU" functional="0" dpu_kernel_id="{id:#x}"/>
{args}<instance name="{instance}"><addrRemap base="0x00000" range="0x0" port="s_axi_control"/></instance>
</kernel>
"#
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<project name="MLIR_AIE"><platform><device name="fpga0"><core name="OCL_REGION_0">
{kernels}</core></device></platform></project>
"#
    )
}
