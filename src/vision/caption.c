/* The caption stage; see mllm4rec/caption.h. */
#include "mllm4rec/caption.h"

#include <errno.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mllm4rec/dataset.h"
#include "mllm4rec/dist.h"
#include "mllm4rec/tokenizer.h"

int mr_captioner_open(mr_captioner *c, const char *model_dir, const mr_blip2_options *opt, const char *prompt_text,
                      const int32_t *prompt_ids, int n_prompt_ids, int max_new_tokens, int need_text, mr_error *e) {
    memset(c, 0, sizeof *c);
    int rc = mr_blip2_load(&c->model, model_dir, opt, e);
    if (rc) return rc;
    const mr_blip2_info *in = mr_blip2_get_info(c->model);
    if (tokenizer_hf_available(model_dir)) {
        if ((rc = tokenizer_load_hf(&c->tok, model_dir, e))) {
            mr_error_prefix(e, "%s: tokenizer: ", model_dir);
            goto fail;
        }
        if (tokenizer_n_vocab(c->tok) > in->vocab) {
            rc = mr_fail(e, MR_ERR_INPUT, "%s: the tokenizer has %d tokens, the model's vocabulary only %d", model_dir,
                         tokenizer_n_vocab(c->tok), in->vocab);
            goto fail;
        }
    } else if (need_text || prompt_text) {
        rc = mr_fail(e, MR_ERR_INPUT,
                     "%s has no tokenizer (tokenizer.json, or vocab.json + merges.txt): only --prompt-ids and "
                     "--print-ids work without one",
                     model_dir);
        goto fail;
    }
    if (prompt_text && prompt_ids) {
        rc = mr_fail(e, MR_ERR_USAGE, "give a text prompt or prompt ids, not both");
        goto fail;
    }
    if (prompt_text) {
        int32_t *ids = NULL;
        size_t n = 0;
        if ((rc = tokenizer_encode(c->tok, prompt_text, strlen(prompt_text), TOK_ADD_SPECIAL, &ids, &n, e))) goto fail;
        /* OPT's tokenizer starts every text with </s> (bos); BLIP-2 prompts rely on it */
        int add = n == 0 || ids[0] != in->bos;
        c->prompt = mr_alloc(sizeof(int32_t) * (n + 1), e);
        if (!c->prompt) {
            free(ids);
            rc = MR_ERR_INTERNAL;
            goto fail;
        }
        if (add) c->prompt[0] = in->bos;
        memcpy(c->prompt + add, ids, sizeof(int32_t) * n);
        c->n_prompt = (int)n + add;
        free(ids);
    } else if (prompt_ids && n_prompt_ids > 0) {
        for (int i = 0; i < n_prompt_ids; i++)
            if (prompt_ids[i] < 0 || prompt_ids[i] >= in->vocab) {
                rc = mr_fail(e, MR_ERR_INPUT, "prompt id %d is outside the vocabulary (0..%d)", prompt_ids[i],
                             in->vocab - 1);
                goto fail;
            }
        c->prompt = mr_alloc(sizeof(int32_t) * n_prompt_ids, e);
        if (!c->prompt) {
            rc = MR_ERR_INTERNAL;
            goto fail;
        }
        memcpy(c->prompt, prompt_ids, sizeof(int32_t) * n_prompt_ids);
        c->n_prompt = n_prompt_ids;
    }
    c->max_new_tokens = max_new_tokens > 0 ? max_new_tokens : in->max_new_tokens;
    int positions = in->n_query + (c->n_prompt ? c->n_prompt : 1) + c->max_new_tokens;
    if (positions > in->max_position) {
        rc = mr_fail(e, MR_ERR_USAGE, "%d query + prompt + new positions exceed the model's %d positions", positions,
                     in->max_position);
        goto fail;
    }
    c->pixels = mr_alloc(sizeof(float) * 3 * (size_t)in->image_size * in->image_size, e);
    c->ids = mr_alloc(sizeof(int32_t) * (size_t)c->max_new_tokens, e);
    if (!c->pixels || !c->ids) {
        rc = MR_ERR_INTERNAL;
        goto fail;
    }
    return MR_OK;
fail:
    mr_captioner_close(c);
    return rc;
}

void mr_captioner_close(mr_captioner *c) {
    mr_blip2_free(c->model);
    tokenizer_free(c->tok);
    free(c->prompt);
    free(c->pixels);
    free(c->ids);
    memset(c, 0, sizeof *c);
}

/* transformers' clean_up_tokenization (on by default in 4.33's decode). */
static void clean_up_tokenization(char *s) {
    static const char *from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
    static const char *to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    for (size_t k = 0; k < sizeof from / sizeof from[0]; k++) {
        size_t fl = strlen(from[k]), tl = strlen(to[k]);
        char *r = s, *w = s;
        while (*r) {
            if (!strncmp(r, from[k], fl)) {
                memcpy(w, to[k], tl);
                w += tl;
                r += fl;
            } else {
                *w++ = *r++;
            }
        }
        *w = 0;
    }
}

/* Bytes to text as Python's bytes.decode("utf-8", errors="replace") (what
 * transformers' byte-level decoder does): each maximal invalid part becomes
 * U+FFFD. Returns a new string. */
static char *utf8_replace_invalid(const char *s, size_t n, mr_error *e) {
    char *out = mr_alloc(n * 3 + 1, e), *w = out;
    if (!out) return NULL;
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        uint8_t c = u[i];
        int need = 0;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            *w++ = (char)c;
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        }
        size_t k = 1;
        if (need) {
            for (; k <= (size_t)need && i + k < n; k++) {
                uint8_t b = u[i + k];
                uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
                if (b < l || b > h) break;
            }
        }
        if (need && k == (size_t)need + 1) {
            memcpy(w, s + i, k);
            w += k;
        } else {
            memcpy(w, "\xef\xbf\xbd", 3);
            w += 3;
        }
        i += k;
    }
    *w = 0;
    return out;
}

static void flatten_and_trim(char *s) {
    for (char *p = s; *p; p++)
        if (*p == '\t' || *p == '\n' || *p == '\r') *p = ' ';
    size_t n = strlen(s), b = 0;
    while (b < n && s[b] == ' ') b++;
    while (n > b && s[n - 1] == ' ') n--;
    memmove(s, s + b, n - b);
    s[n - b] = 0;
}

int mr_caption_text(const mr_captioner *c, const int32_t *ids, int n_ids, char **text, mr_error *e) {
    *text = NULL;
    if (!c->tok) return mr_fail(e, MR_ERR_INPUT, "the model folder has no tokenizer: captions need one");
    int eos = mr_blip2_get_info(c->model)->eos;
    if (n_ids > 0 && ids[n_ids - 1] == eos) n_ids--;
    size_t len;
    char *raw;
    int rc = tokenizer_decode(c->tok, ids, (size_t)n_ids, 0, &raw, &len, e);
    if (rc) return rc;
    *text = utf8_replace_invalid(raw, len, e);
    free(raw);
    if (!*text) return MR_ERR_INTERNAL;
    clean_up_tokenization(*text);
    flatten_and_trim(*text);
    return MR_OK;
}

int mr_caption_file(mr_captioner *c, const char *image_path, const int32_t **ids, int *n_ids, char **text,
                    mr_error *e) {
    if (text) *text = NULL;
    *n_ids = 0;
    mr_image img;
    int rc = mr_image_load(image_path, &img, e);
    if (rc) return rc;
    rc = mr_image_to_pixels(mr_blip2_processor(c->model), &img, c->pixels, NULL, e);
    mr_image_free(&img);
    if (rc) return rc;
    rc = mr_blip2_generate(c->model, c->pixels, c->prompt, c->n_prompt, c->max_new_tokens, c->ids, n_ids, e);
    if (rc) return rc;
    *ids = c->ids;
    if (text) rc = mr_caption_text(c, c->ids, *n_ids, text, e);
    return rc;
}

/* ---------------- the dataset stage ---------------- */

typedef struct item_index {
    const mr_dataset *d;
    int32_t *order; /* item ids sorted by source id */
} item_index;

static const mr_dataset *g_sort_dataset;
static int cmp_items(const void *a, const void *b) {
    return strcmp(g_sort_dataset->items[*(const int32_t *)a].source_id,
                  g_sort_dataset->items[*(const int32_t *)b].source_id);
}

static int index_build(item_index *ix, const mr_dataset *d, mr_error *e) {
    ix->d = d;
    ix->order = mr_alloc(sizeof(int32_t) * (size_t)(d->n_items + 1), e);
    if (!ix->order) return MR_ERR_INTERNAL;
    for (int64_t i = 0; i < d->n_items; i++) ix->order[i] = (int32_t)(i + 1);
    g_sort_dataset = d;
    qsort(ix->order, (size_t)d->n_items, sizeof(int32_t), cmp_items);
    return MR_OK;
}

/* The item id of a source id, or 0. */
static int32_t index_find(const item_index *ix, const char *sid) {
    int64_t lo = 0, hi = ix->d->n_items - 1;
    while (lo <= hi) {
        int64_t mid = (lo + hi) / 2;
        int c = strcmp(ix->d->items[ix->order[mid]].source_id, sid);
        if (!c) return ix->order[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return 0;
}

/* Reads a two-column TSV with the given header into (key, value) callbacks.
 * An incomplete last line (no newline: a killed writer) is ignored, and with
 * repair the file is cut back to its last complete line. */
typedef int (*row_fn)(void *ctx, char *key, char *value, int64_t lineno, mr_error *e);
static int read_tsv2(const char *path, const char *header, int repair, row_fn fn, void *ctx, mr_error *e) {
    char *data;
    size_t len;
    int rc = mr_read_file(path, &data, &len, e);
    if (rc) return rc;
    size_t end = len;
    while (end > 0 && data[end - 1] != '\n') end--;
    if (end < len) {
        if (repair) {
            mr_log("%s: dropping an incomplete last row (an interrupted run)", path);
            if (truncate(path, (off_t)end) != 0) {
                free(data);
                return mr_fail(e, MR_ERR_INPUT, "%s: cannot cut the incomplete last row: %s", path, strerror(errno));
            }
        } else {
            end = len; /* a file made by hand may lack the final newline */
        }
    }
    data[end] = 0;
    if (!mr_utf8_valid(data, end)) {
        free(data);
        return mr_fail(e, MR_ERR_INPUT, "%s: not valid UTF-8", path);
    }
    char *p = data;
    int64_t lineno = 0;
    while (*p && !rc) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        size_t l = strlen(p);
        if (l && p[l - 1] == '\r') p[l - 1] = 0;
        lineno++;
        if (lineno == 1) {
            if (strcmp(p, header)) rc = mr_fail(e, MR_ERR_INPUT, "%s:1: expected the header '%s'", path, "source_id<TAB>caption");
        } else if (*p) {
            char *tab = strchr(p, '\t');
            if (!tab || strchr(tab + 1, '\t'))
                rc = mr_fail(e, MR_ERR_INPUT, "%s:%lld: expected 2 tab-separated fields", path, (long long)lineno);
            else {
                *tab = 0;
                rc = fn(ctx, p, tab + 1, lineno, e);
            }
        }
        if (!nl) break;
        p = nl + 1;
    }
    free(data);
    return rc;
}

typedef struct cache_ctx {
    item_index *ix;
    mr_dataset *d;
    uint8_t *done;
    int64_t unknown;
    int64_t rows;
} cache_ctx;

static int set_caption(mr_dataset *d, int32_t id, const char *text, mr_error *e) {
    char *t = mr_strdup(text, e);
    if (!t) return MR_ERR_INTERNAL;
    flatten_and_trim(t);
    free(d->items[id].caption);
    d->items[id].caption = t;
    return MR_OK;
}

static int cache_row(void *vctx, char *key, char *value, int64_t lineno, mr_error *e) {
    cache_ctx *c = vctx;
    c->rows++;
    int32_t id = index_find(c->ix, key);
    if (!id) {
        c->unknown++;
        return MR_OK;
    }
    c->done[id] = 1;
    return set_caption(c->d, id, value, e);
}

typedef struct map_ctx {
    item_index *ix;
    char **files; /* per item id */
    int64_t unknown;
} map_ctx;

static int map_row(void *vctx, char *key, char *value, int64_t lineno, mr_error *e) {
    map_ctx *m = vctx;
    int32_t id = index_find(m->ix, key);
    if (!id) {
        m->unknown++;
        return MR_OK;
    }
    free(m->files[id]);
    m->files[id] = mr_strdup(value, e);
    return m->files[id] ? MR_OK : MR_ERR_INTERNAL;
}

/* Writes one cache row; tabs and line breaks already made spaces. */
static int append_row(FILE *f, const char *sid, const char *caption, const char *path, mr_error *e) {
    if (fprintf(f, "%s\t%s\n", sid, caption) < 0 || fflush(f) != 0)
        return mr_fail(e, MR_ERR_INPUT, "%s: cannot write: %s", path, strerror(errno));
    return MR_OK;
}

static FILE *open_cache_for_append(const char *path, mr_error *e) {
    int fresh = !mr_file_exists(path);
    if (!fresh) {
        FILE *r = fopen(path, "rb");
        fresh = r && fgetc(r) == EOF;
        if (r) fclose(r);
    }
    FILE *f = mr_append_open(path, e); /* a failed row is cut back: no half row is left */
    if (!f) return NULL;
    if (fresh && (fputs("source_id\tcaption\n", f) < 0 || fflush(f) != 0)) {
        fclose(f);
        mr_fail(e, MR_ERR_INPUT, "%s: cannot write: %s", path, strerror(errno));
        return NULL;
    }
    return f;
}

/* A source id used as a file name must stay inside the images folder. */
static int safe_name(const char *s) { return *s && *s != '.' && !strchr(s, '/') && !strchr(s, '\\'); }

/* With a map (use_map), the map is the only source of images: an item it does not list
 * (mapped NULL) has none. Falling back to SOURCE_ID.jpg there would attach another
 * item's image when the folder's files are numbered by other ids (ML-100K posters and
 * ml-latest-small ids). Without a map, images are named by source id. */
static char *find_image(const char *dir, const char *sid, int use_map, const char *mapped, mr_error *e) {
    if (use_map) {
        if (!mapped) return NULL;
        char *p = mr_path_join(dir, mapped, e);
        if (p && !mr_file_exists(p)) {
            free(p);
            return NULL;
        }
        return p;
    }
    if (!safe_name(sid)) return NULL;
    static const char *ext[] = {".jpg", ".jpeg", ".png", ".webp", ".JPG", ".PNG"};
    for (size_t k = 0; k < sizeof ext / sizeof ext[0]; k++) {
        size_t n = strlen(dir) + strlen(sid) + strlen(ext[k]) + 2;
        char *p = mr_alloc(n, e);
        if (!p) return NULL;
        snprintf(p, n, "%s/%s%s", dir, sid, ext[k]);
        if (mr_file_exists(p)) return p;
        free(p);
    }
    return NULL;
}

/* ---- the batch pipeline: a helper thread finds and decodes the images of the
 * next batch while the current one runs through the model ---- */

enum { IMG_MISSING, IMG_READY, IMG_FAILED };

typedef struct cap_batch {
    int n;            /* items in the batch */
    int64_t *item;    /* [max] item ids */
    int *state;       /* [max] IMG_* */
    int *slot;        /* [max] index of the image in pixels (IMG_READY) */
    mr_error *err;    /* [max] why an image failed */
    int n_images;     /* decoded images */
    float *pixels;    /* [max][3][S][S] */
    int rc;           /* an internal error of the helper */
    mr_error e;
} cap_batch;

typedef struct cap_prefetch {
    cap_batch *b;
    const mr_image_processor *proc;
    const mr_dataset *d;
    const char *images_dir;
    char **files; /* per item id from --map, or NULL */
    const int64_t *todo;
    int64_t first, count;
    size_t image_floats;
} cap_prefetch;

static void *prefetch_run(void *arg) {
    cap_prefetch *p = arg;
    cap_batch *b = p->b;
    b->n = 0;
    b->n_images = 0;
    b->rc = MR_OK;
    for (int64_t k = 0; k < p->count && !b->rc; k++) {
        int64_t i = p->todo[p->first + k];
        int j = b->n++;
        b->item[j] = i;
        mr_error fe = {0};
        char *path = find_image(p->images_dir, p->d->items[i].source_id, p->files != NULL, p->files ? p->files[i] : NULL, &fe);
        if (!path) {
            if (fe.code == MR_ERR_INTERNAL) {
                b->rc = MR_ERR_INTERNAL;
                b->e = fe;
            }
            b->state[j] = IMG_MISSING;
            continue;
        }
        mr_image img;
        memset(&b->err[j], 0, sizeof b->err[j]);
        int rc = mr_image_load(path, &img, &b->err[j]);
        if (!rc) {
            rc = mr_image_to_pixels(p->proc, &img, b->pixels + (size_t)b->n_images * p->image_floats, NULL, &b->err[j]);
            mr_image_free(&img);
        }
        free(path);
        if (rc == MR_ERR_INTERNAL) {
            b->rc = rc;
            b->e = b->err[j];
        } else if (rc) {
            b->state[j] = IMG_FAILED;
        } else {
            b->state[j] = IMG_READY;
            b->slot[j] = b->n_images++;
        }
    }
    return NULL;
}

static void batch_free(cap_batch *b) {
    free(b->item);
    free(b->state);
    free(b->slot);
    free(b->err);
    free(b->pixels);
    memset(b, 0, sizeof *b);
}

static int batch_alloc(cap_batch *b, int max, size_t image_floats, mr_error *e) {
    memset(b, 0, sizeof *b);
    b->item = mr_alloc(sizeof(int64_t) * max, e);
    b->state = mr_alloc(sizeof(int) * max, e);
    b->slot = mr_alloc(sizeof(int) * max, e);
    b->err = mr_calloc((size_t)max, sizeof(mr_error), e);
    b->pixels = mr_alloc_aligned(sizeof(float) * image_floats * max, e);
    if (!b->item || !b->state || !b->slot || !b->err || !b->pixels) {
        batch_free(b);
        return MR_ERR_INTERNAL;
    }
    return MR_OK;
}

/* One image's outcome, as a rank sends it to rank 0: item id, kind, text length,
 * then the text (the caption, or why the image failed). */
enum { CAP_MISSING, CAP_FAILED, CAP_DONE };
typedef struct cap_record {
    int64_t item;
    int32_t kind, len;
} cap_record;

static int record_add(char **buf, size_t *n, size_t *cap, int64_t item, int kind, const char *text, mr_error *e) {
    size_t len = text ? strlen(text) : 0;
    if (len > INT32_MAX) len = INT32_MAX;
    size_t need = *n + sizeof(cap_record) + len;
    if (need > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < need) c *= 2;
        char *nb = mr_realloc(*buf, c, e);
        if (!nb) return MR_ERR_INTERNAL;
        *buf = nb;
        *cap = c;
    }
    cap_record r = {item, kind, (int32_t)len};
    memcpy(*buf + *n, &r, sizeof r);
    if (len) memcpy(*buf + *n + sizeof r, text, len);
    *n = need;
    return MR_OK;
}

/* Rank 0 takes one round's records, in item order: captions into the dataset, rows
 * appended to captions.tsv, counts. */
static int records_apply(mr_dataset *d, const char *all, size_t n_all, FILE *cf, const char *cache_path,
                         mr_caption_stats *st, int64_t *n_done, mr_error *e) {
    size_t off = 0;
    int rc = MR_OK;
    while (off < n_all && !rc) {
        cap_record r;
        if (n_all - off < sizeof r) return mr_fail(e, MR_ERR_INTERNAL, "caption: a cut record");
        memcpy(&r, all + off, sizeof r);
        off += sizeof r;
        if (r.len < 0 || (size_t)r.len > n_all - off || r.item < 1 || r.item > d->n_items)
            return mr_fail(e, MR_ERR_INTERNAL, "caption: a bad record");
        char *text = mr_alloc((size_t)r.len + 1, e);
        if (!text) return MR_ERR_INTERNAL;
        memcpy(text, all + off, (size_t)r.len);
        text[r.len] = 0;
        off += (size_t)r.len;
        const char *sid = d->items[r.item].source_id;
        if (r.kind == CAP_MISSING) {
            st->missing++;
            rc = set_caption(d, (int32_t)r.item, "", e);
        } else if (r.kind == CAP_FAILED) {
            st->failed++;
            mr_log("caption: %s", text);
            rc = set_caption(d, (int32_t)r.item, "", e);
            if (!rc) rc = append_row(cf, sid, "", cache_path, e);
        } else {
            st->captioned++;
            rc = set_caption(d, (int32_t)r.item, text, e);
            if (!rc) rc = append_row(cf, sid, d->items[r.item].caption, cache_path, e);
        }
        free(text);
        (*n_done)++;
    }
    return rc;
}

/* Rank r's batch of the round that starts at list index round_first: B images from
 * round_first + r B (fewer at the end, none past it). */
static void my_batch(cap_prefetch *q, int64_t round_first, int64_t n, int B, int64_t r) {
    int64_t s = round_first + r * B;
    q->first = s < n ? s : n;
    q->count = s < n ? (n - s < B ? n - s : B) : 0;
}

/* Captions the `todo` items not done yet, in item order, in rounds: in each round
 * every rank (mllm4rec/dist.h) takes the next batch of B images, rank r the r-th,
 * and rank 0 gathers the outcomes in item order and appends the rows (cf is NULL on
 * the other ranks, which write nothing). Within a rank the helper thread prepares
 * the next round's batch while this one runs. With one process a round is a batch. */
static int caption_pipeline(mr_captioner *c, mr_dataset *d, const char *images_dir, char **files, const uint8_t *done,
                            int64_t todo, FILE *cf, const char *cache_path, mr_caption_stats *st, mr_error *e) {
    const mr_blip2_info *in = mr_blip2_get_info(c->model);
    int B = mr_blip2_get_options(c->model)->max_batch;
    const int64_t P = mr_dist_size(), R = mr_dist_rank();
    size_t image_floats = 3 * (size_t)in->image_size * in->image_size;
    size_t feat_floats = (size_t)in->vision_tokens * in->vision_hidden;
    int64_t *list = mr_alloc(sizeof(int64_t) * (size_t)(todo > 0 ? todo : 1), e);
    float *features = mr_alloc_aligned(sizeof(float) * feat_floats * B, e);
    cap_batch bt[2] = {{0}};
    char *recs = NULL;
    size_t n_recs = 0, cap_recs = 0;
    int rc = (list && features) ? MR_OK : MR_ERR_INTERNAL;
    if (!rc) rc = batch_alloc(&bt[0], B, image_floats, e);
    if (!rc) rc = batch_alloc(&bt[1], B, image_floats, e);
    if (rc) goto out;
    int64_t n = 0;
    for (int64_t i = 1; i <= d->n_items; i++)
        if (!done[i]) list[n++] = i;
    mr_progress pr;
    mr_progress_start(&pr, "caption", n);
    cap_prefetch pf[2];
    for (int k = 0; k < 2; k++)
        pf[k] = (cap_prefetch){&bt[k], mr_blip2_processor(c->model), d, images_dir, files, list, 0, 0, image_floats};
    int64_t n_done = 0;
    const int64_t round = (int64_t)B * P;
    my_batch(&pf[0], 0, n, B, R);
    prefetch_run(&pf[0]);
    for (int64_t first = 0, k = 0; first < n && !rc; first += round, k ^= 1) {
        cap_batch *b = &bt[k];
        pthread_t th;
        int started = 0;
        int64_t next = first + round;
        if (next < n) {
            cap_prefetch *q = &pf[k ^ 1];
            my_batch(q, next, n, B, R);
            if (pthread_create(&th, NULL, prefetch_run, q) == 0) started = 1;
            else prefetch_run(q); /* no thread: prepare it here, in turn */
        }
        if (b->rc) {
            rc = b->rc;
            *e = b->e;
        }
        mr_error ve = {0};
        int vrc = rc ? rc : b->n_images ? mr_blip2_vision_batch(c->model, b->pixels, b->n_images, features, &ve) : 0;
        if (vrc == MR_ERR_INTERNAL && !rc) {
            rc = vrc;
            *e = ve;
        }
        n_recs = 0;
        for (int j = 0; j < b->n && !rc; j++) {
            int64_t i = b->item[j];
            if (b->state[j] == IMG_MISSING) {
                rc = record_add(&recs, &n_recs, &cap_recs, i, CAP_MISSING, NULL, e);
                continue;
            }
            mr_error ie = {0};
            int n_ids = 0, r = MR_OK;
            char *text = NULL;
            if (b->state[j] == IMG_FAILED) {
                r = b->err[j].code ? b->err[j].code : MR_ERR_INPUT;
                ie = b->err[j];
            } else if (vrc) {
                r = vrc;
                ie = ve;
            } else {
                r = mr_blip2_generate_image(c->model, features + feat_floats * b->slot[j], c->prompt, c->n_prompt,
                                            c->max_new_tokens, c->ids, &n_ids, &ie);
                if (!r) r = mr_caption_text(c, c->ids, n_ids, &text, &ie);
            }
            if (r == MR_ERR_INTERNAL) {
                rc = r;
                *e = ie;
            } else {
                rc = record_add(&recs, &n_recs, &cap_recs, i, r ? CAP_FAILED : CAP_DONE, r ? ie.msg : text, e);
            }
            free(text);
        }
        if (started) pthread_join(th, NULL);
        if (rc) break; /* under mpirun the caller ends the job; the others wait in the gather */
        char *all = NULL;
        size_t n_all = 0;
        if ((rc = mr_dist_gather(recs, n_recs, 0, &all, &n_all, e))) break;
        if (R == 0) {
            rc = records_apply(d, all, n_all, cf, cache_path, st, &n_done, e);
            char extra[96];
            snprintf(extra, sizeof extra, "(captioned %lld, missing %lld, failed %lld)", (long long)st->captioned,
                     (long long)st->missing, (long long)st->failed);
            mr_progress_update(&pr, n_done, extra);
        }
        free(all);
    }
    mr_progress_end(&pr);
out:
    batch_free(&bt[0]);
    batch_free(&bt[1]);
    free(list);
    free(features);
    free(recs);
    return rc;
}

int mr_caption_dataset(mr_captioner *c, const char *dataset_dir, const char *images_dir, const char *map_path,
                       mr_caption_stats *st, mr_error *e) {
    memset(st, 0, sizeof *st);
    double t0 = mr_now();
    if (!c->tok) return mr_fail(e, MR_ERR_INPUT, "captions need the model's tokenizer");
    if (!mr_is_dir(images_dir)) return mr_fail(e, MR_ERR_INPUT, "%s: not a folder of images", images_dir);
    mr_dataset d;
    int rc = mr_dataset_load(&d, dataset_dir, e);
    if (rc) return rc;
    item_index ix = {0};
    uint8_t *done = NULL;
    char **files = NULL, *cache_path = NULL;
    FILE *cf = NULL;
    st->items = d.n_items;
    if ((rc = index_build(&ix, &d, e))) goto out;
    done = mr_calloc((size_t)d.n_items + 1, 1, e);
    files = mr_calloc((size_t)d.n_items + 1, sizeof(char *), e);
    cache_path = mr_path_join(dataset_dir, "captions.tsv", e);
    if (!done || !files || !cache_path) {
        rc = MR_ERR_INTERNAL;
        goto out;
    }
    if (map_path) {
        map_ctx m = {&ix, files, 0};
        if ((rc = read_tsv2(map_path, "source_id\tfile", 0, map_row, &m, e))) goto out;
        if (m.unknown) mr_log("caption: %lld rows of %s name no item of the dataset", (long long)m.unknown, map_path);
    }
    if (mr_file_exists(cache_path)) {
        cache_ctx cc = {&ix, &d, done, 0, 0};
        if ((rc = read_tsv2(cache_path, "source_id\tcaption", mr_dist_rank() == 0, cache_row, &cc, e))) goto out;
    }
    for (int64_t i = 1; i <= d.n_items; i++) st->cached += done[i];
    int64_t todo = d.n_items - st->cached;
    if (st->cached) mr_log("caption: %lld of %lld items already in %s", (long long)st->cached, (long long)d.n_items, cache_path);
    /* under mpirun rank 0 alone writes (mllm4rec/dist.h); the others caption their share */
    const int writer = mr_dist_rank() == 0;
    if ((rc = mr_dist_barrier(e))) goto out; /* every rank has read captions.tsv before rank 0 appends */
    if (writer && !(cf = open_cache_for_append(cache_path, e))) {
        rc = e->code;
        goto out;
    }
    if ((rc = caption_pipeline(c, &d, images_dir, map_path ? files : NULL, done, todo, cf, cache_path, st, e)))
        goto out;
    if (writer) rc = mr_dataset_write_items(&d, e);
out:
    if (cf && fclose(cf) != 0 && !rc) rc = mr_fail(e, MR_ERR_INPUT, "%s: cannot write: %s", cache_path, strerror(errno));
    if (files)
        for (int64_t i = 0; i <= d.n_items; i++) free(files[i]);
    free(files);
    free(done);
    free(ix.order);
    free(cache_path);
    mr_dataset_free(&d);
    st->seconds = mr_now() - t0;
    return rc;
}

typedef struct import_ctx {
    item_index *ix;
    mr_dataset *d;
    uint8_t *have;
    int64_t unknown, rows;
} import_ctx;

static int import_row(void *vctx, char *key, char *value, int64_t lineno, mr_error *e) {
    import_ctx *c = vctx;
    c->rows++;
    int32_t id = index_find(c->ix, key);
    if (!id) {
        c->unknown++;
        return MR_OK;
    }
    c->have[id] = 1;
    return set_caption(c->d, id, value, e);
}

int mr_caption_import(const char *dataset_dir, const char *tsv_path, mr_caption_stats *st, mr_error *e) {
    memset(st, 0, sizeof *st);
    double t0 = mr_now();
    mr_dataset d;
    int rc = mr_dataset_load(&d, dataset_dir, e);
    if (rc) return rc;
    item_index ix = {0};
    uint8_t *have = NULL;
    char *cache_path = NULL;
    st->items = d.n_items;
    if ((rc = index_build(&ix, &d, e))) goto out;
    have = mr_calloc((size_t)d.n_items + 1, 1, e);
    cache_path = mr_path_join(dataset_dir, "captions.tsv", e);
    if (!have || !cache_path) {
        rc = MR_ERR_INTERNAL;
        goto out;
    }
    /* earlier rows of the dataset's cache first, then the import replaces them */
    if (mr_file_exists(cache_path)) {
        import_ctx old = {&ix, &d, have, 0, 0};
        if ((rc = read_tsv2(cache_path, "source_id\tcaption", 1, import_row, &old, e))) goto out;
        st->cached = 0;
        for (int64_t i = 1; i <= d.n_items; i++) st->cached += have[i];
    }
    uint8_t *before = mr_alloc((size_t)d.n_items + 1, e);
    if (!before) {
        rc = MR_ERR_INTERNAL;
        goto out;
    }
    memcpy(before, have, (size_t)d.n_items + 1);
    memset(have, 0, (size_t)d.n_items + 1);
    import_ctx ic = {&ix, &d, have, 0, 0};
    rc = read_tsv2(tsv_path, "source_id\tcaption", 0, import_row, &ic, e);
    for (int64_t i = 1; i <= d.n_items; i++) {
        st->captioned += have[i];
        have[i] |= before[i];
    }
    st->unknown = ic.unknown;
    free(before);
    if (rc) goto out;
    if ((rc = mr_dataset_write_items(&d, e))) goto out;
    mr_atomic_file af;
    if ((rc = mr_atomic_open(&af, cache_path, e))) goto out;
    fputs("source_id\tcaption\n", af.f);
    for (int64_t i = 1; i <= d.n_items; i++)
        if (have[i]) fprintf(af.f, "%s\t%s\n", d.items[i].source_id, d.items[i].caption);
    rc = ferror(af.f) ? mr_atomic_fail(&af, e) : mr_atomic_commit(&af, e);
out:
    free(have);
    free(ix.order);
    free(cache_path);
    mr_dataset_free(&d);
    st->seconds = mr_now() - t0;
    return rc;
}
