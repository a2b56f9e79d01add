/* libFuzzer target: any bytes given to the image decoder (JPEG, PNG, WebP by
 * magic) give MR_OK or an error, never a crash; decoded images also go through
 * the Pillow-exact resize. */
#include <stdint.h>
#include <stdlib.h>
#include "mllm4rec/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mr_error e;
    mr_image img, small;
    if (mr_image_decode(data, size, "fuzz", &img, &e) != MR_OK) return 0;
    if ((int64_t)img.width * img.height <= (1 << 20) &&
        mr_image_resize(&img, 7, 5, MR_RESAMPLE_BICUBIC, &small, &e) == MR_OK)
        mr_image_free(&small);
    mr_image_free(&img);
    return 0;
}
