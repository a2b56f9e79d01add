/* Rotary position embedding. Rotation angle of pair i at position p:
 * theta = p · freq_scale · base^(-2i/rot_dims) / factor[i]. GGUF `llama` files
 * rotate adjacent pairs (x[2i], x[2i+1]) (llama.cpp's converter permuted q and
 * k rows for that); `qwen2` GGUF and every Hugging Face checkpoint rotate the
 * halves (x[i], x[i + rot_dims/2]). */
#ifndef MLLM4REC_NN_ROPE_H
#define MLLM4REC_NN_ROPE_H

#include <stdint.h>

typedef struct rope_params {
    int rot_dims;             /* rotated dimensions of a head (usually head_dim) */
    double base;              /* rope theta */
    double freq_scale;        /* 1 / linear scaling factor */
    const float *freq_factors; /* [rot_dims/2] divisors (Llama 3 rope_freqs), or NULL */
    int halves;               /* 1: pairs (i, i + rot_dims/2); 0: adjacent pairs */
} rope_params;

/* cos_sin[T][rot_dims/2][2] for positions pos0 .. pos0+T-1. */
void rope_table(float *cos_sin, const rope_params *p, int64_t T, int64_t pos0);

/* x[T][n_heads][head_dim] rotated in place with the table. */
void rope_forward(float *x, const float *cos_sin, const rope_params *p, int64_t T, int n_heads, int head_dim);
/* The transpose (rotation by -theta): the gradient through rope_forward. */
void rope_backward(float *dx, const float *cos_sin, const rope_params *p, int64_t T, int n_heads, int head_dim);

#endif
