// Common prelude of the Amanuensis AIE kernels.
//
// On the array (Peano / chess, from an IRON design) this is the AIE API. For the host build
// (tests/host_build.rs, `-DAIE_HOST_BUILD`) it is a thin stand-in that implements the same
// calls with plain C++, so the same kernel source runs on the host and its results are
// compared bit for bit with the Rust models in aie/src/kernels/.
#pragma once

#include <stdint.h>
#include <string.h>

#if defined(AIE_HOST_BUILD)
#include "host/aie_api_host.h"
#else
#include <aie_api/aie.hpp>
#include <aie_api/aie_adf.hpp>
#endif

// L1 object geometry (aie/src/kernels/layout.rs).
#define TILE_M 32
#define TILE_K 64
#define TILE_N 64

// Offset of (m, k) in an A object: 4x8 blocks, row-major inside and between blocks.
static inline unsigned a_offset(unsigned m, unsigned k) {
  return ((m / 4) * (TILE_K / 8) + k / 8) * 32 + (m % 4) * 8 + k % 8;
}

// Offset of (n, k) in a W object: 8 channels x 8 k blocks.
static inline unsigned w_offset(unsigned n, unsigned k) {
  return ((n / 8) * (TILE_K / 8) + k / 8) * 64 + (n % 8) * 8 + k % 8;
}

static inline float load_f32(const int8_t *p) {
  float f;
  memcpy(&f, p, 4);
  return f;
}
