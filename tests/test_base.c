/* Base services: sha256, utf-8 validation, number parsing, rng, atomic writes, line reader. */
#include "test.h"
#include "mllm4rec/lines.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

TEST(sha256_known_vectors) {
    char hex[65];
    uint8_t d[32];
    mr_sha256 s;
    mr_sha256_init(&s);
    mr_sha256_update(&s, "abc", 3);
    mr_sha256_final(&s, d);
    mr_sha256_hex(d, hex);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    mr_sha256_init(&s);
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    for (size_t i = 0; i < strlen(m); i++) mr_sha256_update(&s, m + i, 1);
    mr_sha256_final(&s, d);
    mr_sha256_hex(d, hex);
    CHECK(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
}

TEST(utf8_validation) {
    CHECK(mr_utf8_valid("plain", 5));
    CHECK(mr_utf8_valid("Mis\xc3\xa9rables", 11));
    CHECK(mr_utf8_valid("\xf0\x9f\x9a\x80", 4));
    CHECK(!mr_utf8_valid("Mis\xe9rables", 10));   /* latin-1 byte */
    CHECK(!mr_utf8_valid("\xc3", 1));              /* cut off */
    CHECK(!mr_utf8_valid("\xc0\xaf", 2));          /* overlong */
    CHECK(!mr_utf8_valid("\xed\xa0\x80", 3));      /* surrogate */
}

TEST(number_parsing) {
    int64_t v;
    double d;
    CHECK(mr_parse_i64("1234", &v) == 0 && v == 1234);
    CHECK(mr_parse_i64("-5", &v) == 0 && v == -5);
    CHECK(mr_parse_i64("12a", &v) != 0);
    CHECK(mr_parse_i64("", &v) != 0);
    CHECK(mr_parse_double("4.5", &d) == 0 && d == 4.5);
    CHECK(mr_parse_double("nan", &d) != 0);
}

TEST(rng_is_seeded_and_uniform) {
    mr_rng a, b;
    mr_rng_seed(&a, 42);
    mr_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) CHECK(mr_rng_u64(&a) == mr_rng_u64(&b));
    int counts[10] = {0};
    for (int i = 0; i < 100000; i++) counts[mr_rng_below(&a, 10)]++;
    for (int i = 0; i < 10; i++) CHECK(counts[i] > 9500 && counts[i] < 10500);
    double sum = 0, sq = 0;
    for (int i = 0; i < 100000; i++) {
        double x = mr_rng_normal(&a);
        sum += x;
        sq += x * x;
    }
    CHECK_NEAR(sum / 100000, 0.0, 0.02);
    CHECK_NEAR(sq / 100000, 1.0, 0.02);
}

TEST(atomic_write_replaces_whole_file) {
    mr_error e = {0};
    const char *p = test_tmp_path("atomic.txt");
    CHECK_OK(mr_write_file_atomic(p, "first", 5, &e), &e);
    mr_atomic_file af;
    CHECK_OK(mr_atomic_open(&af, p, &e), &e);
    fputs("second-but-aborted", af.f);
    mr_atomic_abort(&af);
    char *data;
    size_t n;
    CHECK_OK(mr_read_file(p, &data, &n, &e), &e);
    CHECK(n == 5 && !memcmp(data, "first", 5));
    free(data);
    CHECK(mr_read_file(test_tmp_path("missing"), &data, &n, &e) == MR_ERR_INPUT);
    CHECK(strstr(e.msg, "missing") != NULL);
    /* a folder: said so (it was only "read error"; `caption --image DIR`) */
    CHECK(mr_read_file(test_tmpdir(), &data, &n, &e) == MR_ERR_INPUT);
    CHECK_MSG(strstr(e.msg, "is a folder, not a file") && strstr(e.msg, test_tmpdir()), "%s", e.msg);
}

static int read_all_lines(const char *path, char out[][64], int max, mr_error *e) {
    mr_lines L;
    if (mr_lines_open(&L, path, e)) return -1;
    char *line;
    size_t len;
    int n = 0, r;
    while ((r = mr_lines_next(&L, &line, &len, e)) == 1) {
        if (n < max) snprintf(out[n], 64, "%s", line);
        n++;
    }
    mr_lines_close(&L);
    return r < 0 ? -1 : n;
}

TEST(lines_plain_crlf_and_gzip) {
    mr_error e = {0};
    char got[8][64];
    const char *p = test_tmp_path("crlf.csv");
    test_write_file(p, "a,b\r\n1,2\r\nlast", 14);
    CHECK(read_all_lines(p, got, 8, &e) == 3);
    CHECK(!strcmp(got[0], "a,b") && !strcmp(got[1], "1,2") && !strcmp(got[2], "last"));
    /* gzip with a misleading name: detected by content */
    const char *gzp = test_tmp_path("data.txt");
    gzFile g = gzopen(gzp, "wb");
    for (int i = 0; i < 20000; i++) gzprintf(g, "line %d\n", i);
    gzclose(g);
    static char many[20001][64];
    CHECK(read_all_lines(gzp, many, 20001, &e) == 20000);
    CHECK(!strcmp(many[19999], "line 19999"));
    /* truncated gzip is an error that names the file */
    char *data;
    size_t n;
    CHECK_OK(mr_read_file(gzp, &data, &n, &e), &e);
    const char *tp = test_tmp_path("trunc.gz");
    test_write_file(tp, data, n / 2);
    free(data);
    CHECK(read_all_lines(tp, many, 20001, &e) == -1);
    CHECK(strstr(e.msg, "trunc.gz") && strstr(e.msg, "gzip"));
}

int main(void) {
    RUN(sha256_known_vectors);
    RUN(utf8_validation);
    RUN(number_parsing);
    RUN(rng_is_seeded_and_uniform);
    RUN(atomic_write_replaces_whole_file);
    RUN(lines_plain_crlf_and_gzip);
    return test_summary();
}
