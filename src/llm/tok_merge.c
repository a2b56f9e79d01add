/* The pair-merging loop shared by both tokenizers, and SentencePiece BPE.
 *
 * Both follow llama.cpp: the text is cut into UTF-8 characters (the length of a
 * character comes from the high nibble of its first byte, so stray bytes are
 * one-byte symbols); every neighbouring pair that may merge goes into a
 * priority queue; the best pair is merged, its neighbours' pairs are queued,
 * and queue entries whose symbols changed meanwhile are skipped. Ties go to the
 * leftmost pair.
 *   SentencePiece: a pair may merge when its joined text is a token; the best
 *     pair has the highest score of that token.
 *   byte-level BPE (and SentencePiece read from tokenizer.json): a pair may
 *     merge when (left, right) is in the merges list; the best has the lowest rank. */
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

void tok_work_free(tok_work *w) {
    free(w->sym);
    free(w->heap);
    memset(w, 0, sizeof *w);
}

static int before(const tok_bigram *a, const tok_bigram *b) {
    return a->prio > b->prio || (a->prio == b->prio && a->left < b->left);
}

static void heap_push(tok_work *w, tok_bigram b) {
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&b, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = b;
}

static tok_bigram heap_pop(tok_work *w) {
    tok_bigram top = w->heap[0];
    tok_bigram last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

static void try_pair(const tokenizer *t, const char *text, int mode, tok_work *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const tok_sym *a = &w->sym[l], *b = &w->sym[r];
    double prio;
    if (mode == TOK_MERGE_BY_RANK) {
        int32_t rank = tok_pairs_get(&t->ranks, a->id, b->id);
        if (rank < 0) return;
        prio = -(double)rank;
    } else {
        int32_t id = tok_strings_find(&t->str, text + a->start, (size_t)a->n + b->n);
        if (id < 0 || id >= t->n_tokens) return;
        prio = t->scores[id];
    }
    heap_push(w, (tok_bigram){prio, l, r, a->n + b->n});
}

int tok_merge(const tokenizer *t, const char *text, size_t len, int mode, tok_work *w, mr_error *e) {
    w->n_sym = 0;
    w->n_heap = 0;
    if (len == 0) return MR_OK;
    if (len > UINT32_MAX / 2) return mr_fail(e, MR_ERR_INPUT, "tokenizer: text fragment of %zu bytes is too long", len);
    /* each merge queues at most two pairs */
    if (w->cap_sym < len) {
        free(w->sym);
        free(w->heap);
        w->sym = mr_alloc(len * sizeof *w->sym, e);
        w->heap = mr_alloc(3 * len * sizeof *w->heap, e);
        if (!w->sym || !w->heap) {
            w->cap_sym = 0;
            return MR_ERR_INTERNAL;
        }
        w->cap_sym = len;
        w->cap_heap = 3 * len;
    }
    size_t off = 0;
    int32_t n = 0;
    while (off < len) {
        size_t cl = tok_utf8_len((uint8_t)text[off]);
        if (cl > len - off) cl = len - off;
        tok_sym *s = &w->sym[n];
        s->start = (uint32_t)off;
        s->n = (uint32_t)cl;
        s->prev = n - 1;
        off += cl;
        s->next = off == len ? -1 : n + 1;
        s->id = tok_strings_find(&t->str, text + s->start, cl);
        n++;
    }
    w->n_sym = (size_t)n;
    for (int32_t i = 1; i < n; i++) try_pair(t, text, mode, w, i - 1, i);
    while (w->n_heap > 0) {
        tok_bigram b = heap_pop(w);
        tok_sym *l = &w->sym[b.left], *r = &w->sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* outdated */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = b.left;
        l->id = tok_strings_find(&t->str, text + l->start, l->n);
        try_pair(t, text, mode, w, l->prev, b.left);
        try_pair(t, text, mode, w, b.left, l->next);
    }
    return MR_OK;
}

int tok_spm_encode(const tokenizer *t, const char *text, size_t len, tok_ids *out, mr_error *e) {
    tok_work w = {0};
    int rc = tok_merge(t, text, len, t->spm_merge_ranks ? TOK_MERGE_BY_RANK : TOK_MERGE_BY_SCORE, &w, e);
    if (rc || w.n_sym == 0) goto done;
    for (int32_t i = 0; i != -1; i = w.sym[i].next) {
        const tok_sym *s = &w.sym[i];
        if (s->id >= 0 && s->id < t->n_tokens) {
            if ((rc = tok_ids_push(out, s->id, e))) goto done;
            continue;
        }
        /* not a token: byte fallback, one <0xNN> per byte */
        for (uint32_t k = 0; k < s->n; k++) {
            uint8_t byte = (uint8_t)text[s->start + k];
            int32_t id = t->byte_token[byte] >= 0 ? t->byte_token[byte] : t->unk;
            if (id < 0) {
                rc = mr_fail(e, MR_ERR_INPUT,
                             "tokenizer: byte 0x%02X has no token and the vocabulary has no unknown token", byte);
                goto done;
            }
            if ((rc = tok_ids_push(out, id, e))) goto done;
        }
    }
done:
    tok_work_free(&w);
    return rc;
}
