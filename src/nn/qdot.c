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
#include "nn/qdot_words.h"
#include "nn/quant.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define QDOT_AVX2 1
#endif

#define QK 32

/* ---------------- activation formats ----------------
 * A row of Q8_0 / Q8_1 activations is ggml's blocks, then (for the kernels, which
 * would otherwise convert or add them up again for every group of weight rows)
 * one float and one 32-bit word per block:
 *   Q8_0 rows: blocks[nb], padding to 4 bytes, float d[nb], int32 zx[nb]
 *              zx = -zero(w) * sum(qs): the integer correction for a weight type
 *              whose kernel multiplies unsigned quants q + zero (Q4_0: 8, Q5_0: 16,
 *              Q8_0: 128 with VNNI, else 0)
 *   Q8_1 rows: blocks[nb], float d[nb], float s[nb]
 * d and s are the blocks' f16 values converted exactly. */

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define QDOT_VNNI 1
#endif

ggml_type qdot_act_type(ggml_type w) {
    switch (w) {
    case GGML_TYPE_Q8_0: case GGML_TYPE_Q4_0: case GGML_TYPE_Q5_0: return GGML_TYPE_Q8_0;
    case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_1: return GGML_TYPE_Q8_1;
    case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K: return GGML_TYPE_Q8_K; /* qdot_k.c */
    default: return GGML_TYPE_F32;
    }
}

/* bytes of the ggml blocks of a row, padded to 4 */
static size_t act_blocks_bytes(ggml_type at, int64_t nb) {
    size_t b = (size_t)nb * (at == GGML_TYPE_Q8_1 ? sizeof(blk_q8_1) : sizeof(blk_q8_0));
    return (b + 3) & ~(size_t)3;
}

size_t qdot_act_row_bytes(ggml_type w, int64_t cols) {
    const ggml_type at = qdot_act_type(w);
    switch (at) {
    case GGML_TYPE_Q8_0: case GGML_TYPE_Q8_1: return act_blocks_bytes(at, cols / QK) + (size_t)(cols / QK) * 8;
    case GGML_TYPE_Q8_K: return (size_t)(cols / 256) * sizeof(blk_q8_K);
    default: return 0;
    }
}

/* the zero point the kernels of weight type w take off their unsigned quants */
static int act_zero(ggml_type w) {
    switch (w) {
    case GGML_TYPE_Q4_0: return 8;
    case GGML_TYPE_Q5_0: return 16;
#ifdef QDOT_VNNI
    case GGML_TYPE_Q8_0: return 128;
#endif
    default: return 0;
    }
}

/* One block of 32 activations as ggml's quantize_row_q8_0_ref makes it: d = amax /
 * 127, q = roundf(x * (1 / d)); returns the sum of the quants (Q8_1's s and the
 * zero-point correction need it). The AVX2 version computes the same operations 8
 * wide: |x| by clearing the sign, roundf's halves-away-from-zero from a truncation
 * and the exact fraction, so both give the same bytes. Quantizing the activations
 * runs once per product and row: at a 576-wide model done with libm's roundf and
 * fmaxf it cost 40% as much as the integer product itself. */
static inline int quantize_block(const float *xb, int8_t *qs, float *d_out) {
#ifdef QDOT_AVX2
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4], m = _mm256_setzero_ps();
    for (int i = 0; i < 4; i++) {
        v[i] = _mm256_loadu_ps(xb + 8 * i);
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[i]));
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float amax = _mm_cvtss_f32(h);
#else
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(xb[j]));
#endif
    const float d = amax / 127;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    *d_out = d;
#ifdef QDOT_AVX2
    const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    __m256i q[4], sum = _mm256_setzero_si256();
    for (int i = 0; i < 4; i++) {
        const __m256 x = _mm256_mul_ps(v[i], vid);
        const __m256 t = _mm256_round_ps(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m256 up = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(x, t)), half, _CMP_GE_OQ);
        const __m256 step = _mm256_or_ps(_mm256_and_ps(x, sign), one); /* +-1 with x's sign */
        q[i] = _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, step)));
        sum = _mm256_add_epi32(sum, q[i]);
    }
    /* 4 x 8 int32 -> 32 int8 (values within [-127, 127]: no saturation); the packs
     * interleave 128-bit lanes, the permutation puts the elements back in order */
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256((__m256i *)qs, _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    return _mm_cvtsi128_si32(s4);
#else
    int sum = 0;
    for (int j = 0; j < QK; j++) {
        qs[j] = (int8_t)roundf(xb[j] * id);
        sum += qs[j];
    }
    return sum;
#endif
}

void qdot_quantize_row(ggml_type w, const float *x, void *xq, int64_t cols) {
    const ggml_type at = qdot_act_type(w);
    const int64_t nb = cols / QK;
    uint8_t *extra = (uint8_t *)xq + act_blocks_bytes(at, nb);
    float *d = (float *)extra;
    if (at == GGML_TYPE_Q8_0) {
        blk_q8_0 *y = xq;
        int32_t *zx = (int32_t *)(extra + (size_t)nb * 4);
        const int z = act_zero(w);
        for (int64_t b = 0; b < nb; b++) {
            float db;
            const int sum = quantize_block(x + b * QK, y[b].qs, &db);
            y[b].d = mr_f32_to_f16(db);
            d[b] = mr_f16_to_f32(y[b].d);
            zx[b] = -z * sum;
        }
    } else if (at == GGML_TYPE_Q8_1) {
        /* ggml's quantize_row_q8_1_ref: as Q8_0, plus s = fp16(d * sum of the quants) */
        blk_q8_1 *y = xq;
        float *sx = (float *)(extra + (size_t)nb * 4);
        for (int64_t b = 0; b < nb; b++) {
            float db;
            const int sum = quantize_block(x + b * QK, y[b].qs, &db);
            y[b].d = mr_f32_to_f16(db);
            y[b].s = mr_f32_to_f16((float)sum * db);
            d[b] = mr_f16_to_f32(y[b].d);
            sx[b] = mr_f16_to_f32(y[b].s);
        }
    } else if (at == GGML_TYPE_Q8_K) {
        qdot_quantize_row_q8_K(x, xq, cols);
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
 * A tile is walked in groups of 8 weight rows x NA activation rows. For each
 * block, the 8 weight blocks are unpacked into 8 vectors V[j] whose 32-bit lane k
 * holds the unsigned quants 4j..4j+3 of row k (+ the zero point of the type, taken
 * off again through the activation row's zx): a transposition done on the packed
 * bytes, so one activation block, broadcast 4 bytes at a time, meets all 8 rows
 * in 8 u8 x s8 dot instructions and lane k ends with row k's exact block sum. No
 * horizontal sums; the float work (convert, scale, accumulate) is 8 rows wide.
 * With AVX512-VNNI (AVX512VL) a dot is one vpdpbusd; with plain AVX2 it is
 * maddubs + madd + add, which needs |pairs| < 2^15: the unsigned operand stays
 * <= 31 (Q4/Q5) or, for Q8_0, is |w| with the sign moved onto the activation. */

#ifdef QDOT_VNNI
#define QDOT_NA 8 /* 32 vector registers: 8 V, 8 accumulators, scales and temps */
static inline __m256i dot_acc(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }
#else
#define QDOT_NA 4 /* 16 vector registers */
static inline __m256i dot_acc(__m256i acc, __m256i u, __m256i s) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}
#endif

static inline __m256 f16x8(const uint8_t *const p[8], int off) {
    __m128i h = _mm_set_epi16((short)rd16(p[7] + off), (short)rd16(p[6] + off), (short)rd16(p[5] + off),
                              (short)rd16(p[4] + off), (short)rd16(p[3] + off), (short)rd16(p[2] + off),
                              (short)rd16(p[1] + off), (short)rd16(p[0] + off));
    return _mm256_cvtph_ps(h);
}

/* V[8] (and, for Q8_0 without VNNI, S[8]: the signed quants) of block b of 8 rows */
static inline __attribute__((always_inline)) void unpack8(ggml_type T, const uint8_t *const blk[8], __m256i V[8],
                                                         __m256i S[8]) {
    const wfmt f = fmt_of(T);
    __m256i R[4], W[4];
    if (T == GGML_TYPE_Q8_0) {
        _Pragma("GCC unroll 8")
        for (int i = 0; i < 4; i++) R[i] = load_pair(blk[i] + f.qs_off, blk[i + 4] + f.qs_off);
        transpose_4x(R, V);
        _Pragma("GCC unroll 8")
        for (int i = 0; i < 4; i++) R[i] = load_pair(blk[i] + f.qs_off + 16, blk[i + 4] + f.qs_off + 16);
        transpose_4x(R, V + 4);
        _Pragma("GCC unroll 8")
        for (int j = 0; j < 8; j++) {
#ifdef QDOT_VNNI
            V[j] = _mm256_xor_si256(V[j], _mm256_set1_epi8((char)0x80)); /* q + 128 */
            (void)S;
#else
            S[j] = V[j];
            V[j] = _mm256_abs_epi8(V[j]);
#endif
        }
        return;
    }
    (void)S;
    _Pragma("GCC unroll 8")
    for (int i = 0; i < 4; i++) R[i] = load_pair(blk[i] + f.qs_off, blk[i + 4] + f.qs_off);
    transpose_4x(R, W);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    _Pragma("GCC unroll 8")
    for (int j = 0; j < 4; j++) {
        V[j] = _mm256_and_si256(W[j], m4);                         /* elements 4j..4j+3: low nibbles */
        V[j + 4] = _mm256_and_si256(_mm256_srli_epi16(W[j], 4), m4); /* 16+4j..: high nibbles */
    }
    if (f.qh_off >= 0) {
        /* bit e of qh is the 5th bit of element e: lane k of V[j] wants bits 4j..4j+3 of
         * row k's qh as 0x10 in bytes 0..3; x * 0x02040810 puts bit i of a 4-bit x at
         * bit 8i+4 (the other partial products miss those bits) */
        const __m256i qh = _mm256_set_epi32((int)rd32(blk[7] + f.qh_off), (int)rd32(blk[6] + f.qh_off),
                                            (int)rd32(blk[5] + f.qh_off), (int)rd32(blk[4] + f.qh_off),
                                            (int)rd32(blk[3] + f.qh_off), (int)rd32(blk[2] + f.qh_off),
                                            (int)rd32(blk[1] + f.qh_off), (int)rd32(blk[0] + f.qh_off));
        _Pragma("GCC unroll 8")
        for (int j = 0; j < 8; j++) {
            __m256i x4 = _mm256_and_si256(_mm256_srli_epi32(qh, 4 * j), _mm256_set1_epi32(0xF));
            __m256i hb = _mm256_and_si256(_mm256_mullo_epi32(x4, _mm256_set1_epi32(0x02040810)),
                                          _mm256_set1_epi32(0x10101010));
            V[j] = _mm256_or_si256(V[j], hb);
        }
    }
}

/* One group of 8 weight rows x NA activation rows, all blocks. T is the weight
 * type, a compile-time constant in each instantiation below. */
static inline __attribute__((always_inline)) void group_8xN(ggml_type T, const int X8, const int NA, float *y,
                                                           int64_t ldy, const uint8_t *w, size_t w_row_bytes,
                                                           const uint8_t *xq, size_t xq_row_bytes, int64_t nb,
                                                           float beta) {
    const wfmt f = fmt_of(T);
    const ggml_type at = f.has_min ? GGML_TYPE_Q8_1 : GGML_TYPE_Q8_0;
    const size_t xblk = f.has_min ? sizeof(blk_q8_1) : sizeof(blk_q8_0), xqs = f.has_min ? 4 : 2;
    const size_t xd_off = act_blocks_bytes(at, nb), x2_off = xd_off + (size_t)nb * 4;
    const int has_zero = act_zero(T) != 0;
    __m256 acc[QDOT_NA];
    _Pragma("GCC unroll 8")
    for (int k = 0; k < NA; k++) acc[k] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        if (NA <= 2) { /* the 8 rows are contiguous: one linear stream (qdot.h) */
            const char *pf = (const char *)w + QDOT_PREFETCH_BYTES + (size_t)b * 8 * f.bytes;
            _mm_prefetch(pf, _MM_HINT_T0);
            _mm_prefetch(pf + 48, _MM_HINT_T0);
            _mm_prefetch(pf + 96, _MM_HINT_T0);
        }
        __m256i V[8], S[8];
        __m256 dw, mw = _mm256_setzero_ps();
        if (X8) { /* one x8 record (qdot.h): the scales, then V[j] and V[j + 4] share word j */
            const uint8_t *rec = w + (size_t)b * 8 * f.bytes;
            const __m256i m4 = _mm256_set1_epi8(0x0F);
            _Pragma("GCC unroll 4")
            for (int j = 0; j < 4; j++) {
                const __m256i W = _mm256_loadu_si256((const __m256i *)(rec + 16 + 32 * j));
                V[j] = _mm256_and_si256(W, m4);
                V[j + 4] = _mm256_and_si256(_mm256_srli_epi16(W, 4), m4);
            }
            dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)rec));
        } else {
            const uint8_t *blk[8];
            _Pragma("GCC unroll 8")
            for (int i = 0; i < 8; i++) blk[i] = w + (size_t)i * w_row_bytes + (size_t)b * f.bytes;
            unpack8(T, blk, V, S);
            dw = f16x8(blk, 0);
            if (f.has_min) mw = f16x8(blk, 2);
        }
        _Pragma("GCC unroll 8")
        for (int k = 0; k < NA; k++) {
            const uint8_t *xr = xq + (size_t)k * xq_row_bytes;
            const uint8_t *xs = xr + (size_t)b * xblk + xqs;
            __m256i isum = has_zero ? _mm256_set1_epi32(((const int32_t *)(xr + x2_off))[b]) : _mm256_setzero_si256();
            _Pragma("GCC unroll 8")
            for (int j = 0; j < 8; j++) {
                int32_t x4;
                memcpy(&x4, xs + 4 * j, 4);
                __m256i xv = _mm256_set1_epi32(x4);
#if !defined(QDOT_VNNI)
                if (T == GGML_TYPE_Q8_0) xv = _mm256_sign_epi8(xv, S[j]);
#endif
                isum = dot_acc(isum, V[j], xv);
            }
            const __m256 dx = _mm256_set1_ps(((const float *)(xr + xd_off))[b]);
            acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, dx), acc[k]);
            if (f.has_min) acc[k] = _mm256_fmadd_ps(mw, _mm256_set1_ps(((const float *)(xr + x2_off))[b]), acc[k]);
        }
    }
    _Pragma("GCC unroll 8")
    for (int k = 0; k < NA; k++) {
        float *yp = y + (int64_t)k * ldy;
        if (beta != 0.0f) acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(yp), acc[k]);
        _mm256_storeu_ps(yp, acc[k]);
    }
}

#if defined(QDOT_VNNI) && defined(__AVX512F__)
#define QDOT_ZMM 1
/* group_8xN for 16 weight rows and QDOT_NA activation rows, where the machine has
 * 512-bit registers: rows 0..7 and 8..15 are unpacked as in group_8xN (unpack8,
 * the same per-row work) into the low and high halves of one zmm vector, so each
 * broadcast activation word meets 16 rows in one vpdpbusd and the float steps run
 * 16 rows wide. Lane k sees exactly the integer sums and float operations of
 * group_8xN's lane k % 8: the results are the same bits. */
static inline __attribute__((always_inline)) void group_16x8(ggml_type T, float *y, int64_t ldy, const uint8_t *w,
                                                            size_t w_row_bytes, const uint8_t *xq, size_t xq_row_bytes,
                                                            int64_t nb, float beta) {
    const wfmt f = fmt_of(T);
    const ggml_type at = f.has_min ? GGML_TYPE_Q8_1 : GGML_TYPE_Q8_0;
    const size_t xblk = f.has_min ? sizeof(blk_q8_1) : sizeof(blk_q8_0), xqs = f.has_min ? 4 : 2;
    const size_t xd_off = act_blocks_bytes(at, nb), x2_off = xd_off + (size_t)nb * 4;
    const int has_zero = act_zero(T) != 0;
    __m512 acc[QDOT_NA];
    _Pragma("GCC unroll 8")
    for (int k = 0; k < QDOT_NA; k++) acc[k] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk[16];
        _Pragma("GCC unroll 16")
        for (int i = 0; i < 16; i++) blk[i] = w + (size_t)i * w_row_bytes + (size_t)b * f.bytes;
        __m256i lo[8], hi[8], S[8];
        unpack8(T, blk, lo, S);
        unpack8(T, blk + 8, hi, S);
        __m512i V[8];
        _Pragma("GCC unroll 8")
        for (int j = 0; j < 8; j++) V[j] = _mm512_inserti64x4(_mm512_castsi256_si512(lo[j]), hi[j], 1);
        const __m512 dw = _mm512_insertf32x8(_mm512_castps256_ps512(f16x8(blk, 0)), f16x8(blk + 8, 0), 1);
        const __m512 mw = f.has_min ? _mm512_insertf32x8(_mm512_castps256_ps512(f16x8(blk, 2)), f16x8(blk + 8, 2), 1)
                                    : _mm512_setzero_ps();
        _Pragma("GCC unroll 8")
        for (int k = 0; k < QDOT_NA; k++) {
            const uint8_t *xr = xq + (size_t)k * xq_row_bytes;
            const uint8_t *xs = xr + (size_t)b * xblk + xqs;
            __m512i isum = has_zero ? _mm512_set1_epi32(((const int32_t *)(xr + x2_off))[b]) : _mm512_setzero_si512();
            _Pragma("GCC unroll 8")
            for (int j = 0; j < 8; j++) {
                int32_t x4;
                memcpy(&x4, xs + 4 * j, 4);
                isum = _mm512_dpbusd_epi32(isum, V[j], _mm512_set1_epi32(x4));
            }
            const __m512 dx = _mm512_set1_ps(((const float *)(xr + xd_off))[b]);
            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, dx), acc[k]);
            if (f.has_min) acc[k] = _mm512_fmadd_ps(mw, _mm512_set1_ps(((const float *)(xr + x2_off))[b]), acc[k]);
        }
    }
    _Pragma("GCC unroll 8")
    for (int k = 0; k < QDOT_NA; k++) {
        float *yp = y + (int64_t)k * ldy;
        if (beta != 0.0f) acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_loadu_ps(yp), acc[k]);
        _mm512_storeu_ps(yp, acc[k]);
    }
}
#else
#define QDOT_ZMM 0
#endif

#define GROUP_CASE(N)                                                                                  \
    case N: group_8xN(T, X8, N, yt, ldy, wr, w_row_bytes, xt, xq_row_bytes, nb, beta); break;

/* 8 weight rows (at wr, their outputs at column r of y) x activation rows t..n_act-1 */
static inline __attribute__((always_inline)) void rows8_from(ggml_type T, const int X8, float *y, int64_t ldy,
                                                            const uint8_t *wr, size_t w_row_bytes, const uint8_t *xq,
                                                            size_t xq_row_bytes, int t, int n_act, int64_t nb,
                                                            float beta) {
    for (; t + QDOT_NA <= n_act; t += QDOT_NA)
        group_8xN(T, X8, QDOT_NA, y + t * ldy, ldy, wr, w_row_bytes, xq + t * xq_row_bytes, xq_row_bytes, nb, beta);
    const uint8_t *xt = xq + t * xq_row_bytes;
    float *yt = y + t * ldy;
    switch (n_act - t) {
        GROUP_CASE(1)
        GROUP_CASE(2)
        GROUP_CASE(3)
#if QDOT_NA > 4
        GROUP_CASE(4)
        GROUP_CASE(5)
        GROUP_CASE(6)
        GROUP_CASE(7)
#endif
    default: break;
    }
}

static inline __attribute__((always_inline)) void tile_avx2(ggml_type T, const int X8, float *y, int64_t ldy,
                                                           const uint8_t *w, size_t w_row_bytes, int n_rows,
                                                           const uint8_t *xq, size_t xq_row_bytes, int n_act,
                                                           int64_t cols, float beta) {
    const int64_t nb = cols / QK;
    const int r8 = n_rows & ~7;
    int r = 0;
#if QDOT_ZMM
    if (!X8) /* 16 rows at a time over whole groups of activation rows, the rest as below */
        for (; r + 16 <= r8; r += 16) {
            const uint8_t *wr = w + (size_t)r * w_row_bytes;
            int t = 0;
            for (; t + QDOT_NA <= n_act; t += QDOT_NA)
                group_16x8(T, y + t * ldy + r, ldy, wr, w_row_bytes, xq + t * xq_row_bytes, xq_row_bytes, nb, beta);
            rows8_from(T, X8, y + r, ldy, wr, w_row_bytes, xq, xq_row_bytes, t, n_act, nb, beta);
            rows8_from(T, X8, y + r + 8, ldy, wr + 8 * w_row_bytes, w_row_bytes, xq, xq_row_bytes, t, n_act, nb, beta);
        }
#endif
    for (; r < r8; r += 8)
        rows8_from(T, X8, y + r, ldy, w + (size_t)r * w_row_bytes, w_row_bytes, xq, xq_row_bytes, 0, n_act, nb, beta);
    /* the last n_rows % 8 rows (no model we know has them; never x8) */
    if (!X8 && r8 < n_rows)
        tile_portable(T, y + r8, ldy, w + (size_t)r8 * w_row_bytes, w_row_bytes, n_rows - r8, xq, xq_row_bytes, n_act,
                      cols, beta);
}
#define TILE_FN(NAME, TYPE)                                                                                         \
    static void NAME(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows, const uint8_t *xq,   \
                     size_t xq_row_bytes, int n_act, int64_t cols, float beta) {                                    \
        tile_avx2(TYPE, 0, y, ldy, w, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);                    \
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
    case GGML_TYPE_Q4_K: return qdot_tile_q4_K;
    case GGML_TYPE_Q5_K: return qdot_tile_q5_K;
    case GGML_TYPE_Q6_K: return qdot_tile_q6_K;
    default: return NULL;
    }
}

void qdot_tile_portable(ggml_type w, float *y, int64_t ldy, const uint8_t *wd, size_t w_row_bytes, int n_rows,
                        const uint8_t *xq, size_t xq_row_bytes, int n_act, int64_t cols, float beta) {
    if (fmt_of(w).bytes)
        tile_portable(w, y, ldy, wd, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);
}

/* ---------------- the x8 layout (qdot.h) ---------------- */

#define X8_RECORD (8 * 18) /* Q4_0: 8 scales (16 bytes), then 4 words x 8 rows x 4 bytes */

int qdot_x8_supported(ggml_type w, int64_t rows, int64_t cols) {
#ifdef QDOT_AVX2
    return w == GGML_TYPE_Q4_0 && rows % 8 == 0 && cols % QK == 0;
#else
    (void)w, (void)rows, (void)cols;
    return 0; /* only the AVX2 kernel reads it */
#endif
}

void qdot_x8_repack(ggml_type w, const uint8_t *src, uint8_t *dst, int64_t rows, int64_t cols) {
    (void)w; /* Q4_0, the one type qdot_x8_supported accepts */
    const int64_t nb = cols / QK;
    const size_t rb = (size_t)nb * 18;
    for (int64_t g = 0; g < rows / 8; g++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *rec = dst + ((size_t)g * nb + b) * X8_RECORD;
            for (int k = 0; k < 8; k++) {
                const uint8_t *blk = src + (size_t)(8 * g + k) * rb + (size_t)b * 18;
                memcpy(rec + 2 * k, blk, 2);
                for (int j = 0; j < 4; j++) memcpy(rec + 16 + 32 * j + 4 * k, blk + 2 + 4 * j, 4);
            }
        }
}

void qdot_x8_dequantize_row(ggml_type w, const uint8_t *data, int64_t r, float *out, int64_t cols) {
    const int64_t nb = cols / QK;
    const uint8_t *group = data + (size_t)(r / 8) * (size_t)nb * X8_RECORD;
    const int k = (int)(r % 8);
    for (int64_t b = 0; b < nb; b++) { /* back into one Q4_0 block, then as any Q4_0 row */
        const uint8_t *rec = group + (size_t)b * X8_RECORD;
        uint8_t blk[18];
        memcpy(blk, rec + 2 * k, 2);
        for (int j = 0; j < 4; j++) memcpy(blk + 2 + 4 * j, rec + 16 + 32 * j + 4 * k, 4);
        dequantize_row(w, blk, out + b * QK, QK);
    }
}

#ifdef QDOT_AVX2
static void tile_q4_0_x8(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows, const uint8_t *xq,
                         size_t xq_row_bytes, int n_act, int64_t cols, float beta) {
    tile_avx2(GGML_TYPE_Q4_0, 1, y, ldy, w, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);
}
#endif

qdot_tile_fn qdot_tile_kernel_x8(ggml_type w) {
#ifdef QDOT_AVX2
    if (w == GGML_TYPE_Q4_0) return tile_q4_0_x8;
#endif
    (void)w;
    return NULL;
}
