/* Backward kernels of the transformer (src/nn: rmsnorm, rope in both layouts,
 * causal grouped-query attention, SwiGLU, LoRA, embedding, the input gradient
 * through a stored weight of each type) against central finite differences of
 * their forwards: L = Σ probe · out, so dL/dout = probe. */
#include <stdlib.h>
#include <string.h>

#include "nn/attention.h"
#include "nn/embedding.h"
#include "nn/lora.h"
#include "nn/matmul.h"
#include "nn/quant.h"
#include "nn/rmsnorm.h"
#include "nn/rope.h"
#include "nn/swiglu.h"
#include "test.h"

static void fill(float *x, int64_t n, mr_rng *r, double s) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(s * mr_rng_normal(r));
}

static double dot(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* A forward as a loss of its perturbed input. */
typedef double (*loss_fn)(void *ctx);

/* Compares grad[i] with the central difference of f at x[i] for every i
 * (or every `stride`-th); returns the worst |fd - grad| / (1 + |grad|). */
static double fd_check(loss_fn f, void *ctx, float *x, const float *grad, int64_t n, int64_t stride, float eps) {
    double worst = 0;
    for (int64_t i = 0; i < n; i += stride) {
        const float keep = x[i];
        x[i] = keep + eps;
        const double lp = f(ctx);
        x[i] = keep - eps;
        const double lm = f(ctx);
        x[i] = keep;
        const double fd = (lp - lm) / (2.0 * eps), err = fabs(fd - grad[i]) / (1.0 + fabs(grad[i]));
        if (err > worst) worst = err;
    }
    return worst;
}

/* ---- rmsnorm */
typedef struct {
    float *x, *w, *y, *probe;
    int T, d;
} rms_ctx;
static double rms_loss(void *c) {
    rms_ctx *k = c;
    rmsnorm_forward(k->y, NULL, k->x, k->w, k->T, k->d, 1e-5f);
    return dot(k->y, k->probe, (int64_t)k->T * k->d);
}
TEST(rmsnorm_backward_finite_differences) {
    enum { T = 3, D = 16 };
    mr_rng r;
    mr_rng_seed(&r, 1);
    float x[T * D], w[D], y[T * D], probe[T * D], rstd[T], dx[T * D];
    fill(x, T * D, &r, 1.5);
    fill(w, D, &r, 1);
    fill(probe, T * D, &r, 1);
    rmsnorm_forward(y, rstd, x, w, T, D, 1e-5f);
    for (int i = 0; i < T * D; i++) dx[i] = 0.25f; /* accumulates */
    rmsnorm_backward(dx, probe, x, w, rstd, T, D);
    for (int i = 0; i < T * D; i++) dx[i] -= 0.25f;
    rms_ctx c = {x, w, y, probe, T, D};
    double err = fd_check(rms_loss, &c, x, dx, T * D, 1, 1e-2f);
    CHECK_MSG(err < 2e-3, "rmsnorm: worst relative error %g", err);
}

/* ---- rope */
typedef struct {
    float *x, *y, *cs, *probe;
    rope_params p;
    int T, H, hd;
} rope_ctx;
static double rope_loss(void *c) {
    rope_ctx *k = c;
    const int64_t n = (int64_t)k->T * k->H * k->hd;
    memcpy(k->y, k->x, (size_t)n * sizeof(float));
    rope_forward(k->y, k->cs, &k->p, k->T, k->H, k->hd);
    return dot(k->y, k->probe, n);
}
static void rope_case(int halves) {
    enum { T = 5, H = 2, HD = 8 };
    mr_rng r;
    mr_rng_seed(&r, 2);
    float x[T * H * HD], y[T * H * HD], probe[T * H * HD], dx[T * H * HD], cs[T * HD];
    const float factors[HD / 2] = {1.0f, 2.0f, 1.5f, 4.0f};
    rope_params p = {HD, 10000.0, 0.5, factors, halves};
    rope_table(cs, &p, T, 3);
    fill(x, T * H * HD, &r, 1);
    fill(probe, T * H * HD, &r, 1);
    memcpy(dx, probe, sizeof dx);
    rope_backward(dx, cs, &p, T, H, HD);
    rope_ctx c = {x, y, cs, probe, p, T, H, HD};
    double err = fd_check(rope_loss, &c, x, dx, T * H * HD, 1, 1e-2f);
    CHECK_MSG(err < 1e-3, "rope (halves %d): worst relative error %g", halves, err);
}
TEST(rope_backward_adjacent_pairs) { rope_case(0); }
TEST(rope_backward_halves) { rope_case(1); }

/* ---- attention */
typedef struct {
    float *q, *k, *v, *out, *probe, *scratch;
    int64_t scratch_floats;
    int T, H, HKV, hd;
} att_ctx;
static double att_loss(void *c) {
    att_ctx *a = c;
    attention_forward(a->out, a->q, a->k, a->v, a->T, 0, a->H, a->HKV, a->hd, a->scratch, a->scratch_floats);
    return dot(a->out, a->probe, (int64_t)a->T * a->H * a->hd);
}
TEST(attention_backward_grouped_heads_two_blocks) {
    /* 70 positions: two query blocks; 4 heads reading 2 kv heads */
    const int T = 70, H = 4, HKV = 2, HD = 8, QD = H * HD, KVD = HKV * HD;
    mr_rng r;
    mr_rng_seed(&r, 3);
    float *q = malloc(sizeof(float) * T * QD), *k = malloc(sizeof(float) * T * KVD), *v = malloc(sizeof(float) * T * KVD);
    float *out = malloc(sizeof(float) * T * QD), *probe = malloc(sizeof(float) * T * QD);
    float *dq = malloc(sizeof(float) * T * QD), *dk = malloc(sizeof(float) * T * KVD), *dv = malloc(sizeof(float) * T * KVD);
    const int64_t sf = attention_scratch_floats(T, 4), bf = attention_backward_scratch_floats(T, H, HKV, HD, 4);
    float *scratch = malloc(sizeof(float) * (size_t)sf), *bscratch = malloc(sizeof(float) * (size_t)bf);
    fill(q, T * QD, &r, 1);
    fill(k, T * KVD, &r, 1);
    fill(v, T * KVD, &r, 1);
    fill(probe, T * QD, &r, 1);
    /* the backward from the kept probabilities and from the row statistics alone */
    float *stats = malloc(sizeof(float) * T * H * 2), *probs = malloc(sizeof(float) * attention_probs_floats(T, H));
    float *dq2 = malloc(sizeof(float) * T * QD), *dk2 = malloc(sizeof(float) * T * KVD), *dv2 = malloc(sizeof(float) * T * KVD);
    attention_forward_stats(out, stats, probs, q, k, v, T, 0, H, HKV, HD, scratch, sf);
    attention_backward(dq, dk, dv, probe, out, stats, probs, q, k, v, T, 0, H, HKV, HD, bscratch, bf);
    attention_backward(dq2, dk2, dv2, probe, out, stats, NULL, q, k, v, T, 0, H, HKV, HD, bscratch, bf);
    double same = 0;
    for (int i = 0; i < T * QD; i++) same = fmax(same, fabs(dq[i] - dq2[i]));
    for (int i = 0; i < T * KVD; i++) same = fmax(same, fmax(fabs(dk[i] - dk2[i]), fabs(dv[i] - dv2[i])));
    CHECK_MSG(same < 1e-6, "attention: kept and rebuilt probabilities give gradients %g apart", same);
    free(dq2), free(dk2), free(dv2), free(probs);
    att_ctx c = {q, k, v, out, probe, scratch, sf, T, H, HKV, HD};
    double eq = fd_check(att_loss, &c, q, dq, (int64_t)T * QD, 7, 1e-2f);
    double ek = fd_check(att_loss, &c, k, dk, (int64_t)T * KVD, 5, 1e-2f);
    double ev = fd_check(att_loss, &c, v, dv, (int64_t)T * KVD, 5, 1e-2f);
    free(q), free(k), free(v), free(out), free(probe), free(dq), free(dk), free(dv), free(scratch), free(bscratch), free(stats);
    CHECK_MSG(eq < 3e-3 && ek < 3e-3 && ev < 3e-3, "attention: worst relative errors dq %g dk %g dv %g", eq, ek, ev);
}

/* The queries from position pos0 on alone (the last layer of a training step,
 * where only the loss rows reach the loss): the same dq rows, dk and dv as the
 * whole sequence with no gradient above pos0; pos0 67 leaves one short block of
 * 3 queries, pos0 5 two blocks (65 queries). */
TEST(attention_backward_query_suffix) {
    const int T = 70, H = 4, HKV = 2, HD = 8, QD = H * HD, KVD = HKV * HD;
    mr_rng r;
    mr_rng_seed(&r, 8);
    float *buf = malloc(sizeof(float) * (size_t)(5 * T * QD + 6 * T * KVD + 2 * T * H * 2));
    float *q = buf, *out = q + T * QD, *probe = out + T * QD, *dq = probe + T * QD, *dq2 = dq + T * QD;
    float *k = dq2 + T * QD, *v = k + T * KVD, *dk = v + T * KVD, *dv = dk + T * KVD, *dk2 = dv + T * KVD, *dv2 = dk2 + T * KVD;
    float *stats = dv2 + T * KVD, *stats2 = stats + T * H * 2;
    const int64_t sf = attention_scratch_floats(T, 4), bf = attention_backward_scratch_floats(T, H, HKV, HD, 4);
    float *scratch = malloc(sizeof(float) * (size_t)sf), *bscratch = malloc(sizeof(float) * (size_t)bf);
    fill(q, T * QD, &r, 1);
    fill(k, T * KVD, &r, 1);
    fill(v, T * KVD, &r, 1);
    const int pos0s[2] = {67, 5};
    double worst = 0;
    for (int c = 0; c < 2; c++) {
        const int p0 = pos0s[c];
        fill(probe, T * QD, &r, 1);
        for (int i = 0; i < p0 * QD; i++) probe[i] = 0.0f;
        attention_forward_stats(out, stats, NULL, q, k, v, T, 0, H, HKV, HD, scratch, sf);
        attention_backward(dq, dk, dv, probe, out, stats, NULL, q, k, v, T, 0, H, HKV, HD, bscratch, bf);
        attention_forward_stats(out, stats2, NULL, q + p0 * QD, k, v, T - p0, p0, H, HKV, HD, scratch, sf);
        attention_backward(dq2, dk2, dv2, probe + p0 * QD, out, stats2, NULL, q + p0 * QD, k, v, T - p0, p0, H, HKV, HD,
                           bscratch, bf);
        for (int i = 0; i < (T - p0) * QD; i++) worst = fmax(worst, fabs(dq[p0 * QD + i] - dq2[i]));
        for (int i = 0; i < T * KVD; i++) worst = fmax(worst, fmax(fabs(dk[i] - dk2[i]), fabs(dv[i] - dv2[i])));
    }
    free(buf), free(scratch), free(bscratch);
    CHECK_MSG(worst < 1e-5, "attention from pos0: gradients %g from the whole sequence's", worst);
}

/* A generation step (one query at position n-1 over an n-key cache) takes its own
 * path through attention_forward: it must give the last row of the whole-sequence
 * forward, and the same softmax statistics. Head size 20 exercises the kernels'
 * 8-wide loops and their tails. */
TEST(attention_one_query_matches_whole_sequence) {
    const int T = 70, H = 6, HKV = 2, HD = 20, QD = H * HD, KVD = HKV * HD;
    mr_rng r;
    mr_rng_seed(&r, 5);
    float *q = malloc(sizeof(float) * T * QD), *k = malloc(sizeof(float) * T * KVD), *v = malloc(sizeof(float) * T * KVD);
    float *out = malloc(sizeof(float) * T * QD), *out1 = malloc(sizeof(float) * QD);
    float *stats = malloc(sizeof(float) * T * H * 2), *stats1 = malloc(sizeof(float) * H * 2);
    const int64_t sf = attention_scratch_floats(T, 2);
    float *scratch = malloc(sizeof(float) * (size_t)sf);
    fill(q, T * QD, &r, 1);
    fill(k, T * KVD, &r, 1);
    fill(v, T * KVD, &r, 1);
    attention_forward_stats(out, stats, NULL, q, k, v, T, 0, H, HKV, HD, scratch, sf);
    attention_forward_stats(out1, stats1, NULL, q + (T - 1) * QD, k, v, 1, T - 1, H, HKV, HD, scratch, sf);
    double dout = 0, dst = 0;
    for (int i = 0; i < QD; i++) dout = fmax(dout, fabs(out1[i] - out[(T - 1) * QD + i]));
    for (int i = 0; i < H * 2; i++) dst = fmax(dst, fabs(stats1[i] - stats[(T - 1) * H * 2 + i]) / fabs(stats[(T - 1) * H * 2 + i]));
    free(q), free(k), free(v), free(out), free(out1), free(stats), free(stats1), free(scratch);
    CHECK_MSG(dout < 1e-5 && dst < 1e-5, "one query: output %g apart, statistics %g apart (relative)", dout, dst);
}

/* An f16 KV cache (generation): a prompt of T0 rows, then one step, through
 * attention_forward_f16_cache give what attention_forward gives on keys and values
 * rounded to f16: the prompt exactly (it is that call), the one-query step, which
 * widens the f16 rows as it reads them, within 1e-5; the cache holds the rounded
 * rows. */
TEST(attention_f16_cache_matches_rounded_floats) {
    const int T = 70, T0 = 69, H = 6, HKV = 2, HD = 20, QD = H * HD, KVD = HKV * HD;
    mr_rng r;
    mr_rng_seed(&r, 6);
    float *q = malloc(sizeof(float) * T * QD), *k = malloc(sizeof(float) * T * KVD), *v = malloc(sizeof(float) * T * KVD);
    float *kr = malloc(sizeof(float) * T * KVD), *vr = malloc(sizeof(float) * T * KVD);
    float *k32 = malloc(sizeof(float) * T * KVD), *v32 = malloc(sizeof(float) * T * KVD);
    uint16_t *k16 = malloc(sizeof(uint16_t) * T * KVD), *v16 = malloc(sizeof(uint16_t) * T * KVD);
    float *want = malloc(sizeof(float) * T * QD), *got = malloc(sizeof(float) * T * QD);
    const int64_t sf = attention_scratch_floats(T, 2);
    float *scratch = malloc(sizeof(float) * (size_t)sf);
    fill(q, T * QD, &r, 1);
    fill(k, T * KVD, &r, 1);
    fill(v, T * KVD, &r, 1);
    for (int i = 0; i < T * KVD; i++) kr[i] = mr_f16_to_f32(mr_f32_to_f16(k[i])), vr[i] = mr_f16_to_f32(mr_f32_to_f16(v[i]));
    attention_forward(want, q, kr, vr, T, 0, H, HKV, HD, scratch, sf);
    memcpy(k32, k, sizeof(float) * T0 * KVD), memcpy(v32, v, sizeof(float) * T0 * KVD);
    attention_forward_f16_cache(got, q, T0, k32, v32, k16, v16, 0, T0, H, HKV, HD, scratch, sf); /* the prompt */
    int prompt_same = memcmp(got, want, sizeof(float) * T0 * QD) == 0;
    memcpy(k32 + T0 * KVD, k + T0 * KVD, sizeof(float) * KVD), memcpy(v32 + T0 * KVD, v + T0 * KVD, sizeof(float) * KVD);
    attention_forward_f16_cache(got + T0 * QD, q + T0 * QD, 1, k32, v32, k16, v16, T0, 1, H, HKV, HD, scratch, sf);
    double dstep = 0;
    for (int i = 0; i < QD; i++) dstep = fmax(dstep, fabs(got[T0 * QD + i] - want[T0 * QD + i]));
    int cache_rounded = 1;
    for (int i = 0; i < T * KVD; i++) cache_rounded &= mr_f16_to_f32(k16[i]) == kr[i] && mr_f16_to_f32(v16[i]) == vr[i];
    free(q), free(k), free(v), free(kr), free(vr), free(k32), free(v32), free(k16), free(v16), free(want), free(got);
    free(scratch);
    CHECK(prompt_same);
    CHECK_MSG(dstep < 1e-5, "one step over the f16 cache: %g from the rounded floats", dstep);
    CHECK(cache_rounded);
}

/* ---- swiglu */
typedef struct {
    float *g, *u, *h, *probe;
    int n;
} sw_ctx;
static double sw_loss(void *c) {
    sw_ctx *s = c;
    swiglu_forward(s->h, s->g, s->u, s->n);
    return dot(s->h, s->probe, s->n);
}
TEST(swiglu_backward_finite_differences) {
    enum { N = 40 };
    mr_rng r;
    mr_rng_seed(&r, 4);
    float g[N], u[N], h[N], probe[N], dg[N], du[N];
    fill(g, N, &r, 2);
    fill(u, N, &r, 1);
    fill(probe, N, &r, 1);
    swiglu_backward(dg, du, probe, g, u, N);
    sw_ctx c = {g, u, h, probe, N};
    double eg = fd_check(sw_loss, &c, g, dg, N, 1, 1e-2f), eu = fd_check(sw_loss, &c, u, du, N, 1, 1e-2f);
    CHECK_MSG(eg < 1e-3 && eu < 1e-3, "swiglu: dg %g du %g", eg, eu);
}

/* The 8-wide gate (nn/simd_exp.h) against double precision, over the range a
 * gate meets and beyond (|g| up to 100, where e^|g| overflows a float), vector
 * lanes and the scalar tail (n = 8k + 3) */
TEST(swiglu_matches_double_precision) {
    enum { N = 2003 };
    mr_rng r;
    mr_rng_seed(&r, 14);
    float *g = malloc(5 * N * sizeof(float)), *u = g + N, *h = u + N, *dg = h + N, *du = dg + N;
    for (int i = 0; i < N; i++) {
        g[i] = i < 200 ? (float)(i - 100) : (float)(4 * mr_rng_normal(&r));
        u[i] = (float)mr_rng_normal(&r);
    }
    swiglu_forward(h, g, u, N);
    swiglu_backward(dg, du, u, g, u, N); /* dh = u */
    double worst = 0;
    for (int i = 0; i < N; i++) {
        const double s = 1.0 / (1.0 + exp(-(double)g[i])), want[3] = {g[i] * s * u[i], u[i] * g[i] * s,
                                                                       u[i] * u[i] * s * (1.0 + g[i] * (1.0 - s))};
        /* dg's two terms cancel near g = -1.28: its error is relative to their sizes */
        const double size[3] = {fabs(want[0]), fabs(want[1]), u[i] * u[i] * s * (1.0 + fabs(g[i] * (1.0 - s)))};
        const float got[3] = {h[i], du[i], dg[i]};
        for (int k = 0; k < 3; k++) worst = fmax(worst, fabs(got[k] - want[k]) / (size[k] + 1e-30));
    }
    free(g);
    CHECK_MSG(worst < 2e-6, "swiglu: worst relative error %g against double precision", worst);
}

/* ---- lora */
typedef struct {
    float *x, *a, *b, *y, *z, *probe;
    int T, in, out, r;
    float scale;
} lora_ctx;
static double lora_loss(void *c) {
    lora_ctx *l = c;
    memset(l->y, 0, sizeof(float) * (size_t)(l->T * l->out));
    lora_forward(l->y, l->z, l->x, l->a, l->b, l->T, l->in, l->out, l->r, l->scale);
    return dot(l->y, l->probe, (int64_t)l->T * l->out);
}
TEST(lora_backward_finite_differences) {
    enum { T = 6, IN = 10, OUT = 7, R = 3 };
    mr_rng r;
    mr_rng_seed(&r, 5);
    float x[T * IN], a[R * IN], b[OUT * R], y[T * OUT], z[T * R], probe[T * OUT];
    float dx[T * IN] = {0}, da[R * IN] = {0}, db[OUT * R] = {0};
    fill(x, T * IN, &r, 1);
    fill(a, R * IN, &r, 1);
    fill(b, OUT * R, &r, 1);
    fill(probe, T * OUT, &r, 1);
    /* gs = 0.5: the weight gradients are halved, dx is not */
    lora_backward(dx, da, db, z, probe, x, a, b, T, IN, OUT, R, 2.5f, 0.5f, 1.0f);
    for (int i = 0; i < R * IN; i++) da[i] *= 2;
    for (int i = 0; i < OUT * R; i++) db[i] *= 2;
    lora_ctx c = {x, a, b, y, z, probe, T, IN, OUT, R, 2.5f};
    double ex = fd_check(lora_loss, &c, x, dx, T * IN, 1, 1e-2f), ea = fd_check(lora_loss, &c, a, da, R * IN, 1, 1e-2f),
           eb = fd_check(lora_loss, &c, b, db, OUT * R, 1, 1e-2f);
    CHECK_MSG(ex < 1e-3 && ea < 1e-3 && eb < 1e-3, "lora: dx %g dA %g dB %g", ex, ea, eb);
}

/* ---- lora dropout: a slice of an input gets the whole input's mask; the kept
 * bits give the same dropped input again and the gradient (finite differences) */
typedef struct {
    float *x, *y, *probe;
    int n;
    uint64_t key;
} drop_ctx;
static double drop_loss(void *c) {
    drop_ctx *k = c;
    lora_dropout_forward(k->y, NULL, k->x, k->n, 0, 0.3f, k->key);
    return dot(k->y, k->probe, k->n);
}
TEST(lora_dropout_slices_and_gradient) {
    enum { N = 1003, CUT = 37 }; /* a cut inside a 16-chunk, a ragged end */
    mr_rng r;
    mr_rng_seed(&r, 9);
    float *x = malloc(6 * N * sizeof(float)), *y = x + N, *y2 = y + N, *probe = y2 + N, *dx = probe + N, *again = dx + N;
    uint8_t mask[(N + 15) / 16 * 2], mask2[(N + 15) / 16 * 2];
    fill(x, N, &r, 1);
    fill(probe, N, &r, 1);
    const uint64_t key = 12345;
    lora_dropout_forward(y, mask, x, N, 0, 0.3f, key);
    lora_dropout_forward(y2, mask2, x, CUT, 0, 0.3f, key);
    lora_dropout_forward(y2 + CUT, mask2, x + CUT, N - CUT, CUT, 0.3f, key);
    int dropped = 0, same = 1;
    for (int i = 0; i < N; i++) {
        dropped += y[i] == 0.0f;
        same &= y[i] == y2[i] && ((mask[i / 8] ^ mask2[i / 8]) >> (i % 8) & 1) == 0;
        same &= y[i] == (mask[i / 8] >> (i % 8) & 1 ? x[i] * (1.0f / (1.0f - 0.3f)) : 0.0f);
    }
    lora_dropout_apply(again, x + CUT, mask, N - CUT, CUT, 0.3f, 0);
    for (int i = CUT; i < N; i++) same &= again[i - CUT] == y[i];
    lora_dropout_apply(dx, probe, mask, N, 0, 0.3f, 0);
    drop_ctx c = {x, y2, probe, N, key};
    const double err = fd_check(drop_loss, &c, x, dx, N, 3, 1e-2f);
    free(x);
    CHECK_MSG(same, "dropout: a slice, or the kept mask, gives other values than the whole input");
    CHECK_MSG(dropped > 0.25 * N && dropped < 0.35 * N, "dropout: %d of %d dropped at p 0.3", dropped, N);
    CHECK_MSG(err < 1e-3, "dropout: gradient against finite differences %g", err);
}

/* ---- embedding */
typedef struct {
    float *table, *out, *probe;
    const int32_t *ids;
    int T, V, d;
} emb_ctx;
static double emb_loss(void *c) {
    emb_ctx *k = c;
    qmat q = {GGML_TYPE_F32, k->V, k->d, k->table, 0};
    embedding_forward(k->out, &q, k->ids, k->T);
    return dot(k->out, k->probe, (int64_t)k->T * k->d);
}
TEST(embedding_backward_repeated_ids) {
    enum { V = 5, D = 4, T = 6 };
    const int32_t ids[T] = {3, 1, 3, 0, 3, 4};
    mr_rng r;
    mr_rng_seed(&r, 6);
    float table[V * D], out[T * D], probe[T * D], dt[V * D] = {0};
    fill(table, V * D, &r, 1);
    fill(probe, T * D, &r, 1);
    embedding_backward(dt, probe, ids, T, D);
    emb_ctx c = {table, out, probe, ids, T, V, D};
    double err = fd_check(emb_loss, &c, table, dt, V * D, 1, 1e-2f);
    CHECK_MSG(err < 1e-4, "embedding: %g", err);
}

/* ---- input gradient through a frozen stored weight: dx = dy · dequant(W) */
TEST(matmul_backward_input_every_weight_type) {
    enum { T = 3, ROWS = 40, COLS = 256 };
    const ggml_type types[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0,
                               GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K,
                               GGML_TYPE_Q6_K};
    mr_rng r;
    mr_rng_seed(&r, 7);
    float *w = malloc(sizeof(float) * ROWS * COLS), *deq = malloc(sizeof(float) * ROWS * COLS);
    float dy[T * ROWS], dx[T * COLS];
    fill(w, ROWS * COLS, &r, 0.1);
    fill(dy, T * ROWS, &r, 1);
    void *q = malloc((size_t)ROWS * COLS * 4);
    float *scratch = malloc(sizeof(float) * 16 * COLS);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const size_t rb = quant_row_bytes(types[i], COLS);
        for (int row = 0; row < ROWS; row++) {
            quantize_row_ref(types[i], w + row * COLS, (uint8_t *)q + row * rb, COLS);
            dequantize_row(types[i], (uint8_t *)q + row * rb, deq + row * COLS, COLS);
        }
        qmat W = {types[i], ROWS, COLS, q, 0};
        double worst = 0;
        for (int beta = 1; beta >= 0; beta--) { /* 1 accumulates onto 1.0; 0 overwrites (even NaN) */
            for (int j = 0; j < T * COLS; j++) dx[j] = beta ? 1.0f : NAN;
            matmul_backward_input(dx, dy, T, &W, (float)beta, scratch, 16 * COLS);
            for (int t = 0; t < T; t++)
                for (int c = 0; c < COLS; c++) {
                    double s = beta;
                    for (int o = 0; o < ROWS; o++) s += (double)dy[t * ROWS + o] * deq[o * COLS + c];
                    double d = fabs(s - dx[t * COLS + c]);
                    if (!(d <= worst)) worst = d;
                }
        }
        if (worst > 1e-4) {
            free(w), free(deq), free(q), free(scratch);
            CHECK_MSG(0, "%s: dx differs from dy · dequant(W) by %g", quant_type_name(types[i]), worst);
        }
    }
    free(w), free(deq), free(q), free(scratch);
}

int main(void) {
    RUN(rmsnorm_backward_finite_differences);
    RUN(rope_backward_adjacent_pairs);
    RUN(rope_backward_halves);
    RUN(attention_backward_grouped_heads_two_blocks);
    RUN(attention_backward_query_suffix);
    RUN(attention_one_query_matches_whole_sequence);
    RUN(attention_f16_cache_matches_rounded_floats);
    RUN(swiglu_backward_finite_differences);
    RUN(swiglu_matches_double_precision);
    RUN(lora_backward_finite_differences);
    RUN(lora_dropout_slices_and_gradient);
    RUN(embedding_backward_repeated_ids);
    RUN(matmul_backward_input_every_weight_type);
    return test_summary();
}
