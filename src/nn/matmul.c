/* Products with stored weight matrices. Which path runs when, and why:
 *
 *  - F32, F16 and BF16 weights, prefill (T > MATMUL_SMALL_T), in a build with
 *    AVX-512: our own kernel (nn/gemm_avx512.h), float activations times weight
 *    panels packed (F16/BF16 converted to F32 on the way), 8 x 48 outputs in zmm
 *    registers. OpenBLAS must run its AVX2 kernels on this machine
 *    (OPENBLAS_CORETYPE=Haswell: 0.3.21's AVX-512 kernels are wrong here), so
 *    sgemm used half the vector width, and for F16/BF16 dequantize + sgemm also
 *    wrote and re-read a whole F32 tile; llama.cpp's AVX-512 F16 product beat
 *    that prefill. Its numbers depend on neither thread count nor T. Without
 *    AVX-512, F32 goes to one BLAS sgemm.
 *  - Weights with an integer kernel (qdot_tile_kernel: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1
 *    from qdot.c; Q4_K, Q5_K, Q6_K from qdot_k.c), forward only: the activations are
 *    quantized once per call into 8-bit blocks (qdot_quantize_row, in the scratch
 *    buffer) and multiplied with the weights in integer arithmetic, as llama.cpp
 *    does. The integer dot products run about twice as fast as fp32 FMAs on AVX2 and
 *    the weights are read straight from the (mapped) file, 4 to 8 bits per value,
 *    instead of being expanded to F32 first: this is the fast path for inference.
 *      prefill (T > MATMUL_SMALL_T): the output is cut into tiles of MATMUL_TILE_R
 *        weight rows x MATMUL_TILE_T activation rows; the kernel walks each tile in
 *        groups of 8 weight rows x 4 activation rows, so a weight block is loaded
 *        and unpacked once per 4 activation rows and both operands of a tile stay in
 *        L2. OpenMP spreads the tiles over threads in contiguous runs of row-tile-
 *        major order, so a thread meets a row tile's weights while they are hot.
 *      generation (T <= MATMUL_SMALL_T): the product is bound by reading the
 *        weights, so it is cut into row tiles only (MATMUL_GEN_R rows, all T
 *        activation rows at once) and every weight byte is read once. Q4_0 weights
 *        that `llm generate` repacked (qmat_repack_x8) run the same kernel on the
 *        x8 layout, which needs no gathering (nn/qdot.h): the same numbers, faster.
 *  - Everything else (no AVX-512, types without a kernel, and training's float
 *    forward through block-quantized weights, which must give an x8 matrix's
 *    numbers too): a tile of weight rows
 *    is dequantized to F32 and multiplied with sgemm, the activations stay float
 *    (llama.cpp too keeps float activations for F16/BF16/F32). For T <=
 *    MATMUL_SMALL_T F32 goes to sgemm, F16/BF16 rows are dotted straight from
 *    the stored values (half_row_dots) and other rows are dequantized into a
 *    per-thread buffer and dotted with the inputs.
 *  - matmul_backward_input keeps float gradients (quantized to 8 bits they would
 *    lose precision the optimizer needs): F32 weights go to the AVX-512 kernel as
 *    they are stored (dX = dY · W reads W's rows as B's rows), other types are
 *    dequantized tile by tile into F32 first; without AVX-512, or for a few rows,
 *    sgemm. The forward and the backward thus run the same kernel per GFLOP,
 *    which is what training's speed ratio to prefill (bench_ranker) measures. */
#include "nn/matmul.h"

#include <cblas.h>
#include <omp.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#endif

#include "nn/gemm_avx512.h"
#include "nn/matmul_groups.h"
#include "nn/qdot.h"
#include "nn/quant.h"

/* At most this many input rows take the row-by-row path. */
#define MATMUL_SMALL_T 4
/* Below this many multiply-adds (or dequantized values) a product runs on one
 * thread: waking a team costs more than it saves, and far more on a busy machine. */
#define MATMUL_PARALLEL_MIN (1 << 18)
/* Integer path tiles (weight rows x activation rows): 64 rows of a 4096-wide Q4_0
 * matrix are 147 KB, 64 activation rows 278 KB, together within a 1 MB L2. */
#define MATMUL_TILE_R 64
#define MATMUL_TILE_T 64
#define MATMUL_GEN_R 16
/* The integer path wants room for at least this many quantized activation rows in
 * the scratch buffer; more rows are processed in chunks of what fits. */
#define MATMUL_MIN_ACT_ROWS 256

static inline const uint8_t *row_ptr(const qmat *W, size_t row_bytes, int64_t r) {
    return (const uint8_t *)W->data + (size_t)r * row_bytes;
}

int64_t matmul_scratch_floats(const qmat *W, int64_t tile_floats, int n_threads) {
    /* one packed panel per thread for the AVX-512 kernel (0 without it) */
    const int64_t panels = gemm_avx512_scratch_floats(n_threads);
    if (W->type == GGML_TYPE_F32) return panels;
    int64_t rows_tile = tile_floats / W->cols;
    if (rows_tile > W->rows) rows_tile = W->rows;
    if (rows_tile < n_threads) rows_tile = n_threads;
    if (rows_tile < 1) rows_tile = 1;
    /* the backward's dequantized tile sits after the panels */
    int64_t need = rows_tile * W->cols + panels;
    if (qdot_tile_kernel(W->type) && qdot_act_type(W->type) != GGML_TYPE_F32) {
        /* quantized activation rows, in floats (rounded up) */
        const int64_t act = (int64_t)((qdot_act_row_bytes(W->type, W->cols) * MATMUL_MIN_ACT_ROWS + 3) / 4);
        if (act > need) need = act;
    }
    return need;
}

/* The integer path (see the top of this file); 0 when it cannot run here (no
 * kernel, or no room in scratch for one activation row). */
static int matmul_forward_int(float *y, const float *x, int64_t T, const qmat *W, float beta, float *scratch,
                              int64_t scratch_floats) {
    qdot_tile_fn fn = W->x8 ? qdot_tile_kernel_x8(W->type) : qdot_tile_kernel(W->type);
    if (!fn || qdot_act_type(W->type) == GGML_TYPE_F32) return 0;
    const int64_t rows = W->rows, cols = W->cols;
    const size_t xrb = qdot_act_row_bytes(W->type, cols), wrb = quant_row_bytes(W->type, cols);
    const int64_t chunk = (int64_t)((size_t)scratch_floats * sizeof(float) / xrb);
    if (chunk < 1) return 0;
    uint8_t *xq = (uint8_t *)scratch;
    const uint8_t *w = W->data;
    for (int64_t t0 = 0; t0 < T; t0 += chunk) {
        const int64_t nt = T - t0 < chunk ? T - t0 : chunk;
        const int par = rows * cols * nt >= MATMUL_PARALLEL_MIN;
#pragma omp parallel for schedule(static) if (par && nt * cols >= MATMUL_PARALLEL_MIN / 8)
        for (int64_t t = 0; t < nt; t++)
            qdot_quantize_row(W->type, x + (t0 + t) * cols, xq + (size_t)t * xrb, cols);
        float *yc = y + t0 * rows;
        if (nt <= MATMUL_SMALL_T) {
            const int64_t ntile = (rows + MATMUL_GEN_R - 1) / MATMUL_GEN_R;
#pragma omp parallel for schedule(static) if (par)
            for (int64_t i = 0; i < ntile; i++) {
                const int64_t r0 = i * MATMUL_GEN_R;
                const int nr = (int)(rows - r0 < MATMUL_GEN_R ? rows - r0 : MATMUL_GEN_R);
                fn(yc + r0, rows, w + (size_t)r0 * wrb, wrb, nr, xq, xrb, (int)nt, cols, beta);
            }
            continue;
        }
        /* tiles in row-tile-major order, split in contiguous runs: each thread sweeps
         * its row tiles across the activation tiles while their weights are hot, and
         * a matrix with few row tiles (k and v of a small model: 192 rows = 3 tiles)
         * still keeps every thread busy */
        const int64_t ntile = (rows + MATMUL_TILE_R - 1) / MATMUL_TILE_R;
        const int64_t natile = (nt + MATMUL_TILE_T - 1) / MATMUL_TILE_T;
#pragma omp parallel for schedule(static) if (par)
        for (int64_t k = 0; k < ntile * natile; k++) {
            const int64_t r0 = k / natile * MATMUL_TILE_R, a0 = k % natile * MATMUL_TILE_T;
            const int nr = (int)(rows - r0 < MATMUL_TILE_R ? rows - r0 : MATMUL_TILE_R);
            const int na = (int)(nt - a0 < MATMUL_TILE_T ? nt - a0 : MATMUL_TILE_T);
            fn(yc + a0 * rows + r0, rows, w + (size_t)r0 * wrb, wrb, nr, xq + (size_t)a0 * xrb, xrb, na, cols, beta);
        }
    }
    return 1;
}

void qmat_row(const qmat *W, int64_t r, float *out) {
    if (W->x8) qdot_x8_dequantize_row(W->type, W->data, r, out, W->cols);
    else dequantize_row(W->type, row_ptr(W, quant_row_bytes(W->type, W->cols), r), out, W->cols);
}

size_t qmat_bytes(const qmat *W) { return quant_row_bytes(W->type, W->cols) * (size_t)W->rows; }

int qmat_can_repack_x8(const qmat *W) { return !W->x8 && qdot_x8_supported(W->type, W->rows, W->cols); }

void qmat_repack_x8(qmat *W, void *dst) {
    const size_t rb = quant_row_bytes(W->type, W->cols);
    const int64_t groups = W->rows / 8;
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < groups; g++)
        qdot_x8_repack(W->type, row_ptr(W, rb, 8 * g), (uint8_t *)dst + (size_t)g * 8 * rb, 8, W->cols);
    W->data = dst;
    W->x8 = 1;
}

void matmul_forward(float *y, const float *x, int64_t T, const qmat *W, float beta, float *scratch,
                    int64_t scratch_floats) {
    if (T <= 0) return;
    if (W->type != GGML_TYPE_F32 && matmul_forward_int(y, x, T, W, beta, scratch, scratch_floats)) return;
    matmul_forward_float(y, x, T, W, beta, scratch, scratch_floats);
}

/* y[t * ldy] = dot(w, x row t) (+ beta · y) for one F16 or BF16 weight row and
 * T <= MATMUL_SMALL_T activation rows: the row is widened 8 values at a time
 * straight into T pairs of FMA sums, read once, with no row buffer and no BLAS
 * call per row (that path read a BF16 decoder's weights at a few GB/s).
 * 0 when it cannot run (another type, no AVX2/F16C, cols not a multiple of 16). */
static int half_row_dots(float *y, int64_t ldy, ggml_type type, const uint8_t *w, const float *x, int64_t T,
                         int64_t cols, float beta) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    if ((type != GGML_TYPE_F16 && type != GGML_TYPE_BF16) || cols % 16 || T > MATMUL_SMALL_T) return 0;
    __m256 acc[2 * MATMUL_SMALL_T];
    for (int64_t i = 0; i < 2 * T; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t c = 0; c < cols; c += 16) {
        const __m128i h0 = _mm_loadu_si128((const __m128i *)(w + 2 * c)), h1 = _mm_loadu_si128((const __m128i *)(w + 2 * c + 16));
        __m256 w0, w1;
        if (type == GGML_TYPE_F16) {
            w0 = _mm256_cvtph_ps(h0), w1 = _mm256_cvtph_ps(h1);
        } else { /* bf16: the top half of an f32 */
            w0 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h0), 16));
            w1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h1), 16));
        }
        for (int64_t t = 0; t < T; t++) {
            acc[2 * t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + t * cols + c), acc[2 * t]);
            acc[2 * t + 1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + t * cols + c + 8), acc[2 * t + 1]);
        }
    }
    for (int64_t t = 0; t < T; t++) {
        const __m256 a = _mm256_add_ps(acc[2 * t], acc[2 * t + 1]);
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        const float d = _mm_cvtss_f32(h);
        y[t * ldy] = beta != 0.0f ? d + beta * y[t * ldy] : d;
    }
    return 1;
#else
    (void)y, (void)ldy, (void)type, (void)w, (void)x, (void)T, (void)cols, (void)beta;
    return 0;
#endif
}

void matmul_forward_float(float *y, const float *x, int64_t T, const qmat *W, float beta, float *scratch,
                          int64_t scratch_floats) {
    const int64_t rows = W->rows, cols = W->cols;
    if (T <= 0) return;
    /* F32/F16/BF16 prefill: the AVX-512 kernel (see the top). Block-quantized
     * weights stay on dequantized tiles + sgemm here: an x8 matrix (which the
     * kernel cannot read) must give the same numbers as its plain original. */
    const int float_type = W->type == GGML_TYPE_F32 || W->type == GGML_TYPE_F16 || W->type == GGML_TYPE_BF16;
    if (T > MATMUL_SMALL_T && !W->x8 && float_type &&
        gemm_avx512(y, x, cols, T, W->type, W->data, quant_row_bytes(W->type, cols), GEMM_W_OUT_ROWS, rows, cols,
                    beta, scratch, scratch_floats))
        return;
    if (W->type == GGML_TYPE_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)rows, (int)cols, 1.0f, x, (int)cols,
                    (const float *)W->data, (int)cols, beta, y, (int)rows);
        return;
    }
    if (T <= MATMUL_SMALL_T) {
        const size_t rb = quant_row_bytes(W->type, cols);
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
                if (!W->x8 && half_row_dots(y + r, rows, W->type, row_ptr(W, rb, r), x, T, cols, beta)) continue;
                qmat_row(W, r, buf);
                for (int64_t t = 0; t < T; t++) {
                    float d = cblas_sdot((int)cols, buf, 1, x + t * cols, 1);
                    y[t * rows + r] = beta != 0.0f ? d + beta * y[t * rows + r] : d;
                }
            }
        }
        return;
    }
    /* weight tiles dequantized once for sgemm: the products of one group of rows */
    matmul_groups_forward(y, x, 1, T, W, beta, scratch, scratch_floats);
}

void matmul_backward_input(float *dx, const float *dy, int64_t T, const qmat *W, float beta, float *scratch,
                           int64_t scratch_floats) {
    const int64_t rows = W->rows, cols = W->cols;
    if (T <= 0) return;
    const size_t frb = sizeof(float) * (size_t)cols; /* a float row of W */
    if (W->type == GGML_TYPE_F32) {
        if (T > MATMUL_SMALL_T && gemm_avx512(dx, dy, rows, T, W->type, W->data, frb, GEMM_W_IN_ROWS, cols, rows,
                                              beta, scratch, scratch_floats))
            return;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)cols, (int)rows, 1.0f, dy, (int)rows,
                    (const float *)W->data, (int)cols, beta, dx, (int)cols);
        return;
    }
    /* the AVX-512 kernel's panels first, then the dequantized tile (matmul_scratch_floats);
     * the tiles' bounds, and so the order of the sums, follow the room the threads'
     * panels leave: a matrix larger than one tile may round differently with
     * another thread count */
    const int64_t panels = gemm_avx512_scratch_floats(omp_get_max_threads());
    if (T > MATMUL_SMALL_T && panels > 0 && (scratch_floats - panels) / cols >= 1) {
        const int64_t tile = (scratch_floats - panels) / cols;
        float *wt = scratch + panels;
        for (int64_t r0 = 0; r0 < rows; r0 += tile) { /* the first tile applies beta, the others add */
            const int64_t n = rows - r0 < tile ? rows - r0 : tile;
            matmul_dequantize_rows(W, r0, n, wt);
            gemm_avx512(dx, dy + r0, rows, T, GGML_TYPE_F32, wt, frb, GEMM_W_IN_ROWS, cols, n, r0 ? 1.0f : beta,
                        scratch, panels);
        }
        return;
    }
    int64_t tile = scratch_floats / cols;
    if (tile < 1) tile = 1;
    for (int64_t r0 = 0; r0 < rows; r0 += tile) { /* the first tile applies beta, the others add */
        const int64_t n = rows - r0 < tile ? rows - r0 : tile;
        matmul_dequantize_rows(W, r0, n, scratch);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)cols, (int)n, 1.0f, dy + r0, (int)rows,
                    scratch, (int)cols, r0 ? 1.0f : beta, dx, (int)cols);
    }
}
