/* The architecture-independent half of a retriever model: the named-tensor
 * layout over one flat parameter buffer, its allocation and lookup. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/safetensors.h"
#include "retriever/arch.h"

extern const rt_arch rt_arch_lru; /* src/retriever/lru.c */

/* Filled as architectures are added (their rt_arch constants). */
extern const rt_arch rt_arch_sasrec, rt_arch_bert4rec, rt_arch_stosa, rt_arch_gru4rec, rt_arch_narm;
static const rt_arch *const all_archs[] = {&rt_arch_lru,     &rt_arch_sasrec, &rt_arch_bert4rec, &rt_arch_gru4rec,
                                           &rt_arch_narm,    &rt_arch_stosa,  NULL};

int rt_arch_names(char *buf, size_t n) {
    size_t used = 0;
    if (n) buf[0] = 0;
    for (size_t i = 0; all_archs[i]; i++) {
        int k = snprintf(buf + used, used < n ? n - used : 0, "%s%s", i ? ", " : "", all_archs[i]->name);
        if (k < 0) return -1;
        used += (size_t)k;
    }
    return used < n ? 0 : -1;
}

const rt_arch *rt_arch_find(const char *name) {
    for (size_t i = 0; all_archs[i]; i++)
        if (!strcmp(all_archs[i]->name, name))
            return all_archs[i];
    return NULL;
}

int rt_model_add_tensor(rt_model *m, const char *name, int n_dims, const int64_t *shape, int decay, mr_error *e) {
    if (n_dims < 1 || n_dims > RT_MAX_DIMS || strlen(name) >= sizeof m->tensors[0].name)
        return mr_fail(e, MR_ERR_INTERNAL, "tensor %s: bad layout entry", name);
    rt_tensor *grown = mr_realloc(m->tensors, (size_t)(m->n_tensors + 1) * sizeof *grown, e);
    if (!grown)
        return MR_ERR_INTERNAL;
    m->tensors = grown;
    rt_tensor *t = &m->tensors[m->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->numel = 1;
    for (int i = 0; i < n_dims; i++) {
        if (shape[i] < 1)
            return mr_fail(e, MR_ERR_INTERNAL, "tensor %s: dimension %d is %lld", name, i, (long long)shape[i]);
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    t->offset = m->n_params;
    t->decay = decay;
    m->n_params += t->numel;
    return MR_OK;
}

const rt_tensor *rt_model_find(const rt_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name))
            return &m->tensors[i];
    return NULL;
}

int rt_model_create(rt_model *m, const rt_config *cfg, mr_error *e) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->arch = rt_arch_find(cfg->arch);
    if (!m->arch)
        return mr_fail(e, MR_ERR_USAGE, "unknown retriever architecture '%s'", cfg->arch);
    int rc = m->arch->layout(m, e);
    if (!rc) {
        m->params = mr_alloc_aligned((m->n_params ? m->n_params : 1) * sizeof(float), e);
        rc = m->params ? MR_OK : MR_ERR_INTERNAL;
    }
    if (!rc) {
        memset(m->params, 0, m->n_params * sizeof(float));
        rc = m->arch->bind(m, e);
    }
    if (rc)
        rt_model_free(m);
    return rc;
}

int rt_model_alloc_grads(rt_model *m, mr_error *e) {
    if (m->grads)
        return MR_OK;
    m->grads = mr_alloc_aligned((m->n_params ? m->n_params : 1) * sizeof(float), e);
    if (!m->grads)
        return MR_ERR_INTERNAL;
    memset(m->grads, 0, m->n_params * sizeof(float));
    return m->arch->bind(m, e);
}

void rt_model_free(rt_model *m) {
    if (m->arch && m->impl)
        m->arch->unbind(m);
    free(m->tensors);
    free(m->params);
    free(m->grads);
    memset(m, 0, sizeof *m);
}

/* ---- files: safetensors with the state_dict names, the configuration in the metadata ---- */

int rt_read_tensors(const rt_model *m, const st_file *f, float *dst, mr_error *e) {
    for (int i = 0; i < m->n_tensors; i++) {
        const rt_tensor *t = &m->tensors[i];
        const st_tensor *s = st_find(f, t->name);
        if (!s) return mr_fail(e, MR_ERR_INPUT, "%s: tensor %s is missing", f->path, t->name);
        int same = s->n_dims == t->n_dims;
        for (int k = 0; same && k < t->n_dims; k++) same = s->shape[k] == t->shape[k];
        if (!same) {
            char want[64] = "", got[64] = "";
            for (int k = 0; k < t->n_dims; k++)
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", k ? "," : "", (long long)t->shape[k]);
            for (int k = 0; k < s->n_dims && k < 8; k++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", k ? "," : "", (long long)s->shape[k]);
            return mr_fail(e, MR_ERR_INPUT, "%s: tensor %s has shape [%s], expected [%s]", f->path, t->name, got, want);
        }
        int rc = st_read_f32(s, dst + t->offset, (int64_t)t->numel, e);
        if (rc) {
            mr_error_prefix(e, "%s: ", f->path);
            return rc;
        }
        if ((rc = mr_check_finite(dst + t->offset, t->numel, f->path, t->name, e))) return rc;
    }
    return MR_OK;
}

int rt_config_to_metadata(const rt_config *c, st_writer *w, mr_error *e) {
    char buf[64];
    int rc = st_writer_set_metadata(w, "arch", c->arch, e);
#define PUT(key, ...)                                                                                                  \
    if (!rc) {                                                                                                         \
        snprintf(buf, sizeof buf, __VA_ARGS__);                                                                        \
        rc = st_writer_set_metadata(w, key, buf, e);                                                                   \
    }
    PUT("n_items", "%d", c->n_items);
    PUT("hidden", "%d", c->hidden);
    PUT("blocks", "%d", c->blocks);
    PUT("heads", "%d", c->heads);
    PUT("max_len", "%d", c->max_len);
    PUT("dropout", "%.9g", (double)c->dropout);
    PUT("attn_dropout", "%.9g", (double)c->attn_dropout);
    PUT("mask_prob", "%.9g", (double)c->mask_prob);
    PUT("reg_weight", "%.9g", (double)c->reg_weight);
    PUT("max_predictions", "%d", c->max_predictions);
    PUT("n_users", "%d", c->n_users);
#undef PUT
    return rc;
}

/* A value of the metadata (strings only, as safetensors stores them); NULL when absent. */
static const char *meta_str(json_t *root, const char *key) { return json_string_value(json_object_get(root, key)); }

static int meta_num(json_t *root, const char *path, const char *key, double *out, mr_error *e) {
    const char *v = meta_str(root, key);
    if (!v) return mr_fail(e, MR_ERR_INPUT, "%s: metadata %s is missing", path, key);
    if (mr_parse_double(v, out)) return mr_fail(e, MR_ERR_INPUT, "%s: metadata %s = '%s' is not a number", path, key, v);
    return MR_OK;
}

/* A file written before the arch key existed is LRURec: its configuration comes from
 * the tensors' shapes (items, hidden, blocks) and the max_len / dropout metadata. */
static int legacy_lru_config(const st_file *f, json_t *root, rt_config *c, mr_error *e) {
    memset(c, 0, sizeof *c);
    snprintf(c->arch, sizeof c->arch, "lru");
    const st_tensor *emb = st_find(f, "embedding.token.weight");
    if (!emb || emb->n_dims != 2)
        return mr_fail(e, MR_ERR_INPUT, "%s: no arch in the metadata and no 2-d embedding.token.weight: not a retriever",
                       f->path);
    c->n_items = (int)emb->shape[0] - 1;
    c->hidden = (int)emb->shape[1];
    char name[96];
    for (;;) {
        snprintf(name, sizeof name, "model.lru_blocks.%d.lru_layer.params_log", c->blocks);
        if (!st_find(f, name) || c->blocks >= 1000) break;
        c->blocks++;
    }
    double v;
    c->max_len = meta_str(root, "max_len") && !mr_parse_double(meta_str(root, "max_len"), &v) ? (int)v : 200;
    c->dropout = meta_str(root, "dropout") && !mr_parse_double(meta_str(root, "dropout"), &v) ? (float)v : 0.0f;
    if (!c->blocks) return mr_fail(e, MR_ERR_INPUT, "%s: no LRU blocks (model.lru_blocks.0.lru_layer.params_log)", f->path);
    return MR_OK;
}

int rt_config_from_file(const st_file *f, rt_config *c, mr_error *e) {
    json_t *root = f->metadata_json ? json_loads(f->metadata_json, 0, NULL) : NULL;
    const char *arch = root ? meta_str(root, "arch") : NULL;
    int rc = MR_OK;
    if (!arch) {
        rc = legacy_lru_config(f, root, c, e);
    } else if (strlen(arch) >= sizeof c->arch) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: metadata arch '%.32s...' is too long", f->path, arch);
    } else {
        memset(c, 0, sizeof *c);
        snprintf(c->arch, sizeof c->arch, "%s", arch);
        double v[9];
        const char *keys[9] = {"n_items", "hidden", "blocks", "heads", "max_len",
                               "dropout", "attn_dropout", "mask_prob", "reg_weight"};
        for (int i = 0; i < 9 && !rc; i++) rc = meta_num(root, f->path, keys[i], &v[i], e);
        if (!rc) {
            for (int i = 0; i < 5 && !rc; i++)
                if (!(v[i] >= 0 && v[i] <= 2e9))
                    rc = mr_fail(e, MR_ERR_INPUT, "%s: metadata %s = %g is out of range", f->path, keys[i], v[i]);
            c->n_items = (int)v[0];
            c->hidden = (int)v[1];
            c->blocks = (int)v[2];
            c->heads = (int)v[3];
            c->max_len = (int)v[4];
            c->dropout = (float)v[5];
            c->attn_dropout = (float)v[6];
            c->mask_prob = (float)v[7];
            c->reg_weight = (float)v[8];
        }
        /* absent from files written before these keys existed: 0 (no limit / one row) */
        const char *opt[2] = {"max_predictions", "n_users"};
        int *dst[2] = {&c->max_predictions, &c->n_users};
        for (int i = 0; i < 2 && !rc; i++) {
            double x = 0;
            if (meta_str(root, opt[i]) && (rc = meta_num(root, f->path, opt[i], &x, e))) break;
            if (!(x >= 0 && x <= 2e9))
                rc = mr_fail(e, MR_ERR_INPUT, "%s: metadata %s = %g is out of range", f->path, opt[i], x);
            else
                *dst[i] = (int)x;
        }
        if (!rc && !rt_arch_find(c->arch)) {
            char names[256];
            rt_arch_names(names, sizeof names);
            rc = mr_fail(e, MR_ERR_INPUT, "%s: architecture '%s' is not built into this mllm4rec (it has: %s)", f->path,
                         c->arch, names);
        }
    }
    json_decref(root);
    return rc;
}

int rt_model_save(const rt_model *m, const char *path, mr_error *e) {
    st_writer *w = st_writer_new(e);
    if (!w) return MR_ERR_INTERNAL;
    int rc = MR_OK;
    for (int i = 0; i < m->n_tensors && !rc; i++) {
        const rt_tensor *t = &m->tensors[i];
        rc = st_writer_add(w, t->name, ST_F32, t->n_dims, t->shape, m->params + t->offset, e);
    }
    if (!rc) rc = rt_config_to_metadata(&m->cfg, w, e);
    if (!rc) rc = st_writer_write(w, path, e);
    st_writer_free(w);
    return rc;
}

int rt_model_load(rt_model *m, const char *path, mr_error *e) {
    memset(m, 0, sizeof *m);
    st_file f;
    int rc = st_open(&f, path, e);
    if (rc) return rc;
    rt_config c;
    rc = rt_config_from_file(&f, &c, e);
    if (!rc) rc = rt_model_create(m, &c, e);
    if (!rc) {
        rc = rt_read_tensors(m, &f, m->params, e);
        if (rc) rt_model_free(m);
    } else if (rc == MR_ERR_USAGE) {
        rc = MR_ERR_INPUT; /* a bad configuration in a file is bad input, not a bad command line */
    }
    st_close(&f);
    return rc;
}
