// 16-lane f32 functions shared by the Amanuensis AIE kernels, in the AIE API vector style:
// the attention softmax's 2^t and the norm kernel's INT8 rounding. Each is a fixed sequence of
// lane-wise IEEE f32 / int32 operations, so its Rust counterpart is the same operations on one
// lane (aie/src/kernels/numerics.rs exp2_nonpos; norm_quant.rs code, the CPU's rounding).
//
// Neither relies on a float -> int conversion: UG1529 lists AIE2's vector float -> int32
// conversion as emulated with a fixed rounding mode, which differs between tool releases, so
// integers come from the 1.5 * 2^23 addition (IEEE round to nearest even) and its bits instead.
#pragma once

#include "aie_kernel.h"

typedef aie::vector<float, 16> v16f;
typedef aie::vector<int32, 16> v16i;

// 1.5 * 2^23: for |t| < 2^22, t + ROUND_MAGIC is round(t) (ties to even) + ROUND_MAGIC, the
// integer in the low mantissa bits.
#define ROUND_MAGIC 12582912.0f
#define ROUND_MAGIC_BITS 0x4B400000
#define EXP2_FLOOR -100.0f

// 2^t for t <= 0; 0 below EXP2_FLOOR and for NaN (so -inf, a masked key, gives 0).
// numerics.rs exp2_nonpos, lane by lane: s = t + M; f = t - (s - M) (exact, |f| <= 0.5);
// p = 2^f by a degree-4 Horner polynomial; bits(p) + (bits(s) << 23) = p * 2^round(t).
// Vector ops: 4 f32 multiplies, 7 f32 add/sub, 2 int32 (shift, add), compare, select.
static inline v16f exp2_nonpos_v(const v16f &t) {
  const v16f s = aie::add(t, ROUND_MAGIC);
  const v16f f = aie::sub(t, aie::sub(s, ROUND_MAGIC));
  v16f p = aie::broadcast<float, 16>(0.009582644f);
  p = aie::add(aie::mul(p, f).template to_vector<float>(), 0.05590594f);
  p = aie::add(aie::mul(p, f).template to_vector<float>(), 0.24024099f);
  p = aie::add(aie::mul(p, f).template to_vector<float>(), 0.69312423f);
  p = aie::add(aie::mul(p, f).template to_vector<float>(), 1.0f);
  const v16i e = aie::add(p.template cast_to<int32>(), aie::upshift(s.template cast_to<int32>(), 23));
  return aie::select(aie::zeros<float, 16>(), e.template cast_to<float>(), aie::ge(t, EXP2_FLOOR));
}

// q8::quant::code on 16 lanes, as int32 (the caller narrows 32 of them to int8 at once):
// clamp to [-127, 127], round half away from zero; NaN -> 0. NaN lanes become 0 first;
// a = min(|y|, 127); s = a + M rounds a to nearest even, r = s - M, d = a - r (exact, in
// [-0.5, 0.5]); a tie that RNE rounded down (d == 0.5) is rounded up instead; the magnitude
// bits(s) - bits(M) (+1) takes y's sign as (m ^ sgn) - sgn, sgn = bits(y) >> 31 (arithmetic).
// Vector ops: 2 compares, 2 selects, abs, min, 3 f32 add/sub, 5 int32 (sub, add, shift, xor,
// sub).
static inline v16i quant_codes_v(const v16f &y) {
  const v16f yn = aie::select(aie::zeros<float, 16>(), y, aie::eq(y, y));
  const v16f a = aie::min(aie::abs(yn), 127.0f);
  const v16f s = aie::add(a, ROUND_MAGIC);
  const v16f d = aie::sub(a, aie::sub(s, ROUND_MAGIC));
  v16i mag = aie::sub(s.template cast_to<int32>(), (int32)ROUND_MAGIC_BITS);
  mag = aie::add(mag, aie::select(aie::zeros<int32, 16>(), aie::broadcast<int32, 16>(1), aie::eq(d, 0.5f)));
  const v16i sgn = aie::downshift(yn.template cast_to<int32>(), 31);
  return aie::sub(aie::bit_xor(mag, sgn), sgn);
}

// Two 16-lane code vectors (values in [-127, 127]) as 32 int8, lanes of lo first: one srs of a
// 32-lane acc32 (shift 0; exact in range).
static inline aie::vector<int8, 32> narrow_codes(const v16i &lo, const v16i &hi) {
  aie::accum<aie::acc32, 32> acc;
  acc.from_vector(aie::concat(lo, hi));
  return acc.template to_vector<int8>(0);
}
