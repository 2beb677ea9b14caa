//! Silero VAD v6 from the ONNX file faster-whisper 1.2.1 bundles (`faster_whisper/assets/
//! silero_vad_v6.onnx`) to our safetensors file (`amanuensis_model::vad::silero`).
//!
//! The ONNX graph is a single-rate (16 kHz) export: reflect pad, an STFT as a convolution with
//! `encoder.feature_extractor.forward_basis_buffer`, four `encoder.conv_layers.{0..3}`, one LSTM
//! (`onnx::LSTM_*`: W, R, B in ONNX's i, o, f, c gate order) and `decoder.conv1d`. The LSTM
//! initializers have generated names, so they are found by shape (W and R are both
//! `[1, 512, 128]`: W comes first in the file, as the LSTM node's inputs list it); the check
//! that the result computes what onnxruntime does is the VAD golden test (tests/vad.rs).

use std::collections::HashMap;
use std::path::Path;

use amanuensis_model::vad::silero::{expected_tensors, names, FORMAT, FORMAT_VERSION};
use amanuensis_model::vad::SileroVad;
use amanuensis_model::weights::Dtype;
use safetensors::tensor::TensorView;

use crate::error::ConvertError;
use crate::onnx::{initializers, Initializer};

/// Converts `input` (the ONNX file) to `output`; returns the file size. The result is loaded
/// back with [`SileroVad::open`] as a check.
pub fn convert_silero_onnx(input: &Path, output: &Path) -> Result<u64, ConvertError> {
    let bytes = std::fs::read(input).map_err(|source| ConvertError::Io {
        path: input.to_path_buf(),
        source,
    })?;
    let tensors = silero_tensors(&bytes, input)?;
    let meta: HashMap<String, String> = [
        ("format", FORMAT),
        ("format_version", FORMAT_VERSION),
        ("source", "silero_vad_v6.onnx (faster-whisper 1.2.1 assets)"),
        ("sample_rate", "16000"),
        ("lstm_gate_order", "iofc"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, values)| {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, shape, bytes)
        })
        .collect();
    let write_err = |reason: String| ConvertError::Write {
        path: output.to_path_buf(),
        reason,
    };
    let mut views = Vec::with_capacity(data.len());
    for (name, shape, bytes) in &data {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
            .map_err(|e| write_err(format!("tensor `{name}`: {e:?}")))?;
        views.push((name.as_str(), view));
    }
    let serialized =
        safetensors::serialize(views, Some(meta)).map_err(|e| write_err(format!("{e:?}")))?;
    SileroVad::from_bytes(&serialized, output)?;
    let partial = output.with_extension("safetensors.partial");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConvertError::Io { path, source }
    };
    // Sorted header keys: the same input gives the same bytes.
    std::fs::write(&partial, &serialized)
        .and_then(|()| crate::writer::canonicalize_header(&partial))
        .map_err(io(&partial))?;
    std::fs::rename(&partial, output).map_err(io(output))?;
    Ok(serialized.len() as u64)
}

/// A tensor of the VAD file: name, shape, values.
pub type VadTensor = (String, Vec<usize>, Vec<f32>);

/// Our tensors `(name, shape, values)` from the ONNX file's bytes, in [`expected_tensors`]
/// order; `path` names the file in errors.
pub fn silero_tensors(bytes: &[u8], path: &Path) -> Result<Vec<VadTensor>, ConvertError> {
    let inits = initializers(bytes).map_err(|source| ConvertError::Onnx {
        path: path.to_path_buf(),
        source,
    })?;
    let by_name = |name: &str| -> Result<&Initializer, ConvertError> {
        inits
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ConvertError::MissingVariable {
                path: path.to_path_buf(),
                name: name.into(),
            })
    };
    let lstm: Vec<&Initializer> = inits
        .iter()
        .filter(|t| t.name.starts_with("onnx::LSTM"))
        .collect();
    let lstm_w: Vec<&Initializer> = lstm
        .iter()
        .copied()
        .filter(|t| t.dims == [1, 512, 128])
        .collect();
    let lstm_b: Vec<&Initializer> = lstm
        .iter()
        .copied()
        .filter(|t| t.dims == [1, 1024])
        .collect();
    if lstm_w.len() != 2 || lstm_b.len() != 1 {
        return Err(ConvertError::MissingVariable {
            path: path.to_path_buf(),
            name: format!(
                "LSTM W, R [1, 512, 128] and B [1, 1024] (found {} of [1, 512, 128], {} of [1, 1024])",
                lstm_w.len(),
                lstm_b.len()
            ),
        });
    }
    let values = |t: &Initializer, shape: &[usize]| -> Result<Vec<f32>, ConvertError> {
        let n: usize = shape.iter().product();
        let v = t.f32_values().ok_or_else(|| ConvertError::VariableDtype {
            path: path.to_path_buf(),
            name: t.name.clone(),
            dtype: format!("ONNX data type {} ({} bytes)", t.data_type, t.data.len()),
        })?;
        if v.len() != n {
            return Err(ConvertError::VariableShape {
                path: path.to_path_buf(),
                name: t.name.clone(),
                expected: shape.to_vec(),
                got: t.dims.clone(),
            });
        }
        Ok(v)
    };
    let mut out = Vec::new();
    for (name, shape) in expected_tensors() {
        let (source, v): (&Initializer, Vec<f32>) = match name.as_str() {
            names::STFT_BASIS => {
                let t = by_name("encoder.feature_extractor.forward_basis_buffer")?;
                (t, values(t, &shape)?)
            }
            names::LSTM_WEIGHT_IH => (lstm_w[0], values(lstm_w[0], &shape)?),
            names::LSTM_WEIGHT_HH => (lstm_w[1], values(lstm_w[1], &shape)?),
            names::LSTM_BIAS_IH => {
                let b = values(lstm_b[0], &[1024])?;
                (lstm_b[0], b[..512].to_vec())
            }
            names::LSTM_BIAS_HH => {
                let b = values(lstm_b[0], &[1024])?;
                (lstm_b[0], b[512..].to_vec())
            }
            names::DECODER_WEIGHT => {
                let t = by_name("decoder.conv1d.weight")?;
                (t, values(t, &shape)?)
            }
            names::DECODER_BIAS => {
                let t = by_name("decoder.conv1d.bias")?;
                (t, values(t, &shape)?)
            }
            other => {
                // encoder.{i}.weight / bias ← encoder.conv_layers.{i}.weight / bias
                let onnx = other.replace("encoder.", "encoder.conv_layers.");
                let t = by_name(&onnx)?;
                (t, values(t, &shape)?)
            }
        };
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(ConvertError::Unsupported {
                path: path.to_path_buf(),
                name: source.name.clone(),
                value: format!("element {i} = {}", v[i]),
                reason: "weights must be finite".into(),
            });
        }
        out.push((name, shape, v));
    }
    Ok(out)
}
