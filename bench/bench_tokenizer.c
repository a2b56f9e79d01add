/* Tokenizer speed: encodes every title of amazon2014-beauty (item_titles.tsv.gz)
 * with the llama-spm (SentencePiece) and gpt-2 (byte-level BPE) vocabularies,
 * single thread, add_special and parse_special off, and prints tokens per second
 * as a table and as JSON. There is no peer on this machine (llama.cpp is not
 * installed), so no ratio is printed. */
#include "mllm4rec/lines.h"
#include "mllm4rec/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU time of this thread: steadier than wall time on a shared machine. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *shared_path(const char *rel, char *buf, size_t n) {
    const char *root = getenv("MLLM4REC_SHARED");
    snprintf(buf, n, "%s/%s", root && *root ? root : "../shared", rel);
    return mr_file_exists(buf) ? buf : NULL;
}

int main(void) {
    char tp[1024];
    mr_error e = {0};
    if (!shared_path("data/amazon2014-beauty/item_titles.tsv.gz", tp, sizeof tp)) {
        printf("bench_tokenizer: %s not found; nothing to measure\n", tp);
        return 0;
    }
    /* titles: the second column, header skipped */
    size_t n_titles = 0, cap = 0, total_bytes = 0;
    char **titles = NULL;
    mr_lines L;
    if (mr_lines_open(&L, tp, &e)) {
        fprintf(stderr, "bench_tokenizer: %s\n", e.msg);
        return 1;
    }
    char *line;
    size_t len;
    int r;
    while ((r = mr_lines_next(&L, &line, &len, &e)) == 1) {
        if (L.lineno == 1) continue;
        char *tab = memchr(line, '\t', len);
        if (!tab) continue;
        if (n_titles == cap) {
            cap = cap ? cap * 2 : 4096;
            titles = realloc(titles, cap * sizeof *titles);
        }
        titles[n_titles++] = strdup(tab + 1);
        total_bytes += strlen(tab + 1);
    }
    mr_lines_close(&L);
    if (r < 0) {
        fprintf(stderr, "bench_tokenizer: %s\n", e.msg);
        return 1;
    }
    static const char *const vocabs[][2] = {{"llama-spm", "reference/tokenizer/ggml-vocab-llama-spm.gguf"},
                                           {"gpt-2", "reference/tokenizer/ggml-vocab-gpt-2.gguf"},
                                           {"deepseek-coder", "reference/tokenizer/ggml-vocab-deepseek-coder.gguf"}};
    printf("encoding %zu titles (%zu bytes), 1 thread\n", n_titles, total_bytes);
    printf("%-16s %10s %12s %14s %12s %16s\n", "vocab", "tokens", "seconds", "tokens/s", "titles/s",
           "tokens/cpu-s");
    char json[2048];
    size_t jl = (size_t)snprintf(json, sizeof json, "{\"titles\": %zu, \"bytes\": %zu, \"results\": [", n_titles,
                                 total_bytes);
    for (int v = 0; v < 3; v++) {
        char vp[1024];
        if (!shared_path(vocabs[v][1], vp, sizeof vp)) continue;
        tokenizer *t;
        if (tokenizer_load(&t, vp, &e)) {
            fprintf(stderr, "bench_tokenizer: %s\n", e.msg);
            return 1;
        }
        size_t tokens = 0, passes = 0;
        double t0 = mr_now(), c0 = cpu_now(), dt;
        do { /* whole passes until at least two seconds */
            for (size_t i = 0; i < n_titles; i++) {
                int32_t *ids;
                size_t n;
                if (tokenizer_encode(t, titles[i], strlen(titles[i]), 0, &ids, &n, &e)) {
                    fprintf(stderr, "bench_tokenizer: %s\n", e.msg);
                    return 1;
                }
                tokens += n;
                free(ids);
            }
            passes++;
            dt = mr_now() - t0;
        } while (dt < 2.0);
        double cpu = cpu_now() - c0;
        printf("%-16s %10zu %12.3f %14.0f %12.0f %16.0f\n", vocabs[v][0], tokens / passes, dt / (double)passes,
               (double)tokens / dt, (double)(n_titles * passes) / dt, (double)tokens / cpu);
        jl += (size_t)snprintf(json + jl, sizeof json - jl,
                               "%s{\"vocab\": \"%s\", \"tokens\": %zu, \"seconds_per_pass\": %.4f, \"tokens_per_s\": "
                               "%.0f, \"tokens_per_cpu_s\": %.0f}",
                               v ? ", " : "", vocabs[v][0], tokens / passes, dt / (double)passes, (double)tokens / dt,
                               (double)tokens / cpu);
        tokenizer_free(t);
    }
    snprintf(json + jl, sizeof json - jl, "], \"peer\": null}");
    printf("%s\n", json);
    for (size_t i = 0; i < n_titles; i++) free(titles[i]);
    free(titles);
    return 0;
}
