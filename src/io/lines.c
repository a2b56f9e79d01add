/* Streaming line reader; see mllm4rec/lines.h. */
#include "mllm4rec/lines.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

int mr_lines_open(mr_lines *L, const char *path, mr_error *e) {
    memset(L, 0, sizeof *L);
    FILE *probe = fopen(path, "rb");
    if (!probe) return mr_fail(e, MR_ERR_INPUT, "%s: cannot open: %s", path, strerror(errno));
    unsigned char magic[2] = {0, 0};
    size_t got = fread(magic, 1, 2, probe);
    fclose(probe);
    L->is_gzip = got == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    L->gz = gzopen(path, "rb");
    if (!L->gz) return mr_fail(e, MR_ERR_INPUT, "%s: cannot open: %s", path, strerror(errno));
    gzbuffer(L->gz, 1 << 17);
    L->cap = 1 << 16;
    L->buf = mr_alloc(L->cap + 1, e);
    L->path = mr_strdup(path, e);
    if (!L->buf || !L->path) {
        mr_lines_close(L);
        return MR_ERR_INTERNAL;
    }
    return MR_OK;
}

/* Reads more bytes into the buffer; returns bytes read, 0 at a clean end, -1 on error. */
static int fill(mr_lines *L, mr_error *e) {
    if (L->start > 0) {
        memmove(L->buf, L->buf + L->start, L->end - L->start);
        L->end -= L->start;
        L->start = 0;
    }
    if (L->end == L->cap) {
        char *nb = mr_realloc(L->buf, L->cap * 2 + 1, e);
        if (!nb) return -1;
        L->buf = nb;
        L->cap *= 2;
    }
    int n = gzread(L->gz, L->buf + L->end, (unsigned)(L->cap - L->end));
    int errnum = Z_OK;
    const char *msg = gzerror(L->gz, &errnum);
    if (n < 0 || (errnum != Z_OK && errnum != Z_STREAM_END)) {
        mr_fail(e, MR_ERR_INPUT, "%s: %s after line %lld: %s", L->path,
                L->is_gzip ? "corrupt or truncated gzip data" : "read error", (long long)L->lineno,
                msg ? msg : "unknown error");
        return -1;
    }
    L->end += (size_t)n;
    return n;
}

/* A text line holds no NUL byte: one would cut the line short for every string
 * function after this, silently (a timestamp "12607\0" "59144" read as 12607). */
static int refuse_nul(mr_lines *L, const char *line, size_t n, mr_error *e) {
    const char *z = memchr(line, 0, n);
    if (!z) return 1;
    mr_fail(e, MR_ERR_INPUT, "%s:%lld: NUL byte at column %lld (not a text file, or a damaged one)", L->path,
            (long long)L->lineno, (long long)(z - line) + 1);
    return -1;
}

int mr_lines_next(mr_lines *L, char **line, size_t *len, mr_error *e) {
    size_t scan = L->start;
    for (;;) {
        char *nl = memchr(L->buf + scan, '\n', L->end - scan);
        if (nl) {
            size_t at = (size_t)(nl - L->buf);
            size_t n = at - L->start;
            *line = L->buf + L->start;
            if (n > 0 && (*line)[n - 1] == '\r') n--;
            (*line)[n] = 0;
            *len = n;
            L->start = at + 1;
            L->lineno++;
            return refuse_nul(L, *line, n, e);
        }
        if (L->eof) {
            if (L->end == L->start) return 0;
            size_t n = L->end - L->start; /* last line without a newline */
            *line = L->buf + L->start;
            if (n > 0 && (*line)[n - 1] == '\r') n--;
            (*line)[n] = 0; /* cap has one spare byte */
            *len = n;
            L->start = L->end;
            L->lineno++;
            return refuse_nul(L, *line, n, e);
        }
        size_t consumed = L->start;
        scan = L->end;
        int n = fill(L, e);
        if (n < 0) return -1;
        scan -= consumed;
        if (n == 0) L->eof = 1;
    }
}

void mr_lines_close(mr_lines *L) {
    if (L->gz) gzclose(L->gz);
    free(L->buf);
    free(L->path);
    memset(L, 0, sizeof *L);
}
