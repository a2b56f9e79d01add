/* The model's tokenizer (module tokenizer.h): from the GGUF's tokenizer.ggml.*
 * keys or the Hugging Face folder's tokenizer files. A model without one still
 * loads; then only token ids work, and text asks say why. */
#include <stdlib.h>
#include <string.h>

#include "llm/model_internal.h"
#include "mllm4rec/tokenizer.h"

void llm_tokenizer_free_hook(llm_model *m) {
    if (m->tok) tokenizer_free(m->tok);
    m->tok = NULL;
}

int llm_load_tokenizer(llm_model *m, mr_error *e) {
    tokenizer *t = NULL;
    mr_error te = {0};
    int rc;
    if (m->source == LLM_SRC_GGUF) {
        if (!gguf_find(m->gguf, "tokenizer.ggml.model")) {
            snprintf(m->tok_missing_why, sizeof m->tok_missing_why,
                     "%s has no tokenizer (no tokenizer.ggml.model key); use token ids (--ids)", m->path);
            return MR_OK;
        }
        rc = tokenizer_load_gguf(&t, m->gguf, &te);
    } else {
        if (!tokenizer_hf_available(m->path)) {
            snprintf(m->tok_missing_why, sizeof m->tok_missing_why,
                     "%s has no tokenizer files (tokenizer.json); use token ids (--ids)", m->path);
            return MR_OK;
        }
        rc = tokenizer_load_hf(&t, m->path, &te);
    }
    if (rc) {
        /* the weights are usable without it: say why text does not work */
        snprintf(m->tok_missing_why, sizeof m->tok_missing_why, "tokenizer not loaded: %.200s", te.msg);
        mr_log("warning: %s", m->tok_missing_why);
        return MR_OK;
    }
    if (tokenizer_n_vocab(t) > m->cfg.n_vocab) {
        rc = mr_fail(e, MR_ERR_INPUT, "%s: the tokenizer has %d tokens but the model's vocabulary only %d", m->path,
                     (int)tokenizer_n_vocab(t), m->cfg.n_vocab);
        tokenizer_free(t);
        return rc;
    }
    m->tok = t;
    m->bos_id = tokenizer_bos(t);
    m->eos_id = tokenizer_eos(t);
    m->add_bos = tokenizer_adds_bos(t) && m->bos_id >= 0;
    return MR_OK;
}

int llm_tokenize(const llm_model *m, const char *text, size_t len, int add_special, int32_t **ids, int64_t *n,
                 mr_error *e) {
    if (!m->tok) return mr_fail(e, MR_ERR_USAGE, "%s", m->tok_missing_why);
    size_t nn = 0;
    int rc = tokenizer_encode(m->tok, text, len, add_special ? TOK_ADD_SPECIAL : 0, ids, &nn, e);
    *n = (int64_t)nn;
    return rc;
}

int llm_token_piece(const llm_model *m, int32_t id, char **buf, size_t *len, size_t *cap, mr_error *e) {
    if (!m->tok) return mr_fail(e, MR_ERR_USAGE, "%s", m->tok_missing_why);
    size_t pl = 0;
    const char *p = tokenizer_token_piece(m->tok, id, 0, &pl);
    if (!p) return mr_fail(e, MR_ERR_INPUT, "token id %d is outside the vocabulary", (int)id);
    if (*len + pl + 1 > *cap) {
        size_t nc = (*cap ? *cap * 2 : 256) + pl;
        char *nb = mr_realloc(*buf, nc, e);
        if (!nb) return MR_ERR_INTERNAL;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, p, pl);
    *len += pl;
    (*buf)[*len] = 0;
    return MR_OK;
}

int llm_is_eog(const llm_model *m, int32_t id) {
    if (m->tok) return tokenizer_is_eog(m->tok, id);
    return id >= 0 && (id == m->eos_id || id == m->eot_id);
}
