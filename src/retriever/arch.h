/* The contract between the retriever trainer / evaluator and one retriever
 * architecture (LRURec, SASRec, BERT4Rec, GRU4Rec, NARM, STOSA).
 *
 * A model is a flat float buffer of parameters described by a list of named
 * tensors in the reference code's state_dict order and names; saving, loading,
 * AdamW moments and gradient clipping work on that buffer without knowing the
 * architecture. Everything architecture-specific sits behind rt_arch.
 *
 * Batches are packed as lru_batch is: sequence s owns rows seq_start[s] ..
 * seq_start[s+1]-1, left to right in time. Those rows are the LAST rows of the
 * reference's left-padded window of max_len positions: row j of a sequence with
 * r rows sits at padded position max_len - r + j, and positions before
 * max_len - r hold the padding item 0. A model with absolute positions (SASRec,
 * BERT4Rec, STOSA) uses those padded positions and treats the padding as the
 * reference does (masked keys); a recurrent model (LRU, GRU4Rec, NARM) never
 * needs the padding rows. A row whose token is 0 is a padding input (the first
 * label of a window that starts at the sequence's start).
 *
 * Library code: no exits, no globals, no signals. Randomness (dropout masks,
 * BERT4Rec's masking, STOSA's negatives) is keyed by the key the trainer passes
 * and by (sequence, row), never by thread or call order, so results do not
 * depend on the thread count. */
#ifndef MLLM4REC_RETRIEVER_ARCH_H
#define MLLM4REC_RETRIEVER_ARCH_H

#include <stddef.h>
#include <stdint.h>

#include "mllm4rec/base.h"

#define RT_MAX_DIMS 3

typedef struct rt_tensor {
    char name[96];   /* the reference's state_dict name */
    size_t offset;   /* in floats, into the flat parameter buffer */
    size_t numel;
    int n_dims;
    int64_t shape[RT_MAX_DIMS];
    int decay;       /* AdamW weight decay applies to this tensor */
} rt_tensor;

/* Hyperparameters; each architecture reads those it has and ignores the rest. */
typedef struct rt_config {
    char arch[16];   /* "lru", "sasrec", "bert4rec", "gru4rec", "narm", "stosa" */
    int n_items;     /* item ids 1..n_items, 0 = padding */
    int hidden;      /* embedding / hidden size */
    int blocks;      /* transformer blocks, LRU blocks or GRU layers */
    int heads;       /* attention heads (SASRec, BERT4Rec, STOSA) */
    int max_len;     /* window length */
    float dropout;   /* hidden / embedding dropout */
    float attn_dropout;
    float mask_prob; /* BERT4Rec's cloze masking probability */
    float reg_weight;/* STOSA's regulariser weight (pvn_weight) */
    int max_predictions; /* BERT4Rec: most masked rows per window (the reference's
                          * bert_max_predictions); 0 = no limit */
    int n_users;         /* STOSA: rows of its (unused) user_margins table, kept so the
                          * weights load into the reference model; 0 = 1 row */
} rt_config;

typedef struct rt_model {
    rt_config cfg;
    const struct rt_arch *arch;
    int n_tensors;
    rt_tensor *tensors;
    size_t n_params;
    float *params;
    float *grads;    /* NULL until the trainer asks for gradients */
    void *impl;      /* architecture-owned views into params / grads */
} rt_model;

typedef struct rt_batch {
    int n_seqs, n_rows;
    const int *seq_start;   /* [n_seqs + 1] */
    const int32_t *tokens;  /* [n_rows] input item at each row */
    const int32_t *labels;  /* [n_rows] target item, 0 = not scored; NULL outside training */
    const int64_t *example; /* [n_seqs] global example index of each sequence (keys randomness); may be NULL */
    /* Added for negative sampling (STOSA's BPR): each sequence's user's training items,
     * for excluding them from the negatives. Both NULL when the caller has none (outside
     * training); the trainer fills them. */
    const int32_t *const *user_items; /* [n_seqs] pointer to the user's items */
    const int *n_user_items;          /* [n_seqs] how many */
} rt_batch;

typedef struct rt_arch {
    const char *name;
    /* Checks cfg and appends the tensors (rt_model_add_tensor) in state_dict order. */
    int (*layout)(rt_model *m, mr_error *e);
    /* Points m->impl at params (and grads when not NULL); called after every (re)allocation. */
    int (*bind)(rt_model *m, mr_error *e);
    void (*unbind)(rt_model *m);
    /* The reference's initialisation, deterministic in seed. */
    void (*init)(rt_model *m, uint64_t seed);
    /* Scratch for up to max_rows rows in max_seqs sequences. */
    int (*acts_create)(void **acts, const rt_model *m, int max_rows, int max_seqs, mr_error *e);
    void (*acts_free)(void *acts);
    /* Training objective on a batch (the architecture's own: cross-entropy over
     * all items at every labelled row for LRU / SASRec / GRU4Rec / NARM, the cloze
     * objective for BERT4Rec, BPR with its regulariser for STOSA), mean over the
     * scored rows; gradients overwrite m->grads. train != 0: dropout and the
     * objective's sampling keyed by key. Returns the loss. */
    double (*loss_backward)(rt_model *m, void *acts, const rt_batch *b, int train, uint64_t key);
    /* Evaluation, no dropout: scores [n_seqs, n_items + 1] for the item after each
     * sequence's last row (higher is better; the caller masks history and padding). */
    void (*scores_last)(const rt_model *m, void *acts, const rt_batch *b, float *scores);
} rt_arch;

/* The architectures, by name ("sasrec"); NULL when unknown. */
const rt_arch *rt_arch_find(const char *name);

/* Lays out and allocates the parameters (zeroed) of cfg->arch; binds views. */
int rt_model_create(rt_model *m, const rt_config *cfg, mr_error *e);
/* Allocates zeroed gradients and rebinds views. */
int rt_model_alloc_grads(rt_model *m, mr_error *e);
void rt_model_free(rt_model *m);
/* Appends one tensor to m's layout (offsets assigned in order); used by layout(). */
int rt_model_add_tensor(rt_model *m, const char *name, int n_dims, const int64_t *shape, int decay, mr_error *e);
const rt_tensor *rt_model_find(const rt_model *m, const char *name);

/* ---- added for the shared trainer (issue 15 part A) ---- */

/* The registered architectures' names, comma-separated ("lru, sasrec"), for messages;
 * -1 when buf is too small (the text is then cut). */
int rt_arch_names(char *buf, size_t n);

/* retriever.safetensors: the tensors under their state_dict names, and the whole
 * rt_config in the metadata (arch, n_items, hidden, blocks, heads, max_len, dropout,
 * attn_dropout, mask_prob, reg_weight; numbers as strings). Loading reads the
 * architecture from the file; a file without an arch key (LRURec before the
 * contract) loads as "lru" with its shape taken from the tensors. */
struct st_file;
struct st_writer;
int rt_model_save(const rt_model *m, const char *path, mr_error *e);
int rt_model_load(rt_model *m, const char *path, mr_error *e);
int rt_config_from_file(const struct st_file *f, rt_config *c, mr_error *e);
int rt_config_to_metadata(const rt_config *c, struct st_writer *w, mr_error *e);
/* Reads every tensor of m's layout by name (shape and finiteness checked) into dst,
 * a buffer laid out like m->params. */
int rt_read_tensors(const rt_model *m, const struct st_file *f, float *dst, mr_error *e);

#endif
