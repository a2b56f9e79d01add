/* GGUF reader (mmap, bounds-checked) and writer. See mllm4rec/gguf.h. */
#include "mllm4rec/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define GGUF_DEFAULT_ALIGNMENT 32

/* ---- types ---- */

typedef struct type_info {
    ggml_type type;
    const char *name;
    uint64_t block_elems, block_bytes;
} type_info;

static const type_info TYPES[] = {
    {GGML_TYPE_F32, "f32", 1, 4},      {GGML_TYPE_F16, "f16", 1, 2},       {GGML_TYPE_BF16, "bf16", 1, 2},
    {GGML_TYPE_Q4_0, "q4_0", 32, 18},  {GGML_TYPE_Q4_1, "q4_1", 32, 20},   {GGML_TYPE_Q5_0, "q5_0", 32, 22},
    {GGML_TYPE_Q5_1, "q5_1", 32, 24},  {GGML_TYPE_Q8_0, "q8_0", 32, 34},   {GGML_TYPE_Q8_1, "q8_1", 32, 36},
    {GGML_TYPE_Q2_K, "q2_k", 256, 84}, {GGML_TYPE_Q3_K, "q3_k", 256, 110}, {GGML_TYPE_Q4_K, "q4_k", 256, 144},
    {GGML_TYPE_Q5_K, "q5_k", 256, 176}, {GGML_TYPE_Q6_K, "q6_k", 256, 210}, {GGML_TYPE_Q8_K, "q8_k", 256, 292},
};

static const type_info *find_type(ggml_type t) {
    for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++)
        if (TYPES[i].type == t) return &TYPES[i];
    return NULL;
}

int ggml_type_block(ggml_type t, uint64_t *block_elems, uint64_t *block_bytes) {
    const type_info *ti = find_type(t);
    if (!ti) return -1;
    *block_elems = ti->block_elems;
    *block_bytes = ti->block_bytes;
    return 0;
}

const char *ggml_type_name(ggml_type t) {
    const type_info *ti = find_type(t);
    return ti ? ti->name : "unknown";
}

int ggml_type_from_name(const char *name, ggml_type *out) {
    for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++) {
        if (!strcasecmp(TYPES[i].name, name)) {
            *out = TYPES[i].type;
            return 0;
        }
    }
    return -1;
}

static uint64_t scalar_size(gguf_type t) {
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

/* ---- reader ---- */

typedef struct cursor {
    const uint8_t *start, *p, *end;
    const char *path;
    mr_error *e;
    int failed;
} cursor;

static int need(cursor *c, uint64_t n, const char *what) {
    if (c->failed) return 0;
    if ((uint64_t)(c->end - c->p) < n) {
        mr_fail(c->e, MR_ERR_INPUT,
                "%s: reading %s at offset %zu: %llu bytes needed, %zu left in the file of %zu bytes (truncated or "
                "damaged GGUF file)",
                c->path, what, (size_t)(c->p - c->start), (unsigned long long)n, (size_t)(c->end - c->p),
                (size_t)(c->end - c->start));
        c->failed = 1;
        return 0;
    }
    return 1;
}

static uint32_t rd_u32(cursor *c, const char *what) {
    uint32_t v = 0;
    if (need(c, 4, what)) {
        memcpy(&v, c->p, 4);
        c->p += 4;
    }
    return v;
}

static uint64_t rd_u64(cursor *c, const char *what) {
    uint64_t v = 0;
    if (need(c, 8, what)) {
        memcpy(&v, c->p, 8);
        c->p += 8;
    }
    return v;
}

static gguf_string rd_str(cursor *c, const char *what) {
    gguf_string s = {0, ""};
    const uint8_t *at = c->p;
    uint64_t n = rd_u64(c, what);
    if (!c->failed && n > (uint64_t)(c->end - c->p)) {
        /* a damaged length (a flipped byte) reads as a huge one: say so, with where it is */
        mr_fail(c->e, MR_ERR_INPUT,
                "%s: %s: a string of %llu bytes at offset %zu runs past the end of the file (%zu bytes): damaged or "
                "truncated GGUF file",
                c->path, what, (unsigned long long)n, (size_t)(at - c->start), (size_t)(c->end - c->start));
        c->failed = 1;
        return s;
    }
    if (need(c, n, what)) {
        s.len = n;
        s.data = (const char *)c->p;
        c->p += n;
    }
    return s;
}

static char *str_copy(gguf_string s, mr_error *e) {
    char *p = mr_alloc(s.len + 1, e);
    if (p) {
        memcpy(p, s.data, s.len);
        p[s.len] = 0;
    }
    return p;
}

static void read_scalar(cursor *c, gguf_type t, gguf_kv *kv) {
    uint64_t n = scalar_size(t);
    if (!need(c, n, kv->key)) return;
    const uint8_t *p = c->p;
    c->p += n;
    switch (t) {
    case GGUF_TYPE_UINT8: kv->v.u64 = p[0]; break;
    case GGUF_TYPE_INT8: kv->v.i64 = (int8_t)p[0]; break;
    case GGUF_TYPE_BOOL: kv->v.b = p[0] != 0; break;
    case GGUF_TYPE_UINT16: { uint16_t x; memcpy(&x, p, 2); kv->v.u64 = x; break; }
    case GGUF_TYPE_INT16: { int16_t x; memcpy(&x, p, 2); kv->v.i64 = x; break; }
    case GGUF_TYPE_UINT32: { uint32_t x; memcpy(&x, p, 4); kv->v.u64 = x; break; }
    case GGUF_TYPE_INT32: { int32_t x; memcpy(&x, p, 4); kv->v.i64 = x; break; }
    case GGUF_TYPE_FLOAT32: { float x; memcpy(&x, p, 4); kv->v.f64 = x; break; }
    case GGUF_TYPE_UINT64: memcpy(&kv->v.u64, p, 8); break;
    case GGUF_TYPE_INT64: memcpy(&kv->v.i64, p, 8); break;
    case GGUF_TYPE_FLOAT64: memcpy(&kv->v.f64, p, 8); break;
    default: break;
    }
}

static int parse(gguf_file *g, mr_error *e) {
    cursor c = {g->map, g->map, g->map + g->map_size, g->path, e, 0};
    uint32_t magic = rd_u32(&c, "magic");
    if (c.failed) return MR_ERR_INPUT;
    if (magic != GGUF_MAGIC) return mr_fail(e, MR_ERR_INPUT, "%s: not a GGUF file (bad magic)", g->path);
    g->version = rd_u32(&c, "version");
    if (!c.failed && (g->version < 2 || g->version > 3))
        return mr_fail(e, MR_ERR_INPUT, "%s: GGUF version %u is not supported (2 and 3 are)", g->path, g->version);
    g->n_tensors = rd_u64(&c, "tensor count");
    g->n_kv = rd_u64(&c, "metadata count");
    if (c.failed) return MR_ERR_INPUT;
    /* Each kv and tensor takes at least 12 bytes: bounds the counts before allocating. */
    if (g->n_kv > g->map_size / 12 || g->n_tensors > g->map_size / 12)
        return mr_fail(e, MR_ERR_INPUT,
                       "%s: the header declares %llu tensors and %llu keys, more than its %zu bytes can hold: "
                       "truncated or damaged GGUF file",
                       g->path, (unsigned long long)g->n_tensors, (unsigned long long)g->n_kv, (size_t)g->map_size);
    g->kv = mr_calloc(g->n_kv, sizeof *g->kv, e);
    g->tensors = mr_calloc(g->n_tensors, sizeof *g->tensors, e);
    if (!g->kv || !g->tensors) return MR_ERR_INTERNAL;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        gguf_string key = rd_str(&c, "metadata key");
        if (c.failed) return MR_ERR_INPUT;
        if (!(kv->key = str_copy(key, e))) return MR_ERR_INTERNAL;
        kv->type = (gguf_type)rd_u32(&c, kv->key);
        if (c.failed) return MR_ERR_INPUT;
        if (kv->type == GGUF_TYPE_STRING) {
            kv->v.str = rd_str(&c, kv->key);
        } else if (kv->type == GGUF_TYPE_ARRAY) {
            kv->array_type = (gguf_type)rd_u32(&c, kv->key);
            kv->array_len = rd_u64(&c, kv->key);
            if (c.failed) return MR_ERR_INPUT;
            if (kv->array_type == GGUF_TYPE_STRING) {
                if (kv->array_len > (uint64_t)(c.end - c.p) / 8)
                    return mr_fail(e, MR_ERR_INPUT,
                                   "%s: array '%s' at offset %zu declares %llu strings, more than the rest of the file "
                                   "can hold: truncated or damaged GGUF file",
                                   g->path, kv->key, (size_t)(c.p - c.start), (unsigned long long)kv->array_len);
                kv->array_strings = mr_calloc(kv->array_len, sizeof(gguf_string), e);
                if (!kv->array_strings) return MR_ERR_INTERNAL;
                for (uint64_t k = 0; k < kv->array_len && !c.failed; k++) kv->array_strings[k] = rd_str(&c, kv->key);
            } else {
                uint64_t es = scalar_size(kv->array_type);
                if (es == 0)
                    return mr_fail(e, MR_ERR_INPUT, "%s: key '%s': unsupported array element type %u", g->path,
                                   kv->key, kv->array_type);
                if (kv->array_len > (uint64_t)(c.end - c.p) / es)
                    return mr_fail(e, MR_ERR_INPUT,
                                   "%s: array '%s' at offset %zu declares %llu values, more than the rest of the file "
                                   "can hold: truncated or damaged GGUF file",
                                   g->path, kv->key, (size_t)(c.p - c.start), (unsigned long long)kv->array_len);
                kv->array_data = c.p;
                c.p += kv->array_len * es;
            }
        } else if (scalar_size(kv->type)) {
            read_scalar(&c, kv->type, kv);
        } else {
            return mr_fail(e, MR_ERR_INPUT, "%s: key '%s' has unknown value type %u", g->path, kv->key, kv->type);
        }
        if (c.failed) return MR_ERR_INPUT;
        if (!strcmp(kv->key, "general.alignment")) {
            if (kv->type != GGUF_TYPE_UINT32 || kv->v.u64 == 0 || (kv->v.u64 & (kv->v.u64 - 1)))
                return mr_fail(e, MR_ERR_INPUT, "%s: general.alignment must be a power-of-two uint32", g->path);
            g->alignment = kv->v.u64;
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        gguf_string name = rd_str(&c, "tensor name");
        if (c.failed) return MR_ERR_INPUT;
        if (!(t->name = str_copy(name, e))) return MR_ERR_INTERNAL;
        t->n_dims = rd_u32(&c, t->name);
        if (!c.failed && (t->n_dims < 1 || t->n_dims > 4))
            return mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' has %u dimensions (1..4 allowed)", g->path, t->name,
                           t->n_dims);
        uint64_t numel = 1;
        for (uint32_t d = 0; d < 4; d++) {
            t->ne[d] = d < t->n_dims ? rd_u64(&c, t->name) : 1;
            if (t->ne[d] == 0 || (numel > 0 && t->ne[d] > UINT64_MAX / 2 / numel)) {
                if (!c.failed)
                    return mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' has a bad dimension", g->path, t->name);
            }
            numel *= t->ne[d];
        }
        t->type = (ggml_type)rd_u32(&c, t->name);
        t->offset = rd_u64(&c, t->name);
        if (c.failed) return MR_ERR_INPUT;
        const type_info *ti = find_type(t->type);
        if (!ti) return mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' has unsupported type %u", g->path, t->name, t->type);
        if (t->ne[0] % ti->block_elems)
            return mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s': row length %llu is not a multiple of the %s block (%llu)",
                           g->path, t->name, (unsigned long long)t->ne[0], ti->name,
                           (unsigned long long)ti->block_elems);
        t->nbytes = numel / ti->block_elems * ti->block_bytes;
    }
    uint64_t header = (uint64_t)(c.p - g->map);
    uint64_t data_start = (header + g->alignment - 1) / g->alignment * g->alignment;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment)
            return mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' data is not aligned", g->path, t->name);
        if (data_start > g->map_size || t->offset > g->map_size - data_start ||
            t->nbytes > g->map_size - data_start - t->offset)
            return mr_fail(e, MR_ERR_INPUT, "%s: truncated GGUF file: tensor '%s' data lies past the end", g->path,
                           t->name);
        t->data = g->map + data_start + t->offset;
    }
    return MR_OK;
}

int gguf_open(gguf_file *g, const char *path, mr_error *e) {
    memset(g, 0, sizeof *g);
    g->path = mr_strdup(path, e);
    if (!g->path) return MR_ERR_INTERNAL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        int err = errno;
        gguf_close(g);
        return mr_fail(e, MR_ERR_INPUT, "%s: cannot open: %s", path, strerror(err));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        gguf_close(g);
        return mr_fail(e, MR_ERR_INPUT, "%s: not a regular file", path);
    }
    g->map_size = (size_t)st.st_size;
    if (g->map_size < 24) {
        close(fd);
        gguf_close(g);
        return mr_fail(e, MR_ERR_INPUT, "%s: truncated GGUF file (%zu bytes)", path, (size_t)st.st_size);
    }
    void *m = mmap(NULL, g->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        gguf_close(g);
        return mr_fail(e, MR_ERR_INPUT, "%s: cannot map: %s", path, strerror(errno));
    }
    g->map = m;
    int rc = parse(g, e);
    if (rc) gguf_close(g);
    return rc;
}

void gguf_close(gguf_file *g) {
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].key);
            free(g->kv[i].array_strings);
        }
    if (g->tensors)
        for (uint64_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    if (g->map) munmap((void *)g->map, g->map_size);
    free(g->path);
    memset(g, 0, sizeof *g);
}

const gguf_kv *gguf_find(const gguf_file *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && !strcmp(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

static int is_unsigned(gguf_type t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_UINT64;
}
static int is_signed(gguf_type t) {
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 || t == GGUF_TYPE_INT64;
}

static const gguf_kv *find_or_fail(const gguf_file *g, const char *key, mr_error *e) {
    const gguf_kv *kv = gguf_find(g, key);
    if (!kv) mr_fail(e, MR_ERR_INPUT, "%s: missing metadata key '%s'", g->path, key);
    return kv;
}

int gguf_get_u64(const gguf_file *g, const char *key, uint64_t *out, mr_error *e) {
    const gguf_kv *kv = find_or_fail(g, key, e);
    if (!kv) return MR_ERR_INPUT;
    if (is_unsigned(kv->type)) *out = kv->v.u64;
    else if (is_signed(kv->type) && kv->v.i64 >= 0) *out = (uint64_t)kv->v.i64;
    else return mr_fail(e, MR_ERR_INPUT, "%s: metadata '%s' is not a non-negative integer", g->path, key);
    return MR_OK;
}

int gguf_get_i64(const gguf_file *g, const char *key, int64_t *out, mr_error *e) {
    const gguf_kv *kv = find_or_fail(g, key, e);
    if (!kv) return MR_ERR_INPUT;
    if (is_signed(kv->type)) *out = kv->v.i64;
    else if (is_unsigned(kv->type) && kv->v.u64 <= INT64_MAX) *out = (int64_t)kv->v.u64;
    else return mr_fail(e, MR_ERR_INPUT, "%s: metadata '%s' is not an integer", g->path, key);
    return MR_OK;
}

int gguf_get_f64(const gguf_file *g, const char *key, double *out, mr_error *e) {
    const gguf_kv *kv = find_or_fail(g, key, e);
    if (!kv) return MR_ERR_INPUT;
    if (kv->type == GGUF_TYPE_FLOAT32 || kv->type == GGUF_TYPE_FLOAT64) *out = kv->v.f64;
    else if (is_unsigned(kv->type)) *out = (double)kv->v.u64;
    else if (is_signed(kv->type)) *out = (double)kv->v.i64;
    else return mr_fail(e, MR_ERR_INPUT, "%s: metadata '%s' is not a number", g->path, key);
    return MR_OK;
}

int gguf_get_bool(const gguf_file *g, const char *key, int *out, mr_error *e) {
    const gguf_kv *kv = find_or_fail(g, key, e);
    if (!kv) return MR_ERR_INPUT;
    if (kv->type != GGUF_TYPE_BOOL) return mr_fail(e, MR_ERR_INPUT, "%s: metadata '%s' is not a bool", g->path, key);
    *out = kv->v.b;
    return MR_OK;
}

int gguf_get_str(const gguf_file *g, const char *key, char **out, mr_error *e) {
    const gguf_kv *kv = find_or_fail(g, key, e);
    if (!kv) return MR_ERR_INPUT;
    if (kv->type != GGUF_TYPE_STRING)
        return mr_fail(e, MR_ERR_INPUT, "%s: metadata '%s' is not a string", g->path, key);
    *out = str_copy(kv->v.str, e);
    return *out ? MR_OK : MR_ERR_INTERNAL;
}

/* ---- writer ---- */

typedef struct wkv {
    char *key;
    gguf_type type, array_type;
    uint8_t *bytes; /* serialized value (after the type field(s)) */
    uint64_t nbytes;
} wkv;

typedef struct wtensor {
    char *name;
    uint32_t n_dims;
    uint64_t ne[4];
    ggml_type type;
    void *data;
    uint64_t nbytes;
} wtensor;

struct gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    uint32_t alignment;
};

gguf_writer *gguf_writer_new(mr_error *e) {
    gguf_writer *w = mr_calloc(1, sizeof *w, e);
    if (w) w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].bytes);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->kv);
    free(w->t);
    free(w);
}

/* Adds or replaces a key with an already serialized value. Takes ownership of bytes. */
static int put_kv(gguf_writer *w, const char *key, gguf_type type, gguf_type array_type, uint8_t *bytes,
                  uint64_t nbytes, mr_error *e) {
    for (size_t i = 0; i < w->n_kv; i++) {
        if (!strcmp(w->kv[i].key, key)) {
            free(w->kv[i].bytes);
            w->kv[i].type = type;
            w->kv[i].array_type = array_type;
            w->kv[i].bytes = bytes;
            w->kv[i].nbytes = nbytes;
            return MR_OK;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 32;
        wkv *nk = mr_realloc(w->kv, cap * sizeof *nk, e);
        if (!nk) {
            free(bytes);
            return MR_ERR_INTERNAL;
        }
        w->kv = nk;
        w->cap_kv = cap;
    }
    char *k = mr_strdup(key, e);
    if (!k) {
        free(bytes);
        return MR_ERR_INTERNAL;
    }
    w->kv[w->n_kv++] = (wkv){k, type, array_type, bytes, nbytes};
    if (!strcmp(key, "general.alignment") && type == GGUF_TYPE_UINT32) memcpy(&w->alignment, bytes, 4);
    return MR_OK;
}

static int put_scalar(gguf_writer *w, const char *key, gguf_type type, const void *v, mr_error *e) {
    uint64_t n = scalar_size(type);
    uint8_t *b = mr_alloc(n, e);
    if (!b) return MR_ERR_INTERNAL;
    memcpy(b, v, n);
    return put_kv(w, key, type, 0, b, n, e);
}

int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v, mr_error *e) {
    return put_scalar(w, key, GGUF_TYPE_UINT32, &v, e);
}
int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v, mr_error *e) {
    return put_scalar(w, key, GGUF_TYPE_INT32, &v, e);
}
int gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v, mr_error *e) {
    return put_scalar(w, key, GGUF_TYPE_UINT64, &v, e);
}
int gguf_writer_set_f32(gguf_writer *w, const char *key, float v, mr_error *e) {
    return put_scalar(w, key, GGUF_TYPE_FLOAT32, &v, e);
}
int gguf_writer_set_bool(gguf_writer *w, const char *key, int v, mr_error *e) {
    uint8_t b = v ? 1 : 0;
    return put_scalar(w, key, GGUF_TYPE_BOOL, &b, e);
}

static uint8_t *ser_string(const char *s, uint64_t len, uint64_t *n, mr_error *e) {
    uint8_t *b = mr_alloc(8 + len, e);
    if (!b) return NULL;
    memcpy(b, &len, 8);
    memcpy(b + 8, s, len);
    *n = 8 + len;
    return b;
}

int gguf_writer_set_str(gguf_writer *w, const char *key, const char *v, mr_error *e) {
    uint64_t n;
    uint8_t *b = ser_string(v, strlen(v), &n, e);
    return b ? put_kv(w, key, GGUF_TYPE_STRING, 0, b, n, e) : MR_ERR_INTERNAL;
}

int gguf_writer_set_array(gguf_writer *w, const char *key, gguf_type elem_type, const void *data, uint64_t n,
                          mr_error *e) {
    uint64_t es = scalar_size(elem_type);
    if (!es) return mr_fail(e, MR_ERR_USAGE, "gguf writer: array '%s' needs a scalar element type", key);
    uint8_t *b = mr_alloc(12 + n * es, e);
    if (!b) return MR_ERR_INTERNAL;
    uint32_t t = elem_type;
    memcpy(b, &t, 4);
    memcpy(b + 4, &n, 8);
    if (n) memcpy(b + 12, data, n * es);
    return put_kv(w, key, GGUF_TYPE_ARRAY, elem_type, b, 12 + n * es, e);
}

int gguf_writer_set_str_array(gguf_writer *w, const char *key, const char *const *strs, const uint64_t *lens,
                              uint64_t n, mr_error *e) {
    uint64_t total = 12;
    for (uint64_t i = 0; i < n; i++) total += 8 + (lens ? lens[i] : strlen(strs[i]));
    uint8_t *b = mr_alloc(total, e);
    if (!b) return MR_ERR_INTERNAL;
    uint32_t t = GGUF_TYPE_STRING;
    memcpy(b, &t, 4);
    memcpy(b + 4, &n, 8);
    uint64_t at = 12;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len = lens ? lens[i] : strlen(strs[i]);
        memcpy(b + at, &len, 8);
        memcpy(b + at + 8, strs[i], len);
        at += 8 + len;
    }
    return put_kv(w, key, GGUF_TYPE_ARRAY, GGUF_TYPE_STRING, b, total, e);
}

int gguf_writer_copy_kv(gguf_writer *w, const gguf_file *src, const char *const *skip_prefixes, int n_skip,
                        mr_error *e) {
    for (uint64_t i = 0; i < src->n_kv; i++) {
        const gguf_kv *kv = &src->kv[i];
        int skip = 0;
        for (int s = 0; s < n_skip; s++)
            if (!strncmp(kv->key, skip_prefixes[s], strlen(skip_prefixes[s]))) skip = 1;
        if (skip) continue;
        int rc;
        if (kv->type == GGUF_TYPE_STRING) {
            uint64_t n;
            uint8_t *b = ser_string(kv->v.str.data, kv->v.str.len, &n, e);
            rc = b ? put_kv(w, kv->key, GGUF_TYPE_STRING, 0, b, n, e) : MR_ERR_INTERNAL;
        } else if (kv->type == GGUF_TYPE_ARRAY && kv->array_type == GGUF_TYPE_STRING) {
            const char **strs = mr_alloc((kv->array_len + 1) * sizeof *strs, e);
            uint64_t *lens = mr_alloc((kv->array_len + 1) * sizeof *lens, e);
            rc = MR_ERR_INTERNAL;
            if (strs && lens) {
                for (uint64_t k = 0; k < kv->array_len; k++) {
                    strs[k] = kv->array_strings[k].data;
                    lens[k] = kv->array_strings[k].len;
                }
                rc = gguf_writer_set_str_array(w, kv->key, strs, lens, kv->array_len, e);
            }
            free(strs);
            free(lens);
        } else if (kv->type == GGUF_TYPE_ARRAY) {
            rc = gguf_writer_set_array(w, kv->key, kv->array_type, kv->array_data, kv->array_len, e);
        } else {
            /* Scalars: re-serialize from the widened value at the original width. */
            uint8_t raw[8] = {0};
            uint64_t n = scalar_size(kv->type);
            switch (kv->type) {
            case GGUF_TYPE_FLOAT32: { float f = (float)kv->v.f64; memcpy(raw, &f, 4); break; }
            case GGUF_TYPE_FLOAT64: memcpy(raw, &kv->v.f64, 8); break;
            case GGUF_TYPE_BOOL: raw[0] = (uint8_t)kv->v.b; break;
            default:
                if (is_signed(kv->type)) memcpy(raw, &kv->v.i64, n); /* little-endian truncation */
                else memcpy(raw, &kv->v.u64, n);
            }
            rc = put_scalar(w, kv->key, kv->type, raw, e);
        }
        if (rc) return rc;
    }
    return MR_OK;
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, ggml_type type, uint32_t n_dims, const uint64_t *ne,
                           const void *data, mr_error *e) {
    const type_info *ti = find_type(type);
    if (!ti) return mr_fail(e, MR_ERR_USAGE, "gguf writer: tensor '%s': unsupported type %d", name, type);
    if (n_dims < 1 || n_dims > 4) return mr_fail(e, MR_ERR_USAGE, "gguf writer: tensor '%s': bad rank", name);
    if (ne[0] % ti->block_elems)
        return mr_fail(e, MR_ERR_USAGE, "gguf writer: tensor '%s': row length %llu not a multiple of %llu", name,
                       (unsigned long long)ne[0], (unsigned long long)ti->block_elems);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *nt = mr_realloc(w->t, cap * sizeof *nt, e);
        if (!nt) return MR_ERR_INTERNAL;
        w->t = nt;
        w->cap_t = cap;
    }
    wtensor t = {0};
    t.n_dims = n_dims;
    uint64_t numel = 1;
    for (uint32_t d = 0; d < 4; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        numel *= t.ne[d];
    }
    t.type = type;
    t.nbytes = numel / ti->block_elems * ti->block_bytes;
    t.name = mr_strdup(name, e);
    t.data = mr_alloc(t.nbytes, e);
    if (!t.name || !t.data) {
        free(t.name);
        free(t.data);
        return MR_ERR_INTERNAL;
    }
    memcpy(t.data, data, t.nbytes);
    w->t[w->n_t++] = t;
    return MR_OK;
}

static int put_bytes(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n ? 0 : -1; }

int gguf_writer_write(gguf_writer *w, const char *path, mr_error *e) {
    mr_atomic_file af;
    int rc = mr_atomic_open(&af, path, e);
    if (rc) return rc;
    FILE *f = af.f;
    int bad = 0;
    uint32_t magic = GGUF_MAGIC, version = 3;
    uint64_t nt = w->n_t, nk = w->n_kv;
    bad |= put_bytes(f, &magic, 4) | put_bytes(f, &version, 4) | put_bytes(f, &nt, 8) | put_bytes(f, &nk, 8);
    uint64_t pos = 24;
    for (size_t i = 0; i < w->n_kv; i++) {
        uint64_t kl = strlen(w->kv[i].key);
        uint32_t t = w->kv[i].type;
        bad |= put_bytes(f, &kl, 8) | put_bytes(f, w->kv[i].key, kl) | put_bytes(f, &t, 4) |
               put_bytes(f, w->kv[i].bytes, w->kv[i].nbytes);
        pos += 12 + kl + w->kv[i].nbytes;
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        uint64_t nl = strlen(w->t[i].name);
        uint32_t nd = w->t[i].n_dims, ty = w->t[i].type;
        bad |= put_bytes(f, &nl, 8) | put_bytes(f, w->t[i].name, nl) | put_bytes(f, &nd, 4) |
               put_bytes(f, w->t[i].ne, 8 * nd) | put_bytes(f, &ty, 4) | put_bytes(f, &offset, 8);
        pos += 8 + nl + 4 + 8 * nd + 4 + 8;
        offset += (w->t[i].nbytes + w->alignment - 1) / w->alignment * w->alignment;
    }
    static const uint8_t zeros[256] = {0};
    uint64_t pad = (w->alignment - pos % w->alignment) % w->alignment;
    bad |= put_bytes(f, zeros, pad);
    for (size_t i = 0; i < w->n_t; i++) {
        bad |= put_bytes(f, w->t[i].data, w->t[i].nbytes);
        uint64_t tp = (w->alignment - w->t[i].nbytes % w->alignment) % w->alignment;
        bad |= put_bytes(f, zeros, tp);
    }
    if (bad) return mr_atomic_fail(&af, e);
    return mr_atomic_commit(&af, e);
}
