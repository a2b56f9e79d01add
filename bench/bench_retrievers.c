/* One training epoch of every registered retriever architecture (src/retriever/arch.h:
 * GRU4Rec, NARM, and whichever others are registered) on a prepared dataset, beside its
 * PyTorch reference timed in the same run at the same thread count.
 *
 *   build/bench/bench_retrievers [DATASET]     (default: MLLM4REC_BENCH_DATASET, else
 *                                               build/bench/ml-latest-small, prepared
 *                                               from ../shared/data/ml-latest-small)
 *
 * Ours: LlamaRec's windows (step = max length: 200 and batch 16 for MovieLens, 50 and
 * 64 otherwise), shuffled, each batch through the architecture's loss_backward,
 * gradient clipping to 5 and AdamW (lr 1e-3, eps 1e-9, weight decay 0.01 where the
 * layout says), hidden 64, 2 blocks, dropout 0.2: what `retriever train --arch` does
 * per epoch, without validation. (Until `retriever train --arch` exists the bench
 * drives the architecture directly.)
 * Peers, each one epoch with torch.set_num_threads(threads), no validation:
 *   gru4rec, narm          scripts/baselines_rnn_torch.py time
 *   sasrec, bert4rec, stosa scripts/baselines_attn_torch.py time (when present)
 *   lru                    scripts/lru_torch.py needs the authors' checkout: not timed here
 * MLLM4REC_PYTHON names the interpreter (default /usr/bin/python3 when present, since
 * Debian's python3-torch lives there); MLLM4REC_BENCH_THREADS the threads (2);
 * MLLM4REC_BENCH_ARCHS a comma-separated subset; MLLM4REC_BENCH_NO_PEER=1 skips the peers;
 * MLLM4REC_BENCH_BATCHES=N times only the first N batches of the epoch on both sides
 * (a quick ratio; the figure the issue asks for is the whole epoch, the default).
 * Runs itself again with OMP_WAIT_POLICY=passive unless the variable is set.
 * Prints one JSON line, then a table: seconds per epoch, ours and the peer's, and the
 * ratio peer / ours. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mllm4rec/dataset.h"
#include "nn/adamw.h"
#include "mllm4rec/retriever.h"
#include "retriever/arch.h"

static const char *const arch_names[] = {"lru", "sasrec", "bert4rec", "gru4rec", "narm", "stosa"};
enum { N_ARCH = sizeof arch_names / sizeof arch_names[0] };

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct window {
    int user, start, len;
} window;

/* LlamaRec's training windows over each user's training items (all but the last two). */
static window *make_windows(const mr_dataset *d, int L, int *n_out) {
    int n = 0;
    for (int64_t u = 1; u <= d->n_users; u++) {
        int len = d->seq_len[u] - 2;
        if (len >= 1) n += len < 2 * L ? 1 : (len - L) / L + 1;
    }
    window *w = malloc(sizeof *w * (size_t)(n ? n : 1));
    int k = 0;
    for (int64_t u = 1; u <= d->n_users; u++) {
        int len = d->seq_len[u] - 2;
        if (len < 1) continue;
        if (len < 2 * L)
            w[k++] = (window){(int)u, 0, len};
        else
            for (int s = len - L; s >= 0; s -= L) w[k++] = (window){(int)u, s, L};
    }
    *n_out = n;
    return w;
}

static int want(const char *name) {
    const char *list = getenv("MLLM4REC_BENCH_ARCHS");
    if (!list || !*list) return 1;
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

/* Seconds of one epoch of ours; -1 on error. */
static double our_epoch(const char *arch, const mr_dataset *d, int L, int B, int limit, int *n_batches, double *cpu_s) {
    mr_error e = {0};
    /* the architecture's defaults, as retriever train would use them */
    rt_train_options o;
    if (rt_train_defaults(&o, d, arch, &e)) {
        fprintf(stderr, "%s: %s\n", arch, e.msg);
        return -1;
    }
    rt_config c = o.model;
    c.n_items = (int)d->n_items;
    c.max_len = L;
    rt_model m;
    if (rt_model_create(&m, &c, &e) || rt_model_alloc_grads(&m, &e)) {
        fprintf(stderr, "%s: %s\n", arch, e.msg);
        return -1;
    }
    m.arch->init(&m, 1);
    void *acts = NULL;
    if (m.arch->acts_create(&acts, &m, B * L, B, &e)) {
        fprintf(stderr, "%s: %s\n", arch, e.msg);
        rt_model_free(&m);
        return -1;
    }
    int nw;
    window *w = make_windows(d, L, &nw);
    int *perm = malloc(sizeof(int) * (size_t)(nw ? nw : 1));
    mr_rng r;
    mr_rng_seed(&r, 1);
    for (int i = 0; i < nw; i++) perm[i] = i;
    for (int i = nw - 1; i > 0; i--) {
        int j = (int)mr_rng_below(&r, (uint64_t)i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    float *am = calloc(m.n_params, sizeof(float)), *av = calloc(m.n_params, sizeof(float));
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)B * L), *lab = malloc(sizeof(int32_t) * (size_t)B * L);
    int *seq_start = malloc(sizeof(int) * (size_t)(B + 1));
    int64_t *example = malloc(sizeof(int64_t) * (size_t)B);
    adamw_config ac = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-9f, .weight_decay = 0.01f};
    double t0 = mr_now(), c0 = cpu_now();
    long step = 0;
    for (int b0 = 0; b0 < nw && (!limit || step < limit); b0 += B) {
        int ns = 0, nr = 0;
        seq_start[0] = 0;
        for (int k = b0; k < nw && k < b0 + B; k++) {
            const window *x = &w[perm[k]];
            const int32_t *items = d->seqs[x->user] + x->start;
            int rr = x->len < L ? x->len : L;
            for (int j = 0; j < rr; j++) {
                int at = x->len - rr + j;
                lab[nr] = items[at];
                tok[nr++] = at > 0 ? items[at - 1] : 0;
            }
            example[ns] = perm[k];
            seq_start[++ns] = nr;
        }
        rt_batch b = {.n_seqs = ns, .n_rows = nr, .seq_start = seq_start, .tokens = tok, .labels = lab, .example = example};
        m.arch->loss_backward(&m, acts, &b, 1, (uint64_t)step);
        clip_grad_norm(m.grads, m.n_params, 5.0);
        step++;
        for (int ti = 0; ti < m.n_tensors; ti++) {
            const rt_tensor *t = &m.tensors[ti];
            adamw_update(m.params + t->offset, m.grads + t->offset, am + t->offset, av + t->offset, t->numel, &ac,
                         t->decay ? 0.01f : 0.0f, step);
        }
    }
    double dt = mr_now() - t0;
    *cpu_s = cpu_now() - c0;
    *n_batches = (int)step;
    free(w);
    free(perm);
    free(am);
    free(av);
    free(tok);
    free(lab);
    free(seq_start);
    free(example);
    m.arch->acts_free(acts);
    rt_model_free(&m);
    return dt;
}

/* Seconds of the PyTorch reference's epoch (its JSON "seconds"); -1 when there is none. */
static double peer_epoch(const char *arch, const char *dataset, int threads, int limit, double *cpu_s, char *why,
                         size_t whysz) {
    const char *script = !strcmp(arch, "gru4rec") || !strcmp(arch, "narm") ? "scripts/baselines_rnn_torch.py"
                         : !strcmp(arch, "lru")                             ? NULL
                                                                            : "scripts/baselines_attn_torch.py";
    if (!script) {
        snprintf(why, whysz, "scripts/lru_torch.py needs the authors' checkout");
        return -1;
    }
    struct stat st;
    if (stat(script, &st)) {
        snprintf(why, whysz, "%s absent", script);
        return -1;
    }
    const char *py = getenv("MLLM4REC_PYTHON");
    if (!py) py = stat("/usr/bin/python3", &st) ? "python3" : "/usr/bin/python3";
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s time --dataset '%s' --arch %s --threads %d --max-batches %d", py, script, dataset,
             arch, threads, limit);
    FILE *p = popen(cmd, "r");
    if (!p) {
        snprintf(why, whysz, "cannot run %s", py);
        return -1;
    }
    char line[4096];
    double s = -1;
    while (fgets(line, sizeof line, p)) {
        const char *k = strstr(line, "\"seconds\":"), *c = strstr(line, "\"cpu_seconds\":");
        if (k) s = atof(k + 10);
        if (c) *cpu_s = atof(c + 14);
    }
    int rc = pclose(p);
    if (rc != 0 || s < 0) {
        snprintf(why, whysz, "%s failed (status %d)", script, rc);
        return -1;
    }
    return s;
}

int main(int argc, char **argv) {
    /* passive waiting, as bench_llm and `retriever train` run (docs/retriever.md "Speed"):
     * with libgomp's default spin-wait a busy machine slowed NARM's epoch here about 10x;
     * the PyTorch peers inherit the same policy */
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
    }
    int threads = 2;
    const char *env = getenv("MLLM4REC_BENCH_THREADS");
    if (env) threads = atoi(env);
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    const char *dir = argc > 1 ? argv[1] : getenv("MLLM4REC_BENCH_DATASET");
    if (!dir) {
        dir = "build/bench/ml-latest-small";
        struct stat st;
        if (stat(dir, &st) && !stat("../shared/data/ml-latest-small", &st)) {
            const char *bin = getenv("MLLM4REC_BIN") ? getenv("MLLM4REC_BIN") : "build/mllm4rec";
            char cmd[1024];
            snprintf(cmd, sizeof cmd,
                     "%s prepare --format movielens --input ../shared/data/ml-latest-small --out %s >/dev/null 2>&1", bin,
                     dir);
            if (system(cmd)) fprintf(stderr, "could not prepare %s\n", dir);
        }
    }
    mr_error e = {0};
    mr_dataset d;
    if (mr_dataset_load(&d, dir, &e)) {
        printf("skip bench_retrievers: no dataset (%s); give a prepared folder as argument\n", e.msg);
        return 0;
    }
    const int movielens = d.format && !strcmp(d.format, "movielens");
    const int L = movielens ? 200 : 50, B = movielens ? 16 : 64;
    const int no_peer = getenv("MLLM4REC_BENCH_NO_PEER") && atoi(getenv("MLLM4REC_BENCH_NO_PEER"));
    const int limit = getenv("MLLM4REC_BENCH_BATCHES") ? atoi(getenv("MLLM4REC_BENCH_BATCHES")) : 0;
    double ours[N_ARCH], peer[N_ARCH], cpu[N_ARCH], peer_cpu[N_ARCH];
    int batches[N_ARCH], have[N_ARCH];
    char why[N_ARCH][160];
    for (int i = 0; i < N_ARCH; i++) {
        have[i] = rt_arch_find(arch_names[i]) && want(arch_names[i]);
        ours[i] = peer[i] = cpu[i] = peer_cpu[i] = -1;
        batches[i] = 0;
        snprintf(why[i], sizeof why[i], "not registered");
        if (!have[i]) continue;
        ours[i] = our_epoch(arch_names[i], &d, L, B, limit, &batches[i], &cpu[i]);
        fprintf(stderr, "%s: ours %.2f s (%d batches)\n", arch_names[i], ours[i], batches[i]);
        if (no_peer)
            snprintf(why[i], sizeof why[i], "MLLM4REC_BENCH_NO_PEER");
        else
            peer[i] = peer_epoch(arch_names[i], dir, threads, limit, &peer_cpu[i], why[i], sizeof why[i]);
        if (peer[i] >= 0) fprintf(stderr, "%s: PyTorch %.2f s\n", arch_names[i], peer[i]);
    }
    FILE *la = fopen("/proc/loadavg", "r");
    double load = -1;
    if (la) {
        if (fscanf(la, "%lf", &load) != 1) load = -1;
        fclose(la);
    }
    printf("{\"bench\":\"retrievers\",\"dataset\":\"%s\",\"threads\":%d,\"max_len\":%d,\"batch\":%d,\"batch_limit\":%d,"
           "\"loadavg\":%.2f",
           d.name ? d.name : "", threads, L, B, limit, load);
    for (int i = 0; i < N_ARCH; i++) {
        if (!have[i]) continue;
        printf(",\"%s\":{\"epoch_s\":%.3f,\"cpu_s\":%.3f,\"batches\":%d", arch_names[i], ours[i], cpu[i], batches[i]);
        if (peer[i] >= 0)
            printf(",\"torch_epoch_s\":%.3f,\"torch_cpu_s\":%.3f,\"speedup\":%.2f,\"cpu_ratio\":%.2f", peer[i],
                   peer_cpu[i], peer[i] / ours[i], peer_cpu[i] / cpu[i]);
        printf("}");
    }
    printf("}\n\n%-10s %8s %14s %14s %8s %12s %12s %8s\n", "arch", "batches", "ours, s/epoch", "torch, s/epoch",
           "ratio", "ours, CPU s", "torch, CPU s", "ratio");
    for (int i = 0; i < N_ARCH; i++) {
        if (!have[i]) continue;
        if (peer[i] >= 0)
            printf("%-10s %8d %14.2f %14.2f %7.1fx %12.2f %12.2f %7.1fx\n", arch_names[i], batches[i], ours[i], peer[i],
                   peer[i] / ours[i], cpu[i], peer_cpu[i], peer_cpu[i] / cpu[i]);
        else
            printf("%-10s %8d %14.2f %14s  (%s)\n", arch_names[i], batches[i], ours[i], "-", why[i]);
    }
    printf("(%d threads, load average %.2f at the end: on a busy machine the ratio is the figure to read)\n", threads,
           load);
    mr_dataset_free(&d);
    return 0;
}
