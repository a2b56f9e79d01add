/* Loading a prepared dataset folder, its errors, roles and rewriting items.tsv. */
#include "test.h"
#include "mllm4rec/dataset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *META =
    "{\"format_version\": 1, \"format\": \"interactions\", \"name\": \"amazon2014-beauty\",\n"
    " \"counts\": {\"after\": {\"users\": 2, \"items\": 3, \"interactions\": 5}}}\n";
static const char *ITEMS =
    "item_id\tsource_id\ttitle\timage\tcaption\n"
    "1\tA1\tFirst\t\t\n"
    "2\tB2\tSecond \xc3\xa9\thttp://x/2.jpg\ta red box\n"
    "3\tC3\tThird\t\t\n";
static const char *SEQS =
    "user_id\tsource_user_id\titems\n"
    "1\tu9\t1 2 3\n"
    "2\tu10\t3 1\n";

static const char *make_dir(const char *name, const char *meta, const char *items, const char *seqs) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s", test_tmp_path(name));
    mkdir(dir, 0755);
    char p[1200];
    snprintf(p, sizeof p, "%s/meta.json", dir);
    if (meta) test_write_file(p, meta, strlen(meta));
    snprintf(p, sizeof p, "%s/items.tsv", dir);
    if (items) test_write_file(p, items, strlen(items));
    snprintf(p, sizeof p, "%s/sequences.tsv", dir);
    if (seqs) test_write_file(p, seqs, strlen(seqs));
    return dir;
}

TEST(loads_a_folder) {
    mr_error err;
    mr_dataset d;
    const char *dir = make_dir("ok", META, ITEMS, SEQS);
    CHECK_OK(mr_dataset_load(&d, dir, &err), &err);
    CHECK(d.n_items == 3 && d.n_users == 2 && d.n_interactions == 5);
    CHECK(!strcmp(d.items[0].title, "") && !strcmp(d.items[2].source_id, "B2"));
    CHECK(!strcmp(d.items[2].title, "Second \xc3\xa9") && !strcmp(d.items[2].image, "http://x/2.jpg"));
    CHECK(!strcmp(d.items[2].caption, "a red box") && !strcmp(d.items[3].caption, ""));
    CHECK(d.seq_len[1] == 3 && d.seqs[1][0] == 1 && d.seqs[1][2] == 3);
    CHECK(d.seq_len[2] == 2 && d.seqs[2][0] == 3 && d.seqs[2][1] == 1);
    CHECK(!strcmp(d.user_source_ids[2], "u10"));
    CHECK(!strcmp(d.name, "amazon2014-beauty") && !strcmp(d.format, "interactions"));
    CHECK(mr_dataset_role(&d) && !strcmp(mr_dataset_role(&d), "beauty"));

    /* captions change: rewrite and load again; a tab in a caption becomes a space */
    free(d.items[1].caption);
    d.items[1].caption = strdup("new\tcaption\nhere");
    CHECK_OK(mr_dataset_write_items(&d, &err), &err);
    mr_dataset_free(&d);
    CHECK_OK(mr_dataset_load(&d, dir, &err), &err);
    CHECK(!strcmp(d.items[1].caption, "new caption here"));
    CHECK(!strcmp(d.items[2].caption, "a red box"));
    mr_dataset_free(&d);
}

TEST(roles) {
    CHECK(!strcmp(mr_dataset_role_for_name("Beauty"), "beauty"));
    CHECK(!strcmp(mr_dataset_role_for_name("toys"), "toys"));
    CHECK(!strcmp(mr_dataset_role_for_name("Toys_and_Games"), "toys"));
    CHECK(!strcmp(mr_dataset_role_for_name("Video_Games"), "games"));
    CHECK(!strcmp(mr_dataset_role_for_name("amazon2014-games"), "games"));
    CHECK(!strcmp(mr_dataset_role_for_name("amazon-Toys_and_Games"), "toys"));
    CHECK(mr_dataset_role_for_name("steam") == NULL);
    CHECK(mr_dataset_role_for_name("beautyx") == NULL);
    mr_dataset d;
    memset(&d, 0, sizeof d);
    d.format = "movielens";
    d.name = "whatever";
    CHECK(!strcmp(mr_dataset_role(&d), "ml-100k"));
    d.format = "sequences";
    CHECK(mr_dataset_role(&d) == NULL);
}

static int load_fails_with(const char *dir, const char *needle) {
    mr_error err;
    mr_dataset d;
    int rc = mr_dataset_load(&d, dir, &err);
    if (rc == MR_OK) {
        mr_dataset_free(&d);
        printf("  loaded but should fail (%s)\n", needle);
        return 0;
    }
    if (rc != MR_ERR_INPUT || !strstr(err.msg, needle)) {
        printf("  rc %d, message '%s' lacks '%s'\n", rc, err.msg, needle);
        return 0;
    }
    return 1;
}

TEST(clear_errors) {
    CHECK(load_fails_with(test_tmp_path("nope"), "not a folder"));
    CHECK(load_fails_with(make_dir("nometa", NULL, ITEMS, SEQS), "meta.json: missing"));
    CHECK(load_fails_with(make_dir("badjson", "{\"format_version\": 1,", ITEMS, SEQS), "meta.json:"));
    CHECK(load_fails_with(make_dir("oldver", "{\"format_version\": 0}", ITEMS, SEQS), "format_version"));
    CHECK(load_fails_with(make_dir("noitems", META, NULL, SEQS), "items.tsv: cannot open"));
    CHECK(load_fails_with(make_dir("hdr", META, "id\ttitle\n1\tx\n", SEQS), "items.tsv:1: expected the header"));
    CHECK(load_fails_with(make_dir("short", META, "item_id\tsource_id\ttitle\timage\tcaption\n1\tA\tx\n", SEQS),
                          "items.tsv:2: expected 5 tab-separated fields, found 3"));
    CHECK(load_fails_with(make_dir("gap", META, "item_id\tsource_id\ttitle\timage\tcaption\n2\tA\tx\t\t\n", SEQS),
                          "items.tsv:2: expected item_id 1"));
    CHECK(load_fails_with(make_dir("utf", META, "item_id\tsource_id\ttitle\timage\tcaption\n1\tA\tx\xe9\t\t\n", SEQS),
                          "items.tsv:2: invalid UTF-8"));
    CHECK(load_fails_with(make_dir("range", META, ITEMS, "user_id\tsource_user_id\titems\n1\tu\t1 4\n"),
                          "sequences.tsv:2: expected item ids 1..3"));
    CHECK(load_fails_with(make_dir("nonnum", META, ITEMS, "user_id\tsource_user_id\titems\n1\tu\t1 x2\n"),
                          "sequences.tsv:2: expected item ids"));
    CHECK(load_fails_with(make_dir("empty", META, ITEMS, "user_id\tsource_user_id\titems\n1\tu\t\n"),
                          "no items"));
    CHECK(load_fails_with(make_dir("count", META, ITEMS, "user_id\tsource_user_id\titems\n1\tu\t1 2\n"),
                          "meta.json says 2 users"));
}

int main(void) {
    RUN(loads_a_folder);
    RUN(roles);
    RUN(clear_errors);
    return test_summary();
}
