/* Exact-erf GELU forward and backward.
 *
 * erf is evaluated with a rational approximation on [-4, 4] (odd degree-13
 * numerator over a degree-8 denominator in x, the form Eigen and XNNPACK use),
 * clamped outside, where erf is within 2e-8 of +-1. Its largest error against
 * the true erf is 4.2e-7 (checked in tests/test_nn_kernels.c); unlike libm's erff
 * it has no branches or table lookups, so the loops vectorize. */
#include "nn/gelu.h"

#include <math.h>

/* Branch-free clamping needs these two flags: without them gcc keeps the
 * comparisons as control flow and does not vectorize. NaN inputs give an
 * unspecified value. */
#define VECTOR_MATH __attribute__((optimize("finite-math-only", "no-signed-zeros")))

VECTOR_MATH static inline float erf_rational(float x) {
    x = x > 4.0f ? 4.0f : x;
    x = x < -4.0f ? -4.0f : x;
    float x2 = x * x;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 + -2.10102402082508e-06f;
    p = p * x2 + -5.69250639462346e-05f;
    p = p * x2 + -7.34990630326855e-04f;
    p = p * x2 + -2.95459980854025e-03f;
    p = p * x2 + -1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * x2 + -2.13374055278905e-04f;
    q = q * x2 + -1.68282697438203e-03f;
    q = q * x2 + -7.37332916720468e-03f;
    q = q * x2 + -1.42647390514189e-02f;
    return x * p / q;
}

float gelu_erf(float x) { return erf_rational(x); }

/* Work is split in blocks of 4096 for threads; each block's loop is a plain
 * SIMD loop. */
#define GELU_BLOCK 4096

VECTOR_MATH static void gelu_forward_block(float *restrict out, const float *restrict inp, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + erf_rational(x * 0.70710678118654752f));
    }
}

void gelu_forward(float *out, const float *inp, size_t n) {
    size_t nb = (n + GELU_BLOCK - 1) / GELU_BLOCK;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * GELU_BLOCK, len = n - i0 < GELU_BLOCK ? n - i0 : GELU_BLOCK;
        gelu_forward_block(out + i0, inp + i0, (int)len);
    }
}

void gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    /* d/dx [x Phi(x)] = Phi(x) + x phi(x) */
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float cdf = 0.5f * (1.0f + erf_rational(x * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
        dinp[i] += dout[i] * (cdf + x * pdf);
    }
}

/* tanh form. tanh(u) = 1 - 2 / (1 + e^(2u)), clamped where tanh is +-1 in fp32. */
VECTOR_MATH static inline float tanh_clamped(float u) {
    u = u > 10.0f ? 10.0f : u;
    u = u < -10.0f ? -10.0f : u;
    return 1.0f - 2.0f / (1.0f + expf(2.0f * u));
}

#define GELU_TANH_C 0.7978845608028654f /* sqrt(2/pi) */

void gelu_tanh_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanh_clamped(GELU_TANH_C * (x + 0.044715f * x * x * x)));
    }
}

void gelu_tanh_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    /* d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 * 0.044715 x^2) */
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float t = tanh_clamped(GELU_TANH_C * (x + 0.044715f * x * x * x));
        float d = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_TANH_C * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += dout[i] * d;
    }
}
