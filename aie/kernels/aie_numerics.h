// Scalar f32 functions shared with aie/src/kernels/numerics.rs: the same IEEE operations in the
// same order (build with -ffp-contract=off; Rust never fuses multiply-adds).
#pragma once

#include <stdint.h>
#include <string.h>

// exp(x) for x <= 0; 0 below -87 and for NaN. Cody-Waite reduction, degree-7 Taylor.
static inline float exp_neg(float x) {
  if (!(x >= -87.0f)) return 0.0f;
  const float t = x * 1.44269502f; // log2(e)
  const int32_t n = t < 0.0f ? (int32_t)(t - 0.5f) : (int32_t)(t + 0.5f);
  const float nf = (float)n;
  const float r = (x - nf * 0.693145752f) - nf * 1.42860677e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const uint32_t bits = (uint32_t)(n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, 4);
  return p * scale;
}

// f32 -> bf16 bits, round to nearest even (finite inputs).
static inline uint16_t bf16_round(float x) {
  uint32_t b;
  memcpy(&b, &x, 4);
  return (uint16_t)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

static inline float bf16_to_f32(uint16_t h) {
  const uint32_t b = (uint32_t)h << 16;
  float f;
  memcpy(&f, &b, 4);
  return f;
}

// q8::quant::code: round half away from zero, clamped to [-127, 127]; NaN -> 0.
static inline int8_t quant_code(float y) {
  if (!(y == y)) return 0;
  if (y < -127.0f) y = -127.0f;
  if (y > 127.0f) y = 127.0f;
  const int32_t t = (int32_t)y; // truncation toward zero, |y| <= 127
  const float frac = y - (float)t;
  return (int8_t)(t + (frac >= 0.5f ? 1 : 0) - (frac <= -0.5f ? 1 : 0));
}
