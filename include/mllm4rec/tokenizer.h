/* Tokenizers of the Llama family (SentencePiece BPE with byte fallback) and of
 * GPT-2 / OPT / Qwen2 / SmolLM / Llama 3 / DeepSeek (byte-level BPE with
 * pre-tokenizer regexes), loaded from GGUF metadata or a Hugging Face folder.
 * Encoding follows llama.cpp (llama-vocab.cpp) exactly; the reference vectors
 * in reference/tokenizer are the test.
 *
 * A tokenizer is read-only after loading: encode and decode may run from
 * several threads at once. */
#ifndef MLLM4REC_TOKENIZER_H
#define MLLM4REC_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "mllm4rec/base.h"
#include "mllm4rec/gguf.h"

typedef struct tokenizer tokenizer;

typedef enum {
    TOK_KIND_SPM = 1, /* SentencePiece BPE: tokenizer.ggml.model "llama" */
    TOK_KIND_BPE = 2  /* byte-level BPE:    tokenizer.ggml.model "gpt2" */
} tokenizer_kind;

/* Token types as stored in tokenizer.ggml.token_type. */
typedef enum {
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,      /* bos/eos/...: text matched only with TOK_PARSE_SPECIAL */
    TOK_TYPE_USER_DEFINED = 4, /* added tokens: always matched as one token */
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6          /* <0xNN> byte-fallback tokens */
} tokenizer_token_type;

/* ---- loading ---- */

/* Loads from a .gguf file or from a Hugging Face folder (tokenizer.json, or
 * vocab.json + merges.txt; tokenizer_config.json when present). */
int tokenizer_load(tokenizer **out, const char *path, mr_error *e);
/* From the tokenizer.ggml.* metadata of an open GGUF file (copies what it needs,
 * so the file may be closed afterwards). */
int tokenizer_load_gguf(tokenizer **out, const gguf_file *g, mr_error *e);
/* From a Hugging Face folder. A folder without tokenizer files is an error
 * saying so; tokenizer_hf_available tells callers beforehand. */
int tokenizer_load_hf(tokenizer **out, const char *dir, mr_error *e);
int tokenizer_hf_available(const char *dir);
void tokenizer_free(tokenizer *t);

/* An in-memory vocabulary (what a GGUF holds). Used by the loaders, tests and
 * tools that make vocabularies. Arrays are copied by tokenizer_create. */
typedef struct tokenizer_vocab {
    tokenizer_kind kind;
    const char *pre;               /* BPE pre-tokenizer name ("gpt-2", "llama-bpe", "qwen2",
                                      "deepseek-coder", "default", ...); NULL = "default" */
    const char *const *regexes;    /* or, when not NULL, an explicit list of split regexes
                                      (overrides pre; n_regexes 0 = no split) */
    int n_regexes;
    int32_t n_tokens;
    const char *const *tokens;     /* token texts, as stored in the GGUF */
    const uint32_t *token_lens;    /* byte lengths; NULL = NUL-terminated */
    const float *scores;           /* SPM merge priorities; NULL = all 0 */
    const int32_t *types;          /* tokenizer_token_type per token; NULL = all NORMAL
                                      (SPM: "<0xNN>" texts are BYTE) */
    int64_t n_merges;              /* "left right" strings (BPE), by rank */
    const char *const *merges;
    const uint32_t *merge_lens;    /* NULL = NUL-terminated */
    const char *const *merges_right;    /* when not NULL, merges[i] is only the left part and */
    const uint32_t *merge_right_lens;   /* this the right one (tokens that hold spaces) */
    int32_t bos, eos, unk, pad;    /* -1 = none */
    int add_bos, add_eos;          /* add them when encoding with TOK_ADD_SPECIAL */
    int add_space_prefix;          /* SPM: prepend a space to the text (llama.cpp default 1) */
    int ignore_merges;             /* BPE: a word that is a token is not merged (Llama 3) */
    int byte_level_prefix_space;   /* BPE: HF ByteLevel add_prefix_space */
    int spm_merge_ranks;           /* SPM from tokenizer.json: pairs ranked by `merges`
                                      instead of by the score of the merged token */
} tokenizer_vocab;

/* Fills v with llama.cpp's defaults for its kind (bos/eos/unk/pad -1, SPM adds
 * BOS and a space prefix, BPE adds nothing). */
void tokenizer_vocab_defaults(tokenizer_vocab *v, tokenizer_kind kind);
int tokenizer_create(tokenizer **out, const tokenizer_vocab *v, mr_error *e);

/* ---- encoding ---- */

enum {
    TOK_ADD_SPECIAL = 1,   /* add BOS / EOS as the vocabulary asks */
    TOK_PARSE_SPECIAL = 2  /* control-token text (e.g. "</s>") becomes that token */
};
/* Encodes len bytes of text (any bytes; invalid UTF-8 is treated as U+FFFD by
 * the byte-level pre-tokenizer, as llama.cpp does). *ids is newly allocated
 * (free it), *n_ids its length. */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int flags, int32_t **ids, size_t *n_ids,
                     mr_error *e);

/* ---- decoding ---- */

enum {
    TOK_DECODE_SPECIAL = 1,           /* write the text of control/unknown tokens */
    TOK_DECODE_KEEP_LEADING_SPACE = 2 /* SPM: keep the space the encoder prefixed */
};
/* Joins the pieces of ids into bytes (*out newly allocated, NUL-terminated).
 * Byte tokens become raw bytes; for SentencePiece vocabularies with a space
 * prefix the first piece's leading space is dropped (as sentencepiece and
 * Hugging Face do; also after a BOS, where llama.cpp's detokenizer keeps it),
 * so decode(encode(text)) == text. An id outside the vocabulary is an error.
 * For streaming output use tokenizer_token_piece, which never drops anything. */
int tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, int flags, char **out, size_t *out_len,
                     mr_error *e);
/* Encodes text (no BOS/EOS, specials as plain text), keeps the first max_tokens
 * tokens and decodes them as above, dropping an incomplete UTF-8 sequence at the
 * end (the ranker's title/caption cut). *n_kept (may be NULL) receives the
 * number of tokens kept. */
int tokenizer_truncate(const tokenizer *t, const char *text, size_t len, size_t max_tokens, char **out,
                       size_t *out_len, size_t *n_kept, mr_error *e);

/* ---- tokens ---- */

int32_t tokenizer_n_vocab(const tokenizer *t);
tokenizer_kind tokenizer_get_kind(const tokenizer *t);
int32_t tokenizer_bos(const tokenizer *t); /* -1 = none */
int32_t tokenizer_eos(const tokenizer *t);
int32_t tokenizer_unk(const tokenizer *t);
int32_t tokenizer_pad(const tokenizer *t);
int tokenizer_adds_bos(const tokenizer *t);
int tokenizer_adds_eos(const tokenizer *t);
/* The vocabulary text of a token ("▁Hello", "ĠHello", "<0x0A>"); NULL when out of range. */
const char *tokenizer_token_text(const tokenizer *t, int32_t id, size_t *len);
/* The bytes a token decodes to ("Hello" with its space: " Hello"; a byte token:
 * that byte). Control and unknown tokens give "" unless special. NULL when out of range. */
const char *tokenizer_token_piece(const tokenizer *t, int32_t id, int special, size_t *len);
tokenizer_token_type tokenizer_token_type_of(const tokenizer *t, int32_t id);
/* The id whose vocabulary text is exactly these bytes, or -1. */
int32_t tokenizer_piece_to_id(const tokenizer *t, const char *text, size_t len);
/* True for tokens that end generation (eos, and <|eot_id|>, <|im_end|>, <|endoftext|>, ...). */
int tokenizer_is_eog(const tokenizer *t, int32_t id);

/* ---- writing ---- */

/* Writes a Hugging Face tokenizer.json (atomically) that tokenizer_load_hf reads
 * back to a tokenizer that encodes the same: BPE model with vocab and merges
 * (SentencePiece vocabularies get byte_fallback, the ▁ normalizer and every
 * mergeable pair ranked by the score of its result), pre-tokenizer, decoder,
 * post-processor for BOS/EOS, added_tokens. Also writes tokenizer_config.json
 * (bos/eos/unk/pad tokens, add_bos_token, add_eos_token) in the same folder. */
int tokenizer_write_hf_json(const tokenizer *t, const char *path, mr_error *e);
/* Adds the tokenizer.ggml.* keys for this vocabulary to a GGUF being written. */
int tokenizer_write_gguf(const tokenizer *t, gguf_writer *w, mr_error *e);

#endif
