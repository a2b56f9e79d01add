/* STOSA's Wasserstein self-attention over one short sequence (see the header). */
#include <math.h>
#include <string.h>

#include "nn/attention_masked.h"
#include "nn/attention_wasserstein.h"

void attention_wasserstein_forward(float *oc, float *probs, const float *qm, const float *km, const float *qc,
                                   const float *kc, const float *vc, int ld, const uint8_t *key_valid,
                                   const float *drop, int r, int n_head, int hd, int causal) {
    const float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < n_head; h++) {
        const int c0 = h * hd;
        for (int i = 0; i < r; i++) {
            float *p = probs + ((size_t)h * r + i) * r;
            const float *qmi = qm + (size_t)i * ld + c0, *qci = qc + (size_t)i * ld + c0;
            int n_vis = 0;
            for (int j = 0; j < r; j++) {
                if (!attention_key_visible(key_valid, i, j, causal))
                    continue;
                const float *kmj = km + (size_t)j * ld + c0, *kcj = kc + (size_t)j * ld + c0;
                float dist = 0.0f;
                for (int c = 0; c < hd; c++) {
                    const float dm = qmi[c] - kmj[c], dc = sqrtf(qci[c]) - sqrtf(kcj[c]);
                    dist += dm * dm + dc * dc;
                }
                p[n_vis++] = -dist * scale;
            }
            attention_masked_softmax_row(p, n_vis, key_valid, i, r, causal);
            float *oi = oc + (size_t)i * ld + c0;
            memset(oi, 0, (size_t)hd * sizeof *oi);
            const float *di = drop ? drop + ((size_t)h * r + i) * r : NULL;
            for (int j = 0; j < r; j++) {
                const float pd = di ? p[j] * di[j] : p[j], w = pd * pd;
                if (w == 0.0f)
                    continue;
                const float *vj = vc + (size_t)j * ld + c0;
                for (int c = 0; c < hd; c++) oi[c] += w * vj[c];
            }
        }
    }
}

void attention_wasserstein_backward(float *dqm, float *dkm, float *dqc, float *dkc, float *dvc, const float *doc,
                                    const float *probs, const float *qm, const float *km, const float *qc,
                                    const float *kc, const float *vc, int ld, const float *drop, int r, int n_head,
                                    int hd, float *scratch) {
    const float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < n_head; h++) {
        const int c0 = h * hd;
        for (int i = 0; i < r; i++) {
            const size_t o = (size_t)i * ld + c0, n = (size_t)hd * sizeof(float);
            memset(dqm + o, 0, n);
            memset(dkm + o, 0, n);
            memset(dqc + o, 0, n);
            memset(dkc + o, 0, n);
            memset(dvc + o, 0, n);
        }
        for (int i = 0; i < r; i++) {
            const float *p = probs + ((size_t)h * r + i) * r;
            const float *di = drop ? drop + ((size_t)h * r + i) * r : NULL;
            const float *doi = doc + (size_t)i * ld + c0;
            float *dp = scratch;
            /* out_i = Σ (P D)² vc: dP = 2 P D² (dout·vc); dvc_j += (P D)² dout_i */
            for (int j = 0; j < r; j++) {
                if (p[j] == 0.0f) {
                    dp[j] = 0.0f;
                    continue;
                }
                const float d = di ? di[j] : 1.0f, pd = p[j] * d;
                const float *vj = vc + (size_t)j * ld + c0;
                float *dvj = dvc + (size_t)j * ld + c0;
                float s = 0.0f;
                for (int c = 0; c < hd; c++) {
                    s += doi[c] * vj[c];
                    dvj[c] += pd * pd * doi[c];
                }
                dp[j] = 2.0f * pd * d * s;
            }
            /* dS = P (dP - Σ P dP); S = -dist / sqrt(hd) */
            attention_masked_softmax_row_backward(dp, p, r);
            const float *qmi = qm + (size_t)i * ld + c0, *qci = qc + (size_t)i * ld + c0;
            float *dqmi = dqm + (size_t)i * ld + c0, *dqci = dqc + (size_t)i * ld + c0;
            for (int j = 0; j < r; j++) {
                if (p[j] == 0.0f)
                    continue;
                const float ddist = -dp[j] * scale;
                const float *kmj = km + (size_t)j * ld + c0, *kcj = kc + (size_t)j * ld + c0;
                float *dkmj = dkm + (size_t)j * ld + c0, *dkcj = dkc + (size_t)j * ld + c0;
                for (int c = 0; c < hd; c++) {
                    const float gm = 2.0f * ddist * (qmi[c] - kmj[c]);
                    dqmi[c] += gm;
                    dkmj[c] -= gm;
                    const float sq = sqrtf(qci[c]), sk = sqrtf(kcj[c]);
                    dqci[c] += ddist * (1.0f - sk / sq);
                    dkcj[c] += ddist * (1.0f - sq / sk);
                }
            }
        }
    }
}
