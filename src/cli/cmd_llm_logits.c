/* mllm4rec llm logits: the top-K (or every) logit at the last position (or every position). */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_llm_common.h"

typedef struct id_logit {
    float v;
    int32_t id;
} id_logit;

static int by_value_desc(const void *a, const void *b) {
    const id_logit *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

CLI_COMMAND(cmd_llm_logits) {
    const char *model = NULL, *lora = NULL, *prompt = NULL, *ids = NULL;
    int64_t top = 10, threads = 0;
    int full = 0, all = 0;
    cli_flag flags[] = {
        {"--model", FLAG_STR, &model, "GGUF file or Hugging Face folder", 0},
        {"--prompt", FLAG_STR, &prompt, "prompt text (BOS added as the model says)", 0},
        {"--ids", FLAG_STR, &ids, "token ids, e.g. \"1 2 3\" (taken as given)", 0},
        {"--top", FLAG_INT, &top, "print the K largest logits, descending (default 10)", 0},
        {"--full", FLAG_BOOL, &full, "print every logit in id order", 0},
        {"--all", FLAG_BOOL, &all, "every position, not only the last", 0},
        {"--threads", FLAG_INT, &threads, "threads (default: all)", 0},
        {"--lora", FLAG_STR, &lora, "llama.cpp LoRA adapter (GGUF) to apply", 0},
    };
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]),
                       "usage: mllm4rec llm logits --model M (--prompt S | --ids \"1 2 3\") [--top K | --full] [--all]\n"
                       "One line per position: `pos id:logit id:logit ...`.");
    if (rc) return rc < 0 ? 0 : rc;
    if (top < 1) return cli_usage_error("llm logits", "--top must be at least 1");
    llm_model m;
    if ((rc = llm_cli_load("llm logits", model, lora, threads, &m))) return rc;
    int32_t *input = NULL;
    int64_t T = 0;
    if ((rc = llm_cli_input_ids("llm logits", &m, prompt, ids, &input, &T))) {
        llm_free(&m);
        return rc;
    }
    llm_cli_warn_context(&m, T);
    const int nv = m.cfg.n_vocab;
    int n_out = all ? (int)T : 1;
    int64_t *pos = malloc((size_t)n_out * sizeof *pos);
    float *logits = malloc((size_t)n_out * nv * sizeof *logits);
    id_logit *order = malloc((size_t)nv * sizeof *order);
    mr_error e = {0};
    llm_state s;
    if (!pos || !logits || !order) {
        rc = mr_fail(&e, MR_ERR_INTERNAL, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_out; i++) pos[i] = all ? i : T - 1;
    if ((rc = llm_state_init(&s, &m, T, T, LLM_STATE_SCORE, &e))) goto done;
    const double t0 = mr_now();
    rc = llm_forward(&s, input, T, pos, n_out, logits, &e);
    const double secs = mr_now() - t0;
    llm_state_free(&s);
    if (rc) goto done;
    fprintf(stderr, "prefill: %lld tokens in %.3f s (%.1f tokens/s)\n", (long long)T, secs, secs > 0 ? T / secs : 0.0);
    for (int i = 0; i < n_out; i++) {
        const float *lg = logits + (int64_t)i * nv;
        printf("%lld", (long long)pos[i]);
        if (full) {
            for (int j = 0; j < nv; j++) printf(" %d:%.6f", j, lg[j]);
        } else {
            for (int j = 0; j < nv; j++) order[j] = (id_logit){lg[j], j};
            qsort(order, (size_t)nv, sizeof *order, by_value_desc);
            for (int j = 0; j < top && j < nv; j++) printf(" %d:%.6f", order[j].id, order[j].v);
        }
        printf("\n");
    }
done:
    free(pos);
    free(logits);
    free(order);
    free(input);
    llm_free(&m);
    return rc ? cli_report("llm logits", &e) : 0;
}
