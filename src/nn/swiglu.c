#include "nn/swiglu.h"

#include <math.h>

#include "nn/simd_exp.h"

/* Elements [0, n8) go 8 at a time where the build has AVX2 (the rest one by one). */
#if defined(__AVX2__) && defined(__FMA__)
#define SWIGLU_LANES 8

/* sigmoid(g) for 8 floats from e = e^-|g|, inside exp8's x <= 0 domain (no
 * overflow): 1 / (1 + e) where g >= 0, e / (1 + e) where g < 0. */
static inline __m256 sigmoid8(__m256 g) {
    const __m256 e = exp8(_mm256_or_ps(g, _mm256_set1_ps(-0.0f)));
    const __m256 r = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    return _mm256_blendv_ps(r, _mm256_mul_ps(e, r), g);
}
#else
#define SWIGLU_LANES 1
#endif

void swiglu_forward(float *h, const float *g, const float *u, int64_t n) {
    const int64_t n8 = SWIGLU_LANES > 1 ? n / 8 * 8 : 0;
#if SWIGLU_LANES > 1
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n8; i += 8) {
        const __m256 gi = _mm256_loadu_ps(g + i);
        _mm256_storeu_ps(h + i, _mm256_mul_ps(_mm256_mul_ps(gi, sigmoid8(gi)), _mm256_loadu_ps(u + i)));
    }
#endif
#pragma omp parallel for schedule(static) if (n - n8 > 65536)
    for (int64_t i = n8; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    const int64_t n8 = SWIGLU_LANES > 1 ? n / 8 * 8 : 0;
#if SWIGLU_LANES > 1
    const __m256 one = _mm256_set1_ps(1.0f);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n8; i += 8) {
        const __m256 gi = _mm256_loadu_ps(g + i), s = sigmoid8(gi), d = _mm256_loadu_ps(dh + i);
        const __m256 ds = _mm256_mul_ps(_mm256_mul_ps(d, _mm256_loadu_ps(u + i)), s);
        _mm256_storeu_ps(du + i, _mm256_mul_ps(_mm256_mul_ps(d, gi), s));
        _mm256_storeu_ps(dg + i, _mm256_mul_ps(ds, _mm256_fmadd_ps(gi, _mm256_sub_ps(one, s), one)));
    }
#endif
#pragma omp parallel for schedule(static) if (n - n8 > 65536)
    for (int64_t i = n8; i < n; i++) {
        const float s = 1.0f / (1.0f + expf(-g[i])), d = dh[i];
        du[i] = d * g[i] * s;
        dg[i] = d * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
}
