/* Internals of `mllm4rec prepare` shared by the files in src/data/: the string
 * table, field splitting, the Python-literal parser, the raw interaction store that
 * every format reader fills, and the readers themselves. Not a public API. */
#ifndef MLLM4REC_PREP_INTERNAL_H
#define MLLM4REC_PREP_INTERNAL_H

#include "mllm4rec/base.h"
#include "mllm4rec/prepare.h"

/* ---- string table: interns byte strings to dense indexes 0..n-1 ---- */
typedef struct strtab {
    char **strs;       /* strs[i] points into one of the chunks */
    uint32_t *lens;
    int32_t n, cap;
    int32_t *slots;    /* open addressing, -1 = empty */
    uint32_t *hashes;  /* hash of each string */
    uint32_t nslots;   /* power of two */
    char **chunks;
    int n_chunks, chunks_cap;
    size_t chunk_used, chunk_cap;
} strtab;

void strtab_init(strtab *t);
void strtab_free(strtab *t);
/* Index of s (added when new); -1 on out of memory (e set). */
int32_t strtab_intern(strtab *t, const char *s, size_t len, mr_error *e);
/* Index of s, or -1 when absent. */
int32_t strtab_find(const strtab *t, const char *s, size_t len);

/* ---- field splitting (in place; fields are NUL-terminated) ---- */
/* Splits at every occurrence of sep (one or more bytes, e.g. "\t", "|", "::").
 * Returns the total number of fields (fields beyond max are not stored). */
int split_sep(char *line, const char *sep, char **fields, int max);
/* Splits one CSV record (RFC 4180: fields in double quotes may hold commas and ""
 * for a quote). Returns the field count, or -1 when a quote is not closed. */
int split_csv(char *line, char **fields, int max);

/* ---- Python literals (Amazon 2014 meta lines) ---- */
typedef struct pylit_fields {
    const char *const *keys; /* top-level keys wanted, e.g. {"asin", "title", "imUrl"} */
    int n_keys;
    char **values;           /* out: malloc'd UTF-8 strings, NULL when absent or not a string */
} pylit_fields;
/* Parses one Python literal that must be a dict (strings in single or double
 * quotes, optional u/b/r prefixes, escapes, numbers, True/False/None, lists,
 * tuples, dicts, nested; also JSON's true/false/null). Returns 0, or -1 with a
 * short reason and the byte offset where parsing stopped. */
int pylit_parse_dict(const char *text, size_t len, pylit_fields *out, char *why, size_t whysz, size_t *at);

/* ---- text helpers ---- */
/* Strips ASCII white space at both ends in place; returns s. */
char *strip_ws(char *s);
/* Converts ISO-8859-1 bytes to UTF-8 (malloc'd). */
char *latin1_to_utf8(const char *s, size_t len, mr_error *e);
/* The MovieLens title rule of DESIGN section 7 (malloc'd result). */
char *movielens_title(const char *raw, mr_error *e);
/* 1 when s is a non-negative decimal integer (digits only). */
int is_digits(const char *s, size_t len);

/* ---- raw interactions collected by a reader ---- */
#define PREP_MAX_INPUTS 4

typedef struct prep_input {
    const char *role; /* "ratings", "movies", "meta", ... */
    char *path;
    char sha256[65];
    int64_t bytes;
} prep_input;

typedef struct prep_raw {
    strtab users, items;
    int32_t *row_user, *row_item;
    int64_t *row_ts;
    float *row_rating;            /* only when has_rating */
    int64_t n_rows, rows_cap;
    int has_rating;
    char **titles;                /* per item index (items.n); NULL = no title */
    char **images;                /* per item index; NULL = unknown */
    int64_t titles_cap;
    int64_t raw_rows;             /* every parsed interaction row, before any filter */
    int64_t bad_lines;            /* skipped with --skip-bad-lines */
    int64_t title_rows;           /* rows read from the titles / meta file */
    char layout[32];              /* movielens: "ml-latest", "ml-100k", "ml-1m" */
    prep_input inputs[PREP_MAX_INPUTS];
    int n_inputs;
    const mr_prepare_opts *opts;
} prep_raw;

/* Adds one interaction (rating NAN when the format has none). Applies --min-rating. */
int raw_add(prep_raw *r, const char *user, size_t ulen, const char *item, size_t ilen, int64_t ts, double rating,
            mr_error *e);
/* Sets the title (and image, may be NULL) of an item already seen in the
 * interactions; items never seen are ignored. title is stripped; "" = no title.
 * A later non-empty title replaces an earlier one. */
int raw_set_title(prep_raw *r, const char *item, size_t ilen, const char *title, const char *image, mr_error *e);
/* Records an input file with its sha256. */
int raw_add_input(prep_raw *r, const char *role, const char *path, mr_error *e);
/* A bad line: with --skip-bad-lines counts it and returns 0; otherwise fills e
 * with "path:line: msg" and returns MR_ERR_INPUT. */
int raw_bad_line(prep_raw *r, mr_error *e, const char *path, int64_t line, const char *fmt, ...) MR_PRINTF(5, 6);
void raw_free(prep_raw *r);

/* ---- readers (one per format) ---- */
int read_movielens(prep_raw *r, const char *dir, mr_error *e);
int read_amazon2014(prep_raw *r, const char *ratings, const char *reviews, const char *meta, mr_error *e);
int read_interactions_tsv(prep_raw *r, const char *path, mr_error *e);
int read_sequences_txt(prep_raw *r, const char *path, mr_error *e);
int read_titles_tsv(prep_raw *r, const char *path, mr_error *e);

#endif
