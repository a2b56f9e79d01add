/* The caption stage: BLIP-2 captions for item images, kept in the dataset's
 * items.tsv and in a resumable cache captions.tsv (header "source_id<TAB>caption",
 * one row per image processed, an empty caption when none was produced; tabs
 * and line breaks in captions become spaces). */
#ifndef MLLM4REC_CAPTION_H
#define MLLM4REC_CAPTION_H

#include "mllm4rec/base.h"
#include "mllm4rec/blip2.h"

typedef struct tokenizer tokenizer;

/* Images per vision-encoder forward when --batch is not given (docs/caption.md
 * has the measurement behind it). */
#define MR_CAPTION_DEFAULT_BATCH 4
#define MR_CAPTION_DEFAULT_BATCH_S "4"

typedef struct mr_captioner {
    mr_blip2 *model;
    tokenizer *tok;     /* NULL when the folder has no tokenizer files */
    int32_t *prompt;    /* prompt ids after the query embeddings; NULL = [bos] */
    int n_prompt;
    int max_new_tokens; /* <= 0: the model's default (19) */
    float *pixels;
    int32_t *ids;
} mr_captioner;

/* Loads the model folder and its tokenizer (when present). prompt_text (needs
 * the tokenizer; BOS is put first as OPT's tokenizer does) or prompt_ids (taken
 * as they are) may be given, not both. need_text: fail unless a tokenizer is
 * there (captions as text need one). */
int mr_captioner_open(mr_captioner *c, const char *model_dir, const mr_blip2_options *opt, const char *prompt_text,
                      const int32_t *prompt_ids, int n_prompt_ids, int max_new_tokens, int need_text, mr_error *e);
void mr_captioner_close(mr_captioner *c);

/* Captions one image file: *ids (into c's buffer) and *n_ids get the new ids
 * (eos included when generated); *text (may be NULL; freed by the caller) the
 * caption: the ids without eos decoded without special tokens, cleaned as
 * transformers' decode(skip_special_tokens=True) does, tabs and line breaks made
 * spaces, trimmed. */
int mr_caption_file(mr_captioner *c, const char *image_path, const int32_t **ids, int *n_ids, char **text,
                    mr_error *e);
/* Ids to caption text as above. */
int mr_caption_text(const mr_captioner *c, const int32_t *ids, int n_ids, char **text, mr_error *e);

typedef struct mr_caption_stats {
    int64_t items;     /* items in the dataset */
    int64_t captioned; /* captioned in this run */
    int64_t cached;    /* taken from captions.tsv (an earlier run or an import) */
    int64_t missing;   /* no image file found */
    int64_t failed;    /* image could not be decoded or captioned */
    int64_t unknown;   /* import / map rows whose source id is not an item */
    double seconds;
} mr_caption_stats;

/* Captions every item of the dataset folder whose source id has no row in
 * captions.tsv yet: its image is images_dir/<source_id>.jpg|.jpeg|.png|.webp, or
 * the file that map_path (TSV "source_id<TAB>file", file relative to images_dir)
 * names. Images go through the vision encoder in batches of the model's
 * max_batch while a helper thread decodes the next batch; a caption depends
 * only on its image. Rows are appended to captions.tsv as they are made, in
 * item order (a killed run loses at most the batch in progress; an incomplete
 * last row is dropped on resume); items.tsv is rewritten atomically at the end.
 * Progress goes to stderr. */
int mr_caption_dataset(mr_captioner *c, const char *dataset_dir, const char *images_dir, const char *map_path,
                       mr_caption_stats *st, mr_error *e);
/* Imports a captions TSV made elsewhere (same header): its captions go into
 * items.tsv and into the dataset's captions.tsv (rows replace older ones). */
int mr_caption_import(const char *dataset_dir, const char *tsv_path, mr_caption_stats *st, mr_error *e);

#endif
