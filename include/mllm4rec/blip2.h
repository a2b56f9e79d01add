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

typedef struct mr_blip2 mr_blip2;

typedef struct mr_blip2_info {
    int image_size, patch_size, vision_tokens, vision_hidden, vision_layers;
    int n_query, qformer_hidden, qformer_layers;
    int text_hidden, text_layers, vocab, bos, eos, max_position;
    int max_new_tokens; /* transformers' default: max_length (20) minus the leading dummy BOS */
    double n_params;
} mr_blip2_info;

/* dir: the model folder. threads <= 0 keeps OpenMP's default. */
int mr_blip2_load(mr_blip2 **out, const char *dir, mr_error *e);
void mr_blip2_free(mr_blip2 *m);
const mr_blip2_info *mr_blip2_get_info(const mr_blip2 *m);
/* The folder's image processor (preprocessor_config.json, else BLIP's defaults
 * at the vision image size). */
const mr_image_processor *mr_blip2_processor(const mr_blip2 *m);

/* The stages, for tests and tools. pixels: [3, S, S].
 * vision: last_hidden_state [T, Ev] (post LayerNorm), and when hidden_states is
 * not NULL, [(layers + 1), T, Ev] = embeddings then each layer's output. */
int mr_blip2_vision(mr_blip2 *m, const float *pixels, float *last_hidden, float *hidden_states, mr_error *e);
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

/* OpenMP and BLAS threads for what follows (<= 0: leave as is). */
void mr_blip2_set_threads(int threads);

#endif
