/* The portable C kernels of qdot_k.c, exported so that tests and bench/ can hold
 * the AVX2 kernels (what qdot_tile_q*_K run when the build has __AVX2__) against
 * them. They take the arguments of qdot_tile_fn (nn/qdot.h) and give the same
 * exact integers; only the order of the fp32 additions differs (qdot_k.c says how). */
#ifndef MLLM4REC_NN_QDOT_K_H
#define MLLM4REC_NN_QDOT_K_H

#include "nn/qdot.h"

void qdot_tile_q4_K_portable(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows,
                             const uint8_t *xq, size_t xq_row_bytes, int n_act, int64_t cols, float beta);
void qdot_tile_q5_K_portable(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows,
                             const uint8_t *xq, size_t xq_row_bytes, int n_act, int64_t cols, float beta);
void qdot_tile_q6_K_portable(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows,
                             const uint8_t *xq, size_t xq_row_bytes, int n_act, int64_t cols, float beta);

/* 1 when qdot_tile_q*_K are the AVX2 kernels, 0 when they are the portable ones. */
int qdot_k_simd(void);

#endif
