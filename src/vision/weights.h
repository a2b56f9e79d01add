/* What the BLIP-2 code needs around the src/nn kernels: weight matrices read
 * from safetensors as nn's qmat (mapped as stored, or converted at load to a
 * ggml type with nn's quantizer), float vectors, the linear layer y = x Wᵀ + b
 * on matmul_forward, the activation of a config, config.json readers and the
 * thread switch for small models. */
#ifndef MLLM4REC_VISION_WEIGHTS_H
#define MLLM4REC_VISION_WEIGHTS_H

#include <jansson.h>

#include "mllm4rec/base.h"
#include "mllm4rec/safetensors.h"
#include "nn/matmul.h"

/* Type request meaning "as stored": F32, F16 and BF16 tensors are used in the
 * map (copied only when misaligned), other dtypes are converted to F32. */
#define VW_AS_STORED ((ggml_type)-1)

/* A weight matrix [rows, cols] (PyTorch's [out, in]). */
typedef struct vw_mat {
    qmat q;
    void *owned; /* the data when converted or copied; NULL when in the map */
} vw_mat;

typedef struct vw_loader {
    const st_set *set;
    int64_t scratch_floats; /* the largest matmul_forward scratch of the matrices loaded */
    int n_threads;
    uint64_t converted_bytes;
} vw_loader;

/* Floats per dequantized tile of a product (16 MB). */
#define VW_TILE_FLOATS (4 << 20)

int vw_has(const vw_loader *L, const char *name);
/* Tensor `name` of exactly rows*cols elements (any shape with that count, e.g.
 * a conv kernel) as a matrix of type `type` (VW_AS_STORED: see above). A type
 * whose blocks do not divide cols falls back to F32 with a log line. Converting
 * from the map drops the source pages from memory afterwards, so a model
 * converted to Q8_0 does not hold its BF16 pages too. */
int vw_load_mat(vw_loader *L, vw_mat *w, const char *name, int64_t rows, int64_t cols, ggml_type type, mr_error *e);
/* Tensor `name` of n elements as owned floats (*out freed by the caller). */
int vw_load_vec(vw_loader *L, float **out, const char *name, int64_t n, mr_error *e);
void vw_mat_free(vw_mat *w);

/* y[T][rows] = x[T][cols] Wᵀ (+ bias[rows] when not NULL); y must not alias x.
 * scratch: L->scratch_floats floats. */
void vw_linear(float *y, const float *x, int64_t T, const vw_mat *W, const float *bias, float *scratch,
               int64_t scratch_floats);
/* The same with float activations whatever W's type (nn's matmul_forward_float:
 * quantized weights are dequantized, the activations are not quantized to 8 bits). */
void vw_linear_float(float *y, const float *x, int64_t T, const vw_mat *W, const float *bias, float *scratch,
                     int64_t scratch_floats);

/* For g < G: y[g][T][rows] = x[g][T][cols] Wᵀ (+ bias): nn's
 * matmul_groups_forward, so each group gets what it gets alone. */
void vw_linear_groups(float *y, const float *x, int64_t G, int64_t T, const vw_mat *W, const float *bias,
                      float *scratch, int64_t scratch_floats);

typedef enum { VW_ACT_GELU, VW_ACT_GELU_TANH, VW_ACT_RELU } vw_act;
/* transformers' ACT2FN names: gelu, gelu_new / gelu_pytorch_tanh, relu. */
int vw_act_parse(const char *name, vw_act *out);
/* x[n] = act(x[n]) with the src/nn kernels (relu inline). */
void vw_activate(float *x, size_t n, vw_act act);

/* config.json readers (jansson): absent or null keys keep *out. */
int vw_cfg_int(json_t *obj, const char *key, int *out, const char *where, mr_error *e);
int vw_cfg_float(json_t *obj, const char *key, float *out, const char *where, mr_error *e);
int vw_cfg_bool(json_t *obj, const char *key, int *out, const char *where, mr_error *e);
int vw_cfg_str(json_t *obj, const char *key, const char **out, const char *where, mr_error *e);

#endif
