//! The AIE attention kernel (its bit-exact Rust model, what `--device emu` with
//! `AMANUENSIS_NPU_ATTENTION=1` runs) and the CPU INT8 path's attention against f64 attention
//! on real activations: Q, K, V of the encoder's last layer for the first window of a file,
//! computed by the f32 CPU backend.
//!
//!     cargo run --release --example attention_accuracy -- tiny.en.f16 ../shared/speech/jfk.wav
//!
//! Prints, per path: max |error|, max |error| / max |V|, relative RMS error and the correlation
//! with the f64 reference, over every head, query and channel.

use amanuensis::model_path::resolve_model;
use amanuensis_aie::kernels::attention::{attend, quantize_rows};
use amanuensis_aie::kernels::numerics::bf16_round;
use amanuensis_model::whisper::Whisper;
use amanuensis_runtime::backend::{AttentionShape, Backend, LayerKernels};
use amanuensis_runtime::cpu_backend::CpuBackend;
use amanuensis_runtime::cpu_int8_backend::CpuInt8Backend;

const HD: usize = 64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(file)) = (args.next(), args.next()) else {
        return Err("usage: attention_accuracy MODEL FILE.wav".into());
    };
    let w = Whisper::load(&resolve_model(Some(&model))?, CpuBackend::new(2))?;
    let dims = &w.config.dims;
    let (t, d, heads) = (dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head);
    let samples = amanuensis::load_audio(&file)?;
    let mel = w.mel.compute(&samples);
    let mut window = vec![0.0; dims.n_mels * 3000];
    mel.window(0, &mut window)?;
    let b = &*w.encoder_backend;
    let mut ws = w.encoder.workspace(b, 2)?;
    w.encoder.forward(b, &mut ws, &window)?;
    // After the window the encoder's "qk" buffer holds the last layer's Q and K, "v" its V.
    let find = |name: &str| {
        let i = w
            .encoder
            .program()
            .buffers()
            .iter()
            .position(|s| s.name == name);
        i.map(|i| amanuensis_runtime::stage::BufferId(i as u16))
            .ok_or_else(|| format!("no buffer {name:?}"))
    };
    let qk = b.read(&ws, find("qk")?, 0..2 * t * d)?.to_vec();
    let (q, k) = qk.split_at(t * d);
    let v = b.read(&ws, find("v")?, 0..t * d)?.to_vec();
    let head = |m: &[f32], h: usize| -> Vec<f32> {
        (0..t)
            .flat_map(|r| m[r * d + h * HD..][..HD].to_vec())
            .collect()
    };

    // f64 reference, the kernel model, the CPU INT8 path (bf16 attention on CPUs with
    // AVX-512 BF16, f32 otherwise).
    let mut reference = vec![0.0f64; t * d];
    let mut kernel = vec![0.0f32; t * d];
    for h in 0..heads {
        let (qh, kh, vh) = (head(q, h), head(k, h), head(&v, h));
        let mut s = vec![0.0f64; t];
        for i in 0..t {
            for (j, sj) in s.iter_mut().enumerate() {
                let dot: f64 = (0..HD)
                    .map(|c| qh[i * HD + c] as f64 * kh[j * HD + c] as f64)
                    .sum();
                *sj = dot / (HD as f64).sqrt();
            }
            let max = s.iter().cloned().fold(f64::MIN, f64::max);
            let sum: f64 = s.iter().map(|x| (x - max).exp()).sum();
            for c in 0..HD {
                let o: f64 = (0..t)
                    .map(|j| (s[j] - max).exp() / sum * vh[j * HD + c] as f64)
                    .sum();
                reference[i * d + h * HD + c] = o;
            }
        }
        let (qc, mut qs) = quantize_rows(&qh);
        qs.iter_mut().for_each(|s| *s *= 0.125);
        let (kc, ks) = quantize_rows(&kh);
        let vb: Vec<u16> = vh.iter().map(|&x| bf16_round(x)).collect();
        let o = attend(&qc, &qs, &kc, &ks, &vb, &vec![t as u32; t]);
        for i in 0..t {
            kernel[i * d + h * HD..][..HD].copy_from_slice(&o[i * HD..][..HD]);
        }
    }
    let cpu8 = CpuInt8Backend::new(2);
    let shape = AttentionShape {
        heads,
        head_dim: HD,
        q_len: t,
        kv_len: t,
        causal_offset: None,
    };
    let mut s = LayerKernels::scratch(&cpu8, 2);
    let len = cpu8.reserve_attention(&mut s, &shape);
    let mut scratch = vec![0.0; len];
    let mut int8_path = vec![0.0f32; t * d];
    cpu8.attention(&mut s, &shape, q, k, &v, &mut scratch, &mut int8_path);

    let vmax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    println!(
        "{model}, {file}: encoder layer {} of {}, {heads} heads × {t} queries × {t} keys; max|V| {vmax:.4}",
        dims.n_audio_layer, dims.n_audio_layer
    );
    for (name, got) in [
        ("AIE kernel (int8 Q·K, f32 softmax, bf16 P·V)", &kernel),
        ("CPU INT8 path (cpu-int8 attention)", &int8_path),
    ] {
        let (mut err, mut se, mut sr, mut sab, mut saa, mut sbb) =
            (0.0f64, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (&a, &r) in got.iter().zip(&reference) {
            let a = a as f64;
            err = err.max((a - r).abs());
            se += (a - r) * (a - r);
            sr += r * r;
            sab += a * r;
            saa += a * a;
            sbb += r * r;
        }
        println!(
            "  {name}: max |err| {err:.3e} ({:.2e}·max|V|), rel RMS {:.3e}, correlation {:.6}",
            err / vmax as f64,
            (se / sr).sqrt(),
            sab / (saa * sbb).sqrt()
        );
    }
    Ok(())
}
