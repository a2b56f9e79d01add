/* The experiment runner: every stage of every run as a child process of the
 * mllm4rec binary, in its own process group and killed with the runner
 * (PR_SET_PDEATHSIG), so a SIGKILL of `experiment run` leaves nothing running.
 * Signals are the caller's (the CLI's): it passes its interrupt flag, which the
 * runner polls while a child runs; once it is set, the child's process group gets
 * SIGTERM (trainers checkpoint and stop) and no further stage starts.
 *
 * Bookkeeping lives beside each stage's folder, never inside it (prepare --force
 * replaces its folder; training commands own theirs): STAGE.log (the child's
 * stdout and stderr, appended) and STAGE.done (the command that finished,
 * written last). A stage with a .done holding the same command is skipped; a
 * .done with another command is an error (the config changed under the same
 * folder); a folder without .done is continued (--resume for training, --force
 * for prepare, a fresh evaluation). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mllm4rec/dataset.h"
#include "mllm4rec/exp.h"
#include "mllm4rec/retriever.h"
#include "mllm4rec/yaml.h"

typedef struct argvec {
    int n, cap;
    char **v;
} argvec;

static int av_add(argvec *a, const char *s, mr_error *e) {
    if (a->n + 2 > a->cap) {
        int cap = a->cap ? a->cap * 2 : 32;
        char **v = mr_realloc(a->v, (size_t)cap * sizeof *v, e);
        if (!v) return MR_ERR_INTERNAL;
        a->v = v;
        a->cap = cap;
    }
    if (!(a->v[a->n] = mr_strdup(s, e))) return MR_ERR_INTERNAL;
    a->v[++a->n] = NULL;
    return MR_OK;
}

static void av_free(argvec *a) {
    for (int i = 0; i < a->n; i++) free(a->v[i]);
    free(a->v);
    memset(a, 0, sizeof *a);
}

/* The command as one line (arguments with spaces quoted); also the .done content. */
static char *av_line(const argvec *a, int from, mr_error *e) {
    size_t n = 2;
    for (int i = from; i < a->n; i++) n += strlen(a->v[i]) * 2 + 3;
    char *s = mr_alloc(n, e);
    if (!s) return NULL;
    char *p = s;
    for (int i = from; i < a->n; i++) {
        const char *v = a->v[i];
        int q = !*v || strpbrk(v, " \t\n'\"\\$`*?;&|<>()") != NULL;
        if (i > from) *p++ = ' ';
        if (q) *p++ = '\'';
        for (; *v; v++) {
            if (*v == '\'' && q) {
                memcpy(p, "'\\''", 4);
                p += 4;
            } else {
                *p++ = *v;
            }
        }
        if (q) *p++ = '\'';
    }
    *p = 0;
    return s;
}

static int stopped(volatile sig_atomic_t *stop) { return stop && *stop; }

static int interrupted(volatile sig_atomic_t *stop, mr_error *e) {
    return mr_fail(e, MR_ERR_INPUT, "interrupted (signal %d); run the experiment again to continue", (int)*stop);
}

/* Last non-empty line of a log, for the error message. */
static void log_tail(const char *path, char *buf, size_t sz) {
    buf[0] = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (n) {
            size_t m = n < sz - 1 ? n : sz - 1;
            memcpy(buf, line, m);
            buf[m] = 0;
        }
    }
    fclose(f);
}

/* Runs argv (argv[0] = the binary) with stdout and stderr appended to log_path.
 * Polls *stop (may be NULL) while the child runs: once it is set, the child's
 * process group gets SIGTERM and the child is waited for. */
static int run_child(const argvec *a, const char *log_path, volatile sig_atomic_t *stop, mr_error *e) {
    if (stopped(stop)) return interrupted(stop, e);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return mr_fail(e, MR_ERR_INPUT, "%s: cannot open for writing: %s", log_path, strerror(errno));
    char *line = av_line(a, 0, e);
    if (line) {
        dprintf(fd, "$ %s\n", line);
        free(line);
    }
    fflush(NULL);
    const pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        return mr_fail(e, MR_ERR_INTERNAL, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(137); /* the runner died before prctl */
        /* the caller's signal handlers are reset to the default by execv */
        if (dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(127);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        execv(a->v[0], a->v);
        dprintf(2, "exec %s: %s\n", a->v[0], strerror(errno));
        _exit(127);
    }
    close(fd);
    setpgid(pid, pid); /* also here, so the group exists before we signal it */
    int status = 0, termed = 0;
    pid_t w;
    for (;;) {
        w = waitpid(pid, &status, WNOHANG);
        if (w == pid || (w < 0 && errno != EINTR)) break;
        if (!termed && stopped(stop)) {
            kill(-pid, SIGTERM); /* the whole group: a child's own children too */
            termed = 1;
        }
        /* 20 ms between looks; a signal to this process cuts the sleep short */
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (w < 0) return mr_fail(e, MR_ERR_INTERNAL, "waitpid: %s", strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return MR_OK; /* finished: its .done is written */
    if (stopped(stop)) return interrupted(stop, e);
    char tail[600];
    log_tail(log_path, tail, sizeof tail);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return mr_fail(e, code == 3 ? MR_ERR_INTERNAL : MR_ERR_INPUT, "%s %s exited with status %d (log %s): %s",
                   a->n > 1 ? a->v[1] : "", a->n > 2 ? a->v[2] : "", code, log_path, tail);
}

typedef struct runner {
    const exp_config *c;
    const char *out, *exe;
    int dry_run;
    FILE *plan;
    int max_k;
    volatile sig_atomic_t *stop; /* the caller's interrupt flag; may be NULL */
} runner;

static char *out_path(const runner *R, const char *rel, const char *suffix, mr_error *e) {
    size_t n = strlen(R->out) + strlen(rel) + strlen(suffix) + 2;
    char *s = mr_alloc(n, e);
    if (s) snprintf(s, n, "%s/%s%s", R->out, rel, suffix);
    return s;
}

/* 1 when STAGE.done holds exactly `line`; 0 when absent; an error when it differs. */
static int stage_done(const char *done_path, const char *line, const char *what, int *done, mr_error *e) {
    *done = 0;
    if (!mr_file_exists(done_path)) return MR_OK;
    char *text = NULL;
    size_t len = 0;
    int rc = mr_read_file(done_path, &text, &len, e);
    if (rc) return rc;
    while (len && text[len - 1] == '\n') text[--len] = 0;
    if (strcmp(text, line))
        rc = mr_fail(e, MR_ERR_INPUT, "%s was finished with other flags (%s; now: %s): use another --out, or remove it",
                     what, text, line);
    else *done = 1;
    free(text);
    return rc;
}

static int mark_done(const char *done_path, const char *line, mr_error *e) {
    size_t n = strlen(line);
    char *t = mr_alloc(n + 2, e);
    if (!t) return MR_ERR_INTERNAL;
    memcpy(t, line, n);
    t[n] = '\n';
    int rc = mr_write_file_atomic(done_path, t, n + 1, e);
    free(t);
    return rc;
}

static int add_flags(const runner *R, const exp_run *r, int s, argvec *a, mr_error *e) {
    const exp_config *c = R->c;
    for (const exp_flag_def *f = exp_stage_flags(s); f->name; f++) {
        const char *v = exp_flag_value(c, r, s, f->name);
        if (!v) continue;
        char flag[80];
        snprintf(flag, sizeof flag, "--%s", f->name);
        int rc;
        if (f->type == EXP_T_BOOL) {
            if (!strcmp(v, "true") && (rc = av_add(a, flag, e))) return rc;
        } else if ((rc = av_add(a, flag, e)) || (rc = av_add(a, v, e))) {
            return rc;
        }
    }
    return MR_OK;
}

static const char *dataset_of(const runner *R, const exp_run *r, char *buf, size_t sz) {
    const exp_config *c = R->c;
    if (c->stage[EXP_PREPARE].present) {
        snprintf(buf, sz, "%s/dataset", R->out);
        return buf;
    }
    for (int a = 0; a < c->n_axes; a++)
        if (c->axes[a].is_dataset) return c->axes[a].values[r->choice[a]];
    return c->dataset;
}

/* Runs one stage unless finished. `extra` (may be NULL) runs after the main
 * command within the same stage (retriever candidates beyond 20). */
static int run_stage(const runner *R, const exp_run *r, int s, const char *label, argvec *cmd, argvec *extra,
                     int resume_flag_ok, int *ran, mr_error *e) {
    int rc = MR_OK;
    *ran = 0;
    /* captions go into the dataset folder; their bookkeeping is caption.done / caption.log */
    char *dir = out_path(R, s == EXP_CAPTION ? "dataset" : r->stage_dir[s], "", e), *done = out_path(R, r->stage_dir[s], ".done", e),
         *log = out_path(R, r->stage_dir[s], ".log", e);
    char *line = av_line(cmd, 1, e), *xline = extra ? av_line(extra, 1, e) : NULL;
    char *ident = NULL;
    if (!dir || !done || !log || !line || (extra && !xline)) {
        rc = MR_ERR_INTERNAL;
        goto out;
    }
    if (xline) {
        size_t n = strlen(line) + strlen(xline) + 5;
        if (!(ident = mr_alloc(n, e))) {
            rc = MR_ERR_INTERNAL;
            goto out;
        }
        snprintf(ident, n, "%s && %s", line, xline);
    } else if (!(ident = mr_strdup(line, e))) {
        rc = MR_ERR_INTERNAL;
        goto out;
    }
    int finished;
    if ((rc = stage_done(done, ident, r->stage_dir[s], &finished, e))) goto out;
    /* the run folder (eval's) exists from the start: it holds config.yaml */
    int started = s != EXP_EVAL && mr_is_dir(dir);
    if (s == EXP_CAPTION) { /* the dataset folder exists; captions.tsv says whether captioning began */
        char *cache = out_path(R, "dataset", "/captions.tsv", e);
        started = cache && mr_file_exists(cache);
        free(cache);
    }
    if (finished) {
        if (R->dry_run) fprintf(R->plan, "# %s %s: finished, skipped\n", label, r->stage_dir[s]);
        goto out;
    }
    /* continuing: the command's own rules decide what is kept */
    if (s == EXP_CAPTION) { /* caption resumes after the rows of captions.tsv by itself */
    } else if (started && resume_flag_ok == 1 && (rc = av_add(cmd, "--resume", e))) goto out;
    if (started && resume_flag_ok == 2 && (rc = av_add(cmd, "--force", e))) goto out;
    if (R->dry_run) {
        char *l = av_line(cmd, 0, e);
        fprintf(R->plan, "%s\n", l ? l : "");
        free(l);
        if (extra) {
            l = av_line(extra, 0, e);
            fprintf(R->plan, "%s\n", l ? l : "");
            free(l);
        }
        goto out;
    }
    mr_log("%s: %s%s (log %s)", label, r->stage_dir[s], started ? " (continuing)" : "", log);
    char *parent = strdup(dir);
    if (!parent) {
        rc = mr_fail(e, MR_ERR_INTERNAL, "out of memory");
        goto out;
    }
    char *slash = strrchr(parent, '/');
    if (slash) *slash = 0;
    rc = mr_mkdir_p(parent, e);
    free(parent);
    if (rc) goto out;
    if ((rc = run_child(cmd, log, R->stop, e))) goto out;
    if (extra && (rc = run_child(extra, log, R->stop, e))) goto out;
    if (s == EXP_RETRIEVER || s == EXP_RANKER) {
        mr_error ce = {0};
        if (exp_write_curves(dir, &ce)) mr_log("warning: %s: no curves.svg: %s", dir, ce.msg);
    }
    rc = mark_done(done, ident, e);
    *ran = 1;
out:
    free(dir);
    free(done);
    free(log);
    free(line);
    free(xline);
    free(ident);
    return rc;
}

static int cmd_start(const runner *R, argvec *a, const char *w1, const char *w2, mr_error *e) {
    int rc = av_add(a, R->exe, e);
    if (!rc) rc = av_add(a, w1, e);
    if (!rc && w2) rc = av_add(a, w2, e);
    return rc;
}

/* config.yaml of a run: every stage's every flag, the defaults included. */
static int write_run_config(const runner *R, const exp_run *r, const char *dataset, mr_error *e) {
    const exp_config *c = R->c;
    char *path = out_path(R, r->dir, "/config.yaml", e);
    if (!path) return MR_ERR_INTERNAL;
    /* the retriever's defaults are those of its architecture (and max-len and batch
     * those of the dataset), as retriever train decides them */
    mr_dataset d;
    int have_d = 0;
    if (!R->dry_run || mr_is_dir(dataset)) {
        mr_error de = {0};
        have_d = !mr_dataset_load(&d, dataset, &de);
    }
    const char *arch = exp_flag_value(c, r, EXP_RETRIEVER, "arch");
    mr_atomic_file af;
    int rc = mr_atomic_open(&af, path, e);
    free(path);
    if (rc) {
        if (have_d) mr_dataset_free(&d);
        return rc;
    }
    FILE *f = af.f;
    fprintf(f, "# run %d of experiment %s: every flag of every stage, defaults included\n", r->index + 1, c->name);
    fprintf(f, "experiment: ");
    mr_yaml_write_scalar(f, c->name);
    fprintf(f, "\nrun: ");
    mr_yaml_write_scalar(f, r->dir);
    fprintf(f, "\nsettings:%s\n", c->n_axes ? "" : " {}");
    for (int a = 0; a < c->n_axes; a++) {
        fprintf(f, "  ");
        mr_yaml_write_scalar(f, c->axes[a].key);
        fprintf(f, ": ");
        mr_yaml_write_scalar(f, c->axes[a].values[r->choice[a]]);
        fprintf(f, "\n");
    }
    fprintf(f, "dataset: ");
    mr_yaml_write_scalar(f, dataset);
    fprintf(f, "\n");
    for (int s = 0; s < EXP_N_STAGES; s++) {
        if (!r->stage_dir[s]) continue;
        fprintf(f, "%s:\n  folder: ", EXP_STAGE_NAMES[s]);
        mr_yaml_write_scalar(f, s == EXP_CAPTION ? "dataset" : r->stage_dir[s]);
        fprintf(f, "\n");
        for (const exp_flag_def *fl = exp_stage_flags(s); fl->name; fl++) {
            const char *v = exp_flag_value(c, r, s, fl->name);
            const char *def = fl->def;
            char rt_def[64];
            if (s == EXP_RETRIEVER)
                def = exp_retriever_default(arch, have_d ? &d : NULL, fl->name, rt_def, sizeof rt_def) ? rt_def : NULL;
            if (!strcmp(fl->name, "captions")) { /* the template's own choice */
                const char *t = exp_flag_value(c, r, s, "template");
                def = t && !strcmp(t, "llamarec") ? "off" : "on";
            }
            if (!v && !def) continue; /* prepare's unused inputs; defaults of a dataset not made yet */
            fprintf(f, "  %s: ", fl->name);
            mr_yaml_write_scalar(f, v ? v : def);
            fprintf(f, "%s\n", v ? "" : "  # default");
        }
        if (s == EXP_RETRIEVER) fprintf(f, "  candidates: %d  # exported per user (the largest num-candidates, at least 20)\n", R->max_k);
    }
    if (have_d) mr_dataset_free(&d);
    return mr_atomic_commit(&af, e);
}

static int copy_file(const char *from, const char *to, mr_error *e) {
    char *data = NULL;
    size_t len = 0;
    int rc = mr_read_file(from, &data, &len, e);
    if (!rc) rc = mr_write_file_atomic(to, data, len, e);
    free(data);
    return rc;
}

/* runs/NN/retriever -> ../../retriever/LABEL, so a run folder leads to everything it used */
static void link_stage(const runner *R, const exp_run *r, int s) {
    char *link = out_path(R, r->dir, "/", NULL);
    if (!link) return;
    char lpath[4096], target[4096];
    snprintf(lpath, sizeof lpath, "%s%s", link, s == EXP_PREPARE ? "dataset" : EXP_STAGE_NAMES[s]);
    snprintf(target, sizeof target, "../../%s", r->stage_dir[s]);
    char cur[4096];
    ssize_t n = readlink(lpath, cur, sizeof cur - 1);
    if (n >= 0) {
        cur[n] = 0;
        if (!strcmp(cur, target)) {
            free(link);
            return;
        }
        unlink(lpath);
    }
    if (symlink(target, lpath)) mr_log("warning: cannot link %s: %s", lpath, strerror(errno));
    free(link);
}

static int run_one(const runner *R, const exp_run *r, int n_runs, mr_error *e) {
    const exp_config *c = R->c;
    char label[64], dsbuf[4096];
    snprintf(label, sizeof label, "[%d/%d]", r->index + 1, n_runs);
    const char *dataset = dataset_of(R, r, dsbuf, sizeof dsbuf);
    int rc = MR_OK, ran;
    char *rundir = out_path(R, r->dir, "", e);
    if (!rundir) return MR_ERR_INTERNAL;
    if (!R->dry_run && (rc = mr_mkdir_p(rundir, e))) goto out;
    if (!R->dry_run && (rc = write_run_config(R, r, dataset, e))) goto out;
    /* retriever */
    char *rdir = out_path(R, r->stage_dir[EXP_RETRIEVER], "", e);
    if (!rdir) {
        rc = MR_ERR_INTERNAL;
        goto out;
    }
    {
        argvec a = {0}, x = {0};
        rc = cmd_start(R, &a, "retriever", "train", e);
        if (!rc) rc = av_add(&a, "--dataset", e);
        if (!rc) rc = av_add(&a, dataset, e);
        if (!rc) rc = av_add(&a, "--out", e);
        if (!rc) rc = av_add(&a, rdir, e);
        if (!rc) rc = add_flags(R, r, EXP_RETRIEVER, &a, e);
        int with_extra = R->max_k > 20;
        if (!rc && with_extra) {
            char k[16];
            snprintf(k, sizeof k, "%d", R->max_k);
            const char *th = exp_flag_value(c, r, EXP_RETRIEVER, "threads");
            rc = cmd_start(R, &x, "retriever", "candidates", e);
            if (!rc) rc = av_add(&x, "--dataset", e);
            if (!rc) rc = av_add(&x, dataset, e);
            if (!rc) rc = av_add(&x, "--run", e);
            if (!rc) rc = av_add(&x, rdir, e);
            if (!rc) rc = av_add(&x, "-k", e);
            if (!rc) rc = av_add(&x, k, e);
            if (!rc && th) rc = av_add(&x, "--threads", e);
            if (!rc && th) rc = av_add(&x, th, e);
        }
        if (!rc) rc = run_stage(R, r, EXP_RETRIEVER, label, &a, with_extra ? &x : NULL, 1, &ran, e);
        av_free(&a);
        av_free(&x);
    }
    if (rc) goto out_r;
    if (!R->dry_run) link_stage(R, r, EXP_RETRIEVER);
    if (!c->stage[EXP_RANKER].present) {
        /* a retriever experiment: the run's metrics are the retriever's */
        if (!R->dry_run) {
            char *from = out_path(R, r->stage_dir[EXP_RETRIEVER], "/metrics.json", e),
                 *to = out_path(R, r->dir, "/metrics.json", e);
            rc = from && to ? copy_file(from, to, e) : MR_ERR_INTERNAL;
            free(from);
            free(to);
        }
        goto out_r;
    }
    char *cands = out_path(R, r->stage_dir[EXP_RETRIEVER], "/candidates.tsv", e),
         *kdir = out_path(R, r->stage_dir[EXP_RANKER], "", e),
         *adapter = out_path(R, r->stage_dir[EXP_RANKER], "/adapter.gguf", e);
    if (!cands || !kdir || !adapter) rc = MR_ERR_INTERNAL;
    if (!rc) {
        argvec a = {0};
        rc = cmd_start(R, &a, "ranker", "train", e);
        const char *fixed[] = {"--dataset", dataset, "--candidates", cands, "--out", kdir};
        for (int i = 0; i < 6 && !rc; i++) rc = av_add(&a, fixed[i], e);
        if (!rc) rc = add_flags(R, r, EXP_RANKER, &a, e);
        if (!rc) rc = run_stage(R, r, EXP_RANKER, label, &a, NULL, 1, &ran, e);
        av_free(&a);
    }
    if (!rc && !R->dry_run) link_stage(R, r, EXP_RANKER);
    if (!rc) {
        argvec a = {0};
        rc = cmd_start(R, &a, "ranker", "eval", e);
        const char *fixed[] = {"--dataset", dataset, "--candidates", cands, "--adapter", adapter, "--out", rundir};
        for (int i = 0; i < 8 && !rc; i++) rc = av_add(&a, fixed[i], e);
        if (!rc) rc = add_flags(R, r, EXP_EVAL, &a, e);
        if (!rc) rc = run_stage(R, r, EXP_EVAL, label, &a, NULL, 0, &ran, e);
        av_free(&a);
    }
    free(cands);
    free(kdir);
    free(adapter);
out_r:
    free(rdir);
out:
    free(rundir);
    return rc;
}

static int prepare_stage(const runner *R, const exp_run *r0, mr_error *e) {
    argvec a = {0};
    char *ds = out_path(R, "dataset", "", e);
    int rc = ds ? cmd_start(R, &a, "prepare", NULL, e) : MR_ERR_INTERNAL;
    if (!rc) rc = av_add(&a, "--out", e);
    if (!rc) rc = av_add(&a, ds, e);
    if (!rc) rc = add_flags(R, r0, EXP_PREPARE, &a, e);
    int ran;
    if (!rc) rc = run_stage(R, r0, EXP_PREPARE, "[prepare]", &a, NULL, 2, &ran, e);
    av_free(&a);
    if (!rc && R->c->stage[EXP_CAPTION].present) {
        rc = cmd_start(R, &a, "caption", NULL, e);
        if (!rc) rc = av_add(&a, "--dataset", e);
        if (!rc) rc = av_add(&a, ds, e);
        if (!rc) rc = add_flags(R, r0, EXP_CAPTION, &a, e);
        if (!rc) rc = run_stage(R, r0, EXP_CAPTION, "[caption]", &a, NULL, 0, &ran, e);
        av_free(&a);
    }
    free(ds);
    return rc;
}

int exp_run_all(const exp_config *c, const char *out_dir, const char *exe, int dry_run, FILE *plan,
                volatile sig_atomic_t *stop, mr_error *e) {
    exp_run *runs = NULL;
    int n = 0, rc;
    if ((rc = exp_expand(c, &runs, &n, e))) return rc;
    runner R = {.c = c, .out = out_dir, .exe = exe, .dry_run = dry_run, .plan = plan, .stop = stop};
    R.max_k = exp_max_candidates(c, runs, n);
    if (!dry_run) {
        if ((rc = mr_mkdir_p(out_dir, e))) goto done;
        /* the config as given, for `experiment report` */
        char *dst = out_path(&R, "experiment.yaml", "", e);
        rc = dst ? copy_file(c->path, dst, e) : MR_ERR_INTERNAL;
        free(dst);
        if (rc) goto done;
    }
    if (dry_run) fprintf(plan, "# experiment %s: %d runs in %s\n", c->name, n, out_dir);
    if (c->stage[EXP_PREPARE].present && (rc = prepare_stage(&R, &runs[0], e))) goto done;
    for (int i = 0; i < n && !rc; i++) {
        if (stopped(stop)) {
            rc = interrupted(stop, e);
            break;
        }
        if (dry_run) fprintf(plan, "# run %s\n", runs[i].dir);
        rc = run_one(&R, &runs[i], n, e);
        if (rc) mr_error_prefix(e, "run %s: ", runs[i].dir);
    }
    if (!rc && !dry_run) rc = exp_report(c, out_dir, e);
done:
    exp_runs_free(runs, n);
    return rc;
}
