/* BLIP-2 (transformers' Blip2ForConditionalGeneration with an OPT language
 * model) read from a Hugging Face folder: config.json, model.safetensors or
 * sharded model-*.safetensors with model.safetensors.index.json (F32, F16 or
 * BF16), preprocessor_config.json (optional). Runs the vision transformer, the
 * Q-Former, the language projection and greedy generation with OPT as
 * transformers 4.33's generate() does for BLIP-2. */
#ifndef MLLM4REC_BLIP2_H
#define MLLM4REC_BLIP2_H

#include "mllm4rec/base.h"
#include "mllm4rec/image.h"
#include "mllm4rec/safetensors.h"

typedef struct mr_blip2 mr_blip2;

typedef struct mr_blip2_info {
    int image_size, patch_size, vision_tokens, vision_hidden, vision_layers, vision_ffn;
    int n_query, qformer_hidden, qformer_layers;
    int text_hidden, text_layers, vocab, bos, eos, max_position;
    int max_new_tokens; /* transformers' default: max_length (20) minus the leading dummy BOS */
    double n_params;
} mr_blip2_info;

/* decoder_type: a ggml type (include mllm4rec/gguf.h) for OPT's matrices, its
 * token embeddings and head: converted at load with nn's quantizer, or used
 * from the file without a copy when stored so; MR_BLIP2_AS_STORED keeps what
 * the file holds. The vision encoder and Q-Former keep their float weights as
 * stored. max_batch: images per vision forward at most (its buffers). */
#define MR_BLIP2_AS_STORED (-1)
typedef struct mr_blip2_options {
    int decoder_type; /* default GGML_TYPE_Q8_0 */
    int max_batch;    /* default 1 */
    /* 0 (default): OPT's quantized matrices multiply 8-bit activations in
     * integers (nn's fast path); 1: float activations with the weights
     * dequantized, so only the weights' rounding remains (for measurements). */
    int decoder_float_act;
} mr_blip2_options;
void mr_blip2_options_default(mr_blip2_options *o);
/* "q8_0", "q4_0", "bf16", "f16", "f32" or "stored" to a decoder type; -1 when unknown. */
int mr_blip2_decoder_type_parse(const char *name, int *type);

/* dir: the model folder; opt NULL: the defaults. */
int mr_blip2_load(mr_blip2 **out, const char *dir, const mr_blip2_options *opt, mr_error *e);
const mr_blip2_options *mr_blip2_get_options(const mr_blip2 *m);
void mr_blip2_free(mr_blip2 *m);
const mr_blip2_info *mr_blip2_get_info(const mr_blip2 *m);
/* The folder's image processor (preprocessor_config.json, else BLIP's defaults
 * at the vision image size). */
const mr_image_processor *mr_blip2_processor(const mr_blip2 *m);

/* The stages, for tests and tools. pixels: [3, S, S].
 * vision: last_hidden_state [T, Ev] (post LayerNorm), and when hidden_states is
 * not NULL, [(layers + 1), T, Ev] = embeddings then each layer's output. */
int mr_blip2_vision(mr_blip2 *m, const float *pixels, float *last_hidden, float *hidden_states, mr_error *e);
/* The vision encoder over n_images (1 .. max_batch) images at once:
 * pixels [n][3, S, S] -> last_hidden [n][T, Ev]. Each image's result is the
 * one mr_blip2_vision gives it alone. */
int mr_blip2_vision_batch(mr_blip2 *m, const float *pixels, int n_images, float *last_hidden, mr_error *e);
/* Q-Former over image features [T, Ev]: out [n_query, Hq]; hidden_states
 * (optional) [(layers + 1), n_query, Hq]. */
int mr_blip2_qformer(mr_blip2 *m, const float *image_embeds, float *out, float *hidden_states, mr_error *e);
/* language_projection: [n_query, Hq] -> [n_query, text_hidden]. */
int mr_blip2_project(mr_blip2 *m, const float *query_out, float *soft_prompt, mr_error *e);
/* OPT over [soft_prompt ; embed(ids)] from position 0: logits [(n_query + n_ids), vocab]. */
int mr_blip2_lm_logits(mr_blip2 *m, const float *soft_prompt, const int32_t *ids, int n_ids, float *logits,
                       mr_error *e);

/* Greedy caption ids for one image: prompt ids follow the query embeddings
 * (NULL / 0 means transformers' default prompt [bos]); max_new_tokens <= 0 uses
 * the default. Writes the new ids (the eos included when it came) to out
 * (capacity max_new_tokens, or info.max_new_tokens) and their count. */
int mr_blip2_generate(mr_blip2 *m, const float *pixels, const int32_t *prompt, int n_prompt, int max_new_tokens,
                      int32_t *out, int *n_out, mr_error *e);

/* generate from one image's vision features [T, Ev] (Q-Former, projection, OPT). */
int mr_blip2_generate_image(mr_blip2 *m, const float *image_embeds, const int32_t *prompt, int n_prompt,
                            int max_new_tokens, int32_t *out, int *n_out, mr_error *e);

/* The language part of generate: from the soft prompt [n_query, text_hidden]. */
int mr_blip2_generate_soft(mr_blip2 *m, const float *soft_prompt, const int32_t *prompt, int n_prompt,
                           int max_new_tokens, int32_t *out, int *n_out, mr_error *e);

/* Seconds of the last generation's prefill (query + prompt positions and the
 * first token) and of its further tokens. */
void mr_blip2_last_timing(const mr_blip2 *m, double *prefill_s, double *decode_s);

/* ---- random models for tests and benchmarks ---- */

typedef struct mr_blip2_shape {
    int image_size, patch_size, v_hidden, v_layers, v_heads, v_inter;
    int q_hidden, q_layers, q_heads, q_inter, cross_freq, n_query;
    int t_hidden, t_layers, t_heads, t_ffn, vocab, max_pos, bos, eos, pad;
} mr_blip2_shape;

/* "tiny" (the sizes of reference/hf/blip2) or "blip2-opt-2.7b" (Salesforce's
 * shape: ViT-g 39 layers, Q-Former 12 layers, OPT-2.7B); -1 when unknown. */
int mr_blip2_shape_preset(const char *name, mr_blip2_shape *s);
/* Writes config.json, preprocessor_config.json and random weights (uniform with
 * standard deviation init_std for matrices, embeddings and biases; LayerNorm
 * weights 1 and biases 0) in dtype ST_F32, ST_F16 or ST_BF16. Above shard_bytes
 * (0: never) the weights go into model-0000i-of-0000n.safetensors shards with
 * model.safetensors.index.json, as Hugging Face writes them. Deterministic in
 * seed, whatever the thread count. */
int mr_blip2_write_random(const mr_blip2_shape *s, const char *dir, st_dtype dtype, uint64_t seed, float init_std,
                          uint64_t shard_bytes, mr_error *e);

/* OpenMP and BLAS threads for what follows (<= 0: leave as is). */
void mr_blip2_set_threads(int threads);

#endif
