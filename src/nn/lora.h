/* A low-rank adapter on a frozen linear: y += scale · (x Aᵀ) Bᵀ, with
 * A [r][in] and B [out][r] trained (LoRA, Hu et al. 2021). */
#ifndef MLLM4REC_NN_LORA_H
#define MLLM4REC_NN_LORA_H

#include <stdint.h>

/* y[T][out] += scale · z Bᵀ with z[T][r] = x[T][in] Aᵀ (z is kept: scratch). */
void lora_forward(float *y, float *z, const float *x, const float *a, const float *b, int64_t T, int in, int out,
                  int r, float scale);

/* Given dy[T][out] and the forward's input x[T][in]:
 *   dB[out][r] += gs · scale · dyᵀ z,   dz = scale · dy B,
 *   dA[r][in]  += gs · dzᵀ x,            dx[T][in] += dz A (skipped when dx is NULL)
 * z[T][r] is scratch (recomputed from x: nothing kept from the forward);
 * gs scales the weight gradients only (e.g. 1 / accumulation steps). */
void lora_backward(float *dx, float *da, float *db, float *z, const float *dy, const float *x, const float *a,
                   const float *b, int64_t T, int in, int out, int r, float scale, float gs);

#endif
