/* BERT4Rec (Sun et al. 2019) as the LlamaRec lineage writes it
 * (Yueeeeeeee/RecSys-Extraction-Attack, model/bert.py, model/attention.py and
 * the cloze masking of dataloader/bert.py):
 *
 *   x0 = dropout(LNe(E[tok] + P[pos]))     pos = 1.. over the non-padding rows, 0 on padding
 *   per block (post-norm sublayers):
 *     x1 = LNin(x + dropout(Wo attention(x Wq, x Wk, x Wv)))   bidirectional, padding keys
 *                                                            masked, dropout on the probabilities
 *     x2 = LNout(x1 + dropout(W2 gelu(W1 x1)))
 *   scores = gelu(x Wl) Eᵀ + bias          (tied item embedding, n_items + 2 columns)
 *
 * gelu is the tanh form (the reference's own GELU class), LN the reference's own
 * layer norm (nn/layernorm_std.h). The token table has n_items + 2 rows: item
 * n_items + 1 is the mask token.
 *
 * Training (train != 0): the items of a window are its rows' labels (the packed
 * batch carries LRURec's shifted tokens; the cloze input is the sequence itself).
 * Each row is masked as the reference's BERTTrainDataset does: with probability
 * mask_prob (the window's last row: mask_prob + 0.1 (1 - mask_prob), the
 * reference's nudge towards predicting the next item), unless the item is
 * already masked in this window or max_predictions rows already are; a masked
 * row's input becomes the mask token (80%), a random item (10%) or stays (10%),
 * and its label is the item; other rows carry no label. Every draw is keyed by
 * (key, example, padded position). Cross-entropy over all n_items + 2 columns at
 * the labelled rows, mean over them. train == 0 takes the batch literally
 * (tokens as the input, labels as the cloze targets): no sampling.
 *
 * scores_last appends the mask token after the history (dropping the oldest
 * rows when the window is full) and scores items 0..n_items there. A training
 * batch larger than the scratch or with a sequence longer than max_len gets a
 * NaN loss (a batch over the scratch NaN scores). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/attention_masked.h"
#include "nn/gelu.h"
#include "nn/layernorm_std.h"
#include "nn/linear.h"
#include "nn/xent.h"
#include "retriever/arch.h"
#include "retriever/attn_common.h"

#define BERT_LN_EPS 1e-6f
#define BERT_LOGIT_ROWS 128

/* Tensors before the blocks, in state_dict order (model.bias is the BERTModel's
 * own parameter, listed before its submodules). */
enum { T_TOK, T_POS, T_LNE_W, T_LNE_B, T_BIAS, T_HEAD };
/* The tensors of one block. */
enum {
    B_WQ, B_BQ, B_WK, B_BK, B_WV, B_BV, B_WO, B_BO,
    B_W1, B_B1, B_W2, B_B2, B_LNI_W, B_LNI_B, B_LNO_W, B_LNO_B, B_COUNT
};
/* After the blocks. */
enum { T_LIN_W, T_LIN_B, T_TAIL };

typedef struct {
    float *q, *k, *v, *probs, *pdrop, *att, *o, *odrop, *s1, *x1, *x1_mean, *x1_std;
    float *f1, *g, *f2, *fdrop, *s2, *x2, *x2_mean, *x2_std;
} bert_block_acts;

typedef struct {
    int rows, max_seqs, d, F, V, heads, blocks, max_len;
    /* the batch as the model sees it (masked, or with the mask token appended) */
    int *start;               /* [S + 1] */
    int32_t *tok, *tgt;       /* [rows] */
    int32_t *pos;
    uint8_t *valid;
    size_t *poff;
    float *e, *e_mean, *e_std, *x0, *edrop;
    bert_block_acts *blk;
    float *dx, *dx1, *ds, *dq, *dk, *dv, *datt, *df, *att_scratch;
    int *scored;
    float *xs, *hp, *hy, *dxs, *dhy; /* [rows, d]: the scored rows, the head's pre-activation and output, gradients */
    float *logits;            /* [BERT_LOGIT_ROWS, V] scores_last's slice */
    float *row_loss, *xent;   /* [rows]; xent_table_scratch_floats(V, d) */
    int32_t *lab;             /* [rows] */
} bert_acts;

static const char *const head_names[T_HEAD] = {
    "embedding.token.weight", "embedding.position.pe.weight", "embedding.layer_norm.weight",
    "embedding.layer_norm.bias", "model.bias",
};
static const char *const block_names[B_COUNT] = {
    "attention.linear_layers.0.weight", "attention.linear_layers.0.bias",
    "attention.linear_layers.1.weight", "attention.linear_layers.1.bias",
    "attention.linear_layers.2.weight", "attention.linear_layers.2.bias",
    "attention.output_linear.weight", "attention.output_linear.bias",
    "feed_forward.w_1.weight", "feed_forward.w_1.bias",
    "feed_forward.w_2.weight", "feed_forward.w_2.bias",
    "input_sublayer.layer_norm.weight", "input_sublayer.layer_norm.bias",
    "output_sublayer.layer_norm.weight", "output_sublayer.layer_norm.bias",
};
static const char *const tail_names[T_TAIL] = {"model.linear.weight", "model.linear.bias"};

/* ------------------------------------------------------------------ layout */

static int bert_layout(rt_model *m, mr_error *e) {
    const rt_config *c = &m->cfg;
    if (c->n_items < 1 || c->hidden < 2 || c->blocks < 1 || c->heads < 1 || c->max_len < 2 ||
        c->hidden % c->heads)
        return mr_fail(e, MR_ERR_USAGE,
                       "bert4rec: needs items, hidden >= 2 divisible by heads, blocks, max_len >= 2 "
                       "(got %d, %d, %d, %d, %d)",
                       c->n_items, c->hidden, c->heads, c->blocks, c->max_len);
    if (c->dropout < 0 || c->dropout >= 1 || c->attn_dropout < 0 || c->attn_dropout >= 1 || c->mask_prob <= 0 ||
        c->mask_prob > 1 || c->max_predictions < 0)
        return mr_fail(e, MR_ERR_USAGE, "bert4rec: dropout must be in [0, 1), mask_prob in (0, 1]");
    const int64_t d = c->hidden, F = 4 * d;
    const int64_t head_shapes[T_HEAD][2] = {{c->n_items + 2, d}, {c->max_len + 1, d}, {d, 0}, {d, 0},
                                            {c->n_items + 2, 0}};
    int rc = MR_OK;
    for (int t = 0; t < T_HEAD && !rc; t++)
        rc = rt_model_add_tensor(m, head_names[t], head_shapes[t][1] ? 2 : 1, head_shapes[t], rt_decays(head_names[t]),
                                 e);
    for (int b = 0; b < c->blocks && !rc; b++)
        for (int t = 0; t < B_COUNT && !rc; t++) {
            char name[96];
            snprintf(name, sizeof name, "model.transformer_blocks.%d.%s", b, block_names[t]);
            int64_t shape[2] = {d, d};
            int nd = 1;
            switch (t) {
            case B_WQ: case B_WK: case B_WV: case B_WO: nd = 2; break;
            case B_W1: shape[0] = F; nd = 2; break;
            case B_B1: shape[0] = F; break;
            case B_W2: shape[1] = F; nd = 2; break;
            default: break;
            }
            rc = rt_model_add_tensor(m, name, nd, shape, rt_decays(name), e);
        }
    if (!rc)
        rc = rt_model_add_tensor(m, tail_names[T_LIN_W], 2, (int64_t[]){d, d}, 1, e);
    if (!rc)
        rc = rt_model_add_tensor(m, tail_names[T_LIN_B], 1, (int64_t[]){d}, 0, e);
    return rc;
}

/* m->impl: attn_views (T_HEAD, B_COUNT per block, T_TAIL); the reference's
 * initialisation is attn_init_bert's (model.bias included in the truncated
 * normal, the embedding's layer norm ones and zeros). */
static int bert_bind(rt_model *m, mr_error *e) { return attn_views_bind(m, T_HEAD, B_COUNT, T_TAIL, e); }

/* ------------------------------------------------------------------ scratch */

static void bert_acts_free(void *acts) {
    bert_acts *a = acts;
    if (!a)
        return;
    free(a->start); free(a->tok); free(a->tgt); free(a->pos); free(a->valid); free(a->poff);
    free(a->e); free(a->e_mean); free(a->e_std); free(a->x0); free(a->edrop);
    if (a->blk)
        for (int b = 0; b < a->blocks; b++) {
            bert_block_acts *k = &a->blk[b];
            free(k->q); free(k->k); free(k->v); free(k->probs); free(k->pdrop); free(k->att); free(k->o);
            free(k->odrop); free(k->s1); free(k->x1); free(k->x1_mean); free(k->x1_std); free(k->f1); free(k->g);
            free(k->f2); free(k->fdrop); free(k->s2); free(k->x2); free(k->x2_mean); free(k->x2_std);
        }
    free(a->blk);
    free(a->dx); free(a->dx1); free(a->ds); free(a->dq); free(a->dk); free(a->dv); free(a->datt); free(a->df);
    free(a->att_scratch); free(a->scored); free(a->xs); free(a->hp); free(a->hy); free(a->dxs); free(a->dhy);
    free(a->logits); free(a->row_loss); free(a->lab); free(a->xent);
    free(a);
}

static int bert_acts_create(void **out, const rt_model *m, int max_rows, int max_seqs, mr_error *e) {
    *out = NULL;
    if (max_rows < 1 || max_seqs < 1)
        return mr_fail(e, MR_ERR_INTERNAL, "bert4rec: scratch for %d rows in %d sequences", max_rows, max_seqs);
    bert_acts *a = calloc(1, sizeof *a);
    if (!a)
        return mr_fail(e, MR_ERR_INTERNAL, "bert4rec: out of memory");
    const rt_config *c = &m->cfg;
    a->rows = max_rows + max_seqs; /* scores_last appends a mask row to each sequence */
    a->max_seqs = max_seqs;
    a->d = c->hidden;
    a->F = 4 * c->hidden;
    a->V = c->n_items + 2;
    a->heads = c->heads;
    a->blocks = c->blocks;
    a->max_len = c->max_len;
    const size_t N = (size_t)a->rows, d = (size_t)a->d, F = (size_t)a->F, CH = BERT_LOGIT_ROWS;
    const size_t rmax = N < (size_t)c->max_len ? N : (size_t)c->max_len;
    const size_t P = (size_t)a->heads * N * rmax;
    int ok = 1;
#define A(ptr, n) ok &= ((ptr) = calloc((n), sizeof *(ptr))) != NULL
    A(a->start, (size_t)max_seqs + 1); A(a->tok, N); A(a->tgt, N); A(a->pos, N); A(a->valid, N);
    A(a->poff, (size_t)max_seqs + 1);
    A(a->e, N * d); A(a->e_mean, N); A(a->e_std, N); A(a->x0, N * d); A(a->edrop, N * d);
    A(a->blk, (size_t)a->blocks);
    for (int b = 0; ok && b < a->blocks; b++) {
        bert_block_acts *k = &a->blk[b];
        A(k->q, N * d); A(k->k, N * d); A(k->v, N * d); A(k->probs, P); A(k->pdrop, P); A(k->att, N * d);
        A(k->o, N * d); A(k->odrop, N * d); A(k->s1, N * d); A(k->x1, N * d); A(k->x1_mean, N); A(k->x1_std, N);
        A(k->f1, N * F); A(k->g, N * F); A(k->f2, N * d); A(k->fdrop, N * d); A(k->s2, N * d); A(k->x2, N * d);
        A(k->x2_mean, N); A(k->x2_std, N);
    }
    A(a->dx, N * d); A(a->dx1, N * d); A(a->ds, N * d); A(a->dq, N * d); A(a->dk, N * d); A(a->dv, N * d);
    A(a->datt, N * d); A(a->df, N * F); A(a->att_scratch, attention_masked_scratch_floats((int)N)); A(a->scored, N);
    A(a->xs, N * d); A(a->hp, N * d); A(a->hy, N * d); A(a->dxs, N * d); A(a->dhy, N * d);
    A(a->logits, CH * (size_t)a->V); A(a->row_loss, N); A(a->lab, N); A(a->xent, xent_table_scratch_floats(a->V, a->d));
#undef A
    if (!ok) {
        bert_acts_free(a);
        return mr_fail(e, MR_ERR_INTERNAL, "bert4rec: out of memory for %d rows", max_rows);
    }
    *out = a;
    return MR_OK;
}

/* ------------------------------------------------------------------ the batch the model sees */

enum { SITE_MASK = 1, SITE_EMB = 2, SITE_ATTN = 3, SITE_ATT_OUT = 4, SITE_FF = 5 };
#define SITE(block, what) ((uint64_t)(block) * 16 + (what))

/* The cloze masking of one window (items = the rows' labels); attn_common.h. */
void bert4rec_mask_window(const rt_config *c, int32_t *tok, int32_t *tgt, const int32_t *items, int r, int p0,
                        int64_t example, uint64_t key, int32_t *covered) {
    int n_cov = 0;
    const int limit = c->max_predictions > 0 ? c->max_predictions : r;
    for (int j = 0; j < r; j++) {
        const int32_t s = items[j];
        tok[j] = s;
        tgt[j] = 0;
        if (s <= 0)
            continue;
        int seen = 0;
        for (int q = 0; q < n_cov && !seen; q++) seen = covered[q] == s;
        if (n_cov >= limit || seen)
            continue;
        double pm = c->mask_prob;
        if (j == r - 1)
            pm += 0.1 * (1.0 - c->mask_prob);
        const uint64_t rk = attn_row_key(key, SITE(0, SITE_MASK), example, p0 + j);
        double u = attn_uniform(rk, 0);
        if (u >= pm)
            continue;
        covered[n_cov++] = s;
        u /= pm;
        if (u < 0.8)
            tok[j] = c->n_items + 1;
        else if (u < 0.9)
            tok[j] = 1 + (int32_t)(attn_uniform(rk, 1) * c->n_items);
        tgt[j] = s;
    }
}

/* ------------------------------------------------------------------ forward */

/* The feed-forward sublayer's tensors (or gradients) and activations. */
static attn_ffn_params bert_ffn(float *const *w) {
    return (attn_ffn_params){w[B_W1], w[B_B1], w[B_W2], w[B_B2], w[B_LNO_W], w[B_LNO_B]};
}
static attn_ffn_acts bert_ffn_acts(const bert_block_acts *k) {
    return (attn_ffn_acts){.pre = k->f1, .h = k->g, .s = k->s2, .out = k->x2, .mean = k->x2_mean, .std = k->x2_std,
                           .f = k->f2};
}

static void bert_forward(const rt_model *m, bert_acts *a, int n_seqs, const int64_t *example, int train,
                         uint64_t key) {
    const attn_views *p = m->impl;
    const int N = a->start[n_seqs], d = a->d, F = a->F, H = a->heads, hd = d / H;
    const float pd = train ? m->cfg.dropout : 0.0f, pa = train ? m->cfg.attn_dropout : 0.0f;
    attn_positions(a->pos, a->valid, a->poff, a->start, a->tok, n_seqs, a->max_len, H, 1);
    attn_embedding_forward(a->e, p->h[T_TOK], p->h[T_POS], a->tok, a->pos, N, d);
    layernorm_std_forward(a->x0, a->e_mean, a->e_std, a->e, p->h[T_LNE_W], p->h[T_LNE_B], N, d, BERT_LN_EPS);
    /* dropout rows: embedding, attention output and feed-forward output of every block */
    if (pd > 0) {
        attn_dropout_rows(a->edrop, d, pd, key, SITE(0, SITE_EMB), a->start, n_seqs, example, a->max_len);
        for (int l = 0; l < a->blocks; l++) {
            attn_dropout_rows(a->blk[l].odrop, d, pd, key, SITE(l, SITE_ATT_OUT), a->start, n_seqs, example, a->max_len);
            attn_dropout_rows(a->blk[l].fdrop, d, pd, key, SITE(l, SITE_FF), a->start, n_seqs, example, a->max_len);
        }
        for (size_t i = 0; i < (size_t)N * d; i++) a->x0[i] *= a->edrop[i];
    }
    const float *x = a->x0;
    for (int l = 0; l < a->blocks; l++) {
        bert_block_acts *k = &a->blk[l];
        float *const *w = attn_block(p, l);
        linear_forward(k->q, x, w[B_WQ], w[B_BQ], N, d, d);
        linear_forward(k->k, x, w[B_WK], w[B_BK], N, d, d);
        linear_forward(k->v, x, w[B_WV], w[B_BV], N, d, d);
#pragma omp parallel for schedule(dynamic, 1)
        for (int s = 0; s < n_seqs; s++) {
            const int r0 = a->start[s], r = a->start[s + 1] - r0;
            float *drop = pa > 0 ? k->pdrop + a->poff[s] : NULL;
            if (drop)
                attn_probs_dropout(drop, r, H, pa, key, SITE(l, SITE_ATTN), example ? example[s] : s, a->max_len - r, 0);
            const size_t o = (size_t)r0 * d;
            attention_masked_forward(k->att + o, k->probs + a->poff[s], k->q + o, k->k + o, k->v + o, d,
                                     a->valid + r0, drop, r, H, hd, 0,
                                     a->att_scratch + attention_masked_scratch_floats(r0));
        }
        linear_forward(k->o, k->att, w[B_WO], w[B_BO], N, d, d);
        for (size_t i = 0; i < (size_t)N * d; i++) k->s1[i] = x[i] + (pd > 0 ? k->o[i] * k->odrop[i] : k->o[i]);
        layernorm_std_forward(k->x1, k->x1_mean, k->x1_std, k->s1, w[B_LNI_W], w[B_LNI_B], N, d, BERT_LN_EPS);
        const attn_ffn_params fw = bert_ffn(w);
        const attn_ffn_acts fa = bert_ffn_acts(k);
        attn_ffn_forward(&fa, k->x1, &fw, NULL, pd > 0 ? k->fdrop : NULL, ATTN_FFN_GELU_TANH, N, d, F, BERT_LN_EPS);
        x = k->x2;
    }
}

static const float *bert_output(const bert_acts *a) { return a->blk[a->blocks - 1].x2; }

/* The head on n gathered rows xs: hy = gelu(xs Wlᵀ + bl), logits = hy Eᵀ + bias. */
static void head_forward(const attn_views *p, bert_acts *a, int n) {
    linear_forward(a->hp, a->xs, p->t[T_LIN_W], p->t[T_LIN_B], n, a->d, a->d);
    gelu_tanh_forward(a->hy, a->hp, (size_t)n * a->d);
    linear_forward(a->logits, a->hy, p->h[T_TOK], p->h[T_BIAS], n, a->d, a->V);
}

/* ------------------------------------------------------------------ backward */

static void bert_backward(rt_model *m, bert_acts *a, int n_seqs, int train) {
    const attn_views *p = m->impl;
    const int N = a->start[n_seqs], d = a->d, F = a->F, H = a->heads, hd = d / H;
    const int drop = train && m->cfg.dropout > 0, drop_a = train && m->cfg.attn_dropout > 0;
    const size_t Nd = (size_t)N * d;
    for (int l = a->blocks - 1; l >= 0; l--) {
        bert_block_acts *k = &a->blk[l];
        float *const *w = attn_block(p, l);
        float *const *dw = attn_block_grad(p, l);
        const float *xin = l ? a->blk[l - 1].x2 : a->x0;
        /* x2 = LNo(s2), s2 = x1 + drop(W2 gelu(W1 x1)) */
        const attn_ffn_params fw = bert_ffn(w), fdw = bert_ffn(dw);
        const attn_ffn_acts fa = bert_ffn_acts(k);
        attn_ffn_backward(a->dx1, &fdw, a->dx, &fa, k->x1, &fw, NULL, drop ? k->fdrop : NULL, ATTN_FFN_GELU_TANH, N, d,
                          F, BERT_LN_EPS, a->ds, a->df);
        /* x1 = LNi(s1), s1 = x + drop(Wo att) */
        memset(a->ds, 0, Nd * sizeof(float));
        layernorm_std_backward(a->ds, dw[B_LNI_W], dw[B_LNI_B], a->dx1, k->s1, k->x1_mean, k->x1_std, w[B_LNI_W],
                               N, d, BERT_LN_EPS);
        memcpy(a->dx, a->ds, Nd * sizeof(float)); /* the residual */
        if (drop)
            for (size_t i = 0; i < Nd; i++) a->ds[i] *= k->odrop[i];
        memset(a->datt, 0, Nd * sizeof(float));
        linear_backward(a->datt, dw[B_WO], dw[B_BO], a->ds, k->att, w[B_WO], N, d, d);
#pragma omp parallel for schedule(dynamic, 1)
        for (int s = 0; s < n_seqs; s++) {
            const int r0 = a->start[s], r = a->start[s + 1] - r0;
            const size_t o = (size_t)r0 * d;
            attention_masked_backward(a->dq + o, a->dk + o, a->dv + o, a->datt + o, k->probs + a->poff[s], k->q + o,
                                      k->k + o, k->v + o, d, drop_a ? k->pdrop + a->poff[s] : NULL, r, H, hd, 0,
                                      a->att_scratch + attention_masked_scratch_floats(r0));
        }
        linear_backward(a->dx, dw[B_WQ], dw[B_BQ], a->dq, xin, w[B_WQ], N, d, d);
        linear_backward(a->dx, dw[B_WK], dw[B_BK], a->dk, xin, w[B_WK], N, d, d);
        linear_backward(a->dx, dw[B_WV], dw[B_BV], a->dv, xin, w[B_WV], N, d, d);
    }
    /* x0 = drop(LNe(e)); the token table's padding row takes no gradient from the lookup */
    if (drop)
        for (size_t i = 0; i < Nd; i++) a->dx[i] *= a->edrop[i];
    memset(a->ds, 0, Nd * sizeof(float));
    layernorm_std_backward(a->ds, p->dh[T_LNE_W], p->dh[T_LNE_B], a->dx, a->e, a->e_mean, a->e_std, p->h[T_LNE_W], N,
                           d, BERT_LN_EPS);
    attn_embedding_backward(p->dh[T_TOK], p->dh[T_POS], a->ds, a->tok, a->pos, N, d);
}

/* ------------------------------------------------------------------ the contract */

static double bert_loss_backward(rt_model *m, void *acts, const rt_batch *b, int train, uint64_t key) {
    bert_acts *a = acts;
    const attn_views *p = m->impl;
    const int N = b->n_rows, d = a->d, V = a->V;
    memset(m->grads, 0, m->n_params * sizeof(float));
    if (!attn_batch_fits(b, a->max_len, a->rows - a->max_seqs, a->max_seqs))
        return NAN;
    memcpy(a->start, b->seq_start, (size_t)(b->n_seqs + 1) * sizeof(int));
    if (train) {
        int32_t *covered = (int32_t *)a->scored; /* free until the loss */
#pragma omp parallel for schedule(static)
        for (int s = 0; s < b->n_seqs; s++) {
            const int r0 = b->seq_start[s], r = b->seq_start[s + 1] - r0;
            bert4rec_mask_window(&m->cfg, a->tok + r0, a->tgt + r0, b->labels + r0, r, a->max_len - r, attn_example(b, s), key,
                        covered + r0);
        }
    } else {
        memcpy(a->tok, b->tokens, (size_t)N * sizeof(int32_t));
        memcpy(a->tgt, b->labels, (size_t)N * sizeof(int32_t));
    }
    bert_forward(m, a, b->n_seqs, b->example, train, key);
    int M = 0;
    for (int i = 0; i < N; i++)
        if (a->tgt[i] > 0)
            a->scored[M++] = i;
    memset(a->dx, 0, (size_t)N * d * sizeof(float));
    if (M == 0)
        return 0.0;
    const float *x = bert_output(a);
    for (int i = 0; i < M; i++) {
        const int row = a->scored[i];
        memcpy(a->xs + (size_t)i * d, x + (size_t)row * d, (size_t)d * sizeof(float));
        a->lab[i] = a->tgt[row];
    }
    /* the head on the M rows, hy = gelu(xs Wlᵀ + bl); logits hy Eᵀ + bias over all items;
     * dhy = dlogits E, dE += dlogitsᵀ hy, dbias += Σ dlogits; then back through the head */
    const size_t Md = (size_t)M * d;
    linear_forward(a->hp, a->xs, p->t[T_LIN_W], p->t[T_LIN_B], M, d, d);
    gelu_tanh_forward(a->hy, a->hp, Md);
    const double sum = xent_table(a->dhy, p->dh[T_TOK], p->dh[T_BIAS], a->row_loss, a->hy, a->lab, M, p->h[T_TOK],
                                  p->h[T_BIAS], V, d, 1.0f / (float)M, a->xent);
    memset(a->dxs, 0, Md * sizeof(float));
    gelu_tanh_backward(a->dxs, a->dhy, a->hp, Md);
    memcpy(a->dhy, a->dxs, Md * sizeof(float));
    memset(a->dxs, 0, Md * sizeof(float));
    linear_backward(a->dxs, p->dt[T_LIN_W], p->dt[T_LIN_B], a->dhy, a->xs, p->t[T_LIN_W], M, d, d);
    for (int i = 0; i < M; i++) /* one scored row per row: no two writers */
        memcpy(a->dx + (size_t)a->scored[i] * d, a->dxs + (size_t)i * d, (size_t)d * sizeof(float));
    bert_backward(m, a, b->n_seqs, train);
    return sum / M;
}

static void bert_scores_last(const rt_model *m, void *acts, const rt_batch *b, float *scores) {
    bert_acts *a = acts;
    const attn_views *p = m->impl;
    if (!attn_batch_fits(b, INT32_MAX, a->rows - a->max_seqs, a->max_seqs)) {
        for (size_t i = 0; i < (size_t)b->n_seqs * (size_t)(m->cfg.n_items + 1); i++) scores[i] = NAN;
        return;
    }
    /* each history with the mask token appended, cut to its last max_len rows */
    a->start[0] = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        const int r0 = b->seq_start[s], r = b->seq_start[s + 1] - r0;
        const int keep = r + 1 <= a->max_len ? r : a->max_len - 1;
        int32_t *t = a->tok + a->start[s];
        memcpy(t, b->tokens + r0 + (r - keep), (size_t)keep * sizeof(int32_t));
        t[keep] = m->cfg.n_items + 1;
        a->start[s + 1] = a->start[s] + keep + 1;
    }
    bert_forward(m, a, b->n_seqs, b->example, 0, 0);
    const float *x = bert_output(a);
    const int d = a->d, n_out = m->cfg.n_items + 1;
    for (int s0 = 0; s0 < b->n_seqs; s0 += BERT_LOGIT_ROWS) {
        const int n = b->n_seqs - s0 < BERT_LOGIT_ROWS ? b->n_seqs - s0 : BERT_LOGIT_ROWS;
        for (int i = 0; i < n; i++)
            memcpy(a->xs + (size_t)i * d, x + (size_t)(a->start[s0 + i + 1] - 1) * d, (size_t)d * sizeof(float));
        head_forward(p, a, n);
        for (int i = 0; i < n; i++)
            memcpy(scores + (size_t)(s0 + i) * n_out, a->logits + (size_t)i * a->V, (size_t)n_out * sizeof(float));
    }
}

const rt_arch rt_arch_bert4rec = {
    .name = "bert4rec",
    .layout = bert_layout,
    .bind = bert_bind,
    .unbind = attn_views_unbind,
    .init = attn_init_bert,
    .acts_create = bert_acts_create,
    .acts_free = bert_acts_free,
    .loss_backward = bert_loss_backward,
    .scores_last = bert_scores_last,
};
