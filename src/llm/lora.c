/* The one LoRA module: the adapter (llm_adapter, one llm_lora per adapted
 * linear), attached to the engine's linears so that every forward applies it,
 * and its two file forms: llama.cpp's GGUF adapter and a PEFT folder. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm/model_internal.h"
#include "nn/quant.h"

static const char *TARGET_NAMES[LLM_LORA_N_TARGETS] = {"q", "k", "v", "o", "gate", "up", "down"};
static const char *GGUF_NAMES[LLM_LORA_N_TARGETS] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                                     "ffn_gate", "ffn_up", "ffn_down"};
static const char *PEFT_NAMES[LLM_LORA_N_TARGETS] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                     "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                     "mlp.down_proj"};

const char *llm_lora_target_name(int t) { return t >= 0 && t < LLM_LORA_N_TARGETS ? TARGET_NAMES[t] : "?"; }

int llm_lora_parse_targets(const char *s, unsigned *mask, mr_error *e) {
    *mask = 0;
    const char *p = s;
    while (*p) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        int found = -1;
        for (int t = 0; t < LLM_LORA_N_TARGETS; t++)
            if (strlen(TARGET_NAMES[t]) == len && !strncmp(p, TARGET_NAMES[t], len)) found = t;
        if (found < 0)
            return mr_fail(e, MR_ERR_USAGE, "--targets: unknown target '%.*s' (choose from q,k,v,o,gate,up,down)",
                           (int)len, p);
        *mask |= 1u << found;
        p += len;
        if (*p == ',') p++;
    }
    if (!*mask) return mr_fail(e, MR_ERR_USAGE, "--targets: no target given");
    return MR_OK;
}

static llm_linear *target_linear(const llm_model *m, int layer, int t) { return llm_layer_linear(&m->layers[layer], t); }

/* Allocates an adapter of rank r on the (layer, target) pairs where present[] is
 * set (present NULL: `targets` in every layer); A, B and gradients zero. */
static int adapter_alloc(llm_adapter *ad, const llm_model *m, int r, float alpha, float dropout,
                         const unsigned char *present, unsigned targets, mr_error *e) {
    memset(ad, 0, sizeof *ad);
    const int L = m->cfg.n_layer;
    ad->r = r;
    ad->alpha = alpha;
    ad->dropout = dropout;
    ad->n_layer = L;
    ad->mats = mr_calloc((size_t)L * LLM_LORA_N_TARGETS, sizeof *ad->mats, e);
    if (!ad->mats) return MR_ERR_INTERNAL;
    int64_t total = 0;
#define PRESENT(i) (present ? present[i] : (targets >> ((i) % LLM_LORA_N_TARGETS)) & 1)
    for (int i = 0; i < L * LLM_LORA_N_TARGETS; i++)
        if (PRESENT(i)) {
            const llm_linear *lin = target_linear(m, i / LLM_LORA_N_TARGETS, i % LLM_LORA_N_TARGETS);
            total += (int64_t)r * (lin->w.cols + lin->w.rows);
        }
    ad->n_params = total;
    ad->buf = mr_calloc((size_t)(2 * total > 0 ? 2 * total : 1), sizeof(float), e);
    if (!ad->buf) {
        llm_adapter_free(ad);
        return MR_ERR_INTERNAL;
    }
    float *p = ad->buf, *g = ad->buf + total;
    for (int i = 0; i < L * LLM_LORA_N_TARGETS; i++) {
        if (!PRESENT(i)) continue;
        const llm_linear *lin = target_linear(m, i / LLM_LORA_N_TARGETS, i % LLM_LORA_N_TARGETS);
        llm_lora *lo = &ad->mats[i];
        lo->rank = r;
        lo->in = (int)lin->w.cols;
        lo->out = (int)lin->w.rows;
        lo->scale = alpha / (float)r;
        lo->dropout = dropout;
        lo->id = i;
        lo->a = p, p += (size_t)r * lo->in;
        lo->b = p, p += (size_t)lo->out * r;
        lo->da = g, g += (size_t)r * lo->in;
        lo->db = g, g += (size_t)lo->out * r;
        ad->targets |= 1u << (i % LLM_LORA_N_TARGETS);
    }
#undef PRESENT
    return MR_OK;
}

int llm_adapter_init(llm_adapter *ad, const llm_model *m, int r, float alpha, float dropout, unsigned targets,
                     uint64_t seed, mr_error *e) {
    memset(ad, 0, sizeof *ad);
    if (r <= 0) return mr_fail(e, MR_ERR_USAGE, "LoRA rank must be positive (got %d)", r);
    if (!(dropout >= 0.0f && dropout < 1.0f)) return mr_fail(e, MR_ERR_USAGE, "LoRA dropout must be in [0, 1)");
    if (!targets || targets >= (1u << LLM_LORA_N_TARGETS))
        return mr_fail(e, MR_ERR_USAGE, "LoRA targets: none or unknown");
    const int L = m->cfg.n_layer;
    int rc = adapter_alloc(ad, m, r, alpha, dropout, NULL, targets, e);
    if (rc) return rc;
    mr_rng rng;
    mr_rng_seed(&rng, seed);
    for (int i = 0; i < L * LLM_LORA_N_TARGETS; i++) {
        llm_lora *lo = &ad->mats[i];
        if (!lo->a) continue;
        /* PEFT: kaiming_uniform_(a=sqrt(5)) on A gives U(-1/sqrt(in), 1/sqrt(in)); B = 0 */
        const double bound = 1.0 / sqrt((double)lo->in);
        for (int64_t j = 0; j < (int64_t)r * lo->in; j++) lo->a[j] = (float)((2.0 * mr_rng_uniform(&rng) - 1.0) * bound);
    }
    return MR_OK;
}

void llm_adapter_free(llm_adapter *ad) {
    free(ad->mats);
    free(ad->buf);
    memset(ad, 0, sizeof *ad);
}

llm_lora *llm_adapter_get(llm_adapter *ad, int layer, int target) {
    if (!ad || layer < 0 || layer >= ad->n_layer || target < 0 || target >= LLM_LORA_N_TARGETS) return NULL;
    llm_lora *lo = &ad->mats[layer * LLM_LORA_N_TARGETS + target];
    return lo->a ? lo : NULL;
}

void llm_adapter_zero_grad(llm_adapter *ad) {
    if (ad->buf) memset(ad->buf + ad->n_params, 0, (size_t)ad->n_params * sizeof(float));
}

int llm_adapter_attach(llm_model *m, llm_adapter *ad, float user_scale, mr_error *e) {
    if (ad->n_layer != m->cfg.n_layer)
        return mr_fail(e, MR_ERR_INPUT, "LoRA adapter of %d layers for a model of %d", ad->n_layer, m->cfg.n_layer);
    for (int i = 0; i < ad->n_layer * LLM_LORA_N_TARGETS; i++) {
        llm_lora *lo = &ad->mats[i];
        const llm_linear *lin = target_linear(m, i / LLM_LORA_N_TARGETS, i % LLM_LORA_N_TARGETS);
        if (!lo->a) continue;
        if (lin->lora)
            return mr_fail(e, MR_ERR_INPUT, "blk.%d.%s.weight already has an adapter (one adapter per weight)",
                           i / LLM_LORA_N_TARGETS, GGUF_NAMES[i % LLM_LORA_N_TARGETS]);
        if (lo->in != lin->w.cols || lo->out != lin->w.rows)
            return mr_fail(e, MR_ERR_INPUT, "LoRA adapter for blk.%d.%s.weight is %dx%d, the weight %lldx%lld",
                           i / LLM_LORA_N_TARGETS, GGUF_NAMES[i % LLM_LORA_N_TARGETS], lo->out, lo->in,
                           (long long)lin->w.rows, (long long)lin->w.cols);
    }
    for (int i = 0; i < ad->n_layer * LLM_LORA_N_TARGETS; i++) {
        llm_lora *lo = &ad->mats[i];
        if (!lo->a) continue;
        lo->scale = user_scale * ad->alpha / (float)lo->rank;
        target_linear(m, i / LLM_LORA_N_TARGETS, i % LLM_LORA_N_TARGETS)->lora = lo;
    }
    return MR_OK;
}

void llm_adapter_detach(llm_model *m, const llm_adapter *ad) {
    for (int l = 0; l < m->cfg.n_layer; l++)
        for (int t = 0; t < LLM_LORA_N_TARGETS; t++) {
            llm_linear *lin = target_linear(m, l, t);
            if (lin->lora && lin->lora >= ad->mats && lin->lora < ad->mats + ad->n_layer * LLM_LORA_N_TARGETS)
                lin->lora = NULL;
        }
}

void llm_lora_permute_qk(float *dst, const float *src, int n_heads, int hd, int width, int to_pairs) {
    const int half = hd / 2;
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++) {
                const int row_halves = h * hd + j * half + i, row_pairs = h * hd + 2 * i + j;
                const int from = to_pairs ? row_halves : row_pairs, to = to_pairs ? row_pairs : row_halves;
                memcpy(dst + (size_t)to * width, src + (size_t)from * width, (size_t)width * sizeof(float));
            }
}

static const char *arch_name(const llm_model *m) { return m->cfg.arch == LLM_ARCH_QWEN2 ? "qwen2" : "llama"; }

/* Whether a q/k B is in another row order in the file than in m: GGUF llama
 * adapters are in pairs order, PEFT in halves; qwen2 rotates halves in both. */
static int needs_permute(const llm_model *m, int target, int file_is_gguf) {
    if ((target != LLM_LORA_Q && target != LLM_LORA_K) || m->cfg.arch != LLM_ARCH_LLAMA) return 0;
    return file_is_gguf ? m->cfg.rope_halves : !m->cfg.rope_halves;
}

static int qk_heads(const llm_model *m, int target) { return target == LLM_LORA_Q ? m->cfg.n_head : m->cfg.n_head_kv; }

/* lo->db holds B as a file stores it: into lo->b in m's row order, db zeroed. */
static void b_from_file(const llm_model *m, int t, llm_lora *lo, int file_is_gguf) {
    if (needs_permute(m, t, file_is_gguf))
        llm_lora_permute_qk(lo->b, lo->db, qk_heads(m, t), m->cfg.head_dim, lo->rank, !file_is_gguf);
    else
        memcpy(lo->b, lo->db, (size_t)lo->out * lo->rank * sizeof(float));
    memset(lo->db, 0, (size_t)lo->out * lo->rank * sizeof(float));
}

/* "<prefix>N.<name><suffix>" -> layer N (< n_layer) and the target whose name it is. */
static int parse_blk_name(const char *name, const char *const *names, const char *prefix, const char *suffix,
                          int n_layer, int *layer, int *target) {
    size_t pl = strlen(prefix), sl = strlen(suffix), nl = strlen(name);
    if (nl <= pl + sl || strncmp(name, prefix, pl) || strcmp(name + nl - sl, suffix)) return 0;
    const char *p = name + pl;
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || *end != '.' || v < 0 || v >= n_layer) return 0;
    const char *mid = end + 1;
    size_t ml = (size_t)(name + nl - sl - mid);
    for (int t = 0; t < LLM_LORA_N_TARGETS; t++)
        if (strlen(names[t]) == ml && !strncmp(mid, names[t], ml)) {
            *layer = (int)v;
            *target = t;
            return 1;
        }
    return 0;
}

/* ------------------------------------------------------------------ GGUF */

int llm_adapter_write_gguf(const llm_adapter *ad, const llm_model *m, const char *path, mr_error *e) {
    gguf_writer *w = gguf_writer_new(e);
    if (!w) return e->code;
    int rc;
    float *tmp = NULL;
    if ((rc = gguf_writer_set_str(w, "general.architecture", arch_name(m), e)) ||
        (rc = gguf_writer_set_str(w, "general.type", "adapter", e)) ||
        (rc = gguf_writer_set_str(w, "general.name", "mllm4rec ranker LoRA", e)) ||
        (rc = gguf_writer_set_str(w, "adapter.type", "lora", e)) ||
        (rc = gguf_writer_set_f32(w, "adapter.lora.alpha", ad->alpha, e)) ||
        (rc = gguf_writer_set_u32(w, "mllm4rec.lora.rank", (uint32_t)ad->r, e)))
        goto done;
    for (int i = 0; i < ad->n_layer * LLM_LORA_N_TARGETS && !rc; i++) {
        const llm_lora *lo = &ad->mats[i];
        const int layer = i / LLM_LORA_N_TARGETS, t = i % LLM_LORA_N_TARGETS;
        if (!lo->a) continue;
        char name[96];
        snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", layer, GGUF_NAMES[t]);
        uint64_t ne_a[2] = {(uint64_t)lo->in, (uint64_t)lo->rank};
        if ((rc = gguf_writer_add_tensor(w, name, GGML_TYPE_F32, 2, ne_a, lo->a, e))) break;
        const float *B = lo->b;
        if (needs_permute(m, t, 1)) {
            free(tmp);
            if (!(tmp = mr_alloc((size_t)lo->out * lo->rank * sizeof(float), e))) {
                rc = e->code;
                break;
            }
            llm_lora_permute_qk(tmp, lo->b, qk_heads(m, t), m->cfg.head_dim, lo->rank, 1);
            B = tmp;
        }
        snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", layer, GGUF_NAMES[t]);
        uint64_t ne_b[2] = {(uint64_t)lo->rank, (uint64_t)lo->out};
        rc = gguf_writer_add_tensor(w, name, GGML_TYPE_F32, 2, ne_b, B, e);
    }
    if (!rc) rc = gguf_writer_write(w, path, e);
done:
    free(tmp);
    gguf_writer_free(w);
    return rc;
}

/* A string key that must be `want` (optional: may be absent). */
static int expect_str(const gguf_file *g, const char *key, const char *want, int optional, const char *path,
                      mr_error *e) {
    if (optional && !gguf_find(g, key)) return MR_OK;
    char *s = NULL;
    int rc = gguf_get_str(g, key, &s, e);
    if (rc) mr_error_prefix(e, "%s: not a LoRA adapter: ", path);
    else if (strcmp(s, want)) rc = mr_fail(e, MR_ERR_INPUT, "%s: %s is '%s', expected '%s'", path, key, s, want);
    free(s);
    return rc;
}

/* A 2-D tensor of any type the engine reads, as floats into out. */
static int tensor_floats(const gguf_tensor *t, float *out, const char *path, mr_error *e) {
    if (!quant_supported(t->type))
        return mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' has unsupported type %s", path, t->name,
                       ggml_type_name(t->type));
    const size_t rb = quant_row_bytes(t->type, (int64_t)t->ne[0]);
    for (uint64_t r = 0; r < t->ne[1]; r++)
        dequantize_row(t->type, (const uint8_t *)t->data + r * rb, out + r * t->ne[0], (int64_t)t->ne[0]);
    return mr_check_finite(out, (size_t)(t->ne[0] * t->ne[1]), path, t->name, e); /* NaN/Inf named */
}

int llm_adapter_read_gguf(llm_adapter *ad, const llm_model *m, const char *path, mr_error *e) {
    memset(ad, 0, sizeof *ad);
    gguf_file g;
    int rc = gguf_open(&g, path, e);
    if (rc) return rc;
    unsigned char *present = NULL;
    if ((rc = expect_str(&g, "general.type", "adapter", 0, path, e)) || (rc = expect_str(&g, "adapter.type", "lora", 1, path, e)) ||
        (rc = expect_str(&g, "general.architecture", arch_name(m), 0, path, e)))
        goto done;
    double alpha = 0;
    if (gguf_find(&g, "adapter.lora.alpha") && (rc = gguf_get_f64(&g, "adapter.lora.alpha", &alpha, e))) goto done;
    const int L = m->cfg.n_layer;
    if (!(present = mr_calloc((size_t)L * LLM_LORA_N_TARGETS, 1, e))) {
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    int r = 0;
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const gguf_tensor *ta = &g.tensors[i];
        int layer, t;
        if (parse_blk_name(ta->name, GGUF_NAMES, "blk.", ".weight.lora_b", L, &layer, &t)) continue;
        if (!parse_blk_name(ta->name, GGUF_NAMES, "blk.", ".weight.lora_a", L, &layer, &t)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' is not a .lora_a or .lora_b of an attention or "
                                          "feed-forward weight of this %d-layer model",
                         path, ta->name, L);
            goto done;
        }
        char bname[128];
        snprintf(bname, sizeof bname, "blk.%d.%s.weight.lora_b", layer, GGUF_NAMES[t]);
        const gguf_tensor *tb = gguf_find_tensor(&g, bname);
        if (!tb) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' has no matching '%s'", path, ta->name, bname);
            goto done;
        }
        const llm_linear *lin = target_linear(m, layer, t);
        if (ta->n_dims != 2 || tb->n_dims != 2 || ta->ne[0] != (uint64_t)lin->w.cols ||
            tb->ne[1] != (uint64_t)lin->w.rows || ta->ne[1] != tb->ne[0] || ta->ne[1] == 0 || ta->ne[1] > 65536 ||
            (r && ta->ne[1] != (uint64_t)r)) {
            rc = mr_fail(e, MR_ERR_INPUT,
                         "%s: '%s' has ne [%llu, %llu] and '%s' [%llu, %llu]; the weight needs [%lld, r] and [r, %lld]%s",
                         path, ta->name, (unsigned long long)ta->ne[0], (unsigned long long)ta->ne[1], bname,
                         (unsigned long long)tb->ne[0], (unsigned long long)tb->ne[1], (long long)lin->w.cols,
                         (long long)lin->w.rows, r ? " with one r for every pair" : "");
            goto done;
        }
        r = (int)ta->ne[1];
        present[layer * LLM_LORA_N_TARGETS + t] = 1;
    }
    if (!r) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: the adapter holds no lora_a tensors", path);
        goto done;
    }
    /* no alpha: llama.cpp scales by the user scale alone, i.e. alpha = r */
    if ((rc = adapter_alloc(ad, m, r, alpha != 0 ? (float)alpha : (float)r, 0.0f, present, 0, e))) goto done;
    for (int i = 0; i < L * LLM_LORA_N_TARGETS && !rc; i++) {
        llm_lora *lo = &ad->mats[i];
        const int layer = i / LLM_LORA_N_TARGETS, t = i % LLM_LORA_N_TARGETS;
        if (!lo->a) continue;
        char name[128];
        snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", layer, GGUF_NAMES[t]);
        if ((rc = tensor_floats(gguf_find_tensor(&g, name), lo->a, path, e))) break;
        snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", layer, GGUF_NAMES[t]);
        if ((rc = tensor_floats(gguf_find_tensor(&g, name), lo->db, path, e))) break;
        b_from_file(m, t, lo, 1);
    }
done:
    free(present);
    gguf_close(&g);
    if (rc) llm_adapter_free(ad);
    return rc;
}

int llm_lora_apply_file(llm_model *m, const char *path, float user_scale, mr_error *e) {
    llm_adapter **list = mr_realloc(m->adapters, (size_t)(m->n_adapters + 1) * sizeof *list, e);
    if (!list) return MR_ERR_INTERNAL;
    m->adapters = list;
    llm_adapter *ad = mr_calloc(1, sizeof *ad, e);
    int rc = !ad ? MR_ERR_INTERNAL : llm_adapter_read_gguf(ad, m, path, e);
    if (!rc && (rc = llm_adapter_attach(m, ad, user_scale, e))) {
        mr_error_prefix(e, "%s: ", path);
        llm_adapter_free(ad);
    }
    if (rc) free(ad);
    else m->adapters[m->n_adapters++] = ad;
    return rc;
}

/* ------------------------------------------------------------------ PEFT */

static void peft_name(char *buf, size_t n, int layer, int t, char ab) {
    snprintf(buf, n, "base_model.model.model.layers.%d.%s.lora_%c.weight", layer, PEFT_NAMES[t], ab);
}

int llm_adapter_write_peft(const llm_adapter *ad, const llm_model *m, const char *dir, const char *base_model,
                           mr_error *e) {
    int rc = mr_mkdir_p(dir, e);
    if (rc) return rc;
    json_t *cfg = json_object(), *mods = json_array();
    for (int t = 0; t < LLM_LORA_N_TARGETS; t++)
        if (ad->targets & (1u << t)) json_array_append_new(mods, json_string(strchr(PEFT_NAMES[t], '.') + 1));
    json_object_set_new(cfg, "base_model_name_or_path", json_string(base_model ? base_model : ""));
    json_object_set_new(cfg, "bias", json_string("none"));
    json_object_set_new(cfg, "fan_in_fan_out", json_false());
    json_object_set_new(cfg, "inference_mode", json_true());
    json_object_set_new(cfg, "init_lora_weights", json_true());
    json_object_set_new(cfg, "lora_alpha", json_real(ad->alpha));
    json_object_set_new(cfg, "lora_dropout", json_real(ad->dropout));
    json_object_set_new(cfg, "modules_to_save", json_null());
    json_object_set_new(cfg, "peft_type", json_string("LORA"));
    json_object_set_new(cfg, "r", json_integer(ad->r));
    json_object_set_new(cfg, "target_modules", mods);
    json_object_set_new(cfg, "task_type", json_string("CAUSAL_LM"));
    char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(cfg);
    char *cfg_path = mr_path_join(dir, "adapter_config.json", e), *st_path = mr_path_join(dir, "adapter_model.safetensors", e);
    float **perm = NULL;
    st_writer *w = NULL;
    const int n = ad->n_layer * LLM_LORA_N_TARGETS;
    if (!text || !cfg_path || !st_path) {
        rc = mr_fail(e, MR_ERR_INTERNAL, "out of memory");
        goto done;
    }
    if ((rc = mr_write_file_atomic(cfg_path, text, strlen(text), e))) goto done;
    if (!(w = st_writer_new(e)) || !(perm = mr_calloc((size_t)n, sizeof *perm, e))) {
        rc = e->code;
        goto done;
    }
    for (int i = 0; i < n && !rc; i++) {
        const llm_lora *lo = &ad->mats[i];
        const int layer = i / LLM_LORA_N_TARGETS, t = i % LLM_LORA_N_TARGETS;
        if (!lo->a) continue;
        char name[160];
        peft_name(name, sizeof name, layer, t, 'A');
        int64_t sa[2] = {lo->rank, lo->in}, sb[2] = {lo->out, lo->rank};
        if ((rc = st_writer_add(w, name, ST_F32, 2, sa, lo->a, e))) break;
        const float *B = lo->b;
        if (needs_permute(m, t, 0)) {
            if (!(perm[i] = mr_alloc((size_t)lo->out * lo->rank * sizeof(float), e))) {
                rc = e->code;
                break;
            }
            llm_lora_permute_qk(perm[i], lo->b, qk_heads(m, t), m->cfg.head_dim, lo->rank, 0);
            B = perm[i];
        }
        peft_name(name, sizeof name, layer, t, 'B');
        rc = st_writer_add(w, name, ST_F32, 2, sb, B, e);
    }
    if (!rc) rc = st_writer_write(w, st_path, e);
done:
    if (perm)
        for (int i = 0; i < n; i++) free(perm[i]);
    free(perm);
    st_writer_free(w);
    free(text);
    free(cfg_path);
    free(st_path);
    return rc;
}

int llm_adapter_read_peft(llm_adapter *ad, const llm_model *m, const char *dir, mr_error *e) {
    memset(ad, 0, sizeof *ad);
    char *cfg_path = mr_path_join(dir, "adapter_config.json", e), *st_path = mr_path_join(dir, "adapter_model.safetensors", e);
    json_t *cfg = NULL;
    st_file f;
    unsigned char *present = NULL;
    int have_st = 0, rc = MR_OK;
    const int L = m->cfg.n_layer;
    if (!cfg_path || !st_path) {
        rc = mr_fail(e, MR_ERR_INTERNAL, "out of memory");
        goto done;
    }
    json_error_t jerr;
    if (!(cfg = json_load_file(cfg_path, 0, &jerr))) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: %s", cfg_path, jerr.text);
        goto done;
    }
    json_t *jr = json_object_get(cfg, "r"), *ja = json_object_get(cfg, "lora_alpha");
    if (!json_is_integer(jr) || json_integer_value(jr) <= 0 || json_integer_value(jr) > 65536 || !json_is_number(ja)) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: expected a positive integer \"r\" and a number \"lora_alpha\"", cfg_path);
        goto done;
    }
    const int r = (int)json_integer_value(jr);
    if ((rc = st_open(&f, st_path, e))) goto done;
    have_st = 1;
    if (!(present = mr_calloc((size_t)L * LLM_LORA_N_TARGETS, 1, e))) {
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    int any = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        int layer, t;
        const char *nm = f.tensors[i].name;
        if (parse_blk_name(nm, PEFT_NAMES, "base_model.model.model.layers.", ".lora_A.weight", L, &layer, &t)) {
            present[layer * LLM_LORA_N_TARGETS + t] = 1;
            any = 1;
        } else if (!parse_blk_name(nm, PEFT_NAMES, "base_model.model.model.layers.", ".lora_B.weight", L, &layer, &t)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: unexpected tensor '%s' (a layer of this %d-layer model?)", st_path, nm, L);
            goto done;
        }
    }
    if (!any) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: no lora_A tensors", st_path);
        goto done;
    }
    if ((rc = adapter_alloc(ad, m, r, (float)json_number_value(ja), 0.0f, present, 0, e))) goto done;
    for (int i = 0; i < L * LLM_LORA_N_TARGETS && !rc; i++) {
        llm_lora *lo = &ad->mats[i];
        const int layer = i / LLM_LORA_N_TARGETS, t = i % LLM_LORA_N_TARGETS;
        if (!lo->a) continue;
        char name[160];
        peft_name(name, sizeof name, layer, t, 'A');
        const st_tensor *ta = st_find(&f, name);
        if ((rc = st_read_f32(ta, lo->a, (int64_t)r * lo->in, e)) || (rc = mr_check_finite(lo->a, (size_t)r * lo->in, st_path, name, e))) break;
        peft_name(name, sizeof name, layer, t, 'B');
        const st_tensor *tb = st_find(&f, name);
        if (!tb) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: %s missing", st_path, name);
            break;
        }
        if ((rc = st_read_f32(tb, lo->db, (int64_t)lo->out * r, e)) || (rc = mr_check_finite(lo->db, (size_t)lo->out * r, st_path, name, e))) break;
        b_from_file(m, t, lo, 0);
    }
done:
    if (have_st) st_close(&f);
    json_decref(cfg);
    free(present);
    free(cfg_path);
    free(st_path);
    if (rc) llm_adapter_free(ad);
    return rc;
}
