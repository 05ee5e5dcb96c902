// gelu.h: the native epilogue's exact GELU over a whole array (gelu.cpp has the details).
#pragma once

#include <cstdint>
#include <string>

namespace bertqa {

// y[0..n) <- gelu(y) with the per-element function of ISA path `isa` (avx512vnni, avx2, scalar).
void gelu_inplace(float* y, int64_t n, const std::string& isa, int nthreads);

}  // namespace bertqa
