//! The AIE kernel sources, built for the host with the stand-in AIE API
//! (`aie/kernels/host/aie_api_host.h`) through the `cc` crate, run on random and extreme
//! inputs, and compared bit for bit with their Rust models (`amanuensis_aie::kernels`).
//!
//! Needs a C++17 compiler (`c++`, or `CXX`): CI installs g++. Flags: `-O2 -ffp-contract=off`
//! (no fused multiply-adds: Rust forms none) and `-fno-strict-aliasing` (the epilogue writes
//! f32 over the i32 sums in place, as AIE kernels do).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use amanuensis_aie::kernels::attention::{self, HEAD_DIM, KEY_CHUNK, MAX_KEYS, Q_ROWS};
use amanuensis_aie::kernels::layout::{block_a, block_w, A_BYTES, C_ELEMS, W_BYTES};
use amanuensis_aie::kernels::matmul::{self, put_channel_params, put_row_scale, EpilogueMode};
use amanuensis_aie::kernels::norm_quant::{self, codes_bytes, param_object, NQ_ROWS};
use amanuensis_aie::kernels::numerics::{self, bf16_round};

/// Builds `kernel_driver` once per test binary.
fn driver() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let kernels = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
        let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aie_kernel_driver");
        let triple = format!(
            "{}-unknown-{}-gnu",
            std::env::consts::ARCH,
            std::env::consts::OS
        );
        let compiler = cc::Build::new()
            .cpp(true)
            .target(&triple)
            .host(&triple)
            .opt_level(2)
            .debug(false)
            .cargo_metadata(false)
            .cargo_warnings(false)
            .try_get_compiler()
            .expect("no C++ compiler found (install g++; CI does)");
        let status = compiler
            .to_command()
            .args([
                "-std=c++17",
                "-O2",
                "-ffp-contract=off",
                "-fno-strict-aliasing",
                "-DAIE_HOST_BUILD",
            ])
            .arg("-I")
            .arg(&kernels)
            .arg(kernels.join("host/kernel_driver.cc"))
            .arg(kernels.join("matmul_i8.cc"))
            .arg(kernels.join("attention.cc"))
            .arg(kernels.join("norm_quant.cc"))
            .arg("-o")
            .arg(&exe)
            .status()
            .expect("could not run the C++ compiler");
        assert!(status.success(), "the kernels' host build failed");
        exe
    })
}

fn run(kernel: &str, input: &[u8], tag: &str) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let (inp, out) = (
        dir.join(format!("{tag}.in")),
        dir.join(format!("{tag}.out")),
    );
    std::fs::write(&inp, input).unwrap();
    let status = Command::new(driver())
        .arg(kernel)
        .arg(&inp)
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "kernel_driver {kernel} failed");
    std::fs::read(&out).unwrap()
}

struct Rng(u64);
impl Rng {
    fn u(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 32) as u32
    }
    fn f(&mut self) -> f32 {
        (self.u() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    }
}

fn codes(rng: &mut Rng, n: usize, extreme: bool) -> Vec<i8> {
    (0..n)
        .map(|i| {
            if extreme {
                if i % 3 == 0 {
                    127
                } else {
                    -127
                }
            } else {
                (rng.u() % 255) as i32 as i8
            }
        })
        .map(|c| c.max(-127))
        .collect()
}

fn le<T: Copy>(v: &[T], f: impl Fn(T) -> [u8; 4]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

#[test]
fn matmul_tile_and_epilogue_equal_the_rust_model() {
    let mut rng = Rng(11);
    for (case, (kt, mode, extreme, amp)) in [
        (1, EpilogueMode::Store, false, 1.0f32),
        (6, EpilogueMode::Gelu, false, 1e-3),
        (24, EpilogueMode::Gelu, false, 3e-4),
        (32, EpilogueMode::Store, true, 1e-6),
        (8, EpilogueMode::Gelu, true, 1e-5),
    ]
    .into_iter()
    .enumerate()
    {
        let a: Vec<i8> = codes(&mut rng, kt * A_BYTES, extreme);
        let w: Vec<i8> = codes(&mut rng, kt * W_BYTES, extreme);
        let (mut rows, mut params) = (vec![0i8; A_BYTES], vec![0i8; W_BYTES]);
        for m in 0..32 {
            put_row_scale(&mut rows[m * 64..(m + 1) * 64], amp * (0.5 + rng.f().abs()));
        }
        for n in 0..64 {
            let (s, b) = (rng.f().abs() * 0.05 + 1e-3, rng.f() * 2.0);
            put_channel_params(&mut params[n * 64..(n + 1) * 64], s, b);
        }
        let (mut scales, mut par) = (vec![0i8; A_BYTES], vec![0i8; W_BYTES]);
        block_a(&rows, &mut scales);
        block_w(&params, &mut par);

        let mut input = Vec::new();
        input.extend((kt as u32).to_le_bytes());
        input.extend(mode.code().to_le_bytes());
        for bytes in [&a, &w, &scales, &par] {
            input.extend(bytes.iter().map(|&x| x as u8));
        }
        let out = run("matmul", &input, &format!("matmul{case}"));
        assert_eq!(out.len(), C_ELEMS * 8);

        let mut acc = vec![0i32; C_ELEMS];
        matmul::zero(&mut acc);
        for t in 0..kt {
            matmul::matmul_i8_i32(&a[t * A_BYTES..], &w[t * W_BYTES..], &mut acc);
        }
        let mut res = vec![0f32; C_ELEMS];
        matmul::epilogue(&acc, &scales, &par, mode, &mut res);
        let got_acc: Vec<i32> = out[..C_ELEMS * 4]
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(got_acc, acc, "case {case}: i32 sums");
        for (i, b) in out[C_ELEMS * 4..].chunks_exact(4).enumerate() {
            let got = f32::from_le_bytes(b.try_into().unwrap());
            assert_eq!(
                got.to_bits(),
                res[i].to_bits(),
                "case {case} element {i}: {got} vs {}",
                res[i]
            );
        }
        // The random GELU cases reach the linear tail and the negative dip.
        if mode == EpilogueMode::Gelu && !extreme {
            assert!(res.iter().any(|&r| r > 3.0) && res.iter().any(|&r| r < -0.1));
        }
    }
}

#[test]
fn attention_passes_equal_the_rust_model() {
    let mut rng = Rng(5);
    for (case, (chunks, limits)) in [
        (1usize, [32i32, 1, 0, 17]),
        (3, [96, 96, 96, 96]),
        (47, [1500, 1500, 1500, 1500]),
        (14, [440, 441, 442, 443]),
    ]
    .into_iter()
    .enumerate()
    {
        let n_keys = chunks * KEY_CHUNK;
        let q = codes(&mut rng, Q_ROWS * HEAD_DIM, false);
        let qs: Vec<f32> = (0..Q_ROWS).map(|_| rng.f().abs() * 0.004 + 1e-4).collect();
        let k = codes(&mut rng, n_keys * HEAD_DIM, false);
        let ks: Vec<f32> = (0..n_keys).map(|_| rng.f().abs() * 0.02 + 1e-3).collect();
        let v: Vec<u16> = (0..n_keys * HEAD_DIM)
            .map(|_| bf16_round(rng.f() * 4.0))
            .collect();

        let mut input = Vec::new();
        input.extend((chunks as u32).to_le_bytes());
        input.extend(le(&limits, i32::to_le_bytes));
        input.extend(q.iter().map(|&x| x as u8));
        input.extend(le(&qs, f32::to_le_bytes));
        for c in 0..chunks {
            input.extend(k[c * 2048..(c + 1) * 2048].iter().map(|&x| x as u8));
            input.extend(le(&ks[c * 32..(c + 1) * 32], f32::to_le_bytes));
            input.extend(
                v[c * 2048..(c + 1) * 2048]
                    .iter()
                    .flat_map(|x| x.to_le_bytes()),
            );
        }
        let out = run("attention", &input, &format!("attention{case}"));

        let mut scores = vec![0f32; Q_ROWS * MAX_KEYS];
        for c in 0..chunks {
            attention::scores(&q, &qs, &k[c * 2048..], &ks[c * 32..], c * 32, &mut scores);
        }
        let pass1 = scores.clone();
        let lim: Vec<u32> = limits.iter().map(|&l| l as u32).collect();
        let mut p = vec![0u16; Q_ROWS * MAX_KEYS];
        attention::softmax(&mut scores, &lim, n_keys, &mut p);
        let mut o = vec![0f32; Q_ROWS * HEAD_DIM];
        for c in 0..chunks {
            attention::pv(&p, &v[c * 2048..], c * 32, &mut o);
        }

        let f = |b: &[u8]| f32::from_le_bytes(b.try_into().unwrap());
        let (s_bytes, rest) = out.split_at(Q_ROWS * MAX_KEYS * 4);
        let (e_bytes, rest) = rest.split_at(Q_ROWS * MAX_KEYS * 4);
        let (p_bytes, o_bytes) = rest.split_at(Q_ROWS * MAX_KEYS * 2);
        for i in 0..Q_ROWS {
            for j in 0..n_keys {
                let at = i * MAX_KEYS + j;
                assert_eq!(
                    f(&s_bytes[4 * at..4 * at + 4]).to_bits(),
                    pass1[at].to_bits(),
                    "case {case} score {i},{j}"
                );
                assert_eq!(
                    f(&e_bytes[4 * at..4 * at + 4]).to_bits(),
                    scores[at].to_bits(),
                    "case {case} weight {i},{j}"
                );
                assert_eq!(
                    u16::from_le_bytes([p_bytes[2 * at], p_bytes[2 * at + 1]]),
                    p[at],
                    "case {case} p {i},{j}"
                );
            }
        }
        for (i, b) in o_bytes.chunks_exact(4).enumerate() {
            assert_eq!(
                f(b).to_bits(),
                o[i].to_bits(),
                "case {case} out {i}: {} vs {}",
                f(b),
                o[i]
            );
        }
        assert!(o.iter().any(|&x| x != 0.0));
    }
}

/// Rows for the norm kernel: random at several magnitudes and offsets, zero, `-0.0`, constant
/// (variance 0), an outlier, squares that overflow (infinite variance), tiny values, infinity.
fn norm_rows(rng: &mut Rng, calls: usize, d: usize) -> Vec<f32> {
    (0..calls * NQ_ROWS)
        .flat_map(|row| {
            let mut v: Vec<f32> = (0..d)
                .map(|i| match row % 10 {
                    0 => rng.f() * 3.0 + 10.0,
                    1 => 0.0,
                    2 => -0.0,
                    3 => 2.5,
                    4 if i == 17 => 6.0e4,
                    5 => rng.f() * 3.0e19,
                    6 => rng.f() * 1e-30,
                    7 if i == 3 => f32::INFINITY,
                    _ => rng.f() * 40.0,
                })
                .collect();
            if row % 10 == 9 {
                v.iter_mut().for_each(|x| *x *= 1e-3);
            }
            v
        })
        .collect()
}

#[test]
fn norm_quant_equals_the_rust_model() {
    let mut rng = Rng(17);
    for (case, (d, residual, zero_beta)) in [
        (384usize, false, false),
        (384, true, false),
        (512, false, true),
        (512, true, false),
        (64, true, true),
    ]
    .into_iter()
    .enumerate()
    {
        let calls = 5;
        let gamma: Vec<f32> = (0..d).map(|_| rng.f() * 2.0).collect();
        let beta: Vec<f32> = (0..d)
            .map(|_| if zero_beta { 0.0 } else { rng.f() * 0.5 })
            .collect();
        let eps = 1e-5;
        let x = norm_rows(&mut rng, calls, d);
        let r: Vec<f32> = (0..x.len()).map(|_| rng.f() * 8.0).collect();

        let mut input = Vec::new();
        for v in [d as u32, residual as u32, calls as u32] {
            input.extend(v.to_le_bytes());
        }
        input.extend(param_object(&gamma, &beta, eps));
        let call_len = NQ_ROWS * d;
        for c in 0..calls {
            input.extend(le(&x[c * call_len..(c + 1) * call_len], f32::to_le_bytes));
            if residual {
                input.extend(le(&r[c * call_len..(c + 1) * call_len], f32::to_le_bytes));
            }
        }
        let out = run("norm_quant", &input, &format!("norm_quant{case}"));
        let per_call = codes_bytes(d) + if residual { 4 * call_len } else { 0 };
        assert_eq!(out.len(), calls * per_call, "case {case}");

        let mut x_out = vec![0f32; call_len];
        let mut codes = vec![0u8; codes_bytes(d)];
        let mut y = vec![0f32; d];
        let mut zero_scales = 0;
        for (c, got) in out.chunks_exact(per_call).enumerate() {
            let rows = c * call_len..(c + 1) * call_len;
            norm_quant::norm_quant(
                &x[rows.clone()],
                residual.then(|| &r[rows.clone()]),
                &gamma,
                &beta,
                eps,
                &mut x_out,
                &mut codes,
                &mut y,
            );
            let (got_x, got_codes) = got.split_at(if residual { 4 * call_len } else { 0 });
            for (i, b) in got_x.chunks_exact(4).enumerate() {
                let g = f32::from_le_bytes(b.try_into().unwrap());
                assert_eq!(
                    g.to_bits(),
                    x_out[i].to_bits(),
                    "case {case} call {c} x {i}"
                );
            }
            for (i, (&g, &w)) in got_codes.iter().zip(&codes).enumerate() {
                assert_eq!(g, w, "case {case} call {c} code byte {i}");
            }
            let scales = &codes[codes_bytes(d) - 256..];
            zero_scales += (0..NQ_ROWS)
                .filter(|&m| scales[m * 8..m * 8 + 4] == [0; 4])
                .count();
        }
        // Liveness: with beta = 0 and no residual, the zero rows quantize to scale 0.
        if zero_beta && !residual {
            assert!(zero_scales >= 2, "case {case}");
        }
        assert!(codes.iter().any(|&b| b as i8 == 127 || b as i8 == -127));
    }
}

#[test]
fn the_plain_quantize_equals_the_rust_model_and_quantize_row() {
    let mut rng = Rng(19);
    for (case, d) in [64usize, 1536, 2048].into_iter().enumerate() {
        let calls = 5;
        // The norm's edge rows (zero, -0.0, constant, outlier, huge, tiny, an infinity) and a
        // NaN in one row (skipped by the max, code 0).
        let mut x = norm_rows(&mut rng, calls, d);
        x[8 * d + 1] = f32::NAN;
        let mut input = Vec::new();
        for v in [d as u32, calls as u32] {
            input.extend(v.to_le_bytes());
        }
        input.extend(le(&x, f32::to_le_bytes));
        let out = run("quant", &input, &format!("quant{case}"));
        assert_eq!(out.len(), calls * codes_bytes(d), "case {case}");
        let mut codes = vec![0u8; codes_bytes(d)];
        let mut want = vec![0i8; d];
        let mut live = 0;
        for (c, got) in out.chunks_exact(codes_bytes(d)).enumerate() {
            let rows = &x[c * NQ_ROWS * d..(c + 1) * NQ_ROWS * d];
            norm_quant::quant(rows, &mut codes);
            assert_eq!(got, &codes[..], "case {case} call {c}");
            // The model is the CPU INT8 path's quantize_row.
            let mut image = vec![0u8; NQ_ROWS * (d + 64)];
            norm_quant::quant_rows(rows, NQ_ROWS, d, &mut image);
            for m in 0..NQ_ROWS {
                let scale = amanuensis_runtime::q8::quant::quantize_row(
                    &rows[m * d..(m + 1) * d],
                    &mut want,
                );
                let row = &image[m * (d + 64)..(m + 1) * (d + 64)];
                assert!(row[..d].iter().zip(&want).all(|(&g, &w)| g as i8 == w));
                assert_eq!(row[d..d + 4], scale.to_le_bytes());
                live += usize::from(scale > 0.0);
            }
        }
        assert!(live >= calls * NQ_ROWS / 2, "case {case}: {live}");
        assert!(codes.iter().any(|&b| b as i8 == 127 || b as i8 == -127));
    }
}

#[test]
fn exp2_vector_equals_the_rust_model() {
    // Every 2^-10 step of [-120, 0] (through the floor at -100), the floor and its neighbours,
    // −0, −∞, NaN, huge negatives (the integer steps wrap there; the select discards them).
    let mut ts: Vec<f32> = (0..=122_880).map(|i| -(i as f32) / 1024.0).collect();
    let floor = numerics::EXP2_FLOOR;
    ts.extend([
        floor,
        f32::from_bits(floor.to_bits() + 1),
        f32::from_bits(floor.to_bits() - 1),
        -0.0,
        -0.5,
        -1.5,
        -2.5,
        f32::NEG_INFINITY,
        f32::NAN,
        -1e30,
        -4.0e6,
        -3.4e38,
    ]);
    let out = run("exp2", &le(&ts, f32::to_le_bytes), "exp2");
    assert_eq!(out.len(), 4 * ts.len());
    for (&t, b) in ts.iter().zip(out.chunks_exact(4)) {
        let got = f32::from_le_bytes(b.try_into().unwrap());
        assert_eq!(got.to_bits(), numerics::exp2_nonpos(t).to_bits(), "2^{t}");
    }
}

#[test]
fn quant_code_equals_the_cpu_int8_rounding() {
    // The norm kernel's vector rounding (quant_codes_v, 32 lanes at a time): exact ties
    // (k + 0.5), their neighbours, the clamp, infinities and NaN, −0, values past 2^22 (where
    // the rounding addition could no longer hold them unclamped), and a dense sweep.
    let mut ys: Vec<f32> = (-260..=260)
        .flat_map(|i| {
            let t = i as f32 * 0.5;
            [
                t,
                f32::from_bits(t.to_bits() + 1),
                f32::from_bits(t.to_bits().saturating_sub(1)),
            ]
        })
        .collect();
    ys.extend([
        127.4,
        300.0,
        -300.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -0.0,
        0.49999997,
        -0.49999997,
        126.49999,
        126.5,
        -126.5,
        127.49999,
        -127.5,
        8.0e6,
        -3.0e38,
        1e-40,
    ]);
    ys.extend((-100_000..100_000).map(|i| i as f32 * 1.3e-3));
    let out = run("quant_code", &le(&ys, f32::to_le_bytes), "quant_code");
    assert_eq!(out.len(), ys.len());
    for (&y, &got) in ys.iter().zip(&out) {
        let want = amanuensis_runtime::q8::quant::code(y);
        assert_eq!(got as i8, want, "code({y})");
        assert_eq!(norm_quant::code(y), want, "model code({y})");
    }
}
