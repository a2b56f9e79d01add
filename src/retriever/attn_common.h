/* Pieces the attention retrievers (SASRec, BERT4Rec, STOSA) share: the views
 * of their parameters, keyed dropout masks, the reference's initialisers, the
 * padded positions of packed sequences and ReLU. */
#ifndef MLLM4REC_RETRIEVER_ATTN_COMMON_H
#define MLLM4REC_RETRIEVER_ATTN_COMMON_H

#include <stdint.h>

#include "mllm4rec/base.h"
#include "retriever/arch.h"
#include "retriever/common.h"

/* An attention model's parameters (and gradients, NULL without them) by role,
 * in layout order: n_head tensors before the blocks, n_block per block, n_tail
 * after them. m->impl of SASRec, BERT4Rec and STOSA. */
typedef struct attn_views {
    int blocks, n_head, n_block, n_tail;
    float **h, **dh; /* [n_head] */
    float **w, **dw; /* [blocks * n_block]: block l's tensors from l * n_block (attn_block) */
    float **t, **dt; /* [n_tail] */
} attn_views;

/* Block l's tensors (or their gradients), indexed by the architecture's block enum. */
static inline float *const *attn_block(const attn_views *v, int l) { return v->w + (size_t)l * v->n_block; }
static inline float *const *attn_block_grad(const attn_views *v, int l) { return v->dw + (size_t)l * v->n_block; }

/* rt_arch.bind / unbind of the attention models: m->impl becomes (or is refreshed
 * as) the views of m's layout, which must hold n_head + blocks * n_block + n_tail
 * tensors. */
int attn_views_bind(rt_model *m, int n_head, int n_block, int n_tail, mr_error *e);
void attn_views_unbind(rt_model *m);

/* The initialisation of the BERT4Rec lineage's code: layer norms (names holding
 * "layer_norm") ones and zeros; tensors 0 and 1 (the token and position tables)
 * nn.Embedding's N(0, 1) when unit_normal_tables, else the truncated normal of the
 * rest, the token table's padding row 0 zeroed; every other tensor truncated normal,
 * std 0.02 cut at +-0.04. One generator over the tensors in layout order,
 * deterministic in seed. BERT4Rec keeps the reference's N(0, 1) tables
 * (attn_init_bert); SASRec starts them small (sasrec.c says why). */
void attn_init_tables(rt_model *m, uint64_t seed, int unit_normal_tables);
void attn_init_bert(rt_model *m, uint64_t seed);

/* The key of one row of one random site: (key, site, example, padded position),
 * nothing that depends on threads or on the order of evaluation. */
uint64_t attn_row_key(uint64_t key, uint64_t site, int64_t example, int pos);

/* scale [n] = 0 with probability p, else 1 / (1 - p); element c decided by
 * mr_mix64(row_key + c) alone (src/base, the project's one hash). */
void attn_dropout_row(float *scale, int n, float p, uint64_t row_key);

/* Packed sequences as the attention models see them: sequence s owns rows
 * start[s] .. start[s+1]-1, its first row at padded position max_len - r (r its
 * rows); example[s] (or s when example is NULL) keys its randomness. */

/* pos [N] the position-table row of every row: counted (SASRec, BERT4Rec: 1, 2, ..
 * over the rows whose token is an item, capped at max_len, 0 on padding) or, with
 * counted 0, the padded position itself (STOSA, clamped at 0); valid [N] =
 * token > 0; poff [n_seqs + 1] the offsets of each sequence's n_head r x r
 * probabilities. */
void attn_positions(int32_t *pos, uint8_t *valid, size_t *poff, const int *start, const int32_t *tok, int n_seqs,
                    int max_len, int n_head, int counted);

/* mask [N, C]: every row's dropout scale (attn_dropout_row) at random site `site`,
 * keyed by (key, site, example, padded position); threads over sequences. */
void attn_dropout_rows(float *mask, int C, float p, uint64_t key, uint64_t site, const int *start, int n_seqs,
                       const int64_t *example, int max_len);

/* drop [n_head][r][r]: one sequence's dropout scales of the attention
 * probabilities (0 or 1 / (1 - p)); row (head h, query i) keyed by
 * (key, site + 1000 (h + 1), example, p0 + i), column j by the key's padded
 * position p0 + j. When causal, the keys after the query (whose probability
 * is 0) get 0 without a draw. */
void attn_probs_dropout(float *drop, int r, int n_head, float p, uint64_t key, uint64_t site, int64_t example, int p0,
                        int causal);

/* The embedding lookup with positions: x [N, d] = tok_table[tok] + pos_table[pos];
 * its gradient accumulates dpos_table[pos] += g and dtok_table[tok] += g, the
 * token table's padding row taking none from the lookup (padding_idx = 0). */
void attn_embedding_forward(float *x, const float *tok_table, const float *pos_table, const int32_t *tok,
                            const int32_t *pos, int N, int d);
void attn_embedding_backward(float *dtok_table, float *dpos_table, const float *g, const int32_t *tok,
                             const int32_t *pos, int N, int d);

/* A uniform in [0, 1) from a row key and a column. */
static inline double attn_uniform(uint64_t row_key, uint64_t col) {
    return (double)(mr_mix64(row_key + col * 0x632be59bd9b4e019ULL) >> 11) * (1.0 / 9007199254740992.0);
}

/* The global example index of sequence s (b->example or s). */
static inline int64_t attn_example(const rt_batch *b, int s) { return b->example ? b->example[s] : s; }

/* 1 when the batch fits scratch made for max_rows rows in max_seqs sequences
 * and no sequence is longer than max_len (the contract's windows); the
 * architectures answer a batch that does not with a NaN loss / NaN scores. */
int attn_batch_fits(const rt_batch *b, int max_len, int max_rows, int max_seqs);

/* The position-wise feed-forward sublayer of SASRec and BERT4Rec, post-norm with
 * the reference's layer norm (nn/layernorm_std.h):
 *   out = LN(x1 + fdrop ∘ (W2 (hdrop ∘ act(W1 x1 + b1)) + b2))
 * act ReLU (SASRec, whose hdrop is its dropout after the ReLU) or GELU's tanh
 * form (BERT4Rec: hdrop NULL); a NULL mask is no dropout. W1 [F, d], W2 [d, F]. */
enum { ATTN_FFN_RELU, ATTN_FFN_GELU_TANH };
typedef struct attn_ffn_params {
    float *w1, *b1, *w2, *b2, *ln_w, *ln_b; /* or their gradients */
} attn_ffn_params;
typedef struct attn_ffn_acts {
    float *pre, *h;          /* [N, F]: W1 x1 + b1; act(pre) ∘ hdrop */
    float *s;                /* [N, d]: the sum under LN */
    float *out, *mean, *std; /* [N, d], [N], [N] */
    float *f;                /* [N, d]: W2 h + b2 */
} attn_ffn_acts;
void attn_ffn_forward(const attn_ffn_acts *k, const float *x1, const attn_ffn_params *w, const float *hdrop,
                      const float *fdrop, int act, int N, int d, int F, float eps);
/* dx1 [N, d] = d(loss)/d(x1) (OVERWRITTEN) from dout [N, d]; the gradients in dw
 * accumulate. Scratch: ds [N, d], dh [N, F]; destroys k->h. */
void attn_ffn_backward(float *dx1, const attn_ffn_params *dw, const float *dout, const attn_ffn_acts *k,
                       const float *x1, const attn_ffn_params *w, const float *hdrop, const float *fdrop, int act,
                       int N, int d, int F, float eps, float *ds, float *dh);

/* ReLU: out [n] = max(inp, 0); dinp [n] = dout where inp > 0, else 0 (overwrites). */
void relu_forward(float *out, const float *inp, int64_t n);
void relu_backward(float *dinp, const float *dout, const float *inp, int64_t n);

/* ELU(x) + shift: out [n] = (x > 0 ? x : exp(x) - 1) + shift;
 * dinp [n] = dout * (x > 0 ? 1 : exp(x)) (overwrites; dinp may equal dout). */
void elu_forward(float *out, const float *inp, int64_t n, float shift);
void elu_backward(float *dinp, const float *dout, const float *inp, int64_t n);

/* STOSA's negative for a row, keyed by (key, example, padded position). With the
 * user's training items seen [n_seen] (the reference's neg_sample over set(items)):
 * uniform over the items 1..n_items outside them, drawn by keyed rejection (try t
 * uses column t of the row key); when they cover every item, the draw below. With
 * seen NULL: uniform over the items 1..n_items other than pos (n_items >= 2). */
int32_t stosa_negative(int n_items, int32_t pos, const int32_t *seen, int n_seen, uint64_t key, int64_t example,
                       int position);

/* BERT4Rec's cloze masking of one window of r rows whose first row sits at
 * padded position p0 (bert4rec.c): tok [r] receives the inputs and tgt [r] the
 * labels (the item at masked rows, 0 elsewhere) for the window's items [r];
 * covered [r] is scratch. */
void bert4rec_mask_window(const rt_config *c, int32_t *tok, int32_t *tgt, const int32_t *items, int r, int p0,
                          int64_t example, uint64_t key, int32_t *covered);

#endif
