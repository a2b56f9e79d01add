#include "nn/swiglu.h"

#include <math.h>

void swiglu_forward(float *h, const float *g, const float *u, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
