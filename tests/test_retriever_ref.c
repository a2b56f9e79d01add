/* LRURec against the authors' PyTorch code (../shared/reference/hf/lru): scores,
 * loss, intermediates and every parameter gradient; and a finite-difference
 * check of the whole backward on a tiny model with dropout on. */
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/retriever.h"
#include "mllm4rec/safetensors.h"
#include "test.h"

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

TEST(matches_reference_forward_and_gradients) {
    const char *pp = test_shared_path("reference/hf/lru/params.safetensors");
    const char *po = test_shared_path("reference/hf/lru/outputs.safetensors");
    const char *pg = test_shared_path("reference/hf/lru/grads.safetensors");
    if (!pp || !po || !pg) SKIP("../shared/reference/hf/lru is absent");
    mr_error e = {0};
    st_file fp, fo, fg;
    CHECK_OK(st_open(&fp, pp, &e), &e);
    CHECK_OK(st_open(&fo, po, &e), &e);
    CHECK_OK(st_open(&fg, pg, &e), &e);
    lru_config c = {.n_items = 50, .hidden = 16, .blocks = 2, .max_len = 13, .dropout = 0.0f};
    lru_model m;
    CHECK_OK(lru_model_create(&m, &c, &e), &e);
    CHECK_OK(lru_model_alloc_grads(&m, &e), &e);
    CHECK_OK(lru_read_tensors(&m, &fp, "", m.params, &e), &e);
    float *ref_grads = malloc(m.n_params * sizeof(float));
    CHECK_OK(lru_read_tensors(&m, &fg, "", ref_grads, &e), &e);

    int32_t tokens[26], labels[26];
    float ftok[26], flab[26];
    CHECK_OK(st_read_f32(st_find(&fo, "tokens"), ftok, 26, &e), &e);
    CHECK_OK(st_read_f32(st_find(&fo, "labels"), flab, 26, &e), &e);
    for (int i = 0; i < 26; i++) {
        tokens[i] = (int32_t)ftok[i];
        labels[i] = (int32_t)flab[i];
    }
    CHECK(tokens[5] == 24 && labels[4] == 24 && tokens[13] == 40);
    int seq_start[3] = {0, 13, 26};
    lru_batch b = {.n_seqs = 2, .n_rows = 26, .seq_start = seq_start, .tokens = tokens, .labels = labels};
    lru_acts *a;
    CHECK_OK(lru_acts_create(&a, &m, 26, 2, 26, &e), &e);
    float scores[26 * 51], ref_scores[26 * 51], ref_loss;
    double loss = lru_loss_backward(&m, a, &b, 1, 0, scores);
    CHECK_OK(st_read_f32(st_find(&fo, "scores"), ref_scores, 26 * 51, &e), &e);
    CHECK_OK(st_read_f32(st_find(&fo, "loss"), &ref_loss, 1, &e), &e);
    double dmax = 0;
    for (int i = 0; i < 26 * 51; i++) dmax = fmax(dmax, fabs(scores[i] - ref_scores[i]));
    printf("  scores max |diff| %.3g, loss %.9f vs %.9f\n", dmax, loss, (double)ref_loss);
    CHECK(dmax <= 1e-5);
    CHECK_NEAR(loss, ref_loss, 1e-5);

    /* intermediates: embedding [2,13,16]; block outputs [2,16,16] (padded to 16: last 13 rows) */
    float ref[2 * 16 * 16];
    CHECK_OK(st_read_f32(st_find(&fo, "embedding_out"), ref, 2 * 13 * 16, &e), &e);
    dmax = 0;
    for (int i = 0; i < 26 * 16; i++) dmax = fmax(dmax, fabs(lru_acts_embedding_out(a)[i] - ref[i]));
    CHECK(dmax <= 1e-5);
    for (int blk = 0; blk < 2; blk++) {
        for (int ffn = 0; ffn < 2; ffn++) {
            char name[64];
            snprintf(name, sizeof name, "block%d.%s", blk, ffn ? "ffn_out" : "lru_layer_out");
            CHECK_OK(st_read_f32(st_find(&fo, name), ref, 2 * 16 * 16, &e), &e);
            const float *ours = lru_acts_block_out(a, blk, ffn);
            dmax = 0;
            for (int s = 0; s < 2; s++)
                for (int t = 0; t < 13; t++)
                    for (int d = 0; d < 16; d++)
                        dmax = fmax(dmax, fabs(ours[(s * 13 + t) * 16 + d] - ref[(s * 16 + 3 + t) * 16 + d]));
            CHECK_MSG(dmax <= 1e-5, "%s differs by %g", name, dmax);
        }
    }
    /* every gradient, relative to the tensor's largest reference entry */
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.n_tensors; i++) {
        const lru_tensor_info *t = &m.tensors[i];
        double scale = max_abs(ref_grads + t->offset, t->numel);
        double d = 0;
        for (size_t j = 0; j < t->numel; j++)
            d = fmax(d, fabs(m.grads[t->offset + j] - ref_grads[t->offset + j]));
        double rel = scale > 0 ? d / scale : d;
        if (!strcmp(t->name + (strlen(t->name) > 19 ? strlen(t->name) - 19 : 0), "out_proj.bias.imag"))
            CHECK(d == 0);
        if (rel > worst) {
            worst = rel;
            worst_name = t->name;
        }
        CHECK_MSG(rel <= 1e-4, "gradient %s: max |diff| %g, relative %g", t->name, d, rel);
    }
    printf("  gradients: worst relative diff %.3g (%s)\n", worst, worst_name);
    free(ref_grads);
    lru_acts_free(a);
    lru_model_free(&m);
    st_close(&fp);
    st_close(&fo);
    st_close(&fg);
}

/* Loss at the current parameters with a fixed dropout key (same masks each call). */
static double tiny_loss(lru_model *m, lru_acts *a, const lru_batch *b) {
    return lru_loss_backward(m, a, b, 1, 12345, NULL);
}

TEST(finite_differences_tiny_model_with_dropout) {
    mr_error e = {0};
    lru_config c = {.n_items = 7, .hidden = 4, .blocks = 2, .max_len = 6, .dropout = 0.2f};
    lru_model m;
    CHECK_OK(lru_model_create(&m, &c, &e), &e);
    CHECK_OK(lru_model_alloc_grads(&m, &e), &e);
    lru_model_init(&m, 7);
    /* Larger weights than the init so every gradient is well above float noise. */
    mr_rng r;
    mr_rng_seed(&r, 99);
    for (int i = 0; i < m.n_tensors; i++) {
        const lru_tensor_info *t = &m.tensors[i];
        if (strstr(t->name, "params_log")) continue;
        for (size_t j = 0; j < t->numel; j++) m.params[t->offset + j] += (float)(0.4 * mr_rng_normal(&r));
    }
    /* two sequences: one left-padded (a token-0 row with a label), one full */
    int32_t tokens[] = {0, 3, 5, 1, 2, 6, 7, 4, 4, 1};
    int32_t labels[] = {3, 5, 1, 0, 6, 7, 4, 4, 1, 2};
    int seq_start[] = {0, 4, 10};
    lru_batch b = {.n_seqs = 2, .n_rows = 10, .seq_start = seq_start, .tokens = tokens, .labels = labels};
    lru_acts *a;
    CHECK_OK(lru_acts_create(&a, &m, 10, 2, 10, &e), &e);
    tiny_loss(&m, a, &b);
    float *g = malloc(m.n_params * sizeof(float));
    memcpy(g, m.grads, m.n_params * sizeof(float));
    double worst = 0;
    int checked = 0;
    for (size_t i = 0; i < m.n_params; i++) {
        float keep = m.params[i];
        const double h = 3e-3;
        m.params[i] = keep + (float)h;
        double lp = tiny_loss(&m, a, &b);
        m.params[i] = keep - (float)h;
        double lm = tiny_loss(&m, a, &b);
        m.params[i] = keep;
        double fd = (lp - lm) / (2 * h);
        double err = fabs(fd - g[i]) / fmax(5e-2, fabs(fd) + fabs(g[i]));
        if (err > worst) worst = err;
        checked++;
        CHECK_MSG(err < 2e-2, "param %zu: finite difference %g, backward %g", i, fd, (double)g[i]);
    }
    printf("  %d parameters, worst relative error %.3g\n", checked, worst);
    free(g);
    lru_acts_free(a);
    lru_model_free(&m);
}

int main(void) {
    RUN(matches_reference_forward_and_gradients);
    RUN(finite_differences_tiny_model_with_dropout);
    return test_summary();
}
