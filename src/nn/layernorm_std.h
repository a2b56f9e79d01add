/* The layer norm of the BERT4Rec / SASRec reference code (its own LayerNorm
 * class, not torch.nn.LayerNorm): the UNBIASED standard deviation, with eps
 * added to the deviation rather than under the root:
 *   out = weight * (x - mean) / (std + eps) + bias,  std = sqrt(Σ (x - mean)² / (C - 1)). */
#ifndef MLLM4REC_NN_LAYERNORM_STD_H
#define MLLM4REC_NN_LAYERNORM_STD_H

/* out, inp [N, C] (C >= 2); weight, bias [C]; mean, std [N] kept for the
 * backward (either may be NULL when none follows). out may equal inp only when
 * no backward follows. */
void layernorm_std_forward(float *out, float *mean, float *std, const float *inp, const float *weight,
                           const float *bias, int N, int C, float eps);
/* Accumulates: dinp [N, C] += ..., dweight, dbias [C] += ... (each may be NULL);
 * inp is the forward input, mean and std from the forward. dinp must not alias dout. */
void layernorm_std_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *mean, const float *std, const float *weight, int N, int C, float eps);

#endif
