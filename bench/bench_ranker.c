/* Ranker speed and memory: for a SmolLM2-135M-shaped model (random weights) at
 * 1536 tokens, ranking prompts per second (one forward, last position: our
 * training forward, and the engine's prefill for the ratio) and LoRA training
 * tokens per second (forward + backward, adapters on q and v, activations kept),
 * whose goal is at least 40% of the forward's tokens per second. With
 * MLLM4REC_BENCH_7B=1 also a Llama-2-7B-shaped Q4_0 model (3.8 GB, written once
 * under build/bench/): peak RSS of scoring and of a training step with layer
 * recomputation, each in its own process (goals 4.5 GB and 8 GB), and the engine's
 * scoring of one prompt (what `ranker eval` runs) with its peak RSS, beside
 * llama.cpp's prefill of the same length when $LLAMA_BENCH names llama-bench.
 *
 * Environment: MLLM4REC_BENCH_THREADS (2), MLLM4REC_BENCH_TOKENS (1536),
 * MLLM4REC_BENCH_TYPE (f32; the 135M weight type), MLLM4REC_BENCH_7B. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llama_bench.h"
#include "mllm4rec/llm.h"
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
    double score_s, engine_s, train_s;
    double ws_score_gb, ws_train_gb;
} figures;

/* mode < 0: no training step. */
static int measure(const char *path, int T, int mode, int do_engine, int do_score, figures *f, mr_error *e) {
    memset(f, 0, sizeof *f);
    llm_model lm;
    if (llm_load(&lm, path, e)) return 1;
    mr_lt_model m;
    if (mr_lt_model_from_llm(&m, &lm, e)) return 1;
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    float *logits = malloc(2 * (size_t)m.vocab * sizeof *logits);
    mr_rng rng;
    mr_rng_seed(&rng, 1);
    for (int t = 0; t < T; t++) ids[t] = (int32_t)mr_rng_below(&rng, (uint64_t)m.vocab);
    mr_lora l;
    if (mr_lora_init(&l, &m, 8, 32, 0.05f, (1u << MR_LT_Q) | (1u << MR_LT_V), 1, e)) return 1;
    int last = T - 1;
    if (do_score) {
        mr_lt_ws *ws = mr_lt_ws_new(&m, &l, T, MR_LT_INFERENCE, e);
        if (!ws) return 1;
        f->ws_score_gb = mr_lt_ws_bytes(ws) / 1e9;
        double t0 = mr_now();
        if (mr_lt_forward(&m, &l, ws, ids, NULL, T, &last, 1, logits, e)) return 1;
        f->score_s = mr_now() - t0;
        mr_lt_ws_free(ws);
    }
    if (do_engine) {
        llm_state s;
        if (llm_state_init(&s, &lm, T, T, LLM_STATE_SCORE, e)) return 1;
        int64_t l64 = T - 1;
        double t0 = mr_now();
        if (llm_forward(&s, ids, T, &l64, 1, logits, e)) return 1;
        f->engine_s = mr_now() - t0;
        llm_state_free(&s);
    }
    if (mode >= 0) {
        mr_lt_ws *ws = mr_lt_ws_new(&m, &l, T, mode, e);
        if (!ws) return 1;
        f->ws_train_gb = mr_lt_ws_bytes(ws) / 1e9;
        int pos[2] = {T - 3, T - 2};
        int32_t tgt[2] = {ids[T - 2], ids[T - 1]};
        mr_lt_step st = {.ids = ids, .T = T, .loss_pos = pos, .loss_target = tgt, .n_loss = 2, .train = 1,
                         .dropout_seed = 7};
        double t0 = mr_now();
        if (mr_lt_forward_backward(&m, &l, ws, &st, 1.0f, e)) return 1;
        f->train_s = mr_now() - t0;
        mr_lt_ws_free(ws);
    }
    mr_lora_free(&l);
    free(ids);
    free(logits);
    mr_lt_model_release(&m);
    llm_free(&lm);
    return 0;
}

/* Runs one measurement in a fresh process (this program again, told by the
 * environment what to measure) and returns its peak RSS in GB, so scoring and
 * training do not share a high-water mark. A plain fork would inherit the
 * parent's OpenMP state, and libgomp hangs in a forked child that already ran
 * parallel regions in its parent. */
static double child_peak_gb(const char *path, int T, int mode, int do_engine, int do_score, figures *f) {
    int fd[2];
    if (pipe(fd)) return -1;
    char spec[1024];
    snprintf(spec, sizeof spec, "%d %d %d %d %d %s", fd[1], T, mode, do_engine, do_score, path);
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
    int wfd, T, mode, do_engine, do_score, off = 0;
    if (sscanf(spec, "%d %d %d %d %d %n", &wfd, &T, &mode, &do_engine, &do_score, &off) != 5 || !off) return 2;
    mr_error e = {0};
    figures g;
    memset(&g, 0, sizeof g);
    int rc = measure(spec + off, T, mode, do_engine, do_score, &g, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    if (write(wfd, &g, sizeof g) != (ssize_t)sizeof g) rc = 1;
    return rc ? 1 : 0;
}

int main(void) {
    const char *th = getenv("MLLM4REC_BENCH_THREADS"), *tk = getenv("MLLM4REC_BENCH_TOKENS"),
               *ty = getenv("MLLM4REC_BENCH_TYPE");
    const int threads = th ? atoi(th) : 2, T = tk ? atoi(tk) : 1536;
    const char *type = ty ? ty : "f32";
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    const char *child = getenv("MLLM4REC_BENCH_CHILD");
    if (child) return run_child(child);
    char path[512];
    mr_error e = {0};
    if (ensure_model("smollm2-135m", type, path, sizeof path)) return 1;
    figures f;
    if (measure(path, T, MR_LT_KEEP_ALL, 1, 1, &f, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    const double fwd_tps = T / f.score_s, eng_tps = T / f.engine_s, train_tps = T / f.train_s;
    printf("{\"model\": \"smollm2-135m-%s\", \"tokens\": %d, \"threads\": %d, \"ranking_prompts_per_s\": %.4f, "
           "\"forward_tokens_per_s\": %.1f, \"engine_prefill_tokens_per_s\": %.1f, \"training_tokens_per_s\": %.1f, "
           "\"training_over_forward\": %.3f, \"train_workspace_gb\": %.3f}\n",
           type, T, threads, 1.0 / f.score_s, fwd_tps, eng_tps, train_tps, train_tps / fwd_tps, f.ws_train_gb);
    printf("| smollm2-135m %s, %d tokens, %d threads | value |\n|---|---:|\n", type, T, threads);
    printf("| ranking prompts/s (training forward, last position) | %.3f |\n", 1.0 / f.score_s);
    printf("| forward tokens/s (ours / engine prefill) | %.1f / %.1f (%.2fx) |\n", fwd_tps, eng_tps, fwd_tps / eng_tps);
    printf("| LoRA training tokens/s (forward + backward) | %.1f |\n", train_tps);
    printf("| training / forward tokens/s (goal >= 0.40) | %.3f |\n", train_tps / fwd_tps);
    printf("| training workspace (activations kept) | %.2f GB |\n", f.ws_train_gb);
    if (getenv("MLLM4REC_BENCH_7B")) {
        if (ensure_model("llama2-7b", "q4_0", path, sizeof path)) return 1;
        figures g, h, k;
        /* ranker eval scores through the engine (integer products): its seconds per
         * prompt beside llama.cpp's prefill of the same length ($LLAMA_BENCH) */
        double engine_gb = child_peak_gb(path, T, -1, 1, 0, &k);
        double peer = llama_bench_tps(path, T, 0, 0, threads, 1);
        printf("| llama2-7b q4_0: ranker eval (engine) scoring %d tokens | %.1f s per prompt, peak RSS %.2f GB (goal "
               "4.5)",
               T, k.engine_s, engine_gb);
        if (peer > 0)
            printf("; llama.cpp prefill %.1f s (ratio of speeds %.2f) |\n", T / peer, (T / k.engine_s) / peer);
        else
            printf(" |\n");
        double score_gb = child_peak_gb(path, T, -1, 0, 1, &g);
        double train_gb = child_peak_gb(path, T, MR_LT_RECOMPUTE, 0, 0, &h);
        printf("| llama2-7b q4_0: scoring %d tokens (training forward) | %.1f s, peak RSS %.2f GB (goal 4.5) |\n", T,
               g.score_s, score_gb);
        printf("| llama2-7b q4_0: LoRA training step, recompute | %.1f s, peak RSS %.2f GB (goal 8) |\n", h.train_s,
               train_gb);
    }
    return 0;
}
