/* libFuzzer target: a tokenizer from the tokenizer.ggml.* metadata of any bytes
 * read as a GGUF file (gguf_open, then tokenizer_load_gguf) gives a tokenizer or
 * an error; a tokenizer that loads must pass fuzz_exercise_tokenizer (fuzz_tok.h).
 * The seeds are small vocabularies written by tokenizer_write_gguf. */
#include <stdint.h>
#include "fuzz_util.h"
#include "fuzz_tok.h"
#include "mllm4rec/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_file(data, size, path, sizeof path);
    if (fd < 0) return 0;
    mr_log_quiet = 1; /* out-of-range special ids are logged */
    mr_error e = {0};
    gguf_file g;
    if (gguf_open(&g, path, &e) == MR_OK) {
        tokenizer *t = NULL;
        int rc = tokenizer_load_gguf(&t, &g, &e);
        gguf_close(&g); /* the tokenizer copied what it needs */
        if (getenv("FUZZ_VERBOSE")) fprintf(stderr, "tokenizer gguf: rc %d %s\n", rc, rc ? e.msg : "");
        if (rc == MR_OK) {
            fuzz_exercise_tokenizer(t);
            tokenizer_free(t);
        } else if (rc != MR_ERR_INPUT) {
            fprintf(stderr, "unexpected error code %d: %s\n", rc, e.msg);
            abort();
        }
    }
    close(fd);
    return 0;
}
