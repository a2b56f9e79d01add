/* Forward-only fp32 helpers of the BLIP-2 code; see vx.h. */
#include "vision/vx.h"

#include <cblas.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Raw weights are converted at most this many floats at a time (32 MB). */
#define VX_BLOCK_FLOATS (8u << 20)

uint64_t vx_convert_limit_override = UINT64_MAX;

int vx_has(const vx_loader *L, const char *name) { return st_set_find(L->set, name) != NULL; }

int vx_load(vx_loader *L, vx_weight *w, const char *name, int64_t rows, int64_t cols, int allow_raw, mr_error *e) {
    memset(w, 0, sizeof *w);
    w->rows = rows;
    w->cols = cols;
    const st_tensor *t = st_set_find(L->set, name);
    if (!t) return mr_fail(e, MR_ERR_INPUT, "tensor '%s' is missing", name);
    int64_t n = st_numel(t);
    if (n != rows * cols) {
        char shape[128] = "";
        for (int i = 0; i < t->n_dims; i++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", i ? "," : "", (long long)t->shape[i]);
        return mr_fail(e, MR_ERR_INPUT, "tensor '%s' has shape [%s], expected %lld x %lld elements from the config",
                       name, shape, (long long)rows, (long long)cols);
    }
    w->dtype = t->dtype;
    if (t->dtype == ST_F32 && ((uintptr_t)t->data & 3) == 0) {
        w->f32 = t->data;
        return MR_OK;
    }
    uint64_t bytes = (uint64_t)n * 4;
    if (allow_raw && (t->dtype == ST_F16 || t->dtype == ST_BF16) && L->converted_bytes + bytes > L->convert_limit) {
        w->raw = t->data;
        return MR_OK;
    }
    w->owned = mr_alloc_aligned((size_t)bytes, e);
    if (!w->owned) return MR_ERR_INTERNAL;
    int rc = st_read_f32(t, w->owned, n, e);
    if (rc) {
        free(w->owned);
        w->owned = NULL;
        mr_error_prefix(e, "tensor '%s': ", name);
        return rc;
    }
    w->f32 = w->owned;
    L->converted_bytes += bytes;
    return MR_OK;
}

void vx_weight_free(vx_weight *w) {
    free(w->owned);
    memset(w, 0, sizeof *w);
}

void vx_scratch_free(vx_scratch *s) {
    free(s->buf);
    s->buf = NULL;
    s->cap = 0;
}

static void convert_rows(float *dst, const vx_weight *W, int64_t r0, int64_t nr) {
    int64_t n = nr * W->cols, off = r0 * W->cols;
    const uint16_t *src = (const uint16_t *)W->raw + off;
    if (W->dtype == ST_BF16) {
#pragma omp parallel for schedule(static) if (n > (1 << 18))
        for (int64_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)src[i] << 16;
            memcpy(&dst[i], &bits, 4);
        }
    } else {
#pragma omp parallel for schedule(static) if (n > (1 << 18))
        for (int64_t i = 0; i < n; i++) dst[i] = mr_f16_to_f32(src[i]);
    }
}

void vx_row(const vx_weight *w, int64_t r, float *dst) {
    if (w->f32) {
        memcpy(dst, w->f32 + r * w->cols, sizeof(float) * w->cols);
        return;
    }
    const uint16_t *src = (const uint16_t *)w->raw + r * w->cols;
    for (int64_t i = 0; i < w->cols; i++) dst[i] = w->dtype == ST_BF16 ? mr_bf16_to_f32(src[i]) : mr_f16_to_f32(src[i]);
}

/* out[N] = W[N, K] x[K] straight from F16/BF16: one pass over the 2-byte weights
 * and no fp32 copy, which is what decoding a token costs (memory-bound). */
static float dot_raw_row(const uint16_t *w, const float *x, int64_t K, st_dtype dtype) {
    int64_t k = 0;
    float sum = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    if (dtype == ST_BF16) {
        for (; k + 16 <= K; k += 16) {
            __m256i a = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + k)));
            __m256i b = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + k + 8)));
            acc0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(a, 16)), _mm256_loadu_ps(x + k), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(b, 16)), _mm256_loadu_ps(x + k + 8), acc1);
        }
    }
#if defined(__F16C__)
    else {
        for (; k + 16 <= K; k += 16) {
            __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + k)));
            __m256 b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + k + 8)));
            acc0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(x + k), acc0);
            acc1 = _mm256_fmadd_ps(b, _mm256_loadu_ps(x + k + 8), acc1);
        }
    }
#endif
    __m256 acc = _mm256_add_ps(acc0, acc1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    sum = _mm_cvtss_f32(h);
#endif
    for (; k < K; k++) sum += (dtype == ST_BF16 ? mr_bf16_to_f32(w[k]) : mr_f16_to_f32(w[k])) * x[k];
    return sum;
}

int vx_linear(float *out, const float *in, int T, const vx_weight *W, const vx_weight *bias, vx_scratch *s,
              mr_error *e) {
    int N = (int)W->rows, K = (int)W->cols;
    if (W->f32) {
        if (T == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, W->f32, K, in, 1, 0.0f, out, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, K, 1.0f, in, K, W->f32, K, 0.0f, out, N);
    } else if (T == 1) {
        const uint16_t *w = W->raw;
#pragma omp parallel for schedule(static) if ((int64_t)N * K > (1 << 18))
        for (int n = 0; n < N; n++) out[n] = dot_raw_row(w + (size_t)n * K, in, K, W->dtype);
    } else {
        int64_t block = VX_BLOCK_FLOATS / (uint64_t)K;
        if (block < 1) block = 1;
        if (block > N) block = N;
        size_t need = (size_t)block * K;
        if (s->cap < need) {
            free(s->buf);
            s->buf = mr_alloc_aligned(need * sizeof(float), e);
            s->cap = s->buf ? need : 0;
            if (!s->buf) return MR_ERR_INTERNAL;
        }
        for (int64_t r0 = 0; r0 < N; r0 += block) {
            int64_t nr = N - r0 < block ? N - r0 : block;
            convert_rows(s->buf, W, r0, nr);
            if (T == 1)
                cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)nr, K, 1.0f, s->buf, K, in, 1, 0.0f, out + r0, 1);
            else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, (int)nr, K, 1.0f, in, K, s->buf, K, 0.0f,
                            out + r0, N);
        }
    }
    if (bias) {
        const float *b = bias->f32;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < N; j++) out[(size_t)t * N + j] += b[j];
    }
    return MR_OK;
}

void vx_layernorm(float *out, const float *in, int T, int D, const float *weight, const float *bias, float eps) {
    for (int t = 0; t < T; t++) {
        const float *x = in + (size_t)t * D;
        float *y = out + (size_t)t * D;
        double mean = 0, var = 0;
        for (int i = 0; i < D; i++) mean += x[i];
        mean /= D;
        for (int i = 0; i < D; i++) var += (x[i] - mean) * (x[i] - mean);
        var /= D;
        float inv = (float)(1.0 / sqrt(var + eps)), m = (float)mean;
        for (int i = 0; i < D; i++) {
            float v = (x[i] - m) * inv;
            y[i] = weight ? v * weight[i] + (bias ? bias[i] : 0.0f) : v;
        }
    }
}

void vx_activate(float *x, size_t n, vx_act act) {
    if (act == VX_ACT_RELU) {
        for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
    } else if (act == VX_ACT_GELU) {
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
    } else {
        const float c = 0.7978845608028654f; /* sqrt(2/pi) */
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            x[i] = 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
        }
    }
}

int vx_act_parse(const char *name, vx_act *out) {
    if (!strcmp(name, "gelu")) *out = VX_ACT_GELU;
    else if (!strcmp(name, "gelu_new") || !strcmp(name, "gelu_pytorch_tanh")) *out = VX_ACT_GELU_TANH;
    else if (!strcmp(name, "relu")) *out = VX_ACT_RELU;
    else return -1;
    return 0;
}

void vx_attention(float *out, const float *q, int ldq, const float *k, int ldk, const float *v, int ldv, int Tq,
                  int Tk, int heads, int head_dim, float scale, int causal, int key_offset, float *scores) {
    int ldo = heads * head_dim;
#pragma omp parallel for schedule(static) if (heads > 1 && (size_t)Tq * Tk * head_dim > 4096)
    for (int h = 0; h < heads; h++) {
        float *S = scores + (size_t)h * Tq * Tk;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, head_dim, scale, q + h * head_dim, ldq,
                    k + h * head_dim, ldk, 0.0f, S, Tk);
        for (int i = 0; i < Tq; i++) {
            float *row = S + (size_t)i * Tk;
            int n = causal ? key_offset + i + 1 : Tk;
            if (n > Tk) n = Tk;
            float mx = row[0];
            for (int j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
            float sum = 0;
            for (int j = 0; j < n; j++) {
                row[j] = expf(row[j] - mx);
                sum += row[j];
            }
            float inv = 1.0f / sum;
            for (int j = 0; j < n; j++) row[j] *= inv;
            for (int j = n; j < Tk; j++) row[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, head_dim, Tk, 1.0f, S, Tk, v + h * head_dim, ldv,
                    0.0f, out + h * head_dim, ldo);
    }
}

/* ---- config helpers ---- */

int vx_cfg_int(json_t *obj, const char *key, int *out, const char *where, mr_error *e) {
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v)) return MR_OK;
    if (!json_is_integer(v) || json_integer_value(v) < -2147483647LL || json_integer_value(v) > 2147483647LL)
        return mr_fail(e, MR_ERR_INPUT, "%s: \"%s\" must be an integer", where, key);
    *out = (int)json_integer_value(v);
    return MR_OK;
}

int vx_cfg_float(json_t *obj, const char *key, float *out, const char *where, mr_error *e) {
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v)) return MR_OK;
    if (!json_is_number(v)) return mr_fail(e, MR_ERR_INPUT, "%s: \"%s\" must be a number", where, key);
    *out = (float)json_number_value(v);
    return MR_OK;
}

int vx_cfg_bool(json_t *obj, const char *key, int *out, const char *where, mr_error *e) {
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v)) return MR_OK;
    if (!json_is_boolean(v)) return mr_fail(e, MR_ERR_INPUT, "%s: \"%s\" must be true or false", where, key);
    *out = json_is_true(v);
    return MR_OK;
}

int vx_cfg_str(json_t *obj, const char *key, const char **out, const char *where, mr_error *e) {
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v)) return MR_OK;
    if (!json_is_string(v)) return mr_fail(e, MR_ERR_INPUT, "%s: \"%s\" must be a string", where, key);
    *out = json_string_value(v);
    return MR_OK;
}


void vx_set_threads(int threads) {
    if (threads <= 0) return;
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
}

void vx_threads_single(vx_threads *saved, int enable) {
    saved->active = enable && omp_get_max_threads() > 1;
    if (!saved->active) return;
    saved->omp = omp_get_max_threads();
    saved->blas = openblas_get_num_threads();
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
}

void vx_threads_restore(const vx_threads *saved) {
    if (!saved->active) return;
    omp_set_num_threads(saved->omp);
    openblas_set_num_threads(saved->blas);
}
