/* Scaling of `ranker eval` over Open MPI ranks (issue 16, docs/scale.md): the same
 * evaluation on 1 process x 1 thread and on `mpirun -np 2` x 1 thread, for
 * stories260K (models/) and a SmolLM2-135M-shaped model of random weights (GPT-2's
 * vocabulary from ../shared when present, so that prompts tokenize as text). The
 * throughput is the ranking phase's prompts per second that `ranker eval` reports
 * (after the model is loaded, until rank 0 holds every user's scores); the end-to-end
 * wall time (process start, mpirun, loading) is printed beside it, and the
 * "CPU-bound ratio": one process's CPU seconds of ranking against those of the
 * busiest of the ranks (what the ratio is on free cores when ranks do not slow
 * each other, e.g. through memory bandwidth; on a shared machine the wall-clock
 * ratio only shows what was left of the cores). Goal: 2 ranks give
 * at least 1.8x the prompts per second of 1. Also checks that both runs wrote the same
 * metrics.json. The load average is printed: on a shared machine the ratio is only
 * as good as the two free cores.
 *
 * Then data-parallel LoRA training (`ranker train`, stories260K) with the same global
 * batch on 1 process x 1 thread and on np ranks x 1 thread: the training examples per
 * second that `ranker train` reports (the whole loop: steps, the gradient sums, the
 * final validation of a few users), its ratio (goal: at least 1.7x), the CPU-bound
 * ratio (one process's CPU seconds in training steps against the busiest rank's,
 * MPI's busy waiting excluded), the end-to-end wall times, and how far the two
 * adapters are apart (largest max|diff| / max|t| over the tensors; printed, not
 * counted as a failure).
 *
 *   build/bench/bench_mpi            (MLLM4REC_BIN overrides build/mllm4rec)
 * The stories260K case ranks 610 users by default (ml-latest-small's user count, on a
 * generated dataset): about 10 s of ranking on one core, so that the seconds of
 * mpirun's start, the ranks' loading and the gather do not weigh in the ratio (with
 * 48 users the phase lasted under 1 s). The 2-rank run's "ranks' shares" line (the
 * least and most prompts, tokens and CPU seconds of the ranks) is printed beside it.
 *
 * Environment: MLLM4REC_BENCH_USERS_SMALL (610; stories260K users), MLLM4REC_BENCH_USERS
 * (8; SmolLM2-shaped users; 0 in either leaves that case out), MLLM4REC_BENCH_TOKENS (1024; prompt cap of the 135M model),
 * MLLM4REC_BENCH_NP (2), MLLM4REC_BENCH_TRAIN_STEPS (8; optimizer steps of the training
 * case), MLLM4REC_BENCH_TRAIN_BATCH (8; its global batch), MLLM4REC_BENCH_TRAIN_USERS (48;
 * users of its dataset), MLLM4REC_BENCH_TRAIN_ONLY (1: the training case alone). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mllm4rec/base.h"
#include "mllm4rec/llm.h"

static const char *bin(void) {
    const char *b = getenv("MLLM4REC_BIN");
    return b && *b ? b : "build/mllm4rec";
}

static int env_int(const char *name, int dflt) {
    const char *s = getenv(name);
    return s && *s ? atoi(s) : dflt;
}

static const char *WORDS[] = {"red", "house", "river", "night", "story", "city", "garden", "winter", "silent", "storm",
                              "golden", "road", "ocean", "dream", "last", "king", "small", "world", "dark", "light"};

/* A dataset of n_users users with 30 items each and a candidates file of 20 per user
 * (the true item always among them, so every user is ranked by the LLM). */
static int write_world(const char *dir, int n_users) {
    mr_error e = {0};
    if (mr_mkdir_p(dir, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    const int n_items = 60;
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap), p[1024];
    if (!buf) return 1;
    n = (size_t)snprintf(buf, cap, "item_id\tsource_id\ttitle\timage\tcaption\n");
    for (int i = 1; i <= n_items; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%d\t%d\tThe %s %s of the %s %s (19%02d)\t\ta %s %s with a %s %s\n", i, i,
                              WORDS[i % 20], WORDS[(i * 7) % 20], WORDS[(i * 3) % 20], WORDS[(i * 11) % 20], 50 + i % 50,
                              WORDS[(i * 13) % 20], WORDS[(i * 17) % 20], WORDS[(i * 5) % 20], WORDS[(i * 19) % 20]);
    snprintf(p, sizeof p, "%s/items.tsv", dir);
    if (mr_write_file_atomic(p, buf, n, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    mr_rng r;
    mr_rng_seed(&r, 1);
    const int len = 30;
    int (*seq)[30] = malloc(sizeof(int[30]) * (size_t)(n_users + 1));
    n = (size_t)snprintf(buf, cap, "user_id\tsource_user_id\titems\n");
    for (int u = 1; u <= n_users; u++) {
        n += (size_t)snprintf(buf + n, cap - n, "%d\t%d\t", u, u);
        int item = 1 + (int)mr_rng_below(&r, n_items);
        for (int j = 0; j < len; j++) {
            seq[u][j] = item;
            n += (size_t)snprintf(buf + n, cap - n, j ? " %d" : "%d", item);
            item = (item + (int)mr_rng_below(&r, 3)) % n_items + 1;
        }
        buf[n++] = '\n';
    }
    snprintf(p, sizeof p, "%s/sequences.tsv", dir);
    if (mr_write_file_atomic(p, buf, n, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    n = (size_t)snprintf(buf, cap,
                         "{\"format_version\": 1, \"format\": \"movielens\", \"name\": \"ml-latest-small\", \"counts\": "
                         "{\"after\": {\"users\": %d, \"items\": %d, \"interactions\": %d}}}\n",
                         n_users, n_items, n_users * len);
    snprintf(p, sizeof p, "%s/meta.json", dir);
    if (mr_write_file_atomic(p, buf, n, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    n = (size_t)snprintf(buf, cap, "split\tuser_id\tlabel\titems\tscores\n");
    for (int s = 0; s < 2; s++)
        for (int u = 1; u <= n_users; u++) {
            int label = seq[u][s ? len - 1 : len - 2], at = (int)mr_rng_below(&r, 20), c = 0;
            n += (size_t)snprintf(buf + n, cap - n, "%s\t%d\t%d\t", s ? "test" : "val", u, label);
            for (int k = 0; k < 20; k++) {
                int it = label;
                if (k != at) {
                    do it = (label + ++c) % n_items + 1;
                    while (it == label);
                }
                n += (size_t)snprintf(buf + n, cap - n, k ? ",%d" : "%d", it);
            }
            buf[n++] = '\t';
            for (int k = 0; k < 20; k++) n += (size_t)snprintf(buf + n, cap - n, k ? ",%d" : "%d", 20 - k);
            buf[n++] = '\n';
        }
    snprintf(p, sizeof p, "%s/cands.tsv", dir);
    int rc = mr_write_file_atomic(p, buf, n, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    free(seq);
    free(buf);
    return rc;
}

typedef struct run_fig {
    double prompts_per_s, wall_s, cpu_s; /* cpu_s: the busiest rank's CPU seconds of ranking */
    long users;
    char shares[160]; /* several ranks: "least / most" prompts and CPU seconds of the ranks */
} run_fig;

/* Runs one `ranker eval` (np 0: no mpirun) and reads its "ranked N users in X s (Y prompts/s)" line. */
static int run_eval(const char *model, const char *world, const char *out, int np, int max_tokens, run_fig *f) {
    char cmd[4096], log[1200];
    snprintf(log, sizeof log, "%s.log", out);
    char mpi[256] = "";
    if (np)
        snprintf(mpi, sizeof mpi, "mpirun %s--oversubscribe -np %d ", geteuid() == 0 ? "--allow-run-as-root " : "",
                 np);
    snprintf(cmd, sizeof cmd,
             "%s%s ranker eval --dataset %s --candidates %s/cands.tsv --model %s --threads 1 --split test "
             "--max-tokens %d --out %s >/dev/null 2>%s",
             mpi, bin(), world, world, model, max_tokens, out, log);
    double t0 = mr_now();
    int rc = system(cmd);
    f->wall_s = mr_now() - t0;
    if (rc) return fprintf(stderr, "failed (%d): %s\n", rc, cmd), 1;
    char *text;
    size_t len;
    mr_error e = {0};
    if (mr_read_file(log, &text, &len, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    const char *l = strstr(text, "ranked ");
    double secs = 0;
    if (!l || sscanf(l, "ranked %ld users in %lf s (%lf prompts/s)", &f->users, &secs, &f->prompts_per_s) != 3) {
        fprintf(stderr, "no 'ranked N users' line in %s\n", log);
        free(text);
        return 1;
    }
    const char *c = strstr(l, "CPU time ");
    if (!c || sscanf(c, "CPU time %lf", &f->cpu_s) != 1) {
        fprintf(stderr, "no CPU time in %s\n", log);
        free(text);
        return 1;
    }
    long p0 = 0, p1 = 0, k0 = 0, k1 = 0;
    double c0 = 0, c1 = 0;
    const char *sh = strstr(text, "ranks' shares (least / most): ");
    snprintf(f->shares, sizeof f->shares, "-");
    if (sh && sscanf(sh, "ranks' shares (least / most): %ld / %ld prompts, %ld / %ld tokens, %lf / %lf CPU s", &p0, &p1,
                     &k0, &k1, &c0, &c1) == 6)
        snprintf(f->shares, sizeof f->shares, "%ld / %ld prompts, %ld / %ld tokens, %.2f / %.2f CPU s", p0, p1, k0, k1,
                 c0, c1);
    free(text);
    return 0;
}

typedef struct train_fig {
    double examples_per_s, wall_s, cpu_s; /* cpu_s: the busiest rank's CPU seconds in training steps */
    long examples;
} train_fig;

/* Runs one `ranker train` (np 0: no mpirun) and reads its "trained N examples" line. */
static int run_train(const char *model, const char *world, const char *out, int np, int batch, int steps,
                     train_fig *f) {
    char cmd[4096], log[1200];
    snprintf(log, sizeof log, "%s.log", out);
    char mpi[256] = "";
    if (np)
        snprintf(mpi, sizeof mpi, "mpirun %s--oversubscribe -np %d ", geteuid() == 0 ? "--allow-run-as-root " : "",
                 np);
    snprintf(cmd, sizeof cmd,
             "%s%s ranker train --dataset %s --candidates %s/cands.tsv --model %s --threads 1 --max-tokens 512 "
             "--batch %d --max-steps %d --val-every %d --val-users 4 --warmup 1 --lr 1e-3 --force --out %s "
             ">/dev/null 2>%s",
             mpi, bin(), world, world, model, batch, steps, steps, out, log);
    double t0 = mr_now();
    int rc = system(cmd);
    f->wall_s = mr_now() - t0;
    if (rc) return fprintf(stderr, "failed (%d): %s\n", rc, cmd), 1;
    char *text;
    size_t len;
    mr_error e = {0};
    if (mr_read_file(log, &text, &len, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    const char *l = strstr(text, "trained ");
    const char *p = l ? strstr(l, "examples/s; CPU time in training steps ") : NULL;
    double secs;
    long tokens;
    if (!l || !p || sscanf(l, "trained %ld examples (%ld tokens) in %lf s", &f->examples, &tokens, &secs) != 3 ||
        sscanf(p, "examples/s; CPU time in training steps %lf", &f->cpu_s) != 1) {
        fprintf(stderr, "no 'trained N examples' line in %s\n", log);
        free(text);
        return 1;
    }
    f->examples_per_s = secs > 0 ? (double)f->examples / secs : 0;
    free(text);
    return 0;
}

/* Both adapters read through the project's reader agree: every tensor t, max|diff| <= 1e-6 max|t|.
 * *worst: the largest max|diff| / max|t| over the tensors. */
static int same_adapter(const char *model, const char *a, const char *b, double *worst) {
    llm_model m;
    llm_adapter x, y;
    mr_error e = {0};
    if (llm_load(&m, model, &e)) return fprintf(stderr, "%s\n", e.msg), 0;
    int ok = 0;
    *worst = INFINITY;
    if (!llm_adapter_read_gguf(&x, &m, a, &e)) {
        *worst = 0;
        if (!llm_adapter_read_gguf(&y, &m, b, &e)) {
            ok = x.n_params == y.n_params && x.n_layer == y.n_layer;
            for (int i = 0; ok && i < x.n_layer * LLM_LORA_N_TARGETS; i++) {
                const llm_lora *p = &x.mats[i], *q = &y.mats[i];
                if (!p->a || !q->a) {
                    ok = !p->a == !q->a;
                    continue;
                }
                for (int ab = 0; ab < 2; ab++) {
                    const float *u = ab ? p->b : p->a, *v = ab ? q->b : q->a;
                    const size_t n = (size_t)p->rank * (size_t)(ab ? p->out : p->in);
                    double mx = 0, d = 0;
                    for (size_t k = 0; k < n; k++) {
                        if (fabs(u[k]) > mx) mx = fabs(u[k]);
                        if (fabs((double)u[k] - v[k]) > d) d = fabs((double)u[k] - v[k]);
                    }
                    if (d > 1e-6 * mx) ok = 0;
                    const double ratio = mx > 0 ? d / mx : (d > 0 ? INFINITY : 0);
                    if (ratio > *worst) *worst = ratio;
                }
            }
            llm_adapter_free(&y);
        }
        llm_adapter_free(&x);
    }
    if (e.code) fprintf(stderr, "%s\n", e.msg);
    llm_free(&m);
    return ok;
}

static int same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    mr_error e;
    int ok = !mr_read_file(a, &x, &nx, &e) && !mr_read_file(b, &y, &ny, &e) && nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return ok;
}

int main(void) {
    if (system("command -v mpirun >/dev/null 2>&1") != 0) {
        printf("bench_mpi: mpirun not found; nothing measured\n");
        return 0;
    }
    const int np = env_int("MLLM4REC_BENCH_NP", 2);
    char loadavg[128] = "?";
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (!fgets(loadavg, sizeof loadavg, la)) strcpy(loadavg, "?");
        fclose(la);
        loadavg[strcspn(loadavg, "\n")] = 0;
    }
    /* the models */
    char smol[512] = "build/bench/smollm2-135m-gpt2vocab.gguf";
    const char *vocab = "../shared/reference/tokenizer/ggml-vocab-gpt-2.gguf";
    mkdir("build/bench", 0755);
    if (!mr_file_exists(smol)) {
        char cmd[2048];
        if (mr_file_exists(vocab))
            snprintf(cmd, sizeof cmd, "%s model random --shape smollm2-135m --vocab %s --out %s --seed 1 >/dev/null",
                     bin(), vocab, smol);
        else
            snprintf(cmd, sizeof cmd, "%s model random --shape smollm2-135m --out %s --seed 1 >/dev/null", bin(), smol);
        fprintf(stderr, "writing %s ...\n", smol);
        if (system(cmd)) return fprintf(stderr, "failed: %s\n", cmd), 1;
    }
    struct {
        const char *name, *model;
        int users, max_tokens;
    } cases[2] = {{"stories260K", "models/stories260K.gguf", env_int("MLLM4REC_BENCH_USERS_SMALL", 610), 512},
                  {"smollm2-135m (random)", smol, env_int("MLLM4REC_BENCH_USERS", 8), env_int("MLLM4REC_BENCH_TOKENS", 1024)}};
    printf("ranker eval, 1 process x 1 thread against %d ranks x 1 thread (load average at start: %s)\n\n", np, loadavg);
    printf("| model | users | 1x1 prompts/s | %dx1 prompts/s | ratio | CPU-bound ratio | 1x1 wall s | %dx1 wall s | "
           "same metrics.json | ranks' shares (least / most) |\n",
           np, np);
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
    char json[4096];
    size_t jn = (size_t)snprintf(json, sizeof json, "{\"bench\": \"mpi_ranker_eval\", \"np\": %d, \"loadavg\": \"%s\", \"cases\": [",
                                 np, loadavg);
    int bad = 0;
    const int eval_cases = env_int("MLLM4REC_BENCH_TRAIN_ONLY", 0) ? 0 : 2;
    for (int c = 0; c < eval_cases; c++) {
        if (cases[c].users <= 0) continue; /* a users count of 0 leaves the case out */
        if (!mr_file_exists(cases[c].model)) {
            printf("| %s | absent | | | | | | |\n", cases[c].name);
            continue;
        }
        char world[256], o1[300], o2[300], m1[400], m2[400];
        snprintf(world, sizeof world, "build/bench/mpi-world-%d", cases[c].users);
        if (write_world(world, cases[c].users)) return 1;
        snprintf(o1, sizeof o1, "build/bench/mpi-eval-%d-1", c);
        snprintf(o2, sizeof o2, "build/bench/mpi-eval-%d-%d", c, np);
        run_fig f1, f2;
        if (run_eval(cases[c].model, world, o1, 0, cases[c].max_tokens, &f1) ||
            run_eval(cases[c].model, world, o2, np, cases[c].max_tokens, &f2))
            return 1;
        snprintf(m1, sizeof m1, "%s/metrics.json", o1);
        snprintf(m2, sizeof m2, "%s/metrics.json", o2);
        int same = same_file(m1, m2);
        bad |= !same;
        double ratio = f1.prompts_per_s > 0 ? f2.prompts_per_s / f1.prompts_per_s : 0;
        /* CPU-bound: one rank's CPU seconds against the busiest of np ranks', i.e. the
         * ratio on free cores if the ranks do not slow each other (memory bandwidth) */
        double cpu_ratio = f2.cpu_s > 0 ? f1.cpu_s / f2.cpu_s : 0;
        printf("| %s | %ld | %.3f | %.3f | %.2fx (goal 1.8x) | %.2fx | %.1f | %.1f | %s | %s |\n", cases[c].name,
               f1.users, f1.prompts_per_s, f2.prompts_per_s, ratio, cpu_ratio, f1.wall_s, f2.wall_s, same ? "yes" : "NO",
               f2.shares);
        jn += (size_t)snprintf(json + jn, sizeof json - jn,
                               "%s{\"model\": \"%s\", \"users\": %ld, \"prompts_per_s_1x1\": %.4f, \"prompts_per_s_%dx1\": "
                               "%.4f, \"ratio\": %.4f, \"cpu_ratio\": %.4f, \"wall_s_1x1\": %.3f, \"wall_s_%dx1\": %.3f, \"same_metrics\": %s}",
                               c ? ", " : "", cases[c].name, f1.users, f1.prompts_per_s, np, f2.prompts_per_s, ratio,
                               cpu_ratio, f1.wall_s, np, f2.wall_s, same ? "true" : "false");
    }
    /* data-parallel LoRA training */
    const char *tmodel = cases[0].model;
    if (mr_file_exists(tmodel)) {
        const int batch = env_int("MLLM4REC_BENCH_TRAIN_BATCH", 8), steps = env_int("MLLM4REC_BENCH_TRAIN_STEPS", 8);
        char world[256], o1[300], o2[300], a1[400], a2[400];
        const int train_users = env_int("MLLM4REC_BENCH_TRAIN_USERS", 48);
        snprintf(world, sizeof world, "build/bench/mpi-world-%d", train_users);
        snprintf(o1, sizeof o1, "build/bench/mpi-train-1");
        snprintf(o2, sizeof o2, "build/bench/mpi-train-%d", np);
        train_fig f1, f2;
        if (write_world(world, train_users) || run_train(tmodel, world, o1, 0, batch, steps, &f1) ||
            run_train(tmodel, world, o2, np, batch, steps, &f2))
            return 1;
        snprintf(a1, sizeof a1, "%s/adapter.gguf", o1);
        snprintf(a2, sizeof a2, "%s/adapter.gguf", o2);
        double worst = INFINITY;
        /* reported, not a failure: the sums' order differs from one process's, and AdamW
         * can magnify that in elements whose gradient is near zero (tests/test_mpi.c
         * holds the bound on its run) */
        const int same = same_adapter(tmodel, a1, a2, &worst);
        const double ratio = f1.examples_per_s > 0 ? f2.examples_per_s / f1.examples_per_s : 0;
        const double cpu_ratio = f2.cpu_s > 0 ? f1.cpu_s / f2.cpu_s : 0;
        printf("\nranker train (LoRA, %s), global batch %d, %d steps: 1 process x 1 thread against %d ranks x 1 "
               "thread\n\n",
               cases[0].name, batch, steps, np);
        printf("| examples | 1x1 examples/s | %dx1 examples/s | ratio | CPU-bound ratio | 1x1 wall s | %dx1 wall s | "
               "adapter max|diff| / max|t| (<= 1e-6) |\n|---:|---:|---:|---:|---:|---:|---:|---|\n",
               np, np);
        printf("| %ld | %.3f | %.3f | %.2fx (goal 1.7x) | %.2fx | %.1f | %.1f | %.2g %s |\n", f1.examples,
               f1.examples_per_s, f2.examples_per_s, ratio, cpu_ratio, f1.wall_s, f2.wall_s, worst,
               same ? "yes" : "NO");
        jn += (size_t)snprintf(json + jn, sizeof json - jn,
                               "], \"train\": {\"model\": \"%s\", \"batch\": %d, \"steps\": %d, \"examples\": %ld, "
                               "\"examples_per_s_1x1\": %.4f, \"examples_per_s_%dx1\": %.4f, \"ratio\": %.4f, "
                               "\"cpu_ratio\": %.4f, \"wall_s_1x1\": %.3f, \"wall_s_%dx1\": %.3f, \"adapter_diff\": %.3g, \"same_adapter\": %s}}",
                               cases[0].name, batch, steps, f1.examples, f1.examples_per_s, np, f2.examples_per_s, ratio,
                               cpu_ratio, f1.wall_s, np, f2.wall_s, worst, same ? "true" : "false");
    } else {
        jn += (size_t)snprintf(json + jn, sizeof json - jn, "]}");
    }
    printf("\n%s\n", json);
    return bad;
}
