/* Streaming line reader over plain or gzip-compressed files. Compression is
 * detected from the magic bytes (zlib reads plain files transparently), never
 * from the name; a truncated or corrupt gzip stream is an error, not an EOF. */
#ifndef MLLM4REC_LINES_H
#define MLLM4REC_LINES_H

#include "mllm4rec/base.h"

typedef struct mr_lines {
    void *gz;        /* gzFile */
    char *path;
    char *buf;       /* holds buffered bytes; lines point into it */
    size_t cap, start, end;
    int64_t lineno;  /* 1-based number of the line last returned */
    int eof;
    int is_gzip;
} mr_lines;

int mr_lines_open(mr_lines *L, const char *path, mr_error *e);
/* Returns 1 and the next line (without "\n" or "\r\n"; NUL-terminated, valid
 * until the next call), 0 at the end, -1 on error (e set: truncated gzip, read
 * error, a NUL byte in the line: "path:line: NUL byte at column N"). */
int mr_lines_next(mr_lines *L, char **line, size_t *len, mr_error *e);
void mr_lines_close(mr_lines *L);

#endif
