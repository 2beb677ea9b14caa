//! Just enough of ONNX's protobuf encoding to read a model's initializers (the named constant
//! tensors that hold its weights): `ModelProto.graph` (field 7) → `GraphProto.initializer`
//! (field 5) → `TensorProto` {dims 1, data_type 2, float_data 4, int64_data 7, name 8,
//! raw_data 9}. Nodes, attributes and everything else are skipped by wire type.
//!
//! Every read is bounds-checked: a malformed file gives an [`OnnxError`] naming the byte offset,
//! never a panic (`weights-tools/tests/mutation_no_panic.rs` mutates a real file).

/// ONNX `TensorProto.DataType` of 32-bit floats.
pub const FLOAT: i32 = 1;
/// ONNX `TensorProto.DataType` of 64-bit integers.
pub const INT64: i32 = 7;

/// Why the bytes are not a readable ONNX model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a readable ONNX model: {reason} (at byte {offset})")]
pub struct OnnxError {
    pub offset: usize,
    pub reason: String,
}

/// One initializer: its name, shape, element type and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Initializer {
    pub name: String,
    pub dims: Vec<usize>,
    pub data_type: i32,
    /// Little-endian element bytes (`raw_data`, or `float_data` / `int64_data` re-encoded).
    pub data: Vec<u8>,
}

impl Initializer {
    /// The values of a float tensor; `None` for another type or a byte count that does not
    /// match the shape.
    pub fn f32_values(&self) -> Option<Vec<f32>> {
        let n: usize = self.dims.iter().product();
        (self.data_type == FLOAT && self.data.len() == 4 * n).then(|| {
            self.data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
    }
}

/// A protobuf field: number and value.
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Fixed32(&'a [u8]),
    Bytes(&'a [u8]),
}

/// Walks the fields of one message. `base` is the message's offset in the file (for errors).
struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Self {
        Self {
            bytes,
            pos: 0,
            base,
        }
    }

    fn err(&self, reason: impl Into<String>) -> OnnxError {
        OnnxError {
            offset: self.base + self.pos,
            reason: reason.into(),
        }
    }

    fn varint(&mut self) -> Result<u64, OnnxError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .bytes
                .get(self.pos)
                .ok_or_else(|| self.err("varint runs past the end"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], OnnxError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.err(format!("field of {n} bytes runs past the end")))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field, with the file offset of its value; `None` at the end.
    fn next_field(&mut self) -> Result<Option<(u64, usize, Value<'a>)>, OnnxError> {
        if self.pos == self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire) = (key >> 3, key & 7);
        let at = self.base + self.pos;
        let value = match wire {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?)
                    .map_err(|_| self.err("length does not fit in memory"))?;
                Value::Bytes(self.take(n)?)
            }
            5 => Value::Fixed32(self.take(4)?),
            w => return Err(self.err(format!("unsupported wire type {w}"))),
        };
        Ok(Some((number, at, value)))
    }
}

/// Every initializer of the model's main graph, in file order.
pub fn initializers(bytes: &[u8]) -> Result<Vec<Initializer>, OnnxError> {
    let mut model = Fields::new(bytes, 0);
    let mut out = Vec::new();
    let mut seen_graph = false;
    while let Some((number, at, value)) = model.next_field()? {
        if number != 7 {
            continue;
        }
        let Value::Bytes(graph) = value else {
            return Err(OnnxError {
                offset: at,
                reason: "ModelProto.graph is not a message".into(),
            });
        };
        seen_graph = true;
        let mut g = Fields::new(graph, at);
        while let Some((number, at, value)) = g.next_field()? {
            if number != 5 {
                continue;
            }
            let Value::Bytes(tensor) = value else {
                return Err(OnnxError {
                    offset: at,
                    reason: "GraphProto.initializer is not a message".into(),
                });
            };
            out.push(tensor_proto(tensor, at)?);
        }
    }
    if !seen_graph {
        return Err(OnnxError {
            offset: bytes.len(),
            reason: "no graph (ModelProto field 7)".into(),
        });
    }
    Ok(out)
}

fn tensor_proto(bytes: &[u8], base: usize) -> Result<Initializer, OnnxError> {
    let mut f = Fields::new(bytes, base);
    let mut t = Initializer {
        name: String::new(),
        dims: Vec::new(),
        data_type: 0,
        data: Vec::new(),
    };
    let (mut floats, mut ints) = (Vec::new(), Vec::new());
    let dim = |v: u64, at: usize| {
        usize::try_from(v as i64).map_err(|_| OnnxError {
            offset: at,
            reason: format!("negative or huge dimension {}", v as i64),
        })
    };
    while let Some((number, at, value)) = f.next_field()? {
        match (number, value) {
            (1, Value::Varint(v)) => t.dims.push(dim(v, at)?),
            (1, Value::Bytes(packed)) => {
                let mut p = Fields::new(packed, at);
                while p.pos < packed.len() {
                    let v = p.varint()?;
                    t.dims.push(dim(v, at)?);
                }
            }
            (2, Value::Varint(v)) => t.data_type = v as i32,
            (4, Value::Fixed32(b)) => floats.extend_from_slice(b),
            (4, Value::Bytes(packed)) => {
                if packed.len() % 4 != 0 {
                    return Err(OnnxError {
                        offset: at,
                        reason: "packed float_data is not a multiple of 4 bytes".into(),
                    });
                }
                floats.extend_from_slice(packed);
            }
            (7, Value::Varint(v)) => ints.extend_from_slice(&v.to_le_bytes()),
            (7, Value::Bytes(packed)) => {
                let mut p = Fields::new(packed, at);
                while p.pos < packed.len() {
                    ints.extend_from_slice(&p.varint()?.to_le_bytes());
                }
            }
            (8, Value::Bytes(name)) => {
                t.name = String::from_utf8(name.to_vec()).map_err(|_| OnnxError {
                    offset: at,
                    reason: "tensor name is not UTF-8".into(),
                })?;
            }
            (9, Value::Bytes(raw)) => t.data = raw.to_vec(),
            _ => {}
        }
    }
    if t.data.is_empty() {
        t.data = if t.data_type == INT64 { ints } else { floats };
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn field_bytes(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn model(tensors: &[Vec<u8>]) -> Vec<u8> {
        let mut graph = Vec::new();
        field_bytes(2, b"graph-name", &mut graph);
        for t in tensors {
            field_bytes(5, t, &mut graph);
        }
        let mut m = Vec::new();
        varint(1 << 3, &mut m); // ir_version
        varint(8, &mut m);
        field_bytes(7, &graph, &mut m);
        m
    }

    #[test]
    fn reads_raw_and_typed_tensors() {
        let mut a = Vec::new();
        varint(1 << 3, &mut a);
        varint(2, &mut a); // dims 2 (unpacked)
        varint(1 << 3, &mut a);
        varint(3, &mut a); // dims 3
        varint(2 << 3, &mut a);
        varint(1, &mut a); // FLOAT
        field_bytes(8, b"w", &mut a);
        let raw: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        field_bytes(9, &raw, &mut a);

        let mut b = Vec::new();
        field_bytes(1, &[2], &mut b); // packed dims [2]
        varint(2 << 3, &mut b);
        varint(1, &mut b);
        field_bytes(8, b"b", &mut b);
        let floats: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        field_bytes(4, &floats, &mut b); // packed float_data

        let got = initializers(&model(&[a, b])).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "w");
        assert_eq!(got[0].dims, vec![2, 3]);
        assert_eq!(got[0].f32_values().unwrap()[5], 5.0);
        assert_eq!(got[1].dims, vec![2]);
        assert_eq!(got[1].f32_values().unwrap(), vec![1.5, -2.0]);
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let mut a = Vec::new();
        field_bytes(8, b"w", &mut a);
        let m = model(&[a]);
        for cut in 0..m.len() {
            // Every prefix either parses (a shorter valid message) or is a typed error.
            let _ = initializers(&m[..cut]);
        }
        assert!(initializers(&m[..m.len() - 1]).is_err());
        assert!(initializers(&[0xff; 12]).is_err());
        assert!(initializers(&[]).is_err(), "no graph");
    }
}
