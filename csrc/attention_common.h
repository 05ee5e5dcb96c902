// attention_common.h: what the two native attention kernels (attention_bf16.cpp,
// attention_fp32.cpp) share: their scratch buffers, the head-size check and the padded key bias.
#pragma once

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention_bf16.h"

namespace bertqa {

template <class T>
struct Scratch {                // per-thread buffer, grown on demand, never shrunk
  std::vector<T> v;
  T* get(size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
  }
};

inline void check_head_size(int64_t d) {
  if (d < 1 || d > kMaxHeadDim)
    throw std::invalid_argument("head size " + std::to_string(d) + " outside 1.." + std::to_string(kMaxHeadDim));
}

// Per batch, [B][Sk]: key_bias [B, S] (or 0 where null), then -inf for the padding keys S..Sk-1
// (they get probability exactly 0).
inline std::vector<float> padded_key_bias(const float* key_bias, int64_t B, int64_t S, int64_t Sk) {
  std::vector<float> bias(size_t(B * Sk), -std::numeric_limits<float>::infinity());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s) bias[size_t(b * Sk + s)] = key_bias ? key_bias[b * S + s] : 0.0f;
  return bias;
}

}  // namespace bertqa
