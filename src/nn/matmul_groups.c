/* Grouped products; see matmul_groups.h. */
#include "nn/matmul_groups.h"

#include <cblas.h>

#include "nn/quant.h"

/* Below this many dequantized values a tile is converted on one thread. */
#define GROUPS_PARALLEL_MIN (1 << 18)

void matmul_groups_forward(float *y, const float *x, int64_t G, int64_t T, const qmat *W, float beta, float *scratch,
                           int64_t scratch_floats) {
    const int64_t rows = W->rows, cols = W->cols;
    if (G <= 0 || T <= 0) return;
    if (W->type == GGML_TYPE_F32) {
        for (int64_t g = 0; g < G; g++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)rows, (int)cols, 1.0f, x + g * T * cols,
                        (int)cols, (const float *)W->data, (int)cols, beta, y + g * T * rows, (int)rows);
        return;
    }
    const size_t rb = quant_row_bytes(W->type, cols);
    int64_t tile = scratch_floats / cols;
    if (tile < 1) tile = 1;
    for (int64_t r0 = 0; r0 < rows; r0 += tile) {
        const int64_t n = rows - r0 < tile ? rows - r0 : tile;
#pragma omp parallel for schedule(static) if (n * cols >= GROUPS_PARALLEL_MIN)
        for (int64_t r = 0; r < n; r++)
            dequantize_row(W->type, (const uint8_t *)W->data + (size_t)(r0 + r) * rb, scratch + r * cols, cols);
        for (int64_t g = 0; g < G; g++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)n, (int)cols, 1.0f, x + g * T * cols,
                        (int)cols, scratch, (int)cols, beta, y + g * T * rows + r0, (int)rows);
    }
}
