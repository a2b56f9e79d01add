/* Linear layer forward/backward: on the AVX-512 kernel of nn/gemm_f32.h where the
 * build has it, the rows cut into blocks over OpenMP (each output value computed by
 * one thread in one order: the same bits for any thread count); on cblas_sgemm
 * otherwise. */
#include "nn/linear.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn/gemm_f32.h"

#define LINEAR_ROW_BLOCK 96     /* output rows per OpenMP task, a multiple of the kernel's 6 */
#define LINEAR_PARALLEL 1000000 /* multiply-adds below which one thread does the product */

/* C[M][N] (+)= alpha · A · B on gemm_f32, M cut into blocks over the threads; A and
 * B as gemm_f32 takes them. */
static void product_rows(float *c, int ldc, const float *a, ptrdiff_t a_row, ptrdiff_t a_col, const float *b,
                         int ldb, int M, int N, int K, float alpha, int accumulate) {
    const int blocks = (M + LINEAR_ROW_BLOCK - 1) / LINEAR_ROW_BLOCK;
#pragma omp parallel for schedule(static) if ((long)M * N * K > LINEAR_PARALLEL && blocks > 1)
    for (int i = 0; i < blocks; i++) {
        const int m0 = i * LINEAR_ROW_BLOCK, m = M - m0 < LINEAR_ROW_BLOCK ? M - m0 : LINEAR_ROW_BLOCK;
        gemm_f32(c + (size_t)m0 * ldc, ldc, a + m0 * a_row, a_row, a_col, b, ldb, m, N, K, alpha, accumulate);
    }
}

void linear_forward_ex(float *out, int ld_out, const float *inp, int ld_inp, const float *weight,
                       const float *bias, int N, int n_in, int n_out, float alpha, int accumulate) {
    if (N <= 0) return;
    if (!ld_out) ld_out = n_out;
    if (!ld_inp) ld_inp = n_in;
    float beta = accumulate ? 1.0f : 0.0f;
    if (bias) {
        /* Start from the bias so one GEMM with beta = 1 finishes the job. */
        for (int i = 0; i < N; i++) {
            float *o = out + (size_t)i * ld_out;
            if (accumulate)
                for (int j = 0; j < n_out; j++) o[j] += bias[j];
            else
                memcpy(o, bias, sizeof(float) * (size_t)n_out);
        }
        beta = 1.0f;
    }
    /* the kernel reads B k-major: the weight transposed, [n_in, n_out] */
    float *wt = gemm_f32_avx512() ? malloc(sizeof(float) * (size_t)n_in * n_out) : NULL;
    if (!wt) { /* no kernel in this build (or no memory for the copy): BLAS */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, n_out, n_in, alpha, inp, ld_inp, weight, n_in, beta,
                    out, ld_out);
        return;
    }
    for (int o = 0; o < n_out; o++)
        for (int k = 0; k < n_in; k++) wt[(size_t)k * n_out + o] = weight[(size_t)o * n_in + k];
    product_rows(out, ld_out, inp, ld_inp, 1, wt, n_out, N, n_out, n_in, alpha, beta != 0.0f);
    free(wt);
}

void column_sums_add(float *dbias, const float *m, int ld, int N, int n) {
    /* Each thread owns a range of columns and adds the rows to it in row order, so
     * every column's sum is the same for any thread count. */
#pragma omp parallel if ((long)N * n > 65536)
    {
        int nth = omp_get_num_threads(), tid = omp_get_thread_num();
        int j0 = (int)((long)n * tid / nth), j1 = (int)((long)n * (tid + 1) / nth);
        float *out = dbias + j0;
        int len = j1 - j0;
        for (int i = 0; i < N; i++) {
            const float *r = m + (size_t)i * ld + j0;
#pragma omp simd
            for (int j = 0; j < len; j++) out[j] += r[j];
        }
    }
}

void linear_backward_ex(float *dinp, int ld_dinp, float *dweight, float *dbias, const float *dout,
                        int ld_dout, const float *inp, int ld_inp, const float *weight, int N, int n_in,
                        int n_out, float alpha) {
    if (N <= 0) return;
    if (!ld_dinp) ld_dinp = n_in;
    if (!ld_dout) ld_dout = n_out;
    if (!ld_inp) ld_inp = n_in;
    const int kernel = gemm_f32_avx512();
    if (dinp && kernel)
        product_rows(dinp, ld_dinp, dout, ld_dout, 1, weight, n_in, N, n_in, n_out, alpha, 1);
    else if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, n_in, n_out, alpha, dout, ld_dout, weight,
                    n_in, 1.0f, dinp, ld_dinp);
    /* dweight's rows are dout's columns: A = doutᵀ, read in place */
    if (dweight && kernel)
        product_rows(dweight, n_in, dout, 1, ld_dout, inp, ld_inp, n_out, n_in, N, alpha, 1);
    else if (dweight)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, N, alpha, dout, ld_dout, inp, ld_inp,
                    1.0f, dweight, n_in);
    if (dbias) column_sums_add(dbias, dout, ld_dout, N, n_out);
}
