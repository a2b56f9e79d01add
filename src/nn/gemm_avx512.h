/* An AVX-512 product of float activations with stored weights, for prefill and
 * for training's input gradients (matmul.c says when it runs):
 *
 *   Y[T][N] = X[T][K] · B  (+ beta · Y),  B(k, n) read from W as `layout` says:
 *     GEMM_W_OUT_ROWS: W holds N rows of K values, B(k, n) = W[n][k]: a weight
 *                      matrix in PyTorch's [out][in] layout times the inputs
 *                      (Y = X · Wᵀ, the forward); F32, F16 or BF16 values;
 *     GEMM_W_IN_ROWS:  W holds K rows of N floats, B(k, n) = W[k][n]: the same
 *                      matrix's input gradient (dX = dY · W); F32 only.
 *
 * X: T rows of K floats, row t at x + t * ldx.
 * W: rows of row_bytes bytes.
 * Y: T rows of N floats, row-major (row t at y + t * N).
 *
 * Why its own kernel: OpenBLAS must run its AVX2 kernels on this machine
 * (OPENBLAS_CORETYPE=Haswell; 0.3.21's AVX-512 ones are wrong here), so sgemm
 * uses half the vector width, and for F16/BF16 the old path (weight tile
 * dequantized to F32, then sgemm) also wrote and read back the whole F32 tile.
 * This kernel converts the weights while packing them, panel by panel, and
 * multiplies with zmm registers.
 *
 * Blocking (gemm_avx512.c has the details):
 *   - the output is cut into tiles of GEMM_NR = 48 weight rows (columns of Y) x
 *     all T activation rows, or T split in equal parts where the column tiles
 *     are too few to give each thread two; OpenMP takes the tiles in contiguous runs
 *     of column-tile-major order, so each output value is computed by exactly
 *     one thread, in one fixed order: the numbers do not depend on the thread
 *     count, nor on T (a row's sums never see the other rows);
 *   - K is cut into nk = ceil(K / 512) equal blocks (each a multiple of 16 but
 *     the last): a packed panel of 48 x 512 floats is 96 KB, within the 1 MB L2
 *     while the activation rows stream past it in order (a panel is packed once
 *     per tile and K block);
 *   - the panel holds B's 48 columns as F32, k-major (panel[k][48]), zero past
 *     N: GEMM_W_OUT_ROWS converts and transposes 48 weight rows, GEMM_W_IN_ROWS
 *     copies 48 floats from each of the block's rows;
 *   - the micro-kernel keeps 8 activation rows x 48 columns in 24 zmm sums,
 *     broadcasting one activation per row and k: per k 3 panel loads, 8
 *     broadcasts, 24 FMAs. Edge rows (T % 8) run the same code with fewer rows,
 *     edge columns (N % 48) are masked on store.
 * The sum for Y[t][n] is, per K block in order, the k-ordered FMA chain of that
 * block added to Y (the first block adds beta · Y instead, or nothing if beta is
 * 0, so NaN in an uninitialized Y never leaks).
 *
 * Measured (Zen 5, 2 threads, bench_llm beside llama-bench, background jobs
 * paused, 17:04-17:09 UTC on 3 December, the tree before and after, alternating):
 * SmolLM2-135M F16 prefill 719/705 -> 1146/1179 tokens/s at 512 tokens and
 * 604/624 -> 919/945 at 1536, llama.cpp 722-742 and 548-582 (ratio 0.96-1.09
 * -> 1.55-1.68). */
#ifndef MLLM4REC_NN_GEMM_AVX512_H
#define MLLM4REC_NN_GEMM_AVX512_H

#include <stddef.h>
#include <stdint.h>

#include "mllm4rec/gguf.h"

/* 1 when this build has the kernel (AVX-512 F/BW/VL at compile time). */
int gemm_avx512_available(void);

/* Floats of scratch the kernel wants for n_threads threads (0 without the
 * kernel): one packed panel per thread, plus alignment slack. */
int64_t gemm_avx512_scratch_floats(int n_threads);

enum { GEMM_W_OUT_ROWS, GEMM_W_IN_ROWS };

/* The product above, on up to omp_get_max_threads() threads (as many as scratch
 * has panels for; one for a small product). Returns 0 (and touches nothing) when
 * it cannot run: a type or layout it does not take, no AVX-512 in this build, or
 * scratch too small for one panel. */
int gemm_avx512(float *y, const float *x, int64_t ldx, int64_t T, ggml_type type, const void *w, size_t row_bytes,
                int layout, int64_t N, int64_t K, float beta, float *scratch, int64_t scratch_floats);

#endif
