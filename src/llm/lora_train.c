/* A Llama-family transformer for LoRA training: forward that keeps the activations
 * the backward needs, and a backward through every layer (RMSNorm, RoPE, grouped-
 * query attention, SwiGLU, residuals) that forms gradients only for the fp32 LoRA
 * adapters (and, when asked, the input embeddings). Frozen weights stay in their
 * file type (any type src/nn/quant.c reads) and are dequantized per matrix (in row
 * chunks) right before each BLAS product, as the engine does for inference.
 *
 * Shapes: T tokens, D = dim, KV = n_kv_head * head_dim, F = ffn, V = vocab, r = LoRA
 * rank. Activations are row-major [T, features]. */
#include "mllm4rec/ranker.h"
#include "mllm4rec/safetensors.h"
#include "nn/quant.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ weights */

int mr_lt_weight_rows(const mr_lt_weight *w, int64_t r0, int64_t r1, float *out, mr_error *e) {
    if (w->type == GGML_TYPE_F32) {
        memcpy(out, (const float *)w->data + r0 * w->cols, (size_t)((r1 - r0) * w->cols) * sizeof(float));
        return MR_OK;
    }
    if (!quant_supported(w->type))
        return mr_fail(e, MR_ERR_INPUT, "LoRA training: weight type %s is not supported", ggml_type_name(w->type));
    const size_t row_bytes = quant_row_bytes(w->type, w->cols);
    const uint8_t *base = (const uint8_t *)w->data;
    for (int64_t r = r0; r < r1; r++) dequantize_row(w->type, base + (size_t)r * row_bytes, out + (r - r0) * w->cols, w->cols);
    return MR_OK;
}

static int weight_type_ok(ggml_type t) { return t == GGML_TYPE_F32 || quant_supported(t); }

static int check_weight(const mr_lt_weight *w, const char *what, int layer, int64_t rows, int64_t cols, mr_error *e) {
    if (!w->data) return mr_fail(e, MR_ERR_INPUT, "LoRA training model: layer %d: %s missing", layer, what);
    if (w->rows != rows || w->cols != cols)
        return mr_fail(e, MR_ERR_INPUT, "LoRA training model: layer %d: %s is %lldx%lld, expected %lldx%lld", layer,
                       what, (long long)w->rows, (long long)w->cols, (long long)rows, (long long)cols);
    if (!weight_type_ok(w->type))
        return mr_fail(e, MR_ERR_INPUT, "LoRA training model: layer %d: %s has type %s, which cannot be dequantized",
                       layer, what, ggml_type_name(w->type));
    int be = 1, bb = 4;
    quant_block(w->type, &be, &bb);
    if (cols % be)
        return mr_fail(e, MR_ERR_INPUT, "LoRA training model: layer %d: %s rows of %lld are not whole blocks of %d",
                       layer, what, (long long)cols, be);
    return MR_OK;
}

const char *mr_lora_target_name(int t) {
    static const char *names[MR_LT_N_TARGETS] = {"q", "k", "v", "o", "gate", "up", "down"};
    return t >= 0 && t < MR_LT_N_TARGETS ? names[t] : "?";
}

int mr_lora_parse_targets(const char *s, unsigned *mask, mr_error *e) {
    *mask = 0;
    const char *p = s;
    while (*p) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        int found = -1;
        for (int t = 0; t < MR_LT_N_TARGETS; t++)
            if (strlen(mr_lora_target_name(t)) == len && !strncmp(p, mr_lora_target_name(t), len)) found = t;
        if (found < 0)
            return mr_fail(e, MR_ERR_USAGE, "--targets: unknown target '%.*s' (choose from q,k,v,o,gate,up,down)",
                           (int)len, p);
        *mask |= 1u << found;
        p += len;
        if (*p == ',') p++;
    }
    if (!*mask) return mr_fail(e, MR_ERR_USAGE, "--targets: no target given");
    return MR_OK;
}

static void target_shape(const mr_lt_model *m, int t, int *in, int *out) {
    const int kvd = m->n_kv_head * m->head_dim;
    switch (t) {
    case MR_LT_Q: *in = m->dim; *out = m->n_head * m->head_dim; break;
    case MR_LT_K:
    case MR_LT_V: *in = m->dim; *out = kvd; break;
    case MR_LT_O: *in = m->n_head * m->head_dim; *out = m->dim; break;
    case MR_LT_GATE:
    case MR_LT_UP: *in = m->dim; *out = m->ffn; break;
    default: *in = m->ffn; *out = m->dim; break;
    }
}

int mr_lt_model_check(const mr_lt_model *m, mr_error *e) {
    if (m->n_layer <= 0 || m->dim <= 0 || m->n_head <= 0 || m->n_kv_head <= 0 || m->head_dim <= 0 || m->ffn <= 0 ||
        m->vocab <= 0)
        return mr_fail(e, MR_ERR_INPUT, "LoRA training model: a size is zero or negative");
    if (m->n_head % m->n_kv_head)
        return mr_fail(e, MR_ERR_INPUT, "LoRA training model: %d heads not a multiple of %d kv heads", m->n_head,
                       m->n_kv_head);
    if (m->head_dim % 2) return mr_fail(e, MR_ERR_INPUT, "LoRA training model: odd head size %d", m->head_dim);
    int rc;
    if ((rc = check_weight(&m->tok_embd, "token embedding", -1, m->vocab, m->dim, e))) return rc;
    if ((rc = check_weight(&m->output, "output", -1, m->vocab, m->dim, e))) return rc;
    if (!m->out_norm) return mr_fail(e, MR_ERR_INPUT, "LoRA training model: output norm missing");
    for (int l = 0; l < m->n_layer; l++) {
        const mr_lt_layer *L = &m->layers[l];
        if (!L->attn_norm || !L->ffn_norm) return mr_fail(e, MR_ERR_INPUT, "LoRA training model: layer %d: norm missing", l);
        for (int t = 0; t < MR_LT_N_TARGETS; t++) {
            int in, out;
            target_shape(m, t, &in, &out);
            if ((rc = check_weight(&L->w[t], mr_lora_target_name(t), l, out, in, e))) return rc;
        }
    }
    return MR_OK;
}

/* ------------------------------------------------------------------ LoRA */

int mr_lora_init(mr_lora *l, const mr_lt_model *m, int r, float alpha, float dropout, unsigned targets, uint64_t seed,
                 mr_error *e) {
    memset(l, 0, sizeof *l);
    if (r <= 0) return mr_fail(e, MR_ERR_USAGE, "LoRA rank must be positive (got %d)", r);
    if (!(dropout >= 0.0f && dropout < 1.0f)) return mr_fail(e, MR_ERR_USAGE, "LoRA dropout must be in [0, 1)");
    if (!targets || targets >= (1u << MR_LT_N_TARGETS)) return mr_fail(e, MR_ERR_USAGE, "LoRA targets: none or unknown");
    l->r = r;
    l->alpha = alpha;
    l->dropout = dropout;
    l->targets = targets;
    l->n_layer = m->n_layer;
    l->mats = mr_calloc((size_t)m->n_layer * MR_LT_N_TARGETS, sizeof *l->mats, e);
    if (!l->mats) return e->code;
    int64_t total = 0;
    for (int t = 0; t < MR_LT_N_TARGETS; t++) {
        if (!(targets & (1u << t))) continue;
        int in, out;
        target_shape(m, t, &in, &out);
        total += (int64_t)m->n_layer * r * (in + out);
    }
    l->n_params = total;
    l->buf = mr_calloc((size_t)total * 2, sizeof(float), e);
    if (!l->buf) {
        free(l->mats);
        l->mats = NULL;
        return e->code;
    }
    float *p = l->buf, *g = l->buf + total;
    mr_rng rng;
    mr_rng_seed(&rng, seed);
    for (int layer = 0; layer < m->n_layer; layer++)
        for (int t = 0; t < MR_LT_N_TARGETS; t++) {
            if (!(targets & (1u << t))) continue;
            mr_lora_mat *lm = &l->mats[layer * MR_LT_N_TARGETS + t];
            target_shape(m, t, &lm->in, &lm->out);
            lm->A = p; p += (size_t)r * lm->in;
            lm->B = p; p += (size_t)lm->out * r;
            lm->dA = g; g += (size_t)r * lm->in;
            lm->dB = g; g += (size_t)lm->out * r;
            /* PEFT: kaiming_uniform_(a=sqrt(5)) on A gives U(-1/sqrt(in), 1/sqrt(in)); B = 0 */
            const double bound = 1.0 / sqrt((double)lm->in);
            for (int64_t i = 0; i < (int64_t)r * lm->in; i++)
                lm->A[i] = (float)((2.0 * mr_rng_uniform(&rng) - 1.0) * bound);
        }
    return MR_OK;
}

void mr_lora_free(mr_lora *l) {
    free(l->mats);
    free(l->buf);
    memset(l, 0, sizeof *l);
}

mr_lora_mat *mr_lora_get(mr_lora *l, int layer, int target) {
    if (!l || layer < 0 || layer >= l->n_layer || target < 0 || target >= MR_LT_N_TARGETS) return NULL;
    mr_lora_mat *m = &l->mats[layer * MR_LT_N_TARGETS + target];
    return m->A ? m : NULL;
}

void mr_lora_zero_grad(mr_lora *l) {
    if (l->buf) memset(l->buf + l->n_params, 0, (size_t)l->n_params * sizeof(float));
}

/* Loops smaller than this run on one thread: for small models a parallel region
 * costs more than it saves, worst on a busy machine. */
#define PAR_MIN 32768

/* Query rows per attention block (see attention_forward). */
#define ATT_BLOCK 128

/* ------------------------------------------------------------------ workspace */

typedef struct lt_acts {
    float *xn1, *rrms1;  /* [T,D], [T] attention RMSNorm output and 1/rms */
    float *q, *k, *v;    /* [T,D], [T,KV], [T,KV] after bias and RoPE (q, k) */
    float *att;          /* [T,D] attention output, input of wo */
    float *xmid;         /* [T,D] residual after attention */
    float *xn2, *rrms2;  /* [T,D], [T] */
    float *g, *u;        /* [T,F] gate and up projections (before SwiGLU) */
    float *la[MR_LT_N_TARGETS]; /* [T,r] LoRA drop(x) A^T per target */
} lt_acts;

struct mr_lt_ws {
    int max_T, recompute, n_sets, n_layer;
    float **xin;        /* n_layer + 1 buffers [T,D]: input of each layer; [n_layer] = last output */
    lt_acts *acts;      /* n_sets = recompute ? 1 : n_layer */
    float *rope_cos, *rope_sin; /* [max_T, head_dim/2] */
    float *h;           /* [T,F] SwiGLU output */
    int n_threads;      /* attention threads the scratch below was sized for */
    float *S, *dP;      /* [n_threads][ATT_BLOCK, T] attention probabilities and their gradient */
    float *dkv_priv;    /* [n_threads][2][T, KV] per-thread dK, dV */
    float *dres, *datt, *dq, *dk, *dv, *dxn; /* backward buffers */
    float *dg, *du;     /* [T,F] */
    float *dla;         /* [T,r] */
    float *xdrop;       /* [T,max_in] dropped LoRA input / its gradient */
    float *wbuf;        /* dequantized weight rows */
    int64_t wbuf_elems;
    float *xf, *dxf;    /* [n_pos, D] final-norm rows */
    float *rrmsf;       /* [n_pos] */
    float *lg;          /* [n_pos, V] logits */
    int max_pos;
    size_t bytes;
    float **owned;      /* every allocation, freed together */
    int n_owned, cap_owned;
    int lora_r;
    unsigned lora_targets;
    int inference_only; /* no backward buffers */
};

static float *ws_alloc(mr_lt_ws *w, size_t n, mr_error *e) {
    if (n == 0) n = 1;
    if (w->n_owned == w->cap_owned) {
        int cap = w->cap_owned ? w->cap_owned * 2 : 64;
        float **o = mr_realloc(w->owned, (size_t)cap * sizeof *o, e);
        if (!o) return NULL;
        w->owned = o;
        w->cap_owned = cap;
    }
    float *p = mr_alloc_aligned(n * sizeof(float), e);
    if (!p) return NULL;
    w->owned[w->n_owned++] = p;
    w->bytes += n * sizeof(float);
    return p;
}

void mr_lt_ws_free(mr_lt_ws *w) {
    if (!w) return;
    for (int i = 0; i < w->n_owned; i++) free(w->owned[i]);
    free(w->owned);
    free(w->xin);
    free(w->acts);
    free(w);
}

size_t mr_lt_ws_bytes(const mr_lt_ws *w) { return w ? w->bytes : 0; }

double mr_lt_ws_estimate(const mr_lt_model *m, const mr_lora *l, int max_T, int mode) {
    const double T = max_T, D = m->dim, KV = (double)m->n_kv_head * m->head_dim, QD = (double)m->n_head * m->head_dim,
                 F = m->ffn, r = l ? l->r : 0;
    int n_t = 0;
    for (int t = 0; t < MR_LT_N_TARGETS; t++)
        if (l && (l->targets & (1u << t))) n_t++;
    const double per_layer = T * (4 * D + 2 * QD + 2 * KV + 2 * F + 2 + r * n_t); /* one lt_acts set */
    const double sets = mode == MR_LT_KEEP_ALL ? m->n_layer : 1;
    const double xin = mode == MR_LT_INFERENCE ? 2 : m->n_layer + 1;
    const double scratch = T * (F + (D > F ? D : F)) + 2.0 * ATT_BLOCK * T + T * (4 * QD + 3 * KV + 2 * F);
    return 4.0 * (sets * per_layer + xin * T * D + scratch);
}

#define MAX_LOSS_POS 64

mr_lt_ws *mr_lt_ws_new(const mr_lt_model *m, const mr_lora *l, int max_T, int recompute, mr_error *e) {
    if (mr_lt_model_check(m, e)) return NULL;
    if (max_T <= 0) {
        mr_fail(e, MR_ERR_USAGE, "LoRA training: max tokens must be positive");
        return NULL;
    }
    mr_lt_ws *w = mr_calloc(1, sizeof *w, e);
    if (!w) return NULL;
    const size_t T = (size_t)max_T, D = (size_t)m->dim, KV = (size_t)m->n_kv_head * m->head_dim,
                 F = (size_t)m->ffn, QD = (size_t)m->n_head * m->head_dim;
    const int r = l ? l->r : 0;
    w->max_T = max_T;
    w->recompute = recompute;
    w->n_layer = m->n_layer;
    w->n_sets = recompute ? 1 : m->n_layer;
    w->inference_only = recompute == MR_LT_INFERENCE;
    w->lora_r = r;
    w->lora_targets = l ? l->targets : 0;
    const int infer = recompute == MR_LT_INFERENCE;
    const int n_xin = infer ? 2 : m->n_layer + 1;
    w->xin = mr_calloc((size_t)m->n_layer + 1, sizeof *w->xin, e);
    w->acts = mr_calloc((size_t)w->n_sets, sizeof *w->acts, e);
    if (!w->xin || !w->acts) goto fail;
    for (int i = 0; i < n_xin; i++)
        if (!(w->xin[i] = ws_alloc(w, T * D, e))) goto fail;
    for (int s = 0; s < w->n_sets; s++) {
        lt_acts *a = &w->acts[s];
        if (!(a->xn1 = ws_alloc(w, T * D, e)) || !(a->rrms1 = ws_alloc(w, T, e)) || !(a->q = ws_alloc(w, T * QD, e)) ||
            !(a->k = ws_alloc(w, T * KV, e)) || !(a->v = ws_alloc(w, T * KV, e)) || !(a->att = ws_alloc(w, T * QD, e)) ||
            !(a->xmid = ws_alloc(w, T * D, e)) || !(a->xn2 = ws_alloc(w, T * D, e)) ||
            !(a->rrms2 = ws_alloc(w, T, e)) || !(a->g = ws_alloc(w, T * F, e)) || !(a->u = ws_alloc(w, T * F, e)))
            goto fail;
        for (int t = 0; t < MR_LT_N_TARGETS; t++)
            if (l && (l->targets & (1u << t)))
                if (!(a->la[t] = ws_alloc(w, T * (size_t)r, e))) goto fail;
    }
    const size_t half = (size_t)m->head_dim / 2;
    if (!(w->rope_cos = ws_alloc(w, T * half, e)) || !(w->rope_sin = ws_alloc(w, T * half, e))) goto fail;
    for (size_t p = 0; p < T; p++)
        for (size_t i = 0; i < half; i++) {
            /* as HF: inv_freq = 1 / theta^(2i/d) in float32, angle = pos * inv_freq in float32 */
            float inv = (float)(1.0 / pow((double)m->rope_theta, (double)(2 * i) / (double)m->head_dim));
            if (m->rope_factors) inv /= m->rope_factors[i];
            float pos = (float)p / (m->rope_scale > 0 ? m->rope_scale : 1.0f);
            float ang = pos * inv;
            w->rope_cos[p * half + i] = cosf(ang);
            w->rope_sin[p * half + i] = sinf(ang);
        }
    size_t max_in = D > F ? D : F;
    if (QD > max_in) max_in = QD;
    w->n_threads = omp_get_max_threads();
    if (w->n_threads < 1) w->n_threads = 1;
    const size_t nth = (size_t)w->n_threads, blk = T < ATT_BLOCK ? T : ATT_BLOCK;
    if (!(w->h = ws_alloc(w, T * F, e)) || !(w->S = ws_alloc(w, nth * blk * T, e)) ||
        !(w->xdrop = ws_alloc(w, T * max_in, e)))
        goto fail;
    if (!infer &&
        (!(w->dP = ws_alloc(w, nth * blk * T, e)) || !(w->dkv_priv = ws_alloc(w, nth * 2 * T * KV, e)) || !(w->dres = ws_alloc(w, T * D, e)) || !(w->datt = ws_alloc(w, T * QD, e)) ||
         !(w->dq = ws_alloc(w, T * QD, e)) || !(w->dk = ws_alloc(w, T * KV, e)) || !(w->dv = ws_alloc(w, T * KV, e)) ||
         !(w->dxn = ws_alloc(w, T * D, e)) || !(w->dg = ws_alloc(w, T * F, e)) || !(w->du = ws_alloc(w, T * F, e)) ||
         !(w->dla = ws_alloc(w, T * (size_t)(r ? r : 1), e))))
        goto fail;
    /* the largest layer matrix; the output head is processed in chunks of this size */
    int64_t big = (int64_t)F * (int64_t)D;
    if ((int64_t)QD * (int64_t)D > big) big = (int64_t)QD * (int64_t)D;
    if (big < (int64_t)D * 256) big = (int64_t)D * 256;
    w->wbuf_elems = big;
    if (!(w->wbuf = ws_alloc(w, (size_t)big, e))) goto fail;
    w->max_pos = MAX_LOSS_POS;
    if (!(w->xf = ws_alloc(w, MAX_LOSS_POS * D, e)) || !(w->dxf = ws_alloc(w, MAX_LOSS_POS * D, e)) ||
        !(w->rrmsf = ws_alloc(w, MAX_LOSS_POS, e)) || !(w->lg = ws_alloc(w, (size_t)MAX_LOSS_POS * m->vocab, e)))
        goto fail;
    return w;
fail:
    mr_lt_ws_free(w);
    return NULL;
}

/* ------------------------------------------------------------------ matmuls over frozen weights */

/* y[T,rows] = x[T,cols] W^T (+ y when accumulate) */
static int frozen_forward(mr_lt_ws *ws, const mr_lt_weight *W, const float *x, int T, float *y, int accumulate,
                          mr_error *e) {
    const int rows = (int)W->rows, cols = (int)W->cols;
    if (W->type == GGML_TYPE_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, rows, cols, 1.0f, x, cols, (const float *)W->data, cols,
                    accumulate ? 1.0f : 0.0f, y, rows);
        return MR_OK;
    }
    int64_t chunk = ws->wbuf_elems / cols;
    if (chunk > rows) chunk = rows;
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t r1 = r0 + chunk < rows ? r0 + chunk : rows;
        int rc = mr_lt_weight_rows(W, r0, r1, ws->wbuf, e);
        if (rc) return rc;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, (int)(r1 - r0), cols, 1.0f, x, cols, ws->wbuf, cols,
                    accumulate ? 1.0f : 0.0f, y + r0, rows);
    }
    return MR_OK;
}

/* dx[T,cols] (+)= dy[T,rows] W */
static int frozen_backward(mr_lt_ws *ws, const mr_lt_weight *W, const float *dy, int T, float *dx, int accumulate,
                           mr_error *e) {
    const int rows = (int)W->rows, cols = (int)W->cols;
    if (W->type == GGML_TYPE_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, cols, rows, 1.0f, dy, rows, (const float *)W->data,
                    cols, accumulate ? 1.0f : 0.0f, dx, cols);
        return MR_OK;
    }
    int64_t chunk = ws->wbuf_elems / cols;
    if (chunk > rows) chunk = rows;
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t r1 = r0 + chunk < rows ? r0 + chunk : rows;
        int rc = mr_lt_weight_rows(W, r0, r1, ws->wbuf, e);
        if (rc) return rc;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, cols, (int)(r1 - r0), 1.0f, dy + r0, rows, ws->wbuf,
                    cols, (accumulate || r0 > 0) ? 1.0f : 0.0f, dx, cols);
    }
    return MR_OK;
}

/* Dropout mask of the LoRA input: a hash of (seed, layer, target, index), so the
 * backward regenerates exactly the forward's mask without storing it. */
static inline uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void dropout_apply(const float *x, float *out, int64_t n, float p, uint64_t seed, int layer, int target) {
    const uint64_t key = mix64(seed ^ ((uint64_t)(layer * MR_LT_N_TARGETS + target + 1) << 40));
    const uint64_t thresh = (uint64_t)((double)p * 18446744073709551616.0);
    const float keep_scale = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) out[i] = mix64(key + (uint64_t)i) < thresh ? 0.0f : x[i] * keep_scale;
}

typedef struct lora_ctx {
    const mr_lora *l;
    int train;
    uint64_t seed;
} lora_ctx;

/* y[T,out] = x W^T + s (drop(x) A^T) B^T; la[T,r] keeps drop(x) A^T for the backward. */
static int linear_forward(mr_lt_ws *ws, const mr_lt_weight *W, const lora_ctx *lc, int layer, int target,
                          const float *x, int T, float *y, float *la, mr_error *e) {
    int rc = frozen_forward(ws, W, x, T, y, 0, e);
    if (rc) return rc;
    const mr_lora_mat *lm = lc->l ? &lc->l->mats[layer * MR_LT_N_TARGETS + target] : NULL;
    if (!lm || !lm->A) return MR_OK;
    const int r = lc->l->r, in = lm->in, out = lm->out;
    const float s = lc->l->alpha / (float)r;
    const float *xd = x;
    if (lc->train && lc->l->dropout > 0.0f) {
        dropout_apply(x, ws->xdrop, (int64_t)T * in, lc->l->dropout, lc->seed, layer, target);
        xd = ws->xdrop;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, r, in, 1.0f, xd, in, lm->A, in, 0.0f, la, r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, out, r, s, la, r, lm->B, r, 1.0f, y, out);
    return MR_OK;
}

/* Given dy[T,out]: dx (+)= dy W + (s dy B A) through the dropout; dA, dB += gs x ... */
static int linear_backward(mr_lt_ws *ws, const mr_lt_weight *W, const lora_ctx *lc, int layer, int target,
                           const float *x, const float *la, const float *dy, int T, float *dx, int accumulate,
                           float gs, mr_error *e) {
    int rc = frozen_backward(ws, W, dy, T, dx, accumulate, e);
    if (rc) return rc;
    const mr_lora_mat *lm = lc->l ? &lc->l->mats[layer * MR_LT_N_TARGETS + target] : NULL;
    if (!lm || !lm->A) return MR_OK;
    const int r = lc->l->r, in = lm->in, out = lm->out;
    const float s = lc->l->alpha / (float)r;
    const int drop = lc->train && lc->l->dropout > 0.0f;
    /* dB[out,r] += gs s dy^T la */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, r, T, gs * s, dy, out, la, r, 1.0f, lm->dB, r);
    /* dla[T,r] = s dy B */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, r, out, s, dy, out, lm->B, r, 0.0f, ws->dla, r);
    const float *xd = x;
    if (drop) {
        dropout_apply(x, ws->xdrop, (int64_t)T * in, lc->l->dropout, lc->seed, layer, target);
        xd = ws->xdrop;
    }
    /* dA[r,in] += gs dla^T drop(x) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, T, gs, ws->dla, r, xd, in, 1.0f, lm->dA, in);
    if (!drop) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, in, r, 1.0f, ws->dla, r, lm->A, in, 1.0f, dx, in);
    } else {
        /* d drop(x) = dla A, then through the mask: the mask is where xdrop was kept */
        const int64_t n = (int64_t)T * in;
        float *tmp = ws->xdrop;
        /* recompute mask into tmp as 0 / keep_scale by dropping a vector of ones */
        const uint64_t key = mix64(lc->seed ^ ((uint64_t)(layer * MR_LT_N_TARGETS + target + 1) << 40));
        const uint64_t thresh = (uint64_t)((double)lc->l->dropout * 18446744073709551616.0);
        const float keep_scale = 1.0f / (1.0f - lc->l->dropout);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, in, r, 1.0f, ws->dla, r, lm->A, in, 0.0f, tmp, in);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++)
            if (mix64(key + (uint64_t)i) >= thresh) dx[i] += tmp[i] * keep_scale;
    }
    return MR_OK;
}

/* ------------------------------------------------------------------ layers */

/* y[T,D] = w * x / rms(x); rrms[T] = 1 / rms */
static void rmsnorm_forward(const float *x, const float *w, int T, int D, float eps, float *y, float *rrms) {
#pragma omp parallel for schedule(static) if ((int64_t)T * D > PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * D;
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)xt[i] * xt[i];
        float rr = 1.0f / sqrtf((float)(ss / D) + eps);
        if (rrms) rrms[t] = rr;
        float *yt = y + (size_t)t * D;
        for (int i = 0; i < D; i++) yt[i] = w[i] * (xt[i] * rr);
    }
}

/* dx[T,D] += d/dx of y = w x rr given dy (w frozen: no gradient formed) */
static void rmsnorm_backward(const float *x, const float *w, const float *rrms, const float *dy, int T, int D,
                             float *dx) {
#pragma omp parallel for schedule(static) if ((int64_t)T * D > PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * D, *dyt = dy + (size_t)t * D;
        const float rr = rrms[t];
        double dot = 0;
        for (int i = 0; i < D; i++) dot += (double)dyt[i] * w[i] * xt[i];
        const float c = (float)(dot * rr * rr * rr / D);
        float *dxt = dx + (size_t)t * D;
        for (int i = 0; i < D; i++) dxt[i] += dyt[i] * w[i] * rr - xt[i] * c;
    }
}

/* In-place rotation of each head of x[T, n_heads*hd]; inverse = rotation by -angle
 * (the backward of a rotation is its transpose). */
static void rope_apply(const mr_lt_model *m, const mr_lt_ws *ws, float *x, int T, int n_heads, int inverse) {
    const int hd = m->head_dim, half = hd / 2, width = n_heads * hd;
    const float sgn = inverse ? -1.0f : 1.0f;
#pragma omp parallel for schedule(static) if ((int64_t)T * width > PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *cs = ws->rope_cos + (size_t)t * half, *sn = ws->rope_sin + (size_t)t * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)t * width + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                int i0, i1;
                if (m->rope_mode == MR_ROPE_NEOX) {
                    i0 = i;
                    i1 = i + half;
                } else {
                    i0 = 2 * i;
                    i1 = 2 * i + 1;
                }
                const float a = v[i0], b = v[i1], c = cs[i], s = sgn * sn[i];
                v[i0] = a * c - b * s;
                v[i1] = a * s + b * c;
            }
        }
    }
}

/* Attention works on blocks of query rows: rows i0..i1-1 only see keys 0..i1-1, so
 * the causal half of the T x T products is never computed. Heads run in parallel
 * (one thread per head, single-threaded BLAS inside), each with its own block of
 * scores; in the backward each thread sums its heads' dK, dV privately. */

/* Pb[nb, ld] = causal softmax(Q_h K_kh^T / sqrt(hd)) for query rows [i0, i1) over
 * keys [0, i1); entries beyond the diagonal zero. */
static void attention_probs_block(const mr_lt_model *m, const float *q, const float *k, int h, int i0, int i1,
                                  float *Pb, int ld) {
    const int hd = m->head_dim, QD = m->n_head * hd, KV = m->n_kv_head * hd;
    const int kh = h / (m->n_head / m->n_kv_head);
    const float scale = 1.0f / sqrtf((float)hd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, i1 - i0, i1, hd, scale, q + (size_t)i0 * QD + (size_t)h * hd,
                QD, k + (size_t)kh * hd, KV, 0.0f, Pb, ld);
    for (int i = i0; i < i1; i++) {
        float *row = Pb + (size_t)(i - i0) * ld;
        float mx = row[0];
        for (int j = 1; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = 0;
        for (int j = 0; j <= i; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j <= i; j++) row[j] *= inv;
        for (int j = i + 1; j < i1; j++) row[j] = 0.0f;
    }
}

static int att_threads(const mr_lt_ws *ws, int n_head) { return ws->n_threads < n_head ? ws->n_threads : n_head; }

/* att[T,QD] = per head P_h V_kh */
static void attention_forward(const mr_lt_model *m, mr_lt_ws *ws, const lt_acts *a, int T) {
    const int hd = m->head_dim, QD = m->n_head * hd, KV = m->n_kv_head * hd;
#pragma omp parallel for schedule(static, 1) num_threads(att_threads(ws, m->n_head))
    for (int h = 0; h < m->n_head; h++) {
        float *Pb = ws->S + (size_t)omp_get_thread_num() * ATT_BLOCK * T;
        const int kh = h / (m->n_head / m->n_kv_head);
        for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
            const int i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T;
            attention_probs_block(m, a->q, a->k, h, i0, i1, Pb, T);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i1 - i0, hd, i1, 1.0f, Pb, T, a->v + (size_t)kh * hd,
                        KV, 0.0f, a->att + (size_t)i0 * QD + (size_t)h * hd, QD);
        }
    }
}

/* Given datt[T,QD]: dq[T,QD], dk[T,KV], dv[T,KV] (post-RoPE q, k); P recomputed
 * block by block. */
static void attention_backward(const mr_lt_model *m, mr_lt_ws *ws, const lt_acts *a, int T) {
    const int hd = m->head_dim, QD = m->n_head * hd, KV = m->n_kv_head * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    const int nt = att_threads(ws, m->n_head);
    memset(ws->dkv_priv, 0, (size_t)nt * 2 * T * KV * sizeof(float));
#pragma omp parallel for schedule(static, 1) num_threads(nt)
    for (int h = 0; h < m->n_head; h++) {
        const int tid = omp_get_thread_num();
        float *P = ws->S + (size_t)tid * ATT_BLOCK * T, *dP = ws->dP + (size_t)tid * ATT_BLOCK * T;
        float *dk = ws->dkv_priv + (size_t)tid * 2 * T * KV, *dv = dk + (size_t)T * KV;
        const int kh = h / (m->n_head / m->n_kv_head);
        for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
            const int i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T, nb = i1 - i0;
            const float *dO = ws->datt + (size_t)i0 * QD + (size_t)h * hd;
            attention_probs_block(m, a->q, a->k, h, i0, i1, P, T);
            /* dV_kh[0:i1] += P^T dO */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1, hd, nb, 1.0f, P, T, dO, QD, 1.0f,
                        dv + (size_t)kh * hd, KV);
            /* dP = dO V_kh[0:i1]^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, i1, hd, 1.0f, dO, QD, a->v + (size_t)kh * hd, KV,
                        0.0f, dP, T);
            /* dS = P (dP - rowsum(P dP)) */
            for (int i = i0; i < i1; i++) {
                float *p = P + (size_t)(i - i0) * T, *dp = dP + (size_t)(i - i0) * T;
                double dot = 0;
                for (int j = 0; j <= i; j++) dot += (double)p[j] * dp[j];
                for (int j = 0; j <= i; j++) dp[j] = p[j] * (dp[j] - (float)dot);
                for (int j = i + 1; j < i1; j++) dp[j] = 0.0f;
            }
            /* dQ_h[i0:i1] = scale dS K_kh[0:i1] ; dK_kh[0:i1] += scale dS^T Q_h[i0:i1] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, hd, i1, scale, dP, T, a->k + (size_t)kh * hd, KV,
                        0.0f, ws->dq + (size_t)i0 * QD + (size_t)h * hd, QD);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1, hd, nb, scale, dP, T,
                        a->q + (size_t)i0 * QD + (size_t)h * hd, QD, 1.0f, dk + (size_t)kh * hd, KV);
        }
    }
    /* sum the threads' private dK, dV (in thread order: deterministic for a thread count) */
    const int64_t n = (int64_t)T * KV;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float sk = 0, sv = 0;
        for (int t = 0; t < nt; t++) {
            sk += ws->dkv_priv[(size_t)t * 2 * n + i];
            sv += ws->dkv_priv[(size_t)t * 2 * n + n + i];
        }
        ws->dk[i] = sk;
        ws->dv[i] = sv;
    }
}

static inline float silu(float x) { return x / (1.0f + expf(-x)); }

static void swiglu_forward(const float *g, const float *u, float *h, int64_t n) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) h[i] = silu(g[i]) * u[i];
}

/* dh -> dg, du (dh may alias dg) */
static void swiglu_backward(const float *g, const float *u, const float *dh, float *dg, float *du, int64_t n) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float sg = 1.0f / (1.0f + expf(-g[i]));
        const float d = dh[i];
        du[i] = d * g[i] * sg;
        dg[i] = d * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
    }
}

static void add_bias(float *y, const float *b, int T, int n) {
    if (!b) return;
#pragma omp parallel for schedule(static) if ((int64_t)T * n > PAR_MIN)
    for (int t = 0; t < T; t++)
        for (int i = 0; i < n; i++) y[(size_t)t * n + i] += b[i];
}

/* One decoder layer: xout[T,D] from xin[T,D], activations into a. */
static int layer_forward(const mr_lt_model *m, mr_lt_ws *ws, const lora_ctx *lc, int layer, const float *xin,
                         lt_acts *a, float *xout, int T, mr_error *e) {
    const mr_lt_layer *L = &m->layers[layer];
    const int D = m->dim, QD = m->n_head * m->head_dim, KV = m->n_kv_head * m->head_dim, F = m->ffn;
    int rc;
    rmsnorm_forward(xin, L->attn_norm, T, D, m->norm_eps, a->xn1, a->rrms1);
    if ((rc = linear_forward(ws, &L->w[MR_LT_Q], lc, layer, MR_LT_Q, a->xn1, T, a->q, a->la[MR_LT_Q], e)) ||
        (rc = linear_forward(ws, &L->w[MR_LT_K], lc, layer, MR_LT_K, a->xn1, T, a->k, a->la[MR_LT_K], e)) ||
        (rc = linear_forward(ws, &L->w[MR_LT_V], lc, layer, MR_LT_V, a->xn1, T, a->v, a->la[MR_LT_V], e)))
        return rc;
    add_bias(a->q, L->bq, T, QD);
    add_bias(a->k, L->bk, T, KV);
    add_bias(a->v, L->bv, T, KV);
    rope_apply(m, ws, a->q, T, m->n_head, 0);
    rope_apply(m, ws, a->k, T, m->n_kv_head, 0);
    attention_forward(m, ws, a, T);
    if ((rc = linear_forward(ws, &L->w[MR_LT_O], lc, layer, MR_LT_O, a->att, T, a->xmid, a->la[MR_LT_O], e))) return rc;
    for (int64_t i = 0; i < (int64_t)T * D; i++) a->xmid[i] += xin[i];
    rmsnorm_forward(a->xmid, L->ffn_norm, T, D, m->norm_eps, a->xn2, a->rrms2);
    if ((rc = linear_forward(ws, &L->w[MR_LT_GATE], lc, layer, MR_LT_GATE, a->xn2, T, a->g, a->la[MR_LT_GATE], e)) ||
        (rc = linear_forward(ws, &L->w[MR_LT_UP], lc, layer, MR_LT_UP, a->xn2, T, a->u, a->la[MR_LT_UP], e)))
        return rc;
    swiglu_forward(a->g, a->u, ws->h, (int64_t)T * F);
    if ((rc = linear_forward(ws, &L->w[MR_LT_DOWN], lc, layer, MR_LT_DOWN, ws->h, T, xout, a->la[MR_LT_DOWN], e)))
        return rc;
    for (int64_t i = 0; i < (int64_t)T * D; i++) xout[i] += a->xmid[i];
    return MR_OK;
}

/* ws->dres holds d loss / d xout on entry and d loss / d xin on return. */
static int layer_backward(const mr_lt_model *m, mr_lt_ws *ws, const lora_ctx *lc, int layer, const float *xin,
                          const lt_acts *a, int T, float gs, mr_error *e) {
    const mr_lt_layer *L = &m->layers[layer];
    const int D = m->dim, F = m->ffn;
    int rc;
    /* feed-forward: xout = xmid + down(silu(g) u) */
    swiglu_forward(a->g, a->u, ws->h, (int64_t)T * F);
    if ((rc = linear_backward(ws, &L->w[MR_LT_DOWN], lc, layer, MR_LT_DOWN, ws->h, a->la[MR_LT_DOWN], ws->dres, T,
                              ws->dg, 0, gs, e)))
        return rc;
    swiglu_backward(a->g, a->u, ws->dg, ws->dg, ws->du, (int64_t)T * F);
    if ((rc = linear_backward(ws, &L->w[MR_LT_GATE], lc, layer, MR_LT_GATE, a->xn2, a->la[MR_LT_GATE], ws->dg, T,
                              ws->dxn, 0, gs, e)) ||
        (rc = linear_backward(ws, &L->w[MR_LT_UP], lc, layer, MR_LT_UP, a->xn2, a->la[MR_LT_UP], ws->du, T, ws->dxn, 1,
                              gs, e)))
        return rc;
    rmsnorm_backward(a->xmid, L->ffn_norm, a->rrms2, ws->dxn, T, D, ws->dres);
    /* attention: xmid = xin + o(att) */
    if ((rc = linear_backward(ws, &L->w[MR_LT_O], lc, layer, MR_LT_O, a->att, a->la[MR_LT_O], ws->dres, T, ws->datt, 0,
                              gs, e)))
        return rc;
    attention_backward(m, ws, a, T);
    rope_apply(m, ws, ws->dq, T, m->n_head, 1);
    rope_apply(m, ws, ws->dk, T, m->n_kv_head, 1);
    if ((rc = linear_backward(ws, &L->w[MR_LT_Q], lc, layer, MR_LT_Q, a->xn1, a->la[MR_LT_Q], ws->dq, T, ws->dxn, 0, gs,
                              e)) ||
        (rc = linear_backward(ws, &L->w[MR_LT_K], lc, layer, MR_LT_K, a->xn1, a->la[MR_LT_K], ws->dk, T, ws->dxn, 1, gs,
                              e)) ||
        (rc = linear_backward(ws, &L->w[MR_LT_V], lc, layer, MR_LT_V, a->xn1, a->la[MR_LT_V], ws->dv, T, ws->dxn, 1, gs,
                              e)))
        return rc;
    rmsnorm_backward(xin, L->attn_norm, a->rrms1, ws->dxn, T, D, ws->dres);
    return MR_OK;
}

/* ------------------------------------------------------------------ whole model */

static int embed(const mr_lt_model *m, const int32_t *ids, const float *emb, int T, float *x, mr_error *e) {
    if (emb) {
        memcpy(x, emb, (size_t)T * m->dim * sizeof(float));
        return MR_OK;
    }
    for (int t = 0; t < T; t++) {
        if (ids[t] < 0 || ids[t] >= m->vocab)
            return mr_fail(e, MR_ERR_INPUT, "token id %d at position %d is outside the vocabulary of %d", ids[t], t,
                           m->vocab);
        int rc = mr_lt_weight_rows(&m->tok_embd, ids[t], ids[t] + 1, x + (size_t)t * m->dim, e);
        if (rc) return rc;
    }
    return MR_OK;
}

static int run_forward(const mr_lt_model *m, const lora_ctx *lc, mr_lt_ws *ws, const int32_t *ids, const float *emb,
                       int T, int keep, mr_error *e) {
    if (lc->l && (lc->l->r != ws->lora_r || (lc->l->targets & ~ws->lora_targets) || lc->l->n_layer != m->n_layer))
        return mr_fail(e, MR_ERR_INTERNAL, "LoRA training: the workspace was made for another adapter shape");
    if (T <= 0 || T > ws->max_T)
        return mr_fail(e, MR_ERR_INPUT, "sequence of %d tokens (the workspace holds 1..%d)", T, ws->max_T);
    int rc = embed(m, ids, emb, T, ws->xin[0], e);
    if (rc) return rc;
    for (int l = 0; l < m->n_layer; l++) {
        lt_acts *a = &ws->acts[ws->recompute || !keep ? 0 : l];
        /* without keep, two layer buffers alternate (xin[0], xin[1]) */
        const float *xi = keep ? ws->xin[l] : ws->xin[l & 1];
        float *xo = keep ? ws->xin[l + 1] : ws->xin[(l + 1) & 1];
        if ((rc = layer_forward(m, ws, lc, l, xi, a, xo, T, e))) return rc;
    }
    return MR_OK;
}

static const float *final_hidden(const mr_lt_model *m, const mr_lt_ws *ws, int keep) {
    return keep ? ws->xin[m->n_layer] : ws->xin[m->n_layer & 1];
}

/* Final norm and the output head at n_pos positions: lg[n_pos, V]. */
static int head_forward(const mr_lt_model *m, mr_lt_ws *ws, const float *x, const int *pos, int n_pos, int T,
                        mr_error *e) {
    const int D = m->dim;
    if (n_pos <= 0 || n_pos > ws->max_pos)
        return mr_fail(e, MR_ERR_USAGE, "%d output positions (1..%d allowed)", n_pos, ws->max_pos);
    for (int i = 0; i < n_pos; i++) {
        if (pos[i] < 0 || pos[i] >= T) return mr_fail(e, MR_ERR_INPUT, "output position %d outside 0..%d", pos[i], T - 1);
        memcpy(ws->xf + (size_t)i * D, x + (size_t)pos[i] * D, (size_t)D * sizeof(float));
    }
    rmsnorm_forward(ws->xf, m->out_norm, n_pos, D, m->norm_eps, ws->dxf, ws->rrmsf);
    return frozen_forward(ws, &m->output, ws->dxf, n_pos, ws->lg, 0, e);
}

int mr_lt_forward(const mr_lt_model *m, const mr_lora *l, mr_lt_ws *ws, const int32_t *ids, const float *emb, int T,
                  const int *pos, int n_pos, float *logits, mr_error *e) {
    lora_ctx lc = {l, 0, 0};
    int rc = run_forward(m, &lc, ws, ids, emb, T, 0, e);
    if (rc) return rc;
    if ((rc = head_forward(m, ws, final_hidden(m, ws, 0), pos, n_pos, T, e))) return rc;
    memcpy(logits, ws->lg, (size_t)n_pos * m->vocab * sizeof(float));
    return MR_OK;
}

int mr_lt_forward_backward(const mr_lt_model *m, mr_lora *l, mr_lt_ws *ws, mr_lt_step *st, float grad_scale,
                           mr_error *e) {
    const int T = st->T, D = m->dim, V = m->vocab;
    if (ws->inference_only) return mr_fail(e, MR_ERR_INTERNAL, "LoRA training: an inference workspace has no backward");
    lora_ctx lc = {l, st->train, st->dropout_seed};
    int rc = run_forward(m, &lc, ws, st->ids, st->emb, T, 1, e);
    if (rc) return rc;
    if ((rc = head_forward(m, ws, final_hidden(m, ws, 1), st->loss_pos, st->n_loss, T, e))) return rc;
    /* cross-entropy, mean over the terms; d logits into lg in place */
    double loss = 0;
    for (int i = 0; i < st->n_loss; i++) {
        float *lg = ws->lg + (size_t)i * V;
        const int32_t tgt = st->loss_target[i];
        if (tgt < 0 || tgt >= V) return mr_fail(e, MR_ERR_INPUT, "loss target id %d outside the vocabulary", tgt);
        if (st->logits) memcpy(st->logits + (size_t)i * V, lg, (size_t)V * sizeof(float));
        float mx = lg[0];
        for (int j = 1; j < V; j++) mx = lg[j] > mx ? lg[j] : mx;
        double sum = 0;
        for (int j = 0; j < V; j++) sum += exp((double)(lg[j] - mx));
        const double lse = mx + log(sum);
        loss += lse - lg[tgt];
        for (int j = 0; j < V; j++) lg[j] = (float)(exp((double)lg[j] - lse) / st->n_loss);
        lg[tgt] -= 1.0f / (float)st->n_loss;
    }
    st->loss = (float)(loss / st->n_loss);
    /* d xf = dlogits W_out, then through the final norm into dres at the positions */
    float *dnorm = ws->dxf; /* the normed rows are no longer needed */
    if ((rc = frozen_backward(ws, &m->output, ws->lg, st->n_loss, dnorm, 0, e))) return rc;
    memset(ws->dres, 0, (size_t)T * D * sizeof(float));
    for (int i = 0; i < st->n_loss; i++)
        rmsnorm_backward(ws->xf + (size_t)i * D, m->out_norm, ws->rrmsf + i, dnorm + (size_t)i * D, 1, D,
                         ws->dres + (size_t)st->loss_pos[i] * D);
    for (int layer = m->n_layer - 1; layer >= 0; layer--) {
        lt_acts *a = &ws->acts[ws->recompute ? 0 : layer];
        if (ws->recompute) {
            /* rebuild this layer's activations from its saved input; the output goes to
             * a scratch that is not read (xin[layer+1] is no longer needed) */
            if ((rc = layer_forward(m, ws, &lc, layer, ws->xin[layer], a, ws->xin[layer + 1], T, e))) return rc;
        }
        if ((rc = layer_backward(m, ws, &lc, layer, ws->xin[layer], a, T, grad_scale, e))) return rc;
    }
    if (st->d_emb) memcpy(st->d_emb, ws->dres, (size_t)T * D * sizeof(float));
    return MR_OK;
}
