/* Ranking metrics: Recall@k, MRR@k and NDCG@k for any set of ks, averaged per user
 * (DESIGN section 7).
 *
 * For one user with relevant items R and the 1-based rank pos(r) of each r in R:
 *   Recall@k = |{r : pos(r) <= k}| / min(k, |R|)
 *   MRR@k    = sum over r with pos(r) <= k of 1 / pos(r)        (the reference's form;
 *              with one relevant item it is the usual reciprocal rank)
 *   NDCG@k   = sum over r with pos(r) <= k of 1 / log2(pos(r) + 1)
 *              / sum over i = 1..min(k, |R|) of 1 / log2(i + 1)
 * A dataset value is the mean over users (not over batches).
 *
 * Ranks from scores (ties are resolved deterministically, never by sort order):
 *   pos(r) = 1 + #{unmasked items j with score[j] > score[r]}
 *              + #{unmasked items j with score[j] == score[r] and id j < r}
 * i.e. the order of a stable sort by descending score then ascending id. Equal
 * scores never favour the relevant item, so a model with constant scores does not
 * get perfect metrics by luck. A relevant item that is masked, or whose score is
 * NaN, is a miss (never ranked). NaN scores of other items are never "higher".
 *
 * Usage (retriever, one user at a time):
 *   mr_metrics m; mr_metrics_init(&m, MR_METRICS_DEFAULT_KS, MR_METRICS_N_DEFAULT_KS, &err);
 *   for each user: mr_metrics_add_item_scores(&m, scores, n_items + 1, history, n_hist,
 *                                              &label, 1, &err);
 *   mr_metrics_get(&m, MR_RECALL, 10); mr_metrics_write_json(...); mr_metrics_free(&m);
 */
#ifndef MLLM4REC_METRICS_H
#define MLLM4REC_METRICS_H

#include <jansson.h>

#include "mllm4rec/base.h"

#define MR_METRICS_MAX_KS 16

typedef enum { MR_RECALL = 0, MR_MRR = 1, MR_NDCG = 2 } mr_metric_kind;

/* The paper's ks: 1, 5, 10, 20, 50. */
extern const int MR_METRICS_DEFAULT_KS[];
#define MR_METRICS_N_DEFAULT_KS 5

/* One accumulator is not safe to share between threads (it owns a scratch buffer);
 * give each thread its own and add them up with mr_metrics_combine. */
typedef struct mr_metrics {
    int n_ks;
    int ks[MR_METRICS_MAX_KS];          /* ascending, distinct, > 0 */
    double sum[3][MR_METRICS_MAX_KS];   /* per-user values summed, [kind][k index] */
    int64_t n_users;
    /* scratch for masking in mr_metrics_add_scores (owned, grows as needed) */
    uint8_t *mask_flags;
    int64_t mask_cap;
} mr_metrics;

/* ks are sorted and deduplicated; each must be > 0, at most MR_METRICS_MAX_KS. */
int mr_metrics_init(mr_metrics *m, const int *ks, int n_ks, mr_error *e);
void mr_metrics_free(mr_metrics *m);
void mr_metrics_reset(mr_metrics *m); /* clears the sums, keeps the ks */

/* Adds one user given the 1-based rank of each relevant item (0 = not ranked / miss).
 * The ranks of different relevant items must differ (except 0). */
void mr_metrics_add_ranks(mr_metrics *m, const int64_t *ranks, int n_relevant);

/* Adds one user from a score row: scores[i] is the score of id i, 0 <= i < n_scores.
 * mask lists ids that are not ranked (duplicates and out-of-range ids are ignored).
 * Ranks follow the tie rule above. Errors: a relevant id out of range. */
int mr_metrics_add_scores(mr_metrics *m, const float *scores, int64_t n_scores, const int32_t *mask,
                          int64_t n_mask, const int32_t *relevant, int n_relevant, mr_error *e);

/* The same for a row over all items (n_scores = n_items + 1, index = item id): masks
 * the padding id 0 and every id in history (the user's whole history, DESIGN 8). */
int mr_metrics_add_item_scores(mr_metrics *m, const float *scores, int64_t n_scores,
                               const int32_t *history, int64_t n_history, const int32_t *relevant,
                               int n_relevant, mr_error *e);

/* Adds one user from a ranked list (best first); pos(r) = 1 + index of the first
 * occurrence of r in the list, a miss when absent. */
void mr_metrics_add_ranked(mr_metrics *m, const int32_t *ranked, int64_t n_ranked, const int32_t *relevant,
                           int n_relevant);

/* Mean over the users added so far (0 when none); NAN when k is not one of the ks. */
double mr_metrics_get(const mr_metrics *m, mr_metric_kind kind, int k);

/* overall = subset + other, user-weighted: for every metric
 *   (subset mean x subset users + other mean x other users) / (all users)
 * which is how the reference combines the ranker's subset with the retriever's
 * metrics on the remaining users. Both must have the same ks; overall may alias neither. */
int mr_metrics_combine(mr_metrics *overall, const mr_metrics *subset, const mr_metrics *other, mr_error *e);

/* {"Recall@1": .., "MRR@1": .., "NDCG@1": .., "Recall@5": .., ...}; NULL on OOM. */
json_t *mr_metrics_to_json(const mr_metrics *m);
/* Rebuilds metrics from such an object (every "Recall@k"/"MRR@k"/"NDCG@k" key found;
 * each k needs all three) as the means of n_users users, so they can be combined. */
int mr_metrics_from_json(mr_metrics *m, const json_t *obj, int64_t n_users, mr_error *e);
/* Writes {"name0": {metrics}, "name1": {...}} atomically (indent 2, keys in order). */
int mr_metrics_write_json(const char *path, const char *const *names, const mr_metrics *const *sections,
                          int n_sections, mr_error *e);
/* A readable table, one row per k (Recall, MRR, NDCG columns), for people. */
void mr_metrics_print_table(FILE *out, const char *title, const mr_metrics *m);

#endif
