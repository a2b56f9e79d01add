/* Softmax cross-entropy over rows of logits, as torch.nn.CrossEntropyLoss with
 * ignore_index and mean reduction over the rows that are not ignored. */
#ifndef MLLM4REC_NN_XENT_H
#define MLLM4REC_NN_XENT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

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
 * through XENT_TABLE_SLOTS accumulators in parallel, and the results are the
 * same bits for any thread count. scratch: xent_table_scratch_floats(V, d). */
#define XENT_TABLE_ROWS 64
#define XENT_TABLE_SLOTS 4
size_t xent_table_scratch_floats(int V, int d);
double xent_table(float *dx, float *dtable, float *dbias, float *row_loss, const float *x, const int *labels, int M,
                  const float *table, const float *bias, int V, int d, float grad_scale, float *scratch);

/* exp(x), written so loops over it vectorize (no libm call): the Cephes range
 * reduction x = n ln2 + r and a degree-6 polynomial for e^r, 2^n put together
 * from bits, x clamped to [-87, 88]. Relative error below 1e-7 there. Used by
 * the softmax here and by the retrievers' element-wise activations. */
static inline float nn_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float t = x * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: rounds to an integer */
    float n = t - 12582912.0f;
    int32_t ti;
    memcpy(&ti, &t, 4);
    float r = x - n * 0.693359375f - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = (ti - 0x4B400000 + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

/* The exp used inside, out of line (nn_exp). */
float xent_exp(float x);

#endif
