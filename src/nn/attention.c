#include "nn/attention.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

/* e^x for 8 floats (Cephes' expf: range reduction by ln 2, degree-6
 * polynomial), within 2 ulp of expf for the x <= 0 that softmax feeds it. */
static inline __m256 exp8(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

void softmax_row_forward(float *row, int64_t n) {
    float mx = -INFINITY;
    int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
    if (n >= 8) {
        __m256 vm = _mm256_loadu_ps(row);
        for (j = 8; j + 8 <= n; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(row + j));
        float tmp[8];
        _mm256_storeu_ps(tmp, vm);
        for (int i = 0; i < 8; i++) mx = tmp[i] > mx ? tmp[i] : mx;
    } else {
        j = 0;
    }
#endif
    for (; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0;
    j = 0;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 vsum = _mm256_setzero_ps(), vmx = _mm256_set1_ps(mx);
    for (; j + 8 <= n; j += 8) {
        __m256 v = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + j), vmx));
        _mm256_storeu_ps(row + j, v);
        vsum = _mm256_add_ps(vsum, v);
    }
    float tmp[8];
    _mm256_storeu_ps(tmp, vsum);
    for (int i = 0; i < 8; i++) sum += tmp[i];
#endif
    for (; j < n; j++) {
        row[j] = expf(row[j] - mx);
        sum += row[j];
    }
    const float inv = 1.0f / sum;
    for (j = 0; j < n; j++) row[j] *= inv;
}

int64_t attention_scratch_floats(int64_t n_keys, int n_threads) {
    return (int64_t)n_threads * ATTENTION_QBLOCK * n_keys;
}

void attention_forward(float *out, const float *q, const float *k, const float *v, int64_t T, int64_t pos0, int n_head,
                       int n_head_kv, int hd, float *scratch, int64_t scratch_floats) {
    const int q_stride = n_head * hd, kv_stride = n_head_kv * hd, group = n_head / n_head_kv;
    const int64_t n_blocks = (T + ATTENTION_QBLOCK - 1) / ATTENTION_QBLOCK, n_keys_max = pos0 + T;
    const float scale = 1.0f / sqrtf((float)hd);
    int nth = (int)(scratch_floats / (ATTENTION_QBLOCK * n_keys_max));
    if (nth > omp_get_max_threads()) nth = omp_get_max_threads();
    /* small problems (generation steps, short prompts) stay on one thread */
    if ((double)n_head * T * n_keys_max * hd < (double)(1 << 20)) nth = 1;
    if (nth < 1) nth = 1;
    /* Work items are (head, query block); the big blocks (late queries) first. */
#pragma omp parallel num_threads(nth)
    {
        float *S = scratch + (int64_t)omp_get_thread_num() * ATTENTION_QBLOCK * n_keys_max;
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < (int64_t)n_head * n_blocks; item++) {
            const int64_t b = n_blocks - 1 - item / n_head;
            const int h = (int)(item % n_head), g = h / group;
            const int64_t t0 = b * ATTENTION_QBLOCK, nq = T - t0 < ATTENTION_QBLOCK ? T - t0 : ATTENTION_QBLOCK;
            const int64_t nk = pos0 + t0 + nq; /* keys visible to the last query of the block */
            /* S[nq][nk] = scale · Q_h Kᵀ_g */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nk, hd, scale, q + t0 * q_stride + h * hd,
                        q_stride, k + g * hd, kv_stride, 0.0f, S, (int)nk);
            for (int64_t i = 0; i < nq; i++) {
                float *row = S + i * nk;
                const int64_t n_vis = pos0 + t0 + i + 1;
                softmax_row_forward(row, n_vis);
                for (int64_t j = n_vis; j < nk; j++) row[j] = 0.0f;
            }
            /* out_h[nq][hd] = S V_g */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, hd, (int)nk, 1.0f, S, (int)nk,
                        v + g * hd, kv_stride, 0.0f, out + t0 * q_stride + h * hd, q_stride);
        }
    }
}

int64_t attention_backward_scratch_floats(int64_t T, int n_head_kv, int hd, int n_threads) {
    return (int64_t)n_threads * (2 * ATTENTION_QBLOCK * T + 2 * T * n_head_kv * hd);
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *q,
                        const float *k, const float *v, int64_t T, int n_head, int n_head_kv, int hd, float *scratch,
                        int64_t scratch_floats) {
    const int q_stride = n_head * hd, kv_stride = n_head_kv * hd, group = n_head / n_head_kv;
    const int64_t n_blocks = (T + ATTENTION_QBLOCK - 1) / ATTENTION_QBLOCK, kv_n = T * kv_stride;
    const int64_t per_thread = 2 * ATTENTION_QBLOCK * T + 2 * kv_n;
    const float scale = 1.0f / sqrtf((float)hd);
    int nth = (int)(scratch_floats / per_thread);
    if (nth > omp_get_max_threads()) nth = omp_get_max_threads();
    if ((double)n_head * T * T * hd < (double)(1 << 20)) nth = 1;
    if (nth < 1) nth = 1;
    /* Work items (head, query block) in a fixed round-robin over threads, each
     * thread summing dK, dV privately: the same numbers for a thread count. */
#pragma omp parallel num_threads(nth)
    {
        const int tid = omp_get_thread_num();
        float *P = scratch + tid * per_thread, *dP = P + ATTENTION_QBLOCK * T;
        float *dk_t = dP + ATTENTION_QBLOCK * T, *dv_t = dk_t + kv_n;
        for (int64_t i = 0; i < 2 * kv_n; i++) dk_t[i] = 0.0f;
#pragma omp for schedule(static, 1)
        for (int64_t item = 0; item < (int64_t)n_head * n_blocks; item++) {
            const int64_t b = n_blocks - 1 - item / n_head;
            const int h = (int)(item % n_head), g = h / group;
            const int64_t t0 = b * ATTENTION_QBLOCK, nq = T - t0 < ATTENTION_QBLOCK ? T - t0 : ATTENTION_QBLOCK;
            const int64_t nk = t0 + nq;
            const float *dO = dout + t0 * q_stride + h * hd;
            /* P[nq][nk]: the forward's probabilities, recomputed as it computed them */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nk, hd, scale, q + t0 * q_stride + h * hd,
                        q_stride, k + g * hd, kv_stride, 0.0f, P, (int)nk);
            for (int64_t i = 0; i < nq; i++) {
                float *row = P + i * nk;
                softmax_row_forward(row, t0 + i + 1);
                for (int64_t j = t0 + i + 1; j < nk; j++) row[j] = 0.0f;
            }
            /* dV_g[0:nk] += Pᵀ dO ; dP = dO V_gᵀ */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, hd, (int)nq, 1.0f, P, (int)nk, dO, q_stride,
                        1.0f, dv_t + g * hd, kv_stride);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nk, hd, 1.0f, dO, q_stride, v + g * hd,
                        kv_stride, 0.0f, dP, (int)nk);
            /* dS = P ⊙ (dP − Σ_j P dP), where Σ_j P_ij dP_ij = dO_i · O_i (hd terms, not nk) */
            for (int64_t i = 0; i < nq; i++) {
                const float *p = P + i * nk, *o = out + (t0 + i) * q_stride + h * hd, *g = dO + i * q_stride;
                float *d = dP + i * nk;
                double dot = 0;
                for (int c = 0; c < hd; c++) dot += (double)g[c] * o[c];
                const float D = (float)dot;
                for (int64_t j = 0; j < nk; j++) d[j] = p[j] * (d[j] - D);
            }
            /* dQ_h[t0:t0+nq] = scale dS K_g ; dK_g[0:nk] += scale dSᵀ Q_h */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, hd, (int)nk, scale, dP, (int)nk, k + g * hd,
                        kv_stride, 0.0f, dq + t0 * q_stride + h * hd, q_stride);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, hd, (int)nq, scale, dP, (int)nk,
                        q + t0 * q_stride + h * hd, q_stride, 1.0f, dk_t + g * hd, kv_stride);
        }
        /* the implicit barrier above: every private sum is complete */
#pragma omp for schedule(static)
        for (int64_t i = 0; i < kv_n; i++) {
            float sk = 0, sv = 0;
            for (int t = 0; t < omp_get_num_threads(); t++) {
                sk += scratch[t * per_thread + 2 * ATTENTION_QBLOCK * T + i];
                sv += scratch[t * per_thread + 2 * ATTENTION_QBLOCK * T + kv_n + i];
            }
            dk[i] = sk;
            dv[i] = sv;
        }
    }
}
