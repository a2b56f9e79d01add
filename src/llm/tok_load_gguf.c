/* Loading a tokenizer from GGUF metadata (tokenizer.ggml.*), with llama.cpp's
 * defaults for keys that are absent, and writing those keys back. */
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

/* Keys of ours, written only for byte-level vocabularies whose pre-tokenizer
 * regexes have no llama.cpp name (llama.cpp then falls back to 'default'). */
#define PRE_REGEXES_KEY "mllm4rec.tokenizer.pre_regexes"
#define IGNORE_MERGES_KEY "mllm4rec.tokenizer.ignore_merges"

static int read_int_elem(const gguf_kv *kv, uint64_t i, int64_t *out) {
    const uint8_t *p = (const uint8_t *)kv->array_data;
    switch (kv->array_type) {
    case GGUF_TYPE_INT32: { int32_t v; memcpy(&v, p + 4 * i, 4); *out = v; return 0; }
    case GGUF_TYPE_UINT32: { uint32_t v; memcpy(&v, p + 4 * i, 4); *out = v; return 0; }
    case GGUF_TYPE_INT8: *out = (int8_t)p[i]; return 0;
    case GGUF_TYPE_UINT8: *out = p[i]; return 0;
    case GGUF_TYPE_INT16: { int16_t v; memcpy(&v, p + 2 * i, 2); *out = v; return 0; }
    case GGUF_TYPE_UINT16: { uint16_t v; memcpy(&v, p + 2 * i, 2); *out = v; return 0; }
    case GGUF_TYPE_INT64: { int64_t v; memcpy(&v, p + 8 * i, 8); *out = v; return 0; }
    case GGUF_TYPE_UINT64: { uint64_t v; memcpy(&v, p + 8 * i, 8); *out = (int64_t)v; return 0; }
    default: return -1;
    }
}

/* A special-token id key: absent leaves *id, 4294967295 / -1 means none, an id
 * outside the vocabulary keeps the default (llama.cpp warns and does the same). */
static int read_special(const gguf_file *g, const char *key, int32_t n_tokens, int32_t *id, mr_error *e) {
    const gguf_kv *kv = gguf_find(g, key);
    if (!kv) return MR_OK;
    int64_t v;
    if (kv->type == GGUF_TYPE_UINT32 || kv->type == GGUF_TYPE_UINT64 || kv->type == GGUF_TYPE_UINT16 ||
        kv->type == GGUF_TYPE_UINT8) {
        if (kv->v.u64 == 0xFFFFFFFFull || kv->v.u64 == UINT64_MAX) {
            *id = -1;
            return MR_OK;
        }
        v = kv->v.u64 > INT32_MAX ? INT32_MAX : (int64_t)kv->v.u64;
    } else if (kv->type == GGUF_TYPE_INT32 || kv->type == GGUF_TYPE_INT64 || kv->type == GGUF_TYPE_INT16 ||
               kv->type == GGUF_TYPE_INT8) {
        v = kv->v.i64;
        if (v == -1) {
            *id = -1;
            return MR_OK;
        }
    } else {
        return mr_fail(e, MR_ERR_INPUT, "metadata '%s' is not an integer", key);
    }
    if (v >= 0 && v < n_tokens) *id = (int32_t)v;
    else mr_log("tokenizer: %s = %lld is outside the vocabulary of %d; using %d", key, (long long)v, (int)n_tokens,
                (int)*id);
    return MR_OK;
}

static int read_bool(const gguf_file *g, const char *key, int *out, mr_error *e) {
    const gguf_kv *kv = gguf_find(g, key);
    if (!kv) return MR_OK;
    if (kv->type != GGUF_TYPE_BOOL) return mr_fail(e, MR_ERR_INPUT, "metadata '%s' is not a bool", key);
    *out = kv->v.b != 0;
    return MR_OK;
}

int tokenizer_load_gguf(tokenizer **out, const gguf_file *g, mr_error *e) {
    *out = NULL;
    const gguf_kv *model = gguf_find(g, "tokenizer.ggml.model");
    if (!model) return mr_fail(e, MR_ERR_INPUT, "no tokenizer: metadata key 'tokenizer.ggml.model' is missing");
    if (model->type != GGUF_TYPE_STRING)
        return mr_fail(e, MR_ERR_INPUT, "metadata 'tokenizer.ggml.model' is not a string");
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(model->v.str.len < 63 ? model->v.str.len : 63), model->v.str.data);
    tokenizer_vocab v;
    if (!strcmp(name, "llama")) {
        tokenizer_vocab_defaults(&v, TOK_KIND_SPM);
        v.bos = 1, v.eos = 2, v.unk = 0;
    } else if (!strcmp(name, "gpt2")) {
        tokenizer_vocab_defaults(&v, TOK_KIND_BPE);
        v.bos = 11, v.eos = 11;
    } else {
        return mr_fail(e, MR_ERR_INPUT,
                       "tokenizer.ggml.model '%s' is not supported (supported: 'llama' SentencePiece, 'gpt2' "
                       "byte-level BPE)",
                       name);
    }

    const gguf_kv *tokens = gguf_find(g, "tokenizer.ggml.tokens");
    if (!tokens) return mr_fail(e, MR_ERR_INPUT, "metadata key 'tokenizer.ggml.tokens' is missing");
    if (tokens->type != GGUF_TYPE_ARRAY || tokens->array_type != GGUF_TYPE_STRING)
        return mr_fail(e, MR_ERR_INPUT, "metadata 'tokenizer.ggml.tokens' is not an array of strings");
    if (tokens->array_len == 0 || tokens->array_len > INT32_MAX)
        return mr_fail(e, MR_ERR_INPUT, "metadata 'tokenizer.ggml.tokens' has %llu entries",
                       (unsigned long long)tokens->array_len);
    int32_t n = (int32_t)tokens->array_len;
    v.n_tokens = n;

    int rc = MR_ERR_INTERNAL;
    const char **texts = mr_alloc((size_t)n * sizeof *texts, e);
    uint32_t *lens = mr_alloc((size_t)n * sizeof *lens, e);
    float *scores = NULL;
    int32_t *types = NULL;
    const char **merges = NULL;
    uint32_t *merge_lens = NULL;
    char *pre = NULL;
    char **rx = NULL;
    int n_rx = 0;
    if (!texts || !lens) goto done;
    for (int32_t i = 0; i < n; i++) {
        texts[i] = tokens->array_strings[i].data;
        if (tokens->array_strings[i].len > UINT32_MAX) {
            rc = mr_fail(e, MR_ERR_INPUT, "token %d is too long", (int)i);
            goto done;
        }
        lens[i] = (uint32_t)tokens->array_strings[i].len;
    }
    v.tokens = texts;
    v.token_lens = lens;

    const gguf_kv *kv = gguf_find(g, "tokenizer.ggml.scores");
    if (kv) {
        if (kv->type != GGUF_TYPE_ARRAY || kv->array_type != GGUF_TYPE_FLOAT32 || kv->array_len != (uint64_t)n) {
            rc = mr_fail(e, MR_ERR_INPUT, "metadata 'tokenizer.ggml.scores' must be %d float32 values", (int)n);
            goto done;
        }
        scores = mr_alloc((size_t)n * sizeof *scores, e);
        if (!scores) goto done;
        memcpy(scores, kv->array_data, (size_t)n * sizeof *scores);
        v.scores = scores;
    }
    kv = gguf_find(g, "tokenizer.ggml.token_type");
    if (kv) {
        if (kv->type != GGUF_TYPE_ARRAY || kv->array_len != (uint64_t)n) {
            rc = mr_fail(e, MR_ERR_INPUT, "metadata 'tokenizer.ggml.token_type' must be an array of %d integers",
                         (int)n);
            goto done;
        }
        types = mr_alloc((size_t)n * sizeof *types, e);
        if (!types) goto done;
        for (int32_t i = 0; i < n; i++) {
            int64_t t;
            if (read_int_elem(kv, (uint64_t)i, &t)) {
                rc = mr_fail(e, MR_ERR_INPUT, "metadata 'tokenizer.ggml.token_type' is not an array of integers");
                goto done;
            }
            types[i] = (int32_t)t;
        }
        v.types = types;
    }
    kv = gguf_find(g, "tokenizer.ggml.merges");
    if (kv) {
        if (kv->type != GGUF_TYPE_ARRAY || kv->array_type != GGUF_TYPE_STRING) {
            rc = mr_fail(e, MR_ERR_INPUT, "metadata 'tokenizer.ggml.merges' is not an array of strings");
            goto done;
        }
        if (v.kind == TOK_KIND_BPE) { /* SentencePiece merges by score; its merges key is ignored, as in llama.cpp */
            merges = mr_alloc((size_t)kv->array_len * sizeof *merges + 1, e);
            merge_lens = mr_alloc((size_t)kv->array_len * sizeof *merge_lens + 1, e);
            if (!merges || !merge_lens) goto done;
            for (uint64_t i = 0; i < kv->array_len; i++) {
                merges[i] = kv->array_strings[i].data;
                merge_lens[i] = (uint32_t)kv->array_strings[i].len;
            }
            v.merges = merges;
            v.merge_lens = merge_lens;
            v.n_merges = (int64_t)kv->array_len;
        }
    } else if (v.kind == TOK_KIND_BPE) {
        rc = mr_fail(e, MR_ERR_INPUT, "metadata key 'tokenizer.ggml.merges' is missing (needed by a gpt2 tokenizer)");
        goto done;
    }
    if (v.kind == TOK_KIND_BPE) {
        kv = gguf_find(g, "tokenizer.ggml.pre");
        if (kv && kv->type == GGUF_TYPE_STRING) {
            pre = mr_alloc(kv->v.str.len + 1, e);
            if (!pre) goto done;
            memcpy(pre, kv->v.str.data, kv->v.str.len);
            pre[kv->v.str.len] = 0;
        }
        int np, im = 0, ab = 0;
        if (!pre || !tok_pretok_regexes(pre, &np, &im, &ab)) {
            /* llama.cpp falls back to its default regexes for a missing or unknown name */
            mr_log("tokenizer: %s pre-tokenizer '%s'; using 'default'", pre ? "unknown" : "no",
                   pre ? pre : "");
            free(pre);
            pre = mr_strdup("default", e);
            if (!pre) goto done;
        } else {
            v.ignore_merges = im;
            v.add_bos = ab;
        }
        v.pre = pre;
        /* our own keys for a pre-tokenizer that has no llama.cpp name (see tokenizer_write_gguf) */
        kv = gguf_find(g, PRE_REGEXES_KEY);
        if (kv) {
            if (kv->type != GGUF_TYPE_ARRAY || kv->array_type != GGUF_TYPE_STRING || kv->array_len > 64) {
                rc = mr_fail(e, MR_ERR_INPUT, "metadata '%s' is not an array of at most 64 strings", PRE_REGEXES_KEY);
                goto done;
            }
            n_rx = (int)kv->array_len;
            rx = mr_calloc((size_t)n_rx + 1, sizeof *rx, e);
            if (!rx) goto done;
            for (int i = 0; i < n_rx; i++) {
                rx[i] = mr_alloc(kv->array_strings[i].len + 1, e);
                if (!rx[i]) goto done;
                memcpy(rx[i], kv->array_strings[i].data, kv->array_strings[i].len);
                rx[i][kv->array_strings[i].len] = 0;
            }
            v.regexes = (const char *const *)rx;
            v.n_regexes = n_rx;
        }
        if ((rc = read_bool(g, IGNORE_MERGES_KEY, &v.ignore_merges, e))) goto done;
    }
    if ((rc = read_bool(g, "tokenizer.ggml.add_space_prefix", &v.add_space_prefix, e))) goto done;
    static const char *const SPECIAL_KEYS[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                               "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"};
    int32_t *special_ids[] = {&v.bos, &v.eos, &v.unk, &v.pad};
    for (int k = 0; k < 4; k++) {
        if (*special_ids[k] >= n) *special_ids[k] = -1;
        if ((rc = read_special(g, SPECIAL_KEYS[k], n, special_ids[k], e))) goto done;
    }
    if ((rc = read_bool(g, "tokenizer.ggml.add_bos_token", &v.add_bos, e))) goto done;
    if ((rc = read_bool(g, "tokenizer.ggml.add_eos_token", &v.add_eos, e))) goto done;
    rc = tokenizer_create(out, &v, e);
done:
    if (rc && e && !e->code) mr_fail(e, rc, "tokenizer: out of memory");
    free(texts);
    free(lens);
    free(scores);
    free(types);
    free(merges);
    free(merge_lens);
    free(pre);
    for (int i = 0; i < n_rx && rx; i++) free(rx[i]);
    free(rx);
    return rc;
}

int tokenizer_write_gguf(const tokenizer *t, gguf_writer *w, mr_error *e) {
    int32_t n = t->n_tokens;
    int rc = MR_ERR_INTERNAL;
    const char **strs = mr_alloc((size_t)(n > t->n_merges ? n : t->n_merges) * sizeof *strs + 1, e);
    uint64_t *lens = mr_alloc((size_t)(n > t->n_merges ? n : t->n_merges) * sizeof *lens + 1, e);
    int32_t *types = mr_alloc((size_t)n * sizeof *types, e);
    char *mblob = NULL;
    float *derived = NULL;
    if (!strs || !lens || !types) goto done;
    if ((rc = gguf_writer_set_str(w, "tokenizer.ggml.model", t->kind == TOK_KIND_SPM ? "llama" : "gpt2", e)))
        goto done;
    if (t->kind == TOK_KIND_BPE) {
        const char *name = t->pre ? t->pre : tok_pretok_name_of((const char *const *)t->regex_src, t->n_regex);
        if ((rc = gguf_writer_set_str(w, "tokenizer.ggml.pre", name ? name : "default", e))) goto done;
        if (!name) {
            mr_log("tokenizer: these pre-tokenizer regexes have no llama.cpp name; written as '%s' for mllm4rec "
                   "(llama.cpp will use 'default')", PRE_REGEXES_KEY);
            uint64_t rl[64];
            for (int i = 0; i < t->n_regex && i < 64; i++) rl[i] = strlen(t->regex_src[i]);
            if ((rc = gguf_writer_set_str_array(w, PRE_REGEXES_KEY, (const char *const *)t->regex_src, rl,
                                                (uint64_t)(t->n_regex < 64 ? t->n_regex : 64), e)))
                goto done;
        }
        int n_rx, name_ignores = 0;
        if (name) tok_pretok_regexes(name, &n_rx, &name_ignores, NULL);
        if ((!name || name_ignores != t->ignore_merges) &&
            (rc = gguf_writer_set_bool(w, IGNORE_MERGES_KEY, t->ignore_merges, e)))
            goto done;
    }
    for (int32_t i = 0; i < n; i++) {
        strs[i] = tok_str(&t->str, i);
        lens[i] = t->str.len[i];
        types[i] = t->types[i];
    }
    if ((rc = gguf_writer_set_str_array(w, "tokenizer.ggml.tokens", strs, lens, (uint64_t)n, e))) goto done;
    const float *scores = t->scores;
    if (t->kind == TOK_KIND_SPM && t->spm_merge_ranks) {
        /* read from tokenizer.json: GGUF holds scores, so a token's score is minus the
         * rank of the first merge that makes it; tokens no merge makes come last */
        derived = mr_alloc((size_t)n * sizeof *derived, e);
        if (!derived) goto done;
        for (int32_t i = 0; i < n; i++) derived[i] = -(float)(t->n_merges + 1);
        for (int64_t r = t->n_merges - 1; r >= 0; r--) {
            int32_t a = t->merge_left[r], b = t->merge_right[r];
            size_t la = t->str.len[a], lb = t->str.len[b];
            char *cat = mr_alloc(la + lb + 1, e);
            if (!cat) goto done;
            memcpy(cat, tok_str(&t->str, a), la);
            memcpy(cat + la, tok_str(&t->str, b), lb);
            int32_t id = tokenizer_piece_to_id(t, cat, la + lb);
            free(cat);
            if (id >= 0) derived[id] = -(float)r;
        }
        scores = derived;
    }
    if ((rc = gguf_writer_set_array(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, (uint64_t)n, e)))
        goto done;
    if ((rc = gguf_writer_set_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)n, e)))
        goto done;
    if (t->kind == TOK_KIND_BPE) {
        size_t total = 0;
        for (int64_t i = 0; i < t->n_merges; i++) total += t->str.len[t->merge_left[i]] + t->str.len[t->merge_right[i]] + 1;
        mblob = mr_alloc(total + 1, e);
        if (!mblob) goto done;
        size_t pos = 0;
        for (int64_t i = 0; i < t->n_merges; i++) {
            int32_t a = t->merge_left[i], b = t->merge_right[i];
            strs[i] = mblob + pos;
            memcpy(mblob + pos, tok_str(&t->str, a), t->str.len[a]);
            pos += t->str.len[a];
            mblob[pos++] = ' ';
            memcpy(mblob + pos, tok_str(&t->str, b), t->str.len[b]);
            pos += t->str.len[b];
            lens[i] = (uint64_t)(mblob + pos - strs[i]);
        }
        if ((rc = gguf_writer_set_str_array(w, "tokenizer.ggml.merges", strs, lens, (uint64_t)t->n_merges, e)))
            goto done;
    }
    const char *keys[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                          "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"};
    int32_t ids[] = {t->bos, t->eos, t->unk, t->pad};
    for (int k = 0; k < 4; k++) /* none is written as 4294967295 so that llama.cpp's defaults do not apply */
        if ((rc = gguf_writer_set_u32(w, keys[k], ids[k] < 0 ? 0xFFFFFFFFu : (uint32_t)ids[k], e))) goto done;
    if ((rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", t->add_bos, e))) goto done;
    if ((rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", t->add_eos, e))) goto done;
    if (t->kind == TOK_KIND_SPM &&
        (rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", t->add_space_prefix, e)))
        goto done;
    rc = MR_OK;
done:
    free(strs);
    free(lens);
    free(types);
    free(mblob);
    free(derived);
    return rc;
}
