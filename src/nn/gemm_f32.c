/* The one-thread float product of nn/gemm_f32.h. */
#include "nn/gemm_f32.h"

#include <cblas.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>

#define GF_MR 6  /* rows of a tile */
#define GF_NV 4  /* zmm vectors across a tile: 64 columns */

/* One tile: rows m0 .. m0+R-1 (R <= GF_MR, a constant where it is inlined), the 64
 * columns at n0 (mask[v]: the valid lanes of vector v). */
static inline __attribute__((always_inline)) void tile(const int R, float *c, ptrdiff_t ldc, const float *a,
                                                       ptrdiff_t a_row, ptrdiff_t a_col, const float *b,
                                                       ptrdiff_t ldb, int K, float alpha, int accumulate, const __mmask16 *mask) {
    __m512 acc[GF_MR][GF_NV];
#pragma GCC unroll 6
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < GF_NV; v++) acc[i][v] = _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        const float *bk = b + k * ldb;
        __m512 bv[GF_NV];
#pragma GCC unroll 4
        for (int v = 0; v < GF_NV; v++) bv[v] = _mm512_maskz_loadu_ps(mask[v], bk + 16 * v);
        const float *ak = a + k * a_col;
#pragma GCC unroll 6
        for (int i = 0; i < R; i++) {
            const __m512 ai = _mm512_set1_ps(ak[i * a_row]);
#pragma GCC unroll 4
            for (int v = 0; v < GF_NV; v++) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < GF_NV; v++) {
            float *ci = c + i * ldc + 16 * v;
            const __m512 old = accumulate ? _mm512_maskz_loadu_ps(mask[v], ci) : _mm512_setzero_ps();
            _mm512_mask_storeu_ps(ci, mask[v], _mm512_fmadd_ps(_mm512_set1_ps(alpha), acc[i][v], old));
        }
}

static void product_avx512(float *c, ptrdiff_t ldc, const float *a, ptrdiff_t a_row, ptrdiff_t a_col, const float *b,
                           ptrdiff_t ldb, int M, int N, int K, float alpha, int accumulate) {
    /* column tiles outside, so a tile's 64 columns of B (K x 256 bytes) stay in L1
     * while every row block passes over them */
    for (int n0 = 0; n0 < N; n0 += 16 * GF_NV) {
        __mmask16 mask[GF_NV];
        for (int v = 0; v < GF_NV; v++) {
            const int left = N - n0 - 16 * v;
            mask[v] = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
        }
        int m0 = 0;
        for (; m0 + GF_MR <= M; m0 += GF_MR)
            tile(GF_MR, c + m0 * ldc + n0, ldc, a + m0 * a_row, a_row, a_col, b + n0, ldb, K, alpha, accumulate, mask);
        float *ct = c + m0 * ldc + n0;
        const float *at = a + m0 * a_row, *bt = b + n0;
        switch (M - m0) {
        case 5: tile(5, ct, ldc, at, a_row, a_col, bt, ldb, K, alpha, accumulate, mask); break;
        case 4: tile(4, ct, ldc, at, a_row, a_col, bt, ldb, K, alpha, accumulate, mask); break;
        case 3: tile(3, ct, ldc, at, a_row, a_col, bt, ldb, K, alpha, accumulate, mask); break;
        case 2: tile(2, ct, ldc, at, a_row, a_col, bt, ldb, K, alpha, accumulate, mask); break;
        case 1: tile(1, ct, ldc, at, a_row, a_col, bt, ldb, K, alpha, accumulate, mask); break;
        default: break;
        }
    }
}
#endif

void gemm_f32(float *c, ptrdiff_t ldc, const float *a, ptrdiff_t a_row, ptrdiff_t a_col, const float *b,
              ptrdiff_t ldb, int M, int N, int K, float alpha, int accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!accumulate)
            for (int m = 0; m < M; m++) memset(c + m * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
#if defined(__AVX512F__)
    product_avx512(c, ldc, a, a_row, a_col, b, ldb, M, N, K, alpha, accumulate);
#else
    const float beta = accumulate ? 1.0f : 0.0f;
    if (a_col == 1)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, alpha, a, (int)a_row, b, (int)ldb, beta, c,
                    (int)ldc);
    else if (a_row == 1)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, alpha, a, (int)a_col, b, (int)ldb, beta, c,
                    (int)ldc);
    else /* strided both ways: no caller does this; plain loops keep it correct */
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                float acc = 0.0f;
                for (int k = 0; k < K; k++) acc += a[m * a_row + k * a_col] * b[k * ldb + n];
                c[m * ldc + n] = (accumulate ? c[m * ldc + n] : 0.0f) + alpha * acc;
            }
#endif
}

int gemm_f32_avx512(void) {
#if defined(__AVX512F__)
    return 1;
#else
    return 0;
#endif
}
