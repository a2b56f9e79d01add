/* libFuzzer target: the line reader over arbitrary (possibly gzip) bytes. */
#include <stdint.h>
#include "fuzz_util.h"
#include "mllm4rec/lines.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_file(data, size, path, sizeof path);
    if (fd < 0) return 0;
    mr_error e;
    mr_lines L;
    if (mr_lines_open(&L, path, &e) == MR_OK) {
        char *line;
        size_t len;
        while (mr_lines_next(&L, &line, &len, &e) == 1) {
        }
        mr_lines_close(&L);
    }
    close(fd);
    return 0;
}
