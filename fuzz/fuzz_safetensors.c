/* libFuzzer target: any bytes given to the safetensors reader give MR_OK or an error. */
#include <stdint.h>
#include <stdlib.h>
#include "fuzz_util.h"
#include "mllm4rec/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_file(data, size, path, sizeof path);
    if (fd < 0) return 0;
    mr_error e;
    st_file f;
    if (st_open(&f, path, &e) == MR_OK) {
        for (int i = 0; i < f.n_tensors; i++) {
            int64_t n = st_numel(&f.tensors[i]);
            if (n > 0 && n < (1 << 20)) {
                float *buf = malloc((size_t)n * sizeof(float));
                if (buf) st_read_f32(&f.tensors[i], buf, n, &e);
                free(buf);
            }
        }
        st_close(&f);
    }
    close(fd);
    return 0;
}
