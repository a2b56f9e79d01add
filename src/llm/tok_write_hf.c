/* Writing a tokenizer as a Hugging Face tokenizer.json (+ tokenizer_config.json
 * beside it), so that a model folder we write carries its tokenizer.
 *
 * SentencePiece vocabularies merge by token score, which tokenizer.json cannot
 * hold; they are written as a BPE model whose merges are every pair (a, b) with
 * a, b and a+b in the vocabulary, ranked by the score of a+b (best first). With
 * the ▁ normalizer and byte_fallback this is how Hugging Face writes Llama's
 * tokenizer, and it merges the same way. */
#include "tokenizer_impl.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define SPIECE "\xe2\x96\x81"

typedef struct spm_merge {
    float score;
    int32_t token, left, right;
    uint32_t split;
} spm_merge;

static int spm_merge_cmp(const void *a, const void *b) {
    const spm_merge *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->token != y->token) return x->token < y->token ? -1 : 1;
    return x->split < y->split ? -1 : x->split > y->split;
}

/* All pairs that SentencePiece merging can use, best first. */
static int spm_pairs(const tokenizer *t, spm_merge **out, size_t *n_out, mr_error *e) {
    size_t cap = 1024, n = 0;
    spm_merge *v = mr_alloc(cap * sizeof *v, e);
    if (!v) return MR_ERR_INTERNAL;
    for (int32_t id = 0; id < t->n_tokens; id++) {
        const char *s = tok_str(&t->str, id);
        uint32_t len = t->str.len[id];
        for (uint32_t k = (uint32_t)tok_utf8_len((uint8_t)s[0]); k < len; k += (uint32_t)tok_utf8_len((uint8_t)s[k])) {
            int32_t a = tokenizer_piece_to_id(t, s, k), b = tokenizer_piece_to_id(t, s + k, len - k);
            if (a < 0 || b < 0) continue;
            if (tokenizer_piece_to_id(t, s, len) != id) continue; /* a duplicate text: the last id merges */
            if (n == cap) {
                cap *= 2;
                spm_merge *nv = mr_realloc(v, cap * sizeof *nv, e);
                if (!nv) {
                    free(v);
                    return MR_ERR_INTERNAL;
                }
                v = nv;
            }
            v[n++] = (spm_merge){t->scores[id], id, a, b, k};
        }
    }
    qsort(v, n, sizeof *v, spm_merge_cmp);
    *out = v;
    *n_out = n;
    return MR_OK;
}

static json_t *jstr(const char *s, size_t n) { return json_stringn(s, n); }

static int set_new(json_t *o, const char *k, json_t *v, int *bad) {
    if (!v) {
        *bad = 1;
        return -1;
    }
    return json_object_set_new(o, k, v);
}

static json_t *token_json(const tokenizer *t, int32_t id) {
    return jstr(tok_str(&t->str, id), t->str.len[id]);
}

int tokenizer_write_hf_json(const tokenizer *t, const char *path, mr_error *e) {
    int bad = 0, rc = MR_ERR_INTERNAL;
    spm_merge *pairs = NULL;
    size_t n_pairs = 0;
    char *text = NULL, *dir = NULL, *cfg_path = NULL;
    json_t *root = json_object(), *cfg = json_object();
    if (!root || !cfg) goto oom;
    for (int32_t i = 0; i < t->n_tokens; i++)
        if (!mr_utf8_valid(tok_str(&t->str, i), t->str.len[i])) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: token %d is not valid UTF-8; tokenizer.json cannot hold it", path,
                         (int)i);
            goto done;
        }
    set_new(root, "version", json_string("1.0"), &bad);
    set_new(root, "truncation", json_null(), &bad);
    set_new(root, "padding", json_null(), &bad);

    json_t *added = json_array();
    set_new(root, "added_tokens", added, &bad);
    for (int32_t i = 0; i < t->n_tokens && added; i++) {
        int ty = t->types[i];
        if (ty != TOK_TYPE_CONTROL && ty != TOK_TYPE_USER_DEFINED && ty != TOK_TYPE_UNKNOWN) continue;
        json_t *a = json_object();
        if (!a || json_array_append_new(added, a)) goto oom;
        set_new(a, "id", json_integer(i), &bad);
        set_new(a, "content", token_json(t, i), &bad);
        set_new(a, "single_word", json_false(), &bad);
        set_new(a, "lstrip", json_boolean(t->attrs[i] & TOK_ATTR_LSTRIP), &bad);
        set_new(a, "rstrip", json_boolean(t->attrs[i] & TOK_ATTR_RSTRIP), &bad);
        set_new(a, "normalized", json_false(), &bad);
        set_new(a, "special", json_boolean(ty != TOK_TYPE_USER_DEFINED), &bad);
    }

    if (t->kind == TOK_KIND_SPM) {
        json_t *norm = json_pack("{s:s, s:[]}", "type", "Sequence", "normalizers");
        json_t *list = norm ? json_object_get(norm, "normalizers") : NULL;
        if (!list) goto oom;
        if (t->add_space_prefix) json_array_append_new(list, json_pack("{s:s, s:s}", "type", "Prepend", "prepend", SPIECE));
        json_array_append_new(list, json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String", " ",
                                              "content", SPIECE));
        set_new(root, "normalizer", norm, &bad);
        set_new(root, "pre_tokenizer", json_null(), &bad);
    } else {
        set_new(root, "normalizer", json_null(), &bad);
        const char *pre_name = tok_pretok_name_of((const char *const *)t->regex_src, t->n_regex);
        int plain_gpt2 = pre_name && !strcmp(pre_name, "gpt-2");
        if (plain_gpt2) {
            set_new(root, "pre_tokenizer",
                    json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space",
                              t->byte_level_prefix_space, "trim_offsets", 1, "use_regex", 1),
                    &bad);
        } else {
            json_t *pre = json_pack("{s:s, s:[]}", "type", "Sequence", "pretokenizers");
            json_t *list = pre ? json_object_get(pre, "pretokenizers") : NULL;
            if (!list) goto oom;
            for (int i = 0; i < t->n_regex; i++)
                json_array_append_new(list, json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex",
                                                      t->regex_src[i], "behavior", "Isolated", "invert", 0));
            json_array_append_new(list, json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space",
                                                  t->byte_level_prefix_space, "trim_offsets", 1, "use_regex", 0));
            set_new(root, "pre_tokenizer", pre, &bad);
        }
    }

    /* post_processor: BOS / EOS adding */
    if (t->add_bos || t->add_eos) {
        json_t *single = json_array(), *pair = json_array(), *specials = json_object();
        if (!single || !pair || !specials) goto oom;
        int32_t ends[2] = {t->add_bos ? t->bos : -1, t->add_eos ? t->eos : -1};
        for (int k = 0; k < 2; k++) {
            if (ends[k] < 0) continue;
            char *name = strndup(tok_str(&t->str, ends[k]), t->str.len[ends[k]]);
            if (!name) goto oom;
            json_object_set_new(specials, name, json_pack("{s:s, s:[i], s:[s]}", "id", name, "ids", ends[k], "tokens",
                                                          name));
            free(name);
        }
        for (int which = 0; which < 2; which++) {
            json_t *l = which ? pair : single;
            const char *seqs[2] = {"A", "B"};
            for (int s = 0; s < (which ? 2 : 1); s++) {
                if (ends[0] >= 0)
                    json_array_append_new(l, json_pack("{s:{s:s%, s:i}}", "SpecialToken", "id",
                                                       tok_str(&t->str, ends[0]), (size_t)t->str.len[ends[0]],
                                                       "type_id", s));
                json_array_append_new(l, json_pack("{s:{s:s, s:i}}", "Sequence", "id", seqs[s], "type_id", s));
                if (ends[1] >= 0)
                    json_array_append_new(l, json_pack("{s:{s:s%, s:i}}", "SpecialToken", "id",
                                                       tok_str(&t->str, ends[1]), (size_t)t->str.len[ends[1]],
                                                       "type_id", s));
            }
        }
        set_new(root, "post_processor",
                json_pack("{s:s, s:o, s:o, s:o}", "type", "TemplateProcessing", "single", single, "pair", pair,
                          "special_tokens", specials),
                &bad);
    } else {
        set_new(root, "post_processor", json_null(), &bad);
    }

    if (t->kind == TOK_KIND_SPM) {
        set_new(root, "decoder",
                json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}, {s:s, s:s, s:i, s:i}]}", "type", "Sequence",
                          "decoders", "type", "Replace", "pattern", "String", SPIECE, "content", " ", "type",
                          "ByteFallback", "type", "Fuse", "type", "Strip", "content", " ", "start",
                          t->add_space_prefix ? 1 : 0, "stop", 0),
                &bad);
    } else {
        set_new(root, "decoder",
                json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1,
                          "use_regex", 1),
                &bad);
    }

    json_t *model = json_object(), *vocab = json_object(), *merges = json_array();
    if (!model || !vocab || !merges) goto oom;
    set_new(root, "model", model, &bad);
    set_new(model, "type", json_string("BPE"), &bad);
    set_new(model, "dropout", json_null(), &bad);
    set_new(model, "unk_token", t->unk >= 0 ? token_json(t, t->unk) : json_null(), &bad);
    set_new(model, "continuing_subword_prefix", json_null(), &bad);
    set_new(model, "end_of_word_suffix", json_null(), &bad);
    set_new(model, "fuse_unk", json_boolean(t->kind == TOK_KIND_SPM), &bad);
    set_new(model, "byte_fallback", json_boolean(t->kind == TOK_KIND_SPM), &bad);
    set_new(model, "ignore_merges", json_boolean(t->ignore_merges), &bad);
    set_new(model, "vocab", vocab, &bad);
    set_new(model, "merges", merges, &bad);
    for (int32_t i = 0; i < t->n_tokens; i++)
        if (json_object_setn_new(vocab, tok_str(&t->str, i), t->str.len[i], json_integer(i))) goto oom;
    int64_t n_merges;
    const int32_t *ml = t->merge_left, *mr = t->merge_right;
    int32_t *tmp_l = NULL, *tmp_r = NULL;
    if (t->kind == TOK_KIND_SPM && !t->spm_merge_ranks) {
        if (spm_pairs(t, &pairs, &n_pairs, e)) goto done;
        tmp_l = mr_alloc((n_pairs + 1) * sizeof *tmp_l, e);
        tmp_r = mr_alloc((n_pairs + 1) * sizeof *tmp_r, e);
        if (!tmp_l || !tmp_r) {
            free(tmp_l);
            free(tmp_r);
            goto done;
        }
        for (size_t i = 0; i < n_pairs; i++) tmp_l[i] = pairs[i].left, tmp_r[i] = pairs[i].right;
        ml = tmp_l;
        mr = tmp_r;
        n_merges = (int64_t)n_pairs;
    } else {
        n_merges = t->n_merges;
    }
    for (int64_t i = 0; i < n_merges; i++) {
        const char *a = tok_str(&t->str, ml[i]), *b = tok_str(&t->str, mr[i]);
        size_t na = t->str.len[ml[i]], nb = t->str.len[mr[i]];
        json_t *m;
        if (memchr(a, ' ', na) || memchr(b, ' ', nb)) {
            m = json_pack("[s%, s%]", a, na, b, nb);
        } else {
            char *s = malloc(na + nb + 2);
            if (!s) break;
            memcpy(s, a, na);
            s[na] = ' ';
            memcpy(s + na + 1, b, nb);
            m = json_stringn(s, na + nb + 1);
            free(s);
        }
        if (!m || json_array_append_new(merges, m)) bad = 1;
    }
    free(tmp_l);
    free(tmp_r);
    if (bad) goto oom;

    text = json_dumps(root, JSON_PRESERVE_ORDER | JSON_INDENT(1));
    if (!text) goto oom;
    if ((rc = mr_write_file_atomic(path, text, strlen(text), e))) goto done;
    free(text);
    text = NULL;

    /* tokenizer_config.json: which tokens are BOS / EOS / UNK / PAD and whether they are added */
    const char *names[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    int32_t ids[] = {t->bos, t->eos, t->unk, t->pad};
    set_new(cfg, "add_bos_token", json_boolean(t->add_bos), &bad);
    set_new(cfg, "add_eos_token", json_boolean(t->add_eos), &bad);
    for (int k = 0; k < 4; k++) set_new(cfg, names[k], ids[k] >= 0 ? token_json(t, ids[k]) : json_null(), &bad);
    set_new(cfg, "tokenizer_class", json_string(t->kind == TOK_KIND_SPM ? "LlamaTokenizerFast" : "PreTrainedTokenizerFast"),
            &bad);
    if (bad) goto oom;
    dir = strdup(path);
    if (!dir) goto oom;
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = 0;
    else dir[0] = 0;
    cfg_path = mr_alloc(strlen(dir) + 32, e);
    if (!cfg_path) goto done;
    sprintf(cfg_path, "%stokenizer_config.json", dir);
    text = json_dumps(cfg, JSON_PRESERVE_ORDER | JSON_INDENT(2));
    if (!text) goto oom;
    rc = mr_write_file_atomic(cfg_path, text, strlen(text), e);
    goto done;
oom:
    rc = mr_fail(e, MR_ERR_INTERNAL, "%s: out of memory building tokenizer.json", path);
done:
    json_decref(root);
    json_decref(cfg);
    free(pairs);
    free(text);
    free(dir);
    free(cfg_path);
    return rc;
}
