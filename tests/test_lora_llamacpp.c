/* The adapters `ranker train` writes mean to llama.cpp what they mean here.
 * tests/data/lora_llamacpp/ holds three adapter.gguf files that `ranker train` wrote on
 * stories260K (q,v at the defaults; all seven targets; q,v at lr 1e-3) and the
 * perplexity `llama-perplexity --lora` gives with each on ../shared's ppl_text.txt;
 * scripts/lora_llamacpp_ref.sh made both. Asserted:
 * - `mllm4rec llm perplexity --lora` prints the same 4 decimals as llama.cpp's F32
 *   attention path (-ctk f32 -ctv f32 -fa off), and each adapter moves the
 *   perplexity by more than that, so the agreement is not the base model's alone;
 * - today's writer gives those files byte for byte (read, written again), so what
 *   llama.cpp was measured on is what `ranker train` writes now;
 * - the check has teeth: the lr 1e-3 adapter with its q rows of B in the other RoPE
 *   order, or with alpha lost (scale 1), gives another 4-digit perplexity.
 * llama.cpp's defaults (F16 KV cache, flash attention on, which casts K and V to F16)
 * differ in the 4th digit; the file records them and this prints them, unchecked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/llm.h"
#include "test.h"

#define REF_DIR "tests/data/lora_llamacpp/"
#define MAX_ROWS 8
#define SPOILED "qv_lr1e-3.gguf"

typedef struct ref_row {
    char adapter[64]; /* "none" or a file name in REF_DIR */
    char ppl_f32[32], ppl_defaults[32];
} ref_row;

static int read_refs(ref_row *rows) {
    char *text;
    size_t len;
    mr_error e = {0};
    if (mr_read_file(REF_DIR "llamacpp_ppl.tsv", &text, &len, &e)) return -1;
    int n = 0;
    for (char *line = strtok(text, "\n"); line && n < MAX_ROWS; line = strtok(NULL, "\n")) {
        if (line[0] == '#' || !strncmp(line, "adapter\t", 8)) continue;
        if (sscanf(line, "%63[^\t]\t%31[^\t]\t%31s", rows[n].adapter, rows[n].ppl_f32, rows[n].ppl_defaults) == 3) n++;
    }
    free(text);
    return n;
}

/* `llm perplexity` on stories260K with the adapter (NULL: none); -1 on failure */
static double cli_ppl(const char *model, const char *text, const char *adapter) {
    char out[4096], lora[1200] = "";
    if (adapter) snprintf(lora, sizeof lora, "--lora %s", adapter);
    if (test_cli(out, sizeof out, "llm perplexity --model %s --file %s --ctx 128 --threads 1 %s 2>/dev/null", model, text,
                 lora))
        return -1;
    double p;
    return sscanf(out, "perplexity: %lf", &p) == 1 ? p : -1;
}

static const char *model_path(void) { return test_shared_path("reference/models/stories260K.gguf"); }
static const char *text_path(void) { return test_shared_path("reference/models/ppl_text.txt"); }

TEST(perplexity_equals_llamacpp_to_4_digits) {
    const char *model = model_path(), *text = text_path();
    if (!model || !text) SKIP("../shared/reference/models (stories260K.gguf, ppl_text.txt) absent");
    ref_row rows[MAX_ROWS];
    int n = read_refs(rows);
    CHECK_MSG(n >= 2 && !strcmp(rows[0].adapter, "none"), "%sllamacpp_ppl.tsv: %d rows", REF_DIR, n);
    double base = -1;
    for (int i = 0; i < n; i++) {
        char path[1200], ours[32];
        snprintf(path, sizeof path, REF_DIR "%s", rows[i].adapter);
        const int none = !strcmp(rows[i].adapter, "none");
        double p = cli_ppl(model, text, none ? NULL : path);
        CHECK_MSG(p > 0, "llm perplexity --lora %s failed", rows[i].adapter);
        snprintf(ours, sizeof ours, "%.4f", p);
        printf("  %-18s ours %.6f, llama.cpp %s (F32 attention), %s (its defaults: F16 K/V)\n", rows[i].adapter, p,
               rows[i].ppl_f32, rows[i].ppl_defaults);
        CHECK_MSG(!strcmp(ours, rows[i].ppl_f32), "%s: ours %s, llama.cpp %s", rows[i].adapter, ours, rows[i].ppl_f32);
        if (none) base = p;
        else CHECK_MSG(fabs(p - base) > 1e-3, "%s moves the perplexity by only %g", rows[i].adapter, fabs(p - base));
    }
}

TEST(writer_gives_the_measured_files) {
    const char *model = model_path();
    if (!model) SKIP("../shared/reference/models/stories260K.gguf absent");
    ref_row rows[MAX_ROWS];
    int n = read_refs(rows);
    CHECK(n >= 2);
    mr_error e = {0};
    llm_model m;
    CHECK_OK(llm_load(&m, model, &e), &e);
    for (int i = 0; i < n; i++) {
        if (!strcmp(rows[i].adapter, "none")) continue;
        char path[1200];
        snprintf(path, sizeof path, REF_DIR "%s", rows[i].adapter);
        llm_adapter ad;
        CHECK_OK(llm_adapter_read_gguf(&ad, &m, path, &e), &e);
        const char *again = test_tmp_path("again.gguf");
        int rc = llm_adapter_write_gguf(&ad, &m, again, &e);
        llm_adapter_free(&ad);
        CHECK_OK(rc, &e);
        char *a, *b;
        size_t na, nb;
        CHECK_OK(mr_read_file(path, &a, &na, &e), &e);
        CHECK_OK(mr_read_file(again, &b, &nb, &e), &e);
        int same = na == nb && !memcmp(a, b, na);
        free(a);
        free(b);
        CHECK_MSG(same, "%s: the writer no longer gives this file (%zu vs %zu bytes); if the change is meant, "
                        "run scripts/lora_llamacpp_ref.sh to measure the new files in llama.cpp", path, na, nb);
    }
    llm_free(&m);
}

/* The adapter that moves the perplexity most, spoiled two ways, no longer matches
 * llama.cpp's figure. */
TEST(a_wrong_permutation_or_scale_is_caught) {
    const char *model = model_path(), *text = text_path();
    if (!model || !text) SKIP("../shared/reference/models (stories260K.gguf, ppl_text.txt) absent");
    ref_row rows[MAX_ROWS];
    int n = read_refs(rows), row = -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(rows[i].adapter, SPOILED)) row = i;
    CHECK_MSG(row >= 0, "no " SPOILED " row");
    mr_error e = {0};
    llm_model m;
    CHECK_OK(llm_load(&m, model, &e), &e);
    llm_adapter ad;
    CHECK_OK(llm_adapter_read_gguf(&ad, &m, REF_DIR SPOILED, &e), &e);
    CHECK(llm_adapter_get(&ad, 0, LLM_LORA_Q));
    const char *spoiled = test_tmp_path("spoiled.gguf");
    char ours[2][32];
    for (int way = 0; way < 2; way++) {
        if (way == 0) /* q/k rows of B in the other order (as if the writer forgot to permute) */
            for (int l = 0; l < m.cfg.n_layer; l++)
                for (int t = LLM_LORA_Q; t <= LLM_LORA_K; t++) {
                    llm_lora *lo = llm_adapter_get(&ad, l, t);
                    if (!lo) continue;
                    float *tmp = malloc((size_t)lo->out * lo->rank * sizeof(float));
                    llm_lora_permute_qk(tmp, lo->b, t == LLM_LORA_Q ? m.cfg.n_head : m.cfg.n_head_kv, m.cfg.head_dim,
                                        lo->rank, 0);
                    memcpy(lo->b, tmp, (size_t)lo->out * lo->rank * sizeof(float));
                    free(tmp);
                }
        else { /* the rows right again, alpha lost: llama.cpp and we would then scale by 1 */
            llm_adapter_free(&ad);
            CHECK_OK(llm_adapter_read_gguf(&ad, &m, REF_DIR SPOILED, &e), &e);
            ad.alpha = (float)ad.r;
        }
        CHECK_OK(llm_adapter_write_gguf(&ad, &m, spoiled, &e), &e);
        double p = cli_ppl(model, text, spoiled);
        CHECK(p > 0);
        snprintf(ours[way], sizeof ours[way], "%.4f", p);
        printf("  spoiled (%s): %s against llama.cpp's %s\n", way ? "alpha lost" : "q/k rows permuted", ours[way],
               rows[row].ppl_f32);
        CHECK_MSG(strcmp(ours[way], rows[row].ppl_f32), "spoiling the adapter left the perplexity at %s", ours[way]);
    }
    llm_adapter_free(&ad);
    llm_free(&m);
}

int main(void) {
    RUN(perplexity_equals_llamacpp_to_4_digits);
    RUN(writer_gives_the_measured_files);
    RUN(a_wrong_permutation_or_scale_is_caught);
    return test_summary();
}
