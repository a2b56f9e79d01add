/* A float product on the calling thread, for operands that sit in cache (the
 * all-item cross-entropy's chunks, nn/xent.c):
 *
 *   C[M][N] = (accumulate ? C : 0) + alpha · A · B
 *
 *   A(m, k) = a[m * a_row + k * a_col]   (row-major A: a_row = lda, a_col = 1;
 *                                         A stored transposed: a_row = 1, a_col = lda)
 *   B: K rows of N floats, row k at b + k * ldb
 *   C: M rows of N floats, row m at c + m * ldc
 *
 * Why its own kernel: OpenBLAS runs its AVX2 kernels on this machine
 * (OPENBLAS_CORETYPE=Haswell, nn/gemm_avx512.h says why), so where the build has
 * AVX-512 the product runs here with zmm registers: tiles of 6 rows x 64 columns in
 * 24 sums, per k four loads of B, six broadcasts of A, 24 FMAs; columns past N are
 * masked. C[m][n] is the k-ordered FMA chain, times alpha, added to C's old value last, the same on
 * every call (no threads). Without AVX-512 the same product goes to cblas_sgemm
 * (to plain loops if A is strided both ways, which no caller does). */
#ifndef MLLM4REC_NN_GEMM_F32_H
#define MLLM4REC_NN_GEMM_F32_H

#include <stddef.h>

void gemm_f32(float *c, ptrdiff_t ldc, const float *a, ptrdiff_t a_row, ptrdiff_t a_col, const float *b,
              ptrdiff_t ldb, int M, int N, int K, float alpha, int accumulate);

/* 1 when this build has the AVX-512 kernel (callers that thread the product
 * themselves keep OpenBLAS's own threads otherwise). */
int gemm_f32_avx512(void);

#endif
