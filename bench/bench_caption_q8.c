/* Where the Q8_0 decoder's captions part from BF16's, and why (issue 17).
 *
 *   build/bench/bench_caption_q8 [--model DIR] [--images DIR] [--max N] [--threads T]
 *                                [--max-new-tokens N] [--list N]
 *
 * Defaults: the tiny reference model ../shared/reference/hf/blip2 and the 1663
 * posters of ../shared/data/ml100k-posters/jpg. Every image's soft prompt (vision
 * encoder, Q-Former, projection: float weights, the same in every decoder type)
 * is computed once; then OPT runs at the decoder types BF16 (the reference),
 * F32, Q8_0 with 8-bit activations (the integer path, the default), Q8_0 with
 * float activations (only the weights' rounding) and Q4_0:
 *  - greedy captions (ids) of each type, compared with BF16's;
 *  - teacher-forced along BF16's caption, each type's logits at every generated
 *    step: the error e(s) = max_j |l(s, j) - l_bf16(s, j)|;
 *  - BF16's margin m(s) = top-1 minus top-2 logit at every step.
 * A step cannot flip when m(s) > 2 e(s) (each of the two logits moves by at most
 * e(s)), so a caption whose every step has m(s) > 2 e(s) is identical for sure;
 * one with a step of m(s) < 2 e(s) can differ. The program prints the margin
 * distribution, the error distribution, those counts and the identical captions
 * per type, and lists the first differing captions with the step where they part.
 * Nothing here is tuned: the figures are what the decoders give. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mllm4rec/blip2.h"
#include "mllm4rec/gguf.h"
#include "mllm4rec/image.h"

enum { REF, F32, Q8, Q8F, Q4, NT };
static const char *type_name[NT] = {"bf16", "f32", "q8_0 (8-bit activations)", "q8_0 (float activations)", "q4_0"};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double quantile(double *v, size_t n, double q) {
    if (!n) return NAN;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i];
}

/* growable list of doubles */
typedef struct dvec {
    double *v;
    size_t n, cap;
} dvec;
static int dpush(dvec *d, double x) {
    if (d->n == d->cap) {
        size_t c = d->cap ? 2 * d->cap : 1024;
        double *p = realloc(d->v, c * sizeof *p);
        if (!p) return -1;
        d->v = p;
        d->cap = c;
    }
    d->v[d->n++] = x;
    return 0;
}

/* top-1 index of r[V] and its margin over the second largest value */
static int top2(const float *r, size_t V, double *margin) {
    int b1 = 0;
    for (size_t j = 1; j < V; j++)
        if (r[j] > r[b1]) b1 = (int)j;
    float second = -INFINITY;
    for (size_t j = 0; j < V; j++)
        if ((int)j != b1 && r[j] > second) second = r[j];
    *margin = (double)r[b1] - second;
    return b1;
}

static void pr_err(const mr_error *e) { fprintf(stderr, "error: %s\n", e->msg); }

int main(int argc, char **argv) {
    const char *model = "../shared/reference/hf/blip2", *images = "../shared/data/ml100k-posters/jpg";
    int max_images = 0, threads = 1, max_new = 0, list = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--images")) images = argv[i + 1];
        else if (!strcmp(argv[i], "--max")) max_images = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--max-new-tokens")) max_new = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--list")) list = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: %s [--model DIR] [--images DIR] [--max N] [--threads T] [--max-new-tokens N] [--list N]\n",
                    argv[0]);
            return 2;
        }
    }
    if (argc % 2 == 0) {
        fprintf(stderr, "%s: every option takes a value\n", argv[0]);
        return 2;
    }
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s/config.json", model);
    struct stat st;
    if (!mr_file_exists(cfg) || stat(images, &st) || !S_ISDIR(st.st_mode)) {
        printf("bench_caption_q8: skip (%s or %s not found)\n", cfg, images);
        return 0;
    }
    mr_blip2_set_threads(threads);
    mr_error e = {0};
    mr_blip2 *m[NT];
    const int dtype[NT] = {GGML_TYPE_BF16, GGML_TYPE_F32, GGML_TYPE_Q8_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0};
    for (int k = 0; k < NT; k++) {
        mr_blip2_options o;
        mr_blip2_options_default(&o);
        o.decoder_type = dtype[k];
        o.decoder_float_act = k == Q8F;
        if (mr_blip2_load(&m[k], model, &o, &e)) {
            pr_err(&e);
            return 1;
        }
    }
    const mr_blip2_info *in = mr_blip2_get_info(m[REF]);
    if (max_new <= 0) max_new = in->max_new_tokens;
    if (max_new > 64) max_new = 64; /* the per-step arrays below */

    /* the image files, in name order */
    DIR *dir = opendir(images);
    if (!dir) {
        fprintf(stderr, "error: cannot open %s\n", images);
        return 1;
    }
    char **names = NULL;
    size_t n_names = 0, cap_names = 0;
    for (struct dirent *de; (de = readdir(dir));) {
        const char *dot = strrchr(de->d_name, '.');
        if (de->d_name[0] == '.' || !dot || (strcmp(dot, ".jpg") && strcmp(dot, ".jpeg") && strcmp(dot, ".png")))
            continue;
        if (n_names == cap_names) {
            cap_names = cap_names ? 2 * cap_names : 256;
            names = realloc(names, cap_names * sizeof *names);
            if (!names) return 3;
        }
        names[n_names++] = strdup(de->d_name);
    }
    closedir(dir);
    qsort(names, n_names, sizeof *names, cmp_str);
    if (max_images > 0 && (size_t)max_images < n_names) n_names = (size_t)max_images;

    size_t S = in->image_size, V = in->vocab, nq = in->n_query;
    float *pixels = malloc(sizeof(float) * 3 * S * S),
          *last = malloc(sizeof(float) * in->vision_tokens * in->vision_hidden),
          *qout = malloc(sizeof(float) * nq * in->qformer_hidden), *soft = malloc(sizeof(float) * nq * in->text_hidden),
          *lg[NT];
    int32_t *ids[NT], *seq = malloc(sizeof(int32_t) * (max_new + 1));
    int n_ids[NT];
    for (int k = 0; k < NT; k++) {
        lg[k] = malloc(sizeof(float) * (nq + max_new) * V);
        ids[k] = malloc(sizeof(int32_t) * max_new);
        if (!lg[k] || !ids[k]) return 3;
    }
    if (!pixels || !last || !qout || !soft || !seq) return 3;

    dvec margins = {0}, min_margin = {0}, err[NT] = {{0}};
    int identical[NT] = {0}, safe[NT] = {0}, safe_identical[NT] = {0}, at_risk_differ[NT] = {0};
    int below_1e2 = 0, below_e8 = 0, below_2e8 = 0, argmax_mismatch = 0, n_done = 0, listed = 0, n_failed = 0;
    double max_err[NT] = {0};
    /* per caption: min margin and first step with m(s) < 2 e_q8(s) */
    double *cap_min_margin = calloc(n_names, sizeof(double));
    for (size_t i = 0; i < n_names; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", images, names[i]);
        mr_image img;
        if (mr_image_load(path, &img, &e)) {
            n_failed++;
            continue;
        }
        int rc = mr_image_to_pixels(mr_blip2_processor(m[REF]), &img, pixels, NULL, &e);
        mr_image_free(&img);
        if (!rc) rc = mr_blip2_vision(m[REF], pixels, last, NULL, &e);
        if (!rc) rc = mr_blip2_qformer(m[REF], last, qout, NULL, &e);
        if (!rc) rc = mr_blip2_project(m[REF], qout, soft, &e);
        for (int k = 0; k < NT && !rc; k++) rc = mr_blip2_generate_soft(m[k], soft, NULL, 0, max_new, ids[k], &n_ids[k], &e);
        /* teacher forcing along BF16's caption: [bos, its ids but the last] */
        int n = n_ids[REF];
        seq[0] = in->bos;
        for (int s = 1; s < n; s++) seq[s] = ids[REF][s - 1];
        for (int k = 0; k < NT && !rc; k++) rc = mr_blip2_lm_logits(m[k], soft, seq, n, lg[k], &e);
        if (rc) {
            pr_err(&e);
            return 1;
        }
        n_done++;
        double mmin = INFINITY;
        double step_err[NT][64], step_margin[64];
        for (int s = 0; s < n; s++) {
            const float *r = lg[REF] + (nq + s) * V;
            double mg;
            if (top2(r, V, &mg) != ids[REF][s]) argmax_mismatch++;
            step_margin[s] = mg;
            dpush(&margins, mg);
            if (mg < mmin) mmin = mg;
            for (int k = 1; k < NT; k++) {
                const float *q = lg[k] + (nq + s) * V;
                double d = 0;
                for (size_t j = 0; j < V; j++) d = fmax(d, fabs((double)q[j] - r[j]));
                step_err[k][s] = d;
                dpush(&err[k], d);
                if (d > max_err[k]) max_err[k] = d;
            }
        }
        dpush(&min_margin, mmin);
        cap_min_margin[i] = mmin;
        for (int k = 1; k < NT; k++) {
            int same = n_ids[k] == n && !memcmp(ids[k], ids[REF], sizeof(int32_t) * n);
            identical[k] += same;
            int is_safe = 1;
            for (int s = 0; s < n; s++) {
                if (step_margin[s] <= 2 * step_err[k][s]) is_safe = 0;
            }
            safe[k] += is_safe;
            safe_identical[k] += is_safe && same;
            at_risk_differ[k] += !is_safe && !same;
            if (k == Q8 && !same && listed < list) {
                int s = 0;
                while (s < n && s < n_ids[k] && ids[k][s] == ids[REF][s]) s++;
                printf("differs: %s at step %d of %d: bf16 margin there %.4f, q8_0 error there %.4f\n  bf16:", names[i], s, n,
                       s < n ? step_margin[s] : NAN, s < n ? step_err[k][s] : NAN);
                for (int t = 0; t < n; t++) printf(" %d", ids[REF][t]);
                printf("\n  q8_0:");
                for (int t = 0; t < n_ids[k]; t++) printf(" %d", ids[k][t]);
                printf("\n");
                listed++;
            }
        }
        if ((i + 1) % 200 == 0) fprintf(stderr, "%zu / %zu images\n", i + 1, n_names);
    }
    /* counts against the bounds */
    double e8 = max_err[Q8];
    for (size_t i = 0; i < min_margin.n; i++) {
        below_1e2 += min_margin.v[i] < 1e-2;
        below_e8 += min_margin.v[i] < e8;
        below_2e8 += min_margin.v[i] < 2 * e8;
    }
    qsort(margins.v, margins.n, sizeof(double), cmp_dbl);
    qsort(min_margin.v, min_margin.n, sizeof(double), cmp_dbl);
    printf("model %s, images %s: %d captioned (%d unreadable), up to %d new tokens, %zu steps\n", model, images, n_done,
           n_failed, max_new, margins.n);
    printf("bf16 greedy ids that are not the argmax of its own teacher-forced logits: %d steps\n", argmax_mismatch);
    printf("bf16 top-1 minus top-2 logit, every step: min %.2g, 1%% %.3g, 10%% %.3g, median %.3g, 90%% %.3g\n",
           margins.v[0], quantile(margins.v, margins.n, 0.01), quantile(margins.v, margins.n, 0.10),
           quantile(margins.v, margins.n, 0.5), quantile(margins.v, margins.n, 0.9));
    printf("bf16 smallest margin of each caption: 1%% %.3g, 10%% %.3g, median %.3g, 90%% %.3g\n",
           quantile(min_margin.v, min_margin.n, 0.01), quantile(min_margin.v, min_margin.n, 0.10),
           quantile(min_margin.v, min_margin.n, 0.5), quantile(min_margin.v, min_margin.n, 0.9));
    printf("captions with a step whose margin is below 1e-2: %d of %d (%.1f%%); below the q8_0 error %.3g: %d (%.1f%%); "
           "below twice it: %d (%.1f%%)\n",
           below_1e2, n_done, 100.0 * below_1e2 / n_done, e8, below_e8, 100.0 * below_e8 / n_done, below_2e8,
           100.0 * below_2e8 / n_done);
    printf("%-26s %10s %10s %10s %10s %12s %14s %14s\n", "decoder vs bf16", "max err", "median", "90%", "99%",
           "identical", "safe (m>2e)", "unsafe+differ");
    for (int k = 1; k < NT; k++) {
        qsort(err[k].v, err[k].n, sizeof(double), cmp_dbl);
        printf("%-26s %10.4f %10.4f %10.4f %10.4f %5d %5.1f%% %7d %5.1f%% %7d\n", type_name[k], max_err[k],
               quantile(err[k].v, err[k].n, 0.5), quantile(err[k].v, err[k].n, 0.9), quantile(err[k].v, err[k].n, 0.99),
               identical[k], 100.0 * identical[k] / n_done, safe[k], 100.0 * safe[k] / n_done, at_risk_differ[k]);
        if (safe_identical[k] != safe[k])
            printf("  INCONSISTENT: %d safe captions differ (teacher-forced logits and generation disagree)\n",
                   safe[k] - safe_identical[k]);
    }
    for (int k = 0; k < NT; k++) {
        mr_blip2_free(m[k]);
        free(lg[k]);
        free(ids[k]);
        free(err[k].v);
    }
    for (size_t i = 0; i < n_names; i++) free(names[i]);
    free(names);
    free(cap_min_margin);
    free(margins.v);
    free(min_margin.v);
    free(pixels);
    free(last);
    free(qout);
    free(soft);
    free(seq);
    return 0;
}
