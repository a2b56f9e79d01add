/* libFuzzer target: any bytes as a Hugging Face tokenizer.json give a tokenizer
 * or an error. A tokenizer that loads must then encode a fixed text (plain, with
 * special tokens, invalid UTF-8) to ids it decodes, or refuse it with an input
 * error (a byte without a token in a vocabulary without an unknown token), and
 * the same for truncation. */
#include <stdint.h>
#include "fuzz_util.h"
#include "mllm4rec/tokenizer.h"

static const char TEXT[] = "Hello world! <s> </s> <|endoftext|> \xe2\x96\x81 caf\xc3\xa9 \xf0\x9f\x98\x80 12345  \n\t"
                           "\xff\xc3 [UNK] <unk> 'll 've";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/hf", fuzz_scratch_dir());
    fuzz_rm_tree(dir);
    if (mkdir(dir, 0755) != 0 || fuzz_write(dir, "tokenizer.json", data, size) != 0) abort();
    mr_error e = {0};
    tokenizer *t = NULL;
    int rc = tokenizer_load_hf(&t, dir, &e);
    if (getenv("FUZZ_VERBOSE")) fprintf(stderr, "tokenizer.json: rc %d %s\n", rc, rc ? e.msg : "");
    if (rc == MR_OK) {
        for (int flags = 0; flags < 4; flags++) {
            int32_t *ids;
            size_t n;
            int rc2 = tokenizer_encode(t, TEXT, sizeof TEXT - 1, flags, &ids, &n, &e);
            if (rc2 == MR_ERR_INPUT) continue; /* e.g. a byte without a token and no unknown token */
            if (rc2 != MR_OK) {
                fprintf(stderr, "encode failed: %s\n", e.msg);
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
        int rc3 = tokenizer_truncate(t, TEXT, sizeof TEXT - 1, 5, &s, &m, &kept, &e);
        if ((rc3 != MR_OK && rc3 != MR_ERR_INPUT) || (rc3 == MR_OK && (kept > 5 || s[m] != 0))) {
            fprintf(stderr, "truncate failed: %s\n", e.msg);
            abort();
        }
        if (rc3 == MR_OK) free(s);
        for (int32_t id = -1; id <= tokenizer_n_vocab(t) && id < 64; id++) {
            size_t len;
            const char *piece = tokenizer_token_piece(t, id, 1, &len);
            const char *text = tokenizer_token_text(t, id, &len);
            if ((id < 0 || id == tokenizer_n_vocab(t)) != (piece == NULL) || (piece == NULL) != (text == NULL)) abort();
            if (text && tokenizer_piece_to_id(t, text, len) < 0) abort();
        }
        tokenizer_free(t);
    } else if (e.code != MR_ERR_INPUT) {
        fprintf(stderr, "unexpected error code %d: %s\n", e.code, e.msg);
        abort();
    }
    return 0;
}
