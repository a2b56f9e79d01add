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
    const int keep = (flags & LLM_STATE_KEEP_ACTS) != 0; /* per layer: xn_attn, x_mid, xn_ffn, q, att, gate, up, */
    const double per_layer = T * (4 * d + 2 * qd + 3 * ff + 2 + 2 * c->n_head) + /* hidden, stats, probs */
                             (keep ? (double)attention_probs_floats(T, c->n_head) : 0), layers = keep ? L : 1;
    const double kept = T * d * L + 2 * T * kvd * layers;      /* x_in and the k, v cache */
    const double grads = T * (2 * d + 2 * qd + 2 * kvd + 3 * ff) + 2.0 * 2 * 64 * T;
    return 4.0 * (layers * per_layer + kept + grads);
}

int llm_grads_init(llm_state *s, int64_t T, mr_error *e) {
    const llm_config *c = &s->m->cfg;
    const int64_t d = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim;
    int64_t widest = d > qd ? d : qd;
    if (c->n_ff > widest) widest = c->n_ff;
    struct llm_grads *g = mr_calloc(1, sizeof *g, e);
    if (!g) return MR_ERR_INTERNAL;
    s->g = g;
    g->att_scratch_floats = attention_backward_scratch_floats(T, c->n_head, c->n_head_kv, c->head_dim, s->n_threads);
    float **bufs[] = {&g->dres, &g->dxn, &g->datt, &g->dq, &g->dk, &g->dv, &g->dgate, &g->dup, &g->lora_dx,
                      &g->lg, &g->dxn_out, &g->att_scratch};
    const int64_t sizes[] = {T * d, T * d, T * qd, T * qd, T * kvd, T * kvd, T * c->n_ff, T * c->n_ff, T * widest,
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

/* dx[T][cols] += dy[T][rows] · W, plus the adapter's part (through its dropout
 * mask); the adapter's dA, dB += gs · their gradients. x: the forward's input.
 * dx NULL: only the adapter's gradients. */
static void linear_backward(llm_state *s, float *dx, const float *dy, const float *x, int64_t T, const llm_linear *L,
                            float gs) {
    qmat q = llm_qmat(&L->w);
    if (dx) matmul_backward_input(dx, dy, T, &q, s->scratch, s->scratch_floats);
    const llm_lora *lo = L->lora;
    if (!lo || !lo->da) return;
    const int drop = s->train && lo->dropout > 0.0f;
    const int64_t n = T * lo->in;
    if (!drop) {
        lora_backward(dx, lo->da, lo->db, s->acts.lora_tmp, dy, x, lo->a, lo->b, T, lo->in, lo->out, lo->rank,
                      lo->scale, gs);
        return;
    }
    /* through the mask: A's gradient sees drop(x); dx gets drop(d drop(x)) */
    float *xd = s->acts.lora_x, *gx = dx ? s->g->lora_dx : NULL;
    llm_lora_dropout(xd, x, n, lo->dropout, s->dropout_seed, lo->id, 0);
    if (gx) memset(gx, 0, (size_t)n * sizeof(float));
    lora_backward(gx, lo->da, lo->db, s->acts.lora_tmp, dy, xd, lo->a, lo->b, T, lo->in, lo->out, lo->rank, lo->scale,
                  gs);
    if (gx) llm_lora_dropout(dx, gx, n, lo->dropout, s->dropout_seed, lo->id, 1);
}

/* Feed-forward block of layer l: g->dres holds d x_out on entry, d x_mid on return. */
static void ffn_block_backward(llm_state *s, int l, int64_t T, float gs) {
    const llm_config *c = &s->m->cfg;
    const llm_layer *L = &s->m->layers[l];
    llm_acts *a = &s->acts;
    struct llm_grads *g = s->g;
    const int64_t d = c->n_embd, ff = c->n_ff;
    memset(g->dgate, 0, (size_t)(T * ff) * sizeof(float));
    linear_backward(s, g->dgate, g->dres, a->hidden[l], T, &L->w_down, gs); /* d hidden */
    swiglu_backward(g->dgate, g->dup, g->dgate, a->gate[l], a->up[l], T * ff);
    memset(g->dxn, 0, (size_t)(T * d) * sizeof(float));
    linear_backward(s, g->dxn, g->dgate, a->xn_ffn[l], T, &L->w_gate, gs);
    linear_backward(s, g->dxn, g->dup, a->xn_ffn[l], T, &L->w_up, gs);
    rmsnorm_backward(g->dres, g->dxn, a->x_mid[l], L->ffn_norm, a->rstd_ffn[l], T, (int)d);
}

/* Attention block of layer l: g->dres holds d x_mid on entry, d x_in on return
 * (unless need_dx is 0: then only the adapters' gradients are formed). */
static void attention_block_backward(llm_state *s, int l, int64_t T, float gs, int need_dx) {
    const llm_config *c = &s->m->cfg;
    const llm_layer *L = &s->m->layers[l];
    llm_acts *a = &s->acts;
    struct llm_grads *g = s->g;
    const int64_t d = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim;
    const int64_t kv_off = (s->kv.one_layer ? 0 : (int64_t)l) * s->kv.n_ctx * kvd;
    const float *k = s->kv.k + kv_off, *v = s->kv.v + kv_off;
    rope_params rp = {c->rope_dims, c->rope_base, c->rope_freq_scale, s->m->rope_freqs, c->rope_halves};
    memset(g->datt, 0, (size_t)(T * qd) * sizeof(float));
    linear_backward(s, g->datt, g->dres, a->att[l], T, &L->wo, gs);
    attention_backward(g->dq, g->dk, g->dv, g->datt, a->att[l], a->att_stats[l], a->att_probs ? a->att_probs[l] : NULL,
                       a->q[l], k, v, T, c->n_head, c->n_head_kv, c->head_dim, g->att_scratch, g->att_scratch_floats);
    rope_backward(g->dq, a->rope_cs, &rp, T, c->n_head, c->head_dim);
    rope_backward(g->dk, a->rope_cs, &rp, T, c->n_head_kv, c->head_dim);
    float *dxn = need_dx ? g->dxn : NULL;
    if (dxn) memset(dxn, 0, (size_t)(T * d) * sizeof(float));
    linear_backward(s, dxn, g->dq, a->xn_attn[l], T, &L->wq, gs);
    linear_backward(s, dxn, g->dk, a->xn_attn[l], T, &L->wk, gs);
    linear_backward(s, dxn, g->dv, a->xn_attn[l], T, &L->wv, gs);
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
    memset(g->dxn_out, 0, (size_t)(st->n_loss * d) * sizeof(float));
    matmul_backward_input(g->dxn_out, g->lg, st->n_loss, &out, s->scratch, s->scratch_floats);
    memset(g->dres, 0, (size_t)(T * d) * sizeof(float));
    for (int i = 0; i < st->n_loss; i++) {
        const int64_t p = st->loss_pos[i];
        rmsnorm_backward(g->dres + p * d, g->dxn_out + i * d, s->acts.x + p * d, m->output_norm, s->acts.rstd_out + i,
                         1, (int)d);
    }
    for (int l = c->n_layer - 1; l >= 0; l--) {
        if (!s->acts.keep_layers) { /* recompute this layer's activations from its kept input */
            llm_attention_block_forward(s, l, T, 0);
            llm_ffn_block_forward(s, l, T);
        }
        ffn_block_backward(s, l, T, gs);
        /* nothing below layer 0's input is trained: its gradient only for d_emb */
        attention_block_backward(s, l, T, gs, l > 0 || st->d_emb);
    }
    if (st->d_emb) memcpy(st->d_emb, g->dres, (size_t)(T * d) * sizeof(float));
    s->train = 0;
    return MR_OK;
}
