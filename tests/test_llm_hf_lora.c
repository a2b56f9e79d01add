/* Hugging Face folders against transformers' logits (reference/hf), llama.cpp
 * LoRA adapters (against transformers' hand-applied LoRA and against a
 * float64-merged model), and the refusal of models that do not match their files. */
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/llm.h"
#include "test.h"

/* Runs ids through the model and returns logits for every position. */
static float *all_logits(llm_model *m, const int32_t *ids, int64_t T, mr_error *e) {
    llm_state s;
    if (llm_state_init(&s, m, T, T, LLM_STATE_SCORE, e)) return NULL;
    int64_t *pos = malloc((size_t)T * sizeof *pos);
    for (int64_t t = 0; t < T; t++) pos[t] = t;
    float *lg = malloc((size_t)(T * m->cfg.n_vocab) * sizeof *lg);
    int rc = llm_forward(&s, ids, T, pos, (int)T, lg, e);
    free(pos);
    llm_state_free(&s);
    if (rc) {
        free(lg);
        return NULL;
    }
    return lg;
}

/* max |ours - reference tensor `name`| over every element */
static double compare_st(const float *ours, int64_t n, const st_file *ref, const char *name) {
    const st_tensor *t = st_find(ref, name);
    if (!t || st_numel(t) != n || t->dtype != ST_F32) return 1e30;
    const float *r = t->data;
    double mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(ours[i] - r[i]));
    return mx;
}

static void check_hf(const char *dir_rel, const char *outputs_name) {
    const char *dir = test_shared_path(dir_rel);
    if (!dir) SKIP("%s not present", dir_rel);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, outputs_name);
    llm_model m;
    mr_error e = {0};
    CHECK_OK(llm_load(&m, dir, &e), &e);
    st_file ref;
    if (st_open(&ref, path, &e)) {
        llm_free(&m);
        CHECK_OK(1, &e);
    }
    CHECK(m.tok == NULL); /* these folders have no tokenizer files */
    CHECK(strstr(m.tok_missing_why, "--ids") != NULL);
    const char *seqs[] = {"seq_a", "seq_b"};
    double worst = 0;
    for (int i = 0; i < 2; i++) {
        char name[64];
        snprintf(name, sizeof name, "inputs.%s", seqs[i]);
        /* the inputs are listed in ref.json; the same ids are the argmax-free fixed sequences */
        static const int32_t seq_a[] = {50, 214, 41, 56, 207, 119, 155};
        static const int32_t seq_b[] = {252, 146, 180, 26,  236, 157, 33,  174, 161, 239, 127,
                                        29,  121, 189, 123, 115, 223, 72,  83,  204, 130, 249,
                                        178, 53,  243, 254, 79,  40,  37,  169, 253, 198, 234};
        const int32_t *ids = i ? seq_b : seq_a;
        int64_t T = i ? 33 : 7;
        float *lg = all_logits(&m, ids, T, &e);
        CHECK_MSG(lg != NULL, "%s", e.msg);
        snprintf(name, sizeof name, "%s.logits", seqs[i]);
        double d = compare_st(lg, T * m.cfg.n_vocab, &ref, name);
        free(lg);
        worst = fmax(worst, d);
    }
    st_close(&ref);
    llm_free(&m);
    printf("  %s/%s: max |logit diff| vs transformers %.3g\n", dir_rel, outputs_name, worst);
    CHECK(worst <= 1e-4);
}

TEST(hf_llama_logits) { check_hf("reference/hf/llama", "outputs.safetensors"); }
TEST(hf_qwen2_logits) { check_hf("reference/hf/qwen2", "outputs.safetensors"); }

/* The llama folder as two shards (F16 and BF16) with an index, against the
 * same weights rounded the same way and stored as F32. */
TEST(hf_sharded_half_precision) {
    const char *dir = test_shared_path("reference/hf/llama");
    if (!dir) SKIP("reference/hf/llama not present");
    char path[1024], cfg_src[1024];
    mr_error e = {0};
    st_file src;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK_OK(st_open(&src, path, &e), &e);
    const char *half_dir = test_tmp_path("hf_half"), *f32_dir = test_tmp_path("hf_rounded");
    char half[512], rounded[512];
    snprintf(half, sizeof half, "%s", half_dir);
    snprintf(rounded, sizeof rounded, "%s", f32_dir);
    CHECK_OK(mr_mkdir_p(half, &e), &e);
    CHECK_OK(mr_mkdir_p(rounded, &e), &e);
    st_writer *w1 = st_writer_new(&e), *w2 = st_writer_new(&e), *w3 = st_writer_new(&e);
    void **bufs = calloc((size_t)src.n_tensors * 2, sizeof *bufs);
    char *index = malloc(1 << 16);
    size_t at = (size_t)snprintf(index, 1 << 16, "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < src.n_tensors; i++) {
        const st_tensor *t = &src.tensors[i];
        int64_t n = st_numel(t);
        uint16_t *h = malloc((size_t)n * 2);
        float *r = malloc((size_t)n * 4);
        const float *x = t->data;
        int bf = i % 2;
        for (int64_t k = 0; k < n; k++) {
            h[k] = bf ? mr_f32_to_bf16(x[k]) : mr_f32_to_f16(x[k]);
            r[k] = bf ? mr_bf16_to_f32(h[k]) : mr_f16_to_f32(h[k]);
        }
        bufs[2 * i] = h;
        bufs[2 * i + 1] = r;
        CHECK_OK(st_writer_add(bf ? w2 : w1, t->name, bf ? ST_BF16 : ST_F16, t->n_dims, t->shape, h, &e), &e);
        CHECK_OK(st_writer_add(w3, t->name, ST_F32, t->n_dims, t->shape, r, &e), &e);
        at += (size_t)snprintf(index + at, (1 << 16) - at, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "",
                               t->name, bf + 1);
    }
    snprintf(index + at, (1 << 16) - at, "}}");
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", half);
    CHECK_OK(st_writer_write(w1, path, &e), &e);
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", half);
    CHECK_OK(st_writer_write(w2, path, &e), &e);
    snprintf(path, sizeof path, "%s/model.safetensors", rounded);
    CHECK_OK(st_writer_write(w3, path, &e), &e);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", half);
    test_write_file(path, index, strlen(index));
    char *cfg = NULL;
    size_t cl;
    snprintf(cfg_src, sizeof cfg_src, "%s/config.json", dir);
    CHECK_OK(mr_read_file(cfg_src, &cfg, &cl, &e), &e);
    snprintf(path, sizeof path, "%s/config.json", half);
    test_write_file(path, cfg, cl);
    snprintf(path, sizeof path, "%s/config.json", rounded);
    test_write_file(path, cfg, cl);
    free(cfg);
    free(index);
    st_writer_free(w1);
    st_writer_free(w2);
    st_writer_free(w3);
    for (int i = 0; i < 2 * src.n_tensors; i++) free(bufs[i]);
    free(bufs);
    st_close(&src);

    llm_model a, b;
    CHECK_OK(llm_load(&a, half, &e), &e);
    CHECK_OK(llm_load(&b, rounded, &e), &e);
    CHECK(a.tok_embd.type == GGML_TYPE_F16 || a.tok_embd.type == GGML_TYPE_BF16);
    static const int32_t ids[] = {50, 214, 41, 56, 207, 119, 155};
    float *la = all_logits(&a, ids, 7, &e), *lb = all_logits(&b, ids, 7, &e);
    CHECK(la && lb);
    double d = 0;
    for (int i = 0; i < 7 * 256; i++) d = fmax(d, fabs(la[i] - lb[i]));
    free(la);
    free(lb);
    llm_free(&a);
    llm_free(&b);
    printf("  sharded F16/BF16 folder vs the same values in F32: max |diff| %.3g\n", d);
    CHECK(d <= 1e-5);
}

/* Writes the PEFT-style lora.safetensors of reference/hf/llama as llama.cpp's
 * converter does (A [r][in] is ne {in, r}; B [out][r] is ne {r, out}; the q and k
 * rows of B permuted into adjacent RoPE pairs, row j*hd/2+i -> 2i+j per head), so
 * applying it to the Hugging Face folder checks that the engine undoes that order. */
TEST(hf_llama_lora_adapter_matches_transformers) {
    const char *dir = test_shared_path("reference/hf/llama");
    if (!dir) SKIP("reference/hf/llama not present");
    char path[1024];
    mr_error e = {0};
    st_file lora;
    snprintf(path, sizeof path, "%s/lora.safetensors", dir);
    CHECK_OK(st_open(&lora, path, &e), &e);
    int rc;
    llm_model cfg_model;
    CHECK_OK(llm_load(&cfg_model, dir, &e), &e);
    const int n_head = cfg_model.cfg.n_head, hd = cfg_model.cfg.head_dim;
    llm_free(&cfg_model);
    gguf_writer *w = gguf_writer_new(&e);
    CHECK(w != NULL);
    CHECK_OK(gguf_writer_set_str(w, "general.type", "adapter", &e), &e);
    CHECK_OK(gguf_writer_set_str(w, "adapter.type", "lora", &e), &e);
    CHECK_OK(gguf_writer_set_str(w, "general.architecture", "llama", &e), &e);
    CHECK_OK(gguf_writer_set_f32(w, "adapter.lora.alpha", 32.0f, &e), &e);
    for (int l = 0; l < 2; l++) {
        const char *proj[] = {"q_proj", "v_proj"}, *gg[] = {"attn_q", "attn_v"};
        for (int p = 0; p < 2; p++) {
            char an[128], bn[128], ga[128], gb[128];
            snprintf(an, sizeof an, "model.layers.%d.self_attn.%s.lora_A.weight", l, proj[p]);
            snprintf(bn, sizeof bn, "model.layers.%d.self_attn.%s.lora_B.weight", l, proj[p]);
            snprintf(ga, sizeof ga, "blk.%d.%s.weight.lora_a", l, gg[p]);
            snprintf(gb, sizeof gb, "blk.%d.%s.weight.lora_b", l, gg[p]);
            const st_tensor *A = st_find(&lora, an), *B = st_find(&lora, bn);
            CHECK(A && B && A->n_dims == 2 && B->n_dims == 2);
            uint64_t nea[2] = {(uint64_t)A->shape[1], (uint64_t)A->shape[0]};
            uint64_t neb[2] = {(uint64_t)B->shape[1], (uint64_t)B->shape[0]};
            CHECK_OK(gguf_writer_add_tensor(w, ga, GGML_TYPE_F32, 2, nea, A->data, &e), &e);
            const int r = (int)B->shape[1];
            float *bp = malloc((size_t)B->shape[0] * r * sizeof *bp);
            CHECK(bp != NULL);
            memcpy(bp, B->data, (size_t)B->shape[0] * r * sizeof *bp);
            if (p == 0) { /* q_proj: llama.cpp's pair order */
                const float *src = B->data;
                for (int h = 0; h < n_head; h++)
                    for (int i = 0; i < hd / 2; i++)
                        for (int j = 0; j < 2; j++)
                            memcpy(bp + ((size_t)h * hd + 2 * i + j) * r, src + ((size_t)h * hd + j * (hd / 2) + i) * r,
                                   (size_t)r * sizeof *bp);
            }
            rc = gguf_writer_add_tensor(w, gb, GGML_TYPE_F32, 2, neb, bp, &e);
            free(bp);
            CHECK_OK(rc, &e);
        }
    }
    const char *adapter = test_tmp_path("hf_lora.gguf");
    CHECK_OK(gguf_writer_write(w, adapter, &e), &e);
    gguf_writer_free(w);
    st_close(&lora);

    llm_model m;
    CHECK_OK(llm_load(&m, dir, &e), &e);
    rc = llm_lora_apply_file(&m, adapter, 1.0f, &e);
    if (rc) llm_free(&m);
    CHECK_OK(rc, &e);
    st_file ref;
    snprintf(path, sizeof path, "%s/lora_outputs.safetensors", dir);
    if (st_open(&ref, path, &e)) {
        llm_free(&m);
        CHECK_OK(1, &e);
    }
    static const int32_t seq_a[] = {50, 214, 41, 56, 207, 119, 155};
    float *lg = all_logits(&m, seq_a, 7, &e);
    double d = lg ? compare_st(lg, 7 * 256, &ref, "seq_a.logits") : 1e30;
    free(lg);
    st_close(&ref);
    llm_free(&m);
    printf("  hf llama + lora adapter: max |logit diff| vs transformers %.3g\n", d);
    CHECK(d <= 1e-4);
}

/* ---- a float64 check on a GGUF model: adapter == merged weights ---- */

static int copy_model(const gguf_file *src, const char *out, const char *skip, const char *replace_name,
                      const uint64_t *replace_ne, const void *replace_data, const char *arch_override,
                      mr_error *e) {
    gguf_writer *w = gguf_writer_new(e);
    if (!w) return MR_ERR_INTERNAL;
    int rc = gguf_writer_copy_kv(w, src, NULL, 0, e);
    if (!rc && arch_override) rc = gguf_writer_set_str(w, "general.architecture", arch_override, e);
    for (uint64_t i = 0; !rc && i < src->n_tensors; i++) {
        const gguf_tensor *t = &src->tensors[i];
        if (skip && !strcmp(t->name, skip)) continue;
        if (replace_name && !strcmp(t->name, replace_name))
            rc = gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, replace_ne ? replace_ne : t->ne, replace_data,
                                        e);
        else rc = gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, e);
    }
    if (!rc) rc = gguf_writer_write(w, out, e);
    gguf_writer_free(w);
    return rc;
}

TEST(gguf_lora_adapter_equals_float64_merge) {
    const char *mp = test_shared_path("reference/models/tiny-llama-random-f32.gguf");
    if (!mp) SKIP("tiny-llama-random-f32.gguf not present");
    mr_error e = {0};
    gguf_file g;
    CHECK_OK(gguf_open(&g, mp, &e), &e);
    const int r = 4;
    const float alpha = 6.0f;
    const double scale = alpha / r;
    const char *targets[] = {"blk.0.attn_q.weight", "blk.1.attn_v.weight", "blk.0.ffn_down.weight"};
    gguf_writer *aw = gguf_writer_new(&e);
    gguf_writer_set_str(aw, "general.type", "adapter", &e);
    gguf_writer_set_str(aw, "adapter.type", "lora", &e);
    gguf_writer_set_str(aw, "general.architecture", "llama", &e);
    gguf_writer_set_f32(aw, "adapter.lora.alpha", alpha, &e);
    /* merged copy: every tensor as is, targets replaced by W + scale·B·A computed in double */
    gguf_writer *mw = gguf_writer_new(&e);
    CHECK_OK(gguf_writer_copy_kv(mw, &g, NULL, 0, &e), &e);
    mr_rng rng;
    mr_rng_seed(&rng, 7);
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const gguf_tensor *t = &g.tensors[i];
        int k = -1;
        for (int j = 0; j < 3; j++)
            if (!strcmp(t->name, targets[j])) k = j;
        if (k < 0) {
            CHECK_OK(gguf_writer_add_tensor(mw, t->name, t->type, t->n_dims, t->ne, t->data, &e), &e);
            continue;
        }
        const int64_t cols = (int64_t)t->ne[0], rows = (int64_t)t->ne[1];
        float *A = malloc((size_t)(r * cols) * sizeof *A), *B = malloc((size_t)(rows * r) * sizeof *B);
        float *W = malloc((size_t)(rows * cols) * sizeof *W);
        for (int64_t x = 0; x < r * cols; x++) A[x] = (float)(0.3 * mr_rng_normal(&rng));
        for (int64_t x = 0; x < rows * r; x++) B[x] = (float)(0.3 * mr_rng_normal(&rng));
        const float *W0 = t->data;
        for (int64_t o = 0; o < rows; o++)
            for (int64_t c = 0; c < cols; c++) {
                double acc = 0;
                for (int q = 0; q < r; q++) acc += (double)B[o * r + q] * A[q * cols + c];
                W[o * cols + c] = (float)(W0[o * cols + c] + scale * acc);
            }
        char name[128];
        uint64_t nea[2] = {(uint64_t)cols, (uint64_t)r}, neb[2] = {(uint64_t)r, (uint64_t)rows};
        snprintf(name, sizeof name, "%s.lora_a", t->name);
        gguf_writer_add_tensor(aw, name, GGML_TYPE_F32, 2, nea, A, &e);
        snprintf(name, sizeof name, "%s.lora_b", t->name);
        gguf_writer_add_tensor(aw, name, GGML_TYPE_F32, 2, neb, B, &e);
        CHECK_OK(gguf_writer_add_tensor(mw, t->name, t->type, t->n_dims, t->ne, W, &e), &e);
        free(A);
        free(B);
        free(W);
    }
    const char *adapter = test_tmp_path("adapter.gguf"), *merged = test_tmp_path("merged.gguf");
    CHECK_OK(gguf_writer_write(aw, adapter, &e), &e);
    CHECK_OK(gguf_writer_write(mw, merged, &e), &e);
    gguf_writer_free(aw);
    gguf_writer_free(mw);
    gguf_close(&g);

    static const int32_t ids[] = {1, 9038, 2501, 263, 931, 29892, 727, 471};
    llm_model base, with, mer;
    CHECK_OK(llm_load(&base, mp, &e), &e);
    CHECK_OK(llm_load(&with, mp, &e), &e);
    CHECK_OK(llm_lora_apply_file(&with, adapter, 1.0f, &e), &e);
    CHECK_OK(llm_load(&mer, merged, &e), &e);
    float *lb = all_logits(&base, ids, 8, &e), *lw = all_logits(&with, ids, 8, &e), *lm = all_logits(&mer, ids, 8, &e);
    CHECK(lb && lw && lm);
    double d_merge = 0, d_base = 0;
    for (int64_t i = 0; i < 8 * 32000; i++) {
        d_merge = fmax(d_merge, fabs(lw[i] - lm[i]));
        d_base = fmax(d_base, fabs(lw[i] - lb[i]));
    }
    /* the adapter must matter, and equal the merged weights */
    printf("  adapter vs float64-merged weights: max |diff| %.3g (adapter moved logits by up to %.3g)\n", d_merge,
           d_base);
    /* a second adapter on the same weights is refused with the weight's name */
    int rc = llm_lora_apply_file(&with, adapter, 1.0f, &e);
    free(lb);
    free(lw);
    free(lm);
    llm_free(&base);
    llm_free(&with);
    llm_free(&mer);
    CHECK(d_base > 0.1);
    CHECK(d_merge <= 1e-4);
    CHECK(rc == MR_ERR_INPUT && strstr(e.msg, "blk.0.attn_q.weight"));
}

TEST(mismatching_models_are_refused) {
    const char *mp = test_shared_path("reference/models/tiny-llama-random-f32.gguf");
    if (!mp) SKIP("tiny-llama-random-f32.gguf not present");
    mr_error e = {0};
    gguf_file g;
    CHECK_OK(gguf_open(&g, mp, &e), &e);
    const char *p1 = test_tmp_path("missing.gguf"), *p2 = test_tmp_path("shape.gguf"), *p3 = test_tmp_path("arch.gguf");
    const gguf_tensor *up = gguf_find_tensor(&g, "blk.1.ffn_up.weight");
    CHECK(up != NULL);
    uint64_t ne_bad[2] = {up->ne[1], up->ne[0]}; /* transposed */
    CHECK_OK(copy_model(&g, p1, "blk.1.ffn_up.weight", NULL, NULL, NULL, NULL, &e), &e);
    CHECK_OK(copy_model(&g, p2, NULL, "blk.1.ffn_up.weight", ne_bad, up->data, NULL, &e), &e);
    CHECK_OK(copy_model(&g, p3, NULL, NULL, NULL, NULL, "mamba", &e), &e);
    gguf_close(&g);
    llm_model m;
    CHECK(llm_load(&m, p1, &e) == MR_ERR_INPUT);
    CHECK_MSG(strstr(e.msg, "blk.1.ffn_up.weight") && strstr(e.msg, "missing"), "message: %s", e.msg);
    CHECK(llm_load(&m, p2, &e) == MR_ERR_INPUT);
    CHECK_MSG(strstr(e.msg, "blk.1.ffn_up.weight") && strstr(e.msg, "shape"), "message: %s", e.msg);
    CHECK(llm_load(&m, p3, &e) == MR_ERR_INPUT);
    CHECK_MSG(strstr(e.msg, "general.architecture") && strstr(e.msg, "mamba"), "message: %s", e.msg);
    /* a tensor in a type the engine does not read (Q8_1 is an activation format) */
    const char *p4 = test_tmp_path("type.gguf");
    CHECK_OK(gguf_open(&g, mp, &e), &e);
    gguf_writer *w = gguf_writer_new(&e);
    CHECK_OK(gguf_writer_copy_kv(w, &g, NULL, 0, &e), &e);
    uint8_t *junk = calloc(1, 1 << 20);
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const gguf_tensor *t = &g.tensors[i];
        int odd = !strcmp(t->name, "blk.0.attn_k.weight");
        CHECK_OK(gguf_writer_add_tensor(w, t->name, odd ? GGML_TYPE_Q8_1 : t->type, t->n_dims, t->ne,
                                        odd ? junk : t->data, &e),
                 &e);
    }
    CHECK_OK(gguf_writer_write(w, p4, &e), &e);
    gguf_writer_free(w);
    free(junk);
    gguf_close(&g);
    CHECK(llm_load(&m, p4, &e) == MR_ERR_INPUT);
    CHECK_MSG(strstr(e.msg, "blk.0.attn_k.weight") && strstr(e.msg, "q8_1"), "message: %s", e.msg);
    /* an HF folder with a config key missing */
    const char *dir = test_tmp_path("hfbad");
    CHECK_OK(mr_mkdir_p(dir, &e), &e);
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    const char *js = "{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_hidden_layers\": 2}";
    test_write_file(cfg, js, strlen(js));
    CHECK(llm_load(&m, dir, &e) == MR_ERR_INPUT);
    CHECK_MSG(strstr(e.msg, "intermediate_size"), "message: %s", e.msg);
}

int main(void) {
    RUN(hf_llama_logits);
    RUN(hf_qwen2_logits);
    RUN(hf_sharded_half_precision);
    RUN(hf_llama_lora_adapter_matches_transformers);
    RUN(gguf_lora_adapter_equals_float64_merge);
    RUN(mismatching_models_are_refused);
    return test_summary();
}
