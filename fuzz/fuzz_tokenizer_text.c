/* libFuzzer target: arbitrary text and token ids through two real vocabularies
 * (llama.cpp's ggml-vocab-llama-spm.gguf: SentencePiece with byte fallback, and
 * ggml-vocab-gpt-2.gguf: byte-level BPE), read once from
 * ../shared/reference/tokenizer (or $MLLM4REC_SHARED/reference/tokenizer).
 *
 * Input: byte 0 picks the vocabulary (bit 0), the operation (bits 1-2: encode and
 * decode; decode of an id list; truncate; token lookups) and the flags (bit 3
 * TOK_PARSE_SPECIAL, bit 4 TOK_ADD_SPECIAL, bit 5 TOK_DECODE_SPECIAL, bit 6
 * TOK_DECODE_KEEP_LEADING_SPACE); byte 1 is the truncation length; the rest is
 * the text, or for decode little-endian 16-bit values mapped to ids -2 .. n_vocab+1.
 *
 * Required: encode of any bytes succeeds with ids in range; decode succeeds
 * exactly when every id is in range; truncation keeps at most the asked number of
 * tokens, ends on a whole UTF-8 character, and for valid UTF-8 without specials
 * is a prefix of decode(encode(text)). */
#include <stdint.h>
#include "fuzz_util.h"
#include "mllm4rec/tokenizer.h"

static tokenizer *vocabs[2];

static tokenizer *load_vocab(const char *name) {
    const char *root = getenv("MLLM4REC_SHARED");
    char path[1024];
    snprintf(path, sizeof path, "%s/reference/tokenizer/%s", root && *root ? root : "../shared", name);
    mr_error e = {0};
    tokenizer *t = NULL;
    if (tokenizer_load(&t, path, &e) != MR_OK) {
        fprintf(stderr, "fuzz_tokenizer_text: skipping %s: %s\n", name, e.msg);
        return NULL;
    }
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    vocabs[0] = load_vocab("ggml-vocab-llama-spm.gguf");
    vocabs[1] = load_vocab("ggml-vocab-gpt-2.gguf");
    return 0;
}

/* Strict UTF-8 (no overlongs, surrogates or values above U+10FFFF). */
static int valid_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        else if ((c & 0xE0) == 0xC0) k = 1, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0) k = 2, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0) k = 3, cp = c & 0x07;
        else return 0;
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

static void check_decode(const tokenizer *t, const int32_t *ids, size_t n, int flags) {
    mr_error e = {0};
    char *s = NULL;
    size_t m = 0;
    int in_range = 1;
    for (size_t i = 0; i < n; i++) in_range &= ids[i] >= 0 && ids[i] < tokenizer_n_vocab(t);
    int rc = tokenizer_decode(t, ids, n, flags, &s, &m, &e);
    if ((rc == MR_OK) != in_range) {
        fprintf(stderr, "decode gave %d (%s) for ids %s range\n", rc, e.msg, in_range ? "in" : "out of");
        abort();
    }
    if (rc == MR_OK && (strlen(s) > m || s[m] != 0)) abort(); /* NUL-terminated at out_len (pieces may hold NUL) */
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    uint8_t sel = data[0], max_tokens = data[1];
    const tokenizer *t = vocabs[sel & 1];
    if (!t) return 0;
    const char *text = (const char *)data + 2;
    size_t len = size - 2;
    int op = (sel >> 1) & 3;
    int enc_flags = (sel & 8 ? TOK_PARSE_SPECIAL : 0) | (sel & 16 ? TOK_ADD_SPECIAL : 0);
    int dec_flags = (sel & 32 ? TOK_DECODE_SPECIAL : 0) | (sel & 64 ? TOK_DECODE_KEEP_LEADING_SPACE : 0);
    mr_error e = {0};
    int32_t n_vocab = tokenizer_n_vocab(t);

    if (op == 0) { /* encode, then decode what came out */
        int32_t *ids = NULL;
        size_t n = 0;
        if (tokenizer_encode(t, text, len, enc_flags, &ids, &n, &e) != MR_OK) {
            fprintf(stderr, "encode failed: %s\n", e.msg);
            abort();
        }
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= n_vocab) abort();
        check_decode(t, ids, n, dec_flags);
        /* decode(encode(text)) == text for valid UTF-8 with specials as plain text
         * (SentencePiece: not when the text holds its space sign U+2581 itself) */
        if (!(enc_flags & TOK_PARSE_SPECIAL) && !(dec_flags & TOK_DECODE_KEEP_LEADING_SPACE) &&
            valid_utf8((const uint8_t *)text, len) &&
            !(tokenizer_get_kind(t) == TOK_KIND_SPM && memmem(text, len, "\xe2\x96\x81", 3))) {
            char *s = NULL;
            size_t m = 0;
            if (tokenizer_decode(t, ids, n, 0, &s, &m, &e) != MR_OK) abort();
            if (m != len || memcmp(s, text, len) != 0) {
                fprintf(stderr, "round trip through the %s vocabulary changed %zu bytes into %zu: '%.*s' -> '%s'\n",
                        sel & 1 ? "gpt-2" : "llama-spm", len, m, (int)len, text, s);
                abort();
            }
            free(s);
        }
        free(ids);
    } else if (op == 1) { /* decode arbitrary ids */
        size_t n = len / 2;
        int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
        if (!ids) return 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t v = (uint32_t)(uint8_t)text[2 * i] | (uint32_t)(uint8_t)text[2 * i + 1] << 8;
            /* 16 bits cover the SPM vocabulary (32000); spread them over the whole GPT-2 one */
            int64_t id = (int64_t)v * (n_vocab + 4) / 65536 - 2;
            ids[i] = (int32_t)id;
        }
        check_decode(t, ids, n, dec_flags);
        free(ids);
    } else if (op == 2) { /* truncate */
        char *s = NULL;
        size_t m = 0, kept = 0;
        if (tokenizer_truncate(t, text, len, max_tokens, &s, &m, &kept, &e) != MR_OK) {
            fprintf(stderr, "truncate failed: %s\n", e.msg);
            abort();
        }
        if (kept > max_tokens || s[m] != 0) abort();
        if (valid_utf8((const uint8_t *)text, len) && memchr(text, 0, len) == NULL) {
            if (!valid_utf8((const uint8_t *)s, m)) {
                fprintf(stderr, "truncate of valid UTF-8 gave invalid UTF-8\n");
                abort();
            }
            char *full = NULL;
            size_t fm = 0;
            if (tokenizer_truncate(t, text, len, (size_t)-1, &full, &fm, NULL, &e) != MR_OK) abort();
            if (m > fm || memcmp(full, s, m) != 0) {
                fprintf(stderr, "truncate to %u tokens is not a prefix of the whole decoded text\n", max_tokens);
                abort();
            }
            free(full);
        }
        free(s);
    } else { /* lookups: the text as a piece, and the pieces of ids taken from the text */
        int32_t id = tokenizer_piece_to_id(t, text, len);
        if (id < -1 || id >= n_vocab) abort();
        if (id >= 0) {
            size_t tl;
            const char *tt = tokenizer_token_text(t, id, &tl);
            if (!tt || tl != len || memcmp(tt, text, len) != 0) abort();
        }
        for (size_t i = 0; i + 1 < len; i += 2) {
            int32_t k = (int32_t)((uint32_t)(uint8_t)text[i] | (uint32_t)(uint8_t)text[i + 1] << 8) - 2;
            size_t pl;
            const char *p = tokenizer_token_piece(t, k, sel & 32, &pl);
            if ((p == NULL) != (k < 0 || k >= n_vocab)) abort();
            (void)tokenizer_token_type_of(t, k);
            (void)tokenizer_is_eog(t, k);
        }
    }
    return 0;
}
