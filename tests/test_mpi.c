/* Open MPI (mllm4rec/dist.h, docs/scale.md): `ranker eval`, `caption`, `retriever eval`
 * and `retriever candidates` on 2 ranks x 1 thread write the files of 1 process x 1
 * thread, byte for byte (also from a hostfile); data-parallel `ranker train` on 2
 * ranks ends with the adapter (up to the reduction order) and the validation NDCG of
 * 1 process with the same global batch, also when killed (SIGKILL) and resumed on 2
 * ranks or on 1, and when mpirun is sent SIGINT (Ctrl-C) and the run resumed; a
 * Ctrl-C'd `ranker eval` leaves metrics.json as it was and the folder free; a rank
 * that fails ends the whole job with its message and a non-zero exit instead of
 * leaving the others waiting; commands that do not share their work refuse to run on
 * several ranks. Skips (visibly) when mpirun is absent or the build has no MPI
 * (make MPI=0). */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mllm4rec/dist.h"
#include "mllm4rec/llm.h"
#include "test.h"

static const char *bin(void) {
    const char *b = getenv("MLLM4REC_BIN");
    return b && *b ? b : "build/mllm4rec";
}

/* NULL (and the reason in why) when 2-rank runs cannot be made here. */
static const char *mpirun_prefix(const char **why) {
    static char prefix[256];
    if (!mr_dist_available()) {
        *why = "built without MPI (make MPI=0)";
        return NULL;
    }
    if (system("command -v mpirun >/dev/null 2>&1") != 0) {
        *why = "mpirun not found (apt-get install openmpi-bin)";
        return NULL;
    }
    /* root needs --allow-run-as-root; two ranks on a machine of fewer cores, --oversubscribe */
    snprintf(prefix, sizeof prefix, "timeout 300 mpirun %s--oversubscribe --mca orte_base_help_aggregate 0",
             geteuid() == 0 ? "--allow-run-as-root " : "");
    return prefix;
}

/* Runs a shell command line, stdout into out (may be NULL); returns the exit status. */
static int sh(char *out, size_t outsz, const char *fmt, ...) MR_PRINTF(3, 4);
static int sh(char *out, size_t outsz, const char *fmt, ...) {
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = 0, got;
    char tmp[4096];
    while ((got = fread(tmp, 1, sizeof tmp, p)) > 0)
        if (out && n + 1 < outsz) {
            size_t take = got < outsz - 1 - n ? got : outsz - 1 - n;
            memcpy(out + n, tmp, take);
            n += take;
        }
    if (out && outsz) out[n] = 0;
    int st = pclose(p);
    if (st == -1) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static char *read_all(const char *path) {
    char *d;
    size_t n;
    mr_error e;
    return mr_read_file(path, &d, &n, &e) ? NULL : d;
}

/* Both files exist and hold the same bytes. */
static int same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    mr_error e;
    int ok = !mr_read_file(a, &x, &nx, &e) && !mr_read_file(b, &y, &ny, &e) && nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return ok;
}

/* ---- ranker eval: stories260K on a small MovieLens-like dataset ---- */

static const char *ranker_world(void) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("ml"));
    char buf[8192];
    size_t n = 0;
    for (int u = 1; u <= 7; u++) {
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%d\t%d\t", u, u);
        for (int j = 0; j < 6; j++) n += (size_t)snprintf(buf + n, sizeof buf - n, j ? " %d" : "%d", (u + 2 * j) % 8 + 1);
        buf[n++] = '\n';
    }
    buf[n] = 0;
    test_write_dataset(dir, "ml-latest-small", test_movie_items, buf);
    /* candidates: the label among them for most users (ranked by the LLM), not for user 5 */
    n = (size_t)snprintf(buf, sizeof buf, "split\tuser_id\tlabel\titems\tscores\n");
    for (int s = 0; s < 2; s++)
        for (int u = 1; u <= 7; u++) {
            int label = (u + 2 * (s ? 5 : 4)) % 8 + 1, c[4], m = 0, hit = u != 5;
            for (int k = 0; m < 4; k++) {
                if (hit && m == u % 4) {
                    c[m++] = label;
                    continue;
                }
                int it = (label + u + k) % 8 + 1;
                if (it != label) c[m++] = it;
            }
            n += (size_t)snprintf(buf + n, sizeof buf - n, "%s\t%d\t%d\t%d,%d,%d,%d\t4,3,2,1\n", s ? "test" : "val", u,
                                  label, c[0], c[1], c[2], c[3]);
        }
    test_write_text(dir, "cands.tsv", buf);
    return dir;
}

TEST(ranker_eval_two_ranks_equal_one) {
    const char *why, *mpi = mpirun_prefix(&why);
    if (!mpi) SKIP("%s", why);
    const char *model = "models/stories260K.gguf";
    if (!mr_file_exists(model)) SKIP("%s absent", model);
    const char *w = ranker_world();
    char common[4096], a[1024], b[1024], pa[1200], pb[1200];
    snprintf(common, sizeof common,
             "ranker eval --dataset %s --candidates %s/cands.tsv --model %s --num-candidates 4 --threads 1 "
             "--history 3 --max-title-tokens 6 --max-tokens 256 --split %%s --out %%s",
             w, w, model);
    static char out1[1 << 15], out2[1 << 15];
    const char *splits[2] = {"val", "test"};
    for (int s = 0; s < 2; s++) {
        snprintf(a, sizeof a, "%s_%s", test_tmp_path("rank1"), splits[s]);
        snprintf(b, sizeof b, "%s_%s", test_tmp_path("rank2"), splits[s]);
        char args_a[4400], args_b[4400];
        snprintf(args_a, sizeof args_a, common, splits[s], a);
        snprintf(args_b, sizeof args_b, common, splits[s], b);
        int rc = sh(out1, sizeof out1, "%s %s 2>/dev/null", bin(), args_a);
        CHECK_MSG(rc == 0, "one process: exit %d", rc);
        rc = sh(out2, sizeof out2, "%s -np 2 %s %s 2>&1 >%s", mpi, bin(), args_b, test_tmp_path("stdout2"));
        CHECK_MSG(rc == 0, "2 ranks: exit %d: %s", rc, out2);
        char *o2 = read_all(test_tmp_path("stdout2"));
        CHECK(o2);
        /* rank 0 alone prints: the same table once */
        CHECK_MSG(!strcmp(out1, o2), "stdout differs:\n%s\n---\n%s", out1, o2);
        free(o2);
        CHECK_MSG(strstr(out1, "7 users, 6 with the true item"), "%s", out1);
        snprintf(pa, sizeof pa, "%s/metrics.json", a);
        snprintf(pb, sizeof pb, "%s/metrics.json", b);
        CHECK_MSG(same_file(pa, pb), "%s: metrics.json of 2 ranks differs from 1 process's", splits[s]);
    }
    /* three ranks: blocks of 2 users each */
    snprintf(b, sizeof b, "%s", test_tmp_path("rank3"));
    char args_b[4400];
    snprintf(args_b, sizeof args_b, common, "test", b);
    int rc = sh(NULL, 0, "%s -np 3 %s %s >/dev/null 2>&1", mpi, bin(), args_b);
    CHECK_MSG(rc == 0, "3 ranks: exit %d", rc);
    snprintf(pa, sizeof pa, "%s_test/metrics.json", test_tmp_path("rank1"));
    snprintf(pb, sizeof pb, "%s/metrics.json", b);
    CHECK_MSG(same_file(pa, pb), "metrics.json of 3 ranks differs from 1 process's");
    /* a hostfile naming this machine with 2 slots, as on a cluster (docs/scale.md) */
    char hosts[1024];
    snprintf(hosts, sizeof hosts, "%s", test_tmp_path("hosts"));
    test_write_file(hosts, "localhost slots=2\n", strlen("localhost slots=2\n"));
    snprintf(b, sizeof b, "%s", test_tmp_path("rank_hostfile"));
    snprintf(args_b, sizeof args_b, common, "test", b);
    static char out3[1 << 15];
    rc = sh(out3, sizeof out3, "%s --hostfile %s -np 2 %s %s 2>&1 >/dev/null", mpi, hosts, bin(), args_b);
    CHECK_MSG(rc == 0 && strstr(out3, "on 2 ranks"), "--hostfile: exit %d: %s", rc, out3);
    snprintf(pb, sizeof pb, "%s/metrics.json", b);
    CHECK_MSG(same_file(pa, pb), "metrics.json of 2 ranks from a hostfile differs from 1 process's");
}

/* ---- data-parallel ranker train ---- */

/* The adapters a and b (read through the project's GGUF reader) agree: every tensor t,
 * max|diff| <= 1e-6 max|t|. Fills worst with the largest ratio seen. */
static int same_adapter(const llm_model *m, const char *a, const char *b, double *worst) {
    llm_adapter x, y;
    mr_error e = {0};
    *worst = INFINITY;
    if (llm_adapter_read_gguf(&x, m, a, &e)) {
        fprintf(stderr, "  %s\n", e.msg);
        return 0;
    }
    if (llm_adapter_read_gguf(&y, m, b, &e)) {
        fprintf(stderr, "  %s\n", e.msg);
        llm_adapter_free(&x);
        return 0;
    }
    int ok = x.n_params == y.n_params && x.n_layer == y.n_layer && x.r == y.r;
    *worst = 0;
    for (int i = 0; ok && i < x.n_layer * LLM_LORA_N_TARGETS; i++) {
        const llm_lora *p = &x.mats[i], *q = &y.mats[i];
        if (!p->a != !q->a || (p->a && (p->in != q->in || p->out != q->out || p->rank != q->rank))) {
            ok = 0;
            break;
        }
        if (!p->a) continue;
        for (int ab = 0; ab < 2; ab++) {
            const float *u = ab ? p->b : p->a, *v = ab ? q->b : q->a;
            const size_t n = (size_t)p->rank * (size_t)(ab ? p->out : p->in);
            double mx = 0, d = 0;
            for (size_t k = 0; k < n; k++) {
                if (fabs(u[k]) > mx) mx = fabs(u[k]);
                if (fabs((double)u[k] - v[k]) > d) d = fabs((double)u[k] - v[k]);
            }
            const double ratio = mx > 0 ? d / mx : (d > 0 ? INFINITY : 0);
            if (ratio > *worst) *worst = ratio;
            if (d > 1e-6 * mx) ok = 0;
        }
    }
    llm_adapter_free(&x);
    llm_adapter_free(&y);
    return ok;
}

/* The "val_ndcg10" values of a train.jsonl, in order, as written. */
static void val_ndcgs(const char *dir, char *out, size_t n) {
    char p[1200];
    snprintf(p, sizeof p, "%s/train.jsonl", dir);
    char *x = read_all(p);
    size_t k = 0;
    out[0] = 0;
    for (const char *s = x ? strstr(x, "\"val_ndcg10\":") : NULL; s; s = strstr(s + 1, "\"val_ndcg10\":")) {
        const char *v = s + strlen("\"val_ndcg10\":");
        size_t len = strcspn(v, ",}");
        if (k + len + 2 < n) {
            memcpy(out + k, v, len);
            k += len;
            out[k++] = ' ';
            out[k] = 0;
        }
    }
    free(x);
}

/* A training run's flags (the run folder is the %s); 21 examples, batches of 5, so
 * the ranks' shares differ in size (2 and 3) and a batch crosses the epoch's end. */
static void train_args_steps(char *out, size_t n, const char *w, const char *model, int steps) {
    snprintf(out, n,
             "ranker train --dataset %s --candidates %s/cands.tsv --model %s --num-candidates 4 --threads 1 "
             "--history 3 --max-title-tokens 6 --max-tokens 256 --lora-r 4 --targets q,v,o --lr 1e-2 --warmup 1 "
             "--batch 5 --max-steps %d --val-every 2 --patience 50 --seed 7 --out %%s",
             w, w, model, steps);
}

static void train_args(char *out, size_t n, const char *w, const char *model) {
    train_args_steps(out, n, w, model, 8);
}

TEST(ranker_train_two_ranks_equal_one) {
    const char *why, *mpi = mpirun_prefix(&why);
    if (!mpi) SKIP("%s", why);
    const char *model = "models/stories260K.gguf";
    if (!mr_file_exists(model)) SKIP("%s absent", model);
    const char *w = ranker_world();
    char fmt[4096], args[4400], a[1024], b[1024], pa[1200], pb[1200];
    train_args(fmt, sizeof fmt, w, model);
    snprintf(a, sizeof a, "%s", test_tmp_path("train1"));
    snprintf(b, sizeof b, "%s", test_tmp_path("train2"));
    static char out1[1 << 15], out2[1 << 15];
    snprintf(args, sizeof args, fmt, a);
    int rc = sh(out1, sizeof out1, "%s %s 2>/dev/null", bin(), args);
    CHECK_MSG(rc == 0, "one process: exit %d", rc);
    snprintf(args, sizeof args, fmt, b);
    rc = sh(out2, sizeof out2, "%s -np 2 %s %s 2>&1 >%s", mpi, bin(), args, test_tmp_path("stdout2"));
    CHECK_MSG(rc == 0, "2 ranks: exit %d: %s", rc, out2);
    llm_model m;
    mr_error e = {0};
    CHECK_MSG(!llm_load(&m, model, &e), "%s", e.msg);
    snprintf(pa, sizeof pa, "%s/adapter.gguf", a);
    snprintf(pb, sizeof pb, "%s/adapter.gguf", b);
    double worst;
    CHECK_MSG(same_adapter(&m, pa, pb, &worst), "2 ranks' adapter differs from 1 process's: max|diff| / max|t| = %g",
              worst);
    fprintf(stderr, "  adapter 2 ranks vs 1: max|diff| / max|t| = %.3g\n", worst);
    /* the adapter moved (a run that trained nothing would pass the comparison) */
    llm_adapter t0, t1;
    CHECK(!llm_adapter_init(&t0, &m, 4, 32.0f, 0.05f, (1u << LLM_LORA_Q) | (1u << LLM_LORA_V) | (1u << LLM_LORA_O), 7, &e));
    CHECK_MSG(!llm_adapter_read_gguf(&t1, &m, pa, &e), "%s", e.msg);
    CHECK(t0.n_params == t1.n_params);
    double moved = 0;
    for (int64_t k = 0; k < t0.n_params; k++) moved = fmax(moved, fabs(t0.buf[k] - t1.buf[k]));
    CHECK_MSG(moved > 1e-4, "training left the adapter where it started (max change %g)", moved);
    llm_adapter_free(&t0);
    llm_adapter_free(&t1);
    /* the same validation NDCG at every check, and the same table from rank 0 alone */
    char n1[2048], n2[2048];
    val_ndcgs(a, n1, sizeof n1);
    val_ndcgs(b, n2, sizeof n2);
    CHECK_MSG(strlen(n1) > 0 && !strcmp(n1, n2), "validation NDCG@10: 1 process %s, 2 ranks %s", n1, n2);
    char *o2 = read_all(test_tmp_path("stdout2"));
    CHECK(o2);
    const char *l1 = strstr(out1, "| validation NDCG@10"), *l2 = o2 ? strstr(o2, "| validation NDCG@10") : NULL;
    CHECK_MSG(l1 && l2 && !strncmp(l1, l2, strcspn(l1, "\n") + 1), "tables differ:\n%s\n---\n%s", out1, o2 ? o2 : "");
    CHECK_MSG(strstr(out1, "| steps | 8 |") && o2 && strstr(o2, "| steps | 8 |"), "%s", out1);
    free(o2);
    /* rank 0 alone wrote the run folder: one copy of each file, a complete log */
    snprintf(pb, sizeof pb, "%s/train.jsonl", b);
    char *log = read_all(pb);
    int lines = 0;
    for (const char *s = log; s && *s; s++) lines += *s == '\n';
    CHECK_MSG(lines == 5, "train.jsonl of 2 ranks has %d lines, not 5 (step 0 and 4 validations)", lines);
    free(log);
    llm_free(&m);
}

/* Starts the shell command line (which execs mpirun) with stdout and stderr to
 * /dev/null; returns its pid. */
static pid_t start_job(const char *cmdline) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(127);
        execl("/bin/sh", "sh", "-c", cmdline, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* The direct children of pid, found through /proc's parent links: at most max
 * into kids, and into named[i] (when not NULL) whether child i runs the program
 * `name`; returns how many. */
static int proc_children(pid_t pid, pid_t *kids, int max, const char *name, int *named) {
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *de;
    while (d && (de = readdir(d)) && n < max) {
        char p[300], buf[512];
        pid_t child = (pid_t)atoi(de->d_name);
        if (child <= 0) continue;
        snprintf(p, sizeof p, "/proc/%d/stat", (int)child);
        FILE *f = fopen(p, "r");
        if (!f) continue;
        size_t got = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[got] = 0;
        const char *rp = strrchr(buf, ')'); /* "pid (comm) state ppid ..." */
        char state;
        int ppid;
        if (!rp || sscanf(rp + 1, " %c %d", &state, &ppid) != 2 || ppid != (int)pid) continue;
        if (named) {
            const char *lp = strchr(buf, '(');
            named[n] = lp && (size_t)(rp - lp - 1) == strlen(name) && !strncmp(lp + 1, name, strlen(name));
        }
        kids[n++] = child;
    }
    if (d) closedir(d);
    return n;
}

/* SIGKILL to pid and every process below it (mpirun puts its ranks in process groups
 * of their own, so killing its group alone would leave them running): the ranks
 * first, then mpirun. */
static void kill_tree(pid_t pid) {
    pid_t kids[64];
    const int n = proc_children(pid, kids, 64, NULL, NULL);
    for (int i = 0; i < n; i++) kill_tree(kids[i]);
    kill(pid, SIGKILL);
}

/* Waits for pid; SIGKILL to its whole tree (mpirun and its ranks) once dir holds a
 * checkpoint and a log of at least `lines` lines. Returns 1 when it was killed before
 * the end. */
static int kill_when(pid_t pid, const char *dir, int lines) {
    char log[1200], ckpt[1200];
    snprintf(log, sizeof log, "%s/train.jsonl", dir);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", dir);
    int st = 0, killed = 0;
    const double t0 = mr_now();
    for (;;) {
        if (waitpid(pid, &st, WNOHANG) == pid) break;
        char *x = killed ? NULL : read_all(log);
        int n = 0;
        for (const char *s = x; s && *s; s++) n += *s == '\n';
        free(x);
        if (!killed && ((n >= lines && mr_file_exists(ckpt)) || mr_now() - t0 > 250)) {
            kill_tree(pid);
            killed = 1;
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return killed && !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST(ranker_train_two_ranks_killed_and_resumed) {
    const char *why, *mpi = mpirun_prefix(&why);
    if (!mpi) SKIP("%s", why);
    const char *model = "models/stories260K.gguf";
    if (!mr_file_exists(model)) SKIP("%s absent", model);
    const char *w = ranker_world();
    char fmt[4096], args[4400], line[8192], ref[1024], pa[1200], pb[1200];
    train_args(fmt, sizeof fmt, w, model);
    /* the uninterrupted run: one process */
    snprintf(ref, sizeof ref, "%s", test_tmp_path("train_ref"));
    snprintf(args, sizeof args, fmt, ref);
    int rc = sh(NULL, 0, "%s %s >/dev/null 2>&1", bin(), args);
    CHECK_MSG(rc == 0, "uninterrupted run: exit %d", rc);
    snprintf(pa, sizeof pa, "%s/adapter.gguf", ref);
    llm_model m;
    mr_error e = {0};
    CHECK_MSG(!llm_load(&m, model, &e), "%s", e.msg);
    /* killed on 2 ranks after the validation of step 4 (log: step 0, 2, 4), resumed on
     * 2 ranks; then killed after step 2's and resumed on 1 rank */
    const int resume_ranks[2] = {2, 1}, kill_at[2] = {3, 2};
    for (int k = 0; k < 2; k++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s_%d", test_tmp_path("train_kill"), k);
        snprintf(args, sizeof args, fmt, dir);
        snprintf(line, sizeof line, "exec %s -np 2 %s %s", mpi, bin(), args);
        pid_t pid = start_job(line);
        CHECK(pid > 0);
        CHECK_MSG(kill_when(pid, dir, kill_at[k]), "run %d was not killed before its end", k);
        snprintf(pb, sizeof pb, "%s/checkpoint.safetensors", dir);
        CHECK_MSG(mr_file_exists(pb), "run %d: no checkpoint after the kill", k);
        static char out[1 << 15];
        if (resume_ranks[k] == 2)
            rc = sh(out, sizeof out, "%s -np 2 %s %s --resume 2>&1 >/dev/null", mpi, bin(), args);
        else
            rc = sh(out, sizeof out, "%s %s --resume 2>&1 >/dev/null", bin(), args);
        CHECK_MSG(rc == 0, "run %d: resumed on %d rank(s): exit %d: %s", k, resume_ranks[k], rc, out);
        snprintf(pb, sizeof pb, "%s/adapter.gguf", dir);
        double worst;
        CHECK_MSG(same_adapter(&m, pa, pb, &worst),
                  "run %d (killed on 2 ranks, resumed on %d): adapter differs from the uninterrupted one's: %g", k,
                  resume_ranks[k], worst);
        fprintf(stderr, "  killed on 2 ranks, resumed on %d: max|diff| / max|t| = %.3g\n", resume_ranks[k], worst);
        char n1[2048], n2[2048];
        val_ndcgs(ref, n1, sizeof n1);
        val_ndcgs(dir, n2, sizeof n2);
        CHECK_MSG(strlen(n1) > 0 && !strcmp(n1, n2), "run %d: validation NDCG@10 %s, uninterrupted %s", k, n2, n1);
    }
    llm_free(&m);
}

/* ---- Ctrl-C: SIGINT to mpirun ---- */

/* mpirun without `timeout`: GNU timeout sends a signal it gets to its whole process
 * group as well, so mpirun would see a second SIGINT (which makes it kill at once). */
static const char *mpirun_plain(void) {
    static char prefix[256];
    snprintf(prefix, sizeof prefix, "mpirun %s--oversubscribe --mca orte_base_help_aggregate 0",
             geteuid() == 0 ? "--allow-run-as-root " : "");
    return prefix;
}

/* The mllm4rec processes below pid (mpirun's ranks), at most max; returns how many. */
static int job_ranks(pid_t pid, pid_t *out, int max) {
    pid_t kids[64];
    int is_rank[64];
    const int nk = proc_children(pid, kids, 64, "mllm4rec", is_rank);
    int n = 0;
    for (int i = 0; i < nk; i++) {
        if (is_rank[i] && n < max) out[n++] = kids[i];
        n += job_ranks(kids[i], out + n, max - n);
    }
    return n;
}

/* 1 when no pid of the list is a live mllm4rec any more (a zombie counts as ended),
 * after waiting up to 10 s for them. */
static int ranks_gone(const pid_t *pids, int n) {
    const double t0 = mr_now();
    for (;;) {
        int live = 0;
        for (int i = 0; i < n; i++) {
            char p[64], buf[512];
            snprintf(p, sizeof p, "/proc/%d/stat", (int)pids[i]);
            FILE *f = fopen(p, "r");
            if (!f) continue;
            size_t got = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[got] = 0;
            const char *rp = strrchr(buf, ')');
            char state = 0;
            if (strstr(buf, "(mllm4rec)") && rp && sscanf(rp + 1, " %c", &state) == 1 && state != 'Z') live++;
        }
        if (!live) return 1;
        if (mr_now() - t0 > 10) return 0;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static int file_lines(const char *path) {
    char *x = read_all(path);
    int n = 0;
    for (const char *s = x; s && *s; s++) n += *s == '\n';
    free(x);
    return n;
}

/* Starts `cmdline` (which execs mpirun), waits until ready(ctx) says the ranks are at
 * work (or 250 s), notes the ranks, sends SIGINT to mpirun as a terminal's Ctrl-C
 * does, and waits for it. Returns the wait status; *n_ranks and ranks: the ranks seen. */
static int sigint_job(const char *cmdline, int (*ready)(const void *), const void *ctx, pid_t *ranks, int *n_ranks) {
    pid_t pid = start_job(cmdline);
    *n_ranks = 0;
    if (pid <= 0) return -1;
    const double t0 = mr_now();
    int st = 0, sent = 0;
    for (;;) {
        if (waitpid(pid, &st, WNOHANG) == pid) break;
        if (!sent && *n_ranks < 2) *n_ranks = job_ranks(pid, ranks, 8);
        if (!sent && *n_ranks >= 2 && ready(ctx)) {
            *n_ranks = job_ranks(pid, ranks, 8);
            kill(pid, SIGINT);
            sent = 1;
        }
        if (mr_now() - t0 > 250) { /* a hang: end it, the checks below fail */
            kill_tree(pid);
            waitpid(pid, &st, 0);
            return -1;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return sent ? st : -1;
}

static int log_has_two_lines(const void *dir) {
    char p[1200];
    snprintf(p, sizeof p, "%s/train.jsonl", (const char *)dir);
    return file_lines(p) >= 2; /* step 0 and the first validation: training under way */
}

/* mpirun forwards a Ctrl-C to its ranks as SIGTERM (then SIGKILL after
 * odls_base_sigkill_timeout, 1 s): the ranks agree on the stop after the example
 * each is in, rank 0 saves the last step's state, and every rank ends with exit 1;
 * the folder's lock is free, no rank is left, and --resume ends with the adapter of
 * an uninterrupted run. */
TEST(ranker_train_two_ranks_sigint) {
    const char *why, *mpi = mpirun_prefix(&why);
    if (!mpi) SKIP("%s", why);
    const char *model = "models/stories260K.gguf";
    if (!mr_file_exists(model)) SKIP("%s absent", model);
    const char *w = ranker_world();
    enum { STEPS = 60 };
    char fmt[4096], args[4400], line[8192], ref[1024], dir[1024], pa[1200], pb[1200], errp[1200];
    train_args_steps(fmt, sizeof fmt, w, model, STEPS);
    snprintf(ref, sizeof ref, "%s", test_tmp_path("sigint_ref"));
    snprintf(args, sizeof args, fmt, ref);
    int rc = sh(NULL, 0, "%s %s >/dev/null 2>&1", bin(), args);
    CHECK_MSG(rc == 0, "uninterrupted run: exit %d", rc);
    snprintf(dir, sizeof dir, "%s", test_tmp_path("sigint_train"));
    snprintf(errp, sizeof errp, "%s", test_tmp_path("sigint_train.err"));
    snprintf(args, sizeof args, fmt, dir);
    snprintf(line, sizeof line, "exec %s -np 2 %s %s 2>%s", mpirun_plain(), bin(), args, errp);
    pid_t ranks[8];
    int n_ranks = 0;
    int st = sigint_job(line, log_has_two_lines, dir, ranks, &n_ranks);
    char *err = read_all(errp);
    CHECK_MSG(st != -1, "the job hung or never started training: %s", err ? err : "");
    CHECK_MSG(n_ranks == 2, "%d ranks seen", n_ranks);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) != 0, "mpirun after SIGINT: status %#x (not a non-zero exit): %s", st,
              err ? err : "");
    CHECK_MSG(ranks_gone(ranks, n_ranks), "a rank is still running after mpirun ended");
    /* stopped by agreement: rank 0's message, no rank ended the job by failing (our own line: Open MPI's
     * libevent may print "[warn] Epoll MOD(1) on fd N failed" while the job is torn down, harmlessly) */
    CHECK_MSG(err && strstr(err, "interrupted at step") && !strstr(err, "mllm4rec: rank"), "stderr: %s",
              err ? err : "");
    free(err);
    snprintf(pb, sizeof pb, "%s/train.jsonl", dir);
    const int lines = file_lines(pb);
    CHECK_MSG(lines < 1 + STEPS / 2, "the run ended (%d log lines) before the SIGINT reached it", lines);
    snprintf(pb, sizeof pb, "%s/checkpoint.safetensors", dir);
    CHECK_MSG(mr_file_exists(pb), "no checkpoint after the SIGINT");
    /* the lock is free (a held one makes this exit 1) and the run continues to the end */
    static char out[1 << 15];
    rc = sh(out, sizeof out, "%s -np 2 %s %s --resume 2>&1 >/dev/null", mpi, bin(), args);
    CHECK_MSG(rc == 0, "resumed: exit %d: %s", rc, out);
    llm_model m;
    mr_error e = {0};
    CHECK_MSG(!llm_load(&m, model, &e), "%s", e.msg);
    snprintf(pa, sizeof pa, "%s/adapter.gguf", ref);
    snprintf(pb, sizeof pb, "%s/adapter.gguf", dir);
    double worst;
    CHECK_MSG(same_adapter(&m, pa, pb, &worst), "interrupted and resumed: adapter differs from the uninterrupted one's: %g",
              worst);
    fprintf(stderr, "  SIGINT to mpirun at log line %d, resumed on 2 ranks: max|diff| / max|t| = %.3g\n", lines, worst);
    char n1[4096], n2[4096];
    val_ndcgs(ref, n1, sizeof n1);
    val_ndcgs(dir, n2, sizeof n2);
    CHECK_MSG(strlen(n1) > 0 && !strcmp(n1, n2), "validation NDCG@10 %s, uninterrupted %s", n2, n1);
    llm_free(&m);
}

/* A dataset of n users whose prompts fill 512 tokens of stories260K (so that ranking
 * them takes seconds), 20 candidates each, the true item among them. */
static const char *long_world(int n_users) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("ml_long"));
    static const char *words[] = {"red", "house", "river", "night", "story", "city", "garden", "winter", "silent", "storm"};
    const int n_items = 60;
    size_t cap = (size_t)1 << 21, n = 0;
    char *buf = malloc(cap), *items = malloc(1 << 14);
    if (!buf || !items) return free(buf), free(items), NULL;
    for (int i = 1; i <= n_items; i++)
        n += (size_t)snprintf(items + n, (1 << 14) - n, "%d\t%d\tThe %s %s of the %s (19%02d)\t\t\n", i, i,
                              words[i % 10], words[(i * 7) % 10], words[(i * 3) % 10], 50 + i % 50);
    n = 0;
    for (int u = 1; u <= n_users; u++) {
        n += (size_t)snprintf(buf + n, cap - n, "%d\t%d\t", u, u);
        for (int j = 0; j < 30; j++) n += (size_t)snprintf(buf + n, cap - n, j ? " %d" : "%d", (u * 7 + j * 3) % n_items + 1);
        buf[n++] = '\n';
    }
    buf[n] = 0;
    test_write_dataset(dir, "ml-latest-small", items, buf);
    free(items);
    n = (size_t)snprintf(buf, cap, "split\tuser_id\tlabel\titems\tscores\n");
    for (int s = 0; s < 2; s++)
        for (int u = 1; u <= n_users; u++) {
            const int label = (u * 7 + (s ? 29 : 28) * 3) % n_items + 1, at = u % 20;
            n += (size_t)snprintf(buf + n, cap - n, "%s\t%d\t%d\t", s ? "test" : "val", u, label);
            for (int k = 0, c = 0; k < 20; k++) {
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
    buf[n] = 0;
    test_write_text(dir, "cands.tsv", buf);
    free(buf);
    return dir;
}

static int ranks_had_time(const void *t0) {
    return mr_now() - *(const double *)t0 > 1.0; /* past start-up and loading: ranking */
}

/* `ranker eval` under mpirun, Ctrl-C'd while ranking: exit non-zero, no rank left,
 * the folder's metrics.json as it was (written whole or not at all), its lock free. */
TEST(ranker_eval_two_ranks_sigint) {
    const char *why, *mpi = mpirun_prefix(&why);
    if (!mpi) SKIP("%s", why);
    const char *model = "models/stories260K.gguf";
    if (!mr_file_exists(model)) SKIP("%s absent", model);
    const char *w = long_world(2000);
    CHECK(w);
    char common[4096], line[8192], dir[1024], pm[1200], errp[1200];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("sigint_eval"));
    snprintf(common, sizeof common,
             "ranker eval --dataset %s --candidates %s/cands.tsv --model %s --threads 1 --max-tokens 512 --out %s", w,
             w, model, dir);
    /* an earlier run's metrics.json in the folder */
    int rc = sh(NULL, 0, "%s %s --max-users 2 >/dev/null 2>&1", bin(), common);
    CHECK_MSG(rc == 0, "a first eval of 2 users: exit %d", rc);
    snprintf(pm, sizeof pm, "%s/metrics.json", dir);
    char *before = read_all(pm);
    CHECK(before);
    snprintf(errp, sizeof errp, "%s", test_tmp_path("sigint_eval.err"));
    snprintf(line, sizeof line, "exec %s -np 2 %s %s 2>%s", mpirun_plain(), bin(), common, errp);
    pid_t ranks[8];
    int n_ranks = 0;
    const double t0 = mr_now();
    int st = sigint_job(line, ranks_had_time, &t0, ranks, &n_ranks);
    char *err = read_all(errp);
    CHECK_MSG(st != -1, "the job hung: %s", err ? err : "");
    CHECK_MSG(n_ranks == 2, "%d ranks seen", n_ranks);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) != 0, "mpirun after SIGINT: status %#x (2000 users ranked before it?): %s",
              st, err ? err : "");
    free(err);
    CHECK_MSG(ranks_gone(ranks, n_ranks), "a rank is still running after mpirun ended");
    char *after = read_all(pm);
    CHECK_MSG(after && !strcmp(before, after), "metrics.json changed by the interrupted run");
    free(before);
    free(after);
    /* nothing half-written beside it */
    DIR *d = opendir(dir);
    struct dirent *de;
    int others = 0;
    while (d && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, "metrics.json")) {
            fprintf(stderr, "  left in the folder: %s\n", de->d_name);
            others++;
        }
    if (d) closedir(d);
    CHECK_MSG(others == 0, "%d other files in %s", others, dir);
    /* the lock is free: the next run of the folder claims it */
    rc = sh(NULL, 0, "%s -np 2 %s %s --max-users 4 >/dev/null 2>&1", mpi, bin(), common);
    CHECK_MSG(rc == 0, "the next eval in the folder: exit %d", rc);
}

/* ---- one rank fails: the job ends with its message ---- */

TEST(failing_rank_ends_the_job) {
    const char *why, *mpi = mpirun_prefix(&why);
    if (!mpi) SKIP("%s", why);
    const char *model = "models/stories260K.gguf";
    if (!mr_file_exists(model)) SKIP("%s absent", model);
    const char *w = ranker_world();
    char good[4096], bad[4096];
    snprintf(good, sizeof good,
             "ranker eval --dataset %s --candidates %s/cands.tsv --model %s --num-candidates 4 --threads 1 "
             "--history 3 --max-title-tokens 6 --max-tokens 256",
             w, w, model);
    /* rank 1 (the second program of an MPMD line) gets a model file that is not there:
     * rank 0 ranks its users and would wait for rank 1's forever */
    snprintf(bad, sizeof bad,
             "ranker eval --dataset %s --candidates %s/cands.tsv --model %s/no-such-model.gguf --num-candidates 4 "
             "--threads 1 --history 3 --max-title-tokens 6 --max-tokens 256",
             w, w, w);
    static char out[1 << 16];
    int rc = sh(out, sizeof out, "%s -np 1 %s %s : -np 1 %s %s 2>&1", mpi, bin(), good, bin(), bad);
    CHECK_MSG(rc != 0 && rc != 124, "exit %d (124: timed out, a hang): %s", rc, out);
    CHECK_MSG(strstr(out, "no-such-model.gguf") && strstr(out, "rank 1 of 2 failed"), "%s", out);
    /* a bad candidates file for rank 0 only: rank 1 waits in the gather, rank 0 ends it */
    snprintf(bad, sizeof bad,
             "ranker eval --dataset %s --candidates %s/nothing.tsv --model %s --num-candidates 4 --threads 1 "
             "--history 3 --max-title-tokens 6 --max-tokens 256",
             w, w, model);
    rc = sh(out, sizeof out, "%s -np 1 %s %s : -np 1 %s %s 2>&1", mpi, bin(), bad, bin(), good);
    CHECK_MSG(rc == 1, "exit %d: %s", rc, out);
    CHECK_MSG(strstr(out, "nothing.tsv") && strstr(out, "rank 0 of 2 failed"), "%s", out);
    /* a command that does not share its work refuses several ranks (usage, exit 2) */
    rc = sh(out, sizeof out, "%s -np 2 %s llm info --model %s 2>&1", mpi, bin(), model);
    CHECK_MSG(rc == 2 && strstr(out, "runs in one process only"), "exit %d: %s", rc, out);
}

/* ---- retriever eval and candidates ---- */

/* more users than two of eval's 128-user batches: each of 2 ranks scores whole batches */
#define N_USERS 300
#define N_ITEMS 50

static const char *walk_dataset(void) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("walk"));
    mkdir(dir, 0755);
    char path[600];
    static char buf[200000];
    size_t n = (size_t)snprintf(buf, sizeof buf, "item_id\tsource_id\ttitle\timage\tcaption\n");
    for (int i = 1; i <= N_ITEMS; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "%d\ts%d\tItem %d\t\t\n", i, i, i);
    snprintf(path, sizeof path, "%s/items.tsv", dir);
    test_write_file(path, buf, n);
    mr_rng r;
    mr_rng_seed(&r, 5);
    int interactions = 0;
    n = (size_t)snprintf(buf, sizeof buf, "user_id\tsource_user_id\titems\n");
    for (int u = 1; u <= N_USERS; u++) {
        int len = 5 + (int)mr_rng_below(&r, 20), item = 1 + (int)mr_rng_below(&r, N_ITEMS);
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%d\tu%d\t", u, u);
        for (int j = 0; j < len; j++) {
            n += (size_t)snprintf(buf + n, sizeof buf - n, j ? " %d" : "%d", item);
            item = (item + 1 + (int)mr_rng_below(&r, 2)) % N_ITEMS + 1;
        }
        buf[n++] = '\n';
        interactions += len;
    }
    snprintf(path, sizeof path, "%s/sequences.tsv", dir);
    test_write_file(path, buf, n);
    n = (size_t)snprintf(buf, sizeof buf,
                         "{\"format_version\": 1, \"format\": \"sequences\", \"name\": \"walk\", \"counts\": "
                         "{\"after\": {\"users\": %d, \"items\": %d, \"interactions\": %d}}}\n",
                         N_USERS, N_ITEMS, interactions);
    snprintf(path, sizeof path, "%s/meta.json", dir);
    test_write_file(path, buf, n);
    return dir;
}

TEST(retriever_eval_and_candidates_two_ranks_equal_one) {
    const char *why, *mpi = mpirun_prefix(&why);
    if (!mpi) SKIP("%s", why);
    const char *ds = walk_dataset();
    char run[1024], p[1200], keep_m[1200], keep_c[1200];
    snprintf(run, sizeof run, "%s", test_tmp_path("lru_run"));
    int rc = sh(NULL, 0,
                "%s retriever train --dataset %s --out %s --max-len 8 --hidden 16 --batch 8 --max-epochs 2 "
                "--val-every 5 --seed 3 --threads 1 >/dev/null 2>&1",
                bin(), ds, run);
    CHECK_MSG(rc == 0, "retriever train: exit %d", rc);
    snprintf(keep_m, sizeof keep_m, "%s", test_tmp_path("metrics_1.json"));
    snprintf(keep_c, sizeof keep_c, "%s", test_tmp_path("candidates_1.tsv"));
    /* one process, one thread */
    CHECK(sh(NULL, 0, "%s retriever eval --dataset %s --run %s --threads 1 >/dev/null 2>&1", bin(), ds, run) == 0);
    CHECK(sh(NULL, 0, "%s retriever candidates --dataset %s --run %s -k 7 --threads 1 >/dev/null 2>&1", bin(), ds,
             run) == 0);
    snprintf(p, sizeof p, "%s/metrics.json", run);
    CHECK(rename(p, keep_m) == 0);
    snprintf(p, sizeof p, "%s/candidates.tsv", run);
    CHECK(rename(p, keep_c) == 0);
    /* two ranks, one thread each */
    static char out[1 << 16];
    rc = sh(out, sizeof out, "%s -np 2 %s retriever eval --dataset %s --run %s --threads 1 2>&1 >/dev/null", mpi,
            bin(), ds, run);
    CHECK_MSG(rc == 0, "eval on 2 ranks: exit %d: %s", rc, out);
    rc = sh(out, sizeof out, "%s -np 2 %s retriever candidates --dataset %s --run %s -k 7 --threads 1 2>&1 >/dev/null",
            mpi, bin(), ds, run);
    CHECK_MSG(rc == 0, "candidates on 2 ranks: exit %d: %s", rc, out);
    snprintf(p, sizeof p, "%s/metrics.json", run);
    CHECK_MSG(same_file(p, keep_m), "metrics.json of 2 ranks differs from 1 process's");
    snprintf(p, sizeof p, "%s/candidates.tsv", run);
    CHECK_MSG(same_file(p, keep_c), "candidates.tsv of 2 ranks differs from 1 process's");
    char *c = read_all(p);
    CHECK(c);
    int lines = 0;
    for (char *q = c; *q; q++) lines += *q == '\n';
    free(c);
    CHECK_MSG(lines == 1 + 2 * N_USERS, "%d lines", lines);
    /* a rank's leftover temporary file would show: only rank 0 writes */
    CHECK(sh(out, sizeof out, "ls %s | grep -c tmp", run) == 1);
}

/* ---- caption: a random BLIP-2 with GPT-2's vocabulary, a few posters ---- */

TEST(caption_two_ranks_equal_one) {
    const char *why, *mpi = mpirun_prefix(&why);
    if (!mpi) SKIP("%s", why);
    const char *vocab = test_shared_path("reference/tokenizer/ggml-vocab-gpt-2.gguf");
    const char *posters = test_shared_path("data/ml100k-posters/jpg");
    if (!vocab || !posters) SKIP("the GPT-2 vocabulary or the posters are not in ../shared");
    char model[1024], imgs[1024], ds1[1024], ds2[1024], p[2048], q[2048];
    snprintf(model, sizeof model, "%s", test_tmp_path("blip2"));
    snprintf(imgs, sizeof imgs, "%s", test_tmp_path("imgs"));
    CHECK(sh(NULL, 0, "%s model random --arch blip2 --out %s --vocab %s --init-std 0.3 --seed 2 >/dev/null 2>&1", bin(),
             model, vocab) == 0);
    /* 7 posters, a broken file and an item without an image: with --batch 2 and 2 ranks
     * the rounds have 4 images, the last one a part of a batch */
    mkdir(imgs, 0755);
    const char *sids[9] = {"1", "2", "broken", "3", "10", "nothing", "21", "34", "5"};
    for (int i = 0; i < 9; i++) {
        if (!strcmp(sids[i], "nothing")) continue;
        snprintf(p, sizeof p, "%s/%s.jpg", imgs, sids[i]);
        if (!strcmp(sids[i], "broken")) {
            test_write_file(p, "\xff\xd8\xff\xe0 not really a jpeg", 22);
            continue;
        }
        char src[2048], *d;
        size_t n;
        mr_error e;
        snprintf(src, sizeof src, "%s/%s.jpg", posters, sids[i]);
        CHECK_OK(mr_read_file(src, &d, &n, &e), &e);
        test_write_file(p, d, n);
        free(d);
    }
    snprintf(ds1, sizeof ds1, "%s", test_tmp_path("cap1"));
    snprintf(ds2, sizeof ds2, "%s", test_tmp_path("cap2"));
    test_write_poster_dataset(ds1, sids, 9);
    test_write_poster_dataset(ds2, sids, 9);
    static char out1[4096], out2[1 << 16];
    int rc = sh(out1, sizeof out1,
                "%s caption --dataset %s --images %s --model %s --max-new-tokens 6 --batch 2 --threads 1 2>/dev/null",
                bin(), ds1, imgs, model);
    CHECK_MSG(rc == 0, "one process: exit %d", rc);
    CHECK_MSG(strstr(out1, "9 items: 7 captioned now, 0 from captions.tsv, 1 missing images, 1 failed"), "%s", out1);
    rc = sh(out2, sizeof out2,
            "%s -np 2 %s caption --dataset %s --images %s --model %s --max-new-tokens 6 --batch 2 --threads 1 2>&1", mpi,
            bin(), ds2, imgs, model);
    CHECK_MSG(rc == 0, "2 ranks: exit %d: %s", rc, out2);
    CHECK_MSG(strstr(out2, "9 items: 7 captioned now, 0 from captions.tsv, 1 missing images, 1 failed"), "%s", out2);
    const char *files[2] = {"captions.tsv", "items.tsv"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", ds1, files[i]);
        snprintf(q, sizeof q, "%s/%s", ds2, files[i]);
        CHECK_MSG(same_file(p, q), "%s of 2 ranks differs from 1 process's", files[i]);
    }
    /* a rerun on 2 ranks finds every row in captions.tsv and changes nothing */
    rc = sh(out2, sizeof out2, "%s -np 2 %s caption --dataset %s --images %s --model %s --max-new-tokens 6 2>/dev/null",
            mpi, bin(), ds2, imgs, model);
    CHECK_MSG(rc == 0 && strstr(out2, "0 captioned now, 8 from captions.tsv, 1 missing"), "exit %d: %s", rc, out2);
    snprintf(p, sizeof p, "%s/captions.tsv", ds1);
    snprintf(q, sizeof q, "%s/captions.tsv", ds2);
    CHECK(same_file(p, q));
    /* the single-image form stays a one-process command */
    rc = sh(out2, sizeof out2, "%s -np 2 %s caption --model %s --image %s/1.jpg 2>&1", mpi, bin(), model, imgs);
    CHECK_MSG(rc == 2, "exit %d: %s", rc, out2);
}

/* Under ASan, the ranks' leak check must tell Open MPI's leftovers from ours: full
 * stack unwinding (libmpi has no frame pointers) so that every such stack shows an
 * Open MPI library, components kept loaded so that theirs are named, and the
 * suppressions in tests/lsan-mpi.supp, which name only those libraries. */
static void sanitizer_env(void) {
    if (!test_under_sanitizer()) return;
    static char asan[1024], lsan[2048], cwd[1024];
    const char *a = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof asan, "%s%sfast_unwind_on_malloc=0", a && *a ? a : "", a && *a ? ":" : "");
    setenv("ASAN_OPTIONS", asan, 1);
    if (!getcwd(cwd, sizeof cwd)) return;
    snprintf(lsan, sizeof lsan, "suppressions=%s/tests/lsan-mpi.supp", cwd);
    setenv("LSAN_OPTIONS", lsan, 1);
    setenv("OMPI_MCA_mca_base_component_disable_dlclose", "1", 1);
    setenv("PMIX_MCA_mca_base_component_disable_dlclose", "1", 1);
}

int main(void) {
    sanitizer_env();
    RUN(ranker_eval_two_ranks_equal_one);
    RUN(failing_rank_ends_the_job);
    RUN(ranker_train_two_ranks_equal_one);
    RUN(ranker_train_two_ranks_killed_and_resumed);
    RUN(ranker_train_two_ranks_sigint);
    RUN(ranker_eval_two_ranks_sigint);
    RUN(retriever_eval_and_candidates_two_ranks_equal_one);
    RUN(caption_two_ranks_equal_one);
    return test_summary();
}
