/* AdamW as torch.optim.AdamW (decoupled weight decay, bias-corrected moments),
 * plus the global gradient-norm clipping of torch.nn.utils.clip_grad_norm_. */
#ifndef MLLM4REC_NN_ADAMW_H
#define MLLM4REC_NN_ADAMW_H

#include <stddef.h>

typedef struct adamw_config {
    float lr, beta1, beta2, eps, weight_decay;
} adamw_config;

/* One step on n parameters with moments m, v (zero before the first step).
 * step is the 1-based step count after this update (for bias correction).
 * decay: weight decay for this tensor (torch applies param *= 1 - lr * wd first). */
void adamw_update(float *param, const float *grad, float *m, float *v, size_t n, const adamw_config *c,
                  float weight_decay, long step);

/* L2 norm of all n gradient entries, summed in a fixed order. */
double grad_l2_norm(const float *grad, size_t n);
/* clip_grad_norm_: when norm > max_norm scales grad by max_norm / (norm + 1e-6).
 * Returns the norm before clipping. */
double clip_grad_norm(float *grad, size_t n, double max_norm);

#endif
