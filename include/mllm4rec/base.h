/* Base services every module uses: errors, allocation, files, hashing, randomness,
 * time, logging and progress. Library code reports failures through mr_error and
 * never exits or prints to stdout. */
#ifndef MLLM4REC_BASE_H
#define MLLM4REC_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Status codes double as the CLI's exit codes (DESIGN section 4). */
enum {
    MR_OK = 0,
    MR_ERR_INPUT = 1,    /* bad input: missing or malformed file, mismatching model */
    MR_ERR_USAGE = 2,    /* bad flags or arguments */
    MR_ERR_INTERNAL = 3  /* out of memory, failed write, a bug */
};

typedef struct mr_error {
    int code;
    char msg[2048];
} mr_error;

#if defined(__GNUC__)
#define MR_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MR_PRINTF(a, b)
#endif

/* Sets the error (when e is not NULL) and returns code, so callers can write
 * `return mr_fail(e, MR_ERR_INPUT, "%s:%d: expected ...", path, line);`. */
int mr_fail(mr_error *e, int code, const char *fmt, ...) MR_PRINTF(3, 4);
/* Prepends context ("loading model X: ") to an error already set. */
void mr_error_prefix(mr_error *e, const char *fmt, ...) MR_PRINTF(2, 3);
void mr_error_clear(mr_error *e);

/* Allocation that reports failure as MR_ERR_INTERNAL instead of crashing. */
void *mr_alloc(size_t n, mr_error *e);
void *mr_calloc(size_t count, size_t size, mr_error *e);
void *mr_realloc(void *p, size_t n, mr_error *e);
char *mr_strdup(const char *s, mr_error *e);
/* 64-byte aligned allocation for SIMD and BLAS buffers; release with free(). */
void *mr_alloc_aligned(size_t n, mr_error *e);

/* ---- files ---- */
int mr_read_file(const char *path, char **data, size_t *len, mr_error *e); /* NUL-terminated */
int mr_file_exists(const char *path);
int mr_is_dir(const char *path);
int mr_mkdir_p(const char *path, mr_error *e);
/* Joins a directory and a name into a new string (caller frees). */
char *mr_path_join(const char *dir, const char *name, mr_error *e);
/* The last component of a path without a trailing slash (static buffer). */
const char *mr_path_basename(const char *path, char *buf, size_t bufsz);

/* Atomic file writing: data goes to "<path>.tmp.<pid>" in the same folder, then
 * fflush + fsync + rename on commit. Abort (or a failed commit) removes the temp, so
 * the old file at path (if any) stays whole. A failed write (full disk, quota, I/O
 * error) is MR_ERR_INPUT (the environment, not a bug) with the path and strerror:
 * writers write to af.f freely and learn of a failure at commit, or stop early
 * (ferror(af.f)) and return mr_atomic_fail. */
typedef struct mr_atomic_io mr_atomic_io; /* the stream's file descriptor and first errno */
typedef struct mr_atomic_file {
    FILE *f;
    char *tmp_path;
    char *final_path;
    mr_atomic_io *io;
} mr_atomic_file;
int mr_atomic_open(mr_atomic_file *af, const char *path, mr_error *e);
int mr_atomic_commit(mr_atomic_file *af, mr_error *e);
void mr_atomic_abort(mr_atomic_file *af);
/* Appends len bytes to path (created when absent) in one write(2) loop; a failed write
 * cuts the file back to its old size, so a log never ends in half a line. *size_out
 * (may be NULL) receives the new size. Errors as above: MR_ERR_INPUT, path, strerror. */
int mr_append_file(const char *path, const void *data, size_t len, long *size_out, mr_error *e);
/* A stdio stream that appends lines to path (created when absent): a failed write cuts
 * the file back to the end of its last complete line (or removes the file it created),
 * so that a line is either all there or absent; the failing fflush/fprintf leaves
 * errno set to the cause, and the stream fails from then on. Close with fclose. */
FILE *mr_append_open(const char *path, mr_error *e);
/* Aborts after a failed write and sets "PATH: cannot write: <strerror>"; returns MR_ERR_INPUT. */
int mr_atomic_fail(mr_atomic_file *af, mr_error *e);
int mr_write_file_atomic(const char *path, const void *data, size_t len, mr_error *e);

/* ---- folder locks ----
 * One writer per folder: an exclusive flock(2) on the lock file ".NAME.lock" beside the
 * folder NAME (beside, not inside, so that a folder replaced as a whole, as prepare
 * does, keeps one lock). Whether a writer is alive is decided by the lock alone: the
 * kernel drops it when the process ends, however it ends, so a leftover lock file
 * never blocks. The folder itself is not created (its parent is). *fd receives the
 * lock's descriptor: the lock holds until it is closed or the process exits. Another
 * holder gives MR_ERR_INPUT naming the folder. */
int mr_folder_lock(const char *dir, int *fd, mr_error *e);
void mr_folder_unlock(int fd);

/* ---- sha256 ---- */
typedef struct mr_sha256 {
    uint32_t state[8];
    uint64_t bytes;
    uint8_t block[64];
    size_t fill;
} mr_sha256;
void mr_sha256_init(mr_sha256 *s);
void mr_sha256_update(mr_sha256 *s, const void *data, size_t len);
void mr_sha256_final(mr_sha256 *s, uint8_t out[32]);
void mr_sha256_hex(const uint8_t digest[32], char hex[65]);
int mr_sha256_file(const char *path, char hex[65], mr_error *e);

/* ---- random numbers: xoshiro256**, seeded through splitmix64 ---- */
typedef struct mr_rng {
    uint64_t s[4];
} mr_rng;
void mr_rng_seed(mr_rng *r, uint64_t seed);
uint64_t mr_rng_u64(mr_rng *r);
uint64_t mr_rng_below(mr_rng *r, uint64_t n); /* uniform in [0, n), unbiased */
double mr_rng_uniform(mr_rng *r);             /* uniform in [0, 1) */
double mr_rng_normal(mr_rng *r);              /* standard normal (Box-Muller) */

/* splitmix64's output function (Stafford's variant 13). */
static inline uint64_t mr_mix64_finalize(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
/* The one hash behind keyed randomness (dropout masks, per-example draws):
 * splitmix64's step, the output function applied to z + 0x9e3779b97f4a7c15.
 * Inline so the loops that draw a mask per element vectorize. */
static inline uint64_t mr_mix64(uint64_t z) { return mr_mix64_finalize(z + 0x9e3779b97f4a7c15ull); }
/* Two values into one key: splitmix64's output function of a * 0x9e3779b97f4a7c15
 * + b + 0x632be59bd9b4e019 (order matters: (a, b) and (b, a) differ). */
uint64_t mr_hash2(uint64_t a, uint64_t b);

/* ---- threads ---- */
/* OpenMP's and OpenBLAS's thread counts, both; n < 1 leaves them as they are. */
void mr_set_threads(int n);
/* Runs what follows on one thread (OpenMP and OpenBLAS) until mr_threads_restore,
 * when enable is set and more than one is configured: for small models the
 * barriers of parallel regions cost more than they save. */
typedef struct mr_threads_saved {
    int omp, blas, active;
} mr_threads_saved;
void mr_threads_single(mr_threads_saved *saved, int enable);
void mr_threads_restore(const mr_threads_saved *saved);

/* ---- time, logging, progress ---- */
double mr_now(void); /* monotonic seconds */
extern int mr_log_quiet;
void mr_log(const char *fmt, ...) MR_PRINTF(1, 2); /* one line to stderr */

/* A progress line on stderr: redrawn in place on a terminal, otherwise printed
 * at most every `quiet_interval` seconds. */
typedef struct mr_progress {
    const char *label;
    double start, last_print, quiet_interval;
    int64_t total;
    int is_tty, drew;
} mr_progress;
void mr_progress_start(mr_progress *p, const char *label, int64_t total);
/* extra: optional text such as "loss 3.21"; may be NULL */
void mr_progress_update(mr_progress *p, int64_t done, const char *extra);
void mr_progress_end(mr_progress *p);

/* ---- half precision: IEEE f16 and bfloat16, round to nearest even ---- */
float mr_f16_to_f32(uint16_t h);
uint16_t mr_f32_to_f16(float f);
/* n values at a time (8 per instruction with F16C), the same bits as one by one. */
void mr_f32_to_f16_row(uint16_t *dst, const float *src, int64_t n);
void mr_f16_to_f32_row(float *dst, const uint16_t *src, int64_t n);
float mr_bf16_to_f32(uint16_t h);
uint16_t mr_f32_to_bf16(float f);
/* The portable versions (what the above do without F16C); for tests. */
float mr_f16_to_f32_soft(uint16_t h);
uint16_t mr_f32_to_f16_soft(float f);

/* ---- weights ---- */
/* MR_OK when every value is finite, else MR_ERR_INPUT naming the file, the tensor and
 * the element: NaN or Inf in loaded weights would turn every score into NaN and every
 * metric into 0 without a word. */
int mr_check_finite(const float *x, size_t n, const char *file, const char *tensor, mr_error *e);

/* ---- text ---- */
int mr_utf8_valid(const char *s, size_t len);
/* Parses a whole string as an integer / float; 0 on success. */
int mr_parse_i64(const char *s, int64_t *out);
int mr_parse_double(const char *s, double *out);

#endif
