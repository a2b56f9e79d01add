/* Errors and checked allocation. */
#include "mllm4rec/base.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int mr_fail(mr_error *e, int code, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

void mr_error_prefix(mr_error *e, const char *fmt, ...) {
    if (!e) return;
    char prefix[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* Shift the old message right and put the prefix in front (truncating the tail). */
    size_t np = strlen(prefix), no = strlen(e->msg);
    if (np >= sizeof e->msg) np = sizeof e->msg - 1;
    if (np + no >= sizeof e->msg) no = sizeof e->msg - 1 - np;
    memmove(e->msg + np, e->msg, no);
    memcpy(e->msg, prefix, np);
    e->msg[np + no] = 0;
}

void mr_error_clear(mr_error *e) {
    if (!e) return;
    e->code = MR_OK;
    e->msg[0] = 0;
}

void *mr_alloc(size_t n, mr_error *e) {
    void *p = malloc(n ? n : 1);
    if (!p) mr_fail(e, MR_ERR_INTERNAL, "out of memory allocating %zu bytes", n);
    return p;
}

void *mr_calloc(size_t count, size_t size, mr_error *e) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) mr_fail(e, MR_ERR_INTERNAL, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *mr_realloc(void *old, size_t n, mr_error *e) {
    void *p = realloc(old, n ? n : 1);
    if (!p) mr_fail(e, MR_ERR_INTERNAL, "out of memory growing a buffer to %zu bytes", n);
    return p;
}

char *mr_strdup(const char *s, mr_error *e) {
    size_t n = strlen(s) + 1;
    char *p = mr_alloc(n, e);
    if (p) memcpy(p, s, n);
    return p;
}

void *mr_alloc_aligned(size_t n, mr_error *e) {
    void *p = NULL;
    size_t rounded = (n + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0) {
        mr_fail(e, MR_ERR_INTERNAL, "out of memory allocating %zu aligned bytes", n);
        return NULL;
    }
    return p;
}
