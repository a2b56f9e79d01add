/* Recommendations for people (issue 13): one answer (`mllm4rec recommend`) and a
 * service that keeps the models loaded and answers many (`mllm4rec serve`).
 *
 * Layers of this module (src/serve/):
 *   recommender  the dataset, the retriever (any architecture of
 *                src/retriever/arch.h, read from its file) and (optionally) the LLM
 *                ranker, loaded once; a query is a history of item ids in time
 *                order; retriever ranking of a batch of queries in one forward
 *   rerank       the LLM's verbalizer scores of the retriever's top candidates
 *                with the prompt of `ranker eval` (rerank.c holds every call into
 *                the ranker)
 *   result JSON  the object `recommend --json` prints and POST /v1/recommend returns
 *   server       HTTP/1.1 (libmicrohttpd), retriever batching, the LLM queue
 *
 * Ranking: the retriever scores every item at the history's last position; the
 * padding item and every item of the history are never recommended; ties: higher
 * score first, then lower id. With the LLM, the retriever's first num_candidates
 * are reordered by the LLM's letter logits (ties keep the retriever's order) and
 * the rest follow in retriever order. `score` is the score of the model that
 * placed the item: the LLM's letter logit for the reranked items, the retriever's
 * score for the others. */
#ifndef MLLM4REC_SERVE_H
#define MLLM4REC_SERVE_H

#include "mllm4rec/base.h"
#include "mllm4rec/dataset.h"
#include "mllm4rec/retriever.h"

/* Limits of a query (the same for the command and the service). */
#define MR_REC_MAX_HISTORY 1000
#define MR_REC_MAX_K 100

typedef struct mr_rec_options {
    const char *dataset;       /* prepared dataset folder */
    const char *retriever_run; /* RUN folder with retriever.safetensors */
    const char *model;         /* GGUF file or Hugging Face folder; NULL: retriever only */
    const char *adapter;       /* R/adapter.gguf or a PEFT folder; NULL: the base model */
    const char *templ;         /* "mllm4rec" (default) or "llamarec" */
    const char *captions;      /* "on", "off" or NULL (the template's: mllm4rec on, llamarec off) */
    const char *role;          /* role sentence for datasets without a built-in one */
    int history;               /* history items in the prompt (20) */
    int max_title_tokens;      /* 32 */
    int max_tokens;            /* 1536 */
    int num_candidates;        /* reranked by the LLM (20), 1..26 */
    int threads;               /* OpenMP threads of one LLM forward, set in the thread that calls
                                  mr_rerank_ws_new (0: as that thread has them) */
} mr_rec_options;

void mr_rec_options_default(mr_rec_options *o);

struct mr_reranker;

typedef struct mr_recommender {
    mr_dataset d;
    rt_model rt;            /* the retriever; rt.arch from the run's file */
    struct mr_reranker *rr; /* NULL when no model is loaded */
    int num_candidates;
    int have_d, have_rt;
} mr_recommender;

/* Loads the dataset, the retriever (checked against the dataset) and, when
 * o->model is set, the LLM with its adapter. */
int mr_recommender_open(mr_recommender *r, const mr_rec_options *o, mr_error *e);
void mr_recommender_close(mr_recommender *r);

/* The whole known sequence of a user (the test item included), of any length.
 * MR_ERR_INPUT when the user does not exist. */
int mr_rec_user_history(const mr_recommender *r, int64_t user_id, const int32_t **hist, int *n, mr_error *e);
/* Checks a history: 1..MR_REC_MAX_HISTORY ids, each in 1..n_items. MR_ERR_USAGE for
 * a bad length, MR_ERR_INPUT for an unknown item (the message names its index). */
int mr_rec_check_history(const mr_recommender *r, const int32_t *hist, int n, mr_error *e);

typedef struct mr_rec_item {
    int32_t item_id;
    float score;
    int retriever_rank; /* 1-based rank in the retriever's order */
} mr_rec_item;

typedef struct mr_rec_result {
    int n;                  /* items filled (fewer than k only when the history holds nearly every item) */
    int ranked_by_llm;
    double took_ms;
    mr_rec_item items[MR_REC_MAX_K > 26 ? MR_REC_MAX_K : 26];
} mr_rec_result;

typedef struct mr_rec_query {
    const int32_t *hist; /* item ids in 1..n_items */
    int n_hist;
    int depth;           /* items to rank, 1..MR_REC_MAX_K (k, or max(k, num_candidates) before a rerank) */
} mr_rec_query;

/* Retriever workspace for batches of up to max_batch queries (one per thread). */
typedef struct mr_rec_ws mr_rec_ws;
mr_rec_ws *mr_rec_ws_new(const mr_recommender *r, int max_batch, mr_error *e);
void mr_rec_ws_free(mr_rec_ws *w);

/* Retriever ranking of n queries (n <= max_batch) in one batched forward that
 * computes item scores only at each history's last position (the last max_len
 * items feed the model; the whole history is masked). out[i] gets q[i].depth items. */
int mr_rec_retrieve(const mr_recommender *r, mr_rec_ws *w, const mr_rec_query *q, int n, mr_rec_result *out,
                    mr_error *e);

/* ---- LLM reranking (src/serve/rerank.c) ---- */
typedef struct mr_rerank_ws mr_rerank_ws;
/* Per-thread scoring state of the loaded LLM (NULL with an error when none). */
mr_rerank_ws *mr_rerank_ws_new(const mr_recommender *r, mr_error *e);
void mr_rerank_ws_free(mr_rerank_ws *w);
/* Reorders the first min(num_candidates, res->n) items of a retriever result by
 * the LLM's verbalizer scores for this history, then keeps k items. */
int mr_rerank(const mr_recommender *r, mr_rerank_ws *w, const int32_t *hist, int n_hist, int k, mr_rec_result *res,
              mr_error *e);
/* Name of the loaded model (for /healthz and /metrics), "" when none. */
const char *mr_rerank_model_name(const mr_recommender *r);

/* ---- one answer: retriever, then the LLM when loaded and rerank != 0 ---- */
int mr_recommend(const mr_recommender *r, mr_rec_ws *w, mr_rerank_ws *rw, const int32_t *hist, int n_hist, int k,
                 int rerank, mr_rec_result *res, mr_error *e);

/* The result object {"items": [{"item_id", "title", "caption", "score",
 * "retriever_rank"}], "ranked_by", "took_ms"} as compact JSON; *out malloc'd. */
int mr_rec_result_json(const mr_recommender *r, const mr_rec_result *res, char **out, size_t *len, mr_error *e);

/* ---- the HTTP service (src/serve/http.c) ---- */
typedef struct mr_serve_options {
    const char *host;      /* "127.0.0.1" */
    int port;              /* 8080; 0: any free port (reported through port_out) */
    int threads;           /* retriever workers (2) */
    int max_queue;         /* LLM requests waiting (8) */
    int timeout_ms;        /* 504 past this (30000) */
    int max_batch;         /* retriever queries per forward (32) */
    const char *images;    /* poster folder or NULL */
    const char *image_map; /* TSV source_id<TAB>file under images, or NULL */
    volatile int *stop;    /* set by a signal handler: stop accepting, finish, return */
    /* called once listening, with the bound port (may be NULL) */
    void (*on_ready)(void *ctx, int port);
    void *ready_ctx;
} mr_serve_options;

void mr_serve_options_default(mr_serve_options *o);
/* Serves until *o->stop; returns MR_OK after a clean stop. */
int mr_serve(const mr_recommender *r, const mr_serve_options *o, mr_error *e);

/* The page served at GET / (src/serve/page.c). */
extern const char mr_serve_page_html[];

#endif
