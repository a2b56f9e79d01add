/* The AVX-512 product with stored weights; shapes and blocking in gemm_avx512.h. */
#include "nn/gemm_avx512.h"

#include <omp.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define GEMM_HAVE_AVX512 1
#include <immintrin.h>
#endif

#define GEMM_NR 48  /* weight rows per panel: 3 zmm of columns */
#define GEMM_MR 8   /* activation rows per micro-kernel call: 8 x 3 = 24 zmm sums */
/* Activation rows per output tile: all T rows when the column tiles alone give
 * every thread GEMM_TILES_PER_THREAD of them (each panel is then packed once per
 * K block; the activations stream through the cache, read in order), else T
 * split so that they do. */
#define GEMM_TILES_PER_THREAD 2
#define GEMM_KC 512 /* most k per packed panel: 48 x 512 floats = 96 KB */
/* Below this many multiply-adds the product runs on one thread (as matmul.c's
 * MATMUL_PARALLEL_MIN: waking a team costs more than it saves). */
#define GEMM_PARALLEL_MIN (1 << 18)
/* a panel plus room to align it to 64 bytes */
#define GEMM_PANEL_FLOATS ((int64_t)GEMM_NR * GEMM_KC + 16)

int gemm_avx512_available(void) {
#ifdef GEMM_HAVE_AVX512
    return 1;
#else
    return 0;
#endif
}

int64_t gemm_avx512_scratch_floats(int n_threads) {
#ifdef GEMM_HAVE_AVX512
    return (int64_t)(n_threads > 0 ? n_threads : 1) * GEMM_PANEL_FLOATS;
#else
    (void)n_threads;
    return 0;
#endif
}

#ifdef GEMM_HAVE_AVX512

/* r[i] (16 floats each) := column i of the 16 x 16 matrix whose rows were r[0..15].
 * Stage 1 interleaves 32-bit pairs of rows (2i, 2i+1) within each 128-bit lane,
 * stage 2 interleaves 64-bit pairs, so that u[4i+e] lane L holds rows 4i..4i+3
 * at column 4L+e; stages 3 and 4 gather lane L of u[e], u[4+e], u[8+e], u[12+e]
 * into column 4L+e. */
static inline __attribute__((always_inline)) void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int e = 0; e < 4; e++) {
        const __m512 v0 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x44), v1 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xEE);
        const __m512 w0 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x44);
        const __m512 w1 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xEE);
        r[e] = _mm512_shuffle_f32x4(v0, w0, 0x88);
        r[4 + e] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
        r[8 + e] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        r[12 + e] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
    }
}

/* p[k][48] = W[n][k0 + k] as floats for n < nr (0 for nr <= n < 48), k < kc, W
 * stored as N rows of K values (GEMM_W_OUT_ROWS): 16 rows x 16 k are converted and
 * transposed in registers at a time, so the packing costs a few shuffles per value
 * instead of a scalar store each. */
static void pack_out_rows(float *p, ggml_type type, const uint8_t *w, size_t rb, int64_t nr, int64_t k0, int64_t kc) {
    for (int64_t k = 0; k < kc; k += 16) {
        const int kl = kc - k < 16 ? (int)(kc - k) : 16;
        const __mmask16 km = (__mmask16)((1u << kl) - 1);
        for (int g = 0; g < GEMM_NR / 16; g++) {
            __m512 r[16];
            for (int i = 0; i < 16; i++) {
                const int64_t n = 16 * g + i;
                if (n >= nr) {
                    r[i] = _mm512_setzero_ps();
                    continue;
                }
                /* masked: the lanes past the row's end are neither read nor faulted */
                const uint8_t *row = w + (size_t)n * rb;
                if (type == GGML_TYPE_F32) {
                    r[i] = _mm512_maskz_loadu_ps(km, (const float *)row + k0 + k);
                    continue;
                }
                const __m256i h = _mm256_maskz_loadu_epi16(km, row + 2 * (size_t)(k0 + k));
                r[i] = type == GGML_TYPE_F16 ? _mm512_cvtph_ps(h)
                                             : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
            }
            transpose16(r);
            for (int c = 0; c < kl; c++) _mm512_store_ps(p + (k + c) * GEMM_NR + 16 * g, r[c]);
        }
    }
}

/* The same panel from float weights stored as K rows of N (GEMM_W_IN_ROWS): row
 * k0 + k of W already holds the panel's row k, so it is copied, masked to the
 * nr columns (m) and zero past them. */
static void pack_in_rows(float *p, const uint8_t *w, size_t rb, const __mmask16 m[3], int64_t k0, int64_t kc) {
    for (int64_t k = 0; k < kc; k++) {
        const float *row = (const float *)(w + (size_t)(k0 + k) * rb);
        for (int j = 0; j < 3; j++) _mm512_store_ps(p + k * GEMM_NR + 16 * j, _mm512_maskz_loadu_ps(m[j], row + 16 * j));
    }
}

/* How a micro-kernel's sums meet Y: the first K block overwrites (beta 0) or adds
 * beta · Y, the later ones add Y. */
enum { GEMM_SET, GEMM_BETA, GEMM_ADD };

/* Y[r][0..47] (masked by m[0..2]) for r < MR, from kc steps of the panel p and
 * activation rows x + r * ldx. MR is a constant in every caller, so the sums stay
 * in registers and the loops over rows unroll. */
static inline __attribute__((always_inline)) void micro(const int MR, int64_t kc, const float *x, int64_t ldx,
                                                        const float *p, float *y, int64_t ldy, const __mmask16 m[3],
                                                        int mode, float beta) {
    __m512 c[GEMM_MR][3];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = c[r][2] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(p + k * GEMM_NR), b1 = _mm512_load_ps(p + k * GEMM_NR + 16);
        const __m512 b2 = _mm512_load_ps(p + k * GEMM_NR + 32);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            const __m512 a = _mm512_set1_ps(x[r * ldx + k]);
            c[r][0] = _mm512_fmadd_ps(a, b0, c[r][0]);
            c[r][1] = _mm512_fmadd_ps(a, b1, c[r][1]);
            c[r][2] = _mm512_fmadd_ps(a, b2, c[r][2]);
        }
    }
    const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        for (int j = 0; j < 3; j++) {
            float *yp = y + r * ldy + 16 * j;
            __m512 v = c[r][j];
            if (mode == GEMM_ADD) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m[j], yp));
            else if (mode == GEMM_BETA) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m[j], yp), v);
            _mm512_mask_storeu_ps(yp, m[j], v);
        }
    }
}

typedef void (*micro_fn)(int64_t kc, const float *x, int64_t ldx, const float *p, float *y, int64_t ldy,
                         const __mmask16 m[3], int mode, float beta);
#define GEMM_MICRO(R)                                                                                           \
    static void micro_##R(int64_t kc, const float *x, int64_t ldx, const float *p, float *y, int64_t ldy,      \
                          const __mmask16 m[3], int mode, float beta) {                                        \
        micro(R, kc, x, ldx, p, y, ldy, m, mode, beta);                                                         \
    }
GEMM_MICRO(1)
GEMM_MICRO(2)
GEMM_MICRO(3)
GEMM_MICRO(4)
GEMM_MICRO(5)
GEMM_MICRO(6)
GEMM_MICRO(7)
GEMM_MICRO(8)
static const micro_fn micro_rows[GEMM_MR] = {micro_1, micro_2, micro_3, micro_4, micro_5, micro_6, micro_7, micro_8};

#endif

int gemm_avx512(float *y, const float *x, int64_t ldx, int64_t T, ggml_type type, const void *w, size_t row_bytes,
                int layout, int64_t N, int64_t K, float beta, float *scratch, int64_t scratch_floats) {
#ifdef GEMM_HAVE_AVX512
    const int out_rows_type = type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16;
    if (layout == GEMM_W_OUT_ROWS ? !out_rows_type : (layout != GEMM_W_IN_ROWS || type != GGML_TYPE_F32)) return 0;
    if (T <= 0 || N <= 0 || K <= 0) return 0;
    int64_t nth = omp_get_max_threads();
    if (nth > scratch_floats / GEMM_PANEL_FLOATS) nth = scratch_floats / GEMM_PANEL_FLOATS;
    if (nth < 1) return 0;
    if (T * N * K < GEMM_PARALLEL_MIN) nth = 1;
    /* equal K blocks, each a multiple of 16 (whole transposes) but the last; they
     * depend on K alone, so the numbers do not depend on scratch or threads */
    const int64_t nk = (K + GEMM_KC - 1) / GEMM_KC;
    const int64_t kc = ((K + nk - 1) / nk + 15) / 16 * 16;
    const int64_t ntn = (N + GEMM_NR - 1) / GEMM_NR;
    int64_t ntm = (GEMM_TILES_PER_THREAD * nth + ntn - 1) / ntn;
    if (ntm > (T + GEMM_MR - 1) / GEMM_MR) ntm = (T + GEMM_MR - 1) / GEMM_MR;
    const int64_t mc = ((T + ntm - 1) / ntm + GEMM_MR - 1) / GEMM_MR * GEMM_MR, ntiles = ntn * ntm;
    if (nth > ntiles) nth = ntiles;
    const uint8_t *wb = w;
    const int mode0 = beta != 0.0f ? GEMM_BETA : GEMM_SET;
#pragma omp parallel num_threads((int)nth)
    {
        /* this thread's panel, 64-byte aligned for the micro-kernel's loads */
        const uintptr_t a = (uintptr_t)(scratch + (int64_t)omp_get_thread_num() * GEMM_PANEL_FLOATS);
        float *p = (float *)((a + 63) & ~(uintptr_t)63);
        /* contiguous runs of column-tile-major order: a thread keeps a panel's
         * weight rows while it walks their activation tiles */
#pragma omp for schedule(static)
        for (int64_t i = 0; i < ntiles; i++) {
            const int64_t n0 = i / ntm * GEMM_NR, t0 = i % ntm * mc;
            const int64_t nr = N - n0 < GEMM_NR ? N - n0 : GEMM_NR, mt = T - t0 < mc ? T - t0 : mc;
            if (mt <= 0) continue;
            __mmask16 m[3];
            for (int j = 0; j < 3; j++) {
                const int64_t v = nr - 16 * j;
                m[j] = v >= 16 ? (__mmask16)0xFFFF : v <= 0 ? (__mmask16)0 : (__mmask16)((1u << v) - 1);
            }
            for (int64_t k0 = 0; k0 < K; k0 += kc) {
                const int64_t kl = K - k0 < kc ? K - k0 : kc;
                if (layout == GEMM_W_OUT_ROWS) pack_out_rows(p, type, wb + (size_t)n0 * row_bytes, row_bytes, nr, k0, kl);
                else pack_in_rows(p, wb + (size_t)n0 * sizeof(float), row_bytes, m, k0, kl);
                const int mode = k0 ? GEMM_ADD : mode0;
                for (int64_t t = t0; t < t0 + mt; t += GEMM_MR) {
                    const int64_t mr = t0 + mt - t < GEMM_MR ? t0 + mt - t : GEMM_MR;
                    micro_rows[mr - 1](kl, x + t * ldx + k0, ldx, p, y + t * N + n0, N, m, mode, beta);
                }
            }
        }
    }
    return 1;
#else
    (void)y, (void)x, (void)ldx, (void)T, (void)type, (void)w, (void)row_bytes, (void)layout, (void)N, (void)K,
        (void)beta, (void)scratch, (void)scratch_floats;
    return 0;
#endif
}
