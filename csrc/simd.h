// simd.h: <immintrin.h> for the ISA files. GCC 12 warns "__Y may be used uninitialized" inside
// its own AVX-512 headers (the _mm*_undefined_* idiom, inlined at -O3); those warnings are
// silenced for the header's lines only, so warnings about our code still show.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
