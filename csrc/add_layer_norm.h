// add_layer_norm.h: out = LayerNorm(x + y) (add_layer_norm.cpp has the details).
#pragma once

#include <cstdint>

namespace bertqa {

// x, y, out: [M, N] fp32 (out may alias x or y); gamma, beta: [N]. `portable`: the path for CPUs
// without AVX-512 even where the CPU has it (tests).
void add_layer_norm(const float* x, const float* y, const float* gamma, const float* beta,
                    float eps, int64_t M, int64_t N, float* out, int nthreads, bool portable = false);

}  // namespace bertqa
