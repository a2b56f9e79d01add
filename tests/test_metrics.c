/* Metrics: values worked out by hand (log2(3) = 1.5849625, 1/log2(3) = 0.6309298). */
#include "test.h"
#include "mllm4rec/metrics.h"

#include <stdlib.h>
#include <string.h>

#define INV_LOG2_3 0.63092975357

TEST(single_relevant_from_scores_with_masking) {
    mr_error err;
    mr_metrics m;
    const int ks[] = {5, 1};
    CHECK_OK(mr_metrics_init(&m, ks, 2, &err), &err);
    CHECK(m.n_ks == 2 && m.ks[0] == 1 && m.ks[1] == 5);
    /* id:      0    1    2    3    4    5 */
    float s[] = {9.f, .5f, .9f, .5f, .8f, .3f};
    int32_t hist[] = {2, 2}; /* duplicates are fine */
    int32_t rel = 1;
    /* padding 0 (9.0) and history item 2 (0.9) are masked; item 4 (0.8) is higher;
     * item 3 ties with 1 and ranks behind it: rank 2 */
    CHECK_OK(mr_metrics_add_item_scores(&m, s, 6, hist, 2, &rel, 1, &err), &err);
    CHECK_NEAR(mr_metrics_get(&m, MR_RECALL, 1), 0.0, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_RECALL, 5), 1.0, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_MRR, 5), 0.5, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_NDCG, 5), INV_LOG2_3, 1e-9);
    CHECK(isnan(mr_metrics_get(&m, MR_NDCG, 10)));
    /* a second user whose item 4 is the best unmasked one: rank 1 */
    rel = 4;
    CHECK_OK(mr_metrics_add_item_scores(&m, s, 6, hist, 2, &rel, 1, &err), &err);
    CHECK(m.n_users == 2);
    CHECK_NEAR(mr_metrics_get(&m, MR_RECALL, 1), 0.5, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_MRR, 5), 0.75, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_NDCG, 5), (1.0 + INV_LOG2_3) / 2, 1e-9);
    /* without the mask item 2 and the padding would be ahead of item 4 */
    mr_metrics_reset(&m);
    CHECK_OK(mr_metrics_add_scores(&m, s, 6, NULL, 0, &rel, 1, &err), &err);
    CHECK_NEAR(mr_metrics_get(&m, MR_MRR, 5), 1.0 / 3, 1e-12);
    /* a relevant item in the mask is a miss; so is a NaN score */
    mr_metrics_reset(&m);
    rel = 2;
    CHECK_OK(mr_metrics_add_item_scores(&m, s, 6, hist, 2, &rel, 1, &err), &err);
    s[5] = NAN;
    rel = 5;
    CHECK_OK(mr_metrics_add_item_scores(&m, s, 6, NULL, 0, &rel, 1, &err), &err);
    CHECK(m.n_users == 2);
    CHECK_NEAR(mr_metrics_get(&m, MR_RECALL, 5), 0.0, 1e-12);
    /* an out-of-range relevant id is an error */
    rel = 6;
    CHECK(mr_metrics_add_item_scores(&m, s, 6, NULL, 0, &rel, 1, &err) == MR_ERR_INPUT);
    CHECK(strstr(err.msg, "relevant id 6"));
    mr_metrics_free(&m);
}

TEST(ties_follow_stable_sort_by_id) {
    mr_error err;
    mr_metrics m;
    const int ks[] = {1, 2};
    CHECK_OK(mr_metrics_init(&m, ks, 2, &err), &err);
    float s[] = {0.f, 1.f, 1.f, 1.f, 2.f};
    int32_t rel = 3;
    /* item 4 is strictly higher; items 1 and 2 tie with 3 and have smaller ids: rank 4 */
    CHECK_OK(mr_metrics_add_item_scores(&m, s, 5, NULL, 0, &rel, 1, &err), &err);
    CHECK_NEAR(mr_metrics_get(&m, MR_RECALL, 2), 0.0, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_MRR, 2), 0.0, 1e-12);
    /* item 1 ties with 2 and 3 but has the smallest id: rank 2 */
    mr_metrics_reset(&m);
    rel = 1;
    CHECK_OK(mr_metrics_add_item_scores(&m, s, 5, NULL, 0, &rel, 1, &err), &err);
    CHECK_NEAR(mr_metrics_get(&m, MR_RECALL, 1), 0.0, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_RECALL, 2), 1.0, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_MRR, 2), 0.5, 1e-12);
    /* constant scores: no relevant item gets rank 1 by luck */
    float c[] = {0.f, 3.f, 3.f, 3.f, 3.f};
    mr_metrics_reset(&m);
    rel = 4;
    CHECK_OK(mr_metrics_add_item_scores(&m, c, 5, NULL, 0, &rel, 1, &err), &err);
    CHECK_NEAR(mr_metrics_get(&m, MR_RECALL, 2), 0.0, 1e-12);
    mr_metrics_free(&m);
}

TEST(several_relevant_items) {
    mr_error err;
    mr_metrics m;
    const int ks[] = {2, 5};
    CHECK_OK(mr_metrics_init(&m, ks, 2, &err), &err);
    /* id:      0    1    2    3    4    5 */
    float s[] = {0.f, .5f, .9f, .1f, .8f, .3f};
    int32_t hist[] = {2};
    int32_t rel[] = {1, 5}; /* ranks 2 (behind 4) and 3 (behind 4, 1) */
    CHECK_OK(mr_metrics_add_item_scores(&m, s, 6, hist, 1, rel, 2, &err), &err);
    CHECK_NEAR(mr_metrics_get(&m, MR_RECALL, 2), 0.5, 1e-12);       /* 1 hit / min(2, 2) */
    CHECK_NEAR(mr_metrics_get(&m, MR_MRR, 2), 0.5, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_NDCG, 2), INV_LOG2_3 / (1 + INV_LOG2_3), 1e-9);
    CHECK_NEAR(mr_metrics_get(&m, MR_RECALL, 5), 1.0, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_MRR, 5), 0.5 + 1.0 / 3, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_NDCG, 5), (INV_LOG2_3 + 0.5) / (1 + INV_LOG2_3), 1e-9);
    /* relevant items with equal scores: the smaller id first, so ranks 1 and 2 */
    mr_metrics_reset(&m);
    float t[] = {0.f, .1f, .7f, .2f, .3f, .7f};
    int32_t rel2[] = {5, 2};
    CHECK_OK(mr_metrics_add_item_scores(&m, t, 6, NULL, 0, rel2, 2, &err), &err);
    CHECK_NEAR(mr_metrics_get(&m, MR_NDCG, 2), 1.0, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_MRR, 2), 1.5, 1e-12);
    /* Recall divides by min(k, #relevant): 3 relevant, k = 2, both top-2 hit */
    mr_metrics_reset(&m);
    int32_t rel3[] = {2, 5, 1};
    CHECK_OK(mr_metrics_add_item_scores(&m, t, 6, NULL, 0, rel3, 3, &err), &err);
    CHECK_NEAR(mr_metrics_get(&m, MR_RECALL, 2), 1.0, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_RECALL, 5), 1.0, 1e-12);
    mr_metrics_free(&m);
}

TEST(ranked_lists) {
    mr_error err;
    mr_metrics m;
    CHECK_OK(mr_metrics_init(&m, MR_METRICS_DEFAULT_KS, MR_METRICS_N_DEFAULT_KS, &err), &err);
    int32_t list[] = {7, 3, 9, 3, 4};
    int32_t rel = 9; /* position 3 */
    mr_metrics_add_ranked(&m, list, 5, &rel, 1);
    rel = 8; /* absent */
    mr_metrics_add_ranked(&m, list, 5, &rel, 1);
    CHECK(m.n_users == 2);
    CHECK_NEAR(mr_metrics_get(&m, MR_RECALL, 1), 0.0, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_RECALL, 5), 0.5, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_MRR, 10), 1.0 / 6, 1e-12);
    CHECK_NEAR(mr_metrics_get(&m, MR_NDCG, 50), 0.5 * 0.5, 1e-12); /* 1/log2(4) = 0.5 */
    mr_metrics_free(&m);
}

TEST(combine_subset_and_others_user_weighted) {
    mr_error err;
    mr_metrics sub, oth, all;
    const int ks[] = {10};
    CHECK_OK(mr_metrics_init(&sub, ks, 1, &err), &err);
    CHECK_OK(mr_metrics_init(&oth, ks, 1, &err), &err);
    int64_t hit = 1, miss = 0;
    mr_metrics_add_ranks(&sub, &hit, 1);
    mr_metrics_add_ranks(&sub, &miss, 1); /* subset Recall@10 = 0.5 over 2 users */
    mr_metrics_add_ranks(&oth, &hit, 1);
    mr_metrics_add_ranks(&oth, &miss, 1);
    mr_metrics_add_ranks(&oth, &miss, 1); /* others 1/3 over 3 users */
    CHECK_OK(mr_metrics_combine(&all, &sub, &oth, &err), &err);
    CHECK(all.n_users == 5);
    CHECK_NEAR(mr_metrics_get(&all, MR_RECALL, 10), (0.5 * 2 + (1.0 / 3) * 3) / 5, 1e-12);
    /* the same through JSON (as when the others' metrics come from a file) */
    json_t *j = mr_metrics_to_json(&oth);
    CHECK(j);
    CHECK(json_object_get(j, "Recall@10") && json_object_get(j, "NDCG@10") && json_object_get(j, "MRR@10"));
    CHECK(json_object_size(j) == 3);
    mr_metrics back;
    CHECK_OK(mr_metrics_from_json(&back, j, 3, &err), &err);
    json_decref(j);
    CHECK_OK(mr_metrics_combine(&all, &sub, &back, &err), &err);
    CHECK_NEAR(mr_metrics_get(&all, MR_RECALL, 10), 0.4, 1e-12);
    const int other_ks[] = {5};
    mr_metrics bad;
    CHECK_OK(mr_metrics_init(&bad, other_ks, 1, &err), &err);
    CHECK(mr_metrics_combine(&all, &sub, &bad, &err) == MR_ERR_INPUT);
}

TEST(json_file_has_literal_keys) {
    mr_error err;
    mr_metrics v, t;
    CHECK_OK(mr_metrics_init(&v, MR_METRICS_DEFAULT_KS, MR_METRICS_N_DEFAULT_KS, &err), &err);
    CHECK_OK(mr_metrics_init(&t, MR_METRICS_DEFAULT_KS, MR_METRICS_N_DEFAULT_KS, &err), &err);
    int64_t r = 4;
    mr_metrics_add_ranks(&v, &r, 1);
    mr_metrics_add_ranks(&t, &r, 1);
    const char *names[] = {"val", "test"};
    const mr_metrics *secs[] = {&v, &t};
    const char *path = test_tmp_path("metrics.json");
    CHECK_OK(mr_metrics_write_json(path, names, secs, 2, &err), &err);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    CHECK(root);
    json_t *test = json_object_get(root, "test");
    CHECK_NEAR(json_number_value(json_object_get(test, "Recall@5")), 1.0, 1e-12);
    CHECK_NEAR(json_number_value(json_object_get(test, "MRR@5")), 0.25, 1e-12);
    CHECK_NEAR(json_number_value(json_object_get(test, "NDCG@10")), 1.0 / log2(5.0), 1e-9);
    CHECK_NEAR(json_number_value(json_object_get(test, "Recall@1")), 0.0, 1e-12);
    CHECK(json_object_get(json_object_get(root, "val"), "NDCG@50"));
    json_decref(root);
    CHECK(mr_metrics_init(&v, (const int[]){0}, 1, &err) == MR_ERR_USAGE);
}

int main(void) {
    RUN(single_relevant_from_scores_with_masking);
    RUN(ties_follow_stable_sort_by_id);
    RUN(several_relevant_items);
    RUN(ranked_lists);
    RUN(combine_subset_and_others_user_weighted);
    RUN(json_file_has_literal_keys);
    return test_summary();
}
