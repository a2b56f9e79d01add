/* The training skeleton (src/train/trainer.h): a checkpoint written and read back
 * exactly (tensors, metadata numbers, the generator's state), the checks a resume
 * relies on (format, same flags, tensor sizes, finite values), the JSON-lines log cut
 * back to a checkpoint's size; and the one hash of src/base. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/trainer.h"
#include "test.h"

static const char *const FORMATS[] = {"test-ckpt-1", "test-ckpt-2", NULL};

TEST(checkpoint_round_trip_is_exact) {
    const char *p = test_tmp_path("ckpt.safetensors");
    mr_error e = {0};
    float a[5] = {1.5f, -2.25f, 3e-30f, 0.1f, 7.0f};
    int32_t order[4] = {3, 1, 0, 2};
    mr_rng r;
    mr_rng_seed(&r, 99);
    for (int i = 0; i < 3; i++) mr_rng_u64(&r);
    const double best = 0.123456789012345678;
    tr_ckpt_writer w;
    CHECK_OK(tr_ckpt_begin(&w, "test-ckpt-2", &e), &e);
    tr_ckpt_f32(&w, "params", a, 5);
    tr_ckpt_i32(&w, "order", order, 4);
    tr_ckpt_meta(&w, "best", "%.17g", best);
    tr_ckpt_meta(&w, "step", "%lld", 9007199254740993LL); /* 2^53 + 1: not exact as a double */
    tr_ckpt_meta(&w, "arch", "%s", "lru");
    tr_ckpt_rng(&w, &r);
    CHECK_OK(tr_ckpt_commit(&w, p, &e), &e);

    tr_ckpt c;
    int which = -1;
    CHECK_OK(tr_ckpt_open(&c, p, FORMATS, &which, "test", &e), &e);
    CHECK(which == 1);
    float b[5];
    int32_t o2[4];
    CHECK_OK(tr_ckpt_read_f32(&c, "params", b, 5, &e), &e);
    CHECK(!memcmp(a, b, sizeof a));
    CHECK_OK(tr_ckpt_read_i32(&c, "order", o2, 4, &e), &e);
    CHECK(!memcmp(order, o2, sizeof order));
    double x;
    CHECK_OK(tr_ckpt_num(&c, "best", &x, &e), &e);
    CHECK(x == best);
    int64_t step;
    CHECK_OK(tr_ckpt_i64(&c, "step", &step, &e), &e);
    CHECK(step == 9007199254740993LL);
    mr_rng r2;
    CHECK_OK(tr_ckpt_read_rng(&c, &r2, &e), &e);
    CHECK(!memcmp(r.s, r2.s, sizeof r.s));
    CHECK(mr_rng_u64(&r) == mr_rng_u64(&r2)); /* the generator continues where it stopped */
    /* the checks a resume makes */
    CHECK_OK(tr_ckpt_same(&c, "arch", "lru", 0, &e), &e);
    CHECK(tr_ckpt_same(&c, "arch", "sasrec", 0, &e) == MR_ERR_INPUT && strstr(e.msg, "arch = lru"));
    CHECK(tr_ckpt_same(&c, "heads", "2", 0, &e) == MR_ERR_INPUT && strstr(e.msg, "(missing)"));
    CHECK_OK(tr_ckpt_same(&c, "heads", "2", 1, &e), &e); /* optional: an older checkpoint */
    CHECK(tr_ckpt_read_f32(&c, "params", b, 4, &e) == MR_ERR_INPUT); /* another model size */
    CHECK(tr_ckpt_read_f32(&c, "adam_m", b, 5, &e) == MR_ERR_INPUT && strstr(e.msg, "adam_m"));
    CHECK(tr_ckpt_num(&c, "arch", &x, &e) == MR_ERR_INPUT); /* not a number */
    CHECK(tr_ckpt_i64(&c, "nothing", &step, &e) == MR_ERR_INPUT && strstr(e.msg, "nothing"));
    tr_ckpt_close(&c);
    /* another trainer's checkpoint is refused by its format */
    static const char *const other[] = {"other-1", NULL};
    CHECK(tr_ckpt_open(&c, p, other, NULL, "ranker", &e) == MR_ERR_INPUT && strstr(e.msg, "ranker checkpoint"));
}

TEST(non_finite_values_are_refused) {
    const char *p = test_tmp_path("nan.safetensors");
    mr_error e = {0};
    float a[3] = {1, NAN, 2};
    tr_ckpt_writer w;
    CHECK_OK(tr_ckpt_begin(&w, "test-ckpt-1", &e), &e);
    tr_ckpt_f32(&w, "adam_v", a, 3);
    CHECK_OK(tr_ckpt_commit(&w, p, &e), &e);
    tr_ckpt c;
    CHECK_OK(tr_ckpt_open(&c, p, FORMATS, NULL, "test", &e), &e);
    float b[3];
    CHECK(tr_ckpt_read_f32(&c, "adam_v", b, 3, &e) == MR_ERR_INPUT);
    tr_ckpt_close(&c);
}

TEST(log_is_cut_back_to_the_checkpoint) {
    const char *p = test_tmp_path("train.jsonl");
    mr_error e = {0};
    long bytes = -1, at_ckpt;
    CHECK_OK(tr_log_start(p, 0, 0, &e), &e);
    json_t *l = json_object();
    json_object_set_new(l, "iter", json_integer(0));
    CHECK_OK(tr_log_append(p, l, &bytes, &e), &e);
    CHECK(bytes == (long)strlen("{\"iter\":0}\n"));
    at_ckpt = bytes;
    l = json_object();
    json_object_set_new(l, "iter", json_integer(5));
    CHECK_OK(tr_log_append(p, l, &bytes, &e), &e);
    CHECK(bytes > at_ckpt);
    /* a kill after the second line, before its checkpoint: the resumed run forgets it */
    CHECK_OK(tr_log_start(p, 1, at_ckpt, &e), &e);
    char *text = NULL;
    size_t n;
    CHECK_OK(mr_read_file(p, &text, &n, &e), &e);
    CHECK(text && n == (size_t)at_ckpt && !strcmp(text, "{\"iter\":0}\n"));
    free(text);
    /* a new run starts an empty log */
    CHECK_OK(tr_log_start(p, 0, 0, &e), &e);
    CHECK_OK(mr_read_file(p, &text, &n, &e), &e);
    CHECK(n == 0);
    free(text);
}

/* The one hash: splitmix64's step (its first output from seed 0 is the published
 * 0xe220a8397b1dcdaf), the seeder of mr_rng, and the two-value key of the ranker. */
TEST(one_hash_for_keys_and_seeds) {
    CHECK(mr_mix64(0) == 0xe220a8397b1dcdafULL);
    const uint64_t G = 0x9e3779b97f4a7c15ULL, C = 0x632be59bd9b4e019ULL;
    for (uint64_t a = 0; a < 5; a++)
        for (uint64_t b = 0; b < 5; b++) CHECK(mr_hash2(a, b) == mr_mix64(a * G + b + C - G));
    CHECK(mr_hash2(1, 2) != mr_hash2(2, 1));
    /* mr_rng_seed draws its state from splitmix64 of the seed */
    mr_rng r;
    mr_rng_seed(&r, 7);
    CHECK(r.s[0] == mr_mix64(7) && r.s[1] == mr_mix64(7 + G) && r.s[3] == mr_mix64(7 + 3 * G));
}

int main(void) {
    RUN(checkpoint_round_trip_is_exact);
    RUN(non_finite_values_are_refused);
    RUN(log_is_cut_back_to_the_checkpoint);
    RUN(one_hash_for_keys_and_seeds);
    return test_summary();
}
