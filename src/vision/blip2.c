/* BLIP-2: vision transformer, Q-Former, language projection, OPT; the layer
 * order and conventions of transformers 4.33 modeling_blip_2.py.
 *
 * Vision (pre-LN ViT):  x = [cls ; patches W_patch^T + b] + pos
 *   per layer: x += proj(attn(qkv(LN1 x)));  x += fc2(gelu(fc1(LN2 x)))
 *   last_hidden = post_LN(x)
 * Q-Former (post-LN BERT): x = LN(query_tokens)
 *   per layer: x = LN(x + dense(selfattn(x)))
 *              every cross_attention_frequency-th layer (l % f == 0):
 *              x = LN(x + dense(attn(q = x, k = v = image features)))
 *              x = LN(x + fc2(gelu(fc1 x)))          (the query feed-forward)
 * soft prompt = language_projection(x); OPT reads [soft prompt ; prompt ids]. */
#include "mllm4rec/blip2.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "vision/opt.h"

typedef struct vit_layer {
    vx_weight ln1_w, ln1_b, qkv, qkv_b, proj, proj_b, ln2_w, ln2_b, fc1, fc1_b, fc2, fc2_b;
} vit_layer;

typedef struct qf_attn {
    vx_weight q, qb, k, kb, v, vb, o, ob, ln_w, ln_b;
} qf_attn;

typedef struct qf_layer {
    qf_attn self, cross;
    int has_cross;
    vx_weight fc1, fc1_b, fc2, fc2_b, ln_w, ln_b;
} qf_layer;

typedef struct vit_config {
    int hidden, inter, layers, heads, image_size, patch_size, qkv_bias;
    float eps;
    vx_act act;
} vit_config;

typedef struct qf_config {
    int hidden, inter, layers, heads, cross_freq, enc_hidden;
    float eps;
    vx_act act;
} qf_config;

struct mr_blip2 {
    mr_blip2_info info;
    int small; /* run single-threaded (see vx_threads_single) */
    double last_prefill_s, last_decode_s; /* timings of the last generation */
    mr_image_processor proc;
    vit_config vc;
    qf_config qc;
    st_set set;
    /* vision */
    vx_weight patch_w, patch_b, cls, pos, post_w, post_b;
    vit_layer *vl;
    /* q-former */
    vx_weight query_tokens, qln_w, qln_b;
    qf_layer *ql;
    vx_weight lp_w, lp_b;
    opt_model lm;
    vx_scratch scratch;
    /* work buffers */
    float *v_x, *v_xn, *v_qkv, *v_att, *v_ff, *v_scores, *v_patches, *v_last;
    float *q_x, *q_a, *q_b, *q_kv, *q_ff, *q_scores;
    float *soft;
};

static int parse_vision(vit_config *c, json_t *obj, mr_error *e) {
    const char *w = "config.json vision_config", *act = "gelu";
    *c = (vit_config){1408, 6144, 39, 16, 224, 14, 1, 1e-5f, VX_ACT_GELU};
    int rc;
    if ((rc = vx_cfg_int(obj, "hidden_size", &c->hidden, w, e)) ||
        (rc = vx_cfg_int(obj, "intermediate_size", &c->inter, w, e)) ||
        (rc = vx_cfg_int(obj, "num_hidden_layers", &c->layers, w, e)) ||
        (rc = vx_cfg_int(obj, "num_attention_heads", &c->heads, w, e)) ||
        (rc = vx_cfg_int(obj, "image_size", &c->image_size, w, e)) ||
        (rc = vx_cfg_int(obj, "patch_size", &c->patch_size, w, e)) ||
        (rc = vx_cfg_bool(obj, "qkv_bias", &c->qkv_bias, w, e)) ||
        (rc = vx_cfg_float(obj, "layer_norm_eps", &c->eps, w, e)) || (rc = vx_cfg_str(obj, "hidden_act", &act, w, e)))
        return rc;
    if (vx_act_parse(act, &c->act)) return mr_fail(e, MR_ERR_INPUT, "%s: hidden_act \"%s\" is not supported", w, act);
    if (c->hidden <= 0 || c->heads <= 0 || c->hidden % c->heads || c->inter <= 0 || c->layers <= 0 ||
        c->patch_size <= 0 || c->image_size <= 0 || c->image_size % c->patch_size)
        return mr_fail(e, MR_ERR_INPUT, "%s: bad sizes (hidden %d, heads %d, image %d, patch %d)", w, c->hidden,
                       c->heads, c->image_size, c->patch_size);
    return MR_OK;
}

static int parse_qformer(qf_config *c, json_t *obj, int vision_hidden, mr_error *e) {
    const char *w = "config.json qformer_config", *act = "gelu", *pos = "absolute";
    *c = (qf_config){768, 3072, 12, 12, 2, 1408, 1e-12f, VX_ACT_GELU};
    int rc;
    if ((rc = vx_cfg_int(obj, "hidden_size", &c->hidden, w, e)) ||
        (rc = vx_cfg_int(obj, "intermediate_size", &c->inter, w, e)) ||
        (rc = vx_cfg_int(obj, "num_hidden_layers", &c->layers, w, e)) ||
        (rc = vx_cfg_int(obj, "num_attention_heads", &c->heads, w, e)) ||
        (rc = vx_cfg_int(obj, "cross_attention_frequency", &c->cross_freq, w, e)) ||
        (rc = vx_cfg_float(obj, "layer_norm_eps", &c->eps, w, e)) || (rc = vx_cfg_str(obj, "hidden_act", &act, w, e)) ||
        (rc = vx_cfg_str(obj, "position_embedding_type", &pos, w, e)))
        return rc;
    /* Blip2Config overwrites encoder_hidden_size with the vision hidden size. */
    c->enc_hidden = vision_hidden;
    if (vx_act_parse(act, &c->act)) return mr_fail(e, MR_ERR_INPUT, "%s: hidden_act \"%s\" is not supported", w, act);
    if (c->hidden <= 0 || c->heads <= 0 || c->hidden % c->heads || c->inter <= 0 || c->layers <= 0 ||
        c->cross_freq <= 0)
        return mr_fail(e, MR_ERR_INPUT, "%s: bad sizes (hidden %d, heads %d, cross_attention_frequency %d)", w,
                       c->hidden, c->heads, c->cross_freq);
    return MR_OK;
}

static int ld(vx_loader *L, vx_weight *w, int64_t r, int64_t c, int raw, mr_error *e, const char *fmt, ...)
    MR_PRINTF(7, 8);
static int ld(vx_loader *L, vx_weight *w, int64_t r, int64_t c, int raw, mr_error *e, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return vx_load(L, w, name, r, c, raw, e);
}

/* The fused qkv bias: transformers stores qkv.bias (q ; k ; v), whose k third
 * is zero in real checkpoints but need not be; LAVIS-style checkpoints store
 * q_bias and v_bias with an implicit zero k bias. */
static int load_qkv_bias(vx_loader *L, vx_weight *w, int E, int l, int qkv_bias, mr_error *e) {
    char name[256], qn[256], vn[256];
    snprintf(name, sizeof name, "vision_model.encoder.layers.%d.self_attn.qkv.bias", l);
    snprintf(qn, sizeof qn, "vision_model.encoder.layers.%d.self_attn.q_bias", l);
    snprintf(vn, sizeof vn, "vision_model.encoder.layers.%d.self_attn.v_bias", l);
    memset(w, 0, sizeof *w);
    if (vx_has(L, name)) return vx_load(L, w, name, 1, 3 * (int64_t)E, 0, e);
    if (vx_has(L, qn) && vx_has(L, vn)) {
        vx_weight q, v;
        int rc = vx_load(L, &q, qn, 1, E, 0, e);
        if (!rc) rc = vx_load(L, &v, vn, 1, E, 0, e);
        if (rc) return rc;
        w->owned = mr_calloc(3 * (size_t)E, sizeof(float), e);
        if (w->owned) {
            memcpy(w->owned, q.f32, sizeof(float) * E);
            memcpy(w->owned + 2 * E, v.f32, sizeof(float) * E);
        }
        vx_weight_free(&q);
        vx_weight_free(&v);
        if (!w->owned) return MR_ERR_INTERNAL;
        w->f32 = w->owned;
        w->rows = 1;
        w->cols = 3 * E;
        return MR_OK;
    }
    if (qkv_bias) return mr_fail(e, MR_ERR_INPUT, "tensor '%s' (or q_bias and v_bias) is missing", name);
    return MR_OK; /* no bias */
}

static int load_qf_attn(vx_loader *L, qf_attn *a, const char *p, int H, int kv_in, mr_error *e) {
    int rc;
    if ((rc = ld(L, &a->q, H, H, 1, e, "%s.attention.query.weight", p)) ||
        (rc = ld(L, &a->qb, 1, H, 0, e, "%s.attention.query.bias", p)) ||
        (rc = ld(L, &a->k, H, kv_in, 1, e, "%s.attention.key.weight", p)) ||
        (rc = ld(L, &a->kb, 1, H, 0, e, "%s.attention.key.bias", p)) ||
        (rc = ld(L, &a->v, H, kv_in, 1, e, "%s.attention.value.weight", p)) ||
        (rc = ld(L, &a->vb, 1, H, 0, e, "%s.attention.value.bias", p)) ||
        (rc = ld(L, &a->o, H, H, 1, e, "%s.output.dense.weight", p)) ||
        (rc = ld(L, &a->ob, 1, H, 0, e, "%s.output.dense.bias", p)) ||
        (rc = ld(L, &a->ln_w, 1, H, 0, e, "%s.output.LayerNorm.weight", p)) ||
        (rc = ld(L, &a->ln_b, 1, H, 0, e, "%s.output.LayerNorm.bias", p)))
        return rc;
    return MR_OK;
}

static int load_weights(mr_blip2 *m, mr_error *e) {
    vx_loader L = {&m->set, 0, 0};
    /* keep F16/BF16 matrices raw once their fp32 copies would pass 2 GiB */
    L.convert_limit = vx_convert_limit_override != UINT64_MAX ? vx_convert_limit_override : 2ull << 30;
    const vit_config *vc = &m->vc;
    const qf_config *qc = &m->qc;
    int E = vc->hidden, P = vc->patch_size, G = vc->image_size / P, T = G * G + 1, rc;
    if ((rc = ld(&L, &m->patch_w, E, 3 * (int64_t)P * P, 1, e, "vision_model.embeddings.patch_embedding.weight")) ||
        (rc = ld(&L, &m->patch_b, 1, E, 0, e, "vision_model.embeddings.patch_embedding.bias")) ||
        (rc = ld(&L, &m->cls, 1, E, 0, e, "vision_model.embeddings.class_embedding")) ||
        (rc = ld(&L, &m->pos, 1, (int64_t)T * E, 0, e, "vision_model.embeddings.position_embedding")) ||
        (rc = ld(&L, &m->post_w, 1, E, 0, e, "vision_model.post_layernorm.weight")) ||
        (rc = ld(&L, &m->post_b, 1, E, 0, e, "vision_model.post_layernorm.bias")))
        return rc;
    m->vl = mr_calloc(vc->layers, sizeof(vit_layer), e);
    m->ql = mr_calloc(qc->layers, sizeof(qf_layer), e);
    if (!m->vl || !m->ql) return MR_ERR_INTERNAL;
    for (int l = 0; l < vc->layers; l++) {
        vit_layer *y = &m->vl[l];
        const char *p = "vision_model.encoder.layers";
        if ((rc = ld(&L, &y->ln1_w, 1, E, 0, e, "%s.%d.layer_norm1.weight", p, l)) ||
            (rc = ld(&L, &y->ln1_b, 1, E, 0, e, "%s.%d.layer_norm1.bias", p, l)) ||
            (rc = ld(&L, &y->qkv, 3 * (int64_t)E, E, 1, e, "%s.%d.self_attn.qkv.weight", p, l)) ||
            (rc = load_qkv_bias(&L, &y->qkv_b, E, l, vc->qkv_bias, e)) ||
            (rc = ld(&L, &y->proj, E, E, 1, e, "%s.%d.self_attn.projection.weight", p, l)) ||
            (rc = ld(&L, &y->proj_b, 1, E, 0, e, "%s.%d.self_attn.projection.bias", p, l)) ||
            (rc = ld(&L, &y->ln2_w, 1, E, 0, e, "%s.%d.layer_norm2.weight", p, l)) ||
            (rc = ld(&L, &y->ln2_b, 1, E, 0, e, "%s.%d.layer_norm2.bias", p, l)) ||
            (rc = ld(&L, &y->fc1, vc->inter, E, 1, e, "%s.%d.mlp.fc1.weight", p, l)) ||
            (rc = ld(&L, &y->fc1_b, 1, vc->inter, 0, e, "%s.%d.mlp.fc1.bias", p, l)) ||
            (rc = ld(&L, &y->fc2, E, vc->inter, 1, e, "%s.%d.mlp.fc2.weight", p, l)) ||
            (rc = ld(&L, &y->fc2_b, 1, E, 0, e, "%s.%d.mlp.fc2.bias", p, l)))
            return rc;
    }
    int H = qc->hidden, nq = m->info.n_query;
    if ((rc = ld(&L, &m->query_tokens, 1, (int64_t)nq * H, 0, e, "query_tokens")) ||
        (rc = ld(&L, &m->qln_w, 1, H, 0, e, "qformer.layernorm.weight")) ||
        (rc = ld(&L, &m->qln_b, 1, H, 0, e, "qformer.layernorm.bias")))
        return rc;
    for (int l = 0; l < qc->layers; l++) {
        qf_layer *y = &m->ql[l];
        char p[128];
        snprintf(p, sizeof p, "qformer.encoder.layer.%d.attention", l);
        if ((rc = load_qf_attn(&L, &y->self, p, H, H, e))) return rc;
        y->has_cross = l % qc->cross_freq == 0;
        if (y->has_cross) {
            snprintf(p, sizeof p, "qformer.encoder.layer.%d.crossattention", l);
            if ((rc = load_qf_attn(&L, &y->cross, p, H, qc->enc_hidden, e))) return rc;
        }
        const char *q = "qformer.encoder.layer";
        if ((rc = ld(&L, &y->fc1, qc->inter, H, 1, e, "%s.%d.intermediate_query.dense.weight", q, l)) ||
            (rc = ld(&L, &y->fc1_b, 1, qc->inter, 0, e, "%s.%d.intermediate_query.dense.bias", q, l)) ||
            (rc = ld(&L, &y->fc2, H, qc->inter, 1, e, "%s.%d.output_query.dense.weight", q, l)) ||
            (rc = ld(&L, &y->fc2_b, 1, H, 0, e, "%s.%d.output_query.dense.bias", q, l)) ||
            (rc = ld(&L, &y->ln_w, 1, H, 0, e, "%s.%d.output_query.LayerNorm.weight", q, l)) ||
            (rc = ld(&L, &y->ln_b, 1, H, 0, e, "%s.%d.output_query.LayerNorm.bias", q, l)))
            return rc;
    }
    int TH = m->lm.c.hidden;
    if ((rc = ld(&L, &m->lp_w, TH, H, 1, e, "language_projection.weight")) ||
        (rc = ld(&L, &m->lp_b, 1, TH, 0, e, "language_projection.bias")))
        return rc;
    opt_config oc = m->lm.c;
    if ((rc = opt_load(&m->lm, &L, &oc, "language_model.model.decoder.", "language_model.lm_head.weight", e)))
        return rc;
    (void)T;
    return MR_OK;
}

static int alloc_buffers(mr_blip2 *m, mr_error *e) {
    const vit_config *vc = &m->vc;
    const qf_config *qc = &m->qc;
    size_t T = m->info.vision_tokens, E = vc->hidden, P = vc->patch_size, nq = m->info.n_query, H = qc->hidden;
    size_t kvmax = T > nq ? T : nq;
#define A(ptr, n)                                        \
    do {                                                 \
        (ptr) = mr_alloc_aligned(sizeof(float) * (n), e); \
        if (!(ptr)) return MR_ERR_INTERNAL;              \
    } while (0)
    A(m->v_x, T * E);
    A(m->v_xn, T * E);
    A(m->v_qkv, T * 3 * E);
    A(m->v_att, T * E);
    A(m->v_ff, T * vc->inter);
    A(m->v_scores, (size_t)vc->heads * T * T);
    A(m->v_patches, (T - 1) * 3 * P * P);
    A(m->v_last, T * E);
    A(m->q_x, nq * H);
    A(m->q_a, nq * H);
    A(m->q_b, nq * H);
    A(m->q_kv, 2 * kvmax * H);
    A(m->q_ff, nq * qc->inter);
    A(m->q_scores, (size_t)qc->heads * nq * kvmax);
    A(m->soft, nq * (size_t)m->lm.c.hidden);
#undef A
    return MR_OK;
}

int mr_blip2_load(mr_blip2 **out, const char *dir, mr_error *e) {
    *out = NULL;
    mr_blip2 *m = mr_calloc(1, sizeof *m, e);
    if (!m) return MR_ERR_INTERNAL;
    char *cfg_path = mr_path_join(dir, "config.json", e);
    if (!cfg_path) {
        free(m);
        return MR_ERR_INTERNAL;
    }
    json_error_t je;
    json_t *root = json_load_file(cfg_path, 0, &je);
    int rc = MR_OK;
    if (!root) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s:%d: %s", cfg_path, je.line, je.text);
        goto fail;
    }
    const char *type = NULL;
    if ((rc = vx_cfg_str(root, "model_type", &type, cfg_path, e))) goto fail;
    if (!type || strcmp(type, "blip-2")) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: model_type is \"%s\", expected \"blip-2\"", cfg_path, type ? type : "(none)");
        goto fail;
    }
    m->info.n_query = 32;
    if ((rc = vx_cfg_int(root, "num_query_tokens", &m->info.n_query, cfg_path, e)) ||
        (rc = parse_vision(&m->vc, json_object_get(root, "vision_config"), e)) ||
        (rc = parse_qformer(&m->qc, json_object_get(root, "qformer_config"), m->vc.hidden, e)) ||
        (rc = opt_config_parse(&m->lm.c, json_object_get(root, "text_config"), "config.json text_config", e)))
        goto fail;
    if (m->info.n_query <= 0) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: num_query_tokens must be positive", cfg_path);
        goto fail;
    }
    if (json_is_false(json_object_get(root, "use_decoder_only_language_model"))) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: encoder-decoder language models (Flan-T5) are not supported", cfg_path);
        goto fail;
    }
    mr_blip2_info *in = &m->info;
    in->image_size = m->vc.image_size;
    in->patch_size = m->vc.patch_size;
    in->vision_tokens = (m->vc.image_size / m->vc.patch_size) * (m->vc.image_size / m->vc.patch_size) + 1;
    in->vision_hidden = m->vc.hidden;
    in->vision_layers = m->vc.layers;
    in->vision_ffn = m->vc.inter;
    in->qformer_hidden = m->qc.hidden;
    in->qformer_layers = m->qc.layers;
    in->text_hidden = m->lm.c.hidden;
    in->text_layers = m->lm.c.layers;
    in->vocab = m->lm.c.vocab;
    in->bos = m->lm.c.bos;
    in->eos = m->lm.c.eos;
    in->max_position = m->lm.c.max_pos;
    in->max_new_tokens = m->lm.c.max_length - 1 > 0 ? m->lm.c.max_length - 1 : 1;

    mr_image_processor_default(&m->proc, m->vc.image_size);
    free(cfg_path);
    cfg_path = mr_path_join(dir, "preprocessor_config.json", e);
    if (!cfg_path) {
        rc = MR_ERR_INTERNAL;
        goto fail;
    }
    if (mr_file_exists(cfg_path) && (rc = mr_image_processor_load(&m->proc, cfg_path, e))) goto fail;
    if (m->proc.width != m->vc.image_size || m->proc.height != m->vc.image_size) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: size %dx%d differs from the vision image_size %d", cfg_path, m->proc.width,
                     m->proc.height, m->vc.image_size);
        goto fail;
    }
    if ((rc = st_set_open(&m->set, dir, e))) goto fail;
    if ((rc = load_weights(m, e)) || (rc = alloc_buffers(m, e))) {
        mr_error_prefix(e, "%s: ", dir);
        goto fail;
    }
    {
        double n = 0;
        for (int f = 0; f < m->set.n_files; f++)
            for (int t = 0; t < m->set.files[f].n_tensors; t++) n += (double)st_numel(&m->set.files[f].tensors[t]);
        in->n_params = n;
        m->small = n < 30e6;
    }
    json_decref(root);
    free(cfg_path);
    *out = m;
    return MR_OK;
fail:
    json_decref(root);
    free(cfg_path);
    mr_blip2_free(m);
    return rc;
}

static void free_weights(vx_weight *w, size_t n) {
    for (size_t i = 0; i < n; i++) vx_weight_free(&w[i]);
}

void mr_blip2_free(mr_blip2 *m) {
    if (!m) return;
    if (m->vl)
        for (int l = 0; l < m->vc.layers; l++) free_weights((vx_weight *)&m->vl[l], sizeof(vit_layer) / sizeof(vx_weight));
    if (m->ql)
        for (int l = 0; l < m->qc.layers; l++) {
            free_weights((vx_weight *)&m->ql[l].self, sizeof(qf_attn) / sizeof(vx_weight));
            free_weights((vx_weight *)&m->ql[l].cross, sizeof(qf_attn) / sizeof(vx_weight));
            free_weights(&m->ql[l].fc1, 6);
        }
    free(m->vl);
    free(m->ql);
    vx_weight *singles[] = {&m->patch_w, &m->patch_b, &m->cls,  &m->pos,  &m->post_w, &m->post_b,
                            &m->query_tokens, &m->qln_w, &m->qln_b, &m->lp_w, &m->lp_b};
    for (size_t i = 0; i < sizeof singles / sizeof singles[0]; i++) vx_weight_free(singles[i]);
    opt_free(&m->lm);
    vx_scratch_free(&m->scratch);
    float *bufs[] = {m->v_x,  m->v_xn, m->v_qkv, m->v_att, m->v_ff,  m->v_scores, m->v_patches, m->v_last,
                     m->q_x,  m->q_a,  m->q_b,   m->q_kv,  m->q_ff,  m->q_scores, m->soft};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    st_set_close(&m->set);
    free(m);
}

const mr_blip2_info *mr_blip2_get_info(const mr_blip2 *m) { return &m->info; }
const mr_image_processor *mr_blip2_processor(const mr_blip2 *m) { return &m->proc; }
void mr_blip2_set_threads(int threads) { vx_set_threads(threads); }

static const vx_weight *opt_bias(const vx_weight *b) { return b->f32 ? b : NULL; }

static void add_into(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

static int b2_vision(mr_blip2 *m, const float *pixels, float *last_hidden, float *hidden_states, mr_error *e) {
    const vit_config *c = &m->vc;
    int E = c->hidden, P = c->patch_size, S = c->image_size, G = S / P, Np = G * G, T = Np + 1, K = 3 * P * P;
    int hd = E / c->heads, rc;
    /* Conv2d(3, E, P, stride P) as a product: one row (c, ky, kx) per patch, row-major patches. */
    for (int gy = 0; gy < G; gy++)
        for (int gx = 0; gx < G; gx++) {
            float *row = m->v_patches + (size_t)(gy * G + gx) * K;
            for (int ch = 0; ch < 3; ch++)
                for (int ky = 0; ky < P; ky++)
                    memcpy(row + (ch * P + ky) * P, pixels + ((size_t)ch * S + gy * P + ky) * S + gx * P,
                           sizeof(float) * P);
        }
    float *x = m->v_x;
    if ((rc = vx_linear(x + E, m->v_patches, Np, &m->patch_w, &m->patch_b, &m->scratch, e))) return rc;
    memcpy(x, m->cls.f32, sizeof(float) * E);
    add_into(x, m->pos.f32, (size_t)T * E);
    if (hidden_states) memcpy(hidden_states, x, sizeof(float) * T * E);
    float scale = 1.0f / sqrtf((float)hd);
    for (int l = 0; l < c->layers; l++) {
        vit_layer *y = &m->vl[l];
        vx_layernorm(m->v_xn, x, T, E, y->ln1_w.f32, y->ln1_b.f32, c->eps);
        if ((rc = vx_linear(m->v_qkv, m->v_xn, T, &y->qkv, opt_bias(&y->qkv_b), &m->scratch, e))) return rc;
        vx_attention(m->v_att, m->v_qkv, 3 * E, m->v_qkv + E, 3 * E, m->v_qkv + 2 * E, 3 * E, T, T, c->heads, hd,
                     scale, 0, 0, m->v_scores);
        if ((rc = vx_linear(m->v_xn, m->v_att, T, &y->proj, &y->proj_b, &m->scratch, e))) return rc;
        add_into(x, m->v_xn, (size_t)T * E);
        vx_layernorm(m->v_xn, x, T, E, y->ln2_w.f32, y->ln2_b.f32, c->eps);
        if ((rc = vx_linear(m->v_ff, m->v_xn, T, &y->fc1, &y->fc1_b, &m->scratch, e))) return rc;
        vx_activate(m->v_ff, (size_t)T * c->inter, c->act);
        if ((rc = vx_linear(m->v_xn, m->v_ff, T, &y->fc2, &y->fc2_b, &m->scratch, e))) return rc;
        add_into(x, m->v_xn, (size_t)T * E);
        if (hidden_states) memcpy(hidden_states + (size_t)(l + 1) * T * E, x, sizeof(float) * T * E);
    }
    vx_layernorm(last_hidden, x, T, E, m->post_w.f32, m->post_b.f32, c->eps);
    return MR_OK;
}

/* x = LN(x + dense(attention(q from x, k/v from kv_in [Tk, kv_dim]))) */
static int qf_attention(mr_blip2 *m, qf_attn *a, float *x, const float *kv_in, int Tk, mr_error *e) {
    const qf_config *c = &m->qc;
    int H = c->hidden, nq = m->info.n_query, hd = H / c->heads, rc;
    float *q = m->q_a, *k = m->q_kv, *v = m->q_kv + (size_t)Tk * H;
    if ((rc = vx_linear(q, x, nq, &a->q, &a->qb, &m->scratch, e)) ||
        (rc = vx_linear(k, kv_in, Tk, &a->k, &a->kb, &m->scratch, e)) ||
        (rc = vx_linear(v, kv_in, Tk, &a->v, &a->vb, &m->scratch, e)))
        return rc;
    vx_attention(m->q_b, q, H, k, H, v, H, nq, Tk, c->heads, hd, 1.0f / sqrtf((float)hd), 0, 0, m->q_scores);
    if ((rc = vx_linear(m->q_a, m->q_b, nq, &a->o, &a->ob, &m->scratch, e))) return rc;
    add_into(m->q_a, x, (size_t)nq * H);
    vx_layernorm(x, m->q_a, nq, H, a->ln_w.f32, a->ln_b.f32, c->eps);
    return MR_OK;
}

static int b2_qformer(mr_blip2 *m, const float *image_embeds, float *out, float *hidden_states, mr_error *e) {
    const qf_config *c = &m->qc;
    int H = c->hidden, nq = m->info.n_query, Tv = m->info.vision_tokens, rc;
    float *x = m->q_x;
    vx_layernorm(x, m->query_tokens.f32, nq, H, m->qln_w.f32, m->qln_b.f32, c->eps);
    if (hidden_states) memcpy(hidden_states, x, sizeof(float) * nq * H);
    for (int l = 0; l < c->layers; l++) {
        qf_layer *y = &m->ql[l];
        if ((rc = qf_attention(m, &y->self, x, x, nq, e))) return rc;
        if (y->has_cross && (rc = qf_attention(m, &y->cross, x, image_embeds, Tv, e))) return rc;
        if ((rc = vx_linear(m->q_ff, x, nq, &y->fc1, &y->fc1_b, &m->scratch, e))) return rc;
        vx_activate(m->q_ff, (size_t)nq * c->inter, c->act);
        if ((rc = vx_linear(m->q_a, m->q_ff, nq, &y->fc2, &y->fc2_b, &m->scratch, e))) return rc;
        add_into(m->q_a, x, (size_t)nq * H);
        vx_layernorm(x, m->q_a, nq, H, y->ln_w.f32, y->ln_b.f32, c->eps);
        if (hidden_states) memcpy(hidden_states + (size_t)(l + 1) * nq * H, x, sizeof(float) * nq * H);
    }
    memcpy(out, x, sizeof(float) * nq * H);
    return MR_OK;
}

int mr_blip2_project(mr_blip2 *m, const float *query_out, float *soft_prompt, mr_error *e) {
    return vx_linear(soft_prompt, query_out, m->info.n_query, &m->lp_w, &m->lp_b, &m->scratch, e);
}

/* Puts [soft prompt ; embed(ids)] through OPT from position 0. */
static int lm_prefill(mr_blip2 *m, const float *soft, const int32_t *ids, int n_ids, int capacity, float *logits,
                      int all, mr_error *e) {
    int nq = m->info.n_query, H = m->lm.c.hidden, T = nq + n_ids, rc;
    float *emb = mr_alloc(sizeof(float) * (size_t)T * H, e);
    if (!emb) return MR_ERR_INTERNAL;
    memcpy(emb, soft, sizeof(float) * (size_t)nq * H);
    rc = opt_embed(&m->lm, ids, n_ids, emb + (size_t)nq * H, e);
    if (!rc) rc = opt_begin(&m->lm, capacity, e);
    if (!rc) rc = opt_forward(&m->lm, emb, T, logits, all, e);
    free(emb);
    return rc;
}

static int b2_lm_logits(mr_blip2 *m, const float *soft_prompt, const int32_t *ids, int n_ids, float *logits,
    mr_error *e) {
    return lm_prefill(m, soft_prompt, ids, n_ids, m->info.n_query + n_ids, logits, 1, e);
}

/* transformers 4.33's logits processors of greedy search, in its order, over
 * the ids generate() sees: the dummy bos, then the new ids (the query and
 * prompt embeddings are not ids there). hist holds them, n_hist of them. */
static void process_logits(const opt_config *c, float *logits, const int32_t *hist, int n_hist, int max_new,
                           int eos) {
    int V = c->vocab;
    if (c->repetition_penalty != 1.0f) {
        for (int i = 0; i < n_hist; i++) {
            int dup = 0; /* each token once, as torch.gather/scatter do */
            for (int j = 0; j < i && !dup; j++) dup = hist[j] == hist[i];
            if (dup) continue;
            float *x = &logits[hist[i]];
            *x = *x < 0 ? *x * c->repetition_penalty : *x / c->repetition_penalty;
        }
    }
    int n = c->no_repeat_ngram_size;
    if (n > 0 && n_hist + 1 >= n) {
        /* ban every token that followed the last n-1 ids earlier */
        for (int s = 0; s + n <= n_hist; s++) {
            if (memcmp(hist + s, hist + n_hist - (n - 1), sizeof(int32_t) * (n - 1))) continue;
            logits[hist[s + n - 1]] = -INFINITY;
        }
    }
    if (n_hist < c->min_length && eos >= 0) logits[eos] = -INFINITY;
    if (c->forced_eos >= 0 && n_hist == max_new) { /* cur_len == max_length - 1 */
        for (int j = 0; j < V; j++) logits[j] = -INFINITY;
        logits[c->forced_eos] = 0.0f;
    }
}

static int b2_generate_soft(mr_blip2 *m, const float *soft_prompt, const int32_t *prompt, int n_prompt,
        int max_new_tokens, int32_t *out, int *n_out, mr_error *e) {
    *n_out = 0;
    int rc, V = m->lm.c.vocab, H = m->lm.c.hidden;
    int32_t bos = m->info.bos;
    if (!prompt || n_prompt <= 0) { /* transformers 4.33: input_ids = [[bos]] */
        prompt = &bos;
        n_prompt = 1;
    }
    if (max_new_tokens <= 0) max_new_tokens = m->info.max_new_tokens;
    float *logits = mr_alloc(sizeof(float) * V, e), *emb = mr_alloc(sizeof(float) * H, e);
    int32_t *hist = mr_alloc(sizeof(int32_t) * ((size_t)max_new_tokens + 1), e);
    if (!logits || !emb || !hist) {
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    int capacity = m->info.n_query + n_prompt + max_new_tokens;
    double t0 = mr_now();
    if ((rc = lm_prefill(m, soft_prompt, prompt, n_prompt, capacity, logits, 0, e))) goto done;
    double t1 = mr_now();
    m->last_prefill_s = t1 - t0;
    m->last_decode_s = 0;
    hist[0] = bos;
    for (;;) {
        process_logits(&m->lm.c, logits, hist, *n_out + 1, max_new_tokens, m->info.eos);
        int best = 0; /* torch.argmax: the first of equal maxima */
        for (int j = 1; j < V; j++)
            if (logits[j] > logits[best]) best = j;
        out[(*n_out)++] = best;
        hist[*n_out] = best;
        if (best == m->info.eos || *n_out >= max_new_tokens) break;
        int32_t id = best;
        if ((rc = opt_embed(&m->lm, &id, 1, emb, e)) || (rc = opt_forward(&m->lm, emb, 1, logits, 0, e))) goto done;
        m->last_decode_s = mr_now() - t1;
    }
done:
    free(logits);
    free(emb);
    free(hist);
    return rc;
}

static int b2_generate(mr_blip2 *m, const float *pixels, const int32_t *prompt, int n_prompt, int max_new_tokens,
    int32_t *out, int *n_out, mr_error *e) {
    *n_out = 0;
    size_t TE = (size_t)m->info.vision_tokens * m->info.vision_hidden;
    float *image = mr_alloc(sizeof(float) * TE, e),
          *qout = mr_alloc(sizeof(float) * (size_t)m->info.n_query * m->info.qformer_hidden, e);
    int rc;
    if (!image || !qout) rc = MR_ERR_INTERNAL;
    else if (!(rc = b2_vision(m, pixels, image, NULL, e)) && !(rc = b2_qformer(m, image, qout, NULL, e)) &&
             !(rc = mr_blip2_project(m, qout, m->soft, e)))
        rc = b2_generate_soft(m, m->soft, prompt, n_prompt, max_new_tokens, out, n_out, e);
    free(image);
    free(qout);
    return rc;
}

int mr_blip2_vision(mr_blip2 *m, const float *pixels, float *last_hidden, float *hidden_states, mr_error *e) {
    vx_threads t;
    vx_threads_single(&t, m->small);
    int rc = b2_vision(m, pixels, last_hidden, hidden_states, e);
    vx_threads_restore(&t);
    return rc;
}

int mr_blip2_qformer(mr_blip2 *m, const float *image_embeds, float *out, float *hidden_states, mr_error *e) {
    vx_threads t;
    vx_threads_single(&t, m->small);
    int rc = b2_qformer(m, image_embeds, out, hidden_states, e);
    vx_threads_restore(&t);
    return rc;
}

int mr_blip2_lm_logits(mr_blip2 *m, const float *soft_prompt, const int32_t *ids, int n_ids, float *logits,
                       mr_error *e) {
    vx_threads t;
    vx_threads_single(&t, m->small);
    int rc = b2_lm_logits(m, soft_prompt, ids, n_ids, logits, e);
    vx_threads_restore(&t);
    return rc;
}

int mr_blip2_generate_soft(mr_blip2 *m, const float *soft_prompt, const int32_t *prompt, int n_prompt,
                           int max_new_tokens, int32_t *out, int *n_out, mr_error *e) {
    vx_threads t;
    vx_threads_single(&t, m->small);
    int rc = b2_generate_soft(m, soft_prompt, prompt, n_prompt, max_new_tokens, out, n_out, e);
    vx_threads_restore(&t);
    return rc;
}

int mr_blip2_generate(mr_blip2 *m, const float *pixels, const int32_t *prompt, int n_prompt, int max_new_tokens,
                      int32_t *out, int *n_out, mr_error *e) {
    vx_threads t;
    vx_threads_single(&t, m->small);
    int rc = b2_generate(m, pixels, prompt, n_prompt, max_new_tokens, out, n_out, e);
    vx_threads_restore(&t);
    return rc;
}

void mr_blip2_last_timing(const mr_blip2 *m, double *prefill_s, double *decode_s) {
    *prefill_s = m->last_prefill_s;
    *decode_s = m->last_decode_s;
}
