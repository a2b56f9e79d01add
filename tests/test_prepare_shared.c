/* prepare on the real data in ../shared/data: the counts the paper's Table 1 and
 * SOURCES.md give, and every user's sequence against an independent
 * re-implementation of the reference rules written here (its own parsing, a
 * queue-based k-core peel instead of prepare's rounds, its own sort). */
#include "test.h"
#include "mllm4rec/dataset.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

typedef struct row {
    char *user, *item;
    long long ts;
    int uid, iid, alive;
} row;

typedef struct ref {
    row *rows;
    int n, cap;
    char **titled; /* sorted item ids that have a non-empty title */
    int n_titled;
} ref;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* numeric when both are digit strings without leading zeros issues (ids here are plain) */
static int numeric_ids;
static int cmp_id(const char *a, const char *b) {
    if (numeric_ids) {
        long long x = atoll(a), y = atoll(b);
        return (x > y) - (x < y);
    }
    return strcmp(a, b);
}

static void add_row(ref *r, const char *u, const char *i, long long ts) {
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 4096;
        r->rows = realloc(r->rows, (size_t)r->cap * sizeof *r->rows);
    }
    r->rows[r->n++] = (row){strdup(u), strdup(i), ts, 0, 0, 1};
}

static void free_ref(ref *r) {
    for (int k = 0; k < r->n; k++) free(r->rows[k].user), free(r->rows[k].item);
    for (int k = 0; k < r->n_titled; k++) free(r->titled[k]);
    free(r->rows);
    free(r->titled);
}

/* Interns the strings of one column as ids 0..m-1 (sorted); returns m. */
static int index_column(ref *r, int user_col, char ***names_out) {
    char **all = malloc((size_t)r->n * sizeof *all);
    for (int k = 0; k < r->n; k++) all[k] = user_col ? r->rows[k].user : r->rows[k].item;
    qsort(all, (size_t)r->n, sizeof *all, cmp_str);
    int m = 0;
    for (int k = 0; k < r->n; k++)
        if (m == 0 || strcmp(all[m - 1], all[k])) all[m++] = all[k];
    for (int k = 0; k < r->n; k++) {
        char *key = user_col ? r->rows[k].user : r->rows[k].item;
        char **hit = bsearch(&key, all, (size_t)m, sizeof *all, cmp_str);
        if (user_col) r->rows[k].uid = (int)(hit - all);
        else r->rows[k].iid = (int)(hit - all);
    }
    *names_out = all;
    return m;
}

/* k-core by peeling: a queue of users/items whose degree fell below 5 */
static void peel(ref *r, int nu, int ni) {
    int *udeg = calloc((size_t)nu, sizeof(int)), *ideg = calloc((size_t)ni, sizeof(int));
    int *ustart = calloc((size_t)nu + 1, sizeof(int)), *istart = calloc((size_t)ni + 1, sizeof(int));
    int *urows = malloc((size_t)r->n * sizeof(int)), *irows = malloc((size_t)r->n * sizeof(int));
    for (int k = 0; k < r->n; k++)
        if (r->rows[k].alive) udeg[r->rows[k].uid]++, ideg[r->rows[k].iid]++;
    for (int u = 0; u < nu; u++) ustart[u + 1] = ustart[u] + udeg[u];
    for (int i = 0; i < ni; i++) istart[i + 1] = istart[i] + ideg[i];
    int *uf = calloc((size_t)nu, sizeof(int)), *jf = calloc((size_t)ni, sizeof(int));
    for (int k = 0; k < r->n; k++)
        if (r->rows[k].alive) {
            urows[ustart[r->rows[k].uid] + uf[r->rows[k].uid]++] = k;
            irows[istart[r->rows[k].iid] + jf[r->rows[k].iid]++] = k;
        }
    int *queue = malloc(((size_t)nu + ni) * sizeof(int)); /* >= 0 user, < 0 item -(i+1) */
    char *queued_u = calloc((size_t)nu, 1), *queued_i = calloc((size_t)ni, 1);
    int qh = 0, qt = 0;
    for (int u = 0; u < nu; u++)
        if (udeg[u] < 5) queue[qt++] = u, queued_u[u] = 1;
    for (int i = 0; i < ni; i++)
        if (ideg[i] < 5) queue[qt++] = -(i + 1), queued_i[i] = 1;
    while (qh < qt) {
        int x = queue[qh++];
        if (x >= 0) {
            for (int t = ustart[x]; t < ustart[x + 1]; t++) {
                row *rw = &r->rows[urows[t]];
                if (!rw->alive) continue;
                rw->alive = 0;
                if (--ideg[rw->iid] < 5 && !queued_i[rw->iid]) queue[qt++] = -(rw->iid + 1), queued_i[rw->iid] = 1;
            }
        } else {
            int i = -x - 1;
            for (int t = istart[i]; t < istart[i + 1]; t++) {
                row *rw = &r->rows[irows[t]];
                if (!rw->alive) continue;
                rw->alive = 0;
                if (--udeg[rw->uid] < 5 && !queued_u[rw->uid]) queue[qt++] = rw->uid, queued_u[rw->uid] = 1;
            }
        }
    }
    free(udeg), free(ideg), free(ustart), free(istart), free(urows), free(irows), free(uf), free(jf);
    free(queue), free(queued_u), free(queued_i);
}

static int cmp_row_user_time(const void *a, const void *b) {
    const row *x = a, *y = b;
    int c = cmp_id(x->user, y->user);
    if (c) return c;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    return cmp_id(x->item, y->item);
}

/* Runs the reference rules on r and compares with the prepared folder. */
static int compare_with_dataset(ref *r, const char *dir, int numeric, long long want_u, long long want_i,
                                long long want_n) {
    /* drop untitled items */
    for (int k = 0; k < r->n; k++) {
        char *key = r->rows[k].item;
        r->rows[k].alive = bsearch(&key, r->titled, (size_t)r->n_titled, sizeof(char *), cmp_str) != NULL;
    }
    char **unames, **inames;
    int nu = index_column(r, 1, &unames), ni = index_column(r, 0, &inames);
    peel(r, nu, ni);
    int w = 0;
    for (int k = 0; k < r->n; k++)
        if (r->rows[k].alive) r->rows[w++] = r->rows[k];
        else free(r->rows[k].user), free(r->rows[k].item);
    r->n = w;
    numeric_ids = numeric;
    qsort(r->rows, (size_t)r->n, sizeof *r->rows, cmp_row_user_time);
    free(unames);
    free(inames);

    mr_error err;
    mr_dataset d;
    if (mr_dataset_load(&d, dir, &err)) {
        printf("  load: %s\n", err.msg);
        return 0;
    }
    int ok = d.n_users == want_u && d.n_items == want_i && d.n_interactions == want_n && r->n == want_n;
    if (!ok) printf("  counts %lld/%lld/%lld, reference rows %d\n", (long long)d.n_users, (long long)d.n_items,
                    (long long)d.n_interactions, r->n);
    /* dense ids ascend with the source ids */
    for (int64_t i = 2; ok && i <= d.n_items; i++)
        if (cmp_id(d.items[i - 1].source_id, d.items[i].source_id) >= 0) {
            printf("  item ids out of order at %lld\n", (long long)i);
            ok = 0;
        }
    for (int64_t u = 2; ok && u <= d.n_users; u++)
        if (cmp_id(d.user_source_ids[u - 1], d.user_source_ids[u]) >= 0) {
            printf("  user ids out of order at %lld\n", (long long)u);
            ok = 0;
        }
    /* every user's sequence equals the reference's, item by item */
    int k = 0;
    for (int64_t u = 1; ok && u <= d.n_users; u++) {
        for (int32_t t = 0; t < d.seq_len[u]; t++, k++) {
            if (k >= r->n || strcmp(r->rows[k].user, d.user_source_ids[u]) ||
                strcmp(r->rows[k].item, d.items[d.seqs[u][t]].source_id)) {
                printf("  user %lld (%s) differs at position %d\n", (long long)u, d.user_source_ids[u], t);
                ok = 0;
                break;
            }
        }
        if (d.seq_len[u] < 5) ok = 0;
    }
    if (ok && k != r->n) ok = 0;
    mr_dataset_free(&d);
    return ok;
}

TEST(ml_latest_small_matches_reference_rules) {
    const char *dir = test_shared_path("data/ml-latest-small");
    if (!dir) SKIP("../shared/data/ml-latest-small is absent");
    char src[1024], out[1024], buf[4096];
    snprintf(src, sizeof src, "%s", dir);
    snprintf(out, sizeof out, "%s", test_tmp_path("ml"));
    CHECK(test_cli(buf, sizeof buf, "prepare --format movielens --input %s --out %s 2>/dev/null", src, out) == 0);
    CHECK(strstr(buf, "| k-core | 610 | 3650 | 90274 |"));

    ref r = {0};
    char path[1100], line[4096];
    snprintf(path, sizeof path, "%s/ratings.csv", src);
    FILE *f = fopen(path, "r");
    CHECK(f);
    CHECK(fgets(line, sizeof line, f));
    while (fgets(line, sizeof line, f)) {
        char u[64], i[64];
        double rating;
        long long ts;
        if (sscanf(line, "%63[^,],%63[^,],%lf,%lld", u, i, &rating, &ts) == 4) add_row(&r, u, i, ts);
    }
    fclose(f);
    CHECK(r.n == 100836);
    /* every movie has a title: the titled set is every movieId of movies.csv */
    snprintf(path, sizeof path, "%s/movies.csv", src);
    f = fopen(path, "r");
    CHECK(f);
    CHECK(fgets(line, sizeof line, f));
    r.titled = malloc(20000 * sizeof(char *));
    while (fgets(line, sizeof line, f) && r.n_titled < 20000) {
        line[strcspn(line, ",")] = 0;
        r.titled[r.n_titled++] = strdup(line);
    }
    fclose(f);
    qsort(r.titled, (size_t)r.n_titled, sizeof(char *), cmp_str);
    int ok = compare_with_dataset(&r, out, 1, 610, 3650, 90274);
    free_ref(&r);
    CHECK(ok);

    /* titles follow the DESIGN section 7 rule, UTF-8 kept */
    mr_error err;
    mr_dataset d;
    CHECK_OK(mr_dataset_load(&d, out, &err), &err);
    int seen_les = 0, seen_matrix = 0;
    for (int64_t i = 1; i <= d.n_items; i++) {
        if (!strcmp(d.items[i].source_id, "73")) seen_les = !strcmp(d.items[i].title, "Mis\xc3\xa9rables, Les (1995)");
        if (!strcmp(d.items[i].source_id, "2571")) seen_matrix = !strcmp(d.items[i].title, "The Matrix (1999)");
    }
    CHECK(!strcmp(mr_dataset_role(&d), "ml-100k"));
    CHECK(!strcmp(d.name, "ml-latest-small"));
    mr_dataset_free(&d);
    CHECK(seen_les);
    CHECK(seen_matrix);
}

static int read_gz_lines(const char *path, void (*fn)(void *, char *), void *ctx) {
    gzFile g = gzopen(path, "rb");
    if (!g) return 0;
    char line[8192];
    int first = 1;
    while (gzgets(g, line, sizeof line)) {
        line[strcspn(line, "\r\n")] = 0;
        if (first) {
            first = 0;
            continue; /* header */
        }
        fn(ctx, line);
    }
    gzclose(g);
    return 1;
}

static void beauty_row(void *ctx, char *line) {
    char *u = strtok(line, "\t"), *i = strtok(NULL, "\t"), *t = strtok(NULL, "\t");
    if (u && i && t) add_row(ctx, u, i, atoll(t));
}

static void beauty_title(void *ctx, char *line) {
    ref *r = ctx;
    char *tab = strchr(line, '\t');
    if (!tab) return;
    *tab = 0;
    const char *t = tab + 1;
    while (*t == ' ') t++;
    if (!*t) return;
    r->titled = realloc(r->titled, ((size_t)r->n_titled + 1) * sizeof(char *));
    r->titled[r->n_titled++] = strdup(line);
}

TEST(amazon_beauty_matches_reference_rules) {
    const char *inter = test_shared_path("data/amazon2014-beauty/interactions_5core.tsv.gz");
    const char *titles = test_shared_path("data/amazon2014-beauty/item_titles.tsv.gz");
    if (!inter || !titles) SKIP("../shared/data/amazon2014-beauty is absent");
    char in[1024], ti[1024], out[1024], buf[4096];
    snprintf(in, sizeof in, "%s", inter);
    snprintf(ti, sizeof ti, "%s", titles);
    snprintf(out, sizeof out, "%s", test_tmp_path("beauty"));
    CHECK(test_cli(buf, sizeof buf, "prepare --format interactions --interactions %s --titles %s --name beauty --out %s 2>/dev/null",
                   in, ti, out) == 0);
    CHECK(strstr(buf, "| k-core | 22332 | 12086 | 198215 |"));
    ref r = {0};
    CHECK(read_gz_lines(in, beauty_row, &r));
    CHECK(read_gz_lines(ti, beauty_title, &r));
    CHECK(r.n == 198502);
    qsort(r.titled, (size_t)r.n_titled, sizeof(char *), cmp_str);
    int ok = compare_with_dataset(&r, out, 0, 22332, 12086, 198215);
    free_ref(&r);
    CHECK(ok);
    mr_error err;
    mr_dataset d;
    CHECK_OK(mr_dataset_load(&d, out, &err), &err);
    CHECK(!strcmp(mr_dataset_role(&d), "beauty"));
    mr_dataset_free(&d);
}

/* The same users and items come out of the `sequences` format: LlamaRec's stored
 * sequences (already 5-core) keep their given order. */
TEST(amazon_beauty_sequences_format_keeps_order) {
    const char *seqs = test_shared_path("data/amazon2014-beauty/llamarec_sequences.txt.gz");
    const char *titles = test_shared_path("data/amazon2014-beauty/item_titles.tsv.gz");
    if (!seqs || !titles) SKIP("../shared/data/amazon2014-beauty is absent");
    char sq[1024], ti[1024], out[1024], buf[4096];
    snprintf(sq, sizeof sq, "%s", seqs);
    snprintf(ti, sizeof ti, "%s", titles);
    snprintf(out, sizeof out, "%s", test_tmp_path("beauty_seq"));
    CHECK(test_cli(buf, sizeof buf, "prepare --format sequences --sequences %s --titles %s --out %s 2>/dev/null", sq,
                   ti, out) == 0);
    CHECK(strstr(buf, "| k-core | 22332 | 12086 | 198215 |"));
    mr_error err;
    mr_dataset d;
    CHECK_OK(mr_dataset_load(&d, out, &err), &err);
    /* compare every user line with the file */
    gzFile g = gzopen(sq, "rb");
    CHECK(g);
    static char line[1 << 16];
    int users = 0, mismatch = 0;
    while (gzgets(g, line, sizeof line)) {
        line[strcspn(line, "\r\n")] = 0;
        char *u = strtok(line, " ");
        if (!u) continue;
        users++;
        int64_t lo = 1, hi = d.n_users, found = 0;
        while (lo <= hi) { /* user ids are in bytewise order */
            int64_t mid = (lo + hi) / 2;
            int c = strcmp(d.user_source_ids[mid], u);
            if (!c) {
                found = mid;
                break;
            }
            if (c < 0) lo = mid + 1;
            else hi = mid - 1;
        }
        if (!found) {
            mismatch++;
            continue;
        }
        int t = 0;
        for (char *it = strtok(NULL, " "); it; it = strtok(NULL, " "), t++)
            if (t >= d.seq_len[found] || strcmp(d.items[d.seqs[found][t]].source_id, it)) {
                mismatch++;
                break;
            }
        if (t != d.seq_len[found]) mismatch++;
    }
    gzclose(g);
    mr_dataset_free(&d);
    CHECK(users == 22332);
    CHECK(mismatch == 0);
}

int main(void) {
    RUN(ml_latest_small_matches_reference_rules);
    RUN(amazon_beauty_matches_reference_rules);
    RUN(amazon_beauty_sequences_format_keeps_order);
    return test_summary();
}
