/* One GRU layer over packed sequences, with PyTorch's equations and weight layout
 * (torch.nn.GRU / GRUCell: gates stacked r, z, n):
 *   r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
 *   z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
 *   n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
 *   h' = (1 - z) * n + z * h
 * Sequence s owns rows seq_start[s] .. seq_start[s+1]-1 (seq_start[0] = 0), in time
 * order, and starts from the zero state. The input products of all rows are one GEMM;
 * the recurrence runs row by row within a sequence, sequences in parallel (OpenMP),
 * so results do not depend on the thread count. */
#ifndef MLLM4REC_NN_GRU_H
#define MLLM4REC_NN_GRU_H

/* h [N, H]: the layer's output at every row (the state carried to the next row).
 * Saved for gru_backward: hprev [N, H] (the state entering each row, 0 at a
 * sequence's first row), gates [N, 3H] (r, z, n after their activations),
 * hn [N, H] (W_hn h + b_hn).
 * x [N, D]; w_ih [3H, D], b_ih [3H], w_hh [3H, H], b_hh [3H].
 * mask [N, H] or NULL: when given, the output and the carried state are h' * mask
 * (GRU4Rec's hidden dropout applied to the state it carries, as its official code
 * does); hprev then holds the masked state. */
void gru_forward(float *h, float *hprev, float *gates, float *hn, const float *x, const float *w_ih,
                 const float *b_ih, const float *w_hh, const float *b_hh, const float *mask,
                 const int *seq_start, int n_seqs, int D, int H);

/* Backward through time. dh [N, H] holds d(loss)/d(h) of every row on entry and is
 * used as scratch (the recurrent gradient is added into it row by row).
 * dgx, dgh [N, 3H]: scratch. Gradients ACCUMULATE (+=): dx [N, D] (may be NULL),
 * dw_ih [3H, D], db_ih [3H], dw_hh [3H, H], db_hh [3H]. x, w_*, mask and the saved
 * buffers are those of gru_forward. */
void gru_backward(float *dx, float *dw_ih, float *db_ih, float *dw_hh, float *db_hh, float *dh, float *dgx,
                  float *dgh, const float *x, const float *hprev, const float *gates, const float *hn,
                  const float *w_ih, const float *w_hh, const float *mask, const int *seq_start, int n_seqs,
                  int D, int H);

#endif
