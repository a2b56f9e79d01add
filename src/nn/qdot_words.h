/* AVX2 helpers shared by the integer kernels (qdot.c, qdot_k.c): the 4-byte words of
 * 8 weight rows moved into the 8 lanes of a vector, so that one broadcast activation
 * word meets 8 rows in one dot instruction and lane k ends with row k's sum. */
#ifndef MLLM4REC_NN_QDOT_WORDS_H
#define MLLM4REC_NN_QDOT_WORDS_H

#if defined(__AVX2__)
#include <immintrin.h>
#include <stdint.h>

/* [16 bytes at lo | 16 bytes at hi] */
static inline __attribute__((always_inline)) __m256i load_pair(const uint8_t *lo, const uint8_t *hi) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)lo)),
                                   _mm_loadu_si128((const __m128i *)hi), 1);
}

/* in: R[i] = [row i words 0..3 | row i+4 words 0..3] (i < 4);
 * out: W[j] = [row 0..7 word j], rows in natural lane order */
static inline __attribute__((always_inline)) void transpose_4x(const __m256i R[4], __m256i W[4]) {
    const __m256i a = _mm256_unpacklo_epi32(R[0], R[1]), b = _mm256_unpacklo_epi32(R[2], R[3]);
    const __m256i c = _mm256_unpackhi_epi32(R[0], R[1]), d = _mm256_unpackhi_epi32(R[2], R[3]);
    W[0] = _mm256_unpacklo_epi64(a, b);
    W[1] = _mm256_unpackhi_epi64(a, b);
    W[2] = _mm256_unpacklo_epi64(c, d);
    W[3] = _mm256_unpackhi_epi64(c, d);
}
#endif

#endif
