/* STOSA (Fan et al. 2022) as its public code runs it (zfan20/STOSA: seqmodels.py
 * DistSAModel, modules.py DistSAEncoder / DistLayer / DistSelfAttention /
 * DistIntermediate, trainers.py bpr_optimization). Items are diagonal Gaussians
 * (mean E_m, covariance ELU(E_c) + 1):
 *
 *   m0 = ELU(dropout(LN(E_m[tok] + P_m[pos])))         pos = the padded position 0..max_len-1
 *   c0 = ELU(dropout(LN(E_c[tok] + P_c[pos]))) + 1     (one LN shared by both)
 *   per layer, on (m0, c):
 *     P  = softmax(-W2((m0 Wmq, ELU(c Wcq) + 1), (m0 Wmk, ELU(c Wck) + 1)) / sqrt(hd))
 *          causal, padding keys masked, dropout on the probabilities
 *     a  = LNa(dropout(Wcd ((P∘D)² (ELU(c Wcv) + 1))) + c)
 *     c  = ELU(LNci(dropout(W2 ELU(W1 a)) + a)) + 1
 *   output (m0, c_L)
 *
 * The mean stream never passes the layers: the reference's DistSAEncoder assigns
 * each layer's mean output to a misspelt variable (`maen_hidden_states`), so
 * every layer receives the embedding's mean and the model returns it. We run the
 * code whose figures were published: the mean value / dense / intermediate
 * tensors are kept (state_dict) and get zero gradients, as they do there.
 * LN is torch's (biased variance, eps 1e-12 inside the root: nn/layernorm.h).
 *
 * Objective at every row whose input and label are items (the reference's
 * rows: its inputs are the sequence shifted by one): with a negative q drawn
 * uniformly over the items outside the user's training items when the batch
 * carries them (b->user_items: the reference's neg_sample over the user's whole
 * training sequence), else over the items other than the label p; keyed by
 * (key, example, position),
 *   loss = mean(-log σ(W(s, q) - W(s, p) + 1e-24)) + reg_weight · mean(max(W(s, p) - W(p, q), 0))
 * with W the squared 2-Wasserstein distance. scores_last = -W(s, item) for the
 * items 0..n_items. The tables have n_items + 2 rows as the reference's
 * item_size = max id + 2. A batch larger than the scratch or with a sequence
 * longer than max_len gets a NaN loss / NaN scores. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/attention_wasserstein.h"
#include "nn/layernorm.h"
#include "nn/linear.h"
#include "retriever/arch.h"
#include "retriever/attn_common.h"

#define ST_LN_EPS 1e-12f
#define ST_CHUNK 128

enum { T_IM, T_IC, T_PM, T_PC, T_UM, T_HEAD };
enum {
    A_MQ_W, A_MQ_B, A_CQ_W, A_CQ_B, A_MK_W, A_MK_B, A_CK_W, A_CK_B, A_MV_W, A_MV_B, A_CV_W, A_CV_B,
    A_MD_W, A_MD_B, A_CD_W, A_CD_B, A_LN_W, A_LN_B,
    MI_D1_W, MI_D1_B, MI_D2_W, MI_D2_B, MI_LN_W, MI_LN_B,
    CI_D1_W, CI_D1_B, CI_D2_W, CI_D2_B, CI_LN_W, CI_LN_B, L_COUNT
};
enum { T_LN_W, T_LN_B, T_TAIL };

static const char *const head_names[T_HEAD] = {
    "item_mean_embeddings.weight", "item_cov_embeddings.weight", "position_mean_embeddings.weight",
    "position_cov_embeddings.weight", "user_margins.weight",
};
static const char *const layer_names[L_COUNT] = {
    "attention.mean_query.weight", "attention.mean_query.bias", "attention.cov_query.weight",
    "attention.cov_query.bias", "attention.mean_key.weight", "attention.mean_key.bias",
    "attention.cov_key.weight", "attention.cov_key.bias", "attention.mean_value.weight",
    "attention.mean_value.bias", "attention.cov_value.weight", "attention.cov_value.bias",
    "attention.mean_dense.weight", "attention.mean_dense.bias", "attention.cov_dense.weight",
    "attention.cov_dense.bias", "attention.LayerNorm.weight", "attention.LayerNorm.bias",
    "mean_intermediate.dense_1.weight", "mean_intermediate.dense_1.bias", "mean_intermediate.dense_2.weight",
    "mean_intermediate.dense_2.bias", "mean_intermediate.LayerNorm.weight", "mean_intermediate.LayerNorm.bias",
    "cov_intermediate.dense_1.weight", "cov_intermediate.dense_1.bias", "cov_intermediate.dense_2.weight",
    "cov_intermediate.dense_2.bias", "cov_intermediate.LayerNorm.weight", "cov_intermediate.LayerNorm.bias",
};
static const char *const tail_names[T_TAIL] = {"LayerNorm.weight", "LayerNorm.bias"};

typedef struct {
    float *qm, *km, *qc_pre, *qc, *kc_pre, *kc, *vc_pre, *vc, *probs, *pdrop, *oc, *cd, *odrop;
    float *s1, *a, *a_mean, *a_rstd, *h1, *g, *h2, *fdrop, *s2, *t, *t_mean, *t_rstd, *cout;
} stosa_layer_acts;

typedef struct {
    int rows, max_seqs, d, F, n_items, heads, blocks, max_len;
    int32_t *pos, *neg;
    uint8_t *valid;
    size_t *poff;
    float *em, *em_mean, *em_rstd, *m_ln, *mdrop, *m_d, *m0;
    float *ec, *ec_mean, *ec_rstd, *c_ln, *cdrop, *c_d, *c0;
    stosa_layer_acts *lay;
    /* backward */
    float *dm0, *dc, *dtmp, *ds, *da, *doc, *dqm, *dkm, *dqc, *dkc, *dvc, *dF, *att_scratch;
    int *scored;
    /* scoring */
    float *item_cov, *item_sqrt, *xs, *xs2, *prod; /* prod: the items' norms (doubles) */
} stosa_acts;

static int decays(const char *name) { return !strstr(name, "bias") && !strstr(name, "LayerNorm"); }

/* ------------------------------------------------------------------ layout */

static int stosa_layout(rt_model *m, mr_error *e) {
    const rt_config *c = &m->cfg;
    if (c->n_items < 2 || c->hidden < 1 || c->blocks < 1 || c->heads < 1 || c->max_len < 1 || c->hidden % c->heads)
        return mr_fail(e, MR_ERR_USAGE,
                       "stosa: needs 2+ items, hidden divisible by heads, blocks, max_len (got %d, %d, %d, %d, %d)",
                       c->n_items, c->hidden, c->heads, c->blocks, c->max_len);
    if (c->dropout < 0 || c->dropout >= 1 || c->attn_dropout < 0 || c->attn_dropout >= 1 || c->reg_weight < 0)
        return mr_fail(e, MR_ERR_USAGE, "stosa: dropout must be in [0, 1), reg_weight >= 0");
    const int64_t d = c->hidden, F = 4 * d;
    const int64_t hs[T_HEAD][2] = {{c->n_items + 2, d}, {c->n_items + 2, d}, {c->max_len, d}, {c->max_len, d},
                                   {c->n_users > 0 ? c->n_users : 1, 1}};
    int rc = MR_OK;
    for (int t = 0; t < T_HEAD && !rc; t++) rc = rt_model_add_tensor(m, head_names[t], 2, hs[t], decays(head_names[t]), e);
    for (int b = 0; b < c->blocks && !rc; b++)
        for (int t = 0; t < L_COUNT && !rc; t++) {
            char name[96];
            snprintf(name, sizeof name, "item_encoder.layer.%d.%s", b, layer_names[t]);
            int64_t shape[2] = {d, d};
            int nd = strstr(layer_names[t], ".weight") && !strstr(layer_names[t], "LayerNorm") ? 2 : 1;
            if (t == MI_D1_W || t == CI_D1_W || t == MI_D1_B || t == CI_D1_B)
                shape[0] = F;
            if (t == MI_D2_W || t == CI_D2_W)
                shape[1] = F;
            rc = rt_model_add_tensor(m, name, nd, shape, decays(name), e);
        }
    for (int t = 0; t < T_TAIL && !rc; t++) rc = rt_model_add_tensor(m, tail_names[t], 1, (int64_t[]){d}, 0, e);
    return rc;
}

/* m->impl: attn_views (T_HEAD, L_COUNT per layer, T_TAIL). */
static int stosa_bind(rt_model *m, mr_error *e) { return attn_views_bind(m, T_HEAD, L_COUNT, T_TAIL, e); }

/* The reference's init_weights: every Linear and Embedding weight N(0.01, 0.02)
 * (the padding rows too: normal_ runs after nn.Embedding zeroed them), Linear
 * biases 0, LayerNorms ones and zeros. */
static void stosa_init(rt_model *m, uint64_t seed) {
    mr_rng r;
    mr_rng_seed(&r, seed);
    for (int i = 0; i < m->n_tensors; i++) {
        const rt_tensor *t = &m->tensors[i];
        float *x = m->params + t->offset;
        const int ln = strstr(t->name, "LayerNorm") != NULL, bias = strstr(t->name, ".bias") != NULL;
        for (size_t j = 0; j < t->numel; j++)
            x[j] = ln ? (bias ? 0.0f : 1.0f) : bias ? 0.0f : (float)(0.01 + 0.02 * mr_rng_normal(&r));
    }
}

/* ------------------------------------------------------------------ scratch */

static void stosa_acts_free(void *acts) {
    stosa_acts *a = acts;
    if (!a)
        return;
    free(a->pos); free(a->neg); free(a->valid); free(a->poff);
    free(a->em); free(a->em_mean); free(a->em_rstd); free(a->m_ln); free(a->mdrop); free(a->m_d); free(a->m0);
    free(a->ec); free(a->ec_mean); free(a->ec_rstd); free(a->c_ln); free(a->cdrop); free(a->c_d); free(a->c0);
    if (a->lay)
        for (int l = 0; l < a->blocks; l++) {
            stosa_layer_acts *k = &a->lay[l];
            free(k->qm); free(k->km); free(k->qc_pre); free(k->qc); free(k->kc_pre); free(k->kc); free(k->vc_pre);
            free(k->vc); free(k->probs); free(k->pdrop); free(k->oc); free(k->cd); free(k->odrop); free(k->s1);
            free(k->a); free(k->a_mean); free(k->a_rstd); free(k->h1); free(k->g); free(k->h2); free(k->fdrop);
            free(k->s2); free(k->t); free(k->t_mean); free(k->t_rstd); free(k->cout);
        }
    free(a->lay);
    free(a->dm0); free(a->dc); free(a->dtmp); free(a->ds); free(a->da); free(a->doc); free(a->dqm); free(a->dkm);
    free(a->dqc); free(a->dkc); free(a->dvc); free(a->dF); free(a->att_scratch); free(a->scored);
    free(a->item_cov); free(a->item_sqrt); free(a->xs); free(a->xs2); free(a->prod);
    free(a);
}

static int stosa_acts_create(void **out, const rt_model *m, int max_rows, int max_seqs, mr_error *e) {
    *out = NULL;
    if (max_rows < 1 || max_seqs < 1)
        return mr_fail(e, MR_ERR_INTERNAL, "stosa: scratch for %d rows in %d sequences", max_rows, max_seqs);
    stosa_acts *a = calloc(1, sizeof *a);
    if (!a)
        return mr_fail(e, MR_ERR_INTERNAL, "stosa: out of memory");
    const rt_config *c = &m->cfg;
    a->rows = max_rows;
    a->max_seqs = max_seqs;
    a->d = c->hidden;
    a->F = 4 * c->hidden;
    a->n_items = c->n_items;
    a->heads = c->heads;
    a->blocks = c->blocks;
    a->max_len = c->max_len;
    const size_t N = (size_t)max_rows, d = (size_t)a->d, F = (size_t)a->F, V = (size_t)c->n_items + 1;
    const size_t rmax = N < (size_t)c->max_len ? N : (size_t)c->max_len, P = (size_t)a->heads * N * rmax;
    int ok = 1;
#define A(ptr, n) ok &= ((ptr) = calloc((n), sizeof *(ptr))) != NULL
    A(a->pos, N); A(a->neg, N); A(a->valid, N); A(a->poff, (size_t)max_seqs + 1);
    A(a->em, N * d); A(a->em_mean, N); A(a->em_rstd, N); A(a->m_ln, N * d); A(a->mdrop, N * d); A(a->m_d, N * d);
    A(a->m0, N * d); A(a->ec, N * d); A(a->ec_mean, N); A(a->ec_rstd, N); A(a->c_ln, N * d); A(a->cdrop, N * d);
    A(a->c_d, N * d); A(a->c0, N * d);
    A(a->lay, (size_t)a->blocks);
    for (int l = 0; ok && l < a->blocks; l++) {
        stosa_layer_acts *k = &a->lay[l];
        A(k->qm, N * d); A(k->km, N * d); A(k->qc_pre, N * d); A(k->qc, N * d); A(k->kc_pre, N * d);
        A(k->kc, N * d); A(k->vc_pre, N * d); A(k->vc, N * d); A(k->probs, P); A(k->pdrop, P); A(k->oc, N * d);
        A(k->cd, N * d); A(k->odrop, N * d); A(k->s1, N * d); A(k->a, N * d); A(k->a_mean, N); A(k->a_rstd, N);
        A(k->h1, N * F); A(k->g, N * F); A(k->h2, N * d); A(k->fdrop, N * d); A(k->s2, N * d); A(k->t, N * d);
        A(k->t_mean, N); A(k->t_rstd, N); A(k->cout, N * d);
    }
    A(a->dm0, N * d); A(a->dc, N * d); A(a->dtmp, N * d); A(a->ds, N * d); A(a->da, N * d); A(a->doc, N * d);
    A(a->dqm, N * d); A(a->dkm, N * d); A(a->dqc, N * d); A(a->dkc, N * d); A(a->dvc, N * d); A(a->dF, N * F);
    A(a->att_scratch, attention_wasserstein_scratch_floats((int)N, (int)d)); A(a->scored, N);
    A(a->item_cov, V * d); A(a->item_sqrt, V * d); A(a->xs, (size_t)ST_CHUNK * d); A(a->xs2, (size_t)ST_CHUNK * d);
    A(a->prod, (size_t)ST_CHUNK * V);
#undef A
    if (!ok) {
        stosa_acts_free(a);
        return mr_fail(e, MR_ERR_INTERNAL, "stosa: out of memory for %d rows", max_rows);
    }
    *out = a;
    return MR_OK;
}

/* ------------------------------------------------------------------ forward */

/* Sites of the dropout masks (the negatives use site 1 in attn_common.c). */
enum { SITE_EMB_M = 2, SITE_EMB_C = 3, SITE_ATTN = 4, SITE_ATT_OUT = 5, SITE_FF = 6 };
#define SITE(layer, what) ((uint64_t)((layer) + 1) * 16 + (what))

static void stosa_forward(const rt_model *m, stosa_acts *a, const rt_batch *b, int train, uint64_t key) {
    const attn_views *p = m->impl;
    const int N = b->n_rows, d = a->d, F = a->F, H = a->heads, hd = d / H;
    const float pd = train ? m->cfg.dropout : 0.0f, pa = train ? m->cfg.attn_dropout : 0.0f;
    attn_positions(a->pos, a->valid, a->poff, b->seq_start, b->tokens, b->n_seqs, a->max_len, H, 0);
    attn_embedding_forward(a->em, p->h[T_IM], p->h[T_PM], b->tokens, a->pos, N, d);
    attn_embedding_forward(a->ec, p->h[T_IC], p->h[T_PC], b->tokens, a->pos, N, d);
    const size_t Nd = (size_t)N * d;
    layernorm_forward(a->m_ln, a->em_mean, a->em_rstd, a->em, p->t[T_LN_W], p->t[T_LN_B], N, d, ST_LN_EPS);
    layernorm_forward(a->c_ln, a->ec_mean, a->ec_rstd, a->ec, p->t[T_LN_W], p->t[T_LN_B], N, d, ST_LN_EPS);
    if (pd > 0) {
        const int *st = b->seq_start, S = b->n_seqs, L = a->max_len;
        attn_dropout_rows(a->mdrop, d, pd, key, SITE(0, SITE_EMB_M), st, S, b->example, L);
        attn_dropout_rows(a->cdrop, d, pd, key, SITE(0, SITE_EMB_C), st, S, b->example, L);
        for (int l = 0; l < a->blocks; l++) {
            attn_dropout_rows(a->lay[l].odrop, d, pd, key, SITE(l, SITE_ATT_OUT), st, S, b->example, L);
            attn_dropout_rows(a->lay[l].fdrop, d, pd, key, SITE(l, SITE_FF), st, S, b->example, L);
        }
    }
    for (size_t i = 0; i < Nd; i++) {
        a->m_d[i] = pd > 0 ? a->m_ln[i] * a->mdrop[i] : a->m_ln[i];
        a->c_d[i] = pd > 0 ? a->c_ln[i] * a->cdrop[i] : a->c_ln[i];
    }
    elu_forward(a->m0, a->m_d, (int64_t)Nd, 0.0f);
    elu_forward(a->c0, a->c_d, (int64_t)Nd, 1.0f);
    const float *c = a->c0;
    for (int l = 0; l < a->blocks; l++) {
        stosa_layer_acts *k = &a->lay[l];
        float *const *w = attn_block(p, l);
        linear_forward(k->qm, a->m0, w[A_MQ_W], w[A_MQ_B], N, d, d);
        linear_forward(k->km, a->m0, w[A_MK_W], w[A_MK_B], N, d, d);
        linear_forward(k->qc_pre, c, w[A_CQ_W], w[A_CQ_B], N, d, d);
        linear_forward(k->kc_pre, c, w[A_CK_W], w[A_CK_B], N, d, d);
        linear_forward(k->vc_pre, c, w[A_CV_W], w[A_CV_B], N, d, d);
        elu_forward(k->qc, k->qc_pre, (int64_t)Nd, 1.0f);
        elu_forward(k->kc, k->kc_pre, (int64_t)Nd, 1.0f);
        elu_forward(k->vc, k->vc_pre, (int64_t)Nd, 1.0f);
#pragma omp parallel for schedule(dynamic, 1)
        for (int s = 0; s < b->n_seqs; s++) {
            const int r0 = b->seq_start[s], r = b->seq_start[s + 1] - r0;
            float *drop = pa > 0 ? k->pdrop + a->poff[s] : NULL;
            if (drop)
                attn_probs_dropout(drop, r, H, pa, key, SITE(l, SITE_ATTN), attn_example(b, s), a->max_len - r, 1);
            const size_t o = (size_t)r0 * d;
            attention_wasserstein_forward(k->oc + o, k->probs + a->poff[s], k->qm + o, k->km + o, k->qc + o,
                                          k->kc + o, k->vc + o, d, a->valid + r0, drop, r, H, hd, 1,
                                          a->att_scratch + attention_wasserstein_scratch_floats(r0, d));
        }
        linear_forward(k->cd, k->oc, w[A_CD_W], w[A_CD_B], N, d, d);
        for (size_t i = 0; i < Nd; i++) k->s1[i] = (pd > 0 ? k->cd[i] * k->odrop[i] : k->cd[i]) + c[i];
        layernorm_forward(k->a, k->a_mean, k->a_rstd, k->s1, w[A_LN_W], w[A_LN_B], N, d, ST_LN_EPS);
        linear_forward(k->h1, k->a, w[CI_D1_W], w[CI_D1_B], N, d, F);
        elu_forward(k->g, k->h1, (int64_t)N * F, 0.0f);
        linear_forward(k->h2, k->g, w[CI_D2_W], w[CI_D2_B], N, F, d);
        for (size_t i = 0; i < Nd; i++) k->s2[i] = (pd > 0 ? k->h2[i] * k->fdrop[i] : k->h2[i]) + k->a[i];
        layernorm_forward(k->t, k->t_mean, k->t_rstd, k->s2, w[CI_LN_W], w[CI_LN_B], N, d, ST_LN_EPS);
        elu_forward(k->cout, k->t, (int64_t)Nd, 1.0f);
        c = k->cout;
    }
}

static const float *stosa_cov_out(const stosa_acts *a) { return a->lay[a->blocks - 1].cout; }

/* ------------------------------------------------------------------ backward */

/* a->dm0 and a->dc hold d(loss)/d(m0) and d(loss)/d(c_L); accumulates into m->grads. */
static void stosa_backward(rt_model *m, stosa_acts *a, const rt_batch *b, int train) {
    const attn_views *p = m->impl;
    const int N = b->n_rows, d = a->d, F = a->F, H = a->heads, hd = d / H;
    const int drop = train && m->cfg.dropout > 0, drop_a = train && m->cfg.attn_dropout > 0;
    const size_t Nd = (size_t)N * d;
    for (int l = a->blocks - 1; l >= 0; l--) {
        stosa_layer_acts *k = &a->lay[l];
        float *const *w = attn_block(p, l);
        float *const *dw = attn_block_grad(p, l);
        const float *cin = l ? a->lay[l - 1].cout : a->c0;
        /* cout = ELU(t) + 1, t = LN(s2), s2 = drop(W2 ELU(W1 a)) + a */
        elu_backward(a->dtmp, a->dc, k->t, (int64_t)Nd);
        memset(a->ds, 0, Nd * sizeof(float));
        layernorm_backward(a->ds, dw[CI_LN_W], dw[CI_LN_B], a->dtmp, k->s2, k->t_mean, k->t_rstd, w[CI_LN_W], N, d);
        memcpy(a->da, a->ds, Nd * sizeof(float));
        if (drop)
            for (size_t i = 0; i < Nd; i++) a->ds[i] *= k->fdrop[i];
        memset(a->dF, 0, (size_t)N * F * sizeof(float));
        linear_backward(a->dF, dw[CI_D2_W], dw[CI_D2_B], a->ds, k->g, w[CI_D2_W], N, F, d);
        elu_backward(a->dF, a->dF, k->h1, (int64_t)N * F);
        linear_backward(a->da, dw[CI_D1_W], dw[CI_D1_B], a->dF, k->a, w[CI_D1_W], N, d, F);
        /* a = LN(s1), s1 = drop(Wcd oc) + cin */
        memset(a->ds, 0, Nd * sizeof(float));
        layernorm_backward(a->ds, dw[A_LN_W], dw[A_LN_B], a->da, k->s1, k->a_mean, k->a_rstd, w[A_LN_W], N, d);
        memcpy(a->dc, a->ds, Nd * sizeof(float)); /* the residual into cin */
        if (drop)
            for (size_t i = 0; i < Nd; i++) a->ds[i] *= k->odrop[i];
        memset(a->doc, 0, Nd * sizeof(float));
        linear_backward(a->doc, dw[A_CD_W], dw[A_CD_B], a->ds, k->oc, w[A_CD_W], N, d, d);
#pragma omp parallel for schedule(dynamic, 1)
        for (int s = 0; s < b->n_seqs; s++) {
            const int r0 = b->seq_start[s], r = b->seq_start[s + 1] - r0;
            const size_t o = (size_t)r0 * d;
            attention_wasserstein_backward(a->dqm + o, a->dkm + o, a->dqc + o, a->dkc + o, a->dvc + o, a->doc + o,
                                           k->probs + a->poff[s], k->qm + o, k->km + o, k->qc + o, k->kc + o,
                                           k->vc + o, d, drop_a ? k->pdrop + a->poff[s] : NULL, r, H, hd, 1,
                                           a->att_scratch + attention_wasserstein_scratch_floats(r0, d));
        }
        /* the covariance projections (through ELU + 1) into cin */
        elu_backward(a->dqc, a->dqc, k->qc_pre, (int64_t)Nd);
        elu_backward(a->dkc, a->dkc, k->kc_pre, (int64_t)Nd);
        elu_backward(a->dvc, a->dvc, k->vc_pre, (int64_t)Nd);
        linear_backward(a->dc, dw[A_CQ_W], dw[A_CQ_B], a->dqc, cin, w[A_CQ_W], N, d, d);
        linear_backward(a->dc, dw[A_CK_W], dw[A_CK_B], a->dkc, cin, w[A_CK_W], N, d, d);
        linear_backward(a->dc, dw[A_CV_W], dw[A_CV_B], a->dvc, cin, w[A_CV_W], N, d, d);
        /* the mean projections read the embedding's mean in every layer */
        linear_backward(a->dm0, dw[A_MQ_W], dw[A_MQ_B], a->dqm, a->m0, w[A_MQ_W], N, d, d);
        linear_backward(a->dm0, dw[A_MK_W], dw[A_MK_B], a->dkm, a->m0, w[A_MK_W], N, d, d);
    }
    /* m0 = ELU(drop(LN(em))), c0 = ELU(drop(LN(ec))) + 1, one LN for both */
    elu_backward(a->dm0, a->dm0, a->m_d, (int64_t)Nd);
    elu_backward(a->dc, a->dc, a->c_d, (int64_t)Nd);
    if (drop)
        for (size_t i = 0; i < Nd; i++) {
            a->dm0[i] *= a->mdrop[i];
            a->dc[i] *= a->cdrop[i];
        }
    memset(a->ds, 0, Nd * sizeof(float));
    memset(a->da, 0, Nd * sizeof(float));
    layernorm_backward(a->ds, p->dt[T_LN_W], p->dt[T_LN_B], a->dm0, a->em, a->em_mean, a->em_rstd, p->t[T_LN_W], N, d);
    layernorm_backward(a->da, p->dt[T_LN_W], p->dt[T_LN_B], a->dc, a->ec, a->ec_mean, a->ec_rstd, p->t[T_LN_W], N, d);
    attn_embedding_backward(p->dh[T_IM], p->dh[T_PM], a->ds, b->tokens, a->pos, N, d);
    attn_embedding_backward(p->dh[T_IC], p->dh[T_PC], a->da, b->tokens, a->pos, N, d);
}

/* ------------------------------------------------------------------ the objective */

/* W = Σ (m1 - m2)² + Σ (sqrt c1 - sqrt c2)², and its gradient scaled by g added
 * to dm1, dc1, dm2, dc2 (any may be NULL). */
static double wdist(const float *m1, const float *c1, const float *m2, const float *c2, int d) {
    double w = 0;
    for (int k = 0; k < d; k++) {
        const double dm = (double)m1[k] - m2[k], dc = sqrt((double)c1[k]) - sqrt((double)c2[k]);
        w += dm * dm + dc * dc;
    }
    return w;
}

static void wdist_grad(float *dm1, float *dc1, float *dm2, float *dc2, const float *m1, const float *c1,
                       const float *m2, const float *c2, int d, double g) {
    for (int k = 0; k < d; k++) {
        const double dm = (double)m1[k] - m2[k], s1 = sqrt((double)c1[k]), s2 = sqrt((double)c2[k]);
        if (dm1)
            dm1[k] += (float)(2.0 * g * dm);
        if (dm2)
            dm2[k] -= (float)(2.0 * g * dm);
        if (dc1)
            dc1[k] += (float)(g * (1.0 - s2 / s1));
        if (dc2)
            dc2[k] += (float)(g * (1.0 - s1 / s2));
    }
}

static double stosa_loss_backward(rt_model *m, void *acts, const rt_batch *b, int train, uint64_t key) {
    stosa_acts *a = acts;
    const attn_views *p = m->impl;
    const int N = b->n_rows, d = a->d;
    memset(m->grads, 0, m->n_params * sizeof(float));
    if (!attn_batch_fits(b, a->max_len, a->rows, a->max_seqs))
        return NAN;
    stosa_forward(m, a, b, train, key);
    int M = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        const int r0 = b->seq_start[s], r = b->seq_start[s + 1] - r0;
        for (int j = 0; j < r; j++) {
            const int i = r0 + j;
            if (b->labels[i] > 0 && b->tokens[i] > 0) {
                a->scored[M++] = i;
                a->neg[i] = stosa_negative(a->n_items, b->labels[i], b->user_items ? b->user_items[s] : NULL,
                                           b->n_user_items ? b->n_user_items[s] : 0, key, attn_example(b, s),
                                           a->max_len - r + j);
            }
        }
    }
    memset(a->dm0, 0, (size_t)N * d * sizeof(float));
    memset(a->dc, 0, (size_t)N * d * sizeof(float));
    if (M == 0)
        return 0.0;
    const float *cov = stosa_cov_out(a), *Em = p->h[T_IM], *Ec = p->h[T_IC];
    float *dEm = p->dh[T_IM], *dEc = p->dh[T_IC];
    const double reg = m->cfg.reg_weight;
    double bpr_sum = 0, reg_sum = 0;
    float *pc = a->xs, *nc = a->xs + d, *dpc = a->xs2, *dnc = a->xs2 + d; /* [d] each */
    for (int k = 0; k < M; k++) {
        const int i = a->scored[k], ip = b->labels[i], in = a->neg[i];
        const float *sm = a->m0 + (size_t)i * d, *sc = cov + (size_t)i * d;
        const float *pm = Em + (size_t)ip * d, *nm = Em + (size_t)in * d;
        elu_forward(pc, Ec + (size_t)ip * d, d, 1.0f);
        elu_forward(nc, Ec + (size_t)in * d, d, 1.0f);
        const double wp = wdist(sm, sc, pm, pc, d), wn = wdist(sm, sc, nm, nc, d), wpn = wdist(pm, pc, nm, nc, d);
        const double z = wn - wp + 1e-24, sig = 1.0 / (1.0 + exp(-z));
        bpr_sum += z >= 0 ? log1p(exp(-z)) : -z + log1p(exp(z));
        /* d/dz of -log σ(z) = σ(z) - 1 */
        double gp = (1.0 - sig) / M, gn = (sig - 1.0) / M, gpn = 0.0;
        if (wp - wpn > 0) {
            reg_sum += wp - wpn;
            gp += reg / M;
            gpn = -reg / M;
        }
        memset(dpc, 0, 2 * (size_t)d * sizeof(float));
        float *dsm = a->dm0 + (size_t)i * d, *dsc = a->dc + (size_t)i * d;
        wdist_grad(dsm, dsc, dEm + (size_t)ip * d, dpc, sm, sc, pm, pc, d, gp);
        wdist_grad(dsm, dsc, dEm + (size_t)in * d, dnc, sm, sc, nm, nc, d, gn);
        if (gpn != 0.0)
            wdist_grad(dEm + (size_t)ip * d, dpc, dEm + (size_t)in * d, dnc, pm, pc, nm, nc, d, gpn);
        /* the item covariances through ELU + 1 */
        elu_backward(dpc, dpc, Ec + (size_t)ip * d, d);
        elu_backward(dnc, dnc, Ec + (size_t)in * d, d);
        for (int c = 0; c < d; c++) {
            dEc[(size_t)ip * d + c] += dpc[c];
            dEc[(size_t)in * d + c] += dnc[c];
        }
    }
    stosa_backward(m, a, b, train);
    return bpr_sum / M + reg * reg_sum / M;
}

/* -W(s, item) = 2 m·E_m + 2 sqrt(c)·sqrt(C) - |m|² - |E_m|² - Σc - ΣC over items 0..n_items. */
static void stosa_scores_last(const rt_model *m, void *acts, const rt_batch *b, float *scores) {
    stosa_acts *a = acts;
    const attn_views *p = m->impl;
    const int d = a->d, V = a->n_items + 1;
    if (!attn_batch_fits(b, a->max_len, a->rows, a->max_seqs)) {
        for (size_t i = 0; i < (size_t)b->n_seqs * V; i++) scores[i] = NAN;
        return;
    }
    stosa_forward(m, a, b, 0, 0);
    const float *cov = stosa_cov_out(a);
    elu_forward(a->item_cov, p->h[T_IC], (int64_t)V * d, 1.0f);
    for (size_t i = 0; i < (size_t)V * d; i++) a->item_sqrt[i] = sqrtf(a->item_cov[i]);
    double *item_norm = (double *)a->prod; /* V doubles fit in its ST_CHUNK x V floats */
    for (int k = 0; k < V; k++) {
        double item = 0;
        for (int c = 0; c < d; c++) {
            const double em = p->h[T_IM][(size_t)k * d + c];
            item += em * em + a->item_cov[(size_t)k * d + c];
        }
        item_norm[k] = item;
    }
    for (int s0 = 0; s0 < b->n_seqs; s0 += ST_CHUNK) {
        const int n = b->n_seqs - s0 < ST_CHUNK ? b->n_seqs - s0 : ST_CHUNK;
        for (int i = 0; i < n; i++) {
            const int row = b->seq_start[s0 + i + 1] - 1;
            memcpy(a->xs + (size_t)i * d, a->m0 + (size_t)row * d, (size_t)d * sizeof(float));
            for (int c = 0; c < d; c++) a->xs2[(size_t)i * d + c] = sqrtf(cov[(size_t)row * d + c]);
        }
        float *out = scores + (size_t)s0 * V;
        linear_forward_ex(out, 0, a->xs, 0, p->h[T_IM], NULL, n, d, V, 2.0f, 0);
        linear_forward_ex(out, 0, a->xs2, 0, a->item_sqrt, NULL, n, d, V, 2.0f, 1);
        for (int i = 0; i < n; i++) {
            double self = 0;
            const int row = b->seq_start[s0 + i + 1] - 1;
            for (int c = 0; c < d; c++) {
                const double mm = a->m0[(size_t)row * d + c];
                self += mm * mm + cov[(size_t)row * d + c];
            }
            for (int k = 0; k < V; k++) out[(size_t)i * V + k] -= (float)(self + item_norm[k]);
        }
    }
}

const rt_arch rt_arch_stosa = {
    .name = "stosa",
    .layout = stosa_layout,
    .bind = stosa_bind,
    .unbind = attn_views_unbind,
    .init = stosa_init,
    .acts_create = stosa_acts_create,
    .acts_free = stosa_acts_free,
    .loss_backward = stosa_loss_backward,
    .scores_last = stosa_scores_last,
};
