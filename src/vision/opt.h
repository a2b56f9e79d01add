/* OPT decoder (transformers' OPTForCausalLM, as BLIP-2 uses it): learned
 * positions read at row position + 2, pre-LayerNorm blocks with biases, q scaled
 * by head_dim^-0.5 after its bias, ReLU feed-forward, a final LayerNorm and the
 * head tied to the token embeddings. Inputs are embeddings, so a caller can put
 * soft prompts (BLIP-2's projected queries) in front of token embeddings. The
 * KV cache grows position by position for greedy generation.
 *
 * Built on src/nn: layernorm_forward, matmul_forward over the weight matrices
 * (converted at load to the decoder type: Q8_0 by default, Q4_0, BF16 or F32,
 * or used as stored), the causal attention_forward over the cache. */
#ifndef MLLM4REC_VISION_OPT_H
#define MLLM4REC_VISION_OPT_H

#include "vision/weights.h"

typedef struct opt_config {
    int vocab, hidden, ffn, layers, heads, max_pos, word_proj;
    int bos, eos, pad;
    int max_length; /* generation default (transformers' GenerationConfig: 20) */
    /* transformers' logits processors for greedy search, from the config's
     * generation keys (defaults: off) */
    int min_length, no_repeat_ngram_size, forced_eos; /* forced_eos -1 = none */
    float repetition_penalty;
    int pre_ln, enable_bias, remove_final_ln, ln_affine;
    vw_act act;
} opt_config;

/* transformers 4.33 OPTConfig defaults, then the keys of `obj` (a text_config or
 * a whole OPT config.json). Configurations we do not run (post-LN OPT-350m,
 * projections in/out) are refused with the reason. */
int opt_config_parse(opt_config *c, json_t *obj, const char *where, mr_error *e);

typedef struct opt_layer {
    vw_mat q, k, v, o, fc1, fc2;
    float *qb, *kb, *vb, *ob, *fc1_b, *fc2_b; /* NULL without enable_bias */
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
} opt_layer;

typedef struct opt_model {
    opt_config c;
    vw_mat embed, head; /* head.q == embed.q when tied (head_is_embed) */
    float *pos, *lnf_w, *lnf_b;
    int head_is_embed;
    opt_layer *layers;
    /* KV cache: [layers][capacity][hidden] */
    int capacity, n_past;
    float *k_cache, *v_cache;
    /* activations for up to max_T positions */
    int max_T;
    float *x, *xn, *q, *att, *ff, *last, *att_scratch;
    int64_t att_scratch_floats;
    float *mm_scratch; /* matmul_forward's tiles */
    int64_t mm_scratch_floats;
    /* 0: quantized weights multiply 8-bit activations (nn's integer path);
     * 1: float activations with the weights dequantized (matmul_forward_float). */
    int float_act;
} opt_model;

/* prefix: "model.decoder." (OPTForCausalLM) or "language_model.model.decoder."
 * (BLIP-2); head_name: the lm_head tensor if stored ("lm_head.weight"), else the
 * head is tied to the embeddings. type: the matrices' type (token embeddings and
 * head included), VW_AS_STORED to use them as stored. Vectors are F32. */
int opt_load(opt_model *m, vw_loader *L, const opt_config *c, const char *prefix, const char *head_name,
             ggml_type type, mr_error *e);
void opt_free(opt_model *m);

/* Empties the cache and makes room for `capacity` positions. */
int opt_begin(opt_model *m, int capacity, mr_error *e);
/* Token embeddings of ids: out [n, hidden]. Ids must be < vocab. */
int opt_embed(opt_model *m, const int32_t *ids, int n, float *out, mr_error *e);
/* Runs T new positions (after those in the cache) from their input embeddings
 * [T, hidden] and appends them to the cache. logits: [T, vocab] when all_logits,
 * else [vocab] of the last position only (may be NULL for none). */
int opt_forward(opt_model *m, const float *embeds, int T, float *logits, int all_logits, mr_error *e);

#endif
