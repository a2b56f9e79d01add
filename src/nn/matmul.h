/* Products with stored (possibly quantized) weight matrices (DESIGN section 4):
 * quantized weights with an integer kernel (nn/qdot.h) multiply 8-bit quantized
 * activations in integer arithmetic, as llama.cpp does; F16/BF16 prefill runs
 * an AVX-512 kernel where the build has one (nn/gemm_avx512.h); other types are
 * dequantized tile by tile into a float scratch buffer for one BLAS sgemm per
 * tile; F32 matrices go to BLAS directly. matmul.c says which runs when. */
#ifndef MLLM4REC_NN_MATMUL_H
#define MLLM4REC_NN_MATMUL_H

#include <stdint.h>

#include "mllm4rec/gguf.h"

/* A rows x cols row-major matrix in a ggml type: row r holds the weights of
 * output r (PyTorch's [out][in] layout, ggml's ne = {cols, rows}); or, with x8
 * set, the same matrix in nn/qdot.h's x8 layout (groups of 8 rows interleaved
 * block by block), made by qmat_repack_x8 for generation. */
typedef struct qmat {
    ggml_type type;
    int64_t rows, cols;
    const void *data;
    int x8;
} qmat;

/* Floats of scratch that matmul_forward wants for W (0 for F32): one tile of
 * at most `tile_floats` floats, and at least one row per thread; for the integer
 * path also room for 256 quantized activation rows (more are done in chunks);
 * for F16/BF16 with AVX-512 also one packed weight panel per thread (with less,
 * fewer threads run, or the sgemm path). */
int64_t matmul_scratch_floats(const qmat *W, int64_t tile_floats, int n_threads);

/* y[T][rows] = x[T][cols] · Wᵀ  (y = x Wᵀ; beta 0 overwrites y, 1 adds to it).
 * scratch: matmul_scratch_floats(W, ...) floats. */
void matmul_forward(float *y, const float *x, int64_t T, const qmat *W, float beta, float *scratch,
                    int64_t scratch_floats);

/* The same product with float activations whatever W's type: F32 sgemm, or weight
 * tiles dequantized for sgemm. Training forwards use it: the loss must be the
 * float function whose gradients the backward computes (8-bit activations would
 * make it a step function of the adapter, and finite differences meaningless). */
void matmul_forward_float(float *y, const float *x, int64_t T, const qmat *W, float beta, float *scratch,
                          int64_t scratch_floats);

/* dx[T][cols] = beta·dx + dy[T][rows] · W  (the input gradient of matmul_forward;
 * beta 0 overwrites dx, whatever it held, 1 adds to it). */
void matmul_backward_input(float *dx, const float *dy, int64_t T, const qmat *W, float beta, float *scratch,
                           int64_t scratch_floats);

/* Row r of W as floats (embedding lookup). */
void qmat_row(const qmat *W, int64_t r, float *out);

/* Bytes of W's data. */
size_t qmat_bytes(const qmat *W);
/* 1 when W can be repacked into the x8 layout here (qdot_x8_supported). */
int qmat_can_repack_x8(const qmat *W);
/* Copies W's data into dst (qmat_bytes(W) bytes) in the x8 layout, over the
 * threads, and points W at it. Every product then gives the same numbers. */
void qmat_repack_x8(qmat *W, void *dst);

#endif
