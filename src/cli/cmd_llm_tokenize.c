/* mllm4rec llm tokenize: prints the token ids of a text, like llama.cpp's
 * llama-tokenize --ids (BOS added and special tokens parsed unless told not to). */
#include "cli.h"
#include "mllm4rec/tokenizer.h"

#include <stdlib.h>
#include <string.h>

CLI_COMMAND(cmd_llm_tokenize) {
    const char *model = NULL, *text = NULL, *file = NULL;
    int no_bos = 0, no_parse_special = 0;
    cli_flag flags[] = {
        {"--model", FLAG_STR, &model, "GGUF file or Hugging Face folder (tokenizer.json, or vocab.json + merges.txt)", 0},
        {"--text", FLAG_STR, &text, "the text to tokenize", 0},
        {"--file", FLAG_STR, &file, "read the text from this file, byte for byte", 0},
        {"--no-bos", FLAG_BOOL, &no_bos, "add no BOS/EOS (add_special = false)", 0},
        {"--no-parse-special", FLAG_BOOL, &no_parse_special, "tokenize special-token text such as </s> as plain text", 0},
    };
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof *flags),
                       "usage: mllm4rec llm tokenize --model FILE_OR_DIR (--text S | --file F) [--no-bos] "
                       "[--no-parse-special]");
    if (rc) return rc < 0 ? 0 : rc;
    if (!model) return cli_usage_error("llm tokenize", "--model is required");
    if (!text == !file) return cli_usage_error("llm tokenize", "give exactly one of --text and --file");
    mr_error e = {0};
    char *data = NULL;
    size_t len = 0;
    if (file) {
        if (mr_read_file(file, &data, &len, &e)) return cli_report("llm tokenize", &e);
    } else {
        len = strlen(text);
    }
    tokenizer *t = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    rc = tokenizer_load(&t, model, &e);
    if (!rc) {
        int fl = (no_bos ? 0 : TOK_ADD_SPECIAL) | (no_parse_special ? 0 : TOK_PARSE_SPECIAL);
        rc = tokenizer_encode(t, file ? data : text, len, fl, &ids, &n, &e);
    }
    if (!rc) {
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
        printf("\n");
        if (fflush(stdout)) rc = mr_fail(&e, MR_ERR_INTERNAL, "writing to stdout failed");
    }
    free(ids);
    free(data);
    tokenizer_free(t);
    return rc ? cli_report("llm tokenize", &e) : 0;
}
