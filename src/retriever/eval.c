/* Retriever evaluation (any architecture, through m->arch): scores at each user's last position (only that position's
 * item scores are computed), history masking, metrics, candidate export. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/dist.h"
#include "mllm4rec/retriever.h"

/* Users scored together: bounds the [users x items] score block and the activations. */
#define EVAL_CHUNK 128

void lru_user_history(const mr_dataset *d, int64_t user, int split, const int32_t **hist, int *n,
                      int32_t *target) {
    int len = d->seq_len[user];
    int n_hist = split == 0 ? len - 2 : len - 1;
    *hist = d->seqs[user];
    if (n_hist < 1) {
        *n = 0;
        *target = 0;
        return;
    }
    *n = n_hist;
    *target = d->seqs[user][n_hist];
}

/* rt_score_users over the users u_lo..u_hi only. */
static int score_user_range(const rt_model *m, const mr_dataset *d, int split, int64_t u_lo, int64_t u_hi,
                            lru_user_fn fn, void *ctx, mr_error *e) {
    int L = m->cfg.max_len, V = m->cfg.n_items + 1;
    if ((int64_t)m->cfg.n_items != d->n_items)
        return mr_fail(e, MR_ERR_INPUT, "the model has %d items but dataset %s has %lld", m->cfg.n_items, d->dir,
                       (long long)d->n_items);
    void *a = NULL;
    int rc = m->arch->acts_create(&a, m, EVAL_CHUNK * L, EVAL_CHUNK, e);
    if (rc) return rc;
    float *scores = mr_alloc_aligned((size_t)EVAL_CHUNK * V * sizeof(float), e);
    int32_t *tokens = mr_alloc((size_t)EVAL_CHUNK * L * sizeof(int32_t), e);
    int *seq_start = mr_alloc((EVAL_CHUNK + 1) * sizeof(int), e);
    int64_t *users = mr_alloc(EVAL_CHUNK * sizeof(int64_t), e);
    int32_t *targets = mr_alloc(EVAL_CHUNK * sizeof(int32_t), e);
    if (!scores || !tokens || !seq_start || !users || !targets) rc = MR_ERR_INTERNAL;
    /* Batches are the blocks of EVAL_CHUNK consecutive user ids (1-128, 129-256, ...),
     * whatever the range: a user's scores then come from the same batch, so the same
     * products of the same shapes, in one process and under mpirun (BLAS may sum a
     * row in another order when the batch has another number of rows). */
    int64_t u = u_lo;
    while (!rc && u <= u_hi) {
        const int64_t chunk_end = ((u - 1) / EVAL_CHUNK + 1) * EVAL_CHUNK;
        int ns = 0, nr = 0;
        seq_start[0] = 0;
        for (; u <= u_hi && u <= chunk_end; u++) {
            const int32_t *h;
            int n;
            int32_t target;
            lru_user_history(d, u, split, &h, &n, &target);
            if (n < 1) continue;
            /* the last L items; the reference's left padding never reaches the last position */
            int take = n < L ? n : L;
            memcpy(tokens + nr, h + n - take, (size_t)take * sizeof(int32_t));
            nr += take;
            users[ns] = u;
            targets[ns] = target;
            seq_start[++ns] = nr;
        }
        if (!ns) continue;
        rt_batch b = {.n_seqs = ns, .n_rows = nr, .seq_start = seq_start, .tokens = tokens, .labels = NULL};
        m->arch->scores_last(m, a, &b, scores);
        /* mask the padding item and the whole history */
#pragma omp parallel for schedule(static)
        for (int s = 0; s < ns; s++) {
            const int32_t *h;
            int n;
            int32_t target;
            lru_user_history(d, users[s], split, &h, &n, &target);
            float *row = scores + (size_t)s * V;
            row[0] = -INFINITY;
            for (int i = 0; i < n; i++)
                if (h[i] > 0 && h[i] < V) row[h[i]] = -INFINITY;
        }
        for (int s = 0; s < ns && !rc; s++) {
            const int32_t *h;
            int n;
            int32_t target;
            lru_user_history(d, users[s], split, &h, &n, &target);
            rc = fn(ctx, users[s], targets[s], scores + (size_t)s * V, h, n, e);
        }
    }
    free(scores);
    free(tokens);
    free(seq_start);
    free(users);
    free(targets);
    if (a) m->arch->acts_free(a);
    return rc;
}

int rt_score_users(const rt_model *m, const mr_dataset *d, int split, lru_user_fn fn, void *ctx, mr_error *e) {
    return score_user_range(m, d, split, 1, d->n_users, fn, ctx, e);
}

/* ---- the same, shared among the ranks of an mpirun job (mllm4rec/dist.h) ----
 * Each rank scores its block of user ids; make_fn turns a user's scores into a
 * record (bytes appended to a buffer); the records are gathered in user order
 * (on every rank with to_all, else on rank 0) and use_fn takes them one by one
 * there. One process runs the same path, so the files are the same bytes. */
typedef struct rec_buf {
    char *p;
    size_t n, cap;
} rec_buf;

static int rec_put(rec_buf *b, const void *data, size_t len, mr_error *e) {
    if (b->n + len > b->cap) {
        size_t c = b->cap ? b->cap : 1 << 16;
        while (c < b->n + len) c *= 2;
        char *np = mr_realloc(b->p, c, e);
        if (!np) return MR_ERR_INTERNAL;
        b->p = np;
        b->cap = c;
    }
    memcpy(b->p + b->n, data, len);
    b->n += len;
    return MR_OK;
}

/* A record: its length (uint32) then its bytes; make_fn writes the bytes of one. */
typedef int (*rec_make_fn)(void *ctx, int64_t user, int32_t target, const float *scores, const int32_t *hist,
                           int n_hist, rec_buf *out, mr_error *e);
typedef int (*rec_use_fn)(void *ctx, const char *rec, size_t len, mr_error *e);
typedef struct shard_ctx {
    rec_make_fn make;
    void *make_ctx;
    rec_buf buf;
} shard_ctx;

static int shard_user(void *vctx, int64_t user, int32_t target, const float *scores, const int32_t *hist, int n_hist,
                      mr_error *e) {
    shard_ctx *c = vctx;
    size_t at = c->buf.n;
    uint32_t len = 0;
    int rc = rec_put(&c->buf, &len, sizeof len, e);
    if (!rc) rc = c->make(c->make_ctx, user, target, scores, hist, n_hist, &c->buf, e);
    if (rc) return rc;
    len = (uint32_t)(c->buf.n - at - sizeof len);
    memcpy(c->buf.p + at, &len, sizeof len);
    return MR_OK;
}

static int score_users_sharded(const rt_model *m, const mr_dataset *d, int split, rec_make_fn make, void *make_ctx,
                               int to_all, rec_use_fn use, void *use_ctx, mr_error *e) {
    /* each rank takes whole batches of score_user_range (see there) */
    int64_t first_chunk, n_chunks, first, count;
    mr_dist_block((d->n_users + EVAL_CHUNK - 1) / EVAL_CHUNK, &first_chunk, &n_chunks);
    first = first_chunk * EVAL_CHUNK < d->n_users ? first_chunk * EVAL_CHUNK : d->n_users;
    count = (first_chunk + n_chunks) * EVAL_CHUNK < d->n_users ? n_chunks * EVAL_CHUNK : d->n_users - first;
    shard_ctx sc = {make, make_ctx, {0}};
    int rc = count > 0 ? score_user_range(m, d, split, first + 1, first + count, shard_user, &sc, e) : MR_OK;
    char *all = NULL;
    size_t n_all = 0;
    if (!rc) rc = mr_dist_gather(sc.buf.p, sc.buf.n, to_all, &all, &n_all, e);
    free(sc.buf.p);
    for (size_t off = 0; !rc && off < n_all;) {
        uint32_t len;
        if (n_all - off < sizeof len) {
            rc = mr_fail(e, MR_ERR_INTERNAL, "retriever: a cut record");
            break;
        }
        memcpy(&len, all + off, sizeof len);
        off += sizeof len;
        if (len > n_all - off) rc = mr_fail(e, MR_ERR_INTERNAL, "retriever: a cut record");
        else rc = use(use_ctx, all + off, len, e);
        off += len;
    }
    free(all);
    return rc;
}

/* A user's record: its metric values (sum[kind][k] of a one-user accumulator), added
 * to the split's metrics in user order by the rank(s) that gather them. */
typedef struct metrics_ctx {
    mr_metrics *m, one;
    int64_t n_scores;
} metrics_ctx;

static int user_metrics(void *ctx, int64_t user, int32_t target, const float *scores, const int32_t *hist, int n_hist,
                        rec_buf *out, mr_error *e) {
    metrics_ctx *c = ctx;
    (void)user;
    mr_metrics_reset(&c->one);
    /* the scores already carry the mask; the metric masks the same ids again by its own rule */
    int rc = mr_metrics_add_item_scores(&c->one, scores, c->n_scores, hist, n_hist, &target, 1, e);
    for (int kind = 0; kind < 3 && !rc; kind++)
        rc = rec_put(out, c->one.sum[kind], sizeof(double) * (size_t)c->one.n_ks, e);
    return rc;
}

static int add_user_metrics(void *ctx, const char *rec, size_t len, mr_error *e) {
    metrics_ctx *c = ctx;
    const size_t per = sizeof(double) * (size_t)c->m->n_ks;
    if (len != 3 * per) return mr_fail(e, MR_ERR_INTERNAL, "retriever: a metrics record of %zu bytes", len);
    for (int kind = 0; kind < 3; kind++)
        for (int ki = 0; ki < c->m->n_ks; ki++) {
            double v;
            memcpy(&v, rec + (size_t)kind * per + sizeof(double) * (size_t)ki, sizeof v);
            c->m->sum[kind][ki] += v;
        }
    c->m->n_users++;
    return MR_OK;
}

int rt_evaluate(const rt_model *m, const mr_dataset *d, int split, mr_metrics *out, mr_error *e) {
    int rc = mr_metrics_init(out, MR_METRICS_DEFAULT_KS, MR_METRICS_N_DEFAULT_KS, e);
    if (rc) return rc;
    metrics_ctx c = {out, {0}, (int64_t)m->cfg.n_items + 1};
    rc = mr_metrics_init(&c.one, MR_METRICS_DEFAULT_KS, MR_METRICS_N_DEFAULT_KS, e);
    if (!rc) rc = score_users_sharded(m, d, split, user_metrics, &c, 1, add_user_metrics, &c, e);
    mr_metrics_free(&c.one);
    if (rc) mr_metrics_free(out);
    return rc;
}

static json_t *metrics_section(const mr_metrics *m) {
    json_t *o = mr_metrics_to_json(m);
    if (!o) return NULL;
    json_object_set_new(o, "users", json_integer(m->n_users));
    /* with one relevant item, Recall@20 is the share of users whose item is in the top 20 */
    json_object_set_new(o, "top20_share", json_real(mr_metrics_get(m, MR_RECALL, 20)));
    return o;
}

int rt_write_metrics(const rt_model *m, const mr_dataset *d, const char *path, mr_metrics *val,
                      mr_metrics *test, mr_error *e) {
    int rc = rt_evaluate(m, d, 0, val, e);
    if (rc) return rc;
    rc = rt_evaluate(m, d, 1, test, e);
    if (rc) {
        mr_metrics_free(val);
        return rc;
    }
    json_t *root = json_object();
    json_t *v = metrics_section(val), *t = metrics_section(test);
    char *text = NULL, *buf = NULL;
    if (!root || !v || !t) {
        json_decref(root);
        json_decref(v);
        json_decref(t);
        rc = mr_fail(e, MR_ERR_INTERNAL, "out of memory building %s", path);
        goto fail;
    }
    json_object_set_new(root, "val", v);
    json_object_set_new(root, "test", t);
    text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(root);
    if (!text) {
        rc = mr_fail(e, MR_ERR_INTERNAL, "out of memory writing %s", path);
        goto fail;
    }
    size_t len = strlen(text);
    if (!(buf = mr_alloc(len + 2, e))) {
        rc = MR_ERR_INTERNAL;
        goto fail;
    }
    memcpy(buf, text, len);
    buf[len] = '\n';
    rc = mr_dist_rank() == 0 ? mr_write_file_atomic(path, buf, len + 1, e) : MR_OK; /* rank 0 alone writes */
fail:
    free(text);
    free(buf);
    if (rc) { /* val and test are the caller's only on success */
        mr_metrics_free(val);
        mr_metrics_free(test);
    }
    return rc;
}

typedef struct cand_ctx {
    FILE *f; /* rank 0's candidates.tsv; NULL on the others */
    const char *split;
    int k, V;
    int32_t *ids;
    float *vals;
} cand_ctx;

/* better(a, b): higher score first, then the lower id */
static inline int better(float sa, int32_t ia, float sb, int32_t ib) { return sa > sb || (sa == sb && ia < ib); }

/* A user's record: the row of candidates.tsv, newline included. */
static int candidate_row(void *ctx, int64_t user, int32_t target, const float *scores, const int32_t *hist,
                         int n_hist, rec_buf *out, mr_error *e) {
    cand_ctx *c = ctx;
    (void)hist;
    (void)n_hist;
    int n = 0;
    /* insertion into a sorted top-k list; most items fail the first comparison */
    for (int32_t id = 1; id < c->V; id++) {
        float s = scores[id];
        if (s == -INFINITY || isnan(s)) continue;
        if (n == c->k && !better(s, id, c->vals[n - 1], c->ids[n - 1])) continue;
        int pos = n < c->k ? n++ : c->k - 1;
        while (pos > 0 && better(s, id, c->vals[pos - 1], c->ids[pos - 1])) {
            c->vals[pos] = c->vals[pos - 1];
            c->ids[pos] = c->ids[pos - 1];
            pos--;
        }
        c->vals[pos] = s;
        c->ids[pos] = id;
    }
    char t[64];
    int rc = rec_put(out, t, (size_t)snprintf(t, sizeof t, "%s\t%lld\t%d\t", c->split, (long long)user, (int)target), e);
    for (int i = 0; i < n && !rc; i++) rc = rec_put(out, t, (size_t)snprintf(t, sizeof t, i ? ",%d" : "%d", (int)c->ids[i]), e);
    if (!rc) rc = rec_put(out, "\t", 1, e);
    for (int i = 0; i < n && !rc; i++)
        rc = rec_put(out, t, (size_t)snprintf(t, sizeof t, i ? ",%.9g" : "%.9g", (double)c->vals[i]), e);
    if (!rc) rc = rec_put(out, "\n", 1, e);
    return rc;
}

static int write_candidate_row(void *ctx, const char *rec, size_t len, mr_error *e) {
    cand_ctx *c = ctx;
    if (fwrite(rec, 1, len, c->f) != len) return mr_fail(e, MR_ERR_INPUT, "write failed"); /* the caller names the file */
    return MR_OK;
}

int rt_write_candidates(const rt_model *m, const mr_dataset *d, const char *path, int k, mr_error *e) {
    if (k < 1 || k > 10000) return mr_fail(e, MR_ERR_USAGE, "-k must be in 1..10000 (got %d)", k);
    /* under mpirun rank 0 alone writes (mllm4rec/dist.h); the others score their share */
    const int writer = mr_dist_rank() == 0;
    mr_atomic_file af = {0};
    int rc = writer ? mr_atomic_open(&af, path, e) : MR_OK;
    if (rc) return rc;
    cand_ctx c = {af.f, "val", k, m->cfg.n_items + 1, mr_alloc((size_t)k * sizeof(int32_t), e),
                  mr_alloc((size_t)k * sizeof(float), e)};
    if (!c.ids || !c.vals) rc = MR_ERR_INTERNAL;
    if (!rc && writer) fprintf(af.f, "split\tuser_id\tlabel\titems\tscores\n");
    if (!rc) rc = score_users_sharded(m, d, 0, candidate_row, &c, 0, write_candidate_row, &c, e);
    c.split = "test";
    if (!rc) rc = score_users_sharded(m, d, 1, candidate_row, &c, 0, write_candidate_row, &c, e);
    free(c.ids);
    free(c.vals);
    if (!writer) return rc;
    if (rc && ferror(af.f)) return mr_atomic_fail(&af, e); /* names the file and the cause */
    if (rc) {
        mr_atomic_abort(&af);
        return rc;
    }
    return mr_atomic_commit(&af, e);
}
