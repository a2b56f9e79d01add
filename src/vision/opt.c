/* OPT decoder with a KV cache; see opt.h. Layer code follows transformers 4.33
 * modeling_opt.py: for each block
 *   h = x + out_proj(attn(LN1(x)))      q = (Wq x + bq) * hd^-0.5, causal
 *   x = h + fc2(relu(fc1(LN2(h))))
 * and logits = head(final_LN(x)). */
#include "vision/opt.h"

#include <omp.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/attention.h"
#include "nn/layernorm.h"

int opt_config_parse(opt_config *c, json_t *obj, const char *where, mr_error *e) {
    memset(c, 0, sizeof *c);
    c->vocab = 50272;
    c->hidden = 768;
    c->ffn = 3072;
    c->layers = 12;
    c->heads = 12;
    c->max_pos = 2048;
    c->word_proj = -1;
    c->bos = 2;
    c->eos = 2;
    c->pad = 1;
    c->max_length = 20;
    c->forced_eos = -1;
    c->repetition_penalty = 1.0f;
    c->pre_ln = 1;
    c->enable_bias = 1;
    c->ln_affine = 1;
    const char *act = "relu", *type = NULL;
    int rc;
    if ((rc = vw_cfg_int(obj, "vocab_size", &c->vocab, where, e)) ||
        (rc = vw_cfg_int(obj, "hidden_size", &c->hidden, where, e)) ||
        (rc = vw_cfg_int(obj, "ffn_dim", &c->ffn, where, e)) ||
        (rc = vw_cfg_int(obj, "num_hidden_layers", &c->layers, where, e)) ||
        (rc = vw_cfg_int(obj, "num_attention_heads", &c->heads, where, e)) ||
        (rc = vw_cfg_int(obj, "max_position_embeddings", &c->max_pos, where, e)) ||
        (rc = vw_cfg_int(obj, "word_embed_proj_dim", &c->word_proj, where, e)) ||
        (rc = vw_cfg_int(obj, "bos_token_id", &c->bos, where, e)) ||
        (rc = vw_cfg_int(obj, "eos_token_id", &c->eos, where, e)) ||
        (rc = vw_cfg_int(obj, "pad_token_id", &c->pad, where, e)) ||
        (rc = vw_cfg_int(obj, "max_length", &c->max_length, where, e)) ||
        (rc = vw_cfg_int(obj, "min_length", &c->min_length, where, e)) ||
        (rc = vw_cfg_int(obj, "no_repeat_ngram_size", &c->no_repeat_ngram_size, where, e)) ||

        (rc = vw_cfg_float(obj, "repetition_penalty", &c->repetition_penalty, where, e)) ||
        (rc = vw_cfg_bool(obj, "do_layer_norm_before", &c->pre_ln, where, e)) ||
        (rc = vw_cfg_bool(obj, "enable_bias", &c->enable_bias, where, e)) ||
        (rc = vw_cfg_bool(obj, "_remove_final_layer_norm", &c->remove_final_ln, where, e)) ||
        (rc = vw_cfg_bool(obj, "layer_norm_elementwise_affine", &c->ln_affine, where, e)) ||
        (rc = vw_cfg_str(obj, "activation_function", &act, where, e)) ||
        (rc = vw_cfg_str(obj, "model_type", &type, where, e)))
        return rc;
    if (c->word_proj < 0) c->word_proj = c->hidden;
    if (type && strcmp(type, "opt"))
        return mr_fail(e, MR_ERR_INPUT, "%s: the language model is \"%s\"; only OPT is supported", where, type);
    if (vw_act_parse(act, &c->act))
        return mr_fail(e, MR_ERR_INPUT, "%s: activation_function \"%s\" is not supported", where, act);
    if (c->vocab <= 0 || c->hidden <= 0 || c->ffn <= 0 || c->layers <= 0 || c->heads <= 0 || c->max_pos <= 0 ||
        c->hidden % c->heads)
        return mr_fail(e, MR_ERR_INPUT, "%s: bad OPT sizes (hidden %d, heads %d, ffn %d, layers %d, vocab %d)", where,
                       c->hidden, c->heads, c->ffn, c->layers, c->vocab);
    if (!c->pre_ln || c->word_proj != c->hidden || c->remove_final_ln || !c->ln_affine)
        return mr_fail(e, MR_ERR_INPUT,
                       "%s: this OPT variant (post-LayerNorm, word_embed_proj_dim != hidden_size, no final or no "
                       "affine LayerNorm, as OPT-350m) is not supported",
                       where);
    json_t *fe = obj ? json_object_get(obj, "forced_eos_token_id") : NULL;
    if (json_is_array(fe)) fe = json_array_get(fe, 0); /* a list: the first (our eos is single) */
    if (fe && !json_is_null(fe)) {
        if (!json_is_integer(fe)) return mr_fail(e, MR_ERR_INPUT, "%s: \"forced_eos_token_id\" must be an integer", where);
        c->forced_eos = (int)json_integer_value(fe);
    }
    if (c->max_length < 1) c->max_length = 1;
    if (!(c->repetition_penalty > 0))
        return mr_fail(e, MR_ERR_INPUT, "%s: repetition_penalty must be positive", where);
    if (c->forced_eos >= c->vocab || c->forced_eos < 0) c->forced_eos = -1;
    int beams = 1, sample = 0;
    if ((rc = vw_cfg_int(obj, "num_beams", &beams, where, e)) || (rc = vw_cfg_bool(obj, "do_sample", &sample, where, e)))
        return rc;
    if (beams > 1 || sample)
        mr_log("%s: num_beams %d / do_sample %s are ignored: captions use greedy search", where, beams,
               sample ? "true" : "false");
    return MR_OK;
}

static int load_vec(vw_loader *L, float **w, const char *prefix, const char *name, int64_t n, int optional,
                    mr_error *e) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    if (optional && !vw_has(L, full)) {
        *w = NULL;
        return MR_OK;
    }
    return vw_load_vec(L, w, full, n, e);
}

static int load_mat(vw_loader *L, vw_mat *w, const char *prefix, const char *name, int64_t r, int64_t c,
                    ggml_type type, mr_error *e) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    return vw_load_mat(L, w, full, r, c, type, e);
}

int opt_load(opt_model *m, vw_loader *L, const opt_config *c, const char *prefix, const char *head_name,
             ggml_type type, mr_error *e) {
    memset(m, 0, sizeof *m);
    m->c = *c;
    int H = c->hidden, F = c->ffn, nb = !c->enable_bias;
    int rc;
    if ((rc = load_mat(L, &m->embed, prefix, "embed_tokens.weight", c->vocab, H, type, e)) ||
        (rc = load_vec(L, &m->pos, prefix, "embed_positions.weight", ((int64_t)c->max_pos + 2) * H, 0, e)) ||
        (rc = load_vec(L, &m->lnf_w, prefix, "final_layer_norm.weight", H, 0, e)) ||
        (rc = load_vec(L, &m->lnf_b, prefix, "final_layer_norm.bias", H, 0, e)))
        return rc;
    if (head_name && vw_has(L, head_name)) {
        if ((rc = vw_load_mat(L, &m->head, head_name, c->vocab, H, type, e))) return rc;
    } else {
        m->head.q = m->embed.q;
        m->head_is_embed = 1;
    }
    m->layers = mr_calloc(c->layers, sizeof(opt_layer), e);
    if (!m->layers) return MR_ERR_INTERNAL;
    for (int l = 0; l < c->layers; l++) {
        char p[400];
        snprintf(p, sizeof p, "%slayers.%d.", prefix, l);
        opt_layer *y = &m->layers[l];
        if ((rc = load_mat(L, &y->q, p, "self_attn.q_proj.weight", H, H, type, e)) ||
            (rc = load_mat(L, &y->k, p, "self_attn.k_proj.weight", H, H, type, e)) ||
            (rc = load_mat(L, &y->v, p, "self_attn.v_proj.weight", H, H, type, e)) ||
            (rc = load_mat(L, &y->o, p, "self_attn.out_proj.weight", H, H, type, e)) ||
            (rc = load_vec(L, &y->qb, p, "self_attn.q_proj.bias", H, nb, e)) ||
            (rc = load_vec(L, &y->kb, p, "self_attn.k_proj.bias", H, nb, e)) ||
            (rc = load_vec(L, &y->vb, p, "self_attn.v_proj.bias", H, nb, e)) ||
            (rc = load_vec(L, &y->ob, p, "self_attn.out_proj.bias", H, nb, e)) ||
            (rc = load_vec(L, &y->ln1_w, p, "self_attn_layer_norm.weight", H, 0, e)) ||
            (rc = load_vec(L, &y->ln1_b, p, "self_attn_layer_norm.bias", H, 0, e)) ||
            (rc = load_mat(L, &y->fc1, p, "fc1.weight", F, H, type, e)) ||
            (rc = load_vec(L, &y->fc1_b, p, "fc1.bias", F, nb, e)) ||
            (rc = load_mat(L, &y->fc2, p, "fc2.weight", H, F, type, e)) ||
            (rc = load_vec(L, &y->fc2_b, p, "fc2.bias", H, nb, e)) ||
            (rc = load_vec(L, &y->ln2_w, p, "final_layer_norm.weight", H, 0, e)) ||
            (rc = load_vec(L, &y->ln2_b, p, "final_layer_norm.bias", H, 0, e)))
            return rc;
    }
    m->mm_scratch_floats = L->scratch_floats > 0 ? L->scratch_floats : 0;
    if (m->mm_scratch_floats && !(m->mm_scratch = mr_alloc_aligned(sizeof(float) * (size_t)m->mm_scratch_floats, e)))
        return MR_ERR_INTERNAL;
    return MR_OK;
}

static void free_activations(opt_model *m) {
    float **b[] = {&m->x, &m->xn, &m->q, &m->att, &m->ff, &m->last, &m->att_scratch};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
        free(*b[i]);
        *b[i] = NULL;
    }
    m->max_T = 0;
}

void opt_free(opt_model *m) {
    if (m->layers) {
        for (int l = 0; l < m->c.layers; l++) {
            opt_layer *y = &m->layers[l];
            vw_mat *mats[] = {&y->q, &y->k, &y->v, &y->o, &y->fc1, &y->fc2};
            for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) vw_mat_free(mats[i]);
            float *vecs[] = {y->qb, y->kb, y->vb, y->ob, y->fc1_b, y->fc2_b, y->ln1_w, y->ln1_b, y->ln2_w, y->ln2_b};
            for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) free(vecs[i]);
        }
        free(m->layers);
    }
    vw_mat_free(&m->embed);
    if (!m->head_is_embed) vw_mat_free(&m->head);
    free(m->pos);
    free(m->lnf_w);
    free(m->lnf_b);
    free(m->k_cache);
    free(m->v_cache);
    free(m->mm_scratch);
    free_activations(m);
    memset(m, 0, sizeof *m);
}

int opt_begin(opt_model *m, int capacity, mr_error *e) {
    if (capacity > m->c.max_pos)
        return mr_fail(e, MR_ERR_INPUT, "%d positions exceed the model's max_position_embeddings %d", capacity,
                       m->c.max_pos);
    m->n_past = 0;
    if (capacity <= m->capacity) return MR_OK;
    free(m->k_cache);
    free(m->v_cache);
    free_activations(m); /* the attention scratch is sized by the capacity */
    size_t n = (size_t)m->c.layers * capacity * m->c.hidden;
    m->k_cache = mr_alloc(n * sizeof(float), e);
    m->v_cache = mr_alloc(n * sizeof(float), e);
    m->capacity = (m->k_cache && m->v_cache) ? capacity : 0;
    return m->capacity ? MR_OK : MR_ERR_INTERNAL;
}

int opt_embed(opt_model *m, const int32_t *ids, int n, float *out, mr_error *e) {
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= m->c.vocab)
            return mr_fail(e, MR_ERR_INPUT, "token id %d is outside the vocabulary (0..%d)", ids[i], m->c.vocab - 1);
        qmat_row(&m->embed.q, ids[i], out + (size_t)i * m->c.hidden);
    }
    return MR_OK;
}

static int ensure_activations(opt_model *m, int T, mr_error *e) {
    if (T <= m->max_T) return MR_OK;
    free_activations(m);
    size_t H = m->c.hidden;
    m->att_scratch_floats = attention_scratch_floats(m->capacity, omp_get_max_threads());
    m->x = mr_alloc(sizeof(float) * T * H, e);
    m->xn = mr_alloc(sizeof(float) * T * H, e);
    m->q = mr_alloc(sizeof(float) * T * H, e);
    m->att = mr_alloc(sizeof(float) * T * H, e);
    m->ff = mr_alloc(sizeof(float) * T * (size_t)m->c.ffn, e);
    m->last = mr_alloc(sizeof(float) * H, e);
    m->att_scratch = mr_alloc(sizeof(float) * (size_t)m->att_scratch_floats, e);
    if (!m->x || !m->xn || !m->q || !m->att || !m->ff || !m->last || !m->att_scratch) {
        free_activations(m);
        return MR_ERR_INTERNAL;
    }
    m->max_T = T;
    return MR_OK;
}

/* y[T][rows] = x[T][cols] Wᵀ + b through the product m->float_act selects. */
static void opt_linear(const opt_model *m, float *y, const float *x, int T, const vw_mat *W, const float *b) {
    if (m->float_act) vw_linear_float(y, x, T, W, b, m->mm_scratch, m->mm_scratch_floats);
    else vw_linear(y, x, T, W, b, m->mm_scratch, m->mm_scratch_floats);
}

int opt_forward(opt_model *m, const float *embeds, int T, float *logits, int all_logits, mr_error *e) {
    const opt_config *c = &m->c;
    int H = c->hidden, hd = H / c->heads, rc;
    if (T <= 0) return mr_fail(e, MR_ERR_USAGE, "opt_forward: no positions");
    if (m->n_past + T > m->capacity)
        return mr_fail(e, MR_ERR_INPUT, "sequence of %d positions exceeds the cache of %d", m->n_past + T, m->capacity);
    if ((rc = ensure_activations(m, T, e))) return rc;
    int p0 = m->n_past;
    for (int t = 0; t < T; t++) {
        float *x = m->x + (size_t)t * H;
        const float *pe = m->pos + (size_t)(p0 + t + 2) * H; /* OPT's learned-position offset */
        for (int i = 0; i < H; i++) x[i] = embeds[(size_t)t * H + i] + pe[i];
    }
    for (int l = 0; l < c->layers; l++) {
        opt_layer *y = &m->layers[l];
        float *kl = m->k_cache + (size_t)l * m->capacity * H, *vl = m->v_cache + (size_t)l * m->capacity * H;
        layernorm_forward(m->xn, NULL, NULL, m->x, y->ln1_w, y->ln1_b, T, H, 1e-5f);
        opt_linear(m, m->q, m->xn, T, &y->q, y->qb);
        opt_linear(m, kl + (size_t)p0 * H, m->xn, T, &y->k, y->kb);
        opt_linear(m, vl + (size_t)p0 * H, m->xn, T, &y->v, y->vb);
        /* (q hd^-0.5) k = hd^-0.5 (q k): attention_forward applies the scale */
        attention_forward(m->att, m->q, kl, vl, T, p0, c->heads, c->heads, hd, m->att_scratch, m->att_scratch_floats);
        opt_linear(m, m->xn, m->att, T, &y->o, y->ob);
        for (size_t i = 0; i < (size_t)T * H; i++) m->x[i] += m->xn[i];
        layernorm_forward(m->xn, NULL, NULL, m->x, y->ln2_w, y->ln2_b, T, H, 1e-5f);
        opt_linear(m, m->ff, m->xn, T, &y->fc1, y->fc1_b);
        vw_activate(m->ff, (size_t)T * c->ffn, c->act);
        opt_linear(m, m->xn, m->ff, T, &y->fc2, y->fc2_b);
        for (size_t i = 0; i < (size_t)T * H; i++) m->x[i] += m->xn[i];
    }
    m->n_past += T;
    if (!logits) return MR_OK;
    if (all_logits) {
        layernorm_forward(m->xn, NULL, NULL, m->x, m->lnf_w, m->lnf_b, T, H, 1e-5f);
        opt_linear(m, logits, m->xn, T, &m->head, NULL);
        return MR_OK;
    }
    layernorm_forward(m->last, NULL, NULL, m->x + (size_t)(T - 1) * H, m->lnf_w, m->lnf_b, 1, H, 1e-5f);
    opt_linear(m, logits, m->last, 1, &m->head, NULL);
    return MR_OK;
}
