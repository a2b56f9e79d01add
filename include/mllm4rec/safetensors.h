/* safetensors files: 8-byte little-endian header length, a JSON header
 * {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the data.
 * Reading maps the file; sharded checkpoints are read through their
 * model.safetensors.index.json. */
#ifndef MLLM4REC_SAFETENSORS_H
#define MLLM4REC_SAFETENSORS_H

#include "mllm4rec/base.h"

typedef enum { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL } st_dtype;

typedef struct st_tensor {
    char *name;
    st_dtype dtype;
    int n_dims;
    int64_t shape[8];
    uint64_t nbytes;
    const void *data; /* in the map */
} st_tensor;

typedef struct st_file {
    char *path;
    st_tensor *tensors;
    int n_tensors;
    char *metadata_json; /* the "__metadata__" object as JSON text, or NULL */
    const uint8_t *map;
    size_t map_size;
} st_file;

int st_open(st_file *f, const char *path, mr_error *e);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
size_t st_dtype_size(st_dtype t);
const char *st_dtype_name(st_dtype t);
int64_t st_numel(const st_tensor *t);
/* Copies a tensor into float32 (converting F16/BF16/F64/int types), checking
 * that it has exactly the expected number of elements. */
int st_read_f32(const st_tensor *t, float *out, int64_t expect_numel, mr_error *e);

/* A set of files (one, or the shards named by an index) seen as one. */
typedef struct st_set {
    st_file *files;
    int n_files;
} st_set;
/* path: a .safetensors file, a model.safetensors.index.json, or a folder that
 * holds model.safetensors or model.safetensors.index.json. */
int st_set_open(st_set *s, const char *path, mr_error *e);
void st_set_close(st_set *s);
const st_tensor *st_set_find(const st_set *s, const char *name);

/* Writer: tensors are written in sorted-name order, header padded to 8 bytes,
 * atomically. Data is not copied: it must stay valid until st_writer_write. */
typedef struct st_writer st_writer;
st_writer *st_writer_new(mr_error *e);
void st_writer_free(st_writer *w);
int st_writer_add(st_writer *w, const char *name, st_dtype dtype, int n_dims, const int64_t *shape,
                  const void *data, mr_error *e);
int st_writer_set_metadata(st_writer *w, const char *key, const char *value, mr_error *e);
int st_writer_write(st_writer *w, const char *path, mr_error *e);

#endif
