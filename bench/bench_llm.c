/* Prompt processing speed (prefill, logits of the last position only) and
 * generation speed, side by side with llama.cpp when $LLAMA_BENCH names its
 * llama-bench: the same GGUF files, the same thread count, in the same run; the
 * table gives both figures and the ratio (ours / llama.cpp). Without $LLAMA_BENCH
 * it gives ours alone; no peer figure is written in this file.
 *
 *   SmolLM2-135M shape, F32, F16, Q8_0 and Q4_0, 512 and 1536 tokens
 *   Llama-2-7B shape, MLLM4REC_BENCH_7B_TYPES (default "q4_0"; e.g. "q4_0,q8_0,q4_k")
 *     at MLLM4REC_BENCH_7B_TOKENS (default "512"; e.g. "512,1536")
 *   with MLLM4REC_BENCH_7B_GEN=1: 128 tokens generated after a 512-token prompt
 *     with the first 7B type (llama-bench -p 0 -n 128 -d 512)
 * The random models are written once under build/bench/ (a 7B Q4_0 one is 3.8 GB).
 *
 * Our figure is the mean of the per-repetition tokens/s over MLLM4REC_BENCH_REPS
 * repetitions (default 2; 1 for 7B) after a warm-up, as llama-bench's avg_ts is
 * the mean over its -r repetitions (the same count is passed) after its warm-up.
 *
 * Environment: MLLM4REC_BENCH_THREADS (default 2), MLLM4REC_BENCH_SKIP_SMALL=1,
 * MLLM4REC_BENCH_SKIP_7B=1, the 7B variables above, LLAMA_BENCH.
 *
 * The machine is shared: besides wall-clock tokens/s the bench reports tokens per
 * CPU-second times the thread count ("cpu-based", ours only), an estimate of the
 * speed on otherwise idle cores, and the load average at the end. The OpenMP wait
 * policy is the one the CLI runs with (libgomp's default, spinning between parallel
 * regions, unless OMP_WAIT_POLICY is set), as llama.cpp's own threads spin: a
 * generation step is ~260 parallel regions, and waking sleeping threads for each
 * made 7B Q4_0 generation about 15% slower (3.61 against 4.24 tokens/s, quiet, when
 * this bench forced OMP_WAIT_POLICY=passive). Spinning threads count as CPU time, so
 * the cpu-based figure reads low unless OMP_WAIT_POLICY=passive is set. */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "llama_bench.h"
#include "mllm4rec/llm.h"

typedef struct result {
    char shape[32], type[16], what[32];
    double tok_s, cpu_tok_s, peer;
} result;

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int ensure_model(const char *shape, const char *type, char *path, size_t n) {
    snprintf(path, n, "build/bench/%s-%s.gguf", shape, type);
    if (mr_file_exists(path)) return 0;
    mr_error e = {0};
    if (mr_mkdir_p("build/bench", &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    llm_random_opts o;
    o.arch = LLM_ARCH_LLAMA;
    if (llm_random_shape(&o, shape, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    if (ggml_type_from_name(type, &o.type)) return fprintf(stderr, "unknown type %s\n", type), 1;
    double t0 = mr_now();
    fprintf(stderr, "writing %s ...\n", path);
    if (llm_random_write(&o, path, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    fprintf(stderr, "wrote %s in %.1f s\n", path, mr_now() - t0);
    return 0;
}

/* Prefill of T tokens (n_gen 0), or n_gen single-token steps after a T-token
 * prompt: the mean tokens/s (and cpu-based tokens/s) over reps after one warm-up
 * of 32 tokens. */
static int time_run(const char *path, int T, int n_gen, int reps, double *tok_s, double *cpu_tok_s, int threads,
                    mr_error *e) {
    llm_model m;
    if (llm_load(&m, path, e)) return 1;
    if (n_gen && llm_prepare_generation(&m, e)) { /* as `llm generate` does; llama-bench repacks at load too */
        llm_free(&m);
        return 1;
    }
    llm_state s;
    /* generation: an f16 cache, `llm generate`'s default and llama-bench's */
    if (llm_state_init(&s, &m, T + n_gen, T, n_gen ? LLM_STATE_KV_F16 : LLM_STATE_SCORE, e)) {
        llm_free(&m);
        return 1;
    }
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    float *logits = malloc((size_t)m.cfg.n_vocab * sizeof *logits);
    mr_rng rng;
    mr_rng_seed(&rng, 1);
    for (int t = 0; t < T; t++) ids[t] = (int32_t)mr_rng_below(&rng, (uint64_t)m.cfg.n_vocab);
    int64_t last = 31, zero = 0;
    int rc = llm_forward(&s, ids, 32, &last, 1, logits, e);
    *tok_s = *cpu_tok_s = 0;
    for (int r = 0; !rc && r < reps; r++) {
        llm_state_reset(&s);
        last = T - 1;
        if (n_gen) rc = llm_forward(&s, ids, T, &last, 1, logits, e);
        double t0 = mr_now(), c0 = cpu_seconds();
        if (!n_gen) {
            rc = llm_forward(&s, ids, T, &last, 1, logits, e);
        } else {
            for (int g = 0; !rc && g < n_gen; g++) {
                int32_t id = (int32_t)((ids[g % T] + g) % m.cfg.n_vocab);
                rc = llm_forward(&s, &id, 1, &zero, 1, logits, e);
            }
        }
        double dt = mr_now() - t0, dc = cpu_seconds() - c0;
        const int n = n_gen ? n_gen : T;
        *tok_s += n / dt / reps;
        *cpu_tok_s += n * threads / dc / reps;
    }
    free(ids);
    free(logits);
    llm_state_free(&s);
    llm_free(&m);
    return rc;
}

static int bench_one(result *res, int *nr, const char *shape, const char *type, int T, int n_gen, int reps,
                     int threads) {
    char path[256];
    mr_error e = {0};
    if (ensure_model(shape, type, path, sizeof path)) return 1;
    result *r = &res[(*nr)++];
    memset(r, 0, sizeof *r);
    snprintf(r->shape, sizeof r->shape, "%s", shape);
    snprintf(r->type, sizeof r->type, "%s", type);
    if (n_gen)
        snprintf(r->what, sizeof r->what, "tg%d after %d", n_gen, T);
    else
        snprintf(r->what, sizeof r->what, "pp%d", T);
    if (time_run(path, T, n_gen, reps, &r->tok_s, &r->cpu_tok_s, threads, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    r->peer = n_gen ? llama_bench_tps(path, 0, n_gen, T, threads, reps) : llama_bench_tps(path, T, 0, 0, threads, reps);
    fprintf(stderr, "%s %-5s %-14s ours %.2f tokens/s (cpu-based %.2f)", shape, type, r->what, r->tok_s, r->cpu_tok_s);
    if (r->peer > 0) fprintf(stderr, ", llama.cpp %.2f, ratio %.2f", r->peer, r->tok_s / r->peer);
    fprintf(stderr, "\n");
    return 0;
}

static int env_is(const char *name, const char *v) {
    const char *s = getenv(name);
    return s && !strcmp(s, v);
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    const char *th = getenv("MLLM4REC_BENCH_THREADS"), *rp = getenv("MLLM4REC_BENCH_REPS");
    const int threads = th ? atoi(th) : 2, reps = rp ? atoi(rp) : 2;
    mr_set_threads(threads);
    result res[64];
    int nr = 0;
    if (!env_is("MLLM4REC_BENCH_SKIP_SMALL", "1")) {
        const char *types[] = {"f32", "f16", "q8_0", "q4_0"};
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < 2; k++)
                if (bench_one(res, &nr, "smollm2-135m", types[i], k ? 1536 : 512, 0, reps, threads)) return 1;
    }
    if (!env_is("MLLM4REC_BENCH_SKIP_7B", "1")) {
        const char *t7 = getenv("MLLM4REC_BENCH_7B_TYPES"), *t7n = getenv("MLLM4REC_BENCH_7B_TOKENS");
        char types7[128], toks[128];
        snprintf(types7, sizeof types7, "%s", t7 ? t7 : "q4_0");
        snprintf(toks, sizeof toks, "%s", t7n ? t7n : "512");
        int ntok = 0, tok[8];
        for (char *s = strtok(toks, ","); s && ntok < 8; s = strtok(NULL, ",")) tok[ntok++] = atoi(s) < 32 ? 32 : atoi(s);
        char first[16] = "";
        char *save = NULL;
        for (char *ty = strtok_r(types7, ",", &save); ty && nr < 56; ty = strtok_r(NULL, ",", &save)) {
            if (!first[0]) snprintf(first, sizeof first, "%s", ty);
            for (int k = 0; k < ntok; k++)
                if (bench_one(res, &nr, "llama2-7b", ty, tok[k], 0, 1, threads)) return 1;
        }
        if (env_is("MLLM4REC_BENCH_7B_GEN", "1") && first[0])
            if (bench_one(res, &nr, "llama2-7b", first, 512, 128, 1, threads)) return 1;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const char *peer = getenv("LLAMA_BENCH");
    printf("{\"bench\": \"llm\", \"threads\": %d, \"llama_bench\": \"%s\", \"results\": [", threads,
           peer && *peer ? peer : "");
    for (int i = 0; i < nr; i++) {
        printf("%s{\"model\": \"%s\", \"type\": \"%s\", \"test\": \"%s\", \"tokens_per_s\": %.2f, "
               "\"cpu_based_tokens_per_s\": %.2f",
               i ? ", " : "", res[i].shape, res[i].type, res[i].what, res[i].tok_s, res[i].cpu_tok_s);
        if (res[i].peer > 0) printf(", \"llama_cpp_tokens_per_s\": %.2f, \"ratio\": %.3f", res[i].peer, res[i].tok_s / res[i].peer);
        printf("}");
    }
    printf("], \"peak_rss_mb\": %.0f}\n", ru.ru_maxrss / 1024.0);
    printf("\n| model | type | test | ours tokens/s | ours cpu-based | llama.cpp tokens/s | ratio |\n");
    printf("|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < nr; i++) {
        printf("| %s | %s | %s | %.2f | %.2f |", res[i].shape, res[i].type, res[i].what, res[i].tok_s,
               res[i].cpu_tok_s);
        if (res[i].peer > 0)
            printf(" %.2f | %.2f |\n", res[i].peer, res[i].tok_s / res[i].peer);
        else
            printf(" %s | - |\n", peer && *peer ? "failed" : "not measured (no $LLAMA_BENCH)");
    }
    double la[3];
    if (getloadavg(la, 3) == 3) printf("load average at the end: %.2f %.2f %.2f\n", la[0], la[1], la[2]);
    return 0;
}
