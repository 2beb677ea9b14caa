//! The f32 functions of the AIE kernels' models, written so that the kernels' C++ performs the
//! same IEEE operations in the same order (compiled with `-ffp-contract=off`: no fused
//! multiply-adds, as Rust never forms them): the GELU of `aie/kernels/matmul_i8.cc`, the
//! lane-wise body of `exp2_nonpos_v` in `aie/kernels/aie_vector_numerics.h`.
//!
//! - [`gelu`]: the erf-rational GELU of the CPU INT8 epilogue
//!   (`amanuensis_runtime::cpu::gelu_f32_in_place`), same constants, same order, so the NPU
//!   epilogue gives the CPU's bits.
//! - [`exp2_nonpos`]: `2^t` for `t ≤ 0` (the softmax after subtracting the row maximum, on
//!   scores already in log2 units), written lane by lane as the attention kernel's 16-lane
//!   vector code runs it: `n = round(t)` by the `1.5·2^23` addition, `f = t − n` (exact), a
//!   degree-4 polynomial for `2^f`, `2^n` added to the exponent bits; 0 below [`EXP2_FLOOR`]
//!   and for NaN. Within 3.5e-6 relative of `2^t` (tested), far below the bf16 narrowing of
//!   the probabilities (up to 2^-8 relative).
//! - [`bf16_round`]: f32 → bf16 with round-to-nearest-even, the narrowing AIE2 does when it
//!   stores a bf16 vector.
//!
//! On the AIE2 array these f32 operations run on the emulated f32 path of the vector unit;
//! whether that path rounds every operation exactly as IEEE f32 has **not** been checked on
//! hardware (no NPU here). The integer parts of the kernels are exact everywhere.

/// Numerator coefficients of the erf rational (f32, highest power first).
const ERF_ALPHA: [f32; 7] = [
    -2.726_142_3e-10,
    2.770_681_4e-8,
    -2.101_024e-6,
    -5.692_506_5e-5,
    -7.349_906_5e-4,
    -2.954_6e-3,
    -1.609_603_3e-2,
];
/// Denominator coefficients of the erf rational (f32, highest power first).
const ERF_BETA: [f32; 5] = [
    -1.456_607_2e-5,
    -2.133_740_6e-4,
    -1.682_827e-3,
    -7.373_329e-3,
    -1.426_473_9e-2,
];

/// `0.5·x·(1 + erf(x/√2))` with the f32 erf rational on `x/√2` clamped to [-4, 4].
#[inline]
pub fn gelu(x: f32) -> f32 {
    let z = (x * std::f32::consts::FRAC_1_SQRT_2).clamp(-4.0, 4.0);
    let z2 = z * z;
    let mut p = ERF_ALPHA[0];
    for &a in &ERF_ALPHA[1..] {
        p = p * z2 + a;
    }
    let mut q = ERF_BETA[0];
    for &b in &ERF_BETA[1..] {
        q = q * z2 + b;
    }
    let erf = (z * p / q).clamp(-1.0, 1.0);
    0.5 * x * (1.0 + erf)
}

/// `log2(e)`: the attention kernel folds it into the query scales, so its scores are in log2
/// units and the softmax needs `2^t`, not `e^x`.
pub const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// Below this `2^t` is 0. `2^-100` is 2^-91 of the smallest probability a 1536-key row can
/// hold after the max (`2^0 / 1536`), so nothing a bf16 probability or an f32 output can see;
/// it also keeps every nonzero `2^t`, and `2^t / sum`, a normal f32 (AIE2's f32 path has no
/// subnormals).
pub const EXP2_FLOOR: f32 = -100.0;
/// `1.5·2^23`: for `|t| < 2^22`, `t + ROUND_MAGIC` is `t` rounded to the nearest integer (ties
/// to even, the IEEE addition's rounding) plus `ROUND_MAGIC`, and that integer is in the low
/// mantissa bits of the sum.
pub const ROUND_MAGIC: f32 = 12_582_912.0;
/// `2^f ≈ 1 + f·(c1 + f·(c2 + f·(c3 + f·c4)))` on `[-0.5, 0.5]`, highest power first (the
/// constant term 1 is exact, so `2^0 = 1` exactly). Fitted for the relative error (iterated
/// weighted least squares, near minimax): 2.9e-6 in exact arithmetic.
pub const EXP2_POLY: [f32; 5] = [0.009582644, 0.05590594, 0.24024099, 0.69312423, 1.0];

/// `2^t` for `t ≤ 0`; 0 for `t < EXP2_FLOOR` and for NaN (−∞, a masked key, gives 0).
///
/// The lane-wise operations of `exp2_nonpos_v` in `aie/kernels/aie_vector_numerics.h`, in its
/// order: `s = t + ROUND_MAGIC` (round to an integer `n`), `f = t − (s − ROUND_MAGIC)` (exact,
/// `|f| ≤ 0.5`), `p = 2^f` by Horner (no fused multiply-adds), then the bits of `p` plus
/// `n << 23` (the low bits of `s` shifted into the exponent: exactly `p·2^n`, a normal number
/// for `t ≥ EXP2_FLOOR`), then the floor select. For `t` below the floor the integer steps
/// wrap; their result is discarded.
#[inline]
pub fn exp2_nonpos(t: f32) -> f32 {
    let s = t + ROUND_MAGIC;
    let f = t - (s - ROUND_MAGIC);
    let mut p = EXP2_POLY[0];
    for &c in &EXP2_POLY[1..] {
        p = p * f + c;
    }
    let e = f32::from_bits(p.to_bits().wrapping_add(s.to_bits() << 23));
    if t >= EXP2_FLOOR {
        e
    } else {
        0.0
    }
}

/// f32 → bf16 bits, round to nearest, ties to even (finite inputs; NaN is not produced here).
#[inline]
pub fn bf16_round(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// bf16 bits → f32 (exact).
#[inline]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_equals_the_cpu_int8_epilogue_bit_for_bit() {
        let xs: Vec<f32> = (-4000..4000).map(|i| i as f32 * 2.7e-3).collect();
        let mut cpu = xs.clone();
        amanuensis_runtime::cpu::gelu_f32_in_place(&mut cpu);
        for (x, c) in xs.iter().zip(&cpu) {
            assert_eq!(gelu(*x).to_bits(), c.to_bits(), "x = {x}");
        }
    }

    #[test]
    fn exp2_nonpos_is_within_3_5e_6_of_exp2() {
        // Every 2^-12 step of [-100, 0] (409 601 points): the polynomial's 2.9e-6 plus the
        // rounding of its 8 f32 operations.
        let mut worst = 0.0f64;
        for i in 0..=409_600 {
            let t = -(i as f32) / 4096.0;
            let want = (t as f64).exp2();
            let got = exp2_nonpos(t) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3.5e-6, "worst relative error {worst:e}");
        assert!(worst > 1e-6, "the bound is tight (worst {worst:e})");
        // Integers are exact powers of two (2^0 = 1 exactly: the row maximum's weight).
        for n in 0..=100 {
            assert_eq!(exp2_nonpos(-(n as f32)), (-(n as f32)).exp2(), "2^-{n}");
        }
        assert_eq!(exp2_nonpos(-0.0), 1.0);
        // The floor, masked keys (−∞) and NaN give 0; just above the floor a normal number.
        assert!(exp2_nonpos(EXP2_FLOOR).is_normal());
        assert_eq!(exp2_nonpos(-100.001), 0.0);
        assert_eq!(exp2_nonpos(-1e30), 0.0);
        assert_eq!(exp2_nonpos(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp2_nonpos(f32::NAN), 0.0);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_round(1.0), 0x3F80);
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even is 1.0.
        assert_eq!(bf16_round(1.0 + 1.0 / 256.0), 0x3F80);
        // 1 + 3·2^-8 ties between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
        assert_eq!(bf16_round(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(bf16_round(1.0 + 1.5 / 256.0), 0x3F81);
        assert_eq!(bf16_to_f32(bf16_round(0.15625)), 0.15625);
    }
}
