/* LLM inference engine for Llama-family (`llama`: Llama 1/2/3, TinyLlama,
 * SmolLM, Mistral without sliding window) and `qwen2` decoders, loaded from a
 * GGUF file or a Hugging Face folder (config.json + safetensors).
 *
 * The forward is a chain of per-layer functions over plain float buffers
 * (src/llm/model_forward.c); what a backward pass needs is kept in llm_acts
 * when asked for, and LoRA training is that forward plus the backward of
 * src/llm/model_backward.c over the src/nn kernels: there is no other
 * transformer. Logits are computed only for the positions the caller names. */
#ifndef MLLM4REC_LLM_H
#define MLLM4REC_LLM_H

#include <stdint.h>

#include "mllm4rec/base.h"
#include "mllm4rec/gguf.h"
#include "mllm4rec/safetensors.h"

typedef enum { LLM_ARCH_LLAMA = 0, LLM_ARCH_QWEN2 = 1 } llm_arch;

typedef struct llm_config {
    llm_arch arch;
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int n_ctx_train;      /* declared context length (0 when unknown) */
    float rms_eps;
    double rope_base, rope_freq_scale;
    int rope_dims;        /* rotated dimensions per head */
    int rope_halves;      /* 1: rotate (x[i], x[i+d/2]) (HF, qwen2); 0: adjacent pairs (GGUF llama) */
    int tied;             /* output head is the token embedding */
    int has_qkv_bias;
} llm_config;

/* A stored matrix: rows = outputs, cols = inputs, row-major, any ggml type. */
typedef struct llm_matrix {
    ggml_type type;
    int64_t rows, cols;
    const void *data; /* in the file map, or in the x8 copy of llm_prepare_generation */
    int x8;           /* data is in nn/qdot.h's x8 layout */
} llm_matrix;

/* The LoRA targets: the seven linears of a decoder layer. */
enum { LLM_LORA_Q = 0, LLM_LORA_K, LLM_LORA_V, LLM_LORA_O, LLM_LORA_GATE, LLM_LORA_UP, LLM_LORA_DOWN,
       LLM_LORA_N_TARGETS };

/* A low-rank adapter on one linear: y += scale · (drop(x) Aᵀ) Bᵀ, applied in
 * every forward (trained or not; dropout only in training forwards). */
typedef struct llm_lora {
    int rank, in, out;
    float scale;    /* alpha / rank (times the user scale when applied from a file) */
    float dropout;  /* on the adapter's input in training forwards */
    int id;         /* layer · LLM_LORA_N_TARGETS + target: keys the dropout mask */
    float *a, *b;   /* [rank][in], [out][rank]; a NULL: not adapted */
    float *da, *db; /* gradients, same shapes (NULL for an adapter read to apply) */
} llm_lora;

typedef struct llm_linear {
    llm_matrix w;
    float *bias;    /* [rows] or NULL */
    llm_lora *lora; /* NULL when no adapter */
} llm_linear;

typedef struct llm_layer {
    float *attn_norm;                  /* [n_embd] */
    llm_linear wq, wk, wv, wo;
    float *ffn_norm;                   /* [n_embd] */
    llm_linear w_gate, w_up, w_down;
} llm_layer;

typedef enum { LLM_SRC_GGUF = 0, LLM_SRC_HF = 1 } llm_source;

typedef struct llm_model {
    llm_config cfg;
    llm_source source;
    char *path;
    char *name;          /* general.name or the folder name */
    llm_matrix tok_embd; /* [n_vocab][n_embd] */
    llm_matrix output;   /* [n_vocab][n_embd] (= tok_embd when tied) */
    float *output_norm;  /* [n_embd] */
    float *rope_freqs;   /* [rope_dims/2] or NULL */
    llm_layer *layers;
    /* special tokens (-1 = none) and whether a prompt gets BOS */
    int32_t bos_id, eos_id, eot_id;
    int add_bos;
    struct tokenizer *tok; /* NULL when the files hold no tokenizer */
    char tok_missing_why[256];
    /* owners */
    gguf_file *gguf;
    st_set *st;
    float **owned;
    int n_owned, cap_owned;
    struct llm_adapter **adapters; /* applied from files (llm_lora_apply_file), owned */
    int n_adapters;
} llm_model;

/* Loads a GGUF file or a Hugging Face folder; refuses a model that does not
 * match its file with a message naming the tensor or key. */
int llm_load(llm_model *m, const char *path, mr_error *e);
void llm_free(llm_model *m);
/* For token-by-token generation, which reads every weight once per token: Q4_0
 * layer weights are copied into the x8 layout (nn/qdot.h), whose one-row product
 * runs at memory speed, and the file's pages of them are released. Every result
 * stays the same; it costs a copy of those weights (about 1 s for a 7B model). */
int llm_prepare_generation(llm_model *m, mr_error *e);
/* Short description of the weight type of the layers ("q4_0", "f32", ...). */
const char *llm_weight_type(const llm_model *m);
int64_t llm_n_params(const llm_model *m);

/* Tokenizes text with the model's tokenizer (add_special: BOS as the model's
 * settings say). Error when the model has no tokenizer. *ids is malloc'd. */
int llm_tokenize(const llm_model *m, const char *text, size_t len, int add_special, int32_t **ids, int64_t *n,
                 mr_error *e);
/* Appends the text of one token to a buffer; error without a tokenizer. */
int llm_token_piece(const llm_model *m, int32_t id, char **buf, size_t *len, size_t *cap, mr_error *e);
int llm_is_eog(const llm_model *m, int32_t id);

/* ---- activations and state ---- */

/* Activations of one forward over T positions. Per-layer pointers all alias
 * one layer's buffers unless keep_layers, then each layer has its own (what a
 * backward pass reads). Shapes: d = n_embd, qd = n_head·head_dim,
 * kvd = n_head_kv·head_dim. */
typedef struct llm_acts {
    int64_t T_cap;
    int keep_layers;
    int keep_in;            /* training states: x_in per layer, hidden apart from gate (a backward reads gate) */
    float *x;               /* [T][d] residual stream: embeddings in, last layer's output out */
    float **x_in;           /* [L] -> [T][d] input of layer l */
    float **xn_attn;        /* [L] -> [T][d] rmsnorm(x_in)·attn_norm */
    float **rstd_attn;      /* [L] -> [T] */
    float **q;              /* [L] -> [T][qd] after bias and rope */
    float **att;            /* [L] -> [T][qd] attention output (input of wo) */
    float **att_stats;      /* [L] -> [T][n_head][2] softmax max, 1/sum per row (training states) */
    float **att_probs;      /* [L] -> the causal blocks of the softmax (LLM_STATE_KEEP_ACTS; nn/attention.h) */
    float **x_mid;          /* [L] -> [T][d] x_in + wo·att */
    float **xn_ffn;         /* [L] -> [T][d] (one for all layers unless gate or up is adapted) */
    float **rstd_ffn;       /* [L] -> [T] */
    float **gate, **up;     /* [L] -> [T][n_ff] */
    float **hidden;         /* [L] -> [T][n_ff] silu(gate)·up (overwrites gate unless keep_in; per layer if down is adapted) */
    float *lora_tmp;        /* [T][lora_cap] */
    int lora_cap;           /* largest adapter rank the state holds */
    unsigned lora_targets;  /* targets with adapters when the state was made (xn_ffn, hidden kept per layer for theirs) */
    float *lora_x;          /* [T][widest = max(d, qd, n_ff)] dropped adapter input (training states) */
    int64_t widest;
    uint8_t *drop_mask;     /* [L·7][T·widest bits] each adapter's dropout keep bits (training states) */
    int64_t r_last;         /* the last forward computed the last layer's rows r_last.. only */
    float *xn_out;          /* [n_out][d] final norm of the positions asked for */
    float *rstd_out;        /* [n_out] */
    float *rope_cs;         /* [T][rope_dims/2][2] */
} llm_acts;

/* KV cache: k, v [n_layer or 1][n_ctx][kvd]. With one_layer the cache holds
 * only the current layer (scoring a prompt in one pass, no generation after). */
typedef struct llm_kv {
    int64_t n_ctx, n_past;
    int one_layer;
    float *k, *v;
    uint16_t *k16, *v16; /* LLM_STATE_KV_F16: the cache [n_layer][n_ctx][kvd] in f16; k, v then hold one layer */
} llm_kv;

/* LLM_STATE_KEEP_ACTS keeps every layer's activations for llm_train_step;
 * LLM_STATE_RECOMPUTE keeps only each layer's input and recomputes a layer in
 * the backward (n_layer·T·d floats instead of every activation). */
/* LLM_STATE_KV_F16 (generation only) keeps the cache in f16, llama.cpp's default: a
 * generation step reads half the bytes of it, and attention sees keys and values
 * rounded to f16. */
enum { LLM_STATE_GENERATE = 0, LLM_STATE_SCORE = 1, LLM_STATE_KEEP_ACTS = 2, LLM_STATE_RECOMPUTE = 4, LLM_STATE_KV_F16 = 8 };
/* states that train: their forwards keep float activations (nn/matmul.h: matmul_forward_float) */
#define LLM_TRAIN_STATE (LLM_STATE_KEEP_ACTS | LLM_STATE_RECOMPUTE)

struct llm_grads;

typedef struct llm_state {
    const llm_model *m;
    llm_kv kv;
    llm_acts acts;
    struct llm_grads *g; /* backward buffers (training states) */
    int flags;
    int train;            /* dropout on the adapters' inputs in this forward */
    uint64_t dropout_seed;
    float *scratch;  /* dequantization tiles and attention scores */
    int64_t scratch_floats;
    int n_threads;
} llm_state;

/* n_ctx: positions the cache holds (LLM_STATE_GENERATE) or the longest single
 * forward (LLM_STATE_SCORE). max_T: longest single forward call. */
int llm_state_init(llm_state *s, const llm_model *m, int64_t n_ctx, int64_t max_T, int flags, mr_error *e);
void llm_state_free(llm_state *s);
void llm_state_reset(llm_state *s); /* empties the KV cache */

/* Runs T tokens at positions kv.n_past .. n_past+T-1 (appending to the cache)
 * and writes logits[n_out][n_vocab] for the positions out_pos[i] in 0..T-1. */
int llm_forward(llm_state *s, const int32_t *tokens, int64_t T, const int64_t *out_pos, int n_out, float *logits,
                mr_error *e);
/* The same from input embeddings embd[T][n_embd] (copied into acts.x). */
int llm_forward_embd(llm_state *s, const float *embd, int64_t T, const int64_t *out_pos, int n_out, float *logits,
                     mr_error *e);
/* Row `id` of the token embedding as floats. */
void llm_embed_token(const llm_model *m, int32_t id, float *out);

/* ---- LoRA: one adapter type, its files, training ---- */

/* "q", "k", "v", "o", "gate", "up", "down" */
const char *llm_lora_target_name(int target);
/* "q,v" -> bit mask of LLM_LORA_* */
int llm_lora_parse_targets(const char *s, unsigned *mask, mr_error *e);

/* An adapter for every layer of a model (one owner of A, B and their gradients). */
typedef struct llm_adapter {
    int r;
    float alpha, dropout;
    unsigned targets;  /* union over layers of the adapted LLM_LORA_* */
    int n_layer;
    llm_lora *mats;    /* [n_layer][LLM_LORA_N_TARGETS]; a == NULL where not adapted */
    float *buf;        /* A, B of all, then dA, dB of all */
    int64_t n_params;
} llm_adapter;

/* Every layer adapted at `targets`: A drawn as PEFT does (kaiming-uniform,
 * a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))), B zero; gradients zero. */
int llm_adapter_init(llm_adapter *ad, const llm_model *m, int r, float alpha, float dropout, unsigned targets,
                     uint64_t seed, mr_error *e);
void llm_adapter_free(llm_adapter *ad);
llm_lora *llm_adapter_get(llm_adapter *ad, int layer, int target); /* NULL when not adapted */
void llm_adapter_zero_grad(llm_adapter *ad);
/* Applies the adapter in m's forwards at scale user_scale · alpha / r (the
 * adapter's matrices are used in place, so training updates show at once);
 * refuses a weight that already has one, naming it. */
int llm_adapter_attach(llm_model *m, llm_adapter *ad, float user_scale, mr_error *e);
void llm_adapter_detach(llm_model *m, const llm_adapter *ad);

/* llama.cpp's converter orders the rows of each llama q/k head in adjacent RoPE
 * pairs (row 2i+j) where Hugging Face keeps halves (row j·hd/2+i). Permutes the
 * rows (of `width` floats) of n_heads heads: to_pairs 1 halves -> pairs, 0 back. */
void llm_lora_permute_qk(float *dst, const float *src, int n_heads, int hd, int width, int to_pairs);

/* llama.cpp's GGUF LoRA adapter: general.type "adapter", adapter.type "lora",
 * adapter.lora.alpha (absent: scale 1), tensors blk.N.<weight>.weight.lora_a
 * (ne {in, r}) and .lora_b (ne {r, out}) of any type the engine reads, for any
 * subset of layers and targets. q/k B rows are in llama.cpp's pair order in the
 * file and in m's order in memory. The writer adds mllm4rec.* keys. */
int llm_adapter_read_gguf(llm_adapter *ad, const llm_model *m, const char *path, mr_error *e);
int llm_adapter_write_gguf(const llm_adapter *ad, const llm_model *m, const char *path, mr_error *e);
/* PEFT folder: adapter_config.json + adapter_model.safetensors (names
 * base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight [r, in] and
 * lora_B.weight [out, r]) in Hugging Face row order. */
int llm_adapter_read_peft(llm_adapter *ad, const llm_model *m, const char *dir, mr_error *e);
int llm_adapter_write_peft(const llm_adapter *ad, const llm_model *m, const char *dir, const char *base_model,
                           mr_error *e);
/* Reads a GGUF adapter and attaches it; the model owns it from then on. */
int llm_lora_apply_file(llm_model *m, const char *path, float user_scale, mr_error *e);

/* One training step on the engine: the forward keeps its activations (state
 * made with LLM_STATE_KEEP_ACTS or LLM_STATE_RECOMPUTE, n_ctx >= T), then the
 * backward (src/nn kernels) forms gradients only for the attached adapters'
 * A, B (added, times grad_scale) and, when asked, the input embeddings. */
typedef struct llm_train_step {
    const int32_t *ids;  /* T token ids, or */
    const float *emb;    /* [T][n_embd] input embeddings */
    int64_t T;
    const int64_t *loss_pos;     /* cross-entropy terms: position p predicts target (mean over terms) */
    const int32_t *loss_target;
    int n_loss;                  /* 1..LLM_MAX_LOSS_POS */
    int train;                   /* dropout on the adapters' inputs, seeded per step */
    uint64_t dropout_seed;
    float loss;                  /* out */
    float *logits;               /* optional out [n_loss][n_vocab] */
    float *d_emb;                /* optional out [T][n_embd] */
} llm_train_step;
#define LLM_MAX_LOSS_POS 64
int llm_train_step_run(llm_state *s, llm_train_step *st, float grad_scale, mr_error *e);
/* Bytes a training state of these flags would hold for max_T positions. */
double llm_train_state_bytes(const llm_model *m, int64_t max_T, int flags);

/* ---- generation ---- */
typedef struct llm_sampler {
    float temp;   /* 0: greedy (lowest id wins ties) */
    int top_k;    /* 0: all */
    float top_p;  /* 1: all */
    uint64_t seed;
} llm_sampler;

/* Callback per generated token; return nonzero to stop. */
typedef int (*llm_token_cb)(int32_t id, void *user);
/* Feeds the prompt, then samples up to n_predict tokens (stops at an
 * end-of-generation token, which is not passed on). n_ctx: cache size; kv_f16:
 * the cache in f16 (LLM_STATE_KV_F16, llama.cpp's default), else in floats. */
int llm_generate(const llm_model *m, const int32_t *prompt, int64_t n_prompt, int n_predict, const llm_sampler *smp,
                 int64_t n_ctx, int kv_f16, llm_token_cb cb, void *user, mr_error *e);
/* One sampling step over logits[n_vocab] (rng advanced); work: 2·n_vocab floats. */
int32_t llm_sample(const float *logits, int n_vocab, const llm_sampler *smp, mr_rng *rng, float *work);

/* ---- perplexity (llama.cpp's definition) ---- */
typedef struct llm_ppl_result {
    double ppl, mean_nll;
    int n_chunks;
    int64_t n_scored;
} llm_ppl_result;
/* Chunks of n_ctx tokens; each chunk's first token replaced by BOS when the
 * model adds BOS; positions n_ctx/2 .. n_ctx-2 each predict the next token.
 * chunk_cb (may be NULL) gets the running perplexity after each chunk. */
int llm_perplexity(const llm_model *m, const int32_t *tokens, int64_t n_tokens, int n_ctx,
                   void (*chunk_cb)(int chunk, double running_ppl, void *user), void *user, llm_ppl_result *out,
                   mr_error *e);

/* ---- random models (benchmarks and tests) ---- */
typedef struct llm_random_opts {
    llm_arch arch;
    int n_layer, n_embd, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
    int tied;
    ggml_type type;        /* type of the 2-D weights; norms stay F32 */
    const char *vocab_path; /* GGUF whose tokenizer keys are copied, or NULL */
    uint64_t seed;
    double rope_base;
    float rms_eps;
} llm_random_opts;
/* Fills opts with a named shape: "tiny", "smollm2-135m", "llama2-7b". */
int llm_random_shape(llm_random_opts *o, const char *name, mr_error *e);
int llm_random_write(const llm_random_opts *o, const char *out_path, mr_error *e);

#endif
