/* The training view (mr_lt_model) of a model loaded by the engine (llm_model):
 * the same stored matrices, no copies. */
#include "mllm4rec/llm.h"
#include "mllm4rec/ranker.h"

#include <stdlib.h>
#include <string.h>

static mr_lt_weight view(const llm_matrix *w) {
    mr_lt_weight v = {w->type, w->rows, w->cols, w->data};
    return v;
}

int mr_lt_model_from_llm(mr_lt_model *m, const llm_model *src, mr_error *e) {
    memset(m, 0, sizeof *m);
    const llm_config *c = &src->cfg;
    if (c->rope_dims != c->head_dim)
        return mr_fail(e, MR_ERR_INPUT, "%s: partial rotary embeddings (%d of %d dimensions) are not supported for training",
                       src->path, c->rope_dims, c->head_dim);
    m->arch = c->arch == LLM_ARCH_QWEN2 ? "qwen2" : "llama";
    m->n_layer = c->n_layer;
    m->dim = c->n_embd;
    m->n_head = c->n_head;
    m->n_kv_head = c->n_head_kv;
    m->head_dim = c->head_dim;
    m->ffn = c->n_ff;
    m->vocab = c->n_vocab;
    m->norm_eps = c->rms_eps;
    m->rope_theta = (float)c->rope_base;
    m->rope_scale = c->rope_freq_scale > 0 ? (float)(1.0 / c->rope_freq_scale) : 1.0f;
    m->rope_mode = c->rope_halves ? MR_ROPE_NEOX : MR_ROPE_NORM;
    m->rope_factors = src->rope_freqs;
    m->tok_embd = view(&src->tok_embd);
    m->output = view(&src->output);
    m->out_norm = src->output_norm;
    m->layers = mr_calloc((size_t)c->n_layer, sizeof *m->layers, e);
    if (!m->layers) return e->code;
    for (int l = 0; l < c->n_layer; l++) {
        const llm_layer *s = &src->layers[l];
        mr_lt_layer *d = &m->layers[l];
        d->attn_norm = s->attn_norm;
        d->ffn_norm = s->ffn_norm;
        d->bq = s->wq.bias;
        d->bk = s->wk.bias;
        d->bv = s->wv.bias;
        if (s->wo.bias || s->w_gate.bias || s->w_up.bias || s->w_down.bias) {
            mr_lt_model_release(m);
            return mr_fail(e, MR_ERR_INPUT, "%s: layer %d has output or feed-forward biases (not supported for training)",
                           src->path, l);
        }
        d->w[MR_LT_Q] = view(&s->wq.w);
        d->w[MR_LT_K] = view(&s->wk.w);
        d->w[MR_LT_V] = view(&s->wv.w);
        d->w[MR_LT_O] = view(&s->wo.w);
        d->w[MR_LT_GATE] = view(&s->w_gate.w);
        d->w[MR_LT_UP] = view(&s->w_up.w);
        d->w[MR_LT_DOWN] = view(&s->w_down.w);
    }
    int rc = mr_lt_model_check(m, e);
    if (rc) mr_lt_model_release(m);
    return rc;
}

void mr_lt_model_release(mr_lt_model *m) {
    free(m->layers);
    m->layers = NULL;
}
