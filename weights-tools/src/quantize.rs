//! `--quant int8`: the weight matrices of a converted model as symmetric per-output-channel
//! INT8 in 64 × 64 tiles (`docs/int8-layout.md`), with f32 scales beside them. Which matrices:
//! [`quantized_matrices`] (every linear layer and the token embedding); convolutions, norms,
//! biases and position tables stay f16.

use amanuensis_model::names;
use amanuensis_model::weights::{int8_tile_shape, quantized_matrices, Dtype};
use amanuensis_runtime::q8::QuantMatrix;
use half::f16;

use crate::error::ConvertError;
use crate::writer::{ModelParts, OwnedTensor};

/// Replaces every matrix of [`quantized_matrices`] in `parts` (f16 `[out, in]`) by its INT8
/// tiles (`[out/64, in/64, 64, 64]`) and a `{name}_scale` f32 `[out]` tensor.
pub fn quantize_int8(parts: &mut ModelParts) -> Result<(), ConvertError> {
    for (name, n_out, k) in quantized_matrices(&parts.config.dims) {
        let index = parts
            .tensors
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| ConvertError::Config {
                key: name.clone(),
                reason: "tensor not produced".into(),
            })?;
        let t = &parts.tensors[index];
        if t.dtype != Dtype::F16 || t.shape != [n_out, k] || t.data.len() != n_out * k * 2 {
            return Err(ConvertError::Config {
                key: name.clone(),
                reason: format!(
                    "expected f16 {:?} to quantize, found {:?} {:?}",
                    [n_out, k],
                    t.dtype,
                    t.shape
                ),
            });
        }
        let values: Vec<f32> = t
            .data
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        let (data, scales) = QuantMatrix::quantize(&values, n_out, k).into_parts();
        parts.tensors[index] = OwnedTensor {
            name: name.clone(),
            dtype: Dtype::I8,
            shape: int8_tile_shape(n_out, k),
            data: bytemuck::cast_slice(&data).to_vec(),
        };
        parts.tensors.push(OwnedTensor {
            name: names::weight_scale(&name),
            dtype: Dtype::F32,
            shape: vec![n_out],
            data: scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
        });
    }
    Ok(())
}
