/* mllm4rec llm perplexity: llama.cpp's perplexity of a text file. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_llm_common.h"

static void on_chunk(int chunk, double ppl, void *user) {
    (void)user;
    mr_log("[%d] %.4f", chunk + 1, ppl);
}

CLI_COMMAND(cmd_llm_perplexity) {
    const char *model = NULL, *lora = NULL, *file = NULL;
    int64_t ctx = 512, threads = 0;
    cli_flag flags[] = {
        {"--model", FLAG_STR, &model, "GGUF file or Hugging Face folder", 0},
        {"--file", FLAG_STR, &file, "text file (one trailing newline is dropped, as llama.cpp's -f does)", 0},
        {"--ctx", FLAG_INT, &ctx, "chunk length in tokens (default 512)", 0},
        {"--threads", FLAG_INT, &threads, "threads (default: all)", 0},
        {"--lora", FLAG_STR, &lora, "llama.cpp LoRA adapter (GGUF) to apply", 0},
    };
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]),
                       "usage: mllm4rec llm perplexity --model M --file F [--ctx N] [--threads T]\n"
                       "Chunks of N tokens, each scored on positions N/2 .. N-2 (llama.cpp's llama-perplexity).");
    if (rc) return rc < 0 ? 0 : rc;
    if (!file) return cli_usage_error("llm perplexity", "--file is required");
    if (ctx < 4 || ctx > 1 << 20) return cli_usage_error("llm perplexity", "--ctx must be 4..1048576");
    llm_model m;
    if ((rc = llm_cli_load("llm perplexity", model, lora, threads, &m))) return rc;
    mr_error e = {0};
    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    int64_t n = 0;
    if ((rc = mr_read_file(file, &text, &len, &e))) goto fail;
    if (len > 0 && text[len - 1] == '\n') len--;
    if ((rc = llm_tokenize(&m, text, len, 1, &ids, &n, &e))) goto fail;
    llm_cli_warn_context(&m, ctx);
    mr_log("%lld tokens, %lld chunks of %lld", (long long)n, (long long)(n / ctx), (long long)ctx);
    llm_ppl_result r;
    if ((rc = llm_perplexity(&m, ids, n, (int)ctx, on_chunk, NULL, &r, &e))) goto fail;
    printf("perplexity: %.6f\n", r.ppl);
    free(text);
    free(ids);
    llm_free(&m);
    return 0;
fail:
    free(text);
    free(ids);
    llm_free(&m);
    return cli_report("llm perplexity", &e);
}
