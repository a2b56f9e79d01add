/* Generation with the KV cache: greedy, or seeded sampling with temperature,
 * top-k and top-p. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm/model_internal.h"

/* Prompt tokens fed per forward call. */
#define LLM_PROMPT_BATCH 512

typedef struct scored {
    float logit;
    int32_t id;
} scored;

static int by_logit_desc(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

int32_t llm_sample(const float *logits, int n_vocab, const llm_sampler *smp, mr_rng *rng, float *work) {
    if (!(smp->temp > 0)) {
        int32_t best = 0;
        for (int i = 1; i < n_vocab; i++)
            if (logits[i] > logits[best]) best = i; /* strict: the lowest id wins ties */
        return best;
    }
    /* work holds n_vocab (logit, id) pairs */
    scored *c = (scored *)work;
    for (int i = 0; i < n_vocab; i++) c[i] = (scored){logits[i], i};
    qsort(c, (size_t)n_vocab, sizeof *c, by_logit_desc);
    int n = n_vocab;
    if (smp->top_k > 0 && smp->top_k < n) n = smp->top_k;
    if (smp->top_p > 0 && smp->top_p < 1) {
        double sum = 0, cum = 0;
        for (int i = 0; i < n; i++) sum += exp((double)c[i].logit - c[0].logit);
        int keep = 0; /* the fewest best tokens whose probabilities add up to top_p */
        while (keep < n && cum < smp->top_p) cum += exp((double)c[keep++].logit - c[0].logit) / sum;
        n = keep;
    }
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp(((double)c[i].logit - c[0].logit) / smp->temp);
    double u = mr_rng_uniform(rng) * sum, cum = 0;
    for (int i = 0; i < n; i++) {
        cum += exp(((double)c[i].logit - c[0].logit) / smp->temp);
        if (u < cum) return c[i].id;
    }
    return c[n - 1].id;
}

int llm_generate(const llm_model *m, const int32_t *prompt, int64_t n_prompt, int n_predict, const llm_sampler *smp,
                 int64_t n_ctx, int kv_f16, llm_token_cb cb, void *user, mr_error *e) {
    if (n_prompt <= 0) return mr_fail(e, MR_ERR_USAGE, "generate: the prompt is empty (no tokens)");
    if (n_predict < 0) return mr_fail(e, MR_ERR_USAGE, "generate: negative token count");
    if (n_ctx < n_prompt + n_predict) n_ctx = n_prompt + n_predict;
    llm_state s;
    int64_t batch = n_prompt < LLM_PROMPT_BATCH ? n_prompt : LLM_PROMPT_BATCH;
    int rc = llm_state_init(&s, m, n_ctx, batch, kv_f16 ? LLM_STATE_KV_F16 : LLM_STATE_GENERATE, e);
    if (rc) return rc;
    const int nv = m->cfg.n_vocab;
    float *logits = mr_alloc((size_t)nv * sizeof *logits, e);
    float *work = mr_alloc((size_t)nv * sizeof(scored), e);
    if (!logits || !work) {
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    mr_rng rng;
    mr_rng_seed(&rng, smp->seed);
    for (int64_t t0 = 0; t0 < n_prompt; t0 += batch) {
        int64_t n = n_prompt - t0 < batch ? n_prompt - t0 : batch;
        int64_t last = n - 1;
        int want = t0 + n == n_prompt;
        if ((rc = llm_forward(&s, prompt + t0, n, &last, want, logits, e))) goto done;
    }
    for (int i = 0; i < n_predict; i++) {
        int32_t id = llm_sample(logits, nv, smp, &rng, work);
        if (llm_is_eog(m, id)) break;
        if (cb && cb(id, user)) break;
        if (i + 1 == n_predict) break;
        int64_t zero = 0;
        if ((rc = llm_forward(&s, &id, 1, &zero, 1, logits, e))) goto done;
    }
done:
    free(logits), free(work);
    llm_state_free(&s);
    return rc;
}
