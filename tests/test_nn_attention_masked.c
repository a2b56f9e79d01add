/* The recommenders' kernels (nn/attention_masked, nn/layernorm_std) against
 * central finite differences of their forwards: L = Σ probe · out, so
 * dL/dout = probe; and the forward against a direct evaluation. */
#include <stdlib.h>
#include <string.h>

#include "nn/attention_masked.h"
#include "nn/attention_wasserstein.h"
#include "nn/layernorm_std.h"
#include "test.h"

static void fill(float *x, int n, mr_rng *r, double s) {
    for (int i = 0; i < n; i++) x[i] = (float)(s * mr_rng_normal(r));
}

static double dot(const float *a, const float *b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

enum { R = 6, NH = 2, HD = 4, LD = NH * HD };

typedef struct {
    float q[R * LD], k[R * LD], v[R * LD], out[R * LD], probs[NH * R * R], drop[NH * R * R], probe[R * LD];
    float scratch[2 * ATTENTION_MASKED_QBLOCK * R];
    uint8_t valid[R];
    int causal, use_drop;
} att_ctx;

static double att_loss(att_ctx *c) {
    attention_masked_forward(c->out, c->probs, c->q, c->k, c->v, LD, c->valid, c->use_drop ? c->drop : NULL, R, NH,
                             HD, c->causal, c->scratch);
    return dot(c->out, c->probe, R * LD);
}

static double fd_worst(att_ctx *c, float *x, const float *grad) {
    double worst = 0;
    for (int i = 0; i < R * LD; i++) {
        const float keep = x[i], h = 1e-2f;
        x[i] = keep + h;
        const double lp = att_loss(c);
        x[i] = keep - h;
        const double lm = att_loss(c);
        x[i] = keep;
        const double fd = (lp - lm) / (2.0 * h), err = fabs(fd - grad[i]) / (1.0 + fabs(grad[i]));
        worst = fmax(worst, err);
    }
    return worst;
}

static void check_attention(int causal, int use_drop) {
    att_ctx *c = calloc(1, sizeof *c);
    CHECK(c);
    mr_rng r;
    mr_rng_seed(&r, 3 + causal + 2 * use_drop);
    fill(c->q, R * LD, &r, 1);
    fill(c->k, R * LD, &r, 1);
    fill(c->v, R * LD, &r, 1);
    fill(c->probe, R * LD, &r, 1);
    /* the first row is padding; in causal mode its query sees no key */
    for (int j = 0; j < R; j++) c->valid[j] = j != 0;
    for (int i = 0; i < NH * R * R; i++) c->drop[i] = mr_rng_uniform(&r) < 0.3 ? 0.0f : 1.0f / 0.7f;
    c->causal = causal;
    c->use_drop = use_drop;
    att_loss(c);
    /* forward against a direct evaluation of one query of each head */
    for (int h = 0; h < NH; h++) {
        const int i = R - 2;
        double w[R], mx = -1e30, z = 0;
        for (int j = 0; j < R; j++) {
            w[j] = -1e30;
            if (!c->valid[j] || (causal && j > i))
                continue;
            w[j] = 0;
            for (int t = 0; t < HD; t++) w[j] += (double)c->q[i * LD + h * HD + t] * c->k[j * LD + h * HD + t];
            w[j] /= 2.0; /* sqrt(HD) */
            mx = fmax(mx, w[j]);
        }
        for (int j = 0; j < R; j++) z += w[j] > -1e29 ? exp(w[j] - mx) : 0;
        for (int t = 0; t < HD; t++) {
            double o = 0;
            for (int j = 0; j < R; j++)
                if (w[j] > -1e29)
                    o += exp(w[j] - mx) / z * (use_drop ? c->drop[(h * R + i) * R + j] : 1.0) * c->v[j * LD + h * HD + t];
            CHECK_NEAR(c->out[i * LD + h * HD + t], o, 1e-5);
        }
    }
    if (causal)
        for (int t = 0; t < LD; t++) CHECK(c->out[t] == 0.0f);
    float dq[R * LD], dk[R * LD], dv[R * LD];
    attention_masked_backward(dq, dk, dv, c->probe, c->probs, c->q, c->k, c->v, LD, use_drop ? c->drop : NULL, R, NH,
                              HD, causal, c->scratch);
    const double eq = fd_worst(c, c->q, dq), ek = fd_worst(c, c->k, dk), ev = fd_worst(c, c->v, dv);
    free(c);
    CHECK_MSG(eq < 2e-3 && ek < 2e-3 && ev < 2e-3, "attention (causal %d, dropout %d): worst errors q %g k %g v %g",
              causal, use_drop, eq, ek, ev);
}

TEST(attention_masked_causal) { check_attention(1, 0); }
TEST(attention_masked_bidirectional) { check_attention(0, 0); }
TEST(attention_masked_causal_dropout) { check_attention(1, 1); }
TEST(attention_masked_bidirectional_dropout) { check_attention(0, 1); }

/* ---- Wasserstein attention */
typedef struct {
    float qm[R * LD], km[R * LD], qc[R * LD], kc[R * LD], vc[R * LD], out[R * LD], probs[NH * R * R],
        drop[NH * R * R], probe[R * LD];
    float scratch[2 * R * LD + 3 * R + 2 * ATTENTION_MASKED_QBLOCK * R];
    uint8_t valid[R];
    int causal, use_drop;
} was_ctx;

static double was_loss(was_ctx *c) {
    attention_wasserstein_forward(c->out, c->probs, c->qm, c->km, c->qc, c->kc, c->vc, LD, c->valid,
                                  c->use_drop ? c->drop : NULL, R, NH, HD, c->causal, c->scratch);
    return dot(c->out, c->probe, R * LD);
}

static double was_fd(was_ctx *c, float *x, const float *grad) {
    double worst = 0;
    for (int i = 0; i < R * LD; i++) {
        const float keep = x[i], h = 1e-2f;
        x[i] = keep + h;
        const double lp = was_loss(c);
        x[i] = keep - h;
        const double lm = was_loss(c);
        x[i] = keep;
        const double fd = (lp - lm) / (2.0 * h);
        worst = fmax(worst, fabs(fd - grad[i]) / (1.0 + fabs(grad[i])));
    }
    return worst;
}

static void check_wasserstein(int causal, int use_drop) {
    was_ctx *c = calloc(1, sizeof *c);
    CHECK(c);
    mr_rng r;
    mr_rng_seed(&r, 21 + causal + 2 * use_drop);
    fill(c->qm, R * LD, &r, 0.7);
    fill(c->km, R * LD, &r, 0.7);
    fill(c->vc, R * LD, &r, 1);
    fill(c->probe, R * LD, &r, 1);
    for (int i = 0; i < R * LD; i++) { /* positive covariances, away from 0 */
        c->qc[i] = 0.3f + (float)mr_rng_uniform(&r);
        c->kc[i] = 0.3f + (float)mr_rng_uniform(&r);
    }
    for (int j = 0; j < R; j++) c->valid[j] = j != 0;
    for (int i = 0; i < NH * R * R; i++) c->drop[i] = mr_rng_uniform(&r) < 0.3 ? 0.0f : 1.0f / 0.7f;
    c->causal = causal;
    c->use_drop = use_drop;
    was_loss(c);
    /* one query of each head against the definition */
    for (int h = 0; h < NH; h++) {
        const int i = R - 1;
        double w[R], mx = -1e30, z = 0;
        for (int j = 0; j < R; j++) {
            w[j] = -1e30;
            if (!c->valid[j] || (causal && j > i))
                continue;
            double dist = 0;
            for (int t = 0; t < HD; t++) {
                const int a = i * LD + h * HD + t, b = j * LD + h * HD + t;
                dist += (c->qm[a] - c->km[b]) * (c->qm[a] - c->km[b]) +
                        (sqrt(c->qc[a]) - sqrt(c->kc[b])) * (sqrt(c->qc[a]) - sqrt(c->kc[b]));
            }
            w[j] = -dist / 2.0;
            mx = fmax(mx, w[j]);
        }
        for (int j = 0; j < R; j++) z += w[j] > -1e29 ? exp(w[j] - mx) : 0;
        for (int t = 0; t < HD; t++) {
            double o = 0;
            for (int j = 0; j < R; j++)
                if (w[j] > -1e29) {
                    const double pd = exp(w[j] - mx) / z * (use_drop ? c->drop[(h * R + i) * R + j] : 1.0);
                    o += pd * pd * c->vc[j * LD + h * HD + t];
                }
            CHECK_NEAR(c->out[i * LD + h * HD + t], o, 1e-5);
        }
    }
    float dqm[R * LD], dkm[R * LD], dqc[R * LD], dkc[R * LD], dvc[R * LD];
    CHECK(attention_wasserstein_scratch_floats(R, LD) <= sizeof c->scratch / sizeof(float));
    attention_wasserstein_backward(dqm, dkm, dqc, dkc, dvc, c->probe, c->probs, c->qm, c->km, c->qc, c->kc, c->vc, LD,
                                   use_drop ? c->drop : NULL, R, NH, HD, causal, c->scratch);
    const double e1 = was_fd(c, c->qm, dqm), e2 = was_fd(c, c->km, dkm), e3 = was_fd(c, c->qc, dqc),
                 e4 = was_fd(c, c->kc, dkc), e5 = was_fd(c, c->vc, dvc);
    free(c);
    CHECK_MSG(e1 < 2e-3 && e2 < 2e-3 && e3 < 2e-3 && e4 < 2e-3 && e5 < 2e-3,
              "wasserstein (causal %d, dropout %d): qm %g km %g qc %g kc %g vc %g", causal, use_drop, e1, e2, e3, e4,
              e5);
}

TEST(attention_wasserstein_causal) { check_wasserstein(1, 0); }
TEST(attention_wasserstein_causal_dropout) { check_wasserstein(1, 1); }
TEST(attention_wasserstein_bidirectional) { check_wasserstein(0, 0); }

/* ---- sequences longer than a block of queries: the blocked products against
 * the direct definition in double (forward, and the backward's formulas), for
 * r = 150 rows (blocks of 64, 64 and 22) with padding keys at 0 and 70. */
enum { BR = 150, BH = 2, BD = 8, BLD = BH * BD };

typedef struct {
    double out[BR * BLD], dq[BR * BLD], dk[BR * BLD], dv[BR * BLD], dc2[BR * BLD]; /* dc2: dkc (wasserstein) */
    double dqc[BR * BLD];
} direct;

static int vis(const uint8_t *valid, int i, int j, int causal) { return valid[j] && (!causal || j <= i); }

/* probabilities of query i in head h from scores w[j] (-1e300 = masked) */
static void softmax_d(double *w, int n) {
    double mx = -1e300, z = 0;
    for (int j = 0; j < n; j++) mx = w[j] > mx ? w[j] : mx;
    for (int j = 0; j < n; j++) z += w[j] > -1e299 ? exp(w[j] - mx) : 0;
    for (int j = 0; j < n; j++) w[j] = w[j] > -1e299 ? exp(w[j] - mx) / z : 0;
}

/* Dot-product (wass 0) or Wasserstein (wass 1) attention and its gradients for
 * dout = probe, in double: q, k, v are qm, km, vc and qc, kc the covariances. */
static void direct_attention(direct *o, const float *q, const float *k, const float *v, const float *qc,
                             const float *kc, const float *drop, const float *probe, const uint8_t *valid, int causal,
                             int wass) {
    memset(o, 0, sizeof *o);
    const double scale = 1.0 / sqrt((double)BD);
    static double P[BR], W[BR], dP[BR];
    for (int h = 0; h < BH; h++)
        for (int i = 0; i < BR; i++) {
            const int a = i * BLD + h * BD;
            for (int j = 0; j < BR; j++) {
                P[j] = -1e300;
                if (!vis(valid, i, j, causal))
                    continue;
                const int b = j * BLD + h * BD;
                double s = 0;
                for (int t = 0; t < BD; t++) {
                    if (wass) {
                        const double dm = q[a + t] - k[b + t], dc = sqrt(qc[a + t]) - sqrt(kc[b + t]);
                        s -= dm * dm + dc * dc;
                    } else {
                        s += (double)q[a + t] * k[b + t];
                    }
                }
                P[j] = s * scale;
            }
            softmax_d(P, BR);
            double row = 0;
            for (int j = 0; j < BR; j++) {
                const double dd = drop ? drop[(h * BR + i) * BR + j] : 1.0, pd = P[j] * dd;
                W[j] = wass ? pd * pd : pd;
                double g = 0;
                const int b = j * BLD + h * BD;
                for (int t = 0; t < BD; t++) {
                    o->out[a + t] += W[j] * v[b + t];
                    o->dv[b + t] += W[j] * probe[a + t];
                    g += (double)probe[a + t] * v[b + t];
                }
                dP[j] = wass ? 2 * P[j] * dd * dd * g : g * dd;
                row += P[j] * dP[j];
            }
            for (int j = 0; j < BR; j++) {
                if (P[j] == 0)
                    continue;
                const double dS = P[j] * (dP[j] - row) * scale;
                const int b = j * BLD + h * BD;
                for (int t = 0; t < BD; t++) {
                    if (wass) { /* S = -scale dist: d/dqm = -2 (qm - km), d/dqc = -(1 - sk/sq) */
                        const double dm = q[a + t] - k[b + t], sq = sqrt(qc[a + t]), sk = sqrt(kc[b + t]);
                        o->dq[a + t] -= 2 * dS * dm;
                        o->dk[b + t] += 2 * dS * dm;
                        o->dqc[a + t] -= dS * (1 - sk / sq);
                        o->dc2[b + t] -= dS * (1 - sq / sk);
                    } else {
                        o->dq[a + t] += dS * k[b + t];
                        o->dk[b + t] += dS * q[a + t];
                    }
                }
            }
        }
}

static double worst_rel(const float *x, const double *ref, int n) {
    double mx = 0, err = 0;
    for (int i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
    for (int i = 0; i < n; i++) err = fmax(err, fabs(x[i] - ref[i]));
    return err / (mx > 0 ? mx : 1);
}

static void check_blocks(int causal, int use_drop, int wass) {
    float *buf = calloc(12 * BR * BLD + 2 * BH * BR * BR, sizeof(float));
    float *scratch = calloc(attention_wasserstein_scratch_floats(BR, BLD) + attention_masked_scratch_floats(BR),
                            sizeof(float));
    direct *o = calloc(1, sizeof *o);
    CHECK(buf && scratch && o);
    float *q = buf, *k = q + BR * BLD, *v = k + BR * BLD, *qc = v + BR * BLD, *kc = qc + BR * BLD;
    float *probe = kc + BR * BLD, *out = probe + BR * BLD, *dq = out + BR * BLD, *dk = dq + BR * BLD;
    float *dv = dk + BR * BLD, *dqc = dv + BR * BLD, *dkc = dqc + BR * BLD, *probs = dkc + BR * BLD;
    float *drop = probs + BH * BR * BR;
    mr_rng r;
    mr_rng_seed(&r, 40 + causal + 2 * use_drop + 4 * wass);
    fill(q, BR * BLD, &r, 0.7);
    fill(k, BR * BLD, &r, 0.7);
    fill(v, BR * BLD, &r, 1);
    fill(probe, BR * BLD, &r, 1);
    for (int i = 0; i < BR * BLD; i++) {
        qc[i] = 0.3f + (float)mr_rng_uniform(&r);
        kc[i] = 0.3f + (float)mr_rng_uniform(&r);
    }
    uint8_t valid[BR];
    for (int j = 0; j < BR; j++) valid[j] = j != 0 && j != 70;
    for (int i = 0; i < BH * BR * BR; i++) drop[i] = mr_rng_uniform(&r) < 0.3 ? 0.0f : 1.0f / 0.7f;
    const float *dr = use_drop ? drop : NULL;
    direct_attention(o, q, k, v, qc, kc, dr, probe, valid, causal, wass);
    double e[6] = {0};
    if (wass) {
        attention_wasserstein_forward(out, probs, q, k, qc, kc, v, BLD, valid, dr, BR, BH, BD, causal, scratch);
        attention_wasserstein_backward(dq, dk, dqc, dkc, dv, probe, probs, q, k, qc, kc, v, BLD, dr, BR, BH, BD, causal,
                                       scratch);
        e[4] = worst_rel(dqc, o->dqc, BR * BLD);
        e[5] = worst_rel(dkc, o->dc2, BR * BLD);
    } else {
        attention_masked_forward(out, probs, q, k, v, BLD, valid, dr, BR, BH, BD, causal, scratch);
        attention_masked_backward(dq, dk, dv, probe, probs, q, k, v, BLD, dr, BR, BH, BD, causal, scratch);
    }
    e[0] = worst_rel(out, o->out, BR * BLD);
    e[1] = worst_rel(dq, o->dq, BR * BLD);
    e[2] = worst_rel(dk, o->dk, BR * BLD);
    e[3] = worst_rel(dv, o->dv, BR * BLD);
    int zero_first = 1; /* a causal padding query at row 0 sees nothing */
    if (causal)
        for (int t = 0; t < BLD; t++) zero_first &= out[t] == 0.0f;
    free(buf);
    free(scratch);
    free(o);
    CHECK(zero_first);
    CHECK_MSG(e[0] < 1e-5 && e[1] < 1e-5 && e[2] < 1e-5 && e[3] < 1e-5 && e[4] < 1e-5 && e[5] < 1e-5,
              "%s (causal %d, dropout %d), r %d: worst error of the max: out %g dq %g dk %g dv %g dqc %g dkc %g",
              wass ? "wasserstein" : "attention", causal, use_drop, BR, e[0], e[1], e[2], e[3], e[4], e[5]);
}

TEST(attention_masked_blocks_causal) { check_blocks(1, 1, 0); }
TEST(attention_masked_blocks_bidirectional) { check_blocks(0, 1, 0); }
TEST(attention_masked_blocks_no_dropout) { check_blocks(1, 0, 0); }
TEST(attention_wasserstein_blocks_causal) { check_blocks(1, 1, 1); }
TEST(attention_wasserstein_blocks_bidirectional) { check_blocks(0, 0, 1); }

/* ---- layernorm_std */
enum { LN_N = 3, LN_C = 10 };
typedef struct {
    float x[LN_N * LN_C], w[LN_C], b[LN_C], y[LN_N * LN_C], probe[LN_N * LN_C];
} ln_ctx;
static double ln_loss(ln_ctx *c) {
    layernorm_std_forward(c->y, NULL, NULL, c->x, c->w, c->b, LN_N, LN_C, 1e-6f);
    return dot(c->y, c->probe, LN_N * LN_C);
}

TEST(layernorm_std_matches_definition_and_finite_differences) {
    ln_ctx c;
    mr_rng r;
    mr_rng_seed(&r, 11);
    fill(c.x, LN_N * LN_C, &r, 2);
    fill(c.w, LN_C, &r, 1);
    fill(c.b, LN_C, &r, 1);
    fill(c.probe, LN_N * LN_C, &r, 1);
    float mean[LN_N], sd[LN_N];
    layernorm_std_forward(c.y, mean, sd, c.x, c.w, c.b, LN_N, LN_C, 1e-6f);
    for (int n = 0; n < LN_N; n++) { /* unbiased std, eps outside the root */
        double m = 0, v = 0;
        for (int i = 0; i < LN_C; i++) m += c.x[n * LN_C + i];
        m /= LN_C;
        for (int i = 0; i < LN_C; i++) v += (c.x[n * LN_C + i] - m) * (c.x[n * LN_C + i] - m);
        const double s = sqrt(v / (LN_C - 1));
        for (int i = 0; i < LN_C; i++)
            CHECK_NEAR(c.y[n * LN_C + i], c.w[i] * (c.x[n * LN_C + i] - m) / (s + 1e-6) + c.b[i], 1e-5);
    }
    float dx[LN_N * LN_C], dw[LN_C], db[LN_C];
    for (int i = 0; i < LN_N * LN_C; i++) dx[i] = 0.5f; /* accumulates */
    memset(dw, 0, sizeof dw);
    memset(db, 0, sizeof db);
    layernorm_std_backward(dx, dw, db, c.probe, c.x, mean, sd, c.w, LN_N, LN_C, 1e-6f);
    for (int i = 0; i < LN_N * LN_C; i++) dx[i] -= 0.5f;
    struct { float *p, *g; int n; } sets[3] = {{c.x, dx, LN_N * LN_C}, {c.w, dw, LN_C}, {c.b, db, LN_C}};
    double worst = 0;
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < sets[s].n; i++) {
            const float keep = sets[s].p[i], h = 1e-2f;
            sets[s].p[i] = keep + h;
            const double lp = ln_loss(&c);
            sets[s].p[i] = keep - h;
            const double lm = ln_loss(&c);
            sets[s].p[i] = keep;
            const double fd = (lp - lm) / (2.0 * h);
            worst = fmax(worst, fabs(fd - sets[s].g[i]) / (1.0 + fabs(sets[s].g[i])));
        }
    CHECK_MSG(worst < 2e-3, "layernorm_std: worst relative error %g", worst);
}

int main(void) {
    RUN(attention_masked_causal);
    RUN(attention_masked_bidirectional);
    RUN(attention_masked_causal_dropout);
    RUN(attention_masked_bidirectional_dropout);
    RUN(layernorm_std_matches_definition_and_finite_differences);
    RUN(attention_wasserstein_causal);
    RUN(attention_wasserstein_causal_dropout);
    RUN(attention_wasserstein_bidirectional);
    RUN(attention_masked_blocks_causal);
    RUN(attention_masked_blocks_bidirectional);
    RUN(attention_masked_blocks_no_dropout);
    RUN(attention_wasserstein_blocks_causal);
    RUN(attention_wasserstein_blocks_bidirectional);
    return test_summary();
}
