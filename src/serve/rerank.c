/* LLM reranking of the retriever's top candidates for one history, with the
 * prompt and verbalizer of `ranker eval` (same template, role, history and title
 * settings). Every call into the ranker module (mllm4rec/ranker.h) and the engine
 * lives in this file, so that a change of the ranker's API touches only it.
 *
 * The model is loaded once and shared read-only; each thread that reranks holds
 * its own scoring state (mr_rerank_ws). */
#include "mllm4rec/llm.h"
#include "mllm4rec/ranker.h"
#include "mllm4rec/serve.h"
#include "mllm4rec/tokenizer.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

typedef struct mr_reranker {
    llm_model lm;
    llm_adapter lora; /* attached to lm when have_lora */
    int have_lm, have_lora;
    tokenizer *tok;
    mr_rank_tok rt;
    mr_prompt_opts po;
    char *system;
    int n_cand;
    int threads; /* OpenMP threads of a forward, 0: as the calling thread has them */
    int32_t letters[26];
    char name[256];
} mr_reranker;

struct mr_rerank_ws {
    llm_state st;
    int have_st;
    float *logits; /* [vocab] */
};

void mr_reranker_close(mr_recommender *r);

int mr_reranker_open(mr_recommender *r, const mr_rec_options *o, mr_error *e) {
    mr_reranker *rr = mr_calloc(1, sizeof *rr, e);
    if (!rr) return e->code;
    r->rr = rr;
    int rc;
    if (o->templ && strcmp(o->templ, "mllm4rec") && strcmp(o->templ, "llamarec"))
        return mr_fail(e, MR_ERR_USAGE, "template must be mllm4rec or llamarec (got '%s')", o->templ);
    if (o->max_tokens < 8 || o->history < 0 || o->max_title_tokens < 1)
        return mr_fail(e, MR_ERR_USAGE, "max-tokens >= 8, history >= 0, max-title-tokens >= 1");
    /* the model and its adapter (GGUF or PEFT folder) exactly as `ranker eval` loads them */
    if ((rc = mr_ranker_load_model(&rr->lm, &rr->lora, &rr->have_lora, o->model, o->adapter, e))) return rc;
    rr->have_lm = 1;
    if ((rc = tokenizer_load(&rr->tok, o->model, e))) {
        mr_error_prefix(e, "tokenizer of %s: ", o->model);
        return rc;
    }
    mr_rank_tok_from_tokenizer(&rr->rt, rr->tok);
    mr_prompt_opts_default(&rr->po);
    rr->po.templ = o->templ && !strcmp(o->templ, "llamarec") ? MR_TEMPLATE_LLAMAREC : MR_TEMPLATE_MLLM4REC;
    if ((rc = mr_prompt_parse_captions(o->captions, &rr->po.captions, e))) return rc;
    rr->po.history = o->history;
    rr->po.max_title_tokens = o->max_title_tokens;
    rr->po.max_tokens = o->max_tokens;
    if ((rc = mr_ranker_system(rr->po.templ, mr_dataset_role(&r->d), o->role, &rr->system, e))) {
        if (rc == MR_ERR_USAGE) mr_error_prefix(e, "dataset '%s': ", r->d.name);
        return rc;
    }
    rr->po.system = rr->system;
    rr->n_cand = o->num_candidates;
    rr->threads = o->threads;
    if ((rc = mr_verbalizer_tokens(&rr->rt, rr->n_cand, rr->letters, e))) return rc;
    for (int i = 0; i < rr->n_cand; i++)
        if (rr->letters[i] < 0 || rr->letters[i] >= rr->lm.cfg.n_vocab)
            return mr_fail(e, MR_ERR_INPUT, "verbalizer token %d of letter %c is outside the model's vocabulary (%d)",
                           rr->letters[i], 'A' + i, rr->lm.cfg.n_vocab);
    char base[256];
    snprintf(rr->name, sizeof rr->name, "%s%s%s", mr_path_basename(o->model, base, sizeof base),
             o->adapter ? "+" : "", o->adapter ? o->adapter : "");
    if (rr->lm.cfg.n_ctx_train > 0 && o->max_tokens > rr->lm.cfg.n_ctx_train)
        mr_log("warning: prompts of up to %d tokens exceed the model's declared context of %d; going on",
               o->max_tokens, rr->lm.cfg.n_ctx_train);
    return MR_OK;
}

void mr_reranker_close(mr_recommender *r) {
    mr_reranker *rr = r->rr;
    if (!rr) return;
    if (rr->have_lm) llm_free(&rr->lm);
    if (rr->have_lora) llm_adapter_free(&rr->lora); /* after the model that applies it */
    tokenizer_free(rr->tok);
    free(rr->system);
    free(rr);
    r->rr = NULL;
}

const char *mr_rerank_model_name(const mr_recommender *r) { return r->rr ? r->rr->name : ""; }

mr_rerank_ws *mr_rerank_ws_new(const mr_recommender *r, mr_error *e) {
    const mr_reranker *rr = r->rr;
    if (!rr) {
        mr_fail(e, MR_ERR_USAGE, "no LLM is loaded");
        return NULL;
    }
    mr_rerank_ws *w = mr_calloc(1, sizeof *w, e);
    if (!w) return NULL;
    /* the OpenMP thread count is a per-thread setting: the thread that reranks
     * (a server's LLM worker) takes the configured one here */
    if (rr->threads > 0) omp_set_num_threads(rr->threads);
    w->logits = mr_alloc((size_t)rr->lm.cfg.n_vocab * sizeof(float), e);
    int rc = w->logits ? MR_OK : MR_ERR_INTERNAL;
    if (!rc) {
        rc = llm_state_init(&w->st, &rr->lm, rr->po.max_tokens, rr->po.max_tokens, LLM_STATE_SCORE, e);
        w->have_st = !rc;
    }
    if (rc) {
        mr_rerank_ws_free(w);
        return NULL;
    }
    return w;
}

void mr_rerank_ws_free(mr_rerank_ws *w) {
    if (!w) return;
    if (w->have_st) llm_state_free(&w->st);
    free(w->logits);
    free(w);
}

int mr_rerank(const mr_recommender *r, mr_rerank_ws *w, const int32_t *hist, int n_hist, int k, mr_rec_result *res,
              mr_error *e) {
    const mr_reranker *rr = r->rr;
    if (!rr || !w) return mr_fail(e, MR_ERR_USAGE, "no LLM is loaded");
    int nc = res->n < rr->n_cand ? res->n : rr->n_cand;
    if (nc >= 1) {
        int32_t cands[26];
        for (int i = 0; i < nc; i++) cands[i] = res->items[i].item_id;
        /* the prompt's history: the last po.history items, as `ranker eval` takes them */
        int take = n_hist < rr->po.history ? n_hist : rr->po.history;
        char *text = NULL;
        int32_t *ids = NULL;
        int64_t n = 0;
        int rc = mr_prompt_text(&r->d, &rr->rt, &rr->po, hist + n_hist - take, take, cands, nc, NULL, &text, e);
        if (!rc) rc = mr_prompt_ids(&rr->rt, text, rr->po.max_tokens, &ids, &n, e);
        free(text);
        if (!rc && n < 1) rc = mr_fail(e, MR_ERR_INTERNAL, "rerank: empty prompt");
        if (!rc) {
            int64_t last = n - 1;
            llm_state_reset(&w->st);
            rc = llm_forward(&w->st, ids, n, &last, 1, w->logits, e);
            if (!rc && mr_check_finite(w->logits, (size_t)rr->lm.cfg.n_vocab, "the model's output", "logits", e))
                rc = mr_fail(e, MR_ERR_INPUT, "the model gave NaN or Inf logits: NaN or Inf in its weights");
        }
        free(ids);
        if (rc) return rc;
        /* stable insertion sort by letter logit, higher first: ties keep the retriever's order */
        mr_rec_item top[26];
        for (int i = 0; i < nc; i++) {
            mr_rec_item it = res->items[i];
            it.score = w->logits[rr->letters[i]];
            int j = i;
            while (j > 0 && top[j - 1].score < it.score) {
                top[j] = top[j - 1];
                j--;
            }
            top[j] = it;
        }
        memcpy(res->items, top, (size_t)nc * sizeof top[0]);
    }
    res->ranked_by_llm = 1;
    if (res->n > k) res->n = k;
    return MR_OK;
}
