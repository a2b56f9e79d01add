/* mllm4rec recommend: what should this person watch next? The retriever's top k
 * for a user's whole sequence (or a given history), reranked by the LLM when a
 * model is given. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mllm4rec/serve.h"

/* "12 7 33" or "12,7,33" -> ids; MR_ERR_USAGE when a token is not an integer. */
static int parse_ids(const char *s, int32_t **out, int *n, mr_error *e) {
    *out = NULL;
    *n = 0;
    size_t len = strlen(s);
    int32_t *ids = mr_alloc((len / 2 + 1) * sizeof(int32_t), e);
    if (!ids) return e->code;
    const char *p = s;
    int count = 0;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        const char *q = p;
        while (*q && *q != ' ' && *q != ',' && *q != '\t' && *q != '\n') q++;
        char tok[32];
        int64_t v;
        if ((size_t)(q - p) >= sizeof tok) goto bad;
        memcpy(tok, p, (size_t)(q - p));
        tok[q - p] = 0;
        if (mr_parse_i64(tok, &v) || v < INT32_MIN || v > INT32_MAX) goto bad;
        ids[count++] = (int32_t)v;
        p = q;
        continue;
    bad:
        free(ids);
        return mr_fail(e, MR_ERR_USAGE, "--history: '%.*s' is not an item id", (int)(q - p > 40 ? 40 : q - p), p);
    }
    *out = ids;
    *n = count;
    return MR_OK;
}

/* Table cells: tabs, newlines and pipes would break the row. */
static void put_cell(FILE *f, const char *s, int max_chars) {
    int n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (max_chars > 0 && n >= max_chars && (*p & 0xC0) != 0x80) {
            fputs("...", f);
            return;
        }
        if ((*p & 0xC0) != 0x80) n++;
        fputc(*p == '|' ? '/' : (*p == '\t' || *p == '\n' || *p == '\r') ? ' ' : *p, f);
    }
}

CLI_COMMAND(cmd_recommend) {
    const char *cmd = "recommend";
    mr_rec_options o;
    mr_rec_options_default(&o);
    const char *user_s = NULL, *history_s = NULL;
    int64_t k = 10, nc = 20, prompt_history = 20, max_title = 32, max_tokens = 1536, threads = 0;
    int json = 0;
    cli_flag flags[] = {
        {"--dataset", FLAG_STR, &o.dataset, "prepared dataset folder (required)", 0},
        {"--retriever", FLAG_STR, &o.retriever_run, "retriever run folder RUN (or RUN/retriever.safetensors) (required)", 0},
        {"--model", FLAG_STR, &o.model, "LLM (GGUF file or Hugging Face folder): rerank the retriever's top candidates", 0},
        {"--adapter", FLAG_STR, &o.adapter, "R/adapter.gguf (llama.cpp LoRA) or a PEFT folder", 0},
        {"--user", FLAG_STR, &user_s, "dense user id: that user's whole known sequence is the history", 0},
        {"--history", FLAG_STR, &history_s, "item ids in time order, \"ID ID ...\" (or comma-separated)", 0},
        {"-k", FLAG_INT, &k, "recommendations (10, at most 100)", 0},
        {"--num-candidates", FLAG_INT, &nc, "retriever candidates the LLM reranks, lettered A.. (20)", 0},
        {"--json", FLAG_BOOL, &json, "print the JSON object the HTTP API returns", 0},
        {"--template", FLAG_STR, &o.templ, "prompt template as in ranker eval: mllm4rec (default) or llamarec", 0},
        {"--role", FLAG_STR, &o.role, "role sentence for datasets without a built-in one", 0},
        {"--captions", FLAG_STR, &o.captions, "on|off: items with captions or titles only (the template's)", 0},
        {"--prompt-history", FLAG_INT, &prompt_history, "history items in the prompt (ranker's --history; 20)", 0},
        {"--max-title-tokens", FLAG_INT, &max_title, "tokens kept of a title and of a caption (32)", 0},
        {"--max-tokens", FLAG_INT, &max_tokens, "whole prompt in tokens, cut from the left (1536)", 0},
        {"--threads", FLAG_INT, &threads, "threads (default: all cores)", 0},
    };
    const char *usage = "usage: mllm4rec recommend --dataset D --retriever RUN [--model M [--adapter A]] "
                        "(--user U | --history \"ID ID ...\") [-k 10] [--num-candidates 20] [--json]";
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]), usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!o.dataset || !o.retriever_run) return cli_usage_error(cmd, "--dataset and --retriever are required");
    if (!user_s == !history_s) return cli_usage_error(cmd, "give exactly one of --user and --history");
    if (o.adapter && !o.model) return cli_usage_error(cmd, "--adapter needs --model");
    if (k < 1 || k > MR_REC_MAX_K) return cli_usage_error(cmd, "-k must be in 1..%d", MR_REC_MAX_K);
    if (nc < 1 || nc > 26) return cli_usage_error(cmd, "--num-candidates must be in 1..26 (letters A..Z)");
    if (prompt_history < 0 || prompt_history > 100000) return cli_usage_error(cmd, "--prompt-history must be in 0..100000");
    if (max_title < 1 || max_title > 100000) return cli_usage_error(cmd, "--max-title-tokens must be in 1..100000");
    if (max_tokens < 8 || max_tokens > 1000000) return cli_usage_error(cmd, "--max-tokens must be in 8..1000000");
    if (threads < 0 || threads > 1024) return cli_usage_error(cmd, "--threads must be in 1..1024");
    if (o.templ && strcmp(o.templ, "mllm4rec") && strcmp(o.templ, "llamarec"))
        return cli_usage_error(cmd, "--template must be mllm4rec or llamarec (got '%s')", o.templ);
    if (o.captions && strcmp(o.captions, "on") && strcmp(o.captions, "off"))
        return cli_usage_error(cmd, "--captions must be on or off (got '%s')", o.captions);
    int64_t user = 0;
    if (user_s && (mr_parse_i64(user_s, &user) || user <= 0 || user > INT32_MAX))
        return cli_usage_error(cmd, "--user must be a positive user id of sequences.tsv");
    mr_error e = {0};
    int32_t *given = NULL;
    int n_given = 0;
    if (history_s && (rc = parse_ids(history_s, &given, &n_given, &e))) return cli_usage_error(cmd, "%s", e.msg);
    if (history_s && (n_given < 1 || n_given > MR_REC_MAX_HISTORY)) {
        free(given);
        return cli_usage_error(cmd, "--history must hold 1..%d item ids (got %d)", MR_REC_MAX_HISTORY, n_given);
    }
    if (threads > 0) {
        mr_set_threads((int)threads);
    }
    o.num_candidates = (int)nc;
    o.history = (int)prompt_history;
    o.max_title_tokens = (int)max_title;
    o.max_tokens = (int)max_tokens;
    o.threads = (int)threads;
    mr_recommender r;
    mr_rec_ws *w = NULL;
    mr_rerank_ws *rw = NULL;
    mr_rec_result res;
    char *js = NULL;
    if ((rc = mr_recommender_open(&r, &o, &e))) {
        free(given);
        return cli_report(cmd, &e);
    }
    const int32_t *hist = given;
    int n_hist = n_given;
    if (user_s) rc = mr_rec_user_history(&r, user, &hist, &n_hist, &e);
    if (!rc && !(w = mr_rec_ws_new(&r, 1, &e))) rc = e.code;
    if (!rc && o.model && !(rw = mr_rerank_ws_new(&r, &e))) rc = e.code;
    if (!rc) rc = mr_recommend(&r, w, rw, hist, n_hist, (int)k, o.model != NULL, &res, &e);
    if (!rc && json) {
        size_t len;
        if (!(rc = mr_rec_result_json(&r, &res, &js, &len, &e))) printf("%s\n", js);
    } else if (!rc) {
        printf("| rank | item id | title | caption | score | retriever rank |\n|---:|---:|---|---|---:|---:|\n");
        for (int i = 0; i < res.n; i++) {
            const mr_rec_item *it = &res.items[i];
            const mr_item *m = &r.d.items[it->item_id];
            printf("| %d | %d | ", i + 1, it->item_id);
            put_cell(stdout, m->title, 0);
            printf(" | ");
            put_cell(stdout, m->caption, 60);
            printf(" | %.4f | %d |\n", it->score, it->retriever_rank);
        }
        fprintf(stderr, "ranked by the %s in %.1f ms (history of %d items)\n", res.ranked_by_llm ? "LLM" : "retriever",
                res.took_ms, n_hist);
    }
    fflush(stdout);
    free(js);
    mr_rerank_ws_free(rw);
    mr_rec_ws_free(w);
    mr_recommender_close(&r);
    free(given);
    return rc ? cli_report(cmd, &e) : 0;
}
