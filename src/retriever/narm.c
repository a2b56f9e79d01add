/* NARM (Li et al., CIKM 2017: neural attentive session-based recommendation) as a
 * retriever, after the model of LlamaRec's lineage (Yueeeeeeee/RecSys-Extraction-Attack,
 * model/narm.py), with D = hidden and H = 2D:
 *
 *   e_t = dropout(E[item_t])                              embedding.token, embed_dropout
 *   h_t = GRU(e_t, h_{t-1})                               model.gru: one layer, hidden H
 *   for the prefix ending at row j:
 *     c_global = h_j
 *     alpha_t = hardsigmoid(A_global h_j + A_local h_t)   t over the prefix (clamp(x/6+1/2, 0, 1))
 *     a = softmax_t(v . alpha_t);  c_local = sum_t a_t h_t
 *     proj = dropout([c_global, c_local])                 proj_dropout (attn dropout)
 *     scores = proj (E B^T)^T = (proj B) E^T              model.b_vetor [2H, D], the bilinear decoder
 *
 * state_dict names and order as narm.py: embedding.token.weight [V, D],
 * model.gru.{weight_ih_l0 [3H, D], weight_hh_l0 [3H, H], bias_ih_l0, bias_hh_l0 [3H]},
 * model.a_global.weight, model.a_local.weight [H, H], model.v_vector.weight [1, H],
 * model.b_vetor.weight [2H, D] (the reference's spelling). Every parameter starts as
 * the reference's truncated_normal_init: std 0.02 cut at +-0.04 (GRU biases included).
 *
 * Training: the reference (trainer/narm.py over dataloader/rnn.py's RNNTrainDataset)
 * makes one example of every prefix of a training sequence and scores only that
 * prefix's last position, with cross-entropy over all items. A labelled row j of
 * LlamaRec's window is exactly such a prefix (the GRU is causal and the attention
 * runs over rows up to j), so we score every labelled row with its own prefix's
 * global and local encoders: the same examples as the reference, all prefixes of a
 * window sharing one GRU pass. The one difference the shared windows impose: a
 * prefix in a later window of a user longer than 2 x max_len - 1 items starts at that
 * window's start rather than reaching back max_len items. The loss is the mean over
 * scored rows, as the reference's mean over a batch of prefixes.
 *
 * The decoder: the reference forms the item matrix E B^T [V, 2H] and multiplies the
 * [n, 2H] encodings with it. The same product grouped the other way, (proj B) E^T,
 * projects the n encodings down to D first, so the three [n x V] products of a step
 * (scores, their input gradient, the table's gradient) run over D = 64 instead of
 * 2H = 256 and E B^T is never formed: 4x fewer flops in what dominates a step and a
 * validation. The function and its gradients are the same; only float rounding
 * differs (the PyTorch references below still agree to 1e-5 of each tensor's max). */
#include <stdlib.h>
#include <string.h>

#include "nn/embedding.h"
#include "nn/gru.h"
#include "nn/linear.h"
#include "nn/xent.h"
#include "retriever/rnn_common.h"

#define NARM_CHUNK 1024 /* scored rows per cross-entropy call */

typedef struct narm_impl {
    int D, H, V, max_len;
    float *emb, *w_ih, *w_hh, *b_ih, *b_hh, *a_global, *a_local, *v, *b;
    float *demb, *dw_ih, *dw_hh, *db_ih, *db_hh, *da_global, *da_local, *dv, *db;
} narm_impl;

typedef struct narm_acts {
    rnn_scratch x;                 /* first: rows, scored [R], lab [CHUNK], mem */
    int max_rows, max_seqs;
    float *x0, *drop0;             /* [R, D] */
    float *h, *hprev, *hn;         /* [R, H] */
    float *gates;                  /* [R, 3H] */
    float *qg, *kl;                /* [R, H]: A_global h, A_local h */
    float *proj, *dropp;           /* [R, 2H]: per scored row */
    float *attn;                   /* [R * max_len]: softmax weights per scored row's prefix */
    size_t *attn_off;              /* [R] */
    float *pb, *dpb;               /* [R, D]: proj B (the encodings in item space) and its gradient */
    float *row_loss, *xent;        /* [CHUNK], xent_table_scratch_floats(V, D) */
    float *dh, *dx, *dqg, *dkl;    /* [R, H] ([R, D] for dx) */
    float *dproj;                  /* [R, 2H] */
    float *dgx, *dgh;              /* [R, 3H] */
    float *dv_seq;                 /* [S, H] */
    size_t attn_cap;
} narm_acts;

static const char *const narm_names[] = {
    "embedding.token.weight", "model.gru.weight_ih_l0", "model.gru.weight_hh_l0", "model.gru.bias_ih_l0",
    "model.gru.bias_hh_l0",   "model.a_global.weight",  "model.a_local.weight",   "model.v_vector.weight",
    "model.b_vetor.weight"};

static int narm_layout(rt_model *m, mr_error *e) {
    const rt_config *c = &m->cfg;
    if (c->n_items < 1 || c->hidden < 1 || c->max_len < 1)
        return mr_fail(e, MR_ERR_USAGE, "narm: n_items, hidden and max_len must be positive (got %d, %d, %d)",
                       c->n_items, c->hidden, c->max_len);
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f) || !(c->attn_dropout >= 0.0f && c->attn_dropout < 1.0f))
        return mr_fail(e, MR_ERR_USAGE, "narm: dropout and attn_dropout must be in [0, 1) (got %g, %g)", c->dropout,
                       c->attn_dropout);
    const int64_t D = c->hidden, H = 2 * D, V = (int64_t)c->n_items + 1;
    const int64_t shapes[9][2] = {{V, D}, {3 * H, D}, {3 * H, H}, {3 * H, 0}, {3 * H, 0},
                                  {H, H}, {H, H},     {1, H},     {2 * H, D}};
    for (int i = 0; i < 9; i++) {
        int rc = rt_model_add_tensor(m, narm_names[i], shapes[i][1] ? 2 : 1, shapes[i], rt_decays(narm_names[i]), e);
        if (rc) return rc;
    }
    return MR_OK;
}

static int narm_bind(rt_model *m, mr_error *e) {
    narm_impl *p = m->impl;
    if (!p) {
        p = mr_calloc(1, sizeof *p, e);
        if (!p) return MR_ERR_INTERNAL;
        m->impl = p;
    }
    p->D = m->cfg.hidden;
    p->H = 2 * p->D;
    p->V = m->cfg.n_items + 1;
    p->max_len = m->cfg.max_len;
    float **w[9] = {&p->emb, &p->w_ih, &p->w_hh, &p->b_ih, &p->b_hh, &p->a_global, &p->a_local, &p->v, &p->b};
    float **g[9] = {&p->demb, &p->dw_ih, &p->dw_hh, &p->db_ih, &p->db_hh, &p->da_global, &p->da_local, &p->dv, &p->db};
    for (int i = 0; i < 9; i++) {
        *w[i] = m->params + m->tensors[i].offset;
        *g[i] = m->grads ? m->grads + m->tensors[i].offset : NULL;
    }
    return MR_OK;
}

static void narm_unbind(rt_model *m) {
    free(m->impl);
    m->impl = NULL;
}

static void narm_init(rt_model *m, uint64_t seed) {
    mr_rng r;
    mr_rng_seed(&r, seed);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] = rt_trunc_normal(&r, 0.02, 0.04);
}

static int narm_acts_create(void **out, const rt_model *m, int max_rows, int max_seqs, mr_error *e) {
    const size_t R = (size_t)(max_rows > 0 ? max_rows : 1), S = (size_t)(max_seqs > 0 ? max_seqs : 1);
    const size_t D = (size_t)m->cfg.hidden, H = 2 * D, V = (size_t)m->cfg.n_items + 1, CH = NARM_CHUNK;
    /* a prefix is at most one sequence long: at most max_len rows, and never more than R */
    const size_t L = (size_t)m->cfg.max_len < R ? (size_t)m->cfg.max_len : R;
    narm_acts *a = mr_calloc(1, sizeof *a, e);
    if (!a) return MR_ERR_INTERNAL;
    a->max_rows = (int)R;
    a->max_seqs = (int)S;
    a->attn_cap = R * L;
    size_t floats = 2 * R * D + 3 * R * H + 3 * R * H + 2 * R * H + 2 * 2 * R * H + a->attn_cap + 2 * (R > S ? R : S) * D +
                    xent_table_scratch_floats((int)V, (int)D) + CH + 3 * R * H + R * D + R * 2 * H + 2 * 3 * R * H + S * H;
    size_t bytes = floats * sizeof(float) + R * sizeof(size_t) + rnn_scratch_ints(R, S, CH) * sizeof(int) + 256;
    char *mem = mr_alloc_aligned(bytes, e);
    if (!mem) {
        free(a);
        return MR_ERR_INTERNAL;
    }
    a->x.mem = mem;
    size_t *z = (size_t *)(void *)mem;
    a->attn_off = z;
    float *f = (float *)(void *)(z + R);
#define TAKEF(n) (f += (n), f - (n))
    a->x0 = TAKEF(R * D);
    a->drop0 = TAKEF(R * D);
    a->h = TAKEF(R * H);
    a->hprev = TAKEF(R * H);
    a->hn = TAKEF(R * H);
    a->gates = TAKEF(3 * R * H);
    a->qg = TAKEF(R * H);
    a->kl = TAKEF(R * H);
    a->proj = TAKEF(2 * R * H);
    a->dropp = TAKEF(2 * R * H);
    a->attn = TAKEF(a->attn_cap);
    a->pb = TAKEF((R > S ? R : S) * D);
    a->dpb = TAKEF((R > S ? R : S) * D); /* also the score block of scores_last */
    a->row_loss = TAKEF(CH);
    a->xent = TAKEF(xent_table_scratch_floats((int)V, (int)D));
    a->dh = TAKEF(R * H);
    a->dqg = TAKEF(R * H);
    a->dkl = TAKEF(R * H);
    a->dx = TAKEF(R * D);
    a->dproj = TAKEF(R * 2 * H);
    a->dgx = TAKEF(3 * R * H);
    a->dgh = TAKEF(3 * R * H);
    a->dv_seq = TAKEF(S * H);
#undef TAKEF
    rnn_scratch_take(&a->x, (int *)f, R, S, CH);
    *out = a;
    return MR_OK;
}

static inline float hardsigmoid(float x) {
    float y = x / 6.0f + 0.5f;
    return y < 0.0f ? 0.0f : y > 1.0f ? 1.0f : y;
}

/* The first row the local encoder of the prefix ending at compact row j attends to:
 * the sequence's first, or the last max_len rows when a sequence is longer than the
 * contract's windows (the reference's prefixes are their last max_len items). This also
 * bounds the attention buffer. */
static inline int narm_first(const narm_acts *a, int j, int max_len) {
    const int t0 = a->x.c.start[a->x.c.seq[j]];
    return j - t0 + 1 > max_len ? j - max_len + 1 : t0;
}

/* Embedding, GRU and the two attention projections over the compact rows, then
 * proj [n_scored, 2H] for the rows in a->x.scored (n_scored of them). Scored rows are
 * grouped by sequence in row order, so one thread owns each sequence. */
static void narm_forward(const narm_impl *p, narm_acts *a, const rt_batch *b, int n_scored, float drop_emb,
                         float drop_proj, int train, uint64_t key) {
    const int R = a->x.c.n_rows, D = p->D, H = p->H;
    qmat table = {GGML_TYPE_F32, p->V, D, p->emb, 0};
    embedding_forward(a->x0, &table, a->x.c.tok, R);
    if (train && drop_emb > 0.0f) {
        rnn_dropout_mask(a->drop0, &a->x.c, b, D, drop_emb, key, 0);
        for (size_t i = 0; i < (size_t)R * D; i++) a->x0[i] *= a->drop0[i];
    }
    gru_forward(a->h, a->hprev, a->gates, a->hn, a->x0, p->w_ih, p->b_ih, p->w_hh, p->b_hh, NULL, a->x.c.start,
                a->x.c.n_seqs, D, H);
    linear_forward(a->qg, a->h, p->a_global, NULL, R, H, H);
    linear_forward(a->kl, a->h, p->a_local, NULL, R, H, H);
    size_t off = 0;
    for (int k = 0; k < n_scored; k++) {
        const int j = a->x.scored[k];
        a->attn_off[k] = off;
        off += (size_t)(j - narm_first(a, j, p->max_len) + 1);
    }
#pragma omp parallel for schedule(dynamic, 16)
    for (int k = 0; k < n_scored; k++) {
        const int j = a->x.scored[k], t0 = narm_first(a, j, p->max_len);
        const float *q = a->qg + (size_t)j * H;
        float *w = a->attn + a->attn_off[k], mx = -INFINITY;
        for (int t = t0; t <= j; t++) {
            const float *kt = a->kl + (size_t)t * H;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int c = 0; c < H; c++) s += p->v[c] * hardsigmoid(q[c] + kt[c]);
            w[t - t0] = s;
            mx = s > mx ? s : mx;
        }
        float sum = 0.0f;
        for (int t = t0; t <= j; t++) sum += (w[t - t0] = expf(w[t - t0] - mx));
        float *pr = a->proj + (size_t)k * 2 * H;
        memcpy(pr, a->h + (size_t)j * H, sizeof(float) * (size_t)H);
        float *cl = pr + H;
        memset(cl, 0, sizeof(float) * (size_t)H);
        for (int t = t0; t <= j; t++) {
            const float wt = (w[t - t0] /= sum);
            const float *ht = a->h + (size_t)t * H;
#pragma omp simd
            for (int c = 0; c < H; c++) cl[c] += wt * ht[c];
        }
    }
    if (train && drop_proj > 0.0f) {
        /* one mask row per compact row (site 1), used at the scored rows */
        rnn_dropout_mask(a->dropp, &a->x.c, b, 2 * H, drop_proj, key, 1);
        for (int k = 0; k < n_scored; k++) {
            float *pr = a->proj + (size_t)k * 2 * H;
            const float *mk = a->dropp + (size_t)a->x.scored[k] * 2 * H;
            for (int c = 0; c < 2 * H; c++) pr[c] *= mk[c];
        }
    }
    /* pb [n_scored, D] = proj B: b_vetor [2H, D] used as the matrix it is, not as a Linear's transposed weight */
    memset(a->pb, 0, sizeof(float) * (size_t)n_scored * D);
    linear_backward(a->pb, NULL, NULL, a->proj, NULL, p->b, n_scored, D, 2 * H);
}

static double narm_loss_backward(rt_model *m, void *acts, const rt_batch *b, int train, uint64_t key) {
    const narm_impl *p = m->impl;
    narm_acts *a = acts;
    const int D = p->D, H = p->H, V = p->V, P = 2 * p->H;
    const int n_scored = rnn_loss_rows(m, &a->x, b), R = a->x.c.n_rows;
    if (!n_scored) return 0.0;
    const int drop_p = train && m->cfg.attn_dropout > 0.0f;
    narm_forward(p, a, b, n_scored, m->cfg.dropout, m->cfg.attn_dropout, train, key);

    /* scores = pb E^T and their cross-entropy per block of scored rows, through
     * xent_table (the [rows, V] scores never formed whole): dpb and dE */
    double total = 0.0;
    for (int c0 = 0; c0 < n_scored; c0 += NARM_CHUNK) {
        const int n = n_scored - c0 < NARM_CHUNK ? n_scored - c0 : NARM_CHUNK;
        for (int i = 0; i < n; i++) a->x.lab[i] = a->x.c.lab[a->x.scored[c0 + i]];
        const float *pbc = a->pb + (size_t)c0 * D;
        total += xent_table(a->dpb + (size_t)c0 * D, p->demb, NULL, a->row_loss, pbc, a->x.lab, n, p->emb, NULL, V, D,
                            1.0f / (float)n_scored, a->xent);
    }
    /* pb = proj B: dproj = dpb B^T, dB += proj^T dpb */
    linear_forward(a->dproj, a->dpb, p->b, NULL, n_scored, D, P);
    linear_backward(NULL, p->db, NULL, a->proj, a->dpb, NULL, n_scored, D, P);

    /* proj -> h (global) and the local attention, one thread per sequence */
    memset(a->dh, 0, sizeof(float) * (size_t)R * H);
    memset(a->dqg, 0, sizeof(float) * (size_t)R * H);
    memset(a->dkl, 0, sizeof(float) * (size_t)R * H);
    memset(a->dv_seq, 0, sizeof(float) * (size_t)a->x.c.n_seqs * H);
#pragma omp parallel for schedule(dynamic, 1)
    for (int s = 0; s < a->x.c.n_seqs; s++) {
        float *dvs = a->dv_seq + (size_t)s * H;
        for (int k = 0; k < n_scored; k++) {
            const int j = a->x.scored[k];
            if (a->x.c.seq[j] != s) continue;
            const int t0 = narm_first(a, j, p->max_len);
            float *dp = a->dproj + (size_t)k * P;
            if (drop_p) {
                const float *mk = a->dropp + (size_t)j * P;
                for (int c = 0; c < P; c++) dp[c] *= mk[c];
            }
            float *dhj = a->dh + (size_t)j * H;
            for (int c = 0; c < H; c++) dhj[c] += dp[c];
            const float *dcl = dp + H, *w = a->attn + a->attn_off[k], *q = a->qg + (size_t)j * H, *v = p->v;
            /* c_local = sum_t w_t h_t: dh_t += w_t dcl and dw_t = dcl . h_t (recomputed in
             * the second pass, after their weighted sum wdot for the softmax backward) */
            float wdot = 0.0f;
            for (int t = t0; t <= j; t++) {
                const float *ht = a->h + (size_t)t * H;
                float *dht = a->dh + (size_t)t * H;
                float dw = 0.0f;
#pragma omp simd reduction(+ : dw)
                for (int c = 0; c < H; c++) {
                    dw += dcl[c] * ht[c];
                    dht[c] += w[t - t0] * dcl[c];
                }
                wdot += w[t - t0] * dw;
            }
            float *dqj = a->dqg + (size_t)j * H;
            for (int t = t0; t <= j; t++) {
                const float *ht = a->h + (size_t)t * H, *kt = a->kl + (size_t)t * H;
                float dw = 0.0f;
#pragma omp simd reduction(+ : dw)
                for (int c = 0; c < H; c++) dw += dcl[c] * ht[c];
                const float de = w[t - t0] * (dw - wdot); /* d(score_t) */
                float *dkt = a->dkl + (size_t)t * H;
                /* no && and no branch in here: either keeps GCC from vectorizing the loop */
#pragma omp simd
                for (int c = 0; c < H; c++) {
                    const float x = (q[c] + kt[c]) / 6.0f + 0.5f;
                    dvs[c] += de * (x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x);
                    /* torch's clamp passes the gradient where min <= x <= max */
                    const int inside = (x >= 0.0f) & (x <= 1.0f);
                    const float dpre = inside ? de * v[c] / 6.0f : 0.0f;
                    dqj[c] += dpre;
                    dkt[c] += dpre;
                }
            }
        }
    }
    for (int s = 0; s < a->x.c.n_seqs; s++)
        for (int c = 0; c < H; c++) p->dv[c] += a->dv_seq[(size_t)s * H + c];
    linear_backward(a->dh, p->da_global, NULL, a->dqg, a->h, p->a_global, R, H, H);
    linear_backward(a->dh, p->da_local, NULL, a->dkl, a->h, p->a_local, R, H, H);

    memset(a->dx, 0, sizeof(float) * (size_t)R * D);
    gru_backward(a->dx, p->dw_ih, p->db_ih, p->dw_hh, p->db_hh, a->dh, a->dgx, a->dgh, a->x0, a->hprev, a->gates,
                 a->hn, p->w_ih, p->w_hh, NULL, a->x.c.start, a->x.c.n_seqs, D, H);
    if (train && m->cfg.dropout > 0.0f)
        for (size_t i = 0; i < (size_t)R * D; i++) a->dx[i] *= a->drop0[i];
    embedding_backward(p->demb, a->dx, a->x.c.tok, R, D);
    return total / n_scored;
}

static void narm_scores_last(const rt_model *m, void *acts, const rt_batch *b, float *scores) {
    const narm_impl *p = m->impl;
    narm_acts *a = acts;
    const int V = p->V, D = p->D;
    rnn_rows_build(&a->x.c, b);
    int n_scored = 0;
    for (int s = 0; s < a->x.c.n_seqs; s++)
        if (a->x.c.start[s + 1] > a->x.c.start[s]) a->x.scored[n_scored++] = a->x.c.start[s + 1] - 1;
    narm_forward(p, a, b, n_scored, 0.0f, 0.0f, 0, 0);
    /* proj rows follow the sequences that have rows; a sequence without any scores 0 */
    int k = 0;
    for (int s0 = 0; s0 < b->n_seqs; s0 += NARM_CHUNK) {
        const int n = b->n_seqs - s0 < NARM_CHUNK ? b->n_seqs - s0 : NARM_CHUNK;
        float *blk = a->dpb; /* free in evaluation */
        for (int i = 0; i < n; i++) {
            const int s = s0 + i;
            if (a->x.c.start[s + 1] > a->x.c.start[s])
                memcpy(blk + (size_t)i * D, a->pb + (size_t)(k++) * D, sizeof(float) * (size_t)D);
            else
                memset(blk + (size_t)i * D, 0, sizeof(float) * (size_t)D);
        }
        linear_forward(scores + (size_t)s0 * V, blk, p->emb, NULL, n, D, V);
    }
}

const rt_arch rt_arch_narm = {
    .name = "narm",
    .layout = narm_layout,
    .bind = narm_bind,
    .unbind = narm_unbind,
    .init = narm_init,
    .acts_create = narm_acts_create,
    .acts_free = rnn_acts_free,
    .loss_backward = narm_loss_backward,
    .scores_last = narm_scores_last,
};
