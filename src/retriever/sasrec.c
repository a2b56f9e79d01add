/* SASRec (Kang & McAuley 2018) as the LlamaRec lineage writes it
 * (Yueeeeeeee/RecSys-Extraction-Attack, model/sasrec.py and model/attention.py):
 *
 *   x0 = dropout(E[tok] + P[pos])           pos = 1.. over the non-padding rows, 0 on padding
 *   per block:
 *     a  = attention(q = LN0(x) Wq, k = x Wk, v = x Wv)   causal, padding keys masked,
 *                                                       dropout on the probabilities
 *     x1 = LNa(a + LN0(x))                  (no output projection in that code)
 *     x2 = LNf(dropout(W2 dropout(relu(W1 x1))) + x1)   (W1, W2: kernel-1 convolutions)
 *   scores = x Eᵀ                           (tied to the item embedding, no bias)
 *
 * LN is the reference's own layer norm (unbiased std, eps 1e-6 outside the root:
 * nn/layernorm_std.h). Training: cross-entropy over all items at every row whose
 * label and input are both items; the reference's trainer selects rows with
 * seqs > 0 the same way, so the padding input row at the start of a window is
 * never scored (its keys are masked everywhere, so it influences nothing).
 *
 * A batch larger than the scratch or with a sequence longer than max_len (the
 * contract's windows are at most max_len rows) gets a NaN loss / NaN scores.
 *
 * Row j of a packed sequence of r rows sits at padded position max_len - r + j;
 * positions are counted over the rows whose token is an item, as the reference's
 * PositionalEmbedding counts them over the whole window. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/attention_masked.h"
#include "nn/layernorm_std.h"
#include "nn/linear.h"
#include "nn/xent.h"
#include "retriever/arch.h"
#include "retriever/attn_common.h"

#define SAS_LN_EPS 1e-6f
/* Users per slice of scores_last's [users, n_items + 1] scores. */
#define SAS_LOGIT_ROWS 128

/* The tables before the blocks, then the tensors of one block, in state_dict order. */
enum { T_TOK, T_POS, T_HEAD };
enum {
    B_LN0_W, B_LN0_B, B_WQ, B_BQ, B_WK, B_BK, B_WV, B_BV,
    B_LNA_W, B_LNA_B, B_W1, B_B1, B_W2, B_B2, B_LNF_W, B_LNF_B, B_COUNT
};


typedef struct {
    float *ln0, *ln0_mean, *ln0_std;  /* [N, d], [N], [N] */
    float *q, *k, *v;                 /* [N, d] */
    float *probs, *pdrop;             /* [heads, r, r] per sequence, at poff[s] */
    float *att, *s1, *x1, *x1_mean, *x1_std;
    float *hpre, *h, *hdrop;          /* [N, 4d] */
    float *f, *fdrop, *s2, *x2, *x2_mean, *x2_std;
} sas_block_acts;

typedef struct {
    int max_rows, max_seqs, d, F, V, heads, blocks, max_len;
    int32_t *pos;             /* [N] */
    uint8_t *valid;           /* [N] token > 0 */
    size_t *poff;             /* [S + 1] offsets of each sequence's probabilities */
    float *x0, *edrop;        /* [N, d] */
    sas_block_acts *blk;
    /* backward */
    float *dx, *dx1, *ds, *dln0, *dq, *dk, *dv, *dh;
    float *att_scratch;       /* attention_masked_scratch_floats(N): sequence s's from row start[s] */
    int *scored;              /* [N] rows that carry a loss */
    float *xs, *dxs, *row_loss; /* [N, d] the scored rows of x2 (or scores_last's last rows), their gradient; [N] */
    int32_t *lab;             /* [N] */
    float *xent;              /* xent_table_scratch_floats(V, d) */
} sas_acts;

static const char *const block_names[B_COUNT] = {
    "layer_norm.weight", "layer_norm.bias",
    "attention.linear_layers.0.weight", "attention.linear_layers.0.bias",
    "attention.linear_layers.1.weight", "attention.linear_layers.1.bias",
    "attention.linear_layers.2.weight", "attention.linear_layers.2.bias",
    "attention.layer_norm.weight", "attention.layer_norm.bias",
    "feed_forward.conv1.weight", "feed_forward.conv1.bias",
    "feed_forward.conv2.weight", "feed_forward.conv2.bias",
    "feed_forward.layer_norm.weight", "feed_forward.layer_norm.bias",
};

/* ------------------------------------------------------------------ layout */

static int sas_layout(rt_model *m, mr_error *e) {
    const rt_config *c = &m->cfg;
    if (c->n_items < 1 || c->hidden < 2 || c->blocks < 1 || c->heads < 1 || c->max_len < 1 ||
        c->hidden % c->heads)
        return mr_fail(e, MR_ERR_USAGE,
                       "sasrec: needs items, hidden >= 2 divisible by heads, blocks, max_len (got %d, %d, %d, %d, %d)",
                       c->n_items, c->hidden, c->heads, c->blocks, c->max_len);
    if (c->dropout < 0 || c->dropout >= 1 || c->attn_dropout < 0 || c->attn_dropout >= 1)
        return mr_fail(e, MR_ERR_USAGE, "sasrec: dropout must be in [0, 1)");
    const int64_t d = c->hidden, F = 4 * d;
    int rc = rt_model_add_tensor(m, "embedding.token.weight", 2, (int64_t[]){c->n_items + 1, d}, 1, e);
    if (!rc)
        rc = rt_model_add_tensor(m, "embedding.position.pe.weight", 2, (int64_t[]){c->max_len + 1, d}, 1, e);
    for (int b = 0; b < c->blocks && !rc; b++) {
        for (int t = 0; t < B_COUNT && !rc; t++) {
            char name[96];
            snprintf(name, sizeof name, "model.transformer_blocks.%d.%s", b, block_names[t]);
            int64_t shape[3];
            int nd = 1;
            switch (t) {
            case B_WQ: case B_WK: case B_WV: shape[0] = d; shape[1] = d; nd = 2; break;
            case B_W1: shape[0] = F; shape[1] = d; shape[2] = 1; nd = 3; break;
            case B_B1: shape[0] = F; break;
            case B_W2: shape[0] = d; shape[1] = F; shape[2] = 1; nd = 3; break;
            default: shape[0] = d; break;
            }
            rc = rt_model_add_tensor(m, name, nd, shape, rt_decays(name), e);
        }
    }
    return rc;
}

/* m->impl: attn_views (the two tables, B_COUNT tensors per block). */
static int sas_bind(rt_model *m, mr_error *e) { return attn_views_bind(m, T_HEAD, B_COUNT, 0, e); }

/* Truncated normal (std 0.02, +-0.04) for every parameter except the layer norms
 * (ones and zeros), the embeddings included, as LlamaRec's LRURec and the reference's
 * NARM start; the token table's padding row 0 is zeroed. The reference SASRec leaves
 * its embeddings at nn.Embedding's N(0, 1), which it trains with BCE on one negative;
 * under LlamaRec's cross-entropy over all items the tied decoder then scores with a
 * spread of sqrt(hidden) = 8 (a first loss of 27-44 against ln V = 8-9.4), and on
 * Amazon Beauty the training loss was still 12.4 after 216 iterations where this start
 * is at 9.2 after 40 (docs/retriever.md "Which retriever"). */
static void sas_init(rt_model *m, uint64_t seed) { attn_init_tables(m, seed, 0); }

/* ------------------------------------------------------------------ scratch */

static void sas_acts_free(void *acts) {
    sas_acts *a = acts;
    if (!a)
        return;
    free(a->pos); free(a->valid); free(a->poff); free(a->x0); free(a->edrop);
    if (a->blk)
        for (int b = 0; b < a->blocks; b++) {
            sas_block_acts *k = &a->blk[b];
            free(k->ln0); free(k->ln0_mean); free(k->ln0_std); free(k->q); free(k->k); free(k->v);
            free(k->probs); free(k->pdrop); free(k->att); free(k->s1); free(k->x1); free(k->x1_mean);
            free(k->x1_std); free(k->hpre); free(k->h); free(k->hdrop); free(k->f); free(k->fdrop);
            free(k->s2); free(k->x2); free(k->x2_mean); free(k->x2_std);
        }
    free(a->blk);
    free(a->dx); free(a->dx1); free(a->ds); free(a->dln0); free(a->dq); free(a->dk); free(a->dv); free(a->dh);
    free(a->att_scratch); free(a->scored); free(a->xs); free(a->dxs); free(a->row_loss); free(a->lab); free(a->xent);
    free(a);
}

static int sas_acts_create(void **out, const rt_model *m, int max_rows, int max_seqs, mr_error *e) {
    *out = NULL;
    if (max_rows < 1 || max_seqs < 1)
        return mr_fail(e, MR_ERR_INTERNAL, "sasrec: scratch for %d rows in %d sequences", max_rows, max_seqs);
    sas_acts *a = calloc(1, sizeof *a);
    if (!a)
        return mr_fail(e, MR_ERR_INTERNAL, "sasrec: out of memory");
    const rt_config *c = &m->cfg;
    a->max_rows = max_rows;
    a->max_seqs = max_seqs;
    a->d = c->hidden;
    a->F = 4 * c->hidden;
    a->V = c->n_items + 1;
    a->heads = c->heads;
    a->blocks = c->blocks;
    a->max_len = c->max_len;
    const size_t N = (size_t)max_rows, d = (size_t)a->d, F = (size_t)a->F;
    const int rmax = max_rows < c->max_len ? max_rows : c->max_len;
    /* Σ r² over sequences of at most rmax rows with Σ r <= N is at most N * rmax */
    const size_t P = (size_t)a->heads * N * (size_t)rmax;
    int ok = 1;
#define A(ptr, n) ok &= ((ptr) = calloc((n), sizeof *(ptr))) != NULL
    A(a->pos, N); A(a->valid, N); A(a->poff, (size_t)max_seqs + 1); A(a->x0, N * d); A(a->edrop, N * d);
    A(a->blk, (size_t)a->blocks);
    for (int b = 0; ok && b < a->blocks; b++) {
        sas_block_acts *k = &a->blk[b];
        A(k->ln0, N * d); A(k->ln0_mean, N); A(k->ln0_std, N); A(k->q, N * d); A(k->k, N * d); A(k->v, N * d);
        A(k->probs, P); A(k->pdrop, P); A(k->att, N * d); A(k->s1, N * d); A(k->x1, N * d); A(k->x1_mean, N);
        A(k->x1_std, N); A(k->hpre, N * F); A(k->h, N * F); A(k->hdrop, N * F); A(k->f, N * d);
        A(k->fdrop, N * d); A(k->s2, N * d); A(k->x2, N * d); A(k->x2_mean, N); A(k->x2_std, N);
    }
    A(a->dx, N * d); A(a->dx1, N * d); A(a->ds, N * d); A(a->dln0, N * d); A(a->dq, N * d); A(a->dk, N * d);
    A(a->dv, N * d); A(a->dh, N * F); A(a->att_scratch, attention_masked_scratch_floats(max_rows)); A(a->scored, N);
    A(a->xs, N * d); A(a->dxs, N * d); A(a->row_loss, N); A(a->lab, N);
    A(a->xent, xent_table_scratch_floats(a->V, a->d));
#undef A
    if (!ok) {
        sas_acts_free(a);
        return mr_fail(e, MR_ERR_INTERNAL, "sasrec: out of memory for %d rows", max_rows);
    }
    *out = a;
    return MR_OK;
}

/* ------------------------------------------------------------------ forward */

/* The feed-forward sublayer's tensors (or gradients) and activations. */
static attn_ffn_params sas_ffn(float *const *w) {
    return (attn_ffn_params){w[B_W1], w[B_B1], w[B_W2], w[B_B2], w[B_LNF_W], w[B_LNF_B]};
}
static attn_ffn_acts sas_ffn_acts(const sas_block_acts *k) {
    return (attn_ffn_acts){.pre = k->hpre, .h = k->h, .s = k->s2, .out = k->x2, .mean = k->x2_mean, .std = k->x2_std,
                           .f = k->f};
}

/* Random sites, each keyed with (key, example, padded position). */
enum { SITE_EMB = 1, SITE_ATTN = 2, SITE_FF1 = 3, SITE_FF2 = 4 };
#define SITE(block, what) ((uint64_t)(block) * 16 + (what))

static void sas_forward(const rt_model *m, sas_acts *a, const rt_batch *b, int train, uint64_t key) {
    const attn_views *p = m->impl;
    const int N = b->n_rows, d = a->d, F = a->F, H = a->heads, hd = d / H;
    const float pd = train ? m->cfg.dropout : 0.0f, pa = train ? m->cfg.attn_dropout : 0.0f;
    attn_positions(a->pos, a->valid, a->poff, b->seq_start, b->tokens, b->n_seqs, a->max_len, H, 1);
    attn_embedding_forward(a->x0, p->h[T_TOK], p->h[T_POS], b->tokens, a->pos, N, d);
    if (pd > 0) {
        attn_dropout_rows(a->edrop, d, pd, key, SITE(0, SITE_EMB), b->seq_start, b->n_seqs, b->example, a->max_len);
        for (size_t i = 0; i < (size_t)N * d; i++) a->x0[i] *= a->edrop[i];
    }
    const float *x = a->x0;
    for (int l = 0; l < a->blocks; l++) {
        sas_block_acts *k = &a->blk[l];
        float *const *w = attn_block(p, l);
        layernorm_std_forward(k->ln0, k->ln0_mean, k->ln0_std, x, w[B_LN0_W], w[B_LN0_B], N, d, SAS_LN_EPS);
        linear_forward(k->q, k->ln0, w[B_WQ], w[B_BQ], N, d, d);
        linear_forward(k->k, x, w[B_WK], w[B_BK], N, d, d);
        linear_forward(k->v, x, w[B_WV], w[B_BV], N, d, d);
#pragma omp parallel for schedule(dynamic, 1)
        for (int s = 0; s < b->n_seqs; s++) {
            const int r0 = b->seq_start[s], r = b->seq_start[s + 1] - r0;
            float *drop = pa > 0 ? k->pdrop + a->poff[s] : NULL;
            if (drop)
                attn_probs_dropout(drop, r, H, pa, key, SITE(l, SITE_ATTN), attn_example(b, s), a->max_len - r, 1);
            const size_t o = (size_t)r0 * d;
            attention_masked_forward(k->att + o, k->probs + a->poff[s], k->q + o, k->k + o, k->v + o, d,
                                     a->valid + r0, drop, r, H, hd, 1,
                                     a->att_scratch + attention_masked_scratch_floats(r0));
        }
        for (size_t i = 0; i < (size_t)N * d; i++) k->s1[i] = k->att[i] + k->ln0[i];
        layernorm_std_forward(k->x1, k->x1_mean, k->x1_std, k->s1, w[B_LNA_W], w[B_LNA_B], N, d, SAS_LN_EPS);
        if (pd > 0) {
            attn_dropout_rows(k->hdrop, F, pd, key, SITE(l, SITE_FF1), b->seq_start, b->n_seqs, b->example, a->max_len);
            attn_dropout_rows(k->fdrop, d, pd, key, SITE(l, SITE_FF2), b->seq_start, b->n_seqs, b->example, a->max_len);
        }
        const attn_ffn_params fw = sas_ffn(w);
        const attn_ffn_acts fa = sas_ffn_acts(k);
        attn_ffn_forward(&fa, k->x1, &fw, pd > 0 ? k->hdrop : NULL, pd > 0 ? k->fdrop : NULL, ATTN_FFN_RELU, N, d, F,
                         SAS_LN_EPS);
        x = k->x2;
    }
}

static const float *sas_output(const sas_acts *a) { return a->blk[a->blocks - 1].x2; }

/* ------------------------------------------------------------------ backward */

/* dx [N, d] holds d(loss)/d(output of the last block); gradients accumulate into m->grads. */
static void sas_backward(rt_model *m, sas_acts *a, const rt_batch *b, int train) {
    const attn_views *p = m->impl;
    const int N = b->n_rows, d = a->d, F = a->F, H = a->heads, hd = d / H;
    const int drop_h = train && m->cfg.dropout > 0, drop_a = train && m->cfg.attn_dropout > 0;
    const size_t Nd = (size_t)N * d;
    for (int l = a->blocks - 1; l >= 0; l--) {
        sas_block_acts *k = &a->blk[l];
        float *const *w = attn_block(p, l);
        float *const *dw = attn_block_grad(p, l);
        const float *xin = l ? a->blk[l - 1].x2 : a->x0;
        /* x2 = LNf(s2), s2 = f + x1 */
        const attn_ffn_params fw = sas_ffn(w), fdw = sas_ffn(dw);
        const attn_ffn_acts fa = sas_ffn_acts(k);
        attn_ffn_backward(a->dx1, &fdw, a->dx, &fa, k->x1, &fw, drop_h ? k->hdrop : NULL, drop_h ? k->fdrop : NULL,
                          ATTN_FFN_RELU, N, d, F, SAS_LN_EPS, a->ds, a->dh);
        /* x1 = LNa(s1), s1 = att + ln0 */
        memset(a->ds, 0, Nd * sizeof(float));
        layernorm_std_backward(a->ds, dw[B_LNA_W], dw[B_LNA_B], a->dx1, k->s1, k->x1_mean, k->x1_std, w[B_LNA_W],
                               N, d, SAS_LN_EPS);
        memcpy(a->dln0, a->ds, Nd * sizeof(float));
#pragma omp parallel for schedule(dynamic, 1)
        for (int s = 0; s < b->n_seqs; s++) {
            const int r0 = b->seq_start[s], r = b->seq_start[s + 1] - r0;
            const size_t o = (size_t)r0 * d;
            attention_masked_backward(a->dq + o, a->dk + o, a->dv + o, a->ds + o, k->probs + a->poff[s], k->q + o,
                                      k->k + o, k->v + o, d, drop_a ? k->pdrop + a->poff[s] : NULL, r, H, hd, 1,
                                      a->att_scratch + attention_masked_scratch_floats(r0));
        }
        linear_backward(a->dln0, dw[B_WQ], dw[B_BQ], a->dq, k->ln0, w[B_WQ], N, d, d);
        /* the block input: through k, v and LN0 */
        memset(a->dx, 0, Nd * sizeof(float));
        linear_backward(a->dx, dw[B_WK], dw[B_BK], a->dk, xin, w[B_WK], N, d, d);
        linear_backward(a->dx, dw[B_WV], dw[B_BV], a->dv, xin, w[B_WV], N, d, d);
        layernorm_std_backward(a->dx, dw[B_LN0_W], dw[B_LN0_B], a->dln0, xin, k->ln0_mean, k->ln0_std, w[B_LN0_W],
                               N, d, SAS_LN_EPS);
    }
    /* embedding: the token table's padding row takes no gradient from the lookup (padding_idx = 0) */
    if (train && m->cfg.dropout > 0)
        for (size_t i = 0; i < Nd; i++) a->dx[i] *= a->edrop[i];
    attn_embedding_backward(p->dh[T_TOK], p->dh[T_POS], a->dx, b->tokens, a->pos, N, d);
}

/* ------------------------------------------------------------------ the contract */

static double sas_loss_backward(rt_model *m, void *acts, const rt_batch *b, int train, uint64_t key) {
    sas_acts *a = acts;
    const attn_views *p = m->impl;
    const int N = b->n_rows, d = a->d, V = a->V;
    memset(m->grads, 0, m->n_params * sizeof(float));
    if (!attn_batch_fits(b, a->max_len, a->max_rows, a->max_seqs))
        return NAN;
    sas_forward(m, a, b, train, key);
    int M = 0;
    for (int i = 0; i < N; i++)
        if (b->labels[i] > 0 && b->tokens[i] > 0)
            a->scored[M++] = i;
    memset(a->dx, 0, (size_t)N * d * sizeof(float));
    if (M == 0)
        return 0.0;
    const float *x = sas_output(a);
    for (int i = 0; i < M; i++) {
        const int row = a->scored[i];
        memcpy(a->xs + (size_t)i * d, x + (size_t)row * d, (size_t)d * sizeof(float));
        a->lab[i] = b->labels[row];
    }
    /* scores x Eᵀ over all items; dxs = dlogits E, dE += dlogitsᵀ xs */
    const double sum = xent_table(a->dxs, p->dh[T_TOK], NULL, a->row_loss, a->xs, a->lab, M, p->h[T_TOK], NULL, V, d,
                                  1.0f / (float)M, a->xent);
    for (int i = 0; i < M; i++) /* one scored row per row: no two writers */
        memcpy(a->dx + (size_t)a->scored[i] * d, a->dxs + (size_t)i * d, (size_t)d * sizeof(float));
    sas_backward(m, a, b, train);
    return sum / M;
}

static void sas_scores_last(const rt_model *m, void *acts, const rt_batch *b, float *scores) {
    sas_acts *a = acts;
    const attn_views *p = m->impl;
    if (!attn_batch_fits(b, a->max_len, a->max_rows, a->max_seqs)) {
        for (size_t i = 0; i < (size_t)b->n_seqs * a->V; i++) scores[i] = NAN;
        return;
    }
    sas_forward(m, a, b, 0, 0);
    const float *x = sas_output(a);
    const int d = a->d;
    for (int s0 = 0; s0 < b->n_seqs; s0 += SAS_LOGIT_ROWS) {
        const int n = b->n_seqs - s0 < SAS_LOGIT_ROWS ? b->n_seqs - s0 : SAS_LOGIT_ROWS;
        for (int i = 0; i < n; i++)
            memcpy(a->xs + (size_t)i * d, x + (size_t)(b->seq_start[s0 + i + 1] - 1) * d, (size_t)d * sizeof(float));
        linear_forward(scores + (size_t)s0 * a->V, a->xs, p->h[T_TOK], NULL, n, d, a->V);
    }
}

const rt_arch rt_arch_sasrec = {
    .name = "sasrec",
    .layout = sas_layout,
    .bind = sas_bind,
    .unbind = attn_views_unbind,
    .init = sas_init,
    .acts_create = sas_acts_create,
    .acts_free = sas_acts_free,
    .loss_backward = sas_loss_backward,
    .scores_last = sas_scores_last,
};
