/* Ranker speed and memory: for a SmolLM2-135M-shaped model (random weights) at
 * 1536 tokens, ranking prompts per second (the engine's prefill, last position)
 * and LoRA training tokens per second (the engine's forward + backward, adapters
 * on q and v, activations kept), whose goal is at least 0.45 of the prefill's
 * tokens per second, measured in the same run. With MLLM4REC_BENCH_7B=1 also a
 * Llama-2-7B-shaped Q4_0 model (3.8 GB, written once under build/bench/): peak
 * RSS of a prefill and of a training step with layer recomputation, each in its
 * own process (goals 4.5 GB and 6 GB), and the step's time against the prefill.
 *
 * Environment: MLLM4REC_BENCH_THREADS (2), MLLM4REC_BENCH_TOKENS (1536), MLLM4REC_BENCH_REPEAT (3),
 * MLLM4REC_BENCH_TYPE (f32; the 135M weight type), MLLM4REC_BENCH_7B. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mllm4rec/llm.h"
#include "llama_bench.h"
#include "mllm4rec/ranker.h"

static int ensure_model(const char *shape, const char *type, char *path, size_t n) {
    snprintf(path, n, "build/bench/%s-%s.gguf", shape, type);
    if (mr_file_exists(path)) return 0;
    mr_error e = {0};
    if (mr_mkdir_p("build/bench", &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    llm_random_opts o;
    memset(&o, 0, sizeof o);
    o.arch = LLM_ARCH_LLAMA;
    if (llm_random_shape(&o, shape, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    if (ggml_type_from_name(type, &o.type)) return fprintf(stderr, "unknown type %s\n", type), 1;
    fprintf(stderr, "writing %s ...\n", path);
    if (llm_random_write(&o, path, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    return 0;
}

typedef struct figures {
    double engine_s, train_s; /* prefill of T tokens (last position's logits); one training step */
    double train_state_gb;
} figures;

/* mode 0: no training step; else LLM_STATE_KEEP_ACTS or LLM_STATE_RECOMPUTE.
 * Each is run `repeat` times and the fastest kept (a busy machine only slows). */
static int measure(const char *path, int T, int mode, int do_engine, int repeat, figures *f, mr_error *e) {
    memset(f, 0, sizeof *f);
    llm_model lm;
    if (llm_load(&lm, path, e)) return 1;
    const int V = lm.cfg.n_vocab;
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    float *logits = malloc(2 * (size_t)V * sizeof *logits);
    mr_rng rng;
    mr_rng_seed(&rng, 1);
    for (int t = 0; t < T; t++) ids[t] = (int32_t)mr_rng_below(&rng, (uint64_t)V);
    llm_adapter l;
    if (llm_adapter_init(&l, &lm, 8, 32, 0.05f, (1u << LLM_LORA_Q) | (1u << LLM_LORA_V), 1, e) ||
        llm_adapter_attach(&lm, &l, 1.0f, e))
        return 1;
    if (do_engine) { /* the ranker's scoring forward: the engine with the adapter attached */
        llm_state s;
        if (llm_state_init(&s, &lm, T, T, LLM_STATE_SCORE, e)) return 1;
        int64_t l64 = T - 1;
        for (int r = 0; r < repeat; r++) {
            llm_state_reset(&s);
            double t0 = mr_now();
            if (llm_forward(&s, ids, T, &l64, 1, logits, e)) return 1;
            if (!r || mr_now() - t0 < f->engine_s) f->engine_s = mr_now() - t0;
        }
        llm_state_free(&s);
    }
    if (mode) {
        llm_state s;
        if (llm_state_init(&s, &lm, T, T, mode, e)) return 1;
        f->train_state_gb = llm_train_state_bytes(&lm, T, mode) / 1e9;
        int64_t pos[2] = {T - 3, T - 2};
        int32_t tgt[2] = {ids[T - 2], ids[T - 1]};
        llm_train_step st = {.ids = ids, .T = T, .loss_pos = pos, .loss_target = tgt, .n_loss = 2, .train = 1,
                             .dropout_seed = 7};
        for (int r = 0; r < repeat; r++) {
            double t0 = mr_now();
            if (llm_train_step_run(&s, &st, 1.0f, e)) return 1;
            if (!r || mr_now() - t0 < f->train_s) f->train_s = mr_now() - t0;
        }
        llm_state_free(&s);
    }
    free(ids);
    free(logits);
    llm_free(&lm);
    llm_adapter_free(&l);
    return 0;
}

/* Runs one measurement in a fresh process (this program again, told by the
 * environment what to measure) and returns its peak RSS in GB, so scoring and
 * training do not share a high-water mark. A plain fork would inherit the
 * parent's OpenMP state, and libgomp hangs in a forked child that already ran
 * parallel regions in its parent. */
static double child_peak_gb(const char *path, int T, int mode, int do_engine, figures *f) {
    int fd[2];
    if (pipe(fd)) return -1;
    char spec[1024];
    snprintf(spec, sizeof spec, "%d %d %d %d %s", fd[1], T, mode, do_engine, path);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        setenv("MLLM4REC_BENCH_CHILD", spec, 1);
        execl("/proc/self/exe", "bench_ranker", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    int status = 0;
    struct rusage ru;
    if (read(fd[0], f, sizeof *f) != (ssize_t)sizeof *f) memset(f, 0, sizeof *f);
    close(fd[0]);
    if (wait4(pid, &status, 0, &ru) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) return -1;
    return ru.ru_maxrss / (1024.0 * 1024.0);
}

/* The child side of child_peak_gb: measures and writes the figures to the pipe. */
static int run_child(const char *spec) {
    int wfd, T, mode, do_engine, off = 0;
    if (sscanf(spec, "%d %d %d %d %n", &wfd, &T, &mode, &do_engine, &off) != 4 || !off) return 2;
    mr_error e = {0};
    figures g;
    memset(&g, 0, sizeof g);
    int rc = measure(spec + off, T, mode, do_engine, 1, &g, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    if (write(wfd, &g, sizeof g) != (ssize_t)sizeof g) rc = 1;
    return rc ? 1 : 0;
}

int main(void) {
    const char *th = getenv("MLLM4REC_BENCH_THREADS"), *tk = getenv("MLLM4REC_BENCH_TOKENS"),
               *ty = getenv("MLLM4REC_BENCH_TYPE");
    const char *rp = getenv("MLLM4REC_BENCH_REPEAT");
    const int threads = th ? atoi(th) : 2, T = tk ? atoi(tk) : 1536, repeat = rp && atoi(rp) > 0 ? atoi(rp) : 3;
    const char *type = ty ? ty : "f32";
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    const char *child = getenv("MLLM4REC_BENCH_CHILD");
    if (child) return run_child(child);
    char path[512];
    mr_error e = {0};
    if (ensure_model("smollm2-135m", type, path, sizeof path)) return 1;
    figures f;
    if (measure(path, T, LLM_STATE_KEEP_ACTS, 1, repeat, &f, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    const double eng_tps = T / f.engine_s, train_tps = T / f.train_s;
    printf("{\"model\": \"smollm2-135m-%s\", \"tokens\": %d, \"threads\": %d, \"ranking_prompts_per_s\": %.4f, "
           "\"engine_prefill_tokens_per_s\": %.1f, \"training_tokens_per_s\": %.1f, "
           "\"training_over_prefill\": %.3f, \"train_state_gb\": %.3f}\n",
           type, T, threads, 1.0 / f.engine_s, eng_tps, train_tps, train_tps / eng_tps, f.train_state_gb);
    printf("| smollm2-135m %s, %d tokens, %d threads, fastest of %d | value |\n|---|---:|\n", type, T, threads, repeat);
    printf("| ranking prompts/s (engine, last position, adapter attached) | %.3f |\n", 1.0 / f.engine_s);
    printf("| engine prefill tokens/s | %.1f |\n", eng_tps);
    printf("| LoRA training tokens/s (engine forward + backward, q,v r 8) | %.1f |\n", train_tps);
    printf("| training / prefill tokens/s (goal >= 0.45) | %.3f |\n", train_tps / eng_tps);
    printf("| training state (activations kept) | %.2f GB |\n", f.train_state_gb);
    if (getenv("MLLM4REC_BENCH_7B")) {
        if (ensure_model("llama2-7b", "q4_0", path, sizeof path)) return 1;
        figures g, h;
        double score_gb = child_peak_gb(path, T, 0, 1, &g);
        double train_gb = child_peak_gb(path, T, LLM_STATE_RECOMPUTE, 0, &h);
        /* ranker eval scores through this prefill: beside llama.cpp's of the same length ($LLAMA_BENCH) */
        double peer = llama_bench_tps(path, T, 0, 0, threads, 1);
        printf("| llama2-7b q4_0: ranker eval prefill %d tokens | %.1f s per prompt, peak RSS %.2f GB (goal 4.5)", T,
               g.engine_s, score_gb);
        if (peer > 0) printf("; llama.cpp %.1f s, ratio of speeds %.2f", T / peer, (T / g.engine_s) / peer);
        printf(" |\n");
        printf("| llama2-7b q4_0: LoRA training step, recompute | %.1f s (%.3fx prefill tokens/s), peak RSS %.2f GB "
               "(goal 6) |\n", h.train_s, h.train_s > 0 ? g.engine_s / h.train_s : 0.0, train_gb);
    }
    return 0;
}
