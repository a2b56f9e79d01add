/* The HTTP service: libmicrohttpd (one thread per connection, so a request may
 * wait for its answer), JSON with jansson.
 *
 * Work flows through two queues, both under one mutex:
 *   retriever  every retriever-only request; each of the `threads` workers takes
 *              all waiting requests (up to max_batch) and scores them in one
 *              batched forward. Bounded by the connection limit.
 *   llm        requests the LLM reranks; its own worker, so they never delay the
 *              retriever queue; at most max_queue waiting, a full queue is 503.
 * A request thread waits for its job in ticks of 100 ms; at each tick it checks
 * its deadline (504 past --timeout-ms) and whether its client is still connected
 * (a client that went away takes its job out of the queue). A job is freed by
 * whoever drops the last reference (the request thread or the worker). */
#include "mllm4rec/serve.h"

#include <arpa/inet.h>
#include <cblas.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <omp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY (1 << 20)
#define CONNECTION_LIMIT 512
#define TICK_MS 100

void mr_serve_options_default(mr_serve_options *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->threads = 2;
    o->max_queue = 8;
    o->timeout_ms = 30000;
    o->max_batch = 32;
}

/* ------------------------------------------------------------------ metrics */

enum { EP_RECOMMEND, EP_ITEM, EP_POSTER, EP_SEARCH, EP_HEALTHZ, EP_METRICS, EP_PAGE, EP_OTHER, N_EP };
static const char *EP_NAME[N_EP] = {"/v1/recommend", "/v1/items/{id}", "/v1/items/{id}/poster", "/v1/items",
                                    "/healthz",      "/metrics",       "/",                     "other"};
static const int STATUSES[] = {200, 400, 404, 405, 413, 500, 503, 504};
#define N_STATUS ((int)(sizeof STATUSES / sizeof STATUSES[0]))
static const double BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define N_BUCKETS ((int)(sizeof BUCKETS / sizeof BUCKETS[0]))

typedef struct metrics {
    uint64_t requests[N_EP][N_STATUS];
    uint64_t hist[N_EP][N_BUCKETS + 1]; /* per bucket (not cumulative); last = +Inf */
    double seconds_sum[N_EP];
    uint64_t batches, batched_queries, llm_reranks, llm_rejected, timeouts, client_gone;
} metrics;

/* ------------------------------------------------------------------ jobs */

enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

typedef struct job {
    struct job *next;
    int32_t *hist;
    int n_hist, k, rerank;
    int state, refs, in_llm_queue;
    int rc;
    mr_error err;
    mr_rec_result res;
    pthread_cond_t done;
} job;

typedef struct server {
    const mr_recommender *r;
    mr_serve_options o;
    pthread_mutex_t mu;
    pthread_cond_t work_rq, work_llm, idle;
    job *rq_head, *rq_tail, *lq_head, *lq_tail;
    int rq_len, lq_len, llm_busy;
    int stopping;   /* workers finish their queues and leave */
    int accepting;  /* 0 once a stop was asked */
    int in_flight;  /* requests between their first call and their response */
    int llm_ready;  /* LLM worker: 0 starting, 1 ready, -1 failed (llm_err) */
    mr_error llm_err;
    metrics m;
    char **lower_titles; /* for the search */
    char **map_file;     /* [n_items + 1] poster file names from --image-map, or NULL */
    char *images_real;   /* realpath of --images */
} server;

static void job_unref_locked(job *j) {
    if (--j->refs > 0) return;
    pthread_cond_destroy(&j->done);
    free(j->hist);
    free(j);
}

static void queue_push(job **head, job **tail, job *j) {
    j->next = NULL;
    if (*tail) (*tail)->next = j;
    else *head = j;
    *tail = j;
}

static int queue_remove(job **head, job **tail, job *j) {
    job *prev = NULL;
    for (job *p = *head; p; prev = p, p = p->next) {
        if (p != j) continue;
        if (prev) prev->next = p->next;
        else *head = p->next;
        if (*tail == p) *tail = prev;
        p->next = NULL;
        return 1;
    }
    return 0;
}

static void *retriever_worker(void *arg) {
    server *s = arg;
    omp_set_num_threads(1);
    mr_error e = {0};
    mr_rec_ws *w = mr_rec_ws_new(s->r, s->o.max_batch, &e);
    job **batch = calloc((size_t)s->o.max_batch, sizeof *batch);
    mr_rec_query *q = calloc((size_t)s->o.max_batch, sizeof *q);
    mr_rec_result *out = calloc((size_t)s->o.max_batch, sizeof *out);
    /* one forward of the largest batch first: every page of the workspace is
     * touched before the first request, so the resident size stays flat under load */
    const int L = s->r->rt.cfg.max_len;
    int32_t *warm = malloc((size_t)L * sizeof *warm);
    if (w && q && out && warm) {
        for (int i = 0; i < L; i++) warm[i] = (int32_t)(i % s->r->d.n_items + 1);
        for (int i = 0; i < s->o.max_batch; i++) q[i] = (mr_rec_query){warm, L, MR_REC_MAX_K};
        mr_error we = {0};
        mr_rec_retrieve(s->r, w, q, s->o.max_batch, out, &we);
    }
    free(warm);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->rq_head && !s->stopping) pthread_cond_wait(&s->work_rq, &s->mu);
        if (!s->rq_head) break;
        int n = 0;
        while (s->rq_head && n < s->o.max_batch) {
            job *j = s->rq_head;
            s->rq_head = j->next;
            if (!s->rq_head) s->rq_tail = NULL;
            s->rq_len--;
            j->state = JOB_RUNNING;
            batch[n++] = j;
        }
        pthread_mutex_unlock(&s->mu);
        int rc = MR_OK;
        mr_error be = {0};
        if (!w || !batch || !q || !out) {
            rc = mr_fail(&be, MR_ERR_INTERNAL, "retriever worker: %s", e.msg[0] ? e.msg : "out of memory");
        } else {
            for (int i = 0; i < n; i++) q[i] = (mr_rec_query){batch[i]->hist, batch[i]->n_hist, batch[i]->k};
            rc = mr_rec_retrieve(s->r, w, q, n, out, &be);
        }
        pthread_mutex_lock(&s->mu);
        s->m.batches++;
        s->m.batched_queries += (uint64_t)n;
        for (int i = 0; i < n; i++) {
            job *j = batch[i];
            j->rc = rc;
            if (rc) j->err = be;
            else j->res = out[i];
            j->state = JOB_DONE;
            pthread_cond_signal(&j->done);
            job_unref_locked(j);
        }
    }
    pthread_mutex_unlock(&s->mu);
    free(batch);
    free(q);
    free(out);
    mr_rec_ws_free(w);
    return NULL;
}

static void *llm_worker(void *arg) {
    server *s = arg;
    mr_error e = {0};
    mr_rec_ws *w = mr_rec_ws_new(s->r, 1, &e);
    mr_rerank_ws *rw = w ? mr_rerank_ws_new(s->r, &e) : NULL;
    pthread_mutex_lock(&s->mu);
    /* the server listens only once this worker could allocate its state */
    s->llm_ready = rw ? 1 : -1;
    if (!rw) s->llm_err = e;
    pthread_cond_broadcast(&s->idle);
    for (;;) {
        while (!s->lq_head && !s->stopping) pthread_cond_wait(&s->work_llm, &s->mu);
        job *j = s->lq_head;
        if (!j) break;
        s->lq_head = j->next;
        if (!s->lq_head) s->lq_tail = NULL;
        s->lq_len--;
        j->state = JOB_RUNNING;
        s->llm_busy = 1;
        pthread_mutex_unlock(&s->mu);
        mr_rec_result res;
        mr_error je = {0};
        int rc = rw ? mr_recommend(s->r, w, rw, j->hist, j->n_hist, j->k, 1, &res, &je)
                    : mr_fail(&je, MR_ERR_INTERNAL, "LLM worker: %s", e.msg);
        pthread_mutex_lock(&s->mu);
        s->llm_busy = 0;
        s->m.llm_reranks++;
        j->rc = rc;
        if (rc) j->err = je;
        else j->res = res;
        j->state = JOB_DONE;
        pthread_cond_signal(&j->done);
        job_unref_locked(j);
    }
    pthread_mutex_unlock(&s->mu);
    mr_rerank_ws_free(rw);
    mr_rec_ws_free(w);
    return NULL;
}

/* ------------------------------------------------------------------ responses */

typedef struct request {
    char *body;
    size_t len;
    int too_large;
    int counted; /* in s->in_flight */
    double t0;
} request;

static enum MHD_Result send_body(struct MHD_Connection *c, unsigned status, const char *type, char *body, size_t len,
                                 const char *extra_header, const char *extra_value) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (extra_header) MHD_add_response_header(resp, extra_header, extra_value);
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, json_t *o, const char *extra_header,
                                 const char *extra_value) {
    char *body = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!body) return MHD_NO;
    size_t len = strlen(body);
    return send_body(c, status, "application/json", body, len, extra_header, extra_value);
}

static enum MHD_Result send_error_h(struct MHD_Connection *c, unsigned status, const char *h, const char *v,
                                    const char *fmt, ...) MR_PRINTF(5, 6);
static enum MHD_Result send_error_h(struct MHD_Connection *c, unsigned status, const char *h, const char *v,
                                    const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_object();
    /* a message that quotes invalid UTF-8 from the client is replaced, not dropped */
    json_t *m = json_string(msg);
    json_object_set_new(o, "error", m ? m : json_string("bad request (the message held invalid UTF-8)"));
    return send_json(c, status, o, h, v);
}
#define send_error(c, status, ...) send_error_h(c, status, NULL, NULL, __VA_ARGS__)

/* ------------------------------------------------------------------ items and posters */

static json_t *item_json(server *s, int32_t id);

/* The poster file of an item, inside --images, as an open descriptor (-1: none).
 * Names with a ".." component or a leading '/' are refused; the resolved path
 * (symlinks followed) must stay inside the resolved --images folder. */
static int poster_open(server *s, int32_t id, const char **type, off_t *size) {
    if (!s->images_real) return -1;
    const mr_item *it = &s->r->d.items[id];
    char cand[3][PATH_MAX];
    int nc = 0;
    if (it->image && it->image[0] && !strstr(it->image, "://"))
        snprintf(cand[nc++], PATH_MAX, "%s", it->image);
    if (s->map_file && s->map_file[id]) snprintf(cand[nc++], PATH_MAX, "%s", s->map_file[id]);
    if (it->source_id && it->source_id[0]) snprintf(cand[nc++], PATH_MAX, "%s.jpg", it->source_id);
    size_t root_len = strlen(s->images_real);
    for (int i = 0; i < nc; i++) {
        const char *name = cand[i];
        if (name[0] == '/' || strchr(name, '\\')) continue;
        int bad = 0;
        for (const char *p = name; *p; p++)
            if (p[0] == '.' && p[1] == '.' && (p == name || p[-1] == '/') && (p[2] == 0 || p[2] == '/')) bad = 1;
        if (bad) continue;
        char joined[PATH_MAX * 2], real[PATH_MAX];
        size_t nn = strlen(name);
        if (root_len + 1 + nn >= sizeof joined) continue;
        memcpy(joined, s->images_real, root_len);
        joined[root_len] = '/';
        memcpy(joined + root_len + 1, name, nn + 1);
        if (!realpath(joined, real)) continue;
        if (strncmp(real, s->images_real, root_len) || real[root_len] != '/') continue;
        int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) continue;
        struct stat st;
        if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
            close(fd);
            continue;
        }
        const char *dot = strrchr(real, '.');
        *type = !dot                                                ? "application/octet-stream"
                : !strcasecmp(dot, ".png")                         ? "image/png"
                : !strcasecmp(dot, ".webp")                        ? "image/webp"
                : !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") ? "image/jpeg"
                                                                    : "application/octet-stream";
        *size = st.st_size;
        return fd;
    }
    return -1;
}

static json_t *item_json(server *s, int32_t id) {
    const mr_item *it = &s->r->d.items[id];
    json_t *o = json_object();
    json_object_set_new(o, "item_id", json_integer(id));
    json_object_set_new(o, "source_id", json_string(it->source_id ? it->source_id : ""));
    json_object_set_new(o, "title", json_string(it->title ? it->title : ""));
    json_object_set_new(o, "caption", json_string(it->caption ? it->caption : ""));
    const char *type;
    off_t size;
    int fd = poster_open(s, id, &type, &size);
    if (fd >= 0) {
        close(fd);
        char url[64];
        snprintf(url, sizeof url, "/v1/items/%d/poster", id);
        json_object_set_new(o, "poster", json_string(url));
    } else {
        json_object_set_new(o, "poster", json_null());
    }
    return o;
}

/* Strict decimal in lo..hi (no sign, no spaces); -1 when not a number at all, -2 out of range. */
static int parse_id(const char *p, size_t n, int64_t lo, int64_t hi, int64_t *out) {
    if (n == 0 || n > 18) return n > 18 ? -2 : -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return v < lo || v > hi ? -2 : 0;
}

static enum MHD_Result handle_item(server *s, struct MHD_Connection *c, const char *rest, int *status) {
    const char *slash = strchr(rest, '/');
    size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
    int poster = 0;
    if (slash) {
        if (strcmp(slash, "/poster")) {
            *status = 404;
            return send_error(c, 404, "no such path (GET /v1/items/{id} or /v1/items/{id}/poster)");
        }
        poster = 1;
    }
    int64_t id = 0;
    int pr = parse_id(rest, n, 1, s->r->d.n_items, &id);
    if (pr == -1) {
        *status = 400;
        return send_error(c, 400, "item id must be a positive integer");
    }
    if (pr) {
        *status = 404;
        return send_error(c, 404, "unknown item_id (items are 1..%lld)", (long long)s->r->d.n_items);
    }
    if (!poster) {
        *status = 200;
        return send_json(c, 200, item_json(s, (int32_t)id), NULL, NULL);
    }
    const char *type;
    off_t size;
    int fd = poster_open(s, (int32_t)id, &type, &size);
    if (fd < 0) {
        *status = 404;
        return send_error(c, 404, "item %lld has no poster%s", (long long)id, s->images_real ? "" : " (no --images)");
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)size, fd);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, "Cache-Control", "max-age=3600");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    *status = 200;
    return ret;
}

static enum MHD_Result handle_search(server *s, struct MHD_Connection *c, int *status) {
    const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "q");
    const char *ls = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    int64_t limit = 20;
    *status = 400;
    if (ls && parse_id(ls, strlen(ls), 1, 100, &limit)) return send_error(c, 400, "limit must be an integer in 1..100");
    if (!q || !q[0]) return send_error(c, 400, "q (the text to search in titles) is required");
    if (strlen(q) > 200) return send_error(c, 400, "q is longer than 200 bytes");
    if (!mr_utf8_valid(q, strlen(q))) return send_error(c, 400, "q is not valid UTF-8");
    char lq[256];
    size_t n = strlen(q);
    for (size_t i = 0; i <= n; i++) lq[i] = (char)tolower((unsigned char)q[i]);
    json_t *o = json_object(), *arr = json_array();
    json_object_set_new(o, "query", json_string(q));
    json_object_set_new(o, "items", arr);
    int count = 0;
    for (int64_t id = 1; id <= s->r->d.n_items && count < limit; id++)
        if (strstr(s->lower_titles[id], lq)) {
            json_array_append_new(arr, item_json(s, (int32_t)id));
            count++;
        }
    *status = 200;
    return send_json(c, 200, o, NULL, NULL);
}

static enum MHD_Result handle_healthz(server *s, struct MHD_Connection *c, int *status) {
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string(s->accepting ? "ok" : "stopping"));
    json_object_set_new(o, "dataset", json_string(s->r->d.name ? s->r->d.name : ""));
    json_object_set_new(o, "items", json_integer(s->r->d.n_items));
    json_object_set_new(o, "users", json_integer(s->r->d.n_users));
    json_object_set_new(o, "retriever", json_true());
    json_object_set_new(o, "retriever_arch", json_string(s->r->rt.cfg.arch)); /* from the run's file */
    json_object_set_new(o, "llm", s->r->rr ? json_string(mr_rerank_model_name(s->r)) : json_null());
    *status = 200;
    return send_json(c, 200, o, NULL, NULL);
}

typedef struct sbuf {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) MR_PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 8192;
        while (cap < b->n + (size_t)k + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) return;
        b->s = p;
        b->cap = cap;
    }
}

static enum MHD_Result handle_metrics(server *s, struct MHD_Connection *c, int *status) {
    metrics m;
    int rq, lq, busy, inflight;
    pthread_mutex_lock(&s->mu);
    m = s->m;
    rq = s->rq_len;
    lq = s->lq_len;
    busy = s->llm_busy;
    inflight = s->in_flight;
    pthread_mutex_unlock(&s->mu);
    sbuf b = {0};
    sb_printf(&b, "# HELP mllm4rec_http_requests_total HTTP requests answered, by endpoint and status.\n"
                  "# TYPE mllm4rec_http_requests_total counter\n");
    for (int i = 0; i < N_EP; i++)
        for (int k = 0; k < N_STATUS; k++)
            if (m.requests[i][k] || k == 0)
                sb_printf(&b, "mllm4rec_http_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n", EP_NAME[i],
                          STATUSES[k], (unsigned long long)m.requests[i][k]);
    sb_printf(&b, "# HELP mllm4rec_http_request_duration_seconds Time from a request's arrival to its answer.\n"
                  "# TYPE mllm4rec_http_request_duration_seconds histogram\n");
    for (int i = 0; i < N_EP; i++) {
        uint64_t cum = 0;
        for (int k = 0; k <= N_BUCKETS; k++) {
            cum += m.hist[i][k];
            if (k < N_BUCKETS)
                sb_printf(&b, "mllm4rec_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%g\"} %llu\n",
                          EP_NAME[i], BUCKETS[k], (unsigned long long)cum);
            else
                sb_printf(&b, "mllm4rec_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} %llu\n",
                          EP_NAME[i], (unsigned long long)cum);
        }
        sb_printf(&b, "mllm4rec_http_request_duration_seconds_sum{endpoint=\"%s\"} %.6f\n", EP_NAME[i],
                  m.seconds_sum[i]);
        sb_printf(&b, "mllm4rec_http_request_duration_seconds_count{endpoint=\"%s\"} %llu\n", EP_NAME[i],
                  (unsigned long long)cum);
    }
    sb_printf(&b,
              "# HELP mllm4rec_queue_depth Requests waiting in a queue.\n# TYPE mllm4rec_queue_depth gauge\n"
              "mllm4rec_queue_depth{queue=\"retriever\"} %d\nmllm4rec_queue_depth{queue=\"llm\"} %d\n"
              "# HELP mllm4rec_queue_capacity Waiting places of a bounded queue.\n# TYPE mllm4rec_queue_capacity gauge\n"
              "mllm4rec_queue_capacity{queue=\"llm\"} %d\n"
              "# HELP mllm4rec_llm_busy 1 while the LLM worker ranks a request.\n# TYPE mllm4rec_llm_busy gauge\n"
              "mllm4rec_llm_busy %d\n"
              "# HELP mllm4rec_requests_in_flight Requests received and not yet answered.\n"
              "# TYPE mllm4rec_requests_in_flight gauge\nmllm4rec_requests_in_flight %d\n"
              "# HELP mllm4rec_models_loaded Models held in memory.\n# TYPE mllm4rec_models_loaded gauge\n"
              "mllm4rec_models_loaded{model=\"retriever\"} 1\nmllm4rec_models_loaded{model=\"llm\"} %d\n"
              "# HELP mllm4rec_retriever_batches_total Batched retriever forwards.\n"
              "# TYPE mllm4rec_retriever_batches_total counter\nmllm4rec_retriever_batches_total %llu\n"
              "# HELP mllm4rec_retriever_batched_queries_total Queries scored by those forwards.\n"
              "# TYPE mllm4rec_retriever_batched_queries_total counter\nmllm4rec_retriever_batched_queries_total %llu\n"
              "# HELP mllm4rec_llm_reranks_total Requests the LLM worker ranked.\n"
              "# TYPE mllm4rec_llm_reranks_total counter\nmllm4rec_llm_reranks_total %llu\n"
              "# HELP mllm4rec_llm_rejected_total LLM requests refused with 503 (queue full).\n"
              "# TYPE mllm4rec_llm_rejected_total counter\nmllm4rec_llm_rejected_total %llu\n"
              "# HELP mllm4rec_timeouts_total Requests answered 504.\n# TYPE mllm4rec_timeouts_total counter\n"
              "mllm4rec_timeouts_total %llu\n"
              "# HELP mllm4rec_clients_gone_total Requests dropped because the client went away.\n"
              "# TYPE mllm4rec_clients_gone_total counter\nmllm4rec_clients_gone_total %llu\n",
              rq, lq, s->o.max_queue, busy, inflight, s->r->rr ? 1 : 0, (unsigned long long)m.batches,
              (unsigned long long)m.batched_queries, (unsigned long long)m.llm_reranks,
              (unsigned long long)m.llm_rejected, (unsigned long long)m.timeouts, (unsigned long long)m.client_gone);
    if (!b.s) return MHD_NO;
    *status = 200;
    return send_body(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.s, b.n, NULL, NULL);
}

/* ------------------------------------------------------------------ /v1/recommend */

/* 1 when the client closed its end (or the socket failed). */
static int client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return 1;
    char ch;
    ssize_t k = recv(ci->connect_fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
    return k == 0;
}

static const char *json_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a non-integer number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static enum MHD_Result handle_recommend(server *s, struct MHD_Connection *c, request *rq, int *status) {
    *status = 400;
    if (rq->too_large) {
        *status = 413;
        return send_error(c, 413, "request body is larger than %d bytes", MAX_BODY);
    }
    json_error_t jerr;
    json_t *root = json_loadb(rq->body ? rq->body : "", rq->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return send_error(c, 400, "malformed JSON at line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
    enum MHD_Result ret;
    int32_t *hist = NULL;
    int n_hist = 0;
    int64_t k = 10;
    int rerank = s->r->rr != NULL;
    const char *key;
    json_t *v;
    if (!json_is_object(root)) {
        ret = send_error(c, 400, "the body must be a JSON object, not %s", json_type_name(root));
        goto done;
    }
    json_object_foreach(root, key, v) {
        if (strcmp(key, "user_id") && strcmp(key, "history") && strcmp(key, "k") && strcmp(key, "rerank")) {
            ret = send_error(c, 400, "unknown field \"%.100s\" (expected user_id or history, k, rerank)", key);
            goto done;
        }
    }
    json_t *ju = json_object_get(root, "user_id"), *jh = json_object_get(root, "history"),
           *jk = json_object_get(root, "k"), *jr = json_object_get(root, "rerank");
    if (!!ju == !!jh) {
        ret = send_error(c, 400, "give exactly one of \"user_id\" and \"history\"");
        goto done;
    }
    if (jk) {
        if (!json_is_integer(jk)) {
            ret = send_error(c, 400, "k must be an integer, not %s", json_type_name(jk));
            goto done;
        }
        k = json_integer_value(jk);
        if (k < 1 || k > MR_REC_MAX_K) {
            ret = send_error(c, 400, "k must be in 1..%d (got %lld)", MR_REC_MAX_K, (long long)k);
            goto done;
        }
    }
    if (jr) {
        if (!json_is_boolean(jr)) {
            ret = send_error(c, 400, "rerank must be true or false, not %s", json_type_name(jr));
            goto done;
        }
        rerank = json_is_true(jr);
        if (rerank && !s->r->rr) {
            ret = send_error(c, 400, "rerank: no LLM is loaded (start serve with --model)");
            goto done;
        }
    }
    mr_error e = {0};
    if (ju) {
        if (!json_is_integer(ju)) {
            ret = send_error(c, 400, "user_id must be an integer, not %s", json_type_name(ju));
            goto done;
        }
        const int32_t *h;
        int n;
        if (mr_rec_user_history(s->r, json_integer_value(ju), &h, &n, &e)) {
            *status = 404;
            ret = send_error(c, 404, "%s", e.msg);
            goto done;
        }
        hist = malloc((size_t)n * sizeof *hist);
        if (!hist) {
            ret = MHD_NO;
            goto done;
        }
        memcpy(hist, h, (size_t)n * sizeof *hist);
        n_hist = n;
    } else {
        if (!json_is_array(jh)) {
            ret = send_error(c, 400, "history must be an array of item ids, not %s", json_type_name(jh));
            goto done;
        }
        size_t n = json_array_size(jh);
        if (n < 1 || n > MR_REC_MAX_HISTORY) {
            ret = send_error(c, 400, "history must hold 1..%d item ids (got %zu)", MR_REC_MAX_HISTORY, n);
            goto done;
        }
        hist = malloc(n * sizeof *hist);
        if (!hist) {
            ret = MHD_NO;
            goto done;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *x = json_array_get(jh, i);
            if (!json_is_integer(x)) {
                ret = send_error(c, 400, "history[%zu] must be an integer item id, not %s", i, json_type_name(x));
                goto done;
            }
            json_int_t id = json_integer_value(x);
            if (id < 1 || id > s->r->d.n_items) {
                *status = 404;
                ret = send_error(c, 404, "history[%zu]: unknown item_id %lld (items are 1..%lld)", i, (long long)id,
                                 (long long)s->r->d.n_items);
                goto done;
            }
            hist[i] = (int32_t)id;
        }
        n_hist = (int)n;
    }
    /* queue the job */
    job *j = calloc(1, sizeof *j);
    if (!j) {
        ret = MHD_NO;
        goto done;
    }
    j->hist = hist;
    hist = NULL;
    j->n_hist = n_hist;
    j->k = (int)k;
    j->rerank = rerank;
    j->refs = 2;
    pthread_cond_init(&j->done, NULL);
    pthread_mutex_lock(&s->mu);
    if (rerank) {
        if (s->lq_len >= s->o.max_queue) {
            s->m.llm_rejected++;
            j->refs = 1;
            job_unref_locked(j);
            pthread_mutex_unlock(&s->mu);
            *status = 503;
            ret = send_error_h(c, 503, "Retry-After", "1", "the LLM queue is full (%d waiting); retry later",
                               s->o.max_queue);
            goto done;
        }
        j->in_llm_queue = 1;
        queue_push(&s->lq_head, &s->lq_tail, j);
        s->lq_len++;
        pthread_cond_signal(&s->work_llm);
    } else {
        queue_push(&s->rq_head, &s->rq_tail, j);
        s->rq_len++;
        pthread_cond_signal(&s->work_rq);
    }
    /* wait in ticks: deadline, client gone */
    const double deadline = rq->t0 + s->o.timeout_ms / 1000.0;
    int outcome = 0; /* 0 done, 1 timeout, 2 gone */
    while (j->state != JOB_DONE) {
        double now = mr_now();
        if (now >= deadline) {
            outcome = 1;
            break;
        }
        double wait = deadline - now < TICK_MS / 1000.0 ? deadline - now : TICK_MS / 1000.0;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long ns = ts.tv_nsec + (long)(wait * 1e9);
        ts.tv_sec += ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        pthread_cond_timedwait(&j->done, &s->mu, &ts);
        if (j->state != JOB_DONE && client_gone(c)) {
            outcome = 2;
            break;
        }
    }
    if (outcome) {
        /* a waiting job leaves its queue (its slot is free again); a running one
         * finishes in its worker, which then drops the last reference */
        if (j->state == JOB_QUEUED) {
            if (j->in_llm_queue) {
                if (queue_remove(&s->lq_head, &s->lq_tail, j)) s->lq_len--;
            } else if (queue_remove(&s->rq_head, &s->rq_tail, j)) {
                s->rq_len--;
            }
            if (j->state == JOB_QUEUED) j->refs--; /* the queue's reference */
        }
        if (outcome == 1) s->m.timeouts++;
        else s->m.client_gone++;
        job_unref_locked(j);
        pthread_mutex_unlock(&s->mu);
        if (outcome == 2) {
            *status = 0;
            ret = MHD_NO; /* closes the connection */
        } else {
            *status = 504;
            ret = send_error(c, 504, "no answer within %d ms%s", s->o.timeout_ms,
                             rerank ? " (the LLM queue is busy)" : "");
        }
        goto done;
    }
    mr_rec_result res = j->res;
    int rc = j->rc;
    e = j->err;
    job_unref_locked(j);
    pthread_mutex_unlock(&s->mu);
    if (rc) {
        *status = 500;
        ret = send_error(c, 500, "internal error: %s", e.msg);
        goto done;
    }
    if (res.n > k) res.n = (int)k;
    res.took_ms = (mr_now() - rq->t0) * 1e3;
    char *body;
    size_t len;
    if (mr_rec_result_json(s->r, &res, &body, &len, &e)) {
        *status = 500;
        ret = send_error(c, 500, "internal error: %s", e.msg);
        goto done;
    }
    *status = 200;
    ret = send_body(c, 200, "application/json", body, len, NULL, NULL);
done:
    free(hist);
    json_decref(root);
    return ret;
}

/* ------------------------------------------------------------------ routing */

static void record(server *s, int ep, int status, double seconds) {
    int k = -1;
    for (int i = 0; i < N_STATUS; i++)
        if (STATUSES[i] == status) k = i;
    int b = 0;
    while (b < N_BUCKETS && seconds > BUCKETS[b]) b++;
    pthread_mutex_lock(&s->mu);
    if (k >= 0) s->m.requests[ep][k]++;
    s->m.hist[ep][b]++;
    s->m.seconds_sum[ep] += seconds;
    pthread_mutex_unlock(&s->mu);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    server *s = cls;
    request *rq = *con_cls;
    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq) return MHD_NO;
        rq->t0 = mr_now();
        pthread_mutex_lock(&s->mu);
        s->in_flight++;
        pthread_mutex_unlock(&s->mu);
        rq->counted = 1;
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!rq->too_large) {
            if (rq->len + *upload_data_size > MAX_BODY) {
                rq->too_large = 1;
                free(rq->body);
                rq->body = NULL;
                rq->len = 0;
            } else {
                char *p = realloc(rq->body, rq->len + *upload_data_size + 1);
                if (!p) return MHD_NO;
                memcpy(p + rq->len, upload_data, *upload_data_size);
                rq->body = p;
                rq->len += *upload_data_size;
                rq->body[rq->len] = 0;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    int ep = EP_OTHER, status = 0;
    enum MHD_Result ret;
    const int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    const char *allow = NULL;
    if (!strcmp(url, "/v1/recommend")) {
        ep = EP_RECOMMEND;
        allow = "POST";
    } else if (!strncmp(url, "/v1/items/", 10)) {
        ep = strstr(url + 10, "/poster") ? EP_POSTER : EP_ITEM;
        allow = "GET, HEAD";
    } else if (!strcmp(url, "/v1/items")) {
        ep = EP_SEARCH;
        allow = "GET, HEAD";
    } else if (!strcmp(url, "/healthz")) {
        ep = EP_HEALTHZ;
        allow = "GET, HEAD";
    } else if (!strcmp(url, "/metrics")) {
        ep = EP_METRICS;
        allow = "GET, HEAD";
    } else if (!strcmp(url, "/") || !strcmp(url, "/index.html")) {
        ep = EP_PAGE;
        allow = "GET, HEAD";
    }
    if (!s->accepting && ep == EP_RECOMMEND) {
        status = 503;
        ret = send_error_h(c, 503, "Connection", "close", "the server is shutting down");
    } else if (!allow) {
        status = 404;
        ret = send_error(c, 404, "no such path: %s %.200s (see GET / and docs/serve.md)", method, url);
    } else if ((ep == EP_RECOMMEND && strcmp(method, "POST")) || (ep != EP_RECOMMEND && !is_get)) {
        status = 405;
        ret = send_error_h(c, 405, "Allow", allow, "method %s is not allowed on %.200s (allowed: %s)", method, url,
                           allow);
    } else if (ep == EP_RECOMMEND) {
        ret = handle_recommend(s, c, rq, &status);
    } else if (ep == EP_ITEM || ep == EP_POSTER) {
        ret = handle_item(s, c, url + 10, &status);
    } else if (ep == EP_SEARCH) {
        ret = handle_search(s, c, &status);
    } else if (ep == EP_HEALTHZ) {
        ret = handle_healthz(s, c, &status);
    } else if (ep == EP_METRICS) {
        ret = handle_metrics(s, c, &status);
    } else {
        size_t n = strlen(mr_serve_page_html);
        char *body = malloc(n + 1);
        if (!body) return MHD_NO;
        memcpy(body, mr_serve_page_html, n + 1);
        status = 200;
        ret = send_body(c, 200, "text/html; charset=utf-8", body, n, "Content-Security-Policy",
                        "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self'");
    }
    (void)version;
    if (status) record(s, ep, status, mr_now() - rq->t0);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    server *s = cls;
    request *rq = *con_cls;
    (void)c;
    (void)toe;
    if (!rq) return;
    if (rq->counted) {
        pthread_mutex_lock(&s->mu);
        s->in_flight--;
        pthread_cond_broadcast(&s->idle);
        pthread_mutex_unlock(&s->mu);
    }
    free(rq->body);
    free(rq);
    *con_cls = NULL;
}

/* ------------------------------------------------------------------ setup */

static int load_image_map(server *s, const char *path, mr_error *e) {
    char *data;
    size_t len;
    int rc = mr_read_file(path, &data, &len, e);
    if (rc) return rc;
    const mr_dataset *d = &s->r->d;
    s->map_file = calloc((size_t)d->n_items + 1, sizeof *s->map_file);
    if (!s->map_file) {
        free(data);
        return mr_fail(e, MR_ERR_INTERNAL, "out of memory");
    }
    /* source_id -> item id by a sorted index would be faster; the map is read once */
    char *save = NULL;
    int line = 0;
    for (char *l = strtok_r(data, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        line++;
        size_t n = strlen(l);
        if (n && l[n - 1] == '\r') l[n - 1] = 0;
        char *tab = strchr(l, '\t');
        if (!tab) continue;
        *tab = 0;
        if (line == 1 && !strcmp(l, "source_id")) continue;
        for (int64_t id = 1; id <= d->n_items; id++)
            if (!strcmp(d->items[id].source_id, l)) {
                free(s->map_file[id]);
                s->map_file[id] = strdup(tab + 1);
                break;
            }
    }
    free(data);
    return MR_OK;
}

static void server_free(server *s) {
    if (s->lower_titles) {
        for (int64_t i = 0; i <= s->r->d.n_items; i++) free(s->lower_titles[i]);
        free(s->lower_titles);
    }
    if (s->map_file) {
        for (int64_t i = 0; i <= s->r->d.n_items; i++) free(s->map_file[i]);
        free(s->map_file);
    }
    free(s->images_real);
}

int mr_serve(const mr_recommender *r, const mr_serve_options *o, mr_error *e) {
    server *s = mr_calloc(1, sizeof *s, e);
    if (!s) return e->code;
    s->r = r;
    s->o = *o;
    if (s->o.threads < 1) s->o.threads = 1;
    if (s->o.max_batch < 1) s->o.max_batch = 1;
    if (s->o.max_queue < 0) s->o.max_queue = 0;
    int rc = MR_OK;
    s->lower_titles = calloc((size_t)r->d.n_items + 1, sizeof *s->lower_titles);
    if (!s->lower_titles) rc = mr_fail(e, MR_ERR_INTERNAL, "out of memory");
    for (int64_t i = 0; !rc && i <= r->d.n_items; i++) {
        const char *t = r->d.items[i].title ? r->d.items[i].title : "";
        s->lower_titles[i] = strdup(t);
        if (!s->lower_titles[i]) rc = mr_fail(e, MR_ERR_INTERNAL, "out of memory");
        else
            for (char *p = s->lower_titles[i]; *p; p++) *p = (char)tolower((unsigned char)*p);
    }
    if (!rc && o->images) {
        char real[PATH_MAX];
        if (!realpath(o->images, real) || !mr_is_dir(real))
            rc = mr_fail(e, MR_ERR_INPUT, "--images %s: not a readable folder", o->images);
        else if (!(s->images_real = strdup(real)))
            rc = mr_fail(e, MR_ERR_INTERNAL, "out of memory");
    }
    if (!rc && o->image_map) {
        rc = load_image_map(s, o->image_map, e);
        if (rc) mr_error_prefix(e, "--image-map: ");
    }
    /* the address */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    if (!rc) {
        int g = getaddrinfo(o->host, NULL, &hints, &ai);
        if (g || !ai) rc = mr_fail(e, MR_ERR_USAGE, "--host %s: %s", o->host, gai_strerror(g));
    }
    if (rc) {
        server_free(s);
        free(s);
        return rc;
    }
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof addr);
    memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    const int v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    if (v6) ((struct sockaddr_in6 *)&addr)->sin6_port = htons((uint16_t)o->port);
    else ((struct sockaddr_in *)&addr)->sin_port = htons((uint16_t)o->port);

    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work_rq, NULL);
    pthread_cond_init(&s->work_llm, NULL);
    pthread_cond_init(&s->idle, NULL);
    s->accepting = 1;
    /* the retriever workers call BLAS concurrently, one thread each */
    openblas_set_num_threads(1);
    pthread_t *workers = calloc((size_t)s->o.threads + 1, sizeof *workers);
    int n_workers = 0, have_llm = 0;
    pthread_t llm_thread;
    if (!workers) rc = mr_fail(e, MR_ERR_INTERNAL, "out of memory");
    for (int i = 0; !rc && i < s->o.threads; i++) {
        if (pthread_create(&workers[i], NULL, retriever_worker, s)) rc = mr_fail(e, MR_ERR_INTERNAL, "pthread_create failed");
        else n_workers++;
    }
    if (!rc && r->rr) {
        if (pthread_create(&llm_thread, NULL, llm_worker, s)) {
            rc = mr_fail(e, MR_ERR_INTERNAL, "pthread_create failed");
        } else {
            have_llm = 1;
            pthread_mutex_lock(&s->mu);
            while (!s->llm_ready) pthread_cond_wait(&s->idle, &s->mu);
            if (s->llm_ready < 0) {
                *e = s->llm_err;
                rc = e->code ? e->code : MR_ERR_INTERNAL;
                mr_error_prefix(e, "LLM worker: ");
            }
            pthread_mutex_unlock(&s->mu);
        }
    }
    struct MHD_Daemon *d = NULL;
    if (!rc) {
        unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                         (v6 ? MHD_USE_IPv6 : 0);
        d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &addr,
                             MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT,
                             (unsigned)CONNECTION_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                             MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024), MHD_OPTION_END);
        if (!d) rc = mr_fail(e, MR_ERR_INPUT, "cannot listen on %s port %d: %s", o->host, o->port, strerror(errno));
    }
    if (!rc) {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
        int port = di ? di->port : o->port;
        if (o->on_ready) o->on_ready(o->ready_ctx, port);
        while (!*o->stop) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
        /* stop accepting, then let what is in flight finish (bounded by the timeout) */
        MHD_socket lfd = MHD_quiesce_daemon(d);
        if (lfd != MHD_INVALID_SOCKET) close(lfd);
        pthread_mutex_lock(&s->mu);
        s->accepting = 0;
        const double until = mr_now() + s->o.timeout_ms / 1000.0 + 1.0;
        while (s->in_flight > 0 && mr_now() < until) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&s->idle, &s->mu, &ts);
        }
        pthread_mutex_unlock(&s->mu);
    }
    if (d) MHD_stop_daemon(d);
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->work_rq);
    pthread_cond_broadcast(&s->work_llm);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n_workers; i++) pthread_join(workers[i], NULL);
    if (have_llm) pthread_join(llm_thread, NULL);
    free(workers);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work_rq);
    pthread_cond_destroy(&s->work_llm);
    pthread_cond_destroy(&s->idle);
    server_free(s);
    free(s);
    return rc;
}
