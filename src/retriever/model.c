/* The architecture-independent half of a retriever model: the named-tensor
 * layout over one flat parameter buffer, its allocation and lookup. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "retriever/arch.h"

/* Filled as architectures are added (their rt_arch constants). */
extern const rt_arch rt_arch_sasrec, rt_arch_bert4rec, rt_arch_stosa;
static const rt_arch *const all_archs[] = {&rt_arch_sasrec, &rt_arch_bert4rec, &rt_arch_stosa, NULL};

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
