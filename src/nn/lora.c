#include "nn/lora.h"

#include <cblas.h>

#include "mllm4rec/base.h"

void lora_forward(float *y, float *z, const float *x, const float *a, const float *b, int64_t T, int in, int out,
                  int r, float scale) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, r, in, 1.0f, x, in, a, in, 0.0f, z, r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, out, r, scale, z, r, b, r, 1.0f, y, out);
}

void lora_backward(float *dx, float *da, float *db, float *z, const float *dy, const float *x, const float *a,
                   const float *b, int64_t T, int in, int out, int r, float scale, float gs, float dx_beta) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, r, in, 1.0f, x, in, a, in, 0.0f, z, r);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, r, (int)T, gs * scale, dy, out, z, r, 1.0f, db, r);
    /* z becomes dz */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, r, out, scale, dy, out, b, r, 0.0f, z, r);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, (int)T, gs, z, r, x, in, 1.0f, da, in);
    if (dx) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, in, r, 1.0f, z, r, a, in, dx_beta, dx, in);
}

/* The draws come 16 at a time (one hash gives four 16-bit draws: element i0 + k + r
 * takes bits 16r.. of the hash of i0 + k), over chunks aligned to absolute
 * multiples of 16, so the select below vectorizes; a chunk cut by the slice's
 * ends takes the element-by-element path. */
void lora_dropout_forward(float *out, uint8_t *mask, const float *x, int64_t n, int64_t first, float p, uint64_t key) {
    const uint32_t thresh = (uint32_t)((double)p * 65536.0 + 0.5);
    const float keep_scale = 1.0f / (1.0f - p);
    const int64_t c0 = first / 16 * 16, end = first + n;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i0 = c0; i0 < end; i0 += 16) {
        uint32_t draw[16];
        for (int k = 0; k < 16; k += 4) {
            const uint64_t h = mr_mix64(key + (uint64_t)(i0 + k));
            for (int r = 0; r < 4; r++) draw[k + r] = (uint32_t)(h >> (16 * r)) & 0xffffu;
        }
        if (i0 >= first && i0 + 16 <= end) {
            float *o = out + (i0 - first);
            const float *xi = x + (i0 - first);
            unsigned bits = 0;
            for (int k = 0; k < 16; k++) {
                o[k] = 0.0f + (draw[k] < thresh ? 0.0f : xi[k] * keep_scale);
                bits |= (unsigned)(draw[k] >= thresh) << k;
            }
            if (mask) mask[i0 / 8] = (uint8_t)bits, mask[i0 / 8 + 1] = (uint8_t)(bits >> 8);
            continue;
        }
        for (int64_t i = i0 > first ? i0 : first; i < i0 + 16 && i < end; i++) {
            const int keep = draw[i - i0] >= thresh;
            out[i - first] = 0.0f + (keep ? x[i - first] * keep_scale : 0.0f);
            if (mask) mask[i / 8] = (uint8_t)(keep ? mask[i / 8] | 1u << (i % 8) : mask[i / 8] & ~(1u << (i % 8)));
        }
    }
}

void lora_dropout_apply(float *out, const float *x, const uint8_t *mask, int64_t n, int64_t first, float p, int add) {
    const float keep_scale = 1.0f / (1.0f - p);
    const int64_t c0 = first / 8 * 8, end = first + n;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i0 = c0; i0 < end; i0 += 8) {
        const unsigned bits = mask[i0 / 8];
        if (i0 >= first && i0 + 8 <= end) {
            float *o = out + (i0 - first);
            const float *xi = x + (i0 - first);
            if (add)
                for (int k = 0; k < 8; k++) o[k] += (bits >> k & 1u) ? xi[k] * keep_scale : 0.0f;
            else
                for (int k = 0; k < 8; k++) o[k] = 0.0f + ((bits >> k & 1u) ? xi[k] * keep_scale : 0.0f);
            continue;
        }
        for (int64_t i = i0 > first ? i0 : first; i < i0 + 8 && i < end; i++)
            out[i - first] = (add ? out[i - first] : 0.0f) + ((bits >> (i % 8) & 1u) ? x[i - first] * keep_scale : 0.0f);
    }
}
