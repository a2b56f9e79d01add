/* Fuzz targets parse files by path, so each input is put in an in-memory file
 * and its /proc/self/fd path handed to the parser. */
#ifndef MLLM4REC_FUZZ_UTIL_H
#define MLLM4REC_FUZZ_UTIL_H

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

static int fuzz_file(const uint8_t *data, size_t size, char *path, size_t pathsz) {
    int fd = memfd_create("fuzz", 0);
    if (fd < 0) return -1;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return -1;
    }
    snprintf(path, pathsz, "/proc/self/fd/%d", fd);
    return fd;
}

#endif
