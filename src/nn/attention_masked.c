/* Masked multi-head attention over one short sequence (see the header).
 * Each head runs in blocks of ATTENTION_MASKED_QBLOCK queries: the block's
 * scores are one sgemm written straight into probs, softmaxed row by row, and a
 * second sgemm mixes the values. A causal block needs only the keys up to its
 * last query, so the products stop there (about 60% of the full square at
 * r = 200). Callers run sequences in parallel; inside an OpenMP region
 * OpenBLAS runs each product on the calling thread. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "nn/attention.h"
#include "nn/attention_masked.h"

void attention_masked_softmax_row(float *p, int n_vis, const uint8_t *key_valid, int i, int r, int causal) {
    if (n_vis)
        softmax_row_forward(p, n_vis);
    for (int j = r - 1, t = n_vis - 1; j >= 0; j--)
        p[j] = attention_key_visible(key_valid, i, j, causal) ? p[t--] : 0.0f;
}

void attention_masked_softmax_row_backward(float *dp, const float *p, int r) {
    double row = 0.0;
    for (int j = 0; j < r; j++)
        if (p[j] != 0.0f)
            row += (double)p[j] * dp[j];
    for (int j = 0; j < r; j++) dp[j] = p[j] != 0.0f ? p[j] * (dp[j] - (float)row) : 0.0f;
}

void attention_masked_scores_softmax(float *p, const uint8_t *key_valid, int i, int kc, int r, int causal) {
    /* the visible scores among the first kc, compacted to the front in order */
    int n_vis = 0;
    for (int j = 0; j < kc; j++)
        if (attention_key_visible(key_valid, i, j, causal))
            p[n_vis++] = p[j];
    attention_masked_softmax_row(p, n_vis, key_valid, i, r, causal);
}

/* The keys a block of queries i0 .. i0 + nq - 1 can see: all r, or up to the
 * block's last query when causal. */
static int block_keys(int i0, int nq, int r, int causal) { return causal ? i0 + nq : r; }

/* w [nq][kc] = p [nq][kc] (row stride r) ∘ drop (row stride r) */
static void dropped(float *w, const float *p, const float *drop, int nq, int kc, int r) {
    for (int i = 0; i < nq; i++) {
        const float *pi = p + (size_t)i * r, *di = drop + (size_t)i * r;
        float *wi = w + (size_t)i * kc;
        for (int j = 0; j < kc; j++) wi[j] = pi[j] * di[j];
    }
}

void attention_masked_forward(float *out, float *probs, const float *q, const float *k, const float *v, int ld,
                              const uint8_t *key_valid, const float *drop, int r, int n_head, int hd, int causal,
                              float *scratch) {
    const float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < n_head; h++) {
        const int c0 = h * hd;
        for (int i0 = 0; i0 < r; i0 += ATTENTION_MASKED_QBLOCK) {
            const int nq = r - i0 < ATTENTION_MASKED_QBLOCK ? r - i0 : ATTENTION_MASKED_QBLOCK;
            const int kc = block_keys(i0, nq, r, causal);
            const size_t at = ((size_t)h * r + i0) * r;
            float *S = probs + at;
            /* S [nq][kc] = scale · Q Kᵀ, rows of stride r */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, kc, hd, scale, q + (size_t)i0 * ld + c0, ld,
                        k + c0, ld, 0.0f, S, r);
            for (int i = 0; i < nq; i++) attention_masked_scores_softmax(S + (size_t)i * r, key_valid, i0 + i, kc, r,
                                                                         causal);
            const float *W = S;
            int ldw = r;
            if (drop) {
                dropped(scratch, S, drop + at, nq, kc, r);
                W = scratch;
                ldw = kc;
            }
            /* out [nq][hd] = (P ∘ drop) V over the kc keys */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, kc, 1.0f, W, ldw, v + c0, ld, 0.0f,
                        out + (size_t)i0 * ld + c0, ld);
        }
    }
}

void attention_masked_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                               const float *q, const float *k, const float *v, int ld, const float *drop, int r,
                               int n_head, int hd, int causal, float *scratch) {
    const float scale = 1.0f / sqrtf((float)hd);
    float *dS = scratch, *Pd = scratch + (size_t)ATTENTION_MASKED_QBLOCK * r;
    for (int h = 0; h < n_head; h++) {
        const int c0 = h * hd;
        for (int i = 0; i < r; i++) {
            memset(dk + (size_t)i * ld + c0, 0, (size_t)hd * sizeof(float));
            memset(dv + (size_t)i * ld + c0, 0, (size_t)hd * sizeof(float));
        }
        for (int i0 = 0; i0 < r; i0 += ATTENTION_MASKED_QBLOCK) {
            const int nq = r - i0 < ATTENTION_MASKED_QBLOCK ? r - i0 : ATTENTION_MASKED_QBLOCK;
            const int kc = block_keys(i0, nq, r, causal);
            const size_t at = ((size_t)h * r + i0) * r;
            const float *P = probs + at, *D = drop ? drop + at : NULL;
            const float *doi = dout + (size_t)i0 * ld + c0;
            /* dP̃ [nq][kc] = dout Vᵀ */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, kc, hd, 1.0f, doi, ld, v + c0, ld, 0.0f, dS, kc);
            /* dv [kc][hd] += (P ∘ drop)ᵀ dout */
            const float *W = P;
            int ldw = r;
            if (D) {
                dropped(Pd, P, D, nq, kc, r);
                W = Pd;
                ldw = kc;
            }
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kc, hd, nq, 1.0f, W, ldw, doi, ld, 1.0f, dv + c0, ld);
            /* dS = P (dP - Σ P dP) with dP = dP̃ ∘ drop */
            for (int i = 0; i < nq; i++) {
                float *dsi = dS + (size_t)i * kc;
                if (D)
                    for (int j = 0; j < kc; j++) dsi[j] *= D[(size_t)i * r + j];
                attention_masked_softmax_row_backward(dsi, P + (size_t)i * r, kc);
            }
            /* dq [nq][hd] = scale dS K; dk [kc][hd] += scale dSᵀ Q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, kc, scale, dS, kc, k + c0, ld, 0.0f,
                        dq + (size_t)i0 * ld + c0, ld);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kc, hd, nq, scale, dS, kc, q + (size_t)i0 * ld + c0,
                        ld, 1.0f, dk + c0, ld);
        }
    }
}
