/* AdamW and gradient clipping over flat float buffers. */
#include "nn/adamw.h"

#include <math.h>

void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, const adamw_config *c,
                  float weight_decay, long step) {
    float b1 = c->beta1, b2 = c->beta2;
    double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
    float step_size = (float)(c->lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float decay = 1.0f - c->lr * weight_decay;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        param[i] *= decay;
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        float denom = sqrtf(v[i]) / bc2_sqrt + c->eps;
        param[i] -= step_size * (m[i] / denom);
    }
}

double grad_l2_norm(const float *grad, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)grad[i] * grad[i];
    return sqrt(s);
}

double clip_grad_norm(float *grad, size_t n, double max_norm) {
    double norm = grad_l2_norm(grad, n);
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        float cf = (float)coef;
        for (size_t i = 0; i < n; i++) grad[i] *= cf;
    }
    return norm;
}
