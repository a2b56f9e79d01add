/* Multi-head self-attention over one short sequence with a key mask, causal or
 * bidirectional, as the recommenders' attention (SASRec, BERT4Rec) computes it:
 * scores masked to -inf where the key is padding (and, when causal, where the key
 * comes after the query), softmax, optional dropout on the probabilities, times v.
 * The probabilities are kept (r x r per head: r is at most a few hundred rows)
 * so the backward needs no recomputation. */
#ifndef MLLM4REC_NN_ATTENTION_MASKED_H
#define MLLM4REC_NN_ATTENTION_MASKED_H

#include <stddef.h>
#include <stdint.h>

/* Queries per block of the products (see attention_masked.c). */
#define ATTENTION_MASKED_QBLOCK 64

/* Scratch floats the forward and backward need for a sequence of r rows. */
static inline size_t attention_masked_scratch_floats(int r) {
    return 2 * (size_t)ATTENTION_MASKED_QBLOCK * (size_t)(r > 0 ? r : 0);
}

/* For each head h (columns h*hd .. h*hd+hd-1 of q, k, v and out, row stride ld):
 *   probs[h][r][r] = softmax(q kᵀ / sqrt(hd)) over the keys j with key_valid[j]
 *                    (and j <= i when causal);
 *   out[r][ld]     = (probs ∘ drop) v   (drop [n_head][r][r] of 0 or 1/(1-p); NULL = none).
 * A query that sees no valid key (a padding row at the start of a causal
 * sequence) gets a zero row of probabilities and a zero output; callers never
 * score such rows. scratch: attention_masked_scratch_floats(r). */
void attention_masked_forward(float *out, float *probs, const float *q, const float *k, const float *v, int ld,
                              const uint8_t *key_valid, const float *drop, int r, int n_head, int hd, int causal,
                              float *scratch);

/* Gradient of attention_masked_forward. dq, dk, dv [r][ld] are OVERWRITTEN in
 * the head columns; dout [r][ld]; probs, drop and causal as the forward had
 * them; scratch: attention_masked_scratch_floats(r). */
void attention_masked_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                               const float *q, const float *k, const float *v, int ld, const float *drop, int r,
                               int n_head, int hd, int causal, float *scratch);

/* The masked softmax of one query row, shared with attention_wasserstein (only
 * the scores and the mixing of values differ there). Key j is visible from
 * query i when key_valid[j] (and j <= i when causal). */
static inline int attention_key_visible(const uint8_t *key_valid, int i, int j, int causal) {
    return key_valid[j] && (!causal || j <= i);
}
/* p [r] holds the scores of the n_vis visible keys, in key order, at its front;
 * on return p [r] = their softmax spread back to the keys' places, 0 elsewhere. */
void attention_masked_softmax_row(float *p, int n_vis, const uint8_t *key_valid, int i, int r, int causal);
/* Its backward: with p [r] from it and dp [r] = d(loss)/d(p) wherever p != 0,
 * dp becomes dS [r] = p (dp - Σ_j p_j dp_j) (the sum in double), 0 where p is 0. */
void attention_masked_softmax_row_backward(float *dp, const float *p, int r);
/* p [r] holds query i's scores against keys 0 .. kc-1 (every key it may see is
 * among them): on return p [r] is attention_masked_softmax_row's result. */
void attention_masked_scores_softmax(float *p, const uint8_t *key_valid, int i, int kc, int r, int causal);

#endif
