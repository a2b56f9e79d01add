/* The test harness behind tests/test.h. */
#include "test.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int n_pass, n_fail, n_skip;
static int current_failed, current_skipped;
static const char *current_name = "";

void test_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL %s: %s:%d: ", current_name, file, line);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    current_failed = 1;
}

void test_skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("skip %s: ", current_name);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    current_skipped = 1;
}

int test_failed_now(void) { return current_failed; }

void test_run(const char *name, void (*fn)(void)) {
    current_name = name;
    current_failed = current_skipped = 0;
    double t0 = mr_now();
    fn();
    if (current_failed) n_fail++;
    else if (current_skipped) n_skip++;
    else {
        n_pass++;
        printf("ok   %s (%.2fs)\n", name, mr_now() - t0);
    }
    fflush(stdout);
}

static char tmpdir[256];

static void remove_tmpdir(void) {
    if (!tmpdir[0] || getenv("MLLM4REC_KEEP_TMP")) return;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

const char *test_tmpdir(void) {
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/mllm4rec-test-XXXXXX");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

const char *test_tmp_path(const char *name) {
    static char bufs[8][1024];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, sizeof bufs[0], "%s/%s", test_tmpdir(), name);
    return b;
}

void test_write_file(const char *path, const char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "test_write_file: cannot write %s\n", path);
        abort();
    }
}

void test_write_text(const char *dir, const char *name, const char *text) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    test_write_file(p, text, strlen(text));
}

/* header + rows into dir/name */
static void write_table(const char *dir, const char *name, const char *header, const char *rows) {
    const size_t nh = strlen(header), nr = strlen(rows);
    char *buf = malloc(nh + nr + 1);
    if (!buf) abort();
    memcpy(buf, header, nh);
    memcpy(buf + nh, rows, nr + 1);
    test_write_text(dir, name, buf);
    free(buf);
}

const char test_movie_items[] = "1\t1\tToy Story (1995)\t\ta toy cowboy and a space ranger\n"
                                "2\t2\tJumanji (1995)\t\t\n"
                                "3\t3\tHeat (1995)\t\ttwo men with guns\n"
                                "4\t4\tThe Lion King (1994)\t\ta lion on a rock\n"
                                "5\t5\tAlien (1979)\t\ta dark ship\n"
                                "6\t6\tUp (2009)\t\ta house with balloons\n"
                                "7\t7\tJaws (1975)\t\ta shark\n"
                                "8\t8\tBig (1988)\t\ta piano\n";

void test_write_dataset(const char *dir, const char *name, const char *item_rows, const char *seq_rows) {
    mkdir(dir, 0755);
    long items = 0, users = 0, interactions = 0;
    for (const char *c = item_rows; *c; c++) items += *c == '\n';
    for (const char *c = seq_rows; *c; users++) { /* a row's third field: its items, space-separated */
        for (int tabs = 0; *c && *c != '\n' && tabs < 2; c++) tabs += *c == '\t';
        for (char prev = ' '; *c && *c != '\n'; prev = *c++) interactions += prev == ' ' && *c != ' ';
        if (*c) c++;
    }
    char meta[512];
    snprintf(meta, sizeof meta,
             "{\"format_version\": 1, \"format\": \"movielens\", \"name\": \"%s\",\n"
             " \"counts\": {\"after\": {\"users\": %ld, \"items\": %ld, \"interactions\": %ld}}}\n",
             name, users, items, interactions);
    test_write_text(dir, "meta.json", meta);
    write_table(dir, "items.tsv", "item_id\tsource_id\ttitle\timage\tcaption\n", item_rows);
    write_table(dir, "sequences.tsv", "user_id\tsource_user_id\titems\n", seq_rows);
}

void test_write_poster_dataset(const char *dir, const char *const *sids, int n) {
    char items[1 << 14], seq[1 << 12];
    size_t k = 0, q = (size_t)snprintf(seq, sizeof seq, "1\tu1\t");
    for (int i = 0; i < n; i++) {
        k += (size_t)snprintf(items + k, sizeof items - k, "%d\t%s\tMovie %s\t\t\n", i + 1, sids[i], sids[i]);
        q += (size_t)snprintf(seq + q, sizeof seq - q, "%s%d", i ? " " : "", i + 1);
    }
    snprintf(seq + q, sizeof seq - q, "\n");
    test_write_dataset(dir, "posters", items, seq);
}

const char *test_shared_path(const char *rel) {
    static char bufs[8][2048];
    static int k;
    const char *root = getenv("MLLM4REC_SHARED");
    if (!root || !*root) root = "../shared";
    char *b = bufs[k++ & 7];
    snprintf(b, sizeof bufs[0], "%s/%s", root, rel);
    return access(b, R_OK) == 0 ? b : NULL;
}

int test_under_sanitizer(void) {
    const char *s = getenv("MLLM4REC_SANITIZER");
    return s && *s && strcmp(s, "0");
}

int test_cli(char *out, size_t outsz, const char *fmt, ...) {
    const char *bin = getenv("MLLM4REC_BIN");
    if (!bin || !*bin) bin = "build/mllm4rec";
    char args[8192], cmd[9000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s", bin, args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = 0;
    char tmp[4096];
    size_t got;
    while ((got = fread(tmp, 1, sizeof tmp, p)) > 0) {
        if (out && n + 1 < outsz) {
            size_t take = got < outsz - 1 - n ? got : outsz - 1 - n;
            memcpy(out + n, tmp, take);
            n += take;
        }
    }
    if (out && outsz) out[n] = 0;
    int st = pclose(p);
    if (st == -1) return -1;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

int test_summary(void) {
    printf("# %d ok, %d FAIL, %d skip\n", n_pass, n_fail, n_skip);
    return n_fail ? 1 : 0;
}
