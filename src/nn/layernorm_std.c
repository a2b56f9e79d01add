/* The reference recommenders' layer norm (unbiased std, eps outside the root). */
#include <math.h>
#include <stddef.h>

#include "nn/layernorm_std.h"

void layernorm_std_forward(float *out, float *mean, float *std, const float *inp, const float *weight,
                           const float *bias, int N, int C, float eps) {
#pragma omp parallel for schedule(static) if ((long)N * C > 65536)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        double m = 0.0, v = 0.0;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        for (int c = 0; c < C; c++) v += ((double)x[c] - m) * ((double)x[c] - m);
        const float s = (float)sqrt(v / (C - 1)), mf = (float)m, inv = 1.0f / (s + eps);
        for (int c = 0; c < C; c++) y[c] = weight[c] * ((x[c] - mf) * inv) + bias[c];
        if (mean)
            mean[n] = mf;
        if (std)
            std[n] = s;
    }
}

/* With xh = x - mean, d = std + eps and g = dout ∘ weight:
 *   dx = (g - mean(g)) / d - xh Σ(g xh) / (d² (C - 1) std). */
void layernorm_std_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *mean, const float *std, const float *weight, int N, int C, float eps) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        const float m = mean[n], s = std[n], d = s + eps, inv = 1.0f / d;
        double gsum = 0.0, gx = 0.0;
        for (int c = 0; c < C; c++) {
            const float g = dy[c] * weight[c], xh = x[c] - m;
            gsum += g;
            gx += (double)g * xh;
            if (dweight)
                dweight[c] += dy[c] * xh * inv;
            if (dbias)
                dbias[c] += dy[c];
        }
        if (!dinp)
            continue;
        float *dx = dinp + (size_t)n * C;
        const float gmean = (float)(gsum / C);
        const float k = s > 0.0f ? (float)(gx / ((double)d * d * (C - 1) * s)) : 0.0f;
        for (int c = 0; c < C; c++) dx[c] += (dy[c] * weight[c] - gmean) * inv - (x[c] - m) * k;
    }
}
