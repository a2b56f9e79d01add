/* STOSA's Wasserstein self-attention (Fan et al. 2022, zfan20/STOSA modules.py,
 * DistSelfAttention): queries and keys are diagonal Gaussians (mean, covariance),
 * the score is minus their squared 2-Wasserstein distance scaled by 1/sqrt(hd),
 *   S_ij = -(|qm_i - km_j|² + |sqrt(qc_i) - sqrt(kc_j)|²) / sqrt(hd),
 * masked (padding keys; later keys when causal), softmaxed, dropped out, and the
 * covariance output mixes the value covariances with the SQUARED probabilities:
 *   oc_i = Σ_j (P_ij drop_ij)² vc_j.
 * (The mean output P v of the reference is not produced: STOSA's encoder never
 * uses it, see retriever/stosa.c.) Covariances must be positive (ELU + 1). */
#ifndef MLLM4REC_NN_ATTENTION_WASSERSTEIN_H
#define MLLM4REC_NN_ATTENTION_WASSERSTEIN_H

#include <stddef.h>
#include <stdint.h>

/* Scratch floats the forward and backward need for r rows of stride ld. */
size_t attention_wasserstein_scratch_floats(int r, int ld);

/* Per head h (columns h*hd .. h*hd+hd-1, row stride ld): probs [n_head][r][r]
 * kept for the backward, oc [r][ld]. drop [n_head][r][r] or NULL. A query that
 * sees no valid key gets zero probabilities and a zero output. scratch:
 * attention_wasserstein_scratch_floats(r, ld). */
void attention_wasserstein_forward(float *oc, float *probs, const float *qm, const float *km, const float *qc,
                                   const float *kc, const float *vc, int ld, const uint8_t *key_valid,
                                   const float *drop, int r, int n_head, int hd, int causal, float *scratch);

/* Gradients, OVERWRITTEN in the head columns: dqm, dkm, dqc, dkc, dvc [r][ld];
 * doc [r][ld]; probs, drop and causal as the forward had them; scratch as the
 * forward's. */
void attention_wasserstein_backward(float *dqm, float *dkm, float *dqc, float *dkc, float *dvc, const float *doc,
                                    const float *probs, const float *qm, const float *km, const float *qc,
                                    const float *kc, const float *vc, int ld, const float *drop, int r, int n_head,
                                    int hd, int causal, float *scratch);

#endif
