/* LRURec speed on ml-latest-small shapes (3650 items, hidden 64, 2 blocks, length 200,
 * batch 16): training sequences per second on full-length windows, evaluation users
 * per second (610 users, scores at the last position only), and the FLOP/s those
 * imply. With a prepared dataset folder as argument (or MLLM4REC_BENCH_DATASET) it
 * also times one real training epoch and one validation pass.
 * Peer (the authors' PyTorch code with OpenBLAS, quiet 2-core machine, from the
 * issue): 22 s per ml-latest-small epoch (46 iterations of 16 x 200), 5 s per
 * 610-user validation. */
#include <cblas.h>
#include <jansson.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "mllm4rec/retriever.h"
#include "nn/adamw.h"

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define PEER_EPOCH_S 22.0
#define PEER_VAL_S 5.0

/* FLOPs of the big products for N rows: per block 48 N D^2 (in_proj 8, out_proj 8,
 * feed-forward 32), scores 2 N D V; training = forward + backward = 3x forward. */
static double forward_flops(double N, double D, double V, double blocks, double score_rows) {
    return blocks * 48.0 * N * D * D + 2.0 * score_rows * D * V;
}

int main(int argc, char **argv) {
    int threads = 2;
    const char *env = getenv("MLLM4REC_BENCH_THREADS");
    if (env) threads = atoi(env);
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    const int V1 = 3650, D = 64, BLK = 2, L = 200, B = 16, USERS = 610;
    mr_error e = {0};
    lru_config c = {.n_items = V1, .hidden = D, .blocks = BLK, .max_len = L, .dropout = 0.2f};
    lru_model m;
    if (lru_model_create(&m, &c, &e) || lru_model_alloc_grads(&m, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    lru_model_init(&m, 1);
    float *am = calloc(m.n_params, sizeof(float)), *av = calloc(m.n_params, sizeof(float));
    lru_acts *a;
    if (lru_acts_create(&a, &m, B * L, B, B * L, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    int32_t *tok = malloc(sizeof(int32_t) * B * L), *lab = malloc(sizeof(int32_t) * B * L);
    int seq_start[B + 1];
    mr_rng r;
    mr_rng_seed(&r, 5);
    for (int s = 0; s <= B; s++) seq_start[s] = s * L;
    adamw_config ac = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-9f, .weight_decay = 0.01f};
    /* training: full-length windows */
    int iters = 12;
    double t_train = 0, best_it = 1e30, cpu_train = 0;
    for (int it = 0; it < iters + 2; it++) {
        for (int i = 0; i < B * L; i++) {
            tok[i] = 1 + (int)mr_rng_below(&r, V1);
            lab[i] = 1 + (int)mr_rng_below(&r, V1);
        }
        lru_batch b = {.n_seqs = B, .n_rows = B * L, .seq_start = seq_start, .tokens = tok, .labels = lab};
        double t0 = mr_now(), c0 = cpu_now();
        lru_loss_backward(&m, a, &b, 1, (uint64_t)it, NULL);
        clip_grad_norm(m.grads, m.n_params, 5.0);
        for (int ti = 0; ti < m.n_tensors; ti++) {
            const lru_tensor_info *t = &m.tensors[ti];
            adamw_update(m.params + t->offset, m.grads + t->offset, am + t->offset, av + t->offset, t->numel, &ac,
                         t->decay ? 0.01f : 0.0f, it + 1);
        }
        double dt = mr_now() - t0;
        if (it >= 2) { /* two warm-up iterations */
            t_train += dt;
            cpu_train += cpu_now() - c0;
            if (dt < best_it) best_it = dt;
        }
    }
    double it_s = t_train / iters;
    double train_flops = 3.0 * forward_flops(B * L, D, V1 + 1, BLK, B * L);
    /* evaluation: 610 users of length 200, last-position scores */
    lru_acts *ea;
    int chunk = 128;
    lru_acts_create(&ea, &m, chunk * L, chunk, 0, &e);
    float *scores = malloc(sizeof(float) * (size_t)chunk * (V1 + 1));
    int32_t *etok = malloc(sizeof(int32_t) * chunk * L);
    int *est = malloc(sizeof(int) * (chunk + 1));
    for (int i = 0; i < chunk * L; i++) etok[i] = 1 + (int)mr_rng_below(&r, V1);
    for (int s = 0; s <= chunk; s++) est[s] = s * L;
    double t0 = mr_now(), c0 = cpu_now();
    int reps = 3;
    for (int rep = 0; rep < reps; rep++)
        for (int done = 0; done < USERS; done += chunk) {
            int ns = USERS - done < chunk ? USERS - done : chunk;
            lru_batch b = {.n_seqs = ns, .n_rows = ns * L, .seq_start = est, .tokens = etok, .labels = NULL};
            lru_scores_last(&m, ea, &b, scores);
        }
    double val_s = (mr_now() - t0) / reps, val_cpu = (cpu_now() - c0) / reps;
    /* evaluation work: blocks before the last on every row, the last block's in_proj
     * on every row and its position-wise rest (40 D^2) and the scores on the last row only */
    double eval_flops =
        USERS * ((BLK - 1) * 48.0 * L * D * D + 8.0 * L * D * D + 40.0 * D * D + 2.0 * D * (V1 + 1));
    double epoch_s = 46 * it_s;
    printf("{\"bench\":\"retriever\",\"threads\":%d,\"train_seq_per_s\":%.1f,\"train_iter_s\":%.4f,"
           "\"train_gflops\":%.1f,\"epoch_46x16x200_s\":%.2f,\"peer_epoch_s\":%.0f,\"train_speedup\":%.1f,"
           "\"train_best_iter_s\":%.4f,\"train_cpu_s_per_iter\":%.4f,\"val_cpu_s\":%.3f,"
           "\"eval_users_per_s\":%.0f,\"val_610_s\":%.3f,\"eval_gflops\":%.1f,\"peer_val_s\":%.0f,\"eval_speedup\":%.1f",
           threads, B / it_s, it_s, train_flops / it_s / 1e9, epoch_s, PEER_EPOCH_S, PEER_EPOCH_S / epoch_s,
           best_it, cpu_train / iters, val_cpu,
           USERS / val_s, val_s, eval_flops / val_s / 1e9, PEER_VAL_S, PEER_VAL_S / val_s);
    const char *ds = argc > 1 ? argv[1] : getenv("MLLM4REC_BENCH_DATASET");
    double real_epoch = -1, real_val = -1, real_train = -1;
    if (ds) {
        mr_dataset d;
        if (mr_dataset_load(&d, ds, &e)) {
            fprintf(stderr, "%s\n", e.msg);
        } else {
            char dir[] = "/tmp/mllm4rec-bench-XXXXXX";
            if (mkdtemp(dir)) {
                rt_train_options o;
                rt_train_defaults(&o, &d, "lru", &e);
                o.max_epochs = 1;
                o.threads = threads;
                int interrupted;
                mr_log_quiet = 1;
                double t1 = mr_now();
                rt_model mm;
                /* one epoch including its validation and the final evaluation + export */
                if (rt_train(&d, &o, dir, &interrupted, &e)) fprintf(stderr, "%s\n", e.msg);
                real_epoch = mr_now() - t1;
                char path[512];
                /* the first validation line holds the training seconds of the epoch alone */
                snprintf(path, sizeof path, "%s/train.jsonl", dir);
                FILE *lf = fopen(path, "r");
                char line[4096];
                if (lf && fgets(line, sizeof line, lf)) {
                    json_t *j = json_loads(line, 0, NULL);
                    real_train = json_number_value(json_object_get(j, "seconds"));
                    json_decref(j);
                }
                if (lf) fclose(lf);
                snprintf(path, sizeof path, "%s/retriever.safetensors", dir);
                if (!rt_model_load(&mm, path, &e)) {
                    mr_metrics mv;
                    t1 = mr_now();
                    rt_evaluate(&mm, &d, 0, &mv, &e);
                    real_val = mr_now() - t1;
                    mr_metrics_free(&mv);
                    rt_model_free(&mm);
                }
                char cmd[600];
                snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
                if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
            }
            mr_dataset_free(&d);
        }
        printf(",\"real_train_epoch_s\":%.2f,\"real_train_speedup\":%.1f,\"real_val_s\":%.3f,\"real_val_speedup\":%.1f,"
               "\"real_epoch_with_eval_and_export_s\":%.2f",
               real_train, PEER_EPOCH_S / real_train, real_val, PEER_VAL_S / real_val, real_epoch);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf(",\"peak_rss_mb\":%.0f}\n", ru.ru_maxrss / 1024.0);
    printf("\n%-40s %10s %10s %8s\n", "LRURec, ml-latest-small shapes", "ours", "authors", "ratio");
    printf("%-40s %10.2f %10.0f %7.1fx\n", "train epoch (46 x 16 x 200), s", epoch_s, PEER_EPOCH_S,
           PEER_EPOCH_S / epoch_s);
    printf("%-40s %10.3f %10.0f %7.1fx\n", "validation (610 users, length 200), s", val_s, PEER_VAL_S,
           PEER_VAL_S / val_s);
    printf("%-40s %10.2f\n", "best single iteration (16 x 200), s", best_it);
    printf("%-40s %10.2f\n", "CPU seconds per iteration (all threads)", cpu_train / iters);
    printf("%-40s %10.1f\n", "train sequences / s", B / it_s);
    printf("%-40s %10.0f\n", "eval users / s", USERS / val_s);
    printf("%-40s %10.1f\n", "train GFLOP/s (big products)", train_flops / it_s / 1e9);
    printf("%-40s %10.1f\n", "eval GFLOP/s", eval_flops / val_s / 1e9);
    if (ds) {
        printf("%-40s %10.2f %10.0f %7.1fx\n", "real epoch (725 windows, packed), s", real_train, PEER_EPOCH_S,
               PEER_EPOCH_S / real_train);
        printf("%-40s %10.3f %10.0f %7.1fx\n", "real validation (610 users), s", real_val, PEER_VAL_S,
               PEER_VAL_S / real_val);
        printf("%-40s %10.2f\n", "real epoch + val + test + export, s", real_epoch);
    }
    printf("%-40s %10.0f\n", "peak RSS, MB", ru.ru_maxrss / 1024.0);
    free(am);
    free(av);
    free(tok);
    free(lab);
    free(scores);
    free(etok);
    free(est);
    lru_acts_free(a);
    lru_acts_free(ea);
    lru_model_free(&m);
    return 0;
}
