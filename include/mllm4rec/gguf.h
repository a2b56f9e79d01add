/* GGUF files (llama.cpp's format), versions 2 and 3: reading with mmap (tensor
 * data is not copied) and a small writer for adapters, tests and benchmark
 * models. Spec: ggml's docs/gguf.md. */
#ifndef MLLM4REC_GGUF_H
#define MLLM4REC_GGUF_H

#include "mllm4rec/base.h"

/* Metadata value types, numbered as in the file. */
typedef enum {
    GGUF_TYPE_UINT8 = 0, GGUF_TYPE_INT8 = 1, GGUF_TYPE_UINT16 = 2, GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4, GGUF_TYPE_INT32 = 5, GGUF_TYPE_FLOAT32 = 6, GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8, GGUF_TYPE_ARRAY = 9, GGUF_TYPE_UINT64 = 10, GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12
} gguf_type;

/* Tensor element types, numbered as ggml's ggml_type. */
typedef enum {
    GGML_TYPE_F32 = 0, GGML_TYPE_F16 = 1, GGML_TYPE_Q4_0 = 2, GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6, GGML_TYPE_Q5_1 = 7, GGML_TYPE_Q8_0 = 8, GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10, GGML_TYPE_Q3_K = 11, GGML_TYPE_Q4_K = 12, GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14, GGML_TYPE_Q8_K = 15, GGML_TYPE_BF16 = 30
} ggml_type;

typedef struct gguf_string {
    uint64_t len;
    const char *data; /* points into the mapped file; NOT NUL-terminated */
} gguf_string;

typedef struct gguf_kv {
    char *key;            /* NUL-terminated copy */
    gguf_type type;
    gguf_type array_type; /* for GGUF_TYPE_ARRAY */
    uint64_t array_len;
    const void *array_data; /* raw little-endian elements in the map (not for strings) */
    gguf_string *array_strings; /* for arrays of strings: array_len entries */
    union {
        uint64_t u64;
        int64_t i64;
        double f64;
        int b;
        gguf_string str;
    } v; /* scalar value, widened */
} gguf_kv;

typedef struct gguf_tensor {
    char *name;
    uint32_t n_dims;
    uint64_t ne[4];     /* ne[0] is the fastest-varying (row length) */
    ggml_type type;
    uint64_t offset;    /* relative to the data section */
    uint64_t nbytes;
    const void *data;   /* in the map */
} gguf_tensor;

typedef struct gguf_file {
    char *path;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;
    gguf_tensor *tensors;
    uint64_t alignment;
    const uint8_t *map;
    size_t map_size;
} gguf_file;

/* Maps and parses the whole header; checks every tensor lies inside the file. */
int gguf_open(gguf_file *g, const char *path, mr_error *e);
void gguf_close(gguf_file *g);

const gguf_kv *gguf_find(const gguf_file *g, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name);
/* Typed getters: MR_OK, or an error naming the key when it is missing or has
 * another type (integers of any width convert when the value fits). */
int gguf_get_u64(const gguf_file *g, const char *key, uint64_t *out, mr_error *e);
int gguf_get_i64(const gguf_file *g, const char *key, int64_t *out, mr_error *e);
int gguf_get_f64(const gguf_file *g, const char *key, double *out, mr_error *e);
int gguf_get_bool(const gguf_file *g, const char *key, int *out, mr_error *e);
/* Returns a newly allocated NUL-terminated copy. */
int gguf_get_str(const gguf_file *g, const char *key, char **out, mr_error *e);

/* Sizes of ggml types: elements per block and bytes per block. */
int ggml_type_block(ggml_type t, uint64_t *block_elems, uint64_t *block_bytes);
const char *ggml_type_name(ggml_type t);
int ggml_type_from_name(const char *name, ggml_type *out); /* "f32", "q4_0", "Q4_K", ... */

/* ---- writer: collect metadata and tensors, then write atomically ---- */
typedef struct gguf_writer gguf_writer;
gguf_writer *gguf_writer_new(mr_error *e);
void gguf_writer_free(gguf_writer *w);
int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v, mr_error *e);
int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v, mr_error *e);
int gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v, mr_error *e);
int gguf_writer_set_f32(gguf_writer *w, const char *key, float v, mr_error *e);
int gguf_writer_set_bool(gguf_writer *w, const char *key, int v, mr_error *e);
int gguf_writer_set_str(gguf_writer *w, const char *key, const char *v, mr_error *e);
/* Arrays: elem_type is a scalar gguf_type; data holds n little-endian elements. */
int gguf_writer_set_array(gguf_writer *w, const char *key, gguf_type elem_type, const void *data, uint64_t n,
                          mr_error *e);
int gguf_writer_set_str_array(gguf_writer *w, const char *key, const char *const *strs, const uint64_t *lens,
                              uint64_t n, mr_error *e);
/* Copies every key of another file (e.g. a vocabulary) except those whose name
 * starts with one of the given prefixes. */
int gguf_writer_copy_kv(gguf_writer *w, const gguf_file *src, const char *const *skip_prefixes, int n_skip,
                        mr_error *e);
/* Adds a tensor; data (nbytes matching type and shape) is copied. */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, ggml_type type, uint32_t n_dims, const uint64_t *ne,
                           const void *data, mr_error *e);
int gguf_writer_write(gguf_writer *w, const char *path, mr_error *e);

#endif
