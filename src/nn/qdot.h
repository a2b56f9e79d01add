/* Integer products of quantized weights with 8-bit activations, in llama.cpp's
 * arithmetic (DESIGN section 4): the activations of a product are quantized once
 * per call, per row, into blocks with one scale each, and every (weight block,
 * activation block) pair is an exact integer dot product that is converted to
 * fp32 once, times the two scales.
 *
 *   weight type                 activation blocks
 *   Q8_0, Q4_0, Q5_0            Q8_0: f16 d; i8 qs[32]                     (34 bytes)
 *   Q4_1, Q5_1                  Q8_1: f16 d; f16 s = d * sum(qs); i8 qs[32] (36 bytes)
 *   Q4_K, Q5_K, Q6_K            Q8_K: f32 d; i8 qs[256]; i16 bsums[16]     (292 bytes)
 *
 * The activation formats are ggml's block_q8_0 / block_q8_1 / block_q8_K byte for
 * byte, quantized as ggml's quantize_row_q8_*_ref does, so that our products and
 * llama.cpp's see the same integers.
 *
 * Layers: qdot.c owns the activation formats, the 32-element weight types and the
 * dispatch; qdot_k.c owns the K types. matmul.c decides when these run. */
#ifndef MLLM4REC_NN_QDOT_H
#define MLLM4REC_NN_QDOT_H

#include <stddef.h>
#include <stdint.h>

#include "mllm4rec/gguf.h"

typedef struct {
    uint16_t d; /* f16 */
    int8_t qs[32];
} blk_q8_0;

typedef struct {
    uint16_t d; /* f16 */
    uint16_t s; /* f16: d * sum(qs) */
    int8_t qs[32];
} blk_q8_1;

typedef struct {
    float d;
    int8_t qs[256];
    int16_t bsums[16]; /* sums of qs in groups of 16 */
} blk_q8_K;

/* GGML_TYPE_Q8_0, GGML_TYPE_Q8_1 or GGML_TYPE_Q8_K: the activation blocks that
 * weights of type w multiply with; GGML_TYPE_F32 when w has no integer product. */
ggml_type qdot_act_type(ggml_type w);

/* Bytes of one activation row of `cols` values for weights of type w. */
size_t qdot_act_row_bytes(ggml_type w, int64_t cols);

/* xq = the row x[cols] quantized for weights of type w (qdot_act_row_bytes bytes). */
void qdot_quantize_row(ggml_type w, const float *x, void *xq, int64_t cols);

/* One tile of the product y = x Wᵀ in integer arithmetic:
 *   y[t * ldy + r] = dot(W row r, x row t) + beta * y[t * ldy + r]
 * for r < n_rows, t < n_act (beta 0: y is only written).
 *   w:  n_rows weight rows of `cols` values, w_row_bytes apart;
 *   xq: n_act activation rows from qdot_quantize_row, xq_row_bytes apart.
 * Runs on the calling thread; the caller tiles and spreads tiles over threads. */
/* With one or two activation rows (generation) a kernel reads 8 weight rows side
 * by side, a block of each at a time: 8 short streams that restart every group of
 * rows, which the hardware prefetchers follow badly (the product ran at about half
 * the memory's read speed). The kernels then also prefetch the rows' bytes as one
 * linear stream, this far ahead of the group being read: a 7B Q4_0 one-row product
 * went from about 22 to 28 GB/s on 2 threads (12, 24 and 48 KB all helped; 24 KB
 * was best). */
#define QDOT_PREFETCH_BYTES 24576

typedef void (*qdot_tile_fn)(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows,
                             const uint8_t *xq, size_t xq_row_bytes, int n_act, int64_t cols, float beta);

/* The tile kernel for weights of type w, or NULL when w has none. */
qdot_tile_fn qdot_tile_kernel(ggml_type w);

/* The portable C kernel of the 32-element types (what qdot_tile_kernel runs without
 * AVX2), for tests: the AVX2 kernels must give the same floats bit for bit. */
void qdot_tile_portable(ggml_type w, float *y, int64_t ldy, const uint8_t *wd, size_t w_row_bytes, int n_rows,
                        const uint8_t *xq, size_t xq_row_bytes, int n_act, int64_t cols, float beta);

/* The K types' activation blocks (qdot_k.c), reached through qdot_quantize_row:
 * y[cols / 256] = x[cols] quantized as ggml's quantize_row_q8_K_ref. */
void qdot_quantize_row_q8_K(const float *x, blk_q8_K *y, int64_t cols);

/* ---- the x8 layout: Q4_0 weights repacked for generation ----
 * With one activation row, the kernel reading the file's layout gathers 8 rows
 * 2.3 KB apart and transposes their quants in registers; that work, not memory,
 * bounds it (a 7B token's products: about 11 GB/s per thread, where one thread reads
 * 22 GB/s). The x8 layout does the gathering once: for each group of 8 rows and each
 * block b, one 144-byte record holds the 8 rows' f16 scales (16 bytes), then their
 * quants already transposed, 32 bytes per 4-byte word j (lane k = bytes 4j..4j+3 of
 * row k's block). A group takes the bytes its 8 rows took (group g starts at row 8g),
 * so tiles of whole groups are addressed as before. The products give the same
 * floats as from the file's layout, bit for bit (the same kernel, other loads).
 * llama.cpp's CPU backend repacks Q4_0 likewise at load. */
/* 1 when a rows x cols matrix of type w can be repacked here (Q4_0, rows % 8 == 0, an AVX2 build). */
int qdot_x8_supported(ggml_type w, int64_t rows, int64_t cols);
/* dst = the rows (a multiple of 8) at src in the x8 layout; the same size. */
void qdot_x8_repack(ggml_type w, const uint8_t *src, uint8_t *dst, int64_t rows, int64_t cols);
/* out[cols] = row r of the x8 matrix at data, dequantized (as dequantize_row). */
void qdot_x8_dequantize_row(ggml_type w, const uint8_t *data, int64_t r, float *out, int64_t cols);
/* The tile kernel for x8 weights (n_rows a multiple of 8), or NULL. */
qdot_tile_fn qdot_tile_kernel_x8(ggml_type w);

/* The K-type kernels (qdot_k.c), reached through qdot_tile_kernel. */
void qdot_tile_q4_K(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows, const uint8_t *xq,
                    size_t xq_row_bytes, int n_act, int64_t cols, float beta);
void qdot_tile_q5_K(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows, const uint8_t *xq,
                    size_t xq_row_bytes, int n_act, int64_t cols, float beta);
void qdot_tile_q6_K(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows, const uint8_t *xq,
                    size_t xq_row_bytes, int n_act, int64_t cols, float beta);

#endif
