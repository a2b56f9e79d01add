/* `mllm4rec prepare`: raw recommendation data -> prepared dataset folder
 * (items.tsv, sequences.tsv, meta.json; see mllm4rec/dataset.h and docs/prepare.md).
 *
 * Rules (DESIGN section 7, the reference's preprocessing):
 *   1. keep ratings >= min_rating (formats with ratings only);
 *   2. drop interactions with items that have no non-empty title;
 *   3. iterative filter until stable: items with >= min_sc interactions, users with
 *      >= min_uc (the unique maximal such subset, whatever the order of removal);
 *   4. dense ids 1..N in ascending order of source id (numeric order when every kept id
 *      is a decimal number, else bytewise); users the same way;
 *   5. each user's items sorted by (timestamp, dense item id); the `sequences` format
 *      keeps its given order.
 * Output is written into a temporary folder beside `out` and renamed into place only
 * when everything succeeded; an existing `out` is refused unless `force`, and with
 * `force` a failed run leaves it untouched. */
#ifndef MLLM4REC_PREPARE_H
#define MLLM4REC_PREPARE_H

#include "mllm4rec/base.h"

typedef struct mr_prepare_opts {
    const char *format;       /* "movielens", "amazon2014", "interactions", "sequences" */
    const char *input;        /* movielens: folder */
    const char *ratings;      /* amazon2014: ratings_<Cat>.csv (user,item,rating,timestamp) */
    const char *reviews;      /* amazon2014: reviews_<Cat>_5.json (JSON lines) */
    const char *meta;         /* amazon2014: meta_<Cat>.json (Python dict literals) */
    const char *interactions; /* interactions: TSV with user_id, item_id, timestamp */
    const char *sequences;    /* sequences: "user item item ..." lines */
    const char *titles;       /* interactions / sequences: TSV item_id, title [, image] */
    const char *out;
    const char *name;         /* NULL: derived from the input's base name */
    int64_t min_uc, min_sc;   /* 5, 5 */
    double min_rating;        /* 0 */
    int force, recbole, skip_bad_lines;
} mr_prepare_opts;

/* Fills the defaults (min_uc = min_sc = 5, min_rating = 0, everything else off). */
void mr_prepare_opts_init(mr_prepare_opts *o);
/* The flag checks mr_prepare starts with (MR_ERR_USAGE), without touching any file:
 * the CLI runs them before it takes the output folder's lock. */
int mr_prepare_check_opts(const mr_prepare_opts *o, mr_error *e);

typedef struct mr_prepare_counts {
    int64_t users, items, interactions;
} mr_prepare_counts;

typedef struct mr_prepare_stats {
    char name[256];
    char layout[32];             /* movielens layout found: ml-latest, ml-100k, ml-1m */
    mr_prepare_counts raw;       /* every interaction row read */
    mr_prepare_counts titled;    /* after min_rating and dropping untitled items */
    mr_prepare_counts after;     /* after the k-core filter: what the folder holds */
    int64_t bad_lines_skipped;
    int kcore_rounds;
    double seconds;
} mr_prepare_stats;

/* Runs the whole preparation. Errors: MR_ERR_USAGE for missing/contradicting
 * options, MR_ERR_INPUT for bad input ("file:line: expected ...") or an existing
 * output without force, MR_ERR_INTERNAL for failed writes. */
int mr_prepare(const mr_prepare_opts *o, mr_prepare_stats *st, mr_error *e);

/* A readable table of the statistics (users, items, interactions per stage, mean
 * sequence length, density). */
void mr_prepare_print_stats(FILE *out, const mr_prepare_stats *st);

/* Downloads url to path (atomically; follows redirects; fails on HTTP errors).
 * When want_sha256 is given (64 hex digits) a different digest is an error and
 * nothing is written. got_sha256 (may be NULL) receives the digest. */
int mr_download_file(const char *url, const char *path, const char *want_sha256, char got_sha256[65], mr_error *e);

#endif
