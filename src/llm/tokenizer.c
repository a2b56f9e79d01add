/* Tokenizer interface: vocabulary tables, special-token partitioning, encode,
 * decode and truncation. The merge engines are in tok_spm.c and tok_bpe.c, the
 * pre-tokenizer regexes in tok_pretok.c, the loaders in tok_load_*.c.
 *
 * Encoding follows llama.cpp's llama_vocab::impl::tokenize: the text is first
 * cut at special-token texts (longest first; control and unknown tokens only
 * with TOK_PARSE_SPECIAL, user-defined tokens always), then each remaining text
 * fragment goes through the SentencePiece or the byte-level BPE engine. */
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- strings -- */

uint64_t tok_hash_bytes(const char *s, size_t n) {
    /* the base hash over 8-byte words, keyed by the length; tokens are short */
    uint64_t h = mr_mix64(n), w;
    for (; n >= 8; s += 8, n -= 8) {
        memcpy(&w, s, 8);
        h = mr_hash2(h, w);
    }
    w = 0;
    memcpy(&w, s, n);
    return mr_hash2(h, w);
}

static int strings_grow_slots(tok_strings *s, mr_error *e) {
    uint64_t n_slots = s->n_slots ? s->n_slots * 2 : 1024;
    int32_t *slots = mr_calloc(n_slots, sizeof *slots, e);
    if (!slots) return MR_ERR_INTERNAL;
    for (int32_t id = 0; id < s->n; id++) {
        uint64_t h = tok_hash_bytes(tok_str(s, id), s->len[id]) & (n_slots - 1);
        while (slots[h]) {
            int32_t other = slots[h] - 1;
            if (s->len[other] == s->len[id] && !memcmp(tok_str(s, other), tok_str(s, id), s->len[id])) break;
            h = (h + 1) & (n_slots - 1);
        }
        slots[h] = id + 1; /* a later duplicate takes the slot */
    }
    free(s->slots);
    s->slots = slots;
    s->n_slots = n_slots;
    return MR_OK;
}

int tok_strings_add(tok_strings *s, const char *text, size_t len, mr_error *e) {
    if (len > UINT32_MAX) return mr_fail(e, MR_ERR_INPUT, "token text of %zu bytes is too long", len), -1;
    if (s->n == s->cap) {
        int32_t cap = s->cap ? s->cap * 2 : 1024;
        uint64_t *off = mr_realloc(s->off, (size_t)cap * sizeof *off, e);
        if (!off) return -1;
        s->off = off;
        uint32_t *ln = mr_realloc(s->len, (size_t)cap * sizeof *ln, e);
        if (!ln) return -1;
        s->len = ln;
        s->cap = cap;
    }
    if (s->blob_len + len + 1 > s->blob_cap) {
        size_t cap = s->blob_cap ? s->blob_cap : 1 << 16;
        while (cap < s->blob_len + len + 1) cap *= 2;
        char *b = mr_realloc(s->blob, cap, e);
        if (!b) return -1;
        s->blob = b;
        s->blob_cap = cap;
    }
    memcpy(s->blob + s->blob_len, text, len);
    s->blob[s->blob_len + len] = 0;
    int32_t id = s->n++;
    s->off[id] = s->blob_len;
    s->len[id] = (uint32_t)len;
    s->blob_len += len + 1;
    if (s->slots) {
        if ((uint64_t)s->n * 2 > s->n_slots) {
            if (strings_grow_slots(s, e)) return -1;
        } else {
            uint64_t h = tok_hash_bytes(text, len) & (s->n_slots - 1);
            while (s->slots[h]) {
                int32_t other = s->slots[h] - 1;
                if (s->len[other] == len && !memcmp(tok_str(s, other), text, len)) break;
                h = (h + 1) & (s->n_slots - 1);
            }
            s->slots[h] = id + 1;
        }
    }
    return id;
}

int tok_strings_index(tok_strings *s, mr_error *e) {
    free(s->slots);
    s->slots = NULL;
    s->n_slots = 512;
    while (s->n_slots < (uint64_t)s->n * 2) s->n_slots *= 2;
    s->n_slots /= 2; /* strings_grow_slots doubles */
    return strings_grow_slots(s, e);
}

int32_t tok_strings_find(const tok_strings *s, const char *text, size_t len) {
    if (!s->slots) return -1;
    uint64_t h = tok_hash_bytes(text, len) & (s->n_slots - 1);
    while (s->slots[h]) {
        int32_t id = s->slots[h] - 1;
        if (s->len[id] == len && !memcmp(tok_str(s, id), text, len)) return id;
        h = (h + 1) & (s->n_slots - 1);
    }
    return -1;
}

void tok_strings_free(tok_strings *s) {
    free(s->blob);
    free(s->off);
    free(s->len);
    free(s->slots);
    memset(s, 0, sizeof *s);
}

int tok_pairs_init(tok_pairs *p, uint64_t expected, mr_error *e) {
    p->n_slots = 64;
    while (p->n_slots < expected * 2) p->n_slots *= 2;
    p->n = 0;
    p->keys = mr_calloc(p->n_slots, sizeof *p->keys, e);
    p->ranks = mr_calloc(p->n_slots, sizeof *p->ranks, e);
    return p->keys && p->ranks ? MR_OK : MR_ERR_INTERNAL;
}

void tok_pairs_put(tok_pairs *p, int32_t a, int32_t b, int32_t rank) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint64_t h = mr_mix64(key) & (p->n_slots - 1);
    while (p->keys[h]) {
        if (p->keys[h] == key) return; /* the first (lowest) rank stays */
        h = (h + 1) & (p->n_slots - 1);
    }
    p->keys[h] = key;
    p->ranks[h] = rank;
    p->n++;
}

int32_t tok_pairs_get(const tok_pairs *p, int32_t a, int32_t b) {
    if (!p->keys || a < 0 || b < 0) return -1;
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint64_t h = mr_mix64(key) & (p->n_slots - 1);
    while (p->keys[h]) {
        if (p->keys[h] == key) return p->ranks[h];
        h = (h + 1) & (p->n_slots - 1);
    }
    return -1;
}

void tok_pairs_free(tok_pairs *p) {
    free(p->keys);
    free(p->ranks);
    memset(p, 0, sizeof *p);
}

int tok_ids_push(tok_ids *ids, int32_t id, mr_error *e) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = mr_realloc(ids->v, cap * sizeof *v, e);
        if (!v) return MR_ERR_INTERNAL;
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return MR_OK;
}

/* ------------------------------------------------------------ UTF-8 ------ */

size_t tok_utf8_decode(const uint8_t *s, size_t n, uint32_t *cpt) {
    uint32_t c = s[0];
    size_t len;
    uint32_t min;
    if (c < 0x80) {
        *cpt = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, min = 0x80, c &= 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, min = 0x800, c &= 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, min = 0x10000, c &= 0x07;
    } else {
        return 0;
    }
    if (len > n) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[k] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cpt = c;
    return len;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the
 * other 68 bytes get the code points 256, 257, ... in byte order. */
static uint16_t byte_cpt[256];
static int16_t cpt_byte[324];
static int byte_map_ready;

static void byte_map_init(void) {
    if (__atomic_load_n(&byte_map_ready, __ATOMIC_ACQUIRE)) return;
    uint16_t bc[256];
    int16_t cb[324];
    for (int i = 0; i < 324; i++) cb[i] = -1;
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        bc[b] = (uint16_t)(printable ? b : next++);
        cb[bc[b]] = (int16_t)b;
    }
    memcpy(byte_cpt, bc, sizeof bc);
    memcpy(cpt_byte, cb, sizeof cb);
    __atomic_store_n(&byte_map_ready, 1, __ATOMIC_RELEASE);
}

int tok_byte_to_utf8(uint8_t b, char out[4]) {
    byte_map_init();
    uint32_t c = byte_cpt[b];
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    out[0] = (char)(0xC0 | (c >> 6));
    out[1] = (char)(0x80 | (c & 0x3F));
    return 2;
}

int tok_cpt_to_byte(uint32_t cpt) {
    byte_map_init();
    return cpt < 324 ? cpt_byte[cpt] : -1;
}

/* ------------------------------------------------------------ creation --- */

void tokenizer_vocab_defaults(tokenizer_vocab *v, tokenizer_kind kind) {
    memset(v, 0, sizeof *v);
    v->kind = kind;
    v->bos = v->eos = v->unk = v->pad = -1;
    if (kind == TOK_KIND_SPM) {
        v->add_bos = 1;
        v->add_space_prefix = 1;
    }
}

void tokenizer_free(tokenizer *t) {
    if (!t) return;
    tok_strings_free(&t->str);
    free(t->scores);
    free(t->types);
    free(t->attrs);
    free(t->pieces);
    free(t->piece_off);
    free(t->piece_len);
    tok_pairs_free(&t->ranks);
    free(t->merge_left);
    free(t->merge_right);
    free(t->pre);
    for (int i = 0; i < t->n_regex; i++) {
        free(t->regex_src[i]);
        if (t->regex) pcre2_code_free(t->regex[i]);
    }
    free(t->regex_src);
    free(t->regex);
    free(t->special);
    free(t->is_eog);
    free(t);
}

static size_t text_len_of(const char *const *texts, const uint32_t *lens, int64_t i) {
    return lens ? lens[i] : strlen(texts[i]);
}

int tokenizer_create(tokenizer **out, const tokenizer_vocab *v, mr_error *e) {
    *out = NULL;
    if (v->kind != TOK_KIND_SPM && v->kind != TOK_KIND_BPE)
        return mr_fail(e, MR_ERR_INPUT, "tokenizer: unknown kind %d", (int)v->kind);
    if (v->n_tokens <= 0 || !v->tokens)
        return mr_fail(e, MR_ERR_INPUT, "tokenizer: the vocabulary is empty");
    byte_map_init(); /* here, before any thread encodes */
    tokenizer *t = mr_calloc(1, sizeof *t, e);
    if (!t) return MR_ERR_INTERNAL;
    int rc = MR_ERR_INTERNAL;
    t->kind = v->kind;
    t->n_tokens = v->n_tokens;
    t->scores = mr_calloc((size_t)v->n_tokens, sizeof *t->scores, e);
    t->types = mr_calloc((size_t)v->n_tokens, 1, e);
    t->attrs = mr_calloc((size_t)v->n_tokens, 1, e);
    if (!t->scores || !t->types || !t->attrs) goto fail;
    for (int32_t i = 0; i < v->n_tokens; i++) {
        if (!v->tokens[i]) {
            rc = mr_fail(e, MR_ERR_INPUT, "tokenizer: token %d has no text", (int)i);
            goto fail;
        }
        size_t n = text_len_of(v->tokens, v->token_lens, i);
        char empty[32];
        const char *text = v->tokens[i];
        if (n == 0) { /* llama.cpp renames empty tokens so that they never match */
            n = (size_t)snprintf(empty, sizeof empty, "[EMPTY_%d]", (int)i);
            text = empty;
        }
        if (tok_strings_add(&t->str, text, n, e) < 0) goto fail_set;
        t->scores[i] = v->scores ? v->scores[i] : 0.0f;
        int32_t ty = v->types ? v->types[i] : TOK_TYPE_NORMAL;
        if (!v->types && v->kind == TOK_KIND_SPM && tok_parse_byte_token(text, n) >= 0)
            ty = TOK_TYPE_BYTE; /* no types given: <0xNN> are SentencePiece's byte tokens */
        t->types[i] = (uint8_t)(ty >= TOK_TYPE_NORMAL && ty <= TOK_TYPE_BYTE ? ty : 0);
    }
    if (tok_strings_index(&t->str, e)) goto fail;

    /* merges: "left right", split at the first space after the first byte */
    if (v->n_merges > 0) {
        if (!v->merges) {
            rc = mr_fail(e, MR_ERR_INPUT, "tokenizer: merges missing");
            goto fail;
        }
        if (tok_pairs_init(&t->ranks, (uint64_t)v->n_merges, e)) goto fail;
        t->merge_left = mr_alloc((size_t)v->n_merges * sizeof(int32_t), e);
        t->merge_right = mr_alloc((size_t)v->n_merges * sizeof(int32_t), e);
        if (!t->merge_left || !t->merge_right) goto fail;
        for (int64_t i = 0; i < v->n_merges; i++) {
            const char *m = v->merges[i], *r;
            size_t n = text_len_of(v->merges, v->merge_lens, i), nl, nr;
            if (v->merges_right) {
                nl = n;
                r = v->merges_right[i];
                nr = text_len_of(v->merges_right, v->merge_right_lens, i);
            } else {
                const char *sp = n > 1 ? memchr(m + 1, ' ', n - 1) : NULL;
                if (!sp) {
                    rc = mr_fail(e, MR_ERR_INPUT, "tokenizer: merge %lld \"%.*s\" is not \"left right\"",
                                 (long long)i, (int)(n > 60 ? 60 : n), m);
                    goto fail;
                }
                nl = (size_t)(sp - m);
                r = sp + 1;
                nr = n - nl - 1;
            }
            int32_t a = tok_strings_find(&t->str, m, nl);
            if (a < 0 && (a = tok_strings_add(&t->str, m, nl, e)) < 0) goto fail_set;
            int32_t b = tok_strings_find(&t->str, r, nr);
            if (b < 0 && (b = tok_strings_add(&t->str, r, nr, e)) < 0) goto fail_set;
            tok_pairs_put(&t->ranks, a, b, (int32_t)(i > INT32_MAX ? INT32_MAX : i));
            t->merge_left[t->n_merges] = a;
            t->merge_right[t->n_merges] = b;
            t->n_merges++;
        }
    } else if (v->spm_merge_ranks) {
        rc = mr_fail(e, MR_ERR_INPUT, "tokenizer: SentencePiece ranked by merges, but there are none");
        goto fail;
    }

    int32_t ids[4] = {v->bos, v->eos, v->unk, v->pad};
    for (int k = 0; k < 4; k++)
        if (ids[k] < -1 || ids[k] >= v->n_tokens) ids[k] = -1;
    t->bos = ids[0], t->eos = ids[1], t->unk = ids[2], t->pad = ids[3];
    t->eot = t->eom = -1;
    t->add_bos = v->add_bos && t->bos >= 0;
    t->add_eos = v->add_eos && t->eos >= 0;
    t->add_space_prefix = v->add_space_prefix;
    t->ignore_merges = v->ignore_merges;
    t->byte_level_prefix_space = v->byte_level_prefix_space;
    t->spm_merge_ranks = v->spm_merge_ranks;

    if (v->kind == TOK_KIND_BPE) {
        if (v->regexes) { /* an explicit list (maybe empty: no split) */
            rc = tok_pretok_compile(t, v->regexes, v->n_regexes, e);
            const char *name = tok_pretok_name_of(v->regexes, v->n_regexes);
            if (!rc && name && !(t->pre = mr_strdup(name, e))) rc = MR_ERR_INTERNAL;
        } else {
            const char *name = v->pre ? v->pre : "default";
            int n, im, ab;
            const char *const *rx = tok_pretok_regexes(name, &n, &im, &ab);
            if (!rx) {
                rc = mr_fail(e, MR_ERR_INPUT,
                             "tokenizer: unknown pre-tokenizer \"%s\" (known: default, gpt-2, llama-bpe/llama3, "
                             "qwen2, deepseek-coder, deepseek-llm, falcon, starcoder, refact, smollm, mpt, olmo, ...)",
                             name);
                goto fail;
            }
            t->pre = mr_strdup(name, e);
            if (!t->pre) goto fail;
            rc = tok_pretok_compile(t, rx, n, e);
        }
        if (rc) goto fail;
    }
    if ((rc = tok_finish(t, e))) goto fail;
    *out = t;
    return MR_OK;
fail_set:
    if (!e || !e->code) mr_fail(e, MR_ERR_INTERNAL, "tokenizer: out of memory");
    rc = e ? e->code : MR_ERR_INTERNAL;
fail:
    tokenizer_free(t);
    return rc ? rc : MR_ERR_INTERNAL;
}

/* Texts that llama.cpp treats as control tokens even when the vocabulary says
 * otherwise (end of turn, fill-in-the-middle); the first group also ends generation. */
static const char *const EOG_TEXTS[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                        "<|end_of_text|>", "<EOT>", "_<EOT>", "<\xef\xbd\x9c" "end\xe2\x96\x81" "of"
                                        "\xe2\x96\x81" "sentence\xef\xbd\x9c>", "<end_of_utterance>", "<|eom_id|>"};
static const char *const FIM_TEXTS[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "\xe2\x96\x81<PRE>",
                                        "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>", "\xe2\x96\x81<SUF>",
                                        "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>", "\xe2\x96\x81<MID>",
                                        "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "<|fim_repo|>",
                                        "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
                                        "<fim-separator>", "<|file_separator|>", "<file_sep>",
                                        "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>",
                                        "<\xef\xbd\x9c" "fim\xe2\x96\x81" "hole\xef\xbd\x9c>",
                                        "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>"};

static int special_cmp_len_desc(const void *a, const void *b, void *ctx) {
    const tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->str.len[x] != t->str.len[y]) return t->str.len[x] > t->str.len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

int tok_finish(tokenizer *t, mr_error *e) {
    int32_t n = t->n_tokens;
    t->is_eog = mr_calloc((size_t)n, 1, e);
    if (!t->is_eog) return MR_ERR_INTERNAL;
    for (size_t k = 0; k < sizeof EOG_TEXTS / sizeof *EOG_TEXTS; k++) {
        int32_t id = tok_strings_find(&t->str, EOG_TEXTS[k], strlen(EOG_TEXTS[k]));
        if (id < 0 || id >= n) continue;
        t->types[id] = TOK_TYPE_CONTROL;
        t->is_eog[id] = 1;
        if (!strcmp(EOG_TEXTS[k], "<|eom_id|>")) {
            if (t->eom < 0) t->eom = id;
        } else if (t->eot < 0) {
            t->eot = id;
        }
    }
    for (size_t k = 0; k < sizeof FIM_TEXTS / sizeof *FIM_TEXTS; k++) {
        int32_t id = tok_strings_find(&t->str, FIM_TEXTS[k], strlen(FIM_TEXTS[k]));
        if (id >= 0 && id < n) t->types[id] = TOK_TYPE_CONTROL;
    }
    if (t->eos >= 0) t->is_eog[t->eos] = 1;

    /* pieces: what each token decodes to */
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) total += t->str.len[i] + 1;
    t->pieces = mr_alloc(total + 1, e);
    t->piece_off = mr_alloc((size_t)n * sizeof *t->piece_off, e);
    t->piece_len = mr_alloc((size_t)n * sizeof *t->piece_len, e);
    if (!t->pieces || !t->piece_off || !t->piece_len) return MR_ERR_INTERNAL;
    size_t pos = 0;
    for (int32_t i = 0; i < n; i++) {
        const uint8_t *s = (const uint8_t *)tok_str(&t->str, i);
        size_t len = t->str.len[i];
        char *dst = t->pieces + pos;
        size_t m = 0;
        int ty = t->types[i];
        if (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN || ty == TOK_TYPE_USER_DEFINED) {
            memcpy(dst, s, len);
            m = len;
        } else if (ty == TOK_TYPE_NORMAL && t->kind == TOK_KIND_SPM) {
            for (size_t k = 0; k < len;) { /* U+2581 -> space */
                if (k + 2 < len && s[k] == 0xE2 && s[k + 1] == 0x96 && s[k + 2] == 0x81) {
                    dst[m++] = ' ';
                    k += 3;
                } else {
                    dst[m++] = (char)s[k++];
                }
            }
        } else if (ty == TOK_TYPE_NORMAL) { /* byte-level alphabet -> bytes */
            for (size_t k = 0; k < len;) {
                uint32_t c;
                size_t l = tok_utf8_decode(s + k, len - k, &c);
                int b = l ? tok_cpt_to_byte(c) : -1;
                if (b >= 0) {
                    dst[m++] = (char)b;
                    k += l;
                } else { /* not in the alphabet: keep the text as it is */
                    size_t keep = l ? l : 1;
                    memcpy(dst + m, s + k, keep);
                    m += keep;
                    k += keep;
                }
            }
        } else if (ty == TOK_TYPE_BYTE && t->kind == TOK_KIND_SPM) {
            int byte = tok_parse_byte_token((const char *)s, len);
            if (byte >= 0) dst[m++] = (char)byte;
        }
        t->piece_off[i] = pos;
        t->piece_len[i] = (uint32_t)m;
        pos += m;
    }

    /* byte fallback ids */
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        int32_t id = tok_strings_find(&t->str, buf, 6);
        if (id < 0 || id >= n) {
            char c = (char)b;
            id = tok_strings_find(&t->str, &c, 1);
        }
        t->byte_token[b] = id >= 0 && id < n ? id : -1;
    }

    /* special tokens, longest first */
    t->special = mr_alloc((size_t)n * sizeof *t->special, e);
    if (!t->special) return MR_ERR_INTERNAL;
    t->n_special = 0;
    for (int32_t i = 0; i < n; i++) {
        int ty = t->types[i];
        if (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNKNOWN)
            t->special[t->n_special++] = i;
    }
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, special_cmp_len_desc, t);
    return MR_OK;
}

/* -------------------------------------------------------------- encode --- */

typedef struct fragment {
    int32_t id; /* -1: text [off, off+len) */
    size_t off, len;
} fragment;

typedef struct frag_list {
    fragment *v;
    size_t n, cap;
} frag_list;

static int frag_push(frag_list *l, fragment f, mr_error *e) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        fragment *v = mr_realloc(l->v, cap * sizeof *v, e);
        if (!v) return MR_ERR_INTERNAL;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = f;
    return MR_OK;
}

static int is_space_byte(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Cuts the text fragments of *cur at every occurrence of special token id
 * (llama.cpp's tokenizer_st_partition for one token). */
static int partition_one(const tokenizer *t, const char *text, int32_t id, frag_list *cur, frag_list *next,
                         mr_error *e) {
    const char *st = tok_str(&t->str, id);
    size_t sl = t->str.len[id];
    int found = 0;
    for (size_t i = 0; i < cur->n && !found; i++)
        if (cur->v[i].id < 0 && cur->v[i].len >= sl && memmem(text + cur->v[i].off, cur->v[i].len, st, sl)) found = 1;
    if (!found) return MR_OK;
    next->n = 0;
    for (size_t i = 0; i < cur->n; i++) {
        fragment f = cur->v[i];
        if (f.id >= 0) {
            if (frag_push(next, f, e)) return MR_ERR_INTERNAL;
            continue;
        }
        size_t off = f.off, len = f.len;
        for (;;) {
            const char *m = len >= sl ? memmem(text + off, len, st, sl) : NULL;
            if (!m) {
                if (len > 0 && frag_push(next, (fragment){-1, off, len}, e)) return MR_ERR_INTERNAL;
                break;
            }
            size_t at = (size_t)(m - text);
            size_t left = at - off;
            if (t->attrs[id] & TOK_ATTR_LSTRIP)
                while (left > 0 && is_space_byte(text[off + left - 1])) left--;
            if (left > 0 && frag_push(next, (fragment){-1, off, left}, e)) return MR_ERR_INTERNAL;
            if (frag_push(next, (fragment){id, 0, 0}, e)) return MR_ERR_INTERNAL;
            size_t roff = at + sl, rlen = off + len - roff;
            if (t->attrs[id] & TOK_ATTR_RSTRIP)
                while (rlen > 0 && is_space_byte(text[roff])) roff++, rlen--;
            off = roff;
            len = rlen;
            if (len == 0) break;
        }
    }
    frag_list tmp = *cur;
    *cur = *next;
    *next = tmp;
    return MR_OK;
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int flags, int32_t **ids_out, size_t *n_ids,
                     mr_error *e) {
    *ids_out = NULL;
    *n_ids = 0;
    if (!text && len) return mr_fail(e, MR_ERR_USAGE, "tokenizer_encode: no text");
    int add_special = (flags & TOK_ADD_SPECIAL) != 0, parse_special = (flags & TOK_PARSE_SPECIAL) != 0;
    frag_list cur = {0}, next = {0};
    tok_ids out = {0};
    char *buf = NULL;
    int rc = MR_ERR_INTERNAL;
    if (len > 0 && frag_push(&cur, (fragment){-1, 0, len}, e)) goto done;
    uint8_t present[256] = {0}; /* bytes in the text: most special tokens can be skipped at once */
    if (t->n_special > 0)
        for (size_t i = 0; i < len; i++) present[(uint8_t)text[i]] = 1;
    for (int32_t k = 0; k < t->n_special && len > 0; k++) {
        int32_t id = t->special[k];
        int ty = t->types[id];
        if (!parse_special && (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN)) continue;
        if (!present[(uint8_t)tok_str(&t->str, id)[0]] || t->str.len[id] > len) continue;
        if (partition_one(t, text, id, &cur, &next, e)) goto done;
    }
    if (add_special && t->add_bos && tok_ids_push(&out, t->bos, e)) goto done;
    if (t->kind == TOK_KIND_SPM) {
        size_t max_len = 0;
        for (size_t i = 0; i < cur.n; i++)
            if (cur.v[i].id < 0 && cur.v[i].len > max_len) max_len = cur.v[i].len;
        buf = mr_alloc(3 * (max_len + 1) + 1, e);
        if (!buf) goto done;
        int prev_special = 1; /* a space prefix goes at the start and after a special token */
        for (size_t i = 0; i < cur.n; i++) {
            fragment f = cur.v[i];
            if (f.id >= 0) {
                if (tok_ids_push(&out, f.id, e)) goto done;
                prev_special = 1;
                continue;
            }
            size_t m = 0;
            if (t->add_space_prefix && prev_special) {
                memcpy(buf, "\xe2\x96\x81", 3);
                m = 3;
            }
            for (size_t k = 0; k < f.len; k++) {
                char c = text[f.off + k];
                if (c == ' ') {
                    memcpy(buf + m, "\xe2\x96\x81", 3);
                    m += 3;
                } else {
                    buf[m++] = c;
                }
            }
            if ((rc = tok_spm_encode(t, buf, m, &out, e))) goto done;
            prev_special = 0;
        }
    } else {
        for (size_t i = 0; i < cur.n; i++) {
            fragment f = cur.v[i];
            if (f.id >= 0) {
                if (tok_ids_push(&out, f.id, e)) goto done;
            } else if ((rc = tok_bpe_encode(t, text + f.off, f.len, &out, e))) {
                goto done;
            }
        }
    }
    if (add_special && t->add_eos && tok_ids_push(&out, t->eos, e)) goto done;
    *ids_out = out.v;
    *n_ids = out.n;
    out.v = NULL;
    rc = MR_OK;
done:
    if (rc && (!e || !e->code)) rc = mr_fail(e, MR_ERR_INTERNAL, "tokenizer: out of memory");
    free(cur.v);
    free(next.v);
    free(out.v);
    free(buf);
    return rc;
}

/* -------------------------------------------------------------- decode --- */

const char *tokenizer_token_piece(const tokenizer *t, int32_t id, int special, size_t *len) {
    if (id < 0 || id >= t->n_tokens) {
        if (len) *len = 0;
        return NULL;
    }
    int ty = t->types[id];
    if (!special && (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN)) {
        if (len) *len = 0;
        return "";
    }
    if (len) *len = t->piece_len[id];
    return t->pieces + t->piece_off[id];
}

int tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, int flags, char **out, size_t *out_len,
                     mr_error *e) {
    *out = NULL;
    if (out_len) *out_len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_tokens)
            return mr_fail(e, MR_ERR_INPUT, "decode: token id %d at position %zu is out of range (vocabulary of %d)",
                           (int)ids[i], i, (int)t->n_tokens);
        total += t->piece_len[ids[i]];
    }
    char *s = mr_alloc(total + 1, e);
    if (!s) return MR_ERR_INTERNAL;
    size_t m = 0;
    int strip = t->kind == TOK_KIND_SPM && t->add_space_prefix && !(flags & TOK_DECODE_KEEP_LEADING_SPACE);
    for (size_t i = 0; i < n; i++) {
        size_t pl;
        const char *p = tokenizer_token_piece(t, ids[i], flags & TOK_DECODE_SPECIAL, &pl);
        if (pl == 0) continue;
        if (strip && p[0] == ' ') p++, pl--;
        strip = 0;
        memcpy(s + m, p, pl);
        m += pl;
    }
    s[m] = 0;
    *out = s;
    if (out_len) *out_len = m;
    return MR_OK;
}

/* Length of s without an incomplete UTF-8 sequence at its end. */
static size_t drop_incomplete_utf8(const char *s, size_t n) {
    size_t back = 0;
    while (back < 4 && back < n && ((uint8_t)s[n - 1 - back] & 0xC0) == 0x80) back++;
    if (back == n) return n;
    uint8_t lead = (uint8_t)s[n - 1 - back];
    size_t want = lead < 0x80 ? 1 : (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : (lead & 0xF8) == 0xF0 ? 4 : 0;
    if (want == 0) return n;           /* not a lead byte: leave it */
    if (back + 1 < want) return n - 1 - back; /* cut inside the sequence */
    return n;
}

int tokenizer_truncate(const tokenizer *t, const char *text, size_t len, size_t max_tokens, char **out,
                       size_t *out_len, size_t *n_kept, mr_error *e) {
    int32_t *ids;
    size_t n;
    *out = NULL;
    int rc = tokenizer_encode(t, text, len, 0, &ids, &n, e);
    if (rc) return rc;
    if (n > max_tokens) n = max_tokens;
    size_t m;
    rc = tokenizer_decode(t, ids, n, 0, out, &m, e);
    free(ids);
    if (rc) return rc;
    m = drop_incomplete_utf8(*out, m);
    (*out)[m] = 0;
    if (out_len) *out_len = m;
    if (n_kept) *n_kept = n;
    return MR_OK;
}

/* -------------------------------------------------------------- tokens --- */

int32_t tokenizer_n_vocab(const tokenizer *t) { return t->n_tokens; }
tokenizer_kind tokenizer_get_kind(const tokenizer *t) { return t->kind; }
int32_t tokenizer_bos(const tokenizer *t) { return t->bos; }
int32_t tokenizer_eos(const tokenizer *t) { return t->eos; }
int32_t tokenizer_unk(const tokenizer *t) { return t->unk; }
int32_t tokenizer_pad(const tokenizer *t) { return t->pad; }
int tokenizer_adds_bos(const tokenizer *t) { return t->add_bos; }
int tokenizer_adds_eos(const tokenizer *t) { return t->add_eos; }

const char *tokenizer_token_text(const tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_tokens) return NULL;
    if (len) *len = t->str.len[id];
    return tok_str(&t->str, id);
}

tokenizer_token_type tokenizer_token_type_of(const tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_tokens) return 0;
    return (tokenizer_token_type)t->types[id];
}

int32_t tokenizer_piece_to_id(const tokenizer *t, const char *text, size_t len) {
    int32_t id = tok_strings_find(&t->str, text, len);
    return id < t->n_tokens ? id : -1;
}

int tokenizer_is_eog(const tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_tokens && t->is_eog[id];
}

int tokenizer_load(tokenizer **out, const char *path, mr_error *e) {
    *out = NULL;
    if (mr_is_dir(path)) return tokenizer_load_hf(out, path, e);
    gguf_file g;
    int rc = gguf_open(&g, path, e);
    if (rc) return rc;
    rc = tokenizer_load_gguf(out, &g, e);
    if (rc) mr_error_prefix(e, "%s: ", path);
    gguf_close(&g);
    return rc;
}
