/* mllm4rec llm generate: the continuation of a prompt (text, or ids with --print-ids). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_llm_common.h"

typedef struct gen_out {
    const llm_model *m;
    int print_ids, n;
    char *buf;
    size_t cap;
    mr_error e;
    int failed;
} gen_out;

static int on_token(int32_t id, void *user) {
    gen_out *g = user;
    if (g->print_ids) {
        printf(g->n ? " %d" : "%d", (int)id);
    } else {
        size_t len = 0;
        if (llm_token_piece(g->m, id, &g->buf, &len, &g->cap, &g->e)) {
            g->failed = 1;
            return 1;
        }
        fwrite(g->buf, 1, len, stdout);
    }
    g->n++;
    fflush(stdout);
    return 0;
}

CLI_COMMAND(cmd_llm_generate) {
    const char *model = NULL, *lora = NULL, *prompt = NULL, *ids = NULL, *cache_type = "f16";
    int64_t n_predict = 64, threads = 0, seed = 0, top_k = 40, ctx = 0;
    double temp = 0, top_p = 0.95;
    int print_ids = 0;
    cli_flag flags[] = {
        {"--model", FLAG_STR, &model, "GGUF file or Hugging Face folder", 0},
        {"--prompt", FLAG_STR, &prompt, "prompt text (BOS added as the model says)", 0},
        {"--ids", FLAG_STR, &ids, "prompt token ids, e.g. \"1 2 3\" (taken as given)", 0},
        {"-n", FLAG_INT, &n_predict, "tokens to generate (default 64; stops early at end of generation)", 0},
        {"--temp", FLAG_DOUBLE, &temp, "temperature (default 0: greedy, lowest id wins ties)", 0},
        {"--top-k", FLAG_INT, &top_k, "sampling: keep the k most likely tokens (default 40, 0 = all)", 0},
        {"--top-p", FLAG_DOUBLE, &top_p, "sampling: nucleus mass (default 0.95, 1 = all)", 0},
        {"--seed", FLAG_INT, &seed, "sampling seed (default 0)", 0},
        {"--ctx", FLAG_INT, &ctx, "KV cache positions (default prompt + n)", 0},
        {"--cache-type", FLAG_STR, &cache_type, "KV cache precision: f16 (default, as llama.cpp's) or f32", 0},
        {"--threads", FLAG_INT, &threads, "threads (default: all)", 0},
        {"--print-ids", FLAG_BOOL, &print_ids, "print the generated token ids instead of text", 0},
        {"--lora", FLAG_STR, &lora, "llama.cpp LoRA adapter (GGUF) to apply", 0},
    };
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]),
                       "usage: mllm4rec llm generate --model M (--prompt S | --ids \"1 2 3\") [-n 64] [--temp 0] "
                       "[--seed S] [--threads T] [--print-ids] [--lora A.gguf] [--cache-type f16|f32]");
    if (rc) return rc < 0 ? 0 : rc;
    if (n_predict < 0 || n_predict > 1 << 20) return cli_usage_error("llm generate", "-n must be 0..1048576");
    if (temp < 0) return cli_usage_error("llm generate", "--temp must be >= 0");
    if (strcmp(cache_type, "f16") && strcmp(cache_type, "f32"))
        return cli_usage_error("llm generate", "--cache-type must be f16 or f32");
    llm_model m;
    if ((rc = llm_cli_load("llm generate", model, lora, threads, &m))) return rc;
    if (!print_ids && !m.tok) {
        mr_error e;
        mr_fail(&e, MR_ERR_USAGE, "printing text needs a tokenizer (%s); add --print-ids", m.tok_missing_why);
        llm_free(&m);
        return cli_report("llm generate", &e);
    }
    mr_error pe = {0};
    if (llm_prepare_generation(&m, &pe)) {
        llm_free(&m);
        return cli_report("llm generate", &pe);
    }
    int32_t *input = NULL;
    int64_t n_input = 0;
    if ((rc = llm_cli_input_ids("llm generate", &m, prompt, ids, &input, &n_input))) {
        llm_free(&m);
        return rc;
    }
    llm_cli_warn_context(&m, n_input + n_predict);
    llm_sampler smp = {(float)temp, (int)top_k, (float)top_p, (uint64_t)seed};
    gen_out g = {.m = &m, .print_ids = print_ids};
    mr_error e = {0};
    rc = llm_generate(&m, input, n_input, (int)n_predict, &smp, ctx, !strcmp(cache_type, "f16"), on_token, &g, &e);
    if (print_ids || isatty(STDOUT_FILENO)) printf("\n");
    free(input);
    free(g.buf);
    llm_free(&m);
    if (g.failed) return cli_report("llm generate", &g.e);
    if (rc) return cli_report("llm generate", &e);
    return 0;
}
