/* Integer products with 8-bit activations (nn/qdot.h) and the matmul paths that
 * use them: activation blocks as ggml's, exact integer block sums, the SIMD
 * kernels equal to the portable one bit for bit, tiling and chunking that do
 * not change a single float. */
#include <stdlib.h>
#include <string.h>

#include "nn/matmul.h"
#include "nn/qdot.h"
#include "nn/quant.h"
#include "test.h"

static const ggml_type int_types[] = {GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0,
                                      GGML_TYPE_Q5_1};
#define N_INT_TYPES (int)(sizeof int_types / sizeof *int_types)

static void fill_normal(float *x, int64_t n, uint64_t seed, float scale) {
    mr_rng r;
    mr_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) x[i] = scale * (float)mr_rng_normal(&r);
}

/* x[j] = j - 16: amax 16, d = 16/127, id = 127/16 = 7.9375, q = roundf((j - 16) * 7.9375) */
TEST(q8_0_activation_block_by_hand) {
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16);
    /* a row: ggml's block (34 bytes), padding to 36, then the float scale and the
     * zero-point correction -8 * sum(qs) for Q4_0's kernel */
    _Alignas(16) union {
        blk_q8_0 b;
        uint8_t bytes[44];
    } row;
    blk_q8_0 b;
    CHECK(qdot_act_type(GGML_TYPE_Q4_0) == GGML_TYPE_Q8_0);
    CHECK(qdot_act_row_bytes(GGML_TYPE_Q4_0, 64) == 68 + 16);
    CHECK(qdot_act_row_bytes(GGML_TYPE_Q4_0, 32) == sizeof row.bytes);
    qdot_quantize_row(GGML_TYPE_Q4_0, x, row.bytes, 32);
    memcpy(&b, row.bytes, sizeof b);
    float dx;
    int32_t zx;
    memcpy(&dx, row.bytes + 36, 4);
    memcpy(&zx, row.bytes + 40, 4);
    CHECK(dx == mr_f16_to_f32(b.d));
    int sum = 0;
    for (int j = 0; j < 32; j++) sum += b.qs[j];
    CHECK(zx == -8 * sum);
    CHECK(b.d == mr_f32_to_f16(16.0f / 127));
    CHECK(b.qs[0] == -127);
    CHECK(b.qs[14] == -16); /* -15.875 rounds away from zero */
    CHECK(b.qs[15] == -8);  /* -7.9375 */
    CHECK(b.qs[16] == 0);
    CHECK(b.qs[17] == 8);
    CHECK(b.qs[18] == 16);
    CHECK(b.qs[31] == 119); /* 15 * 7.9375 = 119.0625 */
    float z[32] = {0};
    qdot_quantize_row(GGML_TYPE_Q8_0, z, row.bytes, 32);
    memcpy(&b, row.bytes, sizeof b);
    CHECK(b.d == 0);
    for (int j = 0; j < 32; j++) CHECK(b.qs[j] == 0);
}

/* The quants are exactly ggml's roundf(x * (1 / d)) whatever code path made them:
 * with amax 127 (d = 1) halves must round away from zero (roundf), where the
 * processor's round-to-nearest would give the even neighbour; then random rows. */
TEST(q8_0_quants_are_roundf) {
    enum { N = 4096 };
    static float x[N];
    for (int j = 0; j < 32; j++) x[j] = (float)(j % 2 ? 127 - j : -(j + 0.5));
    x[1] = 127.0f, x[5] = 2.5f, x[7] = -2.5f, x[9] = 0.5f, x[11] = -0.5f, x[13] = 126.5f;
    fill_normal(x + 32, N - 32, 11, 3.0f);
    for (int j = 40; j < N; j += 97) x[j] = 0.0f;
    static uint8_t row[N / 32 * 42];
    qdot_quantize_row(GGML_TYPE_Q8_0, x, row, N);
    blk_q8_0 b;
    memcpy(&b, row, sizeof b);
    CHECK(b.qs[5] == 3 && b.qs[7] == -3 && b.qs[9] == 1 && b.qs[11] == -1 && b.qs[13] == 127);
    int bad = 0;
    for (int i = 0; i < N / 32; i++) {
        memcpy(&b, row + (size_t)i * sizeof b, sizeof b);
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[i * 32 + j]));
        const float d = amax / 127, id = d != 0.0f ? 1.0f / d : 0.0f;
        bad += b.d != mr_f32_to_f16(d);
        for (int j = 0; j < 32; j++) bad += b.qs[j] != (int8_t)roundf(x[i * 32 + j] * id);
    }
    CHECK(bad == 0);
}

/* Q8_1 (for Q4_1 / Q5_1): the same quants as Q8_0, and s = fp16(d * sum(qs)) */
TEST(q8_1_activation_blocks) {
    enum { N = 256 };
    float x[N];
    fill_normal(x, N, 3, 2.0f);
    /* rows: the blocks, then per block the float d and (Q8_1) the float s */
    _Alignas(16) uint8_t ra[N / 32 * 42];
    _Alignas(16) uint8_t rb[N / 32 * 44];
    blk_q8_0 a[N / 32];
    blk_q8_1 b[N / 32];
    CHECK(qdot_act_type(GGML_TYPE_Q5_1) == GGML_TYPE_Q8_1);
    CHECK(qdot_act_row_bytes(GGML_TYPE_Q8_0, N) == sizeof ra);
    CHECK(qdot_act_row_bytes(GGML_TYPE_Q4_1, N) == sizeof rb);
    qdot_quantize_row(GGML_TYPE_Q8_0, x, ra, N);
    qdot_quantize_row(GGML_TYPE_Q4_1, x, rb, N);
    memcpy(a, ra, sizeof a);
    memcpy(b, rb, sizeof b);
    for (int i = 0; i < N / 32; i++) {
        float d, s;
        memcpy(&d, rb + sizeof b + 4 * i, 4);
        memcpy(&s, rb + sizeof b + N / 32 * 4 + 4 * i, 4);
        CHECK(d == mr_f16_to_f32(b[i].d));
        CHECK(s == mr_f16_to_f32(b[i].s));
    }
    for (int i = 0; i < N / 32; i++) {
        CHECK(a[i].d == b[i].d);
        CHECK(memcmp(a[i].qs, b[i].qs, 32) == 0);
        int sum = 0, amax_q = 0;
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[i * 32 + j]));
        const float d32 = amax / 127; /* ggml: s is rounded from the fp32 d */
        CHECK(b[i].d == mr_f32_to_f16(d32));
        float d = mr_f16_to_f32(b[i].d);
        for (int j = 0; j < 32; j++) {
            sum += b[i].qs[j];
            if (abs(b[i].qs[j]) > amax_q) amax_q = abs(b[i].qs[j]);
            /* every value within half a step (plus the f16 rounding of d) */
            CHECK(fabsf(x[i * 32 + j] - d * b[i].qs[j]) <= 0.5f * d + 128 * d * 1e-3f);
        }
        CHECK(amax_q == 127);
        CHECK(b[i].s == mr_f32_to_f16((float)sum * d32));
    }
}

/* W [rows][cols] in type t, random; returns the row bytes. */
static uint8_t *random_weights(ggml_type t, int rows, int cols, uint64_t seed, size_t *rb) {
    *rb = quant_row_bytes(t, cols);
    uint8_t *w = malloc(*rb * (size_t)rows);
    float *row = malloc((size_t)cols * sizeof *row);
    for (int r = 0; r < rows; r++) {
        fill_normal(row, cols, seed * 1000 + (uint64_t)r, 0.05f);
        if (r % 5 == 1) row[3] = 0.4f; /* an outlier */
        quantize_row_ref(t, row, w + (size_t)r * *rb, cols);
    }
    free(row);
    return w;
}

/* The tile kernel against a double-precision product of the dequantized weights
 * and dequantized activations (an independent reference for the integer sums),
 * and the dispatched kernel equal to the portable one bit for bit, over shapes
 * with row and activation tails. */
TEST(tile_kernels_exact) {
    const int cols = 256;
    const int shapes[][2] = {{8, 4}, {16, 9}, {13, 3}, {24, 1}, {8, 2}, {5, 7}, {40, 17}};
    for (int ti = 0; ti < N_INT_TYPES; ti++) {
        ggml_type t = int_types[ti];
        qdot_tile_fn fn = qdot_tile_kernel(t);
        CHECK_MSG(fn != NULL, "no kernel for %s", quant_type_name(t));
        for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
            const int rows = shapes[si][0], T = shapes[si][1];
            size_t wrb;
            uint8_t *w = random_weights(t, rows, cols, 7 + si, &wrb);
            float *x = malloc((size_t)T * cols * sizeof *x);
            fill_normal(x, (int64_t)T * cols, 11 + si, 1.0f);
            const size_t xrb = qdot_act_row_bytes(t, cols);
            uint8_t *xq = malloc(xrb * (size_t)T);
            for (int k = 0; k < T; k++) qdot_quantize_row(t, x + k * cols, xq + k * xrb, cols);
            float *y1 = malloc((size_t)T * rows * sizeof *y1), *y2 = malloc((size_t)T * rows * sizeof *y2);
            float *wf = malloc((size_t)cols * sizeof *wf), *xf = malloc((size_t)cols * sizeof *xf);
            for (int beta = 0; beta <= 1; beta++) {
                for (int i = 0; i < T * rows; i++) y1[i] = y2[i] = beta ? (float)i * 0.25f : NAN;
                fn(y1, rows, w, wrb, rows, xq, xrb, T, cols, (float)beta);
                qdot_tile_portable(t, y2, rows, w, wrb, rows, xq, xrb, T, cols, (float)beta);
                int same = memcmp(y1, y2, (size_t)T * rows * sizeof *y1) == 0;
                double maxerr = 0;
                for (int k = 0; k < T && same; k++) {
                    /* the activations as the kernel sees them: d * q (+ nothing else) */
                    const uint8_t *xr = xq + k * xrb;
                    for (int b = 0; b < cols / 32; b++) {
                        float d;
                        const int8_t *qs;
                        if (qdot_act_type(t) == GGML_TYPE_Q8_1) {
                            const blk_q8_1 *xb = (const blk_q8_1 *)xr + b;
                            d = mr_f16_to_f32(xb->d), qs = xb->qs;
                        } else {
                            const blk_q8_0 *xb = (const blk_q8_0 *)xr + b;
                            d = mr_f16_to_f32(xb->d), qs = xb->qs;
                        }
                        for (int j = 0; j < 32; j++) xf[b * 32 + j] = d * qs[j];
                    }
                    for (int r = 0; r < rows; r++) {
                        dequantize_row(t, w + r * wrb, wf, cols);
                        double ref = beta ? (double)(k * rows + r) * 0.25 : 0, mag = 0;
                        for (int j = 0; j < cols; j++) ref += (double)wf[j] * xf[j], mag += fabs((double)wf[j] * xf[j]);
                        /* Q8_1's s is d * sum rounded to f16: the min term carries that rounding */
                        double err = fabs(y1[k * rows + r] - ref) / (mag + 1e-6);
                        if (err > maxerr) maxerr = err;
                    }
                }
                if (!same || maxerr > 2e-3) {
                    free(w), free(x), free(xq), free(y1), free(y2), free(wf), free(xf);
                    CHECK_MSG(same, "%s %dx%d beta %d: kernel differs from the portable one", quant_type_name(t),
                              rows, T, beta);
                    CHECK_MSG(0, "%s %dx%d: relative error %.3g against the float product", quant_type_name(t),
                              rows, T, maxerr);
                }
                /* the types without a min are exact integer sums: fp32 rounding only */
                if (qdot_act_type(t) == GGML_TYPE_Q8_0 && maxerr > 1e-5) {
                    free(w), free(x), free(xq), free(y1), free(y2), free(wf), free(xf);
                    CHECK_MSG(0, "%s: relative error %.3g, more than fp32 rounding", quant_type_name(t), maxerr);
                }
            }
            free(w), free(x), free(xq), free(y1), free(y2), free(wf), free(xf);
        }
    }
}

/* matmul_forward on the integer path: for prefill and generation sizes, with a
 * scratch so small that the activations go in several chunks, every float equals
 * the portable kernel's over the whole matrix; and it stays close to the float
 * product (dequantize + sgemm) of the same weights. */
TEST(matmul_integer_path) {
    const int rows = 136, cols = 512;
    const int Ts[] = {1, 3, 5, 70, 200};
    for (int ti = 0; ti < N_INT_TYPES; ti++) {
        ggml_type t = int_types[ti];
        size_t wrb;
        uint8_t *w = random_weights(t, rows, cols, 100 + ti, &wrb);
        qmat W = {t, rows, cols, w, 0};
        for (size_t i = 0; i < sizeof Ts / sizeof *Ts; i++) {
            const int T = Ts[i];
            const size_t xrb = qdot_act_row_bytes(t, cols);
            float *x = malloc((size_t)T * cols * sizeof *x), *y = malloc((size_t)T * rows * sizeof *y);
            float *yr = malloc((size_t)T * rows * sizeof *yr), *yf = malloc((size_t)T * rows * sizeof *yf);
            uint8_t *xq = malloc(xrb * (size_t)T);
            fill_normal(x, (int64_t)T * cols, 50 + i, 1.0f);
            for (int k = 0; k < T; k++) qdot_quantize_row(t, x + k * cols, xq + k * xrb, cols);
            qdot_tile_portable(t, yr, rows, w, wrb, rows, xq, xrb, T, cols, 0.0f);
            /* room for 37 activation rows: T = 70 and 200 run in chunks */
            int64_t sf = (int64_t)(xrb * 37 / 4);
            float *scratch = malloc((size_t)sf * sizeof *scratch);
            matmul_forward(y, x, T, &W, 0.0f, scratch, sf);
            int same = memcmp(y, yr, (size_t)T * rows * sizeof *y) == 0;
            /* the float product: dequantized weights times the float activations */
            float *wf = malloc((size_t)rows * cols * sizeof *wf);
            for (int r = 0; r < rows; r++) dequantize_row(t, w + r * wrb, wf + (size_t)r * cols, cols);
            qmat Wf = {GGML_TYPE_F32, rows, cols, wf, 0};
            matmul_forward(yf, x, T, &Wf, 0.0f, NULL, 0);
            double num = 0, den = 0;
            for (int k = 0; k < T * rows; k++) num += (y[k] - yf[k]) * (double)(y[k] - yf[k]), den += yf[k] * (double)yf[k];
            free(wf), free(x), free(y), free(yr), free(yf), free(xq), free(scratch);
            if (!same) free(w);
            CHECK_MSG(same, "%s T=%d: matmul_forward differs from the portable kernel", quant_type_name(t), T);
            /* 8-bit activations: about 0.4% relative error in the products */
            if (sqrt(num / den) > 0.02) free(w);
            CHECK_MSG(sqrt(num / den) <= 0.02, "%s T=%d: relative error %.3g against the float product",
                      quant_type_name(t), T, sqrt(num / den));
        }
        free(w);
    }
}

/* The x8 layout (generation): a repacked Q4_0 matrix gives, through every product
 * and row lookup, the very floats of the matrix it was made from: integer products
 * for generation and prefill sizes (T = 1..9 covers every group remainder, 70 runs in
 * tiles), the float product, the input gradient and qmat_row. */
TEST(x8_layout_gives_the_same_numbers) {
    const int rows = 136, cols = 512;
    size_t wrb;
    uint8_t *w = random_weights(GGML_TYPE_Q4_0, rows, cols, 7, &wrb);
    qmat W = {GGML_TYPE_Q4_0, rows, cols, w, 0}, X = W;
    if (!qmat_can_repack_x8(&W)) {
        free(w);
        SKIP("this build has no AVX2 kernel for the x8 layout");
    }
    uint8_t *w8 = malloc(qmat_bytes(&W));
    qmat_repack_x8(&X, w8);
    CHECK(X.x8 == 1 && X.data == w8 && !qmat_can_repack_x8(&X));
    CHECK(memcmp(w8, w, qmat_bytes(&W)) != 0); /* it did move the bytes */
    const int Ts[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 70};
    const int64_t sf = matmul_scratch_floats(&W, 1 << 16, 2);
    float *scratch = malloc((size_t)sf * sizeof *scratch);
    for (size_t i = 0; i < sizeof Ts / sizeof *Ts; i++) {
        const int T = Ts[i];
        float *x = malloc((size_t)T * cols * sizeof *x), *y = malloc((size_t)T * rows * sizeof *y);
        float *y8 = malloc((size_t)T * rows * sizeof *y8);
        fill_normal(x, (int64_t)T * cols, 60 + i, 1.0f);
        matmul_forward(y, x, T, &W, 0.0f, scratch, sf);
        matmul_forward(y8, x, T, &X, 0.0f, scratch, sf);
        int same = memcmp(y, y8, (size_t)T * rows * sizeof *y) == 0;
        matmul_forward_float(y, x, T, &W, 0.0f, scratch, sf);
        matmul_forward_float(y8, x, T, &X, 0.0f, scratch, sf);
        int same_float = memcmp(y, y8, (size_t)T * rows * sizeof *y) == 0;
        free(x), free(y), free(y8);
        if (!same || !same_float) free(w), free(w8), free(scratch);
        CHECK_MSG(same, "T=%d: the integer product of the x8 matrix differs", T);
        CHECK_MSG(same_float, "T=%d: the float product of the x8 matrix differs", T);
    }
    float *dy = malloc((size_t)3 * rows * sizeof *dy), *dx = calloc((size_t)3 * cols, sizeof *dx);
    float *dx8 = calloc((size_t)3 * cols, sizeof *dx8), *r = malloc(cols * sizeof *r), *r8 = malloc(cols * sizeof *r8);
    fill_normal(dy, 3 * rows, 99, 1.0f);
    matmul_backward_input(dx, dy, 3, &W, 1.0f, scratch, sf);
    matmul_backward_input(dx8, dy, 3, &X, 1.0f, scratch, sf);
    int same_rows = 1;
    for (int k = 0; k < rows; k++) {
        qmat_row(&W, k, r), qmat_row(&X, k, r8);
        same_rows &= memcmp(r, r8, cols * sizeof *r) == 0;
    }
    int same_dx = memcmp(dx, dx8, (size_t)3 * cols * sizeof *dx) == 0;
    free(dy), free(dx), free(dx8), free(r), free(r8), free(w), free(w8), free(scratch);
    CHECK(same_dx);
    CHECK(same_rows);
}

/* Types without an integer kernel keep float activations (dequantize + sgemm). */
TEST(float_and_k_types_keep_float_path) {
    const ggml_type t[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16};
    for (int i = 0; i < 3; i++) {
        CHECK(qdot_act_type(t[i]) == GGML_TYPE_F32);
        CHECK(qdot_tile_kernel(t[i]) == NULL);
    }
    /* every type with a kernel names activation blocks and their size */
    for (int i = 0; i < N_INT_TYPES; i++) {
        CHECK(qdot_act_type(int_types[i]) != GGML_TYPE_F32);
        CHECK(qdot_act_row_bytes(int_types[i], 4096) > 0);
    }
}

int main(void) {
    RUN(q8_0_activation_block_by_hand);
    RUN(q8_0_quants_are_roundf);
    RUN(q8_1_activation_blocks);
    RUN(tile_kernels_exact);
    RUN(matmul_integer_path);
    RUN(float_and_k_types_keep_float_path);
    RUN(x8_layout_gives_the_same_numbers);
    return test_summary();
}
