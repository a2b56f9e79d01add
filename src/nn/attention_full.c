/* Unmasked multi-head attention; see attention_full.h. Work items are
 * (head, block of ATTENTION_FULL_QBLOCK queries); each has a scores tile
 * S[nq][Tk] in its thread's scratch, filled by one sgemm, turned into
 * probabilities row by row and multiplied with V by a second sgemm. */
#include "nn/attention_full.h"

#include "nn/attention.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>

int64_t attention_full_scratch_floats(int64_t Tk, int n_threads) {
    return (int64_t)(n_threads > 0 ? n_threads : 1) * ATTENTION_FULL_QBLOCK * Tk;
}

void attention_full_forward(float *out, int ldo, const float *q, int ldq, const float *k, int ldk, const float *v,
                            int ldv, int Tq, int Tk, int n_head, int hd, float scale, float *scratch,
                            int64_t scratch_floats) {
    if (Tq <= 0 || Tk <= 0) return;
    const int n_blocks = (Tq + ATTENTION_FULL_QBLOCK - 1) / ATTENTION_FULL_QBLOCK;
    int nth = (int)(scratch_floats / ((int64_t)ATTENTION_FULL_QBLOCK * Tk));
    if (nth > omp_get_max_threads()) nth = omp_get_max_threads();
    if (nth > n_head * n_blocks) nth = n_head * n_blocks;
    /* small problems stay on one thread: a team costs more than it saves */
    if ((double)n_head * Tq * Tk * hd < (double)(1 << 18)) nth = 1;
    if (nth < 1) nth = 1;
#pragma omp parallel num_threads(nth)
    {
        float *S = scratch + (int64_t)omp_get_thread_num() * ATTENTION_FULL_QBLOCK * Tk;
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < n_head * n_blocks; item++) {
            const int h = item % n_head, t0 = (item / n_head) * ATTENTION_FULL_QBLOCK;
            const int nq = Tq - t0 < ATTENTION_FULL_QBLOCK ? Tq - t0 : ATTENTION_FULL_QBLOCK;
            /* S[nq][Tk] = scale · Q_h K_hᵀ */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, Tk, hd, scale, q + (int64_t)t0 * ldq + h * hd, ldq,
                        k + h * hd, ldk, 0.0f, S, Tk);
            for (int i = 0; i < nq; i++) softmax_row_forward(S + (int64_t)i * Tk, Tk);
            /* out_h[nq][hd] = S V_h */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, Tk, 1.0f, S, Tk, v + h * hd, ldv, 0.0f,
                        out + (int64_t)t0 * ldo + h * hd, ldo);
        }
    }
}
