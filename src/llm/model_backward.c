/* LoRA training on the engine: llm_forward with its activations kept, then the
 * backward of each step with the src/nn kernels, in reverse:
 *   cross-entropy at the loss positions -> output head (frozen) -> final norm
 *   -> for each layer, last first: feed-forward block, attention block
 *   -> d input embeddings.
 * Frozen weights give only input gradients (matmul_backward_input); the
 * attached adapters get A, B gradients (lora_backward). */
#include <stdlib.h>
#include <string.h>

#include "llm/model_internal.h"
#include "nn/attention.h"
#include "nn/lora.h"
#include "nn/rmsnorm.h"
#include "nn/rope.h"
#include "nn/swiglu.h"
#include "nn/xent.h"

struct llm_grads {
    float *dres, *dxn;    /* [T][d] gradients of the residual stream and of a norm's output */
    float *datt, *dq;     /* [T][qd] */
    float *dk, *dv;       /* [T][kvd] */
    float *dgate, *dup;   /* [T][n_ff] (dgate first holds d hidden) */
    float *lora_dx;       /* [T][widest] adapter input gradient before the dropout mask */
    float *lg, *dxn_out;  /* [LLM_MAX_LOSS_POS][n_vocab] logits then their gradient; [..][d] */
    float *att_scratch;
    int64_t att_scratch_floats;
    float *block;         /* owns every buffer above */
};

double llm_train_state_bytes(const llm_model *m, int64_t T, int flags) {
    const llm_config *c = &m->cfg;
    const double d = c->n_embd, qd = (double)c->n_head * c->head_dim, kvd = (double)c->n_head_kv * c->head_dim,
                 ff = c->n_ff, L = c->n_layer;
    const int keep = (flags & LLM_STATE_KEEP_ACTS) != 0; /* per layer: xn_attn, x_mid, q, att, gate, up, rstd, stats, */
    unsigned tg; /* probs, and xn_ffn, hidden for adapters on gate, up, down (else one for all layers) */
    llm_lora_rank_targets(m, &tg);
    const double ffn_in = keep && (tg >> LLM_LORA_GATE & 3) ? d : 0, hid = keep && (tg >> LLM_LORA_DOWN & 1) ? ff : 0;
    const double per_layer = T * (2 * d + ffn_in + 2 * qd + 2 * ff + hid + 2 + 2 * c->n_head) +
                             (keep ? (double)attention_probs_floats(T, c->n_head) : 0), layers = keep ? L : 1;
    const double kept = T * d * L + 2 * T * kvd * layers;      /* x_in and the k, v cache */
    const double grads = T * (3 * d + 2 * qd + 2 * kvd + 4 * ff) + 2.0 * 2 * 64 * T; /* + the shared xn_ffn, hidden */
    return 4.0 * (layers * per_layer + kept + grads);
}

int llm_grads_init(llm_state *s, int64_t T, mr_error *e) {
    const llm_config *c = &s->m->cfg;
    const int64_t d = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim;
    struct llm_grads *g = mr_calloc(1, sizeof *g, e);
    if (!g) return MR_ERR_INTERNAL;
    s->g = g;
    g->att_scratch_floats = attention_backward_scratch_floats(T, c->n_head, c->n_head_kv, c->head_dim, s->n_threads);
    float **bufs[] = {&g->dres, &g->dxn, &g->datt, &g->dq, &g->dk, &g->dv, &g->dgate, &g->dup, &g->lora_dx,
                      &g->lg, &g->dxn_out, &g->att_scratch};
    const int64_t sizes[] = {T * d, T * d, T * qd, T * qd, T * kvd, T * kvd, T * c->n_ff, T * c->n_ff, T * s->acts.widest,
                             (int64_t)LLM_MAX_LOSS_POS * c->n_vocab, (int64_t)LLM_MAX_LOSS_POS * d,
                             g->att_scratch_floats};
    const size_t n_bufs = sizeof bufs / sizeof bufs[0];
    int64_t total = 0; /* each buffer 64-byte aligned in one block */
    for (size_t i = 0; i < n_bufs; i++) total += (sizes[i] + 15) / 16 * 16;
    if (!(g->block = mr_alloc_aligned((size_t)total * sizeof(float), e))) return MR_ERR_INTERNAL;
    llm_prefault(g->block, (size_t)total * sizeof(float));
    for (size_t i = 0, off = 0; i < n_bufs; off += (size_t)((sizes[i] + 15) / 16 * 16), i++) *bufs[i] = g->block + off;
    return MR_OK;
}

void llm_grads_free(llm_state *s) {
    if (s->g) free(s->g->block);
    free(s->g);
    s->g = NULL;
}

/* Rows r0..T-1 of dx[T][cols] = beta·dx + dy[T][rows] · W, plus the adapter's part
 * (through its dropout mask); the adapter's dA, dB += gs · their gradients.
 * x: the forward's input. dx NULL: only the adapter's gradients. */
static void linear_backward(llm_state *s, float *dx, const float *dy, const float *x, int64_t r0, int64_t T,
                            const llm_linear *L, float gs, float beta) {
    const int64_t cols = L->w.cols, n = T - r0;
    dx = dx ? dx + r0 * cols : NULL, dy += r0 * L->w.rows, x += r0 * cols;
    qmat q = llm_qmat(&L->w);
    if (dx) matmul_backward_input(dx, dy, n, &q, beta, s->scratch, s->scratch_floats);
    const llm_lora *lo = L->lora;
    if (!lo || !lo->da) return;
    if (!(s->train && lo->dropout > 0.0f)) {
        lora_backward(dx, lo->da, lo->db, s->acts.lora_tmp, dy, x, lo->a, lo->b, n, lo->in, lo->out, lo->rank,
                      lo->scale, gs, 1.0f);
        return;
    }
    /* through the forward's mask: A's gradient sees drop(x); dx gets drop(d drop(x)) */
    float *xd = s->acts.lora_x, *gx = dx ? s->g->lora_dx : NULL;
    const uint8_t *mask = llm_dropout_mask(s, lo);
    lora_dropout_apply(xd, x, mask, n * cols, r0 * cols, lo->dropout, 0);
    lora_backward(gx, lo->da, lo->db, s->acts.lora_tmp, dy, xd, lo->a, lo->b, n, lo->in, lo->out, lo->rank, lo->scale,
                  gs, 0.0f);
    if (gx) lora_dropout_apply(dx, gx, mask, n * cols, r0 * cols, lo->dropout, 1);
}

/* Feed-forward block of layer l, rows r0..T-1: g->dres holds d x_out on entry
 * (zero above r0), d x_mid on return. */
static void ffn_block_backward(llm_state *s, int l, int64_t r0, int64_t T, float gs) {
    const llm_config *c = &s->m->cfg;
    const llm_layer *L = &s->m->layers[l];
    llm_acts *a = &s->acts;
    struct llm_grads *g = s->g;
    const int64_t d = c->n_embd, ff = c->n_ff;
    linear_backward(s, g->dgate, g->dres, a->hidden[l], r0, T, &L->w_down, gs, 0.0f); /* d hidden */
    swiglu_backward(g->dgate + r0 * ff, g->dup + r0 * ff, g->dgate + r0 * ff, a->gate[l] + r0 * ff, a->up[l] + r0 * ff,
                    (T - r0) * ff);
    linear_backward(s, g->dxn, g->dgate, a->xn_ffn[l], r0, T, &L->w_gate, gs, 0.0f);
    linear_backward(s, g->dxn, g->dup, a->xn_ffn[l], r0, T, &L->w_up, gs, 1.0f);
    rmsnorm_backward(g->dres + r0 * d, g->dxn + r0 * d, a->x_mid[l] + r0 * d, L->ffn_norm, a->rstd_ffn[l] + r0, T - r0,
                     (int)d);
}

/* Attention block of layer l (queries r0..T-1): g->dres holds d x_mid on entry,
 * d x_in on return (unless need_dx is 0: then only the adapters' gradients are formed). */
static void attention_block_backward(llm_state *s, int l, int64_t r0, int64_t T, float gs, int need_dx) {
    const llm_config *c = &s->m->cfg;
    const llm_layer *L = &s->m->layers[l];
    llm_acts *a = &s->acts;
    struct llm_grads *g = s->g;
    const int64_t d = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim;
    const int64_t kv_off = (s->kv.one_layer ? 0 : (int64_t)l) * s->kv.n_ctx * kvd;
    const float *k = s->kv.k + kv_off, *v = s->kv.v + kv_off;
    rope_params rp = {c->rope_dims, c->rope_base, c->rope_freq_scale, s->m->rope_freqs, c->rope_halves};
    linear_backward(s, g->datt, g->dres, a->att[l], r0, T, &L->wo, gs, 0.0f);
    attention_backward(g->dq + r0 * qd, g->dk, g->dv, g->datt + r0 * qd, a->att[l] + r0 * qd,
                       a->att_stats[l] + r0 * c->n_head * 2, a->att_probs && !r0 ? a->att_probs[l] : NULL,
                       a->q[l] + r0 * qd, k, v, T - r0, r0, c->n_head, c->n_head_kv, c->head_dim, g->att_scratch,
                       g->att_scratch_floats);
    rope_backward(g->dq + r0 * qd, a->rope_cs + r0 * (c->rope_dims / 2 * 2), &rp, T - r0, c->n_head, c->head_dim);
    rope_backward(g->dk, a->rope_cs, &rp, T, c->n_head_kv, c->head_dim);
    float *dxn = need_dx ? g->dxn : NULL;
    if (dxn && r0) memset(dxn, 0, (size_t)(r0 * d) * sizeof(float)); /* no queries there: only k and v's part */
    linear_backward(s, dxn, g->dq, a->xn_attn[l], r0, T, &L->wq, gs, 0.0f);
    linear_backward(s, dxn, g->dk, a->xn_attn[l], 0, T, &L->wk, gs, 1.0f);
    linear_backward(s, dxn, g->dv, a->xn_attn[l], 0, T, &L->wv, gs, 1.0f);
    if (dxn) rmsnorm_backward(g->dres, dxn, a->x_in[l], L->attn_norm, a->rstd_attn[l], T, (int)d);
}

int llm_train_step_run(llm_state *s, llm_train_step *st, float gs, mr_error *e) {
    const llm_model *m = s->m;
    const llm_config *c = &m->cfg;
    const int64_t T = st->T, d = c->n_embd, V = c->n_vocab;
    struct llm_grads *g = s->g;
    if (!g) return mr_fail(e, MR_ERR_INTERNAL, "training step on a state made without LLM_STATE_KEEP_ACTS or _RECOMPUTE");
    if (st->n_loss < 1 || st->n_loss > LLM_MAX_LOSS_POS)
        return mr_fail(e, MR_ERR_USAGE, "training step: %d loss terms (1..%d)", st->n_loss, LLM_MAX_LOSS_POS);
    for (int i = 0; i < st->n_loss; i++)
        if (st->loss_target[i] < 0 || st->loss_target[i] >= V)
            return mr_fail(e, MR_ERR_INPUT, "loss target id %d outside the vocabulary (0..%lld)", st->loss_target[i],
                           (long long)V - 1);
    llm_state_reset(s);
    s->train = st->train;
    s->dropout_seed = st->dropout_seed;
    int rc = st->emb ? llm_forward_embd(s, st->emb, T, st->loss_pos, st->n_loss, g->lg, e)
                     : llm_forward(s, st->ids, T, st->loss_pos, st->n_loss, g->lg, e);
    if (rc) {
        s->train = 0;
        return rc;
    }
    /* cross-entropy, mean over the terms; d logits into lg in place */
    if (st->logits) memcpy(st->logits, g->lg, (size_t)(st->n_loss * V) * sizeof(float));
    float row_loss[LLM_MAX_LOSS_POS];
    st->loss = (float)xent_forward_backward(g->lg, row_loss, g->lg, 0, st->loss_target, st->n_loss, (int)V, -1, NULL);
    /* output head (frozen) and final norm, into the residual gradient at the positions */
    qmat out = llm_qmat(&m->output);
    matmul_backward_input(g->dxn_out, g->lg, st->n_loss, &out, 0.0f, s->scratch, s->scratch_floats);
    memset(g->dres, 0, (size_t)(T * d) * sizeof(float));
    for (int i = 0; i < st->n_loss; i++) {
        const int64_t p = st->loss_pos[i];
        rmsnorm_backward(g->dres + p * d, g->dxn_out + i * d, s->acts.x + p * d, m->output_norm, s->acts.rstd_out + i,
                         1, (int)d);
    }
    for (int l = c->n_layer - 1; l >= 0; l--) {
        const int64_t r0 = l == c->n_layer - 1 ? s->acts.r_last : 0; /* as the forward computed it */
        if (!s->acts.keep_layers) { /* recompute this layer's activations from its kept input */
            llm_attention_block_forward(s, l, r0, T, 0);
            llm_ffn_block_forward(s, l, r0, T);
        }
        ffn_block_backward(s, l, r0, T, gs);
        /* nothing below layer 0's input is trained: its gradient only for d_emb */
        attention_block_backward(s, l, r0, T, gs, l > 0 || st->d_emb);
    }
    if (st->d_emb) memcpy(st->d_emb, g->dres, (size_t)(T * d) * sizeof(float));
    s->train = 0;
    return MR_OK;
}
