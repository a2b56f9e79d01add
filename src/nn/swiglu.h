/* SwiGLU gate of the Llama feed-forward: h = silu(g) ⊙ u, silu(x) = x / (1 + e^-x). */
#ifndef MLLM4REC_NN_SWIGLU_H
#define MLLM4REC_NN_SWIGLU_H

#include <stdint.h>

/* h[n], g[n], u[n] (n = T · n_ff); h may equal g or u. */
void swiglu_forward(float *h, const float *g, const float *u, int64_t n);

/* dg[n], du[n] from dh[n] and the forward's inputs g, u; dg may equal dh. */
void swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n);

#endif
