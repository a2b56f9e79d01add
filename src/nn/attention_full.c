/* Unmasked multi-head attention; see attention_full.h. Work items are
 * (head, block of ATTENTION_FULL_QBLOCK queries); each has a scores tile
 * S[nq][Tk] in its thread's scratch, filled by one sgemm, turned into
 * probabilities row by row and multiplied with V by a second sgemm. */
#include "nn/attention_full.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

/* 2^(x log2 e) for 8 floats with x <= 0: n = round(x log2 e), f = x log2 e - n
 * in [-1/2, 1/2], 2^f by its Taylor series to degree 6 (relative error below
 * 2e-7 there), times 2^n built in the exponent bits. */
static inline __m256 exp_nonpos8(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(1.4426950408889634f));
    __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(t, n);
    /* c_i = ln2^i / i! */
    __m256 p = _mm256_set1_ps(1.5403530393381606e-4f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3333558146428443e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6181291076284772e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5504108664821580e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022650695910071e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314718055994531e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

void softmax_row_forward(float *row, int64_t n) {
    if (n <= 0) return;
    float mx = row[0];
    for (int64_t j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0.0f;
    int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 vmx = _mm256_set1_ps(mx), vs = _mm256_setzero_ps();
    for (; j + 8 <= n; j += 8) {
        __m256 v = exp_nonpos8(_mm256_sub_ps(_mm256_loadu_ps(row + j), vmx));
        _mm256_storeu_ps(row + j, v);
        vs = _mm256_add_ps(vs, v);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, vs);
    for (int i = 0; i < 8; i++) sum += lanes[i];
#endif
    for (; j < n; j++) {
        row[j] = expf(row[j] - mx);
        sum += row[j];
    }
    const float inv = 1.0f / sum;
    for (j = 0; j < n; j++) row[j] *= inv;
}

int64_t attention_full_scratch_floats(int64_t Tk, int n_threads) {
    return (int64_t)(n_threads > 0 ? n_threads : 1) * ATTENTION_FULL_QBLOCK * Tk;
}

void attention_full_forward(float *out, int ldo, const float *q, int ldq, const float *k, int ldk, const float *v,
                            int ldv, int Tq, int Tk, int n_head, int hd, float scale, float *scratch,
                            int64_t scratch_floats) {
    if (Tq <= 0 || Tk <= 0) return;
    const int n_blocks = (Tq + ATTENTION_FULL_QBLOCK - 1) / ATTENTION_FULL_QBLOCK;
    int nth = (int)(scratch_floats / ((int64_t)ATTENTION_FULL_QBLOCK * Tk));
    if (nth > omp_get_max_threads()) nth = omp_get_max_threads();
    if (nth > n_head * n_blocks) nth = n_head * n_blocks;
    /* small problems stay on one thread: a team costs more than it saves */
    if ((double)n_head * Tq * Tk * hd < (double)(1 << 18)) nth = 1;
    if (nth < 1) nth = 1;
#pragma omp parallel num_threads(nth)
    {
        float *S = scratch + (int64_t)omp_get_thread_num() * ATTENTION_FULL_QBLOCK * Tk;
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < n_head * n_blocks; item++) {
            const int h = item % n_head, t0 = (item / n_head) * ATTENTION_FULL_QBLOCK;
            const int nq = Tq - t0 < ATTENTION_FULL_QBLOCK ? Tq - t0 : ATTENTION_FULL_QBLOCK;
            /* S[nq][Tk] = scale · Q_h K_hᵀ */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, Tk, hd, scale, q + (int64_t)t0 * ldq + h * hd, ldq,
                        k + h * hd, ldk, 0.0f, S, Tk);
            for (int i = 0; i < nq; i++) softmax_row_forward(S + (int64_t)i * Tk, Tk);
            /* out_h[nq][hd] = S V_h */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, Tk, 1.0f, S, Tk, v + h * hd, ldv, 0.0f,
                        out + (int64_t)t0 * ldo + h * hd, ldo);
        }
    }
}
