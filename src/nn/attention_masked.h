/* Multi-head self-attention over one short sequence with a key mask, causal or
 * bidirectional, as the recommenders' attention (SASRec, BERT4Rec) computes it:
 * scores masked to -inf where the key is padding (and, when causal, where the key
 * comes after the query), softmax, optional dropout on the probabilities, times v.
 * The probabilities are kept (r x r per head: r is at most a few hundred rows)
 * so the backward needs no recomputation. */
#ifndef MLLM4REC_NN_ATTENTION_MASKED_H
#define MLLM4REC_NN_ATTENTION_MASKED_H

#include <stdint.h>

/* For each head h (columns h*hd .. h*hd+hd-1 of q, k, v and out, row stride ld):
 *   probs[h][r][r] = softmax(q kᵀ / sqrt(hd)) over the keys j with key_valid[j]
 *                    (and j <= i when causal);
 *   out[r][ld]     = (probs ∘ drop) v   (drop [n_head][r][r] of 0 or 1/(1-p); NULL = none).
 * A query that sees no valid key (a padding row at the start of a causal
 * sequence) gets a zero row of probabilities and a zero output; callers never
 * score such rows. */
void attention_masked_forward(float *out, float *probs, const float *q, const float *k, const float *v, int ld,
                              const uint8_t *key_valid, const float *drop, int r, int n_head, int hd, int causal);

/* Gradient of attention_masked_forward. dq, dk, dv [r][ld] are OVERWRITTEN in
 * the head columns; dout [r][ld]; probs and drop as the forward kept them;
 * scratch: r floats. */
void attention_masked_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                               const float *q, const float *k, const float *v, int ld, const float *drop, int r,
                               int n_head, int hd, float *scratch);

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

#endif
