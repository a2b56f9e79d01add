/* Byte-level BPE (GPT-2 and its descendants), as llama.cpp's
 * llm_tokenizer_bpe_session: the fragment is split by the pre-tokenizer
 * regexes; each piece's bytes are written in GPT-2's byte alphabet (space ->
 * "Ġ", newline -> "Ċ"); the piece is merged by rank; a finished symbol that is
 * not a token falls back to its single characters (those that are tokens). */
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

/* Copies text to valid UTF-8: a byte that does not start a valid sequence
 * becomes U+FFFD, as llama.cpp's unicode_cpts_from_utf8 does (PCRE2 needs valid
 * UTF-8). Returns the new length. */
static size_t sanitize_utf8(const char *text, size_t len, char *dst) {
    size_t m = 0;
    for (size_t i = 0; i < len;) {
        uint32_t c;
        size_t l = tok_utf8_decode((const uint8_t *)text + i, len - i, &c);
        if (l == 0) {
            memcpy(dst + m, "\xef\xbf\xbd", 3);
            m += 3;
            i++;
        } else {
            memcpy(dst + m, text + i, l);
            m += l;
            i += l;
        }
    }
    return m;
}

int tok_bpe_encode(const tokenizer *t, const char *text, size_t len, tok_ids *out, mr_error *e) {
    if (len == 0) return MR_OK;
    int rc = MR_ERR_INTERNAL;
    tok_work w = {0};
    tok_spans spans = {0}, tmp = {0};
    char *clean = NULL, *word = NULL;
    pcre2_match_data *md = pcre2_match_data_create(32, NULL);
    if (!md) goto oom;
    int prefix = t->byte_level_prefix_space && text[0] != ' ';
    clean = mr_alloc(3 * len + 2, e);
    if (!clean) goto done;
    size_t n = 0;
    if (prefix) clean[n++] = ' ';
    n += sanitize_utf8(text, len, clean + n);
    if ((rc = tok_pretok_split(t, clean, n, &spans, &tmp, md, e))) goto done;
    size_t max_piece = 0;
    for (size_t i = 0; i < spans.n; i++)
        if (spans.len[i] > max_piece) max_piece = spans.len[i];
    word = mr_alloc(2 * max_piece + 1, e);
    if (!word) goto oom;
    for (size_t i = 0; i < spans.n; i++) {
        const uint8_t *p = (const uint8_t *)clean + spans.off[i];
        size_t m = 0;
        for (size_t k = 0; k < spans.len[i]; k++) m += (size_t)tok_byte_to_utf8(p[k], word + m);
        if (t->ignore_merges) {
            int32_t id = tok_strings_find(&t->str, word, m);
            if (id >= 0 && id < t->n_tokens) {
                if ((rc = tok_ids_push(out, id, e))) goto done;
                continue;
            }
        }
        if ((rc = tok_merge(t, word, m, TOK_MERGE_BY_RANK, &w, e))) goto done;
        for (int32_t s = 0; s != -1 && w.n_sym > 0; s = w.sym[s].next) {
            const tok_sym *sym = &w.sym[s];
            if (sym->id >= 0 && sym->id < t->n_tokens) {
                if ((rc = tok_ids_push(out, sym->id, e))) goto done;
                continue;
            }
            for (uint32_t k = 0; k < sym->n; k++) { /* llama.cpp: single bytes that are tokens, others dropped */
                int32_t id = tok_strings_find(&t->str, word + sym->start + k, 1);
                if (id >= 0 && id < t->n_tokens && (rc = tok_ids_push(out, id, e))) goto done;
            }
        }
    }
    rc = MR_OK;
    goto done;
oom:
    rc = mr_fail(e, MR_ERR_INTERNAL, "tokenizer: out of memory");
done:
    if (md) pcre2_match_data_free(md);
    tok_work_free(&w);
    tok_spans_free(&spans);
    tok_spans_free(&tmp);
    free(clean);
    free(word);
    return rc;
}
