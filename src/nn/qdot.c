/* Integer products of the 32-element weight types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1)
 * with 8-bit activation blocks, and the dispatch of qdot.h.
 *
 * Arithmetic, the same in the portable C and the AVX2 kernels, bit for bit:
 * for output (r, t) and block b, sumi = the exact integer dot product of the 32
 * weight quants with the 32 activation quants; then, block after block,
 *   acc = fmaf((float)sumi, d_w * d_x, acc)          (Q8_0, Q4_0, Q5_0)
 *   acc = fmaf(m_w, s_x, fmaf((float)sumi, d_w * d_x, acc))   (Q4_1, Q5_1)
 * and y = acc (beta 0) or fmaf(beta, y, acc). The AVX2 kernels get every block's
 * sumi exactly (8 weight rows at a time, reduced to one lane per row) and then do
 * these float operations 8 rows wide, so the two paths cannot drift apart and the
 * tests compare them for equality. llama.cpp does the same integer sums and adds
 * the scaled block sums in another order: the results agree to fp32 rounding.
 *
 * The K types (Q4_K, Q5_K, Q6_K) live in qdot_k.c. */
#include "nn/qdot.h"

#include <math.h>
#include <string.h>

#include "mllm4rec/base.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define QDOT_AVX2 1
#endif

#define QK 32

/* ---------------- activation formats ---------------- */

ggml_type qdot_act_type(ggml_type w) {
    switch (w) {
    case GGML_TYPE_Q8_0: case GGML_TYPE_Q4_0: case GGML_TYPE_Q5_0: return GGML_TYPE_Q8_0;
    case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_1: return GGML_TYPE_Q8_1;
    /* Q4_K, Q5_K, Q6_K: Q8_K once qdot_k.c is linked in; until then dequantize + sgemm */
    default: return GGML_TYPE_F32;
    }
}

size_t qdot_act_row_bytes(ggml_type w, int64_t cols) {
    switch (qdot_act_type(w)) {
    case GGML_TYPE_Q8_0: return (size_t)(cols / QK) * sizeof(blk_q8_0);
    case GGML_TYPE_Q8_1: return (size_t)(cols / QK) * sizeof(blk_q8_1);
    case GGML_TYPE_Q8_K: return (size_t)(cols / 256) * sizeof(blk_q8_K);
    default: return 0;
    }
}

/* ggml's quantize_row_q8_0_ref, operation by operation */
static void quantize_q8_0(const float *x, blk_q8_0 *y, int64_t cols) {
    for (int64_t b = 0; b < cols / QK; b++) {
        const float *xb = x + b * QK;
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(xb[j]));
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = mr_f32_to_f16(d);
        for (int j = 0; j < QK; j++) y[b].qs[j] = (int8_t)roundf(xb[j] * id);
    }
}

/* ggml's quantize_row_q8_1_ref: as Q8_0, plus s = fp16(d * sum of the quants) */
static void quantize_q8_1(const float *x, blk_q8_1 *y, int64_t cols) {
    for (int64_t b = 0; b < cols / QK; b++) {
        const float *xb = x + b * QK;
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(xb[j]));
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = mr_f32_to_f16(d);
        int sum = 0;
        for (int j = 0; j < QK; j++) {
            y[b].qs[j] = (int8_t)roundf(xb[j] * id);
            sum += y[b].qs[j];
        }
        y[b].s = mr_f32_to_f16((float)sum * d);
    }
}

void qdot_quantize_row(ggml_type w, const float *x, void *xq, int64_t cols) {
    switch (qdot_act_type(w)) {
    case GGML_TYPE_Q8_0: quantize_q8_0(x, xq, cols); break;
    case GGML_TYPE_Q8_1: quantize_q8_1(x, xq, cols); break;
    default: break; /* Q8_K: qdot_k.c's qdot_quantize_row_q8_K, wired in with the K kernels */
    }
}

/* ---------------- weight blocks ---------------- */

static inline uint16_t rd16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}
static inline uint32_t rd32(const uint8_t *p) {
    uint32_t h;
    memcpy(&h, p, 4);
    return h;
}

/* Bytes per block, where the quants and high bits start, whether the type has a
 * min (pairs with Q8_1) and the offset subtracted from its quants. */
typedef struct wfmt {
    int bytes, qs_off, qh_off, has_min, zero;
} wfmt;

static wfmt fmt_of(ggml_type t) {
    switch (t) {
    case GGML_TYPE_Q8_0: return (wfmt){34, 2, -1, 0, 0};
    case GGML_TYPE_Q4_0: return (wfmt){18, 2, -1, 0, 8};
    case GGML_TYPE_Q4_1: return (wfmt){20, 4, -1, 1, 0};
    case GGML_TYPE_Q5_0: return (wfmt){22, 6, 2, 0, 16};
    case GGML_TYPE_Q5_1: return (wfmt){24, 8, 4, 1, 0};
    default: return (wfmt){0, 0, 0, 0, 0};
    }
}

/* q[32] = the integer quants of one block (element order as dequantize_row). */
static void block_quants(ggml_type t, const wfmt *f, const uint8_t *blk, int8_t *q) {
    const uint8_t *qs = blk + f->qs_off;
    if (t == GGML_TYPE_Q8_0) {
        memcpy(q, qs, QK);
        return;
    }
    const uint32_t qh = f->qh_off >= 0 ? rd32(blk + f->qh_off) : 0;
    for (int j = 0; j < 16; j++) {
        int lo = qs[j] & 0x0F, hi = qs[j] >> 4;
        if (f->qh_off >= 0) {
            lo |= (int)((qh >> j) & 1) << 4;
            hi |= (int)((qh >> (j + 16)) & 1) << 4;
        }
        q[j] = (int8_t)(lo - f->zero);
        q[j + 16] = (int8_t)(hi - f->zero);
    }
}

/* The portable kernel: the arithmetic of the header comment, one output at a time
 * (weight blocks decoded once per group of 8 activation rows). */
static void tile_portable(ggml_type wt, float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows,
                          const uint8_t *xq, size_t xq_row_bytes, int n_act, int64_t cols, float beta) {
    const wfmt f = fmt_of(wt);
    const int64_t nb = cols / QK;
    for (int r = 0; r < n_rows; r++) {
        const uint8_t *wr = w + (size_t)r * w_row_bytes;
        for (int t0 = 0; t0 < n_act; t0 += 8) {
            const int na = n_act - t0 < 8 ? n_act - t0 : 8;
            float acc[8] = {0};
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = wr + b * f.bytes;
                int8_t q[QK];
                block_quants(wt, &f, blk, q);
                const float dw = mr_f16_to_f32(rd16(blk));
                const float mw = f.has_min ? mr_f16_to_f32(rd16(blk + 2)) : 0.0f;
                for (int k = 0; k < na; k++) {
                    const uint8_t *xr = xq + (size_t)(t0 + k) * xq_row_bytes;
                    const int8_t *xs;
                    float dx, sx = 0.0f;
                    if (f.has_min) {
                        const blk_q8_1 *xb = (const blk_q8_1 *)xr + b;
                        xs = xb->qs, dx = mr_f16_to_f32(xb->d), sx = mr_f16_to_f32(xb->s);
                    } else {
                        const blk_q8_0 *xb = (const blk_q8_0 *)xr + b;
                        xs = xb->qs, dx = mr_f16_to_f32(xb->d);
                    }
                    int sumi = 0;
                    for (int j = 0; j < QK; j++) sumi += q[j] * xs[j];
                    acc[k] = fmaf((float)sumi, dw * dx, acc[k]);
                    if (f.has_min) acc[k] = fmaf(mw, sx, acc[k]);
                }
            }
            for (int k = 0; k < na; k++) {
                float *yp = y + (int64_t)(t0 + k) * ldy + r;
                *yp = beta != 0.0f ? fmaf(beta, *yp, acc[k]) : acc[k];
            }
        }
    }
}

#ifdef QDOT_AVX2
/* ---------------- AVX2 kernels ----------------
 * A tile is walked in groups of 8 weight rows x NA (<= 4) activation rows. For
 * each block, the 8 weight blocks are unpacked once into bytes (u: unsigned
 * magnitudes; s: the signed values whose signs go onto the activations, for the
 * types with signed quants) and then multiplied with the NA activation blocks:
 * 8 exact 8-lane integer sums per activation row, reduced to one vector whose
 * lane k is row k's block sum, converted to float and scaled 8 rows at a time.
 * With AVX512-VNNI (AVX512VL) one vpdpbusd replaces maddubs + madd. Neither
 * saturates: |u| <= 128 and |x| <= 127 (Q8_0) or u <= 31. */

static inline __m256i dot_u8s8(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

/* lane k of the result = the sum of the 8 lanes of v[k] */
static inline __m256i reduce8(const __m256i v[8]) {
    __m256i h01 = _mm256_hadd_epi32(v[0], v[1]), h23 = _mm256_hadd_epi32(v[2], v[3]);
    __m256i h45 = _mm256_hadd_epi32(v[4], v[5]), h67 = _mm256_hadd_epi32(v[6], v[7]);
    __m256i g0 = _mm256_hadd_epi32(h01, h23), g1 = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(g0, g1, 0x20), _mm256_permute2x128_si256(g0, g1, 0x31));
}

/* the 32 nibbles of 16 bytes: low nibbles are elements 0..15, high ones 16..31 */
static inline __m256i nibbles(const uint8_t *qs) {
    __m128i lo = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(lo, 4), lo);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

/* byte i = 0x10 where bit i of qh is set, else 0 */
static inline __m256i high_bits(uint32_t qh) {
    const __m256i spread = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL, 0x0101010101010101LL, 0);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

static inline __m256 f16x8(const uint8_t *const p[8]) {
    __m128i h = _mm_set_epi16((short)rd16(p[7]), (short)rd16(p[6]), (short)rd16(p[5]), (short)rd16(p[4]),
                              (short)rd16(p[3]), (short)rd16(p[2]), (short)rd16(p[1]), (short)rd16(p[0]));
    return _mm256_cvtph_ps(h);
}

static inline float f16_1(uint16_t h) { return _cvtsh_ss(h); }

/* One group of 8 weight rows x NA activation rows, all blocks. T is the weight
 * type, a compile-time constant in each instantiation below. */
static inline __attribute__((always_inline)) void group_8xN(ggml_type T, const int NA, float *y, int64_t ldy,
                                                           const uint8_t *w, size_t w_row_bytes, const uint8_t *xq,
                                                           size_t xq_row_bytes, int64_t nb, float beta) {
    const wfmt f = fmt_of(T);
    const int is_signed = !f.has_min;
    __m256 acc[4];
    for (int k = 0; k < NA; k++) acc[k] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk[8];
        for (int i = 0; i < 8; i++) blk[i] = w + (size_t)i * w_row_bytes + (size_t)b * f.bytes;
        __m256i u[8], s[8];
        for (int i = 0; i < 8; i++) {
            __m256i q;
            if (T == GGML_TYPE_Q8_0) {
                q = _mm256_loadu_si256((const __m256i *)(blk[i] + f.qs_off));
            } else {
                q = nibbles(blk[i] + f.qs_off);
                if (f.qh_off >= 0) q = _mm256_or_si256(q, high_bits(rd32(blk[i] + f.qh_off)));
                if (f.zero) q = _mm256_sub_epi8(q, _mm256_set1_epi8((char)f.zero));
            }
            if (is_signed) {
                u[i] = _mm256_abs_epi8(q);
                s[i] = q;
            } else {
                u[i] = q;
            }
        }
        const __m256 dw = f16x8(blk);
        __m256 mw = _mm256_setzero_ps();
        if (f.has_min) {
            const uint8_t *mp[8];
            for (int i = 0; i < 8; i++) mp[i] = blk[i] + 2;
            mw = f16x8(mp);
        }
        for (int k = 0; k < NA; k++) {
            const uint8_t *xr = xq + (size_t)k * xq_row_bytes;
            __m256i xv;
            float dx, sx = 0.0f;
            if (f.has_min) {
                const blk_q8_1 *xb = (const blk_q8_1 *)xr + b;
                xv = _mm256_loadu_si256((const __m256i *)xb->qs);
                dx = f16_1(xb->d), sx = f16_1(xb->s);
            } else {
                const blk_q8_0 *xb = (const blk_q8_0 *)xr + b;
                xv = _mm256_loadu_si256((const __m256i *)xb->qs);
                dx = f16_1(xb->d);
            }
            __m256i p[8];
            for (int i = 0; i < 8; i++) p[i] = dot_u8s8(u[i], is_signed ? _mm256_sign_epi8(xv, s[i]) : xv);
            const __m256 sumf = _mm256_cvtepi32_ps(reduce8(p));
            acc[k] = _mm256_fmadd_ps(sumf, _mm256_mul_ps(dw, _mm256_set1_ps(dx)), acc[k]);
            if (f.has_min) acc[k] = _mm256_fmadd_ps(mw, _mm256_set1_ps(sx), acc[k]);
        }
    }
    for (int k = 0; k < NA; k++) {
        float *yp = y + (int64_t)k * ldy;
        if (beta != 0.0f) acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(yp), acc[k]);
        _mm256_storeu_ps(yp, acc[k]);
    }
}

static inline __attribute__((always_inline)) void tile_avx2(ggml_type T, float *y, int64_t ldy, const uint8_t *w,
                                                           size_t w_row_bytes, int n_rows, const uint8_t *xq,
                                                           size_t xq_row_bytes, int n_act, int64_t cols, float beta) {
    const int64_t nb = cols / QK;
    const int r8 = n_rows & ~7;
    for (int r = 0; r < r8; r += 8) {
        const uint8_t *wr = w + (size_t)r * w_row_bytes;
        int t = 0;
        for (; t + 4 <= n_act; t += 4)
            group_8xN(T, 4, y + t * ldy + r, ldy, wr, w_row_bytes, xq + t * xq_row_bytes, xq_row_bytes, nb, beta);
        const uint8_t *xt = xq + t * xq_row_bytes;
        float *yt = y + t * ldy + r;
        switch (n_act - t) {
        case 3: group_8xN(T, 3, yt, ldy, wr, w_row_bytes, xt, xq_row_bytes, nb, beta); break;
        case 2: group_8xN(T, 2, yt, ldy, wr, w_row_bytes, xt, xq_row_bytes, nb, beta); break;
        case 1: group_8xN(T, 1, yt, ldy, wr, w_row_bytes, xt, xq_row_bytes, nb, beta); break;
        default: break;
        }
    }
    /* the last n_rows % 8 rows (no model we know has them) */
    if (r8 < n_rows)
        tile_portable(T, y + r8, ldy, w + (size_t)r8 * w_row_bytes, w_row_bytes, n_rows - r8, xq, xq_row_bytes, n_act,
                      cols, beta);
}
#define TILE_FN(NAME, TYPE)                                                                                         \
    static void NAME(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows, const uint8_t *xq,   \
                     size_t xq_row_bytes, int n_act, int64_t cols, float beta) {                                    \
        tile_avx2(TYPE, y, ldy, w, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);                       \
    }
#else
#define TILE_FN(NAME, TYPE)                                                                                         \
    static void NAME(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows, const uint8_t *xq,   \
                     size_t xq_row_bytes, int n_act, int64_t cols, float beta) {                                    \
        tile_portable(TYPE, y, ldy, w, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);                   \
    }
#endif

TILE_FN(tile_q8_0, GGML_TYPE_Q8_0)
TILE_FN(tile_q4_0, GGML_TYPE_Q4_0)
TILE_FN(tile_q4_1, GGML_TYPE_Q4_1)
TILE_FN(tile_q5_0, GGML_TYPE_Q5_0)
TILE_FN(tile_q5_1, GGML_TYPE_Q5_1)

qdot_tile_fn qdot_tile_kernel(ggml_type w) {
    switch (w) {
    case GGML_TYPE_Q8_0: return tile_q8_0;
    case GGML_TYPE_Q4_0: return tile_q4_0;
    case GGML_TYPE_Q4_1: return tile_q4_1;
    case GGML_TYPE_Q5_0: return tile_q5_0;
    case GGML_TYPE_Q5_1: return tile_q5_1;
    /* Q4_K, Q5_K, Q6_K: qdot_k.c's kernels, wired in when that file is merged */
    default: return NULL;
    }
}

void qdot_tile_portable(ggml_type w, float *y, int64_t ldy, const uint8_t *wd, size_t w_row_bytes, int n_rows,
                        const uint8_t *xq, size_t xq_row_bytes, int n_act, int64_t cols, float beta) {
    if (fmt_of(w).bytes)
        tile_portable(w, y, ldy, wd, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);
}
