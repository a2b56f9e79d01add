/* The decoder forward, one function per step over plain buffers:
 *   embed -> for each layer: attention block, feed-forward block -> final norm -> logits
 * Activations a backward needs stay in s->acts (one copy per layer when
 * LLM_STATE_KEEP_ACTS). */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "llm/model_internal.h"
#include "nn/attention.h"
#include "nn/embedding.h"
#include "nn/lora.h"
#include "nn/rmsnorm.h"
#include "nn/rope.h"
#include "nn/swiglu.h"

/* Dequantization tiles hold at most this many floats (32 MB). */
#define LLM_TILE_FLOATS (8 << 20)

static rope_params model_rope(const llm_model *m) {
    rope_params p = {m->cfg.rope_dims, m->cfg.rope_base, m->cfg.rope_freq_scale, m->rope_freqs, m->cfg.rope_halves};
    return p;
}

int llm_lora_rank_targets(const llm_model *m, unsigned *targets) {
    int r = 0;
    *targets = 0;
    for (int l = 0; l < m->cfg.n_layer; l++)
        for (int t = 0; t < LLM_LORA_N_TARGETS; t++) {
            const llm_lora *lo = llm_layer_linear(&m->layers[l], t)->lora;
            if (lo && lo->rank > r) r = lo->rank;
            if (lo) *targets |= 1u << t;
        }
    return r;
}

static void acts_free(llm_acts *a, int n_layer) {
    /* a list holds one buffer per layer or one for all; without keep_in (no
     * backward) x_in aliases x and hidden aliases gate */
    float ***lists[] = {&a->xn_attn, &a->rstd_attn, &a->q,    &a->att, &a->att_stats, &a->att_probs, &a->x_mid,
                        &a->xn_ffn,  &a->rstd_ffn,  &a->gate, &a->up,  &a->x_in,      &a->hidden};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        float **p = *lists[i];
        const int alias = !a->keep_in && (lists[i] == &a->x_in || lists[i] == &a->hidden);
        for (int l = 0; p && !alias && l < n_layer; l++)
            if (!l || p[l] != p[l - 1]) free(p[l]);
        free(p);
    }
    free(a->x);
    free(a->lora_tmp);
    free(a->lora_x);
    free(a->drop_mask);
    free(a->xn_out);
    free(a->rstd_out);
    free(a->rope_cs);
    memset(a, 0, sizeof *a);
}

/* Allocates per-layer lists; without keep every layer points at buffer 0. */
static int acts_list(float ***out, int n_layer, int keep, int64_t floats, mr_error *e) {
    float **p = mr_calloc((size_t)n_layer, sizeof *p, e);
    if (!p) return MR_ERR_INTERNAL;
    *out = p;
    int n = keep ? n_layer : 1;
    for (int l = 0; l < n; l++) {
        p[l] = mr_alloc_aligned((size_t)floats * sizeof(float), e);
        if (!p[l]) return MR_ERR_INTERNAL;
        if (keep) llm_prefault(p[l], (size_t)floats * sizeof(float)); /* per-layer lists: training states only */
    }
    for (int l = n; l < n_layer; l++) p[l] = p[0];
    return MR_OK;
}

void llm_prefault(void *p, size_t bytes) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < bytes; i += 4096) ((volatile char *)p)[i] = 0;
}

/* A per-layer list whose entries all point at p (owned elsewhere). */
static int alias_list(float ***out, int n_layer, float *p, mr_error *e) {
    if (!(*out = mr_calloc((size_t)n_layer, sizeof **out, e))) return MR_ERR_INTERNAL;
    for (int l = 0; l < n_layer; l++) (*out)[l] = p;
    return MR_OK;
}

static int acts_init(llm_acts *a, const llm_model *m, int64_t T, int flags, mr_error *e) {
    const llm_config *c = &m->cfg;
    const int64_t d = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, L = c->n_layer;
    const int keep = (flags & LLM_STATE_KEEP_ACTS) != 0, train = (flags & LLM_TRAIN_STATE) != 0;
    memset(a, 0, sizeof *a);
    a->T_cap = T;
    a->keep_layers = keep;
    a->keep_in = train;
    int lr = llm_lora_rank_targets(m, &a->lora_targets);
    a->lora_cap = lr > 0 ? lr : 1;
    /* the inputs of gate, up and down are read back only for their adapters' gradients */
    const int keep_ffn_in = keep && (a->lora_targets >> LLM_LORA_GATE & 3), keep_hidden = keep && (a->lora_targets >> LLM_LORA_DOWN & 1);
    int64_t widest = d > qd ? d : qd;
    if (c->n_ff > widest) widest = c->n_ff;
    a->widest = widest;
    a->x = mr_alloc_aligned((size_t)(T * d) * sizeof(float), e);
    a->xn_out = mr_alloc_aligned((size_t)(T * d) * sizeof(float), e);
    a->rstd_out = mr_alloc((size_t)T * sizeof(float), e);
    a->rope_cs = mr_alloc((size_t)(T * c->rope_dims) * sizeof(float), e);
    a->lora_tmp = mr_alloc((size_t)(T * a->lora_cap) * sizeof(float), e);
    if (!a->x || !a->xn_out || !a->rstd_out || !a->rope_cs || !a->lora_tmp) return MR_ERR_INTERNAL;
    /* one mask per (layer, target), touched only where an adapter drops out */
    if (train && (!(a->lora_x = mr_alloc_aligned((size_t)(T * widest) * sizeof(float), e)) ||
                  !(a->drop_mask = mr_alloc((size_t)(L * LLM_LORA_N_TARGETS * ((T * widest + 15) / 16 * 2)), e))))
        return MR_ERR_INTERNAL;
    if (train ? acts_list(&a->x_in, (int)L, 1, T * d, e) : alias_list(&a->x_in, (int)L, a->x, e)) return MR_ERR_INTERNAL;
    if (acts_list(&a->xn_attn, (int)L, keep, T * d, e) || acts_list(&a->rstd_attn, (int)L, keep, T, e) ||
        acts_list(&a->q, (int)L, keep, T * qd, e) || acts_list(&a->att, (int)L, keep, T * qd, e) ||
        acts_list(&a->x_mid, (int)L, keep, T * d, e) || acts_list(&a->xn_ffn, (int)L, keep_ffn_in, T * d, e) ||
        acts_list(&a->rstd_ffn, (int)L, keep, T, e) || acts_list(&a->gate, (int)L, keep, T * c->n_ff, e) ||
        acts_list(&a->up, (int)L, keep, T * c->n_ff, e) ||
        (train && acts_list(&a->att_stats, (int)L, keep, T * c->n_head * 2, e)) ||
        (keep && acts_list(&a->att_probs, (int)L, 1, attention_probs_floats(T, c->n_head), e)))
        return MR_ERR_INTERNAL;
    /* without a backward, silu(gate)·up overwrites gate (one [T][n_ff] buffer less) */
    return train ? acts_list(&a->hidden, (int)L, keep_hidden, T * c->n_ff, e) : alias_list(&a->hidden, (int)L, a->gate[0], e);
}

int llm_state_init(llm_state *s, const llm_model *m, int64_t n_ctx, int64_t max_T, int flags, mr_error *e) {
    memset(s, 0, sizeof *s);
    s->m = m;
    s->flags = flags;
    const llm_config *c = &m->cfg;
    if (n_ctx <= 0 || max_T <= 0) return mr_fail(e, MR_ERR_USAGE, "context size must be positive");
    if (max_T > n_ctx) max_T = n_ctx;
    s->n_threads = omp_get_max_threads();
    const int64_t kvd = (int64_t)c->n_head_kv * c->head_dim;
    s->kv.n_ctx = n_ctx;
    /* one layer's cache when nothing generates after the pass: scoring, and training
     * with recomputation (the backward recomputes a layer's k and v with it) */
    s->kv.one_layer = (flags & (LLM_STATE_SCORE | LLM_STATE_RECOMPUTE)) && !(flags & LLM_STATE_KEEP_ACTS);
    const int f16 = (flags & LLM_STATE_KV_F16) != 0; /* then k, v hold one layer in floats */
    if (f16 && (flags & ~LLM_STATE_KV_F16)) return mr_fail(e, MR_ERR_USAGE, "an f16 KV cache is for generation only");
    const size_t kv16_bytes = (size_t)(c->n_layer * n_ctx * kvd) * sizeof(uint16_t);
    if (f16) s->kv.k16 = mr_alloc_aligned(kv16_bytes, e), s->kv.v16 = mr_alloc_aligned(kv16_bytes, e);
    const int64_t kv_layers = s->kv.one_layer || f16 ? 1 : c->n_layer;
    s->kv.k = mr_alloc_aligned((size_t)(kv_layers * n_ctx * kvd) * sizeof(float), e);
    s->kv.v = mr_alloc_aligned((size_t)(kv_layers * n_ctx * kvd) * sizeof(float), e);
    if (!s->kv.k || !s->kv.v || (f16 && (!s->kv.k16 || !s->kv.v16))) goto fail;
    if (acts_init(&s->acts, m, max_T, flags, e)) goto fail;
    /* scratch: the largest dequantization tile or attention work, whichever is bigger */
    int64_t need = attention_scratch_floats(n_ctx, s->n_threads);
    for (int i = -2; i < c->n_layer * LLM_LORA_N_TARGETS; i++) { /* output, tok_embd, every layer's linears */
        const int t = LLM_LORA_N_TARGETS;
        qmat q = llm_qmat(i < 0 ? (i == -2 ? &m->output : &m->tok_embd) : &llm_layer_linear(&m->layers[i / t], i % t)->w);
        const int64_t f = matmul_scratch_floats(&q, LLM_TILE_FLOATS, s->n_threads);
        need = f > need ? f : need;
    }
    s->scratch_floats = need;
    s->scratch = mr_alloc_aligned((size_t)need * sizeof(float), e);
    if (!s->scratch) goto fail;
    if ((flags & LLM_TRAIN_STATE) && llm_grads_init(s, max_T, e)) goto fail;
    return MR_OK;
fail:
    llm_state_free(s);
    return e->code ? e->code : MR_ERR_INTERNAL;
}

void llm_state_free(llm_state *s) {
    if (!s || !s->m) return;
    acts_free(&s->acts, s->m->cfg.n_layer);
    llm_grads_free(s);
    free(s->kv.k), free(s->kv.v), free(s->kv.k16), free(s->kv.v16);
    free(s->scratch);
    memset(s, 0, sizeof *s);
}

void llm_state_reset(llm_state *s) { s->kv.n_past = 0; }

void llm_embed_token(const llm_model *m, int32_t id, float *out) {
    qmat q = llm_qmat(&m->tok_embd);
    qmat_row(&q, id, out);
}

/* Rows r0..T-1 of y[T][rows] = beta·y + x[T][cols] Wᵀ + bias + scale·(drop(x) Aᵀ) Bᵀ */
static void linear_forward(llm_state *s, float *y, const float *x, int64_t r0, int64_t T, const llm_linear *L,
                           float beta) {
    const int64_t rows = L->w.rows, cols = L->w.cols, n = T - r0;
    if (n <= 0) return;
    y += r0 * rows, x += r0 * cols;
    qmat q = llm_qmat(&L->w); /* training states: float activations (nn/matmul.h) */
    (s->flags & LLM_TRAIN_STATE ? matmul_forward_float : matmul_forward)(y, x, n, &q, beta, s->scratch, s->scratch_floats);
    if (L->bias) {
        for (int64_t t = 0; t < n; t++)
            for (int64_t r = 0; r < rows; r++) y[t * rows + r] += L->bias[r];
    }
    if (L->lora) {
        const llm_lora *lo = L->lora;
        if (s->train && lo->dropout > 0.0f && s->acts.lora_x) {
            lora_dropout_forward(s->acts.lora_x, llm_dropout_mask(s, lo), x, n * cols, r0 * cols, lo->dropout,
                                 llm_dropout_key(s, lo));
            x = s->acts.lora_x;
        }
        lora_forward(y, s->acts.lora_tmp, x, lo->a, lo->b, n, lo->in, lo->out, lo->rank, lo->scale);
    }
}

/* Layer l's rows of the float cache k or v (the one layer they hold, when one_layer or f16). */
static float *kv_layer(const llm_state *s, float *cache, int l) {
    return cache + (s->kv.one_layer || s->kv.k16 ? 0 : l * s->kv.n_ctx * s->m->cfg.n_head_kv * s->m->cfg.head_dim);
}

/* Attention block of layer l over T positions starting at n_past:
 *   x_in[T][d] -> xn_attn = rmsnorm(x_in)·attn_norm
 *   q[T][qd] = rope(xn Wqᵀ + bq); k, v [T][kvd] into the cache rows n_past..
 *   att[T][qd] = attention(q, k, v); x_mid[T][d] = x_in + att Woᵀ
 * (q, att, x_mid: rows r0.. only; kept probabilities only when r0 is 0) */
void llm_attention_block_forward(llm_state *s, int l, int64_t r0, int64_t T, int64_t n_past) {
    const llm_model *m = s->m;
    const llm_config *c = &m->cfg;
    const llm_layer *L = &m->layers[l];
    llm_acts *a = &s->acts;
    const int64_t d = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim;
    rope_params rp = model_rope(m);
    rmsnorm_forward(a->xn_attn[l], a->rstd_attn[l], a->x_in[l], L->attn_norm, T, (int)d, c->rms_eps);
    float *k = kv_layer(s, s->kv.k, l) + n_past * kvd, *v = kv_layer(s, s->kv.v, l) + n_past * kvd;
    linear_forward(s, a->q[l], a->xn_attn[l], r0, T, &L->wq, 0.0f);
    linear_forward(s, k, a->xn_attn[l], 0, T, &L->wk, 0.0f);
    linear_forward(s, v, a->xn_attn[l], 0, T, &L->wv, 0.0f);
    rope_forward(a->q[l] + r0 * qd, a->rope_cs + r0 * (c->rope_dims / 2 * 2), &rp, T - r0, c->n_head, c->head_dim);
    rope_forward(k, a->rope_cs, &rp, T, c->n_head_kv, c->head_dim);
    if (s->kv.k16)
        attention_forward_f16_cache(a->att[l] + r0 * qd, a->q[l] + r0 * qd, T - r0, k - n_past * kvd, v - n_past * kvd,
                                    s->kv.k16 + l * s->kv.n_ctx * kvd, s->kv.v16 + l * s->kv.n_ctx * kvd, n_past, T,
                                    c->n_head, c->n_head_kv, c->head_dim, s->scratch, s->scratch_floats);
    else
        attention_forward_stats(a->att[l] + r0 * qd, a->att_stats ? a->att_stats[l] + r0 * c->n_head * 2 : NULL,
                                a->att_probs && !r0 ? a->att_probs[l] : NULL, a->q[l] + r0 * qd, k - n_past * kvd,
                                v - n_past * kvd, T - r0, n_past + r0, c->n_head, c->n_head_kv, c->head_dim, s->scratch,
                                s->scratch_floats);
    memcpy(a->x_mid[l] + r0 * d, a->x_in[l] + r0 * d, (size_t)((T - r0) * d) * sizeof(float));
    linear_forward(s, a->x_mid[l], a->att[l], r0, T, &L->wo, 1.0f);
}

/* Feed-forward block of layer l, rows r0..T-1: x_mid[T][d] -> xn_ffn = rmsnorm(x_mid)·ffn_norm,
 * gate, up [T][n_ff], hidden = silu(gate)·up, x[T][d] = x_mid + hidden W_downᵀ */
void llm_ffn_block_forward(llm_state *s, int l, int64_t r0, int64_t T) {
    const llm_model *m = s->m;
    const llm_config *c = &m->cfg;
    const llm_layer *L = &m->layers[l];
    llm_acts *a = &s->acts;
    const int64_t d = c->n_embd, ff = c->n_ff, n = T - r0;
    rmsnorm_forward(a->xn_ffn[l] + r0 * d, a->rstd_ffn[l] + r0, a->x_mid[l] + r0 * d, L->ffn_norm, n, (int)d, c->rms_eps);
    linear_forward(s, a->gate[l], a->xn_ffn[l], r0, T, &L->w_gate, 0.0f);
    linear_forward(s, a->up[l], a->xn_ffn[l], r0, T, &L->w_up, 0.0f);
    swiglu_forward(a->hidden[l] + r0 * ff, a->gate[l] + r0 * ff, a->up[l] + r0 * ff, n * ff);
    memcpy(a->x + r0 * d, a->x_mid[l] + r0 * d, (size_t)(n * d) * sizeof(float));
    linear_forward(s, a->x, a->hidden[l], r0, T, &L->w_down, 1.0f);
}

/* logits[n_out][n_vocab] = rmsnorm(x[out_pos])·output_norm · outputᵀ */
static void logits_forward(llm_state *s, const int64_t *out_pos, int n_out, float *logits) {
    const llm_model *m = s->m;
    const int64_t d = m->cfg.n_embd;
    llm_acts *a = &s->acts;
    for (int i = 0; i < n_out; i++) memcpy(a->xn_out + i * d, a->x + out_pos[i] * d, (size_t)d * sizeof(float));
    rmsnorm_forward(a->xn_out, a->rstd_out, a->xn_out, m->output_norm, n_out, (int)d, m->cfg.rms_eps);
    qmat q = llm_qmat(&m->output);
    (s->flags & LLM_TRAIN_STATE ? matmul_forward_float : matmul_forward)(logits, a->xn_out, n_out, &q, 0, s->scratch, s->scratch_floats);
}

int llm_forward_embd(llm_state *s, const float *embd, int64_t T, const int64_t *out_pos, int n_out, float *logits,
                     mr_error *e) {
    const llm_model *m = s->m;
    const llm_config *c = &m->cfg;
    const int64_t d = c->n_embd;
    if (T <= 0) return mr_fail(e, MR_ERR_USAGE, "forward: no positions");
    if (T > s->acts.T_cap)
        return mr_fail(e, MR_ERR_USAGE, "forward: %lld positions in one call, the state holds %lld", (long long)T,
                       (long long)s->acts.T_cap);
    const int64_t n_past = s->kv.one_layer ? 0 : s->kv.n_past;
    if (n_past + T > s->kv.n_ctx)
        return mr_fail(e, MR_ERR_USAGE, "forward: context of %lld positions is full (%lld + %lld)",
                       (long long)s->kv.n_ctx, (long long)n_past, (long long)T);
    for (int i = 0; i < n_out; i++)
        if (out_pos[i] < 0 || out_pos[i] >= T)
            return mr_fail(e, MR_ERR_USAGE, "forward: logits asked for position %lld of %lld", (long long)out_pos[i],
                           (long long)T);
    unsigned targets;
    const int rank = llm_lora_rank_targets(m, &targets);
    if (rank > s->acts.lora_cap)
        return mr_fail(e, MR_ERR_USAGE, "forward: an adapter of rank %d was attached after the state was made for %d",
                       rank, s->acts.lora_cap);
    if (s->acts.keep_layers && (targets & ~s->acts.lora_targets) >> LLM_LORA_GATE)
        return mr_fail(e, MR_ERR_USAGE, "forward: an adapter on gate, up or down was attached after the state was made");
    if (embd != s->acts.x) memcpy(s->acts.x, embd, (size_t)(T * d) * sizeof(float));
    rope_params rp = model_rope(m);
    rope_table(s->acts.rope_cs, &rp, T, n_past);
    s->acts.r_last = T; /* the last layer from the first row asked for */
    for (int i = 0; i < n_out; i++) s->acts.r_last = out_pos[i] < s->acts.r_last ? out_pos[i] : s->acts.r_last;
    for (int l = 0; l < c->n_layer; l++) {
        const int64_t r0 = l == c->n_layer - 1 ? s->acts.r_last : 0;
        if (s->acts.keep_in) memcpy(s->acts.x_in[l], s->acts.x, (size_t)(T * d) * sizeof(float));
        llm_attention_block_forward(s, l, r0, T, n_past);
        llm_ffn_block_forward(s, l, r0, T);
    }
    if (!s->kv.one_layer) s->kv.n_past += T;
    if (n_out > 0) logits_forward(s, out_pos, n_out, logits);
    return MR_OK;
}

int llm_forward(llm_state *s, const int32_t *tokens, int64_t T, const int64_t *out_pos, int n_out, float *logits,
                mr_error *e) {
    const llm_model *m = s->m;
    if (T > s->acts.T_cap)
        return mr_fail(e, MR_ERR_USAGE, "forward: %lld tokens in one call, the state holds %lld", (long long)T,
                       (long long)s->acts.T_cap);
    for (int64_t t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= m->cfg.n_vocab)
            return mr_fail(e, MR_ERR_INPUT, "token id %d at position %lld is outside the vocabulary (0..%d)",
                           (int)tokens[t], (long long)t, m->cfg.n_vocab - 1);
    qmat q = llm_qmat(&m->tok_embd);
    embedding_forward(s->acts.x, &q, tokens, T);
    return llm_forward_embd(s, s->acts.x, T, out_pos, n_out, logits, e);
}
