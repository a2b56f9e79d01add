/* Private parts of the tokenizer module, shared by src/llm/tokenizer.c and tok_*.c. */
#ifndef MLLM4REC_TOKENIZER_IMPL_H
#define MLLM4REC_TOKENIZER_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "mllm4rec/tokenizer.h"

/* Attribute bits beyond the token type (HF added_tokens lstrip / rstrip). */
enum { TOK_ATTR_LSTRIP = 1, TOK_ATTR_RSTRIP = 2 };

/* Interned byte strings: the vocabulary (ids 0..n_tokens-1) followed by strings
 * that only occur in merges (ids n_tokens..n_strings-1). Lookup by open
 * addressing on a 64-bit hash; a text that occurs twice maps to its last id,
 * as llama.cpp's token_to_id does. */
typedef struct tok_strings {
    char *blob;
    size_t blob_len, blob_cap;
    uint64_t *off;  /* start of string i in blob */
    uint32_t *len;
    int32_t n, cap;
    int32_t *slots; /* id + 1, 0 = empty */
    uint64_t n_slots;
} tok_strings;

/* (left id, right id) -> merge rank. */
typedef struct tok_pairs {
    uint64_t *keys; /* (left << 32 | right) + 1, 0 = empty */
    int32_t *ranks;
    uint64_t n_slots, n;
} tok_pairs;

struct tokenizer {
    tokenizer_kind kind;
    int32_t n_tokens;
    tok_strings str;     /* token texts, then merge-only strings */
    float *scores;
    uint8_t *types;      /* tokenizer_token_type */
    uint8_t *attrs;      /* TOK_ATTR_* */
    char *pieces;        /* decoded bytes of every token (special = text) */
    uint64_t *piece_off;
    uint32_t *piece_len;
    tok_pairs ranks;
    int64_t n_merges;    /* merges kept for writing, by rank */
    int32_t *merge_left, *merge_right;
    int32_t bos, eos, unk, pad, eot, eom;
    int add_bos, add_eos, add_space_prefix, ignore_merges, byte_level_prefix_space, spm_merge_ranks;
    char *pre;           /* pre-tokenizer name, or NULL for an explicit regex list */
    int n_regex;
    char **regex_src;    /* as given (written back to tokenizer.json) */
    pcre2_code **regex;
    int32_t byte_token[256]; /* SPM: <0xNN> ids (-1 none) */
    int32_t *special;    /* control / user-defined / unknown ids, longest text first */
    int32_t n_special;
    uint8_t *is_eog;
};

/* ---- strings ---- */
uint64_t tok_hash_bytes(const char *s, size_t n);
int tok_strings_add(tok_strings *s, const char *text, size_t len, mr_error *e); /* returns id or -1 */
int tok_strings_index(tok_strings *s, mr_error *e); /* builds the lookup table */
int32_t tok_strings_find(const tok_strings *s, const char *text, size_t len);
void tok_strings_free(tok_strings *s);
static inline const char *tok_str(const tok_strings *s, int32_t id) { return s->blob + s->off[id]; }

int tok_pairs_init(tok_pairs *p, uint64_t expected, mr_error *e);
void tok_pairs_put(tok_pairs *p, int32_t a, int32_t b, int32_t rank); /* keeps the first rank */
int32_t tok_pairs_get(const tok_pairs *p, int32_t a, int32_t b);       /* -1 when absent */
void tok_pairs_free(tok_pairs *p);

/* ---- growing id list ---- */
typedef struct tok_ids {
    int32_t *v;
    size_t n, cap;
} tok_ids;
int tok_ids_push(tok_ids *ids, int32_t id, mr_error *e);

/* ---- merge engine (tok_merge.c) ---- */
/* One symbol of the text being merged: bytes [start, start+n) of the text,
 * linked to its neighbours; id is the interned string of its text or -1. */
typedef struct tok_sym {
    uint32_t start, n;
    int32_t prev, next, id;
} tok_sym;
typedef struct tok_bigram {
    double prio; /* higher first: the score of the merged token, or -rank */
    int32_t left, right;
    uint32_t size;
} tok_bigram;
/* Scratch buffers, reused across the words of one encode call. */
typedef struct tok_work {
    tok_sym *sym;
    tok_bigram *heap;
    size_t cap_sym, cap_heap, n_sym, n_heap;
} tok_work;
enum { TOK_MERGE_BY_SCORE = 0, TOK_MERGE_BY_RANK = 1 };
/* Splits text into UTF-8 characters and merges neighbours, best pair first
 * (llama.cpp's llm_tokenizer_spm_session / llm_tokenizer_bpe_session loop).
 * Afterwards the live symbols are the chain from w->sym[0]. */
int tok_merge(const tokenizer *t, const char *text, size_t len, int mode, tok_work *w, mr_error *e);
void tok_work_free(tok_work *w);

/* ---- merge engines ---- */
/* SentencePiece BPE of one fragment (spaces already escaped to U+2581). */
int tok_spm_encode(const tokenizer *t, const char *text, size_t len, tok_ids *out, mr_error *e);
/* Byte-level BPE of one fragment: pre-tokenizer split, byte map, merges. */
int tok_bpe_encode(const tokenizer *t, const char *text, size_t len, tok_ids *out, mr_error *e);

/* ---- pre-tokenizer ---- */
/* The regex list of a llama.cpp pre-tokenizer name; NULL for an unknown name.
 * *ignore_merges / *add_bos receive llama.cpp's defaults for that name. */
const char *const *tok_pretok_regexes(const char *name, int *n, int *ignore_merges, int *add_bos);
/* The first pre-tokenizer name with exactly this regex list, or NULL. */
const char *tok_pretok_name_of(const char *const *rx, int n);
int tok_pretok_compile(tokenizer *t, const char *const *src, int n, mr_error *e);
/* Splits valid UTF-8 text into pieces with every regex in turn (matches and the
 * gaps between them are pieces, as llama.cpp's unicode_regex_split). offs/lens
 * grow as needed. */
typedef struct tok_spans {
    size_t *off, *len;
    size_t n, cap;
} tok_spans;
int tok_pretok_split(const tokenizer *t, const char *text, size_t len, tok_spans *out, tok_spans *tmp,
                     pcre2_match_data *md, mr_error *e);
void tok_spans_free(tok_spans *s);

/* ---- byte-level alphabet (GPT-2's bytes_to_unicode) ---- */
/* UTF-8 of the code point that stands for byte b; returns its length (1 or 2). */
int tok_byte_to_utf8(uint8_t b, char out[4]);
/* The byte a code point stands for, or -1. */
int tok_cpt_to_byte(uint32_t cpt);
/* Decodes one UTF-8 sequence leniently (llama.cpp's unicode_len_utf8 rule: the
 * high nibble of the first byte gives the length). */
static inline size_t tok_utf8_len(uint8_t c) {
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}
/* Parses SentencePiece's byte-token text "<0xNN>" (exactly six bytes); -1 if it is not one. */
static inline int tok_parse_byte_token(const char *s, size_t n) {
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}
/* Strict decode of one code point at s (n bytes left): length, or 0 if invalid. */
size_t tok_utf8_decode(const uint8_t *s, size_t n, uint32_t *cpt);

/* Finishes a tokenizer after the vocabulary, types and settings are in place:
 * pieces, special list, byte tokens, eog set. */
int tok_finish(tokenizer *t, mr_error *e);

#endif
