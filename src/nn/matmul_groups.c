/* Grouped products; see matmul_groups.h. */
#include "nn/matmul_groups.h"

#include <cblas.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "nn/quant.h"

/* Below this many dequantized values a tile is converted on one thread (as
 * matmul.c's MATMUL_PARALLEL_MIN). */
#define GROUPS_PARALLEL_MIN (1 << 18)

/* dst[n] = the BF16 values at src: the 16 bits are the top of the float. Kept
 * inline here because the vision encoder converts its whole BF16 weights once
 * per batch (a billion values for ViT-g), where a call per value costs more
 * than the shift. Bit for bit what dequantize_row gives. */
static void bf16_row_to_f32(const uint8_t *src, float *dst, int64_t n) {
    int64_t i = 0;
#if defined(__AVX2__)
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + 2 * i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
#endif
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        uint32_t bits = (uint32_t)h << 16;
        memcpy(dst + i, &bits, 4);
    }
}

void matmul_dequantize_rows(const qmat *W, int64_t r0, int64_t n, float *out) {
    const int64_t cols = W->cols;
    const size_t rb = quant_row_bytes(W->type, cols);
    const uint8_t *src = (const uint8_t *)W->data + (size_t)r0 * rb;
#pragma omp parallel for schedule(static) if (n * cols >= GROUPS_PARALLEL_MIN)
    for (int64_t r = 0; r < n; r++) {
        if (W->x8) qmat_row(W, r0 + r, out + r * cols);
        else if (W->type == GGML_TYPE_BF16) bf16_row_to_f32(src + (size_t)r * rb, out + r * cols, cols);
        else dequantize_row(W->type, src + (size_t)r * rb, out + r * cols, cols);
    }
}

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
    int64_t tile = scratch_floats / cols;
    if (tile < 1) tile = 1;
    for (int64_t r0 = 0; r0 < rows; r0 += tile) {
        const int64_t n = rows - r0 < tile ? rows - r0 : tile;
        matmul_dequantize_rows(W, r0, n, scratch);
        for (int64_t g = 0; g < G; g++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)n, (int)cols, 1.0f, x + g * T * cols,
                        (int)cols, scratch, (int)cols, beta, y + g * T * rows + r0, (int)rows);
    }
}
