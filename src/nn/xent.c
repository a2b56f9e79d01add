/* Softmax cross-entropy with its gradient, fused. */
#include "nn/xent.h"

#include "nn/gemm_f32.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* These flags let gcc turn the maximum below into a vector max reduction; NaN
 * logits give unspecified results. (Not on exp_sum: gcc does not inline nn_exp
 * into a function with other optimisation flags, and its clamps vectorize anyway.) */
#define VECTOR_MATH __attribute__((optimize("finite-math-only", "no-signed-zeros")))

VECTOR_MATH static float row_max(const float *z, int V) {
    float mx = z[0];
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < V; j++) mx = z[j] > mx ? z[j] : mx;
    return mx;
}

/* out[j] = exp(z[j] - mx) (out may be NULL); returns the sum */
static float exp_sum(float *out, const float *z, float mx, int V) {
    float sum = 0.0f;
    if (out) {
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < V; j++) {
            float ez = nn_exp(z[j] - mx);
            out[j] = ez;
            sum += ez;
        }
    } else {
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < V; j++) sum += nn_exp(z[j] - mx);
    }
    return sum;
}

float xent_exp(float x) { return nn_exp(x); }

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
        float zy = z[y];
        float mx = row_max(z, V);
        float sum = exp_sum(dz, z, mx, V);
        if (dz) {
            float scale = grad_scale / sum;
            for (int j = 0; j < V; j++) dz[j] *= scale;
            dz[y] -= grad_scale;
        }
        row_loss[i] = logf(sum) + mx - zy;
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

/* The tied-table cross-entropy (see xent.h). Each slot owns a logits chunk and
 * its own accumulators for the table's and bias's gradients, and takes chunks
 * slot, slot + slots, ... in order; the slots are summed in slot order at the
 * end. The partition depends only on M, so any thread count gives the same bits,
 * and within a slot every product runs on one thread at a chunk size that stays
 * in cache between the forward, the softmax and the two gradient products. */
size_t xent_table_scratch_floats(int V, int d) {
    return (size_t)XENT_TABLE_SLOTS * ((size_t)XENT_TABLE_ROWS * V + (size_t)V * d + (size_t)V) + (size_t)d * V;
}

double xent_table(float *dx, float *dtable, float *dbias, float *row_loss, const float *x, const int *labels, int M,
                  const float *table, const float *bias, int V, int d, float grad_scale, float *scratch) {
    if (M <= 0)
        return 0.0;
    const int n_chunks = (M + XENT_TABLE_ROWS - 1) / XENT_TABLE_ROWS;
    const int slots = n_chunks < XENT_TABLE_SLOTS ? n_chunks : XENT_TABLE_SLOTS;
    const size_t per = (size_t)XENT_TABLE_ROWS * V + (size_t)V * d + (size_t)V;
    /* the table transposed, [d, V], after the slots: the logits' product reads it
     * k-major, as gemm_f32 wants its B */
    float *table_t = scratch + (size_t)XENT_TABLE_SLOTS * per;
#pragma omp parallel for schedule(static) if ((size_t)V * d > 65536)
    for (int j = 0; j < V; j++)
        for (int k = 0; k < d; k++) table_t[(size_t)k * V + j] = table[(size_t)j * d + k];
#pragma omp parallel for schedule(dynamic, 1) if (slots > 1)
    for (int s = 0; s < slots; s++) {
        float *L = scratch + (size_t)s * per, *dT = L + (size_t)XENT_TABLE_ROWS * V, *dB = dT + (size_t)V * d;
        if (dtable)
            memset(dT, 0, (size_t)V * d * sizeof(float));
        if (dbias)
            memset(dB, 0, (size_t)V * sizeof(float));
        for (int c = s; c < n_chunks; c += slots) {
            const int i0 = c * XENT_TABLE_ROWS, n = M - i0 < XENT_TABLE_ROWS ? M - i0 : XENT_TABLE_ROWS;
            const float *xc = x + (size_t)i0 * d;
            /* L [n, V] = x tableᵀ + bias */
            if (bias)
                for (int i = 0; i < n; i++) memcpy(L + (size_t)i * V, bias, (size_t)V * sizeof(float));
            gemm_f32(L, V, xc, d, 1, table_t, V, n, V, d, 1.0f, bias != NULL);
            xent_rows(L, row_loss + i0, L, V, labels + i0, n, V, -1, grad_scale);
            /* dx [n, d] = dL table; dtable [V, d] += dLᵀ x; dbias [V] += Σ_rows dL */
            if (dx)
                gemm_f32(dx + (size_t)i0 * d, d, L, V, 1, table, d, n, d, V, 1.0f, 0);
            if (dtable) /* A = dLᵀ: row v of it is column v of dL */
                gemm_f32(dT, d, L, 1, V, xc, d, V, d, n, 1.0f, 1);
            if (dbias)
                for (int i = 0; i < n; i++) {
                    const float *li = L + (size_t)i * V;
#pragma omp simd
                    for (int j = 0; j < V; j++) dB[j] += li[j];
                }
        }
    }
    const size_t nt = (size_t)V * d;
    if (dtable) {
#pragma omp parallel for schedule(static) if (nt > 65536)
        for (size_t j = 0; j < nt; j++) {
            float acc = 0.0f;
            for (int s = 0; s < slots; s++) acc += scratch[(size_t)s * per + (size_t)XENT_TABLE_ROWS * V + j];
            dtable[j] += acc;
        }
    }
    if (dbias)
        for (int j = 0; j < V; j++) {
            float acc = 0.0f;
            for (int s = 0; s < slots; s++) acc += scratch[(size_t)s * per + (size_t)XENT_TABLE_ROWS * V + nt + j];
            dbias[j] += acc;
        }
    double total = 0.0;
    for (int i = 0; i < M; i++) total += row_loss[i];
    return total;
}
