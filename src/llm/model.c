/* Model loading shared by both formats, and the GGUF loader. */
#include "llm/model_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "nn/quant.h"

int llm_own(llm_model *m, float *p, mr_error *e) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? m->cap_owned * 2 : 64;
        float **n = mr_realloc(m->owned, (size_t)cap * sizeof *n, e);
        if (!n) {
            free(p);
            return MR_ERR_INTERNAL;
        }
        m->owned = n;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return MR_OK;
}

static int ggml_from_st(st_dtype d, ggml_type *t) {
    switch (d) {
    case ST_F32: *t = GGML_TYPE_F32; return 0;
    case ST_F16: *t = GGML_TYPE_F16; return 0;
    case ST_BF16: *t = GGML_TYPE_BF16; return 0;
    default: return -1;
    }
}

int llm_find_tensor(const llm_model *m, const char *name, llm_tensor_ref *out, mr_error *e) {
    memset(out, 0, sizeof *out);
    out->name = name;
    if (m->source == LLM_SRC_GGUF) {
        const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
        if (!t) return -1;
        if (!quant_supported(t->type))
            return mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' has type %s (%d), which this engine does not support",
                           m->path, name, ggml_type_name(t->type), (int)t->type);
        out->type = t->type;
        out->n_dims = (int)t->n_dims;
        for (int i = 0; i < 4; i++) out->ne[i] = (int64_t)t->ne[i];
        out->data = t->data;
        return 0;
    }
    const st_tensor *t = st_set_find(m->st, name);
    if (!t) return -1;
    if (ggml_from_st(t->dtype, &out->type))
        return mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' has dtype %s; expected F32, F16 or BF16", m->path, name,
                       st_dtype_name(t->dtype));
    if (t->n_dims > 4) return mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' has %d dimensions", m->path, name, t->n_dims);
    out->n_dims = t->n_dims;
    for (int i = 0; i < 4; i++) out->ne[i] = 1;
    for (int i = 0; i < t->n_dims; i++) out->ne[i] = t->shape[t->n_dims - 1 - i];
    out->data = t->data;
    return 0;
}

int llm_get_matrix(llm_model *m, const char *name, int64_t rows, int64_t cols, int optional, llm_matrix *out,
                   mr_error *e) {
    llm_tensor_ref r;
    memset(out, 0, sizeof *out);
    int rc = llm_find_tensor(m, name, &r, e);
    if (rc < 0) {
        if (optional) return MR_OK;
        return mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' is missing", m->path, name);
    }
    if (rc) return rc;
    if (r.ne[0] != cols || r.ne[1] != rows || r.ne[2] != 1 || r.ne[3] != 1)
        return mr_fail(e, MR_ERR_INPUT,
                       "%s: tensor '%s' has shape [%lld, %lld, %lld] (ne, fastest first); expected [%lld, %lld]",
                       m->path, name, (long long)r.ne[0], (long long)r.ne[1], (long long)r.ne[2], (long long)cols,
                       (long long)rows);
    int be;
    quant_block(r.type, &be, NULL);
    if (cols % be)
        return mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s': row length %lld is not a multiple of the %s block size %d",
                       m->path, name, (long long)cols, quant_type_name(r.type), be);
    out->type = r.type;
    out->rows = rows;
    out->cols = cols;
    out->data = r.data;
    return MR_OK;
}

int llm_get_vector(llm_model *m, const char *name, int64_t n, int optional, float **out, mr_error *e) {
    llm_tensor_ref r;
    *out = NULL;
    int rc = llm_find_tensor(m, name, &r, e);
    if (rc < 0) {
        if (optional) return MR_OK;
        return mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' is missing", m->path, name);
    }
    if (rc) return rc;
    if (r.ne[0] != n || r.ne[1] != 1 || r.ne[2] != 1 || r.ne[3] != 1)
        return mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' has shape [%lld, %lld]; expected [%lld]", m->path, name,
                       (long long)r.ne[0], (long long)r.ne[1], (long long)n);
    int be;
    quant_block(r.type, &be, NULL);
    if (n % be)
        return mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s': length %lld does not fit type %s", m->path, name,
                       (long long)n, quant_type_name(r.type));
    float *v = mr_alloc((size_t)n * sizeof *v, e);
    if (!v) return MR_ERR_INTERNAL;
    dequantize_row(r.type, r.data, v, n);
    if (llm_own(m, v, e)) return MR_ERR_INTERNAL;
    *out = v;
    return MR_OK;
}

int llm_check_config(const llm_config *c, const char *where, mr_error *e) {
    if (c->n_embd <= 0 || c->n_layer <= 0 || c->n_head <= 0 || c->n_head_kv <= 0 || c->n_ff <= 0 || c->n_vocab <= 0 ||
        c->head_dim <= 0)
        return mr_fail(e, MR_ERR_INPUT,
                       "%s: model sizes must be positive (n_embd %d, layers %d, heads %d, kv heads %d, ffn %d, "
                       "vocab %d, head_dim %d)",
                       where, c->n_embd, c->n_layer, c->n_head, c->n_head_kv, c->n_ff, c->n_vocab, c->head_dim);
    if (c->n_head % c->n_head_kv)
        return mr_fail(e, MR_ERR_INPUT, "%s: %d attention heads are not a multiple of %d kv heads", where, c->n_head,
                       c->n_head_kv);
    if (c->rope_dims <= 0 || c->rope_dims > c->head_dim || c->rope_dims % 2)
        return mr_fail(e, MR_ERR_INPUT, "%s: rope dimension count %d does not fit head size %d", where, c->rope_dims,
                       c->head_dim);
    if (!(c->rms_eps > 0)) return mr_fail(e, MR_ERR_INPUT, "%s: rms norm epsilon must be positive", where);
    if (!(c->rope_base > 0) || !(c->rope_freq_scale > 0))
        return mr_fail(e, MR_ERR_INPUT, "%s: rope base and scale must be positive", where);
    return MR_OK;
}

int llm_load_layers(llm_model *m, const char *(*name_of)(int layer, const char *role, char *buf, size_t n),
                    mr_error *e) {
    const llm_config *c = &m->cfg;
    const int64_t d = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim;
    m->layers = mr_calloc((size_t)c->n_layer, sizeof *m->layers, e);
    if (!m->layers) return MR_ERR_INTERNAL;
    char buf[256];
    int rc;
    for (int l = 0; l < c->n_layer; l++) {
        llm_layer *L = &m->layers[l];
#define MAT(field, role, rows, cols)                                                            \
    if ((rc = llm_get_matrix(m, name_of(l, role, buf, sizeof buf), rows, cols, 0, &L->field, e))) \
        return rc;
#define VEC(dst, role, n, opt)                                                          \
    if ((rc = llm_get_vector(m, name_of(l, role, buf, sizeof buf), n, opt, &dst, e))) \
        return rc;
        VEC(L->attn_norm, "attn_norm", d, 0);
        MAT(wq.w, "attn_q", qd, d);
        MAT(wk.w, "attn_k", kvd, d);
        MAT(wv.w, "attn_v", kvd, d);
        MAT(wo.w, "attn_output", d, qd);
        VEC(L->ffn_norm, "ffn_norm", d, 0);
        MAT(w_gate.w, "ffn_gate", c->n_ff, d);
        MAT(w_up.w, "ffn_up", c->n_ff, d);
        MAT(w_down.w, "ffn_down", d, c->n_ff);
        if (c->has_qkv_bias) {
            VEC(L->wq.bias, "attn_q.bias", qd, 0);
            VEC(L->wk.bias, "attn_k.bias", kvd, 0);
            VEC(L->wv.bias, "attn_v.bias", kvd, 0);
        }
#undef MAT
#undef VEC
    }
    return MR_OK;
}

/* ---- GGUF ---- */

static const char *gguf_layer_name(int l, const char *role, char *buf, size_t n) {
    const char *dot = strchr(role, '.');
    if (dot) snprintf(buf, n, "blk.%d.%s", l, role); /* "attn_q.bias" */
    else snprintf(buf, n, "blk.%d.%s.weight", l, role);
    return buf;
}

static int arch_key_u64(const gguf_file *g, const char *arch, const char *suffix, int optional, uint64_t dflt,
                        int *out, mr_error *e) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint64_t v = dflt;
    if (gguf_find(g, key) || !optional) {
        int rc = gguf_get_u64(g, key, &v, e);
        if (rc) {
            mr_error_prefix(e, "%s: ", g->path);
            return rc;
        }
    }
    if (v > 0x7fffffff) return mr_fail(e, MR_ERR_INPUT, "%s: key %s = %llu is too large", g->path, key,
                                       (unsigned long long)v);
    *out = (int)v;
    return MR_OK;
}

static int arch_key_f64(const gguf_file *g, const char *arch, const char *suffix, int optional, double dflt,
                        double *out, mr_error *e) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    *out = dflt;
    if (!gguf_find(g, key) && optional) return MR_OK;
    int rc = gguf_get_f64(g, key, out, e);
    if (rc) mr_error_prefix(e, "%s: ", g->path);
    return rc;
}

static int32_t gguf_token_id(const gguf_file *g, const char *key) {
    uint64_t v;
    mr_error e2;
    if (!gguf_find(g, key) || gguf_get_u64(g, key, &v, &e2)) return -1;
    return v < 0x7fffffff ? (int32_t)v : -1; /* 4294967295 means none */
}

int llm_load_gguf(llm_model *m, const char *path, mr_error *e) {
    m->source = LLM_SRC_GGUF;
    m->gguf = mr_calloc(1, sizeof *m->gguf, e);
    if (!m->gguf) return MR_ERR_INTERNAL;
    int rc = gguf_open(m->gguf, path, e);
    if (rc) {
        free(m->gguf);
        m->gguf = NULL;
        return rc;
    }
    const gguf_file *g = m->gguf;
    char *type = NULL, *arch_str = NULL, arch[64];
    if (gguf_find(g, "general.type") && gguf_get_str(g, "general.type", &type, e) == MR_OK && strcmp(type, "model")) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: general.type is '%s', not a model (an adapter goes to --lora)", path, type);
        free(type);
        return rc;
    }
    free(type);
    if ((rc = gguf_get_str(g, "general.architecture", &arch_str, e))) {
        mr_error_prefix(e, "%s: ", path);
        return rc;
    }
    snprintf(arch, sizeof arch, "%s", arch_str); /* the architecture names the keys below */
    free(arch_str);
    llm_config *c = &m->cfg;
    if (!strcmp(arch, "llama")) {
        c->arch = LLM_ARCH_LLAMA;
        c->rope_halves = 0;
    } else if (!strcmp(arch, "qwen2")) {
        c->arch = LLM_ARCH_QWEN2;
        c->rope_halves = 1;
        c->has_qkv_bias = 1;
    } else {
        return mr_fail(e, MR_ERR_INPUT, "%s: unknown architecture '%s' (key general.architecture); supported: llama, qwen2",
                       path, arch);
    }
    double eps, scale_factor = 1.0;
    if ((rc = arch_key_u64(g, arch, "embedding_length", 0, 0, &c->n_embd, e)) ||
        (rc = arch_key_u64(g, arch, "block_count", 0, 0, &c->n_layer, e)) ||
        (rc = arch_key_u64(g, arch, "feed_forward_length", 0, 0, &c->n_ff, e)) ||
        (rc = arch_key_u64(g, arch, "attention.head_count", 0, 0, &c->n_head, e)) ||
        (rc = arch_key_u64(g, arch, "context_length", 1, 0, &c->n_ctx_train, e)) ||
        (rc = arch_key_f64(g, arch, "attention.layer_norm_rms_epsilon", 0, 0, &eps, e)) ||
        (rc = arch_key_f64(g, arch, "rope.freq_base", 1, 10000.0, &c->rope_base, e)))
        return rc;
    if (c->n_head <= 0) return mr_fail(e, MR_ERR_INPUT, "%s: %s.attention.head_count must be positive", path, arch);
    if ((rc = arch_key_u64(g, arch, "attention.head_count_kv", 1, (uint64_t)c->n_head, &c->n_head_kv, e)) ||
        (rc = arch_key_u64(g, arch, "attention.key_length", 1, (uint64_t)(c->n_embd / c->n_head), &c->head_dim,
                           e)) ||
        (rc = arch_key_u64(g, arch, "rope.dimension_count", 1, (uint64_t)c->head_dim, &c->rope_dims, e)))
        return rc;
    c->rms_eps = (float)eps;
    /* rope scaling: none or linear (also the older rope.scale_linear key) */
    char key[160];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (gguf_find(g, key)) {
        char *st = NULL;
        if ((rc = gguf_get_str(g, key, &st, e))) return rc;
        int linear = !strcmp(st, "linear");
        if (!linear && strcmp(st, "none"))
            rc = mr_fail(e, MR_ERR_INPUT, "%s: %s = '%s' is not supported (none or linear)", path, key, st);
        free(st);
        if (rc || (linear && (rc = arch_key_f64(g, arch, "rope.scaling.factor", 0, 1.0, &scale_factor, e))))
            return rc;
    } else if ((rc = arch_key_f64(g, arch, "rope.scale_linear", 1, 1.0, &scale_factor, e))) {
        return rc;
    }
    c->rope_freq_scale = scale_factor > 0 ? 1.0 / scale_factor : 0;

    const gguf_tensor *te = gguf_find_tensor(g, "token_embd.weight");
    if (!te) return mr_fail(e, MR_ERR_INPUT, "%s: tensor 'token_embd.weight' is missing", path);
    if (te->ne[1] > 0x7fffffff) return mr_fail(e, MR_ERR_INPUT, "%s: token_embd.weight is too large", path);
    c->n_vocab = (int)te->ne[1];
    const gguf_kv *tokens = gguf_find(g, "tokenizer.ggml.tokens");
    if (tokens && tokens->type == GGUF_TYPE_ARRAY && tokens->array_len != (uint64_t)c->n_vocab)
        return mr_fail(e, MR_ERR_INPUT, "%s: tokenizer.ggml.tokens has %llu entries but token_embd.weight has %d rows",
                       path, (unsigned long long)tokens->array_len, c->n_vocab);
    if ((rc = llm_check_config(c, path, e))) return rc;

    if ((rc = llm_get_matrix(m, "token_embd.weight", c->n_vocab, c->n_embd, 0, &m->tok_embd, e)) ||
        (rc = llm_get_vector(m, "output_norm.weight", c->n_embd, 0, &m->output_norm, e)) ||
        (rc = llm_get_matrix(m, "output.weight", c->n_vocab, c->n_embd, 1, &m->output, e)) ||
        (rc = llm_get_vector(m, "rope_freqs.weight", c->rope_dims / 2, 1, &m->rope_freqs, e)))
        return rc;
    if (!m->output.data) {
        m->output = m->tok_embd;
        c->tied = 1;
    }
    if ((rc = llm_load_layers(m, gguf_layer_name, e))) return rc;

    char *name = NULL;
    if (gguf_find(g, "general.name") && gguf_get_str(g, "general.name", &name, e) == MR_OK) m->name = name;
    m->bos_id = gguf_token_id(g, "tokenizer.ggml.bos_token_id");
    m->eos_id = gguf_token_id(g, "tokenizer.ggml.eos_token_id");
    m->eot_id = gguf_token_id(g, "tokenizer.ggml.eot_token_id");
    /* add BOS: the file's key, else llama.cpp's default per tokenizer model (SPM adds, BPE does not) */
    char *tmodel = NULL;
    m->add_bos = 0;
    if (gguf_find(g, "tokenizer.ggml.model") && gguf_get_str(g, "tokenizer.ggml.model", &tmodel, e) == MR_OK) {
        m->add_bos = !strcmp(tmodel, "llama");
        free(tmodel);
    }
    int ab;
    if (gguf_find(g, "tokenizer.ggml.add_bos_token") && gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &ab, e) == 0)
        m->add_bos = ab;
    if (m->bos_id < 0) m->add_bos = 0;
    mr_error_clear(e);
    return MR_OK;
}

int llm_load(llm_model *m, const char *path, mr_error *e) {
    memset(m, 0, sizeof *m);
    m->bos_id = m->eos_id = m->eot_id = -1;
    m->path = mr_strdup(path, e);
    if (!m->path) return MR_ERR_INTERNAL;
    int rc = mr_is_dir(path) ? llm_load_hf(m, path, e) : llm_load_gguf(m, path, e);
    if (!rc) rc = llm_load_tokenizer(m, e);
    if (rc) {
        llm_free(m);
        return rc;
    }
    if (!m->name) {
        char buf[256];
        m->name = mr_strdup(mr_path_basename(path, buf, sizeof buf), e);
    }
    return MR_OK;
}

void llm_free(llm_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    for (int i = 0; i < m->n_adapters; i++) {
        llm_adapter_free(m->adapters[i]);
        free(m->adapters[i]);
    }
    free(m->adapters);
    free(m->layers);
    if (m->gguf) {
        gguf_close(m->gguf);
        free(m->gguf);
    }
    if (m->st) {
        st_set_close(m->st);
        free(m->st);
    }
    llm_tokenizer_free_hook(m);
    free(m->path);
    free(m->name);
    memset(m, 0, sizeof *m);
}

/* The k-th weight of the products: the layers' linears, then (k = n_layer * LLM_LORA_N_TARGETS) the output. */
static llm_matrix *layer_weight(const llm_model *m, int k) {
    if (k == m->cfg.n_layer * LLM_LORA_N_TARGETS) return (llm_matrix *)&m->output;
    return &llm_layer_linear(&m->layers[k / LLM_LORA_N_TARGETS], k % LLM_LORA_N_TARGETS)->w;
}

int llm_prepare_generation(llm_model *m, mr_error *e) {
    const int n = m->cfg.n_layer * LLM_LORA_N_TARGETS + 1; /* a tied output's embedding rows stay mapped */
    size_t bytes = 0, off = 0;
    for (int k = 0; k < n; k++) {
        qmat q = llm_qmat(layer_weight(m, k));
        if (qmat_can_repack_x8(&q)) bytes += qmat_bytes(&q);
    }
    if (!bytes) return MR_OK;
    uint8_t *buf = NULL; /* one buffer, in 2 MB pages where the kernel gives them (fewer TLB misses) */
    if (posix_memalign((void **)&buf, (size_t)2 << 20, bytes))
        return mr_fail(e, MR_ERR_INTERNAL, "out of memory: %zu bytes for the generation weights", bytes);
    if (llm_own(m, (float *)buf, e)) return MR_ERR_INTERNAL; /* llm_own freed it */
    madvise(buf, bytes, MADV_HUGEPAGE);
    for (int k = 0; k < n; k++) {
        llm_matrix *w = layer_weight(m, k);
        qmat q = llm_qmat(w);
        if (!qmat_can_repack_x8(&q)) continue;
        /* the file's whole pages of it then leave this process (the page cache keeps them) */
        const uintptr_t pg = 4096, a = ((uintptr_t)w->data + pg - 1) & ~(pg - 1);
        const uintptr_t z = ((uintptr_t)w->data + qmat_bytes(&q)) & ~(pg - 1);
        qmat_repack_x8(&q, buf + off);
        off += qmat_bytes(&q);
        if (m->source == LLM_SRC_GGUF && z > a) madvise((void *)a, z - a, MADV_DONTNEED);
        w->data = q.data, w->x8 = 1;
    }
    return MR_OK;
}

const char *llm_weight_type(const llm_model *m) {
    if (!m->layers) return "none";
    for (int k = 0; k < m->cfg.n_layer * LLM_LORA_N_TARGETS; k++)
        if (layer_weight(m, k)->type != m->layers[0].wq.w.type) return "mixed";
    return quant_type_name(m->layers[0].wq.w.type);
}

int64_t llm_n_params(const llm_model *m) {
    const llm_config *c = &m->cfg;
    int64_t d = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim;
    int64_t per_layer = 2 * d + d * qd * 2 + d * kvd * 2 + 3 * d * c->n_ff;
    if (c->has_qkv_bias) per_layer += qd + 2 * kvd;
    int64_t n = per_layer * c->n_layer + (int64_t)c->n_vocab * d + d;
    if (!c->tied) n += (int64_t)c->n_vocab * d;
    return n;
}
