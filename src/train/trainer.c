/* The training skeleton: checkpoint files and the JSON-lines log (train/trainer.h). */
#include "train/trainer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void writer_failed(tr_ckpt_writer *c, const mr_error *e) {
    if (!c->bad) c->err = *e;
    c->bad = 1;
}

int tr_ckpt_begin(tr_ckpt_writer *c, const char *format, mr_error *e) {
    memset(c, 0, sizeof *c);
    c->w = st_writer_new(e);
    if (!c->w) return MR_ERR_INTERNAL;
    tr_ckpt_meta(c, "format", "%s", format);
    return MR_OK;
}

void tr_ckpt_meta(tr_ckpt_writer *c, const char *key, const char *fmt, ...) {
    char buf[160];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    mr_error e = {0};
    if (n < 0 || (size_t)n >= sizeof buf) {
        mr_fail(&e, MR_ERR_INTERNAL, "checkpoint metadata %s is too long", key);
        writer_failed(c, &e);
    } else if (st_writer_set_metadata(c->w, key, buf, &e)) {
        writer_failed(c, &e);
    }
}

void tr_ckpt_f32(tr_ckpt_writer *c, const char *name, const float *x, int64_t n) {
    mr_error e = {0};
    if (st_writer_add(c->w, name, ST_F32, 1, &n, x, &e)) writer_failed(c, &e);
}

void tr_ckpt_i32(tr_ckpt_writer *c, const char *name, const int32_t *x, int64_t n) {
    mr_error e = {0};
    if (st_writer_add(c->w, name, ST_I32, 1, &n, x, &e)) writer_failed(c, &e);
}

void tr_ckpt_rng(tr_ckpt_writer *c, const mr_rng *r) {
    for (int i = 0; i < 4; i++) {
        char key[16];
        snprintf(key, sizeof key, "rng%d", i);
        tr_ckpt_meta(c, key, "%llu", (unsigned long long)r->s[i]);
    }
}

int tr_ckpt_commit(tr_ckpt_writer *c, const char *path, mr_error *e) {
    int rc;
    if (c->bad) {
        *e = c->err;
        rc = e->code ? e->code : MR_ERR_INTERNAL;
    } else {
        rc = st_writer_write(c->w, path, e);
    }
    st_writer_free(c->w);
    c->w = NULL;
    return rc;
}

int tr_ckpt_open(tr_ckpt *c, const char *path, const char *const *formats, int *which, const char *what, mr_error *e) {
    memset(c, 0, sizeof *c);
    int rc = st_open(&c->f, path, e);
    if (rc) return rc;
    c->meta = c->f.metadata_json ? json_loads(c->f.metadata_json, 0, NULL) : NULL;
    const char *fmt = tr_ckpt_str(c, "format");
    int k = -1;
    for (int i = 0; fmt && formats[i]; i++)
        if (!strcmp(fmt, formats[i])) k = i;
    if (k < 0) {
        tr_ckpt_close(c);
        return mr_fail(e, MR_ERR_INPUT, "%s: not an mllm4rec %s checkpoint", path, what);
    }
    snprintf(c->format, sizeof c->format, "%s", fmt);
    if (which) *which = k;
    return MR_OK;
}

void tr_ckpt_close(tr_ckpt *c) {
    json_decref(c->meta);
    c->meta = NULL;
    st_close(&c->f);
}

const char *tr_ckpt_str(const tr_ckpt *c, const char *key) { return json_string_value(json_object_get(c->meta, key)); }

int tr_ckpt_num(const tr_ckpt *c, const char *key, double *out, mr_error *e) {
    const char *v = tr_ckpt_str(c, key);
    if (!v) return mr_fail(e, MR_ERR_INPUT, "%s: metadata %s is missing", c->f.path, key);
    char *end;
    errno = 0;
    *out = strtod(v, &end);
    if (end == v || *end || errno == ERANGE)
        return mr_fail(e, MR_ERR_INPUT, "%s: metadata %s = '%s' is not a number", c->f.path, key, v);
    return MR_OK;
}

int tr_ckpt_i64(const tr_ckpt *c, const char *key, int64_t *out, mr_error *e) {
    const char *v = tr_ckpt_str(c, key);
    if (!v) return mr_fail(e, MR_ERR_INPUT, "%s: metadata %s is missing", c->f.path, key);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno == ERANGE)
        return mr_fail(e, MR_ERR_INPUT, "%s: metadata %s = '%s' is not an integer", c->f.path, key, v);
    *out = (int64_t)x;
    return MR_OK;
}

int tr_ckpt_same(const tr_ckpt *c, const char *key, const char *want, int optional, mr_error *e) {
    const char *v = tr_ckpt_str(c, key);
    if (!v && optional) return MR_OK;
    if (!v || strcmp(v, want))
        return mr_fail(e, MR_ERR_INPUT, "%s: was made with %s = %s, this run has %s (resume with the same flags)",
                       c->f.path, key, v ? v : "(missing)", want);
    return MR_OK;
}

static const st_tensor *find_1d(const tr_ckpt *c, const char *name, int dtype, int64_t n, mr_error *e) {
    const st_tensor *x = st_find(&c->f, name);
    if (!x) {
        mr_fail(e, MR_ERR_INPUT, "%s: tensor %s is missing", c->f.path, name);
        return NULL;
    }
    if ((int)x->dtype != dtype || st_numel(x) != n) {
        mr_fail(e, MR_ERR_INPUT, "%s: tensor %s has %lld values, this run needs %lld", c->f.path, name,
                (long long)st_numel(x), (long long)n);
        return NULL;
    }
    return x;
}

int tr_ckpt_read_f32(const tr_ckpt *c, const char *name, float *dst, int64_t n, mr_error *e) {
    const st_tensor *x = find_1d(c, name, ST_F32, n, e);
    if (!x) return MR_ERR_INPUT;
    int rc = st_read_f32(x, dst, n, e);
    if (!rc) rc = mr_check_finite(dst, (size_t)n, c->f.path, name, e);
    return rc;
}

int tr_ckpt_read_i32(const tr_ckpt *c, const char *name, int32_t *dst, int64_t n, mr_error *e) {
    const st_tensor *x = find_1d(c, name, ST_I32, n, e);
    if (!x) return MR_ERR_INPUT;
    memcpy(dst, x->data, (size_t)n * sizeof(int32_t));
    return MR_OK;
}

int tr_ckpt_read_rng(const tr_ckpt *c, mr_rng *r, mr_error *e) {
    for (int i = 0; i < 4; i++) {
        char key[16];
        snprintf(key, sizeof key, "rng%d", i);
        const char *v = tr_ckpt_str(c, key);
        if (!v) return mr_fail(e, MR_ERR_INPUT, "%s: metadata %s is missing", c->f.path, key);
        r->s[i] = strtoull(v, NULL, 10);
    }
    return MR_OK;
}

int tr_log_start(const char *path, int resumed, long bytes, mr_error *e) {
    if (resumed) {
        /* forget lines written after the checkpoint: the run repeats them */
        if (truncate(path, bytes) != 0 && bytes > 0)
            return mr_fail(e, MR_ERR_INPUT, "%s: cannot cut back to the checkpoint: %s", path, strerror(errno));
        return MR_OK;
    }
    FILE *f = fopen(path, "w");
    if (!f) return mr_fail(e, MR_ERR_INPUT, "%s: cannot write: %s", path, strerror(errno));
    fclose(f);
    return MR_OK;
}

int tr_log_append(const char *path, json_t *line, long *bytes, mr_error *e) {
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
    json_decref(line);
    if (!text) return mr_fail(e, MR_ERR_INTERNAL, "out of memory writing %s", path);
    size_t n = strlen(text);
    text[n] = '\n'; /* json_dumps' terminator becomes the line end; the length says where it stops */
    long size;
    int rc = mr_append_file(path, text, n + 1, &size, e);
    free(text);
    if (!rc && bytes) *bytes = size;
    return rc;
}
