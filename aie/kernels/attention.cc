// Attention for AIE2 (npu1): int8 Q.K^T with i32 accumulation, softmax in f32 over the whole
// row and normalised before anything is narrowed, then P.V in bf16 with f32 accumulation.
// Linked into the cores of aie/designs/attention.py. Rust model: aie/src/kernels/attention.rs
// (bit for bit on the host build, tests/host_build.rs).
//
// One core handles Q_ROWS = 4 queries of one head (HEAD_DIM 64) against up to MAX_KEYS keys,
// streamed as chunks of 32 keys: pass 1 (attn_scores_i8) per K chunk, pass 2 (attn_softmax)
// once, pass 3 (attn_pv_bf16) per V chunk. Scores are never narrowed: an earlier NPU attempt
// clamped them to int8 before the softmax and lost the attention (correlation 0.18).
//
// The softmax is 16-lane f32 vector code (exp2_nonpos_v of aie_vector_numerics.h): pass 1
// folds log2(e) into the row scale, so the scores are in log2 units and the softmax takes
// 2^(s - max); the weights overwrite the scores in place (one exponential per score, no second
// L1 row). Its vector operation count per 16 scores, with pass 1's scaling, is the cycle
// figure of aie/src/budget.rs (Assumptions::softmax_cycles_per_score).
#include "aie_kernel.h"
#include "aie_vector_numerics.h"

#include <math.h>

#define Q_ROWS 4
#define HEAD_DIM 64
#define KEY_CHUNK 32
#define MAX_KEYS 1536
#define SM_LANES 16
#define LOG2E 1.442695f

extern "C" {

// scores[i][key0 + j] = (sum_d q[i][d] k[j][d]) * (qs[i] * log2 e) * ks[j]; q in one row of 4x8 blocks
// (A-object order), k in 8x8 blocks [key][d] (W-object order); scores row-major [4][MAX_KEYS].
void attn_scores_i8(const int8_t *__restrict q, const float *__restrict qs, const int8_t *__restrict k,
                    const float *__restrict ks, int32_t key0, float *__restrict scores) {
  using MMUL = aie::mmul<4, 8, 8, int8, int8>;
  for (unsigned jb = 0; jb < KEY_CHUNK / 8; ++jb) {
    MMUL m;
    for (unsigned db = 0; db < HEAD_DIM / 8; ++db)
      AIE_PREPARE_FOR_PIPELINING {
        const aie::vector<int8, 32> qv = aie::load_v<32>((const int8 *)q + db * 32);
        const aie::vector<int8, 64> kv = aie::load_v<64>((const int8 *)k + (jb * 8 + db) * 64);
        m.mac(qv, aie::transpose(kv, 8, 8));
      }
    const aie::vector<float, 32> acc = aie::to_float(m.template to_vector<int32>(), 0);
    const aie::vector<float, 8> ksv = aie::load_v<8>(ks + jb * 8);
    for (unsigned i = 0; i < Q_ROWS; ++i) {
      const aie::vector<float, 8> row = acc.template extract<8>(i);
      const aie::vector<float, 8> t = aie::mul(row, qs[i] * LOG2E).template to_vector<float>();
      aie::store_v(scores + i * MAX_KEYS + key0 + jb * 8, aie::mul(t, ksv).template to_vector<float>());
    }
  }
}

// Row i keeps keys [0, limits[i]) (causal rows pass position + 1, padding rows 0); writes bf16
// probabilities to p[i][0..n_keys) (n_keys a multiple of 16), zeros past the limit. The kept
// keys' scores, in whole vectors, are overwritten with their weights 2^(s - max); the masked
// keys of the last vector first become -inf (weight 0).
//
// Vector ops per 16 scores (aie/src/budget.rs SOFTMAX_OPS): max 1; t = s - max,
// exp2_nonpos_v, the lane sum 17 (4 of them f32 multiplies); * 1/sum and the bf16 narrowing 2
// (1 multiply); pass 1's scaling 3 (2 multiplies, the conversion). Per row: the -inf tail, two
// lane reductions, one scalar reciprocal.
void attn_softmax(float *__restrict scores, const int32_t *__restrict limits, int32_t n_keys,
                  uint16_t *__restrict p) {
  aie::set_rounding(aie::rounding_mode::conv_even);
  const aie::vector<bfloat16, SM_LANES> zero_p = aie::zeros<bfloat16, SM_LANES>();
  for (unsigned i = 0; i < Q_ROWS; ++i) {
    float *row = scores + i * MAX_KEYS;
    bfloat16 *prow = (bfloat16 *)(p + i * MAX_KEYS);
    const int32_t lim = limits[i] < n_keys ? limits[i] : n_keys;
    if (lim <= 0) {
      for (int32_t j = 0; j < n_keys; j += SM_LANES) aie::store_v(prow + j, zero_p);
      continue;
    }
    const int32_t whole = (lim + SM_LANES - 1) / SM_LANES * SM_LANES;
    for (int32_t j = lim; j < whole; ++j) row[j] = -INFINITY;

    v16f mx = aie::load_v<SM_LANES>(row);
    for (int32_t j = SM_LANES; j < whole; j += SM_LANES)
      AIE_PREPARE_FOR_PIPELINING
      mx = aie::max(mx, aie::load_v<SM_LANES>(row + j));
    float max = mx.get(0);
    for (unsigned l = 1; l < SM_LANES; ++l) max = max < mx.get(l) ? mx.get(l) : max;

    v16f acc = aie::zeros<float, SM_LANES>();
    for (int32_t j = 0; j < whole; j += SM_LANES)
      AIE_PREPARE_FOR_PIPELINING {
        const v16f e = exp2_nonpos_v(aie::sub(aie::load_v<SM_LANES>(row + j), max));
        aie::store_v(row + j, e);
        acc = aie::add(acc, e);
      }
    // The 16 lanes added as a tree: 8 + 8, 4 + 4, 2 + 2, 1 + 1 (attention.rs tree_sum).
    const aie::vector<float, 8> s8 = aie::add(acc.template extract<8>(0), acc.template extract<8>(1));
    const aie::vector<float, 4> s4 = aie::add(s8.template extract<4>(0), s8.template extract<4>(1));
    const aie::vector<float, 2> s2 = aie::add(s4.template extract<2>(0), s4.template extract<2>(1));
    const float inv = 1.0f / (s2.get(0) + s2.get(1));

    for (int32_t j = 0; j < whole; j += SM_LANES)
      AIE_PREPARE_FOR_PIPELINING
      aie::store_v(prow + j, aie::mul(aie::load_v<SM_LANES>(row + j), inv).template to_vector<bfloat16>());
    for (int32_t j = whole; j < n_keys; j += SM_LANES) aie::store_v(prow + j, zero_p);
  }
}

// out[i][c] += sum_j p[i][key0 + j] * v[j][c]; v row-major [32 keys][64] bf16.
void attn_pv_bf16(const uint16_t *__restrict p, const uint16_t *__restrict v, int32_t key0,
                  float *__restrict out) {
  using MMUL = aie::mmul<4, 8, 4, bfloat16, bfloat16>;
  for (unsigned cb = 0; cb < HEAD_DIM / 4; ++cb) {
    aie::vector<float, 16> ov;
    for (unsigned i = 0; i < Q_ROWS; ++i) ov.insert(i, aie::load_v<4>(out + i * HEAD_DIM + cb * 4));
    MMUL::accum_type acc;
    acc.from_vector(ov);
    MMUL m(acc);
    for (unsigned jb = 0; jb < KEY_CHUNK / 8; ++jb)
      AIE_PREPARE_FOR_PIPELINING {
        aie::vector<bfloat16, 32> pv;
        for (unsigned i = 0; i < Q_ROWS; ++i)
          pv.insert(i, aie::load_v<8>((const bfloat16 *)p + i * MAX_KEYS + key0 + jb * 8));
        aie::vector<bfloat16, 32> vv;
        for (unsigned j = 0; j < 8; ++j)
          vv.insert(j, aie::load_v<4>((const bfloat16 *)v + (jb * 8 + j) * HEAD_DIM + cb * 4));
        m.mac(pv, vv);
      }
    const aie::vector<float, 16> res = m.template to_vector<float>();
    for (unsigned i = 0; i < Q_ROWS; ++i) aie::store_v(out + i * HEAD_DIM + cb * 4, res.template extract<4>(i));
  }
}

// The entry points the IRON design links (aie/designs/attention.py): they take whole objects.
// A Q object is 4 x 64 codes (A-object order), 4 f32 row scales, 4 i32 key limits; a K object is
// 32 x 64 codes (W-object order) and 32 f32 key scales.
#define Q_CODES (Q_ROWS * HEAD_DIM)
#define K_CODES (KEY_CHUNK * HEAD_DIM)

void attn_scores_obj(const int8_t *__restrict qobj, const int8_t *__restrict kobj, int32_t key0,
                     float *__restrict scores) {
  attn_scores_i8(qobj, (const float *)(qobj + Q_CODES), kobj, (const float *)(kobj + K_CODES), key0, scores);
}

void attn_softmax_obj(float *__restrict scores, const int8_t *__restrict qobj, int32_t n_keys,
                      uint16_t *__restrict p) {
  attn_softmax(scores, (const int32_t *)(qobj + Q_CODES + 4 * Q_ROWS), n_keys, p);
}

} // extern "C"
