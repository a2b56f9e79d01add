#include "nn/embedding.h"

void embedding_forward(float *out, const qmat *table, const int32_t *ids, int64_t T) {
    const int64_t d = table->cols;
#pragma omp parallel for schedule(static) if (T > 64)
    for (int64_t t = 0; t < T; t++) qmat_row(table, ids[t], out + t * d);
}

void embedding_backward(float *dtable, const float *dout, const int32_t *ids, int64_t T, int d) {
    for (int64_t t = 0; t < T; t++) {
        float *row = dtable + (int64_t)ids[t] * d;
        const float *g = dout + t * d;
        for (int i = 0; i < d; i++) row[i] += g[i];
    }
}
