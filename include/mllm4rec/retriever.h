/* LRURec, the retriever of the two-stage pipeline (DESIGN section 7): an item
 * embedding, blocks of a linear recurrent unit (complex diagonal recurrence) and a
 * position-wise feed-forward layer, and scores against the tied item embeddings.
 * Forward and backward in plain C over flat float buffers; training with AdamW;
 * evaluation and candidate export.
 *
 * Sequences are handled packed: a batch is a list of rows (positions), each
 * sequence a contiguous run of rows, left to right in time. Only the rows that
 * matter are given (the reference's left padding and power-of-two padding never
 * feed a real position, so leaving them out changes no number that is used). */
#ifndef MLLM4REC_RETRIEVER_H
#define MLLM4REC_RETRIEVER_H

#include <signal.h>

#include "mllm4rec/base.h"
#include "mllm4rec/dataset.h"
#include "mllm4rec/metrics.h"
#include "retriever/arch.h" /* rt_model, rt_config: the architecture contract */

typedef struct lru_config {
    int n_items; /* item ids 1..n_items; the vocabulary is n_items + 1 (0 = padding) */
    int hidden;  /* D; the recurrence has 2D complex channels, the feed-forward 4D */
    int blocks;
    int max_len;
    float dropout;
} lru_config;

/* One named tensor of the state_dict (complex tensors as .real and .imag). */
typedef struct lru_tensor_info {
    char name[96];
    size_t offset; /* in floats, into the flat parameter buffer */
    size_t numel;
    int n_dims;
    int64_t shape[2];
    int decay; /* weight decay applies: the name contains neither "bias" nor "layer_norm" */
} lru_tensor_info;

/* Pointers into one flat buffer laid out like the parameters (params, grads, moments). */
typedef struct lru_block_view {
    float *params_log;         /* [3, H]: nu_log, theta_log, gamma_log */
    float *in_w;               /* [2H, D]: in_proj.weight.real rows, then .imag rows */
    float *in_b;               /* [2H]: in_proj.bias.real, then .imag */
    float *out_w_re, *out_w_im; /* [D, H] each */
    float *out_b_re, *out_b_im; /* [D] each */
    float *ln1_w, *ln1_b;      /* lru_layer.layer_norm [D] */
    float *w1, *b1;            /* feed_forward.w_1 [4D, D], [4D] */
    float *w2, *b2;            /* feed_forward.w_2 [D, 4D], [D] */
    float *ln2_w, *ln2_b;      /* feed_forward.layer_norm [D] */
} lru_block_view;

#define LRU_MAX_BLOCKS 16
typedef struct lru_view {
    float *tok_emb;            /* embedding.token.weight [V, D] */
    float *emb_ln_w, *emb_ln_b; /* embedding.layer_norm [D] */
    float *out_bias;           /* model.bias [V] */
    lru_block_view blk[LRU_MAX_BLOCKS];
} lru_view;

typedef struct lru_model {
    lru_config cfg;
    int n_tensors;
    lru_tensor_info *tensors;
    size_t n_params;
    float *params;
    float *grads; /* NULL until lru_model_alloc_grads */
    lru_view p, g;
} lru_model;

int lru_config_check(const lru_config *c, mr_error *e);
/* Allocates the parameters (uninitialised). */
int lru_model_create(lru_model *m, const lru_config *c, mr_error *e);
int lru_model_alloc_grads(lru_model *m, mr_error *e);
void lru_model_free(lru_model *m);
/* Pointers into any buffer with the parameter layout. */
void lru_view_of(const lru_model *m, float *base, lru_view *v);
/* The reference's init: truncated normal (std 0.02, +-0.04) for all but layer
 * norms and params_log; layer norms 1 / 0; params_log from the ring r in [0.8, 0.99]. */
void lru_model_init(lru_model *m, uint64_t seed);
const lru_tensor_info *lru_find_tensor(const lru_model *m, const char *name);

/* safetensors with the reference's state_dict names. Loading reads the config
 * from the file's shapes (n_items, hidden, blocks) and metadata (max_len, dropout). */
int lru_model_save(const lru_model *m, const char *path, mr_error *e);
int lru_model_load(lru_model *m, const char *path, mr_error *e);
/* Reads tensors by name from an open safetensors file into a buffer laid out like
 * the parameters (params, grads). */
struct st_file;
int lru_read_tensors(const lru_model *m, const struct st_file *f, const char *prefix, float *dst, mr_error *e);

/* A packed batch: sequence s owns rows seq_start[s] .. seq_start[s+1]-1. */
typedef struct lru_batch {
    int n_seqs, n_rows;
    const int *seq_start;  /* [n_seqs + 1] */
    const int32_t *tokens; /* [n_rows] */
    const int32_t *labels; /* [n_rows], 0 = not scored; NULL outside training */
} lru_batch;

/* Activations and gradient scratch for up to max_rows rows and max_seqs sequences. */
typedef struct lru_acts lru_acts;
int lru_acts_create(lru_acts **a, const lru_model *m, int max_rows, int max_seqs, int max_score_rows,
                    mr_error *e);
void lru_acts_free(lru_acts *a);
/* The final hidden states [n_rows, D] of the last forward, and one block's
 * intermediates (after the LRU layer, after the feed-forward), for tests. */
const float *lru_acts_hidden(const lru_acts *a);
const float *lru_acts_embedding_out(const lru_acts *a);
const float *lru_acts_block_out(const lru_acts *a, int block, int after_ffn);

/* Forward through embedding and blocks. train != 0 applies dropout with masks
 * drawn from (dropout_key, row, column), independent of the thread count. */
void lru_forward(const lru_model *m, lru_acts *a, const lru_batch *b, int train, uint64_t dropout_key);
/* Training step up to the gradients: forward, scores at every row, mean
 * cross-entropy over rows with label != 0, backward. Gradients are overwritten.
 * scores_out (may be NULL) receives the scores [n_rows, V]. Returns the loss. */
double lru_loss_backward(lru_model *m, lru_acts *a, const lru_batch *b, int train, uint64_t dropout_key,
                         float *scores_out);
/* Evaluation: forward without dropout; scores [n_seqs, V] at each sequence's last row. */
void lru_scores_last(const lru_model *m, lru_acts *a, const lru_batch *b, float *scores);

/* ---- training, evaluation, candidates of any architecture (src/retriever/train.c,
 * eval.c), on the contract of src/retriever/arch.h ---- */

typedef struct rt_train_options {
    rt_config model;      /* arch and hyperparameters; n_items is taken from the dataset */
    int batch;
    double lr, weight_decay, clip;
    long val_every;       /* iterations */
    int patience;         /* validations without improvement */
    int max_epochs;
    uint64_t seed;
    int threads;
    int resume;
    /* The caller's interrupt flag (a CLI signal handler sets it; NULL: none): at the
     * next iteration's end the run saves its checkpoint and returns *interrupted = 1. */
    volatile sig_atomic_t *stop;
    /* Called after every iteration with the iteration count (NULL: not called); the
     * CLI's test hook uses it to signal itself at an exact point. */
    void (*after_iter)(void *ctx, long iter);
    void *after_iter_ctx;
} rt_train_options;

/* Defaults of architecture `arch` (one table in train.c: LlamaRec's settings where
 * they apply, the reference code's otherwise) and of the dataset's role (DESIGN
 * section 8): max length / batch 200 / 16 for MovieLens, 50 / 64 otherwise.
 * MR_ERR_USAGE naming the registered architectures when arch is unknown. */
int rt_train_defaults(rt_train_options *o, const mr_dataset *d, const char *arch, mr_error *e);

/* Trains into run_dir: RUN/checkpoint.safetensors (resume state, written at every
 * validation and when o->stop is set), RUN/train.jsonl (learning curve), and the
 * best model so far as RUN/retriever.safetensors; at the end evaluates the best
 * model and writes RUN/metrics.json, RUN/candidates.tsv and RUN/curves.svg.
 * *interrupted is set when o->stop stopped the run after a checkpoint. */
int rt_train(const mr_dataset *d, const rt_train_options *o, const char *run_dir, int *interrupted, mr_error *e);

/* The input a split sees: val = the training part (all but the last two items),
 * test = all but the last; the target is the next item. n = 0 when the user has
 * too few items for that split. */
void lru_user_history(const mr_dataset *d, int64_t user, int split, const int32_t **hist, int *n,
                      int32_t *target);

/* Scores every user of a split (0 = val, 1 = test) at its last position, with the
 * padding item and the user's whole history masked (set to -inf); calls fn for
 * each user in id order. scores is the masked row [n_items + 1]. */
typedef int (*lru_user_fn)(void *ctx, int64_t user, int32_t target, const float *scores, const int32_t *hist,
                           int n_hist, mr_error *e);
int rt_score_users(const rt_model *m, const mr_dataset *d, int split, lru_user_fn fn, void *ctx, mr_error *e);

/* Recall / MRR / NDCG at k = 1, 5, 10, 20, 50 for a split, metrics initialised here. */
int rt_evaluate(const rt_model *m, const mr_dataset *d, int split, mr_metrics *out, mr_error *e);
/* Writes RUN/metrics.json: {"val": {...}, "test": {...}} with the metric keys,
 * "users" and "top20_share" (users whose true item is in the top 20). val and test
 * are filled on success (the caller frees them); a failure leaves nothing to free. */
int rt_write_metrics(const rt_model *m, const mr_dataset *d, const char *path, mr_metrics *val,
                      mr_metrics *test, mr_error *e);
/* Writes candidates.tsv: header `split	user_id	label	items	scores`, one row per
 * user for val then test, the top k item ids (comma-separated, best first) and
 * their scores (comma-separated, %.9g); history and padding masked. Ties: higher
 * score first, then lower id. */
int rt_write_candidates(const rt_model *m, const mr_dataset *d, const char *path, int k, mr_error *e);

#endif
