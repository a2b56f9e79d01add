/* The src/nn kernels the BLIP-2 encoders need beside the shared ones: GELU in
 * its tanh form, LayerNorm without affine parameters, unmasked (bidirectional
 * and cross) attention: forward values against direct double-precision
 * formulas, the tanh GELU's backward against finite differences. */
#include <stdlib.h>
#include <string.h>

#include "nn/attention.h"
#include "nn/attention_full.h"
#include "nn/gelu.h"
#include "nn/layernorm.h"
#include "nn/matmul_groups.h"
#include "nn/quant.h"
#include "test.h"

static void fill(float *x, int n, mr_rng *r, double s) {
    for (int i = 0; i < n; i++) x[i] = (float)(s * mr_rng_normal(r));
}

TEST(gelu_tanh_form_and_backward) {
    float x[7] = {-12.0f, -3.0f, -0.5f, 0.0f, 0.7f, 2.5f, 12.0f}, y[7], dx[7] = {0}, ones[7] = {1, 1, 1, 1, 1, 1, 1};
    gelu_tanh_forward(y, x, 7);
    for (int i = 0; i < 7; i++) {
        double v = x[i], want = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
        CHECK_NEAR(y[i], want, 2e-6 * fmax(1.0, fabs(want)));
    }
    /* the two forms differ (by up to ~5e-4 near |x| = 2): not the erf one renamed */
    float ye[7];
    gelu_forward(ye, x, 7);
    CHECK(fabs(ye[5] - y[5]) > 1e-5);
    gelu_tanh_backward(dx, ones, x, 7);
    for (int i = 0; i < 7; i++) {
        float a = x[i] + 1e-3f, b = x[i] - 1e-3f, ya, yb;
        gelu_tanh_forward(&ya, &a, 1);
        gelu_tanh_forward(&yb, &b, 1);
        CHECK_NEAR((ya - yb) / (a - b), dx[i], 2e-3);
    }
    /* large arrays take the threaded path: same values as element by element */
    enum { N = 100000 };
    float *big = malloc(sizeof(float) * N), *out = malloc(sizeof(float) * N);
    mr_rng r;
    mr_rng_seed(&r, 5);
    fill(big, N, &r, 3);
    gelu_tanh_forward(out, big, N);
    for (int i = 0; i < N; i += 997) {
        float one;
        gelu_tanh_forward(&one, big + i, 1);
        CHECK(one == out[i]);
    }
    free(big);
    free(out);
}

TEST(layernorm_without_affine) {
    enum { N = 3, C = 10 };
    mr_rng r;
    mr_rng_seed(&r, 2);
    float x[N * C], y[N * C], w[C], b[C], yw[N * C];
    fill(x, N * C, &r, 2);
    fill(w, C, &r, 1);
    fill(b, C, &r, 1);
    layernorm_forward(y, NULL, NULL, x, NULL, NULL, N, C, 1e-5f);
    layernorm_forward(yw, NULL, NULL, x, w, NULL, N, C, 1e-5f);
    for (int i = 0; i < N; i++) {
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[i * C + c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[i * C + c] - m) * (x[i * C + c] - m);
        v /= C;
        for (int c = 0; c < C; c++) {
            double want = (x[i * C + c] - m) / sqrt(v + 1e-5);
            CHECK_NEAR(y[i * C + c], want, 1e-5);
            CHECK_NEAR(yw[i * C + c], want * w[c], 1e-5);
        }
    }
    layernorm_forward(yw, NULL, NULL, x, NULL, b, N, C, 1e-5f);
    for (int i = 0; i < N * C; i++) CHECK_NEAR(yw[i], y[i] + b[i % C], 1e-6);
}

/* out = softmax(scale q kᵀ) v per head, in double. */
static void attention_ref(double *out, const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                          int Tq, int Tk, int H, int hd, double scale) {
    double *s = malloc(sizeof(double) * Tk);
    for (int h = 0; h < H; h++)
        for (int i = 0; i < Tq; i++) {
            double mx = -1e300, sum = 0;
            for (int j = 0; j < Tk; j++) {
                double d = 0;
                for (int c = 0; c < hd; c++) d += (double)q[i * ldq + h * hd + c] * k[j * ldk + h * hd + c];
                s[j] = d * scale;
                mx = fmax(mx, s[j]);
            }
            for (int j = 0; j < Tk; j++) sum += (s[j] = exp(s[j] - mx));
            for (int c = 0; c < hd; c++) {
                double o = 0;
                for (int j = 0; j < Tk; j++) o += s[j] / sum * v[j * ldv + h * hd + c];
                out[(size_t)i * H * hd + h * hd + c] = o;
            }
        }
    free(s);
}

TEST(full_and_cross_attention_against_formula) {
    mr_rng r;
    mr_rng_seed(&r, 9);
    /* self-attention over a fused qkv [T][3E] (as the ViT), T above one query block */
    enum { T = 70, H = 3, HD = 8, E = H * HD };
    float *qkv = malloc(sizeof(float) * T * 3 * E), *out = malloc(sizeof(float) * T * E);
    double *ref = malloc(sizeof(double) * T * E);
    fill(qkv, T * 3 * E, &r, 1.5);
    int64_t sf = attention_full_scratch_floats(T, 4);
    float *scratch = malloc(sizeof(float) * sf);
    attention_full_forward(out, E, qkv, 3 * E, qkv + E, 3 * E, qkv + 2 * E, 3 * E, T, T, H, HD, 0.35f, scratch, sf);
    attention_ref(ref, qkv, 3 * E, qkv + E, 3 * E, qkv + 2 * E, 3 * E, T, T, H, HD, 0.35);
    double worst = 0;
    for (int i = 0; i < T * E; i++) worst = fmax(worst, fabs(out[i] - ref[i]));
    CHECK_MSG(worst < 2e-5, "self-attention differs by %g", worst);
    /* one query row alone gives that row of the full call (queries do not mix) */
    float row[E];
    attention_full_forward(row, E, qkv + 37 * 3 * E, 3 * E, qkv + E, 3 * E, qkv + 2 * E, 3 * E, 1, T, H, HD, 0.35f,
                           scratch, sf);
    for (int c = 0; c < E; c++) CHECK_NEAR(row[c], out[37 * E + c], 1e-6);
    /* cross-attention: 5 queries over the 70 keys and values, dense strides */
    enum { Q = 5 };
    float q[Q * E], kv[T * 2 * E], o2[Q * E];
    double r2[Q * E];
    fill(q, Q * E, &r, 1);
    fill(kv, T * 2 * E, &r, 1);
    attention_full_forward(o2, E, q, E, kv, 2 * E, kv + E, 2 * E, Q, T, H, HD, 0.5f, scratch, sf);
    attention_ref(r2, q, E, kv, 2 * E, kv + E, 2 * E, Q, T, H, HD, 0.5);
    worst = 0;
    for (int i = 0; i < Q * E; i++) worst = fmax(worst, fabs(o2[i] - r2[i]));
    CHECK_MSG(worst < 2e-5, "cross-attention differs by %g", worst);
    /* a softmax row sums to 1 and survives large logits */
    float s[13];
    for (int j = 0; j < 13; j++) s[j] = 80.0f * (float)j;
    softmax_row_forward(s, 13);
    double sum = 0;
    for (int j = 0; j < 13; j++) sum += s[j];
    CHECK_NEAR(sum, 1.0, 1e-6);
    CHECK(s[12] > 0.99f);
    free(qkv);
    free(out);
    free(ref);
    free(scratch);
}

/* Groups of rows against the plain product: the same numbers (tiles of BF16,
 * Q8_0 and F32 weights), and each group bit for bit what it gives alone. */
TEST(grouped_products_match_plain_and_alone) {
    enum { G = 3, T = 9, R = 40, C = 64 };
    mr_rng r;
    mr_rng_seed(&r, 4);
    float x[G * T * C], w[R * C], y[G * T * R], ref[G * T * R], one[T * R];
    fill(x, G * T * C, &r, 1);
    fill(w, R * C, &r, 0.2);
    const ggml_type types[3] = {GGML_TYPE_F32, GGML_TYPE_BF16, GGML_TYPE_Q8_0};
    for (int k = 0; k < 3; k++) {
        uint8_t *data = malloc(quant_row_bytes(types[k], C) * R);
        for (int i = 0; i < R; i++) quantize_row_ref(types[k], w + i * C, data + quant_row_bytes(types[k], C) * i, C);
        qmat W = {types[k], R, C, data, 0};
        /* a tile of 16 rows: 40 rows take three tiles */
        int64_t sf = 16 * C;
        float *scratch = malloc(sizeof(float) * sf);
        for (int i = 0; i < G * T * R; i++) y[i] = 0.5f;
        matmul_groups_forward(y, x, G, T, &W, 1.0f, scratch, sf);
        /* plain: y = x Wᵀ + 0.5 with the dequantized weights, in double */
        float deq[R * C];
        for (int i = 0; i < R; i++) dequantize_row(types[k], data + quant_row_bytes(types[k], C) * i, deq + i * C, C);
        for (int t = 0; t < G * T; t++)
            for (int o = 0; o < R; o++) {
                double d = 0.5;
                for (int c = 0; c < C; c++) d += (double)x[t * C + c] * deq[o * C + c];
                ref[t * R + o] = (float)d;
            }
        for (int i = 0; i < G * T * R; i++) CHECK_NEAR(y[i], ref[i], 1e-4);
        matmul_groups_forward(y, x, G, T, &W, 0.0f, scratch, sf);
        for (int g = 0; g < G; g++) {
            matmul_groups_forward(one, x + g * T * C, 1, T, &W, 0.0f, scratch, sf);
            CHECK_MSG(!memcmp(one, y + g * T * R, sizeof one), "%s: group %d differs from alone",
                      quant_type_name(types[k]), g);
        }
        free(scratch);
        free(data);
    }
}

int main(void) {
    RUN(gelu_tanh_form_and_backward);
    RUN(layernorm_without_affine);
    RUN(full_and_cross_attention_against_formula);
    RUN(grouped_products_match_plain_and_alone);
    return test_summary();
}
