/* ggml block formats. Layouts (bytes, little-endian, f16 = IEEE half):
 *   Q8_0 (32):  f16 d; i8 qs[32]                         x = d*q
 *   Q4_0 (32):  f16 d; u8 qs[16]  (low nibbles 0..15, high 16..31)  x = d*(q-8)
 *   Q4_1 (32):  f16 d, m; u8 qs[16]                      x = d*q + m
 *   Q5_0 (32):  f16 d; u8 qh[4]; u8 qs[16]  (5th bits in qh)  x = d*(q-16)
 *   Q5_1 (32):  f16 d, m; u8 qh[4]; u8 qs[16]            x = d*q + m
 *   Q4_K (256): f16 d, dmin; u8 scales[12] (8 x 6-bit scale and min); u8 qs[128]
 *   Q5_K (256): f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]
 *   Q6_K (256): u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d
 * The arithmetic below follows ggml-quants.c operation by operation, so that
 * both dequantized values and quantized bytes agree with llama.cpp's bit for bit. */
#include "nn/quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#define QK 32
#define QK_K 256

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

static inline float rd_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return mr_f16_to_f32(h);
}
static inline void wr_f16(uint8_t *p, float f) {
    uint16_t h = mr_f32_to_f16(f);
    memcpy(p, &h, 2);
}

/* The types this file can dequantize; their block sizes come from the GGUF module. */
int quant_block(ggml_type t, int *be, int *bb) {
    uint64_t e = 0, b = 0;
    switch (t) {
    case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16: case GGML_TYPE_Q8_0: case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K:
    case GGML_TYPE_Q6_K:
        ggml_type_block(t, &e, &b);
        break;
    default: break;
    }
    if (be) *be = (int)e;
    if (bb) *bb = (int)b;
    return (int)e;
}
int quant_supported(ggml_type t) { return quant_block(t, NULL, NULL) != 0; }

size_t quant_row_bytes(ggml_type t, int64_t n) {
    int be, bb;
    if (!quant_block(t, &be, &bb)) return 0;
    return (size_t)(n / be) * (size_t)bb;
}

const char *quant_type_name(ggml_type t) { return quant_supported(t) ? ggml_type_name(t) : "unknown"; }

/* ---------------- dequantization ---------------- */

static void deq_f16(const uint8_t *s, float *y, int64_t n) {
    int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + 2 * i));
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(h));
    }
#endif
    for (; i < n; i++) y[i] = rd_f16(s + 2 * i);
}

/* bf16 is the top half of an f32: widening is a 16-bit shift, done 8 at a time
 * (a call per value made the BF16 decoder's one-row products about 5x slower) */
static void deq_bf16(const uint8_t *s, float *y, int64_t n) {
    int64_t i = 0;
#if defined(__AVX2__)
    for (; i + 8 <= n; i += 8) {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + 2 * i)));
        _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
#endif
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        y[i] = mr_bf16_to_f32(h);
    }
}

static void deq_q8_0(const uint8_t *s, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, s += 34, y += QK) {
        const float d = rd_f16(s);
        const int8_t *q = (const int8_t *)(s + 2);
#if defined(__AVX2__)
        /* the same int -> float conversion and one product per value as the scalar loop */
        const __m256 vd = _mm256_set1_ps(d);
        for (int j = 0; j < QK; j += 8) {
            __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + j)));
            _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_cvtepi32_ps(v), vd));
        }
#else
        for (int j = 0; j < QK; j++) y[j] = q[j] * d;
#endif
    }
}

static void deq_q4_0(const uint8_t *s, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, s += 18, y += QK) {
        const float d = rd_f16(s);
        const uint8_t *q = s + 2;
#if defined(__AVX2__)
        const __m256 vd = _mm256_set1_ps(d);
        const __m128i raw = _mm_loadu_si128((const __m128i *)q), mask = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, mask), eight);
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), eight);
        const __m128i parts[2] = {lo, hi};
        for (int h = 0; h < 2; h++) {
            __m256i a = _mm256_cvtepi8_epi32(parts[h]), c = _mm256_cvtepi8_epi32(_mm_srli_si128(parts[h], 8));
            _mm256_storeu_ps(y + 16 * h, _mm256_mul_ps(_mm256_cvtepi32_ps(a), vd));
            _mm256_storeu_ps(y + 16 * h + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(c), vd));
        }
#else
        for (int j = 0; j < QK / 2; j++) {
            y[j] = ((q[j] & 0x0f) - 8) * d;
            y[j + QK / 2] = ((q[j] >> 4) - 8) * d;
        }
#endif
    }
}

static void deq_q4_1(const uint8_t *s, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, s += 20, y += QK) {
        const float d = rd_f16(s), m = rd_f16(s + 2);
        const uint8_t *q = s + 4;
        for (int j = 0; j < QK / 2; j++) {
            y[j] = (q[j] & 0x0f) * d + m;
            y[j + QK / 2] = (q[j] >> 4) * d + m;
        }
    }
}

static void deq_q5_0(const uint8_t *s, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, s += 22, y += QK) {
        const float d = rd_f16(s);
        uint32_t qh;
        memcpy(&qh, s + 2, 4);
        const uint8_t *q = s + 6;
        for (int j = 0; j < QK / 2; j++) {
            const uint8_t h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
            y[j] = (((q[j] & 0x0f) | h0) - 16) * d;
            y[j + QK / 2] = (((q[j] >> 4) | h1) - 16) * d;
        }
    }
}

static void deq_q5_1(const uint8_t *s, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, s += 24, y += QK) {
        const float d = rd_f16(s), m = rd_f16(s + 2);
        uint32_t qh;
        memcpy(&qh, s + 4, 4);
        const uint8_t *q = s + 8;
        for (int j = 0; j < QK / 2; j++) {
            const uint8_t h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
            y[j] = ((q[j] & 0x0f) | h0) * d + m;
            y[j + QK / 2] = ((q[j] >> 4) | h1) * d + m;
        }
    }
}

/* The 8 six-bit (scale, min) pairs of a Q4_K / Q5_K super-block. */
static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void deq_q4_k(const uint8_t *s, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, s += 144) {
        const float d = rd_f16(s), dmin = rd_f16(s + 2);
        const uint8_t *sc = s + 4, *q = s + 16;
        for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
            uint8_t a, m;
            scale_min_k4(is, sc, &a, &m);
            const float d1 = d * a, m1 = dmin * m;
            scale_min_k4(is + 1, sc, &a, &m);
            const float d2 = d * a, m2 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xf) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

static void deq_q5_k(const uint8_t *s, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, s += 176) {
        const float d = rd_f16(s), dmin = rd_f16(s + 2);
        const uint8_t *sc = s + 4, *qh = s + 16, *ql = s + 48;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, ql += 32) {
            uint8_t a, m;
            scale_min_k4(is, sc, &a, &m);
            const float d1 = d * a, m1 = dmin * m;
            scale_min_k4(is + 1, sc, &a, &m);
            const float d2 = d * a, m2 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * ((ql[l] & 0xf) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}

static void deq_q6_k(const uint8_t *s, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, s += 210) {
        const uint8_t *ql = s, *qh = s + 128;
        const int8_t *sc = (const int8_t *)(s + 192);
        const float d = rd_f16(s + 208);
        for (int k = 0; k < QK_K; k += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int8_t q1 = (int8_t)((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int8_t q2 = (int8_t)((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int8_t q3 = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

void dequantize_row(ggml_type t, const void *src, float *dst, int64_t n) {
    const uint8_t *s = src;
    switch (t) {
    case GGML_TYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case GGML_TYPE_F16: deq_f16(s, dst, n); break;
    case GGML_TYPE_BF16: deq_bf16(s, dst, n); break;
    case GGML_TYPE_Q8_0: deq_q8_0(s, dst, n); break;
    case GGML_TYPE_Q4_0: deq_q4_0(s, dst, n); break;
    case GGML_TYPE_Q4_1: deq_q4_1(s, dst, n); break;
    case GGML_TYPE_Q5_0: deq_q5_0(s, dst, n); break;
    case GGML_TYPE_Q5_1: deq_q5_1(s, dst, n); break;
    case GGML_TYPE_Q4_K: deq_q4_k(s, dst, n); break;
    case GGML_TYPE_Q5_K: deq_q5_k(s, dst, n); break;
    case GGML_TYPE_Q6_K: deq_q6_k(s, dst, n); break;
    default: memset(dst, 0, (size_t)n * 4); break; /* callers check quant_supported first */
    }
}

/* ---------------- reference quantization ---------------- */

/* Round half to even for |x| < 2^22, as ggml's nearest_int (the 1.5*2^23 trick). */
static inline int nearest_int(float x) {
    float v = x + 12582912.f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static void qnt_q8_0(const float *x, uint8_t *s, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += QK, s += 34) {
        float amax = 0;
        for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        wr_f16(s, d);
        int8_t *q = (int8_t *)(s + 2);
        for (int j = 0; j < QK; j++) q[j] = (int8_t)roundf(x[j] * id);
    }
}

/* Shared by Q4_0 (nmax 8) and Q5_0 (nmax 16): d = -max/nmax where max is the value of largest magnitude. */
static float signed_block_scale(const float *x, float nmax, float *id) {
    float amax = 0, max = 0;
    for (int j = 0; j < QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    const float d = max / -nmax;
    *id = d ? 1.0f / d : 0.0f;
    return d;
}

static void qnt_q4_0(const float *x, uint8_t *s, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += QK, s += 18) {
        float id;
        wr_f16(s, signed_block_scale(x, 8, &id));
        for (int j = 0; j < QK / 2; j++) {
            const uint8_t a = (uint8_t)imin(15, (int8_t)(x[j] * id + 8.5f));
            const uint8_t c = (uint8_t)imin(15, (int8_t)(x[j + QK / 2] * id + 8.5f));
            s[2 + j] = (uint8_t)(a | (c << 4));
        }
    }
}

static void qnt_q5_0(const float *x, uint8_t *s, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += QK, s += 22) {
        float id;
        wr_f16(s, signed_block_scale(x, 16, &id));
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; j++) {
            const uint8_t a = (uint8_t)imin(31, (int8_t)(x[j] * id + 16.5f));
            const uint8_t c = (uint8_t)imin(31, (int8_t)(x[j + QK / 2] * id + 16.5f));
            s[6 + j] = (uint8_t)((a & 0x0f) | ((c & 0x0f) << 4));
            qh |= ((a & 0x10u) >> 4) << j;
            qh |= ((c & 0x10u) >> 4) << (j + QK / 2);
        }
        memcpy(s + 2, &qh, 4);
    }
}

static void min_max(const float *x, float *mn, float *mx) {
    float a = FLT_MAX, b = -FLT_MAX;
    for (int j = 0; j < QK; j++) {
        if (x[j] < a) a = x[j];
        if (x[j] > b) b = x[j];
    }
    *mn = a;
    *mx = b;
}

static void qnt_q4_1(const float *x, uint8_t *s, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += QK, s += 20) {
        float mn, mx;
        min_max(x, &mn, &mx);
        const float d = (mx - mn) / 15, id = d ? 1.0f / d : 0.0f;
        wr_f16(s, d);
        wr_f16(s + 2, mn);
        for (int j = 0; j < QK / 2; j++) {
            const uint8_t a = (uint8_t)imin(15, (int8_t)((x[j] - mn) * id + 0.5f));
            const uint8_t c = (uint8_t)imin(15, (int8_t)((x[j + QK / 2] - mn) * id + 0.5f));
            s[4 + j] = (uint8_t)(a | (c << 4));
        }
    }
}

static void qnt_q5_1(const float *x, uint8_t *s, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += QK, s += 24) {
        float mn, mx;
        min_max(x, &mn, &mx);
        const float d = (mx - mn) / 31, id = d ? 1.0f / d : 0.0f;
        wr_f16(s, d);
        wr_f16(s + 2, mn);
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; j++) {
            const uint8_t a = (uint8_t)((x[j] - mn) * id + 0.5f);
            const uint8_t c = (uint8_t)((x[j + QK / 2] - mn) * id + 0.5f);
            s[8 + j] = (uint8_t)((a & 0x0f) | ((c & 0x0f) << 4));
            qh |= ((a & 0x10u) >> 4) << j;
            qh |= ((c & 0x10u) >> 4) << (j + QK / 2);
        }
        memcpy(s + 4, &qh, 4);
    }
}

/* ggml's make_qkx2_quants: a scale and a (non-positive) offset for n values in
 * 0..nmax, searched over nstep+1 candidate scales minimizing the weighted error. */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min,
                              uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float mn = x[0], mx = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < mn) mn = x[i];
        if (x[i] > mx) mx = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (mn > 0) mn = 0;
    if (mx == mn) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *the_min = -mn;
        return 0.f;
    }
    float iscale = nmax / (mx - mn), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * (x[i] - mn));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        float diff = scale * L[i] + mn - x[i];
        best += w[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (mx - mn);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = imax(0, imin(nmax, nearest_int(iscale * (x[i] - mn))));
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float err = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                err += w[i] * (diff * diff);
            }
            if (err < best) {
                memcpy(L, Laux, (size_t)n);
                best = err;
                scale = this_scale;
                mn = this_min;
            }
        }
    }
    *the_min = -mn;
    return scale;
}

/* Q4_K and Q5_K share the scale search and the 6-bit scale packing; nmax is 15 or 31. */
static void qnt_k_scales(const float *x, int nmax, float rmin, int nstep, uint8_t *hdr, uint8_t *L) {
    float mins[8], scales[8], w[32];
    uint8_t Laux[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t *sc = hdr + 4;
    memset(sc, 0, 12);
    for (int j = 0; j < 8; j++) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        if (ls > 63) ls = 63;
        if (lm > 63) lm = 63;
        if (j < 4) {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (uint8_t)((ls & 0xf) | ((lm & 0xf) << 4));
            sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
            sc[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    wr_f16(hdr, max_scale / 63.f);
    wr_f16(hdr + 2, max_min / 63.f);
    for (int j = 0; j < 8; j++) {
        uint8_t a, m;
        scale_min_k4(j, sc, &a, &m);
        const float d = rd_f16(hdr) * a;
        if (!d) continue;
        const float dm = rd_f16(hdr + 2) * m;
        for (int i = 0; i < 32; i++) L[32 * j + i] = (uint8_t)imax(0, imin(nmax, nearest_int((x[32 * j + i] + dm) / d)));
    }
}

static void qnt_q4_k(const float *x, uint8_t *s, int64_t n) {
    uint8_t L[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, s += 144) {
        qnt_k_scales(x, 15, -1.f, 20, s, L);
        uint8_t *q = s + 16;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

static void qnt_q5_k(const float *x, uint8_t *s, int64_t n) {
    uint8_t L[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, s += 176) {
        qnt_k_scales(x, 31, -0.5f, 15, s, L);
        uint8_t *qh = s + 16, *ql = s + 48;
        memset(qh, 0, 32);
        uint8_t m1 = 1, m2 = 2;
        for (int k = 0; k < QK_K; k += 64, ql += 32) {
            for (int j = 0; j < 32; j++) {
                int l1 = L[k + j], l2 = L[k + j + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    }
}

/* ggml's make_qx_quants with rmse_type 1 and no importance weights (used by Q6_K). */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    if (amax < 1e-15f) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i]))));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

static void qnt_q6_k(const float *x, uint8_t *s, int64_t n) {
    int8_t L[QK_K];
    float scales[16];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, s += 210) {
        float max_scale = 0, max_abs = 0;
        for (int ib = 0; ib < 16; ib++) {
            scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
            if (fabsf(scales[ib]) > max_abs) {
                max_abs = fabsf(scales[ib]);
                max_scale = scales[ib];
            }
        }
        if (max_abs < 1e-15f) {
            memset(s, 0, 210);
            continue;
        }
        int8_t *sc = (int8_t *)(s + 192);
        const float iscale = -128.f / max_scale;
        wr_f16(s + 208, 1 / iscale);
        for (int ib = 0; ib < 16; ib++) sc[ib] = (int8_t)imin(127, nearest_int(iscale * scales[ib]));
        for (int j = 0; j < 16; j++) {
            const float d = rd_f16(s + 208) * sc[j];
            if (!d) continue;
            for (int i = 0; i < 16; i++) L[16 * j + i] = (int8_t)(imax(-32, imin(31, nearest_int(x[16 * j + i] / d))) + 32);
        }
        uint8_t *ql = s, *qh = s + 128;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; l++) {
                const uint8_t q1 = L[j + l] & 0xf, q2 = L[j + l + 32] & 0xf, q3 = L[j + l + 64] & 0xf,
                              q4 = L[j + l + 96] & 0xf;
                ql[l] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                  ((L[j + l + 96] >> 4) << 6));
            }
        }
    }
}

void quantize_row_ref(ggml_type t, const float *src, void *dst, int64_t n) {
    uint8_t *s = dst;
    switch (t) {
    case GGML_TYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case GGML_TYPE_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = mr_f32_to_f16(src[i]);
            memcpy(s + 2 * i, &h, 2);
        }
        break;
    case GGML_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = mr_f32_to_bf16(src[i]);
            memcpy(s + 2 * i, &h, 2);
        }
        break;
    case GGML_TYPE_Q8_0: qnt_q8_0(src, s, n); break;
    case GGML_TYPE_Q4_0: qnt_q4_0(src, s, n); break;
    case GGML_TYPE_Q4_1: qnt_q4_1(src, s, n); break;
    case GGML_TYPE_Q5_0: qnt_q5_0(src, s, n); break;
    case GGML_TYPE_Q5_1: qnt_q5_1(src, s, n); break;
    case GGML_TYPE_Q4_K: qnt_q4_k(src, s, n); break;
    case GGML_TYPE_Q5_K: qnt_q5_k(src, s, n); break;
    case GGML_TYPE_Q6_K: qnt_q6_k(src, s, n); break;
    default: break;
    }
}
