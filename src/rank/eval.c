/* One-pass verbalizer ranking and its evaluation (paper section 3.5, DESIGN 7):
 * the score of candidate i is the logit, at the last prompt position, of the token
 * of its letter; users whose true item the retriever missed are not ranked and
 * count with the retriever's metrics in the overall figures. */
#include "mllm4rec/dist.h"
#include "mllm4rec/llm.h"
#include "mllm4rec/ranker.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const int EVAL_KS[] = {1, 5, 10, 20};

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
#define N_EVAL_KS 4

int mr_ranker_init(mr_ranker *r, const mr_dataset *d, const mr_candidates *c, const mr_rank_tok *tok,
                   const mr_prompt_opts *po, int n_cand, llm_model *m, llm_adapter *lora, mr_error *e) {
    memset(r, 0, sizeof *r);
    if (n_cand <= 0 || n_cand > 26)
        return mr_fail(e, MR_ERR_USAGE, "--num-candidates %d: letters A..Z allow 1..26", n_cand);
    if (n_cand > c->k)
        return mr_fail(e, MR_ERR_INPUT, "--num-candidates %d but the candidates file has %d per user", n_cand, c->k);
    if (!po->system) return mr_fail(e, MR_ERR_INTERNAL, "ranker: no instruction line");
    r->d = d;
    r->cands = c;
    r->tok = tok;
    r->po = *po;
    r->n_cand = n_cand;
    r->m = m;
    r->lora = lora;
    int rc = mr_verbalizer_tokens(tok, n_cand, r->letters, e);
    if (rc) return rc;
    for (int i = 0; i < n_cand; i++)
        if (r->letters[i] >= m->cfg.n_vocab)
            return mr_fail(e, MR_ERR_INPUT, "verbalizer token %d of letter %c is outside the model's vocabulary (%d)",
                           r->letters[i], 'A' + i, m->cfg.n_vocab);
    if (!(r->state = mr_calloc(1, sizeof *r->state, e))) return e->code;
    if ((rc = llm_state_init(r->state, m, po->max_tokens, po->max_tokens, LLM_STATE_SCORE, e))) {
        free(r->state);
        r->state = NULL;
    }
    return rc;
}

void mr_ranker_free(mr_ranker *r) {
    if (r->state) {
        llm_state_free(r->state);
        free(r->state);
    }
    memset(r, 0, sizeof *r);
}

int mr_ranker_load_model(llm_model *m, llm_adapter *ad, int *have_adapter, const char *model_path,
                         const char *adapter_path, mr_error *e) {
    *have_adapter = 0;
    memset(ad, 0, sizeof *ad);
    int rc = llm_load(m, model_path, e);
    if (rc || !adapter_path) return rc;
    rc = mr_is_dir(adapter_path) ? llm_adapter_read_peft(ad, m, adapter_path, e)
                                 : llm_adapter_read_gguf(ad, m, adapter_path, e);
    if (!rc && (rc = llm_adapter_attach(m, ad, 1.0f, e))) llm_adapter_free(ad);
    if (rc) {
        llm_free(m);
        return rc;
    }
    *have_adapter = 1;
    return MR_OK;
}

int mr_ranker_score_ids(mr_ranker *r, const int32_t *ids, int64_t n, float *scores, float *logits, mr_error *e) {
    const int64_t last = n - 1;
    llm_state_reset(r->state);
    int rc = llm_forward(r->state, ids, n, &last, 1, logits, e);
    /* NaN or Inf in a base model's weights is not looked for at load (multi-GB matrices
     * stay mapped and unconverted, and the load must stay cheap): it reaches the logits,
     * which are checked here before any score is used. Adapters are checked at load. */
    if (!rc && mr_check_finite(logits, (size_t)r->m->cfg.n_vocab, "the model's output", "logits", e))
        rc = mr_fail(e, MR_ERR_INPUT, "the model gave NaN or Inf logits: NaN or Inf in its weights");
    if (!rc)
        for (int i = 0; i < r->n_cand; i++) scores[i] = logits[r->letters[i]];
    return rc;
}

int mr_ranker_prompt(const mr_ranker *r, int split, int32_t user_id, char **text, int32_t **ids, int64_t *n,
                     mr_error *e) {
    *text = NULL;
    if (ids) *ids = NULL;
    const mr_cand_row *row = mr_candidates_get(r->cands, split, user_id);
    if (!row)
        return mr_fail(e, MR_ERR_INPUT, "user %d has no %s row in the candidates file", user_id,
                       split == MR_SPLIT_TEST ? "test" : "val");
    const int32_t *hist;
    int n_hist;
    int rc = mr_prompt_history(r->d, user_id, split, r->po.history, &hist, &n_hist, NULL, e);
    if (rc) return rc;
    if ((rc = mr_prompt_text(r->d, r->tok, &r->po, hist, n_hist, row->items, r->n_cand, NULL, text, e))) return rc;
    if (ids && (rc = mr_prompt_ids(r->tok, *text, r->po.max_tokens, ids, n, e))) {
        free(*text);
        *text = NULL;
    }
    return rc;
}

int mr_ranker_score(mr_ranker *r, int split, int32_t user_id, float *scores, int label_idx, double *loss,
                    mr_error *e) {
    char *text;
    int32_t *ids;
    int64_t n;
    int rc = mr_ranker_prompt(r, split, user_id, &text, &ids, &n, e);
    if (rc) return rc;
    free(text);
    r->last_tokens = n;
    const int V = r->m->cfg.n_vocab;
    float *logits = mr_alloc((size_t)V * sizeof(float), e);
    if (!logits) {
        free(ids);
        return e->code;
    }
    rc = mr_ranker_score_ids(r, ids, n, scores, logits, e);
    if (!rc && loss && label_idx >= 0 && label_idx < r->n_cand) {
        float mx = logits[0];
        for (int j = 1; j < V; j++) mx = logits[j] > mx ? logits[j] : mx;
        double sum = 0;
        for (int j = 0; j < V; j++) sum += exp((double)(logits[j] - mx));
        *loss = mx + log(sum) - logits[r->letters[label_idx]];
    }
    free(logits);
    free(ids);
    return rc;
}

void mr_rank_eval_free(mr_rank_eval *ev) {
    mr_metrics_free(&ev->subset);
    mr_metrics_free(&ev->retr_subset);
    mr_metrics_free(&ev->retr_other);
    mr_metrics_free(&ev->overall);
    mr_metrics_free(&ev->retr_overall);
}

int mr_ranker_evaluate(mr_ranker *r, int split, int64_t max_users, int show_progress, mr_rank_eval *ev, mr_error *e) {
    memset(ev, 0, sizeof *ev);
    int rc;
    if ((rc = mr_metrics_init(&ev->subset, EVAL_KS, N_EVAL_KS, e)) ||
        (rc = mr_metrics_init(&ev->retr_subset, EVAL_KS, N_EVAL_KS, e)) ||
        (rc = mr_metrics_init(&ev->retr_other, EVAL_KS, N_EVAL_KS, e)) ||
        (rc = mr_metrics_init(&ev->overall, EVAL_KS, N_EVAL_KS, e)) ||
        (rc = mr_metrics_init(&ev->retr_overall, EVAL_KS, N_EVAL_KS, e)))
        return rc;
    const mr_candidates *c = r->cands;
    const int nc = r->n_cand;
    /* The users the LLM ranks, in id order (so a cap takes the same users every time);
     * the others count with the retriever's metrics. Every rank lists them alike. */
    int64_t n_sub = 0;
    int32_t *sub = mr_alloc(sizeof(int32_t) * (size_t)(c->n_rows > 0 ? c->n_rows : 1), e);
    if (!sub) {
        mr_rank_eval_free(ev);
        return e->code;
    }
    for (int32_t u = 1; u <= c->max_user; u++) {
        const mr_cand_row *row = mr_candidates_get(c, split, u);
        if (!row) continue;
        if (!mr_cand_row_hit(row, nc)) {
            if (max_users > 0) continue; /* a capped validation looks at the subset only */
            /* the retriever's metric over all items: its whole row (its top c->k), not
             * the n_cand the ranker sees, or Recall@10 with 5 candidates is Recall@5 */
            mr_metrics_add_ranked(&ev->retr_other, row->items, c->k, &row->label, 1);
            ev->n_users++;
            continue;
        }
        if (max_users > 0 && n_sub >= max_users) continue;
        sub[n_sub++] = u;
    }
    /* This rank's block of them (mllm4rec/dist.h): per user the letters' scores and
     * the letter loss, nc + 1 doubles (floats convert exactly), gathered on every rank
     * in user order, so the sums below run in the same order for any rank count. */
    int64_t first, count;
    mr_dist_block(n_sub, &first, &count);
    const size_t rec = (size_t)nc + 1;
    double *mine = mr_alloc(sizeof(double) * rec * (size_t)(count > 0 ? count : 1), e);
    if (!mine) rc = e->code;
    mr_progress prog;
    if (show_progress)
        mr_progress_start(&prog, split == MR_SPLIT_TEST ? "ranking test users" : "ranking val users", count);
    /* the ranks start ranking together: the phase's time is the ranking's, not the
     * ranks' skew in starting and loading */
    if (!rc) rc = mr_dist_barrier(e);
    const double t0 = mr_now(), c0 = cpu_now();
    int64_t tokens = 0;
    float scores[26];
    for (int64_t k = 0; k < count && !rc; k++) {
        const int32_t u = sub[first + k];
        const mr_cand_row *row = mr_candidates_get(c, split, u);
        int32_t label_idx = 0;
        for (int i = 0; i < nc; i++)
            if (row->items[i] == row->label) {
                label_idx = i;
                break;
            }
        double loss = 0;
        if ((rc = mr_ranker_score(r, split, u, scores, label_idx, &loss, e))) break;
        tokens += r->last_tokens;
        for (int i = 0; i < nc; i++) mine[(size_t)k * rec + i] = scores[i];
        mine[(size_t)k * rec + nc] = loss;
        if (show_progress) mr_progress_update(&prog, k + 1, NULL);
    }
    /* the ranks' shares, largest and smallest (negated maxima): prompts, their tokens
     * and the CPU time (microseconds) of scoring them; the busiest rank's CPU time is
     * the speed on free cores */
    const int64_t cpu_us = (int64_t)((cpu_now() - c0) * 1e6);
    int64_t share[6] = {count, tokens, cpu_us, -count, -tokens, -cpu_us};
    if (!rc) rc = mr_dist_allreduce_max_i64(share, 6, e);
    ev->cpu_seconds = (double)share[2] * 1e-6;
    if (!rc && show_progress && mr_dist_size() > 1)
        mr_log("ranks' shares (least / most): %lld / %lld prompts, %lld / %lld tokens, %.3f / %.3f CPU s",
               (long long)-share[3], (long long)share[0], (long long)-share[4], (long long)share[1],
               (double)-share[5] * 1e-6, (double)share[2] * 1e-6);
    char *all = NULL;
    size_t n_all = 0;
    if (!rc) rc = mr_dist_gather(mine, sizeof(double) * rec * (size_t)count, 1, &all, &n_all, e);
    if (!rc && n_all != sizeof(double) * rec * (size_t)n_sub)
        rc = mr_fail(e, MR_ERR_INTERNAL, "ranker eval: gathered %zu bytes for %lld users", n_all, (long long)n_sub);
    for (int64_t k = 0; k < n_sub && !rc; k++) {
        const mr_cand_row *row = mr_candidates_get(c, split, sub[k]);
        const double *v = (const double *)all + (size_t)k * rec;
        int32_t label_idx = 0;
        for (int i = 0; i < nc; i++) scores[i] = (float)v[i];
        for (int i = 0; i < nc; i++)
            if (row->items[i] == row->label) {
                label_idx = i;
                break;
            }
        ev->letter_loss += v[nc];
        if ((rc = mr_metrics_add_scores(&ev->subset, scores, nc, NULL, 0, &label_idx, 1, e))) break;
        mr_metrics_add_ranked(&ev->retr_subset, row->items, c->k, &row->label, 1);
        ev->n_subset++;
        ev->n_users++;
    }
    free(all);
    free(mine);
    free(sub);
    if (show_progress) mr_progress_end(&prog);
    ev->seconds = mr_now() - t0;
    if (ev->n_subset) ev->letter_loss /= (double)ev->n_subset;
    if (!rc && ev->n_users == 0)
        rc = mr_fail(e, MR_ERR_INPUT, "the candidates file has no %s rows", split == MR_SPLIT_TEST ? "test" : "val");
    if (!rc) rc = mr_metrics_combine(&ev->overall, &ev->subset, &ev->retr_other, e);
    if (!rc) rc = mr_metrics_combine(&ev->retr_overall, &ev->retr_subset, &ev->retr_other, e);
    if (rc) mr_rank_eval_free(ev);
    return rc;
}

int mr_rank_eval_write_json(const mr_rank_eval *ev, const char *split_name, const char *path, mr_error *e) {
    json_t *root = json_object(), *sp = json_object();
    if (!root || !sp) {
        json_decref(root);
        json_decref(sp);
        return mr_fail(e, MR_ERR_INTERNAL, "out of memory");
    }
    json_object_set_new(root, split_name, sp);
    json_object_set_new(sp, "subset", mr_metrics_to_json(&ev->subset));
    json_object_set_new(sp, "overall", mr_metrics_to_json(&ev->overall));
    json_object_set_new(sp, "retriever_subset", mr_metrics_to_json(&ev->retr_subset));
    json_object_set_new(sp, "retriever_overall", mr_metrics_to_json(&ev->retr_overall));
    json_object_set_new(sp, "users", json_integer(ev->n_users));
    json_object_set_new(sp, "subset_users", json_integer(ev->n_subset));
    json_object_set_new(sp, "letter_loss", json_real(ev->letter_loss));
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(root);
    if (!text) return mr_fail(e, MR_ERR_INTERNAL, "out of memory");
    size_t len = strlen(text);
    text[len] = '\0';
    char *buf = mr_realloc(text, len + 2, e);
    if (!buf) {
        free(text);
        return e->code;
    }
    buf[len] = '\n';
    buf[len + 1] = '\0';
    int rc = mr_write_file_atomic(path, buf, len + 1, e);
    free(buf);
    return rc;
}

void mr_rank_eval_print(FILE *out, const mr_rank_eval *ev, const char *split_name) {
    fprintf(out, "%s: %lld users, %lld with the true item among the candidates (ranked by the LLM)\n\n", split_name,
            (long long)ev->n_users, (long long)ev->n_subset);
    fprintf(out, "| metric | ranker (subset) | retriever (subset) | ranker (overall) | retriever (overall) |\n");
    fprintf(out, "|---|---:|---:|---:|---:|\n");
    static const char *names[3] = {"Recall", "MRR", "NDCG"};
    for (int ki = 0; ki < N_EVAL_KS; ki++) {
        if (EVAL_KS[ki] == 20) continue; /* with 20 candidates @20 only restates the subset's share */
        for (int kind = 0; kind < 3; kind++) {
            int k = EVAL_KS[ki];
            fprintf(out, "| %s@%d | %.4f | %.4f | %.4f | %.4f |\n", names[kind], k,
                    mr_metrics_get(&ev->subset, (mr_metric_kind)kind, k),
                    mr_metrics_get(&ev->retr_subset, (mr_metric_kind)kind, k),
                    mr_metrics_get(&ev->overall, (mr_metric_kind)kind, k),
                    mr_metrics_get(&ev->retr_overall, (mr_metric_kind)kind, k));
        }
    }
}
