/* Every retriever trained with cross-entropy over all items starts near a uniform
 * guess: the untrained model's loss at the default width (hidden 64) is within 1 nat
 * of ln(n_items + 1). A model whose first scores have a spread of several nats (SASRec
 * with the reference's N(0, 1) item embeddings scored through its tied decoder: a
 * first loss of 27-39 against ln V = 9.4 on Amazon Beauty) spends its first epochs
 * only shrinking them, and does not reach its published quality within the early
 * stopping schedule (docs/retriever.md "Which retriever"). STOSA trains with BPR, not
 * cross-entropy, and is left out. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/retriever.h"
#include "retriever/arch.h"
#include "test.h"

#define N_ITEMS 3000
#define HIDDEN 64
#define LEN 20
#define SEQS 8

static void check_untrained_loss_is_near_uniform(const char *arch) {
    mr_error e = {0};
    rt_train_options o;
    CHECK_OK(rt_train_defaults(&o, NULL, arch, &e), &e);
    rt_config c = o.model;
    c.n_items = N_ITEMS;
    c.hidden = HIDDEN;
    c.max_len = LEN;
    rt_model m;
    memset(&m, 0, sizeof m);
    CHECK_OK(rt_model_create(&m, &c, &e), &e);
    CHECK_OK(rt_model_alloc_grads(&m, &e), &e);
    void *acts = NULL;
    CHECK_OK(m.arch->acts_create(&acts, &m, SEQS * LEN, SEQS, &e), &e);
    /* sequences of random items, every row labelled with the next one */
    int32_t tokens[SEQS * LEN], labels[SEQS * LEN];
    int seq_start[SEQS + 1];
    int64_t example[SEQS];
    mr_rng r;
    mr_rng_seed(&r, 7);
    for (int s = 0; s < SEQS; s++) {
        seq_start[s] = s * LEN;
        example[s] = s;
        int32_t prev = 1 + (int32_t)mr_rng_below(&r, N_ITEMS);
        for (int j = 0; j < LEN; j++) {
            const int32_t next = 1 + (int32_t)mr_rng_below(&r, N_ITEMS);
            tokens[s * LEN + j] = prev;
            labels[s * LEN + j] = next;
            prev = next;
        }
    }
    seq_start[SEQS] = SEQS * LEN;
    rt_batch b = {.n_seqs = SEQS, .n_rows = SEQS * LEN, .seq_start = seq_start, .tokens = tokens,
                  .labels = labels, .example = example};
    double loss[3];
    for (int s = 0; s < 3; s++) {
        m.arch->init(&m, (uint64_t)s + 1);
        loss[s] = m.arch->loss_backward(&m, acts, &b, 0, 1);
    }
    m.arch->acts_free(acts);
    rt_model_free(&m);
    const double uniform = log((double)N_ITEMS + 1);
    for (int s = 0; s < 3; s++)
        CHECK_MSG(isfinite(loss[s]) && fabs(loss[s] - uniform) < 1.0, "%s seed %d: untrained loss %.3f, ln V %.3f", arch,
                  s + 1, loss[s], uniform);
}

TEST(lru_starts_near_uniform) { check_untrained_loss_is_near_uniform("lru"); }
TEST(sasrec_starts_near_uniform) { check_untrained_loss_is_near_uniform("sasrec"); }
TEST(bert4rec_starts_near_uniform) { check_untrained_loss_is_near_uniform("bert4rec"); }
TEST(gru4rec_starts_near_uniform) { check_untrained_loss_is_near_uniform("gru4rec"); }
TEST(narm_starts_near_uniform) { check_untrained_loss_is_near_uniform("narm"); }

int main(void) {
    RUN(lru_starts_near_uniform);
    RUN(sasrec_starts_near_uniform);
    RUN(bert4rec_starts_near_uniform);
    RUN(gru4rec_starts_near_uniform);
    RUN(narm_starts_near_uniform);
    return test_summary();
}
