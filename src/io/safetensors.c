/* safetensors reader (mmap, header parsed with jansson, every extent checked),
 * sharded sets through model.safetensors.index.json, and an atomic writer. */
#include "mllm4rec/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- dtypes ---- */

static const struct {
    st_dtype t;
    const char *name;
    size_t size;
} DTYPES[] = {{ST_F32, "F32", 4}, {ST_F16, "F16", 2}, {ST_BF16, "BF16", 2}, {ST_F64, "F64", 8},
              {ST_I64, "I64", 8}, {ST_I32, "I32", 4}, {ST_I16, "I16", 2},   {ST_I8, "I8", 1},
              {ST_U8, "U8", 1},   {ST_BOOL, "BOOL", 1}};

size_t st_dtype_size(st_dtype t) {
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (DTYPES[i].t == t) return DTYPES[i].size;
    return 0;
}

const char *st_dtype_name(st_dtype t) {
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (DTYPES[i].t == t) return DTYPES[i].name;
    return "?";
}

static int dtype_from_name(const char *s, st_dtype *out) {
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (!strcmp(DTYPES[i].name, s)) {
            *out = DTYPES[i].t;
            return 0;
        }
    return -1;
}

int64_t st_numel(const st_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) n *= t->shape[d];
    return n;
}

/* ---- reader ---- */

static int parse_header(st_file *f, const char *json, size_t len, uint64_t data_start, mr_error *e) {
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (!root) return mr_fail(e, MR_ERR_INPUT, "%s: header is not valid JSON: %s", f->path, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return mr_fail(e, MR_ERR_INPUT, "%s: header is not a JSON object", f->path);
    }
    size_t n = json_object_size(root);
    f->tensors = mr_calloc(n, sizeof *f->tensors, e);
    if (!f->tensors) {
        json_decref(root);
        return MR_ERR_INTERNAL;
    }
    uint64_t data_size = f->map_size - data_start;
    const char *key;
    json_t *val;
    int rc = MR_OK;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            f->metadata_json = json_dumps(val, JSON_COMPACT | JSON_SORT_KEYS);
            continue;
        }
        st_tensor *t = &f->tensors[f->n_tensors];
        json_t *dt = json_object_get(val, "dtype"), *shape = json_object_get(val, "shape"),
               *offs = json_object_get(val, "data_offsets");
        if (!json_is_string(dt) || !json_is_array(shape) || !json_is_array(offs) || json_array_size(offs) != 2 ||
            json_array_size(shape) > 8) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s': header entry needs dtype, shape and data_offsets", f->path,
                         key);
            break;
        }
        if (dtype_from_name(json_string_value(dt), &t->dtype)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s': unsupported dtype '%s'", f->path, key,
                         json_string_value(dt));
            break;
        }
        t->n_dims = (int)json_array_size(shape);
        uint64_t numel = 1;
        for (int d = 0; d < t->n_dims; d++) {
            json_t *s = json_array_get(shape, (size_t)d);
            if (!json_is_integer(s) || json_integer_value(s) < 0 ||
                (json_integer_value(s) > 0 && numel > UINT64_MAX / 16 / (uint64_t)json_integer_value(s))) {
                rc = mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s': bad shape", f->path, key);
                break;
            }
            t->shape[d] = json_integer_value(s);
            numel *= (uint64_t)t->shape[d];
        }
        if (rc) break;
        json_t *b = json_array_get(offs, 0), *en = json_array_get(offs, 1);
        if (!json_is_integer(b) || !json_is_integer(en) || json_integer_value(b) < 0 ||
            json_integer_value(en) < json_integer_value(b)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s': bad data_offsets", f->path, key);
            break;
        }
        uint64_t begin = (uint64_t)json_integer_value(b), end = (uint64_t)json_integer_value(en);
        t->nbytes = end - begin;
        if (t->nbytes != numel * st_dtype_size(t->dtype)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s': %llu bytes do not match its shape and dtype", f->path, key,
                         (unsigned long long)t->nbytes);
            break;
        }
        if (end > data_size) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: truncated file: tensor '%s' lies past the end", f->path, key);
            break;
        }
        t->data = f->map + data_start + begin;
        t->name = mr_strdup(key, e);
        if (!t->name) {
            rc = MR_ERR_INTERNAL;
            break;
        }
        f->n_tensors++;
    }
    json_decref(root);
    return rc;
}

int st_open(st_file *f, const char *path, mr_error *e) {
    memset(f, 0, sizeof *f);
    if (!(f->path = mr_strdup(path, e))) return MR_ERR_INTERNAL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        int err = errno;
        st_close(f);
        return mr_fail(e, MR_ERR_INPUT, "%s: cannot open: %s", path, strerror(err));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 8) {
        close(fd);
        st_close(f);
        return mr_fail(e, MR_ERR_INPUT, "%s: not a safetensors file (too short)", path);
    }
    f->map_size = (size_t)st.st_size;
    void *m = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        st_close(f);
        return mr_fail(e, MR_ERR_INPUT, "%s: cannot map: %s", path, strerror(errno));
    }
    f->map = m;
    uint64_t hlen;
    memcpy(&hlen, f->map, 8);
    if (hlen > f->map_size - 8 || hlen > (100u << 20)) {
        st_close(f);
        return mr_fail(e, MR_ERR_INPUT, "%s: header length %llu exceeds the file: truncated or not safetensors", path,
                       (unsigned long long)hlen);
    }
    int rc = parse_header(f, (const char *)f->map + 8, hlen, 8 + hlen, e);
    if (rc) st_close(f);
    return rc;
}

void st_close(st_file *f) {
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->metadata_json);
    if (f->map) munmap((void *)f->map, f->map_size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

int st_read_f32(const st_tensor *t, float *out, int64_t expect_numel, mr_error *e) {
    int64_t n = st_numel(t);
    if (expect_numel >= 0 && n != expect_numel)
        return mr_fail(e, MR_ERR_INPUT, "tensor '%s' has %lld elements, expected %lld", t->name, (long long)n,
                       (long long)expect_numel);
    const uint8_t *p = t->data;
    for (int64_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case ST_F32: memcpy(&out[i], p + 4 * i, 4); break;
        case ST_F16: { uint16_t h; memcpy(&h, p + 2 * i, 2); out[i] = mr_f16_to_f32(h); break; }
        case ST_BF16: { uint16_t h; memcpy(&h, p + 2 * i, 2); out[i] = mr_bf16_to_f32(h); break; }
        case ST_F64: { double d; memcpy(&d, p + 8 * i, 8); out[i] = (float)d; break; }
        case ST_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); out[i] = (float)v; break; }
        case ST_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); out[i] = (float)v; break; }
        case ST_I16: { int16_t v; memcpy(&v, p + 2 * i, 2); out[i] = (float)v; break; }
        case ST_I8: out[i] = (float)(int8_t)p[i]; break;
        case ST_U8: case ST_BOOL: out[i] = (float)p[i]; break;
        }
    }
    return MR_OK;
}

/* ---- sets of shards ---- */

static int open_index(st_set *s, const char *index_path, mr_error *e) {
    json_error_t jerr;
    json_t *root = json_load_file(index_path, 0, &jerr);
    if (!root) return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s", index_path, jerr.line, jerr.text);
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        json_decref(root);
        return mr_fail(e, MR_ERR_INPUT, "%s: missing object 'weight_map'", index_path);
    }
    /* Distinct shard names, in first-seen order. */
    size_t cap = json_object_size(wm);
    const char **names = mr_calloc(cap ? cap : 1, sizeof *names, e);
    if (!names) {
        json_decref(root);
        return MR_ERR_INTERNAL;
    }
    size_t n = 0;
    const char *key;
    json_t *val;
    int rc = MR_OK;
    json_object_foreach(wm, key, val) {
        if (!json_is_string(val)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: weight_map['%s'] is not a file name", index_path, key);
            break;
        }
        const char *fn = json_string_value(val);
        if (strchr(fn, '/') || !strcmp(fn, "..")) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: shard name '%s' must be a plain file name", index_path, fn);
            break;
        }
        size_t k = 0;
        while (k < n && strcmp(names[k], fn)) k++;
        if (k == n) names[n++] = fn;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", index_path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    if (!rc) {
        s->files = mr_calloc(n ? n : 1, sizeof *s->files, e);
        if (!s->files) rc = MR_ERR_INTERNAL;
    }
    for (size_t i = 0; !rc && i < n; i++) {
        char *p = mr_path_join(dir, names[i], e);
        if (!p) {
            rc = MR_ERR_INTERNAL;
            break;
        }
        rc = st_open(&s->files[i], p, e);
        free(p);
        if (!rc) s->n_files++;
    }
    free(names);
    json_decref(root);
    return rc;
}

int st_set_open(st_set *s, const char *path, mr_error *e) {
    memset(s, 0, sizeof *s);
    int rc;
    if (mr_is_dir(path)) {
        char *single = mr_path_join(path, "model.safetensors", e);
        char *index = mr_path_join(path, "model.safetensors.index.json", e);
        if (!single || !index) rc = MR_ERR_INTERNAL;
        else if (mr_file_exists(single)) rc = st_set_open(s, single, e);
        else if (mr_file_exists(index)) rc = st_set_open(s, index, e);
        else rc = mr_fail(e, MR_ERR_INPUT, "%s: no model.safetensors or model.safetensors.index.json", path);
        free(single);
        free(index);
        return rc;
    }
    size_t n = strlen(path);
    if (n > 5 && !strcmp(path + n - 5, ".json")) rc = open_index(s, path, e);
    else {
        s->files = mr_calloc(1, sizeof *s->files, e);
        if (!s->files) return MR_ERR_INTERNAL;
        rc = st_open(&s->files[0], path, e);
        if (!rc) s->n_files = 1;
    }
    if (rc) st_set_close(s);
    return rc;
}

void st_set_close(st_set *s) {
    for (int i = 0; i < s->n_files; i++) st_close(&s->files[i]);
    free(s->files);
    memset(s, 0, sizeof *s);
}

const st_tensor *st_set_find(const st_set *s, const char *name) {
    for (int i = 0; i < s->n_files; i++) {
        const st_tensor *t = st_find(&s->files[i], name);
        if (t) return t;
    }
    return NULL;
}

/* ---- writer ---- */

typedef struct wentry {
    char *name;
    st_dtype dtype;
    int n_dims;
    int64_t shape[8];
    const void *data;
    uint64_t nbytes;
} wentry;

struct st_writer {
    wentry *t;
    size_t n, cap;
    json_t *meta;
};

st_writer *st_writer_new(mr_error *e) { return mr_calloc(1, sizeof(st_writer), e); }

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
    if (w->meta) json_decref(w->meta);
    free(w);
}

int st_writer_add(st_writer *w, const char *name, st_dtype dtype, int n_dims, const int64_t *shape,
                  const void *data, mr_error *e) {
    if (n_dims < 0 || n_dims > 8) return mr_fail(e, MR_ERR_USAGE, "safetensors writer: '%s': bad rank", name);
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name)) return mr_fail(e, MR_ERR_USAGE, "safetensors writer: duplicate '%s'", name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 32;
        wentry *nt = mr_realloc(w->t, cap * sizeof *nt, e);
        if (!nt) return MR_ERR_INTERNAL;
        w->t = nt;
        w->cap = cap;
    }
    wentry *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = mr_strdup(name, e))) return MR_ERR_INTERNAL;
    t->dtype = dtype;
    t->n_dims = n_dims;
    uint64_t numel = 1;
    for (int d = 0; d < n_dims; d++) {
        t->shape[d] = shape[d];
        numel *= (uint64_t)shape[d];
    }
    t->data = data;
    t->nbytes = numel * st_dtype_size(dtype);
    w->n++;
    return MR_OK;
}

int st_writer_set_metadata(st_writer *w, const char *key, const char *value, mr_error *e) {
    if (!w->meta && !(w->meta = json_object())) return mr_fail(e, MR_ERR_INTERNAL, "out of memory");
    if (json_object_set_new(w->meta, key, json_string(value)))
        return mr_fail(e, MR_ERR_USAGE, "safetensors writer: bad metadata '%s' (must be UTF-8)", key);
    return MR_OK;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const wentry *)a)->name, ((const wentry *)b)->name);
}

int st_writer_write(st_writer *w, const char *path, mr_error *e) {
    qsort(w->t, w->n, sizeof *w->t, cmp_entry);
    json_t *h = json_object();
    if (!h) return mr_fail(e, MR_ERR_INTERNAL, "out of memory");
    if (w->meta) json_object_set(h, "__metadata__", w->meta);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < w->t[i].n_dims; d++) json_array_append_new(shape, json_integer(w->t[i].shape[d]));
        json_t *o = json_pack("{s:s, s:o, s:[I,I]}", "dtype", st_dtype_name(w->t[i].dtype), "shape", shape,
                              "data_offsets", (json_int_t)off, (json_int_t)(off + w->t[i].nbytes));
        json_object_set_new(h, w->t[i].name, o);
        off += w->t[i].nbytes;
    }
    char *text = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    if (!text) return mr_fail(e, MR_ERR_INTERNAL, "out of memory");
    uint64_t hlen = strlen(text);
    uint64_t padded = (hlen + 7) / 8 * 8;
    mr_atomic_file af;
    int rc = mr_atomic_open(&af, path, e);
    if (rc) {
        free(text);
        return rc;
    }
    int bad = fwrite(&padded, 8, 1, af.f) != 1 || fwrite(text, 1, hlen, af.f) != hlen;
    for (uint64_t i = hlen; i < padded && !bad; i++) bad = fputc(' ', af.f) == EOF;
    free(text);
    for (size_t i = 0; i < w->n && !bad; i++)
        if (w->t[i].nbytes) bad = fwrite(w->t[i].data, 1, w->t[i].nbytes, af.f) != w->t[i].nbytes;
    if (bad) return mr_atomic_fail(&af, e);
    return mr_atomic_commit(&af, e);
}
