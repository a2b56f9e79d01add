/* Hugging Face folders: config.json + model.safetensors (or shards through
 * model.safetensors.index.json), tensor names as transformers' state_dict.
 * Hugging Face checkpoints rotate the two halves of each head (rotate_half),
 * for llama as for qwen2, so no row permutation is needed. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "llm/model_internal.h"

static const char *hf_layer_name(int l, const char *role, char *buf, size_t n) {
    static const struct {
        const char *role, *hf;
    } MAP[] = {
        {"attn_norm", "input_layernorm.weight"},   {"ffn_norm", "post_attention_layernorm.weight"},
        {"attn_q", "self_attn.q_proj.weight"},     {"attn_k", "self_attn.k_proj.weight"},
        {"attn_v", "self_attn.v_proj.weight"},     {"attn_output", "self_attn.o_proj.weight"},
        {"ffn_gate", "mlp.gate_proj.weight"},      {"ffn_up", "mlp.up_proj.weight"},
        {"ffn_down", "mlp.down_proj.weight"},      {"attn_q.bias", "self_attn.q_proj.bias"},
        {"attn_k.bias", "self_attn.k_proj.bias"},  {"attn_v.bias", "self_attn.v_proj.bias"},
    };
    for (size_t i = 0; i < sizeof MAP / sizeof MAP[0]; i++) {
        if (!strcmp(MAP[i].role, role)) {
            snprintf(buf, n, "model.layers.%d.%s", l, MAP[i].hf);
            return buf;
        }
    }
    snprintf(buf, n, "model.layers.%d.%s", l, role);
    return buf;
}

/* Integer field: required (error naming the key) unless a default is given. */
static int cfg_int(json_t *root, const char *key, int required, int dflt, int *out, const char *path, mr_error *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return mr_fail(e, MR_ERR_INPUT, "%s: key '%s' is missing", path, key);
        *out = dflt;
        return MR_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 0x7fffffff)
        return mr_fail(e, MR_ERR_INPUT, "%s: key '%s' must be a non-negative integer", path, key);
    *out = (int)json_integer_value(v);
    return MR_OK;
}

static int cfg_num(json_t *root, const char *key, double dflt, double *out, const char *path, mr_error *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return MR_OK;
    }
    if (!json_is_number(v)) return mr_fail(e, MR_ERR_INPUT, "%s: key '%s' must be a number", path, key);
    *out = json_number_value(v);
    return MR_OK;
}

int llm_load_hf(llm_model *m, const char *dir, mr_error *e) {
    m->source = LLM_SRC_HF;
    char *cfg_path = mr_path_join(dir, "config.json", e);
    if (!cfg_path) return MR_ERR_INTERNAL;
    char *text = NULL;
    size_t len = 0;
    int rc = mr_read_file(cfg_path, &text, &len, e);
    if (rc) {
        free(cfg_path);
        return rc;
    }
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!root || !json_is_object(root)) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s:%d: not a JSON object: %s", cfg_path, jerr.line, jerr.text);
        json_decref(root);
        free(cfg_path);
        return rc;
    }
    llm_config *c = &m->cfg;
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    if (!mt) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: key 'model_type' is missing", cfg_path);
        goto done;
    }
    if (!strcmp(mt, "llama") || !strcmp(mt, "mistral")) {
        c->arch = LLM_ARCH_LLAMA;
    } else if (!strcmp(mt, "qwen2")) {
        c->arch = LLM_ARCH_QWEN2;
        c->has_qkv_bias = 1;
    } else {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: unknown architecture '%s' (key model_type); supported: llama, mistral, qwen2",
                     cfg_path, mt);
        goto done;
    }
    c->rope_halves = 1;
    json_t *sw = json_object_get(root, "sliding_window");
    json_t *use_sw = json_object_get(root, "use_sliding_window");
    if (sw && !json_is_null(sw) && !(use_sw && json_is_false(use_sw))) {
        int swv = (int)json_integer_value(sw), mpe = 0;
        cfg_int(root, "max_position_embeddings", 0, 0, &mpe, cfg_path, e);
        if (c->arch == LLM_ARCH_LLAMA && swv > 0 && (mpe == 0 || swv < mpe)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: sliding_window = %d is not supported", cfg_path, swv);
            goto done;
        }
    }
    if (c->arch == LLM_ARCH_LLAMA) {
        json_t *bias = json_object_get(root, "attention_bias");
        if (bias && json_is_true(bias)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: attention_bias = true is not supported", cfg_path);
            goto done;
        }
    }
    double eps, theta;
    if ((rc = cfg_int(root, "hidden_size", 1, 0, &c->n_embd, cfg_path, e)) ||
        (rc = cfg_int(root, "intermediate_size", 1, 0, &c->n_ff, cfg_path, e)) ||
        (rc = cfg_int(root, "num_hidden_layers", 1, 0, &c->n_layer, cfg_path, e)) ||
        (rc = cfg_int(root, "num_attention_heads", 1, 0, &c->n_head, cfg_path, e)) ||
        (rc = cfg_int(root, "vocab_size", 1, 0, &c->n_vocab, cfg_path, e)) ||
        (rc = cfg_int(root, "max_position_embeddings", 0, 0, &c->n_ctx_train, cfg_path, e)) ||
        (rc = cfg_num(root, "rms_norm_eps", 1e-6, &eps, cfg_path, e)) ||
        (rc = cfg_num(root, "rope_theta", 10000.0, &theta, cfg_path, e)))
        goto done;
    if (c->n_head <= 0) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: num_attention_heads must be positive", cfg_path);
        goto done;
    }
    if ((rc = cfg_int(root, "num_key_value_heads", 0, c->n_head, &c->n_head_kv, cfg_path, e)) ||
        (rc = cfg_int(root, "head_dim", 0, c->n_embd / c->n_head, &c->head_dim, cfg_path, e)))
        goto done;
    c->rms_eps = (float)eps;
    c->rope_base = theta;
    c->rope_dims = c->head_dim;
    c->rope_freq_scale = 1.0;
    json_t *rs = json_object_get(root, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        const char *type = json_string_value(json_object_get(rs, "type"));
        if (!type) type = json_string_value(json_object_get(rs, "rope_type"));
        double factor = json_number_value(json_object_get(rs, "factor"));
        if (!type || strcmp(type, "linear") || !(factor > 0)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: rope_scaling of type '%s' is not supported (only linear)", cfg_path,
                         type ? type : "?");
            goto done;
        }
        c->rope_freq_scale = 1.0 / factor;
    }
    json_t *tie = json_object_get(root, "tie_word_embeddings");
    /* transformers' default for these classes is tie_word_embeddings = false */
    int tied = tie ? json_is_true(tie) : 0;
    if ((rc = llm_check_config(c, cfg_path, e))) goto done;

    m->st = mr_calloc(1, sizeof *m->st, e);
    if (!m->st) {
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    if ((rc = st_set_open(m->st, dir, e))) {
        free(m->st);
        m->st = NULL;
        goto done;
    }
    if ((rc = llm_get_matrix(m, "model.embed_tokens.weight", c->n_vocab, c->n_embd, 0, &m->tok_embd, e)) ||
        (rc = llm_get_vector(m, "model.norm.weight", c->n_embd, 0, &m->output_norm, e)) ||
        (rc = llm_get_matrix(m, "lm_head.weight", c->n_vocab, c->n_embd, tied, &m->output, e)))
        goto done;
    if (!m->output.data) m->output = m->tok_embd;
    c->tied = m->output.data == m->tok_embd.data;
    if ((rc = llm_load_layers(m, hf_layer_name, e))) goto done;

    /* special tokens from config.json; generation_config.json may refine eos */
    int v;
    m->bos_id = m->eos_id = -1;
    if (json_is_integer(json_object_get(root, "bos_token_id")) &&
        cfg_int(root, "bos_token_id", 0, -1, &v, cfg_path, e) == MR_OK)
        m->bos_id = v;
    json_t *eos = json_object_get(root, "eos_token_id");
    if (json_is_integer(eos) && cfg_int(root, "eos_token_id", 0, -1, &v, cfg_path, e) == MR_OK) m->eos_id = v;
    else if (json_is_array(eos) && json_array_size(eos) > 0 && json_is_integer(json_array_get(eos, 0)))
        m->eos_id = (int32_t)json_integer_value(json_array_get(eos, 0));
    /* Llama tokenizers add BOS, Qwen2's do not; tokenizer_config.json may say otherwise (read with the tokenizer). */
    m->add_bos = c->arch == LLM_ARCH_LLAMA && m->bos_id >= 0;
    mr_error_clear(e);
    rc = MR_OK;
done:
    json_decref(root);
    free(cfg_path);
    return rc;
}
