/* mllm4rec serve: the HTTP JSON API and the page, over models loaded once.
 * SIGINT / SIGTERM: stop accepting, finish what is in flight, exit 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mllm4rec/serve.h"

static volatile int g_stop = 0;
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

typedef struct ready_ctx {
    const char *host;
    const mr_recommender *r;
} ready_ctx;

static void on_ready(void *ctx, int port) {
    const ready_ctx *rc = ctx;
    const int v6 = strchr(rc->host, ':') != NULL;
    fprintf(stderr, "mllm4rec serve: listening on http://%s%s%s:%d/ (%lld items, %lld users, retriever%s%s)\n",
            v6 ? "[" : "", rc->host, v6 ? "]" : "", port, (long long)rc->r->d.n_items, (long long)rc->r->d.n_users,
            rc->r->rr ? " + LLM " : "", mr_rerank_model_name(rc->r));
    fflush(stderr);
}

CLI_COMMAND(cmd_serve) {
    const char *cmd = "serve";
    mr_rec_options o;
    mr_rec_options_default(&o);
    mr_serve_options so;
    mr_serve_options_default(&so);
    int64_t port = so.port, threads = so.threads, max_queue = so.max_queue, timeout_ms = so.timeout_ms,
            max_batch = so.max_batch, nc = 20, prompt_history = 20, max_title = 32, max_tokens = 1536, llm_threads = 0;
    cli_flag flags[] = {
        {"--dataset", FLAG_STR, &o.dataset, "prepared dataset folder (required)", 0},
        {"--retriever", FLAG_STR, &o.retriever_run, "retriever run folder RUN (required)", 0},
        {"--model", FLAG_STR, &o.model, "LLM (GGUF file or Hugging Face folder) that reranks", 0},
        {"--adapter", FLAG_STR, &o.adapter, "R/adapter.gguf (llama.cpp LoRA) or a PEFT folder", 0},
        {"--images", FLAG_STR, &so.images, "poster folder (items.tsv image field, --image-map, or SOURCE_ID.jpg)", 0},
        {"--image-map", FLAG_STR, &so.image_map, "TSV source_id<TAB>file (relative to --images)", 0},
        {"--host", FLAG_STR, &so.host, "address to bind (127.0.0.1)", 0},
        {"--port", FLAG_INT, &port, "port (8080; 0: any free port, printed on stderr)", 0},
        {"--threads", FLAG_INT, &threads, "retriever workers, one core each (2)", 0},
        {"--max-batch", FLAG_INT, &max_batch, "retriever requests scored in one forward (32; each worker holds activations for this many)", 0},
        {"--max-queue", FLAG_INT, &max_queue, "LLM requests allowed to wait; more get 503 (8)", 0},
        {"--timeout-ms", FLAG_INT, &timeout_ms, "answer 504 after this long (30000)", 0},
        {"--num-candidates", FLAG_INT, &nc, "retriever candidates the LLM reranks (20)", 0},
        {"--template", FLAG_STR, &o.templ, "prompt template as in ranker eval: mllm4rec (default) or llamarec", 0},
        {"--role", FLAG_STR, &o.role, "role sentence for datasets without a built-in one", 0},
        {"--captions", FLAG_STR, &o.captions, "on|off: items with captions or titles only (the template's)", 0},
        {"--prompt-history", FLAG_INT, &prompt_history, "history items in the prompt (20)", 0},
        {"--max-title-tokens", FLAG_INT, &max_title, "tokens kept of a title and of a caption (32)", 0},
        {"--max-tokens", FLAG_INT, &max_tokens, "whole prompt in tokens, cut from the left (1536)", 0},
        {"--llm-threads", FLAG_INT, &llm_threads, "threads of the LLM worker's forward (default: all cores)", 0},
    };
    const char *usage = "usage: mllm4rec serve --dataset D --retriever RUN [--model M [--adapter A]] [--images DIR] "
                        "[--host 127.0.0.1] [--port 8080] [--threads T] [--max-queue N] [--timeout-ms N]";
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]), usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!o.dataset || !o.retriever_run) return cli_usage_error(cmd, "--dataset and --retriever are required");
    if (o.adapter && !o.model) return cli_usage_error(cmd, "--adapter needs --model");
    if (so.image_map && !so.images) return cli_usage_error(cmd, "--image-map needs --images");
    if (port < 0 || port > 65535) return cli_usage_error(cmd, "--port must be in 0..65535");
    if (threads < 1 || threads > 256) return cli_usage_error(cmd, "--threads must be in 1..256");
    if (max_batch < 1 || max_batch > 1024) return cli_usage_error(cmd, "--max-batch must be in 1..1024");
    if (max_queue < 0 || max_queue > 100000) return cli_usage_error(cmd, "--max-queue must be in 0..100000");
    if (timeout_ms < 1 || timeout_ms > 3600000) return cli_usage_error(cmd, "--timeout-ms must be in 1..3600000");
    if (nc < 1 || nc > 26) return cli_usage_error(cmd, "--num-candidates must be in 1..26 (letters A..Z)");
    if (prompt_history < 0 || prompt_history > 100000) return cli_usage_error(cmd, "--prompt-history must be in 0..100000");
    if (max_title < 1 || max_title > 100000) return cli_usage_error(cmd, "--max-title-tokens must be in 1..100000");
    if (max_tokens < 8 || max_tokens > 1000000) return cli_usage_error(cmd, "--max-tokens must be in 8..1000000");
    if (llm_threads < 0 || llm_threads > 1024) return cli_usage_error(cmd, "--llm-threads must be in 1..1024");
    if (o.templ && strcmp(o.templ, "mllm4rec") && strcmp(o.templ, "llamarec"))
        return cli_usage_error(cmd, "--template must be mllm4rec or llamarec (got '%s')", o.templ);
    if (o.captions && strcmp(o.captions, "on") && strcmp(o.captions, "off"))
        return cli_usage_error(cmd, "--captions must be on or off (got '%s')", o.captions);
    o.num_candidates = (int)nc;
    o.history = (int)prompt_history;
    o.max_title_tokens = (int)max_title;
    o.max_tokens = (int)max_tokens;
    o.threads = (int)llm_threads; /* applied in the LLM worker thread */
    so.port = (int)port;
    so.threads = (int)threads;
    so.max_batch = (int)max_batch;
    so.max_queue = (int)max_queue;
    so.timeout_ms = (int)timeout_ms;
    mr_error e = {0};
    mr_recommender r;
    if ((rc = mr_recommender_open(&r, &o, &e))) return cli_report(cmd, &e);
    /* signals: set up before listening; a write to a closed socket is an error, not a death */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    ready_ctx rc_ctx = {so.host, &r};
    so.stop = &g_stop;
    so.on_ready = on_ready;
    so.ready_ctx = &rc_ctx;
    rc = mr_serve(&r, &so, &e);
    mr_recommender_close(&r);
    if (rc) return cli_report(cmd, &e);
    fprintf(stderr, "mllm4rec serve: stopped\n");
    return 0;
}
