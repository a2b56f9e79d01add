/* The LLM ranker (paper sections 3.4-3.5, DESIGN sections 7-8): candidates from the
 * retriever, prompts, LoRA instruction tuning with a backward pass through the
 * transformer, one-pass verbalizer scoring and evaluation.
 *
 * Layers of this module:
 *   candidates  candidates.tsv of the retriever (read, checked against a dataset)
 *   prompts     the alpaca-short prompt of MLLM4Rec (or LlamaRec's), as text and ids
 *   lora_train  a Llama-family transformer over frozen (possibly quantized) weights
 *               with fp32 LoRA adapters: forward that keeps activations, backward
 *               that forms gradients for the adapters (and the input embeddings) only
 */
#ifndef MLLM4REC_RANKER_H
#define MLLM4REC_RANKER_H

#include "mllm4rec/base.h"
#include "mllm4rec/dataset.h"
#include "mllm4rec/gguf.h"
#include "mllm4rec/metrics.h"

/* ------------------------------------------------------------------ candidates */

enum { MR_SPLIT_VAL = 0, MR_SPLIT_TEST = 1 };

typedef struct mr_cand_row {
    int split;       /* MR_SPLIT_VAL or MR_SPLIT_TEST */
    int32_t user_id; /* dense user id of sequences.tsv */
    int32_t label;   /* the true item */
    int32_t *items;  /* k item ids in rank order (into the file's shared buffer) */
    float *scores;   /* k scores */
} mr_cand_row;

typedef struct mr_candidates {
    int k;            /* candidates per row (the same for every row) */
    int64_t n_rows;
    mr_cand_row *rows;
    int32_t *item_buf;
    float *score_buf;
    int32_t max_user;
    int64_t *index[2]; /* [split][user_id] -> row index or -1; max_user + 1 entries */
} mr_candidates;

/* Reads RUN/candidates.tsv: header `split\tuser_id\tlabel\titems\tscores`, items and
 * scores separated by spaces or commas. Errors name the file, line and column. */
int mr_candidates_load(mr_candidates *c, const char *path, mr_error *e);
void mr_candidates_free(mr_candidates *c);
/* Row of one user in one split, or NULL. */
const mr_cand_row *mr_candidates_get(const mr_candidates *c, int split, int32_t user_id);
/* Checks that users and items exist in the dataset and that labels are the
 * dataset's val / test items. */
int mr_candidates_check(const mr_candidates *c, const mr_dataset *d, mr_error *e);
/* 1 when the row's label is among its first k candidates (the ranked subset). */
int mr_cand_row_hit(const mr_cand_row *r, int k);

/* ------------------------------------------------------------------ prompts */

/* The tokenizer as the ranker needs it; filled from the model's tokenizer (see
 * mr_rank_tok_from_model) or by tests. */
typedef struct mr_rank_tok {
    void *ctx;
    /* text -> ids (no BOS/EOS added, specials not parsed); *ids malloc'd */
    int (*encode)(void *ctx, const char *text, int32_t **ids, int64_t *n, mr_error *e);
    /* ids -> text as the model's decoder writes it; *text malloc'd */
    int (*decode)(void *ctx, const int32_t *ids, int64_t n, char **text, mr_error *e);
    /* the first max_tokens tokens of text decoded back as the reference does (for
     * SentencePiece: pieces joined, leading space dropped; an incomplete UTF-8
     * sequence at the end dropped); *out malloc'd */
    int (*truncate)(void *ctx, const char *text, int max_tokens, char **out, mr_error *e);
    int32_t bos; /* -1 when the model adds none */
    int32_t eos;
} mr_rank_tok;

/* The model's tokenizer (mllm4rec/tokenizer.h) as the ranker uses it: BOS when the
 * vocabulary adds one, EOS, encode without specials, truncate as tokenizer_truncate. */
struct tokenizer;
void mr_rank_tok_from_tokenizer(mr_rank_tok *rt, const struct tokenizer *t);

typedef enum { MR_TEMPLATE_MLLM4REC = 0, MR_TEMPLATE_LLAMAREC = 1 } mr_template;

typedef struct mr_prompt_opts {
    mr_template templ;
    const char *system;   /* the instruction line (mr_ranker_system) */
    int history;          /* items of history kept (20) */
    int max_title_tokens; /* tokens kept of a title and of a caption (32) */
    int max_tokens;       /* whole prompt in tokens, BOS included (1536) */
} mr_prompt_opts;

void mr_prompt_opts_default(mr_prompt_opts *o);

/* The instruction line: the built-in role + instruction of a dataset role key
 * ("ml-100k", "beauty", "toys", "games"; paper/roles.md), or role_text followed by
 * one space and the "items" instruction. role_text wins when given; for the
 * llamarec template LlamaRec's own instruction. *out malloc'd. */
int mr_ranker_system(mr_template templ, const char *role_key, const char *role_text, char **out, mr_error *e);

/* History of a user for a split: the items before the predicted one (for test the
 * validation item included), the last `history` of them. Returns a pointer into
 * the dataset's sequence and the count. */
int mr_prompt_history(const mr_dataset *d, int32_t user_id, int split, int history, const int32_t **hist,
                      int *n_hist, int32_t *target, mr_error *e);

/* The prompt text before any token cut: instruction, history, candidates, ending
 * with "### Response:\n" (then `response` when not NULL, for training). */
int mr_prompt_text(const mr_dataset *d, const mr_rank_tok *tok, const mr_prompt_opts *o, const int32_t *hist,
                   int n_hist, const int32_t *cands, int n_cands, const char *response, char **out, mr_error *e);

/* Prompt text -> ids as the reference tokenizes it: BOS (when the model has one)
 * + the text's tokens cut from the left so that the whole is at most max_tokens. */
int mr_prompt_ids(const mr_rank_tok *tok, const char *text, int max_tokens, int32_t **ids, int64_t *n,
                  mr_error *e);

/* Ids of a training example: the prompt with the label letter tokenized as one
 * text (BOS first), cut to max_tokens, EOS appended, and cut again from the left
 * as the reference's collate does. The loss terms are then position n-3 -> ids[n-2]
 * (the letter) and n-2 -> ids[n-1] (EOS). */
int mr_prompt_train_ids(const mr_rank_tok *tok, const char *text_with_letter, int max_tokens, int32_t **ids,
                        int64_t *n, mr_error *e);

/* The token the tokenizer produces for each letter A.. right after
 * "### Response:\n" (n letters, at most 26). */
int mr_verbalizer_tokens(const mr_rank_tok *tok, int n, int32_t *out, mr_error *e);

/* ------------------------------------------------------------------ LoRA training model */

/* A frozen weight matrix in ggml layout: `rows` rows of `cols` elements
 * (rows = out features, cols = in features; y = x W^T). */
typedef struct mr_lt_weight {
    ggml_type type;
    int64_t rows, cols;
    const void *data;
} mr_lt_weight;

enum { MR_LT_Q = 0, MR_LT_K, MR_LT_V, MR_LT_O, MR_LT_GATE, MR_LT_UP, MR_LT_DOWN, MR_LT_N_TARGETS };
/* "q", "k", "v", "o", "gate", "up", "down" */
const char *mr_lora_target_name(int target);
/* "q,v" -> bit mask of targets */
int mr_lora_parse_targets(const char *s, unsigned *mask, mr_error *e);

typedef enum { MR_ROPE_NORM = 0 /* adjacent pairs (GGUF llama) */, MR_ROPE_NEOX = 1 /* halves (HF, qwen2) */ } mr_rope_mode;

typedef struct mr_lt_layer {
    const float *attn_norm, *ffn_norm; /* [dim] */
    const float *bq, *bk, *bv;         /* qwen2 biases or NULL */
    mr_lt_weight w[MR_LT_N_TARGETS];   /* q [dim,dim] k,v [kv_dim,dim] o [dim,dim] gate,up [ffn,dim] down [dim,ffn] */
} mr_lt_layer;

typedef struct mr_lt_model {
    const char *arch; /* "llama" or "qwen2" (names the adapter files' architecture) */
    int n_layer, dim, n_head, n_kv_head, head_dim, ffn, vocab;
    float norm_eps, rope_theta, rope_scale; /* rope_scale: linear position scaling factor (1) */
    mr_rope_mode rope_mode;
    const float *rope_factors; /* [head_dim/2] frequency divisors (Llama 3's rope_freqs) or NULL */
    mr_lt_weight tok_embd; /* [vocab, dim] */
    mr_lt_weight output;   /* [vocab, dim] (the embedding when tied) */
    const float *out_norm; /* [dim] */
    mr_lt_layer *layers;
} mr_lt_model;

/* Checks shapes and types; the matrix types this module can read. */
int mr_lt_model_check(const mr_lt_model *m, mr_error *e);
/* Rows r0..r1-1 of a weight as fp32 into out ((r1 - r0) x cols). */
int mr_lt_weight_rows(const mr_lt_weight *w, int64_t r0, int64_t r1, float *out, mr_error *e);

/* A training view of an engine model (weights stay in the engine's file maps;
 * m->layers is allocated: release with mr_lt_model_release). */
struct llm_model;
int mr_lt_model_from_llm(mr_lt_model *m, const struct llm_model *src, mr_error *e);
void mr_lt_model_release(mr_lt_model *m);

/* Loads a Hugging Face Llama folder or .safetensors (fp32/fp16/bf16) into a training
 * model that owns fp32 copies (for tests and small models). */
typedef struct mr_lt_owned {
    mr_lt_model m;
    float *buf;
} mr_lt_owned;
int mr_lt_load_hf(mr_lt_owned *o, const char *dir, mr_error *e);
void mr_lt_owned_free(mr_lt_owned *o);

/* One LoRA pair: y += scale * (drop(x) A^T) B^T. */
typedef struct mr_lora_mat {
    int in, out;
    float *A, *B;   /* [r, in], [out, r] */
    float *dA, *dB; /* gradients, same shapes */
} mr_lora_mat;

typedef struct mr_lora {
    int r;
    float alpha, dropout;
    unsigned targets; /* bit mask of MR_LT_* */
    int n_layer;
    mr_lora_mat *mats; /* n_layer * MR_LT_N_TARGETS; in = out = 0 when not a target */
    float *buf;        /* owns A, B, dA, dB of all */
    int64_t n_params;
} mr_lora;

/* A zero, B zero, then A drawn as PEFT's default (kaiming-uniform, a = sqrt(5):
 * U(-1/sqrt(in), 1/sqrt(in))), B zero. */
int mr_lora_init(mr_lora *l, const mr_lt_model *m, int r, float alpha, float dropout, unsigned targets, uint64_t seed,
                 mr_error *e);
void mr_lora_free(mr_lora *l);
mr_lora_mat *mr_lora_get(mr_lora *l, int layer, int target);
void mr_lora_zero_grad(mr_lora *l);

/* Training workspace: activations of a forward that the backward needs. mode:
 *   MR_LT_KEEP_ALL   every layer's activations kept (fastest backward);
 *   MR_LT_RECOMPUTE  only each layer's input kept, the layer recomputed in the
 *                    backward (n_layer x T x dim instead of all activations);
 *   MR_LT_INFERENCE  forward only (scoring), no backward buffers. */
enum { MR_LT_KEEP_ALL = 0, MR_LT_RECOMPUTE = 1, MR_LT_INFERENCE = 2 };
typedef struct mr_lt_ws mr_lt_ws;
mr_lt_ws *mr_lt_ws_new(const mr_lt_model *m, const mr_lora *l, int max_T, int mode, mr_error *e);
void mr_lt_ws_free(mr_lt_ws *w);
/* Approximate bytes a workspace of this mode would hold (to choose a mode). */
double mr_lt_ws_estimate(const mr_lt_model *m, const mr_lora *l, int max_T, int mode);
/* Bytes held by the workspace (for reports). */
size_t mr_lt_ws_bytes(const mr_lt_ws *w);

typedef struct mr_lt_step {
    /* input: token ids, or embeddings [T, dim] when emb is not NULL */
    const int32_t *ids;
    const float *emb;
    int T;
    /* cross-entropy terms: position p predicts target (mean over terms) */
    const int *loss_pos;
    const int32_t *loss_target;
    int n_loss;
    /* dropout on the LoRA input, seeded per step (0 = off, as in evaluation) */
    int train;
    uint64_t dropout_seed;
    /* outputs */
    float loss;
    float *logits;    /* optional [n_loss, vocab]: logits at the loss positions */
    float *d_emb;     /* optional [T, dim]: d loss / d input embeddings */
} mr_lt_step;

/* Forward + backward: fills step->loss (and logits) and ADDS d loss / d A, d B into
 * the adapters' gradients (scaled by grad_scale, e.g. 1 / accumulation steps). */
int mr_lt_forward_backward(const mr_lt_model *m, mr_lora *l, mr_lt_ws *w, mr_lt_step *step, float grad_scale,
                           mr_error *e);
/* Forward only, logits at the given positions ([n_pos, vocab]); l may be NULL. */
int mr_lt_forward(const mr_lt_model *m, const mr_lora *l, mr_lt_ws *w, const int32_t *ids, const float *emb, int T,
                  const int *pos, int n_pos, float *logits, mr_error *e);

/* ------------------------------------------------------------------ adapter files */

/* llama.cpp's GGUF LoRA adapter: general.type "adapter", adapter.type "lora",
 * adapter.lora.alpha, tensors blk.N.{attn_q,attn_k,attn_v,attn_output,ffn_gate,
 * ffn_up,ffn_down}.weight.lora_a (ne [in, r], data = A) and .lora_b (ne [r, out],
 * data = B), f32. GGUF llama files rotate adjacent pairs (the converter permuted q
 * and k); when the training model rotates halves (a Hugging Face llama), the q/k B
 * rows are permuted to llama.cpp's order on writing and back on reading. Extra
 * keys mllm4rec.* record the training settings (ignored by llama.cpp). */
int mr_lora_write_gguf(const mr_lora *l, const mr_lt_model *m, const char *path, mr_error *e);
/* Loads an adapter for model m (shapes checked); dropout 0. */
int mr_lora_read_gguf(mr_lora *l, const mr_lt_model *m, const char *path, mr_error *e);
/* PEFT folder: adapter_config.json + adapter_model.safetensors with names
 * base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight ([r, in]) and
 * lora_B.weight ([out, r]), in Hugging Face order (q/k rows un-permuted for a GGUF
 * llama base). */
int mr_lora_write_peft(const mr_lora *l, const mr_lt_model *m, const char *dir, const char *base_model, mr_error *e);
int mr_lora_read_peft(mr_lora *l, const mr_lt_model *m, const char *dir, mr_error *e);

/* ------------------------------------------------------------------ ranking */

/* Everything one-pass verbalizer scoring needs. */
typedef struct mr_ranker {
    const mr_dataset *d;
    const mr_candidates *cands;
    const mr_rank_tok *tok;
    mr_prompt_opts po;      /* po.system must be set */
    int n_cand;             /* candidates ranked per user (20), at most cands->k and 26 */
    int32_t letters[26];    /* verbalizer token of each letter */
    const mr_lt_model *m;
    mr_lora *lora;          /* NULL: the base model (training updates it in place) */
    mr_lt_ws *ws;           /* owned; sized for po.max_tokens */
    struct llm_model *engine; /* when set (mr_ranker_use_engine), scoring runs the engine's forward */
    struct llm_state *engine_state;
} mr_ranker;

int mr_ranker_init(mr_ranker *r, const mr_dataset *d, const mr_candidates *c, const mr_rank_tok *tok,
                   const mr_prompt_opts *po, int n_cand, const mr_lt_model *m, mr_lora *lora, mr_error *e);
void mr_ranker_free(mr_ranker *r);
/* Scores with the inference engine's forward over lm (with whatever adapters were
 * applied to it, e.g. by llm_lora_apply_file) instead of the training forward; r->lora
 * is then ignored. lm must be the model r->m views. */
int mr_ranker_use_engine(mr_ranker *r, struct llm_model *lm, mr_error *e);
/* The prompt of a user (text before any token cut, and the ids the model sees). */
int mr_ranker_prompt(const mr_ranker *r, int split, int32_t user_id, char **text, int32_t **ids, int64_t *n,
                     mr_error *e);
/* Scores of the user's first n_cand candidates (one forward, last position only);
 * when label_idx >= 0 and loss is not NULL, also the cross-entropy of that letter's
 * token over the whole vocabulary. */
int mr_ranker_score(mr_ranker *r, int split, int32_t user_id, float *scores, int label_idx, double *loss,
                    mr_error *e);

/* Ranking metrics of one split (ks 1, 5, 10, 20):
 *   subset        the ranker on the users whose true item is among their first n_cand
 *   retr_subset   the retriever's order on those same users
 *   overall       subset combined with the retriever on the other users (DESIGN 7)
 *   retr_overall  the retriever on every user with candidates */
typedef struct mr_rank_eval {
    mr_metrics subset, retr_subset, retr_other, overall, retr_overall;
    int64_t n_users, n_subset;
    double letter_loss; /* mean cross-entropy of the true letter over the whole vocabulary (subset) */
    double seconds;
} mr_rank_eval;

/* max_users > 0 evaluates only the first max_users subset users (validation during
 * training); progress on stderr when show_progress. */
int mr_ranker_evaluate(mr_ranker *r, int split, int64_t max_users, int show_progress, mr_rank_eval *ev, mr_error *e);
void mr_rank_eval_free(mr_rank_eval *ev);
/* {"<split>": {"subset": {...}, "overall": {...}, "retriever_subset": {...},
 *  "retriever_overall": {...}, "users": N, "subset_users": S}} written atomically. */
int mr_rank_eval_write_json(const mr_rank_eval *ev, const char *split_name, const char *path, mr_error *e);
/* A Markdown table: ranker and retriever side by side, subset and overall. */
void mr_rank_eval_print(FILE *out, const mr_rank_eval *ev, const char *split_name);

/* ------------------------------------------------------------------ training */

typedef struct mr_rank_train_opts {
    int lora_r;            /* 8 */
    float lora_alpha;      /* 32 */
    float lora_dropout;    /* 0.05 */
    unsigned targets;      /* q, v */
    double lr;             /* 1e-4, linear warm-up then linear decay to 0 at max_steps */
    int warmup;            /* 100 */
    int micro_batch;       /* examples per forward group (memory only; sequential here) */
    int batch;             /* examples per optimizer step */
    int64_t max_steps;     /* optimizer steps (0: one epoch) */
    int val_every;         /* steps between validations */
    int patience;          /* validations without improvement before stopping */
    int64_t val_users;     /* validation users per check (0: all in the subset) */
    double weight_decay;   /* 0 (the reference's Trainer default) */
    double max_grad_norm;  /* 1.0 */
    uint64_t seed;
    int mode;              /* MR_LT_KEEP_ALL, MR_LT_RECOMPUTE, or -1: keep all unless the kept
                              activations would take over a quarter of the machine's memory */
    const char *out_dir;   /* adapter.gguf, train_state.bin, train_log.tsv */
    int resume;
    int64_t stop_after;    /* > 0: stop (resumably) after this many steps, as an interruption would */
    volatile int *interrupted; /* set (e.g. by SIGINT/SIGTERM): save the state at the next step and stop */
    int peft;              /* also write out_dir/peft at each new best */
    const char *base_model_name;
} mr_rank_train_opts;

void mr_rank_train_opts_default(mr_rank_train_opts *o);

typedef struct mr_rank_train_result {
    int64_t steps;
    double first_train_loss, last_train_loss; /* mean over the first / last validation interval */
    double val_ndcg10_before, best_val_ndcg10, val_loss_before, best_val_loss;
    int64_t best_step;
    int stopped_early;
    int interrupted;        /* stopped by o->interrupted; resume with o->resume */
    double seconds, examples_per_second, tokens_per_second;
} mr_rank_train_result;

/* LoRA instruction tuning (DESIGN 7): examples are every prefix of every training
 * sequence (history = its last po.history items) with 19 seeded random negatives
 * not in the prefix plus the true item, shuffled; loss on the label letter and
 * the end token. r->lora must be the adapter being trained (mr_lora_init). The
 * best adapter by validation NDCG@10 is written to out_dir/adapter.gguf. */
int mr_ranker_train(mr_ranker *r, const mr_rank_train_opts *o, mr_rank_train_result *res, mr_error *e);

#endif
