/* The attention retrievers (SASRec) against their PyTorch references
 * (scripts/baselines_attn_torch.py wrote tests/data/baselines/<arch>.safetensors):
 * loss and last-row scores within 1e-5 relative, every parameter's gradient
 * within 1e-5 of that tensor's max |grad|; finite differences through
 * loss_backward itself with dropout on; the same numbers on 1 and 2 threads;
 * the reference's initial distribution, deterministic in the seed. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/safetensors.h"
#include "retriever/arch.h"
#include "retriever/attn_common.h"
#include "test.h"

#define BASELINES "tests/data/baselines/"

static rt_config tiny_config(const char *arch) {
    rt_config c = {.n_items = 30, .hidden = 16, .blocks = 2, .heads = 2, .max_len = 8, .mask_prob = 0.3f,
                   .reg_weight = 0.5f, .n_users = 5};
    snprintf(c.arch, sizeof c.arch, "%s", arch);
    return c;
}

/* BERT4Rec's reference batch is already masked: compared with train = 0 (the
 * batch taken literally). Its training draws the masks from the rows' labels
 * (the window's items): the train-mode checks give every row an item label. */
static int is_bert(const char *arch) { return !strcmp(arch, "bert4rec"); }

/* One reference file: its model (weights loaded, gradients allocated), batch and outputs. */
typedef struct {
    st_file f;
    rt_model m;
    void *acts;
    int n_seqs, n_rows;
    int seq_start[16];
    int32_t tokens[128], labels[128];
    rt_batch b;
} fixture;

static void fixture_free(fixture *x) {
    if (x->acts)
        x->m.arch->acts_free(x->acts);
    rt_model_free(&x->m);
    st_close(&x->f);
}

static int read_ints(const st_file *f, const char *name, int32_t *out, int max, mr_error *e) {
    const st_tensor *t = st_find(f, name);
    if (!t || st_numel(t) > max)
        return mr_fail(e, MR_ERR_INPUT, "%s: missing or too long", name);
    float tmp[128];
    int n = (int)st_numel(t);
    int rc = st_read_f32(t, tmp, n, e);
    for (int i = 0; i < n && !rc; i++) out[i] = (int32_t)tmp[i];
    return rc ? rc : n;
}

/* Loads the reference; strict: every model tensor present with its shape, nothing extra. */
static int fixture_open(fixture *x, const char *arch, rt_config c, mr_error *e) {
    memset(x, 0, sizeof *x);
    char path[256];
    snprintf(path, sizeof path, BASELINES "%s.safetensors", arch);
    int rc = st_open(&x->f, path, e);
    if (!rc)
        rc = rt_model_create(&x->m, &c, e);
    if (!rc)
        rc = rt_model_alloc_grads(&x->m, e);
    for (int i = 0; !rc && i < x->m.n_tensors; i++) {
        const rt_tensor *t = &x->m.tensors[i];
        const st_tensor *s = st_find(&x->f, t->name);
        if (!s)
            return mr_fail(e, MR_ERR_INPUT, "%s: no tensor %s", path, t->name);
        if (s->n_dims != t->n_dims)
            return mr_fail(e, MR_ERR_INPUT, "%s: %s has %d dims", path, t->name, s->n_dims);
        for (int k = 0; k < t->n_dims; k++)
            if (s->shape[k] != t->shape[k])
                return mr_fail(e, MR_ERR_INPUT, "%s: %s dim %d is %lld", path, t->name, k, (long long)s->shape[k]);
        rc = st_read_f32(s, x->m.params + t->offset, (int64_t)t->numel, e);
    }
    int n_weights = 0;
    for (int i = 0; !rc && i < x->f.n_tensors; i++) {
        const char *n = x->f.tensors[i].name;
        n_weights += strncmp(n, "grad.", 5) && strncmp(n, "batch.", 6) && strncmp(n, "out.", 4);
    }
    if (!rc && n_weights != x->m.n_tensors)
        return mr_fail(e, MR_ERR_INPUT, "%s: %d weights, the model has %d", path, n_weights, x->m.n_tensors);
    int32_t ss[16];
    int n = rc ? -1 : read_ints(&x->f, "batch.seq_start", ss, 16, e);
    if (n < 0)
        return rc ? rc : MR_ERR_INPUT;
    x->n_seqs = n - 1;
    for (int i = 0; i < n; i++) x->seq_start[i] = ss[i];
    x->n_rows = x->seq_start[x->n_seqs];
    if (read_ints(&x->f, "batch.tokens", x->tokens, 128, e) != x->n_rows ||
        read_ints(&x->f, "batch.labels", x->labels, 128, e) != x->n_rows)
        return mr_fail(e, MR_ERR_INPUT, "%s: batch does not match seq_start", path);
    if (c.dropout > 0 && is_bert(arch))
        for (int i = 0; i < x->n_rows; i++) x->labels[i] = 1 + (i * 7) % c.n_items;
    x->b = (rt_batch){.n_seqs = x->n_seqs, .n_rows = x->n_rows, .seq_start = x->seq_start,
                      .tokens = x->tokens, .labels = x->labels};
    return x->m.arch->acts_create(&x->acts, &x->m, x->n_rows, x->n_seqs, e);
}

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

static void check_against_reference(const char *arch) {
    mr_error e = {0};
    fixture x;
    int rc = fixture_open(&x, arch, tiny_config(arch), &e);
    if (rc) {
        fixture_free(&x);
        CHECK_OK(rc, &e);
    }
    const rt_arch *A = x.m.arch;
    if (!strcmp(arch, "stosa")) {
        /* the reference used the negatives our key 99 draws (its script ports the hash) */
        int32_t negs[128];
        const int n = read_ints(&x.f, "batch.negs", negs, 128, &e);
        int same = n == x.n_rows;
        for (int s = 0; same && s < x.n_seqs; s++) {
            const int r0 = x.seq_start[s], r = x.seq_start[s + 1] - r0;
            for (int j = 0; j < r; j++)
                if (x.tokens[r0 + j] > 0 && x.labels[r0 + j] > 0)
                    same &= negs[r0 + j] == stosa_negative(30, x.labels[r0 + j], NULL, 0, 99, s, 8 - r + j);
        }
        if (!same)
            fixture_free(&x);
        CHECK_MSG(same, "stosa: the reference's negatives are not the ones key 99 draws");
    }
    const double loss = A->loss_backward(&x.m, x.acts, &x.b, !is_bert(arch), 99);
    float ref_loss;
    CHECK_OK(st_read_f32(st_find(&x.f, "out.loss"), &ref_loss, 1, &e), &e);
    CHECK_MSG(fabs(loss - ref_loss) <= 1e-5 * fabs(ref_loss), "%s loss %.9g, reference %.9g", arch, loss, ref_loss);
    double worst = 0, gmax = 0;
    const char *worst_name = "";
    for (int i = 0; i < x.f.n_tensors; i++)
        if (!strncmp(x.f.tensors[i].name, "grad.", 5)) {
            float *tmp = malloc((size_t)st_numel(&x.f.tensors[i]) * sizeof *tmp);
            CHECK(tmp);
            st_read_f32(&x.f.tensors[i], tmp, st_numel(&x.f.tensors[i]), &e);
            gmax = fmax(gmax, max_abs(tmp, (size_t)st_numel(&x.f.tensors[i])));
            free(tmp);
        }
    for (int i = 0; i < x.m.n_tensors; i++) {
        const rt_tensor *t = &x.m.tensors[i];
        char name[128];
        snprintf(name, sizeof name, "grad.%s", t->name);
        float *ref = malloc(t->numel * sizeof *ref);
        CHECK(ref);
        rc = st_read_f32(st_find(&x.f, name), ref, (int64_t)t->numel, &e);
        if (rc) {
            free(ref);
            CHECK_OK(rc, &e);
        }
        /* A tensor whose gradient is zero in exact arithmetic (the key bias: softmax
         * ignores a shift shared by every key) holds only rounding in the
         * reference too; it is measured against 1e-3 of the largest gradient. */
        const double scale = fmax(max_abs(ref, t->numel), 1e-3 * gmax);
        double terr = 0;
        for (size_t j = 0; j < t->numel; j++) {
            const double err = fabs(x.m.grads[t->offset + j] - ref[j]) / (scale > 0 ? scale : 1.0);
            terr = fmax(terr, err);
            if (err > worst) {
                worst = err;
                worst_name = t->name;
            }
        }
        printf("    %-60s max|grad| %.3g, error %.3g of it\n", t->name, scale, terr);
        free(ref);
    }
    printf("  %s: loss %.9g (reference %.9g), worst gradient error %.3g of the tensor's max (%s)\n", arch, loss,
           ref_loss, worst, worst_name);
    CHECK_MSG(worst <= 1e-5, "%s: gradient of %s off by %g of its max", arch, worst_name, worst);
    const int V = x.m.cfg.n_items + 1;
    float *scores = malloc((size_t)x.n_seqs * V * sizeof *scores), *ref = malloc((size_t)x.n_seqs * V * sizeof *ref);
    CHECK(scores && ref);
    A->scores_last(&x.m, x.acts, &x.b, scores);
    rc = st_read_f32(st_find(&x.f, "out.scores"), ref, (int64_t)x.n_seqs * V, &e);
    double serr = 0, smax = max_abs(ref, (size_t)x.n_seqs * V);
    for (int i = 0; i < x.n_seqs * V; i++) serr = fmax(serr, fabs(scores[i] - ref[i]) / smax);
    free(scores);
    free(ref);
    fixture_free(&x);
    CHECK_OK(rc, &e);
    printf("  %s: worst score error %.3g of the max |score|\n", arch, serr);
    CHECK_MSG(serr <= 1e-5, "%s: scores off by %g of the max", arch, serr);
}

/* Central differences of loss_backward's loss, with dropout on and a fixed key
 * (the masks are then a fixed function), against its own gradient: per tensor
 * along its own gradient's direction u = g / |g| (the derivative there is |g|,
 * large enough to stand above float32 rounding of the loss), and along a fixed
 * pseudo-random direction. */
static void check_finite_differences(const char *arch) {
    mr_error e = {0};
    fixture x;
    rt_config c = tiny_config(arch);
    c.dropout = 0.3f;
    c.attn_dropout = 0.2f;
    int rc = fixture_open(&x, arch, c, &e);
    if (rc) {
        fixture_free(&x);
        CHECK_OK(rc, &e);
    }
    const rt_arch *A = x.m.arch;
    const uint64_t key = 1234;
    A->loss_backward(&x.m, x.acts, &x.b, 1, key);
    float *g = malloc(x.m.n_params * sizeof *g), *keep = malloc(x.m.n_params * sizeof *keep);
    float *u = malloc(x.m.n_params * sizeof *u);
    CHECK(g && keep && u);
    memcpy(g, x.m.grads, x.m.n_params * sizeof *g);
    memcpy(keep, x.m.params, x.m.n_params * sizeof *keep);
    mr_rng r;
    mr_rng_seed(&r, 5);
    int checked = 0;
    double worst = 0;
    for (int i = 0; i < x.m.n_tensors; i++) {
        const rt_tensor *t = &x.m.tensors[i];
        for (int dir = 0; dir < 2; dir++) {
            double norm = 0, an = 0;
            for (size_t j = 0; j < t->numel; j++) {
                u[j] = dir ? (float)mr_rng_normal(&r) : g[t->offset + j];
                norm += (double)u[j] * u[j];
            }
            norm = sqrt(norm);
            if (norm == 0)
                continue;
            for (size_t j = 0; j < t->numel; j++) {
                u[j] = (float)(u[j] / norm);
                an += (double)u[j] * g[t->offset + j];
            }
            const float h = 2e-3f; /* small: ReLU kinks sit within 1e-2 of many pre-activations */
            double l[2];
            for (int sgn = 0; sgn < 2; sgn++) {
                for (size_t j = 0; j < t->numel; j++)
                    x.m.params[t->offset + j] = keep[t->offset + j] + (sgn ? -h : h) * u[j];
                l[sgn] = A->loss_backward(&x.m, x.acts, &x.b, 1, key);
            }
            memcpy(x.m.params + t->offset, keep + t->offset, t->numel * sizeof(float));
            const double fd = (l[0] - l[1]) / (2.0 * h);
            /* float32 rounding of a loss near 13 (an ulp is 1e-6) leaves about 2.5e-4
             * of noise in fd after the division by 2h: that is the absolute floor */
            const double err = fabs(fd - an) / (0.02 * fabs(an) + 3e-4);
            if (err > worst)
                worst = err;
            if (err > 1)
                printf("  %s %s (%s direction): finite difference %.6g, backward %.6g\n", arch, t->name,
                       dir ? "random" : "gradient", fd, an);
            checked++;
        }
    }
    free(g);
    free(keep);
    free(u);
    fixture_free(&x);
    printf("  %s: %d directions, worst finite-difference error %.3g of 2%% + 3e-4\n", arch, checked, worst);
    CHECK_MSG(worst <= 1, "%s: finite differences off by %g", arch, worst);
}

/* Loss, gradients and scores bit-identical on 1 and 2 threads, dropout on. */
static void check_threads(const char *arch) {
    mr_error e = {0};
    rt_config c = tiny_config(arch);
    c.dropout = 0.3f;
    c.attn_dropout = 0.2f;
    double loss[2];
    float *grads[2] = {NULL, NULL}, *scores[2] = {NULL, NULL};
    size_t n = 0, ns = 0;
    const int saved = omp_get_max_threads();
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        fixture x;
        int rc = fixture_open(&x, arch, c, &e);
        if (rc) {
            fixture_free(&x);
            omp_set_num_threads(saved);
            CHECK_OK(rc, &e);
        }
        loss[t] = x.m.arch->loss_backward(&x.m, x.acts, &x.b, 1, 77);
        n = x.m.n_params;
        ns = (size_t)x.n_seqs * (size_t)(x.m.cfg.n_items + 1);
        grads[t] = malloc(n * sizeof(float));
        scores[t] = malloc(ns * sizeof(float));
        if (grads[t] && scores[t]) {
            memcpy(grads[t], x.m.grads, n * sizeof(float));
            x.m.arch->scores_last(&x.m, x.acts, &x.b, scores[t]);
        }
        fixture_free(&x);
    }
    omp_set_num_threads(saved);
    const int same = grads[0] && grads[1] && scores[0] && scores[1] && loss[0] == loss[1] &&
                     !memcmp(grads[0], grads[1], n * sizeof(float)) &&
                     !memcmp(scores[0], scores[1], ns * sizeof(float));
    for (int t = 0; t < 2; t++) {
        free(grads[t]);
        free(scores[t]);
    }
    CHECK_MSG(same, "%s: results differ between 1 and 2 threads", arch);
}

/* The dropout masks follow the key: another key, another loss; the same key, the same. */
static void check_keyed(const char *arch) {
    mr_error e = {0};
    rt_config c = tiny_config(arch);
    c.dropout = 0.3f;
    c.attn_dropout = 0.2f;
    fixture x;
    int rc = fixture_open(&x, arch, c, &e);
    if (rc) {
        fixture_free(&x);
        CHECK_OK(rc, &e);
    }
    const rt_arch *A = x.m.arch;
    const double a = A->loss_backward(&x.m, x.acts, &x.b, 1, 5), b = A->loss_backward(&x.m, x.acts, &x.b, 1, 6);
    const double a2 = A->loss_backward(&x.m, x.acts, &x.b, 1, 5), ev = A->loss_backward(&x.m, x.acts, &x.b, 0, 5);
    const double ev2 = A->loss_backward(&x.m, x.acts, &x.b, 0, 6), ev3 = A->loss_backward(&x.m, x.acts, &x.b, 0, 5);
    fixture_free(&x);
    CHECK_MSG(a == a2 && a != b, "%s: keyed dropout: %.9g %.9g %.9g", arch, a, a2, b);
    /* train = 0 drops nothing; STOSA's objective still draws its negatives by the key */
    if (!strcmp(arch, "stosa"))
        CHECK_MSG(ev == ev3 && ev != ev2 && ev != a, "stosa: train = 0: %.9g %.9g %.9g", ev, ev2, ev3);
    else
        CHECK_MSG(ev == ev2 && ev != a, "%s: train = 0 must ignore the key and drop nothing", arch);
}

TEST(sasrec_matches_pytorch) { check_against_reference("sasrec"); }
TEST(sasrec_finite_differences) { check_finite_differences("sasrec"); }
TEST(sasrec_same_on_1_and_2_threads) { check_threads("sasrec"); }
TEST(sasrec_dropout_keyed) { check_keyed("sasrec"); }
TEST(stosa_matches_pytorch) { check_against_reference("stosa"); }
TEST(stosa_finite_differences) { check_finite_differences("stosa"); }
TEST(stosa_same_on_1_and_2_threads) { check_threads("stosa"); }
TEST(stosa_dropout_and_negatives_keyed) { check_keyed("stosa"); }
TEST(bert4rec_matches_pytorch) { check_against_reference("bert4rec"); }
TEST(bert4rec_finite_differences) { check_finite_differences("bert4rec"); }
TEST(bert4rec_same_on_1_and_2_threads) { check_threads("bert4rec"); }
TEST(bert4rec_dropout_and_masking_keyed) { check_keyed("bert4rec"); }

/* The init: layer norms ones and zeros, the token table's padding row 0, everything
 * else truncated normal std 0.02 cut at +-0.04 (std of the truncated law 0.02 *
 * 0.8796), except BERT4Rec's embeddings, N(0, 1) as the reference's (SASRec's start as
 * its other weights: src/retriever/sasrec.c, tests/test_retriever_init.c); same seed,
 * same weights. */
static void check_init(const char *arch) {
    mr_error e = {0};
    rt_config c = {.n_items = 500, .hidden = 64, .blocks = 2, .heads = 2, .max_len = 50, .mask_prob = 0.2f};
    snprintf(c.arch, sizeof c.arch, "%s", arch);
    rt_model m1, m2, m3;
    CHECK_OK(rt_model_create(&m1, &c, &e), &e);
    CHECK_OK(rt_model_create(&m2, &c, &e), &e);
    CHECK_OK(rt_model_create(&m3, &c, &e), &e);
    m1.arch->init(&m1, 42);
    m2.arch->init(&m2, 42);
    m3.arch->init(&m3, 43);
    const int same = !memcmp(m1.params, m2.params, m1.n_params * sizeof(float));
    const int differs = memcmp(m1.params, m3.params, m1.n_params * sizeof(float)) != 0;
    int bad = 0;
    for (int i = 0; i < m1.n_tensors && !bad; i++) {
        const rt_tensor *t = &m1.tensors[i];
        const float *p = m1.params + t->offset;
        double s = 0, s2 = 0, mx = 0;
        size_t j0 = 0;
        if (i == 0) { /* padding row */
            for (int k = 0; k < c.hidden; k++) bad |= p[k] != 0.0f;
            j0 = (size_t)c.hidden;
        }
        for (size_t j = j0; j < t->numel; j++) {
            s += p[j];
            s2 += (double)p[j] * p[j];
            mx = fmax(mx, fabs(p[j]));
        }
        const double n = (double)(t->numel - j0), mean = s / n, sd = sqrt(s2 / n - mean * mean);
        if (strstr(t->name, "layer_norm")) {
            const double want = strstr(t->name, "weight") ? 1.0 : 0.0;
            bad |= mean != want || sd > 1e-6;
        } else if (i < 2 && !strcmp(arch, "bert4rec")) {
            bad |= fabs(sd - 1.0) > 0.05 || fabs(mean) > 0.05;
        } else {
            bad |= mx > 0.04 || (n >= 4096 && fabs(sd - 0.02 * 0.8796) > 0.001);
        }
        if (bad)
            printf("  %s: mean %g sd %g max %g\n", t->name, mean, sd, mx);
    }
    rt_model_free(&m1);
    rt_model_free(&m2);
    rt_model_free(&m3);
    CHECK(same && differs);
    CHECK(!bad);
}

TEST(sasrec_init_distribution) { check_init("sasrec"); }
TEST(bert4rec_init_distribution) { check_init("bert4rec"); }

/* A sequence longer than max_len (or a batch over the scratch) is refused with
 * a NaN loss rather than written past the buffers. */
static void check_refuses_long(const char *arch) {
    mr_error e = {0};
    rt_config c = tiny_config(arch);
    rt_model m;
    void *acts = NULL;
    CHECK_OK(rt_model_create(&m, &c, &e), &e);
    int rc = rt_model_alloc_grads(&m, &e);
    if (!rc)
        rc = m.arch->acts_create(&acts, &m, 16, 2, &e);
    if (rc)
        rt_model_free(&m);
    CHECK_OK(rc, &e);
    m.arch->init(&m, 1);
    int32_t tok[16], lab[16];
    for (int i = 0; i < 16; i++) {
        tok[i] = 1 + i;
        lab[i] = 2 + i;
    }
    const int too_long[3] = {0, 9, 12}, fine[3] = {0, 8, 12};
    rt_batch b = {.n_seqs = 2, .n_rows = 12, .seq_start = too_long, .tokens = tok, .labels = lab};
    const double bad = m.arch->loss_backward(&m, acts, &b, 1, 1);
    b.seq_start = fine;
    const double good = m.arch->loss_backward(&m, acts, &b, 1, 1);
    m.arch->acts_free(acts);
    rt_model_free(&m);
    CHECK_MSG(isnan(bad) && isfinite(good), "%s: loss %g on a 9-row window, %g on 8 rows", arch, bad, good);
}
TEST(long_windows_refused) {
    check_refuses_long("sasrec");
    check_refuses_long("bert4rec");
    check_refuses_long("stosa");
}

/* STOSA's init_weights: every Linear and Embedding weight N(0.01, 0.02), padding
 * rows included; Linear biases 0; LayerNorms ones and zeros. */
TEST(stosa_init_distribution) {
    mr_error e = {0};
    rt_config c = tiny_config("stosa");
    c.n_items = 500;
    c.hidden = 64;
    c.max_len = 50;
    rt_model m1, m2;
    CHECK_OK(rt_model_create(&m1, &c, &e), &e);
    CHECK_OK(rt_model_create(&m2, &c, &e), &e);
    m1.arch->init(&m1, 42);
    m2.arch->init(&m2, 42);
    const int same = !memcmp(m1.params, m2.params, m1.n_params * sizeof(float));
    int bad = 0;
    for (int i = 0; i < m1.n_tensors && !bad; i++) {
        const rt_tensor *t = &m1.tensors[i];
        const float *p = m1.params + t->offset;
        double s = 0, s2 = 0;
        for (size_t j = 0; j < t->numel; j++) {
            s += p[j];
            s2 += (double)p[j] * p[j];
        }
        const double n = (double)t->numel, mean = s / n, sd = sqrt(fmax(s2 / n - mean * mean, 0));
        if (strstr(t->name, "LayerNorm"))
            bad |= mean != (strstr(t->name, "weight") ? 1.0 : 0.0) || sd > 1e-6;
        else if (strstr(t->name, ".bias"))
            bad |= mean != 0.0 || sd != 0.0;
        else if (n >= 4096)
            bad |= fabs(mean - 0.01) > 0.002 || fabs(sd - 0.02) > 0.001;
        if (bad)
            printf("  %s: mean %g sd %g\n", t->name, mean, sd);
    }
    rt_model_free(&m1);
    rt_model_free(&m2);
    CHECK(same);
    CHECK(!bad);
}

/* STOSA's negatives: never the positive, uniform over the other items, keyed. */
TEST(stosa_negatives_uniform) {
    enum { N_ITEMS = 20, DRAWS = 40000 };
    long count[N_ITEMS + 1] = {0};
    for (int k = 0; k < DRAWS; k++) {
        const int32_t q = stosa_negative(N_ITEMS, 7, NULL, 0, 3, k / 50, k % 50);
        CHECK(q >= 1 && q <= N_ITEMS && q != 7);
        count[q]++;
    }
    for (int q = 1; q <= N_ITEMS; q++)
        if (q != 7)
            CHECK_NEAR(count[q] / (double)DRAWS, 1.0 / (N_ITEMS - 1), 0.006);
    CHECK(stosa_negative(N_ITEMS, 7, NULL, 0, 3, 11, 4) == stosa_negative(N_ITEMS, 7, NULL, 0, 3, 11, 4));
}

/* With the user's training items given (the trainer's rt_batch.user_items), STOSA's
 * negatives avoid all of them, as the reference's neg_sample over set(items) does:
 * uniform over the rest, keyed; a user who has seen all but one item gets that one. */
TEST(stosa_negatives_avoid_the_users_items) {
    enum { N_ITEMS = 20, DRAWS = 40000 };
    const int32_t seen[] = {7, 2, 19, 5, 7, 11, 3};
    long count[N_ITEMS + 1] = {0};
    for (int k = 0; k < DRAWS; k++) {
        const int32_t q = stosa_negative(N_ITEMS, 7, seen, 7, 3, k / 50, k % 50);
        CHECK(q >= 1 && q <= N_ITEMS);
        count[q]++;
    }
    for (int q = 1; q <= N_ITEMS; q++) {
        int in = 0;
        for (int i = 0; i < 7; i++) in |= seen[i] == q;
        if (in)
            CHECK_MSG(count[q] == 0, "item %d of the user's sequence drawn %ld times", q, count[q]);
        else
            CHECK_NEAR(count[q] / (double)DRAWS, 1.0 / 14, 0.006);
    }
    CHECK(stosa_negative(N_ITEMS, 7, seen, 7, 3, 11, 4) == stosa_negative(N_ITEMS, 7, seen, 7, 3, 11, 4));
    int32_t all_but_13[N_ITEMS - 1];
    for (int q = 1, n = 0; q <= N_ITEMS; q++)
        if (q != 13) all_but_13[n++] = q;
    for (int k = 0; k < 200; k++) CHECK(stosa_negative(N_ITEMS, 7, all_but_13, N_ITEMS - 1, 3, k, 0) == 13);
}

/* The reference's cloze masking (dataloader/bert.py): each item row with
 * probability mask_prob, the last row mask_prob + 0.1 (1 - mask_prob); of the
 * masked rows 80% the mask token, 10% a random item, 10% unchanged; an item
 * already masked in the window is not masked again; at most max_predictions;
 * keyed by (key, example, position) only. */
TEST(bert4rec_cloze_masking) {
    enum { R = 50, WINDOWS = 20000 };
    rt_config c = tiny_config("bert4rec");
    c.n_items = 1000;
    c.mask_prob = 0.3f;
    int32_t items[R], tok[R], tgt[R], cov[R], tok2[R], tgt2[R];
    for (int j = 0; j < R; j++) items[j] = 1 + j * 13;
    long masked = 0, masked_last = 0, to_mask = 0, to_random = 0, kept = 0;
    for (int w = 0; w < WINDOWS; w++) {
        bert4rec_mask_window(&c, tok, tgt, items, R, 0, w, 9, cov);
        for (int j = 0; j < R; j++) {
            CHECK(tgt[j] == 0 || tgt[j] == items[j]);
            if (!tgt[j]) {
                CHECK(tok[j] == items[j]);
                continue;
            }
            if (j == R - 1)
                masked_last++;
            else
                masked++;
            if (tok[j] == c.n_items + 1)
                to_mask++;
            else if (tok[j] == items[j])
                kept++;
            else {
                CHECK(tok[j] >= 1 && tok[j] <= c.n_items);
                to_random++;
            }
        }
    }
    const double rate = (double)masked / ((double)WINDOWS * (R - 1)), last = (double)masked_last / WINDOWS;
    const double all = (double)(masked + masked_last);
    printf("  masked %.4f of the rows (last row %.4f); of them %.4f mask token, %.4f random, %.4f unchanged\n", rate,
           last, to_mask / all, to_random / all, kept / all);
    CHECK_NEAR(rate, 0.3, 0.005);
    CHECK_NEAR(last, 0.3 + 0.1 * 0.7, 0.01);
    CHECK_NEAR(to_mask / all, 0.8, 0.01);
    CHECK_NEAR(to_random / all, 0.1, 0.01);
    CHECK_NEAR(kept / all, 0.1, 0.01);
    /* the same key and example give the same masks; another example others */
    bert4rec_mask_window(&c, tok, tgt, items, R, 0, 7, 9, cov);
    bert4rec_mask_window(&c, tok2, tgt2, items, R, 0, 7, 9, cov);
    CHECK(!memcmp(tok, tok2, sizeof tok) && !memcmp(tgt, tgt2, sizeof tgt));
    bert4rec_mask_window(&c, tok2, tgt2, items, R, 0, 8, 9, cov);
    CHECK(memcmp(tgt, tgt2, sizeof tgt) != 0);
    /* a repeated item is masked at most once; padding never; max_predictions caps */
    for (int j = 0; j < R; j++) items[j] = j < 5 ? 0 : 42;
    for (int w = 0; w < 200; w++) {
        bert4rec_mask_window(&c, tok, tgt, items, R, 0, w, 3, cov);
        int n = 0;
        for (int j = 0; j < R; j++) {
            n += tgt[j] != 0;
            CHECK(j >= 5 || (tok[j] == 0 && tgt[j] == 0));
        }
        CHECK(n <= 1);
    }
    for (int j = 0; j < R; j++) items[j] = 1 + j;
    c.max_predictions = 3;
    for (int w = 0; w < 200; w++) {
        bert4rec_mask_window(&c, tok, tgt, items, R, 0, w, 3, cov);
        int n = 0;
        for (int j = 0; j < R; j++) n += tgt[j] != 0;
        CHECK(n <= 3);
    }
}

int main(void) {
    RUN(sasrec_matches_pytorch);
    RUN(sasrec_finite_differences);
    RUN(sasrec_same_on_1_and_2_threads);
    RUN(sasrec_dropout_keyed);
    RUN(sasrec_init_distribution);
    RUN(bert4rec_matches_pytorch);
    RUN(bert4rec_finite_differences);
    RUN(bert4rec_same_on_1_and_2_threads);
    RUN(bert4rec_dropout_and_masking_keyed);
    RUN(bert4rec_cloze_masking);
    RUN(bert4rec_init_distribution);
    RUN(stosa_matches_pytorch);
    RUN(stosa_finite_differences);
    RUN(stosa_same_on_1_and_2_threads);
    RUN(stosa_dropout_and_negatives_keyed);
    RUN(stosa_init_distribution);
    RUN(stosa_negatives_uniform);
    RUN(stosa_negatives_avoid_the_users_items);
    RUN(long_windows_refused);
    return test_summary();
}
