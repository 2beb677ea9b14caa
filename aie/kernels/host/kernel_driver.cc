// Host driver for tests/host_build.rs: runs one kernel sequence on inputs read from a file and
// writes its outputs to another. Not part of any device build.
//
//   kernel_driver matmul    IN OUT   IN  = u32 k_tiles, i32 mode, k_tiles A objects (2048 B),
//                                          k_tiles W objects (4096 B), scales (2048), params (4096)
//                                    OUT = 2048 i32 sums, then 2048 f32 results
//   kernel_driver attention IN OUT   IN  = u32 chunks, i32 limits[4], q (256 B), qs f32[4], then per
//                                          chunk: k (2048 B), ks f32[32], v u16[2048]
//                                    OUT = scores f32[4][1536], p u16[4][1536], out f32[4][64]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#include "../aie_kernel.h"

extern "C" {
void zero_i32(int32_t *c);
void matmul_i8_i32(const int8_t *a, const int8_t *w, int32_t *c);
void dequant_bias_act(int32_t *c, const int8_t *scales, const int8_t *params, int32_t mode);
void attn_scores_i8(const int8_t *q, const float *qs, const int8_t *k, const float *ks, int32_t key0,
                    float *scores);
void attn_softmax(const float *scores, const int32_t *limits, int32_t n_keys, uint16_t *p);
void attn_pv_bf16(const uint16_t *p, const uint16_t *v, int32_t key0, float *out);
void attn_scores_obj(const int8_t *qobj, const int8_t *kobj, int32_t key0, float *scores);
void attn_softmax_obj(const float *scores, const int8_t *qobj, int32_t n_keys, uint16_t *p);
}

static std::vector<char> slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); exit(2); }
  std::vector<char> buf;
  char tmp[65536];
  size_t n;
  while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) buf.insert(buf.end(), tmp, tmp + n);
  fclose(f);
  return buf;
}

struct Reader {
  const char *p, *end;
  const char *take(size_t n) {
    if ((size_t)(end - p) < n) { fprintf(stderr, "input too short\n"); exit(2); }
    const char *q = p;
    p += n;
    return q;
  }
  template <typename T> T get() { T v; memcpy(&v, take(sizeof v), sizeof v); return v; }
};

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: %s matmul|attention IN OUT\n", argv[0]); return 2; }
  std::vector<char> in = slurp(argv[2]);
  Reader r{in.data(), in.data() + in.size()};
  std::vector<char> out;
  if (!strcmp(argv[1], "matmul")) {
    const uint32_t kt = r.get<uint32_t>();
    const int32_t mode = r.get<int32_t>();
    const int8_t *a = (const int8_t *)r.take(2048 * kt);
    const int8_t *w = (const int8_t *)r.take(4096 * kt);
    const int8_t *scales = (const int8_t *)r.take(2048);
    const int8_t *params = (const int8_t *)r.take(4096);
    alignas(64) static int32_t c[2048];
    zero_i32(c);
    for (uint32_t t = 0; t < kt; ++t) matmul_i8_i32(a + 2048 * t, w + 4096 * t, c);
    out.insert(out.end(), (char *)c, (char *)c + sizeof c);
    dequant_bias_act(c, scales, params, mode);
    out.insert(out.end(), (char *)c, (char *)c + sizeof c);
  } else if (!strcmp(argv[1], "attention")) {
    const uint32_t chunks = r.get<uint32_t>();
    int32_t limits[4];
    memcpy(limits, r.take(16), 16);
    // The Q object: codes, scales, limits (what the IRON design's cores receive).
    alignas(64) int8_t qobj[256 + 16 + 16];
    memcpy(qobj, r.take(256), 256);
    memcpy(qobj + 256, r.take(16), 16);
    memcpy(qobj + 272, limits, 16);
    static float scores[4 * 1536];
    static uint16_t p[4 * 1536];
    alignas(64) static float o[4 * 64];
    const char *chunk0 = r.p;
    const size_t chunk_bytes = 2048 + 128 + 4096;
    r.take(chunk_bytes * chunks);
    for (uint32_t c = 0; c < chunks; ++c) {
      alignas(64) int8_t kobj[2048 + 128];
      memcpy(kobj, chunk0 + c * chunk_bytes, 2048 + 128);
      attn_scores_obj(qobj, kobj, 32 * c, scores);
    }
    attn_softmax_obj(scores, qobj, 32 * chunks, p);
    for (uint32_t c = 0; c < chunks; ++c) {
      alignas(64) uint16_t v[2048];
      memcpy(v, chunk0 + c * chunk_bytes + 2048 + 128, 4096);
      attn_pv_bf16(p, v, 32 * c, o);
    }
    out.insert(out.end(), (char *)scores, (char *)scores + sizeof scores);
    out.insert(out.end(), (char *)p, (char *)p + sizeof p);
    out.insert(out.end(), (char *)o, (char *)o + sizeof o);
  } else {
    fprintf(stderr, "unknown kernel %s\n", argv[1]);
    return 2;
  }
  FILE *f = fopen(argv[3], "wb");
  if (!f || fwrite(out.data(), 1, out.size(), f) != out.size()) { perror(argv[3]); return 2; }
  fclose(f);
  return 0;
}
