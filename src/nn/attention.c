#include "nn/attention.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>

int64_t attention_scratch_floats(int64_t n_keys, int n_threads) {
    return (int64_t)n_threads * ATTENTION_QBLOCK * n_keys;
}

void attention_forward(float *out, const float *q, const float *k, const float *v, int64_t T, int64_t pos0, int n_head,
                       int n_head_kv, int hd, float *scratch, int64_t scratch_floats) {
    const int q_stride = n_head * hd, kv_stride = n_head_kv * hd, group = n_head / n_head_kv;
    const int64_t n_blocks = (T + ATTENTION_QBLOCK - 1) / ATTENTION_QBLOCK, n_keys_max = pos0 + T;
    const float scale = 1.0f / sqrtf((float)hd);
    int nth = (int)(scratch_floats / (ATTENTION_QBLOCK * n_keys_max));
    if (nth > omp_get_max_threads()) nth = omp_get_max_threads();
    /* small problems (generation steps, short prompts) stay on one thread */
    if ((double)n_head * T * n_keys_max * hd < (double)(1 << 20)) nth = 1;
    if (nth < 1) nth = 1;
    /* Work items are (head, query block); the big blocks (late queries) first. */
#pragma omp parallel num_threads(nth)
    {
        float *S = scratch + (int64_t)omp_get_thread_num() * ATTENTION_QBLOCK * n_keys_max;
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < (int64_t)n_head * n_blocks; item++) {
            const int64_t b = n_blocks - 1 - item / n_head;
            const int h = (int)(item % n_head), g = h / group;
            const int64_t t0 = b * ATTENTION_QBLOCK, nq = T - t0 < ATTENTION_QBLOCK ? T - t0 : ATTENTION_QBLOCK;
            const int64_t nk = pos0 + t0 + nq; /* keys visible to the last query of the block */
            /* S[nq][nk] = scale · Q_h Kᵀ_g */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nk, hd, scale, q + t0 * q_stride + h * hd,
                        q_stride, k + g * hd, kv_stride, 0.0f, S, (int)nk);
            for (int64_t i = 0; i < nq; i++) {
                float *row = S + i * nk;
                const int64_t n_vis = pos0 + t0 + i + 1;
                float mx = -INFINITY;
                for (int64_t j = 0; j < n_vis; j++) mx = row[j] > mx ? row[j] : mx;
                double sum = 0;
                for (int64_t j = 0; j < n_vis; j++) {
                    row[j] = expf(row[j] - mx);
                    sum += row[j];
                }
                const float inv = (float)(1.0 / sum);
                for (int64_t j = 0; j < n_vis; j++) row[j] *= inv;
                for (int64_t j = n_vis; j < nk; j++) row[j] = 0.0f;
            }
            /* out_h[nq][hd] = S V_g */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, hd, (int)nk, 1.0f, S, (int)nk,
                        v + g * hd, kv_stride, 0.0f, out + t0 * q_stride + h * hd, q_stride);
        }
    }
}
