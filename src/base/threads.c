/* The one thread setter: OpenMP regions and OpenBLAS calls use the same count. */
#include "mllm4rec/base.h"

#include <cblas.h>
#include <omp.h>

void mr_set_threads(int n) {
    if (n < 1) return;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}
