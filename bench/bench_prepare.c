/* Benchmark: `mllm4rec prepare` on a generated interactions file of the size of the
 * full Amazon 2014 Beauty ratings (2,023,070 rows, 1.21 M users, 249 k items,
 * heavy-tailed like real data). Prints wall seconds and the peak resident memory of
 * the prepare process (getrusage ru_maxrss), as JSON and as a table.
 *   build/bench/bench_prepare [ROWS]      (MLLM4REC_BIN overrides build/mllm4rec) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "mllm4rec/base.h"

int main(int argc, char **argv) {
    long long rows = argc > 1 ? atoll(argv[1]) : 2023070;
    long long n_users = rows * 1210271 / 2023070, n_items = rows * 249274 / 2023070;
    if (rows <= 0 || n_users < 1 || n_items < 1) {
        fprintf(stderr, "usage: bench_prepare [ROWS >= 10]\n");
        return 2;
    }
    const char *bin = getenv("MLLM4REC_BIN");
    if (!bin || !*bin) bin = "build/mllm4rec";
    char dir[] = "/tmp/mllm4rec-bench-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 3;
    }
    char inter[256], titles[256], out[256];
    snprintf(inter, sizeof inter, "%s/interactions.tsv.gz", dir);
    snprintf(titles, sizeof titles, "%s/titles.tsv", dir);
    snprintf(out, sizeof out, "%s/out", dir);

    /* generate: users and items drawn from skewed distributions (r^2, r^3) */
    double t0 = mr_now();
    mr_rng rng;
    mr_rng_seed(&rng, 2024);
    gzFile g = gzopen(inter, "wb1");
    FILE *tf = fopen(titles, "w");
    if (!g || !tf) {
        fprintf(stderr, "cannot write in %s\n", dir);
        return 3;
    }
    gzprintf(g, "user_id\titem_id\ttimestamp\n");
    for (long long k = 0; k < rows; k++) {
        double a = mr_rng_uniform(&rng), b = mr_rng_uniform(&rng);
        long long u = (long long)(a * a * (double)n_users), i = (long long)(b * b * b * (double)n_items);
        long long ts = 946684800 + (long long)mr_rng_below(&rng, 500000000ull);
        gzprintf(g, "A%07llX\tB%09lld\t%lld\n", u * 2654435761ull % 0xFFFFFFFull, i, ts);
    }
    gzclose(g);
    fprintf(tf, "item_id\ttitle\n");
    for (long long i = 0; i < n_items; i++)
        if (i % 50 != 7) fprintf(tf, "B%09lld\tGenerated product %lld, size %lld ml\n", i, i, i % 500);
    fclose(tf);
    double gen_s = mr_now() - t0;

    /* run prepare as a child so its own peak memory is measured */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s prepare --format interactions --interactions %s --titles %s --out %s > %s/stdout.txt",
             bin, inter, titles, out, dir);
    double t1 = mr_now();
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) < 0) {
        perror("fork/wait");
        return 3;
    }
    double prep_s = mr_now() - t1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "prepare failed (status %d): %s\n", status, cmd);
        return 1;
    }
    char path[300], line[512];
    snprintf(path, sizeof path, "%s/stdout.txt", dir);
    FILE *so = fopen(path, "r");
    char kcore[256] = "";
    while (so && fgets(line, sizeof line, so))
        if (!strncmp(line, "| k-core", 8)) snprintf(kcore, sizeof kcore, "%.*s", (int)strcspn(line, "\n"), line);
    if (so) fclose(so);
    struct stat st;
    long long in_bytes = stat(inter, &st) == 0 ? (long long)st.st_size : -1;
    /* ru_maxrss of a shell child is the larger of sh and prepare: prepare */
    double rss_mb = (double)ru.ru_maxrss / 1024.0;
    printf("{\"bench\": \"prepare\", \"rows\": %lld, \"input_gz_bytes\": %lld, \"generate_s\": %.2f, "
           "\"prepare_s\": %.3f, \"rows_per_s\": %.0f, \"peak_rss_mb\": %.1f}\n",
           rows, in_bytes, gen_s, prep_s, (double)rows / prep_s, rss_mb);
    printf("| rows | prepare s | rows/s | peak RSS MB |\n|---:|---:|---:|---:|\n");
    printf("| %lld | %.2f | %.0f | %.1f |\n", rows, prep_s, (double)rows / prep_s, rss_mb);
    printf("prepare's k-core row (users, items, interactions): %s\n", kcore);
    printf("(no peer measured: the reference's pandas preprocessing is not installed here)\n");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return 0;
}
