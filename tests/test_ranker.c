/* The ranker's inputs: candidates.tsv reading and checking, the instruction lines
 * (against paper/roles.md), history selection, prompt text, token cuts and the
 * verbalizer tokens, with a byte-level test tokenizer (one token per byte). */
#include "test.h"
#include "mllm4rec/ranker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- a byte tokenizer: id = byte + 3, BOS 1, EOS 2 ---- */
static int byte_encode(void *ctx, const char *text, int32_t **ids, int64_t *n, mr_error *e) {
    size_t len = strlen(text);
    *ids = mr_alloc((len + 1) * sizeof **ids, e);
    if (!*ids) return e->code;
    for (size_t i = 0; i < len; i++) (*ids)[i] = (unsigned char)text[i] + 3;
    *n = (int64_t)len;
    return MR_OK;
}
static int byte_decode(void *ctx, const int32_t *ids, int64_t n, char **text, mr_error *e) {
    *text = mr_alloc((size_t)n + 1, e);
    if (!*text) return e->code;
    for (int64_t i = 0; i < n; i++) (*text)[i] = (char)(ids[i] - 3);
    (*text)[n] = 0;
    return MR_OK;
}
static int byte_truncate(void *ctx, const char *text, int max_tokens, char **out, mr_error *e) {
    size_t len = strlen(text);
    if (len > (size_t)max_tokens) {
        len = (size_t)max_tokens;
        /* drop an incomplete UTF-8 sequence at the end */
        size_t s = len;
        while (s > 0 && ((unsigned char)text[s - 1] & 0xC0) == 0x80) s--;
        if (s > 0 && ((unsigned char)text[s - 1] & 0x80)) {
            unsigned char lead = (unsigned char)text[s - 1];
            size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
            if (len - (s - 1) < need) len = s - 1;
        }
    }
    *out = mr_alloc(len + 1, e);
    if (!*out) return e->code;
    memcpy(*out, text, len);
    (*out)[len] = 0;
    return MR_OK;
}
static const mr_rank_tok BYTE_TOK = {NULL, byte_encode, byte_decode, byte_truncate, 1, 2};

/* ---- a small dataset folder ---- */
static const char *make_dataset(const char *name, const char *dsname, const char *format) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s", test_tmp_path(name));
    mkdir(dir, 0755);
    char p[1200], meta[512];
    snprintf(meta, sizeof meta,
             "{\"format_version\": 1, \"format\": \"%s\", \"name\": \"%s\",\n"
             " \"counts\": {\"after\": {\"users\": 3, \"items\": 6, \"interactions\": 14}}}\n",
             format, dsname);
    snprintf(p, sizeof p, "%s/meta.json", dir);
    test_write_file(p, meta, strlen(meta));
    static const char *items = "item_id\tsource_id\ttitle\timage\tcaption\n"
                               "1\ta\tToy Story (1995)\t\ta cartoon cowboy\n"
                               "2\tb\tHeat (1995)\t\t\n"
                               "3\tc\tCaf\xc3\xa9 Society (2016)\t\ta couple dancing\n"
                               "4\td\tAlien (1979)\t\ta dark ship\n"
                               "5\te\tUp (2009)\t\ta house with balloons\n"
                               "6\tf\tJaws (1975)\t\ta shark\n";
    snprintf(p, sizeof p, "%s/items.tsv", dir);
    test_write_file(p, items, strlen(items));
    static const char *seqs = "user_id\tsource_user_id\titems\n"
                              "1\tu1\t1 2 3 4 5\n"
                              "2\tu2\t6 5 4\n"
                              "3\tu3\t2 3 4 5 6 1\n";
    snprintf(p, sizeof p, "%s/sequences.tsv", dir);
    test_write_file(p, seqs, strlen(seqs));
    return dir;
}

static const char *write_cands(const char *name, const char *body) {
    const char *p = test_tmp_path(name);
    test_write_file(p, body, strlen(body));
    return p;
}

#define CAND_HEADER "split\tuser_id\tlabel\titems\tscores\n"

TEST(candidates_read_and_index) {
    const char *p = write_cands("c1.tsv", CAND_HEADER "val\t1\t4\t4 6 1\t3.5 2 -1e-3\n"
                                                      "test\t1\t5\t5,6,1\t0.5,0.25,0.125\n"
                                                      "test\t2\t4\t1 2 3\t1 1 1\n");
    mr_error e = {0};
    mr_candidates c;
    CHECK_OK(mr_candidates_load(&c, p, &e), &e);
    CHECK(c.k == 3 && c.n_rows == 3 && c.max_user == 2);
    const mr_cand_row *r = mr_candidates_get(&c, MR_SPLIT_TEST, 1);
    CHECK(r && r->label == 5 && r->items[0] == 5 && r->items[2] == 1 && r->scores[1] == 0.25f);
    r = mr_candidates_get(&c, MR_SPLIT_VAL, 1);
    CHECK(r && r->items[1] == 6 && r->scores[2] == -1e-3f && mr_cand_row_hit(r, 3) && mr_cand_row_hit(r, 1));
    CHECK(!mr_candidates_get(&c, MR_SPLIT_VAL, 2) && !mr_candidates_get(&c, MR_SPLIT_TEST, 3));
    r = mr_candidates_get(&c, MR_SPLIT_TEST, 2);
    CHECK(r && !mr_cand_row_hit(r, 3));
    mr_dataset d;
    CHECK_OK(mr_dataset_load(&d, make_dataset("ds1", "ml-latest-small", "movielens"), &e), &e);
    CHECK_OK(mr_candidates_check(&c, &d, &e), &e);
    mr_candidates_free(&c);
    /* a label that is not the dataset's test item */
    p = write_cands("c2.tsv", CAND_HEADER "test\t3\t2\t1 2 3\t1 1 1\n");
    CHECK_OK(mr_candidates_load(&c, p, &e), &e);
    CHECK(mr_candidates_check(&c, &d, &e) == MR_ERR_INPUT && strstr(e.msg, "user 3") && strstr(e.msg, "says 1"));
    mr_candidates_free(&c);
    p = write_cands("c3.tsv", CAND_HEADER "test\t9\t2\t1 2 3\t1 1 1\n");
    CHECK_OK(mr_candidates_load(&c, p, &e), &e);
    CHECK(mr_candidates_check(&c, &d, &e) == MR_ERR_INPUT && strstr(e.msg, "user 9"));
    mr_candidates_free(&c);
    p = write_cands("c4.tsv", CAND_HEADER "test\t1\t5\t1 2 77\t1 1 1\n");
    CHECK_OK(mr_candidates_load(&c, p, &e), &e);
    CHECK(mr_candidates_check(&c, &d, &e) == MR_ERR_INPUT && strstr(e.msg, "item 77"));
    mr_candidates_free(&c);
    mr_dataset_free(&d);
}

TEST(candidates_errors_name_line_and_column) {
    struct {
        const char *body, *want;
    } cases[] = {
        {"split\tuser\tlabel\titems\tscores\n", ":1: expected the header"},
        {"", ":1: expected the header"},
        {CAND_HEADER, "no rows"},
        {CAND_HEADER "train\t1\t2\t1 2\t1 1\n", ":2: column split"},
        {CAND_HEADER "val\tx\t2\t1 2\t1 1\n", ":2: column user_id"},
        {CAND_HEADER "val\t1\t-2\t1 2\t1 1\n", ":2: column label"},
        {CAND_HEADER "val\t1\t2\t1 2\t1 1\nval\t2\t2\t1 2 3\t1 1 1\n", ":3: column items: 3 ids, but earlier rows have 2"},
        {CAND_HEADER "val\t1\t2\t1 b\t1 1\n", ":2: column items: 'b'"},
        {CAND_HEADER "val\t1\t2\t1 2\t1\n", ":2: column scores: 1 values for 2 items"},
        {CAND_HEADER "val\t1\t2\t1 2\t1 nan\n", ":2: column scores: 'nan'"},
        {CAND_HEADER "val\t1\t2\t1 2\n", ":2: expected 5 tab-separated columns, found 4"},
        {CAND_HEADER "val\t1\t2\t1 2\t1 1\textra\n", ":2: expected 5 tab-separated columns"},
        {CAND_HEADER "val\t1\t2\t1 2\t1 1\nval\t1\t2\t1 2\t1 1\n", "user 1 appears twice in split val"},
        /* one item listed several times: the subset scored NDCG@10 = 1.0 */
        {CAND_HEADER "val\t1\t2\t1 2 3\t3 2 1\ntest\t1\t2\t2 5 2\t3 2 1\n", ":3: column items: item 2 is listed more than once"},
        {CAND_HEADER "val\t1\t7\t7,7,7,7\t4,3,2,1\n", ":2: column items: item 7 is listed more than once"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu.tsv", i);
        const char *p = write_cands(name, cases[i].body);
        mr_error e = {0};
        mr_candidates c;
        CHECK_MSG(mr_candidates_load(&c, p, &e) == MR_ERR_INPUT, "case %zu loaded", i);
        CHECK_MSG(strstr(e.msg, cases[i].want) && strstr(e.msg, name), "case %zu: '%s' lacks '%s'", i, e.msg,
                  cases[i].want);
    }
    mr_error e = {0};
    mr_candidates c;
    CHECK(mr_candidates_load(&c, test_tmp_path("absent.tsv"), &e) == MR_ERR_INPUT);
}

/* Every instruction line equals the code block of paper/roles.md byte for byte. */
TEST(system_lines_equal_roles_md) {
    const char *p = test_shared_path("paper/roles.md");
    if (!p) SKIP("../shared/paper/roles.md absent");
    char *md;
    size_t len;
    mr_error e = {0};
    CHECK_OK(mr_read_file(p, &md, &len, &e), &e);
    const char *keys[4] = {"ml-100k", "games", "beauty", "toys"};
    for (int i = 0; i < 4; i++) {
        char head[64];
        snprintf(head, sizeof head, "## %s", keys[i]);
        const char *s = strstr(md, head);
        CHECK_MSG(s, "roles.md has no section %s", head);
        s = strstr(s, "```\n");
        CHECK(s);
        s += 4;
        const char *end = strstr(s, "\n```");
        CHECK(end);
        char *sys;
        CHECK_OK(mr_ranker_system(MR_TEMPLATE_MLLM4REC, keys[i], NULL, &sys, &e), &e);
        CHECK_MSG(strlen(sys) == (size_t)(end - s) && !memcmp(sys, s, (size_t)(end - s)), "%s: '%s'", keys[i], sys);
        free(sys);
    }
    free(md);
    char *sys;
    CHECK_OK(mr_ranker_system(MR_TEMPLATE_MLLM4REC, NULL, "You like books.", &sys, &e), &e);
    CHECK(!strncmp(sys, "You like books. I will provide you with the items you have previously browsed", 77));
    free(sys);
    CHECK_OK(mr_ranker_system(MR_TEMPLATE_MLLM4REC, "beauty", "You like books.", &sys, &e), &e);
    CHECK(!strncmp(sys, "You like books. I will", 22));
    free(sys);
    CHECK(mr_ranker_system(MR_TEMPLATE_MLLM4REC, NULL, NULL, &sys, &e) == MR_ERR_USAGE && strstr(e.msg, "--role"));
    CHECK_OK(mr_ranker_system(MR_TEMPLATE_LLAMAREC, NULL, NULL, &sys, &e), &e);
    CHECK(!strcmp(sys, "Given user history in chronological order, recommend an item from the candidate pool with its "
                       "index letter."));
    free(sys);
}

TEST(history_and_prompt_text) {
    mr_error e = {0};
    mr_dataset d;
    CHECK_OK(mr_dataset_load(&d, make_dataset("ds2", "ml-latest-small", "movielens"), &e), &e);
    const int32_t *h;
    int nh;
    int32_t target;
    /* user 3: 2 3 4 5 6 1 -> test predicts 1 after 2 3 4 5 6; val predicts 6 after 2 3 4 5 */
    CHECK_OK(mr_prompt_history(&d, 3, MR_SPLIT_TEST, 20, &h, &nh, &target, &e), &e);
    CHECK(nh == 5 && h[0] == 2 && h[4] == 6 && target == 1);
    CHECK_OK(mr_prompt_history(&d, 3, MR_SPLIT_VAL, 3, &h, &nh, &target, &e), &e);
    CHECK(nh == 3 && h[0] == 3 && h[2] == 5 && target == 6);
    CHECK(mr_prompt_history(&d, 4, MR_SPLIT_VAL, 3, &h, &nh, &target, &e) == MR_ERR_INPUT);

    mr_prompt_opts o;
    mr_prompt_opts_default(&o);
    o.system = "SYS";
    o.max_title_tokens = 8;
    CHECK_OK(mr_prompt_history(&d, 2, MR_SPLIT_TEST, 20, &h, &nh, &target, &e), &e);
    int32_t cands[3] = {4, 2, 3};
    char *text;
    CHECK_OK(mr_prompt_text(&d, &BYTE_TOK, &o, h, nh, cands, 3, NULL, &text, &e), &e);
    /* titles and captions cut to 8 tokens (bytes here); "Café" keeps its two-byte é
     * whole; Heat has no caption */
    const char *want2 = "### Instruction:\nSYS\n\n### Input:\nPreviously browsed: (1) {Jaws (19 : a shark \n (2) {Up "
                        "(2009 : a house ; \n Candidate pool: (A) {Alien (1 : a dark s \n (B) {Heat (19 :  \n (C) "
                        "{Caf\xc3\xa9 So : a couple\n\n### Response:\n";
    CHECK_MSG(!strcmp(text, want2), "got '%s'", text);
    free(text);
    /* cutting inside a two-byte character drops it: "Caf" + half of é */
    o.max_title_tokens = 4;
    CHECK_OK(mr_prompt_text(&d, &BYTE_TOK, &o, h, 0, cands + 2, 1, "A", &text, &e), &e);
    CHECK_MSG(strstr(text, "Previously browsed: ; \n Candidate pool: (A) {Caf : a co\n\n### Response:\nA"), "got '%s'",
              text);
    free(text);
    /* llamarec: titles only */
    o.templ = MR_TEMPLATE_LLAMAREC;
    o.max_title_tokens = 32;
    CHECK_OK(mr_prompt_text(&d, &BYTE_TOK, &o, h, nh, cands, 2, NULL, &text, &e), &e);
    CHECK_MSG(!strcmp(text, "### Instruction:\nSYS\n\n### Input:\nUser history: (1) Jaws (1975) \n (2) Up (2009); \n "
                            "Candidate pool: (A) Alien (1979) \n (B) Heat (1995)\n\n### Response:\n"),
              "got '%s'", text);
    free(text);
    CHECK(mr_prompt_text(&d, &BYTE_TOK, &o, h, nh, cands, 27, NULL, &text, &e) == MR_ERR_USAGE);
    int32_t bad[1] = {7};
    CHECK(mr_prompt_text(&d, &BYTE_TOK, &o, h, nh, bad, 1, NULL, &text, &e) == MR_ERR_INPUT && strstr(e.msg, "item 7"));
    mr_dataset_free(&d);
}

TEST(token_cuts_and_verbalizer) {
    mr_error e = {0};
    int32_t *ids;
    int64_t n;
    CHECK_OK(mr_prompt_ids(&BYTE_TOK, "abcdef", 100, &ids, &n, &e), &e);
    CHECK(n == 7 && ids[0] == 1 && ids[1] == 'a' + 3 && ids[6] == 'f' + 3);
    free(ids);
    /* cut from the left: BOS + the last 3 */
    CHECK_OK(mr_prompt_ids(&BYTE_TOK, "abcdef", 4, &ids, &n, &e), &e);
    CHECK(n == 4 && ids[0] == 1 && ids[1] == 'd' + 3 && ids[3] == 'f' + 3);
    free(ids);
    /* training: BOS + text, EOS appended; too long -> the last max tokens (BOS lost) */
    CHECK_OK(mr_prompt_train_ids(&BYTE_TOK, "xy\nA", 100, &ids, &n, &e), &e);
    CHECK(n == 6 && ids[0] == 1 && ids[3] == '\n' + 3 && ids[4] == 'A' + 3 && ids[5] == 2);
    free(ids);
    CHECK_OK(mr_prompt_train_ids(&BYTE_TOK, "vwxy\nA", 5, &ids, &n, &e), &e);
    CHECK(n == 5 && ids[0] == 'x' + 3 && ids[2] == '\n' + 3 && ids[3] == 'A' + 3 && ids[4] == 2);
    free(ids);
    int32_t letters[20];
    CHECK_OK(mr_verbalizer_tokens(&BYTE_TOK, 20, letters, &e), &e);
    CHECK(letters[0] == 'A' + 3 && letters[19] == 'T' + 3);
    CHECK(mr_verbalizer_tokens(&BYTE_TOK, 27, letters, &e) == MR_ERR_USAGE);
}

int main(void) {
    RUN(candidates_read_and_index);
    RUN(candidates_errors_name_line_and_column);
    RUN(system_lines_equal_roles_md);
    RUN(history_and_prompt_text);
    RUN(token_cuts_and_verbalizer);
    return test_summary();
}
