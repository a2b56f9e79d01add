/* Format readers for prepare: each streams its files line by line into prep_raw
 * (interactions first, then titles only for items that occur in them). */
#include "prep_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mllm4rec/lines.h"

/* ---- the raw store ---- */

static int ensure_title_slots(prep_raw *r, mr_error *e) {
    int64_t need = r->items.n;
    if (need <= r->titles_cap) return MR_OK;
    int64_t nc = r->titles_cap ? r->titles_cap : 1024;
    while (nc < need) nc *= 2;
    char **t = mr_realloc(r->titles, (size_t)nc * sizeof *t, e);
    if (!t) return MR_ERR_INTERNAL;
    r->titles = t;
    char **im = mr_realloc(r->images, (size_t)nc * sizeof *im, e);
    if (!im) return MR_ERR_INTERNAL;
    r->images = im;
    memset(r->titles + r->titles_cap, 0, (size_t)(nc - r->titles_cap) * sizeof *t);
    memset(r->images + r->titles_cap, 0, (size_t)(nc - r->titles_cap) * sizeof *im);
    r->titles_cap = nc;
    return MR_OK;
}

int raw_add(prep_raw *r, const char *user, size_t ulen, const char *item, size_t ilen, int64_t ts, double rating,
            mr_error *e) {
    r->raw_rows++;
    int32_t u = strtab_intern(&r->users, user, ulen, e);
    int32_t i = u < 0 ? -1 : strtab_intern(&r->items, item, ilen, e);
    if (i < 0) return e->code ? e->code : MR_ERR_INTERNAL;
    if (!isnan(rating)) r->has_rating = 1;
    if (r->opts->min_rating > 0 && !(rating >= r->opts->min_rating)) return MR_OK;
    if (r->n_rows == r->rows_cap) {
        int64_t nc = r->rows_cap ? r->rows_cap * 2 : 1 << 16;
        int32_t *a = mr_realloc(r->row_user, (size_t)nc * sizeof *a, e);
        if (!a) return MR_ERR_INTERNAL;
        r->row_user = a;
        int32_t *b = mr_realloc(r->row_item, (size_t)nc * sizeof *b, e);
        if (!b) return MR_ERR_INTERNAL;
        r->row_item = b;
        int64_t *c = mr_realloc(r->row_ts, (size_t)nc * sizeof *c, e);
        if (!c) return MR_ERR_INTERNAL;
        r->row_ts = c;
        float *d = mr_realloc(r->row_rating, (size_t)nc * sizeof *d, e);
        if (!d) return MR_ERR_INTERNAL;
        r->row_rating = d;
        r->rows_cap = nc;
    }
    r->row_user[r->n_rows] = u;
    r->row_item[r->n_rows] = i;
    r->row_ts[r->n_rows] = ts;
    r->row_rating[r->n_rows] = (float)rating;
    r->n_rows++;
    return MR_OK;
}

int raw_set_title(prep_raw *r, const char *item, size_t ilen, const char *title, const char *image, mr_error *e) {
    r->title_rows++;
    int32_t i = strtab_find(&r->items, item, ilen);
    if (i < 0) return MR_OK;
    if (ensure_title_slots(r, e)) return MR_ERR_INTERNAL;
    char *t = mr_strdup(title ? title : "", e);
    if (!t) return MR_ERR_INTERNAL;
    char *s = strip_ws(t);
    if (!*s) { /* an empty title never replaces a real one */
        free(t);
        return MR_OK;
    }
    memmove(t, s, strlen(s) + 1);
    free(r->titles[i]);
    r->titles[i] = t;
    if (image && *image) {
        char *im = mr_strdup(image, e);
        if (!im) return MR_ERR_INTERNAL;
        char *st = strip_ws(im);
        memmove(im, st, strlen(st) + 1);
        free(r->images[i]);
        r->images[i] = im;
    }
    return MR_OK;
}

int raw_add_input(prep_raw *r, const char *role, const char *path, mr_error *e) {
    if (r->n_inputs == PREP_MAX_INPUTS) return mr_fail(e, MR_ERR_INTERNAL, "too many input files");
    prep_input *in = &r->inputs[r->n_inputs];
    memset(in, 0, sizeof *in);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return mr_fail(e, MR_ERR_INPUT, "%s: missing (the %s file)", path, role);
    int rc = mr_sha256_file(path, in->sha256, e);
    if (rc) return rc;
    in->path = mr_strdup(path, e);
    if (!in->path) return MR_ERR_INTERNAL;
    in->role = role;
    in->bytes = (int64_t)st.st_size;
    r->n_inputs++;
    return MR_OK;
}

int raw_bad_line(prep_raw *r, mr_error *e, const char *path, int64_t line, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->opts->skip_bad_lines) {
        if (r->bad_lines < 5) mr_log("prepare: skipping %s:%lld: %s", path, (long long)line, msg);
        r->bad_lines++;
        return MR_OK;
    }
    return mr_fail(e, MR_ERR_INPUT, "%s:%lld: %s", path, (long long)line, msg);
}

void raw_free(prep_raw *r) {
    if (r->titles)
        for (int64_t i = 0; i < r->titles_cap; i++) {
            free(r->titles[i]);
            free(r->images[i]);
        }
    free(r->titles);
    free(r->images);
    strtab_free(&r->users);
    strtab_free(&r->items);
    free(r->row_user);
    free(r->row_item);
    free(r->row_ts);
    free(r->row_rating);
    for (int k = 0; k < r->n_inputs; k++) free(r->inputs[k].path);
    memset(r, 0, sizeof *r);
}

/* ---- shared row helpers ---- */

/* Parses a timestamp field: an integer (a float with an integral value is taken too). */
static int parse_ts(const char *s, int64_t *ts) {
    if (mr_parse_i64(s, ts) == 0) return 0;
    double d;
    if (mr_parse_double(s, &d) == 0 && d == floor(d) && fabs(d) < 9.0e18) {
        *ts = (int64_t)d;
        return 0;
    }
    return -1;
}

static int find_col(char **names, int n, const char *want) {
    for (int k = 0; k < n; k++)
        if (!strcmp(names[k], want)) return k;
    return -1;
}

/* Reads the header line of a file; NULL-free: returns 1 with the line, or sets e. */
static int read_header(mr_lines *L, char **line, size_t *len, const char *what, mr_error *e) {
    int got = mr_lines_next(L, line, len, e);
    if (got < 0) return MR_ERR_INPUT;
    if (got == 0) return mr_fail(e, MR_ERR_INPUT, "%s:1: empty file (expected %s)", L->path, what);
    if (!mr_utf8_valid(*line, *len)) return mr_fail(e, MR_ERR_INPUT, "%s:1: invalid UTF-8 in the header", L->path);
    /* a UTF-8 byte order mark is not part of the first column's name */
    if (*len >= 3 && !memcmp(*line, "\xEF\xBB\xBF", 3)) {
        *line += 3;
        *len -= 3;
    }
    return MR_OK;
}

/* ---- delimited tables ----
 * A table is read row by row: the header (when the file has one) maps column
 * names to positions; every row is checked for UTF-8 (or converted from
 * ISO-8859-1), split at sep (NULL: CSV with quotes) and checked for the fields
 * the reader needs. A bad row goes through raw_bad_line (an error, or skipped
 * with --skip-bad-lines). The ratings, titles and movie readers differ only in
 * what they do with a row. */
enum { TABLE_MAXF = 64 };
typedef struct {
    mr_lines L;
    const char *path, *sep;
    int latin1; /* rows that are not UTF-8 are ISO-8859-1 (GroupLens' u.item, movies.dat) */
    int need;   /* fields a row must have: the largest column position used + 1 */
    char *f[TABLE_MAXF];
    int nf;
    char *conv; /* the current row converted to UTF-8, when it was */
} table;

static int table_open(table *t, const char *path, const char *sep, int latin1, mr_error *e) {
    memset(t, 0, sizeof *t);
    t->path = path, t->sep = sep, t->latin1 = latin1;
    return mr_lines_open(&t->L, path, e);
}

static void table_close(table *t) {
    free(t->conv);
    mr_lines_close(&t->L);
}

static int table_split(table *t, char *line) {
    return t->sep ? split_sep(line, t->sep, t->f, TABLE_MAXF) : split_csv(line, t->f, TABLE_MAXF);
}

/* Reads the header and finds cols[0..n) in it: ix[k] its position, or -1 for an
 * optional column (k >= n_required) that is absent; a required one that is
 * absent is an error naming it and what (the header expected). */
static int table_header(table *t, const char *what, const char *const *cols, int n, int n_required, int *ix,
                        mr_error *e) {
    char *line;
    size_t len;
    int rc = read_header(&t->L, &line, &len, what, e);
    if (rc) return rc;
    int nf = table_split(t, line);
    if (nf > TABLE_MAXF) nf = TABLE_MAXF;
    if (nf < 0) nf = 0;
    for (int k = 0; k < nf; k++) strip_ws(t->f[k]);
    for (int k = 0; k < n; k++) {
        ix[k] = find_col(t->f, nf, cols[k]);
        if (ix[k] < 0 && k < n_required)
            return mr_fail(e, MR_ERR_INPUT, "%s:1: missing column '%s' (expected %s)", t->path, cols[k], what);
    }
    return MR_OK;
}

/* Fields a row needs for the columns ix[0..n) (-1: absent). */
static void table_need(table *t, const int *ix, int n) {
    t->need = 0;
    for (int k = 0; k < n; k++)
        if (ix[k] + 1 > t->need) t->need = ix[k] + 1;
}

/* The next good row into t->f / t->nf: *row 1, or 0 at the end of the file. */
static int table_next(table *t, prep_raw *r, int *row, mr_error *e) {
    *row = 0;
    char *line;
    size_t len;
    int got, rc = MR_OK;
    while (!rc && (got = mr_lines_next(&t->L, &line, &len, e)) == 1) {
        const int64_t ln = t->L.lineno;
        if (len == 0) continue;
        free(t->conv);
        t->conv = NULL;
        if (!mr_utf8_valid(line, len)) {
            if (!t->latin1) { /* a latin1 line that is valid UTF-8 (a re-encoded copy) is taken as it is */
                rc = raw_bad_line(r, e, t->path, ln, "invalid UTF-8");
                continue;
            }
            if (!(t->conv = latin1_to_utf8(line, len, e))) return MR_ERR_INTERNAL;
            line = t->conv;
        }
        t->nf = table_split(t, line);
        if (t->nf < 0)
            rc = raw_bad_line(r, e, t->path, ln, "a quoted field is not closed");
        else if (t->nf < t->need)
            rc = raw_bad_line(r, e, t->path, ln, "short row: expected at least %d fields, found %d", t->need, t->nf);
        else {
            *row = 1;
            return MR_OK;
        }
    }
    if (!rc && got < 0) rc = MR_ERR_INPUT;
    return rc;
}

/* Streams a delimited ratings-like file: user, item, timestamp and (optionally)
 * rating columns, by name from the header or at fixed positions. */
typedef struct ratings_spec {
    const char *sep; /* NULL: CSV with quotes */
    int header;      /* 1: first line names the columns (by the names below) */
    const char *user_col, *item_col, *ts_col, *rating_col;
    int user_ix, item_ix, ts_ix, rating_ix; /* fixed positions when no header (rating -1: none) */
} ratings_spec;

static int read_ratings_file(prep_raw *r, const char *path, const ratings_spec *sp, mr_error *e) {
    table t;
    int rc = table_open(&t, path, sp->sep, 0, e);
    if (rc) return rc;
    int ix[4] = {sp->user_ix, sp->item_ix, sp->ts_ix, sp->rating_ix}; /* user, item, timestamp, rating */
    if (sp->header) {
        const char *cols[4] = {sp->user_col, sp->item_col, sp->ts_col, sp->rating_col};
        char what[256];
        snprintf(what, sizeof what, "a header with %s, %s and %s", sp->user_col, sp->item_col, sp->ts_col);
        rc = table_header(&t, what, cols, sp->rating_col ? 4 : 3, 3, ix, e);
        if (!sp->rating_col) ix[3] = -1;
    }
    table_need(&t, ix, 4);
    int row;
    while (!rc && !(rc = table_next(&t, r, &row, e)) && row) {
        const int64_t ln = t.L.lineno;
        const char *user = strip_ws(t.f[ix[0]]), *item = strip_ws(t.f[ix[1]]), *tss = strip_ws(t.f[ix[2]]);
        if (!*user || !*item) {
            rc = raw_bad_line(r, e, path, ln, "empty %s", !*user ? "user id" : "item id");
            continue;
        }
        int64_t ts;
        if (parse_ts(tss, &ts)) {
            rc = raw_bad_line(r, e, path, ln, "expected an integer timestamp, found '%s'", tss);
            continue;
        }
        double rating = NAN;
        if (ix[3] >= 0) {
            const char *rs = strip_ws(t.f[ix[3]]);
            if (mr_parse_double(rs, &rating)) {
                rc = raw_bad_line(r, e, path, ln, "expected a numeric rating, found '%s'", rs);
                continue;
            }
        }
        rc = raw_add(r, user, strlen(user), item, strlen(item), ts, rating, e);
    }
    table_close(&t);
    return rc;
}

/* ---- titles TSV (interactions / sequences formats) ---- */

int read_titles_tsv(prep_raw *r, const char *path, mr_error *e) {
    int rc = raw_add_input(r, "titles", path, e);
    if (rc) return rc;
    table t;
    if ((rc = table_open(&t, path, "\t", 0, e))) return rc;
    static const char *const cols[3] = {"item_id", "title", "image"};
    int ix[3];
    rc = table_header(&t, "the header 'item_id<TAB>title'", cols, 3, 2, ix, e);
    table_need(&t, ix, 2); /* a row may end before the optional image column */
    int row;
    while (!rc && !(rc = table_next(&t, r, &row, e)) && row) {
        const char *item = strip_ws(t.f[ix[0]]);
        if (!*item) {
            rc = raw_bad_line(r, e, path, t.L.lineno, "empty item_id");
            continue;
        }
        rc = raw_set_title(r, item, strlen(item), t.f[ix[1]], ix[2] >= 0 && ix[2] < t.nf ? t.f[ix[2]] : NULL, e);
    }
    table_close(&t);
    return rc;
}

/* ---- interactions TSV ---- */

int read_interactions_tsv(prep_raw *r, const char *path, mr_error *e) {
    int rc = raw_add_input(r, "interactions", path, e);
    if (rc) return rc;
    ratings_spec sp = {.sep = "\t", .header = 1, .user_col = "user_id", .item_col = "item_id",
                       .rating_col = "rating", .ts_col = "timestamp"};
    return read_ratings_file(r, path, &sp, e);
}

/* ---- sequences ---- */

int read_sequences_txt(prep_raw *r, const char *path, mr_error *e) {
    int rc = raw_add_input(r, "sequences", path, e);
    if (rc) return rc;
    mr_lines L;
    rc = mr_lines_open(&L, path, e);
    if (rc) return rc;
    char *line;
    size_t len;
    int64_t position = 0; /* the given order is the time order */
    int got;
    while (!rc && (got = mr_lines_next(&L, &line, &len, e)) == 1) {
        int64_t ln = L.lineno;
        if (!mr_utf8_valid(line, len)) {
            rc = raw_bad_line(r, e, path, ln, "invalid UTF-8");
            continue;
        }
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) continue;
        char *user = p;
        while (*p && *p != ' ' && *p != '\t') p++;
        size_t ulen = (size_t)(p - user);
        int n_items = 0;
        for (;;) {
            while (*p == ' ' || *p == '\t') p++;
            if (!*p) break;
            char *item = p;
            while (*p && *p != ' ' && *p != '\t') p++;
            rc = raw_add(r, user, ulen, item, (size_t)(p - item), position++, NAN, e);
            if (rc) break;
            n_items++;
        }
        if (!rc && n_items == 0) {
            /* a user line without items: malformed, not an empty user */
            rc = raw_bad_line(r, e, path, ln, "expected 'user item item ...', found a user without items");
        }
    }
    if (!rc && got < 0) rc = MR_ERR_INPUT;
    mr_lines_close(&L);
    return rc;
}

/* ---- MovieLens ---- */

/* movies.csv (CSV with a header), u.item ('|') or movies.dat ('::', both without
 * a header: id, then title). */
static int read_movies(prep_raw *r, const char *path, const char *sep, int latin1, mr_error *e) {
    int rc = raw_add_input(r, "movies", path, e);
    if (rc) return rc;
    table t;
    if ((rc = table_open(&t, path, sep, latin1, e))) return rc;
    int ix[2] = {0, 1}; /* movie id, title */
    if (!sep) {
        static const char *const cols[2] = {"movieId", "title"};
        rc = table_header(&t, "the header 'movieId,title,genres'", cols, 2, 2, ix, e);
    }
    table_need(&t, ix, 2);
    int row;
    while (!rc && !(rc = table_next(&t, r, &row, e)) && row) {
        const char *id = strip_ws(t.f[ix[0]]);
        if (!*id) {
            rc = raw_bad_line(r, e, path, t.L.lineno, "empty movie id");
            continue;
        }
        if (strtab_find(&r->items, id, strlen(id)) < 0) {
            r->title_rows++;
            continue;
        }
        char *title = movielens_title(t.f[ix[1]], e);
        if (!title) {
            rc = MR_ERR_INTERNAL;
            break;
        }
        rc = raw_set_title(r, id, strlen(id), title, NULL, e);
        free(title);
    }
    table_close(&t);
    return rc;
}

int read_movielens(prep_raw *r, const char *dir, mr_error *e) {
    if (!mr_is_dir(dir)) return mr_fail(e, MR_ERR_INPUT, "%s: not a folder (--input names the MovieLens folder)", dir);
    char *p[6] = {0};
    static const char *const names[6] = {"ratings.csv", "movies.csv", "u.data", "u.item", "ratings.dat", "movies.dat"};
    int rc = MR_OK;
    for (int k = 0; k < 6 && !rc; k++)
        if (!(p[k] = mr_path_join(dir, names[k], e))) rc = MR_ERR_INTERNAL;
    if (rc) goto done;
    if (mr_file_exists(p[0]) || mr_file_exists(p[1])) {
        snprintf(r->layout, sizeof r->layout, "ml-latest");
        if ((rc = raw_add_input(r, "ratings", p[0], e)) || (rc = mr_file_exists(p[1]) ? 0 : mr_fail(e, MR_ERR_INPUT, "%s: missing (the movies file of the ml-latest layout)", p[1])))
            goto done;
        ratings_spec sp = {.sep = NULL, .header = 1, .user_col = "userId", .item_col = "movieId",
                           .rating_col = "rating", .ts_col = "timestamp"};
        if (!(rc = read_ratings_file(r, p[0], &sp, e))) rc = read_movies(r, p[1], NULL, 0, e);
    } else if (mr_file_exists(p[2]) || mr_file_exists(p[3])) {
        snprintf(r->layout, sizeof r->layout, "ml-100k");
        if ((rc = raw_add_input(r, "ratings", p[2], e)) || (rc = mr_file_exists(p[3]) ? 0 : mr_fail(e, MR_ERR_INPUT, "%s: missing (the items file of the ML-100K layout)", p[3])))
            goto done;
        ratings_spec sp = {.sep = "\t", .header = 0, .user_ix = 0, .item_ix = 1, .rating_ix = 2, .ts_ix = 3};
        if (!(rc = read_ratings_file(r, p[2], &sp, e))) rc = read_movies(r, p[3], "|", 1, e);
    } else if (mr_file_exists(p[4]) || mr_file_exists(p[5])) {
        snprintf(r->layout, sizeof r->layout, "ml-1m");
        if ((rc = raw_add_input(r, "ratings", p[4], e)) || (rc = mr_file_exists(p[5]) ? 0 : mr_fail(e, MR_ERR_INPUT, "%s: missing (the movies file of the ML-1M layout)", p[5])))
            goto done;
        ratings_spec sp = {.sep = "::", .header = 0, .user_ix = 0, .item_ix = 1, .rating_ix = 2, .ts_ix = 3};
        if (!(rc = read_ratings_file(r, p[4], &sp, e))) rc = read_movies(r, p[5], "::", 1, e);
    } else {
        rc = mr_fail(e, MR_ERR_INPUT,
                     "%s: no MovieLens files found (expected ratings.csv + movies.csv, u.data + u.item, or "
                     "ratings.dat + movies.dat)",
                     dir);
    }
done:
    for (int k = 0; k < 6; k++) free(p[k]);
    return rc;
}

/* ---- Amazon 2014 ---- */

static int read_amazon_reviews(prep_raw *r, const char *path, mr_error *e) {
    mr_lines L;
    int rc = mr_lines_open(&L, path, e);
    if (rc) return rc;
    char *line;
    size_t len;
    int got;
    while (!rc && (got = mr_lines_next(&L, &line, &len, e)) == 1) {
        int64_t ln = L.lineno;
        if (len == 0) continue;
        if (!mr_utf8_valid(line, len)) {
            rc = raw_bad_line(r, e, path, ln, "invalid UTF-8");
            continue;
        }
        json_error_t je;
        json_t *o = json_loadb(line, len, 0, &je);
        if (!o || !json_is_object(o)) {
            rc = raw_bad_line(r, e, path, ln, "expected a JSON object%s%s", o ? "" : ": ", o ? "" : je.text);
            json_decref(o);
            continue;
        }
        json_t *ju = json_object_get(o, "reviewerID"), *ji = json_object_get(o, "asin"),
               *jt = json_object_get(o, "unixReviewTime"), *jr = json_object_get(o, "overall");
        const char *missing = !json_is_string(ju) ? "reviewerID (a string)"
                              : !json_is_string(ji) ? "asin (a string)"
                              : !json_is_integer(jt) ? "unixReviewTime (an integer)"
                                                     : NULL;
        if (missing) rc = raw_bad_line(r, e, path, ln, "expected the key %s", missing);
        else {
            const char *u = json_string_value(ju), *i = json_string_value(ji);
            double rating = json_is_number(jr) ? json_number_value(jr) : NAN;
            if (!*u || !*i) rc = raw_bad_line(r, e, path, ln, "empty %s", !*u ? "reviewerID" : "asin");
            else rc = raw_add(r, u, strlen(u), i, strlen(i), json_integer_value(jt), rating, e);
        }
        json_decref(o);
    }
    if (!rc && got < 0) rc = MR_ERR_INPUT;
    mr_lines_close(&L);
    return rc;
}

static int read_amazon_meta(prep_raw *r, const char *path, mr_error *e) {
    int rc = raw_add_input(r, "meta", path, e);
    if (rc) return rc;
    mr_lines L;
    rc = mr_lines_open(&L, path, e);
    if (rc) return rc;
    char *line;
    size_t len;
    static const char *const keys[3] = {"asin", "title", "imUrl"};
    char *vals[3];
    pylit_fields pf = {.keys = keys, .n_keys = 3, .values = vals};
    int got;
    while (!rc && (got = mr_lines_next(&L, &line, &len, e)) == 1) {
        int64_t ln = L.lineno;
        if (len == 0) continue;
        if (!mr_utf8_valid(line, len)) {
            rc = raw_bad_line(r, e, path, ln, "invalid UTF-8");
            continue;
        }
        char why[128];
        size_t at = 0;
        if (pylit_parse_dict(line, len, &pf, why, sizeof why, &at)) {
            rc = raw_bad_line(r, e, path, ln, "expected a Python dict literal: %s at column %zu", why, at + 1);
            continue;
        }
        if (!vals[0] || !*strip_ws(vals[0])) rc = raw_bad_line(r, e, path, ln, "expected the key 'asin' (a string)");
        else {
            const char *asin = strip_ws(vals[0]);
            if (vals[1] && !mr_utf8_valid(vals[1], strlen(vals[1])))
                rc = raw_bad_line(r, e, path, ln, "invalid UTF-8 in the title");
            else rc = raw_set_title(r, asin, strlen(asin), vals[1] ? vals[1] : "", vals[2], e);
        }
        for (int k = 0; k < 3; k++) free(vals[k]);
    }
    if (!rc && got < 0) rc = MR_ERR_INPUT;
    mr_lines_close(&L);
    return rc;
}

int read_amazon2014(prep_raw *r, const char *ratings, const char *reviews, const char *meta, mr_error *e) {
    int rc;
    if (ratings) {
        if ((rc = raw_add_input(r, "ratings", ratings, e))) return rc;
        ratings_spec sp = {.sep = NULL, .header = 0, .user_ix = 0, .item_ix = 1, .rating_ix = 2, .ts_ix = 3};
        rc = read_ratings_file(r, ratings, &sp, e);
    } else {
        if ((rc = raw_add_input(r, "reviews", reviews, e))) return rc;
        rc = read_amazon_reviews(r, reviews, e);
    }
    if (rc) return rc;
    return read_amazon_meta(r, meta, e);
}
