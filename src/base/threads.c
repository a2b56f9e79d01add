/* The one thread setter: OpenMP regions and OpenBLAS calls use the same count. */
#include "mllm4rec/base.h"

#include <cblas.h>
#include <omp.h>

void mr_set_threads(int n) {
    if (n < 1) return;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

void mr_threads_single(mr_threads_saved *saved, int enable) {
    saved->active = enable && omp_get_max_threads() > 1;
    if (!saved->active) return;
    saved->omp = omp_get_max_threads();
    saved->blas = openblas_get_num_threads();
    mr_set_threads(1);
}

void mr_threads_restore(const mr_threads_saved *saved) {
    if (!saved->active) return;
    omp_set_num_threads(saved->omp);
    openblas_set_num_threads(saved->blas);
}
