/* The recommender: dataset + retriever of any architecture (+ the LLM ranker) loaded once;
 * retriever ranking of a batch of histories in one forward; the result JSON. */
#include "mllm4rec/serve.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void mr_rec_options_default(mr_rec_options *o) {
    memset(o, 0, sizeof *o);
    o->templ = "mllm4rec";
    o->history = 20;
    o->max_title_tokens = 32;
    o->max_tokens = 1536;
    o->num_candidates = 20;
}

/* rerank.c */
int mr_reranker_open(mr_recommender *r, const mr_rec_options *o, mr_error *e);
void mr_reranker_close(mr_recommender *r);

int mr_recommender_open(mr_recommender *r, const mr_rec_options *o, mr_error *e) {
    memset(r, 0, sizeof *r);
    if (!o->dataset || !o->retriever_run) return mr_fail(e, MR_ERR_USAGE, "a dataset and a retriever run are required");
    if (o->num_candidates < 1 || o->num_candidates > 26)
        return mr_fail(e, MR_ERR_USAGE, "--num-candidates %d: letters A..Z allow 1..26", o->num_candidates);
    r->num_candidates = o->num_candidates;
    int rc = mr_dataset_load(&r->d, o->dataset, e);
    if (rc) return rc;
    r->have_d = 1;
    char *p = mr_is_dir(o->retriever_run) ? mr_path_join(o->retriever_run, "retriever.safetensors", e)
                                          : mr_strdup(o->retriever_run, e);
    if (!p) goto fail;
    /* the architecture comes from the file (rt_model_load reads it) */
    rc = rt_model_load(&r->rt, p, e);
    if (rc) {
        mr_error_prefix(e, "retriever %s: ", p);
        free(p);
        goto fail;
    }
    r->have_rt = 1;
    if ((int64_t)r->rt.cfg.n_items != r->d.n_items) {
        rc = mr_fail(e, MR_ERR_INPUT, "retriever %s has %d items but dataset %s has %lld", p, r->rt.cfg.n_items,
                     o->dataset, (long long)r->d.n_items);
        free(p);
        goto fail;
    }
    free(p);
    if (o->model && (rc = mr_reranker_open(r, o, e))) goto fail;
    return MR_OK;
fail:
    rc = e->code ? e->code : MR_ERR_INTERNAL;
    mr_recommender_close(r);
    return rc;
}

void mr_recommender_close(mr_recommender *r) {
    mr_reranker_close(r);
    if (r->have_rt) rt_model_free(&r->rt);
    if (r->have_d) mr_dataset_free(&r->d);
    memset(r, 0, sizeof *r);
}

int mr_rec_user_history(const mr_recommender *r, int64_t user_id, const int32_t **hist, int *n, mr_error *e) {
    if (user_id < 1 || user_id > r->d.n_users)
        return mr_fail(e, MR_ERR_INPUT, "unknown user_id %lld (users are 1..%lld)", (long long)user_id,
                       (long long)r->d.n_users);
    *hist = r->d.seqs[user_id];
    *n = r->d.seq_len[user_id];
    /* a known user's whole sequence is the history, however long (the retriever
     * reads its last max_len items; all of it is masked) */
    if (*n < 1) return mr_fail(e, MR_ERR_INPUT, "user_id %lld has no items", (long long)user_id);
    return MR_OK;
}

int mr_rec_check_history(const mr_recommender *r, const int32_t *hist, int n, mr_error *e) {
    if (n < 1) return mr_fail(e, MR_ERR_USAGE, "history is empty (it needs 1..%d item ids)", MR_REC_MAX_HISTORY);
    if (n > MR_REC_MAX_HISTORY)
        return mr_fail(e, MR_ERR_USAGE, "history holds %d item ids, more than %d", n, MR_REC_MAX_HISTORY);
    for (int i = 0; i < n; i++)
        if (hist[i] < 1 || hist[i] > r->d.n_items)
            return mr_fail(e, MR_ERR_INPUT, "history[%d]: unknown item_id %d (items are 1..%lld)", i, hist[i],
                           (long long)r->d.n_items);
    return MR_OK;
}

struct mr_rec_ws {
    int max_batch, L, V;
    const rt_arch *arch; /* the one that made acts */
    void *acts;
    float *scores;   /* [max_batch, V] */
    int32_t *tokens; /* [max_batch * L] */
    int *seq_start;  /* [max_batch + 1] */
};

mr_rec_ws *mr_rec_ws_new(const mr_recommender *r, int max_batch, mr_error *e) {
    if (max_batch < 1) max_batch = 1;
    mr_rec_ws *w = mr_calloc(1, sizeof *w, e);
    if (!w) return NULL;
    w->max_batch = max_batch;
    w->L = r->rt.cfg.max_len;
    w->V = r->rt.cfg.n_items + 1;
    w->arch = r->rt.arch;
    int rc = w->arch->acts_create(&w->acts, &r->rt, max_batch * w->L, max_batch, e);
    if (!rc) {
        w->scores = mr_alloc_aligned((size_t)max_batch * w->V * sizeof(float), e);
        w->tokens = mr_alloc((size_t)max_batch * w->L * sizeof(int32_t), e);
        w->seq_start = mr_alloc((size_t)(max_batch + 1) * sizeof(int), e);
    }
    if (rc || !w->scores || !w->tokens || !w->seq_start) {
        mr_rec_ws_free(w);
        return NULL;
    }
    return w;
}

void mr_rec_ws_free(mr_rec_ws *w) {
    if (!w) return;
    if (w->acts) w->arch->acts_free(w->acts);
    free(w->scores);
    free(w->tokens);
    free(w->seq_start);
    free(w);
}

/* a is ranked before b: higher score, then lower id */
static int before(float sa, int32_t ia, float sb, int32_t ib) { return sa > sb || (sa == sb && ia < ib); }

/* The best `depth` finite entries of row[1..V-1], best first, by a min-heap whose
 * root is the worst kept item. Returns the count. */
static int top_items(const float *row, int V, int depth, mr_rec_item *out) {
    int n = 0;
    for (int32_t id = 1; id < V; id++) {
        float s = row[id];
        if (!(s > -INFINITY)) continue; /* masked (or NaN) */
        if (n == depth && !before(s, id, out[0].score, out[0].item_id)) continue;
        int i;
        if (n < depth) {
            i = n++; /* sift up from the new leaf */
            while (i > 0) {
                int p = (i - 1) / 2;
                if (!before(out[p].score, out[p].item_id, s, id)) break;
                out[i] = out[p];
                i = p;
            }
        } else {
            i = 0; /* replace the root, sift down */
            for (;;) {
                int c = 2 * i + 1;
                if (c >= n) break;
                if (c + 1 < n && before(out[c].score, out[c].item_id, out[c + 1].score, out[c + 1].item_id)) c++;
                if (!before(s, id, out[c].score, out[c].item_id)) break;
                out[i] = out[c];
                i = c;
            }
        }
        out[i].item_id = id;
        out[i].score = s;
    }
    /* heap -> best first: repeatedly move the worst to the end */
    for (int end = n - 1; end > 0; end--) {
        mr_rec_item worst = out[0];
        mr_rec_item last = out[end];
        int i = 0;
        for (;;) {
            int c = 2 * i + 1;
            if (c >= end) break;
            if (c + 1 < end && before(out[c].score, out[c].item_id, out[c + 1].score, out[c + 1].item_id)) c++;
            if (!before(last.score, last.item_id, out[c].score, out[c].item_id)) break;
            out[i] = out[c];
            i = c;
        }
        out[i] = last;
        out[end] = worst;
    }
    return n;
}

int mr_rec_retrieve(const mr_recommender *r, mr_rec_ws *w, const mr_rec_query *q, int n, mr_rec_result *out,
                    mr_error *e) {
    if (n < 1 || n > w->max_batch) return mr_fail(e, MR_ERR_INTERNAL, "retrieve: batch of %d (1..%d)", n, w->max_batch);
    const int L = w->L, V = w->V;
    int nr = 0;
    w->seq_start[0] = 0;
    for (int s = 0; s < n; s++) {
        if (q[s].n_hist < 1 || q[s].depth < 1 || q[s].depth > MR_REC_MAX_K)
            return mr_fail(e, MR_ERR_INTERNAL, "retrieve: query %d has %d items and depth %d", s, q[s].n_hist,
                           q[s].depth);
        /* the last L items: the reference's left padding never reaches the last position */
        int take = q[s].n_hist < L ? q[s].n_hist : L;
        memcpy(w->tokens + nr, q[s].hist + q[s].n_hist - take, (size_t)take * sizeof(int32_t));
        nr += take;
        w->seq_start[s + 1] = nr;
    }
    rt_batch b = {.n_seqs = n, .n_rows = nr, .seq_start = w->seq_start, .tokens = w->tokens, .labels = NULL};
    r->rt.arch->scores_last(&r->rt, w->acts, &b, w->scores);
    for (int s = 0; s < n; s++) {
        float *row = w->scores + (size_t)s * V;
        row[0] = -INFINITY;
        for (int i = 0; i < q[s].n_hist; i++)
            if (q[s].hist[i] > 0 && q[s].hist[i] < V) row[q[s].hist[i]] = -INFINITY;
        out[s].ranked_by_llm = 0;
        out[s].n = top_items(row, V, q[s].depth, out[s].items);
        for (int i = 0; i < out[s].n; i++) out[s].items[i].retriever_rank = i + 1;
    }
    return MR_OK;
}

int mr_recommend(const mr_recommender *r, mr_rec_ws *w, mr_rerank_ws *rw, const int32_t *hist, int n_hist, int k,
                 int rerank, mr_rec_result *res, mr_error *e) {
    double t0 = mr_now();
    if (k < 1 || k > MR_REC_MAX_K) return mr_fail(e, MR_ERR_USAGE, "k %d is out of range (1..%d)", k, MR_REC_MAX_K);
    /* the length limit is the caller's (it applies to histories people send, not
     * to a known user's sequence) */
    if (n_hist < 1) return mr_fail(e, MR_ERR_USAGE, "history is empty");
    for (int i = 0; i < n_hist; i++)
        if (hist[i] < 1 || hist[i] > r->d.n_items)
            return mr_fail(e, MR_ERR_INPUT, "history[%d]: unknown item_id %d (items are 1..%lld)", i, hist[i],
                           (long long)r->d.n_items);
    int rc;
    if (rerank && !r->rr) return mr_fail(e, MR_ERR_USAGE, "rerank asked for but no LLM is loaded");
    mr_rec_query q = {hist, n_hist, rerank && r->num_candidates > k ? r->num_candidates : k};
    if ((rc = mr_rec_retrieve(r, w, &q, 1, res, e))) return rc;
    if (rerank && (rc = mr_rerank(r, rw, hist, n_hist, k, res, e))) return rc;
    if (res->n > k) res->n = k;
    res->took_ms = (mr_now() - t0) * 1e3;
    return MR_OK;
}

int mr_rec_result_json(const mr_recommender *r, const mr_rec_result *res, char **out, size_t *len, mr_error *e) {
    *out = NULL;
    json_t *o = json_object(), *items = json_array();
    if (!o || !items) {
        json_decref(o);
        json_decref(items);
        return mr_fail(e, MR_ERR_INTERNAL, "out of memory");
    }
    json_object_set_new(o, "items", items);
    for (int i = 0; i < res->n; i++) {
        const mr_rec_item *it = &res->items[i];
        const mr_item *m = &r->d.items[it->item_id];
        json_t *x = json_object();
        if (!x) break;
        json_object_set_new(x, "item_id", json_integer(it->item_id));
        json_object_set_new(x, "title", json_string(m->title ? m->title : ""));
        json_object_set_new(x, "caption", json_string(m->caption ? m->caption : ""));
        json_object_set_new(x, "score", json_real(isfinite(it->score) ? it->score : 0.0));
        json_object_set_new(x, "retriever_rank", json_integer(it->retriever_rank));
        json_array_append_new(items, x);
    }
    json_object_set_new(o, "ranked_by", json_string(res->ranked_by_llm ? "llm" : "retriever"));
    json_object_set_new(o, "took_ms", json_real(res->took_ms));
    const size_t n_written = json_array_size(items);
    *out = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!*out || n_written != (size_t)res->n) {
        free(*out);
        *out = NULL;
        return mr_fail(e, MR_ERR_INTERNAL, "out of memory writing JSON");
    }
    if (len) *len = strlen(*out);
    return MR_OK;
}
