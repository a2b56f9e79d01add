/* MLLM4Rec's ranking prompt (DESIGN section 7, paper/roles.md): the alpaca-short
 * template with a role-play instruction, the history and the lettered candidates,
 * each item written "{title : caption" with both parts cut to their first tokens.
 * Also LlamaRec's own prompt (titles only) for the comparison without images. */
#include "mllm4rec/ranker.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* The authors' strings, spelling and spacing included ("order,candidates",
 * "thepreviously", "pool  with"); only the noun differs between datasets. */
static const char INSTR_HEAD[] = "I will provide you with the ";
static const char INSTR_TAIL[] =
    " you have previously browsed in chronological order,candidates pool, and vision descriptions for each item in "
    "thepreviously browsed item and candidates pool. The provided data is in the format {item : vision descriptions}. "
    "please correlate the item with the corresponding vision descriptions. Recommend an item from the candidate pool  "
    "with its index letter.";

static const struct {
    const char *key, *role, *noun;
} ROLES[] = {
    {"ml-100k", "You are going to play a movie enthusiast who is selecting movies they are interested in.", "movies"},
    {"games", "You will play as a gamer, selecting the games you love.", "games"},
    {"beauty", "You will play the role of a female, purchasing female items for yourself.", "items"},
    {"toys", "You will play the role of a guardian, purchasing children's toys for your own child.", "items"},
};

static const char LLAMAREC_SYSTEM[] =
    "Given user history in chronological order, recommend an item from the candidate pool with its index letter.";

void mr_prompt_opts_default(mr_prompt_opts *o) {
    memset(o, 0, sizeof *o);
    o->templ = MR_TEMPLATE_MLLM4REC;
    o->captions = MR_CAPTIONS_TEMPLATE;
    o->history = 20;
    o->max_title_tokens = 32;
    o->max_tokens = 1536;
}

int mr_prompt_captions_on(const mr_prompt_opts *o) {
    return o->captions == MR_CAPTIONS_TEMPLATE ? o->templ == MR_TEMPLATE_MLLM4REC : o->captions == MR_CAPTIONS_ON;
}

int mr_prompt_parse_captions(const char *s, int *out, mr_error *e) {
    *out = MR_CAPTIONS_TEMPLATE;
    if (!s) return MR_OK;
    if (!strcmp(s, "on")) *out = MR_CAPTIONS_ON;
    else if (!strcmp(s, "off")) *out = MR_CAPTIONS_OFF;
    else return mr_fail(e, MR_ERR_USAGE, "captions must be on or off (got '%s')", s);
    return MR_OK;
}

int mr_prompt_settings_write(const char *dir, const mr_prompt_opts *o, mr_error *e) {
    char *path = mr_path_join(dir, "prompt.json", e);
    if (!path) return e->code;
    char text[128];
    int n = snprintf(text, sizeof text, "{\n  \"template\": \"%s\",\n  \"captions\": \"%s\"\n}\n",
                     o->templ == MR_TEMPLATE_LLAMAREC ? "llamarec" : "mllm4rec", mr_prompt_captions_on(o) ? "on" : "off");
    int rc = mr_write_file_atomic(path, text, (size_t)n, e);
    free(path);
    return rc;
}

int mr_prompt_settings_read(const char *dir, mr_template *templ, int *captions, int *found, mr_error *e) {
    *found = 0;
    char *path = mr_path_join(dir, "prompt.json", e);
    if (!path) return e->code;
    if (!mr_file_exists(path)) {
        free(path);
        return MR_OK;
    }
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    const char *t = root ? json_string_value(json_object_get(root, "template")) : NULL;
    const char *c = root ? json_string_value(json_object_get(root, "captions")) : NULL;
    int rc = MR_OK;
    if (!root) rc = mr_fail(e, MR_ERR_INPUT, "%s:%d: %s", path, je.line, je.text);
    else if (!t || (strcmp(t, "mllm4rec") && strcmp(t, "llamarec")))
        rc = mr_fail(e, MR_ERR_INPUT, "%s: field template: expected \"mllm4rec\" or \"llamarec\"", path);
    else if (!c || (strcmp(c, "on") && strcmp(c, "off")))
        rc = mr_fail(e, MR_ERR_INPUT, "%s: field captions: expected \"on\" or \"off\"", path);
    if (!rc) {
        *templ = strcmp(t, "llamarec") ? MR_TEMPLATE_MLLM4REC : MR_TEMPLATE_LLAMAREC;
        *captions = strcmp(c, "on") ? MR_CAPTIONS_OFF : MR_CAPTIONS_ON;
        *found = 1;
    }
    json_decref(root);
    free(path);
    return rc;
}

/* A growing string. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static int sb_finish(sbuf *b, char **out, mr_error *e) {
    if (b->oom || !b->s) {
        free(b->s);
        if (b->oom) return mr_fail(e, MR_ERR_INTERNAL, "out of memory building a prompt");
        *out = mr_strdup("", e);
        return *out ? MR_OK : e->code;
    }
    *out = b->s;
    return MR_OK;
}

int mr_ranker_system(mr_template templ, const char *role_key, const char *role_text, char **out, mr_error *e) {
    *out = NULL;
    if (templ == MR_TEMPLATE_LLAMAREC) {
        *out = mr_strdup(LLAMAREC_SYSTEM, e);
        return *out ? MR_OK : e->code;
    }
    const char *role = NULL, *noun = "items";
    if (role_text && *role_text) {
        role = role_text;
    } else if (role_key) {
        for (size_t i = 0; i < sizeof ROLES / sizeof ROLES[0]; i++)
            if (!strcmp(ROLES[i].key, role_key)) {
                role = ROLES[i].role;
                noun = ROLES[i].noun;
            }
    }
    if (!role)
        return mr_fail(e, MR_ERR_USAGE,
                       "the dataset has no built-in role (built in: MovieLens, beauty, toys, games): pass --role TEXT");
    sbuf b = {0};
    sb_str(&b, role);
    sb_str(&b, " ");
    sb_str(&b, INSTR_HEAD);
    sb_str(&b, noun);
    sb_str(&b, INSTR_TAIL);
    return sb_finish(&b, out, e);
}

int mr_prompt_history(const mr_dataset *d, int32_t user_id, int split, int history, const int32_t **hist,
                      int *n_hist, int32_t *target, mr_error *e) {
    if (user_id <= 0 || user_id > d->n_users)
        return mr_fail(e, MR_ERR_INPUT, "user %d is not in the dataset (users 1..%lld)", user_id, (long long)d->n_users);
    const int32_t n = d->seq_len[user_id];
    if (n < 3) return mr_fail(e, MR_ERR_INPUT, "user %d has only %d items (no val/test split)", user_id, n);
    const int end = split == MR_SPLIT_TEST ? n - 1 : n - 2; /* index of the predicted item */
    int start = end - history;
    if (start < 0) start = 0;
    *hist = d->seqs[user_id] + start;
    *n_hist = end - start;
    if (target) *target = d->seqs[user_id][end];
    return MR_OK;
}

/* Appends one item: "(1) {title : caption" (mllm4rec) or "(1) title" (llamarec);
 * without captions "(1) {title" or "(1) title"; llamarec with captions
 * "(1) title : caption". */
static int add_item(sbuf *b, const mr_dataset *d, const mr_rank_tok *tok, const mr_prompt_opts *o, const char *tag,
                    int32_t item, mr_error *e) {
    if (item <= 0 || item > d->n_items) return mr_fail(e, MR_ERR_INPUT, "item %d is not in the dataset", item);
    char *title = NULL, *caption = NULL;
    int rc = tok->truncate(tok->ctx, d->items[item].title, o->max_title_tokens, &title, e);
    if (rc) return rc;
    sb_str(b, "(");
    sb_str(b, tag);
    sb_str(b, ") ");
    if (o->templ == MR_TEMPLATE_MLLM4REC) sb_str(b, "{");
    sb_str(b, title);
    if (mr_prompt_captions_on(o)) {
        rc = tok->truncate(tok->ctx, d->items[item].caption ? d->items[item].caption : "", o->max_title_tokens, &caption,
                           e);
        if (!rc) {
            sb_str(b, " : ");
            sb_str(b, caption);
        }
    }
    free(title);
    free(caption);
    return rc;
}

int mr_prompt_text(const mr_dataset *d, const mr_rank_tok *tok, const mr_prompt_opts *o, const int32_t *hist,
                   int n_hist, const int32_t *cands, int n_cands, const char *response, char **out, mr_error *e) {
    *out = NULL;
    if (!o->system) return mr_fail(e, MR_ERR_INTERNAL, "prompt: no instruction line");
    if (n_cands <= 0 || n_cands > 26)
        return mr_fail(e, MR_ERR_USAGE, "prompt: %d candidates (letters A..Z allow 1..26)", n_cands);
    sbuf b = {0};
    int rc = MR_OK;
    sb_str(&b, "### Instruction:\n");
    sb_str(&b, o->system);
    sb_str(&b, "\n\n### Input:\n");
    sb_str(&b, o->templ == MR_TEMPLATE_LLAMAREC ? "User history: " : "Previously browsed: ");
    char tag[16];
    for (int i = 0; i < n_hist && !rc; i++) {
        if (i) sb_str(&b, " \n ");
        snprintf(tag, sizeof tag, "%d", i + 1);
        rc = add_item(&b, d, tok, o, tag, hist[i], e);
    }
    sb_str(&b, "; \n Candidate pool: ");
    for (int i = 0; i < n_cands && !rc; i++) {
        if (i) sb_str(&b, " \n ");
        tag[0] = (char)('A' + i);
        tag[1] = '\0';
        rc = add_item(&b, d, tok, o, tag, cands[i], e);
    }
    sb_str(&b, "\n\n### Response:\n");
    if (response) sb_str(&b, response);
    if (rc) {
        free(b.s);
        return rc;
    }
    return sb_finish(&b, out, e);
}

int mr_prompt_ids(const mr_rank_tok *tok, const char *text, int max_tokens, int32_t **ids, int64_t *n, mr_error *e) {
    *ids = NULL;
    *n = 0;
    int32_t *t = NULL;
    int64_t nt = 0;
    int rc = tok->encode(tok->ctx, text, &t, &nt, e);
    if (rc) return rc;
    const int has_bos = tok->bos >= 0;
    int64_t keep = max_tokens - has_bos;
    if (keep < 1) {
        free(t);
        return mr_fail(e, MR_ERR_USAGE, "prompt: a limit of %d tokens leaves no room for text", max_tokens);
    }
    if (nt < keep) keep = nt;
    int32_t *out = mr_alloc((size_t)(keep + has_bos + 1) * sizeof *out, e);
    if (!out) {
        free(t);
        return e->code;
    }
    if (has_bos) out[0] = tok->bos;
    /* cut from the left, as the reference's tokenizer (truncation_side = left) */
    memcpy(out + has_bos, t + (nt - keep), (size_t)keep * sizeof *out);
    free(t);
    *ids = out;
    *n = keep + has_bos;
    return MR_OK;
}

int mr_prompt_train_ids(const mr_rank_tok *tok, const char *text_with_letter, int max_tokens, int32_t **ids,
                        int64_t *n, mr_error *e) {
    if (tok->eos < 0) return mr_fail(e, MR_ERR_INPUT, "the model has no end-of-sequence token to train on");
    int rc = mr_prompt_ids(tok, text_with_letter, max_tokens, ids, n, e);
    if (rc) return rc;
    int32_t *p = *ids;
    if (p[*n - 1] != tok->eos) p[(*n)++] = tok->eos; /* room for one more was allocated */
    if (*n > max_tokens) {
        /* the reference's collate keeps the last max_tokens (this drops BOS) */
        int64_t cut = *n - max_tokens;
        memmove(p, p + cut, (size_t)max_tokens * sizeof *p);
        *n = max_tokens;
    }
    if (*n < 3) return mr_fail(e, MR_ERR_INPUT, "training example of %lld tokens is too short", (long long)*n);
    return MR_OK;
}

int mr_verbalizer_tokens(const mr_rank_tok *tok, int n, int32_t *out, mr_error *e) {
    if (n <= 0 || n > 26) return mr_fail(e, MR_ERR_USAGE, "verbalizer: %d letters (1..26)", n);
    static const char prefix[] = "### Response:\n";
    int32_t *base = NULL;
    int64_t nb = 0;
    int rc = tok->encode(tok->ctx, prefix, &base, &nb, e);
    if (rc) return rc;
    for (int i = 0; i < n && !rc; i++) {
        char text[sizeof prefix + 2];
        snprintf(text, sizeof text, "%s%c", prefix, 'A' + i);
        int32_t *full = NULL;
        int64_t nf = 0;
        if ((rc = tok->encode(tok->ctx, text, &full, &nf, e))) break;
        int64_t j = 0;
        while (j < nb && j < nf && full[j] == base[j]) j++;
        if (j >= nf)
            rc = mr_fail(e, MR_ERR_INPUT, "verbalizer: the letter %c adds no token after \"### Response:\\n\"", 'A' + i);
        else
            out[i] = full[j];
        free(full);
        for (int k = 0; k < i && !rc; k++)
            if (out[k] == out[i])
                rc = mr_fail(e, MR_ERR_INPUT, "verbalizer: letters %c and %c give the same token %d", 'A' + k, 'A' + i,
                             out[i]);
    }
    free(base);
    return rc;
}
