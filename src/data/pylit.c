/* A parser for the Python literals of the Amazon 2014 metadata files: one dict per
 * line, written by Python's repr(), e.g.
 *   {'asin': '0000031852', 'title': 'Girls Ballet Tutu', 'price': 3.17,
 *    'related': {'also_bought': ['B00JHONN1S']}, 'categories': [['Toys & Games']]}
 * Only the top-level string values of the wanted keys are kept; everything else is
 * parsed (so a broken line is found) and dropped.
 *
 * Strings: '...' or "..." with an optional u/U, b/B or r/R prefix (combinations too).
 * Escapes as Python: \\ \' \" \n \r \t \a \b \f \v \ooo \xhh \uXXXX \UXXXXXXXX and
 * backslash-newline; an unknown escape keeps the backslash. \u and \U give code points.
 * \x and octal escapes are bytes in a byte (Python 2 str) literal: a run of them that
 * forms valid UTF-8 is kept as that UTF-8 text, otherwise each byte is read as
 * ISO-8859-1 (Python 3's eval would read each as a code point, garbling UTF-8
 * text; that garbling is not copied). */
#include "prep_internal.h"

#include <stdlib.h>
#include <string.h>

#define PYLIT_MAX_DEPTH 64

typedef struct parser {
    const char *s;
    size_t n, i;
    const char *why;
    /* scratch for decoded strings */
    char *buf;
    size_t len, cap;
    int oom;
} parser;

static void skip_ws(parser *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int fail(parser *p, const char *why) {
    if (!p->why) p->why = why;
    return -1;
}

static void put_byte(parser *p, unsigned char c) {
    if (p->len + 1 >= p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 256;
        char *nb = realloc(p->buf, nc);
        if (!nb) {
            p->oom = 1;
            return;
        }
        p->buf = nb;
        p->cap = nc;
    }
    p->buf[p->len++] = (char)c;
}

static void put_codepoint(parser *p, uint32_t c) {
    if (c < 0x80) put_byte(p, (unsigned char)c);
    else if (c < 0x800) {
        put_byte(p, (unsigned char)(0xC0 | (c >> 6)));
        put_byte(p, (unsigned char)(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
        put_byte(p, (unsigned char)(0xE0 | (c >> 12)));
        put_byte(p, (unsigned char)(0x80 | ((c >> 6) & 0x3F)));
        put_byte(p, (unsigned char)(0x80 | (c & 0x3F)));
    } else {
        put_byte(p, (unsigned char)(0xF0 | (c >> 18)));
        put_byte(p, (unsigned char)(0x80 | ((c >> 12) & 0x3F)));
        put_byte(p, (unsigned char)(0x80 | ((c >> 6) & 0x3F)));
        put_byte(p, (unsigned char)(0x80 | (c & 0x3F)));
    }
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Flushes a run of escaped bytes: as UTF-8 when valid, else ISO-8859-1. */
static void flush_bytes(parser *p, const unsigned char *bytes, size_t nb) {
    if (nb == 0) return;
    if (mr_utf8_valid((const char *)bytes, nb))
        for (size_t k = 0; k < nb; k++) put_byte(p, bytes[k]);
    else
        for (size_t k = 0; k < nb; k++) put_codepoint(p, bytes[k]);
}

/* Parses a string literal at p->i (prefix included) into p->buf. */
static int parse_string(parser *p) {
    int raw = 0;
    while (p->i < p->n && strchr("uUbBrR", p->s[p->i]) && p->s[p->i]) {
        if (p->s[p->i] == 'r' || p->s[p->i] == 'R') raw = 1;
        p->i++;
    }
    if (p->i >= p->n || (p->s[p->i] != '\'' && p->s[p->i] != '"')) return fail(p, "expected a quoted string");
    char q = p->s[p->i++];
    p->len = 0;
    unsigned char bytes[64];
    size_t nb = 0;
    for (;;) {
        if (p->i >= p->n) return fail(p, "string not closed");
        char c = p->s[p->i];
        if (c == q) {
            p->i++;
            break;
        }
        if (c == '\n') return fail(p, "line break inside a string");
        if (c != '\\' || raw) {
            flush_bytes(p, bytes, nb), nb = 0;
            put_byte(p, (unsigned char)c);
            p->i++;
            if (raw && c == '\\' && p->i < p->n) put_byte(p, (unsigned char)p->s[p->i++]);
            continue;
        }
        if (p->i + 1 >= p->n) return fail(p, "string not closed");
        char x = p->s[p->i + 1];
        p->i += 2;
        int byte = -1;
        uint32_t cp = 0;
        int is_cp = 0;
        switch (x) {
        case '\\': cp = '\\', is_cp = 1; break;
        case '\'': cp = '\'', is_cp = 1; break;
        case '"': cp = '"', is_cp = 1; break;
        case 'n': cp = '\n', is_cp = 1; break;
        case 'r': cp = '\r', is_cp = 1; break;
        case 't': cp = '\t', is_cp = 1; break;
        case 'a': cp = 7, is_cp = 1; break;
        case 'b': cp = 8, is_cp = 1; break;
        case 'f': cp = 12, is_cp = 1; break;
        case 'v': cp = 11, is_cp = 1; break;
        case '\n': continue;
        case 'x': {
            int h1 = p->i < p->n ? hexval(p->s[p->i]) : -1;
            int h2 = p->i + 1 < p->n ? hexval(p->s[p->i + 1]) : -1;
            if (h1 < 0 || h2 < 0) return fail(p, "bad \\x escape");
            byte = h1 * 16 + h2;
            p->i += 2;
            break;
        }
        case 'u':
        case 'U': {
            int digits = x == 'u' ? 4 : 8;
            for (int k = 0; k < digits; k++) {
                int h = p->i < p->n ? hexval(p->s[p->i]) : -1;
                if (h < 0) return fail(p, "bad \\u escape");
                cp = cp * 16 + (uint32_t)h;
                p->i++;
            }
            /* a UTF-16 surrogate pair written as two \u escapes */
            if (cp >= 0xD800 && cp <= 0xDBFF && p->i + 6 <= p->n && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
                uint32_t lo = 0;
                int ok = 1;
                for (int k = 0; k < 4; k++) {
                    int h = hexval(p->s[p->i + 2 + k]);
                    if (h < 0) ok = 0;
                    else lo = lo * 16 + (uint32_t)h;
                }
                if (ok && lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p->i += 6;
                }
            }
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
            is_cp = 1;
            break;
        }
        default:
            if (x >= '0' && x <= '7') {
                int v = x - '0';
                for (int k = 0; k < 2 && p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '7'; k++)
                    v = v * 8 + (p->s[p->i++] - '0');
                byte = v & 0xFF;
            } else {
                cp = '\\', is_cp = 1;
                p->i--; /* keep the character after the backslash */
            }
        }
        if (byte >= 0) {
            if (nb == sizeof bytes) flush_bytes(p, bytes, nb), nb = 0;
            bytes[nb++] = (unsigned char)byte;
        } else if (is_cp) {
            flush_bytes(p, bytes, nb), nb = 0;
            put_codepoint(p, cp);
        }
    }
    flush_bytes(p, bytes, nb);
    if (p->oom) return fail(p, "out of memory");
    put_byte(p, 0);
    p->len--;
    return 0;
}

static int parse_value(parser *p, int depth);

static int parse_number_or_word(parser *p) {
    size_t st = p->i;
    while (p->i < p->n && (strchr("0123456789+-.eExXabcdefABCDEFjJ_", p->s[p->i]) ||
                           (p->s[p->i] >= 'a' && p->s[p->i] <= 'z') || (p->s[p->i] >= 'A' && p->s[p->i] <= 'Z')) &&
           p->s[p->i])
        p->i++;
    size_t len = p->i - st;
    const char *w = p->s + st;
    static const char *const words[] = {"True", "False", "None", "true", "false", "null", "nan", "inf"};
    for (size_t k = 0; k < sizeof words / sizeof words[0]; k++)
        if (strlen(words[k]) == len && !memcmp(words[k], w, len)) return 0;
    if (len == 0) return fail(p, "expected a value");
    /* a number: optional sign, digits, and only number characters */
    size_t k = 0;
    if (w[k] == '-' || w[k] == '+') k++;
    if (k >= len || !((w[k] >= '0' && w[k] <= '9') || w[k] == '.')) return fail(p, "expected a value");
    for (; k < len; k++)
        if (!strchr("0123456789.eE+-xXabcdefABCDEFjJlL_", w[k])) return fail(p, "bad number");
    return 0;
}

/* Parses a sequence of values up to the closing bracket; dict entries when is_dict. */
static int parse_container(parser *p, char close, int is_dict, int depth) {
    p->i++; /* the opening bracket */
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        return 0;
    }
    for (;;) {
        skip_ws(p);
        if (parse_value(p, depth + 1)) return -1;
        skip_ws(p);
        if (is_dict) {
            if (p->i >= p->n || p->s[p->i] != ':') return fail(p, "expected ':' in a dict");
            p->i++;
            skip_ws(p);
            if (parse_value(p, depth + 1)) return -1;
            skip_ws(p);
        }
        if (p->i >= p->n) return fail(p, "unexpected end of line inside brackets");
        if (p->s[p->i] == ',') {
            p->i++;
            skip_ws(p);
            if (p->i < p->n && p->s[p->i] == close) { /* trailing comma */
                p->i++;
                return 0;
            }
            continue;
        }
        if (p->s[p->i] == close) {
            p->i++;
            return 0;
        }
        return fail(p, is_dict ? "expected ',' or '}'" : "expected ',' or a closing bracket");
    }
}

static int parse_value(parser *p, int depth) {
    if (depth > PYLIT_MAX_DEPTH) return fail(p, "nested too deeply");
    skip_ws(p);
    if (p->i >= p->n) return fail(p, "expected a value");
    char c = p->s[p->i];
    if (c == '{') return parse_container(p, '}', 1, depth);
    if (c == '[') return parse_container(p, ']', 0, depth);
    if (c == '(') return parse_container(p, ')', 0, depth);
    if (c == '\'' || c == '"') return parse_string(p);
    if (strchr("uUbBrR", c) && p->i + 1 < p->n) {
        size_t j = p->i;
        while (j < p->n && j < p->i + 2 && strchr("uUbBrR", p->s[j]) && p->s[j]) j++;
        if (j < p->n && (p->s[j] == '\'' || p->s[j] == '"')) return parse_string(p);
    }
    return parse_number_or_word(p);
}

int pylit_parse_dict(const char *text, size_t len, pylit_fields *out, char *why, size_t whysz, size_t *at) {
    parser P = {.s = text, .n = len};
    parser *p = &P;
    for (int k = 0; k < out->n_keys; k++) out->values[k] = NULL;
    int rc = 0;
    skip_ws(p);
    if (p->i >= p->n || p->s[p->i] != '{') {
        fail(p, "expected a dict starting with '{'");
        rc = -1;
        goto done;
    }
    p->i++;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == '}') p->i++;
    else
        for (;;) {
            skip_ws(p);
            /* the key: kept only when it is a string */
            char c = p->i < p->n ? p->s[p->i] : 0;
            int key_is_str = c == '\'' || c == '"' || (c && strchr("uUbBrR", c));
            int want = -1;
            if (key_is_str) {
                if (parse_string(p)) {
                    rc = -1;
                    goto done;
                }
                for (int k = 0; k < out->n_keys; k++)
                    if (strlen(out->keys[k]) == p->len && !memcmp(out->keys[k], p->buf, p->len)) want = k;
            } else if (parse_value(p, 1)) {
                rc = -1;
                goto done;
            }
            skip_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') {
                fail(p, "expected ':' after a key");
                rc = -1;
                goto done;
            }
            p->i++;
            skip_ws(p);
            c = p->i < p->n ? p->s[p->i] : 0;
            int val_is_str = c == '\'' || c == '"' ||
                             (c && strchr("uUbBrR", c) && p->i + 1 < p->n &&
                              (p->s[p->i + 1] == '\'' || p->s[p->i + 1] == '"' ||
                               (strchr("uUbBrR", p->s[p->i + 1]) && p->i + 2 < p->n &&
                                (p->s[p->i + 2] == '\'' || p->s[p->i + 2] == '"'))));
            if (want >= 0 && val_is_str) {
                if (parse_string(p)) {
                    rc = -1;
                    goto done;
                }
                free(out->values[want]);
                out->values[want] = malloc(p->len + 1);
                if (!out->values[want]) {
                    fail(p, "out of memory");
                    rc = -1;
                    goto done;
                }
                memcpy(out->values[want], p->buf, p->len + 1);
            } else if (parse_value(p, 1)) {
                rc = -1;
                goto done;
            }
            skip_ws(p);
            if (p->i >= p->n) {
                fail(p, "unexpected end of line inside the dict");
                rc = -1;
                goto done;
            }
            if (p->s[p->i] == ',') {
                p->i++;
                skip_ws(p);
                if (p->i < p->n && p->s[p->i] == '}') {
                    p->i++;
                    break;
                }
                continue;
            }
            if (p->s[p->i] == '}') {
                p->i++;
                break;
            }
            fail(p, "expected ',' or '}'");
            rc = -1;
            goto done;
        }
    skip_ws(p);
    if (p->i < p->n) {
        fail(p, "text after the closing '}'");
        rc = -1;
    }
done:
    if (rc) {
        for (int k = 0; k < out->n_keys; k++) {
            free(out->values[k]);
            out->values[k] = NULL;
        }
        if (why) snprintf(why, whysz, "%s", p->why ? p->why : "parse error");
        if (at) *at = p->i;
    }
    free(p->buf);
    return rc;
}
