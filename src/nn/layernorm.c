/* LayerNorm forward/backward. Per-row work is threaded; the weight and bias
 * gradients are summed over rows in a fixed order. */
#include "nn/layernorm.h"

#include <math.h>
#include <stddef.h>

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C, float eps) {
#pragma omp parallel for schedule(static) if ((long)N * C > 32768)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float *o = out + (size_t)i * C;
        float m = 0.0f;
#pragma omp simd reduction(+ : m)
        for (int c = 0; c < C; c++) m += x[c];
        m /= (float)C;
        float v = 0.0f;
#pragma omp simd reduction(+ : v)
        for (int c = 0; c < C; c++) {
            float d = x[c] - m;
            v += d * d;
        }
        v /= (float)C;
        float s = 1.0f / sqrtf(v + eps);
        if (weight && bias)
            for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
        else
            for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * (weight ? weight[c] : 1.0f) + (bias ? bias[c] : 0.0f);
        if (mean) mean[i] = m;
        if (rstd) rstd[i] = s;
    }
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *mean, const float *rstd, const float *weight, int N, int C) {
    if (dinp) {
#pragma omp parallel for schedule(static) if ((long)N * C > 32768)
        for (int i = 0; i < N; i++) {
            const float *x = inp + (size_t)i * C, *g = dout + (size_t)i * C;
            float m = mean[i], s = rstd[i];
            /* dxhat = g * w; dx = s * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) */
            float sum_d = 0.0f, sum_dx = 0.0f;
#pragma omp simd reduction(+ : sum_d, sum_dx)
            for (int c = 0; c < C; c++) {
                float xhat = (x[c] - m) * s, dxhat = g[c] * (weight ? weight[c] : 1.0f);
                sum_d += dxhat;
                sum_dx += dxhat * xhat;
            }
            sum_d /= (float)C;
            sum_dx /= (float)C;
            float *dx = dinp + (size_t)i * C;
            for (int c = 0; c < C; c++) {
                float xhat = (x[c] - m) * s, dxhat = g[c] * (weight ? weight[c] : 1.0f);
                dx[c] += s * (dxhat - sum_d - xhat * sum_dx);
            }
        }
    }
    if (dweight || dbias) {
        /* columns in blocks of 16, each block summed over rows in order by one thread */
        int nblocks = (C + 15) / 16;
#pragma omp parallel for schedule(static) if ((long)N * C > 32768)
        for (int blk = 0; blk < nblocks; blk++) {
            int c0 = blk * 16, c1 = c0 + 16 < C ? c0 + 16 : C;
            float aw[16] = {0}, ab[16] = {0};
            for (int i = 0; i < N; i++) {
                const float *x = inp + (size_t)i * C, *g = dout + (size_t)i * C;
                float m = mean[i], s = rstd[i];
                for (int c = c0; c < c1; c++) {
                    aw[c - c0] += g[c] * (x[c] - m) * s;
                    ab[c - c0] += g[c];
                }
            }
            for (int c = c0; c < c1; c++) {
                if (dweight) dweight[c] += aw[c - c0];
                if (dbias) dbias[c] += ab[c - c0];
            }
        }
    }
}
