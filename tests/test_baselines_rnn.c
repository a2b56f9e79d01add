/* GRU4Rec and NARM (src/retriever/gru4rec.c, narm.c) against their PyTorch references:
 * tests/data/baselines/{gru4rec,narm}.safetensors, made by
 * scripts/baselines_rnn_torch.py baselines (float64, dropout 0) on a tiny
 * configuration: 30 items, hidden 16, 2 GRU layers (GRU4Rec), max_len 8, four
 * sequences of different lengths, two of them windows that start at the user's first
 * item. Asserted: the weights load under the reference's state_dict names and shapes
 * and nothing is left over (strict=True); the training loss and scores_last's scores
 * within 1e-5 relative; every parameter's gradient within 1e-5 of that tensor's max
 * |grad|. Then, on the C side alone: finite differences through loss_backward itself
 * with dropout on (its masks are fixed by the key), the same numbers at 1 and 2
 * threads, dropout keyed by (example, row) and not by the batch, and the reference's
 * initialisation (deterministic in the seed, its distribution). */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/safetensors.h"
#include "retriever/arch.h"
#include "test.h"

typedef struct ref_case {
    rt_model m;
    st_file f;
    int n_seqs, n_rows;
    int *seq_start;
    int32_t *tokens, *labels;
    int64_t *example;
    float *scores; /* [n_seqs, V] */
    double loss;
} ref_case;

static rt_config tiny_config(const char *arch) {
    rt_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.arch, sizeof c.arch, "%s", arch);
    c.n_items = 30;
    c.hidden = 16;
    c.blocks = 2;
    c.max_len = 8;
    return c;
}

static int read_ints(const st_file *f, const char *name, int n, int *out, mr_error *e) {
    const st_tensor *t = st_find(f, name);
    if (!t) return mr_fail(e, MR_ERR_INPUT, "%s: no tensor %s", f->path, name);
    float *tmp = malloc(sizeof(float) * (size_t)(n ? n : 1));
    int rc = st_read_f32(t, tmp, n, e);
    for (int i = 0; !rc && i < n; i++) out[i] = (int)tmp[i];
    free(tmp);
    return rc;
}

static void case_free(ref_case *c) {
    rt_model_free(&c->m);
    st_close(&c->f);
    free(c->seq_start);
    free(c->tokens);
    free(c->labels);
    free(c->example);
    free(c->scores);
    memset(c, 0, sizeof *c);
}

/* Loads the file: the model (strictly: every tensor named and shaped as ours, no
 * other weight tensor), the batch and the reference outputs. */
static int case_load(ref_case *c, const char *arch, mr_error *e) {
    memset(c, 0, sizeof *c);
    char path[256];
    snprintf(path, sizeof path, "tests/data/baselines/%s.safetensors", arch);
    rt_config cfg = tiny_config(arch);
    int rc = st_open(&c->f, path, e);
    if (!rc) rc = rt_model_create(&c->m, &cfg, e);
    if (!rc) rc = rt_model_alloc_grads(&c->m, e);
    for (int i = 0; !rc && i < c->m.n_tensors; i++) {
        const rt_tensor *t = &c->m.tensors[i];
        const st_tensor *s = st_find(&c->f, t->name);
        if (!s) return mr_fail(e, MR_ERR_INPUT, "%s: the reference has no %s", path, t->name);
        if (s->n_dims != t->n_dims) return mr_fail(e, MR_ERR_INPUT, "%s: %s has %d dims", path, t->name, s->n_dims);
        for (int d = 0; d < t->n_dims; d++)
            if (s->shape[d] != t->shape[d])
                return mr_fail(e, MR_ERR_INPUT, "%s: %s dim %d is %lld, ours %lld", path, t->name, d,
                               (long long)s->shape[d], (long long)t->shape[d]);
        rc = st_read_f32(s, c->m.params + t->offset, (int64_t)t->numel, e);
    }
    int weights = 0;
    for (int i = 0; !rc && i < c->f.n_tensors; i++) {
        const char *n = c->f.tensors[i].name;
        if (strncmp(n, "grad.", 5) && strncmp(n, "batch.", 6) && strcmp(n, "scores") && strcmp(n, "loss")) weights++;
    }
    if (!rc && weights != c->m.n_tensors)
        return mr_fail(e, MR_ERR_INPUT, "%s: %d weight tensors, our layout has %d", path, weights, c->m.n_tensors);
    if (rc) return rc;
    const st_tensor *ss = st_find(&c->f, "batch.seq_start"), *tok = st_find(&c->f, "batch.tokens");
    if (!ss || !tok) return mr_fail(e, MR_ERR_INPUT, "%s: no batch", path);
    c->n_seqs = (int)st_numel(ss) - 1;
    c->n_rows = (int)st_numel(tok);
    c->seq_start = malloc(sizeof(int) * (size_t)(c->n_seqs + 1));
    c->tokens = malloc(sizeof(int32_t) * (size_t)c->n_rows);
    c->labels = malloc(sizeof(int32_t) * (size_t)c->n_rows);
    c->example = malloc(sizeof(int64_t) * (size_t)c->n_seqs);
    const size_t V = (size_t)cfg.n_items + 1;
    c->scores = malloc(sizeof(float) * (size_t)c->n_seqs * V);
    rc = read_ints(&c->f, "batch.seq_start", c->n_seqs + 1, c->seq_start, e);
    if (!rc) rc = read_ints(&c->f, "batch.tokens", c->n_rows, c->tokens, e);
    if (!rc) rc = read_ints(&c->f, "batch.labels", c->n_rows, c->labels, e);
    for (int s = 0; s < c->n_seqs; s++) c->example[s] = 100 + 7 * s;
    const st_tensor *sc = st_find(&c->f, "scores"), *lo = st_find(&c->f, "loss");
    if (!rc && (!sc || !lo)) rc = mr_fail(e, MR_ERR_INPUT, "%s: no scores or loss", path);
    if (!rc) rc = st_read_f32(sc, c->scores, (int64_t)(c->n_seqs * V), e);
    float l = 0;
    if (!rc) rc = st_read_f32(lo, &l, 1, e);
    c->loss = l;
    return rc;
}

static rt_batch case_batch(const ref_case *c, int with_labels) {
    rt_batch b = {.n_seqs = c->n_seqs, .n_rows = c->n_rows, .seq_start = c->seq_start, .tokens = c->tokens,
                  .labels = with_labels ? c->labels : NULL, .example = c->example};
    return b;
}

static void against_reference(const char *arch) {
    mr_error e = {0};
    ref_case c;
    int rc = case_load(&c, arch, &e);
    if (rc) {
        case_free(&c);
        CHECK_MSG(0, "%s: %s", arch, e.msg);
    }
    void *acts = NULL;
    rc = c.m.arch->acts_create(&acts, &c.m, c.n_rows, c.n_seqs, &e);
    if (rc) {
        case_free(&c);
        CHECK_MSG(0, "%s: %s", arch, e.msg);
    }
    rt_batch b = case_batch(&c, 1);
    const double loss = c.m.arch->loss_backward(&c.m, acts, &b, 1, 99);
    char fail[512] = "";
    if (!(fabs(loss - c.loss) <= 1e-5 * fabs(c.loss)))
        snprintf(fail, sizeof fail, "%s: loss %.9g, reference %.9g", arch, loss, c.loss);
    double worst_grad = 0;
    const char *worst_name = "";
    float *ref = NULL;
    for (int i = 0; !fail[0] && i < c.m.n_tensors; i++) {
        const rt_tensor *t = &c.m.tensors[i];
        char name[128];
        snprintf(name, sizeof name, "grad.%s", t->name);
        const st_tensor *g = st_find(&c.f, name);
        free(ref);
        ref = malloc(sizeof(float) * t->numel);
        if (!g || st_read_f32(g, ref, (int64_t)t->numel, &e)) {
            snprintf(fail, sizeof fail, "%s: no %s in the reference", arch, name);
            break;
        }
        double mx = 0, diff = 0;
        for (size_t k = 0; k < t->numel; k++) {
            mx = fmax(mx, fabs(ref[k]));
            diff = fmax(diff, fabs((double)c.m.grads[t->offset + k] - ref[k]));
        }
        if (mx == 0) {
            if (diff != 0) snprintf(fail, sizeof fail, "%s: %s should be zero, differs by %g", arch, name, diff);
            continue;
        }
        if (diff / mx > worst_grad) {
            worst_grad = diff / mx;
            worst_name = t->name;
        }
        if (diff > 1e-5 * mx)
            snprintf(fail, sizeof fail, "%s: %s differs by %g, %g of the tensor's max |grad| %g", arch, name, diff,
                     diff / mx, mx);
    }
    free(ref);
    const size_t V = (size_t)c.m.cfg.n_items + 1;
    float *scores = malloc(sizeof(float) * (size_t)c.n_seqs * V);
    rt_batch eb = case_batch(&c, 0);
    c.m.arch->scores_last(&c.m, acts, &eb, scores);
    double worst_score = 0;
    for (size_t k = 0; k < (size_t)c.n_seqs * V; k++)
        worst_score = fmax(worst_score, fabs(scores[k] - c.scores[k]) / fmax(1.0, fabs(c.scores[k])));
    if (!fail[0] && worst_score > 1e-5)
        snprintf(fail, sizeof fail, "%s: scores differ by %g relative", arch, worst_score);
    printf("# %s: loss %.9g (reference %.9g); worst gradient difference %.3g of its tensor's max (%s); "
           "worst score difference %.3g relative\n",
           arch, loss, c.loss, worst_grad, worst_name, worst_score);
    free(scores);
    c.m.arch->acts_free(acts);
    case_free(&c);
    CHECK_MSG(!fail[0], "%s", fail);
}

TEST(gru4rec_matches_pytorch) { against_reference("gru4rec"); }
TEST(narm_matches_pytorch) { against_reference("narm"); }

/* ---- the C model alone: finite differences with dropout on */

static double loss_at(ref_case *c, void *acts, uint64_t key) {
    rt_batch b = case_batch(c, 1);
    return c->m.arch->loss_backward(&c->m, acts, &b, 1, key);
}

static void finite_differences(const char *arch) {
    mr_error e = {0};
    ref_case c;
    int rc = case_load(&c, arch, &e);
    void *acts = NULL;
    if (!rc) rc = c.m.arch->acts_create(&acts, &c.m, c.n_rows, c.n_seqs, &e);
    if (rc) {
        case_free(&c);
        CHECK_MSG(0, "%s: %s", arch, e.msg);
    }
    c.m.cfg.dropout = 0.3f;
    c.m.cfg.attn_dropout = 0.3f;
    const uint64_t key = 1234;
    loss_at(&c, acts, key);
    float *grad = malloc(sizeof(float) * c.m.n_params);
    memcpy(grad, c.m.grads, sizeof(float) * c.m.n_params);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < c.m.n_tensors; i++) {
        const rt_tensor *t = &c.m.tensors[i];
        /* the tensor's largest gradient and a few spread entries */
        size_t at[6], big = 0;
        double mx = 0;
        for (size_t k = 0; k < t->numel; k++)
            if (fabs(grad[t->offset + k]) > mx) mx = fabs(grad[t->offset + (big = k)]);
        at[0] = big;
        for (int j = 1; j < 6; j++) at[j] = (size_t)((uint64_t)j * 2654435761u % t->numel);
        for (int j = 0; j < 6; j++) {
            float *p = c.m.params + t->offset + at[j];
            const float keep = *p, eps = 1e-2f;
            *p = keep + eps;
            double lp = loss_at(&c, acts, key);
            *p = keep - eps;
            double lm = loss_at(&c, acts, key);
            *p = keep;
            double fd = (lp - lm) / (2.0 * eps), g = grad[t->offset + at[j]];
            double err = fabs(fd - g) / (1e-3 + mx);
            if (err > worst) {
                worst = err;
                worst_name = t->name;
            }
        }
    }
    printf("# %s: finite differences through loss_backward (dropout 0.3): worst error %.3g of the tensor's max "
           "(%s)\n", arch, worst, worst_name);
    free(grad);
    c.m.arch->acts_free(acts);
    case_free(&c);
    CHECK_MSG(worst < 2e-2, "%s: finite differences differ by %g of the tensor's max (%s)", arch, worst, worst_name);
}

TEST(gru4rec_finite_differences_with_dropout) { finite_differences("gru4rec"); }
TEST(narm_finite_differences_with_dropout) { finite_differences("narm"); }

/* ---- threads and keyed dropout */

static void threads_and_keys(const char *arch) {
    mr_error e = {0};
    ref_case c;
    int rc = case_load(&c, arch, &e);
    void *acts = NULL;
    if (!rc) rc = c.m.arch->acts_create(&acts, &c.m, c.n_rows, c.n_seqs, &e);
    if (rc) {
        case_free(&c);
        CHECK_MSG(0, "%s: %s", arch, e.msg);
    }
    c.m.cfg.dropout = 0.3f;
    c.m.cfg.attn_dropout = 0.3f;
    const int keep = omp_get_max_threads();
    const size_t V = (size_t)c.m.cfg.n_items + 1, n = c.m.n_params;
    float *g1 = malloc(sizeof(float) * n), *s1 = malloc(sizeof(float) * c.n_seqs * V),
          *s2 = malloc(sizeof(float) * c.n_seqs * V);
    rt_batch eb = case_batch(&c, 0);
    omp_set_num_threads(1);
    double l1 = loss_at(&c, acts, 5);
    memcpy(g1, c.m.grads, sizeof(float) * n);
    c.m.arch->scores_last(&c.m, acts, &eb, s1);
    omp_set_num_threads(2);
    double l2 = loss_at(&c, acts, 5);
    c.m.arch->scores_last(&c.m, acts, &eb, s2);
    omp_set_num_threads(keep);
    const int same = l1 == l2 && !memcmp(g1, c.m.grads, sizeof(float) * n) &&
                     !memcmp(s1, s2, sizeof(float) * c.n_seqs * V);
    /* dropout acts and follows the key */
    const double l_other = loss_at(&c, acts, 6);
    rt_batch b = case_batch(&c, 1);
    const double l_eval = c.m.arch->loss_backward(&c.m, acts, &b, 0, 5);
    /* keyed by (example, row), not by the batch: the summed loss of the whole batch equals
     * the sums of its sequences run alone (each with its own example index) */
    int rows_one;
    double parts = 0;
    int counted = 0;
    for (int s = 0; s < c.n_seqs; s++) {
        int st[2] = {0, c.seq_start[s + 1] - c.seq_start[s]};
        rt_batch one = {.n_seqs = 1, .n_rows = st[1], .seq_start = st, .tokens = c.tokens + c.seq_start[s],
                        .labels = c.labels + c.seq_start[s], .example = c.example + s};
        rows_one = 0;
        for (int r = c.seq_start[s]; r < c.seq_start[s + 1]; r++)
            rows_one += c.labels[r] > 0 && !(r == c.seq_start[s] && c.tokens[r] == 0);
        parts += c.m.arch->loss_backward(&c.m, acts, &one, 1, 5) * rows_one;
        counted += rows_one;
    }
    const double whole = l1 * counted;
    free(g1);
    free(s1);
    free(s2);
    c.m.arch->acts_free(acts);
    case_free(&c);
    CHECK_MSG(same, "%s: results differ between 1 and 2 threads", arch);
    CHECK_MSG(l_other != l1 && l_eval != l1, "%s: dropout had no effect (key 5 %g, key 6 %g, no dropout %g)", arch, l1,
              l_other, l_eval);
    CHECK_MSG(fabs(whole - parts) <= 1e-5 * fabs(whole),
              "%s: the batch's summed loss %.9g differs from its sequences run alone %.9g", arch, whole, parts);
}

TEST(gru4rec_threads_and_keyed_dropout) { threads_and_keys("gru4rec"); }
TEST(narm_threads_and_keyed_dropout) { threads_and_keys("narm"); }

/* ---- initialisation */

typedef struct stats {
    double mean, sd, maxabs;
} stats;
static stats stats_of(const float *x, size_t n) {
    double s = 0, ss = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        ss += (double)x[i] * x[i];
        mx = fmax(mx, fabs(x[i]));
    }
    stats r = {s / n, sqrt(ss / n - (s / n) * (s / n)), mx};
    return r;
}

static void init_case(const char *arch) {
    mr_error e = {0};
    rt_config cfg = tiny_config(arch);
    cfg.n_items = 2000;
    cfg.hidden = 32;
    rt_model a, b;
    int rc = rt_model_create(&a, &cfg, &e);
    if (!rc) {
        rc = rt_model_create(&b, &cfg, &e);
        if (rc) rt_model_free(&a);
    }
    CHECK_MSG(!rc, "%s: %s", arch, e.msg);
    a.arch->init(&a, 11);
    b.arch->init(&b, 11);
    int same = !memcmp(a.params, b.params, sizeof(float) * a.n_params);
    b.arch->init(&b, 12);
    int differs = memcmp(a.params, b.params, sizeof(float) * a.n_params) != 0;
    char fail[256] = "";
    const double H = cfg.hidden, V = cfg.n_items + 1;
    for (int i = 0; i < a.n_tensors && !fail[0]; i++) {
        const rt_tensor *t = &a.tensors[i];
        stats s = stats_of(a.params + t->offset, t->numel);
        double bound, sd;
        if (!strcmp(arch, "narm")) {
            /* truncated normal, std 0.02 cut at two std: sd 0.02 * 0.8796 */
            bound = 0.04;
            sd = 0.02 * 0.8796;
        } else if (strstr(t->name, "bias") || !strcmp(t->name, "By.weight")) {
            bound = sd = 0;
        } else {
            /* uniform +-sqrt(6 / (fan_in + fan_out)): sd bound / sqrt(3) */
            bound = !strcmp(t->name, "Wy.weight") ? sqrt(6.0 / (V + H)) : sqrt(6.0 / (2 * H));
            sd = bound / sqrt(3.0);
        }
        const double tol_sd = t->numel > 1000 ? 0.05 : 0.25;
        if (s.maxabs > bound * (1 + 1e-6) || fabs(s.sd - sd) > tol_sd * sd + 1e-12 ||
            fabs(s.mean) > 4.0 * sd / sqrt((double)t->numel) + 1e-12)
            snprintf(fail, sizeof fail, "%s: %s mean %g sd %g max %g, expected sd %g within +-%g", arch, t->name, s.mean,
                     s.sd, s.maxabs, sd, bound);
    }
    rt_model_free(&a);
    rt_model_free(&b);
    CHECK_MSG(same && differs, "%s: init is not a function of the seed", arch);
    CHECK_MSG(!fail[0], "%s", fail);
}

TEST(gru4rec_init_as_the_official_code) { init_case("gru4rec"); }
TEST(narm_init_as_the_reference) { init_case("narm"); }

int main(void) {
    RUN(gru4rec_matches_pytorch);
    RUN(narm_matches_pytorch);
    RUN(gru4rec_finite_differences_with_dropout);
    RUN(narm_finite_differences_with_dropout);
    RUN(gru4rec_threads_and_keyed_dropout);
    RUN(narm_threads_and_keyed_dropout);
    RUN(gru4rec_init_as_the_official_code);
    RUN(narm_init_as_the_reference);
    return test_summary();
}
