/* matmul_forward_float with F32, F16, BF16 and block-quantized weights for
 * prefill sizes (T > 4): the AVX-512 kernel (nn/gemm_avx512.h) where the build has
 * it, sgemm (after dequantizing) otherwise. Odd shapes cover the edges of its blocking (T % 8, N % 48, K % 16,
 * several K blocks); the same thread count must give the same bits.
 * And the one-thread float product (nn/gemm_f32.h) with A as stored and A
 * transposed, against doubles. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn/gemm_avx512.h"
#include "nn/gemm_f32.h"
#include "nn/matmul.h"
#include "nn/quant.h"
#include "test.h"

static void fill_normal(float *x, int64_t n, mr_rng *r) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)mr_rng_normal(r);
}

/* max |y - reference| / max |reference| over the product x Wᵀ + beta y0, in
 * doubles from the dequantized weights */
static double rel_err(const float *y, const float *y0, const float *x, const float *wd, int64_t T, int64_t N,
                      int64_t K, float beta) {
    double worst = 0, big = 0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++) {
            double acc = beta != 0.0f ? (double)beta * y0[t * N + n] : 0.0;
            for (int64_t k = 0; k < K; k++) acc += (double)x[t * K + k] * wd[n * K + k];
            worst = fmax(worst, fabs(acc - y[t * N + n]));
            big = fmax(big, fabs(acc));
        }
    return big > 0 ? worst / big : worst;
}

/* every product against doubles, at 1 and 2 threads, beta 0 (over a y of NaNs,
 * which must not leak) and 1; two calls at one thread count give the same bits */
static void check_type(ggml_type type) {
    int be = 1, bb = 4;
    quant_block(type, &be, &bb);
    const int64_t Ts[] = {5, 13, 70}, Ns[] = {1, 17, 100};
    /* K: an odd one and several K blocks; block-quantized types take multiples of
     * their block (1x, 3x, 19x, and more than 512 values in unequal K blocks) */
    const int64_t Ks[] = {be > 1 ? be : 1, be > 1 ? 3 * be : 31, 64 * ((be + 63) / 64), be > 1 ? 19 * be : 96,
                          be > 1 ? (600 / be + 1) * be : 600};
    mr_rng rng;
    mr_rng_seed(&rng, 11);
    const int saved = omp_get_max_threads();
    for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++)
        for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++) {
            const int64_t K = Ks[ki], N = Ns[ni];
            const size_t rb = quant_row_bytes(type, K);
            float *w = malloc(sizeof(float) * (size_t)(N * K)), *wd = malloc(sizeof(float) * (size_t)(N * K));
            uint8_t *q = malloc(rb * (size_t)N);
            fill_normal(w, N * K, &rng);
            for (int64_t n = 0; n < N; n++) {
                quantize_row_ref(type, w + n * K, q + n * rb, K);
                dequantize_row(type, q + n * rb, wd + n * K, K);
            }
            qmat W = {type, N, K, q, 0};
            const int64_t sf = matmul_scratch_floats(&W, 7 * K, 2);
            float *scratch = malloc(sizeof(float) * (size_t)sf);
            for (size_t ti = 0; ti < sizeof Ts / sizeof *Ts; ti++) {
                const int64_t T = Ts[ti];
                float *x = malloc(sizeof(float) * (size_t)(T * K)), *y0 = malloc(sizeof(float) * (size_t)(T * N));
                float *y = malloc(sizeof(float) * (size_t)(T * N)), *y2 = malloc(sizeof(float) * (size_t)(T * N));
                fill_normal(x, T * K, &rng);
                fill_normal(y0, T * N, &rng);
                for (int nth = 1; nth <= 2; nth++) {
                    omp_set_num_threads(nth);
                    for (int b = 0; b < 2; b++) {
                        const float beta = (float)b;
                        for (int rep = 0; rep < 2; rep++) {
                            float *out = rep ? y2 : y;
                            if (b) memcpy(out, y0, sizeof(float) * (size_t)(T * N));
                            else
                                for (int64_t i = 0; i < T * N; i++) out[i] = NAN;
                            matmul_forward_float(out, x, T, &W, beta, scratch, sf);
                        }
                        const double e = rel_err(y, y0, x, wd, T, N, K, beta);
                        CHECK_MSG(e <= 1e-5, "%s T=%lld N=%lld K=%lld beta=%g threads=%d: relative error %.3g",
                                  quant_type_name(type), (long long)T, (long long)N, (long long)K, beta, nth, e);
                        CHECK_MSG(!memcmp(y, y2, sizeof(float) * (size_t)(T * N)),
                                  "%s T=%lld N=%lld K=%lld beta=%g threads=%d: two calls differ",
                                  quant_type_name(type), (long long)T, (long long)N, (long long)K, beta, nth);
                    }
                }
                free(x), free(y0), free(y), free(y2);
            }
            free(scratch), free(w), free(wd), free(q);
        }
    omp_set_num_threads(saved);
}

TEST(f32_prefill_matches_doubles) { check_type(GGML_TYPE_F32); }
TEST(q4_0_float_prefill_matches_doubles) { check_type(GGML_TYPE_Q4_0); }
TEST(q8_0_float_prefill_matches_doubles) { check_type(GGML_TYPE_Q8_0); }
TEST(q4_k_float_prefill_matches_doubles) { check_type(GGML_TYPE_Q4_K); }
TEST(q6_k_float_prefill_matches_doubles) { check_type(GGML_TYPE_Q6_K); }
TEST(f16_prefill_matches_doubles) { check_type(GGML_TYPE_F16); }
TEST(bf16_prefill_matches_doubles) { check_type(GGML_TYPE_BF16); }

/* matmul_backward_input, dX[T][K] = beta dX + dY[T][N] · W, against doubles from
 * the dequantized weights: F32 goes to the kernel as stored, the other types in
 * dequantized tiles (a scratch of 7 rows' tiles makes several); beta 0 over NaNs
 * and 1. For F32, 1 and 2 threads give the same bits (the tiles' bounds follow the
 * scratch left after the threads' panels, so other types need not). */
static void check_backward(ggml_type type) {
    const int64_t Ts[] = {3, 13, 70}, Ns[] = {1, 17, 100}, Ks[] = {32, 64, 96, 608};
    mr_rng rng;
    mr_rng_seed(&rng, 12);
    const int saved = omp_get_max_threads();
    for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++)
        for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++) {
            const int64_t K = Ks[ki], N = Ns[ni];
            const size_t rb = quant_row_bytes(type, K);
            float *w = malloc(sizeof(float) * (size_t)(N * K)), *wd = malloc(sizeof(float) * (size_t)(N * K));
            uint8_t *q = malloc(rb * (size_t)N);
            fill_normal(w, N * K, &rng);
            for (int64_t n = 0; n < N; n++) {
                quantize_row_ref(type, w + n * K, q + n * rb, K);
                dequantize_row(type, q + n * rb, wd + n * K, K);
            }
            qmat W = {type, N, K, q, 0};
            const int64_t sf = matmul_scratch_floats(&W, 7 * K, 2);
            float *scratch = malloc(sizeof(float) * (size_t)sf);
            for (size_t ti = 0; ti < sizeof Ts / sizeof *Ts; ti++) {
                const int64_t T = Ts[ti];
                float *dy = malloc(sizeof(float) * (size_t)(T * N)), *dx0 = malloc(sizeof(float) * (size_t)(T * K));
                float *dx[2] = {malloc(sizeof(float) * (size_t)(T * K)), malloc(sizeof(float) * (size_t)(T * K))};
                fill_normal(dy, T * N, &rng);
                fill_normal(dx0, T * K, &rng);
                for (int b = 0; b < 2; b++) {
                    for (int nth = 1; nth <= 2; nth++) {
                        omp_set_num_threads(nth);
                        float *out = dx[nth - 1];
                        if (b) memcpy(out, dx0, sizeof(float) * (size_t)(T * K));
                        else
                            for (int64_t i = 0; i < T * K; i++) out[i] = NAN;
                        matmul_backward_input(out, dy, T, &W, (float)b, scratch, sf);
                    }
                    double worst = 0, big = 0;
                    for (int64_t t = 0; t < T; t++)
                        for (int64_t k = 0; k < K; k++) {
                            double acc = b ? (double)dx0[t * K + k] : 0.0;
                            for (int64_t n = 0; n < N; n++) acc += (double)dy[t * N + n] * wd[n * K + k];
                            worst = fmax(worst, fabs(acc - dx[0][t * K + k]));
                            big = fmax(big, fabs(acc));
                        }
                    CHECK_MSG(worst <= 1e-5 * big, "%s T=%lld N=%lld K=%lld beta=%d: relative error %.3g",
                              quant_type_name(type), (long long)T, (long long)N, (long long)K, b, worst / big);
                    if (gemm_avx512_available() && type == GGML_TYPE_F32)
                        CHECK_MSG(!memcmp(dx[0], dx[1], sizeof(float) * (size_t)(T * K)),
                                  "%s T=%lld N=%lld K=%lld beta=%d: 1 and 2 threads differ", quant_type_name(type),
                                  (long long)T, (long long)N, (long long)K, b);
                }
                free(dy), free(dx0), free(dx[0]), free(dx[1]);
            }
            free(scratch), free(w), free(wd), free(q);
        }
    omp_set_num_threads(saved);
}

TEST(f32_input_gradient_matches_doubles) { check_backward(GGML_TYPE_F32); }
TEST(q4_0_input_gradient_matches_doubles) { check_backward(GGML_TYPE_Q4_0); }
TEST(f16_input_gradient_matches_doubles) { check_backward(GGML_TYPE_F16); }

/* The kernel's numbers depend on neither the thread count nor the other rows:
 * 1 and 2 threads, and each row alone (matmul_forward_float on 5-row windows
 * would reach the small-T path, so the kernel is called directly). */
TEST(kernel_same_bits_any_threads_and_rows) {
    if (!gemm_avx512_available()) {
        test_skip("no AVX-512 in this build: the sgemm path runs");
        return;
    }
    const int64_t T = 300, N = 200, K = 1100; /* 2 row tiles, 5 column tiles (last 8 wide), 3 K blocks */
    mr_rng rng;
    mr_rng_seed(&rng, 3);
    float *w = malloc(sizeof(float) * (size_t)(N * K)), *x = malloc(sizeof(float) * (size_t)(T * K));
    uint16_t *q = malloc(2 * (size_t)(N * K));
    fill_normal(w, N * K, &rng);
    fill_normal(x, T * K, &rng);
    for (int64_t n = 0; n < N; n++) quantize_row_ref(GGML_TYPE_F16, w + n * K, q + n * K, K);
    const int64_t sf = gemm_avx512_scratch_floats(2);
    float *scratch = malloc(sizeof(float) * (size_t)sf);
    float *y1 = malloc(sizeof(float) * (size_t)(T * N)), *y2 = malloc(sizeof(float) * (size_t)(T * N));
    float *yr = malloc(sizeof(float) * (size_t)N);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    CHECK(gemm_avx512(y1, x, K, T, GGML_TYPE_F16, q, 2 * (size_t)K, GEMM_W_OUT_ROWS, N, K, 0.0f, scratch, sf));
    omp_set_num_threads(2);
    CHECK(gemm_avx512(y2, x, K, T, GGML_TYPE_F16, q, 2 * (size_t)K, GEMM_W_OUT_ROWS, N, K, 0.0f, scratch, sf));
    omp_set_num_threads(saved);
    CHECK(!memcmp(y1, y2, sizeof(float) * (size_t)(T * N)));
    int same = 1;
    for (int64_t t = 0; t < T; t += 37) {
        CHECK(gemm_avx512(yr, x + t * K, K, 1, GGML_TYPE_F16, q, 2 * (size_t)K, GEMM_W_OUT_ROWS, N, K, 0.0f, scratch, sf));
        same &= !memcmp(yr, y1 + t * N, sizeof(float) * (size_t)N);
    }
    CHECK_MSG(same, "a row alone differs from the same row among 300");
    /* too little scratch: it declines and leaves the product to the caller */
    CHECK(!gemm_avx512(y1, x, K, T, GGML_TYPE_F16, q, 2 * (size_t)K, GEMM_W_OUT_ROWS, N, K, 0.0f, scratch, 100));
    CHECK(!gemm_avx512(y1, x, K, T, GGML_TYPE_F16, q, 2 * (size_t)K, GEMM_W_IN_ROWS, N, K, 0.0f, scratch, sf));
    CHECK(!gemm_avx512(y1, x, K, T, GGML_TYPE_Q8_0, q, 34 * (size_t)K / 32, GEMM_W_OUT_ROWS, N, K, 0.0f, scratch, sf));
    free(w), free(x), free(q), free(scratch), free(y1), free(y2), free(yr);
}

/* gemm_f32 against doubles: A row-major and A transposed in memory, padded leading
 * dimensions, accumulate 0 (over NaNs, which must not leak) and 1 (with alpha -0.5); shapes cover the
 * edges of its tiles (M % 6, N % 64 and N < 16, K = 1) */
TEST(f32_product_matches_doubles) {
    const int Ms[] = {1, 5, 6, 13, 64}, Ns[] = {3, 16, 64, 70, 129}, Ks[] = {1, 7, 64, 300};
    mr_rng rng;
    mr_rng_seed(&rng, 5);
    double worst = 0;
    for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++)
        for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++)
            for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++)
                for (int trans = 0; trans < 2; trans++)
                    for (int accumulate = 0; accumulate < 2; accumulate++) {
                        const int M = Ms[mi], N = Ns[ni], K = Ks[ki];
                        const ptrdiff_t lda = (trans ? M : K) + 3, ldb = N + 5, ldc = N + 2;
                        const ptrdiff_t a_row = trans ? 1 : lda, a_col = trans ? lda : 1;
                        float *a = malloc(sizeof(float) * (size_t)(lda * (trans ? K : M)));
                        float *b = malloc(sizeof(float) * (size_t)(ldb * K));
                        float *c = malloc(sizeof(float) * (size_t)(ldc * M)), *c0 = malloc(sizeof(float) * (size_t)(ldc * M));
                        fill_normal(a, lda * (trans ? K : M), &rng);
                        fill_normal(b, ldb * K, &rng);
                        fill_normal(c0, ldc * M, &rng);
                        if (!accumulate)
                            for (ptrdiff_t i = 0; i < ldc * M; i++) c0[i] = NAN;
                        memcpy(c, c0, sizeof(float) * (size_t)(ldc * M));
                        const float alpha = accumulate ? -0.5f : 1.0f;
                        gemm_f32(c, ldc, a, a_row, a_col, b, ldb, M, N, K, alpha, accumulate);
                        double err = 0, big = 0;
                        int pad_kept = 1;
                        for (int m = 0; m < M; m++) {
                            for (int n = 0; n < N; n++) {
                                double acc = 0.0;
                                for (int k = 0; k < K; k++) acc += (double)a[m * a_row + k * a_col] * b[k * ldb + n];
                                acc = (accumulate ? c0[m * ldc + n] : 0.0) + alpha * acc;
                                err = fmax(err, fabs(acc - c[m * ldc + n]));
                                big = fmax(big, fabs(acc));
                            }
                            for (ptrdiff_t n = N; n < ldc; n++)
                                pad_kept &= !memcmp(&c[m * ldc + n], &c0[m * ldc + n], sizeof(float));
                        }
                        const double rel = big > 0 ? err / big : err;
                        worst = fmax(worst, rel);
                        CHECK_MSG(rel < 1e-5 && !isnan(rel), "M %d N %d K %d trans %d accumulate %d: %g of the max", M,
                                  N, K, trans, accumulate, rel);
                        CHECK_MSG(pad_kept, "M %d N %d K %d: wrote past column N", M, N, K);
                        free(a), free(b), free(c), free(c0);
                    }
    printf("# gemm_f32: worst error %.2g of the product's max over 400 shapes\n", worst);
}

int main(void) {
    RUN(f32_prefill_matches_doubles);
    RUN(q4_0_float_prefill_matches_doubles);
    RUN(q8_0_float_prefill_matches_doubles);
    RUN(q4_k_float_prefill_matches_doubles);
    RUN(q6_k_float_prefill_matches_doubles);
    RUN(f16_prefill_matches_doubles);
    RUN(bf16_prefill_matches_doubles);
    RUN(f32_input_gradient_matches_doubles);
    RUN(q4_0_input_gradient_matches_doubles);
    RUN(f16_input_gradient_matches_doubles);
    RUN(kernel_same_bits_any_threads_and_rows);
    RUN(f32_product_matches_doubles);
    return test_summary();
}
