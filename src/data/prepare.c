/* `mllm4rec prepare`: reads a format into prep_raw, filters (min rating, titles,
 * iterative k-core), assigns dense ids, sorts each user's items and writes the
 * dataset folder atomically. See mllm4rec/prepare.h. */
#include "mllm4rec/prepare.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mllm4rec/dataset.h"
#include "prep_internal.h"

void mr_prepare_opts_init(mr_prepare_opts *o) {
    memset(o, 0, sizeof *o);
    o->min_uc = 5;
    o->min_sc = 5;
    o->min_rating = 0;
}

/* ---- options ---- */

/* The default name: the folder's (movielens) or file's base name, without
 * compression and table extensions; Amazon's ratings_<Cat>.csv / reviews_<Cat>_5.json
 * give <Cat>. */
static void default_name(const mr_prepare_opts *o, char *out, size_t outsz) {
    const char *src = !strcmp(o->format, "movielens") ? o->input
                      : !strcmp(o->format, "amazon2014") ? (o->ratings ? o->ratings : o->reviews)
                      : !strcmp(o->format, "interactions") ? o->interactions
                                                            : o->sequences;
    char base[256];
    mr_path_basename(src, base, sizeof base);
    if (strcmp(o->format, "movielens")) {
        static const char *const exts[] = {".gz", ".tsv", ".txt", ".csv", ".json", ".jsonl", ".dat"};
        for (int again = 0; again < 2; again++)
            for (size_t k = 0; k < sizeof exts / sizeof exts[0]; k++) {
                size_t n = strlen(base), m = strlen(exts[k]);
                if (n > m && !strcmp(base + n - m, exts[k])) base[n - m] = 0;
            }
    }
    if (!strcmp(o->format, "amazon2014")) {
        size_t n = strlen(base);
        if (!strncmp(base, "ratings_", 8) && n > 8) memmove(base, base + 8, n - 8 + 1);
        else if (!strncmp(base, "reviews_", 8) && n > 8) {
            memmove(base, base + 8, n - 8 + 1);
            n = strlen(base);
            if (n > 2 && !strcmp(base + n - 2, "_5")) base[n - 2] = 0;
        }
    }
    snprintf(out, outsz, "%s", base);
}

static int check_opts(const mr_prepare_opts *o, mr_error *e) {
    if (!o->format) return mr_fail(e, MR_ERR_USAGE, "--format is required (movielens, amazon2014, interactions, sequences)");
    if (!o->out) return mr_fail(e, MR_ERR_USAGE, "--out is required");
    if (o->min_uc < 0 || o->min_sc < 0) return mr_fail(e, MR_ERR_USAGE, "--min-uc and --min-sc must be >= 0");
    if (!(o->min_rating >= 0)) return mr_fail(e, MR_ERR_USAGE, "--min-rating must be >= 0");
    struct {
        const char *flag;
        const char *val;
    } f[] = {{"--input", o->input},     {"--ratings", o->ratings},           {"--reviews", o->reviews},
             {"--meta", o->meta},       {"--interactions", o->interactions}, {"--sequences", o->sequences},
             {"--titles", o->titles}};
    int allowed[7] = {0};
    if (!strcmp(o->format, "movielens")) {
        if (!o->input) return mr_fail(e, MR_ERR_USAGE, "--format movielens needs --input DIR");
        allowed[0] = 1;
    } else if (!strcmp(o->format, "amazon2014")) {
        if (!o->meta || (!o->ratings == !o->reviews))
            return mr_fail(e, MR_ERR_USAGE, "--format amazon2014 needs --meta FILE and one of --ratings FILE or --reviews FILE");
        allowed[1] = allowed[2] = allowed[3] = 1;
    } else if (!strcmp(o->format, "interactions")) {
        if (!o->interactions || !o->titles)
            return mr_fail(e, MR_ERR_USAGE, "--format interactions needs --interactions FILE and --titles FILE");
        allowed[4] = allowed[6] = 1;
    } else if (!strcmp(o->format, "sequences")) {
        if (!o->sequences || !o->titles)
            return mr_fail(e, MR_ERR_USAGE, "--format sequences needs --sequences FILE and --titles FILE");
        allowed[5] = allowed[6] = 1;
    } else {
        return mr_fail(e, MR_ERR_USAGE, "unknown --format '%s' (expected movielens, amazon2014, interactions or sequences)",
                       o->format);
    }
    for (int k = 0; k < 7; k++)
        if (f[k].val && !allowed[k])
            return mr_fail(e, MR_ERR_USAGE, "%s does not apply to --format %s", f[k].flag, o->format);
    if (o->min_rating > 0 && !strcmp(o->format, "sequences"))
        return mr_fail(e, MR_ERR_USAGE, "--min-rating needs ratings; the sequences format has none");
    return MR_OK;
}

static int check_name(const char *name, mr_error *e) {
    if (!*name || !strcmp(name, ".") || !strcmp(name, ".."))
        return mr_fail(e, MR_ERR_USAGE, "the dataset name is empty (give --name)");
    for (const char *p = name; *p; p++)
        if (*p == '/' || (unsigned char)*p < 0x20)
            return mr_fail(e, MR_ERR_USAGE, "--name '%s' may not hold '/' or control characters", name);
    if (!mr_utf8_valid(name, strlen(name))) return mr_fail(e, MR_ERR_USAGE, "--name is not valid UTF-8");
    return MR_OK;
}

/* Every input file must exist before any reading starts. */
static int check_inputs_exist(const mr_prepare_opts *o, mr_error *e) {
    const char *files[] = {o->ratings, o->reviews, o->meta, o->interactions, o->sequences, o->titles};
    const char *what[] = {"ratings", "reviews", "meta", "interactions", "sequences", "titles"};
    for (int k = 0; k < 6; k++)
        if (files[k] && !mr_file_exists(files[k]))
            return mr_fail(e, MR_ERR_INPUT, "%s: missing (the %s file)", files[k], what[k]);
    if (o->input && !mr_is_dir(o->input))
        return mr_fail(e, MR_ERR_INPUT, "%s: not a folder (--input names the MovieLens folder)", o->input);
    return MR_OK;
}

/* An existing OUT may only be replaced with --force, and only when it looks like a
 * dataset folder (holds meta.json) or is empty: --force never wipes an unrelated folder. */
static int check_out(const mr_prepare_opts *o, mr_error *e) {
    struct stat st;
    if (lstat(o->out, &st) != 0) return MR_OK;
    if (!o->force) return mr_fail(e, MR_ERR_INPUT, "%s exists (use --force to replace it)", o->out);
    if (!S_ISDIR(st.st_mode)) return mr_fail(e, MR_ERR_INPUT, "%s exists and is not a folder; not replacing it", o->out);
    char *meta = mr_path_join(o->out, "meta.json", e);
    if (!meta) return MR_ERR_INTERNAL;
    int has_meta = mr_file_exists(meta);
    free(meta);
    if (has_meta) return MR_OK;
    DIR *d = opendir(o->out);
    if (!d) return mr_fail(e, MR_ERR_INPUT, "%s: cannot read: %s", o->out, strerror(errno));
    int empty = 1;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) empty = 0;
    closedir(d);
    if (!empty)
        return mr_fail(e, MR_ERR_INPUT, "%s is a non-empty folder without meta.json; --force only replaces dataset folders",
                       o->out);
    return MR_OK;
}

/* ---- filtering ---- */

typedef struct filtered {
    int64_t n;                 /* rows kept */
    int32_t n_users, n_items;  /* dense counts */
    int32_t *user_dense;       /* per raw user index: 0 = dropped, else 1..n_users */
    int32_t *item_dense;       /* per raw item index */
    int32_t *user_raw;         /* per dense user: raw index */
    int32_t *item_raw;         /* per dense item: raw index */
    int64_t *user_off;         /* n_users + 2: rows of dense user u are [off[u], off[u+1]) */
    int32_t *seq_item;         /* dense item ids, grouped by user, time-ordered */
    int64_t *seq_ts;
    float *seq_rating;
} filtered;

static void filtered_free(filtered *f) {
    free(f->user_dense);
    free(f->item_dense);
    free(f->user_raw);
    free(f->item_raw);
    free(f->user_off);
    free(f->seq_item);
    free(f->seq_ts);
    free(f->seq_rating);
    memset(f, 0, sizeof *f);
}

/* Keeps rows[k] where keep(k); compacts all row arrays in place. */
static int64_t compact_rows(prep_raw *r, const uint8_t *keep) {
    int64_t w = 0;
    for (int64_t k = 0; k < r->n_rows; k++) {
        if (!keep[k]) continue;
        r->row_user[w] = r->row_user[k];
        r->row_item[w] = r->row_item[k];
        r->row_ts[w] = r->row_ts[k];
        r->row_rating[w] = r->row_rating[k];
        w++;
    }
    r->n_rows = w;
    return w;
}

static void count_distinct(const prep_raw *r, int32_t *ucount, int32_t *icount, mr_prepare_counts *c) {
    memset(ucount, 0, (size_t)r->users.n * sizeof *ucount);
    memset(icount, 0, (size_t)r->items.n * sizeof *icount);
    for (int64_t k = 0; k < r->n_rows; k++) {
        ucount[r->row_user[k]]++;
        icount[r->row_item[k]]++;
    }
    if (c) {
        c->interactions = r->n_rows;
        c->users = c->items = 0;
        for (int32_t u = 0; u < r->users.n; u++) c->users += ucount[u] > 0;
        for (int32_t i = 0; i < r->items.n; i++) c->items += icount[i] > 0;
    }
}

/* ---- id order: numeric when every id is a decimal number, else bytewise ---- */

typedef struct id_sort_ctx {
    const strtab *t;
    int numeric;
} id_sort_ctx;
static id_sort_ctx g_sort; /* qsort has no context argument in C11 */

static int cmp_ids(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    const char *sx = g_sort.t->strs[x], *sy = g_sort.t->strs[y];
    size_t lx = g_sort.t->lens[x], ly = g_sort.t->lens[y];
    if (g_sort.numeric) {
        const char *px = sx, *py = sy;
        size_t nx = lx, ny = ly;
        while (nx > 1 && *px == '0') px++, nx--;
        while (ny > 1 && *py == '0') py++, ny--;
        if (nx != ny) return nx < ny ? -1 : 1;
        int c = memcmp(px, py, nx);
        if (c) return c;
    }
    size_t m = lx < ly ? lx : ly;
    int c = memcmp(sx, sy, m);
    if (c) return c;
    return (lx > ly) - (lx < ly);
}

/* Fills dense[raw] = 1.. in id order for the raw ids with count > 0. */
static int assign_dense(const strtab *t, const int32_t *count, int32_t **dense_out, int32_t **raw_out, int32_t *n_out,
                        mr_error *e) {
    int32_t n = 0;
    for (int32_t k = 0; k < t->n; k++) n += count[k] > 0;
    int32_t *order = mr_alloc((size_t)n * sizeof *order, e);
    int32_t *dense = mr_calloc((size_t)t->n, sizeof *dense, e);
    if (!order || !dense) {
        free(order);
        free(dense);
        return MR_ERR_INTERNAL;
    }
    int numeric = 1;
    n = 0;
    for (int32_t k = 0; k < t->n; k++)
        if (count[k] > 0) {
            order[n++] = k;
            if (numeric && !is_digits(t->strs[k], t->lens[k])) numeric = 0;
        }
    g_sort.t = t;
    g_sort.numeric = numeric;
    qsort(order, (size_t)n, sizeof *order, cmp_ids);
    for (int32_t k = 0; k < n; k++) dense[order[k]] = k + 1;
    *dense_out = dense;
    *raw_out = order;
    *n_out = n;
    return MR_OK;
}

typedef struct seq_entry {
    int64_t ts;
    int32_t item;
    float rating;
} seq_entry;

static int cmp_entry(const void *a, const void *b) {
    const seq_entry *x = a, *y = b;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    return (x->item > y->item) - (x->item < y->item);
}

static int filter_and_order(prep_raw *r, mr_prepare_stats *st, filtered *f, mr_error *e) {
    const mr_prepare_opts *o = r->opts;
    int rc = MR_OK;
    int32_t *ucount = mr_alloc((size_t)(r->users.n + 1) * sizeof *ucount, e);
    int32_t *icount = mr_alloc((size_t)(r->items.n + 1) * sizeof *icount, e);
    uint8_t *keep = mr_alloc((size_t)r->n_rows + 1, e);
    seq_entry *tmp = NULL;
    if (!ucount || !icount || !keep) {
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    /* drop items without a non-empty title */
    for (int64_t k = 0; k < r->n_rows; k++) {
        int32_t i = r->row_item[k];
        keep[k] = i < r->titles_cap && r->titles[i] != NULL;
    }
    compact_rows(r, keep);
    count_distinct(r, ucount, icount, &st->titled);
    /* iterative k-core until stable */
    st->kcore_rounds = 0;
    for (;;) {
        int64_t before = r->n_rows;
        for (int64_t k = 0; k < r->n_rows; k++)
            keep[k] = icount[r->row_item[k]] >= o->min_sc && ucount[r->row_user[k]] >= o->min_uc;
        compact_rows(r, keep);
        st->kcore_rounds++;
        count_distinct(r, ucount, icount, NULL);
        if (r->n_rows == before) break;
    }
    count_distinct(r, ucount, icount, &st->after);
    if (r->n_rows == 0) {
        rc = mr_fail(e, MR_ERR_INPUT, "no interactions left after dropping untitled items and the %lld/%lld-core filter",
                     (long long)o->min_uc, (long long)o->min_sc);
        goto done;
    }
    /* dense ids */
    if ((rc = assign_dense(&r->users, ucount, &f->user_dense, &f->user_raw, &f->n_users, e))) goto done;
    if ((rc = assign_dense(&r->items, icount, &f->item_dense, &f->item_raw, &f->n_items, e))) goto done;
    /* group rows by dense user (counting sort), then sort each user's rows */
    f->n = r->n_rows;
    f->user_off = mr_calloc((size_t)f->n_users + 2, sizeof *f->user_off, e);
    f->seq_item = mr_alloc((size_t)f->n * sizeof *f->seq_item, e);
    f->seq_ts = mr_alloc((size_t)f->n * sizeof *f->seq_ts, e);
    f->seq_rating = mr_alloc((size_t)f->n * sizeof *f->seq_rating, e);
    if (!f->user_off || !f->seq_item || !f->seq_ts || !f->seq_rating) {
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    for (int64_t k = 0; k < f->n; k++) f->user_off[f->user_dense[r->row_user[k]] + 1]++;
    for (int32_t u = 1; u <= f->n_users + 1; u++) f->user_off[u] += f->user_off[u - 1];
    /* user_off[u] is now the start of user u (index 1-based users; user_off[1] = 0) */
    int64_t longest = 0;
    for (int32_t u = 1; u <= f->n_users; u++)
        if (f->user_off[u + 1] - f->user_off[u] > longest) longest = f->user_off[u + 1] - f->user_off[u];
    int64_t *fill = mr_alloc(((size_t)f->n_users + 2) * sizeof *fill, e);
    tmp = mr_alloc((size_t)(longest + 1) * sizeof *tmp, e);
    if (!fill || !tmp) {
        free(fill);
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    memcpy(fill, f->user_off, ((size_t)f->n_users + 2) * sizeof *fill);
    for (int64_t k = 0; k < f->n; k++) {
        int64_t at = fill[f->user_dense[r->row_user[k]]]++;
        f->seq_item[at] = f->item_dense[r->row_item[k]];
        f->seq_ts[at] = r->row_ts[k];
        f->seq_rating[at] = r->row_rating[k];
    }
    free(fill);
    for (int32_t u = 1; u <= f->n_users; u++) {
        int64_t a = f->user_off[u], b = f->user_off[u + 1];
        for (int64_t k = a; k < b; k++) tmp[k - a] = (seq_entry){f->seq_ts[k], f->seq_item[k], f->seq_rating[k]};
        qsort(tmp, (size_t)(b - a), sizeof *tmp, cmp_entry);
        for (int64_t k = a; k < b; k++) {
            f->seq_ts[k] = tmp[k - a].ts;
            f->seq_item[k] = tmp[k - a].item;
            f->seq_rating[k] = tmp[k - a].rating;
        }
    }
done:
    free(tmp);
    free(ucount);
    free(icount);
    free(keep);
    return rc;
}

/* ---- writing ---- */

static void put_clean(FILE *fp, const char *s) {
    for (; *s; s++) fputc(*s == '\t' || *s == '\n' || *s == '\r' ? ' ' : *s, fp);
}

static int write_sequences(const char *path, const prep_raw *r, const filtered *f, mr_error *e) {
    mr_atomic_file af;
    int rc = mr_atomic_open(&af, path, e);
    if (rc) return rc;
    fputs("user_id\tsource_user_id\titems\n", af.f);
    for (int32_t u = 1; u <= f->n_users; u++) {
        fprintf(af.f, "%d\t", u);
        put_clean(af.f, r->users.strs[f->user_raw[u - 1]]);
        fputc('\t', af.f);
        for (int64_t k = f->user_off[u]; k < f->user_off[u + 1]; k++)
            fprintf(af.f, k == f->user_off[u] ? "%d" : " %d", f->seq_item[k]);
        fputc('\n', af.f);
    }
    if (ferror(af.f)) return mr_atomic_fail(&af, e);
    return mr_atomic_commit(&af, e);
}

static int write_items(const char *path, const prep_raw *r, const filtered *f, mr_error *e) {
    mr_item *items = mr_calloc((size_t)f->n_items + 1, sizeof *items, e);
    if (!items) return MR_ERR_INTERNAL;
    for (int32_t i = 1; i <= f->n_items; i++) {
        int32_t raw = f->item_raw[i - 1];
        items[i].source_id = r->items.strs[raw];
        items[i].title = r->titles[raw];
        items[i].image = r->images[raw] ? r->images[raw] : "";
        items[i].caption = "";
    }
    int rc = mr_dataset_write_items_file(path, items, f->n_items, e);
    free(items);
    return rc;
}

static int write_recbole(const char *dir, const char *name, const prep_raw *r, const filtered *f, mr_error *e) {
    char fname[512];
    snprintf(fname, sizeof fname, "%s.inter", name);
    char *path = mr_path_join(dir, fname, e);
    if (!path) return MR_ERR_INTERNAL;
    mr_atomic_file af;
    int rc = mr_atomic_open(&af, path, e);
    free(path);
    if (rc) return rc;
    fprintf(af.f, "user_id:token\titem_id:token\t%stimestamp:float\n", r->has_rating ? "rating:float\t" : "");
    for (int32_t u = 1; u <= f->n_users; u++) {
        for (int64_t k = f->user_off[u]; k < f->user_off[u + 1]; k++) {
            put_clean(af.f, r->users.strs[f->user_raw[u - 1]]);
            fputc('\t', af.f);
            put_clean(af.f, r->items.strs[f->item_raw[f->seq_item[k] - 1]]);
            if (r->has_rating) fprintf(af.f, "\t%g", (double)f->seq_rating[k]);
            fprintf(af.f, "\t%lld\n", (long long)f->seq_ts[k]);
        }
    }
    if (ferror(af.f)) return mr_atomic_fail(&af, e);
    if ((rc = mr_atomic_commit(&af, e))) return rc;
    snprintf(fname, sizeof fname, "%s.item", name);
    path = mr_path_join(dir, fname, e);
    if (!path) return MR_ERR_INTERNAL;
    rc = mr_atomic_open(&af, path, e);
    free(path);
    if (rc) return rc;
    fputs("item_id:token\ttitle:token_seq\n", af.f);
    for (int32_t i = 1; i <= f->n_items; i++) {
        int32_t raw = f->item_raw[i - 1];
        put_clean(af.f, r->items.strs[raw]);
        fputc('\t', af.f);
        put_clean(af.f, r->titles[raw]);
        fputc('\n', af.f);
    }
    if (ferror(af.f)) return mr_atomic_fail(&af, e);
    return mr_atomic_commit(&af, e);
}

static json_t *counts_json(const mr_prepare_counts *c) {
    json_t *o = json_object();
    json_object_set_new(o, "users", json_integer(c->users));
    json_object_set_new(o, "items", json_integer(c->items));
    json_object_set_new(o, "interactions", json_integer(c->interactions));
    return o;
}

static int write_meta(const char *path, const mr_prepare_opts *o, const prep_raw *r, const mr_prepare_stats *st,
                      mr_error *e) {
    json_t *m = json_object();
    json_object_set_new(m, "format_version", json_integer(MR_DATASET_FORMAT_VERSION));
    json_object_set_new(m, "created_by", json_string("mllm4rec prepare"));
    json_object_set_new(m, "format", json_string(o->format));
    json_object_set_new(m, "name", json_string(st->name));
    if (st->layout[0]) json_object_set_new(m, "layout", json_string(st->layout));
    json_t *par = json_object();
    json_object_set_new(par, "min_uc", json_integer(o->min_uc));
    json_object_set_new(par, "min_sc", json_integer(o->min_sc));
    json_object_set_new(par, "min_rating", json_real(o->min_rating));
    json_object_set_new(par, "skip_bad_lines", json_boolean(o->skip_bad_lines));
    json_object_set_new(par, "recbole", json_boolean(o->recbole));
    json_object_set_new(par, "id_order", json_string("ascending source id (numeric when all ids are decimal numbers)"));
    json_object_set_new(par, "tie_order", json_string(!strcmp(o->format, "sequences") ? "given order"
                                                                                       : "(timestamp, item id)"));
    json_object_set_new(m, "parameters", par);
    json_t *ins = json_array();
    for (int k = 0; k < r->n_inputs; k++) {
        json_t *in = json_object();
        json_object_set_new(in, "role", json_string(r->inputs[k].role));
        json_object_set_new(in, "path", json_string(r->inputs[k].path));
        json_object_set_new(in, "bytes", json_integer(r->inputs[k].bytes));
        json_object_set_new(in, "sha256", json_string(r->inputs[k].sha256));
        json_array_append_new(ins, in);
    }
    json_object_set_new(m, "inputs", ins);
    json_t *cnt = json_object();
    json_object_set_new(cnt, "raw", counts_json(&st->raw));
    json_object_set_new(cnt, "titled", counts_json(&st->titled));
    json_object_set_new(cnt, "after", counts_json(&st->after));
    json_object_set_new(m, "counts", cnt);
    json_object_set_new(m, "kcore_rounds", json_integer(st->kcore_rounds));
    json_object_set_new(m, "bad_lines_skipped", json_integer(st->bad_lines_skipped));
    json_object_set_new(m, "split", json_string("leave-one-out: last item = test, second to last = validation"));
    char *text = json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(m);
    if (!text) return mr_fail(e, MR_ERR_INTERNAL, "out of memory writing meta.json");
    size_t n = strlen(text);
    char *t2 = mr_realloc(text, n + 2, e);
    if (!t2) {
        free(text);
        return MR_ERR_INTERNAL;
    }
    t2[n] = '\n';
    int rc = mr_write_file_atomic(path, t2, n + 1, e);
    free(t2);
    return rc;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_tree(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* Moves the finished temporary folder to OUT; an old OUT is swapped out atomically
 * (renameat2 RENAME_EXCHANGE) and removed only afterwards. */
static int publish(const char *tmp, const char *out, mr_error *e) {
    struct stat st;
    if (lstat(out, &st) != 0) {
        if (rename(tmp, out) != 0) return mr_fail(e, MR_ERR_INTERNAL, "%s: cannot rename into place: %s", out, strerror(errno));
        return MR_OK;
    }
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, out, RENAME_EXCHANGE) == 0) {
        remove_tree(tmp); /* now holds the old folder */
        return MR_OK;
    }
    /* file systems without RENAME_EXCHANGE: two renames, undone if the second fails */
    size_t n = strlen(out) + 32;
    char *old = mr_alloc(n, e);
    if (!old) return MR_ERR_INTERNAL;
    snprintf(old, n, "%s.old.%ld", out, (long)getpid());
    if (rename(out, old) != 0) {
        free(old);
        return mr_fail(e, MR_ERR_INTERNAL, "%s: cannot move the old folder aside: %s", out, strerror(errno));
    }
    if (rename(tmp, out) != 0) {
        int err = errno;
        if (rename(old, out) != 0) mr_log("prepare: could not restore %s from %s", out, old);
        free(old);
        return mr_fail(e, MR_ERR_INTERNAL, "%s: cannot rename into place: %s", out, strerror(err));
    }
    remove_tree(old);
    free(old);
    return MR_OK;
}

static int write_output(const mr_prepare_opts *o, const prep_raw *r, const filtered *f, const mr_prepare_stats *st,
                        mr_error *e) {
    char out[4096];
    snprintf(out, sizeof out, "%s", o->out);
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/') out[--n] = 0;
    /* the parent folder must exist so that the temporary folder can sit beside OUT */
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", out);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = 0;
        int rc = mr_mkdir_p(parent, e);
        if (rc) return rc;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out, (long)getpid());
    remove_tree(tmp);
    if (mkdir(tmp, 0755) != 0) return mr_fail(e, MR_ERR_INPUT, "%s: cannot create folder: %s", tmp, strerror(errno));
    int rc = MR_OK;
    char *p_items = mr_path_join(tmp, "items.tsv", e);
    char *p_seqs = mr_path_join(tmp, "sequences.tsv", e);
    char *p_meta = mr_path_join(tmp, "meta.json", e);
    if (!p_items || !p_seqs || !p_meta) rc = MR_ERR_INTERNAL;
    if (!rc) rc = write_items(p_items, r, f, e);
    if (!rc) rc = write_sequences(p_seqs, r, f, e);
    if (!rc && o->recbole) rc = write_recbole(tmp, st->name, r, f, e);
    if (!rc) rc = write_meta(p_meta, o, r, st, e); /* last: a folder with meta.json is complete */
    if (!rc) rc = publish(tmp, out, e);
    if (rc) remove_tree(tmp);
    free(p_items);
    free(p_seqs);
    free(p_meta);
    return rc;
}

int mr_prepare_check_opts(const mr_prepare_opts *o, mr_error *e) { return check_opts(o, e); }

int mr_prepare(const mr_prepare_opts *o, mr_prepare_stats *st, mr_error *e) {
    double t0 = mr_now();
    memset(st, 0, sizeof *st);
    int rc = check_opts(o, e);
    if (rc) return rc;
    if (o->name) snprintf(st->name, sizeof st->name, "%s", o->name);
    else default_name(o, st->name, sizeof st->name);
    if ((rc = check_name(st->name, e))) return rc;
    if ((rc = check_out(o, e))) return rc;
    if ((rc = check_inputs_exist(o, e))) return rc;

    prep_raw r;
    memset(&r, 0, sizeof r);
    strtab_init(&r.users);
    strtab_init(&r.items);
    r.opts = o;
    filtered f;
    memset(&f, 0, sizeof f);
    mr_log("prepare: reading %s data", o->format);
    if (!strcmp(o->format, "movielens")) rc = read_movielens(&r, o->input, e);
    else if (!strcmp(o->format, "amazon2014")) rc = read_amazon2014(&r, o->ratings, o->reviews, o->meta, e);
    else if (!strcmp(o->format, "interactions")) {
        rc = read_interactions_tsv(&r, o->interactions, e);
        if (!rc) rc = read_titles_tsv(&r, o->titles, e);
    } else {
        rc = read_sequences_txt(&r, o->sequences, e);
        if (!rc) rc = read_titles_tsv(&r, o->titles, e);
    }
    if (rc) goto done;
    if (o->min_rating > 0 && !r.has_rating) {
        rc = mr_fail(e, MR_ERR_USAGE, "--min-rating %g: the input has no ratings", o->min_rating);
        goto done;
    }
    snprintf(st->layout, sizeof st->layout, "%s", r.layout);
    st->raw.interactions = r.raw_rows;
    st->raw.users = r.users.n;
    st->raw.items = r.items.n;
    st->bad_lines_skipped = r.bad_lines;
    if (r.bad_lines) mr_log("prepare: skipped %lld bad lines", (long long)r.bad_lines);
    mr_log("prepare: %lld interactions read (%lld users, %lld items); filtering", (long long)r.raw_rows,
           (long long)r.users.n, (long long)r.items.n);
    if ((rc = filter_and_order(&r, st, &f, e))) goto done;
    mr_log("prepare: %lld users, %lld items, %lld interactions after %d k-core rounds; writing %s",
           (long long)st->after.users, (long long)st->after.items, (long long)st->after.interactions, st->kcore_rounds,
           o->out);
    rc = write_output(o, &r, &f, st, e);
done:
    filtered_free(&f);
    raw_free(&r);
    st->seconds = mr_now() - t0;
    return rc;
}

void mr_prepare_print_stats(FILE *out, const mr_prepare_stats *st) {
    fprintf(out, "dataset %s%s%s%s\n", st->name, st->layout[0] ? " (" : "", st->layout, st->layout[0] ? ")" : "");
    fprintf(out, "| stage | users | items | interactions |\n|---|---:|---:|---:|\n");
    fprintf(out, "| read | %lld | %lld | %lld |\n", (long long)st->raw.users, (long long)st->raw.items,
            (long long)st->raw.interactions);
    fprintf(out, "| with title | %lld | %lld | %lld |\n", (long long)st->titled.users, (long long)st->titled.items,
            (long long)st->titled.interactions);
    fprintf(out, "| k-core | %lld | %lld | %lld |\n", (long long)st->after.users, (long long)st->after.items,
            (long long)st->after.interactions);
    double users = (double)st->after.users, items = (double)st->after.items;
    if (users > 0 && items > 0)
        fprintf(out, "mean sequence length %.2f, density %.4f%%, k-core rounds %d, bad lines skipped %lld, %.2f s\n",
                (double)st->after.interactions / users, 100.0 * (double)st->after.interactions / (users * items),
                st->kcore_rounds, (long long)st->bad_lines_skipped, st->seconds);
}
