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
 * S and M are exact integers, converted to fp32 once per super-block and scaled by the
 * two f32 products, as llama.cpp does. No integer step can overflow for any input bytes
 * (activations in -128..127): the widest sum is Q6_K's over unsigned quants before the
 * -32 offset, at most 63*128*128*256 < 2^28; maddubs pairs stay below 2*63*128 < 2^15.
 *
 * Two implementations, the same arithmetic and the same bits:
 *   - portable C: one fp32 accumulator per output, in super-block order,
 *       acc += (d*dx)*(float)S - (dmin*dx)*(float)M   (each product rounded, no FMA);
 *   - AVX2 (+FMA, F16C; the build has them under -march=native): the integer sums run
 *     in 8 int32 lanes per output, which are added up exactly per super-block; the fp32
 *     step above then runs for 8 outputs at once with the same operations in the same
 *     order (mul, mul, sub, add: no FMA), so both kernels return identical floats.
 * llama.cpp's kernels convert 8 partial sums of S per block to fp32 and add them into 8
 * fp32 lanes (with FMA), summed at the end: the same integers, a different fp32 order,
 * a few roundings apart (tests/test_qdot_k.c bounds it).
 *
 * Tiling: the AVX2 kernel works on micro-tiles of KT_RW x KT_TA = 2 weight rows x 8
 * activation rows (prefill) or KT_RW1 = 8 weight rows x 1 (generation). Each 32-value
 * group of a weight row is unpacked to bytes once per micro-tile and multiplied with 8
 * activation rows (maddubs, then the group scale through madd / vpdpwssd); each
 * activation group is loaded once for 2 weight rows; the 16 integer sums stay in
 * registers (32 ymm registers with AVX-512VL here, which -march=native enables). The
 * activation micro-panels are the outer loop and the tile's weight rows the inner one,
 * so the caller should keep a tile's weight rows within L2 (64 rows of 4096 Q4_K
 * values are 147 KB). On this CPU the kernel is bound by the multiply units (two
 * multiply instructions per 32 values per pair), not by memory. Where the build has
 * AVX-512 BW and VNNI, Q4_K's groups go two at a time through 512-bit registers
 * (kgroups_q4_zmm): the same two instructions then cover 64 values (bench_qdot_k, one
 * thread, 4096 x 4096 at T 512 on a Zen 5: 151-158 -> 201-202 GOP/s). There Q4_K's
 * prefill takes whole blocks of 16 weight rows x 8 activation rows in another layout,
 * a weight row per 32-bit lane (q4k_rows_in_lanes, as qdot.c's legacy kernels): one
 * vpdpbusd per 4 values of 16 rows, no horizontal sums (the same bench: 204-211 ->
 * 324-348 GOP/s); the micro-tiles take the edges and generation. */
#include "nn/qdot_k.h"

#include <string.h>

#include "mllm4rec/base.h"
#include "nn/qdot_words.h"

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
    /* separate statements: no compiler may fuse these into an FMA (clang's default
     * -ffp-contract=on fuses within one expression; GCC under -std=c11 fuses nothing),
     * which would change the bits */
    const float d = k->d * x->d, dmin = k->dmin * x->d;
    const float ds = d * (float)S;
    const float dm = dmin * (float)M;
    return ds - dm;
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

/* ---- AVX2 kernels ---- */
#if QDOT_K_SIMD

/* Micro-tiles: prefill KT_RW weight rows x KT_TA activation rows; one activation row
 * (generation) KT_RW1 weight rows. Remainders run the power-of-two tiles below them. */
#define KT_RW 2
#define KT_TA 8
#define KT_RW1 8
#define KT_MAXP 16 /* most (row, activation) pairs in a micro-tile */

/* f16 -> f32 without a call: a call in the block loop would spill every register. */
static inline float kf16(const uint8_t *p) {
#if defined(__F16C__)
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
#else
    return rd_f16(p);
#endif
}

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
        h->d = kf16(s + 208);
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
    h->d = kf16(s);
    h->dmin = kf16(s + 2);
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

/* The eight 32-value groups of one super-block, one 256-bit multiply pair each:
 * sumi[r*TA + t] = the 8 lanes of weight row r's scaled integer products with
 * activation row t (every K type). */
static inline __attribute__((always_inline)) void kgroups_ymm(const int kt, const int RW, const int TA, __m256i *sumi,
                                                              const uint8_t *const *wb, const khead *h,
                                                              const blk_q8_K *const *xb) {
#pragma GCC unroll 16
    for (int p = 0; p < RW * TA; p++) sumi[p] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int c = 0; c < 8; c++) {
        __m256i wq[KT_RW1], sc[KT_RW1];
#pragma GCC unroll 8
        for (int r = 0; r < RW; r++) {
            wq[r] = kquants(kt, wb[r], c);
            sc[r] = kscale(kt, &h[r], c);
        }
#pragma GCC unroll 8
        for (int t = 0; t < TA; t++) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(xb[t]->qs + 32 * c));
#pragma GCC unroll 8
            for (int r = 0; r < RW; r++) sumi[r * TA + t] = kmadd(sumi[r * TA + t], wq[r], x, sc[r]);
        }
    }
}

#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define KQ_ZMM 1
/* Q4_K's eight groups two at a time in 512-bit registers, where the machine has them:
 * groups 2j and 2j+1 are the low and high nibbles of the same 32 bytes, so one load
 * fills both halves, each half takes its own group's scale, and one multiply pair
 * covers 64 values. sumi[p] gets the same exact integer sums as kgroups_ymm
 * (the two halves added, lane by lane): the results are the same bits. */
static inline __attribute__((always_inline)) void kgroups_q4_zmm(const int RW, const int TA, __m256i *sumi,
                                                                 const uint8_t *const *wb, const khead *h,
                                                                 const blk_q8_K *const *xb) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i nibble_shift = _mm512_mask_blend_epi16(0xffff0000u, _mm512_setzero_si512(), _mm512_set1_epi16(4));
    __m512i zs[KT_MAXP];
#pragma GCC unroll 16
    for (int p = 0; p < RW * TA; p++) zs[p] = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        const __m512i pick = _mm512_mask_blend_epi16(0xffff0000u, _mm512_set1_epi16((short)(2 * j)),
                                                     _mm512_set1_epi16((short)(2 * j + 1)));
        __m512i wq[KT_RW1], sc[KT_RW1];
#pragma GCC unroll 8
        for (int r = 0; r < RW; r++) {
            const __m256i l = _mm256_loadu_si256((const __m256i *)(wb[r] + 16 + 32 * j));
            const __m512i l2 = _mm512_inserti64x4(_mm512_castsi256_si512(l), l, 1);
            wq[r] = _mm512_and_si512(_mm512_srlv_epi16(l2, nibble_shift), m4);
            sc[r] = _mm512_permutexvar_epi16(pick, _mm512_zextsi256_si512(h[r].sc_a));
        }
#pragma GCC unroll 8
        for (int t = 0; t < TA; t++) {
            const __m512i x = _mm512_loadu_si512((const void *)(xb[t]->qs + 64 * j));
#pragma GCC unroll 8
            for (int r = 0; r < RW; r++)
                zs[r * TA + t] = _mm512_dpwssd_epi32(zs[r * TA + t], _mm512_maddubs_epi16(wq[r], x), sc[r]);
        }
    }
#pragma GCC unroll 16
    for (int p = 0; p < RW * TA; p++)
        sumi[p] = _mm256_add_epi32(_mm512_castsi512_si256(zs[p]), _mm512_extracti64x4_epi64(zs[p], 1));
}

/* Q4_K prefill with a weight row in each 32-bit lane: 16 weight rows x 8 activation
 * rows per call, all nb super-blocks (the layout of qdot.c's legacy kernels). Per
 * super-block, each row's 4-byte word w of group pair p (bytes 16 + 32p + 4w) is
 * moved into lane r (4x4 word transposes, as qdot.c's unpack8), so one broadcast
 * activation word meets 16 rows in one vpdpbusd: the group sums come out per lane and
 * are scaled by the lane's 6-bit group scale (exact int32 products), and
 * M = sum_j m_j * (bsums[2j] + bsums[2j+1]) is one vpdpwssd per group, m_j in both
 * 16-bit halves against bsums word j. S and M are the portable kernel's exact
 * integers and the fp32 step is its own, so the results are the same bits. */
/* W[j] lane k = the 4-byte word at offset off + 4j of row b[k] (k < 8), j < 4 */
static inline __attribute__((always_inline)) void kwords8(const uint8_t *const *b, size_t off, __m256i W[4]) {
    __m256i R[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) R[i] = load_pair(b[i] + off, b[i + 4] + off);
    transpose_4x(R, W);
}

#define KQ_LANE_ROWS 16
#define KQ_LANE_ACTS 8
static void q4k_rows_in_lanes(float *y, int64_t ldy, const uint8_t *w, size_t wrb, const uint8_t *xq, size_t xrb,
                              int64_t nb, float beta) {
    const __m512i row_off = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               _mm512_set1_epi32((int)wrb));
    const __m512i m4 = _mm512_set1_epi8(0x0f), m6 = _mm512_set1_epi32(0x3f);
    const __m512i three = _mm512_set1_epi32(3), fifteen = _mm512_set1_epi32(15);
    __m512 acc[KQ_LANE_ACTS];
#pragma GCC unroll 8
    for (int k = 0; k < KQ_LANE_ACTS; k++) acc[k] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk[KQ_LANE_ROWS];
#pragma GCC unroll 16
        for (int r = 0; r < KQ_LANE_ROWS; r++) blk[r] = w + (size_t)r * wrb + (size_t)b * Q4K_BYTES;
        const blk_q8_K *xb[KQ_LANE_ACTS];
#pragma GCC unroll 8
        for (int k = 0; k < KQ_LANE_ACTS; k++) xb[k] = (const blk_q8_K *)(xq + (size_t)k * xrb) + b;
        /* d, dmin and the 12 scale bytes of every row, a row per lane */
        const uint8_t *base = blk[0];
        const __m512i g0 = _mm512_i32gather_epi32(row_off, (const void *)base, 1);
        const __m512i a0 = _mm512_i32gather_epi32(row_off, (const void *)(base + 4), 1);
        const __m512i a1 = _mm512_i32gather_epi32(row_off, (const void *)(base + 8), 1);
        const __m512i a2 = _mm512_i32gather_epi32(row_off, (const void *)(base + 12), 1);
        const __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g0));
        const __m512 dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(g0, 16)));
        __m512i sc[8];
        int32_t mv[KQ_LANE_ACTS][16] __attribute__((aligned(64)));
        {
            __m512i M[KQ_LANE_ACTS];
#pragma GCC unroll 8
            for (int k = 0; k < KQ_LANE_ACTS; k++) M[k] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                const int sh = 8 * (j & 3);
                __m512i mn;
                if (j < 4) {
                    sc[j] = _mm512_and_si512(_mm512_srli_epi32(a0, sh), m6);
                    mn = _mm512_and_si512(_mm512_srli_epi32(a1, sh), m6);
                } else {
                    sc[j] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(a2, sh), fifteen),
                                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(a0, sh + 6), three), 4));
                    mn = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(a2, sh + 4), fifteen),
                                         _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(a1, sh + 6), three), 4));
                }
                const __m512i mn2 = _mm512_or_si512(mn, _mm512_slli_epi32(mn, 16)); /* m_j in both halves */
#pragma GCC unroll 8
                for (int k = 0; k < KQ_LANE_ACTS; k++) {
                    int32_t bs2;
                    memcpy(&bs2, xb[k]->bsums + 2 * j, 4);
                    M[k] = _mm512_dpwssd_epi32(M[k], mn2, _mm512_set1_epi32(bs2));
                }
            }
#pragma GCC unroll 8
            for (int k = 0; k < KQ_LANE_ACTS; k++) _mm512_store_si512((void *)mv[k], M[k]);
        }
        __m512i S[KQ_LANE_ACTS];
#pragma GCC unroll 8
        for (int k = 0; k < KQ_LANE_ACTS; k++) S[k] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            __m512i W[8];
            {
                __m256i lo[8], hi[8];
                kwords8(blk, 16 + 32 * (size_t)p, lo);
                kwords8(blk, 16 + 32 * (size_t)p + 16, lo + 4);
                kwords8(blk + 8, 16 + 32 * (size_t)p, hi);
                kwords8(blk + 8, 16 + 32 * (size_t)p + 16, hi + 4);
#pragma GCC unroll 8
                for (int v = 0; v < 8; v++) W[v] = _mm512_inserti64x4(_mm512_castsi256_si512(lo[v]), hi[v], 1);
            }
#pragma GCC unroll 2
            for (int half = 0; half < 2; half++) { /* group 2p: the low nibbles; 2p + 1: the high ones */
                __m512i q[8];
#pragma GCC unroll 8
                for (int v = 0; v < 8; v++) q[v] = _mm512_and_si512(half ? _mm512_srli_epi16(W[v], 4) : W[v], m4);
                const int g = 2 * p + half;
#pragma GCC unroll 8
                for (int k = 0; k < KQ_LANE_ACTS; k++) {
                    const uint8_t *xs = (const uint8_t *)xb[k]->qs + 32 * g;
                    __m512i isum = _mm512_setzero_si512();
#pragma GCC unroll 8
                    for (int v = 0; v < 8; v++) {
                        int32_t x4;
                        memcpy(&x4, xs + 4 * v, 4);
                        isum = _mm512_dpbusd_epi32(isum, q[v], _mm512_set1_epi32(x4));
                    }
                    S[k] = _mm512_add_epi32(S[k], _mm512_mullo_epi32(isum, sc[g]));
                }
            }
        }
        /* the portable kernel's fp32 step: acc += (d*dx)*(float)S - (dmin*dx)*(float)M */
#pragma GCC unroll 8
        for (int k = 0; k < KQ_LANE_ACTS; k++) {
            const __m512 dx = _mm512_set1_ps(xb[k]->d);
            const __m512 ds = _mm512_mul_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(S[k]));
            const __m512 dm = _mm512_mul_ps(_mm512_mul_ps(dmin, dx), _mm512_cvtepi32_ps(_mm512_load_si512(mv[k])));
            acc[k] = _mm512_add_ps(acc[k], _mm512_sub_ps(ds, dm));
        }
    }
#pragma GCC unroll 8
    for (int k = 0; k < KQ_LANE_ACTS; k++) {
        float *o = y + (int64_t)k * ldy;
        __m512 v = acc[k];
        if (beta != 0.0f) v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_loadu_ps(o)));
        _mm512_storeu_ps(o, v);
    }
}
#else
#define KQ_ZMM 0
#endif

/* Lane k of the result = the sum of the 8 lanes of v[k] (exact: every sum < 2^28). */
static inline __attribute__((always_inline)) __m256i hsum8x8(const __m256i v[8]) {
    const __m256i a0 = _mm256_hadd_epi32(v[0], v[1]), a1 = _mm256_hadd_epi32(v[2], v[3]);
    const __m256i a2 = _mm256_hadd_epi32(v[4], v[5]), a3 = _mm256_hadd_epi32(v[6], v[7]);
    const __m256i b0 = _mm256_hadd_epi32(a0, a1), b1 = _mm256_hadd_epi32(a2, a3);
    return _mm256_add_epi32(_mm256_permute2x128_si256(b0, b1, 0x20), _mm256_permute2x128_si256(b0, b1, 0x31));
}

/* One micro-tile: RW weight rows (w, wrb apart) x TA activation rows (xq, xrb apart),
 * all nb super-blocks. RW and TA are constants at every call site, so the loops unroll
 * and the arrays live in registers. Pair p = r*TA + t owns lane p%8 of acc[p/8]: per
 * super-block the 8 int32 lanes of each pair's S (and M) are added up exactly, and the
 * fp32 step, acc += (d*dx)*(float)S - (dmin*dx)*(float)M, runs on 8 pairs at once in the
 * order of the portable kernel, so both give the same bits. */
static inline __attribute__((always_inline)) void kmicro(const int kt, const int RW, const int TA, float *y,
                                                         int64_t ldy, const uint8_t *w, size_t wrb,
                                                         const uint8_t *xq, size_t xrb, int64_t nb, float beta) {
    const size_t bb = kt == KT_Q4 ? Q4K_BYTES : kt == KT_Q5 ? Q5K_BYTES : Q6K_BYTES;
    const int NP = RW * TA, NG = (NP + 7) / 8;
    __m256 acc[KT_MAXP / 8];
#pragma GCC unroll 2
    for (int g = 0; g < NG; g++) acc[g] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        khead h[KT_RW1];
        const uint8_t *wb[KT_RW1];
        const blk_q8_K *xb[KT_TA];
        __m256i sumi[KT_MAXP];
        if (RW >= 4 && TA == 1) { /* generation: the RW rows as one linear stream (qdot.h) */
            const char *pf = (const char *)w + QDOT_PREFETCH_BYTES + (size_t)b * RW * bb;
#pragma GCC unroll 32
            for (size_t o = 0; o < (size_t)RW * bb; o += 64) _mm_prefetch(pf + o, _MM_HINT_T0);
        }
#pragma GCC unroll 8
        for (int r = 0; r < RW; r++) {
            wb[r] = w + (size_t)r * wrb + (size_t)b * bb;
            khead_load(kt, wb[r], &h[r]);
        }
#pragma GCC unroll 8
        for (int t = 0; t < TA; t++) xb[t] = (const blk_q8_K *)(xq + (size_t)t * xrb) + b;
#if KQ_ZMM
        if (kt == KT_Q4)
            kgroups_q4_zmm(RW, TA, sumi, wb, h, xb);
        else
            kgroups_ymm(kt, RW, TA, sumi, wb, h, xb);
#else
        kgroups_ymm(kt, RW, TA, sumi, wb, h, xb);
#endif
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++) {
            __m256i sv[8], mv[8];
            float lw[8], lm[8], lx[8];
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                const int p = 8 * g + k, r = p / TA, t = p % TA;
                if (p >= NP) {
                    sv[k] = mv[k] = _mm256_setzero_si256();
                    lw[k] = lm[k] = lx[k] = 0;
                    continue;
                }
                const __m256i bs = _mm256_loadu_si256((const __m256i *)xb[t]->bsums);
                sv[k] = sumi[p];
                if (kt == KT_Q6) /* the -32 offset of the quants, through the activation sums */
                    sv[k] = _mm256_sub_epi32(sv[k], _mm256_slli_epi32(_mm256_madd_epi16(bs, h[r].mn), 5));
                else
                    mv[k] = _mm256_madd_epi16(bs, h[r].mn);
                lw[k] = h[r].d, lm[k] = h[r].dmin, lx[k] = xb[t]->d;
            }
            const __m256 dx = _mm256_setr_ps(lx[0], lx[1], lx[2], lx[3], lx[4], lx[5], lx[6], lx[7]);
            const __m256 d = _mm256_mul_ps(_mm256_setr_ps(lw[0], lw[1], lw[2], lw[3], lw[4], lw[5], lw[6], lw[7]), dx);
            __m256 v = _mm256_mul_ps(d, _mm256_cvtepi32_ps(hsum8x8(sv)));
            if (kt != KT_Q6) {
                const __m256 dm =
                    _mm256_mul_ps(_mm256_setr_ps(lm[0], lm[1], lm[2], lm[3], lm[4], lm[5], lm[6], lm[7]), dx);
                v = _mm256_sub_ps(v, _mm256_mul_ps(dm, _mm256_cvtepi32_ps(hsum8x8(mv))));
            }
            acc[g] = _mm256_add_ps(acc[g], v);
        }
    }
    float out[KT_MAXP];
#pragma GCC unroll 2
    for (int g = 0; g < NG; g++) _mm256_storeu_ps(out + 8 * g, acc[g]);
    for (int p = 0; p < NP; p++) {
        float *o = &y[(int64_t)(p % TA) * ldy + p / TA];
        *o = beta == 0 ? out[p] : out[p] + beta * *o;
    }
}

#define KMICRO_ARGS float *y, int64_t ldy, const uint8_t *w, size_t wrb, const uint8_t *xq, size_t xrb, int64_t nb, float beta
#define KMICRO_DEF(kt, RW, TA) \
    static void kmicro_##kt##_##RW##_##TA(KMICRO_ARGS) { kmicro(kt, RW, TA, y, ldy, w, wrb, xq, xrb, nb, beta); }
/* [log2 rows][log2 activations]: prefill 1..2 x 1..8, generation 4 and 8 x 1 */
#define KMICRO_TYPE(kt)                                                                                       \
    KMICRO_DEF(kt, 1, 1) KMICRO_DEF(kt, 1, 2) KMICRO_DEF(kt, 1, 4) KMICRO_DEF(kt, 1, 8) KMICRO_DEF(kt, 2, 1) \
        KMICRO_DEF(kt, 2, 2) KMICRO_DEF(kt, 2, 4) KMICRO_DEF(kt, 2, 8) KMICRO_DEF(kt, 4, 1)                  \
            KMICRO_DEF(kt, 8, 1) static void (*const kmicro_##kt[4][4])(KMICRO_ARGS) = {                     \
                {kmicro_##kt##_1_1, kmicro_##kt##_1_2, kmicro_##kt##_1_4, kmicro_##kt##_1_8},               \
                {kmicro_##kt##_2_1, kmicro_##kt##_2_2, kmicro_##kt##_2_4, kmicro_##kt##_2_8},               \
                {kmicro_##kt##_4_1, NULL, NULL, NULL},                                                     \
                {kmicro_##kt##_8_1, NULL, NULL, NULL},                                                     \
    };
KMICRO_TYPE(KT_Q4)
KMICRO_TYPE(KT_Q5)
KMICRO_TYPE(KT_Q6)

/* The largest power of two <= min(n, cap) (cap a power of two), and its log2. */
static inline int pow2_below(int n, int cap, int *lg) {
    int v = 1, l = 0;
    while (v * 2 <= n && v * 2 <= cap) v *= 2, l++;
    *lg = l;
    return v;
}

static void tile_simd(void (*const k[4][4])(KMICRO_ARGS), float *y, int64_t ldy, const uint8_t *w, size_t wrb,
                      int n_rows, const uint8_t *xq, size_t xrb, int n_act, int64_t cols, float beta) {
    const int64_t nb = cols / QK_K;
    int lr, lt;
    if (n_act == 1) { /* generation: more weight rows at a time, one activation row */
        for (int r0 = 0, rw; r0 < n_rows; r0 += rw) {
            rw = pow2_below(n_rows - r0, KT_RW1, &lr);
            k[lr][0](y + r0, ldy, w + (size_t)r0 * wrb, wrb, xq, xrb, nb, beta);
        }
        return;
    }
    for (int t0 = 0, ta; t0 < n_act; t0 += ta) {
        ta = pow2_below(n_act - t0, KT_TA, &lt);
        for (int r0 = 0, rw; r0 < n_rows; r0 += rw) {
            rw = pow2_below(n_rows - r0, KT_RW, &lr);
            k[lr][lt](y + (int64_t)t0 * ldy + r0, ldy, w + (size_t)r0 * wrb, wrb, xq + (size_t)t0 * xrb, xrb, nb, beta);
        }
    }
}
#endif /* QDOT_K_SIMD */

/* What qdot_tile_q*_K run: the AVX2 micro-tiles when the build has them, else the
 * portable loop. */
static void tile_kt(int kt, float *y, int64_t ldy, const uint8_t *w, size_t wrb, int n_rows, const uint8_t *xq,
                    size_t xrb, int n_act, int64_t cols, float beta) {
#if KQ_ZMM
    /* Q4_K prefill: whole 16 x 8 blocks with a row per lane, the edges as below */
    const int r16 = n_rows / KQ_LANE_ROWS * KQ_LANE_ROWS, t8 = n_act / KQ_LANE_ACTS * KQ_LANE_ACTS;
    if (kt == KT_Q4 && r16 && t8) {
        for (int t0 = 0; t0 < t8; t0 += KQ_LANE_ACTS)
            for (int r0 = 0; r0 < r16; r0 += KQ_LANE_ROWS)
                q4k_rows_in_lanes(y + (int64_t)t0 * ldy + r0, ldy, w + (size_t)r0 * wrb, wrb, xq + (size_t)t0 * xrb,
                                  xrb, cols / QK_K, beta);
        if (r16 < n_rows)
            tile_simd(kmicro_KT_Q4, y + r16, ldy, w + (size_t)r16 * wrb, wrb, n_rows - r16, xq, xrb, t8, cols, beta);
        if (t8 < n_act)
            tile_simd(kmicro_KT_Q4, y + (int64_t)t8 * ldy, ldy, w, wrb, n_rows, xq + (size_t)t8 * xrb, xrb, n_act - t8,
                      cols, beta);
        return;
    }
#endif
#if QDOT_K_SIMD
    tile_simd(kt == KT_Q4 ? kmicro_KT_Q4 : kt == KT_Q5 ? kmicro_KT_Q5 : kmicro_KT_Q6, y, ldy, w, wrb, n_rows, xq, xrb,
              n_act, cols, beta);
#else
    tile_portable(kt, y, ldy, w, wrb, n_rows, xq, xrb, n_act, cols, beta);
#endif
}

/* The entry points of one type (qdot_tile_fn and its portable twin, nn/qdot_k.h). */
#define QDOT_K_ENTRIES(name, kt)                                                                                   \
    void qdot_tile_##name(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows, const uint8_t *xq, \
                          size_t xq_row_bytes, int n_act, int64_t cols, float beta) {                             \
        tile_kt(kt, y, ldy, w, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);                         \
    }                                                                                                             \
    void qdot_tile_##name##_portable(float *y, int64_t ldy, const uint8_t *w, size_t w_row_bytes, int n_rows,      \
                                     const uint8_t *xq, size_t xq_row_bytes, int n_act, int64_t cols, float beta) { \
        tile_portable(kt, y, ldy, w, w_row_bytes, n_rows, xq, xq_row_bytes, n_act, cols, beta);                   \
    }
QDOT_K_ENTRIES(q4_K, KT_Q4)
QDOT_K_ENTRIES(q5_K, KT_Q5)
QDOT_K_ENTRIES(q6_K, KT_Q6)
