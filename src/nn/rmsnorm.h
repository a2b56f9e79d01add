/* RMSNorm: out = in / sqrt(mean(in²) + eps) · w. */
#ifndef MLLM4REC_NN_RMSNORM_H
#define MLLM4REC_NN_RMSNORM_H

#include <stdint.h>

/* out[T][d], in[T][d], w[d]; rstd[T] (may be NULL) keeps 1/sqrt(mean(in²)+eps)
 * for a backward. out may equal in. */
void rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, int64_t T, int d, float eps);

/* dx[T][d] += the gradient through rmsnorm_forward given dy[T][d], the
 * forward's input in[T][d] and its rstd[T] (w frozen: no gradient for it). */
void rmsnorm_backward(float *dx, const float *dy, const float *in, const float *w, const float *rstd, int64_t T,
                      int d);

#endif
