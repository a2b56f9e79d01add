/* One weight matrix times T activation rows, in GOP/s (2 * rows * cols * T / s):
 * the integer path of matmul_forward (8-bit activations) for Q4_0 and Q8_0 at
 * the Llama-2-7B shapes 4096x4096, 11008x4096 and 4096x11008, beside one fp32
 * sgemm of the same matrix already dequantized (the best the float path can do,
 * conversion not counted). For kernel work: seconds, not minutes. "cpu-based"
 * divides by CPU seconds per thread instead of wall seconds: on a shared machine
 * it is the steadier figure (OpenBLAS's threads may spin, which it then counts).
 *
 * A third figure is matmul_forward_float on the quantized matrix: dequantize a
 * tile, then sgemm, conversion counted: the path the integer kernels replace.
 *
 * Environment: MLLM4REC_BENCH_THREADS (default 2), MLLM4REC_BENCH_QDOT_T (512),
 * MLLM4REC_BENCH_QDOT_TYPES (default "q4_0,q8_0"), MLLM4REC_BENCH_QDOT_SHAPES
 * ("7b", the default, or "smollm2": 576x576, 192x576, 1536x576, 576x1536). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mllm4rec/base.h"
#include "nn/matmul.h"
#include "nn/qdot.h"
#include "nn/quant.h"

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* best wall seconds of reps runs; *cpu: the CPU seconds of that run over the
 * thread count (what the wall time would be on otherwise idle cores) */
static double best_of(int reps, int float_path, float *y, const float *x, int64_t T, const qmat *W, float *scratch,
                      int64_t sf, double *cpu) {
    double best = 1e30;
    *cpu = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = mr_now(), c0 = cpu_now();
        if (float_path)
            matmul_forward_float(y, x, T, W, 0.0f, scratch, sf);
        else
            matmul_forward(y, x, T, W, 0.0f, scratch, sf);
        double dt = mr_now() - t0, dc = (cpu_now() - c0) / omp_get_max_threads();
        if (dt < best) best = dt;
        if (dc < *cpu) *cpu = dc;
    }
    return best;
}

int main(void) {
    const char *th = getenv("MLLM4REC_BENCH_THREADS"), *tt = getenv("MLLM4REC_BENCH_QDOT_T");
    const char *ty = getenv("MLLM4REC_BENCH_QDOT_TYPES");
    omp_set_num_threads(th ? atoi(th) : 2);
    const int64_t T = tt ? atoi(tt) : 512;
    char types[64];
    snprintf(types, sizeof types, "%s", ty ? ty : "q4_0,q8_0");
    const char *sh = getenv("MLLM4REC_BENCH_QDOT_SHAPES");
    const int small = sh && !strcmp(sh, "smollm2");
    const int64_t shapes_7b[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
    const int64_t shapes_small[][2] = {{576, 576}, {192, 576}, {1536, 576}, {576, 1536}};
    const int64_t(*shapes)[2] = small ? shapes_small : shapes_7b;
    const int n_shapes = small ? 4 : 3;
    mr_rng rng;
    mr_rng_seed(&rng, 1);
    printf("| type | rows x cols | T | integer path GOP/s (cpu-based) | fp32 sgemm, pre-dequantized, GOP/s (cpu-based) "
           "| ratio (cpu-based) | dequantize + sgemm GOP/s (cpu-based) |\n");
    printf("|---|---|---|---|---|---|---|\n");
    for (char *tok = strtok(types, ","); tok; tok = strtok(NULL, ",")) {
        ggml_type t;
        if (ggml_type_from_name(tok, &t) || !quant_supported(t)) return fprintf(stderr, "unknown type %s\n", tok), 1;
        for (int s = 0; s < n_shapes; s++) {
            const int64_t rows = shapes[s][0], cols = shapes[s][1];
            const size_t rb = quant_row_bytes(t, cols);
            uint8_t *w = malloc(rb * (size_t)rows);
            float *wf = malloc((size_t)(rows * cols) * sizeof *wf), *x = malloc((size_t)(T * cols) * sizeof *x);
            float *y = malloc((size_t)(T * rows) * sizeof *y);
            for (int64_t i = 0; i < rows * cols; i++) wf[i] = 0.02f * (float)mr_rng_normal(&rng);
            for (int64_t i = 0; i < T * cols; i++) x[i] = (float)mr_rng_normal(&rng);
            for (int64_t r = 0; r < rows; r++) quantize_row_ref(t, wf + r * cols, w + (size_t)r * rb, cols);
            for (int64_t r = 0; r < rows; r++) dequantize_row(t, w + (size_t)r * rb, wf + r * cols, cols);
            qmat W = {t, rows, cols, w, 0}, Wf = {GGML_TYPE_F32, rows, cols, wf, 0};
            int64_t sf = matmul_scratch_floats(&W, 8 << 20, omp_get_max_threads());
            float *scratch = malloc((size_t)sf * sizeof *scratch);
            const double ops = 2.0 * (double)rows * (double)cols * (double)T;
            const int reps = small ? 9 : 3;
            double ci, cf, cd;
            double ti = best_of(reps, 0, y, x, T, &W, scratch, sf, &ci);
            double tf = best_of(reps, 0, y, x, T, &Wf, NULL, 0, &cf);
            double td = best_of(reps, 1, y, x, T, &W, scratch, sf, &cd);
            printf("| %s | %lldx%lld | %lld | %.1f (%.1f) | %.1f (%.1f) | %.2f (%.2f) | %.1f (%.1f) |\n", tok,
                   (long long)rows, (long long)cols, (long long)T, ops / ti * 1e-9, ops / ci * 1e-9, ops / tf * 1e-9,
                   ops / cf * 1e-9, tf / ti, cf / ci, ops / td * 1e-9, ops / cd * 1e-9);
            fflush(stdout);
            free(w), free(wf), free(x), free(y), free(scratch);
        }
    }
    double la[3];
    if (getloadavg(la, 3) == 3) printf("load average: %.2f %.2f %.2f (a busy machine gives low figures)\n", la[0], la[1], la[2]);
    return 0;
}
