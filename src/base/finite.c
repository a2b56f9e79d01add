/* Finiteness of loaded weights. */
#include <math.h>

#include "mllm4rec/base.h"

int mr_check_finite(const float *x, size_t n, const char *file, const char *tensor, mr_error *e) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return mr_fail(e, MR_ERR_INPUT, "%s: tensor %s holds %s at element %zu: damaged weights", file, tensor,
                           isnan(x[i]) ? "NaN" : "Inf", i);
    return MR_OK;
}
