/* What the recurrent retrievers (GRU4Rec, NARM) share: the packed batch without its
 * padding-input rows, keyed dropout masks, the reference initialisations and
 * LlamaRec's weight-decay rule. Internal to src/retriever. */
#ifndef MLLM4REC_RETRIEVER_RNN_COMMON_H
#define MLLM4REC_RETRIEVER_RNN_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "retriever/arch.h"
#include "retriever/common.h"


/* The batch a recurrent model runs on: every row of b except a sequence's first row
 * when its input is the padding item 0 (the first label of a window that starts at
 * the user's first item). Neither reference ever predicts a sequence's first item:
 * GRU4Rec's official code feeds item i to predict item i + 1, and NARM's
 * RNNTrainDataset builds prefixes of at least one item. So such a row is neither a
 * recurrence step nor scored, and the sequence starts from the zero state at its
 * first real item, as packing the reference's padded input does.
 * start [n_seqs + 1], tok, lab, seq, pos [n_rows]: pos is the row's index within its
 * sequence in b (what keys its dropout), seq the sequence. */
typedef struct rnn_rows {
    int n_seqs, n_rows;
    int *start;
    int32_t *tok, *lab;
    int *seq, *pos;
} rnn_rows;

static inline void rnn_rows_build(rnn_rows *c, const rt_batch *b) {
    int n = 0;
    c->n_seqs = b->n_seqs;
    c->start[0] = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        for (int r = b->seq_start[s]; r < b->seq_start[s + 1]; r++) {
            if (r == b->seq_start[s] && b->tokens[r] <= 0)
                continue;
            c->tok[n] = b->tokens[r];
            c->lab[n] = b->labels ? b->labels[r] : 0;
            c->seq[n] = s;
            c->pos[n] = r - b->seq_start[s];
            n++;
        }
        c->start[s + 1] = n;
    }
    c->n_rows = n;
}

/* The scratch GRU4Rec and NARM share, the FIRST member of their acts (so that
 * rnn_acts_free frees either): the compact rows, the labelled ones among them
 * (scored [R]), the labels of one logits block (lab [CH]) and the one aligned
 * allocation (mem) that holds every buffer of the acts. */
typedef struct rnn_scratch {
    rnn_rows c;
    int *scored;
    int *lab;
    void *mem;
} rnn_scratch;

/* The ints rnn_scratch_take carves for R rows, S sequences and logits blocks of CH rows. */
static inline size_t rnn_scratch_ints(size_t R, size_t S, size_t CH) { return (S + 1) + 5 * R + CH; }

/* Points x's rows, scored and lab into the rnn_scratch_ints(R, S, CH) ints at i. */
static inline void rnn_scratch_take(rnn_scratch *x, int *i, size_t R, size_t S, size_t CH) {
    x->c.start = i;
    i += S + 1;
    x->c.tok = (int32_t *)i;
    x->c.lab = (int32_t *)(i + R);
    x->c.seq = i + 2 * R;
    x->c.pos = i + 3 * R;
    x->scored = i + 4 * R;
    x->lab = i + 5 * R;
    (void)CH;
}

/* rt_arch.acts_free of GRU4Rec and NARM. */
static inline void rnn_acts_free(void *acts) {
    rnn_scratch *x = acts;
    if (!x)
        return;
    free(x->mem);
    free(x);
}

/* The start of loss_backward: zeroes m's gradients, builds the compact rows of b
 * and lists the labelled ones in x->scored; returns how many there are. */
static inline int rnn_loss_rows(rt_model *m, rnn_scratch *x, const rt_batch *b) {
    memset(m->grads, 0, m->n_params * sizeof(float));
    rnn_rows_build(&x->c, b);
    int n_scored = 0;
    for (int i = 0; i < x->c.n_rows; i++)
        if (x->c.lab[i] > 0)
            x->scored[n_scored++] = i;
    return n_scored;
}

/* mask [n_rows, C] of 0 or 1 / (1 - p) for dropout site `site`: each row's pattern
 * depends only on (key, site, the sequence's example index, the row's position), so
 * masks are the same for any thread count, batch composition or call order. */
static inline void rnn_dropout_mask(float *mask, const rnn_rows *c, const rt_batch *b, int C, float p,
                                    uint64_t key, uint64_t site) {
    const uint64_t k = mr_mix64(key ^ mr_mix64(site));
    const float keep_scale = 1.0f / (1.0f - p);
    const uint32_t threshold = (uint32_t)((double)p * 4294967296.0);
#pragma omp parallel for schedule(static) if ((long)c->n_rows * C > 65536)
    for (int i = 0; i < c->n_rows; i++) {
        const int s = c->seq[i];
        const uint64_t ex = b->example ? (uint64_t)b->example[s] : (uint64_t)s;
        const uint32_t rk = (uint32_t)(mr_mix64(k ^ mr_mix64(ex * 0x632be59bd9b4e019ULL + (uint64_t)c->pos[i])) >> 32);
        float *m = mask + (size_t)i * C;
        rt_dropout_row32(m, C, rk, threshold, keep_scale);
    }
}

#endif
