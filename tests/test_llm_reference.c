/* The engine against llama.cpp's numbers in reference/models (stories260K and
 * the tiny random llama / qwen2 GGUFs): logits, log-probs, greedy generation,
 * perplexity. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/llm.h"
#include "test.h"

static json_t *load_json(const char *rel) {
    const char *p = test_shared_path(rel);
    if (!p) return NULL;
    json_error_t err;
    return json_load_file(p, 0, &err);
}

static int32_t *json_ids(json_t *arr, int64_t *n) {
    *n = (int64_t)json_array_size(arr);
    int32_t *ids = malloc((size_t)(*n > 0 ? *n : 1) * sizeof *ids);
    for (int64_t i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return ids;
}

static float *read_f32_file(const char *rel, int64_t n) {
    const char *p = test_shared_path(rel);
    if (!p) return NULL;
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    float *v = malloc((size_t)n * sizeof *v);
    size_t got = fread(v, sizeof *v, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(v);
        return NULL;
    }
    return v;
}

static json_t *variant(json_t *root, const char *name) {
    return json_object_get(json_object_get(root, "variants"), name);
}

/* Checks every prompt of a variant: per-position log-probs and argmax, the last
 * position's top-10 and (when given) all its logits. */
static void check_prompts(const char *model_rel, json_t *variant, double tol, int check_all_logits) {
    const char *mp = test_shared_path(model_rel);
    if (!mp) SKIP("%s not present", model_rel);
    llm_model m;
    mr_error e = {0};
    CHECK_OK(llm_load(&m, mp, &e), &e);
    json_t *prompts = json_object_get(variant, "prompts");
    CHECK(json_array_size(prompts) > 0);
    double max_logit_err = 0, max_lp_err = 0;
    for (size_t pi = 0; pi < json_array_size(prompts); pi++) {
        json_t *pr = json_array_get(prompts, pi);
        int64_t T;
        int32_t *ids = json_ids(json_object_get(pr, "prompt_tokens"), &T);
        llm_state s;
        CHECK_OK(llm_state_init(&s, &m, T, T, LLM_STATE_SCORE, &e), &e);
        int64_t *pos = malloc((size_t)T * sizeof *pos);
        for (int64_t t = 0; t < T; t++) pos[t] = t;
        const int nv = m.cfg.n_vocab;
        float *logits = malloc((size_t)(T * nv) * sizeof *logits);
        int rc = llm_forward(&s, ids, T, pos, (int)T, logits, &e);
        llm_state_free(&s);
        free(pos);
        if (rc) {
            free(ids);
            free(logits);
            llm_free(&m);
            CHECK_OK(rc, &e);
        }
        json_t *lps = json_object_get(pr, "next_token_logprob"), *am = json_object_get(pr, "argmax_per_position");
        int bad = 0;
        for (int64_t t = 0; t < T; t++) {
            const float *lg = logits + t * nv;
            int best = 0;
            double mx = lg[0], se = 0;
            for (int i = 1; i < nv; i++) {
                if (lg[i] > lg[best]) best = i;
                if (lg[i] > mx) mx = lg[i];
            }
            for (int i = 0; i < nv; i++) se += exp(lg[i] - mx);
            if (am && best != json_integer_value(json_array_get(am, (size_t)t))) bad = 1;
            if (t + 1 < T && lps) {
                double lp = lg[ids[t + 1]] - mx - log(se);
                double d = fabs(lp - json_number_value(json_array_get(lps, (size_t)t)));
                if (d > max_lp_err) max_lp_err = d;
            }
        }
        const float *last = logits + (T - 1) * nv;
        json_t *topk = json_object_get(pr, "last_topk");
        for (size_t k = 0; k < json_array_size(topk); k++) {
            json_t *it = json_array_get(topk, k);
            int id = (int)json_integer_value(json_object_get(it, "id"));
            double d = fabs(last[id] - json_number_value(json_object_get(it, "logit")));
            if (d > max_logit_err) max_logit_err = d;
            /* the k-th largest of ours is the same token (ties aside) */
            int rank = 0;
            for (int i = 0; i < nv; i++) rank += last[i] > last[id] + 1e-4f;
            if (rank > (int)k) bad = 1;
        }
        const char *lf = json_string_value(json_object_get(pr, "last_logits_file"));
        if (lf && check_all_logits) {
            char rel[512];
            snprintf(rel, sizeof rel, "reference/models/%s", lf);
            float *ref = read_f32_file(rel, nv);
            if (ref) {
                for (int i = 0; i < nv; i++) {
                    double d = fabs(last[i] - ref[i]);
                    if (d > max_logit_err) max_logit_err = d;
                }
                free(ref);
            }
        }
        free(ids);
        free(logits);
        if (bad) {
            llm_free(&m);
            CHECK_MSG(0, "%s prompt %zu: argmax or top-10 order differs from llama.cpp", model_rel, pi);
        }
    }
    llm_free(&m);
    printf("  %s: max |logit diff| %.3g, max |log-prob diff| %.3g\n", model_rel, max_logit_err, max_lp_err);
    CHECK(max_logit_err <= tol);
    CHECK(max_lp_err <= tol);
}

static void check_ppl(const char *model_rel, json_t *variant, double rel_tol_log, double rel_tol_ppl) {
    const char *mp = test_shared_path(model_rel);
    if (!mp) SKIP("%s not present", model_rel);
    llm_model m;
    mr_error e = {0};
    CHECK_OK(llm_load(&m, mp, &e), &e);
    int64_t n;
    int32_t *ids = json_ids(json_object_get(variant, "ppl_text_tokens_with_add_special"), &n);
    /* llama-perplexity reads -f and drops one trailing newline before tokenizing
     * (stories260K: 767 tokens, 5 chunks); these token lists end with that newline. */
    n--;
    json_t *pj = json_object_get(json_object_get(variant, "perplexity"), "kv_cache_f32");
    int n_ctx = (int)json_integer_value(json_object_get(pj, "n_ctx"));
    double ref = json_number_value(json_object_get(pj, "ppl"));
    llm_ppl_result r;
    int rc = llm_perplexity(&m, ids, n, n_ctx, NULL, NULL, &r, &e);
    free(ids);
    llm_free(&m);
    CHECK_OK(rc, &e);
    double rel_log = fabs(log(r.ppl) - log(ref)) / fabs(log(ref));
    printf("  %s: perplexity %.6f (llama.cpp %.6f), %d chunks, |d ln ppl| / ln ppl = %.3g, |d ppl| / ppl = %.3g\n",
           model_rel, r.ppl, ref, r.n_chunks, rel_log, fabs(r.ppl - ref) / ref);
    CHECK(r.n_chunks == (int)json_integer_value(json_object_get(pj, "n_chunks")));
    if (rel_tol_log > 0) CHECK(rel_log <= rel_tol_log);
    if (rel_tol_ppl > 0) CHECK(fabs(r.ppl - ref) / ref <= rel_tol_ppl);
}


TEST(tiny_llama_f32_logits) {
    json_t *j = load_json("reference/models/tiny-llama-random.reference.json");
    if (!j) SKIP("reference/models/tiny-llama-random.reference.json not present");
    check_prompts("reference/models/tiny-llama-random-f32.gguf", variant(j, "tiny-llama-random-f32"), 1e-4, 1);
    json_decref(j);
}

TEST(tiny_qwen2_f32_logits) {
    json_t *j = load_json("reference/models/tiny-qwen2-random.reference.json");
    if (!j) SKIP("reference/models/tiny-qwen2-random.reference.json not present");
    check_prompts("reference/models/tiny-qwen2-random-f32.gguf", variant(j, "tiny-qwen2-random-f32"), 1e-4, 1);
    json_decref(j);
}

/* The quantized variants of the tiny random models that reference/models holds
 * (the reference json also names tiny-qwen2-random-q8_0, whose GGUF is not there). */
static const char *const quantized_variants[] = {"tiny-llama-random-q8_0", "tiny-llama-random-q4_0",
                                                 "tiny-qwen2-random-q8_0", "tiny-qwen2-random-q4_0"};

/* Quantized weights with 8-bit activations follow llama.cpp's arithmetic: the
 * top-10 last-position logits (and every position's log-prob of the next token)
 * within 1e-2, the same argmax everywhere; and (below) the log of the perplexity
 * within 1e-3 relative. Variants whose GGUF is absent are named and left out. */
static void check_quantized(int ppl) {
    json_t *a = load_json("reference/models/tiny-llama-random.reference.json");
    json_t *b = load_json("reference/models/tiny-qwen2-random.reference.json");
    if (!a || !b) SKIP("tiny random model references not present");
    int checked = 0;
    for (size_t i = 0; i < sizeof quantized_variants / sizeof *quantized_variants && !test_failed_now(); i++) {
        const char *name = quantized_variants[i];
        char rel[256];
        snprintf(rel, sizeof rel, "reference/models/%s.gguf", name);
        json_t *v = variant(strstr(name, "qwen2") ? b : a, name);
        if (!v || !test_shared_path(rel)) {
            printf("  %s: not present, not checked\n", rel);
            continue;
        }
        if (ppl)
            check_ppl(rel, v, 1e-3, 0);
        else
            check_prompts(rel, v, 1e-2, 0);
        checked++;
    }
    json_decref(a);
    json_decref(b);
    CHECK(checked >= 2);
}

TEST(tiny_quantized_logits) { check_quantized(0); }

TEST(tiny_f32_perplexity) {
    json_t *a = load_json("reference/models/tiny-llama-random.reference.json");
    json_t *b = load_json("reference/models/tiny-qwen2-random.reference.json");
    if (!a || !b) SKIP("tiny random model references not present");
    check_ppl("reference/models/tiny-llama-random-f32.gguf", variant(a, "tiny-llama-random-f32"), 1e-4, 0);
    if (!test_failed_now())
        check_ppl("reference/models/tiny-qwen2-random-f32.gguf", variant(b, "tiny-qwen2-random-f32"), 1e-4, 0);
    json_decref(a);
    json_decref(b);
}

TEST(tiny_quantized_perplexity) { check_quantized(1); }

typedef struct collected {
    int32_t ids[512];
    int n;
} collected;

static int collect(int32_t id, void *user) {
    collected *c = user;
    if (c->n < 512) c->ids[c->n++] = id;
    return 0;
}

/* The generated ids as text (raw concatenated pieces, as llama.cpp's greedy_text). */
static char *pieces(const llm_model *m, const int32_t *ids, int n) {
    char *buf = NULL;
    size_t len = 0, cap = 0;
    mr_error e = {0};
    for (int i = 0; i < n; i++)
        if (llm_token_piece(m, ids[i], &buf, &len, &cap, &e)) {
            free(buf);
            return NULL;
        }
    return buf ? buf : calloc(1, 1);
}

static void check_greedy(llm_model *m, json_t *ids_json, json_t *ref_json, int n_predict, const char *what,
                         const char *ref_text) {
    int64_t n_prompt, n_ref;
    int32_t *prompt = json_ids(ids_json, &n_prompt);
    int32_t *ref = json_ids(ref_json, &n_ref);
    collected got = {.n = 0};
    llm_sampler smp = {0, 0, 1, 0};
    mr_error e = {0};
    int rc = llm_generate(m, prompt, n_prompt, n_predict, &smp, 0, 0, collect, &got, &e); /* F32 cache, as the references */
    free(prompt);
    if (rc) free(ref);
    CHECK_OK(rc, &e);
    int same = got.n == n_ref;
    for (int i = 0; same && i < got.n; i++) same = got.ids[i] == ref[i];
    free(ref);
    CHECK_MSG(same, "%s: greedy tokens differ from llama.cpp's (%d generated, %lld expected)", what, got.n,
              (long long)n_ref);
    if (ref_text && m->tok) {
        char *text = pieces(m, got.ids, got.n);
        CHECK(text != NULL);
        int eq = !strcmp(text, ref_text);
        free(text);
        CHECK_MSG(eq, "%s: greedy text differs from llama.cpp's", what);
    }
}

TEST(stories260k_greedy) {
    json_t *j = load_json("reference/models/stories260K.reference.json");
    const char *mp = test_shared_path("reference/models/stories260K.gguf");
    if (!j || !mp) SKIP("stories260K reference not present");
    json_t *v = variant(j, "stories260K");
    llm_model m;
    mr_error e = {0};
    CHECK_OK(llm_load(&m, mp, &e), &e);
    json_t *prompts = json_object_get(v, "prompts");
    for (size_t i = 0; i < json_array_size(prompts) && !test_failed_now(); i++) {
        json_t *p = json_array_get(prompts, i);
        check_greedy(&m, json_object_get(p, "prompt_tokens"), json_object_get(p, "greedy_tokens"),
                     (int)json_integer_value(json_object_get(p, "greedy_n_requested")),
                     json_string_value(json_object_get(p, "prompt")),
                     json_string_value(json_object_get(p, "greedy_text")));
    }
    json_t *b = json_object_get(v, "bos_only_greedy200");
    if (!test_failed_now())
        check_greedy(&m, json_object_get(b, "prompt_tokens"), json_object_get(b, "greedy_tokens"),
                     (int)json_integer_value(json_object_get(b, "greedy_n_requested")), "bos_only_greedy200",
                     json_string_value(json_object_get(b, "greedy_text")));
    /* llama2.c's expected output is that text without its leading space */
    const char *exp_path = test_shared_path("reference/models/stories260K.llama2c_expected_output.txt");
    if (!test_failed_now() && exp_path && m.tok) {
        char *expect = NULL;
        size_t len = 0;
        CHECK_OK(mr_read_file(exp_path, &expect, &len, &e), &e);
        int64_t n_ref;
        int32_t *ref = json_ids(json_object_get(b, "greedy_tokens"), &n_ref);
        char *text = pieces(&m, ref, (int)n_ref);
        int eq = text && !strcmp(text[0] == ' ' ? text + 1 : text, expect);
        free(text);
        free(ref);
        free(expect);
        CHECK_MSG(eq, "bos_only_greedy200 text differs from llama2.c's expected output");
    }
    llm_free(&m);
    json_decref(j);
}

/* Generation on weights repacked for it (llm_prepare_generation: Q4_0 into the x8
 * layout) gives llama.cpp's greedy tokens, as llama.cpp's own repacked Q4_0 does,
 * and the same tokens as before the repacking. */
TEST(q4_0_greedy_after_prepare_generation) {
    json_t *a = load_json("reference/models/tiny-llama-random.reference.json");
    json_t *b = load_json("reference/models/tiny-qwen2-random.reference.json");
    if (!a || !b) SKIP("tiny random model references not present");
    const char *names[] = {"tiny-llama-random-q4_0", "tiny-qwen2-random-q4_0"};
    for (int i = 0; i < 2 && !test_failed_now(); i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "reference/models/%s.gguf", names[i]);
        json_t *v = variant(i ? b : a, names[i]);
        const char *mp = test_shared_path(rel);
        if (!v || !mp) {
            printf("  %s: not present, not checked\n", rel);
            continue;
        }
        llm_model m;
        mr_error e = {0};
        CHECK_OK(llm_load(&m, mp, &e), &e);
        CHECK_OK(llm_prepare_generation(&m, &e), &e);
        int repacked = 0;
        for (int l = 0; l < m.cfg.n_layer; l++) repacked += m.layers[l].wq.w.x8 + m.layers[l].w_up.w.x8;
        printf("  %s: %d of %d q and up matrices repacked\n", rel, repacked, 2 * m.cfg.n_layer);
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
        CHECK(repacked == 2 * m.cfg.n_layer); /* this build has the x8 kernel */
#endif
        json_t *prompts = json_object_get(v, "prompts");
        for (size_t k = 0; k < json_array_size(prompts) && !test_failed_now(); k++) {
            json_t *p = json_array_get(prompts, k);
            check_greedy(&m, json_object_get(p, "prompt_tokens"), json_object_get(p, "greedy_tokens"),
                         (int)json_integer_value(json_object_get(p, "greedy_n_requested")), rel, NULL);
        }
        llm_free(&m);
    }
    json_decref(a);
    json_decref(b);
}

TEST(stories260k_logits_and_perplexity) {
    json_t *j = load_json("reference/models/stories260K.reference.json");
    if (!j) SKIP("stories260K reference not present");
    check_prompts("reference/models/stories260K.gguf", variant(j, "stories260K"), 1e-4, 0);
    if (!test_failed_now()) check_ppl("reference/models/stories260K.gguf", variant(j, "stories260K"), 0, 0.001);
    json_decref(j);
}

int main(void) {
    RUN(tiny_llama_f32_logits);
    RUN(tiny_qwen2_f32_logits);
    RUN(tiny_quantized_logits);
    RUN(tiny_f32_perplexity);
    RUN(tiny_quantized_perplexity);
    RUN(stories260k_greedy);
    RUN(q4_0_greedy_after_prepare_generation);
    RUN(stories260k_logits_and_perplexity);
    return test_summary();
}
