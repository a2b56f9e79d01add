/* String interning, field splitting and title helpers for prepare. */
#include "prep_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- string table ---- */

static uint32_t hash_bytes(const char *s, size_t len) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

void strtab_init(strtab *t) { memset(t, 0, sizeof *t); }

void strtab_free(strtab *t) {
    for (int i = 0; i < t->n_chunks; i++) free(t->chunks[i]);
    free(t->chunks);
    free(t->strs);
    free(t->lens);
    free(t->slots);
    free(t->hashes);
    memset(t, 0, sizeof *t);
}

int32_t strtab_find(const strtab *t, const char *s, size_t len) {
    if (!t->nslots) return -1;
    uint32_t h = hash_bytes(s, len), mask = t->nslots - 1;
    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        int32_t k = t->slots[i];
        if (k < 0) return -1;
        if (t->hashes[k] == h && t->lens[k] == len && !memcmp(t->strs[k], s, len)) return k;
    }
}

static int grow_slots(strtab *t, mr_error *e) {
    uint32_t ns = t->nslots ? t->nslots * 2 : 1024;
    int32_t *slots = mr_alloc(ns * sizeof *slots, e);
    if (!slots) return -1;
    memset(slots, 0xff, ns * sizeof *slots);
    for (int32_t k = 0; k < t->n; k++) {
        uint32_t i = t->hashes[k] & (ns - 1);
        while (slots[i] >= 0) i = (i + 1) & (ns - 1);
        slots[i] = k;
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = ns;
    return 0;
}

static char *store_bytes(strtab *t, const char *s, size_t len, mr_error *e) {
    if (t->chunk_used + len + 1 > t->chunk_cap || t->n_chunks == 0) {
        size_t cap = len + 1 > (1u << 20) ? len + 1 : (1u << 20);
        if (t->n_chunks == t->chunks_cap) {
            int nc = t->chunks_cap ? t->chunks_cap * 2 : 16;
            char **c = mr_realloc(t->chunks, (size_t)nc * sizeof *c, e);
            if (!c) return NULL;
            t->chunks = c;
            t->chunks_cap = nc;
        }
        char *chunk = mr_alloc(cap, e);
        if (!chunk) return NULL;
        t->chunks[t->n_chunks++] = chunk;
        t->chunk_used = 0;
        t->chunk_cap = cap;
    }
    char *p = t->chunks[t->n_chunks - 1] + t->chunk_used;
    memcpy(p, s, len);
    p[len] = 0;
    t->chunk_used += len + 1;
    return p;
}

int32_t strtab_intern(strtab *t, const char *s, size_t len, mr_error *e) {
    int32_t k = strtab_find(t, s, len);
    if (k >= 0) return k;
    if (t->n == INT32_MAX - 1) {
        mr_fail(e, MR_ERR_INPUT, "more than %d distinct ids", INT32_MAX - 1);
        return -1;
    }
    if ((uint64_t)(t->n + 1) * 2 > t->nslots && grow_slots(t, e)) return -1;
    if (t->n == t->cap) {
        int32_t nc = t->cap ? (t->cap > INT32_MAX / 2 ? INT32_MAX : t->cap * 2) : 1024;
        char **strs = mr_realloc(t->strs, (size_t)nc * sizeof *strs, e);
        if (!strs) return -1;
        t->strs = strs;
        uint32_t *lens = mr_realloc(t->lens, (size_t)nc * sizeof *lens, e);
        if (!lens) return -1;
        t->lens = lens;
        uint32_t *hs = mr_realloc(t->hashes, (size_t)nc * sizeof *hs, e);
        if (!hs) return -1;
        t->hashes = hs;
        t->cap = nc;
    }
    char *p = store_bytes(t, s, len, e);
    if (!p) return -1;
    k = t->n++;
    t->strs[k] = p;
    t->lens[k] = (uint32_t)len;
    t->hashes[k] = hash_bytes(s, len);
    uint32_t mask = t->nslots - 1, i = t->hashes[k] & mask;
    while (t->slots[i] >= 0) i = (i + 1) & mask;
    t->slots[i] = k;
    return k;
}

/* ---- splitting ---- */

int split_sep(char *line, const char *sep, char **fields, int max) {
    size_t sl = strlen(sep);
    int n = 0;
    char *p = line;
    for (;;) {
        if (n < max) fields[n] = p;
        n++;
        char *q = sl == 1 ? strchr(p, sep[0]) : strstr(p, sep);
        if (!q) break;
        *q = 0;
        p = q + sl;
    }
    return n;
}

int split_csv(char *line, char **fields, int max) {
    int n = 0;
    char *r = line, *w = line;
    for (;;) {
        char *start = w;
        if (*r == '"') {
            r++;
            for (;;) {
                if (!*r) return -1; /* the record ends inside quotes */
                if (*r == '"') {
                    if (r[1] == '"') {
                        *w++ = '"';
                        r += 2;
                        continue;
                    }
                    r++;
                    break;
                }
                *w++ = *r++;
            }
            /* text after the closing quote up to the comma is kept as it is */
            while (*r && *r != ',') *w++ = *r++;
        } else {
            while (*r && *r != ',') *w++ = *r++;
        }
        int more = *r == ',';
        if (more) r++;
        *w++ = 0;
        if (n < max) fields[n] = start;
        n++;
        if (!more) break;
    }
    return n;
}

/* ---- text ---- */

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

char *strip_ws(char *s) {
    while (is_space(*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && is_space(s[n - 1])) n--;
    s[n] = 0;
    return s;
}

char *latin1_to_utf8(const char *s, size_t len, mr_error *e) {
    char *out = mr_alloc(len * 2 + 1, e);
    if (!out) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) out[k++] = (char)c;
        else {
            out[k++] = (char)(0xC0 | (c >> 6));
            out[k++] = (char)(0x80 | (c & 0x3F));
        }
    }
    out[k] = 0;
    return out;
}

int is_digits(const char *s, size_t len) {
    if (len == 0) return 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

/* DESIGN section 7: strip; if the title ends with " (YYYY)" cut that off, remove the
 * other parenthesised parts (shortest "(...)" matches, as re.sub('\(.*?\)', '')),
 * strip again, move a trailing ", The" / ", A" / ", An" to the front (the reference's
 * test: ", a", ", an" or ", the" occurs in the last five characters, lower-cased; then
 * everything after the last ", " goes first) and put " (YYYY)" back. A title
 * without a final year is kept as it is (stripped). */
char *movielens_title(const char *raw, mr_error *e) {
    char *t = mr_strdup(raw, e);
    if (!t) return NULL;
    char *s = strip_ws(t);
    size_t n = strlen(s);
    int has_year = n >= 7 && s[n - 7] == ' ' && s[n - 6] == '(' && s[n - 1] == ')' && is_digits(s + n - 5, 4);
    if (!has_year) {
        memmove(t, s, n + 1);
        return t;
    }
    char year[8];
    memcpy(year, s + n - 7, 7);
    year[7] = 0;
    s[n - 7] = 0;
    /* remove "(...)" parts: each '(' up to the first ')' after it */
    char *w = s;
    for (char *r = s; *r;) {
        if (*r == '(') {
            char *close = strchr(r + 1, ')');
            if (close) {
                r = close + 1;
                continue;
            }
        }
        *w++ = *r++;
    }
    *w = 0;
    s = strip_ws(s);
    n = strlen(s);
    int move = 0;
    {
        size_t from = n > 5 ? n - 5 : 0;
        char tail[6];
        size_t tl = n - from;
        for (size_t i = 0; i < tl; i++) {
            char c = s[from + i];
            tail[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        tail[tl] = 0;
        move = strstr(tail, ", a") || strstr(tail, ", an") || strstr(tail, ", the");
    }
    char *out = mr_alloc(n + 16, e);
    if (!out) {
        free(t);
        return NULL;
    }
    if (move) {
        /* split on ", ": the last piece first, then the rest joined by ", " (= the text
         * before the last ", ") */
        char *last = NULL;
        for (char *p = strstr(s, ", "); p; p = strstr(p + 1, ", ")) last = p;
        *last = 0;
        snprintf(out, n + 16, "%s %s%s", last + 2, s, year);
    } else {
        snprintf(out, n + 16, "%s%s", s, year);
    }
    free(t);
    return out;
}
