/* LoRA training on the engine (llm_train_step_run): gradients against transformers' LoRA reference
 * (../shared/reference/hf/llama: logits, loss, every A and B gradient and the input
 * embedding gradient) and against finite differences on tiny random models (every
 * target, dropout, grouped-query attention, both RoPE layouts, quantized weights,
 * recomputation). */
#include "test.h"
#include "mllm4rec/llm.h"
#include "mllm4rec/safetensors.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double max_abs(const float *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

static double max_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fabs((double)a[i] - b[i]) > m ? fabs((double)a[i] - b[i]) : m;
    return m;
}

static int read_tensor(const st_file *f, const char *name, float *out, int64_t n, mr_error *e) {
    const st_tensor *t = st_find(f, name);
    if (!t) return mr_fail(e, MR_ERR_INPUT, "reference tensor %s missing", name);
    return st_read_f32(t, out, n, e);
}

/* logits[T][V] at every position with the state's model (adapter attached) */
static int all_logits(llm_state *s, const int32_t *ids, int64_t T, float *out, mr_error *e) {
    int64_t pos[64];
    for (int64_t t = 0; t < T; t++) pos[t] = t;
    llm_state_reset(s);
    return llm_forward(s, ids, T, pos, (int)T, out, e);
}

TEST(lora_gradients_match_transformers) {
    const char *dir = test_shared_path("reference/hf/llama");
    if (!dir) SKIP("../shared/reference/hf/llama absent");
    char lora_path[1024], out_path[1024];
    snprintf(lora_path, sizeof lora_path, "%s/lora.safetensors", dir);
    snprintf(out_path, sizeof out_path, "%s/lora_outputs.safetensors", dir);
    mr_error e = {0};
    llm_model m;
    CHECK_OK(llm_load(&m, dir, &e), &e);
    CHECK(m.cfg.n_embd == 64 && m.cfg.n_head_kv == 2 && m.cfg.head_dim == 16 && m.cfg.n_vocab == 256);
    llm_adapter lora;
    CHECK_OK(llm_adapter_init(&lora, &m, 8, 32.0f, 0.0f, (1u << LLM_LORA_Q) | (1u << LLM_LORA_V), 1, &e), &e);
    CHECK_OK(llm_adapter_attach(&m, &lora, 1.0f, &e), &e);
    st_file lf, of;
    CHECK_OK(st_open(&lf, lora_path, &e), &e);
    CHECK_OK(st_open(&of, out_path, &e), &e);
    char name[256];
    static const char *proj[2] = {"q_proj", "v_proj"};
    const int tg[2] = {LLM_LORA_Q, LLM_LORA_V};
    for (int l = 0; l < 2; l++)
        for (int p = 0; p < 2; p++) {
            llm_lora *lm = llm_adapter_get(&lora, l, tg[p]);
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.lora_A.weight", l, proj[p]);
            CHECK_OK(read_tensor(&lf, name, lm->a, (int64_t)8 * lm->in, &e), &e);
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.lora_B.weight", l, proj[p]);
            CHECK_OK(read_tensor(&lf, name, lm->b, (int64_t)lm->out * 8, &e), &e);
        }
    const int seq_a[7] = {50, 214, 41, 56, 207, 119, 155};
    const int seq_b[33] = {252, 146, 180, 26,  236, 157, 33,  174, 161, 239, 127, 29,  121, 189, 123, 115, 223,
                           72,  83,  204, 130, 249, 178, 53,  243, 254, 79,  40,  37,  169, 253, 198, 234};
    const double want_loss[2] = {6.330655574798584, 5.4525017738342285};
    double worst_grad = 0, worst_logit = 0, worst_loss = 0; /* relative to each tensor's max |value| */
    for (int recompute = 0; recompute < 2; recompute++) {
        llm_state ws;
        CHECK_OK(llm_state_init(&ws, &m, 40, 40, recompute ? LLM_STATE_RECOMPUTE : LLM_STATE_KEEP_ACTS, &e), &e);
        for (int s = 0; s < 2; s++) {
            const char *sn = s ? "seq_b" : "seq_a";
            const int T = s ? 33 : 7;
            const int *src = s ? seq_b : seq_a;
            int32_t ids[33];
            float emb[33 * 64], d_emb[33 * 64], want[33 * 256], got[33 * 256];
            for (int t = 0; t < T; t++) {
                ids[t] = src[t];
                llm_embed_token(&m, ids[t], emb + t * 64);
            }
            /* logits at every position (forward only, with the adapter) */
            CHECK_OK(all_logits(&ws, ids, T, got, &e), &e);
            snprintf(name, sizeof name, "%s.logits", sn);
            CHECK_OK(read_tensor(&of, name, want, (int64_t)T * 256, &e), &e);
            double dl = max_diff(got, want, (int64_t)T * 256);
            CHECK_MSG(dl < 1e-4, "%s logits differ by %g", sn, dl);
            worst_logit = dl > worst_logit ? dl : worst_logit;
            /* loss and gradients */
            llm_adapter_zero_grad(&lora);
            int64_t lp = T - 1;
            int32_t tgt = 77;
            llm_train_step st = {.emb = emb, .T = T, .loss_pos = &lp, .loss_target = &tgt, .n_loss = 1, .d_emb = d_emb};
            CHECK_OK(llm_train_step_run(&ws, &st, 1.0f, &e), &e);
            CHECK_NEAR(st.loss, want_loss[s], 1e-5);
            worst_loss = fabs(st.loss - want_loss[s]) > worst_loss ? fabs(st.loss - want_loss[s]) : worst_loss;
            snprintf(name, sizeof name, "%s.grad.inputs_embeds", sn);
            CHECK_OK(read_tensor(&of, name, want, (int64_t)T * 64, &e), &e);
            double de = max_diff(d_emb, want, (int64_t)T * 64), se = max_abs(want, (int64_t)T * 64);
            CHECK_MSG(de <= 1e-4 * se, "%s d inputs_embeds differs by %g (max %g)", sn, de, se);
            worst_grad = de / se > worst_grad ? de / se : worst_grad;
            for (int l = 0; l < 2; l++)
                for (int p = 0; p < 2; p++) {
                    llm_lora *lm = llm_adapter_get(&lora, l, tg[p]);
                    float ref[64 * 8];
                    for (int ab = 0; ab < 2; ab++) {
                        int64_t n = ab ? (int64_t)lm->out * 8 : (int64_t)8 * lm->in;
                        snprintf(name, sizeof name, "%s.grad.model.layers.%d.self_attn.%s.lora_%c.weight", sn, l, proj[p],
                                 ab ? 'B' : 'A');
                        CHECK_OK(read_tensor(&of, name, ref, n, &e), &e);
                        const float *g = ab ? lm->db : lm->da;
                        double d = max_diff(g, ref, n), sc = max_abs(ref, n);
                        CHECK_MSG(sc > 0 && d <= 1e-4 * sc, "%s: differs by %g (max |g| %g)", name, d, sc);
                        worst_grad = d / sc > worst_grad ? d / sc : worst_grad;
                    }
                }
        }
        llm_state_free(&ws);
    }
    printf("  transformers LoRA reference: max |logit diff| %.2g, |loss diff| %.2g, gradients (every A, B and the "
           "input embeddings) max diff / max |g| %.3g\n", worst_logit, worst_loss, worst_grad);
    st_close(&lf);
    st_close(&of);
    llm_free(&m);
    llm_adapter_free(&lora);
}

/* ---- tiny random models for finite differences ---- */

typedef struct tiny {
    llm_model m;
    llm_layer layers[2];
    float *buf;
    uint8_t *qbuf;
} tiny;

static void fill(float *p, int64_t n, mr_rng *r, double std, double mean) {
    for (int64_t i = 0; i < n; i++) p[i] = (float)(mean + std * mr_rng_normal(r));
}

static llm_linear *tiny_linear(tiny *t, int l, int k) {
    llm_layer *L = &t->layers[l];
    llm_linear *lin[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    return lin[k];
}

/* An engine model built in memory: 2 layers, 4 heads on 2 kv heads, rope_halves
 * selects the rotation layout, qwen_bias adds q/k/v biases. */
static void tiny_make(tiny *t, int rope_halves, int qwen_bias, uint64_t seed) {
    memset(t, 0, sizeof *t);
    llm_model *m = &t->m;
    const int D = 32, KV = 16, F = 64, V = 48;
    llm_config c = {.arch = qwen_bias ? LLM_ARCH_QWEN2 : LLM_ARCH_LLAMA, .n_vocab = V, .n_embd = D, .n_layer = 2,
                    .n_head = 4, .n_head_kv = 2, .head_dim = 8, .n_ff = F, .rms_eps = 1e-5f, .rope_base = 10000.0,
                    .rope_freq_scale = 1.0, .rope_dims = 8, .rope_halves = rope_halves, .has_qkv_bias = qwen_bias};
    m->cfg = c;
    m->layers = t->layers;
    m->bos_id = m->eos_id = m->eot_id = -1;
    int64_t total = 2 * V * D + D + 2 * (2 * D + D * D + 2 * KV * D + D * D + 3 * F * D + D + 2 * KV);
    t->buf = malloc((size_t)total * sizeof(float));
    mr_rng r;
    mr_rng_seed(&r, seed);
    float *p = t->buf;
#define TAKE(n) (p += (n), p - (n))
    float *emb = TAKE(V * D), *out = TAKE(V * D);
    fill(emb, V * D, &r, 0.5, 0);
    fill(out, V * D, &r, 0.3, 0);
    m->tok_embd = (llm_matrix){GGML_TYPE_F32, V, D, emb, 0};
    m->output = (llm_matrix){GGML_TYPE_F32, V, D, out, 0};
    float *on = TAKE(D);
    fill(on, D, &r, 0.1, 1);
    m->output_norm = on;
    for (int l = 0; l < 2; l++) {
        llm_layer *L = &t->layers[l];
        float *a = TAKE(D), *b = TAKE(D);
        fill(a, D, &r, 0.1, 1);
        fill(b, D, &r, 0.1, 1);
        L->attn_norm = a;
        L->ffn_norm = b;
        const int64_t rows[7] = {D, KV, KV, D, F, F, D}, cols[7] = {D, D, D, D, D, D, F};
        for (int k = 0; k < 7; k++) {
            float *w = TAKE(rows[k] * cols[k]);
            fill(w, rows[k] * cols[k], &r, 0.25, 0);
            tiny_linear(t, l, k)->w = (llm_matrix){GGML_TYPE_F32, rows[k], cols[k], w, 0};
        }
        float *bq = TAKE(D), *bk = TAKE(KV), *bv = TAKE(KV);
        fill(bq, D, &r, 0.1, 0);
        fill(bk, KV, &r, 0.1, 0);
        fill(bv, KV, &r, 0.1, 0);
        if (qwen_bias) {
            L->wq.bias = bq;
            L->wk.bias = bk;
            L->wv.bias = bv;
        }
    }
#undef TAKE
}

/* Quantizes every layer matrix to Q8_0 in place of its f32 pointer and writes the
 * dequantized values back into the f32 buffer (so both models hold equal weights). */
static void tiny_quantize_q8_0(tiny *t) {
    size_t total = 0;
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < 7; k++) total += (size_t)(tiny_linear(t, l, k)->w.rows * tiny_linear(t, l, k)->w.cols / 32) * 34;
    t->qbuf = malloc(total);
    uint8_t *q = t->qbuf;
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < 7; k++) {
            llm_matrix *w = &tiny_linear(t, l, k)->w;
            float *x = (float *)w->data;
            int64_t nb = w->rows * w->cols / 32;
            uint8_t *start = q;
            for (int64_t b = 0; b < nb; b++, q += 34) {
                float amax = 0;
                for (int j = 0; j < 32; j++) amax = fabsf(x[b * 32 + j]) > amax ? fabsf(x[b * 32 + j]) : amax;
                uint16_t dh = mr_f32_to_f16(amax / 127.0f);
                float d = mr_f16_to_f32(dh);
                memcpy(q, &dh, 2);
                for (int j = 0; j < 32; j++) {
                    int v = d > 0 ? (int)lrintf(x[b * 32 + j] / d) : 0;
                    v = v > 127 ? 127 : v < -127 ? -127 : v;
                    q[2 + j] = (uint8_t)(int8_t)v;
                    x[b * 32 + j] = d * (float)v;
                }
            }
            w->type = GGML_TYPE_Q8_0;
            w->data = start;
        }
}

static void tiny_free(tiny *t) {
    free(t->buf);
    free(t->qbuf);
}

static double step_loss(llm_state *ws, const float *emb, int T, int train, mr_error *e) {
    int64_t pos[2] = {T - 3, T - 2};
    int32_t tgt[2] = {5, 11};
    llm_train_step st = {.emb = emb, .T = T, .loss_pos = pos, .loss_target = tgt, .n_loss = 2, .train = train,
                         .dropout_seed = 99};
    if (llm_train_step_run(ws, &st, 1.0f, e)) return NAN;
    return st.loss;
}

static void finite_difference_case(int rope_halves, int qwen_bias, float dropout, int quantize, int T) {
    tiny t;
    tiny_make(&t, rope_halves, qwen_bias, 7 + rope_halves);
    if (quantize) tiny_quantize_q8_0(&t);
    mr_error e = {0};
    llm_model *m = &t.m;
    llm_adapter l;
    CHECK_OK(llm_adapter_init(&l, m, 4, 8.0f, dropout, (1u << LLM_LORA_N_TARGETS) - 1, 3, &e), &e);
    CHECK_OK(llm_adapter_attach(m, &l, 1.0f, &e), &e);
    mr_rng r;
    mr_rng_seed(&r, 11);
    for (int64_t i = 0; i < l.n_params; i++) l.buf[i] = (float)(0.3 * mr_rng_normal(&r)); /* B non-zero */
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    float *emb = malloc((size_t)T * 32 * sizeof(float)), *d_emb = malloc((size_t)T * 32 * sizeof(float));
    float *ep = malloc((size_t)T * 32 * sizeof(float)), *em = malloc((size_t)T * 32 * sizeof(float));
    for (int i = 0; i < T; i++) ids[i] = (int32_t)mr_rng_below(&r, 48);
    for (int i = 0; i < T; i++) llm_embed_token(m, ids[i], emb + i * 32);
    const int train = dropout > 0;
    llm_state wss, *ws = &wss;
    CHECK_OK(llm_state_init(ws, m, T, T, LLM_STATE_KEEP_ACTS, &e), &e);
    llm_adapter_zero_grad(&l);
    int64_t pos[2] = {T - 3, T - 2};
    int32_t tgt[2] = {5, 11};
    llm_train_step st = {.emb = emb, .T = T, .loss_pos = pos, .loss_target = tgt, .n_loss = 2, .train = train,
                         .dropout_seed = 99, .d_emb = d_emb};
    CHECK_OK(llm_train_step_run(ws, &st, 1.0f, &e), &e);
    float *grad = malloc((size_t)l.n_params * sizeof(float));
    memcpy(grad, l.buf + l.n_params, (size_t)l.n_params * sizeof(float));
    /* directional derivative per adapter matrix (A and B of each layer and target) and
     * for the input embeddings: (L(x + h d) - L(x - h d)) / 2h against <g, d> */
    const double h = 3e-3; /* 1e-2 left a 9% truncation error on a dropout mask */
    float *dir = malloc((size_t)(l.n_params > T * 32 ? l.n_params : T * 32) * sizeof(float));
    int checked = 0;
    for (int layer = 0; layer < 2; layer++)
        for (int tg = 0; tg < LLM_LORA_N_TARGETS; tg++)
            for (int ab = 0; ab < 2; ab++) {
                llm_lora *lm = llm_adapter_get(&l, layer, tg);
                float *p = ab ? lm->b : lm->a;
                const float *g = grad + ((ab ? lm->db : lm->da) - (l.buf + l.n_params));
                int64_t n = ab ? (int64_t)lm->out * l.r : (int64_t)l.r * lm->in;
                double gd = 0, nd = 0;
                for (int64_t i = 0; i < n; i++) {
                    dir[i] = (float)mr_rng_normal(&r);
                    gd += (double)g[i] * dir[i];
                    nd += (double)dir[i] * dir[i];
                }
                for (int64_t i = 0; i < n; i++) dir[i] /= (float)sqrt(nd);
                gd /= sqrt(nd);
                for (int64_t i = 0; i < n; i++) p[i] += (float)(h * dir[i]);
                double lp = step_loss(ws, emb, T, train, &e);
                for (int64_t i = 0; i < n; i++) p[i] -= (float)(2 * h * dir[i]);
                double lm2 = step_loss(ws, emb, T, train, &e);
                for (int64_t i = 0; i < n; i++) p[i] += (float)(h * dir[i]);
                double fd = (lp - lm2) / (2 * h);
                CHECK_MSG(fabs(fd - gd) <= 2e-3 + 2e-2 * fabs(gd),
                          "layer %d %s %c: finite difference %.6g vs gradient %.6g", layer, llm_lora_target_name(tg),
                          ab ? 'B' : 'A', fd, gd);
                checked++;
            }
    {
        double gd = 0, nd = 0;
        for (int i = 0; i < T * 32; i++) {
            dir[i] = (float)mr_rng_normal(&r);
            gd += (double)d_emb[i] * dir[i];
            nd += (double)dir[i] * dir[i];
        }
        for (int i = 0; i < T * 32; i++) {
            ep[i] = emb[i] + (float)(h * dir[i] / sqrt(nd));
            em[i] = emb[i] - (float)(h * dir[i] / sqrt(nd));
        }
        double fd = (step_loss(ws, ep, T, train, &e) - step_loss(ws, em, T, train, &e)) / (2 * h);
        gd /= sqrt(nd);
        CHECK_MSG(fabs(fd - gd) <= 2e-3 + 2e-2 * fabs(gd), "input embeddings: finite difference %.6g vs gradient %.6g",
                  fd, gd);
    }
    CHECK(checked == 28);
    /* recomputation gives the same loss and gradients (the finite differences
     * moved the parameters by rounding: recompute the reference first) */
    llm_state ws2;
    CHECK_OK(llm_state_init(&ws2, m, T, T, LLM_STATE_RECOMPUTE, &e), &e);
    llm_adapter_zero_grad(&l);
    CHECK_OK(llm_train_step_run(ws, &st, 1.0f, &e), &e);
    memcpy(grad, l.buf + l.n_params, (size_t)l.n_params * sizeof(float));
    llm_adapter_zero_grad(&l);
    llm_train_step st2 = st;
    CHECK_OK(llm_train_step_run(&ws2, &st2, 1.0f, &e), &e);
    CHECK_NEAR(st2.loss, st.loss, 1e-6);
    CHECK(max_diff(l.buf + l.n_params, grad, l.n_params) <= 1e-5 * max_abs(grad, l.n_params));
    /* without d_emb the backward stops at layer 0's adapters: the same gradients */
    llm_adapter_zero_grad(&l);
    llm_train_step st3 = st;
    st3.d_emb = NULL;
    CHECK_OK(llm_train_step_run(ws, &st3, 1.0f, &e), &e);
    CHECK(max_diff(l.buf + l.n_params, grad, l.n_params) <= 1e-6 * max_abs(grad, l.n_params));
    llm_state_free(&ws2);
    free(dir);
    free(grad);
    free(ids);
    free(emb);
    free(d_emb);
    free(ep);
    free(em);
    llm_state_free(ws);
    llm_adapter_free(&l);
    tiny_free(&t);
}

TEST(finite_differences_all_targets_rope_pairs) { finite_difference_case(0, 0, 0.0f, 0, 12); }
TEST(finite_differences_rope_halves_biases) { finite_difference_case(1, 1, 0.0f, 0, 12); }
TEST(finite_differences_with_dropout) { finite_difference_case(0, 0, 0.3f, 0, 12); }
TEST(finite_differences_q8_0_base) { finite_difference_case(0, 0, 0.0f, 1, 12); }
/* longer than one attention block (64 query rows): several blocks, both halves of the causal mask */
TEST(finite_differences_several_attention_blocks) { finite_difference_case(1, 0, 0.1f, 0, 300); }

/* In training (float activations, nn/matmul.h) a quantized base computes the same
 * as its dequantized f32 copy. */
TEST(quantized_base_equals_dequantized) {
    tiny a, b;
    tiny_make(&a, 0, 0, 5);
    tiny_make(&b, 0, 0, 5);
    tiny_quantize_q8_0(&b); /* b: q8_0; its f32 buffer now holds the dequantized values */
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < 7; k++) {
            const llm_matrix *w = &tiny_linear(&a, l, k)->w;
            memcpy((float *)w->data, b.buf + ((const float *)w->data - a.buf), (size_t)(w->rows * w->cols) * sizeof(float));
        }
    mr_error e = {0};
    llm_adapter la, lb;
    CHECK_OK(llm_adapter_init(&la, &a.m, 2, 4.0f, 0.0f, 1u << LLM_LORA_Q | 1u << LLM_LORA_DOWN, 1, &e), &e);
    CHECK_OK(llm_adapter_init(&lb, &b.m, 2, 4.0f, 0.0f, 1u << LLM_LORA_Q | 1u << LLM_LORA_DOWN, 1, &e), &e);
    CHECK_OK(llm_adapter_attach(&a.m, &la, 1.0f, &e), &e);
    CHECK_OK(llm_adapter_attach(&b.m, &lb, 1.0f, &e), &e);
    llm_state wa, wb;
    CHECK_OK(llm_state_init(&wa, &a.m, 8, 8, LLM_STATE_KEEP_ACTS, &e), &e);
    CHECK_OK(llm_state_init(&wb, &b.m, 8, 8, LLM_STATE_KEEP_ACTS, &e), &e);
    int32_t ids[8] = {1, 5, 9, 13, 2, 40, 7, 3};
    int64_t pos[1] = {7};
    float ga[48], gb[48];
    CHECK_OK(llm_forward(&wa, ids, 8, pos, 1, ga, &e), &e);
    CHECK_OK(llm_forward(&wb, ids, 8, pos, 1, gb, &e), &e);
    CHECK(max_diff(ga, gb, 48) < 1e-5);
    llm_state_free(&wa);
    llm_state_free(&wb);
    llm_adapter_free(&la);
    llm_adapter_free(&lb);
    tiny_free(&a);
    tiny_free(&b);
}

/* Heads in parallel (private dK/dV per thread) give the one-thread gradients. */
TEST(threads_give_the_same_gradients) {
    tiny t;
    tiny_make(&t, 1, 1, 21);
    mr_error e = {0};
    llm_adapter l;
    CHECK_OK(llm_adapter_init(&l, &t.m, 4, 8.0f, 0.0f, (1u << LLM_LORA_N_TARGETS) - 1, 3, &e), &e);
    CHECK_OK(llm_adapter_attach(&t.m, &l, 1.0f, &e), &e);
    mr_rng r;
    mr_rng_seed(&r, 5);
    for (int64_t i = 0; i < l.n_params; i++) l.buf[i] = (float)(0.3 * mr_rng_normal(&r));
    const int T = 200;
    int32_t *ids = malloc(T * sizeof *ids);
    for (int i = 0; i < T; i++) ids[i] = (int32_t)mr_rng_below(&r, 48);
    float *g1 = malloc((size_t)l.n_params * sizeof(float));
    double loss[2];
    for (int pass = 0; pass < 2; pass++) {
        omp_set_num_threads(pass ? 2 : 1);
        llm_state ws;
        CHECK_OK(llm_state_init(&ws, &t.m, T, T, LLM_STATE_KEEP_ACTS, &e), &e);
        llm_adapter_zero_grad(&l);
        int64_t pos[2] = {T - 3, T - 2};
        int32_t tgt[2] = {5, 11};
        llm_train_step st = {.ids = ids, .T = T, .loss_pos = pos, .loss_target = tgt, .n_loss = 2};
        CHECK_OK(llm_train_step_run(&ws, &st, 1.0f, &e), &e);
        loss[pass] = st.loss;
        if (!pass) memcpy(g1, l.buf + l.n_params, (size_t)l.n_params * sizeof(float));
        llm_state_free(&ws);
    }
    omp_set_num_threads(1);
    CHECK_NEAR(loss[0], loss[1], 1e-6);
    CHECK(max_diff(g1, l.buf + l.n_params, l.n_params) <= 1e-5 * max_abs(g1, l.n_params));
    free(g1);
    free(ids);
    llm_adapter_free(&l);
    tiny_free(&t);
}

TEST(targets_parse) {
    mr_error e = {0};
    unsigned m;
    CHECK_OK(llm_lora_parse_targets("q,v", &m, &e), &e);
    CHECK(m == ((1u << LLM_LORA_Q) | (1u << LLM_LORA_V)));
    CHECK_OK(llm_lora_parse_targets("gate,up,down,o,k", &m, &e), &e);
    CHECK(m == ((1u << LLM_LORA_GATE) | (1u << LLM_LORA_UP) | (1u << LLM_LORA_DOWN) | (1u << LLM_LORA_O) | (1u << LLM_LORA_K)));
    CHECK(llm_lora_parse_targets("q,x", &m, &e) == MR_ERR_USAGE && strstr(e.msg, "'x'"));
    CHECK(llm_lora_parse_targets("", &m, &e) == MR_ERR_USAGE);
}

int main(void) {
    /* tiny models: one thread (threads only add overhead at these sizes, and a busy
     * machine makes spinning OpenMP workers very slow) */
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    RUN(lora_gradients_match_transformers);
    RUN(finite_differences_all_targets_rope_pairs);
    RUN(finite_differences_rope_halves_biases);
    RUN(finite_differences_with_dropout);
    RUN(finite_differences_q8_0_base);
    RUN(finite_differences_several_attention_blocks);
    RUN(quantized_base_equals_dequantized);
    RUN(threads_give_the_same_gradients);
    RUN(targets_parse);
    return test_summary();
}
