/* Token embedding lookup over a stored (possibly quantized) table. */
#ifndef MLLM4REC_NN_EMBEDDING_H
#define MLLM4REC_NN_EMBEDDING_H

#include <stdint.h>

#include "nn/matmul.h"

/* out[T][d] = table[ids[t]] (table: n_vocab x d, any type qmat_row reads). */
void embedding_forward(float *out, const qmat *table, const int32_t *ids, int64_t T);
/* dtable[n_vocab][d] += dout[t] at row ids[t] (rows in position order: deterministic). */
void embedding_backward(float *dtable, const float *dout, const int32_t *ids, int64_t T, int d);

#endif
