/* Softmax cross-entropy over rows of logits, as torch.nn.CrossEntropyLoss with
 * ignore_index and mean reduction over the rows that are not ignored. */
#ifndef MLLM4REC_NN_XENT_H
#define MLLM4REC_NN_XENT_H

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

/* The exp used inside (relative error below 1e-7 on [-87, 88]; vectorizes). */
float xent_exp(float x);

#endif
