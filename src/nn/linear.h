/* Fully connected layer y = x W^T + b over row-major float buffers, in the
 * PyTorch layout (W is [out, in]); linear.c says which kernel does the products. */
#ifndef MLLM4REC_NN_LINEAR_H
#define MLLM4REC_NN_LINEAR_H

/* out [N, n_out] = inp [N, n_in] . weight [n_out, n_in]^T (+ bias [n_out] when not NULL).
 * Row strides (ld_*) let callers read or write column slices of wider buffers;
 * pass 0 for the dense stride (n_in for inp, n_out for out). alpha scales the product,
 * accumulate != 0 adds to out instead of overwriting it (bias is then still added). */
void linear_forward_ex(float *out, int ld_out, const float *inp, int ld_inp, const float *weight,
                       const float *bias, int N, int n_in, int n_out, float alpha, int accumulate);
static inline void linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                                  int N, int n_in, int n_out) {
    linear_forward_ex(out, 0, inp, 0, weight, bias, N, n_in, n_out, 1.0f, 0);
}

/* Backward of linear_forward_ex with scale alpha. Every gradient is ACCUMULATED (+=):
 *   dinp [N, n_in]     += alpha * dout . weight      (skipped when dinp is NULL)
 *   dweight [n_out, n_in] += alpha * dout^T . inp    (skipped when dweight is NULL)
 *   dbias [n_out]      += sum over rows of dout      (skipped when dbias is NULL)
 * The bias sum runs in a fixed order; with the AVX-512 kernel so does every product,
 * so the results do not depend on the thread count (on BLAS, beyond what BLAS does). */
void linear_backward_ex(float *dinp, int ld_dinp, float *dweight, float *dbias, const float *dout,
                        int ld_dout, const float *inp, int ld_inp, const float *weight, int N, int n_in,
                        int n_out, float alpha);
static inline void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                   const float *inp, const float *weight, int N, int n_in, int n_out) {
    linear_backward_ex(dinp, 0, dweight, dbias, dout, 0, inp, 0, weight, N, n_in, n_out, 1.0f);
}

/* dbias [n] += column sums of m [N, n] (row stride ld), deterministic, threaded over columns. */
void column_sums_add(float *dbias, const float *m, int ld, int N, int n);

#endif
