/* libFuzzer target: any bytes given to the GGUF reader give MR_OK or an error. */
#include <stdint.h>
#include "fuzz_util.h"
#include "mllm4rec/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_file(data, size, path, sizeof path);
    if (fd < 0) return 0;
    mr_error e;
    gguf_file g;
    if (gguf_open(&g, path, &e) == MR_OK) {
        for (uint64_t i = 0; i < g.n_tensors; i++) {
            const uint8_t *p = g.tensors[i].data;
            volatile uint8_t sink = g.tensors[i].nbytes ? p[g.tensors[i].nbytes - 1] : 0; /* extent must be mapped */
            (void)sink;
        }
        gguf_close(&g);
    }
    close(fd);
    return 0;
}
