#include "nn/rope.h"

#include <math.h>

void rope_table(float *cos_sin, const rope_params *p, int64_t T, int64_t pos0) {
    const int half = p->rot_dims / 2;
    for (int64_t t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            double theta = (double)(pos0 + t) * p->freq_scale * pow(p->base, -2.0 * i / p->rot_dims);
            if (p->freq_factors) theta /= p->freq_factors[i];
            cos_sin[(t * half + i) * 2] = (float)cos(theta);
            cos_sin[(t * half + i) * 2 + 1] = (float)sin(theta);
        }
    }
}

static void rotate(float *x, const float *cos_sin, const rope_params *p, int64_t T, int n_heads, int head_dim,
                   float sign) {
    const int half = p->rot_dims / 2;
#pragma omp parallel for schedule(static) if (T * n_heads * head_dim > (1 << 16))
    for (int64_t t = 0; t < T; t++) {
        const float *cs = cos_sin + t * half * 2;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (t * n_heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                const float c = cs[2 * i], s = sign * cs[2 * i + 1];
                const int a = p->halves ? i : 2 * i, b = p->halves ? i + half : 2 * i + 1;
                const float x0 = v[a], x1 = v[b];
                v[a] = x0 * c - x1 * s;
                v[b] = x0 * s + x1 * c;
            }
        }
    }
}

void rope_forward(float *x, const float *cos_sin, const rope_params *p, int64_t T, int n_heads, int head_dim) {
    rotate(x, cos_sin, p, T, n_heads, head_dim, 1.0f);
}

void rope_backward(float *dx, const float *cos_sin, const rope_params *p, int64_t T, int n_heads, int head_dim) {
    rotate(dx, cos_sin, p, T, n_heads, head_dim, -1.0f);
}
