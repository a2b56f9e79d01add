/* Minimal test harness. Each tests/test_*.c is one program:
 *
 *   TEST(parses_crlf) { ...; CHECK(x == 3); CHECK_NEAR(a, b, 1e-5); }
 *   int main(void) { RUN(parses_crlf); return test_summary(); }
 *
 * A failed CHECK ends the current test. Tests that need ../shared call
 * test_shared_path() and SKIP with a visible reason when it is absent.
 * tests/run.sh runs every program and adds the counts up. */
#ifndef MLLM4REC_TEST_H
#define MLLM4REC_TEST_H

#include <math.h>
#include <stddef.h>

#include "mllm4rec/base.h"

void test_fail(const char *file, int line, const char *fmt, ...) MR_PRINTF(3, 4);
void test_skip(const char *fmt, ...) MR_PRINTF(1, 2);
void test_run(const char *name, void (*fn)(void));
int test_summary(void); /* prints this program's counts; returns the exit code */
int test_failed_now(void);

/* Path of a file under ../shared (or $MLLM4REC_SHARED); NULL when it is absent. */
const char *test_shared_path(const char *rel);
/* A fresh empty temporary directory for this program (removed at exit). */
const char *test_tmpdir(void);
/* Joins test_tmpdir() and name into a static rotating buffer. */
const char *test_tmp_path(const char *name);
/* Writes bytes to a file (aborts the test program on failure). */
void test_write_file(const char *path, const char *data, size_t len);
/* Writes text to the file dir/name (aborts the test program on failure). */
void test_write_text(const char *dir, const char *name, const char *text);
/* A prepared dataset folder (DESIGN section 8): dir (made if absent) gets meta.json
 * (format movielens, the name given, the counts taken from the rows) and items.tsv
 * and sequences.tsv, each its header and then the rows given, each ending in '\n':
 * items "item_id<TAB>source_id<TAB>title<TAB>image<TAB>caption",
 * sequences "user_id<TAB>source_user_id<TAB>items" (items space-separated). */
void test_write_dataset(const char *dir, const char *name, const char *item_rows, const char *seq_rows);
/* Item rows for test_write_dataset: eight MovieLens titles, ids 1..8, all but
 * one (2) with a caption. */
extern const char test_movie_items[];
/* A dataset of one user who saw n items, item i+1 with source id sids[i] (so its
 * poster is SID.jpg) and the title "Movie SID", no captions. */
void test_write_poster_dataset(const char *dir, const char *const *sids, int n);
/* Runs `build/mllm4rec ARGS` (through sh, so ARGS may hold redirections).
 * Captures stdout into out (NUL-terminated, may be NULL) and returns the exit code. */
int test_cli(char *out, size_t outsz, const char *fmt, ...) MR_PRINTF(3, 4);
/* 1 under the sanitizer build (tests may shrink slow work there, never skip checks). */
int test_under_sanitizer(void);

#define TEST(name) static void name(void)
#define RUN(name) test_run(#name, name)

#define CHECK(cond)                                            \
    do {                                                       \
        if (!(cond)) {                                         \
            test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond); \
            return;                                            \
        }                                                      \
    } while (0)

#define CHECK_MSG(cond, ...)                          \
    do {                                              \
        if (!(cond)) {                                \
            test_fail(__FILE__, __LINE__, __VA_ARGS__); \
            return;                                   \
        }                                             \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                       \
    do {                                                                                            \
        double a_ = (double)(a), b_ = (double)(b);                                                  \
        if (!(fabs(a_ - b_) <= (tol))) {                                                            \
            test_fail(__FILE__, __LINE__, "%s = %.9g, %s = %.9g, differ by more than %g", #a, a_, #b, \
                      b_, (double)(tol));                                                           \
            return;                                                                                 \
        }                                                                                           \
    } while (0)

/* Checks a library call returned MR_OK, printing its error otherwise. */
#define CHECK_OK(call, err)                                                             \
    do {                                                                                \
        int rc_ = (call);                                                               \
        if (rc_ != MR_OK) {                                                             \
            test_fail(__FILE__, __LINE__, "%s returned %d: %s", #call, rc_, (err)->msg); \
            return;                                                                     \
        }                                                                               \
    } while (0)

#define SKIP(...)                \
    do {                         \
        test_skip(__VA_ARGS__);  \
        return;                  \
    } while (0)

#endif
