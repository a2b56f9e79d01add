/* What every retriever architecture shares, whatever its family: LlamaRec's
 * weight-decay rule, the truncated normal of the reference initialisations and
 * the vectorised keyed dropout row of LRURec, GRU4Rec and NARM (the attention
 * models key their masks per element: attn_common.h). Internal to src/retriever. */
#ifndef MLLM4REC_RETRIEVER_COMMON_H
#define MLLM4REC_RETRIEVER_COMMON_H

#include <stdint.h>
#include <string.h>

#include "mllm4rec/base.h"

/* LlamaRec's AdamW groups: no decay on names holding "bias" or "layer_norm". */
static inline int rt_decays(const char *name) { return !strstr(name, "bias") && !strstr(name, "layer_norm"); }

/* Truncated normal (mean 0, std, cut at +-bound) by rejection: the distribution
 * of the references' inverse-CDF truncated_normal_init (not their numbers: those
 * come from torch's generator). */
static inline float rt_trunc_normal(mr_rng *r, double std, double bound) {
    for (;;) {
        double x = mr_rng_normal(r) * std;
        if (x >= -bound && x <= bound)
            return (float)x;
    }
}

/* scale [C]: one row of dropout scales, 0 where murmur3's 32-bit finaliser of
 * row_key + j * 0x9e3779b9 falls below threshold (p * 2^32), else keep_scale
 * (1 / (1 - p)). Column j depends only on the row key: it vectorizes, unlike
 * mr_mix64 per element. */
static inline void rt_dropout_row32(float *scale, int C, uint32_t row_key, uint32_t threshold, float keep_scale) {
#pragma omp simd
    for (int j = 0; j < C; j++) {
        uint32_t x = row_key + (uint32_t)j * 0x9e3779b9u;
        x ^= x >> 16;
        x *= 0x85ebca6bu;
        x ^= x >> 13;
        x *= 0xc2b2ae35u;
        x ^= x >> 16;
        scale[j] = x < threshold ? 0.0f : keep_scale;
    }
}

#endif
