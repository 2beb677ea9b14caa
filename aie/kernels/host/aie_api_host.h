// Host stand-in for the subset of the AIE API (aie_api/aie.hpp) the Amanuensis kernels use.
//
// Semantics are those the Rust models define: integer products and sums exact; float
// operations one IEEE f32 operation per lane (mul, add, div, max, min); bf16 x bf16 products
// (exact in f32) accumulated one term at a time in increasing reduction index; int32 lane
// arithmetic two's complement, wrapping; f32 -> bf16 narrowing round to nearest even. On the
// array the integer results are the same by construction; whether AIE2's emulated fp32, its
// bf16 accumulator, its f32 compares (NaN) and its narrowing round exactly like this has NOT
// been checked on hardware.
#pragma once

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

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

// aie::rounding_mode and aie::set_rounding. The stand-in implements one use: conv_even (round
// to nearest, ties to even) for the f32 -> bf16 narrowing of an accfloat; narrowing under any
// other mode aborts, so a kernel that forgets to set it fails its host test.
enum class rounding_mode { floor, ceil, symmetric_floor, symmetric_ceil, positive_inf, negative_inf,
                           symmetric_inf, symmetric_zero, conv_even, conv_odd };

inline rounding_mode &current_rounding() {
  static rounding_mode mode = rounding_mode::floor; // AIE2's reset value
  return mode;
}

inline void set_rounding(rounding_mode m) { current_rounding() = m; }

// A lane mask (the result of a vector compare).
template <unsigned N> struct mask {
  bool m[N];
  bool test(unsigned i) const { return m[i]; }
};

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

template <typename T, unsigned N> vector<T, N> zeros() { return broadcast<T, N>(T()); }

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
  // To float: the lanes. To bfloat16: each lane rounded to nearest even (finite lanes; the
  // rounding mode must be conv_even).
  template <typename T> vector<T, N> to_vector() const {
    vector<T, N> out;
    if constexpr (std::is_same<T, bfloat16>::value) {
      if (current_rounding() != rounding_mode::conv_even) {
        fprintf(stderr, "aie_api_host: bf16 narrowing needs rounding_mode::conv_even\n");
        abort();
      }
      for (unsigned i = 0; i < N; ++i) {
        uint32_t b;
        memcpy(&b, &v[i], 4);
        out.v[i].bits = (uint16_t)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
      }
    } else {
      for (unsigned i = 0; i < N; ++i) out.v[i] = v[i];
    }
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

// [a, b]: a's lanes, then b's.
template <typename T, unsigned N> vector<T, 2 * N> concat(const vector<T, N> &a, const vector<T, N> &b) {
  vector<T, 2 * N> out;
  for (unsigned i = 0; i < N; ++i) {
    out.v[i] = a.v[i];
    out.v[N + i] = b.v[i];
  }
  return out;
}

// IEEE compares per lane: false where a lane is NaN (eq(y, y) is the not-NaN mask).
template <unsigned N> mask<N> eq(const vector<float, N> &a, const vector<float, N> &b) {
  mask<N> out;
  for (unsigned i = 0; i < N; ++i) out.m[i] = a.v[i] == b.v[i];
  return out;
}

template <unsigned N> mask<N> eq(const vector<float, N> &a, float b) {
  return eq(a, broadcast<float, N>(b));
}

template <unsigned N> mask<N> ge(const vector<float, N> &a, float b) {
  mask<N> out;
  for (unsigned i = 0; i < N; ++i) out.m[i] = a.v[i] >= b;
  return out;
}

// Per lane: b where the mask is set, else a.
template <typename T, unsigned N> vector<T, N> select(const vector<T, N> &a, const vector<T, N> &b, const mask<N> &m) {
  vector<T, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = m.m[i] ? b.v[i] : a.v[i];
  return out;
}

// int32 lanes: two's complement, wrapping (computed on uint32, no undefined overflow).
template <unsigned N> vector<int32, N> add(const vector<int32, N> &a, const vector<int32, N> &b) {
  vector<int32, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = (int32)((uint32_t)a.v[i] + (uint32_t)b.v[i]);
  return out;
}

template <unsigned N> vector<int32, N> sub(const vector<int32, N> &a, const vector<int32, N> &b) {
  vector<int32, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = (int32)((uint32_t)a.v[i] - (uint32_t)b.v[i]);
  return out;
}

template <unsigned N> vector<int32, N> sub(const vector<int32, N> &a, int32 b) {
  return sub(a, broadcast<int32, N>(b));
}

// Left shift by `s` < 32, bits shifted out dropped.
template <unsigned N> vector<int32, N> upshift(const vector<int32, N> &a, unsigned s) {
  vector<int32, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = (int32)((uint32_t)a.v[i] << s);
  return out;
}

// Arithmetic right shift by `s` < 32 (the sign bit copied in).
template <unsigned N> vector<int32, N> downshift(const vector<int32, N> &a, unsigned s) {
  vector<int32, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = a.v[i] < 0 ? ~(int32)(~(uint32_t)a.v[i] >> s) : (int32)((uint32_t)a.v[i] >> s);
  return out;
}

template <unsigned N> vector<int32, N> bit_xor(const vector<int32, N> &a, const vector<int32, N> &b) {
  vector<int32, N> out;
  for (unsigned i = 0; i < N; ++i) out.v[i] = a.v[i] ^ b.v[i];
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
