/* Retriever training (any architecture, through m->arch) as LlamaRec trains LRURec: sliding windows over the training
 * part of each user's sequence, cross-entropy over all items at every position,
 * AdamW (eps 1e-9, decay on names without "bias" / "layer_norm"), gradient norm
 * clipped, validation on Recall@10 with early stopping and the best model kept.
 * Resumable: the checkpoint holds everything the rest of the run depends on. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/retriever.h"
#include "mllm4rec/safetensors.h"
#include "nn/adamw.h"
#include "train/trainer.h"

/* Per-architecture defaults. LlamaRec's settings where they apply (hidden 64,
 * dropout 0.2, max length and batch by dataset, lr 1e-3, weight decay 0.01, 2
 * blocks, 2 heads, attention dropout 0.2, mask probability 0.2: its config.py for
 * LRURec, the lineage of Yueeeeeeee/RecSys-Extraction-Attack's SASRec / BERT4Rec /
 * NARM; NARM's proj_dropout is that code's bert_attn_dropout, so 0.2 too); GRU4Rec
 * and NARM run one GRU layer (hidasib/GRU4Rec_PyTorch_Official's and
 * NARM's single layer); STOSA as zfan20/STOSA's README runs Beauty (1 layer, 4 heads,
 * attention dropout 0, weight decay 0, pvn_weight 0.005). BERT4Rec's
 * bert_max_predictions is RecSys-Extraction-Attack's templates.py per dataset
 * (LlamaRec's config.py has none): 40 for MovieLens (its ml-1m, max length 200, as
 * our ml-100k role), 30 for beauty, 25 for games, 20 otherwise (ml-20m, steam,
 * yoochoose). STOSA's user_margins table has one row per user of the dataset. */
static int bert_max_predictions(const char *role) {
    if (!role) return 20;
    if (!strcmp(role, "ml-100k")) return 40;
    if (!strcmp(role, "beauty")) return 30;
    if (!strcmp(role, "games")) return 25;
    return 20;
}
typedef struct arch_defaults {
    const char *arch;
    int blocks, heads;
    float attn_dropout, mask_prob, reg_weight;
    double weight_decay;
} arch_defaults;

static const arch_defaults ARCH_DEFAULTS[] = {
    {"lru", 2, 0, 0.0f, 0.0f, 0.0f, 0.01},
    {"sasrec", 2, 2, 0.2f, 0.0f, 0.0f, 0.01},
    {"bert4rec", 2, 2, 0.2f, 0.2f, 0.0f, 0.01},
    {"gru4rec", 1, 0, 0.0f, 0.0f, 0.0f, 0.01},
    {"narm", 1, 0, 0.2f, 0.0f, 0.0f, 0.01},
    {"stosa", 1, 4, 0.0f, 0.0f, 0.005f, 0.0},
};

int rt_train_defaults(rt_train_options *o, const mr_dataset *d, const char *arch, mr_error *e) {
    memset(o, 0, sizeof *o);
    const arch_defaults *ad = NULL;
    for (size_t i = 0; i < sizeof ARCH_DEFAULTS / sizeof ARCH_DEFAULTS[0]; i++)
        if (!strcmp(ARCH_DEFAULTS[i].arch, arch)) ad = &ARCH_DEFAULTS[i];
    if (!ad || !rt_arch_find(arch)) {
        char names[256];
        rt_arch_names(names, sizeof names);
        return mr_fail(e, MR_ERR_USAGE, "--arch %s: %s (this build has: %s)", arch,
                       ad ? "not built yet" : "unknown architecture", names);
    }
    const char *role = d ? mr_dataset_role(d) : NULL;
    int movielens = role && !strcmp(role, "ml-100k");
    snprintf(o->model.arch, sizeof o->model.arch, "%s", arch);
    o->model.hidden = 64;
    o->model.blocks = ad->blocks;
    o->model.heads = ad->heads;
    o->model.dropout = 0.2f;
    o->model.attn_dropout = ad->attn_dropout;
    o->model.mask_prob = ad->mask_prob;
    o->model.reg_weight = ad->reg_weight;
    o->model.max_predictions = !strcmp(arch, "bert4rec") ? bert_max_predictions(role) : 0;
    o->model.n_users = !strcmp(arch, "stosa") && d ? (int)d->n_users : 0;
    o->model.max_len = movielens ? 200 : 50;
    o->batch = movielens ? 16 : 64;
    o->lr = 1e-3;
    o->weight_decay = ad->weight_decay;
    o->clip = 5.0;
    o->val_every = 500;
    o->patience = 20;
    o->max_epochs = 500;
    o->seed = 42;
    o->threads = 2;
    return MR_OK;
}

/* A training window: items seqs[user][start .. start + len). */
typedef struct window {
    int32_t user, start, len;
} window;

/* The reference's LRUTrainDataset with sliding step = max_len: a training sequence
 * shorter than 2 max_len is one window (the whole sequence); a longer one gives
 * windows of max_len items ending at the end, stepping back by max_len, while the
 * start stays >= 0. */
static window *build_windows(const mr_dataset *d, int L, int64_t *n_out, mr_error *e) {
    int64_t n = 0;
    for (int64_t u = 1; u <= d->n_users; u++) {
        int len = d->seq_len[u] - 2;
        if (len < 1) continue;
        n += len < 2 * L ? 1 : (len - L) / L + 1;
    }
    window *w = mr_alloc((size_t)(n ? n : 1) * sizeof *w, e);
    if (!w) return NULL;
    int64_t k = 0;
    for (int64_t u = 1; u <= d->n_users; u++) {
        int len = d->seq_len[u] - 2;
        if (len < 1) continue;
        if (len < 2 * L) {
            w[k++] = (window){(int32_t)u, 0, len};
        } else {
            for (int s = len - L; s >= 0; s -= L) w[k++] = (window){(int32_t)u, s, L};
        }
    }
    *n_out = n;
    return w;
}

/* Rows of one window: the labels are its last min(len, L) items, each row's input
 * the item before its label (0 when there is none), as the reference's left padding
 * gives (rows with label 0 are left out: they feed nothing). */
static int window_rows(const mr_dataset *d, const window *w, int L, int32_t *tokens, int32_t *labels) {
    const int32_t *items = d->seqs[w->user] + w->start;
    int n = w->len, r = n < L ? n : L;
    for (int j = 0; j < r; j++) {
        int at = n - r + j;
        labels[j] = items[at];
        tokens[j] = at > 0 ? items[at - 1] : 0;
    }
    return r;
}

/* Training state that a checkpoint restores. */
typedef struct train_state {
    long iter, adam_step;
    int epoch;
    int64_t pos;     /* next batch index within the epoch */
    int val_in_epoch;
    double best;     /* best validation Recall@10, -1 before any */
    long best_iter;
    int bad;         /* validations since the last improvement */
    int stopped;     /* early stopping fired */
    double loss_sum; /* training loss since the last validation */
    long loss_n;
    long log_bytes;  /* size of train.jsonl at the checkpoint */
    double elapsed;  /* training seconds before this process */
} train_state;

typedef struct trainer {
    const mr_dataset *d;
    const rt_train_options *o;
    rt_model m;
    float *adam_m, *adam_v, *best_params;
    window *windows;
    int64_t n_windows, n_batches;
    int32_t *perm; /* window order of the current epoch */
    mr_rng rng;    /* shuffles; its state is saved */
    train_state s;
    char *ckpt_path, *log_path, *model_path, *metrics_path, *cand_path;
} trainer;

static int64_t batches_per_epoch(const trainer *t) { return (t->n_windows + t->o->batch - 1) / t->o->batch; }

/* Draws the window order of the epoch that starts now. It is drawn when the epoch
 * starts (before the validation and checkpoint that may precede its first batch), so a
 * checkpoint always holds the order its epoch uses: never an order still to be drawn. */
static void start_epoch(trainer *t) {
    t->s.val_in_epoch = 0;
    for (int64_t i = 0; i < t->n_windows; i++) t->perm[i] = (int32_t)i;
    for (int64_t i = t->n_windows - 1; i > 0; i--) {
        int64_t j = (int64_t)mr_rng_below(&t->rng, (uint64_t)i + 1);
        int32_t x = t->perm[i];
        t->perm[i] = t->perm[j];
        t->perm[j] = x;
    }
}

/* ---- checkpoint (the skeleton's format, train/trainer.h) ---- */

static const char *const CKPT_FORMATS[] = {"mllm4rec-lru-checkpoint-1", "mllm4rec-lru-checkpoint-2",
                                           "mllm4rec-retriever-checkpoint-3", NULL};

static int save_checkpoint(trainer *t, mr_error *e) {
    tr_ckpt_writer w;
    int rc = tr_ckpt_begin(&w, CKPT_FORMATS[2], e);
    if (rc) return rc;
    int64_t np = (int64_t)t->m.n_params;
    tr_ckpt_f32(&w, "params", t->m.params, np);
    tr_ckpt_f32(&w, "adam_m", t->adam_m, np);
    tr_ckpt_f32(&w, "adam_v", t->adam_v, np);
    tr_ckpt_f32(&w, "best_params", t->best_params, np);
    tr_ckpt_i32(&w, "epoch_order", t->perm, t->n_windows);
    const rt_train_options *o = t->o;
    const train_state *s = &t->s;
    tr_ckpt_meta(&w, "arch", "%s", o->model.arch);
    tr_ckpt_meta(&w, "n_items", "%d", t->m.cfg.n_items);
    tr_ckpt_meta(&w, "hidden", "%d", o->model.hidden);
    tr_ckpt_meta(&w, "blocks", "%d", o->model.blocks);
    tr_ckpt_meta(&w, "max_len", "%d", o->model.max_len);
    tr_ckpt_meta(&w, "dropout", "%.9g", (double)o->model.dropout);
    tr_ckpt_meta(&w, "heads", "%d", o->model.heads);
    tr_ckpt_meta(&w, "attn_dropout", "%.9g", (double)o->model.attn_dropout);
    tr_ckpt_meta(&w, "mask_prob", "%.9g", (double)o->model.mask_prob);
    tr_ckpt_meta(&w, "reg_weight", "%.9g", (double)o->model.reg_weight);
    tr_ckpt_meta(&w, "max_predictions", "%d", o->model.max_predictions);
    tr_ckpt_meta(&w, "batch", "%d", o->batch);
    tr_ckpt_meta(&w, "lr", "%.17g", o->lr);
    tr_ckpt_meta(&w, "weight_decay", "%.17g", o->weight_decay);
    tr_ckpt_meta(&w, "seed", "%llu", (unsigned long long)o->seed);
    tr_ckpt_meta(&w, "iter", "%ld", s->iter);
    tr_ckpt_meta(&w, "adam_step", "%ld", s->adam_step);
    tr_ckpt_meta(&w, "epoch", "%d", s->epoch);
    tr_ckpt_meta(&w, "pos", "%lld", (long long)s->pos);
    tr_ckpt_meta(&w, "val_in_epoch", "%d", s->val_in_epoch);
    tr_ckpt_meta(&w, "best", "%.17g", s->best);
    tr_ckpt_meta(&w, "best_iter", "%ld", s->best_iter);
    tr_ckpt_meta(&w, "bad", "%d", s->bad);
    tr_ckpt_meta(&w, "stopped", "%d", s->stopped);
    tr_ckpt_meta(&w, "loss_sum", "%.17g", s->loss_sum);
    tr_ckpt_meta(&w, "loss_n", "%ld", s->loss_n);
    tr_ckpt_meta(&w, "log_bytes", "%ld", s->log_bytes);
    tr_ckpt_meta(&w, "elapsed", "%.6f", s->elapsed);
    tr_ckpt_rng(&w, &t->rng);
    return tr_ckpt_commit(&w, t->ckpt_path, e);
}

static int load_checkpoint(trainer *t, mr_error *e) {
    tr_ckpt c;
    int version;
    int rc = tr_ckpt_open(&c, t->ckpt_path, CKPT_FORMATS, &version, "retriever", e);
    if (rc) return rc;
    /* Version 1 drew an epoch's order at its first batch, so a checkpoint taken at the
     * start of an epoch (pos 0) holds no order yet (uninitialised memory before the first
     * epoch): its order is drawn below from the saved generator, as version 1 would. */
    int v1 = version == 0;
    /* the run must continue with the flags it started with; the architecture's keys are
     * absent from LRURec checkpoints made before the contract (versions 1 and 2) */
    const rt_train_options *o = t->o;
    int old = version < 2 && !strcmp(o->model.arch, "lru");
    char want[15][64];
    const char *keys[15] = {"arch",  "n_items",      "hidden",    "blocks",     "max_len",
                            "dropout", "batch",      "lr",        "weight_decay", "seed",
                            "heads", "attn_dropout", "mask_prob", "reg_weight", "max_predictions"};
    snprintf(want[0], 64, "%s", o->model.arch);
    snprintf(want[1], 64, "%d", t->m.cfg.n_items);
    snprintf(want[2], 64, "%d", o->model.hidden);
    snprintf(want[3], 64, "%d", o->model.blocks);
    snprintf(want[4], 64, "%d", o->model.max_len);
    snprintf(want[5], 64, "%.9g", (double)o->model.dropout);
    snprintf(want[6], 64, "%d", o->batch);
    snprintf(want[7], 64, "%.17g", o->lr);
    snprintf(want[8], 64, "%.17g", o->weight_decay);
    snprintf(want[9], 64, "%llu", (unsigned long long)o->seed);
    snprintf(want[10], 64, "%d", o->model.heads);
    snprintf(want[11], 64, "%.9g", (double)o->model.attn_dropout);
    snprintf(want[12], 64, "%.9g", (double)o->model.mask_prob);
    snprintf(want[13], 64, "%.9g", (double)o->model.reg_weight);
    snprintf(want[14], 64, "%d", o->model.max_predictions);
    /* max_predictions is absent from checkpoints written before it was recorded */
    for (int i = 0; i < 15 && !rc; i++)
        rc = tr_ckpt_same(&c, keys[i], want[i], i == 14 || (old && (i == 0 || i >= 10)), e);
    int64_t np = (int64_t)t->m.n_params;
    if (!rc) rc = tr_ckpt_read_f32(&c, "params", t->m.params, np, e);
    if (!rc) rc = tr_ckpt_read_f32(&c, "adam_m", t->adam_m, np, e);
    if (!rc) rc = tr_ckpt_read_f32(&c, "adam_v", t->adam_v, np, e);
    if (!rc) rc = tr_ckpt_read_f32(&c, "best_params", t->best_params, np, e);
    if (!rc && tr_ckpt_read_i32(&c, "epoch_order", t->perm, t->n_windows, e))
        rc = mr_fail(e, MR_ERR_INPUT, "%s: epoch_order does not match the dataset's %lld training windows",
                     t->ckpt_path, (long long)t->n_windows);
    train_state *s = &t->s;
    int64_t iter = 0, adam_step = 0, epoch = 0, pos = 0, vie = 0, best_iter = 0, bad = 0, stopped = 0, loss_n = 0,
            log_bytes = 0;
    if (!rc) rc = tr_ckpt_i64(&c, "iter", &iter, e);
    if (!rc) rc = tr_ckpt_i64(&c, "adam_step", &adam_step, e);
    if (!rc) rc = tr_ckpt_i64(&c, "epoch", &epoch, e);
    if (!rc) rc = tr_ckpt_i64(&c, "pos", &pos, e);
    if (!rc) rc = tr_ckpt_i64(&c, "val_in_epoch", &vie, e);
    if (!rc) rc = tr_ckpt_num(&c, "best", &s->best, e);
    if (!rc) rc = tr_ckpt_i64(&c, "best_iter", &best_iter, e);
    if (!rc) rc = tr_ckpt_i64(&c, "bad", &bad, e);
    if (!rc) rc = tr_ckpt_i64(&c, "stopped", &stopped, e);
    if (!rc) rc = tr_ckpt_num(&c, "loss_sum", &s->loss_sum, e);
    if (!rc) rc = tr_ckpt_i64(&c, "loss_n", &loss_n, e);
    if (!rc) rc = tr_ckpt_i64(&c, "log_bytes", &log_bytes, e);
    if (!rc) rc = tr_ckpt_num(&c, "elapsed", &s->elapsed, e);
    if (!rc) rc = tr_ckpt_read_rng(&c, &t->rng, e);
    tr_ckpt_close(&c);
    if (rc) return rc;
    s->iter = (long)iter;
    s->adam_step = (long)adam_step;
    s->epoch = (int)epoch;
    s->pos = pos;
    s->val_in_epoch = (int)vie;
    s->best_iter = (long)best_iter;
    s->bad = (int)bad;
    s->stopped = (int)stopped;
    s->loss_n = (long)loss_n;
    s->log_bytes = (long)log_bytes;
    if (s->pos < 0 || s->pos > t->n_batches) return mr_fail(e, MR_ERR_INPUT, "%s: bad position", t->ckpt_path);
    if (v1 && s->pos == 0) start_epoch(t);
    /* the order must be a permutation of the windows: each exactly once */
    uint8_t *seen = mr_calloc((size_t)t->n_windows, 1, e);
    if (!seen) return MR_ERR_INTERNAL;
    for (int64_t i = 0; i < t->n_windows && !rc; i++) {
        int32_t w = t->perm[i];
        if (w < 0 || w >= t->n_windows || seen[w])
            rc = mr_fail(e, MR_ERR_INPUT, "%s: epoch_order is not an order of the %lld training windows (entry %lld)",
                         t->ckpt_path, (long long)t->n_windows, (long long)i);
        else seen[w] = 1;
    }
    free(seen);
    return rc;
}

/* ---- log ---- */

static int append_log(trainer *t, json_t *line, mr_error *e) { return tr_log_append(t->log_path, line, &t->s.log_bytes, e); }

/* ---- validation ---- */

static int validate(trainer *t, mr_error *e) {
    mr_metrics val;
    int rc = rt_evaluate(&t->m, t->d, 0, &val, e);
    if (rc) return rc;
    double r10 = mr_metrics_get(&val, MR_RECALL, 10);
    train_state *s = &t->s;
    int improved = r10 > s->best;
    if (improved) {
        s->best = r10;
        s->best_iter = s->iter;
        s->bad = 0;
        memcpy(t->best_params, t->m.params, t->m.n_params * sizeof(float));
        rc = rt_model_save(&t->m, t->model_path, e);
    } else {
        s->bad++;
        if (s->bad >= t->o->patience) s->stopped = 1;
    }
    if (!rc) {
        json_t *line = json_object();
        json_object_set_new(line, "iter", json_integer(s->iter));
        json_object_set_new(line, "epoch", json_real(s->epoch + (double)s->pos / (double)t->n_batches));
        /* null before the first iteration: no training loss yet */
        json_object_set_new(line, "train_loss", s->loss_n ? json_real(s->loss_sum / s->loss_n) : json_null());
        json_t *vm = mr_metrics_to_json(&val);
        json_object_set_new(line, "val", vm ? vm : json_null());
        json_object_set_new(line, "best_recall10", json_real(s->best));
        json_object_set_new(line, "best_iter", json_integer(s->best_iter));
        json_object_set_new(line, "bad", json_integer(s->bad));
        json_object_set_new(line, "seconds", json_real(s->elapsed));
        rc = append_log(t, line, e);
        char loss_text[48] = "untrained";
        if (s->loss_n) snprintf(loss_text, sizeof loss_text, "train loss %.4f", s->loss_sum / s->loss_n);
        mr_log("iteration %ld (epoch %.2f): %s, val Recall@10 %.4f NDCG@10 %.4f%s", s->iter,
               s->epoch + (double)s->pos / (double)t->n_batches, loss_text, r10, mr_metrics_get(&val, MR_NDCG, 10),
               improved ? " (best)" : "");
        s->loss_sum = 0;
        s->loss_n = 0;
    }
    mr_metrics_free(&val);
    return rc;
}

/* ---- the loop ---- */

int rt_train(const mr_dataset *d, const rt_train_options *o, const char *run_dir, int *interrupted, mr_error *e) {
    *interrupted = 0;
    if (o->batch < 1) return mr_fail(e, MR_ERR_USAGE, "--batch must be at least 1");
    if (o->val_every < 1) return mr_fail(e, MR_ERR_USAGE, "--val-every must be at least 1");
    if (o->patience < 1) return mr_fail(e, MR_ERR_USAGE, "--patience must be at least 1");
    if (o->max_epochs < 1) return mr_fail(e, MR_ERR_USAGE, "--max-epochs must be at least 1 (0 would train nothing)");
    if (!(o->lr > 0)) return mr_fail(e, MR_ERR_USAGE, "--lr must be positive");
    if (d->n_items < 1 || d->n_items > 100000000) return mr_fail(e, MR_ERR_INPUT, "%s: no items", d->dir);
    mr_set_threads(o->threads < 1 ? 1 : o->threads);
    trainer t;
    memset(&t, 0, sizeof t);
    t.d = d;
    t.o = o;
    rt_config c = o->model;
    c.n_items = (int)d->n_items;
    void *acts = NULL;
    int64_t *example = NULL;
    const int32_t **user_items = NULL;
    int *n_user_items = NULL;
    int32_t *tokens = NULL, *labels = NULL;
    int *seq_start = NULL;
    int rc = mr_mkdir_p(run_dir, e);
    if (!rc) rc = rt_model_create(&t.m, &c, e);
    if (!rc) rc = rt_model_alloc_grads(&t.m, e);
    if (rc) goto done;
    t.ckpt_path = mr_path_join(run_dir, "checkpoint.safetensors", e);
    t.log_path = mr_path_join(run_dir, "train.jsonl", e);
    t.model_path = mr_path_join(run_dir, "retriever.safetensors", e);
    t.metrics_path = mr_path_join(run_dir, "metrics.json", e);
    t.cand_path = mr_path_join(run_dir, "candidates.tsv", e);
    size_t np = t.m.n_params;
    t.adam_m = mr_calloc(np, sizeof(float), e);
    t.adam_v = mr_calloc(np, sizeof(float), e);
    t.best_params = mr_calloc(np, sizeof(float), e);
    t.windows = build_windows(d, c.max_len, &t.n_windows, e);
    if (!t.ckpt_path || !t.log_path || !t.model_path || !t.metrics_path || !t.cand_path || !t.adam_m || !t.adam_v ||
        !t.best_params || !t.windows) {
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    if (t.n_windows == 0) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: no user has a training item (every sequence needs 3 items)", d->dir);
        goto done;
    }
    t.n_batches = batches_per_epoch(&t);
    t.perm = mr_calloc((size_t)t.n_windows, sizeof(int32_t), e);
    int L = c.max_len, B = o->batch;
    tokens = mr_alloc((size_t)B * L * sizeof(int32_t), e);
    labels = mr_alloc((size_t)B * L * sizeof(int32_t), e);
    seq_start = mr_alloc((size_t)(B + 1) * sizeof(int), e);
    example = mr_alloc((size_t)B * sizeof(int64_t), e);
    user_items = mr_alloc((size_t)B * sizeof *user_items, e);
    n_user_items = mr_alloc((size_t)B * sizeof(int), e);
    if (!t.perm || !tokens || !labels || !seq_start || !example || !user_items || !n_user_items) {
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    rc = t.m.arch->acts_create(&acts, &t.m, B * L, B, e);
    if (rc) goto done;

    if (o->resume && mr_file_exists(t.ckpt_path)) {
        rc = load_checkpoint(&t, e);
        if (rc) goto done;
        rc = tr_log_start(t.log_path, 1, t.s.log_bytes, e);
        if (rc) goto done;
        mr_log("resuming %s at iteration %ld (epoch %d), best val Recall@10 %.4f", run_dir, t.s.iter, t.s.epoch + 1,
               t.s.best);
    } else {
        if (o->resume) mr_log("no checkpoint in %s: starting from scratch", run_dir);
        t.m.arch->init(&t.m, o->seed);
        mr_rng_seed(&t.rng, o->seed ^ 0x5eed5eed5eedULL);
        memcpy(t.best_params, t.m.params, np * sizeof(float));
        t.s.best = -1.0;
        t.s.best_iter = -1;
        start_epoch(&t);
        rc = tr_log_start(t.log_path, 0, 0, e);
        if (rc) goto done;
    }
    mr_log("%s: %d items, hidden %d, %d blocks, max length %d, batch %d, %lld windows = %lld iterations per epoch",
           c.arch, c.n_items, c.hidden, c.blocks, L, B, (long long)t.n_windows, (long long)t.n_batches);
    /* as the reference: a validation before the first iteration, so the learning curve
     * starts from the untrained model (best < 0: nothing validated yet, so not a resume) */
    if (t.s.best < 0) {
        rc = validate(&t, e);
        if (!rc) rc = save_checkpoint(&t, e);
        if (rc) goto done;
    }

    adamw_config ac = {.lr = (float)o->lr, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-9f,
                       .weight_decay = (float)o->weight_decay};
    mr_progress prog;
    mr_progress_start(&prog, "train", (int64_t)o->max_epochs * t.n_batches);
    double t0 = mr_now(), elapsed0 = t.s.elapsed;
    long iter0 = t.s.iter;
    while (!t.s.stopped && t.s.epoch < o->max_epochs) {
        train_state *s = &t.s;
        /* one batch */
        int64_t first = s->pos * B, last = first + B < t.n_windows ? first + B : t.n_windows;
        int ns = 0, nr = 0;
        seq_start[0] = 0;
        for (int64_t i = first; i < last; i++) {
            nr += window_rows(d, &t.windows[t.perm[i]], L, tokens + nr, labels + nr);
            const window *w = &t.windows[t.perm[i]];
            example[ns] = t.perm[i];
            user_items[ns] = d->seqs[w->user];
            n_user_items[ns] = d->seq_len[w->user] - 2; /* the training part */
            seq_start[++ns] = nr;
        }
        rt_batch b = {.n_seqs = ns, .n_rows = nr, .seq_start = seq_start, .tokens = tokens, .labels = labels,
                      .example = example, .user_items = user_items, .n_user_items = n_user_items};
        uint64_t key = o->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)s->iter; /* mixed by the model's dropout */
        double loss = t.m.arch->loss_backward(&t.m, acts, &b, 1, key);
        clip_grad_norm(t.m.grads, np, o->clip);
        s->adam_step++;
        for (int ti = 0; ti < t.m.n_tensors; ti++) {
            const rt_tensor *ti_ = &t.m.tensors[ti];
            adamw_update(t.m.params + ti_->offset, t.m.grads + ti_->offset, t.adam_m + ti_->offset,
                         t.adam_v + ti_->offset, ti_->numel, &ac, ti_->decay ? (float)o->weight_decay : 0.0f,
                         s->adam_step);
        }
        s->iter++;
        s->loss_sum += loss;
        s->loss_n++;
        s->pos++;
        int end_of_epoch = s->pos == t.n_batches;
        s->elapsed = elapsed0 + (mr_now() - t0);
        int do_val = s->iter % o->val_every == 0 || (end_of_epoch && !s->val_in_epoch);
        if (end_of_epoch) {
            s->epoch++;
            s->pos = 0;
            start_epoch(&t);
        }
        if (do_val) {
            s->val_in_epoch = !end_of_epoch;
            rc = validate(&t, e);
            if (!rc) rc = save_checkpoint(&t, e);
            if (rc) break;
        }
        char extra[128];
        double its = (s->iter - iter0) / fmax(1e-9, mr_now() - t0);
        snprintf(extra, sizeof extra, "epoch %.2f loss %.4f %.2f it/s best val R@10 %.4f",
                 s->epoch + (double)s->pos / (double)t.n_batches, loss, its, s->best < 0 ? 0.0 : s->best);
        mr_progress_update(&prog, (int64_t)s->epoch * t.n_batches + s->pos, extra);
        if (o->after_iter) o->after_iter(o->after_iter_ctx, s->iter);
        if (o->stop && *o->stop) {
            rc = save_checkpoint(&t, e);
            if (!rc) *interrupted = 1;
            break;
        }
    }
    mr_progress_end(&prog);
    if (rc || *interrupted) goto done;
    if (t.s.stopped) mr_log("early stopping after %d validations without improvement", t.s.bad);
    rc = save_checkpoint(&t, e);
    if (rc) goto done;
    /* the best model: weights, metrics, candidates */
    memcpy(t.m.params, t.best_params, np * sizeof(float));
    rc = rt_model_save(&t.m, t.model_path, e);
    mr_metrics val, test;
    if (!rc) rc = rt_write_metrics(&t.m, d, t.metrics_path, &val, &test, e);
    if (!rc) {
        mr_log("best model (iteration %ld): val Recall@10 %.4f; test Recall@10 %.4f NDCG@10 %.4f MRR@10 %.4f",
               t.s.best_iter, mr_metrics_get(&val, MR_RECALL, 10), mr_metrics_get(&test, MR_RECALL, 10),
               mr_metrics_get(&test, MR_NDCG, 10), mr_metrics_get(&test, MR_MRR, 10));
        json_t *line = json_object();
        json_object_set_new(line, "final", json_true());
        json_object_set_new(line, "best_iter", json_integer(t.s.best_iter));
        json_object_set_new(line, "iter", json_integer(t.s.iter));
        json_object_set_new(line, "val", mr_metrics_to_json(&val));
        json_object_set_new(line, "test", mr_metrics_to_json(&test));
        json_object_set_new(line, "seconds", json_real(t.s.elapsed));
        rc = append_log(&t, line, e);
        mr_metrics_free(&val);
        mr_metrics_free(&test);
    }
    if (!rc) rc = rt_write_candidates(&t.m, d, t.cand_path, 20, e);
done:
    if (acts) t.m.arch->acts_free(acts);
    free(example);
    free(user_items);
    free(n_user_items);
    free(tokens);
    free(labels);
    free(seq_start);
    free(t.perm);
    free(t.windows);
    free(t.adam_m);
    free(t.adam_v);
    free(t.best_params);
    free(t.ckpt_path);
    free(t.log_path);
    free(t.model_path);
    free(t.metrics_path);
    free(t.cand_path);
    rt_model_free(&t.m);
    return rc;
}
