/* Loading and rewriting a prepared dataset folder; see mllm4rec/dataset.h. */
#include "mllm4rec/dataset.h"

#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mllm4rec/lines.h"

#define ITEMS_HEADER "item_id\tsource_id\ttitle\timage\tcaption"
#define SEQS_HEADER "user_id\tsource_user_id\titems"

/* Splits line in place at tabs into at most max fields; returns the field count
 * (counting every field, also those beyond max). */
static int split_tabs(char *line, char **fields, int max) {
    int n = 0;
    char *p = line;
    for (;;) {
        if (n < max) fields[n] = p;
        n++;
        char *t = strchr(p, '\t');
        if (!t) break;
        *t = 0;
        p = t + 1;
    }
    return n;
}

static int load_meta(mr_dataset *d, const char *dir, int64_t *n_items, int64_t *n_users, int64_t *n_inter,
                     mr_error *e) {
    char *path = mr_path_join(dir, "meta.json", e);
    if (!path) return MR_ERR_INTERNAL;
    int rc = MR_OK;
    json_error_t je;
    json_t *root = NULL;
    if (!mr_file_exists(path)) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: missing (not a prepared dataset folder? run `mllm4rec prepare`)", path);
        goto done;
    }
    root = json_load_file(path, 0, &je);
    if (!root) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s:%d: invalid JSON: %s", path, je.line, je.text);
        goto done;
    }
    json_t *ver = json_object_get(root, "format_version");
    if (!json_is_integer(ver) || json_integer_value(ver) != MR_DATASET_FORMAT_VERSION) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: \"format_version\" is not %d (made by another version: prepare it again)",
                     path, MR_DATASET_FORMAT_VERSION);
        goto done;
    }
    const char *name = json_string_value(json_object_get(root, "name"));
    const char *format = json_string_value(json_object_get(root, "format"));
    json_t *after = json_object_get(json_object_get(root, "counts"), "after");
    json_t *ju = json_object_get(after, "users"), *ji = json_object_get(after, "items"),
           *jn = json_object_get(after, "interactions");
    if (!name || !format || !json_is_integer(ju) || !json_is_integer(ji) || !json_is_integer(jn)) {
        rc = mr_fail(e, MR_ERR_INPUT,
                     "%s: expected string \"name\", \"format\" and integer counts.after.users/items/interactions", path);
        goto done;
    }
    d->name = mr_strdup(name, e);
    d->format = mr_strdup(format, e);
    if (!d->name || !d->format) rc = MR_ERR_INTERNAL;
    *n_users = json_integer_value(ju);
    *n_items = json_integer_value(ji);
    *n_inter = json_integer_value(jn);
done:
    json_decref(root);
    free(path);
    return rc;
}

/* Opens the dataset folder's file `name` as lines; *path (the caller frees it)
 * names it for messages. On failure nothing is left open or allocated. */
static int open_lines(mr_lines *L, char **path, const char *dir, const char *name, mr_error *e) {
    *path = mr_path_join(dir, name, e);
    if (!*path) return MR_ERR_INTERNAL;
    int rc = mr_lines_open(L, *path, e);
    if (rc) {
        free(*path);
        *path = NULL;
    }
    return rc;
}

static int load_items(mr_dataset *d, const char *dir, mr_error *e) {
    char *path;
    mr_lines L;
    int rc = open_lines(&L, &path, dir, "items.tsv", e);
    if (rc) return rc;
    char *line;
    size_t len;
    int64_t cap = 1024;
    d->items = mr_calloc((size_t)cap, sizeof *d->items, e);
    if (!d->items) rc = MR_ERR_INTERNAL;
    else {
        d->items[0].source_id = mr_strdup("", e);
        d->items[0].title = mr_strdup("", e);
        d->items[0].image = mr_strdup("", e);
        d->items[0].caption = mr_strdup("", e);
        if (!d->items[0].source_id || !d->items[0].title || !d->items[0].image || !d->items[0].caption)
            rc = MR_ERR_INTERNAL;
    }
    int r = rc ? 0 : mr_lines_next(&L, &line, &len, e);
    if (!rc && r < 0) rc = MR_ERR_INPUT;
    else if (!rc && (r == 0 || strcmp(line, ITEMS_HEADER)))
        rc = mr_fail(e, MR_ERR_INPUT, "%s:1: expected the header '%s'", path,
                     "item_id<TAB>source_id<TAB>title<TAB>image<TAB>caption");
    int64_t n = 0;
    while (!rc && (r = mr_lines_next(&L, &line, &len, e)) == 1) {
        if (!mr_utf8_valid(line, len)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: invalid UTF-8", path, (long long)L.lineno);
            break;
        }
        char *f[5];
        int nf = split_tabs(line, f, 5);
        int64_t id;
        if (nf != 5) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: expected 5 tab-separated fields, found %d", path,
                         (long long)L.lineno, nf);
            break;
        }
        if (mr_parse_i64(f[0], &id) || id != n + 1) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: expected item_id %lld, found '%s'", path, (long long)L.lineno,
                         (long long)(n + 1), f[0]);
            break;
        }
        if (n + 1 >= cap) {
            mr_item *ni = mr_realloc(d->items, (size_t)cap * 2 * sizeof *ni, e);
            if (!ni) {
                rc = MR_ERR_INTERNAL;
                break;
            }
            memset(ni + cap, 0, (size_t)cap * sizeof *ni);
            d->items = ni;
            cap *= 2;
        }
        mr_item *it = &d->items[n + 1];
        it->source_id = mr_strdup(f[1], e);
        it->title = mr_strdup(f[2], e);
        it->image = mr_strdup(f[3], e);
        it->caption = mr_strdup(f[4], e);
        n++;
        if (!it->source_id || !it->title || !it->image || !it->caption) rc = MR_ERR_INTERNAL;
    }
    if (!rc && r < 0) rc = MR_ERR_INPUT;
    d->n_items = n;
    mr_lines_close(&L);
    free(path);
    return rc;
}

static int load_sequences(mr_dataset *d, const char *dir, mr_error *e) {
    char *path;
    mr_lines L;
    int rc = open_lines(&L, &path, dir, "sequences.tsv", e);
    if (rc) return rc;
    char *line;
    size_t len;
    int64_t cap = 1024, n = 0;
    d->user_source_ids = mr_calloc((size_t)cap, sizeof *d->user_source_ids, e);
    d->seqs = mr_calloc((size_t)cap, sizeof *d->seqs, e);
    d->seq_len = mr_calloc((size_t)cap, sizeof *d->seq_len, e);
    if (!d->user_source_ids || !d->seqs || !d->seq_len) rc = MR_ERR_INTERNAL;
    int r = rc ? 0 : mr_lines_next(&L, &line, &len, e);
    if (!rc && r < 0) rc = MR_ERR_INPUT;
    else if (!rc && (r == 0 || strcmp(line, SEQS_HEADER)))
        rc = mr_fail(e, MR_ERR_INPUT, "%s:1: expected the header '%s'", path, "user_id<TAB>source_user_id<TAB>items");
    int32_t *tmp = NULL;
    size_t tmp_cap = 0;
    while (!rc && (r = mr_lines_next(&L, &line, &len, e)) == 1) {
        long long ln = (long long)L.lineno;
        if (!mr_utf8_valid(line, len)) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: invalid UTF-8", path, ln);
            break;
        }
        char *f[3];
        int nf = split_tabs(line, f, 3);
        int64_t id;
        if (nf != 3) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: expected 3 tab-separated fields, found %d", path, ln, nf);
            break;
        }
        if (mr_parse_i64(f[0], &id) || id != n + 1) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: expected user_id %lld, found '%s'", path, ln, (long long)(n + 1),
                         f[0]);
            break;
        }
        size_t cnt = 0;
        char *p = f[2];
        while (*p) {
            while (*p == ' ') p++;
            if (!*p) break;
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || (*end && *end != ' ') || v < 1 || v > d->n_items) {
                rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: expected item ids 1..%lld separated by spaces, found '%.*s'",
                             path, ln, (long long)d->n_items, (int)strcspn(p, " "), p);
                break;
            }
            if (cnt == tmp_cap) {
                size_t nc = tmp_cap ? tmp_cap * 2 : 256;
                int32_t *nt = mr_realloc(tmp, nc * sizeof *nt, e);
                if (!nt) {
                    rc = MR_ERR_INTERNAL;
                    break;
                }
                tmp = nt;
                tmp_cap = nc;
            }
            tmp[cnt++] = (int32_t)v;
            p = end;
        }
        if (rc) break;
        if (cnt == 0) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: user %lld has no items", path, ln, (long long)id);
            break;
        }
        if (n + 1 >= cap) {
            int64_t nc = cap * 2;
            char **a = mr_realloc(d->user_source_ids, (size_t)nc * sizeof *a, e);
            if (a) d->user_source_ids = a;
            int32_t **b = a ? mr_realloc(d->seqs, (size_t)nc * sizeof *b, e) : NULL;
            if (b) d->seqs = b;
            int32_t *c = b ? mr_realloc(d->seq_len, (size_t)nc * sizeof *c, e) : NULL;
            if (c) d->seq_len = c;
            if (!c) {
                rc = MR_ERR_INTERNAL;
                break;
            }
            memset(d->user_source_ids + cap, 0, (size_t)cap * sizeof *a);
            memset(d->seqs + cap, 0, (size_t)cap * sizeof *b);
            memset(d->seq_len + cap, 0, (size_t)cap * sizeof *c);
            cap = nc;
        }
        n++;
        d->user_source_ids[n] = mr_strdup(f[1], e);
        d->seqs[n] = mr_alloc(cnt * sizeof(int32_t), e);
        if (!d->user_source_ids[n] || !d->seqs[n]) {
            rc = MR_ERR_INTERNAL;
            break;
        }
        memcpy(d->seqs[n], tmp, cnt * sizeof(int32_t));
        d->seq_len[n] = (int32_t)cnt;
        d->n_interactions += (int64_t)cnt;
    }
    if (!rc && r < 0) rc = MR_ERR_INPUT;
    d->n_users = n;
    free(tmp);
    mr_lines_close(&L);
    free(path);
    return rc;
}

int mr_dataset_load(mr_dataset *d, const char *dir, mr_error *e) {
    memset(d, 0, sizeof *d);
    if (!mr_is_dir(dir)) return mr_fail(e, MR_ERR_INPUT, "%s: not a folder (expected a prepared dataset)", dir);
    int64_t mi = 0, mu = 0, mn = 0;
    int rc = (d->dir = mr_strdup(dir, e)) ? MR_OK : MR_ERR_INTERNAL;
    if (!rc) rc = load_meta(d, dir, &mi, &mu, &mn, e);
    if (!rc) rc = load_items(d, dir, e);
    if (!rc) rc = load_sequences(d, dir, e);
    if (!rc && (d->n_items != mi || d->n_users != mu || d->n_interactions != mn))
        rc = mr_fail(e, MR_ERR_INPUT,
                     "%s: meta.json says %lld users / %lld items / %lld interactions but the files hold %lld / %lld / %lld",
                     dir, (long long)mu, (long long)mi, (long long)mn, (long long)d->n_users, (long long)d->n_items,
                     (long long)d->n_interactions);
    if (rc) mr_dataset_free(d);
    return rc;
}

void mr_dataset_free(mr_dataset *d) {
    if (d->items) {
        for (int64_t i = 0; i <= d->n_items; i++) {
            free(d->items[i].source_id);
            free(d->items[i].title);
            free(d->items[i].image);
            free(d->items[i].caption);
        }
    }
    if (d->seqs) {
        for (int64_t u = 0; u <= d->n_users; u++) {
            free(d->seqs[u]);
            free(d->user_source_ids[u]);
        }
    }
    free(d->items);
    free(d->seqs);
    free(d->user_source_ids);
    free(d->seq_len);
    free(d->dir);
    free(d->name);
    free(d->format);
    memset(d, 0, sizeof *d);
}

const char *mr_dataset_role(const mr_dataset *d) {
    if (d->format && !strcmp(d->format, "movielens")) return "ml-100k";
    return mr_dataset_role_for_name(d->name);
}

const char *mr_dataset_role_for_name(const char *name) {
    if (!name) return NULL;
    static const struct {
        const char *name, *role;
    } exact[] = {{"beauty", "beauty"},   {"toys", "toys"},   {"games", "games"},
                 {"video_games", "games"}, {"toys_and_games", "toys"}};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (!strcasecmp(name, exact[i].name)) return exact[i].role;
    /* "amazon2014-beauty", "amazon_Video_Games": the part after the last '-' or the
     * long category names at the end */
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        size_t m = strlen(exact[i].name);
        if (n > m && (name[n - m - 1] == '-' || name[n - m - 1] == '_') && !strcasecmp(name + n - m, exact[i].name)) {
            /* "Toys_and_Games" must not become "games" through its "_Games" suffix */
            if (!strcasecmp(exact[i].name, "games") && n >= 14 && !strcasecmp(name + n - 14, "toys_and_games"))
                return "toys";
            return exact[i].role;
        }
    }
    return NULL;
}

/* Writes s with tabs and line breaks replaced by spaces, so a row stays one row. */
static void put_field(FILE *f, const char *s) {
    for (; *s; s++) fputc(*s == '\t' || *s == '\n' || *s == '\r' ? ' ' : *s, f);
}

int mr_dataset_write_items(const mr_dataset *d, mr_error *e) {
    char *path = mr_path_join(d->dir, "items.tsv", e);
    if (!path) return MR_ERR_INTERNAL;
    int rc = mr_dataset_write_items_file(path, d->items, d->n_items, e);
    free(path);
    return rc;
}

int mr_dataset_write_items_file(const char *path, const mr_item *items, int64_t n_items, mr_error *e) {
    mr_atomic_file af;
    int rc = mr_atomic_open(&af, path, e);
    if (rc) return rc;
    fputs(ITEMS_HEADER "\n", af.f);
    for (int64_t i = 1; i <= n_items; i++) {
        const mr_item *it = &items[i];
        fprintf(af.f, "%lld\t", (long long)i);
        put_field(af.f, it->source_id ? it->source_id : "");
        fputc('\t', af.f);
        put_field(af.f, it->title ? it->title : "");
        fputc('\t', af.f);
        put_field(af.f, it->image ? it->image : "");
        fputc('\t', af.f);
        put_field(af.f, it->caption ? it->caption : "");
        fputc('\n', af.f);
    }
    if (ferror(af.f)) return mr_atomic_fail(&af, e);
    return mr_atomic_commit(&af, e);
}
