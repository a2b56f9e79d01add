/* Retriever evaluation (any architecture, through m->arch): scores at each user's last position (only that position's
 * item scores are computed), history masking, metrics, candidate export. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

int rt_score_users(const rt_model *m, const mr_dataset *d, int split, lru_user_fn fn, void *ctx, mr_error *e) {
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
    int64_t u = 1;
    while (!rc && u <= d->n_users) {
        int ns = 0, nr = 0;
        seq_start[0] = 0;
        for (; u <= d->n_users && ns < EVAL_CHUNK; u++) {
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
        if (!ns) break;
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

typedef struct metrics_ctx {
    mr_metrics *m;
    int64_t n_scores;
} metrics_ctx;

static int add_metrics(void *ctx, int64_t user, int32_t target, const float *scores, const int32_t *hist, int n_hist,
                       mr_error *e) {
    metrics_ctx *c = ctx;
    (void)user;
    /* the scores already carry the mask; the metric masks the same ids again by its own rule */
    return mr_metrics_add_item_scores(c->m, scores, c->n_scores, hist, n_hist, &target, 1, e);
}

int rt_evaluate(const rt_model *m, const mr_dataset *d, int split, mr_metrics *out, mr_error *e) {
    int rc = mr_metrics_init(out, MR_METRICS_DEFAULT_KS, MR_METRICS_N_DEFAULT_KS, e);
    if (rc) return rc;
    metrics_ctx c = {out, (int64_t)m->cfg.n_items + 1};
    rc = rt_score_users(m, d, split, add_metrics, &c, e);
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
    rc = mr_write_file_atomic(path, buf, len + 1, e);
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
    FILE *f;
    const char *split;
    int k, V;
    int32_t *ids;
    float *vals;
} cand_ctx;

/* better(a, b): higher score first, then the lower id */
static inline int better(float sa, int32_t ia, float sb, int32_t ib) { return sa > sb || (sa == sb && ia < ib); }

static int write_candidate_row(void *ctx, int64_t user, int32_t target, const float *scores, const int32_t *hist,
                               int n_hist, mr_error *e) {
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
    fprintf(c->f, "%s\t%lld\t%d\t", c->split, (long long)user, (int)target);
    for (int i = 0; i < n; i++) fprintf(c->f, i ? ",%d" : "%d", (int)c->ids[i]);
    fputc('\t', c->f);
    for (int i = 0; i < n; i++) fprintf(c->f, i ? ",%.9g" : "%.9g", (double)c->vals[i]);
    if (fputc('\n', c->f) == EOF) return mr_fail(e, MR_ERR_INPUT, "write failed"); /* the caller names the file */
    return MR_OK;
}

int rt_write_candidates(const rt_model *m, const mr_dataset *d, const char *path, int k, mr_error *e) {
    if (k < 1 || k > 10000) return mr_fail(e, MR_ERR_USAGE, "-k must be in 1..10000 (got %d)", k);
    mr_atomic_file af;
    int rc = mr_atomic_open(&af, path, e);
    if (rc) return rc;
    cand_ctx c = {af.f, "val", k, m->cfg.n_items + 1, mr_alloc((size_t)k * sizeof(int32_t), e),
                  mr_alloc((size_t)k * sizeof(float), e)};
    if (!c.ids || !c.vals) rc = MR_ERR_INTERNAL;
    if (!rc) fprintf(af.f, "split\tuser_id\tlabel\titems\tscores\n");
    if (!rc) rc = rt_score_users(m, d, 0, write_candidate_row, &c, e);
    c.split = "test";
    if (!rc) rc = rt_score_users(m, d, 1, write_candidate_row, &c, e);
    free(c.ids);
    free(c.vals);
    if (rc && ferror(af.f)) return mr_atomic_fail(&af, e); /* names the file and the cause */
    if (rc) {
        mr_atomic_abort(&af);
        return rc;
    }
    return mr_atomic_commit(&af, e);
}
