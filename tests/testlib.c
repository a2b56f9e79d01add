/* The test harness behind tests/test.h. */
#include "test.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
