/* Masked multi-head attention over one short sequence (see the header). Plain
 * loops: r and hd are small (r <= 200, hd <= 64 in the recommenders), callers
 * run sequences in parallel. */
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

void attention_masked_forward(float *out, float *probs, const float *q, const float *k, const float *v, int ld,
                              const uint8_t *key_valid, const float *drop, int r, int n_head, int hd, int causal) {
    const float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < n_head; h++) {
        const int c0 = h * hd;
        for (int i = 0; i < r; i++) {
            float *p = probs + ((size_t)h * r + i) * r;
            const float *qi = q + (size_t)i * ld + c0;
            /* the visible keys, compacted to the front of p, then softmaxed and spread back */
            int n_vis = 0;
            for (int j = 0; j < r; j++) {
                if (!attention_key_visible(key_valid, i, j, causal))
                    continue;
                const float *kj = k + (size_t)j * ld + c0;
                float s = 0.0f;
                for (int c = 0; c < hd; c++) s += qi[c] * kj[c];
                p[n_vis++] = s * scale;
            }
            attention_masked_softmax_row(p, n_vis, key_valid, i, r, causal);
            float *oi = out + (size_t)i * ld + c0;
            memset(oi, 0, (size_t)hd * sizeof *oi);
            const float *di = drop ? drop + ((size_t)h * r + i) * r : NULL;
            for (int j = 0; j < r; j++) {
                const float w = di ? p[j] * di[j] : p[j];
                if (w == 0.0f)
                    continue;
                const float *vj = v + (size_t)j * ld + c0;
                for (int c = 0; c < hd; c++) oi[c] += w * vj[c];
            }
        }
    }
}

void attention_masked_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                               const float *q, const float *k, const float *v, int ld, const float *drop, int r,
                               int n_head, int hd, float *scratch) {
    const float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < n_head; h++) {
        const int c0 = h * hd;
        for (int i = 0; i < r; i++) {
            memset(dq + (size_t)i * ld + c0, 0, (size_t)hd * sizeof(float));
            memset(dk + (size_t)i * ld + c0, 0, (size_t)hd * sizeof(float));
            memset(dv + (size_t)i * ld + c0, 0, (size_t)hd * sizeof(float));
        }
        for (int i = 0; i < r; i++) {
            const float *p = probs + ((size_t)h * r + i) * r;
            const float *di = drop ? drop + ((size_t)h * r + i) * r : NULL;
            const float *doi = dout + (size_t)i * ld + c0;
            /* dP[j] = (dout_i · v_j) ∘ drop; dv_j += P̃[j] dout_i */
            float *dp = scratch;
            for (int j = 0; j < r; j++) {
                if (p[j] == 0.0f) {
                    dp[j] = 0.0f;
                    continue;
                }
                const float *vj = v + (size_t)j * ld + c0;
                float *dvj = dv + (size_t)j * ld + c0;
                const float d = di ? di[j] : 1.0f;
                float s = 0.0f;
                for (int c = 0; c < hd; c++) s += doi[c] * vj[c];
                dp[j] = s * d;
                const float w = p[j] * d;
                if (w != 0.0f)
                    for (int c = 0; c < hd; c++) dvj[c] += w * doi[c];
            }
            /* dS = P (dP - Σ P dP), then dq_i = scale dS k, dk_j += scale dS_j q_i */
            attention_masked_softmax_row_backward(dp, p, r);
            const float *qi = q + (size_t)i * ld + c0;
            float *dqi = dq + (size_t)i * ld + c0;
            for (int j = 0; j < r; j++) {
                if (p[j] == 0.0f)
                    continue;
                const float ds = dp[j] * scale;
                const float *kj = k + (size_t)j * ld + c0;
                float *dkj = dk + (size_t)j * ld + c0;
                for (int c = 0; c < hd; c++) {
                    dqi[c] += ds * kj[c];
                    dkj[c] += ds * qi[c];
                }
            }
        }
    }
}
