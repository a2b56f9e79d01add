#include "nn/lora.h"

#include <cblas.h>

void lora_forward(float *y, float *z, const float *x, const float *a, const float *b, int64_t T, int in, int out,
                  int r, float scale) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, r, in, 1.0f, x, in, a, in, 0.0f, z, r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, out, r, scale, z, r, b, r, 1.0f, y, out);
}

void lora_backward(float *dx, float *da, float *db, float *z, const float *dy, const float *x, const float *a,
                   const float *b, int64_t T, int in, int out, int r, float scale, float gs) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, r, in, 1.0f, x, in, a, in, 0.0f, z, r);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, r, (int)T, gs * scale, dy, out, z, r, 1.0f, db, r);
    /* z becomes dz */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, r, out, scale, dy, out, b, r, 0.0f, z, r);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, (int)T, gs, z, r, x, in, 1.0f, da, in);
    if (dx) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, in, r, 1.0f, z, r, a, in, 1.0f, dx, in);
}
