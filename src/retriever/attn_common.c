/* Shared pieces of the attention retrievers (see attn_common.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/gelu.h"
#include "nn/layernorm_std.h"
#include "nn/linear.h"
#include "nn/xent.h"
#include "retriever/attn_common.h"

void attn_ffn_forward(const attn_ffn_acts *k, const float *x1, const attn_ffn_params *w, const float *hdrop,
                      const float *fdrop, int act, int N, int d, int F, float eps) {
    const size_t Nd = (size_t)N * d, NF = (size_t)N * F;
    linear_forward(k->pre, x1, w->w1, w->b1, N, d, F);
    if (act == ATTN_FFN_RELU)
        relu_forward(k->h, k->pre, (int64_t)NF);
    else
        gelu_tanh_forward(k->h, k->pre, NF);
    if (hdrop)
        for (size_t i = 0; i < NF; i++) k->h[i] *= hdrop[i];
    linear_forward(k->f, k->h, w->w2, w->b2, N, F, d);
    for (size_t i = 0; i < Nd; i++) k->s[i] = (fdrop ? k->f[i] * fdrop[i] : k->f[i]) + x1[i];
    layernorm_std_forward(k->out, k->mean, k->std, k->s, w->ln_w, w->ln_b, N, d, eps);
}

void attn_ffn_backward(float *dx1, const attn_ffn_params *dw, const float *dout, const attn_ffn_acts *k,
                       const float *x1, const attn_ffn_params *w, const float *hdrop, const float *fdrop, int act,
                       int N, int d, int F, float eps, float *ds, float *dh) {
    const size_t Nd = (size_t)N * d, NF = (size_t)N * F;
    memset(ds, 0, Nd * sizeof(float));
    layernorm_std_backward(ds, dw->ln_w, dw->ln_b, dout, k->s, k->mean, k->std, w->ln_w, N, d, eps);
    memcpy(dx1, ds, Nd * sizeof(float)); /* the residual */
    if (fdrop)
        for (size_t i = 0; i < Nd; i++) ds[i] *= fdrop[i];
    memset(dh, 0, NF * sizeof(float));
    linear_backward(dh, dw->w2, dw->b2, ds, k->h, w->w2, N, F, d);
    if (hdrop)
        for (size_t i = 0; i < NF; i++) dh[i] *= hdrop[i];
    if (act == ATTN_FFN_RELU) {
        relu_backward(dh, dh, k->pre, (int64_t)NF);
    } else { /* gelu_tanh_backward accumulates: from a copy in h, no longer needed */
        memcpy(k->h, dh, NF * sizeof(float));
        memset(dh, 0, NF * sizeof(float));
        gelu_tanh_backward(dh, k->h, k->pre, NF);
    }
    linear_backward(dx1, dw->w1, dw->b1, dh, x1, w->w1, N, d, F);
}

int attn_views_bind(rt_model *m, int n_head, int n_block, int n_tail, mr_error *e) {
    attn_views *v = m->impl;
    const int nb = m->cfg.blocks, n = n_head + nb * n_block + n_tail;
    if (!v) {
        /* the struct and its 2n pointers in one allocation */
        v = mr_calloc(1, sizeof *v + 2 * (size_t)n * sizeof(float *), e);
        if (!v)
            return MR_ERR_INTERNAL;
        float **all = (float **)(void *)(v + 1);
        v->blocks = nb;
        v->n_head = n_head;
        v->n_block = n_block;
        v->n_tail = n_tail;
        v->h = all;
        v->w = all + n_head;
        v->t = v->w + (size_t)nb * n_block;
        v->dh = all + n;
        v->dw = v->dh + n_head;
        v->dt = v->dw + (size_t)nb * n_block;
        m->impl = v;
    }
    if (m->n_tensors != n)
        return mr_fail(e, MR_ERR_INTERNAL, "%s: layout has %d tensors", m->cfg.arch, m->n_tensors);
    /* h, w, t and then dh, dw, dt lie one after the other, in layout order */
    float **all = v->h;
    for (int i = 0; i < n; i++) {
        const size_t off = m->tensors[i].offset;
        all[i] = m->params + off;
        all[n + i] = m->grads ? m->grads + off : NULL;
    }
    return MR_OK;
}

void attn_views_unbind(rt_model *m) {
    free(m->impl);
    m->impl = NULL;
}

void attn_init_tables(rt_model *m, uint64_t seed, int unit_normal_tables) {
    mr_rng r;
    mr_rng_seed(&r, seed);
    const int d = m->cfg.hidden;
    for (int i = 0; i < m->n_tensors; i++) {
        const rt_tensor *t = &m->tensors[i];
        float *x = m->params + t->offset;
        if (strstr(t->name, "layer_norm")) {
            const float v = strstr(t->name, "weight") ? 1.0f : 0.0f;
            for (size_t j = 0; j < t->numel; j++) x[j] = v;
        } else if (i < 2) {
            for (size_t j = 0; j < t->numel; j++)
                x[j] = unit_normal_tables ? (float)mr_rng_normal(&r) : rt_trunc_normal(&r, 0.02, 0.04);
            if (i == 0)
                memset(x, 0, (size_t)d * sizeof *x);
        } else {
            for (size_t j = 0; j < t->numel; j++) x[j] = rt_trunc_normal(&r, 0.02, 0.04);
        }
    }
}

void attn_init_bert(rt_model *m, uint64_t seed) { attn_init_tables(m, seed, 1); }

uint64_t attn_row_key(uint64_t key, uint64_t site, int64_t example, int pos) {
    uint64_t k = mr_mix64(key ^ mr_mix64(site + 0x51ed270b27a1f5c3ULL));
    k = mr_mix64(k ^ ((uint64_t)example * 0xd6e8feb86659fd93ULL));
    return mr_mix64(k + (uint64_t)(pos + 1) * 0x9e3779b97f4a7c15ULL);
}

/* attn_uniform(key, col) < p, decided on the hash's top 53 bits: u = n 2^-53
 * is below p exactly when n < ceil(p 2^53) (p 2^53 is exact in double), so the
 * element loops compare integers and vectorize. */
static uint64_t drop_threshold(float p) { return (uint64_t)ceil((double)p * 9007199254740992.0); }
static inline int dropped(uint64_t row_key, uint64_t col, uint64_t threshold) {
    return (mr_mix64(row_key + col * 0x632be59bd9b4e019ULL) >> 11) < threshold;
}

void attn_dropout_row(float *scale, int n, float p, uint64_t row_key) {
    const float keep = 1.0f / (1.0f - p);
    const uint64_t t = drop_threshold(p);
#pragma omp simd
    for (int c = 0; c < n; c++) scale[c] = dropped(row_key, (uint64_t)c, t) ? 0.0f : keep;
}

void attn_positions(int32_t *pos, uint8_t *valid, size_t *poff, const int *start, const int32_t *tok, int n_seqs,
                    int max_len, int n_head, int counted) {
    poff[0] = 0;
    for (int s = 0; s < n_seqs; s++) {
        const int r0 = start[s], r = start[s + 1] - r0;
        int n = 0;
        for (int j = 0; j < r; j++) {
            const int item = tok[r0 + j] > 0, pp = max_len - r + j;
            valid[r0 + j] = (uint8_t)item;
            n += item;
            pos[r0 + j] = counted ? (item ? (n < max_len ? n : max_len) : 0) : (pp < 0 ? 0 : pp);
        }
        poff[s + 1] = poff[s] + (size_t)n_head * r * r;
    }
}

void attn_dropout_rows(float *mask, int C, float p, uint64_t key, uint64_t site, const int *start, int n_seqs,
                       const int64_t *example, int max_len) {
#pragma omp parallel for schedule(static)
    for (int s = 0; s < n_seqs; s++) {
        const int r0 = start[s], r1 = start[s + 1], p0 = max_len - (r1 - r0);
        const int64_t ex = example ? example[s] : s;
        for (int i = r0; i < r1; i++)
            attn_dropout_row(mask + (size_t)i * C, C, p, attn_row_key(key, site, ex, p0 + i - r0));
    }
}

void attn_probs_dropout(float *drop, int r, int n_head, float p, uint64_t key, uint64_t site, int64_t example,
                        int p0, int causal) {
    const float keep = 1.0f / (1.0f - p);
    const uint64_t t = drop_threshold(p);
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < r; i++) {
            const uint64_t rk = attn_row_key(key, site + 1000 * (uint64_t)(h + 1), example, p0 + i);
            float *dm = drop + ((size_t)h * r + i) * r;
            const int n = causal ? i + 1 : r;
#pragma omp simd
            for (int j = 0; j < n; j++) dm[j] = dropped(rk, (uint64_t)(p0 + j), t) ? 0.0f : keep;
            for (int j = n; j < r; j++) dm[j] = 0.0f;
        }
}

void attn_embedding_forward(float *x, const float *tok_table, const float *pos_table, const int32_t *tok,
                            const int32_t *pos, int N, int d) {
    for (int i = 0; i < N; i++) {
        float *xi = x + (size_t)i * d;
        const float *te = tok_table + (size_t)tok[i] * d, *pe = pos_table + (size_t)pos[i] * d;
        for (int c = 0; c < d; c++) xi[c] = te[c] + pe[c];
    }
}

void attn_embedding_backward(float *dtok_table, float *dpos_table, const float *g, const int32_t *tok,
                             const int32_t *pos, int N, int d) {
    for (int i = 0; i < N; i++) {
        const float *gi = g + (size_t)i * d;
        float *dp = dpos_table + (size_t)pos[i] * d;
        for (int c = 0; c < d; c++) dp[c] += gi[c];
        if (tok[i] > 0) {
            float *dt = dtok_table + (size_t)tok[i] * d;
            for (int c = 0; c < d; c++) dt[c] += gi[c];
        }
    }
}

void relu_forward(float *out, const float *inp, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void relu_backward(float *dinp, const float *dout, const float *inp, int64_t n) {
    for (int64_t i = 0; i < n; i++) dinp[i] = inp[i] > 0.0f ? dout[i] : 0.0f;
}

/* exp through nn_exp so the loops vectorize (libm's expm1f and expf were about 30% of
 * STOSA's epoch): for x <= 0, ELU + 1 is exp(x) itself, and ELU = exp(x) - 1 is off
 * from expm1 by at most an ulp of 1 (absolute), which the sum with other terms
 * absorbs. */
void elu_forward(float *out, const float *inp, int64_t n, float shift) {
    if (shift == 1.0f) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] + 1.0f : nn_exp(inp[i]);
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) out[i] = (inp[i] > 0.0f ? inp[i] : nn_exp(inp[i]) - 1.0f) + shift;
    }
}

void elu_backward(float *dinp, const float *dout, const float *inp, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dinp[i] = inp[i] > 0.0f ? dout[i] : dout[i] * nn_exp(inp[i]);
}

/* The site of STOSA's negatives (stosa.c keys its dropout with sites >= 16). */
#define STOSA_SITE_NEG 1

static int item_seen(const int32_t *seen, int n_seen, int32_t q) {
    for (int i = 0; i < n_seen; i++)
        if (seen[i] == q) return 1;
    return 0;
}

int32_t stosa_negative(int n_items, int32_t pos, const int32_t *seen, int n_seen, uint64_t key, int64_t example,
                       int position) {
    const uint64_t rk = attn_row_key(key, STOSA_SITE_NEG, example, position);
    if (seen && n_seen > 0) {
        /* rejection: exact while tries last; a user who has seen nearly every item
         * falls through to the k-th unseen item after 64 tries */
        for (uint64_t t = 1; t <= 64; t++) {
            int32_t q = 1 + (int32_t)(attn_uniform(rk, t) * n_items);
            if (q > n_items) q = n_items;
            if (!item_seen(seen, n_seen, q)) return q;
        }
        int64_t unseen = 0;
        for (int32_t q = 1; q <= n_items; q++) unseen += !item_seen(seen, n_seen, q);
        if (unseen > 0) {
            int64_t k = (int64_t)(attn_uniform(rk, 0) * (double)unseen);
            if (k >= unseen) k = unseen - 1;
            for (int32_t q = 1; q <= n_items; q++)
                if (!item_seen(seen, n_seen, q) && k-- == 0) return q;
        }
    }
    const double u = attn_uniform(rk, 0);
    int32_t q = 1 + (int32_t)(u * (n_items - 1));
    if (q > n_items - 1)
        q = n_items - 1;
    return q >= pos ? q + 1 : q;
}

int attn_batch_fits(const rt_batch *b, int max_len, int max_rows, int max_seqs) {
    if (b->n_seqs < 0 || b->n_seqs > max_seqs || b->n_rows > max_rows || b->seq_start[0] != 0 ||
        b->seq_start[b->n_seqs] != b->n_rows)
        return 0;
    for (int s = 0; s < b->n_seqs; s++) {
        const int r = b->seq_start[s + 1] - b->seq_start[s];
        if (r < 0 || r > max_len)
            return 0;
    }
    return 1;
}
