// INT8 matmul tile for AIE2 (npu1), i32 accumulation, and its dequantize / bias / GELU epilogue.
// Linked into every core of aie/designs/gemm_i8.py. Rust model: aie/src/kernels/matmul.rs
// (bit for bit on the host build, tests/host_build.rs).
//
// Objects in L1 (aie/src/kernels/layout.rs):
//   A   32 rows x 64 k int8, 4x8 blocks (the memory tile's MM2S pattern makes them);
//   W   one 64 x 64 tile of the model file (64 channels x 64 k), 8x8 blocks [n][k];
//   C   32 x 64 int32 sums, row-major; the epilogue turns them into f32 in place.
// After the k/64 depth steps each stream carries one more object: the row scales (row m of the
// A object starts with sx[m], f32 LE) and the channel parameters (channel n of the W object
// starts with sw[n], b[n]).
#include "aie_kernel.h"

extern "C" {

// C = 0.
void zero_i32(int32_t *__restrict c) {
  const aie::vector<int32, 16> z = aie::zeros<int32, 16>();
  for (unsigned i = 0; i < TILE_M * TILE_N; i += 16)
    AIE_PREPARE_FOR_PIPELINING
    aie::store_v(c + i, z);
}

// C[m][n] += sum_k A[m][k] * W[n][k] over one 64-deep step.
void matmul_i8_i32(const int8_t *__restrict a, const int8_t *__restrict w, int32_t *__restrict c) {
  using MMUL = aie::mmul<4, 8, 8, int8, int8>;
  for (unsigned mb = 0; mb < TILE_M / 4; ++mb)
    for (unsigned nb = 0; nb < TILE_N / 8; ++nb) {
      int32_t *cb = c + mb * 4 * TILE_N + nb * 8;
      aie::vector<int32, 32> cv;
      for (unsigned r = 0; r < 4; ++r) cv.insert(r, aie::load_v<8>(cb + r * TILE_N));
      MMUL::accum_type acc;
      acc.from_vector(cv, 0);
      MMUL m(acc);
      for (unsigned kb = 0; kb < TILE_K / 8; ++kb)
        AIE_PREPARE_FOR_PIPELINING
        AIE_LOOP_MIN_ITERATION_COUNT(8) {
          const aie::vector<int8, 32> av = aie::load_v<32>((const int8 *)a + (mb * 8 + kb) * 32);
          const aie::vector<int8, 64> wv = aie::load_v<64>((const int8 *)w + (nb * 8 + kb) * 64);
          // The file tile is [channel][k]; mmul's B operand is [k][channel].
          m.mac(av, aie::transpose(wv, 8, 8));
        }
      const aie::vector<int32, 32> out = m.template to_vector<int32>();
      for (unsigned r = 0; r < 4; ++r) aie::store_v(cb + r * TILE_N, out.template extract<8>(r));
    }
}

// out = f(acc * sx[m] * sw[n] + b[n]) in place (f32 bits over the i32 sums); mode 0 = store,
// 1 = GELU with the erf rational of the CPU INT8 epilogue.
void dequant_bias_act(int32_t *__restrict c, const int8_t *__restrict scales,
                      const int8_t *__restrict params, int32_t mode) {
  constexpr unsigned L = 8;
  for (unsigned m = 0; m < TILE_M; ++m) {
    const float sx = load_f32(scales + a_offset(m, 0));
    for (unsigned nb = 0; nb < TILE_N / L; ++nb) {
      aie::vector<float, L> sw, b;
      for (unsigned i = 0; i < L; ++i) {
        sw.set(load_f32(params + w_offset(nb * L + i, 0)), i);
        b.set(load_f32(params + w_offset(nb * L + i, 4)), i);
      }
      int32_t *p = c + m * TILE_N + nb * L;
      const aie::vector<float, L> acc = aie::to_float(aie::load_v<L>((const int32 *)p), 0);
      const aie::vector<float, L> t = aie::mul(acc, sx).template to_vector<float>();
      aie::vector<float, L> r = aie::add(aie::mul(t, sw).template to_vector<float>(), b);
      if (mode == 1) {
        aie::vector<float, L> z = aie::mul(r, 0.70710677f).template to_vector<float>();
        z = aie::min(aie::max(z, -4.0f), 4.0f);
        const aie::vector<float, L> z2 = aie::mul(z, z).template to_vector<float>();
        static const float alpha[7] = {-2.7261423e-10f, 2.7706814e-08f, -2.101024e-06f, -5.6925065e-05f,
                                       -7.3499065e-04f, -2.9546e-03f, -1.6096033e-02f};
        static const float beta[5] = {-1.4566072e-05f, -2.1337406e-04f, -1.682827e-03f, -7.373329e-03f,
                                      -1.4264739e-02f};
        aie::vector<float, L> pn = aie::broadcast<float, L>(alpha[0]);
        for (unsigned i = 1; i < 7; ++i) pn = aie::add(aie::mul(pn, z2).template to_vector<float>(), alpha[i]);
        aie::vector<float, L> qd = aie::broadcast<float, L>(beta[0]);
        for (unsigned i = 1; i < 5; ++i) qd = aie::add(aie::mul(qd, z2).template to_vector<float>(), beta[i]);
        aie::vector<float, L> erf = aie::div(aie::mul(z, pn).template to_vector<float>(), qd);
        erf = aie::min(aie::max(erf, -1.0f), 1.0f);
        const aie::vector<float, L> half_x = aie::mul(0.5f, r).template to_vector<float>();
        r = aie::mul(half_x, aie::add(1.0f, erf)).template to_vector<float>();
      }
      aie::store_v((float *)p, r);
    }
  }
}

} // extern "C"
