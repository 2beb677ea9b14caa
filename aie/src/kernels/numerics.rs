//! The scalar f32 functions the AIE kernels share with their host build, written so that the
//! C++ in `aie/kernels/aie_numerics.h` performs the same IEEE operations in the same order
//! (compiled with `-ffp-contract=off`: no fused multiply-adds, as Rust never forms them).
//!
//! - [`gelu`]: the erf-rational GELU of the CPU INT8 epilogue
//!   (`amanuensis_runtime::cpu::gelu_f32_in_place`), same constants, same order, so the NPU
//!   epilogue gives the CPU's bits.
//! - [`exp_neg`]: `exp(x)` for `x ≤ 0` (softmax after subtracting the row maximum), Cody-Waite
//!   reduction and a degree-7 polynomial; within 2 ulp of `f32::exp` on [-87, 0] (tested).
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

/// `log2(e)`.
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split so that `n·LN2_HI` is exact for |n| < 2^11 (Cody-Waite).
const LN2_HI: f32 = 0.693_145_75;
/// `ln 2 - LN2_HI`.
const LN2_LO: f32 = 1.428_606_8e-6;
/// Below this `exp` is under the smallest normal f32 (and far below anything a bf16
/// probability can hold): the result is 0.
pub const EXP_FLOOR: f32 = -87.0;

/// `exp(x)` for `x ≤ 0`; 0 for `x < EXP_FLOOR` (and for NaN, which a softmax never feeds it).
///
/// `n = round(x·log2 e)`, `r = x − n·ln2` in two steps, `e^r` by its degree-7 Taylor
/// polynomial (|r| ≤ 0.35: truncation error 5e-9 relative), times `2^n` built from the
/// exponent bits (`n ≥ -126`, so always a normal number).
#[inline]
pub fn exp_neg(x: f32) -> f32 {
    // NaN takes the zero branch too, as in the C++ (`!(x >= EXP_FLOOR)`).
    if x.is_nan() || x < EXP_FLOOR {
        return 0.0;
    }
    let t = x * LOG2_E;
    // Round half away from zero by truncation; |t| ≤ 126 so the conversion is exact.
    let n = if t < 0.0 {
        (t - 0.5) as i32
    } else {
        (t + 0.5) as i32
    };
    let nf = n as f32;
    let r = (x - nf * LN2_HI) - nf * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    p * f32::from_bits(((n + 127) as u32) << 23)
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
    fn exp_neg_is_within_two_ulp_of_libm() {
        let mut worst = 0u32;
        let mut x = 0.0f32;
        while x > EXP_FLOOR {
            let want = x.exp();
            let got = exp_neg(x);
            let ulps = (want.to_bits() as i64 - got.to_bits() as i64).unsigned_abs() as u32;
            worst = worst.max(ulps);
            x -= 1.37e-3;
        }
        assert!(worst <= 2, "worst {worst} ulp");
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(-88.0), 0.0);
        assert_eq!(exp_neg(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_neg(f32::NAN), 0.0);
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
