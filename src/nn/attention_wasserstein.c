/* STOSA's Wasserstein self-attention over one short sequence (see the header).
 * As the reference's wasserstein_distance_matmul does, the squared distance is
 * expanded, |a - b|² = |a|² + |b|² - 2 a·b (with Σ cov for |sqrt(cov)|²), so the
 * scores of a block of ATTENTION_MASKED_QBLOCK queries are two sgemm products
 * plus row and column terms; the rest is attention_masked.c's blocking. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "nn/attention_masked.h"
#include "nn/attention_wasserstein.h"

/* The scratch's parts for a sequence of r rows at row stride ld. */
typedef struct {
    float *sq, *sk;   /* [r][ld] sqrt(qc), sqrt(kc) */
    float *nq, *nk;   /* [r] one head's |qm_i|² + Σ qc_i, |km_j|² + Σ kc_j */
    float *cs;        /* [r] one head's column sums of d(loss)/d(dist) */
    float *b0, *b1;   /* [QBLOCK][r] block buffers */
} was_scratch;

static was_scratch was_parts(float *s, int r, int ld) {
    was_scratch w;
    w.sq = s;
    w.sk = w.sq + (size_t)r * ld;
    w.nq = w.sk + (size_t)r * ld;
    w.nk = w.nq + r;
    w.cs = w.nk + r;
    w.b0 = w.cs + r;
    w.b1 = w.b0 + (size_t)ATTENTION_MASKED_QBLOCK * r;
    return w;
}

size_t attention_wasserstein_scratch_floats(int r, int ld) {
    if (r < 0) r = 0;
    return 2 * (size_t)r * ld + 3 * (size_t)r + 2 * (size_t)ATTENTION_MASKED_QBLOCK * r;
}

static void sqrt_rows(float *out, const float *c, int r, int ld, int n_head, int hd) {
    for (int i = 0; i < r; i++)
        for (int t = 0; t < n_head * hd; t++) out[(size_t)i * ld + t] = sqrtf(c[(size_t)i * ld + t]);
}

/* n [r] = |m_i|² + Σ c_i over one head's columns */
static void head_norms(float *n, const float *m, const float *c, int r, int ld, int c0, int hd) {
    for (int i = 0; i < r; i++) {
        const float *mi = m + (size_t)i * ld + c0, *ci = c + (size_t)i * ld + c0;
        float s = 0.0f;
        for (int t = 0; t < hd; t++) s += mi[t] * mi[t] + ci[t];
        n[i] = s;
    }
}

static int block_keys(int i0, int nq, int r, int causal) { return causal ? i0 + nq : r; }

/* w [nq][kc] = (p ∘ drop)², p and drop of row stride r */
static void dropped_squared(float *w, const float *p, const float *drop, int nq, int kc, int r) {
    for (int i = 0; i < nq; i++) {
        const float *pi = p + (size_t)i * r, *di = drop ? drop + (size_t)i * r : NULL;
        float *wi = w + (size_t)i * kc;
        for (int j = 0; j < kc; j++) {
            const float x = di ? pi[j] * di[j] : pi[j];
            wi[j] = x * x;
        }
    }
}

void attention_wasserstein_forward(float *oc, float *probs, const float *qm, const float *km, const float *qc,
                                   const float *kc, const float *vc, int ld, const uint8_t *key_valid,
                                   const float *drop, int r, int n_head, int hd, int causal, float *scratch) {
    const float scale = 1.0f / sqrtf((float)hd);
    was_scratch w = was_parts(scratch, r, ld);
    sqrt_rows(w.sq, qc, r, ld, n_head, hd);
    sqrt_rows(w.sk, kc, r, ld, n_head, hd);
    for (int h = 0; h < n_head; h++) {
        const int c0 = h * hd;
        head_norms(w.nq, qm, qc, r, ld, c0, hd);
        head_norms(w.nk, km, kc, r, ld, c0, hd);
        for (int i0 = 0; i0 < r; i0 += ATTENTION_MASKED_QBLOCK) {
            const int nq = r - i0 < ATTENTION_MASKED_QBLOCK ? r - i0 : ATTENTION_MASKED_QBLOCK;
            const int nk = block_keys(i0, nq, r, causal);
            const size_t at = ((size_t)h * r + i0) * r;
            float *S = probs + at;
            /* S = -scale dist = 2 scale (qm kmᵀ + sq skᵀ) - scale (nq_i + nk_j) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, 2.0f * scale, qm + (size_t)i0 * ld + c0,
                        ld, km + c0, ld, 0.0f, S, r);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, 2.0f * scale,
                        w.sq + (size_t)i0 * ld + c0, ld, w.sk + c0, ld, 1.0f, S, r);
            for (int i = 0; i < nq; i++) {
                float *si = S + (size_t)i * r;
                const float ni = w.nq[i0 + i];
                for (int j = 0; j < nk; j++) si[j] -= scale * (ni + w.nk[j]);
                attention_masked_scores_softmax(si, key_valid, i0 + i, nk, r, causal);
            }
            /* oc [nq][hd] = (P ∘ drop)² vc */
            dropped_squared(w.b0, S, drop ? drop + at : NULL, nq, nk, r);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, nk, 1.0f, w.b0, nk, vc + c0, ld, 0.0f,
                        oc + (size_t)i0 * ld + c0, ld);
        }
    }
}

void attention_wasserstein_backward(float *dqm, float *dkm, float *dqc, float *dkc, float *dvc, const float *doc,
                                    const float *probs, const float *qm, const float *km, const float *qc,
                                    const float *kc, const float *vc, int ld, const float *drop, int r, int n_head,
                                    int hd, int causal, float *scratch) {
    const float scale = 1.0f / sqrtf((float)hd);
    was_scratch w = was_parts(scratch, r, ld);
    sqrt_rows(w.sq, qc, r, ld, n_head, hd);
    sqrt_rows(w.sk, kc, r, ld, n_head, hd);
    for (int h = 0; h < n_head; h++) {
        const int c0 = h * hd;
        for (int i = 0; i < r; i++) {
            const size_t o = (size_t)i * ld + c0, n = (size_t)hd * sizeof(float);
            memset(dkm + o, 0, n);
            memset(dkc + o, 0, n);
            memset(dvc + o, 0, n);
        }
        memset(w.cs, 0, (size_t)r * sizeof(float));
        for (int i0 = 0; i0 < r; i0 += ATTENTION_MASKED_QBLOCK) {
            const int nq = r - i0 < ATTENTION_MASKED_QBLOCK ? r - i0 : ATTENTION_MASKED_QBLOCK;
            const int nk = block_keys(i0, nq, r, causal);
            const size_t at = ((size_t)h * r + i0) * r;
            const float *P = probs + at, *D = drop ? drop + at : NULL;
            const float *doi = doc + (size_t)i0 * ld + c0;
            float *G = w.b1;
            /* G [nq][nk] = dout vcᵀ; dvc [nk][hd] += ((P ∘ drop)²)ᵀ dout */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, 1.0f, doi, ld, vc + c0, ld, 0.0f, G, nk);
            dropped_squared(w.b0, P, D, nq, nk, r);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, nq, 1.0f, w.b0, nk, doi, ld, 1.0f, dvc + c0,
                        ld);
            /* dP = 2 P drop² G; dS = P (dP - Σ P dP); g = d(loss)/d(dist) = -scale dS */
            for (int i = 0; i < nq; i++) {
                const float *pi = P + (size_t)i * r, *di = D ? D + (size_t)i * r : NULL;
                float *gi = G + (size_t)i * nk;
                for (int j = 0; j < nk; j++) {
                    const float d = di ? di[j] : 1.0f;
                    gi[j] *= 2.0f * pi[j] * d * d;
                }
                attention_masked_softmax_row_backward(gi, pi, nk);
                float rs = 0.0f;
                for (int j = 0; j < nk; j++) {
                    gi[j] *= -scale;
                    rs += gi[j];
                    w.cs[j] += gi[j];
                }
                w.nq[i] = rs; /* the row sums, block-local */
            }
            /* dist_ij = |qm_i - km_j|² + |sq_i - sk_j|²:
             *   dqm_i = 2 qm_i Σ_j g_ij - 2 (G km)_i      dkm_j += -2 (Gᵀ qm)_j (+ 2 km_j cs_j at the end)
             *   dqc_i = Σ_j g_ij - (G sk)_i / sq_i       dkc_j += -(Gᵀ sq)_j / sk_j (+ cs_j at the end) */
            float *dqmi = dqm + (size_t)i0 * ld + c0, *dqci = dqc + (size_t)i0 * ld + c0;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, nk, -2.0f, G, nk, km + c0, ld, 0.0f, dqmi,
                        ld);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, nk, -1.0f, G, nk, w.sk + c0, ld, 0.0f,
                        dqci, ld);
            for (int i = 0; i < nq; i++) {
                const float rs = w.nq[i];
                const float *qmi = qm + (size_t)(i0 + i) * ld + c0, *sqi = w.sq + (size_t)(i0 + i) * ld + c0;
                float *a = dqmi + (size_t)i * ld, *b = dqci + (size_t)i * ld;
                for (int t = 0; t < hd; t++) {
                    a[t] += 2.0f * qmi[t] * rs;
                    b[t] = rs + (sqi[t] > 0.0f ? b[t] / sqi[t] : 0.0f);
                }
            }
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, nq, -2.0f, G, nk, qm + (size_t)i0 * ld + c0,
                        ld, 1.0f, dkm + c0, ld);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, nq, -1.0f, G, nk,
                        w.sq + (size_t)i0 * ld + c0, ld, 1.0f, dkc + c0, ld);
        }
        for (int j = 0; j < r; j++) {
            const float cs = w.cs[j];
            const float *kmj = km + (size_t)j * ld + c0, *skj = w.sk + (size_t)j * ld + c0;
            float *a = dkm + (size_t)j * ld + c0, *b = dkc + (size_t)j * ld + c0;
            for (int t = 0; t < hd; t++) {
                a[t] += 2.0f * kmj[t] * cs;
                b[t] = cs + (skj[t] > 0.0f ? b[t] / skj[t] : 0.0f);
            }
        }
    }
}
