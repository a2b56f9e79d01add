/* Softmax cross-entropy with its gradient, fused. */
#include "nn/xent.h"

#include <math.h>
#include <stdlib.h>

double xent_forward_backward(float *dlogits, float *row_loss, const float *logits, int ld,
                             const int *labels, int N, int V, int ignore_index, int *n_counted) {
    if (!ld) ld = V;
    int count = 0;
    for (int i = 0; i < N; i++) count += labels[i] != ignore_index;
    if (n_counted) *n_counted = count;
    float inv = count ? 1.0f / (float)count : 0.0f;
    double total = 0.0;
    /* Row losses are summed afterwards in order, so the total does not depend on threads. */
#pragma omp parallel for schedule(static) if ((long)N * V > 65536)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * ld;
        float *dz = dlogits ? dlogits + (size_t)i * ld : NULL;
        int y = labels[i];
        if (y == ignore_index) {
            if (dz)
                for (int j = 0; j < V; j++) dz[j] = 0.0f;
            row_loss[i] = 0.0f;
            continue;
        }
        float mx = z[0];
        for (int j = 1; j < V; j++) mx = z[j] > mx ? z[j] : mx;
        double sum = 0.0;
        float zy = z[y];
        if (dz) {
            for (int j = 0; j < V; j++) {
                float ez = expf(z[j] - mx);
                dz[j] = ez;
                sum += ez;
            }
            float scale = (float)(1.0 / sum) * inv;
            for (int j = 0; j < V; j++) dz[j] *= scale;
            dz[y] -= inv;
        } else {
            for (int j = 0; j < V; j++) sum += expf(z[j] - mx);
        }
        float l = (float)(log(sum) + mx - zy);
        row_loss[i] = l;
    }
    for (int i = 0; i < N; i++) total += row_loss[i];
    return count ? total / count : 0.0;
}
