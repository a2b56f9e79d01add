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
 * soft prompt = language_projection(x); OPT reads [soft prompt ; prompt ids].
 *
 * Everything runs on the src/nn kernels: matmul_forward for every product
 * (vision and Q-Former matrices as stored, float; OPT's at the decoder type),
 * layernorm_forward, gelu_forward / gelu_tanh_forward, attention_full_forward
 * for the unmasked self- and cross-attention, OPT's causal attention_forward.
 * The vision encoder runs several images per forward: weight tiles are
 * dequantized once for the batch, each image's products and attention are
 * computed as for the image alone (matmul_groups_forward). */
#include "mllm4rec/blip2.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "nn/attention_full.h"
#include "nn/layernorm.h"
#include "nn/quant.h"
#include "vision/opt.h"

typedef struct vit_layer {
    vw_mat qkv, proj, fc1, fc2;
    float *ln1_w, *ln1_b, *qkv_b, *proj_b, *ln2_w, *ln2_b, *fc1_b, *fc2_b; /* qkv_b NULL without qkv_bias */
} vit_layer;

typedef struct qf_attn {
    vw_mat q, k, v, o;
    float *qb, *kb, *vb, *ob, *ln_w, *ln_b;
} qf_attn;

typedef struct qf_layer {
    qf_attn self, cross;
    int has_cross;
    vw_mat fc1, fc2;
    float *fc1_b, *fc2_b, *ln_w, *ln_b;
} qf_layer;

typedef struct vit_config {
    int hidden, inter, layers, heads, image_size, patch_size, qkv_bias;
    float eps;
    vw_act act;
} vit_config;

typedef struct qf_config {
    int hidden, inter, layers, heads, cross_freq, enc_hidden;
    float eps;
    vw_act act;
} qf_config;

struct mr_blip2 {
    mr_blip2_info info;
    mr_blip2_options opt;
    int small; /* run single-threaded (see mr_threads_single) */
    double last_prefill_s, last_decode_s; /* timings of the last generation */
    mr_image_processor proc;
    vit_config vc;
    qf_config qc;
    st_set set;
    /* vision */
    vw_mat patch_w;
    float *patch_b, *cls, *pos, *post_w, *post_b;
    vit_layer *vl;
    /* q-former */
    float *query_tokens, *qln_w, *qln_b;
    qf_layer *ql;
    vw_mat lp_w;
    float *lp_b;
    opt_model lm;
    float *scratch; /* matmul_forward tiles */
    int64_t scratch_floats;
    float *att_scratch; /* attention_full_forward tiles */
    int64_t att_scratch_floats;
    /* work buffers; the vision ones hold opt.max_batch images */
    float *v_x, *v_xn, *v_qkv, *v_att, *v_ff, *v_patches;
    float *q_x, *q_a, *q_b, *q_kv, *q_ff;
    float *soft;
};

static int parse_vision(vit_config *c, json_t *obj, mr_error *e) {
    const char *w = "config.json vision_config", *act = "gelu";
    *c = (vit_config){1408, 6144, 39, 16, 224, 14, 1, 1e-5f, VW_ACT_GELU};
    int rc;
    if ((rc = vw_cfg_int(obj, "hidden_size", &c->hidden, w, e)) ||
        (rc = vw_cfg_int(obj, "intermediate_size", &c->inter, w, e)) ||
        (rc = vw_cfg_int(obj, "num_hidden_layers", &c->layers, w, e)) ||
        (rc = vw_cfg_int(obj, "num_attention_heads", &c->heads, w, e)) ||
        (rc = vw_cfg_int(obj, "image_size", &c->image_size, w, e)) ||
        (rc = vw_cfg_int(obj, "patch_size", &c->patch_size, w, e)) ||
        (rc = vw_cfg_bool(obj, "qkv_bias", &c->qkv_bias, w, e)) ||
        (rc = vw_cfg_float(obj, "layer_norm_eps", &c->eps, w, e)) || (rc = vw_cfg_str(obj, "hidden_act", &act, w, e)))
        return rc;
    if (vw_act_parse(act, &c->act)) return mr_fail(e, MR_ERR_INPUT, "%s: hidden_act \"%s\" is not supported", w, act);
    if (c->hidden <= 0 || c->heads <= 0 || c->hidden % c->heads || c->inter <= 0 || c->layers <= 0 ||
        c->patch_size <= 0 || c->image_size <= 0 || c->image_size % c->patch_size)
        return mr_fail(e, MR_ERR_INPUT, "%s: bad sizes (hidden %d, heads %d, image %d, patch %d)", w, c->hidden,
                       c->heads, c->image_size, c->patch_size);
    return MR_OK;
}

static int parse_qformer(qf_config *c, json_t *obj, int vision_hidden, mr_error *e) {
    const char *w = "config.json qformer_config", *act = "gelu", *pos = "absolute";
    *c = (qf_config){768, 3072, 12, 12, 2, 1408, 1e-12f, VW_ACT_GELU};
    int rc;
    if ((rc = vw_cfg_int(obj, "hidden_size", &c->hidden, w, e)) ||
        (rc = vw_cfg_int(obj, "intermediate_size", &c->inter, w, e)) ||
        (rc = vw_cfg_int(obj, "num_hidden_layers", &c->layers, w, e)) ||
        (rc = vw_cfg_int(obj, "num_attention_heads", &c->heads, w, e)) ||
        (rc = vw_cfg_int(obj, "cross_attention_frequency", &c->cross_freq, w, e)) ||
        (rc = vw_cfg_float(obj, "layer_norm_eps", &c->eps, w, e)) || (rc = vw_cfg_str(obj, "hidden_act", &act, w, e)) ||
        (rc = vw_cfg_str(obj, "position_embedding_type", &pos, w, e)))
        return rc;
    /* Blip2Config overwrites encoder_hidden_size with the vision hidden size. */
    c->enc_hidden = vision_hidden;
    if (vw_act_parse(act, &c->act)) return mr_fail(e, MR_ERR_INPUT, "%s: hidden_act \"%s\" is not supported", w, act);
    if (c->hidden <= 0 || c->heads <= 0 || c->hidden % c->heads || c->inter <= 0 || c->layers <= 0 ||
        c->cross_freq <= 0)
        return mr_fail(e, MR_ERR_INPUT, "%s: bad sizes (hidden %d, heads %d, cross_attention_frequency %d)", w,
                       c->hidden, c->heads, c->cross_freq);
    return MR_OK;
}

static int ldm(vw_loader *L, vw_mat *w, int64_t r, int64_t c, ggml_type type, mr_error *e, const char *fmt, ...)
    MR_PRINTF(7, 8);
static int ldm(vw_loader *L, vw_mat *w, int64_t r, int64_t c, ggml_type type, mr_error *e, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return vw_load_mat(L, w, name, r, c, type, e);
}

static int ldv(vw_loader *L, float **w, int64_t n, mr_error *e, const char *fmt, ...) MR_PRINTF(5, 6);
static int ldv(vw_loader *L, float **w, int64_t n, mr_error *e, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return vw_load_vec(L, w, name, n, e);
}

/* The fused qkv bias: transformers stores qkv.bias (q ; k ; v), whose k third
 * is zero in real checkpoints but need not be; LAVIS-style checkpoints store
 * q_bias and v_bias with an implicit zero k bias. */
static int load_qkv_bias(vw_loader *L, float **w, int E, int l, int qkv_bias, mr_error *e) {
    char name[256], qn[256], vn[256];
    snprintf(name, sizeof name, "vision_model.encoder.layers.%d.self_attn.qkv.bias", l);
    snprintf(qn, sizeof qn, "vision_model.encoder.layers.%d.self_attn.q_bias", l);
    snprintf(vn, sizeof vn, "vision_model.encoder.layers.%d.self_attn.v_bias", l);
    *w = NULL;
    if (vw_has(L, name)) return vw_load_vec(L, w, name, 3 * (int64_t)E, e);
    if (vw_has(L, qn) && vw_has(L, vn)) {
        float *q = NULL, *v = NULL;
        int rc = vw_load_vec(L, &q, qn, E, e);
        if (!rc) rc = vw_load_vec(L, &v, vn, E, e);
        if (!rc && !(*w = mr_calloc(3 * (size_t)E, sizeof(float), e))) rc = MR_ERR_INTERNAL;
        if (!rc) {
            memcpy(*w, q, sizeof(float) * E);
            memcpy(*w + 2 * E, v, sizeof(float) * E);
        }
        free(q);
        free(v);
        return rc;
    }
    if (qkv_bias) return mr_fail(e, MR_ERR_INPUT, "tensor '%s' (or q_bias and v_bias) is missing", name);
    return MR_OK; /* no bias */
}

static int load_qf_attn(vw_loader *L, qf_attn *a, const char *p, int H, int kv_in, mr_error *e) {
    const ggml_type S = VW_AS_STORED;
    int rc;
    if ((rc = ldm(L, &a->q, H, H, S, e, "%s.attention.query.weight", p)) ||
        (rc = ldv(L, &a->qb, H, e, "%s.attention.query.bias", p)) ||
        (rc = ldm(L, &a->k, H, kv_in, S, e, "%s.attention.key.weight", p)) ||
        (rc = ldv(L, &a->kb, H, e, "%s.attention.key.bias", p)) ||
        (rc = ldm(L, &a->v, H, kv_in, S, e, "%s.attention.value.weight", p)) ||
        (rc = ldv(L, &a->vb, H, e, "%s.attention.value.bias", p)) ||
        (rc = ldm(L, &a->o, H, H, S, e, "%s.output.dense.weight", p)) ||
        (rc = ldv(L, &a->ob, H, e, "%s.output.dense.bias", p)) ||
        (rc = ldv(L, &a->ln_w, H, e, "%s.output.LayerNorm.weight", p)) ||
        (rc = ldv(L, &a->ln_b, H, e, "%s.output.LayerNorm.bias", p)))
        return rc;
    return MR_OK;
}

/* The vision encoder and Q-Former keep their weights as stored (float: their
 * outputs are checked against transformers); OPT's go to the decoder type. */
static int load_weights(mr_blip2 *m, mr_error *e) {
    vw_loader L = {&m->set, 0, omp_get_max_threads(), 0};
    const ggml_type S = VW_AS_STORED;
    const vit_config *vc = &m->vc;
    const qf_config *qc = &m->qc;
    int E = vc->hidden, P = vc->patch_size, G = vc->image_size / P, T = G * G + 1, rc;
    if ((rc = ldm(&L, &m->patch_w, E, 3 * (int64_t)P * P, S, e, "vision_model.embeddings.patch_embedding.weight")) ||
        (rc = ldv(&L, &m->patch_b, E, e, "vision_model.embeddings.patch_embedding.bias")) ||
        (rc = ldv(&L, &m->cls, E, e, "vision_model.embeddings.class_embedding")) ||
        (rc = ldv(&L, &m->pos, (int64_t)T * E, e, "vision_model.embeddings.position_embedding")) ||
        (rc = ldv(&L, &m->post_w, E, e, "vision_model.post_layernorm.weight")) ||
        (rc = ldv(&L, &m->post_b, E, e, "vision_model.post_layernorm.bias")))
        return rc;
    m->vl = mr_calloc(vc->layers, sizeof(vit_layer), e);
    m->ql = mr_calloc(qc->layers, sizeof(qf_layer), e);
    if (!m->vl || !m->ql) return MR_ERR_INTERNAL;
    for (int l = 0; l < vc->layers; l++) {
        vit_layer *y = &m->vl[l];
        const char *p = "vision_model.encoder.layers";
        if ((rc = ldv(&L, &y->ln1_w, E, e, "%s.%d.layer_norm1.weight", p, l)) ||
            (rc = ldv(&L, &y->ln1_b, E, e, "%s.%d.layer_norm1.bias", p, l)) ||
            (rc = ldm(&L, &y->qkv, 3 * (int64_t)E, E, S, e, "%s.%d.self_attn.qkv.weight", p, l)) ||
            (rc = load_qkv_bias(&L, &y->qkv_b, E, l, vc->qkv_bias, e)) ||
            (rc = ldm(&L, &y->proj, E, E, S, e, "%s.%d.self_attn.projection.weight", p, l)) ||
            (rc = ldv(&L, &y->proj_b, E, e, "%s.%d.self_attn.projection.bias", p, l)) ||
            (rc = ldv(&L, &y->ln2_w, E, e, "%s.%d.layer_norm2.weight", p, l)) ||
            (rc = ldv(&L, &y->ln2_b, E, e, "%s.%d.layer_norm2.bias", p, l)) ||
            (rc = ldm(&L, &y->fc1, vc->inter, E, S, e, "%s.%d.mlp.fc1.weight", p, l)) ||
            (rc = ldv(&L, &y->fc1_b, vc->inter, e, "%s.%d.mlp.fc1.bias", p, l)) ||
            (rc = ldm(&L, &y->fc2, E, vc->inter, S, e, "%s.%d.mlp.fc2.weight", p, l)) ||
            (rc = ldv(&L, &y->fc2_b, E, e, "%s.%d.mlp.fc2.bias", p, l)))
            return rc;
    }
    int H = qc->hidden, nq = m->info.n_query;
    if ((rc = ldv(&L, &m->query_tokens, (int64_t)nq * H, e, "query_tokens")) ||
        (rc = ldv(&L, &m->qln_w, H, e, "qformer.layernorm.weight")) ||
        (rc = ldv(&L, &m->qln_b, H, e, "qformer.layernorm.bias")))
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
        if ((rc = ldm(&L, &y->fc1, qc->inter, H, S, e, "%s.%d.intermediate_query.dense.weight", q, l)) ||
            (rc = ldv(&L, &y->fc1_b, qc->inter, e, "%s.%d.intermediate_query.dense.bias", q, l)) ||
            (rc = ldm(&L, &y->fc2, H, qc->inter, S, e, "%s.%d.output_query.dense.weight", q, l)) ||
            (rc = ldv(&L, &y->fc2_b, H, e, "%s.%d.output_query.dense.bias", q, l)) ||
            (rc = ldv(&L, &y->ln_w, H, e, "%s.%d.output_query.LayerNorm.weight", q, l)) ||
            (rc = ldv(&L, &y->ln_b, H, e, "%s.%d.output_query.LayerNorm.bias", q, l)))
            return rc;
    }
    int TH = m->lm.c.hidden;
    if ((rc = ldm(&L, &m->lp_w, TH, H, S, e, "language_projection.weight")) ||
        (rc = ldv(&L, &m->lp_b, TH, e, "language_projection.bias")))
        return rc;
    m->scratch_floats = L.scratch_floats;
    opt_config oc = m->lm.c;
    vw_loader LL = {&m->set, 0, L.n_threads, 0};
    if ((rc = opt_load(&m->lm, &LL, &oc, "language_model.model.decoder.", "language_model.lm_head.weight",
                       (ggml_type)m->opt.decoder_type, e)))
        return rc;
    m->lm.float_act = m->opt.decoder_float_act != 0;
    return MR_OK;
}

static int alloc_buffers(mr_blip2 *m, mr_error *e) {
    const vit_config *vc = &m->vc;
    const qf_config *qc = &m->qc;
    size_t B = m->opt.max_batch, T = m->info.vision_tokens, E = vc->hidden, P = vc->patch_size, nq = m->info.n_query,
           H = qc->hidden;
    size_t kvmax = T > nq ? T : nq;
    int nth = omp_get_max_threads();
    m->att_scratch_floats = attention_full_scratch_floats((int64_t)kvmax, nth);
#define A(ptr, n)                                        \
    do {                                                 \
        (ptr) = mr_alloc_aligned(sizeof(float) * (n), e); \
        if (!(ptr)) return MR_ERR_INTERNAL;              \
    } while (0)
    if (m->scratch_floats) A(m->scratch, (size_t)m->scratch_floats);
    A(m->att_scratch, (size_t)m->att_scratch_floats);
    A(m->v_x, B * T * E);
    A(m->v_xn, B * T * E);
    A(m->v_qkv, B * T * 3 * E);
    A(m->v_att, B * T * E);
    A(m->v_ff, B * T * vc->inter);
    A(m->v_patches, B * (T - 1) * 3 * P * P);
    A(m->q_x, nq * H);
    A(m->q_a, nq * H);
    A(m->q_b, nq * H);
    A(m->q_kv, 2 * kvmax * H);
    A(m->q_ff, nq * qc->inter);
    A(m->soft, nq * (size_t)m->lm.c.hidden);
#undef A
    return MR_OK;
}

void mr_blip2_options_default(mr_blip2_options *o) {
    o->decoder_type = GGML_TYPE_Q8_0;
    o->max_batch = 1;
    o->decoder_float_act = 0;
}

int mr_blip2_decoder_type_parse(const char *name, int *type) {
    static const struct {
        const char *name;
        int type;
    } types[] = {{"q8_0", GGML_TYPE_Q8_0}, {"q4_0", GGML_TYPE_Q4_0}, {"bf16", GGML_TYPE_BF16},
                 {"f16", GGML_TYPE_F16},   {"f32", GGML_TYPE_F32},   {"stored", MR_BLIP2_AS_STORED}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(name, types[i].name)) {
            *type = types[i].type;
            return 0;
        }
    return -1;
}

int mr_blip2_load(mr_blip2 **out, const char *dir, const mr_blip2_options *opt, mr_error *e) {
    *out = NULL;
    mr_blip2_options o;
    mr_blip2_options_default(&o);
    if (opt) o = *opt;
    if (o.max_batch < 1) return mr_fail(e, MR_ERR_USAGE, "the vision batch must be at least 1 image");
    if (o.decoder_type != MR_BLIP2_AS_STORED && (o.decoder_type < 0 || !quant_supported((ggml_type)o.decoder_type)))
        return mr_fail(e, MR_ERR_USAGE, "decoder type %d is not a weight type", o.decoder_type);
    mr_blip2 *m = mr_calloc(1, sizeof *m, e);
    if (!m) return MR_ERR_INTERNAL;
    m->opt = o;
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
    if ((rc = vw_cfg_str(root, "model_type", &type, cfg_path, e))) goto fail;
    if (!type || strcmp(type, "blip-2")) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: model_type is \"%s\", expected \"blip-2\"", cfg_path, type ? type : "(none)");
        goto fail;
    }
    m->info.n_query = 32;
    if ((rc = vw_cfg_int(root, "num_query_tokens", &m->info.n_query, cfg_path, e)) ||
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

static void free_qf_attn(qf_attn *a) {
    vw_mat *mats[] = {&a->q, &a->k, &a->v, &a->o};
    for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) vw_mat_free(mats[i]);
    float *vecs[] = {a->qb, a->kb, a->vb, a->ob, a->ln_w, a->ln_b};
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) free(vecs[i]);
}

void mr_blip2_free(mr_blip2 *m) {
    if (!m) return;
    if (m->vl)
        for (int l = 0; l < m->vc.layers; l++) {
            vit_layer *y = &m->vl[l];
            vw_mat *mats[] = {&y->qkv, &y->proj, &y->fc1, &y->fc2};
            for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) vw_mat_free(mats[i]);
            float *vecs[] = {y->ln1_w, y->ln1_b, y->qkv_b, y->proj_b, y->ln2_w, y->ln2_b, y->fc1_b, y->fc2_b};
            for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) free(vecs[i]);
        }
    if (m->ql)
        for (int l = 0; l < m->qc.layers; l++) {
            qf_layer *y = &m->ql[l];
            free_qf_attn(&y->self);
            free_qf_attn(&y->cross);
            vw_mat_free(&y->fc1);
            vw_mat_free(&y->fc2);
            float *vecs[] = {y->fc1_b, y->fc2_b, y->ln_w, y->ln_b};
            for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) free(vecs[i]);
        }
    free(m->vl);
    free(m->ql);
    vw_mat_free(&m->patch_w);
    vw_mat_free(&m->lp_w);
    opt_free(&m->lm);
    float *bufs[] = {m->patch_b, m->cls,  m->pos,  m->post_w,    m->post_b, m->query_tokens, m->qln_w,
                     m->qln_b,   m->lp_b, m->scratch, m->att_scratch, m->v_x, m->v_xn, m->v_qkv,
                     m->v_att,   m->v_ff, m->v_patches, m->q_x, m->q_a, m->q_b, m->q_kv,
                     m->q_ff,    m->soft};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    st_set_close(&m->set);
    free(m);
}

const mr_blip2_info *mr_blip2_get_info(const mr_blip2 *m) { return &m->info; }
const mr_image_processor *mr_blip2_processor(const mr_blip2 *m) { return &m->proc; }
void mr_blip2_set_threads(int threads) { mr_set_threads(threads); }

static void add_into(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

/* B images pixels [B][3][S][S] -> last_hidden [B][T][E]; hidden_states (B == 1
 * only) [(layers + 1)][T][E]. Row-wise steps (LayerNorm, GELU, residuals) run
 * over the B*T rows at once, products and attention per image. */
static int b2_vision(mr_blip2 *m, const float *pixels, int B, float *last_hidden, float *hidden_states, mr_error *e) {
    const vit_config *c = &m->vc;
    int E = c->hidden, P = c->patch_size, S = c->image_size, G = S / P, Np = G * G, T = Np + 1, K = 3 * P * P;
    int hd = E / c->heads;
    const int64_t BT = (int64_t)B * T;
    float *SC = m->scratch;
    int64_t SF = m->scratch_floats;
    if (B < 1 || B > m->opt.max_batch)
        return mr_fail(e, MR_ERR_USAGE, "%d images in a vision batch; the model was loaded for 1 to %d", B,
                       m->opt.max_batch);
    /* Conv2d(3, E, P, stride P) as a product: one row (c, ky, kx) per patch, row-major patches. */
    for (int b = 0; b < B; b++) {
        const float *px = pixels + (size_t)b * 3 * S * S;
        for (int gy = 0; gy < G; gy++)
            for (int gx = 0; gx < G; gx++) {
                float *row = m->v_patches + ((size_t)b * Np + gy * G + gx) * K;
                for (int ch = 0; ch < 3; ch++)
                    for (int ky = 0; ky < P; ky++)
                        memcpy(row + (ch * P + ky) * P, px + ((size_t)ch * S + gy * P + ky) * S + gx * P,
                               sizeof(float) * P);
            }
    }
    float *x = m->v_x;
    vw_linear_groups(m->v_xn, m->v_patches, B, Np, &m->patch_w, m->patch_b, SC, SF);
    for (int b = 0; b < B; b++) {
        float *xb = x + (size_t)b * T * E;
        memcpy(xb, m->cls, sizeof(float) * E);
        memcpy(xb + E, m->v_xn + (size_t)b * Np * E, sizeof(float) * Np * E);
        add_into(xb, m->pos, (size_t)T * E);
    }
    if (hidden_states) memcpy(hidden_states, x, sizeof(float) * T * E);
    float scale = 1.0f / sqrtf((float)hd);
    for (int l = 0; l < c->layers; l++) {
        vit_layer *y = &m->vl[l];
        layernorm_forward(m->v_xn, NULL, NULL, x, y->ln1_w, y->ln1_b, (int)BT, E, c->eps);
        vw_linear_groups(m->v_qkv, m->v_xn, B, T, &y->qkv, y->qkv_b, SC, SF);
        for (int b = 0; b < B; b++) {
            const float *qkv = m->v_qkv + (size_t)b * T * 3 * E;
            attention_full_forward(m->v_att + (size_t)b * T * E, E, qkv, 3 * E, qkv + E, 3 * E, qkv + 2 * E, 3 * E, T,
                                   T, c->heads, hd, scale, m->att_scratch, m->att_scratch_floats);
        }
        vw_linear_groups(m->v_xn, m->v_att, B, T, &y->proj, y->proj_b, SC, SF);
        add_into(x, m->v_xn, (size_t)BT * E);
        layernorm_forward(m->v_xn, NULL, NULL, x, y->ln2_w, y->ln2_b, (int)BT, E, c->eps);
        vw_linear_groups(m->v_ff, m->v_xn, B, T, &y->fc1, y->fc1_b, SC, SF);
        vw_activate(m->v_ff, (size_t)BT * c->inter, c->act);
        vw_linear_groups(m->v_xn, m->v_ff, B, T, &y->fc2, y->fc2_b, SC, SF);
        add_into(x, m->v_xn, (size_t)BT * E);
        if (hidden_states) memcpy(hidden_states + (size_t)(l + 1) * T * E, x, sizeof(float) * T * E);
    }
    layernorm_forward(last_hidden, NULL, NULL, x, m->post_w, m->post_b, (int)BT, E, c->eps);
    return MR_OK;
}

/* x = LN(x + dense(attention(q from x, k/v from kv_in [Tk, kv_dim]))) */
static void qf_attention(mr_blip2 *m, qf_attn *a, float *x, const float *kv_in, int Tk) {
    const qf_config *c = &m->qc;
    int H = c->hidden, nq = m->info.n_query, hd = H / c->heads;
    float *q = m->q_a, *k = m->q_kv, *v = m->q_kv + (size_t)Tk * H, *SC = m->scratch;
    int64_t SF = m->scratch_floats;
    vw_linear(q, x, nq, &a->q, a->qb, SC, SF);
    vw_linear(k, kv_in, Tk, &a->k, a->kb, SC, SF);
    vw_linear(v, kv_in, Tk, &a->v, a->vb, SC, SF);
    attention_full_forward(m->q_b, H, q, H, k, H, v, H, nq, Tk, c->heads, hd, 1.0f / sqrtf((float)hd), m->att_scratch,
                           m->att_scratch_floats);
    vw_linear(m->q_a, m->q_b, nq, &a->o, a->ob, SC, SF);
    add_into(m->q_a, x, (size_t)nq * H);
    layernorm_forward(x, NULL, NULL, m->q_a, a->ln_w, a->ln_b, nq, H, c->eps);
}

static int b2_qformer(mr_blip2 *m, const float *image_embeds, float *out, float *hidden_states, mr_error *e) {
    const qf_config *c = &m->qc;
    int H = c->hidden, nq = m->info.n_query, Tv = m->info.vision_tokens;
    float *x = m->q_x, *SC = m->scratch;
    int64_t SF = m->scratch_floats;
    layernorm_forward(x, NULL, NULL, m->query_tokens, m->qln_w, m->qln_b, nq, H, c->eps);
    if (hidden_states) memcpy(hidden_states, x, sizeof(float) * nq * H);
    for (int l = 0; l < c->layers; l++) {
        qf_layer *y = &m->ql[l];
        qf_attention(m, &y->self, x, x, nq);
        if (y->has_cross) qf_attention(m, &y->cross, x, image_embeds, Tv);
        vw_linear(m->q_ff, x, nq, &y->fc1, y->fc1_b, SC, SF);
        vw_activate(m->q_ff, (size_t)nq * c->inter, c->act);
        vw_linear(m->q_a, m->q_ff, nq, &y->fc2, y->fc2_b, SC, SF);
        add_into(m->q_a, x, (size_t)nq * H);
        layernorm_forward(x, NULL, NULL, m->q_a, y->ln_w, y->ln_b, nq, H, c->eps);
        if (hidden_states) memcpy(hidden_states + (size_t)(l + 1) * nq * H, x, sizeof(float) * nq * H);
    }
    memcpy(out, x, sizeof(float) * nq * H);
    return MR_OK;
}

int mr_blip2_project(mr_blip2 *m, const float *query_out, float *soft_prompt, mr_error *e) {
    vw_linear(soft_prompt, query_out, m->info.n_query, &m->lp_w, m->lp_b, m->scratch, m->scratch_floats);
    return MR_OK;
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
    else if (!(rc = b2_vision(m, pixels, 1, image, NULL, e)) && !(rc = b2_qformer(m, image, qout, NULL, e)) &&
             !(rc = mr_blip2_project(m, qout, m->soft, e)))
        rc = b2_generate_soft(m, m->soft, prompt, n_prompt, max_new_tokens, out, n_out, e);
    free(image);
    free(qout);
    return rc;
}

int mr_blip2_vision(mr_blip2 *m, const float *pixels, float *last_hidden, float *hidden_states, mr_error *e) {
    mr_threads_saved t;
    mr_threads_single(&t, m->small);
    int rc = b2_vision(m, pixels, 1, last_hidden, hidden_states, e);
    mr_threads_restore(&t);
    return rc;
}

int mr_blip2_vision_batch(mr_blip2 *m, const float *pixels, int n_images, float *last_hidden, mr_error *e) {
    mr_threads_saved t;
    mr_threads_single(&t, m->small);
    int rc = b2_vision(m, pixels, n_images, last_hidden, NULL, e);
    mr_threads_restore(&t);
    return rc;
}

int mr_blip2_generate_image(mr_blip2 *m, const float *image_embeds, const int32_t *prompt, int n_prompt,
                            int max_new_tokens, int32_t *out, int *n_out, mr_error *e) {
    *n_out = 0;
    float *qout = mr_alloc(sizeof(float) * (size_t)m->info.n_query * m->info.qformer_hidden, e);
    if (!qout) return MR_ERR_INTERNAL;
    mr_threads_saved t;
    mr_threads_single(&t, m->small);
    int rc = b2_qformer(m, image_embeds, qout, NULL, e);
    if (!rc) rc = mr_blip2_project(m, qout, m->soft, e);
    if (!rc) rc = b2_generate_soft(m, m->soft, prompt, n_prompt, max_new_tokens, out, n_out, e);
    mr_threads_restore(&t);
    free(qout);
    return rc;
}

const mr_blip2_options *mr_blip2_get_options(const mr_blip2 *m) { return &m->opt; }

int mr_blip2_qformer(mr_blip2 *m, const float *image_embeds, float *out, float *hidden_states, mr_error *e) {
    mr_threads_saved t;
    mr_threads_single(&t, m->small);
    int rc = b2_qformer(m, image_embeds, out, hidden_states, e);
    mr_threads_restore(&t);
    return rc;
}

int mr_blip2_lm_logits(mr_blip2 *m, const float *soft_prompt, const int32_t *ids, int n_ids, float *logits,
                       mr_error *e) {
    mr_threads_saved t;
    mr_threads_single(&t, m->small);
    int rc = b2_lm_logits(m, soft_prompt, ids, n_ids, logits, e);
    mr_threads_restore(&t);
    return rc;
}

int mr_blip2_generate_soft(mr_blip2 *m, const float *soft_prompt, const int32_t *prompt, int n_prompt,
                           int max_new_tokens, int32_t *out, int *n_out, mr_error *e) {
    mr_threads_saved t;
    mr_threads_single(&t, m->small);
    int rc = b2_generate_soft(m, soft_prompt, prompt, n_prompt, max_new_tokens, out, n_out, e);
    mr_threads_restore(&t);
    return rc;
}

int mr_blip2_generate(mr_blip2 *m, const float *pixels, const int32_t *prompt, int n_prompt, int max_new_tokens,
                      int32_t *out, int *n_out, mr_error *e) {
    mr_threads_saved t;
    mr_threads_single(&t, m->small);
    int rc = b2_generate(m, pixels, prompt, n_prompt, max_new_tokens, out, n_out, e);
    mr_threads_restore(&t);
    return rc;
}

void mr_blip2_last_timing(const mr_blip2 *m, double *prefill_s, double *decode_s) {
    *prefill_s = m->last_prefill_s;
    *decode_s = m->last_decode_s;
}
