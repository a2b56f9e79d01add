/* kill -9 at random moments, then --resume, on real data: ml-latest-small with a short
 * LRURec schedule, then the ranker (stories260K) on its candidates. Ten runs of each are
 * killed once, at a moment drawn by a seeded generator from the measured length T of an
 * uninterrupted run (five in its first 40%: the start, the validation of the untrained
 * model and the first epoch or steps; five in the rest), so a kill can land anywhere:
 * during the start, a validation, a checkpoint write or the final files. Each is then
 * resumed with --resume to its end, and its result files must be byte-identical to the
 * uninterrupted run's. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mllm4rec/safetensors.h"
#include "test.h"

static const char *bin(void) {
    const char *b = getenv("MLLM4REC_BIN");
    return b && *b ? b : "build/mllm4rec";
}

/* Runs `bin args...` with stdout and stderr to /dev/null. kill_after > 0: SIGKILL after
 * that many seconds if still running. Returns the exit status (128 + signal when killed)
 * and the wall time. */
static int run_bin(char *const *args, double kill_after, double *seconds) {
    double t0 = mr_now();
    fflush(stdout); /* the child's freopen would write our buffered lines a second time */
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(127);
        execv(bin(), args);
        _exit(127);
    }
    int st = 0, killed = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) break;
        if (kill_after > 0 && !killed && mr_now() - t0 >= kill_after) {
            kill(pid, SIGKILL);
            killed = 1;
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (seconds) *seconds = mr_now() - t0;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* argv from a space-separated string (no quoting: paths here have no spaces) */
static char **split_args(char *s) {
    static char *argv[64];
    int n = 0;
    argv[n++] = (char *)bin();
    for (char *t = strtok(s, " "); t && n < 63; t = strtok(NULL, " ")) argv[n++] = t;
    argv[n] = NULL;
    return argv;
}

static char *slurp(const char *path, size_t *n) {
    char *x = NULL;
    mr_error e;
    return mr_read_file(path, &x, n, &e) ? NULL : x;
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int ok = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return ok;
}

/* An SVG file that starts as one and ends with </svg> (the learning curve every training run draws). */
static int well_formed_svg(const char *dir) {
    char p[1200];
    snprintf(p, sizeof p, "%s/curves.svg", dir);
    size_t n;
    char *x = slurp(p, &n);
    while (x && n > 0 && (x[n - 1] == '\n' || x[n - 1] == ' ')) n--;
    int ok = x && n > 6 && strstr(x, "<svg") && !strncmp(x + n - 6, "</svg>", 6);
    free(x);
    return ok;
}

/* What the folder holds right after a kill: which training position its checkpoint has. */
static void describe_checkpoint(const char *dir, char *out, size_t n) {
    char p[1200];
    snprintf(p, sizeof p, "%s/checkpoint.safetensors", dir);
    st_file f;
    mr_error e;
    if (!mr_file_exists(p) || st_open(&f, p, &e)) {
        snprintf(out, n, "no checkpoint");
        return;
    }
    const char *it = f.metadata_json ? strstr(f.metadata_json, "\"iter\"") : NULL;
    const char *ep = f.metadata_json ? strstr(f.metadata_json, "\"epoch\"") : NULL;
    long iter = it ? strtol(strchr(it + 6, '"') + 1, NULL, 10) : -1;
    long epoch = ep ? strtol(strchr(ep + 7, '"') + 1, NULL, 10) : -1;
    snprintf(out, n, "checkpoint at iteration %ld (epoch %ld)", iter, epoch);
    st_close(&f);
}

/* Ten runs of `args_fmt` (a format with one %s, the run folder, and --resume), each
 * killed once at a seeded random moment drawn from the uninterrupted run's length T
 * (five in [0, 0.4 T], which holds the start and most of the first epoch or steps,
 * five in [0.4 T, T]), then resumed to its end; each run's files must equal the
 * reference's. */
static int kill_and_resume(const char *args_fmt, const char *name, const char *ref, const char *const *files,
                           double T, uint64_t seed, int retriever) {
    mr_rng rng;
    mr_rng_seed(&rng, seed);
    int hits = 0, n = test_under_sanitizer() ? 2 : 10; /* the sanitizer build: one kill per half (slow runs) */
    for (int k = 0; k < n; k++) {
        int first_half = k < n / 2;
        double at = T * (first_half ? 0.4 * mr_rng_uniform(&rng) : 0.4 + 0.6 * mr_rng_uniform(&rng));
        char dir[700], args[4096], what[128] = "";
        snprintf(dir, sizeof dir, "%s-%d", test_tmp_path(name), k);
        snprintf(args, sizeof args, args_fmt, dir);
        int rc = run_bin(split_args(args), at, NULL);
        if (rc != 128 + SIGKILL && rc != 0) return -1;
        hits += rc == 128 + SIGKILL;
        if (retriever) describe_checkpoint(dir, what, sizeof what);
        snprintf(args, sizeof args, args_fmt, dir);
        if (run_bin(split_args(args), 0, NULL) != 0) return -1;
        int same = 1;
        for (int i = 0; files[i]; i++) {
            char a[800], b[800];
            snprintf(a, sizeof a, "%s/%s", ref, files[i]);
            snprintf(b, sizeof b, "%s/%s", dir, files[i]);
            if (!same_file(a, b)) {
                printf("  %s: %s differs from the uninterrupted run's\n", dir, files[i]);
                same = 0;
            }
        }
        printf("  kill -9 at %.2f s of %.2f s: %s%s%s; resumed: %s\n", at, T,
               rc == 128 + SIGKILL ? "killed" : "finished first", what[0] ? ", " : "", what,
               same ? "identical files" : "DIFFERENT files");
        if (!same) return -1;
    }
    return hits;
}

TEST(retriever_and_ranker_resume_after_kill_9_at_ten_moments) {
    const char *raw = test_shared_path("data/ml-latest-small");
    const char *model = test_shared_path("reference/models/stories260K.gguf");
    if (!raw || !model) SKIP("../shared/data/ml-latest-small or stories260K.gguf absent");
    char ds[700], ref[700], rref[700], args[4096];
    snprintf(ds, sizeof ds, "%s", test_tmp_path("mls"));
    snprintf(ref, sizeof ref, "%s", test_tmp_path("ret_ref"));
    snprintf(rref, sizeof rref, "%s", test_tmp_path("rank_ref"));
    snprintf(args, sizeof args, "prepare --format movielens --input %s --out %s", raw, ds);
    CHECK(run_bin(split_args(args), 0, NULL) == 0);

    /* the retriever: 2 epochs of 14 iterations, a validation every 5 */
    const char *rflags = "--max-epochs 2 --val-every 5 --hidden 16 --blocks 1 --max-len 50 --batch 128 --threads 1";
    double T;
    snprintf(args, sizeof args, "retriever train --dataset %s --out %s %s", ds, ref, rflags);
    CHECK(run_bin(split_args(args), 0, &T) == 0);
    char fmt[4096];
    snprintf(fmt, sizeof fmt, "retriever train --dataset %s --out %%s %s --resume", ds, rflags);
    static const char *const files[] = {"retriever.safetensors", "metrics.json", "candidates.tsv", NULL};
    int hits = kill_and_resume(fmt, "ret_killed", ref, files, T, 7, 1);
    CHECK_MSG(hits >= 0, "a killed and resumed retriever run failed or differs");
    printf("  retriever: %d kills hit the running process; every resumed run equals the uninterrupted one\n", hits);

    /* the ranker on the reference run's candidates: 8 steps, a validation every 2 */
    const char *kflags = "--history 3 --max-title-tokens 6 --max-tokens 256 --max-steps 8 --batch 2 --val-every 2 "
                         "--val-users 4 --lr 1e-3 --warmup 2 --threads 1";
    snprintf(args, sizeof args, "ranker train --dataset %s --candidates %s/candidates.tsv --model %s --out %s %s", ds,
             ref, model, rref, kflags);
    CHECK(run_bin(split_args(args), 0, &T) == 0);
    /* both trainers leave a learning curve (issue 14) */
    CHECK_MSG(well_formed_svg(ref), "%s/curves.svg missing or not an SVG", ref);
    CHECK_MSG(well_formed_svg(rref), "%s/curves.svg missing or not an SVG", rref);
    snprintf(fmt, sizeof fmt, "ranker train --dataset %s --candidates %s/candidates.tsv --model %s --out %%s %s --resume",
             ds, ref, model, kflags);
    static const char *const rfiles[] = {"adapter.gguf", NULL};
    /* a finished ranker run is not trained over without --resume or --force, and one
     * process at a time writes it */
    {
        char before[800], out[800];
        snprintf(before, sizeof before, "%s/adapter.gguf", rref);
        size_t n0;
        char *a0 = slurp(before, &n0);
        snprintf(args, sizeof args, "ranker train --dataset %s --candidates %s/candidates.tsv --model %s --out %s %s --seed 9",
                 ds, ref, model, rref, kflags);
        CHECK(run_bin(split_args(args), 0, NULL) == 1);
        snprintf(out, sizeof out, "%s/adapter_copy.gguf", test_tmpdir());
        CHECK(a0 != NULL);
        test_write_file(out, a0, n0);
        free(a0);
        CHECK_MSG(same_file(before, out), "ranker train without --resume changed a finished run");
        int fd;
        mr_error e = {0};
        CHECK_OK(mr_folder_lock(rref, &fd, &e), &e);
        snprintf(args, sizeof args, "ranker train --dataset %s --candidates %s/candidates.tsv --model %s --out %s %s --resume",
                 ds, ref, model, rref, kflags);
        CHECK(run_bin(split_args(args), 0, NULL) == 1);
        mr_folder_unlock(fd);
    }
    hits = kill_and_resume(fmt, "rank_killed", rref, rfiles, T, 8, 0);
    CHECK_MSG(hits >= 0, "a killed and resumed ranker run failed or differs");
    printf("  ranker: %d kills hit the running process; every resumed adapter.gguf equals the uninterrupted one\n", hits);
}

/* ---- experiment run: kill -9 at random moments, run again (issue 18) ----
 * A fig4.yaml-like experiment kept small: one short retriever on ml-latest-small (it
 * exports 25 candidates, so its stage runs `retriever candidates -k 25` after training)
 * and the stories260K ranker trained and evaluated at 5 and 25 candidates. Each copy
 * is killed once, at a seeded random delay after a chosen stage has finished (none,
 * the retriever, a ranker, an evaluation: so the kills reach every stage whatever the
 * machine's load), then run again to its end: results.tsv must equal the uninterrupted
 * run's byte for byte, and
 * no stage finished before the kill may run again (its .done marker and every file of
 * its folder keep their inode, size and modification time). */

#include <dirent.h>

typedef struct stage_file {
    char path[900];
    struct stat st;
} stage_file;

typedef struct finished_stages {
    int n;
    stage_file f[128];
} finished_stages;

static void note_file(finished_stages *fs, const char *path) {
    struct stat st;
    if (fs->n < 128 && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        snprintf(fs->f[fs->n].path, sizeof fs->f[0].path, "%s", path);
        fs->f[fs->n++].st = st;
    }
}

/* Every X.done under dir (recursively), with the regular files of the folder X
 * (config.yaml aside: the runner rewrites a run's resolved configuration each time). */
static void collect_finished(const char *dir, finished_stages *fs) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char p[900];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        size_t n = strlen(p);
        struct stat st;
        if (lstat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            collect_finished(p, fs);
        } else if (n > 5 && !strcmp(p + n - 5, ".done")) {
            note_file(fs, p);
            char stage[900];
            snprintf(stage, sizeof stage, "%.*s", (int)(n - 5), p);
            DIR *sd = opendir(stage);
            struct dirent *se;
            while (sd && (se = readdir(sd))) {
                if (se->d_name[0] == '.' || !strcmp(se->d_name, "config.yaml")) continue;
                char q[1800];
                snprintf(q, sizeof q, "%s/%s", stage, se->d_name);
                if (strlen(q) < sizeof fs->f[0].path) note_file(fs, q);
            }
            if (sd) closedir(sd);
        }
    }
    closedir(d);
}

/* The first file of fs that was rewritten, removed or replaced since; NULL when none. */
static const char *first_changed(const finished_stages *fs) {
    for (int i = 0; i < fs->n; i++) {
        struct stat st;
        const struct stat *o = &fs->f[i].st;
        if (stat(fs->f[i].path, &st) != 0 || st.st_ino != o->st_ino || st.st_size != o->st_size ||
            st.st_mtim.tv_sec != o->st_mtim.tv_sec || st.st_mtim.tv_nsec != o->st_mtim.tv_nsec)
            return fs->f[i].path;
    }
    return NULL;
}

/* The .done markers under dir (recursively): the stages finished so far. */
static int count_done(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        size_t len = strlen(de->d_name);
        if (len > 5 && !strcmp(de->d_name + len - 5, ".done")) {
            n++;
        } else if (de->d_type == DT_DIR) {
            char p[1200];
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            n += count_done(p);
        }
    }
    closedir(d);
    return n;
}

/* Runs `bin args...` (output to /dev/null) and sends SIGKILL `delay` seconds after the
 * n_done-th stage of the experiment in out has finished (0: after the start). Returns
 * the exit status (128 + 9 when killed) and the moment of the kill. */
static int run_and_kill_after_stage(char *const *args, const char *out, int n_done, double delay, double *at) {
    double t0 = mr_now(), ready = n_done == 0 ? t0 : -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(127);
        execv(bin(), args);
        _exit(127);
    }
    int st = 0, killed = 0;
    *at = -1;
    for (;;) {
        if (waitpid(pid, &st, WNOHANG) == pid) break;
        if (ready < 0 && count_done(out) >= n_done) ready = mr_now();
        if (!killed && ready >= 0 && mr_now() - ready >= delay) {
            kill(pid, SIGKILL);
            killed = 1;
            *at = mr_now() - t0;
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

TEST(experiment_run_killed_at_random_moments_finishes_the_same) {
    const char *raw = test_shared_path("data/ml-latest-small");
    const char *model = test_shared_path("reference/models/stories260K.gguf");
    if (!raw || !model) SKIP("../shared/data/ml-latest-small or stories260K.gguf absent");
    char ds[700], cfg_path[700], ref[700], args[4096], meta[800];
    snprintf(ds, sizeof ds, "%s", test_tmp_path("mls"));
    snprintf(meta, sizeof meta, "%s/meta.json", ds);
    if (!mr_file_exists(meta)) {
        snprintf(args, sizeof args, "prepare --format movielens --input %s --out %s", raw, ds);
        CHECK(run_bin(split_args(args), 0, NULL) == 0);
    }
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "name: killed\ndataset: %s\n"
             "retriever:\n  max-epochs: 3\n  val-every: 20\n  hidden: 16\n  blocks: 1\n  max-len: 50\n  batch: 32\n"
             "  threads: 1\n"
             "ranker:\n  model: %s\n  history: 3\n  max-title-tokens: 6\n  max-tokens: 256\n  max-steps: 4\n"
             "  batch: 2\n  val-every: 2\n  val-users: 4\n  lr: 0.001\n  warmup: 2\n  threads: 1\n"
             "eval:\n  split: test\n"
             "grid:\n  seed: [1]\n  num-candidates: [5, 25]\n"
             "report:\n  split: test\n  section: overall\n  metrics: [Recall@5, Recall@10, NDCG@10, MRR@10]\n"
             "  sweep: num-candidates\n",
             ds, model);
    snprintf(cfg_path, sizeof cfg_path, "%s", test_tmp_path("killed.yaml"));
    test_write_file(cfg_path, cfg, strlen(cfg));
    snprintf(ref, sizeof ref, "%s", test_tmp_path("exp_ref"));
    double T;
    snprintf(args, sizeof args, "experiment run %s --out %s", cfg_path, ref);
    CHECK(run_bin(split_args(args), 0, &T) == 0);
    char ref_tsv[800];
    snprintf(ref_tsv, sizeof ref_tsv, "%s/results.tsv", ref);
    CHECK(mr_file_exists(ref_tsv));
    mr_rng rng;
    mr_rng_seed(&rng, 11);
    /* the stages: the retriever, then each setting's ranker and evaluation (5 .done
     * markers); kill k waits for stage k*5/n to finish, then a seeded random delay of
     * up to 1 s, so the kills reach every stage whatever the machine's load */
    const int n_stages = 5, n = test_under_sanitizer() ? 2 : 5;
    int hits = 0, with_finished = 0;
    static finished_stages fs;
    for (int k = 0; k < n; k++) {
        int after = k * n_stages / n;
        double delay = mr_rng_uniform(&rng), at;
        char out[800], tsv[900];
        snprintf(out, sizeof out, "%s-%d", test_tmp_path("exp_killed"), k);
        snprintf(args, sizeof args, "experiment run %s --out %s", cfg_path, out);
        int rc = run_and_kill_after_stage(split_args(args), out, after, delay, &at);
        CHECK_MSG(rc == 0 || rc == 128 + SIGKILL, "experiment run %d exited %d", k, rc);
        hits += rc == 128 + SIGKILL;
        /* the stage that ran gets SIGKILL from the kernel as its parent dies
         * (PR_SET_PDEATHSIG); give it a moment to be gone and drop its folder's lock */
        usleep(300000);
        fs.n = 0;
        collect_finished(out, &fs);
        int stages_done = count_done(out);
        snprintf(args, sizeof args, "experiment run %s --out %s", cfg_path, out);
        CHECK_MSG(run_bin(split_args(args), 0, NULL) == 0, "experiment run %d, run again, failed", k);
        with_finished += stages_done > 0;
        const char *changed = first_changed(&fs);
        CHECK_MSG(!changed, "kill %d: %s, finished before the kill, was written again", k, changed);
        snprintf(tsv, sizeof tsv, "%s/results.tsv", out);
        CHECK_MSG(same_file(ref_tsv, tsv), "kill %d: results.tsv differs from the uninterrupted run's", k);
        printf("  kill -9 %.2f s after stage %d of %d finished (%.2f s in; uninterrupted: %.2f s): %s with %d stages "
               "done (%d files kept); run again: the same results.tsv\n",
               delay, after, n_stages, at, T, rc ? "killed" : "finished first", stages_done, fs.n);
    }
    printf("  experiment run: %d of %d kills hit the running experiment, %d after a stage had finished\n", hits, n,
           with_finished);
    /* otherwise "no finished stage runs again" was not put to the test */
    CHECK_MSG(with_finished > 0 && hits > 0, "no kill landed after a finished stage in a running experiment");
}

int main(void) {
    RUN(retriever_and_ranker_resume_after_kill_9_at_ten_moments);
    RUN(experiment_run_killed_at_random_moments_finishes_the_same);
    return test_summary();
}
