/* Random BLIP-2 folders (config.json, preprocessor_config.json, safetensors with
 * transformers' tensor names) for tests and benchmarks. Shards keep the memory
 * needed while writing the 3.9 B-parameter shape to one shard at a time. */
#include "mllm4rec/blip2.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int mr_blip2_shape_preset(const char *name, mr_blip2_shape *s) {
    if (!strcmp(name, "tiny")) {
        *s = (mr_blip2_shape){32, 8, 48, 2, 4, 96, 48, 2, 4, 96, 2, 4, 64, 2, 4, 128, 256, 128, 2, 2, 1};
        return 0;
    }
    if (!strcmp(name, "blip2-opt-2.7b")) {
        /* eos 50118 ("\n" in OPT's vocabulary) is what the checkpoint's text_config says */
        *s = (mr_blip2_shape){224, 14, 1408, 39, 16, 6144, 768, 12, 12, 3072, 2, 32, 2560, 32, 32, 10240, 50272, 2048,
                              2, 50118, 1};
        return 0;
    }
    return -1;
}

typedef enum { INIT_RANDOM, INIT_ONES, INIT_ZEROS } init_kind;

typedef struct tensor_plan {
    char name[160];
    int n_dims;
    int64_t shape[4];
    init_kind init;
    int shard;
} tensor_plan;

typedef struct plan {
    tensor_plan *t;
    int n, cap;
} plan;

static int add(plan *p, mr_error *e, init_kind init, int n_dims, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
               const char *fmt, ...) MR_PRINTF(9, 10);
static int add(plan *p, mr_error *e, init_kind init, int n_dims, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
               const char *fmt, ...) {
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 256;
        tensor_plan *nt = mr_realloc(p->t, sizeof(tensor_plan) * cap, e);
        if (!nt) return MR_ERR_INTERNAL;
        p->t = nt;
        p->cap = cap;
    }
    tensor_plan *t = &p->t[p->n++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->n_dims = n_dims;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->shape[2] = d2;
    t->shape[3] = d3;
    t->init = init;
    return MR_OK;
}

#define MAT(r, c, ...) add(&p, e, INIT_RANDOM, 2, r, c, 0, 0, __VA_ARGS__)
#define VEC(n, ...) add(&p, e, INIT_RANDOM, 1, n, 0, 0, 0, __VA_ARGS__)
#define LNW(n, ...) add(&p, e, INIT_ONES, 1, n, 0, 0, 0, __VA_ARGS__)
#define LNB(n, ...) add(&p, e, INIT_ZEROS, 1, n, 0, 0, 0, __VA_ARGS__)

static int make_plan(const mr_blip2_shape *s, plan *out, mr_error *e) {
    plan p = {0};
    int rc = 0, E = s->v_hidden, P = s->patch_size, G = s->image_size / s->patch_size, Q = s->q_hidden,
        H = s->t_hidden;
    rc |= add(&p, e, INIT_RANDOM, 3, 1, s->n_query, Q, 0, "query_tokens");
    rc |= add(&p, e, INIT_RANDOM, 3, 1, 1, E, 0, "vision_model.embeddings.class_embedding");
    rc |= add(&p, e, INIT_RANDOM, 3, 1, (int64_t)G * G + 1, E, 0, "vision_model.embeddings.position_embedding");
    rc |= add(&p, e, INIT_RANDOM, 4, E, 3, P, P, "vision_model.embeddings.patch_embedding.weight");
    rc |= VEC(E, "vision_model.embeddings.patch_embedding.bias");
    for (int l = 0; l < s->v_layers && !rc; l++) {
        const char *v = "vision_model.encoder.layers";
        rc |= LNW(E, "%s.%d.layer_norm1.weight", v, l);
        rc |= LNB(E, "%s.%d.layer_norm1.bias", v, l);
        rc |= MAT(3 * E, E, "%s.%d.self_attn.qkv.weight", v, l);
        rc |= VEC(3 * E, "%s.%d.self_attn.qkv.bias", v, l);
        rc |= MAT(E, E, "%s.%d.self_attn.projection.weight", v, l);
        rc |= VEC(E, "%s.%d.self_attn.projection.bias", v, l);
        rc |= LNW(E, "%s.%d.layer_norm2.weight", v, l);
        rc |= LNB(E, "%s.%d.layer_norm2.bias", v, l);
        rc |= MAT(s->v_inter, E, "%s.%d.mlp.fc1.weight", v, l);
        rc |= VEC(s->v_inter, "%s.%d.mlp.fc1.bias", v, l);
        rc |= MAT(E, s->v_inter, "%s.%d.mlp.fc2.weight", v, l);
        rc |= VEC(E, "%s.%d.mlp.fc2.bias", v, l);
    }
    rc |= LNW(E, "vision_model.post_layernorm.weight");
    rc |= LNB(E, "vision_model.post_layernorm.bias");
    rc |= LNW(Q, "qformer.layernorm.weight");
    rc |= LNB(Q, "qformer.layernorm.bias");
    for (int l = 0; l < s->q_layers && !rc; l++) {
        const char *parts[2] = {"attention", "crossattention"};
        for (int c = 0; c < (l % s->cross_freq == 0 ? 2 : 1); c++) {
            int kv = c ? E : Q;
            const char *q = "qformer.encoder.layer";
            rc |= MAT(Q, Q, "%s.%d.%s.attention.query.weight", q, l, parts[c]);
            rc |= VEC(Q, "%s.%d.%s.attention.query.bias", q, l, parts[c]);
            rc |= MAT(Q, kv, "%s.%d.%s.attention.key.weight", q, l, parts[c]);
            rc |= VEC(Q, "%s.%d.%s.attention.key.bias", q, l, parts[c]);
            rc |= MAT(Q, kv, "%s.%d.%s.attention.value.weight", q, l, parts[c]);
            rc |= VEC(Q, "%s.%d.%s.attention.value.bias", q, l, parts[c]);
            rc |= MAT(Q, Q, "%s.%d.%s.output.dense.weight", q, l, parts[c]);
            rc |= VEC(Q, "%s.%d.%s.output.dense.bias", q, l, parts[c]);
            rc |= LNW(Q, "%s.%d.%s.output.LayerNorm.weight", q, l, parts[c]);
            rc |= LNB(Q, "%s.%d.%s.output.LayerNorm.bias", q, l, parts[c]);
        }
        rc |= MAT(s->q_inter, Q, "qformer.encoder.layer.%d.intermediate_query.dense.weight", l);
        rc |= VEC(s->q_inter, "qformer.encoder.layer.%d.intermediate_query.dense.bias", l);
        rc |= MAT(Q, s->q_inter, "qformer.encoder.layer.%d.output_query.dense.weight", l);
        rc |= VEC(Q, "qformer.encoder.layer.%d.output_query.dense.bias", l);
        rc |= LNW(Q, "qformer.encoder.layer.%d.output_query.LayerNorm.weight", l);
        rc |= LNB(Q, "qformer.encoder.layer.%d.output_query.LayerNorm.bias", l);
    }
    rc |= MAT(H, Q, "language_projection.weight");
    rc |= VEC(H, "language_projection.bias");
    const char *d = "language_model.model.decoder";
    rc |= MAT(s->vocab, H, "%s.embed_tokens.weight", d);
    rc |= MAT((int64_t)s->max_pos + 2, H, "%s.embed_positions.weight", d);
    rc |= LNW(H, "%s.final_layer_norm.weight", d);
    rc |= LNB(H, "%s.final_layer_norm.bias", d);
    for (int l = 0; l < s->t_layers && !rc; l++) {
        const char *pr[4] = {"q_proj", "k_proj", "v_proj", "out_proj"};
        for (int i = 0; i < 4; i++) {
            rc |= MAT(H, H, "%s.layers.%d.self_attn.%s.weight", d, l, pr[i]);
            rc |= VEC(H, "%s.layers.%d.self_attn.%s.bias", d, l, pr[i]);
        }
        rc |= LNW(H, "%s.layers.%d.self_attn_layer_norm.weight", d, l);
        rc |= LNB(H, "%s.layers.%d.self_attn_layer_norm.bias", d, l);
        rc |= MAT(s->t_ffn, H, "%s.layers.%d.fc1.weight", d, l);
        rc |= VEC(s->t_ffn, "%s.layers.%d.fc1.bias", d, l);
        rc |= MAT(H, s->t_ffn, "%s.layers.%d.fc2.weight", d, l);
        rc |= VEC(H, "%s.layers.%d.fc2.bias", d, l);
        rc |= LNW(H, "%s.layers.%d.final_layer_norm.weight", d, l);
        rc |= LNB(H, "%s.layers.%d.final_layer_norm.bias", d, l);
    }
    if (rc) {
        free(p.t);
        return MR_ERR_INTERNAL;
    }
    *out = p;
    return MR_OK;
}

static int64_t numel(const tensor_plan *t) {
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= t->shape[i];
    return n;
}

/* Fills one tensor; chunks have their own generator so threads do not matter. */
static void fill(void *dst, const tensor_plan *t, int index, st_dtype dtype, uint64_t seed, float std) {
    int64_t n = numel(t), chunk = 1 << 16;
    float a = std * 1.7320508f; /* uniform(-a, a) has standard deviation std */
#pragma omp parallel for schedule(dynamic, 4) if (n > (1 << 18))
    for (int64_t c0 = 0; c0 < n; c0 += chunk) {
        mr_rng r;
        mr_rng_seed(&r, seed * 0x9E3779B97F4A7C15ull + (uint64_t)index * 0x100000001B3ull + (uint64_t)(c0 / chunk));
        int64_t c1 = c0 + chunk < n ? c0 + chunk : n;
        for (int64_t i = c0; i < c1; i++) {
            float v = t->init == INIT_ONES ? 1.0f : t->init == INIT_ZEROS ? 0.0f : (float)(mr_rng_uniform(&r) * 2 - 1) * a;
            if (dtype == ST_F32) ((float *)dst)[i] = v;
            else if (dtype == ST_BF16) ((uint16_t *)dst)[i] = mr_f32_to_bf16(v);
            else ((uint16_t *)dst)[i] = mr_f32_to_f16(v);
        }
    }
}

static int write_config(const mr_blip2_shape *s, const char *dir, st_dtype dtype, mr_error *e) {
    const char *tdt = dtype == ST_F32 ? "float32" : dtype == ST_BF16 ? "bfloat16" : "float16";
    json_t *cfg = json_pack(
        "{s:[s], s:s, s:i, s:f, s:f, s:b, s:s, s:s,"
        " s:{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:f, s:b},"
        " s:{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:f, s:s},"
        " s:{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b, s:s, s:b, s:i, s:i, s:i, s:i}}",
        "architectures", "Blip2ForConditionalGeneration", "model_type", "blip-2", "num_query_tokens", s->n_query,
        "initializer_factor", 1.0, "initializer_range", 0.02, "use_decoder_only_language_model", 1, "torch_dtype", tdt,
        "transformers_version", "4.33.3",
        "vision_config", "model_type", "blip_2_vision_model", "hidden_size", s->v_hidden, "intermediate_size",
        s->v_inter, "num_hidden_layers", s->v_layers, "num_attention_heads", s->v_heads, "image_size", s->image_size,
        "patch_size", s->patch_size, "hidden_act", "gelu", "layer_norm_eps", 1e-5, "qkv_bias", 1,
        "qformer_config", "model_type", "blip_2_qformer", "hidden_size", s->q_hidden, "intermediate_size", s->q_inter,
        "num_hidden_layers", s->q_layers, "num_attention_heads", s->q_heads, "cross_attention_frequency",
        s->cross_freq, "encoder_hidden_size", s->v_hidden, "hidden_act", "gelu", "layer_norm_eps", 1e-12,
        "position_embedding_type", "absolute",
        "text_config", "model_type", "opt", "vocab_size", s->vocab, "hidden_size", s->t_hidden, "ffn_dim", s->t_ffn,
        "num_hidden_layers", s->t_layers, "num_attention_heads", s->t_heads, "max_position_embeddings", s->max_pos,
        "word_embed_proj_dim", s->t_hidden, "do_layer_norm_before", 1, "activation_function", "relu", "enable_bias",
        1, "bos_token_id", s->bos, "eos_token_id", s->eos, "pad_token_id", s->pad, "max_length", 20);
    json_t *pre = json_pack("{s:b, s:b, s:b, s:b, s:[f,f,f], s:s, s:[f,f,f], s:i, s:f, s:{s:i, s:i}}", "do_convert_rgb",
                            1, "do_normalize", 1, "do_rescale", 1, "do_resize", 1, "image_mean", 0.48145466, 0.4578275,
                            0.40821073, "image_processor_type", "BlipImageProcessor", "image_std", 0.26862954,
                            0.26130258, 0.27577711, "resample", 3, "rescale_factor", 1.0 / 255.0, "size", "height",
                            s->image_size, "width", s->image_size);
    if (!cfg || !pre) {
        json_decref(cfg);
        json_decref(pre);
        return mr_fail(e, MR_ERR_INTERNAL, "building config.json failed");
    }
    const char *names[2] = {"config.json", "preprocessor_config.json"};
    json_t *objs[2] = {cfg, pre};
    int rc = MR_OK;
    for (int i = 0; i < 2 && !rc; i++) {
        char *text = json_dumps(objs[i], JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        char *path = mr_path_join(dir, names[i], e);
        if (!text || !path) rc = MR_ERR_INTERNAL;
        else {
            rc = mr_write_file_atomic(path, text, strlen(text), e);
        }
        free(text);
        free(path);
    }
    json_decref(cfg);
    json_decref(pre);
    return rc;
}

static int check_shape(const mr_blip2_shape *s, mr_error *e) {
    const int *v = &s->image_size;
    for (size_t i = 0; i < sizeof *s / sizeof(int) - 3; i++)
        if (v[i] <= 0) return mr_fail(e, MR_ERR_USAGE, "every size of the shape must be positive");
    if (s->image_size % s->patch_size) return mr_fail(e, MR_ERR_USAGE, "image size must be a multiple of the patch size");
    if (s->v_hidden % s->v_heads || s->q_hidden % s->q_heads || s->t_hidden % s->t_heads)
        return mr_fail(e, MR_ERR_USAGE, "each hidden size must be a multiple of its head count");
    if (s->bos >= s->vocab || s->eos >= s->vocab || s->pad >= s->vocab || s->bos < 0 || s->eos < 0)
        return mr_fail(e, MR_ERR_USAGE, "bos/eos/pad ids must be inside the vocabulary of %d", s->vocab);
    return MR_OK;
}

int mr_blip2_write_random(const mr_blip2_shape *s, const char *dir, st_dtype dtype, uint64_t seed, float init_std,
                          uint64_t shard_bytes, mr_error *e) {
    if (dtype != ST_F32 && dtype != ST_F16 && dtype != ST_BF16)
        return mr_fail(e, MR_ERR_USAGE, "weights can be F32, F16 or BF16");
    int rc = check_shape(s, e);
    if (rc) return rc;
    if ((rc = mr_mkdir_p(dir, e))) return rc;
    plan p;
    if ((rc = make_plan(s, &p, e))) return rc;
    size_t esz = st_dtype_size(dtype);
    uint64_t total = 0, cur = 0;
    int n_shards = 1;
    for (int i = 0; i < p.n; i++) {
        uint64_t b = (uint64_t)numel(&p.t[i]) * esz;
        if (shard_bytes && cur > 0 && cur + b > shard_bytes) {
            n_shards++;
            cur = 0;
        }
        p.t[i].shard = n_shards - 1;
        cur += b;
        total += b;
    }
    json_t *weight_map = json_object();
    for (int sh = 0; sh < n_shards && !rc; sh++) {
        char fname[64];
        if (n_shards == 1) snprintf(fname, sizeof fname, "model.safetensors");
        else snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", sh + 1, n_shards);
        st_writer *w = st_writer_new(e);
        if (!w) {
            rc = MR_ERR_INTERNAL;
            break;
        }
        void **bufs = mr_calloc(p.n, sizeof(void *), e);
        if (!bufs) rc = MR_ERR_INTERNAL;
        st_writer_set_metadata(w, "format", "pt", e);
        for (int i = 0; i < p.n && !rc; i++) {
            if (p.t[i].shard != sh) continue;
            bufs[i] = mr_alloc((size_t)numel(&p.t[i]) * esz + 1, e);
            if (!bufs[i]) {
                rc = MR_ERR_INTERNAL;
                break;
            }
            fill(bufs[i], &p.t[i], i, dtype, seed, init_std);
            rc = st_writer_add(w, p.t[i].name, dtype, p.t[i].n_dims, p.t[i].shape, bufs[i], e);
            json_object_set_new(weight_map, p.t[i].name, json_string(fname));
        }
        char *path = rc ? NULL : mr_path_join(dir, fname, e);
        if (!rc && !path) rc = MR_ERR_INTERNAL;
        if (!rc) rc = st_writer_write(w, path, e);
        free(path);
        st_writer_free(w);
        if (bufs)
            for (int i = 0; i < p.n; i++) free(bufs[i]);
        free(bufs);
    }
    if (!rc && n_shards > 1) {
        json_t *index = json_pack("{s:{s:I}, s:O}", "metadata", "total_size", (json_int_t)total, "weight_map", weight_map);
        char *text = index ? json_dumps(index, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
        char *path = mr_path_join(dir, "model.safetensors.index.json", e);
        if (!text || !path) rc = rc ? rc : mr_fail(e, MR_ERR_INTERNAL, "writing the shard index failed");
        else rc = mr_write_file_atomic(path, text, strlen(text), e);
        free(text);
        free(path);
        json_decref(index);
    }
    json_decref(weight_map);
    free(p.t);
    /* a folder reused with another layout must not keep the other one's files */
    char *stale = mr_path_join(dir, n_shards > 1 ? "model.safetensors" : "model.safetensors.index.json", e);
    if (stale) unlink(stale);
    free(stale);
    if (!rc) rc = write_config(s, dir, dtype, e);
    return rc;
}
