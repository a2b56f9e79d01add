/* A prepared dataset folder (written by `mllm4rec prepare`, read by every later
 * stage):
 *   items.tsv      item_id  source_id  title  image  caption   (item ids 1..n_items)
 *   sequences.tsv  user_id  source_user_id  items             (user ids 1..n_users;
 *                  items: dense ids in time order; last = test, one before = val)
 *   meta.json      format, name, counts, parameters, input sha256s, format version
 * Id 0 is the padding item everywhere. */
#ifndef MLLM4REC_DATASET_H
#define MLLM4REC_DATASET_H

#include "mllm4rec/base.h"

/* meta.json "format_version" written by this version; load refuses others. */
#define MR_DATASET_FORMAT_VERSION 1

typedef struct mr_item {
    char *source_id;
    char *title;
    char *image;   /* URL or path, "" when unknown */
    char *caption; /* "" until captions exist */
} mr_item;

typedef struct mr_dataset {
    char *dir;
    char *name;    /* meta.json "name" */
    char *format;  /* meta.json "format": movielens, amazon2014, interactions, sequences */
    int64_t n_items;
    mr_item *items;           /* n_items + 1 entries; items[0] is padding (empty strings) */
    int64_t n_users;
    char **user_source_ids;   /* n_users + 1 entries; [0] unused */
    int32_t **seqs;           /* n_users + 1 entries; seqs[u] has seq_len[u] item ids */
    int32_t *seq_len;
    int64_t n_interactions;
} mr_dataset;

int mr_dataset_load(mr_dataset *d, const char *dir, mr_error *e);
void mr_dataset_free(mr_dataset *d);

/* The paper's dataset role key for prompts and defaults: "ml-100k" for any
 * movielens format, "beauty", "toys", "games" by name (also Video_Games,
 * Toys_and_Games), or NULL for others (DESIGN section 8). */
const char *mr_dataset_role(const mr_dataset *d);

/* The role for a dataset name alone (not knowing the format): the names above,
 * case-insensitive, also as the last part after '-' or '_' ("amazon2014-beauty"). */
const char *mr_dataset_role_for_name(const char *name);

/* Rewrites items.tsv atomically from d->items (used when captions change). Tabs and
 * line breaks inside fields are written as spaces. */
int mr_dataset_write_items(const mr_dataset *d, mr_error *e);
/* The same for any path and item table (items[1..n_items]; NULL fields = ""). */
int mr_dataset_write_items_file(const char *path, const mr_item *items, int64_t n_items, mr_error *e);

#endif
