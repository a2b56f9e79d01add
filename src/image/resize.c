/* Pillow's resampling (libImaging/Resample.c of Pillow 9.4) re-derived so that
 * the bytes match: for each output column a window of input columns around the
 * centre (x + 0.5) * scale, weights from the filter stretched by the downscale
 * factor, normalised to sum 1, then turned into integers with 22 fraction bits.
 * Each pass adds 0.5 in fixed point, shifts and clips to 0..255. The horizontal
 * pass runs first over only the rows the vertical pass will read. */
#include "mllm4rec/image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

typedef struct resample_filter {
    double (*weight)(double x);
    double support;
} resample_filter;

static double bicubic_weight(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static double bilinear_weight(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

/* For each of out_size outputs: the first input index and the count, and ksize
 * integer coefficients. Returns ksize, or 0 when out of memory. */
static int resample_coeffs(int in_size, int out_size, const resample_filter *f, int **bounds_out, int32_t **coeffs_out) {
    /* Pillow keeps the box in float; for whole-image boxes that is exact. */
    float in0 = 0.0f, in1 = (float)in_size;
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = f->support * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *w = malloc(sizeof(double) * ksize);
    int *bounds = malloc(sizeof(int) * 2 * out_size);
    int32_t *coeffs = calloc((size_t)out_size * ksize, sizeof(int32_t));
    if (!w || !bounds || !coeffs) {
        free(w);
        free(bounds);
        free(coeffs);
        return 0;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double total = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            w[x] = f->weight((x + xmin - center + 0.5) * ss);
            total += w[x];
        }
        for (int x = 0; x < xmax; x++) {
            double k = total != 0.0 ? w[x] / total : w[x];
            coeffs[(size_t)xx * ksize + x] =
                k < 0 ? (int32_t)(-0.5 + k * (1 << PRECISION_BITS)) : (int32_t)(0.5 + k * (1 << PRECISION_BITS));
        }
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
    free(w);
    *bounds_out = bounds;
    *coeffs_out = coeffs;
    return ksize;
}

static inline uint8_t clip8(int32_t v) {
    if (v >= (1 << PRECISION_BITS << 8)) return 255;
    if (v <= 0) return 0;
    return (uint8_t)(v >> PRECISION_BITS);
}

/* in: in_w x rows (RGB), out: out_w x rows. */
static void resample_horizontal(const uint8_t *in, int in_w, int rows, uint8_t *out, int out_w, int ksize,
                                const int *bounds, const int32_t *coeffs) {
    for (int y = 0; y < rows; y++) {
        const uint8_t *src = in + (size_t)y * in_w * 3;
        uint8_t *dst = out + (size_t)y * out_w * 3;
        for (int xx = 0; xx < out_w; xx++) {
            int xmin = bounds[2 * xx], n = bounds[2 * xx + 1];
            const int32_t *k = coeffs + (size_t)xx * ksize;
            int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < n; x++) {
                const uint8_t *p = src + (size_t)(x + xmin) * 3;
                s0 += p[0] * k[x];
                s1 += p[1] * k[x];
                s2 += p[2] * k[x];
            }
            dst[3 * xx] = clip8(s0);
            dst[3 * xx + 1] = clip8(s1);
            dst[3 * xx + 2] = clip8(s2);
        }
    }
}

/* in: w x in_rows, out: w x out_h; bounds are row indices into in. */
static void resample_vertical(const uint8_t *in, int w, uint8_t *out, int out_h, int ksize, const int *bounds,
                              const int32_t *coeffs) {
    for (int yy = 0; yy < out_h; yy++) {
        int ymin = bounds[2 * yy], n = bounds[2 * yy + 1];
        const int32_t *k = coeffs + (size_t)yy * ksize;
        uint8_t *dst = out + (size_t)yy * w * 3;
        for (int xx = 0; xx < w; xx++) {
            int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int y = 0; y < n; y++) {
                const uint8_t *p = in + ((size_t)(y + ymin) * w + xx) * 3;
                s0 += p[0] * k[y];
                s1 += p[1] * k[y];
                s2 += p[2] * k[y];
            }
            dst[3 * xx] = clip8(s0);
            dst[3 * xx + 1] = clip8(s1);
            dst[3 * xx + 2] = clip8(s2);
        }
    }
}

int mr_image_resize(const mr_image *in, int out_w, int out_h, int filter, mr_image *out, mr_error *e) {
    out->width = out->height = 0;
    out->rgb = NULL;
    resample_filter f;
    if (filter == MR_RESAMPLE_BICUBIC)
        f = (resample_filter){bicubic_weight, 2.0};
    else if (filter == MR_RESAMPLE_BILINEAR)
        f = (resample_filter){bilinear_weight, 1.0};
    else
        return mr_fail(e, MR_ERR_INPUT, "resample filter %d is not supported (2 bilinear, 3 bicubic)", filter);
    if (out_w <= 0 || out_h <= 0 || in->width <= 0 || in->height <= 0)
        return mr_fail(e, MR_ERR_INPUT, "cannot resize %dx%d to %dx%d", in->width, in->height, out_w, out_h);
    if (out_w == in->width && out_h == in->height) { /* Pillow returns a copy */
        size_t n = (size_t)out_w * out_h * 3;
        out->rgb = mr_alloc(n, e);
        if (!out->rgb) return MR_ERR_INTERNAL;
        memcpy(out->rgb, in->rgb, n);
        out->width = out_w;
        out->height = out_h;
        return MR_OK;
    }
    int *hb = NULL, *vb = NULL;
    int32_t *hk = NULL, *vk = NULL;
    int hks = resample_coeffs(in->width, out_w, &f, &hb, &hk);
    int vks = resample_coeffs(in->height, out_h, &f, &vb, &vk);
    uint8_t *tmp = NULL, *res = NULL;
    int rc = MR_OK;
    if (!hks || !vks) {
        rc = mr_fail(e, MR_ERR_INTERNAL, "out of memory resizing an image");
        goto done;
    }
    const uint8_t *cur = in->rgb;
    int cur_w = in->width;
    if (out_w != in->width) {
        /* Only the rows the vertical pass reads; its bounds shift accordingly. */
        int first = vb[0], last = vb[2 * out_h - 2] + vb[2 * out_h - 1];
        if (out_h == in->height) first = 0, last = in->height;
        else
            for (int i = 0; i < out_h; i++) vb[2 * i] -= first;
        tmp = mr_alloc((size_t)out_w * (last - first) * 3, e);
        if (!tmp) {
            rc = MR_ERR_INTERNAL;
            goto done;
        }
        resample_horizontal(in->rgb + (size_t)first * in->width * 3, in->width, last - first, tmp, out_w, hks, hb, hk);
        cur = tmp;
        cur_w = out_w;
    }
    res = mr_alloc((size_t)out_w * out_h * 3, e);
    if (!res) {
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    if (out_h != in->height)
        resample_vertical(cur, cur_w, res, out_h, vks, vb, vk);
    else
        memcpy(res, cur, (size_t)out_w * out_h * 3);
    out->rgb = res;
    out->width = out_w;
    out->height = out_h;
    res = NULL;
done:
    free(hb);
    free(vb);
    free(hk);
    free(vk);
    free(tmp);
    free(res);
    return rc;
}
