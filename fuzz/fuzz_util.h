/* Helpers shared by the fuzz targets.
 *
 * Most parsers read files by path, so an input is put in an in-memory file and its
 * /proc/self/fd path handed over (fuzz_file), or, for readers of several files or
 * of a folder, split into parts written to a scratch folder (fuzz_scratch_dir,
 * fuzz_split, fuzz_write, fuzz_rm_tree). The scratch folder is made once per
 * process on /dev/shm when it exists (the writers fsync; tmpfs makes that free). */
#ifndef MLLM4REC_FUZZ_UTIL_H
#define MLLM4REC_FUZZ_UTIL_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static inline int fuzz_file(const uint8_t *data, size_t size, char *path, size_t pathsz) {
    int fd = memfd_create("fuzz", 0);
    if (fd < 0) return -1;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return -1;
    }
    snprintf(path, pathsz, "/proc/self/fd/%d", fd);
    return fd;
}

/* A private scratch folder for this process (made on first use; aborts when it
 * cannot be made: a fuzz run without one would test nothing). */
static char fuzz_scratch[256];
static inline void fuzz_scratch_cleanup(void);
static inline const char *fuzz_scratch_dir(void) {
    char *dir = fuzz_scratch;
    if (!dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(dir, sizeof fuzz_scratch, "%s/mllm4rec-fuzz-XXXXXX", base);
        if (!mkdtemp(dir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fuzz_scratch_cleanup);
    }
    return dir;
}

/* Removes path and everything below it (no symlinks are followed). */
static inline void fuzz_rm_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *de;
            while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
                char sub[1400];
                if ((size_t)snprintf(sub, sizeof sub, "%.1000s/%.255s", path, de->d_name) < sizeof sub) fuzz_rm_tree(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static inline void fuzz_scratch_cleanup(void) {
    if (fuzz_scratch[0]) fuzz_rm_tree(fuzz_scratch);
}

/* Writes size bytes to dir/name; 0 on success. */
static inline int fuzz_write(const char *dir, const char *name, const uint8_t *data, size_t size) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = (size == 0 || fwrite(data, 1, size, f) == size);
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* Splits data at each FUZZ_SEP byte into at most max parts (the last part keeps
 * any further separators). Returns the number of parts (>= 1). */
#define FUZZ_SEP 0x1e /* ASCII record separator: the seeds use it between files */
typedef struct fuzz_part {
    const uint8_t *p;
    size_t n;
} fuzz_part;
static inline int fuzz_split(const uint8_t *data, size_t size, fuzz_part *parts, int max) {
    int k = 0;
    size_t start = 0;
    for (size_t i = 0; i < size && k < max - 1; i++) {
        if (data[i] == FUZZ_SEP) {
            parts[k++] = (fuzz_part){data + start, i - start};
            start = i + 1;
        }
    }
    parts[k++] = (fuzz_part){data + start, size - start};
    return k;
}

#endif
