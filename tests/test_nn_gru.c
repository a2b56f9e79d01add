/* The GRU layer (src/nn/gru.c) against central finite differences of its forward:
 * L = sum probe . h over packed sequences of different lengths (one of a single
 * row), with and without GRU4Rec's carried-state mask; and the forward against a
 * row-by-row evaluation of PyTorch's GRUCell equations written out in double. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn/gru.h"
#include "test.h"

enum { D = 5, H = 4, G = 3 * H, NS = 3, N = 9 };
static const int seq_start[NS + 1] = {0, 4, 5, 9};

typedef struct {
    float x[N * D], w_ih[G * D], b_ih[G], w_hh[G * H], b_hh[G], mask[N * H], probe[N * H];
    float h[N * H], hprev[N * H], gates[N * G], hn[N * H];
    int use_mask;
} gru_ctx;

static void fill(float *x, int n, mr_rng *r, double s) {
    for (int i = 0; i < n; i++) x[i] = (float)(s * mr_rng_normal(r));
}

static void setup(gru_ctx *c, int use_mask) {
    mr_rng r;
    mr_rng_seed(&r, 7);
    fill(c->x, N * D, &r, 1.0);
    fill(c->w_ih, G * D, &r, 0.5);
    fill(c->b_ih, G, &r, 0.3);
    fill(c->w_hh, G * H, &r, 0.5);
    fill(c->b_hh, G, &r, 0.3);
    fill(c->probe, N * H, &r, 1.0);
    for (int i = 0; i < N * H; i++) c->mask[i] = mr_rng_uniform(&r) < 0.3 ? 0.0f : 1.0f / 0.7f;
    c->use_mask = use_mask;
}

static double loss(gru_ctx *c) {
    gru_forward(c->h, c->hprev, c->gates, c->hn, c->x, c->w_ih, c->b_ih, c->w_hh, c->b_hh,
                c->use_mask ? c->mask : NULL, seq_start, NS, D, H);
    double s = 0;
    for (int i = 0; i < N * H; i++) s += (double)c->probe[i] * c->h[i];
    return s;
}

static double fd_worst(gru_ctx *c, float *p, const float *grad, int n) {
    double worst = 0;
    for (int i = 0; i < n; i++) {
        const float keep = p[i], eps = 1e-2f;
        p[i] = keep + eps;
        double lp = loss(c);
        p[i] = keep - eps;
        double lm = loss(c);
        p[i] = keep;
        double fd = (lp - lm) / (2.0 * eps), err = fabs(fd - grad[i]) / (1.0 + fabs(grad[i]));
        if (err > worst) worst = err;
    }
    return worst;
}

static void grad_case(int use_mask) {
    gru_ctx *c = calloc(1, sizeof *c);
    setup(c, use_mask);
    loss(c);
    float dx[N * D], dw_ih[G * D], db_ih[G], dw_hh[G * H], db_hh[G], dh[N * H], dgx[N * G], dgh[N * G];
    /* gradients accumulate: start from 0.5 and take it off afterwards */
    float *acc[] = {dx, dw_ih, db_ih, dw_hh, db_hh};
    const int len[] = {N * D, G * D, G, G * H, G};
    for (int a = 0; a < 5; a++)
        for (int i = 0; i < len[a]; i++) acc[a][i] = 0.5f;
    memcpy(dh, c->probe, sizeof dh);
    gru_backward(dx, dw_ih, db_ih, dw_hh, db_hh, dh, dgx, dgh, c->x, c->hprev, c->gates, c->hn, c->w_ih,
                 c->w_hh, use_mask ? c->mask : NULL, seq_start, NS, D, H);
    for (int a = 0; a < 5; a++)
        for (int i = 0; i < len[a]; i++) acc[a][i] -= 0.5f;
    float *par[] = {c->x, c->w_ih, c->b_ih, c->w_hh, c->b_hh};
    const char *names[] = {"x", "w_ih", "b_ih", "w_hh", "b_hh"};
    for (int a = 0; a < 5; a++) {
        double err = fd_worst(c, par[a], acc[a], len[a]);
        if (err >= 2e-3) {
            free(c);
            CHECK_MSG(0, "gru %s (mask %d): worst relative error %g", names[a], use_mask, err);
        }
    }
    free(c);
}

TEST(gru_backward_finite_differences) { grad_case(0); }
TEST(gru_backward_finite_differences_masked_state) { grad_case(1); }

static double sig(double v) { return 1.0 / (1.0 + exp(-v)); }

TEST(gru_forward_matches_gru_cell_equations) {
    gru_ctx *c = calloc(1, sizeof *c);
    setup(c, 0);
    loss(c);
    double worst = 0;
    for (int s = 0; s < NS; s++) {
        double hp[H] = {0};
        for (int t = seq_start[s]; t < seq_start[s + 1]; t++) {
            double gi[G], gh[G], hnew[H];
            for (int o = 0; o < G; o++) {
                gi[o] = c->b_ih[o];
                gh[o] = c->b_hh[o];
                for (int k = 0; k < D; k++) gi[o] += (double)c->w_ih[o * D + k] * c->x[t * D + k];
                for (int k = 0; k < H; k++) gh[o] += (double)c->w_hh[o * H + k] * hp[k];
            }
            for (int k = 0; k < H; k++) {
                double r = sig(gi[k] + gh[k]), z = sig(gi[H + k] + gh[H + k]);
                double n = tanh(gi[2 * H + k] + r * gh[2 * H + k]);
                hnew[k] = (1 - z) * n + z * hp[k];
                worst = fmax(worst, fabs(hnew[k] - c->h[t * H + k]));
            }
            memcpy(hp, hnew, sizeof hp);
        }
    }
    free(c);
    CHECK_MSG(worst < 1e-5, "gru forward differs from the GRUCell equations by %g", worst);
}

TEST(gru_same_at_one_and_two_threads) {
    gru_ctx *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    setup(a, 1);
    setup(b, 1);
    int keep = omp_get_max_threads();
    omp_set_num_threads(1);
    loss(a);
    omp_set_num_threads(2);
    loss(b);
    omp_set_num_threads(keep);
    int same = !memcmp(a->h, b->h, sizeof a->h);
    free(a);
    free(b);
    CHECK(same);
}

int main(void) {
    RUN(gru_backward_finite_differences);
    RUN(gru_backward_finite_differences_masked_state);
    RUN(gru_forward_matches_gru_cell_equations);
    RUN(gru_same_at_one_and_two_threads);
    return test_summary();
}
