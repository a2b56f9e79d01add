/* A low-rank adapter on a frozen linear: y += scale · (x Aᵀ) Bᵀ, with
 * A [r][in] and B [out][r] trained (LoRA, Hu et al. 2021), and the dropout on
 * its input (PEFT's lora_dropout) in training forwards. */
#ifndef MLLM4REC_NN_LORA_H
#define MLLM4REC_NN_LORA_H

#include <stdint.h>

/* y[T][out] += scale · z Bᵀ with z[T][r] = x[T][in] Aᵀ (z is kept: scratch). */
void lora_forward(float *y, float *z, const float *x, const float *a, const float *b, int64_t T, int in, int out,
                  int r, float scale);

/* Given dy[T][out] and the forward's input x[T][in]:
 *   dB[out][r] += gs · scale · dyᵀ z,   dz = scale · dy B,
 *   dA[r][in]  += gs · dzᵀ x,            dx[T][in] = dx_beta · dx + dz A (skipped when dx is NULL)
 * z[T][r] is scratch (recomputed from x: nothing kept from the forward);
 * gs scales the weight gradients only (e.g. 1 / accumulation steps). */
void lora_backward(float *dx, float *da, float *db, float *z, const float *dy, const float *x, const float *a,
                   const float *b, int64_t T, int in, int out, int r, float scale, float gs, float dx_beta);

/* Dropout with probability p on elements first .. first+n-1 of an input:
 * out[n] = x[n] ⊙ keep / (1 - p), where element i is kept unless a 16-bit draw
 * from the hash of (key, i) falls below p · 2^16 (so a mask is a function of key
 * and index, the same for a slice as for the whole input). mask[] gets the keep
 * bits, bit i % 8 of byte i / 8 (absolute index i; NULL: not kept). */
void lora_dropout_forward(float *out, uint8_t *mask, const float *x, int64_t n, int64_t first, float p, uint64_t key);

/* out[n] = x ⊙ keep / (1 - p) (add: out += that) with the keep bits of elements
 * first .. first+n-1 that lora_dropout_forward kept: the dropped input again, or
 * the gradient through the dropout. */
void lora_dropout_apply(float *out, const float *x, const uint8_t *mask, int64_t n, int64_t first, float p, int add);

#endif
