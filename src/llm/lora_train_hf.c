/* A training model from a Hugging Face Llama / Qwen2 folder (config.json +
 * safetensors), converted to owned fp32 (used by the gradient tests against
 * transformers and for small models; the engine's loader serves big ones). */
#include "mllm4rec/ranker.h"
#include "mllm4rec/safetensors.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static int cfg_int(json_t *cfg, const char *key, int dflt, int required, int *out, const char *path, mr_error *e) {
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        if (required) return mr_fail(e, MR_ERR_INPUT, "%s: \"%s\" missing", path, key);
        *out = dflt;
        return MR_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0)
        return mr_fail(e, MR_ERR_INPUT, "%s: \"%s\" is not a positive integer", path, key);
    *out = (int)json_integer_value(v);
    return MR_OK;
}

static double cfg_num(json_t *cfg, const char *key, double dflt) {
    json_t *v = json_object_get(cfg, key);
    return v && json_is_number(v) ? json_number_value(v) : dflt;
}

typedef struct load_ctx {
    st_set set;
    float *cursor;
    const char *dir;
} load_ctx;

static const float *take(load_ctx *c, const char *name, int64_t numel, int optional, mr_error *e) {
    const st_tensor *t = st_set_find(&c->set, name);
    if (!t) {
        if (!optional) mr_fail(e, MR_ERR_INPUT, "%s: tensor %s missing", c->dir, name);
        return NULL;
    }
    if (st_numel(t) != numel) {
        mr_fail(e, MR_ERR_INPUT, "%s: tensor %s has %lld elements, expected %lld", c->dir, name,
                (long long)st_numel(t), (long long)numel);
        return NULL;
    }
    if (st_read_f32(t, c->cursor, numel, e)) return NULL;
    float *p = c->cursor;
    c->cursor += numel;
    return p;
}

static mr_lt_weight f32w(const float *p, int64_t rows, int64_t cols) {
    mr_lt_weight w = {GGML_TYPE_F32, rows, cols, p};
    return w;
}

int mr_lt_load_hf(mr_lt_owned *o, const char *dir, mr_error *e) {
    memset(o, 0, sizeof *o);
    char *cfg_path = mr_path_join(dir, "config.json", e);
    if (!cfg_path) return e->code;
    json_error_t jerr;
    json_t *cfg = json_load_file(cfg_path, 0, &jerr);
    if (!cfg) {
        int rc = mr_fail(e, MR_ERR_INPUT, "%s: %s (line %d)", cfg_path, jerr.text, jerr.line);
        free(cfg_path);
        return rc;
    }
    mr_lt_model *m = &o->m;
    int rc;
    const char *mt = json_string_value(json_object_get(cfg, "model_type"));
    if (!mt || (strcmp(mt, "llama") && strcmp(mt, "qwen2") && strcmp(mt, "mistral"))) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: model_type \"%s\" is not llama, mistral or qwen2", cfg_path, mt ? mt : "");
        goto done;
    }
    if ((rc = cfg_int(cfg, "hidden_size", 0, 1, &m->dim, cfg_path, e)) ||
        (rc = cfg_int(cfg, "intermediate_size", 0, 1, &m->ffn, cfg_path, e)) ||
        (rc = cfg_int(cfg, "num_hidden_layers", 0, 1, &m->n_layer, cfg_path, e)) ||
        (rc = cfg_int(cfg, "num_attention_heads", 0, 1, &m->n_head, cfg_path, e)) ||
        (rc = cfg_int(cfg, "num_key_value_heads", m->n_head, 0, &m->n_kv_head, cfg_path, e)) ||
        (rc = cfg_int(cfg, "vocab_size", 0, 1, &m->vocab, cfg_path, e)))
        goto done;
    m->head_dim = m->dim / m->n_head;
    cfg_int(cfg, "head_dim", m->head_dim, 0, &m->head_dim, cfg_path, e);
    m->norm_eps = (float)cfg_num(cfg, "rms_norm_eps", 1e-6);
    m->rope_theta = (float)cfg_num(cfg, "rope_theta", 10000.0);
    m->rope_scale = 1.0f;
    json_t *rs = json_object_get(cfg, "rope_scaling");
    if (rs && json_is_object(rs)) {
        const char *type = json_string_value(json_object_get(rs, "type"));
        if (!type || strcmp(type, "linear")) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: rope_scaling type \"%s\" is not supported (linear only)", cfg_path,
                         type ? type : "");
            goto done;
        }
        m->rope_scale = (float)cfg_num(rs, "factor", 1.0);
    }
    m->rope_mode = MR_ROPE_NEOX; /* Hugging Face rotates the two halves */
    m->arch = !strcmp(mt, "qwen2") ? "qwen2" : "llama";
    json_t *tied_j = json_object_get(cfg, "tie_word_embeddings");
    int tied = tied_j ? json_is_true(tied_j) : !strcmp(mt, "qwen2");
    const int is_qwen2 = !strcmp(mt, "qwen2");

    load_ctx c = {.dir = dir};
    if ((rc = st_set_open(&c.set, dir, e))) goto done;
    const int64_t D = m->dim, QD = (int64_t)m->n_head * m->head_dim, KV = (int64_t)m->n_kv_head * m->head_dim,
                  F = m->ffn, V = m->vocab;
    int64_t per_layer = 2 * D + QD * D + 2 * KV * D + QD * D + 3 * F * D + QD + 2 * KV;
    int64_t total = V * D * (tied ? 1 : 2) + D + per_layer * m->n_layer;
    o->buf = mr_alloc((size_t)total * sizeof(float), e);
    m->layers = mr_calloc((size_t)m->n_layer, sizeof *m->layers, e);
    if (!o->buf || !m->layers) {
        rc = e->code;
        goto close;
    }
    c.cursor = o->buf;
    const float *p;
    char name[256];
    rc = MR_ERR_INPUT;
    if (!(p = take(&c, "model.embed_tokens.weight", V * D, 0, e))) goto close;
    m->tok_embd = f32w(p, V, D);
    if (tied) {
        m->output = m->tok_embd;
    } else {
        if (!(p = take(&c, "lm_head.weight", V * D, 0, e))) goto close;
        m->output = f32w(p, V, D);
    }
    if (!(m->out_norm = take(&c, "model.norm.weight", D, 0, e))) goto close;
    static const char *proj[MR_LT_N_TARGETS] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                "mlp.down_proj"};
    for (int l = 0; l < m->n_layer; l++) {
        mr_lt_layer *L = &m->layers[l];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        if (!(L->attn_norm = take(&c, name, D, 0, e))) goto close;
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        if (!(L->ffn_norm = take(&c, name, D, 0, e))) goto close;
        for (int t = 0; t < MR_LT_N_TARGETS; t++) {
            int64_t rows = t == MR_LT_Q ? QD : (t == MR_LT_K || t == MR_LT_V) ? KV : (t == MR_LT_O || t == MR_LT_DOWN) ? D : F;
            int64_t cols = t == MR_LT_O ? QD : t == MR_LT_DOWN ? F : D;
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, proj[t]);
            if (!(p = take(&c, name, rows * cols, 0, e))) goto close;
            L->w[t] = f32w(p, rows, cols);
        }
        if (is_qwen2) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.bias", l);
            if (!(L->bq = take(&c, name, QD, 0, e))) goto close;
            snprintf(name, sizeof name, "model.layers.%d.self_attn.k_proj.bias", l);
            if (!(L->bk = take(&c, name, KV, 0, e))) goto close;
            snprintf(name, sizeof name, "model.layers.%d.self_attn.v_proj.bias", l);
            if (!(L->bv = take(&c, name, KV, 0, e))) goto close;
        }
    }
    rc = mr_lt_model_check(m, e);
close:
    if (rc && e->code) rc = e->code;
    st_set_close(&c.set);
done:
    json_decref(cfg);
    free(cfg_path);
    if (rc) mr_lt_owned_free(o);
    return rc;
}

void mr_lt_owned_free(mr_lt_owned *o) {
    free(o->buf);
    free(o->m.layers);
    memset(o, 0, sizeof *o);
}
