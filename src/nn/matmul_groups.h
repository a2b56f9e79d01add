/* Products of one stored weight matrix with several groups of input rows (the
 * images of a vision batch), where each group must get exactly the numbers it
 * gets alone. BLAS's sgemm may pick other kernels for another row count (seen
 * here with OpenBLAS: 16 and 48 rows of a 192-column product differ in the last
 * bits), so a group is never merged with another into one sgemm; what the
 * groups share is the weight tile, dequantized once for all of them. */
#ifndef MLLM4REC_NN_MATMUL_GROUPS_H
#define MLLM4REC_NN_MATMUL_GROUPS_H

#include <stdint.h>

#include "nn/matmul.h"

/* out[n][cols] = rows r0 .. r0 + n - 1 of W as floats (a weight tile for sgemm),
 * spread over threads when the tile is large. Bit for bit what dequantize_row
 * gives; BF16 is converted inline (a shift), since a call per value costs more
 * than the conversion when whole BF16 matrices are converted per batch. */
void matmul_dequantize_rows(const qmat *W, int64_t r0, int64_t n, float *out);

/* For g < G: y[g][T][rows] = x[g][T][cols] · Wᵀ (+ beta · y), one sgemm of T rows
 * per group and weight tile. scratch: matmul_scratch_floats(W, ...) floats (0
 * for F32). */
void matmul_groups_forward(float *y, const float *x, int64_t G, int64_t T, const qmat *W, float beta, float *scratch,
                           int64_t scratch_floats);

#endif
