#include "cmd_llm_common.h"

#include <stdlib.h>
#include <string.h>

#include "cli.h"

int llm_cli_load(const char *cmd, const char *model_path, const char *lora_path, int64_t threads, llm_model *m) {
    mr_error e = {0};
    if (!model_path) return cli_usage_error(cmd, "--model is required (a GGUF file or a Hugging Face folder)");
    if (threads < 0 || threads > 1024) return cli_usage_error(cmd, "--threads must be between 1 and 1024");
    mr_set_threads((int)threads);
    if (llm_load(m, model_path, &e)) return cli_report(cmd, &e);
    if (lora_path && llm_lora_apply_file(m, lora_path, 1.0f, &e)) {
        llm_free(m);
        return cli_report(cmd, &e);
    }
    return 0;
}

int llm_cli_input_ids(const char *cmd, const llm_model *m, const char *prompt, const char *ids, int32_t **out,
                      int64_t *n) {
    mr_error e = {0};
    *out = NULL;
    *n = 0;
    if ((prompt != NULL) == (ids != NULL)) return cli_usage_error(cmd, "give exactly one of --prompt and --ids");
    if (prompt) {
        if (llm_tokenize(m, prompt, strlen(prompt), 1, out, n, &e)) return cli_report(cmd, &e);
        return 0;
    }
    size_t cap = 16;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return cli_report(cmd, &(mr_error){MR_ERR_INTERNAL, "out of memory"});
    const char *p = ids;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        long long x = strtoll(p, &end, 10);
        if (end == p || x < 0 || x >= m->cfg.n_vocab) {
            free(v);
            return cli_usage_error(cmd, "--ids: '%.20s' is not a token id of this model (0..%d)", p, m->cfg.n_vocab - 1);
        }
        if ((size_t)*n == cap) {
            cap *= 2;
            int32_t *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                free(v);
                return cli_report(cmd, &(mr_error){MR_ERR_INTERNAL, "out of memory"});
            }
            v = nv;
        }
        v[(*n)++] = (int32_t)x;
        p = end;
    }
    if (*n == 0) {
        free(v);
        return cli_usage_error(cmd, "--ids holds no token ids");
    }
    *out = v;
    return 0;
}

void llm_cli_warn_context(const llm_model *m, int64_t n) {
    if (m->cfg.n_ctx_train > 0 && n > m->cfg.n_ctx_train)
        mr_log("warning: %lld positions exceed the model's declared context length %d; going on (as llama.cpp does)",
               (long long)n, m->cfg.n_ctx_train);
}
