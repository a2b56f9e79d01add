/* Replays the saved inputs of one fuzz target (built with -DFUZZ_TARGET="fuzz_x"
 * together with fuzz/fuzz_x.c by gcc, no clang or libFuzzer needed): every file of
 * fuzz/corpus/<target>/ (the minimised corpus), fuzz/seeds/<target>/ and
 * fuzz/regressions/<target>/ (inputs of past findings) goes through the target's
 * LLVMFuzzerTestOneInput once. A crash, a hang or (in the sanitizer build) a memory
 * error fails the program; no new inputs are made, so the run is quick and the same
 * every time. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Feeds every regular file of dir (in name order); returns the count, -1 when absent. */
static long replay_dir(const char *dir, long *bytes) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            names = realloc(names, cap * sizeof *names);
            if (!names) abort();
        }
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_str);
    long count = 0;
    for (size_t i = 0; i < n; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        char *data;
        size_t len;
        mr_error e;
        if (mr_file_exists(path) && mr_read_file(path, &data, &len, &e) == MR_OK) {
            LLVMFuzzerTestOneInput((const uint8_t *)data, len);
            free(data);
            count++;
            *bytes += (long)len;
        }
        free(names[i]);
    }
    free(names);
    return count;
}

TEST(replay_saved_inputs) {
    if (LLVMFuzzerInitialize) {
        int argc = 1;
        char *args[] = {(char *)FUZZ_TARGET, NULL}, **argv = args;
        LLVMFuzzerInitialize(&argc, &argv);
    }
    const char *kinds[3] = {"corpus", "seeds", "regressions"};
    long counts[3], bytes = 0;
    for (int k = 0; k < 3; k++) {
        char dir[512];
        snprintf(dir, sizeof dir, "fuzz/%s/%s", kinds[k], FUZZ_TARGET);
        counts[k] = replay_dir(dir, &bytes);
    }
    printf("  %s: %ld corpus, %ld seed and %ld regression inputs (%ld bytes) replayed\n", FUZZ_TARGET,
           counts[0] < 0 ? 0 : counts[0], counts[1] < 0 ? 0 : counts[1], counts[2] < 0 ? 0 : counts[2], bytes);
    /* every target keeps a corpus and seeds in the repository */
    CHECK_MSG(counts[0] > 0, "fuzz/corpus/%s is missing or empty", FUZZ_TARGET);
    CHECK_MSG(counts[1] > 0, "fuzz/seeds/%s is missing or empty", FUZZ_TARGET);
}

int main(void) {
    RUN(replay_saved_inputs);
    return test_summary();
}
