/* LayerNorm over the last dimension, as torch.nn.LayerNorm: biased variance,
 * out = (x - mean) / sqrt(var + eps) * weight + bias. */
#ifndef MLLM4REC_NN_LAYERNORM_H
#define MLLM4REC_NN_LAYERNORM_H

/* out, inp [N, C]; weight, bias [C]; mean, rstd [N] are saved for the backward
 * (either may be NULL when no backward follows). out may equal inp.
 * weight NULL means ones and bias NULL zeros (elementwise_affine=False, bias=False). */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C, float eps);
/* Accumulates: dinp [N, C] += ..., dweight, dbias [C] += ... (each may be NULL).
 * inp is the forward input; mean and rstd come from layernorm_forward.
 * dinp must not alias dout. */
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *mean, const float *rstd, const float *weight, int N, int C);

#endif
