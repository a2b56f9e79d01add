/* Retriever training (any architecture, through m->arch) as LlamaRec trains LRURec: sliding windows over the training
 * part of each user's sequence, cross-entropy over all items at every position,
 * AdamW (eps 1e-9, decay on names without "bias" / "layer_norm"), gradient norm
 * clipped, validation on Recall@10 with early stopping and the best model kept.
 * Resumable: the checkpoint holds everything the rest of the run depends on. */
#include <errno.h>
#include <stdarg.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mllm4rec/retriever.h"
#include "mllm4rec/safetensors.h"
#include "nn/adamw.h"

/* Per-architecture defaults. LlamaRec's settings where they apply (hidden 64,
 * dropout 0.2, max length and batch by dataset, lr 1e-3, weight decay 0.01, 2
 * blocks, 2 heads, attention dropout 0.2, mask probability 0.2: its config.py for
 * LRURec, the lineage of Yueeeeeeee/RecSys-Extraction-Attack's SASRec / BERT4Rec /
 * NARM); GRU4Rec and NARM run one GRU layer (hidasib/GRU4Rec_PyTorch_Official's and
 * NARM's single layer); STOSA as zfan20/STOSA's README runs Beauty (1 layer, 4 heads,
 * attention dropout 0, weight decay 0, pvn_weight 0.005). */
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
    {"narm", 1, 0, 0.0f, 0.0f, 0.0f, 0.01},
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

/* ---- checkpoint ---- */

static int set_meta(st_writer *w, const char *key, const char *fmt, ...) MR_PRINTF(3, 4);
static int set_meta(st_writer *w, const char *key, const char *fmt, ...) {
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return st_writer_set_metadata(w, key, buf, NULL);
}

static int save_checkpoint(trainer *t, mr_error *e) {
    st_writer *w = st_writer_new(e);
    if (!w) return MR_ERR_INTERNAL;
    int64_t np = (int64_t)t->m.n_params, nw = t->n_windows;
    int rc = st_writer_add(w, "params", ST_F32, 1, &np, t->m.params, e);
    if (!rc) rc = st_writer_add(w, "adam_m", ST_F32, 1, &np, t->adam_m, e);
    if (!rc) rc = st_writer_add(w, "adam_v", ST_F32, 1, &np, t->adam_v, e);
    if (!rc) rc = st_writer_add(w, "best_params", ST_F32, 1, &np, t->best_params, e);
    if (!rc) rc = st_writer_add(w, "epoch_order", ST_I32, 1, &nw, t->perm, e);
    const rt_train_options *o = t->o;
    const train_state *s = &t->s;
    int bad = rc;
    bad |= set_meta(w, "format", "mllm4rec-retriever-checkpoint-3");
    bad |= set_meta(w, "arch", "%s", o->model.arch);
    bad |= set_meta(w, "n_items", "%d", t->m.cfg.n_items);
    bad |= set_meta(w, "hidden", "%d", o->model.hidden);
    bad |= set_meta(w, "blocks", "%d", o->model.blocks);
    bad |= set_meta(w, "max_len", "%d", o->model.max_len);
    bad |= set_meta(w, "dropout", "%.9g", (double)o->model.dropout);
    bad |= set_meta(w, "heads", "%d", o->model.heads);
    bad |= set_meta(w, "attn_dropout", "%.9g", (double)o->model.attn_dropout);
    bad |= set_meta(w, "mask_prob", "%.9g", (double)o->model.mask_prob);
    bad |= set_meta(w, "reg_weight", "%.9g", (double)o->model.reg_weight);
    bad |= set_meta(w, "batch", "%d", o->batch);
    bad |= set_meta(w, "lr", "%.17g", o->lr);
    bad |= set_meta(w, "weight_decay", "%.17g", o->weight_decay);
    bad |= set_meta(w, "seed", "%llu", (unsigned long long)o->seed);
    bad |= set_meta(w, "iter", "%ld", s->iter);
    bad |= set_meta(w, "adam_step", "%ld", s->adam_step);
    bad |= set_meta(w, "epoch", "%d", s->epoch);
    bad |= set_meta(w, "pos", "%lld", (long long)s->pos);
    bad |= set_meta(w, "val_in_epoch", "%d", s->val_in_epoch);
    bad |= set_meta(w, "best", "%.17g", s->best);
    bad |= set_meta(w, "best_iter", "%ld", s->best_iter);
    bad |= set_meta(w, "bad", "%d", s->bad);
    bad |= set_meta(w, "stopped", "%d", s->stopped);
    bad |= set_meta(w, "loss_sum", "%.17g", s->loss_sum);
    bad |= set_meta(w, "loss_n", "%ld", s->loss_n);
    bad |= set_meta(w, "log_bytes", "%ld", s->log_bytes);
    bad |= set_meta(w, "elapsed", "%.6f", s->elapsed);
    for (int i = 0; i < 4; i++) {
        char key[16];
        snprintf(key, sizeof key, "rng%d", i);
        bad |= set_meta(w, key, "%llu", (unsigned long long)t->rng.s[i]);
    }
    if (bad && !rc) rc = mr_fail(e, MR_ERR_INTERNAL, "could not build the checkpoint metadata");
    if (!rc) rc = st_writer_write(w, t->ckpt_path, e);
    st_writer_free(w);
    return rc;
}

/* metadata values: the header JSON is parsed again with jansson */
typedef struct meta {
    json_t *obj;
} meta;

static int meta_get(const meta *mt, const char *key, const char **out) {
    json_t *v = json_object_get(mt->obj, key);
    *out = json_string_value(v);
    return *out != NULL;
}

static int load_checkpoint(trainer *t, mr_error *e) {
    st_file f;
    int rc = st_open(&f, t->ckpt_path, e);
    if (rc) return rc;
    meta mt = {f.metadata_json ? json_loads(f.metadata_json, 0, NULL) : NULL};
    const char *fmt;
    if (!mt.obj || !meta_get(&mt, "format", &fmt) ||
        (strcmp(fmt, "mllm4rec-lru-checkpoint-1") && strcmp(fmt, "mllm4rec-lru-checkpoint-2") &&
         strcmp(fmt, "mllm4rec-retriever-checkpoint-3"))) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: not an mllm4rec retriever checkpoint", t->ckpt_path);
        goto done;
    }
    /* Version 1 drew an epoch's order at its first batch, so a checkpoint taken at the
     * start of an epoch (pos 0) holds no order yet (uninitialised memory before the first
     * epoch): its order is drawn below from the saved generator, as version 1 would. */
    int v1 = !strcmp(fmt, "mllm4rec-lru-checkpoint-1");
    /* the run must continue with the parameters it started with */
    struct {
        const char *key;
        char want[64];
        int optional; /* absent from checkpoints of LRURec before the architecture contract */
    } same[14];
    int ns = 0;
#define SAME(k, ...) (snprintf(same[ns].want, sizeof same[ns].want, __VA_ARGS__), same[ns].optional = 0, same[ns++].key = k)
#define SAME_NEW(k, ...) (SAME(k, __VA_ARGS__), same[ns - 1].optional = !strcmp(t->o->model.arch, "lru"))
    SAME_NEW("arch", "%s", t->o->model.arch);
    SAME("n_items", "%d", t->m.cfg.n_items);
    SAME("hidden", "%d", t->o->model.hidden);
    SAME("blocks", "%d", t->o->model.blocks);
    SAME("max_len", "%d", t->o->model.max_len);
    SAME("dropout", "%.9g", (double)t->o->model.dropout);
    SAME("batch", "%d", t->o->batch);
    SAME("lr", "%.17g", t->o->lr);
    SAME("weight_decay", "%.17g", t->o->weight_decay);
    SAME("seed", "%llu", (unsigned long long)t->o->seed);
    SAME_NEW("heads", "%d", t->o->model.heads);
    SAME_NEW("attn_dropout", "%.9g", (double)t->o->model.attn_dropout);
    SAME_NEW("mask_prob", "%.9g", (double)t->o->model.mask_prob);
    SAME_NEW("reg_weight", "%.9g", (double)t->o->model.reg_weight);
#undef SAME_NEW
#undef SAME
    for (int i = 0; i < ns; i++) {
        const char *v;
        int have = meta_get(&mt, same[i].key, &v);
        if (!have && same[i].optional) continue;
        if (!have || strcmp(v, same[i].want)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: was made with %s = %s, this run has %s (resume with the same flags)",
                         t->ckpt_path, same[i].key, v ? v : "(missing)", same[i].want);
            goto done;
        }
    }
    int64_t np = (int64_t)t->m.n_params;
    const char *names[4] = {"params", "adam_m", "adam_v", "best_params"};
    float *dst[4] = {t->m.params, t->adam_m, t->adam_v, t->best_params};
    for (int i = 0; i < 4 && !rc; i++) {
        const st_tensor *x = st_find(&f, names[i]);
        if (!x) rc = mr_fail(e, MR_ERR_INPUT, "%s: tensor %s is missing", t->ckpt_path, names[i]);
        else rc = st_read_f32(x, dst[i], np, e);
        if (!rc) rc = mr_check_finite(dst[i], (size_t)np, t->ckpt_path, names[i], e);
    }
    if (rc) goto done;
    const st_tensor *order = st_find(&f, "epoch_order");
    if (!order || order->dtype != ST_I32 || st_numel(order) != t->n_windows) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: epoch_order does not match the dataset's %lld training windows",
                     t->ckpt_path, (long long)t->n_windows);
        goto done;
    }
    memcpy(t->perm, order->data, (size_t)t->n_windows * sizeof(int32_t));
    const char *v;
    train_state *s = &t->s;
#define GETL(k, dst)                                                                                       \
    if (!meta_get(&mt, k, &v)) {                                                                           \
        rc = mr_fail(e, MR_ERR_INPUT, "%s: metadata %s is missing", t->ckpt_path, k);                      \
        goto done;                                                                                         \
    }                                                                                                      \
    dst = strtod(v, NULL)
    double x;
    GETL("iter", x);
    s->iter = (long)x;
    GETL("adam_step", x);
    s->adam_step = (long)x;
    GETL("epoch", x);
    s->epoch = (int)x;
    GETL("pos", x);
    s->pos = (int64_t)x;
    GETL("val_in_epoch", x);
    s->val_in_epoch = (int)x;
    GETL("best", s->best);
    GETL("best_iter", x);
    s->best_iter = (long)x;
    GETL("bad", x);
    s->bad = (int)x;
    GETL("stopped", x);
    s->stopped = (int)x;
    GETL("loss_sum", s->loss_sum);
    GETL("loss_n", x);
    s->loss_n = (long)x;
    GETL("log_bytes", x);
    s->log_bytes = (long)x;
    GETL("elapsed", s->elapsed);
#undef GETL
    for (int i = 0; i < 4; i++) {
        char key[16];
        snprintf(key, sizeof key, "rng%d", i);
        if (!meta_get(&mt, key, &v)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: metadata %s is missing", t->ckpt_path, key);
            goto done;
        }
        t->rng.s[i] = strtoull(v, NULL, 10);
    }
    if (s->pos < 0 || s->pos > t->n_batches) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: bad position", t->ckpt_path);
        goto done;
    }
    if (v1 && s->pos == 0) start_epoch(t);
    /* the order must be a permutation of the windows: each exactly once */
    uint8_t *seen = mr_calloc((size_t)t->n_windows, 1, e);
    if (!seen) {
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    for (int64_t i = 0; i < t->n_windows && !rc; i++) {
        int32_t w = t->perm[i];
        if (w < 0 || w >= t->n_windows || seen[w])
            rc = mr_fail(e, MR_ERR_INPUT, "%s: epoch_order is not an order of the %lld training windows (entry %lld)",
                         t->ckpt_path, (long long)t->n_windows, (long long)i);
        else seen[w] = 1;
    }
    free(seen);
done:
    json_decref(mt.obj);
    st_close(&f);
    return rc;
}

/* ---- log ---- */

static int append_log(trainer *t, json_t *line, mr_error *e) {
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
    json_decref(line);
    if (!text) return mr_fail(e, MR_ERR_INTERNAL, "out of memory writing %s", t->log_path);
    size_t n = strlen(text);
    text[n] = '\n'; /* json_dumps' terminator becomes the line end; the length says where it stops */
    long size;
    int rc = mr_append_file(t->log_path, text, n + 1, &size, e);
    free(text);
    if (!rc) t->s.log_bytes = size;
    return rc;
}

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
    if (!t.perm || !tokens || !labels || !seq_start || !example) {
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    rc = t.m.arch->acts_create(&acts, &t.m, B * L, B, e);
    if (rc) goto done;

    if (o->resume && mr_file_exists(t.ckpt_path)) {
        rc = load_checkpoint(&t, e);
        if (rc) goto done;
        /* forget log lines written after the checkpoint: the run repeats them */
        if (truncate(t.log_path, t.s.log_bytes) != 0 && t.s.log_bytes > 0) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: cannot cut back to the checkpoint: %s", t.log_path, strerror(errno));
            goto done;
        }
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
        FILE *f = fopen(t.log_path, "w");
        if (!f) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: cannot write: %s", t.log_path, strerror(errno));
            goto done;
        }
        fclose(f);
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
            example[ns] = t.perm[i];
            seq_start[++ns] = nr;
        }
        rt_batch b = {.n_seqs = ns, .n_rows = nr, .seq_start = seq_start, .tokens = tokens, .labels = labels,
                      .example = example};
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
