// Residual add, LayerNorm and per-row INT8 quantization of a GEMM's input, for AIE2 (npu1).
// Linked into the cores of aie/designs/norm_quant.py. Rust model: aie/src/kernels/norm_quant.rs
// (bit for bit on the host build, tests/host_build.rs); the model equals the CPU INT8 path
// (cpu::layer_norm + q8::quant::quantize_row, and the AddInto epilogue's `out += r`).
//
// One call: NQ_ROWS = 4 rows of width d (a multiple of 64; L1 budget in aie/src/design.rs).
//   x       f32 [4][d]  the residual stream rows
//   r       f32 [4][d]  add_norm_quant only: the output of the GEMM that feeds the residual
//   params  f32 gamma[d], beta[d], eps; in the design the first object of the x stream, which
//           nq_load_params copies into this kernel's own L1 array (an ObjectFifo object cannot
//           be held while the fifo streams on), sized by NQ_MAX_D (-DNQ_MAX_D=d per build)
//   x_out   f32 [4][d]  add_norm_quant only: x + r (the updated residual stream)
//   codes   int8, (d/64 + 1) runs of 256 bytes: for each depth step t the rows' 4 x 64 slice of
//           A object t in A-object order (a_offset, 4x8 blocks: one contiguous block row), then
//           the same slice of the row-scale object (sx[m] f32 LE at a_offset(m, 0), zeros).
//
// nq_quant (the plain quantize, for fc2's input): the same per-row quantization of x without
// the norm, i.e. q8::quant::quantize_row (max over |x|, then codes of x * (127 / max)).
//
// Per row, the CPU's operations in its order:
//   mean = lane_sum(v) / d; var = lane_sum((v - mean)^2) / d; inv = 1 / sqrt(var + eps)
//   y = (v - mean) * inv * gamma + beta
//   max = max|y|; scale = max / 127; codes = code(y * (127 / max))  (0 if max is 0 or inf)
// lane_sum = 8 interleaved f32 accumulators (one vector<float, 8>), then the lanes added in
// order. y is computed twice (for the max, then for the codes) instead of being stored: the
// same operations give the same bits, and L1 keeps no d-float temporary.
//
// All of it is 16-lane vector code: the sums take each 16-lane vector as two 8-lane halves
// (lanes i % 8, in the CPU's order); the max and the codes are lane-wise. The codes pass runs
// after every row's statistics, per 8-column block over the 4 rows at once (two 16-lane
// vectors: rows 0-1, rows 2-3), so the 32 codes of a block are the 4 x 8 block of the A
// object: one 32-byte store (the old per-byte scatter is gone). The rounding is
// quant_codes_v (aie_vector_numerics.h): q8::quant::code's bits without a float -> int
// conversion. Vector ops per 16 elements (aie/src/budget.rs NORM_OPS): the residual add 1
// (counted at its 2 store cycles), sums 2, variance 4 (1 multiply), max 6 (2 multiplies),
// codes 6 (3 multiplies) + 14 rounding + 1/2 narrowing.
#include "aie_kernel.h"
#include "aie_vector_numerics.h"

#include <math.h>

#define NQ_ROWS 4
#define NQ_LANES 8
#define NQ_VEC 16

namespace {

using vf = aie::vector<float, NQ_LANES>;

float lane_total(const vf &acc) {
  float s = -0.0f; // Iterator::sum's start; the lanes are never -0.0, so it is also 0.0's result
  for (unsigned l = 0; l < NQ_LANES; ++l) s = s + acc.get(l);
  return s;
}

// acc (the CPU's 8 lanes) += the 16 elements of x, in index order: lanes 0-7 then 8-15.
vf add_halves(const vf &acc, const v16f &x) {
  return aie::add(aie::add(acc, x.template extract<NQ_LANES>(0)), x.template extract<NQ_LANES>(1));
}

// (v - mean) * inv * gamma + beta on 16 lanes; mean and inv per lane.
v16f normalized(const v16f &v, const v16f &g, const v16f &b, const v16f &mean, const v16f &inv) {
  v16f t = aie::sub(v, mean);
  t = aie::mul(t, inv).template to_vector<float>();
  t = aie::mul(t, g).template to_vector<float>();
  return aie::add(t, b);
}

struct RowQuant {
  float mean, inv, q, scale;
};

RowQuant row_stats(const float *v, const float *gamma, const float *beta, float eps, int32_t d) {
  vf acc = aie::zeros<float, NQ_LANES>();
  for (unsigned i = 0; i < (unsigned)d; i += NQ_VEC)
    AIE_PREPARE_FOR_PIPELINING
    acc = add_halves(acc, aie::load_v<NQ_VEC>(v + i));
  const float mean = lane_total(acc) / (float)d;
  acc = aie::zeros<float, NQ_LANES>();
  for (unsigned i = 0; i < (unsigned)d; i += NQ_VEC)
    AIE_PREPARE_FOR_PIPELINING {
      const v16f t = aie::sub(aie::load_v<NQ_VEC>(v + i), mean);
      acc = add_halves(acc, aie::mul(t, t).template to_vector<float>());
    }
  const float var = lane_total(acc) / (float)d;
  const float inv = 1.0f / sqrtf(var + eps);

  const v16f meanv = aie::broadcast<float, NQ_VEC>(mean), invv = aie::broadcast<float, NQ_VEC>(inv);
  v16f mx = aie::zeros<float, NQ_VEC>();
  for (unsigned i = 0; i < (unsigned)d; i += NQ_VEC)
    AIE_PREPARE_FOR_PIPELINING {
      const v16f y = normalized(aie::load_v<NQ_VEC>(v + i), aie::load_v<NQ_VEC>(gamma + i),
                                aie::load_v<NQ_VEC>(beta + i), meanv, invv);
      mx = aie::max(mx, aie::abs(y));
    }
  float max = 0.0f;
  for (unsigned l = 0; l < NQ_VEC; ++l) max = max < mx.get(l) ? mx.get(l) : max;

  RowQuant r = {mean, inv, 0.0f, 0.0f};
  if (max > 0.0f && max <= 3.40282347e38f) {
    r.scale = max / 127.0f;
    r.q = 127.0f / max;
  }
  return r;
}

// Lanes 0-7 a's value, lanes 8-15 b's.
v16f pair(float a, float b) {
  return aie::concat(aie::broadcast<float, NQ_LANES>(a), aie::broadcast<float, NQ_LANES>(b));
}

void norm_quant_rows(const float *x, const float *params, int8_t *codes, int32_t d) {
  const float *gamma = params;
  const float *beta = params + d;
  const float eps = params[2 * d];
  const unsigned k_tiles = (unsigned)d / TILE_K;
  int8_t *scales = codes + k_tiles * NQ_ROWS * TILE_K;
  for (unsigned i = 0; i < NQ_ROWS * TILE_K; ++i) scales[i] = 0;
  RowQuant rq[NQ_ROWS];
  for (unsigned m = 0; m < NQ_ROWS; ++m) {
    rq[m] = row_stats(x + m * d, gamma, beta, eps, d);
    memcpy(scales + a_offset(m, 0), &rq[m].scale, 4);
  }
  // Rows 0-1 in the first vector, rows 2-3 in the second; a row of scale 0 has q = 0, so its
  // y * q is 0 or NaN and its codes 0, as the CPU writes them.
  const v16f mean[2] = {pair(rq[0].mean, rq[1].mean), pair(rq[2].mean, rq[3].mean)};
  const v16f inv[2] = {pair(rq[0].inv, rq[1].inv), pair(rq[2].inv, rq[3].inv)};
  const v16f q[2] = {pair(rq[0].q, rq[1].q), pair(rq[2].q, rq[3].q)};
  for (unsigned k = 0; k < (unsigned)d; k += NQ_LANES)
    AIE_PREPARE_FOR_PIPELINING {
      const aie::vector<float, NQ_LANES> g8 = aie::load_v<NQ_LANES>(gamma + k);
      const aie::vector<float, NQ_LANES> b8 = aie::load_v<NQ_LANES>(beta + k);
      const v16f g = aie::concat(g8, g8), b = aie::concat(b8, b8);
      v16i c[2];
      for (unsigned h = 0; h < 2; ++h) {
        const float *r0 = x + (2 * h) * d + k;
        const v16f v = aie::concat(aie::load_v<NQ_LANES>(r0), aie::load_v<NQ_LANES>(r0 + d));
        const v16f y = normalized(v, g, b, mean[h], inv[h]);
        c[h] = quant_codes_v(aie::mul(y, q[h]).template to_vector<float>());
      }
      // The 4 x 8 block of columns k..k+8 (a_offset(0, k % 64) onwards) of run k / 64.
      aie::store_v(codes + (k / TILE_K) * NQ_ROWS * TILE_K + a_offset(0, k % TILE_K), narrow_codes(c[0], c[1]));
    }
}

// The plain quantize of 4 rows (no norm): per row exactly q8::quant::quantize_row. The max
// per row as the CPU takes it, then the codes as norm_quant_rows writes them: per 8-column block
// the 4 rows at once (rows 0-1, rows 2-3), one 32-byte store of the A object's 4 x 8 block. A
// row of scale 0 has q = 0, so its x * q is 0 or NaN and its codes 0, as the CPU writes them.
void quant_rows(const float *x, int8_t *codes, int32_t d) {
  const unsigned k_tiles = (unsigned)d / TILE_K;
  int8_t *scales = codes + k_tiles * NQ_ROWS * TILE_K;
  for (unsigned i = 0; i < NQ_ROWS * TILE_K; ++i) scales[i] = 0;
  float qs[NQ_ROWS];
  for (unsigned m = 0; m < NQ_ROWS; ++m) {
    const float *v = x + m * d;
    vf mx = aie::zeros<float, NQ_LANES>();
    for (unsigned i = 0; i < (unsigned)d; i += NQ_LANES)
      AIE_PREPARE_FOR_PIPELINING
      mx = aie::max(mx, aie::abs(aie::load_v<NQ_LANES>(v + i)));
    float max = 0.0f;
    for (unsigned l = 0; l < NQ_LANES; ++l) max = max < mx.get(l) ? mx.get(l) : max;

    float scale = 0.0f, q = 0.0f;
    if (max > 0.0f && max <= 3.40282347e38f) {
      scale = max / 127.0f;
      q = 127.0f / max;
    }
    qs[m] = q;
    memcpy(scales + a_offset(m, 0), &scale, 4);
  }
  const v16f q[2] = {pair(qs[0], qs[1]), pair(qs[2], qs[3])};
  for (unsigned k = 0; k < (unsigned)d; k += NQ_LANES)
    AIE_PREPARE_FOR_PIPELINING {
      v16i c[2];
      for (unsigned h = 0; h < 2; ++h) {
        const float *r0 = x + (2 * h) * d + k;
        const v16f v = aie::concat(aie::load_v<NQ_LANES>(r0), aie::load_v<NQ_LANES>(r0 + d));
        c[h] = quant_codes_v(aie::mul(v, q[h]).template to_vector<float>());
      }
      aie::store_v(codes + (k / TILE_K) * NQ_ROWS * TILE_K + a_offset(0, k % TILE_K), narrow_codes(c[0], c[1]));
    }
}

} // namespace

#ifndef NQ_MAX_D
#define NQ_MAX_D 512
#endif

// gamma, beta, eps of the run (nq_load_params).
alignas(32) static float nq_params[2 * NQ_MAX_D + 16];
static int32_t nq_params_d = 0;

extern "C" {

// LayerNorm + quantization of 4 rows of x (the first norm of a stack, the cross K/V input).
void norm_quant(const float *__restrict x, const float *__restrict params, int8_t *__restrict codes,
                int32_t d) {
  norm_quant_rows(x, params, codes, d);
}

// x_out = x + r, then LayerNorm + quantization of x_out (every norm after a residual add).
void add_norm_quant(const float *__restrict x, const float *__restrict r, const float *__restrict params,
                    float *__restrict x_out, int8_t *__restrict codes, int32_t d) {
  for (unsigned i = 0; i < NQ_ROWS * (unsigned)d; i += NQ_VEC)
    AIE_PREPARE_FOR_PIPELINING
    aie::store_v(x_out + i, aie::add(aie::load_v<NQ_VEC>(x + i), aie::load_v<NQ_VEC>(r + i)));
  norm_quant_rows(x_out, params, codes, d);
}

// The design's entry points: the parameter object once per run (the x stream's first object,
// padded to a 4-row x object), then one call per 4-row group. d > NQ_MAX_D is a build error of
// the design (aie/src/design.rs checks the budget); here it leaves the parameters unset, and
// the norm calls then write nothing.
void nq_load_params(const float *__restrict obj, int32_t d) {
  if (d <= 0 || d > NQ_MAX_D) { nq_params_d = 0; return; }
  memcpy(nq_params, obj, (2 * (size_t)d + 1) * sizeof(float));
  nq_params_d = d;
}

void nq_norm(const float *__restrict x, int8_t *__restrict codes, int32_t d) {
  if (d == nq_params_d) norm_quant_rows(x, nq_params, codes, d);
}

void nq_add_norm(const float *__restrict x, const float *__restrict r, float *__restrict x_out,
                 int8_t *__restrict codes, int32_t d) {
  if (d == nq_params_d) add_norm_quant(x, r, nq_params, x_out, codes, d);
}

// The plain quantize design's entry point (aie/designs/norm_quant.py --quantize): 4 rows of a
// GEMM's f32 output (fc1's GELU output) quantized per row for the GEMM after it; no parameters.
void nq_quant(const float *__restrict x, int8_t *__restrict codes, int32_t d) {
  quant_rows(x, codes, d);
}

} // extern "C"
