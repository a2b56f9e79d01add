/* Perplexity as llama.cpp's llama-perplexity computes it: the text in chunks
 * of n_ctx tokens, each evaluated from an empty cache with its first token
 * replaced by BOS when the vocabulary adds BOS, and only its second half
 * scored (positions n_ctx/2 .. n_ctx-2, each predicting the next token). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm/model_internal.h"

int llm_perplexity(const llm_model *m, const int32_t *tokens, int64_t n_tokens, int n_ctx,
                   void (*chunk_cb)(int chunk, double running_ppl, void *user), void *user, llm_ppl_result *out,
                   mr_error *e) {
    memset(out, 0, sizeof *out);
    if (n_ctx < 4) return mr_fail(e, MR_ERR_USAGE, "perplexity: context %d is too small", n_ctx);
    if (n_tokens < 2 * (int64_t)n_ctx)
        return mr_fail(e, MR_ERR_INPUT, "perplexity: need at least %d tokens for a context of %d, the text has %lld",
                       2 * n_ctx, n_ctx, (long long)n_tokens);
    const int first = n_ctx / 2, n_score = n_ctx - 1 - first, nv = m->cfg.n_vocab;
    const int n_chunks = (int)(n_tokens / n_ctx);
    llm_state s;
    int rc = llm_state_init(&s, m, n_ctx, n_ctx, LLM_STATE_SCORE, e);
    if (rc) return rc;
    int32_t *chunk = mr_alloc((size_t)n_ctx * sizeof *chunk, e);
    int64_t *pos = mr_alloc((size_t)n_score * sizeof *pos, e);
    float *logits = mr_alloc((size_t)n_score * nv * sizeof *logits, e);
    if (!chunk || !pos || !logits) {
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    for (int j = 0; j < n_score; j++) pos[j] = first + j;
    double nll = 0;
    int64_t count = 0;
    for (int c = 0; c < n_chunks; c++) {
        memcpy(chunk, tokens + (int64_t)c * n_ctx, (size_t)n_ctx * sizeof *chunk);
        if (m->add_bos && m->bos_id >= 0) chunk[0] = m->bos_id;
        llm_state_reset(&s);
        if ((rc = llm_forward(&s, chunk, n_ctx, pos, n_score, logits, e))) goto done;
        for (int j = 0; j < n_score; j++) {
            const float *lg = logits + (int64_t)j * nv;
            float mx = lg[0];
            for (int i = 1; i < nv; i++) mx = lg[i] > mx ? lg[i] : mx;
            double se = 0;
            for (int i = 0; i < nv; i++) se += exp((double)(lg[i] - mx));
            nll += log(se) + mx - lg[chunk[first + j + 1]];
        }
        count += n_score;
        if (chunk_cb) chunk_cb(c, exp(nll / count), user);
    }
    out->n_chunks = n_chunks;
    out->n_scored = count;
    out->mean_nll = nll / count;
    out->ppl = exp(out->mean_nll);
done:
    free(chunk), free(pos), free(logits);
    llm_state_free(&s);
    return rc;
}
