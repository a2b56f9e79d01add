/* K-quant integer products (src/nn/qdot_k.c): the Q8_K activation quantizer byte for
 * byte against ggml's rule, and the Q4_K / Q5_K / Q6_K tile kernels against
 *   (a) a scalar transcription of llama.cpp's integer arithmetic (its generic
 *       ggml_vec_dot_q*_K_q8_K: int8 values, 8 int32 lanes, fp32 once per block),
 *   (b) dequantize_row(W) . dequantized Q8_K activations in double,
 *   (c) the portable C kernels (when the build runs the AVX2 ones): bit for bit.
 *
 * Tolerances. Both kernels and (a) compute the same exact integers S_b (dot of the
 * quants with the scales) and M_b (mins) per super-block b, so each differs from
 *   exact = sum_b (double)(d_b * dx_b) * S_b - (double)(dmin_b * dx_b) * M_b
 * only by fp32 rounding: one rounding per int->float conversion and product and one per
 * addition of at most nb + 8 partial sums (lanes, blocks, the final pairwise sum), so
 * |result - exact| <= (nb + 10) * 2^-23 * mag, where mag bounds every partial sum a kernel
 * may form: mag = sum_b |d_b dx_b| sum_l |s_l q_l x_l| + |dmin_b dx_b| sum_l m_l |x_l|
 * (S_b can cancel, so |S_b| alone would not bound the lanes' rounding).
 * For (b), dequantize_row rounds each weight three times (d*s, *q, - dmin*m), so the
 * double product of the dequantized rows is within 4 * 2^-24 * (sum_i |w_i x_i| + mins
 * magnitude) of exact; we allow 1e-5 relative to those magnitudes, about 80 roundings. */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/base.h"
#include "nn/qdot.h"
#include "nn/qdot_k.h"
#include "nn/quant.h"
#include "test.h"

#define QK_K 256

/* ---- the Q8_K rule, transcribed plainly ---- */

static void ref_quantize_q8_K(const float *x, blk_q8_K *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float *v = x + b * QK_K;
        float amax = 0, max = 0;
        for (int j = 0; j < QK_K; j++)
            if (fabsf(v[j]) > amax) amax = fabsf(v[j]), max = v[j];
        memset(&y[b], 0, sizeof y[b]);
        if (amax == 0) continue;
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++) {
            float q = rintf(iscale * v[j]); /* round half to even, as ggml's nearest_int */
            y[b].qs[j] = (int8_t)(q > 127 ? 127 : q);
        }
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += y[b].qs[16 * g + l];
            y[b].bsums[g] = (int16_t)s;
        }
        y[b].d = 1 / iscale;
    }
}

TEST(q8_K_quantization_is_ggml_ref) {
    mr_rng rng;
    mr_rng_seed(&rng, 11);
    enum { N = 4096 };
    float *x = malloc(N * sizeof *x);
    blk_q8_K *a = calloc(N / QK_K, sizeof *a), *b = calloc(N / QK_K, sizeof *b);
    for (int trial = 0; trial < 20; trial++) {
        const double scale = pow(10.0, (double)mr_rng_below(&rng, 9) - 4);
        for (int i = 0; i < N; i++) x[i] = (float)(scale * mr_rng_normal(&rng));
        /* special blocks: all zero; the largest magnitude twice with both signs (the
         * first wins); small integers that land on .5 ties after scaling */
        memset(x, 0, 2 * QK_K * sizeof *x);
        x[QK_K + 3] = 5.0f, x[QK_K + 9] = -5.0f;
        for (int j = 0; j < QK_K; j++) x[2 * QK_K + j] = (float)((j % 255) - 127) / 2;
        x[2 * QK_K] = -127.0f;
        qdot_quantize_row_q8_K(x, a, N);
        ref_quantize_q8_K(x, b, N);
        for (int k = 0; k < N / QK_K; k++) {
            CHECK_MSG(!memcmp(&a[k], &b[k], sizeof a[k]), "trial %d block %d differs from the ggml rule", trial, k);
            if (k != 0) CHECK(a[k].d != 0);
        }
        CHECK(a[0].d == 0 && a[0].bsums[3] == 0);
        CHECK(a[1].qs[3] == -127 && a[1].qs[9] == 127); /* max = +5: iscale = -127/5 */
    }
    free(x), free(a), free(b);
}

/* ---- llama.cpp's generic integer arithmetic, transcribed ---- */

typedef struct {
    float value;  /* what llama.cpp's generic kernel returns */
    double exact; /* sum_b (d dx) S_b - (dmin dx) M_b in double, from the same fp32 scale products */
    double mag;   /* sum_b |(d dx) S_b| + |(dmin dx) M_b| */
    double mins;  /* sum_b |dmin dx| sum_j m_j sum_{l in j} |q8_l| (for the dequantized check) */
} refdot;

static refdot ref_dot(ggml_type t, const uint8_t *w, const blk_q8_K *x, int nb) {
    const int bb = t == GGML_TYPE_Q4_K ? 144 : t == GGML_TYPE_Q5_K ? 176 : 210;
    refdot o = {0};
    float sums[8] = {0}, sumf = 0;
    for (int i = 0; i < nb; i++) {
        const uint8_t *s = w + (size_t)i * bb;
        int8_t a[QK_K];
        int scales[16], mins[8] = {0};
        float d, dmin = 0;
        uint16_t h;
        if (t == GGML_TYPE_Q6_K) {
            const uint8_t *ql = s, *qh = s + 128;
            for (int half = 0; half < 2; half++, ql += 64, qh += 32)
                for (int l = 0; l < 32; l++) {
                    a[128 * half + l] = (int8_t)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    a[128 * half + l + 32] = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    a[128 * half + l + 64] = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    a[128 * half + l + 96] = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                }
            for (int j = 0; j < 16; j++) scales[j] = ((const int8_t *)(s + 192))[j];
            memcpy(&h, s + 208, 2);
            d = mr_f16_to_f32(h);
        } else {
            const uint8_t *q4 = s + (t == GGML_TYPE_Q5_K ? 48 : 16), *hm = s + 16;
            uint8_t m = 1;
            for (int j = 0; j < 4; j++, q4 += 32) {
                for (int l = 0; l < 32; l++) a[64 * j + l] = (int8_t)(q4[l] & 0xF);
                if (t == GGML_TYPE_Q5_K)
                    for (int l = 0; l < 32; l++) a[64 * j + l] += hm[l] & m ? 16 : 0;
                m <<= 1;
                for (int l = 0; l < 32; l++) a[64 * j + 32 + l] = (int8_t)(q4[l] >> 4);
                if (t == GGML_TYPE_Q5_K)
                    for (int l = 0; l < 32; l++) a[64 * j + 32 + l] += hm[l] & m ? 16 : 0;
                m <<= 1;
            }
            uint32_t utmp[4];
            memcpy(utmp, s + 4, 12);
            utmp[3] = ((utmp[2] >> 4) & 0x0f0f0f0f) | (((utmp[1] >> 6) & 0x03030303) << 4);
            const uint32_t uaux = utmp[1] & 0x3f3f3f3f;
            utmp[1] = (utmp[2] & 0x0f0f0f0f) | (((utmp[0] >> 6) & 0x03030303) << 4);
            utmp[2] = uaux;
            utmp[0] &= 0x3f3f3f3f;
            const uint8_t *sc8 = (const uint8_t *)&utmp[0], *mn8 = (const uint8_t *)&utmp[2];
            /* llama.cpp walks 8 groups of 32 with scale sc8[j]; as 16 groups of 16 here */
            for (int j = 0; j < 16; j++) scales[j] = sc8[j / 2];
            for (int j = 0; j < 8; j++) mins[j] = mn8[j];
            memcpy(&h, s, 2);
            d = mr_f16_to_f32(h);
            memcpy(&h, s + 2, 2);
            dmin = mr_f16_to_f32(h);
        }
        int32_t aux32[8] = {0}, sumi = 0;
        for (int j = 0; j < 16; j++) sumi += x[i].bsums[j] * mins[j / 2];
        for (int g = 0; g < 16; g++)
            for (int half = 0; half < 2; half++) {
                int16_t aux16[8];
                for (int l = 0; l < 8; l++) aux16[l] = (int16_t)(x[i].qs[16 * g + 8 * half + l] * a[16 * g + 8 * half + l]);
                for (int l = 0; l < 8; l++) aux32[l] += scales[g] * aux16[l];
            }
        const float dd = d * x[i].d, dm = dmin * x[i].d;
        for (int l = 0; l < 8; l++) sums[l] += dd * aux32[l];
        sumf -= dm * sumi;
        int64_t S = 0;
        for (int l = 0; l < 8; l++) S += aux32[l];
        o.exact += (double)dd * (double)S - (double)dm * (double)sumi;
        /* the kernels may split S into partial sums (lanes) and M likewise, so the
         * magnitude bounds every partial: sum |scale * quant * x| (Q6_K's unsigned quants
         * are |a| + 32 at most) and sum |min * x| */
        const int off = t == GGML_TYPE_Q6_K ? 32 : 0;
        double sa = 0, sm = 0;
        for (int l = 0; l < QK_K; l++) sa += abs(scales[l / 16]) * (double)(abs(a[l]) + off) * abs(x[i].qs[l]);
        for (int l = 0; l < QK_K; l++) sm += mins[l / 32] * (double)abs(x[i].qs[l]);
        o.mag += fabs((double)dd) * sa + fabs((double)dm) * sm;
        o.mins += fabs((double)dm) * sm;
    }
    for (int l = 0; l < 8; l++) sumf += sums[l];
    o.value = sumf;
    return o;
}

/* ---- kernels against the references ---- */

static ggml_type ktypes[3] = {GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
static qdot_tile_fn ktile[3] = {qdot_tile_q4_K, qdot_tile_q5_K, qdot_tile_q6_K};
static qdot_tile_fn kport[3] = {qdot_tile_q4_K_portable, qdot_tile_q5_K_portable, qdot_tile_q6_K_portable};

/* Weight rows: quantize_row_ref of random floats (raw = 0), or random bytes with finite
 * positive f16 scales (raw = 1), which reach every 6-bit scale / min and int8 scale. */
static void random_weights(mr_rng *rng, ggml_type t, uint8_t *w, int rows, int64_t cols, int raw) {
    const size_t rb = quant_row_bytes(t, cols);
    if (!raw) {
        float *f = malloc((size_t)cols * sizeof *f);
        for (int r = 0; r < rows; r++) {
            const double sd = 0.02 * (1 + r % 5), mean = (r % 3 == 0) ? 0.01 : 0;
            for (int64_t i = 0; i < cols; i++) f[i] = (float)(mean + sd * mr_rng_normal(rng));
            quantize_row_ref(t, f, w + (size_t)r * rb, cols);
        }
        free(f);
        return;
    }
    for (size_t i = 0; i < rb * (size_t)rows; i++) w[i] = (uint8_t)mr_rng_u64(rng);
    const int bb = t == GGML_TYPE_Q4_K ? 144 : t == GGML_TYPE_Q5_K ? 176 : 210;
    for (size_t off = 0; off < rb * (size_t)rows; off += (size_t)bb) {
        uint16_t d = mr_f32_to_f16((float)(1e-3 * (0.5 + mr_rng_uniform(rng))));
        uint16_t dmin = mr_f32_to_f16((float)(1e-3 * (0.5 + mr_rng_uniform(rng))));
        memcpy(w + off + (t == GGML_TYPE_Q6_K ? 208 : 0), &d, 2);
        if (t != GGML_TYPE_Q6_K) memcpy(w + off + 2, &dmin, 2);
    }
}

static void random_acts(mr_rng *rng, blk_q8_K *xq, int n_act, int64_t cols) {
    float *f = malloc((size_t)cols * sizeof *f);
    for (int t = 0; t < n_act; t++) {
        const double sd = pow(10.0, (double)(t % 4) - 1);
        for (int64_t i = 0; i < cols; i++) f[i] = (float)(sd * mr_rng_normal(rng));
        if (t == 1 && cols >= 512) memset(f + 256, 0, 256 * sizeof *f); /* an all-zero block: dx = 0 */
        if (t == 2) f[cols / 2] = (float)(100 * sd);                    /* an outlier */
        qdot_quantize_row_q8_K(f, xq + (size_t)t * (cols / QK_K), cols);
        if (t == 3) /* -128, which our quantizer never writes but the block format holds */
            for (int64_t b = 0; b < cols / QK_K; b++) {
                blk_q8_K *x = xq + (size_t)t * (cols / QK_K) + b;
                for (int j = 0; j < QK_K; j += 7) x->qs[j] = -128;
                for (int g = 0; g < 16; g++) {
                    int sum = 0;
                    for (int l = 0; l < 16; l++) sum += x->qs[16 * g + l];
                    x->bsums[g] = (int16_t)sum;
                }
            }
    }
    free(f);
}

static void check_kernel(int ki, int64_t cols, int n_rows, int n_act, int raw, uint64_t seed) {
    const ggml_type t = ktypes[ki];
    const int nb = (int)(cols / QK_K);
    const size_t rb = quant_row_bytes(t, cols), xrb = (size_t)nb * sizeof(blk_q8_K);
    mr_rng rng;
    mr_rng_seed(&rng, seed);
    uint8_t *w = malloc(rb * (size_t)n_rows);
    blk_q8_K *xq = malloc(xrb * (size_t)n_act);
    const int64_t ldy = n_rows + 3; /* padding the kernels must leave alone */
    float *y = malloc(sizeof(float) * (size_t)(ldy * n_act)), *yp = malloc(sizeof(float) * (size_t)(ldy * n_act));
    float *y1 = malloc(sizeof(float) * (size_t)(ldy * n_act));
    float *wd = malloc(sizeof(float) * (size_t)cols), *xd = malloc(sizeof(float) * (size_t)cols);
    random_weights(&rng, t, w, n_rows, cols, raw);
    random_acts(&rng, xq, n_act, cols);
    for (int64_t i = 0; i < ldy * n_act; i++) y[i] = yp[i] = NAN; /* beta 0 must not read y */
    for (int64_t i = 0; i < ldy * n_act; i++) y1[i] = (float)(i % 7) - 3;
    ktile[ki](y, ldy, w, rb, n_rows, (const uint8_t *)xq, xrb, n_act, cols, 0.0f);
    kport[ki](yp, ldy, w, rb, n_rows, (const uint8_t *)xq, xrb, n_act, cols, 0.0f);
    ktile[ki](y1, ldy, w, rb, n_rows, (const uint8_t *)xq, xrb, n_act, cols, 1.0f);
    double worst_a = 0, worst_b = 0, worst_c = 0;
    for (int a = 0; a < n_act; a++) {
        for (int64_t j = 0; j < cols / QK_K; j++)
            for (int i = 0; i < QK_K; i++) xd[j * QK_K + i] = xq[(size_t)a * nb + j].d * xq[(size_t)a * nb + j].qs[i];
        for (int r = 0; r < ldy; r++) {
            const int64_t at = a * ldy + r;
            if (r >= n_rows) {
                CHECK_MSG(isnan(y[at]) && isnan(yp[at]) && y1[at] == (float)(at % 7) - 3,
                          "padding y[%d][%d] was written", a, r);
                continue;
            }
            const refdot ref = ref_dot(t, w + (size_t)r * rb, xq + (size_t)a * nb, nb);
            const double tol = (nb + 10) * (double)FLT_EPSILON * ref.mag + 1e-30;
            /* (a) llama.cpp's arithmetic: both within the rounding bound of the exact value */
            CHECK_MSG(fabs(y[at] - ref.exact) <= tol && fabs(ref.value - ref.exact) <= tol,
                      "%s cols %lld row %d act %d: kernel %.9g, llama.cpp arithmetic %.9g, exact %.9g (tol %.3g)",
                      quant_type_name(t), (long long)cols, r, a, y[at], ref.value, ref.exact, tol);
            worst_a = fmax(worst_a, fabs(y[at] - ref.value) / (ref.mag + 1e-30));
            /* (c) the portable kernel: the same fp32 operations in the same order, so the
             * same bits (both are the portable one in a build without AVX2) */
            CHECK_MSG(memcmp(&yp[at], &y[at], sizeof(float)) == 0, "%s portable %.9g, simd %.9g (must be identical)",
                      quant_type_name(t), yp[at], y[at]);
            CHECK_MSG(fabs(yp[at] - ref.exact) <= tol, "%s portable %.9g vs exact %.9g", quant_type_name(t), yp[at],
                      ref.exact);
            worst_c = fmax(worst_c, fabs(y[at] - yp[at]) / (ref.mag + 1e-30));
            /* beta 1 adds the old value */
            const float old = (float)(at % 7) - 3;
            CHECK_MSG(fabs(y1[at] - (y[at] + old)) <= 2 * FLT_EPSILON * (fabs(y[at]) + fabs(old)) + 1e-30,
                      "beta 1: %.9g, expected %.9g + %.9g", y1[at], y[at], old);
            /* (b) dequantized weights times dequantized activations, in double */
            dequantize_row(t, w + (size_t)r * rb, wd, cols);
            double dot = 0, absdot = 0;
            for (int64_t i = 0; i < cols; i++) dot += (double)wd[i] * xd[i], absdot += fabs((double)wd[i] * xd[i]);
            const double tolb = 1e-5 * (absdot + ref.mins + ref.mag) + 1e-30;
            CHECK_MSG(fabs(y[at] - dot) <= tolb, "%s cols %lld row %d act %d: kernel %.9g, dequantized %.9g (tol %.3g)",
                      quant_type_name(t), (long long)cols, r, a, y[at], dot, tolb);
            worst_b = fmax(worst_b, fabs(y[at] - dot) / (absdot + ref.mins + ref.mag + 1e-30));
        }
    }
    if (cols >= 4096 && !raw)
        printf("  %s %lldx%d x %d acts: |kernel - llama.cpp generic| %.2g, |kernel - dequantized| %.2g, "
               "|simd - portable| %.2g (relative to the magnitude)\n",
               quant_type_name(t), (long long)cols, n_rows, n_act, worst_a, worst_b, worst_c);
    free(w), free(xq), free(y), free(yp), free(y1), free(wd), free(xd);
}

static const struct {
    int64_t cols;
    int rows, acts;
} shapes[] = {
    {256, 1, 1}, {256, 7, 13}, {512, 13, 7}, {768, 1, 5}, {1024, 9, 1}, {2048, 4, 4},
    {4096, 5, 9}, {11008, 3, 2}, {1280, 2, 17}, {256, 3, 4}, {512, 15, 1}, {256, 4, 8},
    {512, 16, 8}, {768, 40, 17}, {1024, 33, 24}, /* Q4_K's 16-row x 8-activation blocks and their edges */
};

static void check_type(int ki) {
    const int n = (int)(sizeof shapes / sizeof shapes[0]);
    for (int s = 0; s < n; s++)
        for (int raw = 0; raw < 2; raw++) {
            check_kernel(ki, shapes[s].cols, shapes[s].rows, shapes[s].acts, raw, 1000 * (uint64_t)ki + 10 * s + raw);
            if (test_failed_now()) return;
        }
}

TEST(q4_K_tiles) { check_type(0); }
TEST(q5_K_tiles) { check_type(1); }
TEST(q6_K_tiles) { check_type(2); }

/* A hand-built block whose dot is known in closed form: Q4_K with d = 1, dmin = 1,
 * every scale 2, every min 1, every quant 3 (value 1*2*3 - 1*1 = 5), times activations
 * all equal to one value that quantizes to q = -127 with dx = -1/127*v. */
TEST(q4_K_hand_built) {
    uint8_t w[144] = {0};
    uint16_t one = mr_f32_to_f16(1.0f);
    memcpy(w, &one, 2), memcpy(w + 2, &one, 2);
    for (int j = 0; j < 4; j++) w[4 + j] = 2, w[8 + j] = 1, w[12 + j] = 2 | (1 << 4);
    memset(w + 16, 0x33, 128);
    float x[256];
    for (int i = 0; i < 256; i++) x[i] = 0.5f;
    blk_q8_K xq;
    qdot_quantize_row_q8_K(x, &xq, 256);
    CHECK(xq.qs[0] == -127 && xq.bsums[0] == -127 * 16);
    float y = 0, yp = 0;
    qdot_tile_q4_K(&y, 1, w, 144, 1, (const uint8_t *)&xq, sizeof xq, 1, 256, 0.0f);
    qdot_tile_q4_K_portable(&yp, 1, w, 144, 1, (const uint8_t *)&xq, sizeof xq, 1, 256, 0.0f);
    const double want = 256.0 * 5 * (double)xq.d * -127;
    CHECK_NEAR(y, want, 1e-5 * fabs(want));
    CHECK_NEAR(yp, want, 1e-5 * fabs(want));
    CHECK_NEAR(want, 256 * 5 * 0.5, 1e-3);
}

int main(void) {
    printf("  qdot_k kernels: %s\n", qdot_k_simd() ? "AVX2 (checked against the portable C ones)" : "portable C");
    RUN(q8_K_quantization_is_ggml_ref);
    RUN(q4_K_hand_built);
    RUN(q4_K_tiles);
    RUN(q5_K_tiles);
    RUN(q6_K_tiles);
    return test_summary();
}
