// attention_bf16.h: BERT self-attention on AVX512-BF16 (attention_bf16.cpp has the details).
#pragma once

#include <cstdint>

namespace bertqa {

constexpr int64_t kMaxHeadDim = 256;

// Whether this CPU runs attention_bf16 (AVX-512 F/BW/VL/DQ and AVX512-BF16).
bool attention_bf16_supported();

// out [B*S, heads*d] <- softmax(scale * Q K^T + key_bias) V per batch and head, from
// qkv [B*S, 3*heads*d] fp32 ([Q | K | V], head-major inside each); key_bias [B, S] or null.
void attention_bf16(const float* qkv, const float* key_bias, int64_t B, int64_t S, int64_t heads,
                    int64_t d, float scale, float* out, int nthreads);

}  // namespace bertqa
