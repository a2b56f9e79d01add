/* KV cache and activations: incremental decoding equals one pass; the kept
 * per-layer activations are the layer inputs; sampling is seeded and honours
 * top-k / top-p / temperature. */
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/llm.h"
#include "test.h"

static const char *model_path(void) { return test_shared_path("reference/models/tiny-qwen2-random-q4_0.gguf"); }

TEST(incremental_decoding_equals_one_pass) {
    const char *mp = model_path();
    if (!mp) SKIP("tiny-qwen2-random-q4_0.gguf not present");
    llm_model m;
    mr_error e = {0};
    CHECK_OK(llm_load(&m, mp, &e), &e);
    const int T = 70, nv = m.cfg.n_vocab; /* more than one attention query block */
    int32_t ids[70];
    for (int t = 0; t < T; t++) ids[t] = (t * 7919) % nv;
    float *one = malloc((size_t)T * nv * sizeof *one), *inc = malloc((size_t)nv * sizeof *inc);
    int64_t pos[70];
    for (int t = 0; t < T; t++) pos[t] = t;
    llm_state a, b;
    CHECK_OK(llm_state_init(&a, &m, T, T, LLM_STATE_SCORE, &e), &e);
    CHECK_OK(llm_forward(&a, ids, T, pos, T, one, &e), &e);
    /* the generation state: a prefix of 33 tokens, then one token at a time */
    CHECK_OK(llm_state_init(&b, &m, T, 40, LLM_STATE_GENERATE, &e), &e);
    int64_t last = 32;
    CHECK_OK(llm_forward(&b, ids, 33, &last, 1, inc, &e), &e);
    double worst = 0;
    for (int i = 0; i < nv; i++) worst = fmax(worst, fabs(inc[i] - one[32 * nv + i]));
    for (int t = 33; t < T; t++) {
        int64_t zero = 0;
        CHECK_OK(llm_forward(&b, ids + t, 1, &zero, 1, inc, &e), &e);
        for (int i = 0; i < nv; i++) worst = fmax(worst, fabs(inc[i] - one[(int64_t)t * nv + i]));
    }
    CHECK(b.kv.n_past == T);
    /* the cache is full now */
    int64_t zero = 0;
    CHECK(llm_forward(&b, ids, 1, &zero, 1, inc, &e) == MR_ERR_USAGE);
    llm_state_free(&a);
    llm_state_free(&b);
    free(one);
    free(inc);
    llm_free(&m);
    printf("  incremental vs one pass: max |logit diff| %.3g\n", worst);
    CHECK(worst < 1e-4);
}

TEST(kept_activations_are_per_layer) {
    const char *mp = model_path();
    if (!mp) SKIP("tiny-qwen2-random-q4_0.gguf not present");
    llm_model m;
    mr_error e = {0};
    CHECK_OK(llm_load(&m, mp, &e), &e);
    const int T = 9, nv = m.cfg.n_vocab, d = m.cfg.n_embd;
    int32_t ids[9] = {5, 17, 300, 2, 9000, 42, 7, 7, 1000};
    float *l1 = malloc((size_t)nv * sizeof *l1), *l2 = malloc((size_t)nv * sizeof *l2);
    int64_t last = T - 1;
    llm_state a, k;
    /* both training states (float activations, nn/matmul.h): only k keeps every layer */
    CHECK_OK(llm_state_init(&a, &m, T, T, LLM_STATE_SCORE | LLM_STATE_RECOMPUTE, &e), &e);
    CHECK_OK(llm_state_init(&k, &m, T, T, LLM_STATE_SCORE | LLM_STATE_KEEP_ACTS, &e), &e);
    CHECK_OK(llm_forward(&a, ids, T, &last, 1, l1, &e), &e);
    CHECK_OK(llm_forward(&k, ids, T, &last, 1, l2, &e), &e);
    int same = !memcmp(l1, l2, (size_t)nv * sizeof *l1);
    CHECK(same);
    CHECK(k.acts.x_in[0] != k.acts.x_in[1] && k.acts.x_mid[0] != k.acts.x_mid[1]);
    CHECK(a.acts.hidden[0] == a.acts.hidden[1]);
    /* gate, up and down's inputs are read back only for their adapters' gradients:
     * one buffer for all layers without, one per layer with (a state made before
     * such an adapter was attached refuses to run with it) */
    CHECK(k.acts.hidden[0] == k.acts.hidden[1] && k.acts.xn_ffn[0] == k.acts.xn_ffn[1]);
    llm_adapter ad;
    CHECK_OK(llm_adapter_init(&ad, &m, 2, 4.0f, 0.0f, 1u << LLM_LORA_GATE | 1u << LLM_LORA_DOWN, 1, &e), &e);
    CHECK_OK(llm_adapter_attach(&m, &ad, 1.0f, &e), &e);
    CHECK(llm_forward(&k, ids, T, &last, 1, l2, &e) == MR_ERR_USAGE);
    llm_state_free(&k);
    CHECK_OK(llm_state_init(&k, &m, T, T, LLM_STATE_SCORE | LLM_STATE_KEEP_ACTS, &e), &e);
    CHECK_OK(llm_forward(&k, ids, T, &last, 1, l2, &e), &e);
    CHECK(!memcmp(l1, l2, (size_t)nv * sizeof *l1)); /* B = 0: the same function */
    CHECK(k.acts.hidden[0] != k.acts.hidden[1] && k.acts.xn_ffn[0] != k.acts.xn_ffn[1]);
    /* layer 0's input is the embedding; layer 1's input is x_mid[0] + ffn(x_mid[0]) */
    float *emb = malloc((size_t)d * sizeof *emb);
    llm_embed_token(&m, ids[3], emb);
    CHECK(!memcmp(emb, k.acts.x_in[0] + 3 * d, (size_t)d * sizeof *emb));
    double dev = 0;
    for (int i = 0; i < T * d; i++) dev = fmax(dev, fabs(k.acts.x_in[1][i] - k.acts.x_mid[0][i]));
    CHECK(dev > 0);
    /* hidden = silu(gate) * up, kept for layer 0 */
    double worst = 0;
    for (int i = 0; i < T * m.cfg.n_ff; i++) {
        double g = k.acts.gate[0][i], want = g / (1 + exp(-g)) * k.acts.up[0][i];
        worst = fmax(worst, fabs(want - k.acts.hidden[0][i]));
    }
    CHECK(worst < 1e-4);
    free(emb);
    free(l1);
    free(l2);
    llm_state_free(&a);
    llm_state_free(&k);
    llm_adapter_detach(&m, &ad);
    llm_adapter_free(&ad);
    llm_free(&m);
}

TEST(sampling) {
    float logits[4] = {0.0f, logf(3.0f), -50.0f, -50.0f};
    float work[16];
    mr_rng rng;
    mr_rng_seed(&rng, 99);
    llm_sampler greedy = {0, 0, 1, 0}, t1 = {1.0f, 0, 1.0f, 0}, k1 = {1.0f, 1, 1.0f, 0}, p = {1.0f, 0, 0.5f, 0};
    CHECK(llm_sample(logits, 4, &greedy, &rng, work) == 1);
    int counts[4] = {0};
    const int n = test_under_sanitizer() ? 4000 : 40000;
    for (int i = 0; i < n; i++) counts[llm_sample(logits, 4, &t1, &rng, work)]++;
    CHECK_NEAR((double)counts[1] / n, 0.75, 0.02);
    CHECK(counts[2] + counts[3] == 0);
    for (int i = 0; i < 200; i++) CHECK(llm_sample(logits, 4, &k1, &rng, work) == 1);
    for (int i = 0; i < 200; i++) CHECK(llm_sample(logits, 4, &p, &rng, work) == 1); /* 0.75 >= 0.5 */
    /* ties: the lowest id wins under greedy */
    float tie[3] = {2.0f, 5.0f, 5.0f};
    CHECK(llm_sample(tie, 3, &greedy, &rng, work) == 1);
    /* the same seed gives the same draws */
    mr_rng r1, r2;
    mr_rng_seed(&r1, 5);
    mr_rng_seed(&r2, 5);
    for (int i = 0; i < 100; i++) CHECK(llm_sample(logits, 4, &t1, &r1, work) == llm_sample(logits, 4, &t1, &r2, work));
}

int main(void) {
    RUN(incremental_decoding_equals_one_pass);
    RUN(kept_activations_are_per_layer);
    RUN(sampling);
    return test_summary();
}
