/* Integer products of the K-quant weight types (Q4_K, Q5_K, Q6_K) with Q8_K
 * activations, in llama.cpp's arithmetic (ggml_vec_dot_q{4,5,6}_K_q8_K):
 *
 *   Q4_K / Q5_K super-block (256 values): f16 d, dmin; 8 groups of 32 with a 6-bit
 *     scale s_j and min m_j; value = d*s_j*q - dmin*m_j, q in 0..15 / 0..31.
 *     dot with a Q8_K block (dx; x[256]; bsums[16]) =
 *       (d*dx) * S - (dmin*dx) * M,  S = sum_j s_j * sum_{l in j} q_l*x_l,
 *                                    M = sum_j m_j * (bsums[2j] + bsums[2j+1]).
 *   Q6_K super-block: 16 groups of 16 with an int8 scale s_g; value = d*s_g*(q-32),
 *     q in 0..63:  (d*dx) * S,  S = sum_g s_g * sum_{l in g} q_l*x_l - 32 * sum_g s_g*bsums[g].
 *
 * S and M are exact integers (|S| < 2^26 for every input: 63*127*256*128), converted
 * to fp32 once per super-block and scaled by the two f32 products, as llama.cpp does.
 *
 * Two implementations give the same S and M and differ only in the order of the fp32
 * additions that follow:
 *   - portable C: one fp32 accumulator per output, in super-block order,
 *       acc += (d*dx)*(float)S - (dmin*dx)*(float)M   (each product rounded, no FMA);
 *   - AVX2 (with FMA; the build has it under -march=native): 8 fp32 lanes per output,
 *       lane i += (d*dx) * (float)S_i           (FMA; S_i the integer partial sum of lane i)
 *       lane i += -(dmin*dx) * (float)M_i       (FMA; Q4_K/Q5_K, M_i = m_i*(bsums[2i]+bsums[2i+1]))
 *     then the 8 lanes are added pairwise (4+4, 2+2, 1+1) at the end, as llama.cpp's
 *     AVX2 kernels (which fold the mins into a separate 4-lane accumulator) do.
 * The results agree to a few fp32 rounding steps (tests/test_qdot_k.c bounds it).
 *
 * Tiling: the AVX2 kernel works on micro-tiles of KT_RW weight rows x KT_TA activation
 * rows (2 x 4 for prefill; up to 4 x 1 for one activation row, generation). Each 32-value
 * group of a weight row is unpacked to bytes once per micro-tile and multiplied with
 * KT_TA activation rows; each activation group is loaded once and used for KT_RW weight
 * rows; the KT_RW x KT_TA integer sums and fp32 accumulators stay in registers (the
 * build's -march=native has AVX-512VL here, so 32 ymm registers). The activation
 * micro-panels are the outer loop: one panel (KT_TA rows, 4.7 KB each at 4096 columns)
 * stays in L1 while the tile's weight rows stream from L2, so the caller should keep a
 * tile's weight rows within L2 (a few hundred KB). */
#include "nn/qdot_k.h"

#include <string.h>

#include "mllm4rec/base.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define QDOT_K_SIMD 1
#else
#define QDOT_K_SIMD 0
#endif

#define QK_K 256
#define Q4K_BYTES 144
#define Q5K_BYTES 176
#define Q6K_BYTES 210

enum { KT_Q4, KT_Q5, KT_Q6 };

int qdot_k_simd(void) { return QDOT_K_SIMD; }

static inline float rd_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return mr_f16_to_f32(h);
}

/* ---- activations: ggml's quantize_row_q8_K_ref ---- */

/* Round to nearest, ties to even, as ggml's nearest_int (valid for |f| < 2^22). */
static inline int nearest_int(float f) {
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* The scale comes from the signed value of largest magnitude (the first one, on ties):
 * iscale = -127/max, so that value becomes -127 and the others land in [-127, 127];
 * d = 1/iscale. An all-zero block gets d = 0, qs = 0 and (where ggml leaves them
 * unwritten) bsums = 0. */
void qdot_quantize_row_q8_K(const float *x, blk_q8_K *y, int64_t cols) {
    for (int64_t b = 0; b < cols / QK_K; b++, x += QK_K) {
        blk_q8_K *o = &y[b];
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; j++) {
            const float ax = x[j] < 0 ? -x[j] : x[j];
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (amax == 0) {
            o->d = 0;
            memset(o->qs, 0, sizeof o->qs);
            memset(o->bsums, 0, sizeof o->bsums);
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++) {
            const int v = nearest_int(iscale * x[j]);
            o->qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < QK_K / 16; g++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += o->qs[g * 16 + l];
            o->bsums[g] = (int16_t)s;
        }
        o->d = 1 / iscale;
    }
}

/* ---- portable C kernels ---- */

/* The 6-bit scales and mins of a Q4_K / Q5_K super-block (12 bytes at q): groups 0..3
 * keep theirs in the low 6 bits of q[j] / q[j+4]; groups 4..7 in a nibble of q[j+4] and
 * the top 2 bits of q[j-4] / q[j]. */
static inline void k4_scales_mins(const uint8_t *q, uint8_t sc[8], uint8_t mn[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
        sc[j + 4] = (uint8_t)((q[j + 8] & 0xf) | ((q[j] >> 6) << 4));
        mn[j + 4] = (uint8_t)((q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4));
    }
}

/* A weight super-block unpacked for the integer products: q[256] the non-negative
 * quants, sc[16] / mn[16] the scale / min of each group of 16 values (a group of 32
 * repeats its own twice), off the constant subtracted from q (Q6_K: 32). */
typedef struct {
    uint8_t q[QK_K];
    int32_t sc[16], mn[16];
    float d, dmin;
    int off;
} kblock;

static void unpack_block(int kt, const uint8_t *s, kblock *k) {
    if (kt == KT_Q6) {
        const uint8_t *ql = s, *qh = s + 128;
        const int8_t *sc = (const int8_t *)(s + 192);
        k->d = rd_f16(s + 208);
        k->dmin = 0;
        k->off = 32;
        for (int h = 0; h < 2; h++, ql += 64, qh += 32) {
            uint8_t *q = k->q + 128 * h;
            for (int l = 0; l < 32; l++) {
                q[l] = (uint8_t)((ql[l] & 0xf) | ((qh[l] & 3) << 4));
                q[l + 32] = (uint8_t)((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4));
                q[l + 64] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
                q[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
            }
        }
        for (int g = 0; g < 16; g++) k->sc[g] = sc[g], k->mn[g] = 0;
        return;
    }
    uint8_t sc[8], mn[8];
    k->d = rd_f16(s);
    k->dmin = rd_f16(s + 2);
    k->off = 0;
    k4_scales_mins(s + 4, sc, mn);
    for (int g = 0; g < 16; g++) k->sc[g] = sc[g / 2], k->mn[g] = mn[g / 2];
    const uint8_t *qs = s + (kt == KT_Q5 ? 48 : 16), *qh = s + 16;
    for (int j = 0; j < 4; j++, qs += 32) {
        uint8_t *q = k->q + 64 * j;
        for (int l = 0; l < 32; l++) {
            q[l] = qs[l] & 0xf;
            q[l + 32] = qs[l] >> 4;
        }
        if (kt == KT_Q5)
            for (int l = 0; l < 32; l++) {
                q[l] = (uint8_t)(q[l] + (((qh[l] >> (2 * j)) & 1) << 4));
                q[l + 32] = (uint8_t)(q[l + 32] + (((qh[l] >> (2 * j + 1)) & 1) << 4));
            }
    }
}

/* One super-block's contribution to one output, in the portable order. */
static inline float block_dot(const kblock *k, const blk_q8_K *x) {
    int32_t S = 0, M = 0;
    for (int g = 0; g < 16; g++) {
        int32_t s = 0;
        for (int l = 0; l < 16; l++) s += (int32_t)k->q[16 * g + l] * x->qs[16 * g + l];
        S += k->sc[g] * (s - k->off * x->bsums[g]);
        M += k->mn[g] * x->bsums[g];
    }
    const float d = k->d * x->d, dmin = k->dmin * x->d;
    return d * (float)S - dmin * (float)M;
}

static void tile_portable(int kt, float *y, int64_t ldy, const uint8_t *w, size_t wrb, int n_rows,
                          const uint8_t *xq, size_t xrb, int n_act, int64_t cols, float beta) {
    enum { TB = 8 };
    const int64_t nb = cols / QK_K;
    const size_t bb = kt == KT_Q4 ? Q4K_BYTES : kt == KT_Q5 ? Q5K_BYTES : Q6K_BYTES;
    kblock k;
    for (int r = 0; r < n_rows; r++)
        for (int t0 = 0; t0 < n_act; t0 += TB) {
            const int nt = n_act - t0 < TB ? n_act - t0 : TB;
            float acc[TB] = {0};
            for (int64_t b = 0; b < nb; b++) {
                unpack_block(kt, w + (size_t)r * wrb + (size_t)b * bb, &k);
                for (int t = 0; t < nt; t++)
                    acc[t] += block_dot(&k, (const blk_q8_K *)(xq + (size_t)(t0 + t) * xrb) + b);
            }
            for (int t = 0; t < nt; t++) {
                float *o = &y[(int64_t)(t0 + t) * ldy + r];
                *o = beta == 0 ? acc[t] : acc[t] + beta * *o;
            }
        }
}

void qdot_tile_q4_K_portable(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows,
                             const uint8_t *xq, size_t xq_row_bytes, int n_act, int64_t cols, float beta) {
    tile_portable(KT_Q4, y, ldy, w, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);
}
void qdot_tile_q5_K_portable(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows,
                             const uint8_t *xq, size_t xq_row_bytes, int n_act, int64_t cols, float beta) {
    tile_portable(KT_Q5, y, ldy, w, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);
}
void qdot_tile_q6_K_portable(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows,
                             const uint8_t *xq, size_t xq_row_bytes, int n_act, int64_t cols, float beta) {
    tile_portable(KT_Q6, y, ldy, w, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);
}

/* ---- AVX2 kernels ---- */
#if QDOT_K_SIMD

/* Micro-tile bounds: prefill runs KT_RW x KT_TA; one activation row runs up to KT_RW1 x 1. */
#define KT_RW 2
#define KT_TA 4
#define KT_RW1 4
#define KT_MAXRW 4

/* What a micro-tile keeps of one weight row's super-block. */
typedef struct {
    float d, dmin;
    __m256i sc_a; /* i16 scales, the same 8 in both 128-bit lanes (Q6_K: groups 0..7) */
    __m256i sc_b; /* Q6_K: groups 8..15 */
    __m256i mn;   /* Q4_K/Q5_K: i16 min m_j at positions 2j and 2j+1; Q6_K: the 16 scales */
} khead;

static inline __attribute__((always_inline)) void khead_load(int kt, const uint8_t *s, khead *h) {
    if (kt == KT_Q6) {
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)(s + 192));
        h->d = rd_f16(s + 208);
        h->dmin = 0;
        h->sc_a = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(sc8));
        h->sc_b = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_srli_si128(sc8, 8)));
        h->mn = _mm256_cvtepi8_epi16(sc8);
        return;
    }
    /* The 12 scale bytes as three words: groups 0..3 in a0 (scales) and a1 (mins),
     * groups 4..7 in the nibbles of a2 and the top 2 bits of a0 / a1. */
    uint32_t a[3];
    memcpy(a, s + 4, 12);
    const uint32_t sc_lo = a[0] & 0x3f3f3f3f, mn_lo = a[1] & 0x3f3f3f3f;
    const uint32_t sc_hi = (a[2] & 0x0f0f0f0f) | (((a[0] >> 6) & 0x03030303) << 4);
    const uint32_t mn_hi = ((a[2] >> 4) & 0x0f0f0f0f) | (((a[1] >> 6) & 0x03030303) << 4);
    h->d = rd_f16(s);
    h->dmin = rd_f16(s + 2);
    h->sc_a = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)sc_hi, (int)sc_lo)));
    const __m128i m8 = _mm_set_epi32(0, 0, (int)mn_hi, (int)mn_lo);
    h->mn = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
    h->sc_b = h->sc_a;
}

/* The i16 scales that multiply group c (32 values) of a super-block: Q4_K/Q5_K s_c in
 * every position; Q6_K s_{2c} in the low 128-bit lane, s_{2c+1} in the high one. */
static inline __attribute__((always_inline)) __m256i kscale(int kt, const khead *h, int c) {
    if (kt == KT_Q6) {
        const int i = (2 * c) & 7; /* position of s_{2c} among the 8 in sc_a / sc_b */
        const __m256i pat = _mm256_setr_epi8(
            2 * i, 2 * i + 1, 2 * i, 2 * i + 1, 2 * i, 2 * i + 1, 2 * i, 2 * i + 1, 2 * i, 2 * i + 1, 2 * i, 2 * i + 1,
            2 * i, 2 * i + 1, 2 * i, 2 * i + 1, 2 * i + 2, 2 * i + 3, 2 * i + 2, 2 * i + 3, 2 * i + 2, 2 * i + 3,
            2 * i + 2, 2 * i + 3, 2 * i + 2, 2 * i + 3, 2 * i + 2, 2 * i + 3, 2 * i + 2, 2 * i + 3, 2 * i + 2, 2 * i + 3);
        return _mm256_shuffle_epi8(c < 4 ? h->sc_a : h->sc_b, pat);
    }
    return _mm256_shuffle_epi8(h->sc_a, _mm256_set1_epi16((short)(((2 * c + 1) << 8) | (2 * c))));
}

/* Group c (values 32c .. 32c+31) of a weight super-block as 32 unsigned bytes. */
static inline __attribute__((always_inline)) __m256i kquants(int kt, const uint8_t *s, int c) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    if (kt == KT_Q6) {
        const int half = c / 4, q = c % 4;
        const __m256i l = _mm256_loadu_si256((const __m256i *)(s + 64 * half + 32 * (q & 1)));
        const __m256i hb = _mm256_loadu_si256((const __m256i *)(s + 128 + 32 * half));
        const __m256i lo = q < 2 ? _mm256_and_si256(l, m4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), m4);
        __m256i hi;
        switch (q) {
        case 0: hi = _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(0x03)), 4); break;
        case 1: hi = _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(0x0c)), 2); break;
        case 2: hi = _mm256_and_si256(hb, _mm256_set1_epi8(0x30)); break;
        default: hi = _mm256_srli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8((char)0xc0)), 2); break;
        }
        return _mm256_or_si256(lo, hi);
    }
    const __m256i l = _mm256_loadu_si256((const __m256i *)(s + (kt == KT_Q5 ? 48 : 16) + 32 * (c / 2)));
    const __m256i nib = (c & 1) ? _mm256_and_si256(_mm256_srli_epi16(l, 4), m4) : _mm256_and_si256(l, m4);
    if (kt == KT_Q4) return nib;
    /* Q5_K: bit c of each qh byte is the fifth bit (16) of value l of group c. */
    const __m256i hb = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(s + 16)), _mm256_set1_epi8((char)(1 << c)));
    const __m256i h16 = c <= 4 ? _mm256_slli_epi16(hb, 4 - c) : _mm256_srli_epi16(hb, c - 4);
    return _mm256_or_si256(nib, h16);
}

/* acc + sum of pairs of (w_u8 * x_i8), times the i16 scales, as 8 i32 lanes. */
static inline __attribute__((always_inline)) __m256i kmadd(__m256i acc, __m256i wq, __m256i xq, __m256i sc) {
    const __m256i p16 = _mm256_maddubs_epi16(wq, xq); /* |pair| <= 2*63*127: no saturation */
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpwssd_epi32(acc, p16, sc);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, sc));
#endif
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One micro-tile: RW weight rows (w, wrb apart) x TA activation rows (xq, xrb apart),
 * all nb super-blocks. RW and TA are constants at every call site, so the loops unroll
 * and the arrays live in registers. */
static inline __attribute__((always_inline)) void kmicro(const int kt, const int RW, const int TA, float *y,
                                                         int64_t ldy, const uint8_t *w, size_t wrb,
                                                         const uint8_t *xq, size_t xrb, int64_t nb, float beta) {
    const size_t bb = kt == KT_Q4 ? Q4K_BYTES : kt == KT_Q5 ? Q5K_BYTES : Q6K_BYTES;
    __m256 acc[KT_MAXRW][KT_TA];
#pragma GCC unroll 4
    for (int r = 0; r < RW; r++)
#pragma GCC unroll 4
        for (int t = 0; t < TA; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        khead h[KT_MAXRW];
        const uint8_t *wb[KT_MAXRW];
        const blk_q8_K *xb[KT_TA];
        __m256i sumi[KT_MAXRW][KT_TA];
#pragma GCC unroll 4
        for (int r = 0; r < RW; r++) {
            wb[r] = w + (size_t)r * wrb + (size_t)b * bb;
            khead_load(kt, wb[r], &h[r]);
        }
#pragma GCC unroll 4
        for (int t = 0; t < TA; t++) xb[t] = (const blk_q8_K *)(xq + (size_t)t * xrb) + b;
#pragma GCC unroll 4
        for (int r = 0; r < RW; r++)
#pragma GCC unroll 4
            for (int t = 0; t < TA; t++) sumi[r][t] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++) {
            __m256i wq[KT_MAXRW], sc[KT_MAXRW];
#pragma GCC unroll 4
            for (int r = 0; r < RW; r++) {
                wq[r] = kquants(kt, wb[r], c);
                sc[r] = kscale(kt, &h[r], c);
            }
#pragma GCC unroll 4
            for (int t = 0; t < TA; t++) {
                const __m256i x = _mm256_loadu_si256((const __m256i *)(xb[t]->qs + 32 * c));
#pragma GCC unroll 4
                for (int r = 0; r < RW; r++) sumi[r][t] = kmadd(sumi[r][t], wq[r], x, sc[r]);
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < TA; t++) {
            const __m256i bs = _mm256_loadu_si256((const __m256i *)xb[t]->bsums);
            const float dx = xb[t]->d;
#pragma GCC unroll 4
            for (int r = 0; r < RW; r++) {
                __m256i s = sumi[r][t];
                if (kt == KT_Q6) /* the -32 offset of the quants, through the activation sums */
                    s = _mm256_sub_epi32(s, _mm256_slli_epi32(_mm256_madd_epi16(bs, h[r].mn), 5));
                acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(h[r].d * dx), _mm256_cvtepi32_ps(s), acc[r][t]);
                if (kt != KT_Q6)
                    acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(-(h[r].dmin * dx)),
                                                _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, h[r].mn)), acc[r][t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < TA; t++)
#pragma GCC unroll 4
        for (int r = 0; r < RW; r++) {
            const float s = hsum8(acc[r][t]);
            float *o = &y[(int64_t)t * ldy + r];
            *o = beta == 0 ? s : s + beta * *o;
        }
}

#define KMICRO_ARGS float *y, int64_t ldy, const uint8_t *w, size_t wrb, const uint8_t *xq, size_t xrb, int64_t nb, float beta
#define KMICRO_DEF(kt, RW, TA) \
    static void kmicro_##kt##_##RW##_##TA(KMICRO_ARGS) { kmicro(kt, RW, TA, y, ldy, w, wrb, xq, xrb, nb, beta); }
#define KMICRO_TYPE(kt)                                                                                        \
    KMICRO_DEF(kt, 1, 1) KMICRO_DEF(kt, 2, 1) KMICRO_DEF(kt, 3, 1) KMICRO_DEF(kt, 4, 1) KMICRO_DEF(kt, 1, 2)   \
        KMICRO_DEF(kt, 1, 3) KMICRO_DEF(kt, 1, 4) KMICRO_DEF(kt, 2, 2) KMICRO_DEF(kt, 2, 3) KMICRO_DEF(kt, 2, 4) \
    static void (*const kmicro_##kt[KT_MAXRW][KT_TA])(KMICRO_ARGS) = {                                        \
        {kmicro_##kt##_1_1, kmicro_##kt##_1_2, kmicro_##kt##_1_3, kmicro_##kt##_1_4},                       \
        {kmicro_##kt##_2_1, kmicro_##kt##_2_2, kmicro_##kt##_2_3, kmicro_##kt##_2_4},                       \
        {kmicro_##kt##_3_1, NULL, NULL, NULL},                                                             \
        {kmicro_##kt##_4_1, NULL, NULL, NULL},                                                             \
    };
KMICRO_TYPE(KT_Q4)
KMICRO_TYPE(KT_Q5)
KMICRO_TYPE(KT_Q6)

static void tile_simd(void (*const k[KT_MAXRW][KT_TA])(KMICRO_ARGS), float *y, int64_t ldy, const uint8_t *w,
                      size_t wrb, int n_rows, const uint8_t *xq, size_t xrb, int n_act, int64_t cols, float beta) {
    const int64_t nb = cols / QK_K;
    if (n_act == 1) { /* generation: more weight rows at a time for independent chains */
        for (int r0 = 0; r0 < n_rows; r0 += KT_RW1) {
            const int rw = n_rows - r0 < KT_RW1 ? n_rows - r0 : KT_RW1;
            k[rw - 1][0](y + r0, ldy, w + (size_t)r0 * wrb, wrb, xq, xrb, nb, beta);
        }
        return;
    }
    for (int t0 = 0; t0 < n_act; t0 += KT_TA) {
        const int ta = n_act - t0 < KT_TA ? n_act - t0 : KT_TA;
        for (int r0 = 0; r0 < n_rows; r0 += KT_RW) {
            const int rw = n_rows - r0 < KT_RW ? n_rows - r0 : KT_RW;
            k[rw - 1][ta - 1](y + (int64_t)t0 * ldy + r0, ldy, w + (size_t)r0 * wrb, wrb, xq + (size_t)t0 * xrb, xrb,
                              nb, beta);
        }
    }
}
#endif /* QDOT_K_SIMD */

void qdot_tile_q4_K(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows, const uint8_t *xq,
                    size_t xq_row_bytes, int n_act, int64_t cols, float beta) {
#if QDOT_K_SIMD
    tile_simd(kmicro_KT_Q4, y, ldy, w, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);
#else
    tile_portable(KT_Q4, y, ldy, w, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);
#endif
}
void qdot_tile_q5_K(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows, const uint8_t *xq,
                    size_t xq_row_bytes, int n_act, int64_t cols, float beta) {
#if QDOT_K_SIMD
    tile_simd(kmicro_KT_Q5, y, ldy, w, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);
#else
    tile_portable(KT_Q5, y, ldy, w, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);
#endif
}
void qdot_tile_q6_K(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows, const uint8_t *xq,
                    size_t xq_row_bytes, int n_act, int64_t cols, float beta) {
#if QDOT_K_SIMD
    tile_simd(kmicro_KT_Q6, y, ldy, w, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);
#else
    tile_portable(KT_Q6, y, ldy, w, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);
#endif
}
