/* The retriever's candidates.tsv: one row per user and split with the top-k item
 * ids and their scores in rank order. */
#include "mllm4rec/lines.h"
#include "mllm4rec/ranker.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HEADER "split\tuser_id\tlabel\titems\tscores"

/* Splits a list "1 2 3" or "1,2,3" into at most cap tokens (in place). */
static int split_list(char *s, char **tok, int cap) {
    int n = 0;
    char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) break;
        if (n == cap) return cap + 1;
        tok[n++] = p;
        while (*p && *p != ' ' && *p != ',') p++;
        if (*p) *p++ = '\0';
    }
    return n;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int parse_i32(const char *s, int32_t *out) {
    int64_t v;
    if (mr_parse_i64(s, &v) || v < 0 || v > INT32_MAX) return -1;
    *out = (int32_t)v;
    return 0;
}

void mr_candidates_free(mr_candidates *c) {
    free(c->rows);
    free(c->item_buf);
    free(c->score_buf);
    free(c->index[0]);
    free(c->index[1]);
    memset(c, 0, sizeof *c);
}

#define MAX_K 4096

int mr_candidates_load(mr_candidates *c, const char *path, mr_error *e) {
    memset(c, 0, sizeof *c);
    mr_lines L;
    int rc = mr_lines_open(&L, path, e);
    if (rc) return rc;
    char *line;
    size_t len;
    int got = mr_lines_next(&L, &line, &len, e);
    if (got < 0) {
        rc = e->code;
        goto fail;
    }
    if (got == 0 || strcmp(line, HEADER)) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s:1: expected the header \"split<TAB>user_id<TAB>label<TAB>items<TAB>scores\"",
                     path);
        goto fail;
    }
    int64_t cap_rows = 0;
    char **tok = malloc((MAX_K + 1) * sizeof *tok);
    int32_t *sorted = malloc(MAX_K * sizeof *sorted);
    if (!tok || !sorted) {
        free(tok);
        free(sorted);
        rc = mr_fail(e, MR_ERR_INTERNAL, "out of memory");
        goto fail;
    }
    while ((got = mr_lines_next(&L, &line, &len, e)) == 1) {
        const int64_t ln = L.lineno;
        if (len == 0) continue;
        char *col[5];
        int nc = 0;
        char *p = line;
        col[nc++] = p;
        for (; *p; p++)
            if (*p == '\t') {
                *p = '\0';
                if (nc == 5) {
                    nc++;
                    break;
                }
                col[nc++] = p + 1;
            }
        if (nc != 5) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: expected 5 tab-separated columns, found %d", path, (long long)ln, nc);
            break;
        }
        int split;
        if (!strcmp(col[0], "val")) split = MR_SPLIT_VAL;
        else if (!strcmp(col[0], "test")) split = MR_SPLIT_TEST;
        else {
            rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: column split: '%s' is neither val nor test", path, (long long)ln,
                         col[0]);
            break;
        }
        int32_t user, label;
        if (parse_i32(col[1], &user) || user <= 0) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: column user_id: '%s' is not a positive integer", path, (long long)ln,
                         col[1]);
            break;
        }
        if (parse_i32(col[2], &label) || label <= 0) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: column label: '%s' is not a positive integer", path, (long long)ln,
                         col[2]);
            break;
        }
        int n_items = split_list(col[3], tok, MAX_K);
        if (n_items <= 0 || n_items > MAX_K) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: column items: %s", path, (long long)ln,
                         n_items <= 0 ? "empty" : "more than 4096 ids");
            break;
        }
        if (c->k == 0) c->k = n_items;
        if (n_items != c->k) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: column items: %d ids, but earlier rows have %d", path, (long long)ln,
                         n_items, c->k);
            break;
        }
        if (c->n_rows == cap_rows) {
            int64_t nc2 = cap_rows ? cap_rows * 2 : 1024;
            mr_cand_row *r = mr_realloc(c->rows, (size_t)nc2 * sizeof *r, e);
            int32_t *ib = r ? mr_realloc(c->item_buf, (size_t)nc2 * c->k * sizeof *ib, e) : NULL;
            if (ib) c->item_buf = ib;
            float *sb = ib ? mr_realloc(c->score_buf, (size_t)nc2 * c->k * sizeof *sb, e) : NULL;
            if (r) c->rows = r;
            if (!sb) {
                rc = e->code;
                break;
            }
            c->score_buf = sb;
            cap_rows = nc2;
        }
        int32_t *items = c->item_buf + c->n_rows * c->k;
        float *scores = c->score_buf + c->n_rows * c->k;
        for (int i = 0; i < c->k && !rc; i++)
            if (parse_i32(tok[i], &items[i]) || items[i] <= 0)
                rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: column items: '%s' (item %d) is not a positive integer", path,
                             (long long)ln, tok[i], i + 1);
        if (rc) break;
        /* a list names each item once: a repeated item would be scored and counted twice
         * (the subset's NDCG@10 reached 1.0 on a row of one item repeated) */
        for (int i = 0; i < c->k && !rc; i++) sorted[i] = items[i];
        qsort(sorted, (size_t)c->k, sizeof *sorted, cmp_i32);
        for (int i = 1; i < c->k && !rc; i++)
            if (sorted[i] == sorted[i - 1])
                rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: column items: item %d is listed more than once", path,
                             (long long)ln, (int)sorted[i]);
        if (rc) break;
        int n_scores = split_list(col[4], tok, MAX_K);
        if (n_scores != c->k) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: column scores: %d values for %d items", path, (long long)ln,
                         n_scores > MAX_K ? MAX_K + 1 : n_scores, c->k);
            break;
        }
        for (int i = 0; i < c->k && !rc; i++) {
            double v;
            if (mr_parse_double(tok[i], &v) || isnan(v))
                rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: column scores: '%s' (score %d) is not a number", path,
                             (long long)ln, tok[i], i + 1);
            else
                scores[i] = (float)v;
        }
        if (rc) break;
        mr_cand_row *row = &c->rows[c->n_rows++];
        row->split = split;
        row->user_id = user;
        row->label = label;
        if (user > c->max_user) c->max_user = user;
    }
    free(tok);
    free(sorted);
    if (!rc && got < 0) rc = e->code;
    if (!rc && c->n_rows == 0) rc = mr_fail(e, MR_ERR_INPUT, "%s: no rows after the header", path);
    if (rc) goto fail;
    /* row pointers into the (now final) buffers, and the index */
    for (int s = 0; s < 2; s++) {
        c->index[s] = mr_alloc((size_t)(c->max_user + 1) * sizeof(int64_t), e);
        if (!c->index[s]) {
            rc = e->code;
            goto fail;
        }
        for (int32_t u = 0; u <= c->max_user; u++) c->index[s][u] = -1;
    }
    for (int64_t i = 0; i < c->n_rows; i++) {
        mr_cand_row *r = &c->rows[i];
        r->items = c->item_buf + i * c->k;
        r->scores = c->score_buf + i * c->k;
        if (c->index[r->split][r->user_id] >= 0) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: user %d appears twice in split %s", path, r->user_id,
                         r->split ? "test" : "val");
            goto fail;
        }
        c->index[r->split][r->user_id] = i;
    }
    mr_lines_close(&L);
    return MR_OK;
fail:
    mr_lines_close(&L);
    mr_candidates_free(c);
    return rc;
}

const mr_cand_row *mr_candidates_get(const mr_candidates *c, int split, int32_t user_id) {
    if (split < 0 || split > 1 || user_id <= 0 || user_id > c->max_user) return NULL;
    int64_t i = c->index[split][user_id];
    return i < 0 ? NULL : &c->rows[i];
}

int mr_cand_row_hit(const mr_cand_row *r, int k) {
    for (int i = 0; i < k; i++)
        if (r->items[i] == r->label) return 1;
    return 0;
}

int mr_candidates_check(const mr_candidates *c, const mr_dataset *d, mr_error *e) {
    for (int64_t i = 0; i < c->n_rows; i++) {
        const mr_cand_row *r = &c->rows[i];
        const char *sn = r->split ? "test" : "val";
        if (r->user_id > d->n_users)
            return mr_fail(e, MR_ERR_INPUT, "candidates: %s user %d is not in the dataset %s (%lld users)", sn, r->user_id,
                           d->dir, (long long)d->n_users);
        const int32_t n = d->seq_len[r->user_id];
        if (n < 3)
            return mr_fail(e, MR_ERR_INPUT, "candidates: user %d has %d items in %s, too few for a val/test split",
                           r->user_id, n, d->dir);
        const int32_t want = d->seqs[r->user_id][r->split == MR_SPLIT_TEST ? n - 1 : n - 2];
        if (r->label != want)
            return mr_fail(e, MR_ERR_INPUT,
                           "candidates: %s label of user %d is item %d but the dataset says %d (made from another dataset?)",
                           sn, r->user_id, r->label, want);
        for (int j = 0; j < c->k; j++)
            if (r->items[j] > d->n_items)
                return mr_fail(e, MR_ERR_INPUT, "candidates: %s user %d: item %d is not in the dataset (%lld items)", sn,
                               r->user_id, r->items[j], (long long)d->n_items);
    }
    return MR_OK;
}
