/* GRU4Rec (Hidasi et al., ICLR 2016; Hidasi & Karatzoglou, CIKM 2018) as a retriever,
 * after the official PyTorch code (hidasib/GRU4Rec_PyTorch_Official,
 * gru4rec_pytorch.py, GRU4RecModel):
 *
 *   x_t = DE(Wy[item_t])                       constrained_embedding (the official
 *                                              default): the input embedding IS the
 *                                              output item embedding Wy
 *   h^l_t = D_l(GRUCell_l(h^{l-1}_t, h^l_{t-1}))  for l = 0 .. blocks-1; the dropped-out
 *                                              state is the one carried to t + 1, as
 *                                              hidden_step stores H[i] = D[i](X)
 *   scores_t = h^{L-1}_t Wy^T + By^T           over every item
 *
 * Constrained embedding rather than the one-hot GRUEmbedding (embedding=0 with
 * constrained_embedding=False) or a separate input table: it is the official model's
 * default and the setting of its published best parameter files, and its input size
 * equals the hidden size we are given. state_dict names are the official module's:
 * G.<l>.weight_ih [3H, H], G.<l>.weight_hh [3H, H], G.<l>.bias_ih [3H],
 * G.<l>.bias_hh [3H], Wy.weight [V, H], By.weight [V, 1] (V = n_items + 1: our item
 * 0 is the padding).
 *
 * Training: as the issue says for LRU / SASRec / GRU4Rec / NARM, cross-entropy over
 * all items at every labelled row of LlamaRec's windows, mean over the scored rows,
 * NOT GRU4Rec's session-parallel mini-batches with sampled negatives (its own
 * trainer): the baselines are compared under one trainer. Initialisation: the
 * official fit()'s compatibility mode (its default): every gate block of weight_ih
 * and weight_hh, and Wy, uniform in +-sqrt(6 / (fan_in + fan_out)); biases and By zero. */
#include <stdlib.h>
#include <string.h>

#include "nn/embedding.h"
#include "nn/gru.h"
#include "nn/linear.h"
#include "nn/xent.h"
#include "retriever/rnn_common.h"

#define G4_CHUNK 1024 /* scored rows per cross-entropy call */

typedef struct g4_layer {
    float *w_ih, *w_hh, *b_ih, *b_hh;
    float *dw_ih, *dw_hh, *db_ih, *db_hh;
} g4_layer;

typedef struct g4_impl {
    int L, H, V;
    g4_layer *layer;
    float *wy, *by, *dwy, *dby;
} g4_impl;

typedef struct g4_acts {
    rnn_scratch x;                     /* first: rows, scored [R], lab [CHUNK], mem */
    int max_rows, max_seqs, L, H, V;
    float *x0, *drop0;                 /* [R, H] */
    float **h, **hprev, **hn, **mask;  /* per layer [R, H] */
    float **gates;                     /* per layer [R, 3H] */
    float *dh, *dx, *dgx, *dgh;        /* [R, H], [R, H], [R, 3H], [R, 3H] */
    float *hs, *row_loss, *xent;       /* [CHUNK, H], [CHUNK], xent_table_scratch_floats(V, H) */
} g4_acts;

static int g4_layout(rt_model *m, mr_error *e) {
    const rt_config *c = &m->cfg;
    if (c->n_items < 1 || c->hidden < 1 || c->blocks < 1)
        return mr_fail(e, MR_ERR_USAGE, "gru4rec: n_items, hidden and blocks must be positive (got %d, %d, %d)",
                       c->n_items, c->hidden, c->blocks);
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f))
        return mr_fail(e, MR_ERR_USAGE, "gru4rec: dropout must be in [0, 1) (got %g)", c->dropout);
    const int64_t H = c->hidden, V = (int64_t)c->n_items + 1;
    char name[96];
    for (int l = 0; l < c->blocks; l++) {
        const char *part[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
        for (int k = 0; k < 4; k++) {
            int64_t shape[2] = {3 * H, H};
            snprintf(name, sizeof name, "G.%d.%s", l, part[k]);
            int rc = rt_model_add_tensor(m, name, k < 2 ? 2 : 1, shape, rt_decays(name), e);
            if (rc) return rc;
        }
    }
    int64_t wy[2] = {V, H}, by[2] = {V, 1};
    int rc = rt_model_add_tensor(m, "Wy.weight", 2, wy, rt_decays("Wy.weight"), e);
    if (!rc) rc = rt_model_add_tensor(m, "By.weight", 2, by, rt_decays("By.weight"), e);
    return rc;
}

static int g4_bind(rt_model *m, mr_error *e) {
    g4_impl *p = m->impl;
    if (!p) {
        p = mr_calloc(1, sizeof *p, e);
        if (!p) return MR_ERR_INTERNAL;
        p->layer = mr_calloc((size_t)m->cfg.blocks, sizeof *p->layer, e);
        if (!p->layer) {
            free(p);
            return MR_ERR_INTERNAL;
        }
        m->impl = p;
    }
    p->L = m->cfg.blocks;
    p->H = m->cfg.hidden;
    p->V = m->cfg.n_items + 1;
    /* tensors in layout order: 4 per layer, then Wy, By */
    for (int l = 0; l < p->L; l++) {
        const rt_tensor *t = &m->tensors[4 * l];
        float *base[2] = {m->params, m->grads};
        for (int g = 0; g < 2; g++) {
            float **dst[4] = {g ? &p->layer[l].dw_ih : &p->layer[l].w_ih, g ? &p->layer[l].dw_hh : &p->layer[l].w_hh,
                              g ? &p->layer[l].db_ih : &p->layer[l].b_ih, g ? &p->layer[l].db_hh : &p->layer[l].b_hh};
            for (int k = 0; k < 4; k++) *dst[k] = base[g] ? base[g] + t[k].offset : NULL;
        }
    }
    const rt_tensor *wy = &m->tensors[4 * p->L], *by = wy + 1;
    p->wy = m->params + wy->offset;
    p->by = m->params + by->offset;
    p->dwy = m->grads ? m->grads + wy->offset : NULL;
    p->dby = m->grads ? m->grads + by->offset : NULL;
    return MR_OK;
}

static void g4_unbind(rt_model *m) {
    g4_impl *p = m->impl;
    if (p) free(p->layer);
    free(p);
    m->impl = NULL;
}

static void uniform_fill(float *x, size_t n, mr_rng *r, double sigma) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((2.0 * mr_rng_uniform(r) - 1.0) * sigma);
}

static void g4_init(rt_model *m, uint64_t seed) {
    g4_impl *p = m->impl;
    mr_rng r;
    mr_rng_seed(&r, seed);
    const int H = p->H;
    for (int l = 0; l < p->L; l++) {
        /* three gate blocks of [H, H] each, sigma = sqrt(6 / (H + H)) */
        uniform_fill(p->layer[l].w_ih, (size_t)3 * H * H, &r, sqrt(6.0 / (2.0 * H)));
        uniform_fill(p->layer[l].w_hh, (size_t)3 * H * H, &r, sqrt(6.0 / (2.0 * H)));
        memset(p->layer[l].b_ih, 0, sizeof(float) * 3 * (size_t)H);
        memset(p->layer[l].b_hh, 0, sizeof(float) * 3 * (size_t)H);
    }
    uniform_fill(p->wy, (size_t)p->V * H, &r, sqrt(6.0 / ((double)p->V + H)));
    memset(p->by, 0, sizeof(float) * (size_t)p->V);
}

static int g4_acts_create(void **out, const rt_model *m, int max_rows, int max_seqs, mr_error *e) {
    const size_t R = (size_t)(max_rows > 0 ? max_rows : 1), S = (size_t)(max_seqs > 0 ? max_seqs : 1);
    const size_t H = (size_t)m->cfg.hidden, V = (size_t)m->cfg.n_items + 1, L = (size_t)m->cfg.blocks;
    const size_t CH = G4_CHUNK;
    g4_acts *a = mr_calloc(1, sizeof *a, e);
    if (!a) return MR_ERR_INTERNAL;
    a->max_rows = (int)R;
    a->max_seqs = (int)S;
    a->L = (int)L;
    a->H = (int)H;
    a->V = (int)V;
    /* one block: floats first, then the ints, each region 64-byte aligned */
    size_t floats = 2 * R * H + L * (4 * R * H + 3 * R * H) + 2 * R * H + 2 * 3 * R * H + CH * H + CH + xent_table_scratch_floats((int)V, (int)H);
    size_t ints = rnn_scratch_ints(R, S, CH);
    size_t ptrs = 5 * L;
    size_t bytes = (floats + 16) * sizeof(float) + (ints + 16) * sizeof(int) + ptrs * sizeof(float *) + 64;
    char *mem = mr_alloc_aligned(bytes, e);
    if (!mem) {
        free(a);
        return MR_ERR_INTERNAL;
    }
    a->x.mem = mem;
    float *f = (float *)mem;
#define TAKEF(n) (f += (n), f - (n))
    a->x0 = TAKEF(R * H);
    a->drop0 = TAKEF(R * H);
    a->dh = TAKEF(R * H);
    a->dx = TAKEF(R * H);
    a->dgx = TAKEF(3 * R * H);
    a->dgh = TAKEF(3 * R * H);
    a->hs = TAKEF(CH * H);
    a->row_loss = TAKEF(CH);
    a->xent = TAKEF(xent_table_scratch_floats((int)V, (int)H));
    float **pp = (float **)(void *)(mem + (floats + 16) * sizeof(float) + (ints + 16) * sizeof(int));
    pp = (float **)(void *)(((uintptr_t)pp + 15) & ~(uintptr_t)15);
    a->h = pp;
    a->hprev = pp + L;
    a->hn = pp + 2 * L;
    a->mask = pp + 3 * L;
    a->gates = pp + 4 * L;
    for (size_t l = 0; l < L; l++) {
        a->h[l] = TAKEF(R * H);
        a->hprev[l] = TAKEF(R * H);
        a->hn[l] = TAKEF(R * H);
        a->mask[l] = TAKEF(R * H);
        a->gates[l] = TAKEF(3 * R * H);
    }
#undef TAKEF
    rnn_scratch_take(&a->x, (int *)(void *)(mem + (floats + 16) * sizeof(float)), R, S, CH);
    *out = a;
    return MR_OK;
}

/* Embedding and GRU stack over the compact rows a->c (built by the caller). */
static void g4_forward(const g4_impl *p, g4_acts *a, const rt_batch *b, float dropout, int train, uint64_t key) {
    const int R = a->x.c.n_rows, H = p->H;
    const int use_drop = train && dropout > 0.0f;
    qmat table = {GGML_TYPE_F32, p->V, H, p->wy, 0};
    embedding_forward(a->x0, &table, a->x.c.tok, R);
    if (use_drop) {
        rnn_dropout_mask(a->drop0, &a->x.c, b, H, dropout, key, 0);
        for (size_t i = 0; i < (size_t)R * H; i++) a->x0[i] *= a->drop0[i];
    }
    for (int l = 0; l < p->L; l++) {
        if (use_drop) rnn_dropout_mask(a->mask[l], &a->x.c, b, H, dropout, key, 1 + (uint64_t)l);
        gru_forward(a->h[l], a->hprev[l], a->gates[l], a->hn[l], l ? a->h[l - 1] : a->x0, p->layer[l].w_ih,
                    p->layer[l].b_ih, p->layer[l].w_hh, p->layer[l].b_hh, use_drop ? a->mask[l] : NULL, a->x.c.start,
                    a->x.c.n_seqs, H, H);
    }
}

static double g4_loss_backward(rt_model *m, void *acts, const rt_batch *b, int train, uint64_t key) {
    const g4_impl *p = m->impl;
    g4_acts *a = acts;
    const int H = p->H, V = p->V;
    const int n_scored = rnn_loss_rows(m, &a->x, b), R = a->x.c.n_rows;
    if (!n_scored) return 0.0;
    g4_forward(p, a, b, m->cfg.dropout, train, key);
    const int use_drop = train && m->cfg.dropout > 0.0f;
    const float *top = a->h[p->L - 1];

    /* scores over every item and their cross-entropy, CHUNK scored rows at a time,
     * through xent_table (the [rows, V] logits never formed whole); d(loss)/d(top) into dh */
    memset(a->dh, 0, sizeof(float) * (size_t)R * H);
    double total = 0.0;
    for (int c0 = 0; c0 < n_scored; c0 += G4_CHUNK) {
        const int n = n_scored - c0 < G4_CHUNK ? n_scored - c0 : G4_CHUNK;
        for (int i = 0; i < n; i++) {
            memcpy(a->hs + (size_t)i * H, top + (size_t)a->x.scored[c0 + i] * H, sizeof(float) * (size_t)H);
            a->x.lab[i] = a->x.c.lab[a->x.scored[c0 + i]];
        }
        float *dhs = a->dx; /* free until the GRU backward */
        total += xent_table(dhs, p->dwy, p->dby, a->row_loss, a->hs, a->x.lab, n, p->wy, p->by, V, H,
                            1.0f / (float)n_scored, a->xent);
        for (int i = 0; i < n; i++) {
            float *d = a->dh + (size_t)a->x.scored[c0 + i] * H;
            for (int k = 0; k < H; k++) d[k] += dhs[(size_t)i * H + k];
        }
    }

    for (int l = p->L - 1; l >= 0; l--) {
        memset(a->dx, 0, sizeof(float) * (size_t)R * H);
        const g4_layer *w = &p->layer[l];
        gru_backward(a->dx, w->dw_ih, w->db_ih, w->dw_hh, w->db_hh, a->dh, a->dgx, a->dgh, l ? a->h[l - 1] : a->x0,
                     a->hprev[l], a->gates[l], a->hn[l], w->w_ih, w->w_hh, use_drop ? a->mask[l] : NULL, a->x.c.start,
                     a->x.c.n_seqs, H, H);
        memcpy(a->dh, a->dx, sizeof(float) * (size_t)R * H);
    }
    if (use_drop)
        for (size_t i = 0; i < (size_t)R * H; i++) a->dh[i] *= a->drop0[i];
    embedding_backward(p->dwy, a->dh, a->x.c.tok, R, H);
    return total / n_scored;
}

static void g4_scores_last(const rt_model *m, void *acts, const rt_batch *b, float *scores) {
    const g4_impl *p = m->impl;
    g4_acts *a = acts;
    const int H = p->H, V = p->V;
    rnn_rows_build(&a->x.c, b);
    g4_forward(p, a, b, 0.0f, 0, 0);
    for (int s0 = 0; s0 < b->n_seqs; s0 += G4_CHUNK) {
        const int n = b->n_seqs - s0 < G4_CHUNK ? b->n_seqs - s0 : G4_CHUNK;
        for (int i = 0; i < n; i++) {
            const int s = s0 + i, last = a->x.c.start[s + 1] - 1;
            float *dst = a->hs + (size_t)i * H;
            if (last >= a->x.c.start[s])
                memcpy(dst, a->h[p->L - 1] + (size_t)last * H, sizeof(float) * (size_t)H);
            else
                memset(dst, 0, sizeof(float) * (size_t)H); /* no item yet: the zero state */
        }
        linear_forward(scores + (size_t)s0 * V, a->hs, p->wy, p->by, n, H, V);
    }
}

const rt_arch rt_arch_gru4rec = {
    .name = "gru4rec",
    .layout = g4_layout,
    .bind = g4_bind,
    .unbind = g4_unbind,
    .init = g4_init,
    .acts_create = g4_acts_create,
    .acts_free = rnn_acts_free,
    .loss_backward = g4_loss_backward,
    .scores_last = g4_scores_last,
};
