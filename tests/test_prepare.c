/* prepare: every format on small files written here, malformed inputs of each,
 * the output-folder safety rules, RecBole export, and the parsers underneath. */
#include "test.h"
#include "data/prep_internal.h"
#include "mllm4rec/dataset.h"
#include "mllm4rec/prepare.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char out_buf[1 << 16];

static void wfile(const char *path, const char *text) { test_write_file(path, text, strlen(text)); }

static void wgz(const char *path, const char *text, int cut) {
    gzFile g = gzopen(path, "wb");
    gzwrite(g, text, (unsigned)strlen(text));
    gzclose(g);
    if (cut) { /* cut the compressed stream in the middle */
        struct stat st;
        stat(path, &st);
        if (truncate(path, st.st_size / 2) != 0) abort();
    }
}

static const char *mkd(const char *name) {
    const char *p = test_tmp_path(name);
    mkdir(p, 0755);
    return p;
}

/* Runs prepare with ARGS; stdout+stderr in out_buf; returns the exit code. */
#define PREP(...) test_cli(out_buf, sizeof out_buf, "prepare " __VA_ARGS__)

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Users u1..: each rates the same 3 items (so a 1/1-core keeps everything). */
TEST(movielens_latest_layout) {
    const char *d = mkd("mlx");
    char p[1200];
    snprintf(p, sizeof p, "%s/ratings.csv", d);
    wfile(p, "userId,movieId,rating,timestamp\r\n"
             "1,10,4.0,100\r\n1,9,3.5,100\r\n1,2,5.0,50\r\n"
             "2,9,1.0,7\r\n2,10,2.0,8\r\n2,2,3.0,9\r\n"
             "10,2,3.0,1\r\n10,9,3.0,1\r\n10,10,3.0,1\r\n10,77,3.0,0\r\n");
    snprintf(p, sizeof p, "%s/movies.csv", d);
    wfile(p, "movieId,title,genres\r\n"
             "2,\"Good, the Bad and the Ugly, The (Buono, il brutto, il cattivo, Il) (1966)\",Western\r\n"
             "9,\"Mis\xc3\xa9rables, Les (1995)\",Drama\r\n"
             "10,\"Matrix, The (1999) \",Sci-Fi\r\n"
             "77,Hyena Road,(no genres listed)\r\n");
    char out[1100];
    snprintf(out, sizeof out, "%s/out", d);
    CHECK(PREP("--format movielens --input %s --out %s --min-uc 1 --min-sc 1 2>&1", d, out) == 0);
    CHECK(strstr(out_buf, "| k-core | 3 | 4 | 10 |"));
    mr_error err;
    mr_dataset ds;
    CHECK_OK(mr_dataset_load(&ds, out, &err), &err);
    CHECK(ds.n_items == 4 && ds.n_users == 3);
    /* numeric id order: 2, 9, 10, 77 (bytewise would put 10 before 2) */
    CHECK(!strcmp(ds.items[1].source_id, "2") && !strcmp(ds.items[3].source_id, "10"));
    CHECK(!strcmp(ds.items[1].title, "The Good, the Bad and the Ugly (1966)"));
    CHECK(!strcmp(ds.items[2].title, "Mis\xc3\xa9rables, Les (1995)"));
    CHECK(!strcmp(ds.items[3].title, "The Matrix (1999)"));
    CHECK(!strcmp(ds.items[4].title, "Hyena Road"));
    /* users 1, 2, 10 in numeric order; user 1: item 2 (t50), then 9 and 10 tie at t100 -> by id */
    CHECK(!strcmp(ds.user_source_ids[3], "10"));
    CHECK(ds.seq_len[1] == 3 && ds.seqs[1][0] == 1 && ds.seqs[1][1] == 2 && ds.seqs[1][2] == 3);
    CHECK(ds.seq_len[2] == 3 && ds.seqs[2][0] == 2 && ds.seqs[2][1] == 3 && ds.seqs[2][2] == 1);
    CHECK(ds.seq_len[3] == 4 && ds.seqs[3][0] == 4 && ds.seqs[3][1] == 1);
    CHECK(!strcmp(ds.format, "movielens") && !strcmp(ds.name, "mlx"));
    mr_dataset_free(&ds);
    /* min-rating keeps ratings >= 3: user 2 keeps only item 2 */
    char out2[1100];
    snprintf(out2, sizeof out2, "%s/out2", d);
    CHECK(PREP("--format movielens --input %s --out %s --min-uc 1 --min-sc 1 --min-rating 3 2>&1", d, out2) == 0);
    CHECK(strstr(out_buf, "| k-core | 3 | 4 | 8 |"));
}

TEST(movielens_100k_layout_latin1) {
    const char *d = mkd("ml100");
    char p[1200];
    snprintf(p, sizeof p, "%s/u.data", d);
    wfile(p, "1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t888550871\n2\t2\t4\t888550870\n");
    snprintf(p, sizeof p, "%s/u.item", d);
    wfile(p, "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1\n"
             "2|Mis\xe9rables, Les (1995)|01-Jan-1995||http://y|0|0|1\n");
    char out[1100];
    snprintf(out, sizeof out, "%s/out", d);
    CHECK(PREP("--format movielens --input %s --out %s --min-uc 2 --min-sc 2 --name ml100k 2>&1", d, out) == 0);
    CHECK(strstr(out_buf, "(ml-100k)"));
    mr_error err;
    mr_dataset ds;
    CHECK_OK(mr_dataset_load(&ds, out, &err), &err);
    CHECK(!strcmp(ds.items[2].title, "Mis\xc3\xa9rables, Les (1995)")); /* converted to UTF-8 */
    CHECK(ds.seqs[2][0] == 2 && ds.seqs[2][1] == 1);                   /* user 2: item 2 first */
    CHECK(!strcmp(ds.name, "ml100k"));
    mr_dataset_free(&ds);
}

TEST(movielens_1m_layout) {
    const char *d = mkd("ml1m");
    char p[1200];
    snprintf(p, sizeof p, "%s/ratings.dat", d);
    wfile(p, "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n2::661::5::978299000\n");
    snprintf(p, sizeof p, "%s/movies.dat", d);
    /* one line in UTF-8 (kept), one in ISO-8859-1 (converted) */
    wfile(p, "661::James and the Giant P\xc3\xaa" "che (1996)::Animation\n1193::One Flew Over the Cuckoo's N\xea" "st (1975)::Drama\n");
    char out[1100];
    snprintf(out, sizeof out, "%s/out", d);
    CHECK(PREP("--format movielens --input %s --out %s --min-uc 2 --min-sc 2 2>&1", d, out) == 0);
    CHECK(strstr(out_buf, "(ml-1m)"));
    CHECK(strstr(out_buf, "| k-core | 2 | 2 | 4 |"));
    mr_error err;
    mr_dataset ds;
    CHECK_OK(mr_dataset_load(&ds, out, &err), &err);
    CHECK(!strcmp(ds.items[1].source_id, "661") && !strcmp(ds.items[1].title, "James and the Giant P\xc3\xaa" "che (1996)"));
    CHECK(!strcmp(ds.items[2].title, "One Flew Over the Cuckoo's N\xc3\xaa" "st (1975)"));
    CHECK(ds.seqs[1][0] == 2 && ds.seqs[1][1] == 1);
    mr_dataset_free(&ds);
}

static const char *META_LINES =
    "{'asin': 'B001', 'title': 'Shampoo \\'Extra\\' \\u00e9 \\xc3\\xa9', 'price': 3.17, 'imUrl': "
    "'http://img/1.jpg', 'related': {'also_bought': ['B002', 'B003'], 'x': (1, 2.5e3, -4)}, "
    "'salesRank': {'Beauty': 211836}, 'categories': [['Beauty', 'Hair']], 'flag': True, 'none': None}\n"
    "{\"asin\": \"B002\", \"title\": \"It's \\\"quoted\\\"\\ttab\", 'categories': []}\n"
    "{'asin': 'B003', 'categories': [['Beauty']]}\n"
    "{'asin': 'B004', 'title': '   '}\n"
    "{u'asin': u'B005', u'title': u'Caf\\xe9 cr\\u00e8me'}\n";

TEST(amazon2014_ratings_and_python_meta) {
    const char *d = mkd("amz");
    char ratings[1200], meta[1200], out[1200];
    snprintf(ratings, sizeof ratings, "%s/ratings_Beauty.csv", d);
    snprintf(meta, sizeof meta, "%s/meta_Beauty.json.gz", d);
    snprintf(out, sizeof out, "%s/out", d);
    /* B003 and B004 have no title: their interactions are dropped */
    wfile(ratings, "A,B001,5.0,1000\nA,B002,4.0,900\nA,B003,4.0,800\nB,B001,1.0,5\nB,B002,2.0,5\nB,B004,1.0,1\n"
                   "C,B005,5.0,1\nC,B001,5.0,2\n");
    wgz(meta, META_LINES, 0);
    CHECK(PREP("--format amazon2014 --ratings %s --meta %s --out %s --min-uc 2 --min-sc 1 2>&1", ratings, meta, out) == 0);
    CHECK(strstr(out_buf, "dataset Beauty"));
    CHECK(strstr(out_buf, "| read | 3 | 5 | 8 |"));
    CHECK(strstr(out_buf, "| with title | 3 | 3 | 6 |"));
    mr_error err;
    mr_dataset ds;
    CHECK_OK(mr_dataset_load(&ds, out, &err), &err);
    CHECK(ds.n_items == 3 && ds.n_users == 3);
    CHECK(!strcmp(ds.items[1].title, "Shampoo 'Extra' \xc3\xa9 \xc3\xa9"));
    CHECK(!strcmp(ds.items[1].image, "http://img/1.jpg"));
    CHECK(!strcmp(ds.items[2].title, "It's \"quoted\" tab")); /* the tab became a space */
    CHECK(!strcmp(ds.items[3].title, "Caf\xc3\xa9 cr\xc3\xa8me"));
    CHECK(!strcmp(mr_dataset_role(&ds), "beauty"));
    /* user B: B001 and B002 tie at t5 -> item order */
    CHECK(ds.seqs[2][0] == 1 && ds.seqs[2][1] == 2);
    mr_dataset_free(&ds);
}

TEST(amazon2014_reviews_json) {
    const char *d = mkd("amzr");
    char rev[1200], meta[1200], out[1200];
    snprintf(rev, sizeof rev, "%s/reviews_Toys_and_Games_5.json", d);
    snprintf(meta, sizeof meta, "%s/meta_Toys_and_Games.json", d);
    snprintf(out, sizeof out, "%s/out", d);
    wfile(rev, "{\"reviewerID\": \"A\", \"asin\": \"B001\", \"overall\": 5.0, \"unixReviewTime\": 20, \"reviewText\": \"ok, fine\"}\n"
               "{\"reviewerID\": \"A\", \"asin\": \"B002\", \"overall\": 4.0, \"unixReviewTime\": 10}\n");
    wfile(meta, META_LINES);
    CHECK(PREP("--format amazon2014 --reviews %s --meta %s --out %s --min-uc 1 --min-sc 1 2>&1", rev, meta, out) == 0);
    CHECK(strstr(out_buf, "dataset Toys_and_Games"));
    mr_error err;
    mr_dataset ds;
    CHECK_OK(mr_dataset_load(&ds, out, &err), &err);
    CHECK(ds.seq_len[1] == 2 && ds.seqs[1][0] == 2 && ds.seqs[1][1] == 1);
    CHECK(!strcmp(mr_dataset_role(&ds), "toys"));
    mr_dataset_free(&ds);
}

TEST(interactions_and_sequences_formats) {
    const char *d = mkd("inter");
    char in[1200], ti[1200], out[1200], sq[1200], out2[1200];
    snprintf(in, sizeof in, "%s/inter.tsv.gz", d);
    snprintf(ti, sizeof ti, "%s/titles.tsv", d);
    snprintf(out, sizeof out, "%s/out", d);
    wgz(in, "timestamp\textra\titem_id\tuser_id\n3\tx\tb\tu1\n1\tx\ta\tu1\n2\tx\tc\tu1\n5\tx\ta\tu2\n5\tx\tb\tu2\n", 0);
    wfile(ti, "item_id\ttitle\timage\na\tAlpha\timg/a.png\nb\t  Beta  \t\nc\tGamma\t\n");
    CHECK(PREP("--format interactions --interactions %s --titles %s --out %s --min-uc 2 --min-sc 1 --recbole 2>&1", in, ti,
               out) == 0);
    mr_error err;
    mr_dataset ds;
    CHECK_OK(mr_dataset_load(&ds, out, &err), &err);
    CHECK(!strcmp(ds.name, "inter"));
    CHECK(ds.seq_len[1] == 3 && ds.seqs[1][0] == 1 && ds.seqs[1][1] == 3 && ds.seqs[1][2] == 2);
    CHECK(!strcmp(ds.items[1].image, "img/a.png") && !strcmp(ds.items[2].title, "Beta"));
    mr_dataset_free(&ds);
    /* RecBole atomic files */
    char p[1300], *text = NULL;
    size_t len;
    snprintf(p, sizeof p, "%s/inter.inter", out);
    CHECK_OK(mr_read_file(p, &text, &len, &err), &err);
    CHECK(!strncmp(text, "user_id:token\titem_id:token\ttimestamp:float\nu1\ta\t1\nu1\tc\t2\nu1\tb\t3\nu2\ta\t5\n", 60));
    free(text);
    snprintf(p, sizeof p, "%s/inter.item", out);
    CHECK_OK(mr_read_file(p, &text, &len, &err), &err);
    CHECK(!strcmp(text, "item_id:token\ttitle:token_seq\na\tAlpha\nb\tBeta\nc\tGamma\n"));
    free(text);

    /* sequences: the given order is kept (not sorted by id) */
    snprintf(sq, sizeof sq, "%s/seq.txt", d);
    snprintf(out2, sizeof out2, "%s/out2", d);
    wfile(sq, "u2 c a b\nu1 b a\n\n");
    CHECK(PREP("--format sequences --sequences %s --titles %s --out %s --min-uc 1 --min-sc 1 2>&1", sq, ti, out2) == 0);
    CHECK_OK(mr_dataset_load(&ds, out2, &err), &err);
    CHECK(!strcmp(ds.user_source_ids[1], "u1") && ds.seqs[1][0] == 2 && ds.seqs[1][1] == 1);
    CHECK(ds.seq_len[2] == 3 && ds.seqs[2][0] == 3 && ds.seqs[2][1] == 1 && ds.seqs[2][2] == 2);
    mr_dataset_free(&ds);
}

/* Removing item x drops user u below 2, which drops item y, then user v. */
TEST(kcore_is_iterated_until_stable) {
    const char *d = mkd("kcore");
    char in[1200], ti[1200], out[1200];
    snprintf(in, sizeof in, "%s/i.tsv", d);
    snprintf(ti, sizeof ti, "%s/t.tsv", d);
    snprintf(out, sizeof out, "%s/out", d);
    wfile(in, "user_id\titem_id\ttimestamp\n"
              "a\t1\t1\na\t2\t2\nb\t1\t1\nb\t2\t2\n" /* the 2-core: users a, b; items 1, 2 */
              "u\tx\t1\nu\ty\t2\nv\ty\t1\nv\t1\t2\n");
    wfile(ti, "item_id\ttitle\n1\tOne\n2\tTwo\nx\tEx\ny\tWhy\n");
    CHECK(PREP("--format interactions --interactions %s --titles %s --out %s --min-uc 2 --min-sc 2 2>&1", in, ti, out) == 0);
    CHECK(strstr(out_buf, "| k-core | 2 | 2 | 4 |"));
    CHECK(strstr(out_buf, "rounds 5")); /* 4 rounds that remove, 1 that finds it stable */
}

/* ---- malformed inputs: exit 1, file:line in the message, nothing written ---- */

static int fails_cleanly(const char *out, const char *needle) {
    if (!strstr(out_buf, needle)) {
        printf("  message lacks '%s': %s\n", needle, out_buf);
        return 0;
    }
    if (exists(out)) {
        printf("  %s was written\n", out);
        return 0;
    }
    return 1;
}

TEST(malformed_interactions) {
    const char *d = mkd("bad_inter");
    char in[1200], ti[1200], out[1200];
    snprintf(in, sizeof in, "%s/i.tsv", d);
    snprintf(ti, sizeof ti, "%s/t.tsv", d);
    snprintf(out, sizeof out, "%s/out", d);
    wfile(ti, "item_id\ttitle\n1\tOne\n");
    const char *base = "--format interactions --interactions %s --titles %s --out %s --min-uc 1 --min-sc 1 2>&1";
    /* missing file */
    char nope[1200];
    snprintf(nope, sizeof nope, "%s/nope.tsv", d);
    CHECK(PREP("--format interactions --interactions %s --titles %s --out %s 2>&1", nope, ti, out) == 1);
    CHECK(fails_cleanly(out, "nope.tsv: missing"));
    /* missing column */
    wfile(in, "user_id\titem\ttimestamp\nu\t1\t5\n");
    CHECK(PREP("--format interactions --interactions %s --titles %s --out %s 2>&1", in, ti, out) == 1);
    CHECK(fails_cleanly(out, "i.tsv:1: missing column 'item_id'"));
    /* short row */
    wfile(in, "user_id\titem_id\ttimestamp\nu\t1\t5\nu\t1\n");
    CHECK(PREP("--format interactions --interactions %s --titles %s --out %s 2>&1", in, ti, out) == 1);
    CHECK(fails_cleanly(out, "i.tsv:3: short row: expected at least 3 fields, found 2"));
    /* non-numeric timestamp */
    wfile(in, "user_id\titem_id\ttimestamp\nu\t1\t5\nu\t1\tyesterday\n");
    CHECK(PREP("--format interactions --interactions %s --titles %s --out %s 2>&1", in, ti, out) == 1);
    CHECK(fails_cleanly(out, "i.tsv:3: expected an integer timestamp, found 'yesterday'"));
    /* ... skipped and counted with --skip-bad-lines */
    char cmd[4000];
    snprintf(cmd, sizeof cmd, base, in, ti, out);
    CHECK(test_cli(out_buf, sizeof out_buf, "prepare --skip-bad-lines %s", cmd) == 0);
    CHECK(strstr(out_buf, "skipped 1 bad lines"));
    CHECK(exists(out));
    char meta[1300], *text;
    size_t len;
    mr_error err;
    snprintf(meta, sizeof meta, "%s/meta.json", out);
    CHECK_OK(mr_read_file(meta, &text, &len, &err), &err);
    CHECK(strstr(text, "\"bad_lines_skipped\": 1"));
    free(text);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    CHECK(system(cmd) == 0);
    /* a NUL byte inside a field: refused with file:line, also with --skip-bad-lines (it
     * cut the field short: "12607\0" "59144" was read as 12607) */
    {
        static const char nul[] = "user_id\titem_id\ttimestamp\nu\t1\t5\nu\t1\t12607\0" "59144\n";
        test_write_file(in, nul, sizeof nul - 1);
        CHECK(PREP("--format interactions --interactions %s --titles %s --out %s 2>&1", in, ti, out) == 1);
        CHECK(fails_cleanly(out, "i.tsv:3: NUL byte at column 10"));
        CHECK(PREP("--skip-bad-lines --format interactions --interactions %s --titles %s --out %s 2>&1", in, ti, out) == 1);
        CHECK(fails_cleanly(out, "i.tsv:3: NUL byte"));
        static const char nul_title[] = "item_id\ttitle\n1\tOne\0Two\n";
        wfile(in, "user_id\titem_id\ttimestamp\nu\t1\t5\n");
        test_write_file(ti, nul_title, sizeof nul_title - 1);
        CHECK(PREP("--format interactions --interactions %s --titles %s --out %s 2>&1", in, ti, out) == 1);
        CHECK(fails_cleanly(out, "t.tsv:2: NUL byte at column 6"));
        wfile(ti, "item_id\ttitle\n1\tOne\n");
    }
    /* invalid UTF-8 */
    wfile(in, "user_id\titem_id\ttimestamp\nu\t1\t5\nu\xff\t1\t6\n");
    CHECK(PREP("--format interactions --interactions %s --titles %s --out %s 2>&1", in, ti, out) == 1);
    CHECK(fails_cleanly(out, "i.tsv:3: invalid UTF-8"));
    /* truncated gzip (never skippable) */
    char gz[1200];
    snprintf(gz, sizeof gz, "%s/i.tsv.gz", d);
    static char big[200000];
    size_t k = (size_t)snprintf(big, sizeof big, "user_id\titem_id\ttimestamp\n");
    for (int i = 0; k < sizeof big - 64; i++) k += (size_t)snprintf(big + k, sizeof big - k, "u%d\t%d\t%d\n", i * 7919 % 1000, i % 97, i);
    wgz(gz, big, 1);
    CHECK(PREP("--skip-bad-lines --format interactions --interactions %s --titles %s --out %s 2>&1", gz, ti, out) == 1);
    CHECK(fails_cleanly(out, "corrupt or truncated gzip"));
    /* titles file: missing column, short row */
    wfile(in, "user_id\titem_id\ttimestamp\nu\t1\t5\n");
    wfile(ti, "item\ttitle\n1\tOne\n");
    CHECK(PREP("--format interactions --interactions %s --titles %s --out %s 2>&1", in, ti, out) == 1);
    CHECK(fails_cleanly(out, "t.tsv:1: missing column 'item_id'"));
    wfile(ti, "item_id\ttitle\n1\n");
    CHECK(PREP("--format interactions --interactions %s --titles %s --out %s 2>&1", in, ti, out) == 1);
    CHECK(fails_cleanly(out, "t.tsv:2: short row"));
}

TEST(malformed_movielens) {
    const char *d = mkd("bad_ml");
    char p[1200], q[1200], out[1200];
    snprintf(out, sizeof out, "%s/out", d);
    /* no known layout */
    CHECK(PREP("--format movielens --input %s --out %s 2>&1", d, out) == 1);
    CHECK(fails_cleanly(out, "no MovieLens files found"));
    /* missing movies file */
    snprintf(p, sizeof p, "%s/ratings.csv", d);
    snprintf(q, sizeof q, "%s/movies.csv", d);
    wfile(p, "userId,movieId,rating,timestamp\n1,1,4.0,5\n");
    CHECK(PREP("--format movielens --input %s --out %s 2>&1", d, out) == 1);
    CHECK(fails_cleanly(out, "movies.csv: missing"));
    /* missing column, unclosed quote, bad timestamp, invalid UTF-8 */
    wfile(q, "movieId,name\n1,Toy Story (1995)\n");
    CHECK(PREP("--format movielens --input %s --out %s 2>&1", d, out) == 1);
    CHECK(fails_cleanly(out, "movies.csv:1: missing column 'title'"));
    wfile(q, "movieId,title,genres\n1,\"Toy Story (1995),x\n");
    CHECK(PREP("--format movielens --input %s --out %s 2>&1", d, out) == 1);
    CHECK(fails_cleanly(out, "movies.csv:2: a quoted field is not closed"));
    wfile(q, "movieId,title,genres\n1,Toy \xe9 Story (1995),x\n");
    CHECK(PREP("--format movielens --input %s --out %s 2>&1", d, out) == 1);
    CHECK(fails_cleanly(out, "movies.csv:2: invalid UTF-8"));
    wfile(p, "userId,movieId,rating,timestamp\r\n1,1,4.0,5\r\n1,1,4.0,5.5\r\n");
    CHECK(PREP("--format movielens --input %s --out %s 2>&1", d, out) == 1);
    CHECK(fails_cleanly(out, "ratings.csv:3: expected an integer timestamp, found '5.5'"));
    wfile(p, "userId,movieId,rating\n1,1,4.0\n");
    CHECK(PREP("--format movielens --input %s --out %s 2>&1", d, out) == 1);
    CHECK(fails_cleanly(out, "ratings.csv:1: missing column 'timestamp'"));
    wfile(p, "userId,movieId,rating,timestamp\n1,1,good,5\n");
    CHECK(PREP("--format movielens --input %s --out %s 2>&1", d, out) == 1);
    CHECK(fails_cleanly(out, "ratings.csv:2: expected a numeric rating"));
    /* a gzip-compressed ratings.csv (found by magic bytes), first whole, then cut */
    wfile(q, "movieId,title,genres\n1,Toy Story (1995),x\n");
    static char big[200000];
    size_t k = (size_t)snprintf(big, sizeof big, "userId,movieId,rating,timestamp\n");
    for (int i = 0; k < sizeof big - 64; i++) k += (size_t)snprintf(big + k, sizeof big - k, "%d,1,4.0,%d\n", i % 50, i);
    wgz(p, big, 0);
    CHECK(PREP("--format movielens --input %s --out %s 2>&1", d, out) == 0);
    CHECK(strstr(out_buf, "| k-core | 50 | 1 |"));
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    CHECK(system(cmd) == 0);
    wgz(p, big, 1);
    CHECK(PREP("--format movielens --input %s --out %s 2>&1", d, out) == 1);
    CHECK(fails_cleanly(out, "ratings.csv: corrupt or truncated gzip"));
    /* ML-100K short row */
    const char *d2 = mkd("bad_ml100");
    snprintf(p, sizeof p, "%s/u.data", d2);
    snprintf(q, sizeof q, "%s/u.item", d2);
    wfile(p, "1\t1\t5\t874965758\n1\t2\n");
    wfile(q, "1|Toy Story (1995)|x\n");
    CHECK(PREP("--format movielens --input %s --out %s 2>&1", d2, out) == 1);
    CHECK(fails_cleanly(out, "u.data:2: short row"));
}

TEST(malformed_amazon) {
    const char *d = mkd("bad_amz");
    char r[1200], m[1200], rev[1200], out[1200];
    snprintf(r, sizeof r, "%s/ratings_X.csv", d);
    snprintf(m, sizeof m, "%s/meta_X.json", d);
    snprintf(rev, sizeof rev, "%s/reviews_X_5.json", d);
    snprintf(out, sizeof out, "%s/out", d);
    wfile(r, "A,B1,5.0,10\nA,B2,5.0,11\n");
    /* bad meta line (unclosed dict), then one with JSON-style but broken string */
    wfile(m, "{'asin': 'B1', 'title': 'One'}\n{'asin': 'B2', 'title': 'Two'\n");
    CHECK(PREP("--format amazon2014 --ratings %s --meta %s --out %s --min-uc 1 --min-sc 1 2>&1", r, m, out) == 1);
    CHECK(fails_cleanly(out, "meta_X.json:2: expected a Python dict literal"));
    CHECK(PREP("--skip-bad-lines --format amazon2014 --ratings %s --meta %s --out %s --min-uc 1 --min-sc 1 2>&1", r, m, out) == 0);
    CHECK(strstr(out_buf, "skipped 1 bad lines") && strstr(out_buf, "| k-core | 1 | 1 | 1 |"));
    CHECK(system("true") == 0);
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    CHECK(system(cmd) == 0);
    char nometa[1200];
    snprintf(nometa, sizeof nometa, "%s/meta_missing.json", d);
    CHECK(PREP("--format amazon2014 --ratings %s --meta %s --out %s 2>&1", r, nometa, out) == 1);
    CHECK(fails_cleanly(out, "meta_missing.json: missing (the meta file)"));
    wfile(m, "{'title': 'One'}\n");
    CHECK(PREP("--format amazon2014 --ratings %s --meta %s --out %s 2>&1", r, m, out) == 1);
    CHECK(fails_cleanly(out, "meta_X.json:1: expected the key 'asin'"));
    wfile(m, "{'asin': 'B1', 'title': 'One'}\n");
    wfile(r, "A,B1,5.0\n");
    CHECK(PREP("--format amazon2014 --ratings %s --meta %s --out %s 2>&1", r, m, out) == 1);
    CHECK(fails_cleanly(out, "ratings_X.csv:1: short row"));
    wfile(rev, "{\"reviewerID\": \"A\", \"asin\": \"B1\", \"unixReviewTime\": \"soon\"}\n");
    CHECK(PREP("--format amazon2014 --reviews %s --meta %s --out %s 2>&1", rev, m, out) == 1);
    CHECK(fails_cleanly(out, "reviews_X_5.json:1: expected the key unixReviewTime"));
    wfile(rev, "{\"reviewerID\": \"A\", \"asin\": \n");
    CHECK(PREP("--format amazon2014 --reviews %s --meta %s --out %s 2>&1", rev, m, out) == 1);
    CHECK(fails_cleanly(out, "reviews_X_5.json:1: expected a JSON object"));
    wfile(r, "A,B1,5.0,10\n");
    wfile(m, "{'asin': 'B1', 'title': 'On\xc3'}\n");
    CHECK(PREP("--format amazon2014 --ratings %s --meta %s --out %s 2>&1", r, m, out) == 1);
    CHECK(fails_cleanly(out, "meta_X.json:1: invalid UTF-8"));
    char mgz[1200];
    snprintf(mgz, sizeof mgz, "%s/meta_X.json.gz", d);
    static char big[300000];
    size_t k = 0;
    for (int i = 0; k < sizeof big - 100; i++) k += (size_t)snprintf(big + k, sizeof big - k, "{'asin': 'B%d', 'title': 'T%d'}\n", i, i * 31);
    wgz(mgz, big, 1);
    wfile(r, "A,B1,5.0,10\n");
    CHECK(PREP("--format amazon2014 --ratings %s --meta %s --out %s --min-uc 1 --min-sc 1 2>&1", r, mgz, out) == 1);
    CHECK(fails_cleanly(out, "meta_X.json.gz: corrupt or truncated gzip"));
}

TEST(malformed_sequences) {
    const char *d = mkd("bad_seq");
    char sq[1200], ti[1200], out[1200];
    snprintf(sq, sizeof sq, "%s/s.txt", d);
    snprintf(ti, sizeof ti, "%s/t.tsv", d);
    snprintf(out, sizeof out, "%s/out", d);
    wfile(ti, "item_id\ttitle\na\tA\n");
    wfile(sq, "u1 a a\nu2\n");
    CHECK(PREP("--format sequences --sequences %s --titles %s --out %s --min-uc 1 --min-sc 1 2>&1", sq, ti, out) == 1);
    CHECK(fails_cleanly(out, "s.txt:2: expected 'user item item ...'"));
    wfile(sq, "u1 a a\nu2 \xc3\x28\n");
    CHECK(PREP("--format sequences --sequences %s --titles %s --out %s --min-uc 1 --min-sc 1 2>&1", sq, ti, out) == 1);
    CHECK(fails_cleanly(out, "s.txt:2: invalid UTF-8"));
    char nope[1200];
    snprintf(nope, sizeof nope, "%s/none.txt", d);
    CHECK(PREP("--format sequences --sequences %s --titles %s --out %s 2>&1", nope, ti, out) == 1);
    CHECK(fails_cleanly(out, "none.txt: missing (the sequences file)"));
    static char big[200000];
    size_t k = 0;
    for (int i = 0; k < sizeof big - 64; i++) k += (size_t)snprintf(big + k, sizeof big - k, "u%d a a a a a\n", i);
    wgz(sq, big, 1); /* named .txt: gzip is found by its magic bytes */
    CHECK(PREP("--format sequences --sequences %s --titles %s --out %s 2>&1", sq, ti, out) == 1);
    CHECK(fails_cleanly(out, "s.txt: corrupt or truncated gzip"));
    /* everything filtered away is an error, not an empty dataset */
    wfile(sq, "u1 a\n");
    CHECK(PREP("--format sequences --sequences %s --titles %s --out %s 2>&1", sq, ti, out) == 1);
    CHECK(fails_cleanly(out, "no interactions left"));
}

TEST(usage_errors_exit_2) {
    CHECK(PREP("--format movielens 2>&1") == 2);
    CHECK(PREP("--format netflix --out x 2>&1") == 2);
    CHECK(PREP("--format interactions --interactions a --out x 2>&1") == 2);
    CHECK(PREP("--format amazon2014 --ratings a --reviews b --meta c --out x 2>&1") == 2);
    CHECK(PREP("--format movielens --input a --titles t --out x 2>&1") == 2);
    CHECK(strstr(out_buf, "--titles does not apply"));
    CHECK(PREP("--help") == 0 && strstr(out_buf, "--skip-bad-lines"));
}

/* ---- the output folder is replaced only by a complete, successful run ---- */
TEST(output_folder_safety) {
    const char *d = mkd("safe");
    char in[1200], ti[1200], out[1200], p[1300], *text;
    size_t len;
    mr_error err;
    snprintf(in, sizeof in, "%s/i.tsv", d);
    snprintf(ti, sizeof ti, "%s/t.tsv", d);
    snprintf(out, sizeof out, "%s/ds", d);
    wfile(in, "user_id\titem_id\ttimestamp\nu\t1\t5\n");
    wfile(ti, "item_id\ttitle\n1\tOne\n");
    const char *args = "--format interactions --interactions %s --titles %s --out %s --min-uc 1 --min-sc 1";
    char cmd[4000];
    snprintf(cmd, sizeof cmd, args, in, ti, out);
    CHECK(test_cli(out_buf, sizeof out_buf, "prepare %s 2>&1", cmd) == 0);
    snprintf(p, sizeof p, "%s/extra.txt", out);
    wfile(p, "kept while the old folder stays");
    /* without --force: refused, untouched */
    CHECK(test_cli(out_buf, sizeof out_buf, "prepare %s 2>&1", cmd) == 1);
    CHECK(strstr(out_buf, "exists (use --force"));
    CHECK(exists(p));
    /* with --force and bad input: the old folder is exactly as it was */
    wfile(in, "user_id\titem_id\ttimestamp\nu\t1\tnever\n");
    CHECK(test_cli(out_buf, sizeof out_buf, "prepare --force %s 2>&1", cmd) == 1);
    CHECK(exists(p));
    snprintf(p, sizeof p, "%s/items.tsv", out);
    CHECK_OK(mr_read_file(p, &text, &len, &err), &err);
    CHECK(!strcmp(text, "item_id\tsource_id\ttitle\timage\tcaption\n1\t1\tOne\t\t\n"));
    free(text);
    /* with --force and good input: replaced (the extra file is gone), no temp folders left */
    wfile(in, "user_id\titem_id\ttimestamp\nu\t1\t5\nu\t2\t6\n");
    wfile(ti, "item_id\ttitle\n1\tOne\n2\tTwo\n");
    CHECK(test_cli(out_buf, sizeof out_buf, "prepare --force %s 2>&1", cmd) == 0);
    snprintf(p, sizeof p, "%s/extra.txt", out);
    CHECK(!exists(p));
    mr_dataset ds;
    CHECK_OK(mr_dataset_load(&ds, out, &err), &err);
    CHECK(ds.n_items == 2);
    mr_dataset_free(&ds);
    snprintf(p, sizeof p, "ls '%s' | grep -c tmp > /dev/null", d);
    CHECK(system(p) != 0);
    /* --force never replaces a non-empty folder that is not a dataset */
    const char *other = mkd("safe/notdata");
    snprintf(p, sizeof p, "%s/precious.txt", other);
    wfile(p, "x");
    snprintf(cmd, sizeof cmd, args, in, ti, other);
    CHECK(test_cli(out_buf, sizeof out_buf, "prepare --force %s 2>&1", cmd) == 1);
    CHECK(strstr(out_buf, "without meta.json"));
    CHECK(exists(p));
    /* one writer: while another process holds OUT's lock, prepare refuses before reading */
    snprintf(cmd, sizeof cmd, args, in, ti, out);
    int fd;
    CHECK_OK(mr_folder_lock(out, &fd, &err), &err);
    CHECK(test_cli(out_buf, sizeof out_buf, "prepare --force %s 2>&1", cmd) == 1);
    CHECK_MSG(strstr(out_buf, "in use by another process"), "%s", out_buf);
    CHECK_OK(mr_dataset_load(&ds, out, &err), &err); /* the old folder, untouched */
    CHECK(ds.n_items == 2);
    mr_dataset_free(&ds);
    mr_folder_unlock(fd);
    CHECK(test_cli(out_buf, sizeof out_buf, "prepare --force %s 2>&1", cmd) == 0);
}

/* ---- parsers ---- */

TEST(python_literal_parser) {
    static const char *const keys[2] = {"asin", "title"};
    char *vals[2];
    pylit_fields pf = {.keys = keys, .n_keys = 2, .values = vals};
    char why[128];
    size_t at;
    const char *ok1 = "{'asin': 'X1', 'title': 'a\\nb\\\\c\\x41\\101\\u263a\\U0001F600', 'n': -1.5e-3, 't': (1,), "
                      "'d': {1: [True, False, None]}, 'r': r'\\d'}";
    CHECK(pylit_parse_dict(ok1, strlen(ok1), &pf, why, sizeof why, &at) == 0);
    CHECK(!strcmp(vals[0], "X1"));
    CHECK(!strcmp(vals[1], "a\nb\\cAA\xe2\x98\xba\xf0\x9f\x98\x80"));
    free(vals[0]), free(vals[1]);
    const char *ok2 = "{\"asin\": \"X2\", \"title\": \"\\ud83d\\ude00 caf\\xe9\", 'b': b'\\xff'}";
    CHECK(pylit_parse_dict(ok2, strlen(ok2), &pf, why, sizeof why, &at) == 0);
    CHECK(!strcmp(vals[1], "\xf0\x9f\x98\x80 caf\xc3\xa9")); /* a lone \xe9 byte is ISO-8859-1 */
    free(vals[0]), free(vals[1]);
    const char *ok3 = "{'asin': 'X3', 'title': 42}"; /* a non-string title is no title */
    CHECK(pylit_parse_dict(ok3, strlen(ok3), &pf, why, sizeof why, &at) == 0);
    CHECK(vals[1] == NULL);
    free(vals[0]);
    const char *bad[] = {"{'asin': 'X'", "{'asin' 'X'}", "['asin', 'X']", "{'asin': 'X'} trailing", "{'a': [1, 2}",
                         "{'a': 'unterminated}", "{'a': bareword}", "{'a': '\\x4'}", ""};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        int rc = pylit_parse_dict(bad[k], strlen(bad[k]), &pf, why, sizeof why, &at);
        CHECK_MSG(rc == -1, "parsed '%s'", bad[k]);
        CHECK(vals[0] == NULL && vals[1] == NULL);
    }
    /* deep nesting is an error, not a stack overflow */
    static char deep[20000];
    size_t n = 0;
    n += (size_t)sprintf(deep, "{'a': ");
    for (int k = 0; k < 5000; k++) deep[n++] = '[';
    deep[n] = 0;
    CHECK(pylit_parse_dict(deep, n, &pf, why, sizeof why, &at) == -1);
    CHECK(strstr(why, "nested"));
}

TEST(movielens_title_rule) {
    struct {
        const char *raw, *want;
    } cases[] = {
        {"Toy Story (1995)", "Toy Story (1995)"},
        {"  Matrix, The (1999)  ", "The Matrix (1999)"},
        {"American President, The (1995)", "The American President (1995)"},
        {"Time to Kill, A (1996)", "A Time to Kill (1996)"},
        {"Affair to Remember, An (1957)", "An Affair to Remember (1957)"},
        {"City of Lost Children, The (Cité des enfants perdus, La) (1995)", "The City of Lost Children (1995)"},
        {"Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)", "Shanghai Triad (1995)"},
        {"Misérables, Les (1995)", "Misérables, Les (1995)"},
        {"Hyena Road", "Hyena Road"},
        {"Babylon 5", "Babylon 5"},
        {"Father of the Bride Part II (1995)", "Father of the Bride Part II (1995)"},
        {"Stranger, A (2010)", "A Stranger (2010)"},
        {"Love, Actually (2003)", "Love, Actually (2003)"},
        {"Unfinished (paren (2001)", "Unfinished (paren (2001)"},
        {"Series (2006-2007)", "Series (2006-2007)"},
    };
    mr_error err;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *t = movielens_title(cases[k].raw, &err);
        CHECK(t);
        int same = !strcmp(t, cases[k].want);
        if (!same) printf("  '%s' -> '%s', want '%s'\n", cases[k].raw, t, cases[k].want);
        free(t);
        CHECK(same);
    }
}

TEST(csv_and_split) {
    char line[] = "1,\"a, \"\"b\"\"\",,x";
    char *f[8];
    CHECK(split_csv(line, f, 8) == 4);
    CHECK(!strcmp(f[0], "1") && !strcmp(f[1], "a, \"b\"") && !strcmp(f[2], "") && !strcmp(f[3], "x"));
    char bad[] = "1,\"open";
    CHECK(split_csv(bad, f, 8) == -1);
    char dat[] = "1::Title: a::b";
    CHECK(split_sep(dat, "::", f, 8) == 3 && !strcmp(f[1], "Title: a"));
}

/* mr_download_file over file:// (no network needed): digest checked, nothing
 * written on a mismatch or a failed download. */
TEST(download_checks_sha256) {
    const char *src = test_tmp_path("fetch_src.txt");
    wfile(src, "abc");
    char url[1200], dst[1200], hex[65];
    snprintf(url, sizeof url, "file://%s", src);
    snprintf(dst, sizeof dst, "%s", test_tmp_path("fetch_dst.txt"));
    mr_error err;
    const char *abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    CHECK_OK(mr_download_file(url, dst, abc, hex, &err), &err);
    CHECK(!strcmp(hex, abc) && exists(dst));
    remove(dst);
    CHECK(mr_download_file(url, dst, "00", hex, &err) == MR_ERR_INPUT);
    CHECK(strstr(err.msg, "sha256") && !exists(dst));
    snprintf(url, sizeof url, "file://%s", test_tmp_path("no_such_file"));
    CHECK(mr_download_file(url, dst, NULL, hex, &err) == MR_ERR_INPUT);
    CHECK(strstr(err.msg, "download of") && !exists(dst));
}

int main(void) {
    RUN(movielens_latest_layout);
    RUN(movielens_100k_layout_latin1);
    RUN(movielens_1m_layout);
    RUN(amazon2014_ratings_and_python_meta);
    RUN(amazon2014_reviews_json);
    RUN(interactions_and_sequences_formats);
    RUN(kcore_is_iterated_until_stable);
    RUN(malformed_interactions);
    RUN(malformed_movielens);
    RUN(malformed_amazon);
    RUN(malformed_sequences);
    RUN(usage_errors_exit_2);
    RUN(output_folder_safety);
    RUN(python_literal_parser);
    RUN(movielens_title_rule);
    RUN(csv_and_split);
    RUN(download_checks_sha256);
    return test_summary();
}
