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

int main(void) {
    RUN(retriever_and_ranker_resume_after_kill_9_at_ten_moments);
    return test_summary();
}
