/* Weights and small helpers of the BLIP-2 code; see weights.h. */
#include "vision/weights.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nn/gelu.h"
#include "nn/matmul_groups.h"
#include "nn/quant.h"

int vw_has(const vw_loader *L, const char *name) { return st_set_find(L->set, name) != NULL; }

static int ggml_of(st_dtype d, ggml_type *t) {
    switch (d) {
    case ST_F32: *t = GGML_TYPE_F32; return 1;
    case ST_F16: *t = GGML_TYPE_F16; return 1;
    case ST_BF16: *t = GGML_TYPE_BF16; return 1;
    default: return 0;
    }
}

static const st_tensor *find_sized(vw_loader *L, const char *name, int64_t n, int64_t rows, int64_t cols,
                                   mr_error *e) {
    const st_tensor *t = st_set_find(L->set, name);
    if (!t) {
        mr_fail(e, MR_ERR_INPUT, "tensor '%s' is missing", name);
        return NULL;
    }
    if (st_numel(t) != n) {
        char shape[128] = "";
        for (int i = 0; i < t->n_dims; i++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", i ? "," : "", (long long)t->shape[i]);
        mr_fail(e, MR_ERR_INPUT, "tensor '%s' has shape [%s], expected %lld x %lld elements from the config", name,
                shape, (long long)rows, (long long)cols);
        return NULL;
    }
    return t;
}

/* The map's pages of [p, p + n) are not needed any more: let the kernel drop
 * them (they are file pages, read again if ever touched). */
static void release_pages(const void *p, size_t n) {
    long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0) return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)ps - 1) & ~((uintptr_t)ps - 1);
    uintptr_t b = ((uintptr_t)p + n) & ~((uintptr_t)ps - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

int vw_load_mat(vw_loader *L, vw_mat *w, const char *name, int64_t rows, int64_t cols, ggml_type type, mr_error *e) {
    memset(w, 0, sizeof *w);
    const st_tensor *t = find_sized(L, name, rows * cols, rows, cols, e);
    if (!t) return e->code;
    ggml_type src;
    int mappable = ggml_of(t->dtype, &src);
    if (type == VW_AS_STORED) type = mappable ? src : GGML_TYPE_F32;
    int be, bb;
    if (!quant_block(type, &be, &bb)) return mr_fail(e, MR_ERR_USAGE, "tensor '%s': unknown weight type", name);
    if (cols % be) {
        mr_log("tensor '%s': %lld columns are not a multiple of %s's %d: kept in F32", name, (long long)cols,
               quant_type_name(type), be);
        type = GGML_TYPE_F32;
    }
    w->q.type = type;
    w->q.rows = rows;
    w->q.cols = cols;
    size_t es = st_dtype_size(t->dtype);
    if (mappable && src == type) {
        if (((uintptr_t)t->data % es) == 0) {
            w->q.data = t->data;
        } else {
            if (!(w->owned = mr_alloc_aligned((size_t)t->nbytes, e))) return MR_ERR_INTERNAL;
            memcpy(w->owned, t->data, (size_t)t->nbytes);
            w->q.data = w->owned;
        }
    } else {
        size_t rb = quant_row_bytes(type, cols);
        if (!(w->owned = mr_alloc_aligned(rb * (size_t)rows, e))) return MR_ERR_INTERNAL;
        uint8_t *dst = w->owned;
        if (mappable && ((uintptr_t)t->data % es) == 0) {
            int ok = 1;
#pragma omp parallel
            {
                float *row = malloc(sizeof(float) * (size_t)cols);
                if (!row) {
#pragma omp atomic write
                    ok = 0;
                }
#pragma omp for schedule(static)
                for (int64_t r = 0; r < rows; r++) {
                    if (!row) continue;
                    dequantize_row(src, (const uint8_t *)t->data + (size_t)r * cols * es, row, cols);
                    quantize_row_ref(type, row, dst + (size_t)r * rb, cols);
                }
                free(row);
            }
            if (!ok) {
                vw_mat_free(w);
                return mr_fail(e, MR_ERR_INTERNAL, "out of memory converting '%s'", name);
            }
            release_pages(t->data, (size_t)t->nbytes);
        } else {
            float *all = mr_alloc_aligned(sizeof(float) * (size_t)(rows * cols), e);
            int rc = all ? st_read_f32(t, all, rows * cols, e) : MR_ERR_INTERNAL;
            if (!rc)
#pragma omp parallel for schedule(static)
                for (int64_t r = 0; r < rows; r++)
                    quantize_row_ref(type, all + (size_t)r * cols, dst + (size_t)r * rb, cols);
            free(all);
            if (rc) {
                vw_mat_free(w);
                mr_error_prefix(e, "tensor '%s': ", name);
                return rc;
            }
        }
        w->q.data = w->owned;
        L->converted_bytes += rb * (size_t)rows;
    }
    int64_t s = matmul_scratch_floats(&w->q, VW_TILE_FLOATS, L->n_threads > 0 ? L->n_threads : 1);
    if (s > L->scratch_floats) L->scratch_floats = s;
    return MR_OK;
}

int vw_load_vec(vw_loader *L, float **out, const char *name, int64_t n, mr_error *e) {
    *out = NULL;
    const st_tensor *t = find_sized(L, name, n, 1, n, e);
    if (!t) return e->code;
    float *v = mr_alloc_aligned(sizeof(float) * (size_t)n, e);
    if (!v) return MR_ERR_INTERNAL;
    int rc = st_read_f32(t, v, n, e);
    if (rc) {
        free(v);
        mr_error_prefix(e, "tensor '%s': ", name);
        return rc;
    }
    *out = v;
    return MR_OK;
}

void vw_mat_free(vw_mat *w) {
    free(w->owned);
    memset(w, 0, sizeof *w);
}

/* y[T][N] = bias in every row; returns the beta for the product that follows. */
static float bias_rows(float *y, const float *bias, int64_t T, int64_t N) {
    if (!bias) return 0.0f;
    for (int64_t t = 0; t < T; t++) memcpy(y + t * N, bias, sizeof(float) * (size_t)N);
    return 1.0f;
}

void vw_linear(float *y, const float *x, int64_t T, const vw_mat *W, const float *bias, float *scratch,
               int64_t scratch_floats) {
    matmul_forward(y, x, T, &W->q, bias_rows(y, bias, T, W->q.rows), scratch, scratch_floats);
}

void vw_linear_float(float *y, const float *x, int64_t T, const vw_mat *W, const float *bias, float *scratch,
                     int64_t scratch_floats) {
    matmul_forward_float(y, x, T, &W->q, bias_rows(y, bias, T, W->q.rows), scratch, scratch_floats);
}

void vw_linear_groups(float *y, const float *x, int64_t G, int64_t T, const vw_mat *W, const float *bias,
                      float *scratch, int64_t scratch_floats) {
    matmul_groups_forward(y, x, G, T, &W->q, bias_rows(y, bias, G * T, W->q.rows), scratch, scratch_floats);
}

int vw_act_parse(const char *name, vw_act *out) {
    if (!strcmp(name, "gelu")) *out = VW_ACT_GELU;
    else if (!strcmp(name, "gelu_new") || !strcmp(name, "gelu_pytorch_tanh")) *out = VW_ACT_GELU_TANH;
    else if (!strcmp(name, "relu")) *out = VW_ACT_RELU;
    else return -1;
    return 0;
}

void vw_activate(float *x, size_t n, vw_act act) {
    if (act == VW_ACT_GELU) gelu_forward(x, x, n);
    else if (act == VW_ACT_GELU_TANH) gelu_tanh_forward(x, x, n);
    else
        for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

int vw_cfg_int(json_t *obj, const char *key, int *out, const char *where, mr_error *e) {
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v)) return MR_OK;
    if (!json_is_integer(v) || json_integer_value(v) < -2147483647LL || json_integer_value(v) > 2147483647LL)
        return mr_fail(e, MR_ERR_INPUT, "%s: \"%s\" must be an integer", where, key);
    *out = (int)json_integer_value(v);
    return MR_OK;
}

int vw_cfg_float(json_t *obj, const char *key, float *out, const char *where, mr_error *e) {
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v)) return MR_OK;
    if (!json_is_number(v)) return mr_fail(e, MR_ERR_INPUT, "%s: \"%s\" must be a number", where, key);
    *out = (float)json_number_value(v);
    return MR_OK;
}

int vw_cfg_bool(json_t *obj, const char *key, int *out, const char *where, mr_error *e) {
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v)) return MR_OK;
    if (!json_is_boolean(v)) return mr_fail(e, MR_ERR_INPUT, "%s: \"%s\" must be true or false", where, key);
    *out = json_is_true(v);
    return MR_OK;
}

int vw_cfg_str(json_t *obj, const char *key, const char **out, const char *where, mr_error *e) {
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v)) return MR_OK;
    if (!json_is_string(v)) return mr_fail(e, MR_ERR_INPUT, "%s: \"%s\" must be a string", where, key);
    *out = json_string_value(v);
    return MR_OK;
}

