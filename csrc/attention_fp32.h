// attention_fp32.h: BERT self-attention in fp32 on AVX2 (attention_fp32.cpp has the details).
#pragma once

#include <cstdint>

namespace bertqa {

// Whether this CPU runs attention_fp32 (AVX2 and FMA).
bool attention_fp32_supported();

// attention_bf16's contract (attention_bf16.h), computed in fp32: out [B*S, heads*d] <-
// softmax(scale * Q K^T + key_bias) V per batch and head; key_bias [B, S] or null.
void attention_fp32(const float* qkv, const float* key_bias, int64_t B, int64_t S, int64_t heads,
                    int64_t d, float scale, float* out, int nthreads);

}  // namespace bertqa
