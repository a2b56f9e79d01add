/* llama.cpp LoRA adapters (GGUF, general.type = adapter, adapter.type = lora).
 * For a base weight "blk.N.attn_q.weight" the adapter holds
 * "blk.N.attn_q.weight.lora_a" with ne = {n_in, r} (PEFT's A [r][n_in]) and
 * ".lora_b" with ne = {r, n_out} (B [n_out][r]); llama.cpp adds
 * scale · B (A x) with scale = user_scale · alpha / r (user_scale when alpha is
 * 0), r = ne[0] of lora_b. The pair stays unmerged so training can update it. */
#include <stdlib.h>
#include <string.h>

#include "llm/model_internal.h"
#include "nn/quant.h"

/* B's rows, [n_heads * hd][r]: head h's row 2i+j (llama.cpp's adjacent pairs) becomes
 * row j*hd/2+i (rotate halves), for i < hd/2, j in {0, 1}. */
static int lora_b_pairs_to_halves(float *b, int n_heads, int hd, int r, mr_error *e) {
    float *tmp = mr_alloc((size_t)hd * (size_t)r * sizeof *tmp, e);
    if (!tmp) return MR_ERR_INTERNAL;
    for (int h = 0; h < n_heads; h++) {
        float *head = b + (size_t)h * hd * r;
        for (int i = 0; i < hd / 2; i++)
            for (int j = 0; j < 2; j++)
                memcpy(tmp + (size_t)(j * (hd / 2) + i) * r, head + (size_t)(2 * i + j) * r, (size_t)r * sizeof *tmp);
        memcpy(head, tmp, (size_t)hd * r * sizeof *tmp);
    }
    free(tmp);
    return MR_OK;
}

static llm_linear *target_linear(llm_model *m, const char *base, int *layer) {
    static const char *ROLES[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    int l, n = 0;
    char role[64];
    if (sscanf(base, "blk.%d.%63[a-z_].weight%n", &l, role, &n) != 2 || base[n] != 0) return NULL;
    if (l < 0 || l >= m->cfg.n_layer) return NULL;
    *layer = l;
    llm_layer *L = &m->layers[l];
    llm_linear *lin[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    for (int i = 0; i < 7; i++)
        if (!strcmp(role, ROLES[i])) return lin[i];
    return NULL;
}

static float *tensor_floats(const gguf_tensor *t, const char *path, mr_error *e) {
    if (!quant_supported(t->type)) {
        mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' has unsupported type %s", path, t->name, ggml_type_name(t->type));
        return NULL;
    }
    int64_t n = (int64_t)(t->ne[0] * t->ne[1]);
    float *v = mr_alloc((size_t)n * sizeof *v, e);
    if (!v) return NULL;
    size_t rb = quant_row_bytes(t->type, (int64_t)t->ne[0]);
    for (uint64_t r = 0; r < t->ne[1]; r++)
        dequantize_row(t->type, (const uint8_t *)t->data + r * rb, v + r * t->ne[0], (int64_t)t->ne[0]);
    if (mr_check_finite(v, (size_t)n, path, t->name, e)) {
        free(v);
        return NULL;
    }
    return v;
}

int llm_lora_apply_file(llm_model *m, const char *path, float user_scale, mr_error *e) {
    gguf_file g;
    int rc = gguf_open(&g, path, e);
    if (rc) return rc;
    char *s = NULL;
    llm_lora *loras = NULL;
    int n_pairs = 0;
    if ((rc = gguf_get_str(&g, "general.type", &s, e))) {
        mr_error_prefix(e, "%s: not a LoRA adapter: ", path);
        goto done;
    }
    if (strcmp(s, "adapter")) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: general.type is '%s', expected 'adapter'", path, s);
        goto done;
    }
    free(s);
    s = NULL;
    if (gguf_find(&g, "adapter.type")) {
        if ((rc = gguf_get_str(&g, "adapter.type", &s, e))) goto done;
        if (strcmp(s, "lora")) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: adapter.type is '%s', expected 'lora'", path, s);
            goto done;
        }
        free(s);
        s = NULL;
    }
    if ((rc = gguf_get_str(&g, "general.architecture", &s, e))) goto done;
    const char *arch = m->cfg.arch == LLM_ARCH_QWEN2 ? "qwen2" : "llama";
    if (strcmp(s, arch)) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: general.architecture '%s' does not match the model's '%s'", path, s, arch);
        goto done;
    }
    double alpha = 0;
    if (gguf_find(&g, "adapter.lora.alpha") && (rc = gguf_get_f64(&g, "adapter.lora.alpha", &alpha, e))) goto done;

    for (uint64_t i = 0; i < g.n_tensors; i++) {
        size_t len = strlen(g.tensors[i].name);
        if (len > 7 && !strcmp(g.tensors[i].name + len - 7, ".lora_a")) n_pairs++;
        else if (!(len > 7 && !strcmp(g.tensors[i].name + len - 7, ".lora_b"))) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' is neither a .lora_a nor a .lora_b", path, g.tensors[i].name);
            goto done;
        }
    }
    if (n_pairs == 0) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: the adapter holds no lora_a tensors", path);
        goto done;
    }
    loras = mr_calloc((size_t)n_pairs, sizeof *loras, e);
    if (!loras) {
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    int k = 0;
    llm_linear *targets[4096];
    if (n_pairs > 4096) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: too many adapted tensors (%d)", path, n_pairs);
        goto done;
    }
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const gguf_tensor *ta = &g.tensors[i];
        size_t len = strlen(ta->name);
        if (strcmp(ta->name + len - 7, ".lora_a")) continue;
        char base[256], bname[272];
        if (len - 7 >= sizeof base) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: tensor name '%s' is too long", path, ta->name);
            goto done;
        }
        memcpy(base, ta->name, len - 7);
        base[len - 7] = 0;
        snprintf(bname, sizeof bname, "%s.lora_b", base);
        const gguf_tensor *tb = gguf_find_tensor(&g, bname);
        if (!tb) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' has no matching '%s'", path, ta->name, bname);
            goto done;
        }
        int layer;
        llm_linear *lin = target_linear(m, base, &layer);
        if (!lin) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: tensor '%s' adapts '%s', which is not an attention or feed-forward "
                                          "weight of this %d-layer model",
                         path, ta->name, base, m->cfg.n_layer);
            goto done;
        }
        if (lin->lora) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: '%s' already has an adapter (one adapter per weight)", path, base);
            goto done;
        }
        for (int j = 0; j < k; j++)
            if (targets[j] == lin) {
                rc = mr_fail(e, MR_ERR_INPUT, "%s: '%s' is adapted twice", path, base);
                goto done;
            }
        if (ta->n_dims != 2 || tb->n_dims != 2 || ta->ne[0] != (uint64_t)lin->w.cols ||
            tb->ne[1] != (uint64_t)lin->w.rows || ta->ne[1] != tb->ne[0] || ta->ne[1] == 0 || ta->ne[1] > 65536) {
            rc = mr_fail(e, MR_ERR_INPUT,
                         "%s: '%s' has ne [%llu, %llu] and '%s' [%llu, %llu]; the weight needs [%lld, r] and [r, %lld]",
                         path, ta->name, (unsigned long long)ta->ne[0], (unsigned long long)ta->ne[1], bname,
                         (unsigned long long)tb->ne[0], (unsigned long long)tb->ne[1], (long long)lin->w.cols,
                         (long long)lin->w.rows);
            goto done;
        }
        llm_lora *lo = &loras[k];
        lo->rank = (int)tb->ne[0];
        lo->scale = alpha != 0 ? (float)(user_scale * alpha / lo->rank) : user_scale;
        if (!(lo->a = tensor_floats(ta, path, e)) || !(lo->b = tensor_floats(tb, path, e))) {
            rc = e->code ? e->code : MR_ERR_INTERNAL;
            goto done;
        }
        /* llama.cpp's converter permuted the q and k rows of `llama` models into
         * adjacent RoPE pairs, and its adapters carry B in that order. A Hugging Face
         * folder keeps the rotate-halves order, so B's rows go back to it here. */
        if (m->cfg.arch == LLM_ARCH_LLAMA && m->cfg.rope_halves && (lin == &m->layers[layer].wq || lin == &m->layers[layer].wk)) {
            int n_heads = lin == &m->layers[layer].wq ? m->cfg.n_head : m->cfg.n_head_kv;
            if (lora_b_pairs_to_halves(lo->b, n_heads, m->cfg.head_dim, lo->rank, e)) {
                rc = MR_ERR_INTERNAL;
                goto done;
            }
        }
        targets[k++] = lin;
    }
    /* everything checked: attach */
    llm_lora *all = mr_alloc((size_t)(m->n_loras + n_pairs) * sizeof *all, e);
    if (!all) {
        rc = MR_ERR_INTERNAL;
        goto done;
    }
    if (m->n_loras) memcpy(all, m->loras, (size_t)m->n_loras * sizeof *all);
    /* earlier adapters move to the new array: repoint their weights */
    for (int l = 0; l < m->cfg.n_layer; l++) {
        llm_layer *L = &m->layers[l];
        llm_linear *lin[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++)
            if (lin[i]->lora) lin[i]->lora = all + (lin[i]->lora - m->loras);
    }
    free(m->loras);
    m->loras = all;
    for (int j = 0; j < n_pairs; j++) {
        m->loras[m->n_loras + j] = loras[j];
        targets[j]->lora = &m->loras[m->n_loras + j];
    }
    m->n_loras += n_pairs;
    free(loras);
    loras = NULL;
    rc = MR_OK;
done:
    if (loras) {
        for (int j = 0; j < n_pairs; j++) {
            free(loras[j].a);
            free(loras[j].b);
        }
        free(loras);
    }
    free(s);
    gguf_close(&g);
    return rc;
}
