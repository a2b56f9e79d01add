/* The LLM ranker (paper sections 3.4-3.5, DESIGN sections 7-8): candidates from the
 * retriever, prompts, LoRA instruction tuning with a backward pass through the
 * transformer, one-pass verbalizer scoring and evaluation.
 *
 * Layers of this module:
 *   candidates  candidates.tsv of the retriever (read, checked against a dataset)
 *   prompts     the alpaca-short prompt of MLLM4Rec (or LlamaRec's), as text and ids
 *   ranking     the engine's forward (mllm4rec/llm.h) with an attached LoRA adapter:
 *               letter logits at the last position; training through the engine's
 *               backward (llm_train_step_run)
 */
#ifndef MLLM4REC_RANKER_H
#define MLLM4REC_RANKER_H

#include <signal.h>

#include "mllm4rec/base.h"
#include "mllm4rec/dataset.h"
#include "mllm4rec/gguf.h"
#include "mllm4rec/llm.h"
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

/* Captions in a prompt's items: on writes "{title : caption" (mllm4rec) or
 * "title : caption" (llamarec); off the title alone, "{title" or "title" (the paper
 * gives no title-only form of its template: the same item without " : caption", so
 * that the clean ablation changes nothing else); MR_CAPTIONS_TEMPLATE is the
 * template's own choice (mllm4rec on, llamarec off). */
enum { MR_CAPTIONS_TEMPLATE = -1, MR_CAPTIONS_OFF = 0, MR_CAPTIONS_ON = 1 };

typedef struct mr_prompt_opts {
    mr_template templ;
    int captions;         /* MR_CAPTIONS_* (MR_CAPTIONS_TEMPLATE) */
    const char *system;   /* the instruction line (mr_ranker_system) */
    int history;          /* items of history kept (20) */
    int max_title_tokens; /* tokens kept of a title and of a caption (32) */
    int max_tokens;       /* whole prompt in tokens, BOS included (1536) */
} mr_prompt_opts;

void mr_prompt_opts_default(mr_prompt_opts *o);
/* 1 when o's items carry captions (its captions setting, else its template's). */
int mr_prompt_captions_on(const mr_prompt_opts *o);
/* "on" / "off" -> MR_CAPTIONS_ON / OFF; NULL -> MR_CAPTIONS_TEMPLATE; else MR_ERR_USAGE. */
int mr_prompt_parse_captions(const char *s, int *out, mr_error *e);

/* The prompt settings of a ranker run, R/prompt.json ({"template": ..., "captions":
 * "on"|"off"}), written by `ranker train` so that `ranker eval` of the run builds the
 * same prompts unless told otherwise. read: *found 0 (and MR_OK) when the file is absent. */
int mr_prompt_settings_write(const char *dir, const mr_prompt_opts *o, mr_error *e);
int mr_prompt_settings_read(const char *dir, mr_template *templ, int *captions, int *found, mr_error *e);

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

/* ------------------------------------------------------------------ ranking */

/* Everything one-pass verbalizer scoring needs. */
typedef struct mr_ranker {
    const mr_dataset *d;
    const mr_candidates *cands;
    const mr_rank_tok *tok;
    mr_prompt_opts po;      /* po.system must be set */
    int n_cand;             /* candidates ranked per user (20), at most cands->k and 26 */
    int32_t letters[26];    /* verbalizer token of each letter */
    llm_model *m;           /* with the adapter attached (scoring applies it) */
    llm_adapter *lora;      /* the adapter being trained, or NULL */
    llm_state *state;       /* owned: scoring state sized for po.max_tokens */
    int64_t last_tokens;    /* the length of the last prompt mr_ranker_score scored */
} mr_ranker;

/* m: the model with whatever adapter is attached (llm_adapter_attach or
 * llm_lora_apply_file); lora: the attached adapter that training updates (NULL
 * for evaluation only). */
int mr_ranker_init(mr_ranker *r, const mr_dataset *d, const mr_candidates *c, const mr_rank_tok *tok,
                   const mr_prompt_opts *po, int n_cand, llm_model *m, llm_adapter *lora, mr_error *e);
void mr_ranker_free(mr_ranker *r);

/* Loads a model (GGUF or Hugging Face folder) and, when adapter_path is set, its
 * adapter (a GGUF file or a PEFT folder) into *ad, attached: the one way the
 * CLI and services get a ranking model. *have_adapter says whether ad holds one;
 * release with llm_free(m), then llm_adapter_free(ad) when it does. */
int mr_ranker_load_model(llm_model *m, llm_adapter *ad, int *have_adapter, const char *model_path,
                         const char *adapter_path, mr_error *e);
/* Letter scores of one prompt (ids from mr_prompt_ids): scores[n_cand] = the
 * logit of the token of letter i at the last of the n ids (one forward, the last
 * position only); logits: scratch of n_vocab floats, left holding that row. The
 * service's reranking entry point (after mr_ranker_load_model and mr_ranker_init). */
int mr_ranker_score_ids(mr_ranker *r, const int32_t *ids, int64_t n, float *scores, float *logits, mr_error *e);
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
    double seconds;     /* wall time of the ranking (with the gather of every rank's scores) */
    double cpu_seconds; /* CPU time of the busiest rank's own scoring (all its threads) */
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
    int batch;             /* examples per optimizer step (their gradients accumulated) */
    int64_t max_steps;     /* optimizer steps (0: one epoch) */
    int val_every;         /* steps between validations */
    int patience;          /* validations without improvement before stopping */
    int64_t val_users;     /* validation users per check (0: all in the subset) */
    double weight_decay;   /* 0 (the reference's Trainer default) */
    double max_grad_norm;  /* 1.0 */
    uint64_t seed;
    int mode;              /* LLM_STATE_KEEP_ACTS, LLM_STATE_RECOMPUTE, or -1: keep all unless the
                              kept activations would take over a quarter of the machine's memory */
    const char *out_dir;   /* adapter.gguf, train_state.bin, train_log.tsv */
    int resume;
    int64_t stop_after;    /* > 0: stop (resumably) after this many steps, as an interruption would */
    volatile sig_atomic_t *stop; /* the caller's flag (its SIGINT/SIGTERM handler sets it): save the state at the next step and stop */
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
    int interrupted;        /* stopped by o->stop; resume with o->resume */
    double seconds, examples_per_second, tokens_per_second;
    double train_seconds;          /* in forward, backward and optimiser steps (validation excluded) */
    double train_tokens_per_second; /* training prompt tokens / train_seconds */
    double train_cpu_seconds;       /* CPU time in training steps (the busiest rank's under mpirun) */
} mr_rank_train_result;

/* LoRA instruction tuning (DESIGN 7): examples are every prefix of every training
 * sequence (history = its last po.history items) with 19 seeded random negatives
 * not in the prefix plus the true item, shuffled; loss on the label letter and
 * the end token. r->lora must be the adapter being trained (llm_adapter_init, attached). The
 * best adapter by validation NDCG@10 is written to out_dir/adapter.gguf. */
int mr_ranker_train(mr_ranker *r, const mr_rank_train_opts *o, mr_rank_train_result *res, mr_error *e);

#endif
