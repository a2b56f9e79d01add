/* Multi-head attention without a mask: every query sees every key. The
 * bidirectional self-attention of an encoder (ViT, BERT/Q-Former) and
 * cross-attention (queries from one sequence, keys and values from another).
 * Row strides let q, k and v be column slices of a fused projection. */
#ifndef MLLM4REC_NN_ATTENTION_FULL_H
#define MLLM4REC_NN_ATTENTION_FULL_H

#include <stdint.h>

/* Rows of queries per work item. */
#define ATTENTION_FULL_QBLOCK 64

/* Scratch floats attention_full_forward needs for Tk keys on n_threads threads. */
int64_t attention_full_scratch_floats(int64_t Tk, int n_threads);

/* For each head h (columns h*hd .. h*hd+hd-1 of q, k, v and out):
 *   out[Tq][ldo] = softmax(scale · q[Tq][ldq] k[Tk][ldk]ᵀ) v[Tk][ldv]
 * scratch: attention_full_scratch_floats(Tk, threads) floats; fewer threads run
 * when it holds fewer tiles. */
void attention_full_forward(float *out, int ldo, const float *q, int ldq, const float *k, int ldk, const float *v,
                            int ldv, int Tq, int Tk, int n_head, int hd, float scale, float *scratch,
                            int64_t scratch_floats);

#endif
