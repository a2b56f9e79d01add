#include "nn/rmsnorm.h"

#include <math.h>

void rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, int64_t T, int d, float eps) {
#pragma omp parallel for schedule(static) if (T * d > (1 << 16))
    for (int64_t t = 0; t < T; t++) {
        const float *x = in + t * d;
        float *y = out + t * d;
        double ss = 0; /* double sum as ggml does: long rows of large activations */
        for (int i = 0; i < d; i++) ss += (double)(x[i] * x[i]);
        const float scale = 1.0f / sqrtf((float)(ss / d) + eps);
        if (rstd) rstd[t] = scale;
        for (int i = 0; i < d; i++) y[i] = (x[i] * scale) * w[i];
    }
}

void rmsnorm_backward(float *dx, const float *dy, const float *in, const float *w, const float *rstd, int64_t T,
                      int d) {
#pragma omp parallel for schedule(static) if (T * d > (1 << 16))
    for (int64_t t = 0; t < T; t++) {
        const float *x = in + t * d, *g = dy + t * d;
        const float r = rstd[t];
        double dot = 0; /* Σ dy·w·x: the part of the gradient along x */
        for (int i = 0; i < d; i++) dot += (double)g[i] * w[i] * x[i];
        const float c = (float)(dot * r * r * r / d);
        float *o = dx + t * d;
        for (int i = 0; i < d; i++) o[i] += g[i] * w[i] * r - x[i] * c;
    }
}
