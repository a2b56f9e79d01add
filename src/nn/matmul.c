/* Quantized matrix products: dequantize a tile of rows, then one sgemm. For a
 * handful of input rows (generation) each weight row is dequantized into a
 * per-thread buffer and dotted with the inputs instead, which reads the
 * weights once without writing a tile. */
#include "nn/matmul.h"

#include <cblas.h>
#include <omp.h>

#include "nn/quant.h"

/* At most this many input rows take the row-by-row path. */
#define MATMUL_SMALL_T 4
/* Below this many multiply-adds (or dequantized values) a product runs on one
 * thread: waking a team costs more than it saves, and far more on a busy machine. */
#define MATMUL_PARALLEL_MIN (1 << 18)

static inline const uint8_t *row_ptr(const qmat *W, size_t row_bytes, int64_t r) {
    return (const uint8_t *)W->data + (size_t)r * row_bytes;
}

int64_t matmul_scratch_floats(const qmat *W, int64_t tile_floats, int n_threads) {
    if (W->type == GGML_TYPE_F32) return 0;
    int64_t rows_tile = tile_floats / W->cols;
    if (rows_tile > W->rows) rows_tile = W->rows;
    if (rows_tile < n_threads) rows_tile = n_threads;
    if (rows_tile < 1) rows_tile = 1;
    return rows_tile * W->cols;
}

void qmat_row(const qmat *W, int64_t r, float *out) {
    dequantize_row(W->type, row_ptr(W, quant_row_bytes(W->type, W->cols), r), out, W->cols);
}

void matmul_forward(float *y, const float *x, int64_t T, const qmat *W, float beta, float *scratch,
                    int64_t scratch_floats) {
    const int64_t rows = W->rows, cols = W->cols;
    if (T <= 0) return;
    if (W->type == GGML_TYPE_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)rows, (int)cols, 1.0f, x, (int)cols,
                    (const float *)W->data, (int)cols, beta, y, (int)rows);
        return;
    }
    const size_t rb = quant_row_bytes(W->type, cols);
    if (T <= MATMUL_SMALL_T) {
        int nbuf = (int)(scratch_floats / cols);
        int nth = omp_get_max_threads();
        if (nth > nbuf) nth = nbuf;
        if (rows * cols * T < MATMUL_PARALLEL_MIN) nth = 1;
        if (nth < 1) nth = 1;
#pragma omp parallel num_threads(nth)
        {
            float *buf = scratch + (int64_t)omp_get_thread_num() * cols;
#pragma omp for schedule(static)
            for (int64_t r = 0; r < rows; r++) {
                dequantize_row(W->type, row_ptr(W, rb, r), buf, cols);
                for (int64_t t = 0; t < T; t++) {
                    float d = cblas_sdot((int)cols, buf, 1, x + t * cols, 1);
                    y[t * rows + r] = beta != 0.0f ? d + beta * y[t * rows + r] : d;
                }
            }
        }
        return;
    }
    int64_t tile = scratch_floats / cols;
    if (tile < 1) tile = 1;
    for (int64_t r0 = 0; r0 < rows; r0 += tile) {
        const int64_t n = rows - r0 < tile ? rows - r0 : tile;
#pragma omp parallel for schedule(static) if (n * cols >= MATMUL_PARALLEL_MIN)
        for (int64_t r = 0; r < n; r++) dequantize_row(W->type, row_ptr(W, rb, r0 + r), scratch + r * cols, cols);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)n, (int)cols, 1.0f, x, (int)cols, scratch,
                    (int)cols, beta, y + r0, (int)rows);
    }
}

void matmul_backward_input(float *dx, const float *dy, int64_t T, const qmat *W, float *scratch,
                           int64_t scratch_floats) {
    const int64_t rows = W->rows, cols = W->cols;
    if (T <= 0) return;
    if (W->type == GGML_TYPE_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)cols, (int)rows, 1.0f, dy, (int)rows,
                    (const float *)W->data, (int)cols, 1.0f, dx, (int)cols);
        return;
    }
    const size_t rb = quant_row_bytes(W->type, cols);
    int64_t tile = scratch_floats / cols;
    if (tile < 1) tile = 1;
    for (int64_t r0 = 0; r0 < rows; r0 += tile) {
        const int64_t n = rows - r0 < tile ? rows - r0 : tile;
#pragma omp parallel for schedule(static) if (n * cols >= MATMUL_PARALLEL_MIN)
        for (int64_t r = 0; r < n; r++) dequantize_row(W->type, row_ptr(W, rb, r0 + r), scratch + r * cols, cols);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)cols, (int)n, 1.0f, dy + r0, (int)rows,
                    scratch, (int)cols, 1.0f, dx, (int)cols);
    }
}
