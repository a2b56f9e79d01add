/* LoRA instruction tuning of the ranker (paper section 3.4, DESIGN 7): prompts with
 * the true item among 19 random negatives, loss on the label letter and the end
 * token, AdamW with linear warm-up and decay, gradient accumulation and clipping,
 * validation NDCG@10 with early stopping; interruptible and resumable.
 *
 * Data parallel under mpirun (mllm4rec/dist.h, docs/scale.md): every rank holds the
 * model and walks the same global batches; rank r trains the examples b of a batch
 * of B in [B r / P, B (r + 1) / P) (the batch's positions, so which rank trains an
 * example never changes its draws: candidates are keyed by the example, dropout by
 * (step, b)); the LoRA gradients and the loss are summed over the ranks, every rank
 * takes the same AdamW step, and rank 0 alone writes the log, the checkpoint and the
 * adapter. Validation is sharded as eval is. The checkpoint holds nothing per rank,
 * so a run resumes on any rank count. */
#include "mllm4rec/dist.h"
#include "mllm4rec/ranker.h"

#include "nn/adamw.h"
#include "train/trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void mr_rank_train_opts_default(mr_rank_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->lora_r = 8;
    o->lora_alpha = 32.0f;
    o->lora_dropout = 0.05f;
    o->targets = (1u << LLM_LORA_Q) | (1u << LLM_LORA_V);
    o->lr = 1e-4;
    o->warmup = 100;
    o->batch = 16;
    o->max_steps = 0;
    o->val_every = 100;
    o->patience = 20;
    o->val_users = 0;
    o->weight_decay = 0.0;
    o->max_grad_norm = 1.0;
    o->seed = 42;
    o->mode = LLM_STATE_KEEP_ACTS;
}

/* ---- examples ---- */

typedef struct example_ref {
    int32_t user;
    int32_t pos; /* index of the answer in the user's sequence (>= 1, < training length) */
} example_ref;

static int64_t count_examples(const mr_dataset *d) {
    int64_t n = 0;
    for (int64_t u = 1; u <= d->n_users; u++) {
        int32_t len = d->seq_len[u] - 2; /* training part: all but val and test */
        if (len >= 2) n += len - 1;
    }
    return n;
}

/* The order of examples in an epoch: a seeded shuffle of the list in (user,
 * position) order, so that any epoch's order can be rebuilt on resuming. */
static void epoch_order(const mr_dataset *d, example_ref *ex, int64_t n, uint64_t seed, int64_t epoch) {
    int64_t k = 0;
    for (int64_t u = 1; u <= d->n_users; u++)
        for (int32_t p = 1; p < d->seq_len[u] - 2; p++) ex[k++] = (example_ref){(int32_t)u, p};
    mr_rng rng;
    mr_rng_seed(&rng, mr_hash2(seed, 0x4550u + (uint64_t)epoch));
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)mr_rng_below(&rng, (uint64_t)i + 1);
        example_ref t = ex[i];
        ex[i] = ex[j];
        ex[j] = t;
    }
}

static int in_list(const int32_t *a, int n, int32_t x) {
    for (int i = 0; i < n; i++)
        if (a[i] == x) return 1;
    return 0;
}

/* The candidates of one example: the answer and n_neg distinct random items that
 * are neither in the prefix nor the answer, shuffled; returns the answer's index.
 * Seeded by the example's identity, so a resumed run draws the same. */
static int example_candidates(const mr_dataset *d, const example_ref *x, int n_cand, uint64_t seed, int64_t epoch,
                              int32_t *cands) {
    const int32_t *seq = d->seqs[x->user];
    const int32_t answer = seq[x->pos];
    mr_rng rng;
    mr_rng_seed(&rng, mr_hash2(mr_hash2(seed, (uint64_t)epoch), ((uint64_t)x->user << 32) | (uint32_t)x->pos));
    cands[0] = answer;
    int n = 1;
    /* items available: every item not in the prefix; if there are too few, allow repeats */
    int64_t tries = 0;
    while (n < n_cand) {
        int32_t it = (int32_t)(1 + mr_rng_below(&rng, (uint64_t)d->n_items));
        tries++;
        if (it == answer || in_list(seq, x->pos, it)) continue;
        if (in_list(cands, n, it) && tries < 100000) continue;
        cands[n++] = it;
    }
    for (int i = n_cand - 1; i > 0; i--) {
        int j = (int)mr_rng_below(&rng, (uint64_t)i + 1);
        int32_t t = cands[i];
        cands[i] = cands[j];
        cands[j] = t;
    }
    for (int i = 0; i < n_cand; i++)
        if (cands[i] == answer) return i;
    return 0;
}

/* ---- checkpoint for resuming (the skeleton's format, train/trainer.h) ---- */

#define CKPT_FORMAT "mllm4rec-ranker-checkpoint-1"

typedef struct train_state_header {
    int64_t step, epoch, epoch_pos;
    int64_t best_step;
    int32_t bad_validations, stopped;
    double best_val, val_before, val_loss_before, best_val_loss, first_loss;
    long log_bytes; /* size of train.jsonl at this state */
} train_state_header;

static int state_write(const char *path, const train_state_header *h, const llm_adapter *l, const float *adam_m,
                       const float *adam_v, const mr_rank_train_opts *o, mr_error *e) {
    tr_ckpt_writer w;
    int rc = tr_ckpt_begin(&w, CKPT_FORMAT, e);
    if (rc) return rc;
    tr_ckpt_f32(&w, "adapter", l->buf, l->n_params);
    tr_ckpt_f32(&w, "adam_m", adam_m, l->n_params);
    tr_ckpt_f32(&w, "adam_v", adam_v, l->n_params);
    tr_ckpt_meta(&w, "n_params", "%lld", (long long)l->n_params);
    tr_ckpt_meta(&w, "r", "%d", l->r);
    tr_ckpt_meta(&w, "targets", "%u", (unsigned)l->targets);
    tr_ckpt_meta(&w, "seed", "%llu", (unsigned long long)o->seed);
    tr_ckpt_meta(&w, "step", "%lld", (long long)h->step);
    tr_ckpt_meta(&w, "epoch", "%lld", (long long)h->epoch);
    tr_ckpt_meta(&w, "epoch_pos", "%lld", (long long)h->epoch_pos);
    tr_ckpt_meta(&w, "best_step", "%lld", (long long)h->best_step);
    tr_ckpt_meta(&w, "bad_validations", "%d", (int)h->bad_validations);
    tr_ckpt_meta(&w, "stopped", "%d", (int)h->stopped);
    tr_ckpt_meta(&w, "best_val", "%.17g", h->best_val);
    tr_ckpt_meta(&w, "val_before", "%.17g", h->val_before);
    tr_ckpt_meta(&w, "val_loss_before", "%.17g", h->val_loss_before);
    tr_ckpt_meta(&w, "best_val_loss", "%.17g", h->best_val_loss);
    tr_ckpt_meta(&w, "first_loss", "%.17g", h->first_loss);
    tr_ckpt_meta(&w, "log_bytes", "%ld", h->log_bytes);
    return tr_ckpt_commit(&w, path, e);
}

static int state_read(const char *path, train_state_header *h, llm_adapter *l, float *adam_m, float *adam_v,
                      const mr_rank_train_opts *o, mr_error *e) {
    static const char *const formats[] = {CKPT_FORMAT, NULL};
    tr_ckpt c;
    int rc = tr_ckpt_open(&c, path, formats, NULL, "ranker", e);
    if (rc) return rc;
    char want[4][32];
    snprintf(want[0], 32, "%lld", (long long)l->n_params);
    snprintf(want[1], 32, "%d", l->r);
    snprintf(want[2], 32, "%u", (unsigned)l->targets);
    snprintf(want[3], 32, "%llu", (unsigned long long)o->seed);
    const char *keys[4] = {"n_params", "r", "targets", "seed"};
    for (int i = 0; i < 4 && !rc; i++) rc = tr_ckpt_same(&c, keys[i], want[i], 0, e);
    if (!rc) rc = tr_ckpt_read_f32(&c, "adapter", l->buf, l->n_params, e);
    if (!rc) rc = tr_ckpt_read_f32(&c, "adam_m", adam_m, l->n_params, e);
    if (!rc) rc = tr_ckpt_read_f32(&c, "adam_v", adam_v, l->n_params, e);
    int64_t bad = 0, stopped = 0, log_bytes = 0;
    if (!rc) rc = tr_ckpt_i64(&c, "step", &h->step, e);
    if (!rc) rc = tr_ckpt_i64(&c, "epoch", &h->epoch, e);
    if (!rc) rc = tr_ckpt_i64(&c, "epoch_pos", &h->epoch_pos, e);
    if (!rc) rc = tr_ckpt_i64(&c, "best_step", &h->best_step, e);
    if (!rc) rc = tr_ckpt_i64(&c, "bad_validations", &bad, e);
    if (!rc) rc = tr_ckpt_i64(&c, "stopped", &stopped, e);
    if (!rc) rc = tr_ckpt_num(&c, "best_val", &h->best_val, e);
    if (!rc) rc = tr_ckpt_num(&c, "val_before", &h->val_before, e);
    if (!rc) rc = tr_ckpt_num(&c, "val_loss_before", &h->val_loss_before, e);
    if (!rc) rc = tr_ckpt_num(&c, "best_val_loss", &h->best_val_loss, e);
    if (!rc) rc = tr_ckpt_num(&c, "first_loss", &h->first_loss, e);
    if (!rc) rc = tr_ckpt_i64(&c, "log_bytes", &log_bytes, e);
    tr_ckpt_close(&c);
    if (rc) return rc;
    h->bad_validations = (int32_t)bad;
    h->stopped = (int32_t)stopped;
    h->log_bytes = (long)log_bytes;
    if (h->step < 0 || h->epoch < 0 || h->epoch_pos < 0) return mr_fail(e, MR_ERR_INPUT, "%s: bad position", path);
    return MR_OK;
}

/* ---- optimizer ---- */

static double lr_at(const mr_rank_train_opts *o, int64_t step, int64_t total) {
    /* the reference's Trainer schedule: linear warm-up from 0, then linear decay to 0 */
    if (step < o->warmup) return o->lr * (double)step / (double)(o->warmup > 0 ? o->warmup : 1);
    if (total <= o->warmup) return o->lr;
    double f = (double)(total - step) / (double)(total - o->warmup);
    return o->lr * (f > 0 ? f : 0);
}

/* Clips the gradient norm, then one AdamW step (betas 0.9, 0.999, eps 1e-8), both
 * nn/adamw's. Returns the norm before clipping. */
static double adamw_step(llm_adapter *l, float *m, float *v, int64_t t, double lr, const mr_rank_train_opts *o) {
    const size_t n = (size_t)l->n_params;
    float *p = l->buf, *g = l->buf + n;
    const double norm = o->max_grad_norm > 0 ? clip_grad_norm(g, n, o->max_grad_norm) : grad_l2_norm(g, n);
    adamw_config ac = {.lr = (float)lr, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                       .weight_decay = (float)o->weight_decay};
    adamw_update(p, g, m, v, n, &ac, (float)o->weight_decay, (long)t);
    return norm;
}

/* ---- many ranks ---- */

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Every rank must hold the same adapter after each step (the summed gradient is the
 * same on every rank, and so is the AdamW step): a hash of its bytes compared over
 * the ranks (the maximum of h and of -h agree only when every rank has h). */
static int same_adapter_on_every_rank(const llm_adapter *l, int64_t step, mr_error *e) {
    if (mr_dist_size() == 1) return MR_OK;
    const unsigned char *p = (const unsigned char *)l->buf;
    uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */
    for (size_t i = 0; i < (size_t)l->n_params * sizeof(float); i++) h = (h ^ p[i]) * 0x100000001b3u;
    const int64_t mine = (int64_t)(h >> 2); /* 62 bits: -mine does not overflow */
    int64_t x[2] = {mine, -mine};
    int rc = mr_dist_allreduce_max_i64(x, 2, e);
    if (rc) return rc;
    if (x[0] != -x[1])
        return mr_fail(e, MR_ERR_INTERNAL, "ranker train: the ranks' adapters differ after step %lld", (long long)step);
    return MR_OK;
}

/* ---- the loop ---- */

static int validate(mr_ranker *r, const mr_rank_train_opts *o, double *ndcg, double *loss, mr_error *e) {
    mr_rank_eval ev;
    int rc = mr_ranker_evaluate(r, MR_SPLIT_VAL, o->val_users, 0, &ev, e);
    if (rc) return rc;
    *ndcg = mr_metrics_get(&ev.subset, MR_NDCG, 10);
    *loss = ev.letter_loss;
    mr_rank_eval_free(&ev);
    return MR_OK;
}

static int save_best(mr_ranker *r, const mr_rank_train_opts *o, const char *adapter_path, mr_error *e) {
    if (mr_dist_rank() != 0) return MR_OK; /* rank 0 alone writes */
    int rc = llm_adapter_write_gguf(r->lora, r->m, adapter_path, e);
    if (rc || !o->peft) return rc;
    char *dir = mr_path_join(o->out_dir, "peft", e);
    if (!dir) return e->code;
    rc = llm_adapter_write_peft(r->lora, r->m, dir, o->base_model_name, e);
    free(dir);
    return rc;
}

int mr_ranker_train(mr_ranker *r, const mr_rank_train_opts *o, mr_rank_train_result *res, mr_error *e) {
    memset(res, 0, sizeof *res);
    llm_adapter *l = r->lora;
    if (!l) return mr_fail(e, MR_ERR_INTERNAL, "ranker training without an adapter");
    if (o->batch <= 0 || o->val_every <= 0 || o->patience <= 0)
        return mr_fail(e, MR_ERR_USAGE, "--batch, --val-every and --patience must be positive");
    const mr_dataset *d = r->d;
    const int64_t n_ex = count_examples(d);
    if (n_ex == 0) return mr_fail(e, MR_ERR_INPUT, "the dataset has no training examples (sequences too short)");
    if (d->n_items < r->n_cand)
        return mr_fail(e, MR_ERR_INPUT, "%lld items are too few for %d candidates", (long long)d->n_items, r->n_cand);
    const int64_t steps_per_epoch = (n_ex + o->batch - 1) / o->batch;
    const int64_t total_steps = o->max_steps > 0 ? o->max_steps : steps_per_epoch;
    const int writer = mr_dist_rank() == 0; /* rank 0 alone writes the log and the checkpoint */
    int64_t my_first, my_count; /* this rank's examples of each batch: b in [my_first, my_first + my_count) */
    mr_dist_block_of(o->batch, mr_dist_rank(), &my_first, &my_count);
    int rc = mr_mkdir_p(o->out_dir, e);
    if (rc) return rc;
    char *adapter_path = mr_path_join(o->out_dir, "adapter.gguf", e);
    char *state_path = mr_path_join(o->out_dir, "checkpoint.safetensors", e);
    char *log_path = mr_path_join(o->out_dir, "train.jsonl", e);
    example_ref *ex = mr_alloc((size_t)n_ex * sizeof *ex, e);
    float *adam_m = mr_calloc((size_t)l->n_params, sizeof(float), e);
    float *adam_v = mr_calloc((size_t)l->n_params, sizeof(float), e);
    /* The batch's gradient is summed in double, example by example, and then over the
     * ranks: float sums in another order (one rank's share, then the other's) moved
     * the adapter by 2e-6 of its size after a few AdamW steps, which amplifies the
     * rounding of near-zero gradients; double sums round to the same floats whatever
     * the rank count. */
    double *grad_sum = mr_calloc((size_t)l->n_params, sizeof(double), e);
    int mode = o->mode;
    const int64_t max_T = r->po.max_tokens + 1;
    if (mode < 0) {
        const double keep = llm_train_state_bytes(r->m, max_T, LLM_STATE_KEEP_ACTS);
        const double ram = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
        mode = ram > 0 && keep > 0.25 * ram ? LLM_STATE_RECOMPUTE : LLM_STATE_KEEP_ACTS;
        if (mode == LLM_STATE_RECOMPUTE)
            mr_log("kept activations would take %.1f GB: recomputing each layer in the backward instead (%.1f GB)",
                   keep / 1e9, llm_train_state_bytes(r->m, max_T, LLM_STATE_RECOMPUTE) / 1e9);
    }
    llm_state ws_state, *ws = NULL;
    if (llm_state_init(&ws_state, r->m, max_T, max_T, mode, e) == MR_OK) ws = &ws_state;
    char *text = NULL;
    int32_t *ids = NULL;
    if (!adapter_path || !state_path || !log_path || !ex || !adam_m || !adam_v || !grad_sum || !ws) {
        rc = e->code ? e->code : MR_ERR_INTERNAL;
        goto done;
    }
    train_state_header h;
    memset(&h, 0, sizeof h);
    h.best_val = -1;
    const int resumed = o->resume && mr_file_exists(state_path);
    if (resumed) {
        if ((rc = state_read(state_path, &h, l, adam_m, adam_v, o, e))) goto done;
        mr_log("resuming at step %lld (best validation NDCG@10 %.4f at step %lld)", (long long)h.step, h.best_val,
               (long long)h.best_step);
        if (h.stopped) {
            mr_log("the run had already stopped early");
            goto finish;
        }
    } else {
        if (o->resume) mr_log("no %s yet: starting a new run", state_path);
        double ndcg, vloss;
        if ((rc = validate(r, o, &ndcg, &vloss, e))) goto done;
        h.val_before = h.best_val = ndcg;
        h.val_loss_before = h.best_val_loss = vloss;
        h.best_step = 0;
        mr_log("step 0: validation NDCG@10 %.4f, letter loss %.4f (before training)", ndcg, vloss);
        if ((rc = save_best(r, o, adapter_path, e))) goto done;
    }
    /* the JSON-lines log: cut back to the checkpoint on resuming, else started with
     * the validation of the untrained adapter */
    if (writer && (rc = tr_log_start(log_path, resumed, h.log_bytes, e))) goto done;
    if (writer && !resumed) {
        json_t *line = json_object();
        json_object_set_new(line, "step", json_integer(0));
        json_object_set_new(line, "lr", json_real(0));
        json_object_set_new(line, "train_loss", json_null());
        json_object_set_new(line, "grad_norm", json_null());
        json_object_set_new(line, "val_ndcg10", json_real(h.val_before));
        json_object_set_new(line, "val_letter_loss", json_real(h.val_loss_before));
        json_object_set_new(line, "seconds", json_real(0));
        if ((rc = tr_log_append(log_path, line, &h.log_bytes, e))) goto done;
    }
    epoch_order(d, ex, n_ex, o->seed, h.epoch);
    int32_t cands[26];
    const int32_t *seq;
    double loss_acc = 0, norm_acc = 0;
    int64_t loss_n = 0, tokens = 0, examples = 0;
    double train_s = 0, train_cpu = 0; /* in forwards, backwards and optimiser steps */
    const double t0 = mr_now();
    mr_progress prog;
    mr_progress_start(&prog, "ranker training", total_steps);
    while (h.step < total_steps) {
        memset(grad_sum, 0, (size_t)l->n_params * sizeof(double));
        double batch_loss = 0;
        const int64_t batch_epoch = h.epoch, batch_pos = h.epoch_pos;
        for (int b = 0; b < o->batch; b++) {
            if (o->stop && *o->stop) break;
            if (h.epoch_pos >= n_ex) {
                h.epoch++;
                h.epoch_pos = 0;
                epoch_order(d, ex, n_ex, o->seed, h.epoch);
            }
            const example_ref *x = &ex[h.epoch_pos++];
            if (b < my_first || b >= my_first + my_count) continue; /* another rank's */
            seq = d->seqs[x->user];
            const int label = example_candidates(d, x, r->n_cand, o->seed, h.epoch, cands);
            int start = x->pos - r->po.history;
            if (start < 0) start = 0;
            char letter[2] = {(char)('A' + label), 0};
            if ((rc = mr_prompt_text(d, r->tok, &r->po, seq + start, x->pos - start, cands, r->n_cand, letter, &text, e)))
                goto stop;
            int64_t n;
            if ((rc = mr_prompt_train_ids(r->tok, text, r->po.max_tokens, &ids, &n, e))) goto stop;
            free(text);
            text = NULL;
            int64_t pos[2] = {n - 3, n - 2};
            int32_t tgt[2] = {ids[n - 2], ids[n - 1]};
            llm_train_step st = {.ids = ids, .T = n, .loss_pos = pos, .loss_target = tgt, .n_loss = 2, .train = 1,
                                 .dropout_seed = mr_hash2(o->seed, (uint64_t)h.step * 1024 + (uint64_t)b)};
            const double ts = mr_now(), cs = cpu_now();
            llm_adapter_zero_grad(l);
            rc = llm_train_step_run(ws, &st, 1.0f / (float)o->batch, e);
            const float *g = l->buf + l->n_params;
            for (int64_t i = 0; !rc && i < l->n_params; i++) grad_sum[i] += g[i];
            train_s += mr_now() - ts;
            train_cpu += cpu_now() - cs;
            if (rc) goto stop;
            free(ids);
            ids = NULL;
            batch_loss += st.loss;
            tokens += n;
            examples++;
        }
        /* interrupted here: rank 0 saves the last step's state (nothing of it changes
         * within a batch) before it waits for the others' examples, since mpirun's
         * SIGTERM is followed by a SIGKILL (docs/scale.md) */
        const int stopping = o->stop && *o->stop;
        int saved = 0;
        if (stopping && writer) {
            h.epoch = batch_epoch;
            h.epoch_pos = batch_pos;
            if ((rc = state_write(state_path, &h, l, adam_m, adam_v, o, e))) goto stop;
            saved = 1;
        }
        /* the loss and whether any rank was interrupted, summed over the ranks */
        double sums[2] = {batch_loss, stopping ? 1.0 : 0.0};
        if ((rc = mr_dist_allreduce_sum_f64(sums, 2, e))) goto stop;
        batch_loss = sums[0];
        if (sums[1] > 0) {
            /* the half-accumulated batch is dropped: the saved state is the last
             * step's, so a resumed run repeats exactly what an uninterrupted one does */
            res->interrupted = 1;
            h.epoch = batch_epoch;
            h.epoch_pos = batch_pos;
            if (writer && !saved) rc = state_write(state_path, &h, l, adam_m, adam_v, o, e);
            mr_log("interrupted at step %lld: state saved, continue with --resume", (long long)h.step);
            if (!rc) rc = mr_dist_barrier(e); /* no rank ends the job before rank 0 has written */
            if (!rc) mr_dist_agree_exit(); /* every rank stops here: the job ends without an abort */
            break;
        }
        /* the batch's gradient: the sum of every rank's share */
        if ((rc = mr_dist_allreduce_sum_f64(grad_sum, (size_t)l->n_params, e))) goto stop;
        for (int64_t i = 0; i < l->n_params; i++) l->buf[l->n_params + i] = (float)grad_sum[i];
        const double lr = lr_at(o, h.step, total_steps);
        const double ts = mr_now(), cs = cpu_now();
        const double norm = adamw_step(l, adam_m, adam_v, h.step + 1, lr, o);
        train_s += mr_now() - ts;
        train_cpu += cpu_now() - cs;
        h.step++;
        if ((rc = same_adapter_on_every_rank(l, h.step, e))) goto stop;
        batch_loss /= o->batch;
        if (h.step == 1) h.first_loss = batch_loss;
        loss_acc += batch_loss;
        norm_acc += norm;
        loss_n++;
        char extra[96];
        snprintf(extra, sizeof extra, "loss %.4f", batch_loss);
        mr_progress_update(&prog, h.step, extra);
        if (h.step % o->val_every == 0 || h.step == total_steps) {
            double ndcg, vloss;
            if ((rc = validate(r, o, &ndcg, &vloss, e))) goto stop;
            const double train_loss = loss_acc / (double)loss_n;
            if (res->first_train_loss == 0) res->first_train_loss = train_loss;
            res->last_train_loss = train_loss;
            json_t *line = json_object();
            json_object_set_new(line, "step", json_integer(h.step));
            json_object_set_new(line, "lr", json_real(lr));
            json_object_set_new(line, "train_loss", json_real(train_loss));
            json_object_set_new(line, "grad_norm", json_real(norm_acc / (double)loss_n));
            json_object_set_new(line, "val_ndcg10", json_real(ndcg));
            json_object_set_new(line, "val_letter_loss", json_real(vloss));
            json_object_set_new(line, "seconds", json_real(mr_now() - t0));
            if (!writer)
                json_decref(line);
            else if ((rc = tr_log_append(log_path, line, &h.log_bytes, e)))
                goto stop;
            mr_log("step %lld: train loss %.4f, validation NDCG@10 %.4f, letter loss %.4f", (long long)h.step,
                   train_loss, ndcg, vloss);
            loss_acc = norm_acc = 0;
            loss_n = 0;
            if (ndcg > h.best_val) {
                h.best_val = ndcg;
                h.best_val_loss = vloss;
                h.best_step = h.step;
                h.bad_validations = 0;
                if ((rc = save_best(r, o, adapter_path, e))) goto stop;
            } else if (++h.bad_validations >= o->patience) {
                h.stopped = 1;
                mr_log("no improvement in %d validations: stopping (best step %lld)", o->patience,
                       (long long)h.best_step);
            }
            if (writer && (rc = state_write(state_path, &h, l, adam_m, adam_v, o, e))) goto stop;
            if (h.stopped) break;
            if (o->stop_after > 0 && h.step >= o->stop_after) break;
        }
    }
stop:
    mr_progress_end(&prog);
    if (rc) goto done;
    {
        /* the job's throughput: every rank's examples and tokens, over the slowest rank's
         * time in training steps; the busiest rank's CPU time in them (the speed on free
         * cores: MPI's busy waiting in the sums is not in it) */
        double counts[2] = {(double)examples, (double)tokens};
        int64_t us[2] = {(int64_t)(train_s * 1e6), (int64_t)(train_cpu * 1e6)};
        if ((rc = mr_dist_allreduce_sum_f64(counts, 2, e)) || (rc = mr_dist_allreduce_max_i64(us, 2, e))) goto done;
        if (mr_dist_size() > 1) {
            examples = (int64_t)counts[0];
            tokens = (int64_t)counts[1];
            train_s = (double)us[0] * 1e-6;
            train_cpu = (double)us[1] * 1e-6;
        }
    }
    res->seconds = mr_now() - t0;
    res->train_cpu_seconds = train_cpu;
    mr_log("trained %lld examples (%lld tokens) in %.3f s on %d rank%s (%.3f examples/s; CPU time in training steps "
           "%.3f s on the busiest rank)",
           (long long)examples, (long long)tokens, res->seconds, mr_dist_size(), mr_dist_size() > 1 ? "s" : "",
           res->seconds > 0 ? (double)examples / res->seconds : 0.0, train_cpu);
    res->examples_per_second = res->seconds > 0 ? examples / res->seconds : 0;
    res->tokens_per_second = res->seconds > 0 ? tokens / res->seconds : 0;
    res->train_seconds = train_s;
    res->train_tokens_per_second = train_s > 0 ? tokens / train_s : 0;
finish:
    res->steps = h.step;
    res->val_ndcg10_before = h.val_before;
    res->best_val_ndcg10 = h.best_val;
    res->val_loss_before = h.val_loss_before;
    res->best_val_loss = h.best_val_loss;
    res->best_step = h.best_step;
    res->stopped_early = h.stopped;
    if (res->first_train_loss == 0) res->first_train_loss = h.first_loss;
    /* leave the best adapter in r->lora (once rank 0 has written it) */
    if ((rc = mr_dist_barrier(e))) goto done;
    {
        llm_adapter best;
        if ((rc = llm_adapter_read_gguf(&best, r->m, adapter_path, e))) goto done;
        rc = best.n_params == l->n_params ? MR_OK
                                          : mr_fail(e, MR_ERR_INTERNAL, "%s: not the adapter being trained", adapter_path);
        if (!rc) memcpy(l->buf, best.buf, (size_t)l->n_params * sizeof(float));
        llm_adapter_free(&best);
        if (rc) goto done;
    }
done:
    free(text);
    free(ids);
    if (ws) llm_state_free(ws);
    free(adam_m);
    free(adam_v);
    free(grad_sum);
    free(ex);
    free(adapter_path);
    free(state_path);
    free(log_path);
    return rc;
}
