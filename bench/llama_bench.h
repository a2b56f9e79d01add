/* The peer, measured in the same run: llama.cpp's llama-bench, when $LLAMA_BENCH
 * names its binary (for example LLAMA_BENCH=/tmp/llamacpp/build/bin/llama-bench
 * make bench), on the same GGUF file with the same thread count. No peer figure is
 * written in the code: without $LLAMA_BENCH the benches print ours alone. */
#ifndef MLLM4REC_BENCH_LLAMA_BENCH_H
#define MLLM4REC_BENCH_LLAMA_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* llama-bench's average tokens/s for a prompt of n_prompt tokens (n_gen 0), or for
 * n_gen generated tokens after n_depth tokens of context (n_prompt 0); -1 when
 * $LLAMA_BENCH is unset or the run fails. Its stderr goes to /dev/null. */
static double llama_bench_tps(const char *model, int n_prompt, int n_gen, int n_depth, int threads, int reps) {
    const char *bin = getenv("LLAMA_BENCH");
    if (!bin || !*bin) return -1;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' -m '%s' -p %d -n %d -d %d -t %d -r %d -o jsonl 2>/dev/null", bin, model, n_prompt,
             n_gen, n_depth, threads, reps);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[16384];
    double tps = -1;
    while (fgets(line, sizeof line, p)) {
        const char *a = strstr(line, "\"avg_ts\":");
        if (a) tps = atof(a + 9);
    }
    if (pclose(p) != 0) return -1;
    return tps;
}

#endif
