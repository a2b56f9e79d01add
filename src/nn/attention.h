/* Causal multi-head attention with grouped-query heads, batched per head and
 * block of queries with BLAS. */
#ifndef MLLM4REC_NN_ATTENTION_H
#define MLLM4REC_NN_ATTENTION_H

#include <stdint.h>

/* Rows of queries per block: each block attends only to the keys it can see. */
#define ATTENTION_QBLOCK 64

/* Scratch floats attention_forward needs for n_keys keys with n_threads threads. */
int64_t attention_scratch_floats(int64_t n_keys, int n_threads);

/* T new queries at positions pos0 .. pos0+T-1 attend to keys 0 .. pos0+T-1:
 *   q[T][n_head*hd] (already rotated), k[pos0+T][n_head_kv*hd] and
 *   v[pos0+T][n_head_kv*hd] (rows in position order, k rotated),
 *   out[T][n_head*hd] = softmax(q kᵀ / sqrt(hd) + causal mask) v per head,
 * query head h reading kv head h / (n_head / n_head_kv). */
void attention_forward(float *out, const float *q, const float *k, const float *v, int64_t T, int64_t pos0, int n_head,
                       int n_head_kv, int hd, float *scratch, int64_t scratch_floats);

/* Attention over an f16 KV cache (generation states, llama.cpp's default cache):
 * k32, v32 [n_past + n_new][n_head_kv*hd] hold the n_new new rows (from n_past on)
 * in floats, k16, v16 the cache (f16 bits, same layout). The new rows are stored
 * into the cache; then the last nq of them query every row as the cache holds it,
 * rounded to f16: one query reads the f16 rows directly, widening as it goes (a
 * generation step reads half the bytes of a float cache); more queries first get
 * the rows back into k32, v32 for attention_forward. out[nq][n_head*hd]. */
void attention_forward_f16_cache(float *out, const float *q, int64_t nq, float *k32, float *v32, uint16_t *k16,
                                 uint16_t *v16, int64_t n_past, int64_t n_new, int n_head, int n_head_kv, int hd,
                                 float *scratch, int64_t scratch_floats);

/* Floats of the probabilities of a whole sequence (the causal blocks only). */
int64_t attention_probs_floats(int64_t T, int n_head);

/* attention_forward that also keeps, for attention_backward (each NULL: not kept):
 * stats[T][n_head][2], each query row's softmax max and 1 / sum, from which the
 * probabilities are rebuilt with one product and one exp pass; probs
 * [attention_probs_floats], the probabilities themselves (pos0 0 only). */
void attention_forward_stats(float *out, float *stats, float *probs, const float *q, const float *k, const float *v, int64_t T,
                             int64_t pos0, int n_head, int n_head_kv, int hd, float *scratch, int64_t scratch_floats);

/* Scratch floats attention_backward needs for T keys. */
int64_t attention_backward_scratch_floats(int64_t T, int n_head, int n_head_kv, int hd, int n_threads);

/* The gradient of attention_forward for T queries at positions pos0 .. pos0+T-1
 * over keys 0 .. pos0+T-1 (a whole sequence: pos0 = 0): given dout[T][n_head*hd],
 * the forward's output out[T][n_head*hd], its row statistics stats[T][n_head][2]
 * or probabilities (probs, when not NULL; pos0 0 only) from
 * attention_forward_stats, and q[T], k, v [pos0+T] rows, writes
 * dq[T][n_head*hd], dk[pos0+T][n_head_kv*hd], dv[pos0+T][n_head_kv*hd] (overwritten).
 * Without probs they are rebuilt block by block from the scores and the
 * statistics, nothing T x T is kept; the softmax's row term Σ_j P dP comes
 * from dout · out. */
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *stats,
                        const float *probs, const float *q, const float *k, const float *v, int64_t T, int64_t pos0,
                        int n_head, int n_head_kv, int hd, float *scratch, int64_t scratch_floats);

/* row[0..n) = softmax(row[0..n)) in place (max-subtracted, fp32 sums); every
 * attention kernel (causal here, unmasked and cross in attention_full.c) uses it. */
void softmax_row_forward(float *row, int64_t n);

#endif
