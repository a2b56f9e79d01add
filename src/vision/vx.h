/* Private forward-only helpers of the BLIP-2 code (vision encoder, Q-Former,
 * OPT decoder): weights read from safetensors in any float dtype, and the fp32
 * layers they feed. Kept inside src/vision/ until the shared kernels of src/nn/
 * cover weights that stay in F16/BF16 until use. */
#ifndef MLLM4REC_VISION_VX_H
#define MLLM4REC_VISION_VX_H

#include "mllm4rec/base.h"
#include "mllm4rec/safetensors.h"

#include <jansson.h>

/* A weight tensor: either fp32 values we own or point to (aligned F32 in the
 * map), or raw F16/BF16 in the map that is converted block by block right
 * before each product (DESIGN section 4), so a 7.7 GB BF16 model stays 7.7 GB. */
typedef struct vx_weight {
    const float *f32;   /* NULL when raw */
    float *owned;       /* freed with the model */
    const void *raw;    /* F16/BF16 data in the map when f32 is NULL */
    st_dtype dtype;
    int64_t rows, cols; /* a matrix [rows, cols] (a vector has rows 1) */
} vx_weight;

/* A loader over a set of safetensors files with a name prefix. Matrices whose
 * fp32 copy would push the converted total above convert_limit stay raw. */
typedef struct vx_loader {
    const st_set *set;
    uint64_t converted_bytes, convert_limit;
} vx_loader;

/* When not UINT64_MAX, replaces every model's convert limit (tests set 0 to run
 * the raw F16/BF16 path on small models). */
extern uint64_t vx_convert_limit_override;

/* Loads tensor `name` of exactly rows*cols elements (any shape with that count,
 * e.g. a conv kernel). Vectors and small tensors are always converted. */
int vx_load(vx_loader *L, vx_weight *w, const char *name, int64_t rows, int64_t cols, int allow_raw, mr_error *e);
/* 1 if the tensor exists. */
int vx_has(const vx_loader *L, const char *name);
void vx_weight_free(vx_weight *w);
/* fp32 pointer of a small (always converted) weight. */
static inline const float *vx_f32(const vx_weight *w) { return w->f32; }

/* Copies row r of a weight matrix into dst[cols] as fp32 (embedding lookup). */
void vx_row(const vx_weight *w, int64_t r, float *dst);

/* Per-thread scratch for converting raw weights, in row blocks. */
typedef struct vx_scratch {
    float *buf;
    size_t cap; /* floats */
} vx_scratch;
void vx_scratch_free(vx_scratch *s);

/* out[T, N] = in[T, K] W[N, K]^T (+ bias[N]). out must not alias in. */
int vx_linear(float *out, const float *in, int T, const vx_weight *W, const vx_weight *bias, vx_scratch *s,
              mr_error *e);
/* LayerNorm over the last dimension D, in place allowed (out == in). */
void vx_layernorm(float *out, const float *in, int T, int D, const float *weight, const float *bias, float eps);

typedef enum { VX_ACT_GELU, VX_ACT_GELU_TANH, VX_ACT_RELU } vx_act;
void vx_activate(float *x, size_t n, vx_act act);
/* Parses an activation name of transformers' ACT2FN. */
int vx_act_parse(const char *name, vx_act *out);

/* Multi-head attention for one sequence: q [Tq, H*hd] (row stride ldq), k and v
 * [Tk, H*hd] (row strides ldk, ldv), out [Tq, H*hd]. Scores are scaled by
 * `scale`; with causal, query i sees keys 0 .. key_offset + i. `scores` is
 * scratch of Tq*Tk floats. */
void vx_attention(float *out, const float *q, int ldq, const float *k, int ldk, const float *v, int ldv, int Tq,
                  int Tk, int heads, int head_dim, float scale, int causal, int key_offset, float *scores);

/* ---- config.json helpers (jansson): absent keys keep *out ---- */
int vx_cfg_int(json_t *obj, const char *key, int *out, const char *where, mr_error *e);
int vx_cfg_float(json_t *obj, const char *key, float *out, const char *where, mr_error *e);
int vx_cfg_bool(json_t *obj, const char *key, int *out, const char *where, mr_error *e);
/* Returns the string value or NULL when absent (error if not a string). */
int vx_cfg_str(json_t *obj, const char *key, const char **out, const char *where, mr_error *e);

void vx_set_threads(int threads);
/* Runs what follows on one thread (OpenMP and BLAS) until vx_threads_restore:
 * for small models the barriers of parallel regions cost more than they save,
 * and far more on a loaded machine. */
typedef struct vx_threads {
    int omp, blas, active;
} vx_threads;
void vx_threads_single(vx_threads *saved, int enable);
void vx_threads_restore(const vx_threads *saved);

#endif
