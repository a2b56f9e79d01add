/* The training skeleton that the retriever trainer (src/retriever/train.c) and the
 * ranker trainer (src/rank/train.c) share: what both loops need to be resumable and
 * to leave a learning curve, in one place.
 *
 *   checkpoint  one safetensors file: named tensors (parameters, AdamW moments,
 *               best-so-far, an epoch order) and string metadata (a format tag, the
 *               step counters, best-so-far, the random generator's state, the flags
 *               the run was made with); written atomically (st_writer_write)
 *   log         JSON lines (train.jsonl) appended through mr_append_file; the
 *               checkpoint records the log's size, and a resumed run cuts the log
 *               back to it, so lines written after the checkpoint are not repeated
 *   optimizer   gradient clipping and AdamW are nn/adamw's (clip_grad_norm,
 *               adamw_update); the skeleton keeps their moments in the checkpoint
 *
 * Each trainer keeps its own loop: init (open or start), step, validate (append a
 * log line, write the checkpoint), finish. The interrupt flag is the caller's. */
#ifndef MLLM4REC_NN_TRAINER_H
#define MLLM4REC_NN_TRAINER_H

#include <jansson.h>
#include <stdint.h>

#include "mllm4rec/base.h"
#include "mllm4rec/safetensors.h"

/* ---- checkpoint: writing ---- */
typedef struct tr_ckpt_writer {
    st_writer *w;
    int bad;        /* a metadata or tensor call failed: commit reports it */
    mr_error err;   /* the first failure */
} tr_ckpt_writer;

int tr_ckpt_begin(tr_ckpt_writer *c, const char *format, mr_error *e);
/* Metadata key = printf(fmt, ...). Numbers that must survive exactly use %.17g / %lld. */
void tr_ckpt_meta(tr_ckpt_writer *c, const char *key, const char *fmt, ...) MR_PRINTF(3, 4);
/* A tensor [n] (the data must stay valid until commit). */
void tr_ckpt_f32(tr_ckpt_writer *c, const char *name, const float *x, int64_t n);
void tr_ckpt_i32(tr_ckpt_writer *c, const char *name, const int32_t *x, int64_t n);
/* The generator's state as metadata rng0..rng3. */
void tr_ckpt_rng(tr_ckpt_writer *c, const mr_rng *r);
/* Writes the file atomically and frees the writer (also on failure). */
int tr_ckpt_commit(tr_ckpt_writer *c, const char *path, mr_error *e);

/* ---- checkpoint: reading ---- */
typedef struct tr_ckpt {
    st_file f;
    json_t *meta;
    char format[64];
} tr_ckpt;

/* Opens path and checks its format tag against formats (NULL-terminated); *which is
 * the index of the matching one. what names the trainer in the error ("retriever"). */
int tr_ckpt_open(tr_ckpt *c, const char *path, const char *const *formats, int *which, const char *what, mr_error *e);
void tr_ckpt_close(tr_ckpt *c);
/* A metadata string; NULL when absent. */
const char *tr_ckpt_str(const tr_ckpt *c, const char *key);
/* A metadata number; an error naming the file and key when absent or not a number. */
int tr_ckpt_num(const tr_ckpt *c, const char *key, double *out, mr_error *e);
int tr_ckpt_i64(const tr_ckpt *c, const char *key, int64_t *out, mr_error *e);
/* The run must continue with the flags it started with: key's value must be want.
 * optional: a checkpoint without the key (an older version) is accepted. */
int tr_ckpt_same(const tr_ckpt *c, const char *key, const char *want, int optional, mr_error *e);
/* Tensor name, exactly n F32 values, all finite. */
int tr_ckpt_read_f32(const tr_ckpt *c, const char *name, float *dst, int64_t n, mr_error *e);
/* Tensor name, exactly n I32 values. */
int tr_ckpt_read_i32(const tr_ckpt *c, const char *name, int32_t *dst, int64_t n, mr_error *e);
int tr_ckpt_read_rng(const tr_ckpt *c, mr_rng *r, mr_error *e);

/* ---- the JSON-lines log ---- */
/* A new run: path becomes an empty file. A resumed run: path is cut back to bytes,
 * the size the checkpoint recorded (a missing log is fine when bytes is 0). */
int tr_log_start(const char *path, int resumed, long bytes, mr_error *e);
/* Appends line (consumed) as one compact JSON line; *bytes becomes the log's size. */
int tr_log_append(const char *path, json_t *line, long *bytes, mr_error *e);

#endif
