/* What the tokenizer-loading fuzz targets do with a tokenizer that loaded: encode
 * a fixed text (plain, with special tokens, invalid UTF-8) to in-range ids that
 * decode, or refuse it with an input error (a byte without a token in a vocabulary
 * without an unknown token); the same for truncation; and look up the first
 * tokens both ways. Aborts on anything else. */
#ifndef MLLM4REC_FUZZ_TOK_H
#define MLLM4REC_FUZZ_TOK_H

#include <stdio.h>
#include <stdlib.h>
#include "mllm4rec/tokenizer.h"

static const char FUZZ_TOK_TEXT[] = "Hello world! <s> </s> <|endoftext|> \xe2\x96\x81 caf\xc3\xa9 \xf0\x9f\x98\x80 12345  \n\t"
                                    "\xff\xc3 [UNK] <unk> 'll 've";

static inline void fuzz_exercise_tokenizer(const tokenizer *t) {
    mr_error e = {0};
    int32_t n_vocab = tokenizer_n_vocab(t);
    if (n_vocab <= 0) abort();
    for (int flags = 0; flags < 4; flags++) {
        int32_t *ids;
        size_t n;
        int rc = tokenizer_encode(t, FUZZ_TOK_TEXT, sizeof FUZZ_TOK_TEXT - 1, flags, &ids, &n, &e);
        if (rc == MR_ERR_INPUT) continue;
        if (rc != MR_OK) {
            fprintf(stderr, "encode failed: %s\n", e.msg);
            abort();
        }
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= n_vocab) {
                fprintf(stderr, "encode gave id %d outside the vocabulary of %d\n", (int)ids[i], (int)n_vocab);
                abort();
            }
        char *s;
        size_t m;
        if (tokenizer_decode(t, ids, n, flags & 1 ? TOK_DECODE_SPECIAL : 0, &s, &m, &e) != MR_OK) {
            fprintf(stderr, "decode failed: %s\n", e.msg);
            abort();
        }
        free(s);
        free(ids);
    }
    char *s;
    size_t m, kept;
    int rc = tokenizer_truncate(t, FUZZ_TOK_TEXT, sizeof FUZZ_TOK_TEXT - 1, 5, &s, &m, &kept, &e);
    if ((rc != MR_OK && rc != MR_ERR_INPUT) || (rc == MR_OK && (kept > 5 || s[m] != 0))) {
        fprintf(stderr, "truncate failed: %s\n", e.msg);
        abort();
    }
    if (rc == MR_OK) free(s);
    for (int32_t id = -1; id <= n_vocab && id < 64; id++) {
        size_t len;
        const char *piece = tokenizer_token_piece(t, id, 1, &len);
        const char *text = tokenizer_token_text(t, id, &len);
        int out = id < 0 || id == n_vocab;
        if (out != (piece == NULL) || out != (text == NULL)) abort();
        if (text && tokenizer_piece_to_id(t, text, len) < 0) abort();
        (void)tokenizer_is_eog(t, id);
    }
}

#endif
