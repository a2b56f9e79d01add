/* GELU in the exact erf form (PyTorch's nn.GELU() default):
 *   gelu(x) = 0.5 x (1 + erf(x / sqrt 2)),
 * and in the tanh form (nn.GELU(approximate="tanh"), transformers' "gelu_new"
 * and "gelu_pytorch_tanh"):
 *   gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
#ifndef MLLM4REC_NN_GELU_H
#define MLLM4REC_NN_GELU_H

#include <stddef.h>

/* out [n] = gelu(inp [n]); out may equal inp only when no backward follows. */
void gelu_forward(float *out, const float *inp, size_t n);
/* dinp [n] += dout * gelu'(inp). */
/* The erf used (absolute error below 5e-7 against the true erf). */
float gelu_erf(float x);
void gelu_backward(float *dinp, const float *dout, const float *inp, size_t n);

/* out [n] = gelu_tanh(inp [n]); out may equal inp only when no backward follows. */
void gelu_tanh_forward(float *out, const float *inp, size_t n);
/* dinp [n] += dout * gelu_tanh'(inp). */
void gelu_tanh_backward(float *dinp, const float *dout, const float *inp, size_t n);

#endif
