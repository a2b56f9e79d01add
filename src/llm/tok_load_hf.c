/* Loading a tokenizer from a Hugging Face folder: tokenizer.json (a BPE model
 * with its normalizer, pre-tokenizer, post-processor and added tokens), or the
 * GPT-2 / OPT pair vocab.json + merges.txt; tokenizer_config.json and
 * special_tokens_map.json add BOS/EOS settings. The file decides the kind:
 *   a ByteLevel pre-tokenizer             -> byte-level BPE (Split regexes kept)
 *   the ▁ normalizer or Metaspace         -> SentencePiece BPE, merges by rank
 * Normalizers that llama.cpp does not apply either (NFC, NFKC) are ignored;
 * anything else that changes the text is refused with a message naming it. */
#include "tokenizer_impl.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define SPIECE "\xe2\x96\x81" /* U+2581, SentencePiece's space */
/* Ids above this are refused: the ids between would all become placeholder tokens. */
#define MAX_TOKEN_ID (1 << 24)

typedef struct hf_build {
    const char *path; /* file being read, for messages */
    int32_t n;        /* tokens */
    char **text;      /* owned */
    uint32_t *len;
    int32_t *type;
    uint8_t *attr;
    int64_t n_merges, cap_merges;
    char **ml, **mr; /* owned */
    uint32_t *mll, *mrl;
    char **rx;
    int n_rx;
    int byte_level, spm, add_space_prefix, byte_level_prefix_space, ignore_merges;
    int add_bos, add_eos, add_bos_set, add_eos_set;
    int32_t bos, eos, unk, pad;
} hf_build;

static void hf_free(hf_build *b) {
    for (int32_t i = 0; i < b->n; i++) free(b->text ? b->text[i] : NULL);
    free(b->text);
    free(b->len);
    free(b->type);
    free(b->attr);
    for (int64_t i = 0; i < b->n_merges; i++) {
        free(b->ml[i]);
        free(b->mr[i]);
    }
    free(b->ml);
    free(b->mr);
    free(b->mll);
    free(b->mrl);
    for (int i = 0; i < b->n_rx; i++) free(b->rx[i]);
    free(b->rx);
}

/* Ids that no entry names become placeholder tokens; at most MAX_HOLES of them beyond
 * one per defined entry, so that loading stays linear in the file's size (a single
 * entry with id 16000000 made 16 million placeholders: seconds of work and a gigabyte). */
#define MAX_HOLES 65536

/* n ids (the highest id + 1) for n_defined entries of the file (an id may repeat). */
static int hf_alloc_tokens(hf_build *b, int32_t n, int64_t n_defined, mr_error *e) {
    int64_t holes = (int64_t)n - n_defined;
    if (holes > MAX_HOLES && holes > n_defined)
        return mr_fail(e, MR_ERR_INPUT,
                       "%s: token ids run up to %lld but only %lld tokens are defined: the ids between are "
                       "unused (more than %d)",
                       b->path, (long long)n - 1, (long long)n_defined, MAX_HOLES);
    b->n = n;
    b->text = mr_calloc((size_t)n, sizeof *b->text, e);
    b->len = mr_calloc((size_t)n, sizeof *b->len, e);
    b->type = mr_calloc((size_t)n, sizeof *b->type, e);
    b->attr = mr_calloc((size_t)n, 1, e);
    return b->text && b->len && b->type && b->attr ? MR_OK : MR_ERR_INTERNAL;
}

static int hf_set_token(hf_build *b, int64_t id, const char *s, size_t len, int32_t type, mr_error *e) {
    if (id < 0 || id >= b->n) return mr_fail(e, MR_ERR_INPUT, "%s: token id %lld out of range", b->path, (long long)id);
    char *c = mr_alloc(len + 1, e);
    if (!c) return MR_ERR_INTERNAL;
    memcpy(c, s, len);
    c[len] = 0;
    free(b->text[id]);
    b->text[id] = c;
    b->len[id] = (uint32_t)len;
    b->type[id] = type;
    return MR_OK;
}

static int hf_add_merge(hf_build *b, const char *l, size_t nl, const char *r, size_t nr, mr_error *e) {
    if (b->n_merges == b->cap_merges) {
        int64_t cap = b->cap_merges ? b->cap_merges * 2 : 1024;
        char **ml = mr_realloc(b->ml, (size_t)cap * sizeof *ml, e);
        if (!ml) return MR_ERR_INTERNAL;
        b->ml = ml;
        char **mr = mr_realloc(b->mr, (size_t)cap * sizeof *mr, e);
        if (!mr) return MR_ERR_INTERNAL;
        b->mr = mr;
        uint32_t *mll = mr_realloc(b->mll, (size_t)cap * sizeof *mll, e);
        if (!mll) return MR_ERR_INTERNAL;
        b->mll = mll;
        uint32_t *mrl = mr_realloc(b->mrl, (size_t)cap * sizeof *mrl, e);
        if (!mrl) return MR_ERR_INTERNAL;
        b->mrl = mrl;
        b->cap_merges = cap;
    }
    char *a = mr_alloc(nl + 1, e), *c = mr_alloc(nr + 1, e);
    if (!a || !c) {
        free(a);
        free(c);
        return MR_ERR_INTERNAL;
    }
    memcpy(a, l, nl);
    a[nl] = 0;
    memcpy(c, r, nr);
    c[nr] = 0;
    b->ml[b->n_merges] = a;
    b->mr[b->n_merges] = c;
    b->mll[b->n_merges] = (uint32_t)nl;
    b->mrl[b->n_merges] = (uint32_t)nr;
    b->n_merges++;
    return MR_OK;
}

static int hf_add_regex(hf_build *b, const char *rx, mr_error *e) {
    char **v = mr_realloc(b->rx, (size_t)(b->n_rx + 1) * sizeof *v, e);
    if (!v) return MR_ERR_INTERNAL;
    b->rx = v;
    if (!(b->rx[b->n_rx] = mr_strdup(rx, e))) return MR_ERR_INTERNAL;
    b->n_rx++;
    return MR_OK;
}

static json_t *load_json(const char *path, int required, mr_error *e, int *rc) {
    *rc = MR_OK;
    if (!mr_file_exists(path)) {
        if (required) *rc = mr_fail(e, MR_ERR_INPUT, "%s: file not found", path);
        return NULL;
    }
    json_error_t je;
    json_t *j = json_load_file(path, JSON_ALLOW_NUL, &je);
    if (!j) *rc = mr_fail(e, MR_ERR_INPUT, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    return j;
}

static const char *type_of(json_t *o) {
    json_t *t = json_is_object(o) ? json_object_get(o, "type") : NULL;
    return json_is_string(t) ? json_string_value(t) : "";
}

/* A token named by a config ("<s>" or {"content": "<s>"}). */
static const char *config_token_text(json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v) && json_is_string(json_object_get(v, "content")))
        return json_string_value(json_object_get(v, "content"));
    return NULL;
}

static int32_t find_text(const hf_build *b, const char *s) {
    if (!s) return -1;
    size_t n = strlen(s);
    for (int32_t i = b->n - 1; i >= 0; i--) /* the last one wins, as in the vocabulary map */
        if (b->text[i] && b->len[i] == n && !memcmp(b->text[i], s, n)) return i;
    return -1;
}

/* ---- tokenizer.json parts ---- */

static int parse_pre_one(hf_build *b, json_t *p, mr_error *e) {
    const char *ty = type_of(p);
    if (!strcmp(ty, "ByteLevel")) {
        b->byte_level = 1;
        json_t *aps = json_object_get(p, "add_prefix_space"), *ur = json_object_get(p, "use_regex");
        if (json_is_true(aps)) b->byte_level_prefix_space = 1;
        if (!ur || json_is_true(ur))
            return hf_add_regex(b, "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", e);
        return MR_OK;
    }
    if (!strcmp(ty, "Split")) {
        json_t *pat = json_object_get(p, "pattern");
        const char *beh = json_string_value(json_object_get(p, "behavior"));
        if (json_is_true(json_object_get(p, "invert")))
            return mr_fail(e, MR_ERR_INPUT, "%s: pre_tokenizer Split with invert=true is not supported", b->path);
        if (!beh || strcmp(beh, "Isolated"))
            return mr_fail(e, MR_ERR_INPUT, "%s: pre_tokenizer Split behavior '%s' is not supported (only Isolated)",
                           b->path, beh ? beh : "(missing)");
        json_t *rx = json_is_object(pat) ? json_object_get(pat, "Regex") : NULL;
        json_t *st = json_is_object(pat) ? json_object_get(pat, "String") : NULL;
        if (json_is_string(rx)) return hf_add_regex(b, json_string_value(rx), e);
        if (json_is_string(st)) { /* a literal: quote every non-alphanumeric character */
            const char *s = json_string_value(st);
            size_t n = strlen(s);
            char *q = mr_alloc(2 * n + 1, e);
            if (!q) return MR_ERR_INTERNAL;
            size_t m = 0;
            for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];
                if (c < 0x80 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
                    q[m++] = '\\';
                q[m++] = (char)c;
            }
            q[m] = 0;
            int rc = hf_add_regex(b, q, e);
            free(q);
            return rc;
        }
        return mr_fail(e, MR_ERR_INPUT, "%s: pre_tokenizer Split has no pattern.Regex or pattern.String", b->path);
    }
    if (!strcmp(ty, "Digits"))
        return hf_add_regex(b, json_is_true(json_object_get(p, "individual_digits")) ? "\\p{N}" : "\\p{N}+", e);
    if (!strcmp(ty, "Metaspace")) {
        const char *rep = json_string_value(json_object_get(p, "replacement"));
        if (rep && strcmp(rep, SPIECE))
            return mr_fail(e, MR_ERR_INPUT, "%s: Metaspace replacement '%s' is not supported (only U+2581)", b->path,
                           rep);
        if (json_is_true(json_object_get(p, "split")))
            return mr_fail(e, MR_ERR_INPUT, "%s: Metaspace with split=true is not supported", b->path);
        b->spm = 1;
        const char *scheme = json_string_value(json_object_get(p, "prepend_scheme"));
        json_t *aps = json_object_get(p, "add_prefix_space");
        b->add_space_prefix = scheme ? strcmp(scheme, "never") != 0 : aps ? json_is_true(aps) : 1;
        return MR_OK;
    }
    return mr_fail(e, MR_ERR_INPUT, "%s: pre_tokenizer type '%s' is not supported", b->path, ty);
}

static int parse_pre(hf_build *b, json_t *p, mr_error *e) {
    if (!p || json_is_null(p)) return MR_OK;
    if (!strcmp(type_of(p), "Sequence")) {
        json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list))
            return mr_fail(e, MR_ERR_INPUT, "%s: pre_tokenizer Sequence without 'pretokenizers'", b->path);
        size_t i;
        json_t *x;
        json_array_foreach(list, i, x) {
            int rc = parse_pre_one(b, x, e);
            if (rc) return rc;
        }
        return MR_OK;
    }
    return parse_pre_one(b, p, e);
}

static int parse_normalizer(hf_build *b, json_t *p, mr_error *e) {
    if (!p || json_is_null(p)) return MR_OK;
    const char *ty = type_of(p);
    if (!strcmp(ty, "Sequence")) {
        json_t *list = json_object_get(p, "normalizers");
        if (!json_is_array(list))
            return mr_fail(e, MR_ERR_INPUT, "%s: normalizer Sequence without 'normalizers'", b->path);
        size_t i;
        json_t *x;
        json_array_foreach(list, i, x) {
            int rc = parse_normalizer(b, x, e);
            if (rc) return rc;
        }
        return MR_OK;
    }
    if (!strcmp(ty, "Prepend")) {
        const char *s = json_string_value(json_object_get(p, "prepend"));
        if (!s || strcmp(s, SPIECE))
            return mr_fail(e, MR_ERR_INPUT, "%s: normalizer Prepend of '%s' is not supported (only U+2581)", b->path,
                           s ? s : "(missing)");
        b->spm = 1;
        b->add_space_prefix = 1;
        return MR_OK;
    }
    if (!strcmp(ty, "Replace")) {
        json_t *pat = json_object_get(p, "pattern");
        const char *from = json_is_object(pat) ? json_string_value(json_object_get(pat, "String")) : NULL;
        const char *to = json_string_value(json_object_get(p, "content"));
        if (!from || !to || strcmp(from, " ") || strcmp(to, SPIECE))
            return mr_fail(e, MR_ERR_INPUT, "%s: normalizer Replace other than ' ' -> U+2581 is not supported", b->path);
        b->spm = 1;
        return MR_OK;
    }
    if (!strcmp(ty, "NFC") || !strcmp(ty, "NFKC") || !strcmp(ty, "NFD") || !strcmp(ty, "NFKD"))
        return MR_OK; /* llama.cpp does not normalize either */
    return mr_fail(e, MR_ERR_INPUT, "%s: normalizer type '%s' is not supported", b->path, ty);
}

static int special_id_from(json_t *pp, json_t *item, int32_t *id) {
    json_t *st = json_object_get(item, "SpecialToken");
    if (!json_is_object(st)) return 0;
    const char *name = json_string_value(json_object_get(st, "id"));
    json_t *sp = name ? json_object_get(json_object_get(pp, "special_tokens"), name) : NULL;
    json_t *ids = sp ? json_object_get(sp, "ids") : NULL;
    if (json_is_array(ids) && json_array_size(ids) == 1 && json_is_integer(json_array_get(ids, 0)))
        *id = (int32_t)json_integer_value(json_array_get(ids, 0));
    return 1;
}

static void parse_post(hf_build *b, json_t *pp) {
    const char *ty = type_of(pp);
    if (!strcmp(ty, "Sequence")) {
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(pp, "processors"), i, x) parse_post(b, x);
    } else if (!strcmp(ty, "TemplateProcessing")) {
        json_t *single = json_object_get(pp, "single");
        size_t n = json_array_size(single);
        if (n == 0) return;
        int32_t id = -1;
        b->add_bos_set = b->add_eos_set = 1;
        b->add_bos = special_id_from(pp, json_array_get(single, 0), &id);
        if (b->add_bos && id >= 0) b->bos = id;
        id = -1;
        b->add_eos = n > 1 && special_id_from(pp, json_array_get(single, n - 1), &id);
        if (b->add_eos && id >= 0) b->eos = id;
    } else if (!strcmp(ty, "RobertaProcessing") || !strcmp(ty, "BertProcessing")) {
        json_t *cls = json_object_get(pp, "cls"), *sep = json_object_get(pp, "sep");
        b->add_bos_set = b->add_eos_set = 1;
        b->add_bos = b->add_eos = 1;
        if (json_is_integer(json_array_get(cls, 1))) b->bos = (int32_t)json_integer_value(json_array_get(cls, 1));
        if (json_is_integer(json_array_get(sep, 1))) b->eos = (int32_t)json_integer_value(json_array_get(sep, 1));
    }
}

static int parse_tokenizer_json(hf_build *b, json_t *root, mr_error *e) {
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return mr_fail(e, MR_ERR_INPUT, "%s: field 'model' is missing", b->path);
    const char *mt = type_of(model);
    if (*mt && strcmp(mt, "BPE"))
        return mr_fail(e, MR_ERR_INPUT, "%s: model type '%s' is not supported (only BPE)", b->path, mt);
    json_t *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab)) return mr_fail(e, MR_ERR_INPUT, "%s: field 'model.vocab' is missing", b->path);
    if (!json_is_array(merges)) return mr_fail(e, MR_ERR_INPUT, "%s: field 'model.merges' is missing", b->path);
    static const char *const UNSUPPORTED[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        json_t *x = json_object_get(model, UNSUPPORTED[k]);
        if (json_is_string(x) && *json_string_value(x))
            return mr_fail(e, MR_ERR_INPUT, "%s: model.%s is not supported", b->path, UNSUPPORTED[k]);
    }
    json_t *added = json_object_get(root, "added_tokens");
    int64_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= MAX_TOKEN_ID)
            return mr_fail(e, MR_ERR_INPUT, "%s: model.vocab['%s'] is not a token id", b->path, key);
        if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
    }
    size_t i;
    json_t *x;
    json_array_foreach(added, i, x) {
        json_t *id = json_object_get(x, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= MAX_TOKEN_ID ||
            !json_is_string(json_object_get(x, "content")))
            return mr_fail(e, MR_ERR_INPUT, "%s: added_tokens[%zu] needs an 'id' and a 'content'", b->path, i);
        if (json_integer_value(id) > max_id) max_id = json_integer_value(id);
    }
    if (max_id < 0) return mr_fail(e, MR_ERR_INPUT, "%s: model.vocab is empty", b->path);
    int rc0 = hf_alloc_tokens(b, (int32_t)(max_id + 1), (int64_t)(json_object_size(vocab) + json_array_size(added)), e);
    if (rc0) return rc0;
    size_t key_len;
    json_object_keylen_foreach(vocab, key, key_len, val) {
        int rc = hf_set_token(b, json_integer_value(val), key, key_len, TOK_TYPE_NORMAL, e);
        if (rc) return rc;
    }
    json_array_foreach(added, i, x) {
        json_t *c = json_object_get(x, "content");
        int64_t id = json_integer_value(json_object_get(x, "id"));
        int special = json_is_true(json_object_get(x, "special"));
        int rc = hf_set_token(b, id, json_string_value(c), json_string_length(c),
                              special ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED, e);
        if (rc) return rc;
        if (json_is_true(json_object_get(x, "lstrip"))) b->attr[id] |= TOK_ATTR_LSTRIP;
        if (json_is_true(json_object_get(x, "rstrip"))) b->attr[id] |= TOK_ATTR_RSTRIP;
    }
    json_array_foreach(merges, i, x) {
        int rc;
        if (json_is_string(x)) {
            const char *s = json_string_value(x);
            size_t n = json_string_length(x);
            const char *sp = n > 1 ? memchr(s + 1, ' ', n - 1) : NULL;
            if (!sp) return mr_fail(e, MR_ERR_INPUT, "%s: model.merges[%zu] is not \"left right\"", b->path, i);
            rc = hf_add_merge(b, s, (size_t)(sp - s), sp + 1, n - (size_t)(sp - s) - 1, e);
        } else if (json_is_array(x) && json_array_size(x) == 2 && json_is_string(json_array_get(x, 0)) &&
                   json_is_string(json_array_get(x, 1))) {
            json_t *l = json_array_get(x, 0), *r = json_array_get(x, 1);
            rc = hf_add_merge(b, json_string_value(l), json_string_length(l), json_string_value(r),
                              json_string_length(r), e);
        } else {
            return mr_fail(e, MR_ERR_INPUT, "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", b->path, i);
        }
        if (rc) return rc;
    }
    if (json_is_true(json_object_get(model, "ignore_merges"))) b->ignore_merges = 1;
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    if (unk) b->unk = find_text(b, unk);
    int rc = parse_normalizer(b, json_object_get(root, "normalizer"), e);
    if (!rc) rc = parse_pre(b, json_object_get(root, "pre_tokenizer"), e);
    if (rc) return rc;
    if (!b->byte_level && !b->spm && json_is_true(json_object_get(model, "byte_fallback"))) b->spm = 1;
    if (!b->byte_level && !strcmp(type_of(json_object_get(root, "decoder")), "ByteLevel")) b->byte_level = 1;
    if (b->byte_level && b->spm)
        return mr_fail(e, MR_ERR_INPUT, "%s: both a ByteLevel pre-tokenizer and SentencePiece spaces", b->path);
    if (!b->byte_level && !b->spm)
        return mr_fail(e, MR_ERR_INPUT,
                       "%s: neither byte-level (ByteLevel pre-tokenizer) nor SentencePiece-style (U+2581 normalizer "
                       "or Metaspace): not supported",
                       b->path);
    json_t *pp = json_object_get(root, "post_processor");
    if (pp && !json_is_null(pp)) parse_post(b, pp);
    return MR_OK;
}

/* ---- vocab.json + merges.txt ---- */

static int parse_vocab_merges(hf_build *b, const char *vocab_path, const char *merges_path, mr_error *e) {
    int rc;
    json_t *vocab = load_json(vocab_path, 1, e, &rc);
    if (!vocab) return rc;
    if (!json_is_object(vocab)) {
        json_decref(vocab);
        return mr_fail(e, MR_ERR_INPUT, "%s: not a JSON object of token -> id", vocab_path);
    }
    int64_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= MAX_TOKEN_ID) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: entry '%s' is not a token id", vocab_path, key); /* key is vocab's */
            json_decref(vocab);
            return rc;
        }
        if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
    }
    if (max_id < 0) {
        json_decref(vocab);
        return mr_fail(e, MR_ERR_INPUT, "%s: empty vocabulary", vocab_path);
    }
    if ((rc = hf_alloc_tokens(b, (int32_t)(max_id + 1), (int64_t)json_object_size(vocab), e))) {
        json_decref(vocab);
        return rc;
    }
    size_t key_len;
    json_object_keylen_foreach(vocab, key, key_len, val) {
        if ((rc = hf_set_token(b, json_integer_value(val), key, key_len, TOK_TYPE_NORMAL, e))) break;
    }
    json_decref(vocab);
    if (rc) return rc;
    char *data;
    size_t len;
    if ((rc = mr_read_file(merges_path, &data, &len, e))) return rc;
    size_t line_no = 0;
    for (char *p = data; p < data + len;) {
        char *nl = memchr(p, '\n', (size_t)(data + len - p));
        char *end = nl ? nl : data + len;
        line_no++;
        size_t n = (size_t)(end - p);
        if (n > 0 && p[n - 1] == '\r') n--;
        if (n > 0 && !(line_no == 1 && !strncmp(p, "#version", 8))) {
            char *sp = n > 1 ? memchr(p + 1, ' ', n - 1) : NULL;
            if (!sp) {
                rc = mr_fail(e, MR_ERR_INPUT, "%s:%zu: expected \"left right\"", merges_path, line_no);
                break;
            }
            if ((rc = hf_add_merge(b, p, (size_t)(sp - p), sp + 1, n - (size_t)(sp - p) - 1, e))) break;
        }
        p = end + 1;
    }
    free(data);
    if (rc) return rc;
    b->byte_level = 1;
    return hf_add_regex(b, "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", e);
}

/* ---- folder ---- */

static int has_file(const char *dir, const char *name) {
    mr_error e = {0};
    char *p = mr_path_join(dir, name, &e);
    int ok = p && mr_file_exists(p);
    free(p);
    return ok;
}

int tokenizer_hf_available(const char *dir) {
    return has_file(dir, "tokenizer.json") || (has_file(dir, "vocab.json") && has_file(dir, "merges.txt"));
}

/* Settings from tokenizer_config.json and special_tokens_map.json. */
static int apply_configs(hf_build *b, const char *dir, mr_error *e) {
    static const char *const FILES[] = {"special_tokens_map.json", "tokenizer_config.json"};
    for (int f = 0; f < 2; f++) {
        char *path = mr_path_join(dir, FILES[f], e);
        if (!path) return MR_ERR_INTERNAL;
        int rc;
        json_t *cfg = load_json(path, 0, e, &rc);
        free(path);
        if (rc) return rc;
        if (!cfg) continue;
        json_t *atd = json_object_get(cfg, "added_tokens_decoder");
        const char *key;
        json_t *val;
        json_object_foreach(atd, key, val) {
            int64_t id;
            const char *c = json_string_value(json_object_get(val, "content"));
            if (mr_parse_i64(key, &id) || id < 0 || id >= b->n || !c) continue;
            if (!b->text[id] || strcmp(b->text[id], c)) {
                if ((rc = hf_set_token(b, id, c, strlen(c), TOK_TYPE_NORMAL, e))) break;
            }
            if (b->type[id] == TOK_TYPE_NORMAL || b->type[id] == 0)
                b->type[id] = json_is_true(json_object_get(val, "special")) ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED;
        }
        static const char *const NAMES[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
        int32_t *ids[] = {&b->bos, &b->eos, &b->unk, &b->pad};
        for (int k = 0; k < 4 && !rc; k++) {
            int32_t id = find_text(b, config_token_text(json_object_get(cfg, NAMES[k])));
            if (id < 0) continue;
            *ids[k] = id;
            if (b->type[id] == TOK_TYPE_NORMAL) b->type[id] = TOK_TYPE_CONTROL; /* named special tokens are control */
        }
        json_t *ab = json_object_get(cfg, "add_bos_token"), *ae = json_object_get(cfg, "add_eos_token");
        if (json_is_boolean(ab)) b->add_bos = json_is_true(ab), b->add_bos_set = 1;
        if (json_is_boolean(ae)) b->add_eos = json_is_true(ae), b->add_eos_set = 1;
        json_decref(cfg);
        if (rc) return rc;
    }
    return MR_OK;
}

int tokenizer_load_hf(tokenizer **out, const char *dir, mr_error *e) {
    *out = NULL;
    if (!mr_is_dir(dir)) return mr_fail(e, MR_ERR_INPUT, "%s: not a folder", dir);
    hf_build b = {0};
    b.bos = b.eos = b.unk = b.pad = -1;
    int rc = MR_ERR_INTERNAL;
    char *tj = mr_path_join(dir, "tokenizer.json", e);
    char *vj = mr_path_join(dir, "vocab.json", e);
    char *mt = mr_path_join(dir, "merges.txt", e);
    json_t *root = NULL;
    if (!tj || !vj || !mt) goto done;
    if (mr_file_exists(tj)) {
        b.path = tj;
        root = load_json(tj, 1, e, &rc);
        if (!root) goto done;
        if ((rc = parse_tokenizer_json(&b, root, e))) goto done;
    } else if (mr_file_exists(vj) && mr_file_exists(mt)) {
        b.path = vj;
        if ((rc = parse_vocab_merges(&b, vj, mt, e))) goto done;
    } else {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: no tokenizer files (tokenizer.json, or vocab.json with merges.txt)", dir);
        goto done;
    }
    if ((rc = apply_configs(&b, dir, e))) goto done;
    for (int32_t i = 0; i < b.n; i++) {
        if (b.text[i]) continue;
        char name[32]; /* a hole in the ids: an unused placeholder, as llama.cpp's converter writes */
        int n = snprintf(name, sizeof name, "[PAD%d]", (int)i);
        if ((rc = hf_set_token(&b, i, name, (size_t)n, TOK_TYPE_UNUSED, e))) goto done;
    }
    if (b.unk >= 0 && b.type[b.unk] == TOK_TYPE_CONTROL) b.type[b.unk] = TOK_TYPE_UNKNOWN;
    if (b.spm) {
        for (int32_t i = 0; i < b.n; i++) { /* <0xNN> are byte-fallback tokens */
            if (b.type[i] == TOK_TYPE_NORMAL && tok_parse_byte_token(b.text[i], b.len[i]) >= 0)
                b.type[i] = TOK_TYPE_BYTE;
        }
    }
    tokenizer_vocab v;
    tokenizer_vocab_defaults(&v, b.spm ? TOK_KIND_SPM : TOK_KIND_BPE);
    v.n_tokens = b.n;
    v.tokens = (const char *const *)b.text;
    v.token_lens = b.len;
    v.types = b.type;
    v.n_merges = b.n_merges;
    v.merges = (const char *const *)b.ml;
    v.merge_lens = b.mll;
    v.merges_right = (const char *const *)b.mr;
    v.merge_right_lens = b.mrl;
    v.bos = b.bos, v.eos = b.eos, v.unk = b.unk, v.pad = b.pad;
    v.add_bos = b.add_bos_set ? b.add_bos : v.add_bos;
    v.add_eos = b.add_eos_set ? b.add_eos : 0;
    if (b.spm) {
        v.add_space_prefix = b.add_space_prefix;
        v.spm_merge_ranks = 1;
    } else {
        v.regexes = (const char *const *)(b.rx ? b.rx : (char **)&b.rx); /* non-NULL: an explicit list */
        v.n_regexes = b.n_rx;
        v.ignore_merges = b.ignore_merges;
        v.byte_level_prefix_space = b.byte_level_prefix_space;
    }
    if ((rc = tokenizer_create(out, &v, e))) goto done;
    memcpy((*out)->attrs, b.attr, (size_t)b.n);
done:
    if (rc && e && !e->code) mr_fail(e, rc, "%s: out of memory", dir);
    json_decref(root);
    hf_free(&b);
    free(tj);
    free(vj);
    free(mt);
    return rc;
}
