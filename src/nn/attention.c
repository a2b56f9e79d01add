#include "nn/attention.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "mllm4rec/base.h"
#include "nn/gemm_f32.h"
#include "nn/simd_exp.h"

/* The products below run on gemm_f32 (AVX-512 where the build has it, nn/gemm_f32.h),
 * each on its work item's thread. It reads B k-major, so the keys and values of every
 * kv head are first transposed, [n_head_kv][hd][n]: heads_transposed returns that
 * copy (the caller frees it), or NULL when there is no memory for it, and the
 * products with Kᵀ and Vᵀ then read the strided rows through BLAS. */
static float *heads_transposed(const float *x, int64_t n, int n_head_kv, int hd) {
    const int stride = n_head_kv * hd;
    float *t = malloc(sizeof(float) * (size_t)n * (size_t)stride);
    if (!t) return NULL;
#pragma omp parallel for schedule(static) if (n * stride > 65536)
    for (int gc = 0; gc < stride; gc++) /* row gc of the copy: head gc / hd, column gc % hd */
        for (int64_t j = 0; j < n; j++) t[(int64_t)gc * n + j] = x[j * stride + gc];
    return t;
}

/* C[M][nk] = alpha · A[M][hd] · X_gᵀ: X_g the first nk rows of kv head g in x (row
 * stride kv_stride), or of its transposed copy xt ([hd][n] at xt + g·hd·n) */
static void times_head_t(float *c, int64_t ldc, const float *a, int64_t lda, const float *x, int kv_stride,
                         const float *xt, int64_t n, int g, int hd, int64_t M, int64_t nk, float alpha) {
    if (xt)
        gemm_f32(c, ldc, a, lda, 1, xt + (int64_t)g * hd * n, n, (int)M, (int)nk, hd, alpha, 0);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)nk, hd, alpha, a, (int)lda, x + g * hd,
                    kv_stride, 0.0f, c, (int)ldc);
}

/* softmax in place; st (when not NULL) gets the row's max and 1 / sum, from which
 * softmax_row_replay rebuilds the same probabilities from the same scores. */
static void softmax_row(float *row, int64_t n, float *st) {
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
    if (st) st[0] = mx, st[1] = inv;
}

void softmax_row_forward(float *row, int64_t n) { softmax_row(row, n, NULL); }

/* row[0..n) = exp(row - st[0]) · st[1]: softmax_row's probabilities in one pass. */
static void softmax_row_replay(float *row, int64_t n, const float *st) {
    const float mx = st[0], inv = st[1];
    int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
    const __m256 vmx = _mm256_set1_ps(mx), vinv = _mm256_set1_ps(inv);
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(row + j, _mm256_mul_ps(exp8(_mm256_sub_ps(_mm256_loadu_ps(row + j), vmx)), vinv));
#endif
    for (; j < n; j++) row[j] = expf(row[j] - mx) * inv;
}

int64_t attention_scratch_floats(int64_t n_keys, int n_threads) {
    return (int64_t)n_threads * ATTENTION_QBLOCK * n_keys;
}

/* One-query attention reads the cache four positions at a time: four independent
 * multiply-add chains for the scores (one chain per dot product waits on each FMA's
 * latency) and one load and store of the output per four value rows. The cache
 * holds floats or f16 values; kv_load8 and kv_at widen the latter. The kernels are
 * always inlined with a constant f16, so each call site compiles to one loop
 * without a branch inside. */
#define KV_INLINE static inline __attribute__((always_inline))

KV_INLINE float kv_at(const void *row, int i, int f16) {
    return f16 ? mr_f16_to_f32(((const uint16_t *)row)[i]) : ((const float *)row)[i];
}
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
KV_INLINE __m256 kv_load8(const void *row, int i, int f16) {
    return f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)))
               : _mm256_loadu_ps((const float *)row + i);
}
#endif

/* s[r] = q · row[r] over n values, r < 4. */
KV_INLINE void dot4(float s[4], const float *q, const void *const row[4], int n, int f16) {
    int i = 0;
    s[0] = s[1] = s[2] = s[3] = 0.0f;
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 8 <= n; i += 8) {
        const __m256 qv = _mm256_loadu_ps(q + i);
        a0 = _mm256_fmadd_ps(qv, kv_load8(row[0], i, f16), a0);
        a1 = _mm256_fmadd_ps(qv, kv_load8(row[1], i, f16), a1);
        a2 = _mm256_fmadd_ps(qv, kv_load8(row[2], i, f16), a2);
        a3 = _mm256_fmadd_ps(qv, kv_load8(row[3], i, f16), a3);
    }
    /* lane r of the two halves of t holds the two half-sums of a_r */
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    _mm_storeu_ps(s, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
#endif
    for (; i < n; i++)
        for (int r = 0; r < 4; r++) s[r] += q[i] * kv_at(row[r], i, f16);
}

/* y[0..n) += Σ_r p[r] · row[r], r < 4. */
KV_INLINE void axpy4(float *y, const float p[4], const void *const row[4], int n, int f16) {
    int i = 0;
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    const __m256 p0 = _mm256_set1_ps(p[0]), p1 = _mm256_set1_ps(p[1]), p2 = _mm256_set1_ps(p[2]),
                 p3 = _mm256_set1_ps(p[3]);
    for (; i + 8 <= n; i += 8) {
        __m256 acc = _mm256_fmadd_ps(p0, kv_load8(row[0], i, f16), _mm256_loadu_ps(y + i));
        acc = _mm256_fmadd_ps(p1, kv_load8(row[1], i, f16), acc);
        acc = _mm256_fmadd_ps(p2, kv_load8(row[2], i, f16), acc);
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(p3, kv_load8(row[3], i, f16), acc));
    }
#endif
    for (; i < n; i++)
        for (int r = 0; r < 4; r++) y[i] += p[r] * kv_at(row[r], i, f16);
}

/* rows[r] = the slice at column c of cached position j + r (of row length stride,
 * esize bytes a value), for r < nr; the slots past nr repeat position j + nr - 1. */
KV_INLINE void cache_rows(const void *rows[4], const void *cache, int64_t j, int nr, int stride, int c, int esize) {
    for (int r = 0; r < 4; r++) rows[r] = (const char *)cache + ((j + (r < nr ? r : nr - 1)) * stride + c) * esize;
}

/* Heads [h0, h1) of one query (a generation step) over n_keys cached positions:
 * the cache is walked four positions at a time, reading the heads' slice of those
 * key rows, then of those value rows, in address order (the cache is the largest
 * thing a generation step reads after the weights). The last group repeats its
 * last position in the unused slots (their scores are not written, their
 * probabilities are 0).
 *   S[n_head][n_keys]: scratch for the probabilities. */
KV_INLINE void attention_heads_one(float *out, float *stats, const float *q, const void *k, const void *v, int f16,
                                   int64_t n_keys, int h0, int h1, int n_head, int n_head_kv, int hd, float *S) {
    const int kv_stride = n_head_kv * hd, group = n_head / n_head_kv, esize = f16 ? 2 : 4;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int64_t j = 0; j < n_keys; j += 4) {
        const int nr = n_keys - j < 4 ? (int)(n_keys - j) : 4;
        for (int h = h0; h < h1; h++) {
            const void *rows[4];
            cache_rows(rows, k, j, nr, kv_stride, h / group * hd, esize);
            float s[4];
            dot4(s, q + h * hd, rows, hd, f16);
            for (int r = 0; r < nr; r++) S[h * n_keys + j + r] = scale * s[r];
        }
    }
    for (int h = h0; h < h1; h++) {
        softmax_row(S + h * n_keys, n_keys, stats ? stats + h * 2 : NULL);
        for (int c = 0; c < hd; c++) out[h * hd + c] = 0.0f;
    }
    for (int64_t j = 0; j < n_keys; j += 4) {
        const int nr = n_keys - j < 4 ? (int)(n_keys - j) : 4;
        for (int h = h0; h < h1; h++) {
            const void *rows[4];
            float p[4];
            cache_rows(rows, v, j, nr, kv_stride, h / group * hd, esize);
            for (int r = 0; r < 4; r++) p[r] = r < nr ? S[h * n_keys + j + r] : 0.0f;
            axpy4(out + h * hd, p, rows, hd, f16);
        }
    }
}

/* One query per head. The blocked path would make 2 · n_head one-row BLAS calls,
 * each walking one head's slice of the cache at a stride of a whole row; here each
 * thread takes a contiguous range of heads. */
static void attention_forward_one(float *out, float *stats, const float *q, const void *k, const void *v, int f16,
                                  int64_t n_keys, int n_head, int n_head_kv, int hd, float *S, int nth) {
#pragma omp parallel num_threads(nth)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int h0 = n_head * t / nt, h1 = n_head * (t + 1) / nt;
        if (f16) attention_heads_one(out, stats, q, k, v, 1, n_keys, h0, h1, n_head, n_head_kv, hd, S);
        else attention_heads_one(out, stats, q, k, v, 0, n_keys, h0, h1, n_head, n_head_kv, hd, S);
    }
}

void attention_forward_f16_cache(float *out, const float *q, int64_t nq, float *k32, float *v32, uint16_t *k16,
                                 uint16_t *v16, int64_t n_past, int64_t n_new, int n_head, int n_head_kv, int hd,
                                 float *scratch, int64_t scratch_floats) {
    const int64_t kvd = (int64_t)n_head_kv * hd, n_keys = n_past + n_new;
    mr_f32_to_f16_row(k16 + n_past * kvd, k32 + n_past * kvd, n_new * kvd);
    mr_f32_to_f16_row(v16 + n_past * kvd, v32 + n_past * kvd, n_new * kvd);
    if (nq == 1 && scratch_floats >= (int64_t)n_head * n_keys) { /* a generation step: widened as read */
        const int nth = (double)n_head * n_keys * hd < (double)(1 << 20) ? 1 : omp_get_max_threads();
        attention_forward_one(out, NULL, q, k16, v16, 1, n_keys, n_head, n_head_kv, hd, scratch, nth);
        return;
    }
    mr_f16_to_f32_row(k32, k16, n_keys * kvd);
    mr_f16_to_f32_row(v32, v16, n_keys * kvd);
    attention_forward(out, q, k32, v32, nq, n_keys - nq, n_head, n_head_kv, hd, scratch, scratch_floats);
}

void attention_forward(float *out, const float *q, const float *k, const float *v, int64_t T, int64_t pos0, int n_head,
                       int n_head_kv, int hd, float *scratch, int64_t scratch_floats) {
    attention_forward_stats(out, NULL, NULL, q, k, v, T, pos0, n_head, n_head_kv, hd, scratch, scratch_floats);
}

/* Where head h's probabilities of query block b start in a probs buffer: the
 * blocks in order, each [n_head][nq][nk] (every block before the last is full),
 * so the heads of one kv head are adjacent rows. */
static int64_t probs_offset(int64_t b, int h, int n_head, int64_t T) {
    const int64_t Q = ATTENTION_QBLOCK, nq = T - b * Q < Q ? T - b * Q : Q;
    return n_head * Q * Q * (b * (b + 1) / 2) + h * nq * (b * Q + nq);
}

int64_t attention_probs_floats(int64_t T, int n_head) {
    const int64_t last = (T - 1) / ATTENTION_QBLOCK; /* its nq rows see all T keys */
    return probs_offset(last, 0, n_head, T) + n_head * (T - last * ATTENTION_QBLOCK) * T;
}

void attention_forward_stats(float *out, float *stats, float *probs, const float *q, const float *k, const float *v, int64_t T,
                             int64_t pos0, int n_head, int n_head_kv, int hd, float *scratch, int64_t scratch_floats) {
    const int q_stride = n_head * hd, kv_stride = n_head_kv * hd, group = n_head / n_head_kv;
    const int64_t n_blocks = (T + ATTENTION_QBLOCK - 1) / ATTENTION_QBLOCK, n_keys_max = pos0 + T;
    const float scale = 1.0f / sqrtf((float)hd);
    int nth = (int)(scratch_floats / (ATTENTION_QBLOCK * n_keys_max));
    if (nth > omp_get_max_threads()) nth = omp_get_max_threads();
    /* small problems (generation steps, short prompts) stay on one thread */
    if ((double)n_head * T * n_keys_max * hd < (double)(1 << 20)) nth = 1;
    if (nth < 1) nth = 1;
    if (T == 1 && !probs && scratch_floats >= (int64_t)n_head * n_keys_max) {
        attention_forward_one(out, stats, q, k, v, 0, n_keys_max, n_head, n_head_kv, hd, scratch, nth);
        return;
    }
    float *kt = heads_transposed(k, n_keys_max, n_head_kv, hd);
    /* Work items are (head, query block); the big blocks (late queries) first. */
#pragma omp parallel num_threads(nth)
    {
        float *S_t = scratch + (int64_t)omp_get_thread_num() * ATTENTION_QBLOCK * n_keys_max;
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < (int64_t)n_head * n_blocks; item++) {
            const int64_t b = n_blocks - 1 - item / n_head;
            const int h = (int)(item % n_head), g = h / group;
            const int64_t t0 = b * ATTENTION_QBLOCK, nq = T - t0 < ATTENTION_QBLOCK ? T - t0 : ATTENTION_QBLOCK;
            const int64_t nk = pos0 + t0 + nq; /* keys visible to the last query of the block */
            /* S[nq][nk] = scale · Q_h Kᵀ_g */
            float *S = probs ? probs + probs_offset(b, h, n_head, T) : S_t;
            times_head_t(S, nk, q + t0 * q_stride + h * hd, q_stride, k, kv_stride, kt, n_keys_max, g, hd, nq, nk, scale);
            for (int64_t i = 0; i < nq; i++) {
                float *row = S + i * nk;
                const int64_t n_vis = pos0 + t0 + i + 1;
                softmax_row(row, n_vis, stats ? stats + ((t0 + i) * n_head + h) * 2 : NULL);
                for (int64_t j = n_vis; j < nk; j++) row[j] = 0.0f;
            }
            /* out_h[nq][hd] = S V_g */
            gemm_f32(out + t0 * q_stride + h * hd, q_stride, S, nk, 1, v + g * hd, kv_stride, (int)nq, hd, (int)nk,
                     1.0f, 0);
        }
    }
    free(kt);
}

/* Per thread: P and dP [G·QBLOCK][T], the group's stacked q, dout and dq rows
 * [G·QBLOCK][hd], private dK and dV [T][kvd]. */
int64_t attention_backward_scratch_floats(int64_t T, int n_head, int n_head_kv, int hd, int n_threads) {
    const int64_t rows = (int64_t)(n_head / n_head_kv) * ATTENTION_QBLOCK;
    return (int64_t)n_threads * (2 * rows * T + 3 * rows * hd + 2 * T * n_head_kv * hd);
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *stats,
                        const float *probs, const float *q, const float *k, const float *v, int64_t T, int64_t pos0,
                        int n_head, int n_head_kv, int hd, float *scratch, int64_t scratch_floats) {
    const int q_stride = n_head * hd, kv_stride = n_head_kv * hd, G = n_head / n_head_kv;
    const int64_t n_blocks = (T + ATTENTION_QBLOCK - 1) / ATTENTION_QBLOCK, n_keys = pos0 + T, kv_n = n_keys * kv_stride;
    const int64_t rows = (int64_t)G * ATTENTION_QBLOCK, per_thread = 2 * rows * n_keys + 3 * rows * hd + 2 * kv_n;
    const float scale = 1.0f / sqrtf((float)hd);
    int nth = (int)(scratch_floats / per_thread);
    if (nth > omp_get_max_threads()) nth = omp_get_max_threads();
    if ((double)n_head * T * n_keys * hd < (double)(1 << 20)) nth = 1;
    if (nth < 1) nth = 1;
    float *kt = probs ? NULL : heads_transposed(k, n_keys, n_head_kv, hd), *vt = heads_transposed(v, n_keys, n_head_kv, hd);
    /* Work items (kv head, query block), the G query heads of the kv head stacked
     * into one [G·nq] block of rows so each product is G times taller (dK, dV sum
     * over G·nq rows at once); a fixed round-robin over threads, each thread
     * summing dK, dV privately: the same numbers for a thread count. */
#pragma omp parallel num_threads(nth)
    {
        const int tid = omp_get_thread_num();
        float *P_t = scratch + tid * per_thread, *dP = P_t + rows * n_keys, *Qs = dP + rows * n_keys, *dOs = Qs + rows * hd;
        float *dQs = dOs + rows * hd, *dk_t = dQs + rows * hd, *dv_t = dk_t + kv_n;
        for (int64_t i = 0; i < 2 * kv_n; i++) dk_t[i] = 0.0f;
#pragma omp for schedule(static, 1)
        for (int64_t item = 0; item < (int64_t)n_head_kv * n_blocks; item++) {
            const int64_t b = n_blocks - 1 - item / n_head_kv;
            const int g = (int)(item % n_head_kv);
            const int64_t t0 = b * ATTENTION_QBLOCK, nq = T - t0 < ATTENTION_QBLOCK ? T - t0 : ATTENTION_QBLOCK;
            const int64_t nk = pos0 + t0 + nq, m = G * nq; /* stacked row hh·nq + i: head g·G + hh, query t0 + i */
            for (int64_t r = 0; r < m; r++) {
                const int64_t off = (t0 + r % nq) * q_stride + (g * G + r / nq) * hd;
                for (int c = 0; c < hd; c++) Qs[r * hd + c] = q[off + c], dOs[r * hd + c] = dout[off + c];
            }
            /* P[m][nk]: the forward's probabilities, kept or rebuilt from its scores and row statistics */
            const float *P = probs ? probs + probs_offset(b, g * G, n_head, T) : P_t;
            if (!probs) times_head_t(P_t, nk, Qs, hd, k, kv_stride, kt, n_keys, g, hd, m, nk, scale);
            for (int64_t r = 0; r < m && !probs; r++) {
                const int64_t t = t0 + r % nq; /* at position pos0 + t: keys 0 .. pos0 + t */
                float *row = P_t + r * nk;
                softmax_row_replay(row, pos0 + t + 1, stats + (t * n_head + g * G + r / nq) * 2);
                for (int64_t j = pos0 + t + 1; j < nk; j++) row[j] = 0.0f;
            }
            /* dV_g[0:nk] += Pᵀ dO ; dP = dO V_gᵀ */
            gemm_f32(dv_t + g * hd, kv_stride, P, 1, nk, dOs, hd, (int)nk, hd, (int)m, 1.0f, 1);
            times_head_t(dP, nk, dOs, hd, v, kv_stride, vt, n_keys, g, hd, m, nk, 1.0f);
            /* dS = P ⊙ (dP − Σ_j P dP), where Σ_j P_ij dP_ij = dO_i · O_i (hd terms, not nk) */
            for (int64_t r = 0; r < m; r++) {
                const float *p = P + r * nk, *o = out + (t0 + r % nq) * q_stride + (g * G + r / nq) * hd;
                const float *gr = dOs + r * hd;
                float *d = dP + r * nk;
                double dot = 0;
                for (int c = 0; c < hd; c++) dot += (double)gr[c] * o[c];
                const float D = (float)dot;
                for (int64_t j = 0; j < nk; j++) d[j] = p[j] * (d[j] - D);
            }
            /* dQ = scale dS K_g (scattered back to the heads' columns) ; dK_g[0:nk] += scale dSᵀ Q */
            gemm_f32(dQs, hd, dP, nk, 1, k + g * hd, kv_stride, (int)m, hd, (int)nk, scale, 0);
            for (int64_t r = 0; r < m; r++) {
                float *dst = dq + (t0 + r % nq) * q_stride + (g * G + r / nq) * hd;
                for (int c = 0; c < hd; c++) dst[c] = dQs[r * hd + c];
            }
            gemm_f32(dk_t + g * hd, kv_stride, dP, 1, nk, Qs, hd, (int)nk, hd, (int)m, scale, 1);
        }
        /* the implicit barrier above: every private sum is complete */
#pragma omp for schedule(static)
        for (int64_t i = 0; i < kv_n; i++) {
            float sk = 0, sv = 0;
            for (int t = 0; t < omp_get_num_threads(); t++) {
                sk += scratch[t * per_thread + 2 * rows * n_keys + 3 * rows * hd + i];
                sv += scratch[t * per_thread + 2 * rows * n_keys + 3 * rows * hd + kv_n + i];
            }
            dk[i] = sk;
            dv[i] = sv;
        }
    }
    free(kt);
    free(vt);
}
