/* Linear layer forward/backward on top of cblas_sgemm. */
#include "nn/linear.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

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
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, n_out, n_in, alpha, inp, ld_inp, weight, n_in,
                beta, out, ld_out);
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
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, n_in, n_out, alpha, dout, ld_dout, weight,
                    n_in, 1.0f, dinp, ld_dinp);
    if (dweight)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, N, alpha, dout, ld_dout, inp, ld_inp,
                    1.0f, dweight, n_in);
    if (dbias) column_sums_add(dbias, dout, ld_dout, N, n_out);
}
