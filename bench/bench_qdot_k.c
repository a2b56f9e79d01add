/* The K-quant integer products (src/nn/qdot_k.c) on one thread: GOP/s of y = x Wᵀ
 * for W of 4096 x 4096 and 11008 x 4096 (Llama-2-7B's attention and FFN shapes) in
 * Q4_K, Q5_K and Q6_K, with T = 512 activation rows (prefill) and T = 1 (generation),
 * beside the path the engine took before these kernels: dequantize_row into an fp32 tile
 * of LLM_TILE_FLOATS (8M floats, as src/llm/model_forward.c) and cblas_sgemm, or for
 * one row dequantize_row + cblas_sdot per weight row (src/nn/matmul.c before issue 11).
 *
 * Ours includes quantizing the activations to Q8_K (also shown on its own) and walks
 * the weights in tiles of QDOT_BENCH_ROWS rows (default 64) x all T rows, the shape of
 * call matmul.c is expected to make. A GOP is 1e9 multiply-adds counted as two ops.
 *
 * The machine is shared: beside wall-clock GOP/s the bench reports GOP per second of
 * this thread's CPU time ("cpu"), which a busy machine disturbs less. Environment:
 * MLLM4REC_BENCH_REPEAT (default 3, best of), MLLM4REC_BENCH_QUICK=1 (4096 x 4096 only). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mllm4rec/base.h"
#include "nn/qdot.h"
#include "nn/qdot_k.h"
#include "nn/quant.h"

#define QK_K 256
#define BASE_TILE_FLOATS (8 << 20)

static double thread_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

typedef struct {
    double wall, cpu;
} timing;

typedef void (*run_fn)(void *ctx);

static timing best_of(int repeat, run_fn f, void *ctx) {
    timing best = {1e30, 1e30};
    for (int i = 0; i < repeat; i++) {
        const double w0 = mr_now(), c0 = thread_cpu();
        f(ctx);
        const double w = mr_now() - w0, c = thread_cpu() - c0;
        if (w < best.wall) best.wall = w;
        if (c < best.cpu) best.cpu = c;
    }
    return best;
}

typedef struct {
    ggml_type type;
    qdot_tile_fn tile;
    int rows, tile_rows;
    int64_t cols, T;
    const uint8_t *w;
    size_t rb;
    const float *x;
    blk_q8_K *xq;
    float *y, *scratch;
} problem;

static void run_quantize(void *p_) {
    problem *p = p_;
    for (int64_t t = 0; t < p->T; t++) qdot_quantize_row_q8_K(p->x + t * p->cols, p->xq + t * (p->cols / QK_K), p->cols);
}

static void run_ours(void *p_) {
    problem *p = p_;
    run_quantize(p);
    const size_t xrb = (size_t)(p->cols / QK_K) * sizeof(blk_q8_K);
    for (int r0 = 0; r0 < p->rows; r0 += p->tile_rows) {
        const int n = p->rows - r0 < p->tile_rows ? p->rows - r0 : p->tile_rows;
        p->tile(p->y + r0, p->rows, p->w + (size_t)r0 * p->rb, p->rb, n, (const uint8_t *)p->xq, xrb, (int)p->T,
                p->cols, 0.0f);
    }
}

static void run_dequant_sgemm(void *p_) {
    problem *p = p_;
    const int64_t cols = p->cols;
    if (p->T == 1) {
        for (int r = 0; r < p->rows; r++) {
            dequantize_row(p->type, p->w + (size_t)r * p->rb, p->scratch, cols);
            p->y[r] = cblas_sdot((int)cols, p->scratch, 1, p->x, 1);
        }
        return;
    }
    const int tile = (int)(BASE_TILE_FLOATS / cols);
    for (int r0 = 0; r0 < p->rows; r0 += tile) {
        const int n = p->rows - r0 < tile ? p->rows - r0 : tile;
        for (int r = 0; r < n; r++) dequantize_row(p->type, p->w + (size_t)(r0 + r) * p->rb, p->scratch + r * cols, cols);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)p->T, n, (int)cols, 1.0f, p->x, (int)cols, p->scratch,
                    (int)cols, 0.0f, p->y + r0, p->rows);
    }
}

typedef struct {
    const char *type;
    int rows, cols, T;
    double ours, ours_cpu, base, base_cpu, quant_share, max_rel;
} result;

int main(void) {
    omp_set_num_threads(1); /* one thread: OpenBLAS (openmp build) follows it */
    const char *rep = getenv("MLLM4REC_BENCH_REPEAT"), *quick = getenv("MLLM4REC_BENCH_QUICK");
    const int repeat = rep && atoi(rep) > 0 ? atoi(rep) : 3;
    const int rows_tile = getenv("QDOT_BENCH_ROWS") && atoi(getenv("QDOT_BENCH_ROWS")) > 0 ? atoi(getenv("QDOT_BENCH_ROWS")) : 64;
    const ggml_type types[3] = {GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
    const qdot_tile_fn tiles[3] = {qdot_tile_q4_K, qdot_tile_q5_K, qdot_tile_q6_K};
    const int shapes[2][2] = {{4096, 4096}, {11008, 4096}};
    const int Ts[2] = {512, 1};
    const int nshapes = quick && *quick == '1' ? 1 : 2;
    result res[12];
    int nres = 0;
    mr_rng rng;
    mr_rng_seed(&rng, 7);
    fprintf(stderr, "qdot_k kernels: %s; best of %d; weight tiles of %d rows\n",
            qdot_k_simd() ? "AVX2" : "portable C", repeat, rows_tile);
    for (int s = 0; s < nshapes; s++) {
        const int rows = shapes[s][0], cols = shapes[s][1];
        float *wf = malloc(sizeof(float) * (size_t)cols);
        float *x = malloc(sizeof(float) * (size_t)cols * 512);
        for (size_t i = 0; i < (size_t)cols * 512; i++) x[i] = (float)mr_rng_normal(&rng);
        float *y = malloc(sizeof(float) * (size_t)rows * 512), *y2 = malloc(sizeof(float) * (size_t)rows * 512);
        const int tile = BASE_TILE_FLOATS / cols < rows ? BASE_TILE_FLOATS / cols : rows;
        float *scratch = malloc(sizeof(float) * (size_t)tile * cols);
        blk_q8_K *xq = malloc(sizeof(blk_q8_K) * (size_t)(cols / QK_K) * 512);
        for (int k = 0; k < 3; k++) {
            const size_t rb = quant_row_bytes(types[k], cols);
            uint8_t *w = malloc(rb * (size_t)rows);
            for (int r = 0; r < rows; r++) {
                for (int i = 0; i < cols; i++) wf[i] = (float)(0.02 * mr_rng_normal(&rng));
                quantize_row_ref(types[k], wf, w + (size_t)r * rb, cols);
            }
            for (int ti = 0; ti < 2; ti++) {
                problem p = {types[k], tiles[k], rows, rows_tile, cols, Ts[ti], w, rb, x, xq, y, scratch};
                const double gop = 2.0 * rows * cols * Ts[ti] / 1e9;
                const int rp = Ts[ti] == 1 ? repeat * 10 : repeat;
                timing tq = best_of(rp, run_quantize, &p);
                timing to = best_of(rp, run_ours, &p);
                p.y = y2;
                timing tb = best_of(rp, run_dequant_sgemm, &p);
                /* both paths compute the same product: report how far apart they are */
                double num = 0, den = 0;
                for (int64_t i = 0; i < (int64_t)rows * Ts[ti]; i++) {
                    const double d = (double)y[i] - y2[i];
                    num += d * d, den += (double)y2[i] * y2[i];
                }
                result *o = &res[nres++];
                *o = (result){quant_type_name(types[k]), rows, cols, Ts[ti], gop / to.wall, gop / to.cpu, gop / tb.wall,
                              gop / tb.cpu, tq.cpu / to.cpu, sqrt(num / (den + 1e-30))};
                fprintf(stderr, "%-5s %5d x %d T %3d: ours %6.1f GOP/s (cpu %6.1f), dequantize+sgemm %6.1f (cpu %6.1f), "
                        "ratio %.2f (cpu %.2f); rel. rms difference %.1e\n",
                        o->type, rows, cols, Ts[ti], o->ours, o->ours_cpu, o->base, o->base_cpu, o->ours / o->base,
                        o->ours_cpu / o->base_cpu, o->max_rel);
            }
            free(w);
        }
        free(wf), free(x), free(y), free(y2), free(scratch), free(xq);
    }
    printf("{\"bench\": \"qdot_k\", \"threads\": 1, \"simd\": %s, \"results\": [", qdot_k_simd() ? "true" : "false");
    for (int i = 0; i < nres; i++)
        printf("%s{\"type\": \"%s\", \"rows\": %d, \"cols\": %d, \"T\": %d, \"gops\": %.1f, \"gops_cpu\": %.1f, "
               "\"dequant_sgemm_gops\": %.1f, \"dequant_sgemm_gops_cpu\": %.1f, \"q8_K_share\": %.3f, "
               "\"rel_rms_diff\": %.2e}",
               i ? ", " : "", res[i].type, res[i].rows, res[i].cols, res[i].T, res[i].ours, res[i].ours_cpu, res[i].base,
               res[i].base_cpu, res[i].quant_share, res[i].max_rel);
    printf("]}\n\n| type | W | T | ours GOP/s (cpu) | dequantize+sgemm GOP/s (cpu) | ratio (cpu) | Q8_K share |\n");
    printf("|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < nres; i++)
        printf("| %s | %d x %d | %d | %.1f (%.1f) | %.1f (%.1f) | %.2f (%.2f) | %.1f%% |\n", res[i].type, res[i].rows,
               res[i].cols, res[i].T, res[i].ours, res[i].ours_cpu, res[i].base, res[i].base_cpu, res[i].ours / res[i].base,
               res[i].ours_cpu / res[i].base_cpu, 100 * res[i].quant_share);
    double la[3];
    if (getloadavg(la, 3) == 3) printf("load average at the end: %.2f %.2f %.2f (2 cores, shared machine)\n", la[0], la[1], la[2]);
    return 0;
}
