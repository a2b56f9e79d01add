/* Softmax cross-entropy over rows of logits, as torch.nn.CrossEntropyLoss with
 * ignore_index and mean reduction over the rows that are not ignored. */
#ifndef MLLM4REC_NN_XENT_H
#define MLLM4REC_NN_XENT_H

#include <stddef.h>

#include "nn/simd_exp.h"

/* logits [N, V] (row stride ld, 0 = V); labels [N]. Rows whose label equals
 * ignore_index do not count. Returns the mean loss over counted rows (0 when
 * none) and stores their number in *n_counted (may be NULL).
 * When dlogits is not NULL it receives d(mean loss)/d(logits) [N, V] (stride ld),
 * zero on ignored rows; dlogits may equal logits (computed in place).
 * row_loss [N] (required, caller's scratch) receives each row's loss (0 when ignored).
 * Per-row work is threaded; the sum runs in row order (deterministic). */
double xent_forward_backward(float *dlogits, float *row_loss, const float *logits, int ld,
                             const int *labels, int N, int V, int ignore_index, int *n_counted);

/* The same for a slice of a larger batch: d(loss)/d(logits) = (softmax - onehot) *
 * grad_scale (use 1 / counted rows of the whole batch for a mean); returns the sum of
 * the counted rows' losses. */
double xent_rows(float *dlogits, float *row_loss, const float *logits, int ld, const int *labels, int N, int V,
                 int ignore_index, float grad_scale);

/* Softmax cross-entropy over every row of a (tied) output table, forward and
 * backward in one call, for M rows x [M, d] with labels [M] (-1 = not counted):
 *   logits [M, V] = x tableᵀ + bias          (table [V, d], bias [V] or NULL)
 *   row_loss [M]  = each row's loss; returns their sum in row order
 *   dx [M, d]     = grad_scale (softmax - onehot) table       (OVERWRITTEN; NULL: none)
 *   dtable [V, d] += grad_scale (softmax - onehot)ᵀ x         (NULL: none)
 *   dbias [V]     += grad_scale Σ_rows (softmax - onehot)     (NULL: none)
 * The [M, V] logits are never formed whole: chunks of XENT_TABLE_ROWS rows run
 * through XENT_TABLE_SLOTS accumulators in parallel, each chunk's three products
 * on its slot's thread (nn/gemm_f32.h), and the results are the same bits for any
 * thread count. scratch: xent_table_scratch_floats(V, d). */
#define XENT_TABLE_ROWS 64
#define XENT_TABLE_SLOTS 4
size_t xent_table_scratch_floats(int V, int d);
double xent_table(float *dx, float *dtable, float *dbias, float *row_loss, const float *x, const int *labels, int M,
                  const float *table, const float *bias, int V, int d, float grad_scale, float *scratch);

/* The exp used inside, out of line (nn_exp). */
float xent_exp(float x);

#endif
