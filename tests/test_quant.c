/* Weight formats: bytes identical to llama-quantize's for Q8_0 / Q4_0 (the
 * reference GGUFs were made from the F32 one with --pure), hand-built blocks,
 * round-trip error for every type, f16 conversion, and the tiled products. */
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/gguf.h"
#include "mllm4rec/safetensors.h"
#include "nn/matmul.h"
#include "nn/qdot.h"
#include "nn/quant.h"
#include "test.h"

static void check_same_as_llama_quantize(const char *qrel, ggml_type type) {
    const char *fp = test_shared_path("reference/models/tiny-llama-random-f32.gguf");
    const char *qp = test_shared_path(qrel);
    if (!fp || !qp) SKIP("tiny-llama-random GGUFs not present");
    gguf_file f, q;
    mr_error e = {0};
    CHECK_OK(gguf_open(&f, fp, &e), &e);
    CHECK_OK(gguf_open(&q, qp, &e), &e);
    int n_checked = 0, n_same = 0;
    for (uint64_t i = 0; i < f.n_tensors; i++) {
        const gguf_tensor *t = &f.tensors[i];
        if (t->n_dims != 2) continue;
        const gguf_tensor *u = gguf_find_tensor(&q, t->name);
        if (!u || u->type != type) continue;
        size_t rb = quant_row_bytes(type, (int64_t)t->ne[0]);
        uint8_t *buf = malloc(rb * t->ne[1]);
        for (uint64_t r = 0; r < t->ne[1]; r++)
            quantize_row_ref(type, (const float *)t->data + r * t->ne[0], buf + r * rb, (int64_t)t->ne[0]);
        n_checked++;
        n_same += u->nbytes == rb * t->ne[1] && !memcmp(buf, u->data, u->nbytes);
        free(buf);
    }
    gguf_close(&f);
    gguf_close(&q);
    printf("  %s: %d of %d matrices byte-identical to llama-quantize's\n", qrel, n_same, n_checked);
    CHECK(n_checked >= 15);
    CHECK(n_same == n_checked);
}

TEST(q8_0_bytes_match_llama_quantize) {
    check_same_as_llama_quantize("reference/models/tiny-llama-random-q8_0.gguf", GGML_TYPE_Q8_0);
}
TEST(q4_0_bytes_match_llama_quantize) {
    check_same_as_llama_quantize("reference/models/tiny-llama-random-q4_0.gguf", GGML_TYPE_Q4_0);
}

TEST(hand_built_blocks) {
    float y[256];
    /* Q4_0: d = 0.5, nibble j in the low half and 15-j in the high half */
    uint8_t q4[18];
    uint16_t half = mr_f32_to_f16(0.5f);
    memcpy(q4, &half, 2);
    for (int j = 0; j < 16; j++) q4[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    dequantize_row(GGML_TYPE_Q4_0, q4, y, 32);
    for (int j = 0; j < 16; j++) {
        CHECK(y[j] == 0.5f * (j - 8));
        CHECK(y[j + 16] == 0.5f * (7 - j));
    }
    /* Q8_0: d = 2, q = -3 */
    uint8_t q8[34];
    half = mr_f32_to_f16(2.0f);
    memcpy(q8, &half, 2);
    memset(q8 + 2, 0xfd, 32);
    dequantize_row(GGML_TYPE_Q8_0, q8, y, 32);
    CHECK(y[0] == -6.0f && y[31] == -6.0f);
    /* Q5_0: d = 1, qh bit j set for j even: value (q | 16) - 16 */
    uint8_t q5[22] = {0};
    half = mr_f32_to_f16(1.0f);
    memcpy(q5, &half, 2);
    uint32_t qh = 0x55555555u;
    memcpy(q5 + 2, &qh, 4);
    for (int j = 0; j < 16; j++) q5[6 + j] = 0x21; /* low nibble 1, high nibble 2 */
    dequantize_row(GGML_TYPE_Q5_0, q5, y, 32);
    CHECK(y[0] == 1.0f && y[1] == -15.0f && y[16] == 2.0f && y[17] == -14.0f);
    /* Q4_K: d = 1, dmin = 0.5; sub-block 0 scale 3 min 2; quant 5 -> 3*5 - 0.5*2 = 14 */
    uint8_t k4[144] = {0};
    half = mr_f32_to_f16(1.0f);
    memcpy(k4, &half, 2);
    half = mr_f32_to_f16(0.5f);
    memcpy(k4 + 2, &half, 2);
    k4[4 + 0] = 3;         /* scale of sub-block 0 */
    k4[4 + 4] = 2;         /* min of sub-block 0 */
    k4[4 + 8] = 0x07;      /* sub-block 4: scale low bits 7, min low bits 0 */
    k4[4 + 0] |= 1u << 6;  /* sub-block 4: scale high bits 1 -> 7 + 16 = 23 */
    k4[16] = 0x05;         /* first byte: element 0 = 5 (sub-block 0), element 32 = 0 (sub-block 1) */
    k4[16 + 64] = 0x02;    /* element 128 = 2 (sub-block 4) */
    dequantize_row(GGML_TYPE_Q4_K, k4, y, 256);
    CHECK(y[0] == 14.0f);
    CHECK(y[128] == 46.0f);
    /* Q6_K: d = 0.25 at the end, scale[0] = 4; ql low nibble 3, qh bits 1 -> q = 3 | 16 = 19 - 32 = -13 */
    uint8_t k6[210] = {0};
    half = mr_f32_to_f16(0.25f);
    memcpy(k6 + 208, &half, 2);
    k6[192] = 4;
    k6[0] = 3;
    k6[128] = 1;
    dequantize_row(GGML_TYPE_Q6_K, k6, y, 256);
    CHECK(y[0] == 0.25f * 4 * -13);
}

TEST(round_trip_every_type) {
    const ggml_type types[] = {GGML_TYPE_F16,  GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0,
                               GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q4_K,
                               GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
    const double max_rel_rms[] = {1e-3, 1e-2, 1e-2, 0.12, 0.1, 0.06, 0.05, 0.1, 0.05, 0.03};
    const int n = 4096;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    uint8_t *q = malloc(n * 4);
    mr_rng rng;
    mr_rng_seed(&rng, 11);
    double ss = 0;
    for (int i = 0; i < n; i++) {
        x[i] = (float)(mr_rng_normal(&rng) * (1 + (i / 256) % 3));
        ss += (double)x[i] * x[i];
    }
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        quantize_row_ref(types[k], x, q, n);
        dequantize_row(types[k], q, y, n);
        double err = 0;
        for (int i = 0; i < n; i++) err += (double)(x[i] - y[i]) * (x[i] - y[i]);
        double rel = sqrt(err / ss);
        printf("  %-5s relative rms error %.4f\n", quant_type_name(types[k]), rel);
        CHECK_MSG(rel <= max_rel_rms[k], "%s: relative rms error %g", quant_type_name(types[k]), rel);
        /* dequantizing the requantized values gives the same bytes for the round-to-grid formats */
        if (types[k] == GGML_TYPE_Q8_0 || types[k] == GGML_TYPE_F16 || types[k] == GGML_TYPE_BF16) {
            uint8_t *q2 = malloc(n * 4);
            quantize_row_ref(types[k], y, q2, n);
            CHECK(!memcmp(q, q2, quant_row_bytes(types[k], n)));
            free(q2);
        }
    }
    /* an all-zero block stays zero */
    memset(x, 0, n * sizeof *x);
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        quantize_row_ref(types[k], x, q, 256);
        dequantize_row(types[k], q, y, 256);
        for (int i = 0; i < 256; i++) CHECK(y[i] == 0.0f);
    }
    free(x);
    free(y);
    free(q);
}

TEST(f16_hardware_matches_portable) {
    mr_rng rng;
    mr_rng_seed(&rng, 3);
    for (int i = 0; i < 200000; i++) {
        uint32_t bits = (uint32_t)mr_rng_u64(&rng);
        float f;
        memcpy(&f, &bits, 4);
        if (f != f) continue;
        CHECK_MSG(mr_f32_to_f16_soft(f) == mr_f32_to_f16(f), "%a", (double)f);
        uint16_t h = (uint16_t)bits;
        float a = mr_f16_to_f32_soft(h), b = mr_f16_to_f32(h);
        CHECK(memcmp(&a, &b, 4) == 0 || (a != a && b != b));
    }
}

/* x[cols] as an integer product sees it: quantized to the 8-bit activation blocks
 * of weight type t and dequantized (d * q); x itself for types without one. */
static void act_as_seen(ggml_type t, const float *x, float *out, int64_t cols) {
    const ggml_type at = qdot_act_type(t);
    if (at == GGML_TYPE_F32 || !qdot_tile_kernel(t)) {
        memcpy(out, x, (size_t)cols * sizeof *out);
        return;
    }
    uint8_t *q = malloc(qdot_act_row_bytes(t, cols) + 64);
    qdot_quantize_row(t, x, q, cols);
    for (int64_t b = 0; b < cols / (at == GGML_TYPE_Q8_K ? 256 : 32); b++) {
        if (at == GGML_TYPE_Q8_K) {
            blk_q8_K k;
            memcpy(&k, q + b * sizeof k, sizeof k);
            for (int j = 0; j < 256; j++) out[b * 256 + j] = k.d * k.qs[j];
        } else if (at == GGML_TYPE_Q8_1) {
            blk_q8_1 k;
            memcpy(&k, q + b * sizeof k, sizeof k);
            for (int j = 0; j < 32; j++) out[b * 32 + j] = mr_f16_to_f32(k.d) * k.qs[j];
        } else {
            blk_q8_0 k;
            memcpy(&k, q + b * sizeof k, sizeof k);
            for (int j = 0; j < 32; j++) out[b * 32 + j] = mr_f16_to_f32(k.d) * k.qs[j];
        }
    }
    free(q);
}

/* matmul_forward / backward against a double-precision product of the dequantized
 * matrix (the forward with the activations as its integer path quantizes them) */
TEST(tiled_products_match_naive) {
    const int64_t rows = 40, cols = 256;
    mr_rng rng;
    mr_rng_seed(&rng, 5);
    float *w = malloc((size_t)(rows * cols) * sizeof *w), *wd = malloc((size_t)(rows * cols) * sizeof *wd);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)mr_rng_normal(&rng);
    const ggml_type types[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K};
    uint8_t *qd = malloc((size_t)(rows * cols) * 4);
    const int64_t Ts[] = {1, 3, 17};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        size_t rb = quant_row_bytes(types[k], cols);
        for (int64_t r = 0; r < rows; r++) {
            quantize_row_ref(types[k], w + r * cols, qd + r * rb, cols);
            dequantize_row(types[k], qd + r * rb, wd + r * cols, cols);
        }
        qmat W = {types[k], rows, cols, qd, 0};
        /* a 7-row tile forces several tiles and a ragged last one */
        int64_t sf = matmul_scratch_floats(&W, 7 * cols, 2);
        float *scratch = malloc((size_t)(sf > 0 ? sf : 1) * sizeof *scratch);
        for (size_t ti = 0; ti < 3; ti++) {
            int64_t T = Ts[ti];
            float *x = malloc((size_t)(T * cols) * sizeof *x), *y = malloc((size_t)(T * rows) * sizeof *y);
            float *dy = malloc((size_t)(T * rows) * sizeof *dy), *dx = calloc((size_t)(T * cols), sizeof *dx);
            for (int64_t i = 0; i < T * cols; i++) x[i] = (float)mr_rng_normal(&rng);
            for (int64_t i = 0; i < T * rows; i++) y[i] = dy[i] = (float)mr_rng_normal(&rng);
            float *y0 = malloc((size_t)(T * rows) * sizeof *y0);
            memcpy(y0, y, (size_t)(T * rows) * sizeof *y0);
            matmul_forward(y, x, T, &W, 1.0f, scratch, sf);
            matmul_backward_input(dx, dy, T, &W, 1.0f, scratch, sf);
            float *xs = malloc((size_t)(T * cols) * sizeof *xs);
            for (int64_t t = 0; t < T; t++) act_as_seen(types[k], x + t * cols, xs + t * cols, cols);
            double worst = 0;
            for (int64_t t = 0; t < T; t++) {
                for (int64_t r = 0; r < rows; r++) {
                    double acc = y0[t * rows + r];
                    for (int64_t c = 0; c < cols; c++) acc += (double)xs[t * cols + c] * wd[r * cols + c];
                    worst = fmax(worst, fabs(acc - y[t * rows + r]));
                }
                for (int64_t c = 0; c < cols; c++) {
                    double acc = 0;
                    for (int64_t r = 0; r < rows; r++) acc += (double)dy[t * rows + r] * wd[r * cols + c];
                    worst = fmax(worst, fabs(acc - dx[t * cols + c]));
                }
            }
            free(x);
            free(xs);
            free(y);
            free(y0);
            free(dy);
            free(dx);
            CHECK_MSG(worst < 1e-3, "%s T=%lld: max error %g", quant_type_name(types[k]), (long long)T, worst);
        }
        free(scratch);
    }
    free(w);
    free(wd);
    free(qd);
}

int main(void) {
    RUN(q8_0_bytes_match_llama_quantize);
    RUN(q4_0_bytes_match_llama_quantize);
    RUN(hand_built_blocks);
    RUN(round_trip_every_type);
    RUN(f16_hardware_matches_portable);
    RUN(tiled_products_match_naive);
    return test_summary();
}
