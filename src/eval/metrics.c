/* Recall / MRR / NDCG at several ks, averaged per user; see mllm4rec/metrics.h. */
#include "mllm4rec/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const int MR_METRICS_DEFAULT_KS[MR_METRICS_N_DEFAULT_KS] = {1, 5, 10, 20, 50};

static const char *const KIND_NAMES[3] = {"Recall", "MRR", "NDCG"};

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int mr_metrics_init(mr_metrics *m, const int *ks, int n_ks, mr_error *e) {
    memset(m, 0, sizeof *m);
    if (n_ks <= 0 || n_ks > MR_METRICS_MAX_KS)
        return mr_fail(e, MR_ERR_USAGE, "metrics: need 1 to %d values of k, got %d", MR_METRICS_MAX_KS, n_ks);
    int sorted[MR_METRICS_MAX_KS];
    memcpy(sorted, ks, (size_t)n_ks * sizeof *ks);
    qsort(sorted, (size_t)n_ks, sizeof *sorted, cmp_int);
    for (int i = 0; i < n_ks; i++) {
        if (sorted[i] <= 0) return mr_fail(e, MR_ERR_USAGE, "metrics: k must be positive, got %d", sorted[i]);
        if (m->n_ks > 0 && m->ks[m->n_ks - 1] == sorted[i]) continue;
        m->ks[m->n_ks++] = sorted[i];
    }
    return MR_OK;
}

void mr_metrics_free(mr_metrics *m) {
    free(m->mask_flags);
    m->mask_flags = NULL;
    m->mask_cap = 0;
}

void mr_metrics_reset(mr_metrics *m) {
    memset(m->sum, 0, sizeof m->sum);
    m->n_users = 0;
}

void mr_metrics_add_ranks(mr_metrics *m, const int64_t *ranks, int n_relevant) {
    m->n_users++;
    if (n_relevant <= 0) return; /* nothing to find: every metric is 0 for this user */
    for (int ki = 0; ki < m->n_ks; ki++) {
        int64_t k = m->ks[ki];
        double hits = 0, rr = 0, dcg = 0, idcg = 0;
        for (int i = 0; i < n_relevant; i++) {
            int64_t p = ranks[i];
            if (p < 1 || p > k) continue;
            hits += 1;
            rr += 1.0 / (double)p;
            dcg += 1.0 / log2((double)p + 1.0);
        }
        int64_t ideal = n_relevant < k ? n_relevant : k;
        for (int64_t i = 1; i <= ideal; i++) idcg += 1.0 / log2((double)i + 1.0);
        m->sum[MR_RECALL][ki] += hits / (double)ideal;
        m->sum[MR_MRR][ki] += rr;
        m->sum[MR_NDCG][ki] += dcg / idcg;
    }
}

/* Marks ids in the scratch flags (grown to n); returns 0 or an error. */
static int ensure_flags(mr_metrics *m, int64_t n, mr_error *e) {
    if (m->mask_cap >= n) return MR_OK;
    uint8_t *f = mr_calloc((size_t)n, 1, e);
    if (!f) return MR_ERR_INTERNAL;
    free(m->mask_flags);
    m->mask_flags = f;
    m->mask_cap = n;
    return MR_OK;
}

/* The shared core: masks the given lists (each may be NULL), ranks the relevant items
 * by the tie rule of the header, and adds the user. */
static int add_scores_masked(mr_metrics *m, const float *scores, int64_t n_scores, const int32_t *mask_a,
                             int64_t n_a, const int32_t *mask_b, int64_t n_b, const int32_t *relevant,
                             int n_relevant, mr_error *e) {
    enum { MAX_REL_STACK = 64 };
    int64_t ranks_stack[MAX_REL_STACK] = {0};
    int64_t *ranks = ranks_stack;
    for (int i = 0; i < n_relevant; i++)
        if (relevant[i] < 0 || relevant[i] >= n_scores)
            return mr_fail(e, MR_ERR_INPUT, "metrics: relevant id %d outside the score row (0..%lld)",
                           relevant[i], (long long)n_scores - 1);
    if (ensure_flags(m, n_scores, e)) return MR_ERR_INTERNAL;
    if (n_relevant > MAX_REL_STACK) {
        ranks = mr_alloc((size_t)n_relevant * sizeof *ranks, e);
        if (!ranks) return MR_ERR_INTERNAL;
    }
    uint8_t *flag = m->mask_flags;
    for (int64_t i = 0; i < n_a; i++)
        if (mask_a[i] >= 0 && mask_a[i] < n_scores) flag[mask_a[i]] = 1;
    for (int64_t i = 0; i < n_b; i++)
        if (mask_b[i] >= 0 && mask_b[i] < n_scores) flag[mask_b[i]] = 1;

    for (int i = 0; i < n_relevant; i++) {
        int32_t r = relevant[i];
        float s = scores[r];
        if (flag[r] || isnan(s)) {
            ranks[i] = 0;
            continue;
        }
        /* Items ahead of r in a stable sort by descending score: strictly higher
         * scores, and equal scores with a smaller id (so constant scores never
         * rank a relevant item first by luck). */
        int64_t ahead = 0;
        for (int64_t j = 0; j < n_scores; j++) ahead += (scores[j] > s || (scores[j] == s && j < r)) & !flag[j];
        ranks[i] = ahead + 1;
    }
    for (int64_t i = 0; i < n_a; i++)
        if (mask_a[i] >= 0 && mask_a[i] < n_scores) flag[mask_a[i]] = 0;
    for (int64_t i = 0; i < n_b; i++)
        if (mask_b[i] >= 0 && mask_b[i] < n_scores) flag[mask_b[i]] = 0;
    mr_metrics_add_ranks(m, ranks, n_relevant);
    if (ranks != ranks_stack) free(ranks);
    return MR_OK;
}

int mr_metrics_add_scores(mr_metrics *m, const float *scores, int64_t n_scores, const int32_t *mask,
                          int64_t n_mask, const int32_t *relevant, int n_relevant, mr_error *e) {
    return add_scores_masked(m, scores, n_scores, mask, n_mask, NULL, 0, relevant, n_relevant, e);
}

int mr_metrics_add_item_scores(mr_metrics *m, const float *scores, int64_t n_scores,
                               const int32_t *history, int64_t n_history, const int32_t *relevant,
                               int n_relevant, mr_error *e) {
    static const int32_t padding[1] = {0};
    return add_scores_masked(m, scores, n_scores, padding, 1, history, n_history, relevant, n_relevant, e);
}

void mr_metrics_add_ranked(mr_metrics *m, const int32_t *ranked, int64_t n_ranked, const int32_t *relevant,
                           int n_relevant) {
    enum { MAX_REL_STACK = 64 };
    int64_t ranks_stack[MAX_REL_STACK] = {0};
    int64_t *ranks = n_relevant > MAX_REL_STACK ? malloc((size_t)n_relevant * sizeof *ranks) : ranks_stack;
    if (!ranks) { /* out of memory: count the user with no hits rather than crash */
        mr_metrics_add_ranks(m, NULL, 0);
        return;
    }
    for (int i = 0; i < n_relevant; i++) {
        ranks[i] = 0;
        for (int64_t j = 0; j < n_ranked; j++)
            if (ranked[j] == relevant[i]) {
                ranks[i] = j + 1;
                break;
            }
    }
    mr_metrics_add_ranks(m, ranks, n_relevant);
    if (ranks != ranks_stack) free(ranks);
}

static int k_index(const mr_metrics *m, int k) {
    for (int i = 0; i < m->n_ks; i++)
        if (m->ks[i] == k) return i;
    return -1;
}

double mr_metrics_get(const mr_metrics *m, mr_metric_kind kind, int k) {
    int ki = k_index(m, k);
    if (ki < 0 || kind < 0 || kind > 2) return NAN;
    return m->n_users ? m->sum[kind][ki] / (double)m->n_users : 0.0;
}

int mr_metrics_combine(mr_metrics *overall, const mr_metrics *subset, const mr_metrics *other, mr_error *e) {
    if (subset->n_ks != other->n_ks || memcmp(subset->ks, other->ks, (size_t)subset->n_ks * sizeof(int)))
        return mr_fail(e, MR_ERR_INPUT, "metrics: cannot combine metrics computed at different ks");
    memset(overall, 0, sizeof *overall);
    overall->n_ks = subset->n_ks;
    memcpy(overall->ks, subset->ks, sizeof overall->ks);
    for (int kind = 0; kind < 3; kind++)
        for (int i = 0; i < subset->n_ks; i++) overall->sum[kind][i] = subset->sum[kind][i] + other->sum[kind][i];
    overall->n_users = subset->n_users + other->n_users;
    return MR_OK;
}

json_t *mr_metrics_to_json(const mr_metrics *m) {
    json_t *o = json_object();
    if (!o) return NULL;
    for (int i = 0; i < m->n_ks; i++)
        for (int kind = 0; kind < 3; kind++) {
            static const mr_metric_kind order[3] = {MR_RECALL, MR_NDCG, MR_MRR};
            char key[48];
            snprintf(key, sizeof key, "%s@%d", KIND_NAMES[order[kind]], m->ks[i]);
            if (json_object_set_new(o, key, json_real(mr_metrics_get(m, order[kind], m->ks[i])))) {
                json_decref(o);
                return NULL;
            }
        }
    return o;
}

int mr_metrics_from_json(mr_metrics *m, const json_t *obj, int64_t n_users, mr_error *e) {
    if (!json_is_object(obj)) return mr_fail(e, MR_ERR_INPUT, "metrics: expected a JSON object");
    int ks[MR_METRICS_MAX_KS], n = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val) {
        const char *at = strchr(key, '@');
        if (!at || strncmp(key, "Recall@", 7)) continue;
        int64_t k;
        if (mr_parse_i64(at + 1, &k) || k <= 0 || k > 1000000000)
            return mr_fail(e, MR_ERR_INPUT, "metrics: bad key '%s'", key);
        if (n == MR_METRICS_MAX_KS) return mr_fail(e, MR_ERR_INPUT, "metrics: more than %d ks", MR_METRICS_MAX_KS);
        ks[n++] = (int)k;
    }
    if (n == 0) return mr_fail(e, MR_ERR_INPUT, "metrics: no \"Recall@k\" keys in the object");
    int rc = mr_metrics_init(m, ks, n, e);
    if (rc) return rc;
    m->n_users = n_users;
    for (int i = 0; i < m->n_ks; i++)
        for (int kind = 0; kind < 3; kind++) {
            char k2[48];
            snprintf(k2, sizeof k2, "%s@%d", KIND_NAMES[kind], m->ks[i]);
            json_t *v = json_object_get(obj, k2);
            if (!json_is_number(v)) return mr_fail(e, MR_ERR_INPUT, "metrics: missing or non-numeric \"%s\"", k2);
            m->sum[kind][i] = json_number_value(v) * (double)n_users;
        }
    return MR_OK;
}

int mr_metrics_write_json(const char *path, const char *const *names, const mr_metrics *const *sections,
                          int n_sections, mr_error *e) {
    json_t *root = json_object();
    if (!root) return mr_fail(e, MR_ERR_INTERNAL, "out of memory");
    for (int i = 0; i < n_sections; i++) {
        json_t *o = mr_metrics_to_json(sections[i]);
        if (!o || json_object_set_new(root, names[i], o)) {
            json_decref(root);
            return mr_fail(e, MR_ERR_INTERNAL, "out of memory");
        }
    }
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(root);
    if (!text) return mr_fail(e, MR_ERR_INTERNAL, "out of memory");
    size_t len = strlen(text);
    char *withnl = mr_realloc(text, len + 2, e);
    if (!withnl) {
        free(text);
        return MR_ERR_INTERNAL;
    }
    withnl[len] = '\n';
    withnl[len + 1] = 0;
    int rc = mr_write_file_atomic(path, withnl, len + 1, e);
    free(withnl);
    return rc;
}

void mr_metrics_print_table(FILE *out, const char *title, const mr_metrics *m) {
    fprintf(out, "%s (%lld users)\n", title ? title : "metrics", (long long)m->n_users);
    fprintf(out, "| k | Recall | MRR | NDCG |\n|---:|---:|---:|---:|\n");
    for (int i = 0; i < m->n_ks; i++)
        fprintf(out, "| %d | %.4f | %.4f | %.4f |\n", m->ks[i], mr_metrics_get(m, MR_RECALL, m->ks[i]),
                mr_metrics_get(m, MR_MRR, m->ks[i]), mr_metrics_get(m, MR_NDCG, m->ks[i]));
}
