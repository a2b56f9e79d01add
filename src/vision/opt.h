/* OPT decoder (transformers' OPTForCausalLM, as BLIP-2 uses it): learned
 * positions read at row position + 2, pre-LayerNorm blocks with biases, q scaled
 * by head_dim^-0.5 after its bias, ReLU feed-forward, a final LayerNorm and the
 * head tied to the token embeddings. Inputs are embeddings, so a caller can put
 * soft prompts (BLIP-2's projected queries) in front of token embeddings. The
 * KV cache grows position by position for greedy generation. */
#ifndef MLLM4REC_VISION_OPT_H
#define MLLM4REC_VISION_OPT_H

#include "vision/vx.h"

typedef struct opt_config {
    int vocab, hidden, ffn, layers, heads, max_pos, word_proj;
    int bos, eos, pad;
    int max_length; /* generation default (transformers' GenerationConfig: 20) */
    /* transformers' logits processors for greedy search, from the config's
     * generation keys (defaults: off) */
    int min_length, no_repeat_ngram_size, forced_eos; /* forced_eos -1 = none */
    float repetition_penalty;
    int pre_ln, enable_bias, remove_final_ln, ln_affine;
    vx_act act;
} opt_config;

/* transformers 4.33 OPTConfig defaults, then the keys of `obj` (a text_config or
 * a whole OPT config.json). Configurations we do not run (post-LN OPT-350m,
 * projections in/out) are refused with the reason. */
int opt_config_parse(opt_config *c, json_t *obj, const char *where, mr_error *e);

typedef struct opt_layer {
    vx_weight q, k, v, o, qb, kb, vb, ob;
    vx_weight ln1_w, ln1_b, fc1, fc1_b, fc2, fc2_b, ln2_w, ln2_b;
} opt_layer;

typedef struct opt_model {
    opt_config c;
    vx_weight embed, pos, lnf_w, lnf_b, head; /* head == embed when tied */
    int head_is_embed;
    opt_layer *layers;
    /* KV cache: [layers][capacity][hidden] */
    int capacity, n_past;
    float *k_cache, *v_cache;
    /* activations for up to max_T positions */
    int max_T;
    float *x, *xn, *q, *att, *ff, *scores, *last;
    vx_scratch scratch;
} opt_model;

/* prefix: "model.decoder." (OPTForCausalLM) or "language_model.model.decoder."
 * (BLIP-2); head_name: the lm_head tensor if stored ("lm_head.weight"), else the
 * head is tied to the embeddings. */
int opt_load(opt_model *m, vx_loader *L, const opt_config *c, const char *prefix, const char *head_name, mr_error *e);
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
