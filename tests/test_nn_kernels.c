/* The shared fp32 kernels (linear, layernorm, gelu, cross-entropy, AdamW):
 * forward values against direct formulas, backward against finite differences. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn/adamw.h"
#include "nn/gelu.h"
#include "nn/layernorm.h"
#include "nn/linear.h"
#include "nn/xent.h"
#include "test.h"

static void fill(float *x, int n, mr_rng *r, double s) {
    for (int i = 0; i < n; i++) x[i] = (float)(s * mr_rng_normal(r));
}

/* L = sum(out * probe): its gradient wrt out is probe. */
static double dot(const float *a, const float *b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

TEST(linear_forward_backward) {
    enum { N = 5, I = 7, O = 3 };
    mr_rng r;
    mr_rng_seed(&r, 1);
    float x[N * I], w[O * I], b[O], y[N * O], probe[N * O];
    fill(x, N * I, &r, 1);
    fill(w, O * I, &r, 1);
    fill(b, O, &r, 1);
    fill(probe, N * O, &r, 1);
    linear_forward(y, x, w, b, N, I, O);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++) {
            double s = b[o];
            for (int i = 0; i < I; i++) s += (double)x[n * I + i] * w[o * I + i];
            CHECK_NEAR(y[n * O + o], s, 1e-5);
        }
    float dx[N * I] = {0}, dw[O * I] = {0}, db[O] = {0};
    linear_backward(dx, dw, db, probe, x, w, N, I, O);
    float *params[3] = {x, w, b}, *grads[3] = {dx, dw, db};
    int sizes[3] = {N * I, O * I, O};
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < sizes[p]; i++) {
            float keep = params[p][i];
            params[p][i] = keep + 1e-2f;
            linear_forward(y, x, w, b, N, I, O);
            double lp = dot(y, probe, N * O);
            params[p][i] = keep - 1e-2f;
            linear_forward(y, x, w, b, N, I, O);
            double lm = dot(y, probe, N * O);
            params[p][i] = keep;
            CHECK_NEAR((lp - lm) / 2e-2, grads[p][i], 2e-3);
        }
    /* no bias, strided output, alpha and accumulate */
    float wide[N * 8];
    for (int i = 0; i < N * 8; i++) wide[i] = 1.0f;
    linear_forward_ex(wide + 2, 8, x, I, w, NULL, N, I, O, -1.0f, 1);
    linear_forward(y, x, w, NULL, N, I, O);
    for (int n = 0; n < N; n++) {
        CHECK(wide[n * 8] == 1.0f && wide[n * 8 + 5] == 1.0f);
        for (int o = 0; o < O; o++) CHECK_NEAR(wide[n * 8 + 2 + o], 1.0 - y[n * O + o], 1e-5);
    }
}

TEST(layernorm_forward_backward) {
    enum { N = 4, C = 6 };
    mr_rng r;
    mr_rng_seed(&r, 2);
    float x[N * C], w[C], b[C], y[N * C], probe[N * C], mean[N], rstd[N];
    fill(x, N * C, &r, 2);
    fill(w, C, &r, 1);
    fill(b, C, &r, 1);
    fill(probe, N * C, &r, 1);
    layernorm_forward(y, mean, rstd, x, w, b, N, C, 1e-5f);
    for (int n = 0; n < N; n++) {
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[n * C + c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[n * C + c] - m) * (x[n * C + c] - m);
        v /= C;
        for (int c = 0; c < C; c++)
            CHECK_NEAR(y[n * C + c], (x[n * C + c] - m) / sqrt(v + 1e-5) * w[c] + b[c], 1e-5);
    }
    float dx[N * C] = {0}, dw[C] = {0}, db[C] = {0};
    layernorm_backward(dx, dw, db, probe, x, mean, rstd, w, N, C);
    float *params[3] = {x, w, b}, *grads[3] = {dx, dw, db};
    int sizes[3] = {N * C, C, C};
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < sizes[p]; i++) {
            float keep = params[p][i];
            params[p][i] = keep + 1e-2f;
            layernorm_forward(y, NULL, NULL, x, w, b, N, C, 1e-5f);
            double lp = dot(y, probe, N * C);
            params[p][i] = keep - 1e-2f;
            layernorm_forward(y, NULL, NULL, x, w, b, N, C, 1e-5f);
            double lm = dot(y, probe, N * C);
            params[p][i] = keep;
            CHECK_NEAR((lp - lm) / 2e-2, grads[p][i], 3e-3);
        }
}

TEST(gelu_exact_erf_and_backward) {
    float x[5] = {-3.0f, -0.5f, 0.0f, 0.7f, 2.5f}, y[5], dx[5] = {0}, ones[5] = {1, 1, 1, 1, 1};
    gelu_forward(y, x, 5);
    /* 0.5 x (1 + erf(x / sqrt 2)) computed in double precision */
    CHECK_NEAR(y[0], -0.0040496, 1e-6);
    CHECK_NEAR(y[1], -0.1542687, 1e-6);
    CHECK_NEAR(y[2], 0.0, 1e-7);
    CHECK_NEAR(y[3], 0.5306254, 1e-6);
    CHECK_NEAR(y[4], 2.4844758, 1e-6);
    double worst = 0;
    for (double v = -8; v <= 8; v += 1e-3) worst = fmax(worst, fabs(gelu_erf((float)v) - erf(v)));
    CHECK(worst < 5e-7);
    gelu_backward(dx, ones, x, 5);
    for (int i = 0; i < 5; i++) {
        float a = x[i] + 1e-3f, b = x[i] - 1e-3f, ya, yb;
        gelu_forward(&ya, &a, 1);
        gelu_forward(&yb, &b, 1);
        CHECK_NEAR((ya - yb) / (a - b), dx[i], 1e-3);
    }
}

TEST(xent_ignores_label_and_matches_finite_differences) {
    enum { N = 4, V = 5 };
    mr_rng r;
    mr_rng_seed(&r, 3);
    float z[N * V], dz[N * V], rl[N];
    fill(z, N * V, &r, 2);
    int labels[N] = {2, 0, 4, 1};
    int counted;
    double loss = xent_forward_backward(dz, rl, z, 0, labels, N, V, 0, &counted);
    CHECK(counted == 3);
    double want = 0;
    for (int n = 0; n < N; n++) {
        if (!labels[n]) continue;
        double s = 0;
        for (int v = 0; v < V; v++) s += exp(z[n * V + v]);
        want += log(s) - z[n * V + labels[n]];
    }
    CHECK_NEAR(loss, want / 3, 1e-6);
    for (int v = 0; v < V; v++) CHECK(dz[1 * V + v] == 0.0f);
    for (int i = 0; i < N * V; i++) {
        float keep = z[i];
        z[i] = keep + 1e-2f;
        double lp = xent_forward_backward(NULL, rl, z, 0, labels, N, V, 0, NULL);
        z[i] = keep - 1e-2f;
        double lm = xent_forward_backward(NULL, rl, z, 0, labels, N, V, 0, NULL);
        z[i] = keep;
        CHECK_NEAR((lp - lm) / 2e-2, dz[i], 1e-4);
    }
    double worst = 0;
    for (double v = -87; v <= 0; v += 1e-3) worst = fmax(worst, fabs(xent_exp((float)v) / exp((float)v) - 1));
    CHECK(worst < 1e-7);
    /* in place */
    float zz[N * V];
    memcpy(zz, z, sizeof zz);
    xent_forward_backward(zz, rl, zz, 0, labels, N, V, 0, NULL);
    for (int i = 0; i < N * V; i++) CHECK(zz[i] == dz[i]);
}

TEST(adamw_matches_torch_formula_and_clipping) {
    /* torch.optim.AdamW(lr=0.1, eps=1e-9, weight_decay=0.5), two steps on p = [1, -2] */
    float p[2] = {1.0f, -2.0f}, m[2] = {0}, v[2] = {0};
    adamw_config c = {.lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-9f, .weight_decay = 0.5f};
    float g1[2] = {0.5f, -0.25f}, g2[2] = {0.1f, 0.3f};
    adamw_update(p, g1, m, v, 2, &c, 0.5f, 1);
    /* step 1: p *= 0.95; m/bc1 = g; sqrt(v/bc2) = |g| -> p -= 0.1 * sign(g) */
    CHECK_NEAR(p[0], 0.95 - 0.1, 1e-6);
    CHECK_NEAR(p[1], -1.9 + 0.1, 1e-6);
    adamw_update(p, g2, m, v, 2, &c, 0.5f, 2);
    double p0 = 0.85 * 0.95, m0 = 0.9 * 0.05 + 0.1 * 0.1, v0 = 0.999 * 0.001 * 0.25 + 0.001 * 0.01;
    p0 -= 0.1 / (1 - 0.81) * m0 / (sqrt(v0) / sqrt(1 - 0.999 * 0.999) + 1e-9);
    CHECK_NEAR(p[0], p0, 1e-5);
    float g[3] = {3, 4, 0};
    double norm = clip_grad_norm(g, 3, 1.0);
    CHECK_NEAR(norm, 5.0, 1e-9);
    CHECK_NEAR(g[0], 0.6, 1e-6);
    CHECK_NEAR(g[1], 0.8, 1e-6);
    float h[2] = {0.3f, 0.4f};
    clip_grad_norm(h, 2, 1.0);
    CHECK(h[0] == 0.3f && h[1] == 0.4f);
}

/* xent_table against the definition in double: 300 rows (5 chunks over the 4
 * slots), some not counted, a bias; and the same bits on 1 and 2 threads. */
static void xent_table_run(float *dx, float *dT, float *dB, float *rl, double *loss, const float *x, const int *lab,
                           int M, const float *T, const float *B, int V, int d, float *scratch) {
    memset(dT, 0, sizeof(float) * (size_t)V * d);
    memset(dB, 0, sizeof(float) * (size_t)V);
    *loss = xent_table(dx, dT, dB, rl, x, lab, M, T, B, V, d, 0.25f, scratch);
}

TEST(xent_table_matches_definition_and_thread_counts) {
    enum { M = 300, V = 37, D = 6 };
    mr_rng r;
    mr_rng_seed(&r, 9);
    float *x = malloc(sizeof(float) * M * D), *T = malloc(sizeof(float) * V * D), B[V];
    float *dx[2], *dT[2], dB[2][V], *rl = malloc(sizeof(float) * M);
    float *scratch = malloc(sizeof(float) * xent_table_scratch_floats(V, D));
    int lab[M];
    CHECK(x && T && rl && scratch);
    for (int t = 0; t < 2; t++) {
        dx[t] = malloc(sizeof(float) * M * D);
        dT[t] = malloc(sizeof(float) * V * D);
        CHECK(dx[t] && dT[t]);
    }
    fill(x, M * D, &r, 1);
    fill(T, V * D, &r, 1);
    fill(B, V, &r, 1);
    for (int i = 0; i < M; i++) lab[i] = i % 7 == 3 ? -1 : (int)mr_rng_below(&r, V);
    double loss[2];
    const int saved = omp_get_max_threads();
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        xent_table_run(dx[t], dT[t], dB[t], rl, &loss[t], x, lab, M, T, B, V, D, scratch);
    }
    omp_set_num_threads(saved);
    CHECK(loss[0] == loss[1] && !memcmp(dx[0], dx[1], sizeof(float) * M * D) &&
          !memcmp(dT[0], dT[1], sizeof(float) * V * D) && !memcmp(dB[0], dB[1], sizeof dB[0]));
    /* the definition */
    double want = 0, *gT = calloc((size_t)V * D, sizeof(double)), gB[V] = {0}, ex = 0, eT = 0, eB = 0, mx = 0;
    CHECK(gT);
    for (int i = 0; i < M; i++) {
        double z[V], m = -1e300, s = 0;
        for (int v = 0; v < V; v++) {
            z[v] = B[v];
            for (int c = 0; c < D; c++) z[v] += (double)x[i * D + c] * T[v * D + c];
            m = fmax(m, z[v]);
        }
        for (int v = 0; v < V; v++) s += exp(z[v] - m);
        double gx[D] = {0};
        if (lab[i] >= 0) {
            want += log(s) + m - z[lab[i]];
            for (int v = 0; v < V; v++) {
                const double g = 0.25 * (exp(z[v] - m) / s - (v == lab[i]));
                gB[v] += g;
                for (int c = 0; c < D; c++) {
                    gx[c] += g * T[v * D + c];
                    gT[v * D + c] += g * x[i * D + c];
                }
            }
        }
        for (int c = 0; c < D; c++) ex = fmax(ex, fabs(dx[0][i * D + c] - gx[c]));
        mx = fmax(mx, lab[i] >= 0 ? fabs(log(s) + m - z[lab[i]] - rl[i]) : fabs(rl[i]));
    }
    for (int j = 0; j < V * D; j++) eT = fmax(eT, fabs(dT[0][j] - gT[j]));
    for (int v = 0; v < V; v++) eB = fmax(eB, fabs(dB[0][v] - gB[v]));
    CHECK_MSG(fabs(loss[0] - want) < 1e-5 * want && ex < 1e-5 && eT < 1e-4 && eB < 1e-4 && mx < 1e-5,
              "xent_table: loss %.9g against %.9g, worst dx %g dtable %g dbias %g row loss %g", loss[0], want, ex, eT,
              eB, mx);
    free(gT);
    for (int t = 0; t < 2; t++) {
        free(dx[t]);
        free(dT[t]);
    }
    free(x);
    free(T);
    free(rl);
    free(scratch);
}

int main(void) {
    RUN(linear_forward_backward);
    RUN(layernorm_forward_backward);
    RUN(gelu_exact_erf_and_backward);
    RUN(xent_ignores_label_and_matches_finite_differences);
    RUN(xent_table_matches_definition_and_thread_counts);
    RUN(adamw_matches_torch_formula_and_clipping);
    return test_summary();
}
