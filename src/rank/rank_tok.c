/* The ranker's view of a model tokenizer (mllm4rec/tokenizer.h). */
#include "mllm4rec/ranker.h"
#include "mllm4rec/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static int rt_encode(void *ctx, const char *text, int32_t **ids, int64_t *n, mr_error *e) {
    size_t nn = 0;
    /* no BOS/EOS here (the prompt code places them); control-token text stays text */
    int rc = tokenizer_encode((const tokenizer *)ctx, text, strlen(text), 0, ids, &nn, e);
    *n = (int64_t)nn;
    return rc;
}

static int rt_decode(void *ctx, const int32_t *ids, int64_t n, char **text, mr_error *e) {
    size_t len;
    return tokenizer_decode((const tokenizer *)ctx, ids, (size_t)n, 0, text, &len, e);
}

static int rt_truncate(void *ctx, const char *text, int max_tokens, char **out, mr_error *e) {
    size_t len;
    return tokenizer_truncate((const tokenizer *)ctx, text, strlen(text), (size_t)max_tokens, out, &len, NULL, e);
}

void mr_rank_tok_from_tokenizer(mr_rank_tok *rt, const struct tokenizer *t) {
    rt->ctx = (void *)t;
    rt->encode = rt_encode;
    rt->decode = rt_decode;
    rt->truncate = rt_truncate;
    rt->bos = tokenizer_adds_bos(t) ? tokenizer_bos(t) : -1;
    rt->eos = tokenizer_eos(t);
}
