/* LoRA adapter files: llama.cpp's GGUF adapter (what `llama-cli --lora` loads) and
 * a PEFT folder (what `PeftModel.from_pretrained` loads). */
#include "mllm4rec/ranker.h"
#include "mllm4rec/safetensors.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const char *GGUF_NAMES[MR_LT_N_TARGETS] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                                  "ffn_gate", "ffn_up", "ffn_down"};
static const char *PEFT_NAMES[MR_LT_N_TARGETS] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                  "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                  "mlp.down_proj"};

/* llama.cpp's converter reorders the rows of each llama q/k head from halves
 * (HF: row j*(hd/2)+i, j in {0,1}) to adjacent pairs (row 2i+j). to_pairs = 1 maps
 * halves -> pairs, 0 the inverse. B is [out, r]. */
static void permute_rows(const float *src, float *dst, int n_heads, int hd, int r, int to_pairs) {
    const int half = hd / 2;
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++) {
                int row_halves = h * hd + j * half + i, row_pairs = h * hd + 2 * i + j;
                int from = to_pairs ? row_halves : row_pairs, to = to_pairs ? row_pairs : row_halves;
                memcpy(dst + (size_t)to * r, src + (size_t)from * r, (size_t)r * sizeof(float));
            }
}

/* Whether a q/k B must be permuted between the model's order and the file's. */
static int needs_permute(const mr_lt_model *m, int target, int file_is_gguf) {
    if (target != MR_LT_Q && target != MR_LT_K) return 0;
    if (!m->arch || strcmp(m->arch, "llama")) return 0; /* qwen2 rotates halves in both */
    /* GGUF llama files are in pairs order; HF folders in halves order */
    const int model_pairs = m->rope_mode == MR_ROPE_NORM;
    return file_is_gguf ? !model_pairs : model_pairs;
}

static int lora_alloc_like(mr_lora *l, const mr_lt_model *m, int r, float alpha, unsigned targets, mr_error *e) {
    int rc = mr_lora_init(l, m, r, alpha, 0.0f, targets, 0, e);
    if (rc) return rc;
    memset(l->buf, 0, (size_t)l->n_params * 2 * sizeof(float));
    return MR_OK;
}

int mr_lora_write_gguf(const mr_lora *l, const mr_lt_model *m, const char *path, mr_error *e) {
    gguf_writer *w = gguf_writer_new(e);
    if (!w) return e->code;
    int rc;
    float *tmp = NULL;
    if ((rc = gguf_writer_set_str(w, "general.architecture", m->arch ? m->arch : "llama", e)) ||
        (rc = gguf_writer_set_str(w, "general.type", "adapter", e)) ||
        (rc = gguf_writer_set_str(w, "general.name", "mllm4rec ranker LoRA", e)) ||
        (rc = gguf_writer_set_str(w, "adapter.type", "lora", e)) ||
        (rc = gguf_writer_set_f32(w, "adapter.lora.alpha", l->alpha, e)) ||
        (rc = gguf_writer_set_u32(w, "mllm4rec.lora.rank", (uint32_t)l->r, e)))
        goto done;
    for (int layer = 0; layer < l->n_layer && !rc; layer++)
        for (int t = 0; t < MR_LT_N_TARGETS && !rc; t++) {
            const mr_lora_mat *lm = &l->mats[layer * MR_LT_N_TARGETS + t];
            if (!lm->A) continue;
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", layer, GGUF_NAMES[t]);
            uint64_t ne_a[2] = {(uint64_t)lm->in, (uint64_t)l->r};
            if ((rc = gguf_writer_add_tensor(w, name, GGML_TYPE_F32, 2, ne_a, lm->A, e))) break;
            const float *B = lm->B;
            if (needs_permute(m, t, 1)) {
                free(tmp);
                if (!(tmp = mr_alloc((size_t)lm->out * l->r * sizeof(float), e))) {
                    rc = e->code;
                    break;
                }
                permute_rows(lm->B, tmp, t == MR_LT_Q ? m->n_head : m->n_kv_head, m->head_dim, l->r, 1);
                B = tmp;
            }
            snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", layer, GGUF_NAMES[t]);
            uint64_t ne_b[2] = {(uint64_t)l->r, (uint64_t)lm->out};
            rc = gguf_writer_add_tensor(w, name, GGML_TYPE_F32, 2, ne_b, B, e);
        }
    if (!rc) rc = gguf_writer_write(w, path, e);
done:
    free(tmp);
    gguf_writer_free(w);
    return rc;
}

static int parse_blk_name(const char *name, const char *const *names, const char *prefix, const char *suffix,
                          int *layer, int *target) {
    size_t pl = strlen(prefix), sl = strlen(suffix), nl = strlen(name);
    if (nl <= pl + sl || strncmp(name, prefix, pl) || strcmp(name + nl - sl, suffix)) return 0;
    const char *p = name + pl;
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || *end != '.' || v < 0 || v > 100000) return 0;
    const char *mid = end + 1;
    size_t ml = (size_t)(name + nl - sl - mid);
    for (int t = 0; t < MR_LT_N_TARGETS; t++)
        if (strlen(names[t]) == ml && !strncmp(mid, names[t], ml)) {
            *layer = (int)v;
            *target = t;
            return 1;
        }
    return 0;
}

int mr_lora_read_gguf(mr_lora *l, const mr_lt_model *m, const char *path, mr_error *e) {
    memset(l, 0, sizeof *l);
    gguf_file g;
    int rc = gguf_open(&g, path, e);
    if (rc) return rc;
    char *s = NULL;
    if ((rc = gguf_get_str(&g, "general.type", &s, e)) || strcmp(s, "adapter")) {
        if (!rc) rc = mr_fail(e, MR_ERR_INPUT, "%s: general.type is '%s', not 'adapter'", path, s);
        goto done;
    }
    free(s);
    s = NULL;
    if ((rc = gguf_get_str(&g, "general.architecture", &s, e))) goto done;
    if (m->arch && strcmp(s, m->arch)) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: adapter for architecture '%s', the model is '%s'", path, s, m->arch);
        goto done;
    }
    double alpha;
    if ((rc = gguf_get_f64(&g, "adapter.lora.alpha", &alpha, e))) goto done;
    unsigned targets = 0;
    int r = 0;
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        int layer, t;
        const gguf_tensor *tn = &g.tensors[i];
        if (parse_blk_name(tn->name, GGUF_NAMES, "blk.", ".weight.lora_a", &layer, &t)) {
            targets |= 1u << t;
            if (tn->n_dims != 2 || tn->type != GGML_TYPE_F32) {
                rc = mr_fail(e, MR_ERR_INPUT, "%s: %s is not a 2-D f32 tensor", path, tn->name);
                goto done;
            }
            if (r == 0) r = (int)tn->ne[1];
        } else if (!parse_blk_name(tn->name, GGUF_NAMES, "blk.", ".weight.lora_b", &layer, &t)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: unexpected tensor '%s' in a LoRA adapter", path, tn->name);
            goto done;
        }
        if (layer >= m->n_layer) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: %s names layer %d, the model has %d", path, tn->name, layer, m->n_layer);
            goto done;
        }
    }
    if (!targets || r <= 0) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: no lora_a tensors", path);
        goto done;
    }
    if ((rc = lora_alloc_like(l, m, r, (float)alpha, targets, e))) goto done;
    for (int layer = 0; layer < m->n_layer && !rc; layer++)
        for (int t = 0; t < MR_LT_N_TARGETS && !rc; t++) {
            mr_lora_mat *lm = mr_lora_get(l, layer, t);
            if (!lm) continue;
            char name[96];
            for (int ab = 0; ab < 2 && !rc; ab++) {
                snprintf(name, sizeof name, "blk.%d.%s.weight.lora_%c", layer, GGUF_NAMES[t], ab ? 'b' : 'a');
                const gguf_tensor *tn = gguf_find_tensor(&g, name);
                uint64_t want0 = ab ? (uint64_t)r : (uint64_t)lm->in, want1 = ab ? (uint64_t)lm->out : (uint64_t)r;
                if (!tn) {
                    rc = mr_fail(e, MR_ERR_INPUT, "%s: %s missing (every layer needs the same targets)", path, name);
                } else if (tn->type != GGML_TYPE_F32 || tn->n_dims != 2 || tn->ne[0] != want0 || tn->ne[1] != want1) {
                    rc = mr_fail(e, MR_ERR_INPUT, "%s: %s has shape [%llu, %llu], expected f32 [%llu, %llu]", path, name,
                                 (unsigned long long)tn->ne[0], (unsigned long long)tn->ne[1],
                                 (unsigned long long)want0, (unsigned long long)want1);
                } else if ((rc = mr_check_finite(tn->data, (size_t)(want0 * want1), path, name, e))) {
                    break;
                } else if (!ab) {
                    memcpy(lm->A, tn->data, (size_t)r * lm->in * sizeof(float));
                } else if (needs_permute(m, t, 1)) {
                    permute_rows(tn->data, lm->B, t == MR_LT_Q ? m->n_head : m->n_kv_head, m->head_dim, r, 0);
                } else {
                    memcpy(lm->B, tn->data, (size_t)lm->out * r * sizeof(float));
                }
            }
        }
done:
    free(s);
    gguf_close(&g);
    if (rc) mr_lora_free(l);
    return rc;
}

int mr_lora_write_peft(const mr_lora *l, const mr_lt_model *m, const char *dir, const char *base_model, mr_error *e) {
    int rc = mr_mkdir_p(dir, e);
    if (rc) return rc;
    json_t *cfg = json_object(), *mods = json_array();
    for (int t = 0; t < MR_LT_N_TARGETS; t++)
        if (l->targets & (1u << t)) json_array_append_new(mods, json_string(strchr(PEFT_NAMES[t], '.') + 1));
    json_object_set_new(cfg, "base_model_name_or_path", json_string(base_model ? base_model : ""));
    json_object_set_new(cfg, "bias", json_string("none"));
    json_object_set_new(cfg, "fan_in_fan_out", json_false());
    json_object_set_new(cfg, "inference_mode", json_true());
    json_object_set_new(cfg, "init_lora_weights", json_true());
    json_object_set_new(cfg, "lora_alpha", json_real(l->alpha));
    json_object_set_new(cfg, "lora_dropout", json_real(l->dropout));
    json_object_set_new(cfg, "modules_to_save", json_null());
    json_object_set_new(cfg, "peft_type", json_string("LORA"));
    json_object_set_new(cfg, "r", json_integer(l->r));
    json_object_set_new(cfg, "target_modules", mods);
    json_object_set_new(cfg, "task_type", json_string("CAUSAL_LM"));
    char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(cfg);
    char *cfg_path = mr_path_join(dir, "adapter_config.json", e), *st_path = mr_path_join(dir, "adapter_model.safetensors", e);
    float **perm = NULL;
    st_writer *w = NULL;
    if (!text || !cfg_path || !st_path) {
        rc = mr_fail(e, MR_ERR_INTERNAL, "out of memory");
        goto done;
    }
    if ((rc = mr_write_file_atomic(cfg_path, text, strlen(text), e))) goto done;
    if (!(w = st_writer_new(e))) {
        rc = e->code;
        goto done;
    }
    perm = mr_calloc((size_t)l->n_layer * MR_LT_N_TARGETS, sizeof *perm, e);
    if (!perm) {
        rc = e->code;
        goto done;
    }
    for (int layer = 0; layer < l->n_layer && !rc; layer++)
        for (int t = 0; t < MR_LT_N_TARGETS && !rc; t++) {
            const mr_lora_mat *lm = &l->mats[layer * MR_LT_N_TARGETS + t];
            if (!lm->A) continue;
            char name[160];
            snprintf(name, sizeof name, "base_model.model.model.layers.%d.%s.lora_A.weight", layer, PEFT_NAMES[t]);
            int64_t sa[2] = {l->r, lm->in}, sb[2] = {lm->out, l->r};
            if ((rc = st_writer_add(w, name, ST_F32, 2, sa, lm->A, e))) break;
            const float *B = lm->B;
            if (needs_permute(m, t, 0)) {
                float *p = mr_alloc((size_t)lm->out * l->r * sizeof(float), e);
                if (!p) {
                    rc = e->code;
                    break;
                }
                perm[layer * MR_LT_N_TARGETS + t] = p;
                permute_rows(lm->B, p, t == MR_LT_Q ? m->n_head : m->n_kv_head, m->head_dim, l->r, 0);
                B = p;
            }
            snprintf(name, sizeof name, "base_model.model.model.layers.%d.%s.lora_B.weight", layer, PEFT_NAMES[t]);
            rc = st_writer_add(w, name, ST_F32, 2, sb, B, e);
        }
    if (!rc) rc = st_writer_write(w, st_path, e);
done:
    if (perm)
        for (int i = 0; i < l->n_layer * MR_LT_N_TARGETS; i++) free(perm[i]);
    free(perm);
    st_writer_free(w);
    free(text);
    free(cfg_path);
    free(st_path);
    return rc;
}

int mr_lora_read_peft(mr_lora *l, const mr_lt_model *m, const char *dir, mr_error *e) {
    memset(l, 0, sizeof *l);
    char *cfg_path = mr_path_join(dir, "adapter_config.json", e), *st_path = mr_path_join(dir, "adapter_model.safetensors", e);
    json_t *cfg = NULL;
    st_file f;
    int have_st = 0, rc = MR_OK;
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
    if (!json_is_integer(jr) || json_integer_value(jr) <= 0 || !json_is_number(ja)) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: expected a positive integer \"r\" and a number \"lora_alpha\"", cfg_path);
        goto done;
    }
    const int r = (int)json_integer_value(jr);
    if ((rc = st_open(&f, st_path, e))) goto done;
    have_st = 1;
    unsigned targets = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        int layer, t;
        const char *nm = f.tensors[i].name;
        if (parse_blk_name(nm, PEFT_NAMES, "base_model.model.model.layers.", ".lora_A.weight", &layer, &t))
            targets |= 1u << t;
        else if (!parse_blk_name(nm, PEFT_NAMES, "base_model.model.model.layers.", ".lora_B.weight", &layer, &t)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: unexpected tensor '%s'", st_path, nm);
            goto done;
        }
    }
    if (!targets) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: no lora_A tensors", st_path);
        goto done;
    }
    if ((rc = lora_alloc_like(l, m, r, (float)json_number_value(ja), targets, e))) goto done;
    for (int layer = 0; layer < m->n_layer && !rc; layer++)
        for (int t = 0; t < MR_LT_N_TARGETS && !rc; t++) {
            mr_lora_mat *lm = mr_lora_get(l, layer, t);
            if (!lm) continue;
            char name[160];
            snprintf(name, sizeof name, "base_model.model.model.layers.%d.%s.lora_A.weight", layer, PEFT_NAMES[t]);
            const st_tensor *ta = st_find(&f, name);
            if (!ta) {
                rc = mr_fail(e, MR_ERR_INPUT, "%s: %s missing", st_path, name);
                break;
            }
            if ((rc = st_read_f32(ta, lm->A, (int64_t)r * lm->in, e))) break;
            if ((rc = mr_check_finite(lm->A, (size_t)r * lm->in, st_path, name, e))) break;
            snprintf(name, sizeof name, "base_model.model.model.layers.%d.%s.lora_B.weight", layer, PEFT_NAMES[t]);
            const st_tensor *tb = st_find(&f, name);
            if (!tb) {
                rc = mr_fail(e, MR_ERR_INPUT, "%s: %s missing", st_path, name);
                break;
            }
            if ((rc = st_read_f32(tb, lm->dB, (int64_t)lm->out * r, e))) break; /* dB as scratch */
            if ((rc = mr_check_finite(lm->dB, (size_t)lm->out * r, st_path, name, e))) break;
            if (needs_permute(m, t, 0))
                permute_rows(lm->dB, lm->B, t == MR_LT_Q ? m->n_head : m->n_kv_head, m->head_dim, r, 1);
            else
                memcpy(lm->B, lm->dB, (size_t)lm->out * r * sizeof(float));
            memset(lm->dB, 0, (size_t)lm->out * r * sizeof(float));
        }
done:
    if (have_st) st_close(&f);
    json_decref(cfg);
    free(cfg_path);
    free(st_path);
    if (rc) mr_lora_free(l);
    return rc;
}
