/* libFuzzer target: any bytes as a Hugging Face tokenizer.json give a tokenizer
 * or an error. The input is the tokenizer.json; when it holds 0x1E bytes (never
 * valid JSON outside strings, and raw control bytes are not allowed inside them)
 * the parts after them are tokenizer_config.json, special_tokens_map.json,
 * vocab.json and merges.txt, and an empty first part writes no tokenizer.json
 * (so the vocab.json + merges.txt pair is read). A tokenizer that loads must
 * then pass fuzz_exercise_tokenizer (fuzz_tok.h). */
#include <stdint.h>
#include "fuzz_util.h"
#include "fuzz_tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/hf", fuzz_scratch_dir());
    fuzz_rm_tree(dir);
    static const char *const NAMES[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                        "vocab.json", "merges.txt"};
    fuzz_part parts[5];
    int n_parts = fuzz_split(data, size, parts, 5);
    if (mkdir(dir, 0755) != 0) abort();
    for (int k = 0; k < n_parts; k++)
        if ((k > 0 || parts[k].n > 0 || n_parts == 1) && fuzz_write(dir, NAMES[k], parts[k].p, parts[k].n) != 0) abort();
    mr_error e = {0};
    tokenizer *t = NULL;
    int rc = tokenizer_load_hf(&t, dir, &e);
    if (getenv("FUZZ_VERBOSE")) fprintf(stderr, "tokenizer.json: rc %d %s\n", rc, rc ? e.msg : "");
    if (rc == MR_OK) {
        fuzz_exercise_tokenizer(t);
        tokenizer_free(t);
    } else if (rc != MR_ERR_INPUT) {
        fprintf(stderr, "unexpected error code %d: %s\n", rc, e.msg);
        abort();
    }
    return 0;
}
