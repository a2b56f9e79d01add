/* Softmax cross-entropy with its gradient, fused. */
#include "nn/xent.h"

#include <math.h>
#include <stdlib.h>

double xent_rows(float *dlogits, float *row_loss, const float *logits, int ld, const int *labels, int N, int V,
                 int ignore_index, float grad_scale) {
    if (!ld) ld = V;
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
            float scale = (float)(1.0 / sum) * grad_scale;
            for (int j = 0; j < V; j++) dz[j] *= scale;
            dz[y] -= grad_scale;
        } else {
            for (int j = 0; j < V; j++) sum += expf(z[j] - mx);
        }
        row_loss[i] = (float)(log(sum) + mx - zy);
    }
    /* summed in row order: the same total for any thread count */
    double total = 0.0;
    for (int i = 0; i < N; i++) total += row_loss[i];
    return total;
}

double xent_forward_backward(float *dlogits, float *row_loss, const float *logits, int ld,
                             const int *labels, int N, int V, int ignore_index, int *n_counted) {
    int count = 0;
    for (int i = 0; i < N; i++) count += labels[i] != ignore_index;
    if (n_counted) *n_counted = count;
    float inv = count ? 1.0f / (float)count : 0.0f;
    double total = xent_rows(dlogits, row_loss, logits, ld, labels, N, V, ignore_index, inv);
    return count ? total / count : 0.0;
}
