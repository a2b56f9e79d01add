/* GRU layer forward and backward through time (shapes in nn/gru.h). */
#include "nn/gru.h"

#include <math.h>
#include <string.h>

#include "nn/linear.h"
#include "nn/simd_exp.h"

/* The gates through nn_exp, so their loops vectorize: libm's expf, expm1f and tanhf,
 * one call per element, were 13% of a GRU4Rec epoch (perf, ml-latest-small). */
static inline float sigmoid_v(float x) { return 1.0f / (1.0f + nn_exp(-x)); }
static inline float tanh_v(float x) { return 1.0f - 2.0f / (nn_exp(2.0f * x) + 1.0f); }

/* Row o of W_hh h_{t-1} + b_hh: r and z (o < 2H) add it to the input's part; n keeps
 * it apart (hn), since r multiplies it before the two are added. */
static inline void add_recurrent(float *g, float *hn_t, int o, int H, float v) {
    if (o < 2 * H)
        g[o] += v;
    else
        hn_t[o - 2 * H] = v;
}

void gru_forward(float *h, float *hprev, float *gates, float *hn, const float *x, const float *w_ih,
                 const float *b_ih, const float *w_hh, const float *b_hh, const float *mask,
                 const int *seq_start, int n_seqs, int D, int H) {
    const int N = seq_start[n_seqs], G = 3 * H;
    /* gates <- x W_ih^T + b_ih for all rows at once; the recurrence turns it into r, z, n in place. */
    linear_forward(gates, x, w_ih, b_ih, N, D, G);
#pragma omp parallel for schedule(dynamic, 1)
    for (int s = 0; s < n_seqs; s++) {
        for (int t = seq_start[s]; t < seq_start[s + 1]; t++) {
            float *hp = hprev + (size_t)t * H, *g = gates + (size_t)t * G, *ht = h + (size_t)t * H;
            float *hnt = hn + (size_t)t * H;
            if (t == seq_start[s])
                memset(hp, 0, sizeof(float) * (size_t)H);
            else
                memcpy(hp, h + (size_t)(t - 1) * H, sizeof(float) * (size_t)H);
            /* W_hh hp, four rows at a time: four independent sums, where one
             * row's vectorized sum waits on each multiply-add before the next */
            int o = 0;
            for (; o + 4 <= G; o += 4) {
                const float *w0 = w_hh + (size_t)o * H, *w1 = w0 + H, *w2 = w1 + H, *w3 = w2 + H;
                float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
                for (int k = 0; k < H; k++) {
                    a0 += w0[k] * hp[k];
                    a1 += w1[k] * hp[k];
                    a2 += w2[k] * hp[k];
                    a3 += w3[k] * hp[k];
                }
                add_recurrent(g, hnt, o, H, a0 + b_hh[o]);
                add_recurrent(g, hnt, o + 1, H, a1 + b_hh[o + 1]);
                add_recurrent(g, hnt, o + 2, H, a2 + b_hh[o + 2]);
                add_recurrent(g, hnt, o + 3, H, a3 + b_hh[o + 3]);
            }
            for (; o < G; o++) {
                const float *w = w_hh + (size_t)o * H;
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int k = 0; k < H; k++) acc += w[k] * hp[k];
                add_recurrent(g, hnt, o, H, acc + b_hh[o]);
            }
#pragma omp simd
            for (int o = 0; o < 2 * H; o++) g[o] = sigmoid_v(g[o]);
            const float *m = mask ? mask + (size_t)t * H : NULL;
#pragma omp simd
            for (int k = 0; k < H; k++) {
                float r = g[k], z = g[H + k];
                float n = tanh_v(g[2 * H + k] + r * hnt[k]);
                g[2 * H + k] = n;
                float out = (1.0f - z) * n + z * hp[k];
                ht[k] = m ? out * m[k] : out;
            }
        }
    }
}

void gru_backward(float *dx, float *dw_ih, float *db_ih, float *dw_hh, float *db_hh, float *dh, float *dgx,
                  float *dgh, const float *x, const float *hprev, const float *gates, const float *hn,
                  const float *w_ih, const float *w_hh, const float *mask, const int *seq_start, int n_seqs,
                  int D, int H) {
    const int N = seq_start[n_seqs], G = 3 * H;
#pragma omp parallel for schedule(dynamic, 1)
    for (int s = 0; s < n_seqs; s++) {
        for (int t = seq_start[s + 1] - 1; t >= seq_start[s]; t--) {
            float *d = dh + (size_t)t * H, *gx = dgx + (size_t)t * G, *gh = dgh + (size_t)t * G;
            const float *g = gates + (size_t)t * G, *hp = hprev + (size_t)t * H, *hnt = hn + (size_t)t * H;
            const float *m = mask ? mask + (size_t)t * H : NULL;
            for (int k = 0; k < H; k++) {
                float dout = m ? d[k] * m[k] : d[k];
                float r = g[k], z = g[H + k], n = g[2 * H + k];
                float dn = dout * (1.0f - z) * (1.0f - n * n);
                float dz = dout * (hp[k] - n) * z * (1.0f - z);
                float dr = dn * hnt[k] * r * (1.0f - r);
                gx[k] = gh[k] = dr;
                gx[H + k] = gh[H + k] = dz;
                gx[2 * H + k] = dn;
                gh[2 * H + k] = dn * r;
                d[k] = dout * z; /* the direct path into h_{t-1}; reused below */
            }
            if (t > seq_start[s]) {
                float *dp = dh + (size_t)(t - 1) * H;
                for (int k = 0; k < H; k++) dp[k] += d[k];
                for (int o = 0; o < G; o++) {
                    const float *w = w_hh + (size_t)o * H;
                    const float c = gh[o];
#pragma omp simd
                    for (int k = 0; k < H; k++) dp[k] += c * w[k];
                }
            }
        }
    }
    linear_backward(dx, dw_ih, db_ih, dgx, x, w_ih, N, D, G);
    linear_backward(NULL, dw_hh, db_hh, dgh, hprev, w_hh, N, H, G);
}
