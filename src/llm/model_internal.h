/* Shared by the model loaders (GGUF, Hugging Face) and the forward. */
#ifndef MLLM4REC_LLM_MODEL_INTERNAL_H
#define MLLM4REC_LLM_MODEL_INTERNAL_H

#include "mllm4rec/llm.h"
#include "nn/matmul.h"

/* A tensor as found in either file format: ne[0] is the row length. */
typedef struct llm_tensor_ref {
    const char *name;
    ggml_type type;
    int n_dims;
    int64_t ne[4];
    const void *data;
} llm_tensor_ref;

/* Looks a tensor up in the model's file(s); 0 when found, -1 when absent,
 * MR_ERR_INPUT (error set) when present in a type we cannot use. */
int llm_find_tensor(const llm_model *m, const char *name, llm_tensor_ref *out, mr_error *e);
/* A [rows][cols] matrix (ne = {cols, rows}); optional: absent gives data NULL. */
int llm_get_matrix(llm_model *m, const char *name, int64_t rows, int64_t cols, int optional, llm_matrix *out,
                   mr_error *e);
/* A vector of n floats, copied (converted) into memory the model owns. */
int llm_get_vector(llm_model *m, const char *name, int64_t n, int optional, float **out, mr_error *e);
/* Registers memory for llm_free. */
int llm_own(llm_model *m, float *p, mr_error *e);
/* Checks the configuration (positive sizes, heads dividing evenly). */
int llm_check_config(const llm_config *c, const char *where, mr_error *e);
/* Loads the layer tensors under names built by name_of(layer, role). */
int llm_load_layers(llm_model *m, const char *(*name_of)(int layer, const char *role, char *buf, size_t n),
                    mr_error *e);

int llm_load_gguf(llm_model *m, const char *path, mr_error *e);
int llm_load_hf(llm_model *m, const char *dir, mr_error *e);
/* Tokenizer hookup (model_tokenizer.c): from the GGUF's tokenizer.* keys or
 * the folder's tokenizer.json; leaves m->tok NULL with a reason otherwise. */
int llm_load_tokenizer(llm_model *m, mr_error *e);
void llm_tokenizer_free_hook(llm_model *m);

/* The forward's layer steps (model_forward.c), also run by the backward to
 * recompute a layer (LLM_STATE_RECOMPUTE); outputs for rows r0..T-1 only (the
 * last layer's rows above the first logits asked for reach nothing; its k, v
 * all rows). */
void llm_attention_block_forward(llm_state *s, int l, int64_t r0, int64_t T, int64_t n_past);
void llm_ffn_block_forward(llm_state *s, int l, int64_t r0, int64_t T);
/* Adapter lo's dropout: its hash key for a step's seed, and its kept mask bits
 * in a training state (the backward applies them instead of hashing again). */
static inline uint64_t llm_dropout_key(const llm_state *s, const llm_lora *lo) {
    return mr_mix64(s->dropout_seed ^ ((uint64_t)(lo->id + 1) << 40));
}
static inline uint8_t *llm_dropout_mask(const llm_state *s, const llm_lora *lo) {
    return s->acts.drop_mask + (size_t)lo->id * (size_t)((s->acts.T_cap * s->acts.widest + 15) / 16 * 2);
}
/* The largest rank of the adapters attached to m's linears (0 without), and
 * the targets that have one (bit t: target t in some layer). */
int llm_lora_rank_targets(const llm_model *m, unsigned *targets);
/* Maps a training state's pages at its making (one write per page, over the threads), not in its first step. */
void llm_prefault(void *p, size_t bytes);
/* Backward buffers of a training state (model_backward.c). */
int llm_grads_init(llm_state *s, int64_t max_T, mr_error *e);
void llm_grads_free(llm_state *s);

/* Linear t (LLM_LORA_Q .. LLM_LORA_DOWN) of a layer. */
static inline llm_linear *llm_layer_linear(const llm_layer *L, int t) {
    const llm_linear *lin[LLM_LORA_N_TARGETS] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    return (llm_linear *)lin[t];
}

static inline qmat llm_qmat(const llm_matrix *w) {
    qmat q = {w->type, w->rows, w->cols, w->data, w->x8};
    return q;
}

#endif
