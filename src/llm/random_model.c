/* Models of random weights in a named or given shape and any weight type, for
 * benchmarks and tests. Weights: token embedding ~ N(0, 0.5²), linear weights
 * ~ N(0, 1/n_in), norm weights ~ 1 + 0.1·N(0, 1), biases ~ N(0, 0.1²); each
 * row drawn from its own seeded stream, so the file does not depend on the
 * thread count. The vocabulary is copied from another GGUF or synthesized as
 * a SentencePiece-style list (unk, bos, eos, 256 byte tokens, then "tokN"). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/llm.h"
#include "nn/quant.h"

int llm_random_shape(llm_random_opts *o, const char *name, mr_error *e) {
    llm_arch arch = o->arch;
    memset(o, 0, sizeof *o);
    o->arch = arch;
    o->type = GGML_TYPE_F32;
    o->seed = 1234;
    o->rope_base = arch == LLM_ARCH_QWEN2 ? 1000000.0 : 10000.0;
    o->rms_eps = arch == LLM_ARCH_QWEN2 ? 1e-6f : 1e-5f;
    if (!name || !strcmp(name, "tiny")) {
        o->n_layer = 2, o->n_embd = 64, o->n_head = 4, o->n_head_kv = 2, o->n_ff = 192, o->n_vocab = 512;
        o->n_ctx = 2048, o->tied = 1;
    } else if (!strcmp(name, "smollm2-135m")) {
        o->n_layer = 30, o->n_embd = 576, o->n_head = 9, o->n_head_kv = 3, o->n_ff = 1536, o->n_vocab = 49152;
        o->n_ctx = 8192, o->tied = 1, o->rope_base = 100000.0;
    } else if (!strcmp(name, "llama2-7b")) {
        o->n_layer = 32, o->n_embd = 4096, o->n_head = 32, o->n_head_kv = 32, o->n_ff = 11008, o->n_vocab = 32000;
        o->n_ctx = 4096, o->tied = 0;
    } else {
        return mr_fail(e, MR_ERR_USAGE, "unknown shape '%s' (tiny, smollm2-135m, llama2-7b)", name);
    }
    return MR_OK;
}

/* llama.cpp's general.file_type for a file whose weights are all of one type */
static int file_type_of(ggml_type t) {
    switch (t) {
    case GGML_TYPE_F32: return 0;
    case GGML_TYPE_F16: return 1;
    case GGML_TYPE_Q4_0: return 2;
    case GGML_TYPE_Q4_1: return 3;
    case GGML_TYPE_Q8_0: return 7;
    case GGML_TYPE_Q5_0: return 8;
    case GGML_TYPE_Q5_1: return 9;
    case GGML_TYPE_Q4_K: return 15;
    case GGML_TYPE_Q5_K: return 17;
    case GGML_TYPE_Q6_K: return 18;
    case GGML_TYPE_BF16: return 32;
    default: return -1;
    }
}

typedef enum { INIT_EMBED, INIT_LINEAR, INIT_NORM, INIT_BIAS } init_kind;

/* Draws a rows x cols tensor and adds it in `type` (vectors stay F32). */
static int add_random(gguf_writer *w, const char *name, int64_t rows, int64_t cols, ggml_type type, init_kind kind,
                      uint64_t seed, uint64_t tensor_no, mr_error *e) {
    if (rows == 1) type = GGML_TYPE_F32;
    size_t rb = quant_row_bytes(type, cols);
    float *x = mr_alloc((size_t)(rows * cols) * sizeof *x, e);
    uint8_t *q = type == GGML_TYPE_F32 ? NULL : mr_alloc(rb * (size_t)rows, e);
    if (!x || (type != GGML_TYPE_F32 && !q)) {
        free(x);
        return MR_ERR_INTERNAL;
    }
    const double sd = kind == INIT_EMBED ? 0.5 : kind == INIT_LINEAR ? 1.0 / sqrt((double)cols) : 0.1;
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; r++) {
        mr_rng rng;
        mr_rng_seed(&rng, mr_hash2(mr_hash2(seed, tensor_no), (uint64_t)r));
        float *row = x + r * cols;
        for (int64_t c = 0; c < cols; c++) {
            double v = sd * mr_rng_normal(&rng);
            row[c] = (float)(kind == INIT_NORM ? 1.0 + v : v);
        }
        if (q) quantize_row_ref(type, row, q + (size_t)r * rb, cols);
    }
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
    int rc = gguf_writer_add_tensor(w, name, type, rows == 1 ? 1 : 2, ne, q ? (const void *)q : x, e);
    free(x);
    free(q);
    return rc;
}

static int synthetic_vocab(gguf_writer *w, int n_vocab, mr_error *e) {
    char **toks = mr_calloc((size_t)n_vocab, sizeof *toks, e);
    float *scores = mr_alloc((size_t)n_vocab * sizeof *scores, e);
    int32_t *types = mr_alloc((size_t)n_vocab * sizeof *types, e);
    int rc = MR_ERR_INTERNAL;
    if (!toks || !scores || !types) goto done;
    for (int i = 0; i < n_vocab; i++) {
        char buf[32];
        if (i == 0) snprintf(buf, sizeof buf, "<unk>");
        else if (i == 1) snprintf(buf, sizeof buf, "<s>");
        else if (i == 2) snprintf(buf, sizeof buf, "</s>");
        else if (i < 259) snprintf(buf, sizeof buf, "<0x%02X>", i - 3);
        else snprintf(buf, sizeof buf, "tok%d", i);
        toks[i] = mr_strdup(buf, e);
        if (!toks[i]) goto done;
        scores[i] = i < 259 ? 0.0f : -(float)(i - 259);
        types[i] = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1;
    }
    if ((rc = gguf_writer_set_str(w, "tokenizer.ggml.model", "llama", e)) ||
        (rc = gguf_writer_set_str_array(w, "tokenizer.ggml.tokens", (const char *const *)toks, NULL,
                                        (uint64_t)n_vocab, e)) ||
        (rc = gguf_writer_set_array(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, (uint64_t)n_vocab, e)) ||
        (rc = gguf_writer_set_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)n_vocab, e)) ||
        (rc = gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0, e)) ||
        (rc = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1, e)) ||
        (rc = gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2, e)))
        goto done;
    rc = MR_OK;
done:
    if (toks)
        for (int i = 0; i < n_vocab; i++) free(toks[i]);
    free(toks);
    free(scores);
    free(types);
    return rc;
}

/* Copies the tokenizer.* keys of another GGUF; returns its vocabulary size. */
static int copy_vocab(gguf_writer *w, const char *path, int *n_vocab, mr_error *e) {
    gguf_file v;
    int rc = gguf_open(&v, path, e);
    if (rc) return rc;
    const gguf_kv *toks = gguf_find(&v, "tokenizer.ggml.tokens");
    if (!toks || toks->type != GGUF_TYPE_ARRAY || toks->array_len == 0 || toks->array_len > 0x7fffffff) {
        gguf_close(&v);
        return mr_fail(e, MR_ERR_INPUT, "%s: no tokenizer.ggml.tokens array to copy the vocabulary from", path);
    }
    *n_vocab = (int)toks->array_len;
    /* skip every key that is not tokenizer.* */
    const char **skip = mr_calloc(v.n_kv + 1, sizeof *skip, e);
    if (!skip) {
        gguf_close(&v);
        return MR_ERR_INTERNAL;
    }
    int n_skip = 0;
    for (uint64_t i = 0; i < v.n_kv; i++)
        if (strncmp(v.kv[i].key, "tokenizer.", 10)) skip[n_skip++] = v.kv[i].key;
    rc = gguf_writer_copy_kv(w, &v, skip, n_skip, e);
    free(skip);
    gguf_close(&v);
    return rc;
}

int llm_random_write(const llm_random_opts *o, const char *out_path, mr_error *e) {
    const char *arch = o->arch == LLM_ARCH_QWEN2 ? "qwen2" : "llama";
    if (o->n_layer <= 0 || o->n_embd <= 0 || o->n_head <= 0 || o->n_head_kv <= 0 || o->n_ff <= 0)
        return mr_fail(e, MR_ERR_USAGE, "random model: sizes must be positive");
    if (o->n_embd % o->n_head || o->n_head % o->n_head_kv)
        return mr_fail(e, MR_ERR_USAGE, "random model: --dim %d must be a multiple of --heads %d, and --heads of --kv-heads %d",
                       o->n_embd, o->n_head, o->n_head_kv);
    if ((o->n_embd / o->n_head) % 2) return mr_fail(e, MR_ERR_USAGE, "random model: the head size must be even");
    int be;
    if (!quant_block(o->type, &be, NULL) || file_type_of(o->type) < 0)
        return mr_fail(e, MR_ERR_USAGE, "random model: weight type %s is not supported", quant_type_name(o->type));
    if (o->n_embd % be || o->n_ff % be)
        return mr_fail(e, MR_ERR_USAGE, "random model: type %s needs --dim (%d) and --ffn (%d) to be multiples of %d",
                       quant_type_name(o->type), o->n_embd, o->n_ff, be);
    gguf_writer *w = gguf_writer_new(e);
    if (!w) return MR_ERR_INTERNAL;
    int rc, n_vocab = o->n_vocab;
    char key[128], name[128];
    if (o->vocab_path) {
        if ((rc = copy_vocab(w, o->vocab_path, &n_vocab, e))) goto done;
    } else if (n_vocab >= 259) {
        if ((rc = synthetic_vocab(w, n_vocab, e))) goto done;
    }
    if (n_vocab <= 0) {
        rc = mr_fail(e, MR_ERR_USAGE, "random model: --n-vocab must be positive");
        goto done;
    }
    snprintf(name, sizeof name, "random %s %dx%d %s", arch, o->n_layer, o->n_embd, quant_type_name(o->type));
#define SETU(k, v)                                                              \
    snprintf(key, sizeof key, "%s.%s", arch, k);                                \
    if ((rc = gguf_writer_set_u32(w, key, (uint32_t)(v), e))) goto done;
    if ((rc = gguf_writer_set_str(w, "general.architecture", arch, e)) ||
        (rc = gguf_writer_set_str(w, "general.type", "model", e)) ||
        (rc = gguf_writer_set_str(w, "general.name", name, e)) ||
        (rc = gguf_writer_set_u32(w, "general.file_type", (uint32_t)file_type_of(o->type), e)))
        goto done;
    SETU("context_length", o->n_ctx > 0 ? o->n_ctx : 2048);
    SETU("embedding_length", o->n_embd);
    SETU("block_count", o->n_layer);
    SETU("feed_forward_length", o->n_ff);
    SETU("attention.head_count", o->n_head);
    SETU("attention.head_count_kv", o->n_head_kv);
    SETU("rope.dimension_count", o->n_embd / o->n_head);
#undef SETU
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    if ((rc = gguf_writer_set_f32(w, key, o->rms_eps > 0 ? o->rms_eps : 1e-5f, e))) goto done;
    snprintf(key, sizeof key, "%s.rope.freq_base", arch);
    if ((rc = gguf_writer_set_f32(w, key, (float)(o->rope_base > 0 ? o->rope_base : 10000.0), e))) goto done;

    const int64_t d = o->n_embd, hd = o->n_embd / o->n_head, qd = (int64_t)o->n_head * hd,
                  kvd = (int64_t)o->n_head_kv * hd;
    uint64_t tn = 0;
    if ((rc = add_random(w, "token_embd.weight", n_vocab, d, o->type, INIT_EMBED, o->seed, tn++, e))) goto done;
    for (int l = 0; l < o->n_layer; l++) {
        struct {
            const char *role;
            int64_t rows, cols;
            init_kind kind;
        } parts[] = {{"attn_norm.weight", 1, d, INIT_NORM},     {"attn_q.weight", qd, d, INIT_LINEAR},
                     {"attn_k.weight", kvd, d, INIT_LINEAR},    {"attn_v.weight", kvd, d, INIT_LINEAR},
                     {"attn_output.weight", d, qd, INIT_LINEAR}, {"ffn_norm.weight", 1, d, INIT_NORM},
                     {"ffn_gate.weight", o->n_ff, d, INIT_LINEAR}, {"ffn_up.weight", o->n_ff, d, INIT_LINEAR},
                     {"ffn_down.weight", d, o->n_ff, INIT_LINEAR}, {"attn_q.bias", 1, qd, INIT_BIAS},
                     {"attn_k.bias", 1, kvd, INIT_BIAS},         {"attn_v.bias", 1, kvd, INIT_BIAS}};
        int n_parts = o->arch == LLM_ARCH_QWEN2 ? 12 : 9;
        for (int i = 0; i < n_parts; i++) {
            char tname[96];
            snprintf(tname, sizeof tname, "blk.%d.%s", l, parts[i].role);
            if ((rc = add_random(w, tname, parts[i].rows, parts[i].cols, o->type, parts[i].kind, o->seed, tn++, e)))
                goto done;
        }
    }
    if ((rc = add_random(w, "output_norm.weight", 1, d, o->type, INIT_NORM, o->seed, tn++, e))) goto done;
    if (!o->tied && (rc = add_random(w, "output.weight", n_vocab, d, o->type, INIT_LINEAR, o->seed, tn++, e)))
        goto done;
    rc = gguf_writer_write(w, out_path, e);
done:
    gguf_writer_free(w);
    return rc;
}
