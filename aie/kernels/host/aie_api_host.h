// Host stand-in for the subset of the AIE API (aie_api/aie.hpp) the Amanuensis kernels use.
//
// Semantics are those the Rust models define: integer products and sums exact; float
// operations one IEEE f32 operation per lane (mul, add, div, max, min); bf16 x bf16 products
// (exact in f32) accumulated one term at a time in increasing reduction index. On the array the
// integer results are the same by construction; whether AIE2's emulated fp32 and its bf16
// accumulator round exactly like this has NOT been checked on hardware.
#pragma once

#include <stdint.h>
#include <string.h>

typedef int8_t int8;
typedef int32_t int32;

// bfloat16 storage type (bits only; arithmetic goes through float).
struct bfloat16 {
  uint16_t bits;
  bfloat16() : bits(0) {}
  explicit operator float() const {
    const uint32_t b = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
  }
};

namespace aie {

struct acc32 {};
struct accfloat {};

template <typename T, unsigned N> struct vector {
  T v[N];
  T get(unsigned i) const { return v[i]; }
  T operator[](unsigned i) const { return v[i]; }
  void set(T x, unsigned i) { v[i] = x; }
  template <unsigned M> vector<T, M> extract(unsigned idx) const {
    vector<T, M> out;
    for (unsigned i = 0; i < M; ++i) out.v[i] = v[idx * M + i];
    return out;
  }
  template <unsigned M> vector &insert(unsigned idx, const vector<T, M> &part) {
    for (unsigned i = 0; i < M; ++i) v[idx * M + i] = part.v[i];
    return *this;
  }
  template <typename U> vector<U, N * sizeof(T) / sizeof(U)> cast_to() const {
    vector<U, N * sizeof(T) / sizeof(U)> out;
    memcpy(out.v, v, sizeof(v));
    return out;
  }
};

template <unsigned N, typename T> vector<T, N> load_v(const T *p) {
  vector<T, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = p[i];
  return out;
}

template <typename T, unsigned N> void store_v(T *p, const vector<T, N> &x) {
  for (unsigned i = 0; i < N; ++i) p[i] = x.v[i];
}

template <typename T, unsigned N> vector<T, N> broadcast(T x) {
  vector<T, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = x;
  return out;
}

template <typename T, unsigned N> vector<T, N> zeros() { return broadcast<T, N>(T(0)); }

template <typename Tag, unsigned N> struct accum;

template <unsigned N> struct accum<acc32, N> {
  int64_t v[N];
  template <typename T> vector<T, N> to_vector(int shift = 0) const {
    vector<T, N> out;
    for (unsigned i = 0; i < N; ++i) out.v[i] = (T)(v[i] >> shift);
    return out;
  }
  void from_vector(const vector<int32, N> &x, int shift = 0) {
    for (unsigned i = 0; i < N; ++i) v[i] = (int64_t)x.v[i] << shift;
  }
};

template <unsigned N> struct accum<accfloat, N> {
  float v[N];
  template <typename T> vector<T, N> to_vector() const {
    vector<T, N> out;
    for (unsigned i = 0; i < N; ++i) out.v[i] = v[i];
    return out;
  }
  void from_vector(const vector<float, N> &x) {
    for (unsigned i = 0; i < N; ++i) v[i] = x.v[i];
  }
};

// [rows][cols] -> [cols][rows].
template <typename T, unsigned N> vector<T, N> transpose(const vector<T, N> &x, unsigned rows, unsigned cols) {
  vector<T, N> out;
  for (unsigned r = 0; r < rows; ++r)
    for (unsigned c = 0; c < cols; ++c) out.v[c * rows + r] = x.v[r * cols + c];
  return out;
}

template <unsigned N> vector<float, N> to_float(const vector<int32, N> &x, int shift = 0) {
  vector<float, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = (float)x.v[i];
  (void)shift;
  return out;
}

template <unsigned N> accum<accfloat, N> mul(const vector<float, N> &a, const vector<float, N> &b) {
  accum<accfloat, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = a.v[i] * b.v[i];
  return out;
}

template <unsigned N> accum<accfloat, N> mul(const vector<float, N> &a, float b) {
  return mul(a, broadcast<float, N>(b));
}

template <unsigned N> accum<accfloat, N> mul(float a, const vector<float, N> &b) {
  return mul(broadcast<float, N>(a), b);
}

template <unsigned N> vector<float, N> add(const vector<float, N> &a, const vector<float, N> &b) {
  vector<float, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = a.v[i] + b.v[i];
  return out;
}

template <unsigned N> vector<float, N> add(const vector<float, N> &a, float b) {
  return add(a, broadcast<float, N>(b));
}

template <unsigned N> vector<float, N> add(float a, const vector<float, N> &b) {
  return add(broadcast<float, N>(a), b);
}

template <unsigned N> vector<float, N> sub(const vector<float, N> &a, const vector<float, N> &b) {
  vector<float, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = a.v[i] - b.v[i];
  return out;
}

template <unsigned N> vector<float, N> sub(const vector<float, N> &a, float b) {
  return sub(a, broadcast<float, N>(b));
}

// |x| per lane (clears the sign bit, as f32::abs).
template <unsigned N> vector<float, N> abs(const vector<float, N> &a) {
  vector<float, N> out;
  for (unsigned i = 0; i < N; ++i) {
    uint32_t b;
    memcpy(&b, &a.v[i], 4);
    b &= 0x7FFFFFFFu;
    memcpy(&out.v[i], &b, 4);
  }
  return out;
}

// Lane-wise max; a NaN in b leaves a (f32::max skips NaN; a is never NaN where it is used).
template <unsigned N> vector<float, N> max(const vector<float, N> &a, const vector<float, N> &b) {
  vector<float, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = a.v[i] < b.v[i] ? b.v[i] : a.v[i];
  return out;
}

template <unsigned N> vector<float, N> div(const vector<float, N> &a, const vector<float, N> &b) {
  vector<float, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = a.v[i] / b.v[i];
  return out;
}

// max/min as Rust's f32::clamp uses them (x < lo -> lo), identical for non-NaN lanes.
template <unsigned N> vector<float, N> max(const vector<float, N> &a, float b) {
  vector<float, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = a.v[i] < b ? b : a.v[i];
  return out;
}

template <unsigned N> vector<float, N> min(const vector<float, N> &a, float b) {
  vector<float, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = a.v[i] > b ? b : a.v[i];
  return out;
}

template <typename TA, typename TB> struct mmul_acc { typedef acc32 tag; typedef int64_t elem; };
template <> struct mmul_acc<bfloat16, bfloat16> { typedef accfloat tag; typedef float elem; };

// C[M x N] (+)= A[M x K] . B[K x N], operands row-major in their vectors.
template <unsigned M, unsigned K, unsigned N, typename TA, typename TB> struct mmul {
  static constexpr unsigned size_A = M * K;
  static constexpr unsigned size_B = K * N;
  static constexpr unsigned size_C = M * N;
  typedef typename mmul_acc<TA, TB>::tag tag;
  typedef typename mmul_acc<TA, TB>::elem elem;
  typedef accum<tag, M * N> accum_type;
  accum_type acc;

  mmul() { memset(&acc, 0, sizeof(acc)); }
  explicit mmul(const accum_type &a) : acc(a) {}

  void mac(const vector<TA, size_A> &a, const vector<TB, size_B> &b) {
    for (unsigned r = 0; r < M; ++r)
      for (unsigned c = 0; c < N; ++c) {
        elem s = acc.v[r * N + c];
        for (unsigned k = 0; k < K; ++k) s = s + (elem)a.v[r * K + k] * (elem)b.v[k * N + c];
        acc.v[r * N + c] = s;
      }
  }
  accum_type to_accum() const { return acc; }
  template <typename T> vector<T, size_C> to_vector() const {
    vector<T, size_C> out;
    for (unsigned i = 0; i < size_C; ++i) out.v[i] = (T)acc.v[i];
    return out;
  }
};

} // namespace aie

// The loop-pipelining hints of the AIE compilers are no-ops here.
#define AIE_PREPARE_FOR_PIPELINING
#define AIE_LOOP_MIN_ITERATION_COUNT(x)
#define AIE_LOOP_RANGE(a, b)
