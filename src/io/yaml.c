/* YAML documents as trees, on libyaml's event parser. */
#include "mllm4rec/yaml.h"

#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef struct yparse {
    yaml_parser_t p;
    const char *name;
    mr_error *e;
} yparse;

static int next_event(yparse *y, yaml_event_t *ev) {
    if (!yaml_parser_parse(&y->p, ev)) {
        const char *prob = y->p.problem ? y->p.problem : "syntax error";
        int line = (int)y->p.problem_mark.line + 1;
        if (y->p.error == YAML_MEMORY_ERROR) return mr_fail(y->e, MR_ERR_INTERNAL, "%s: out of memory", y->name);
        if (y->p.context)
            return mr_fail(y->e, MR_ERR_INPUT, "%s:%d: %s %s (line %d)", y->name, line, prob, y->p.context,
                           (int)y->p.context_mark.line + 1);
        return mr_fail(y->e, MR_ERR_INPUT, "%s:%d: %s", y->name, line, prob);
    }
    return MR_OK;
}

static mr_yaml_node *new_node(mr_yaml_type t, int line, mr_error *e) {
    mr_yaml_node *n = mr_calloc(1, sizeof *n, e);
    if (n) {
        n->type = t;
        n->line = line;
    }
    return n;
}

void mr_yaml_free(mr_yaml_node *n) {
    if (!n) return;
    for (int i = 0; i < n->n; i++) {
        mr_yaml_free(n->items[i]);
        if (n->keys) free(n->keys[i]);
    }
    free(n->items);
    free(n->keys);
    free(n->key_lines);
    free(n->value);
    free(n);
}

static int add_child(mr_yaml_node *parent, char *key, int key_line, mr_yaml_node *child, mr_error *e) {
    int cap = parent->n + 1;
    mr_yaml_node **items = mr_realloc(parent->items, (size_t)cap * sizeof *items, e);
    if (!items) return MR_ERR_INTERNAL;
    parent->items = items;
    if (parent->type == MR_YAML_MAP) {
        char **keys = mr_realloc(parent->keys, (size_t)cap * sizeof *keys, e);
        if (!keys) return MR_ERR_INTERNAL;
        parent->keys = keys;
        int *kl = mr_realloc(parent->key_lines, (size_t)cap * sizeof *kl, e);
        if (!kl) return MR_ERR_INTERNAL;
        parent->key_lines = kl;
        keys[parent->n] = key;
        kl[parent->n] = key_line;
    }
    items[parent->n++] = child;
    return MR_OK;
}

/* Builds the node that starts with event ev (already parsed; consumed here). */
static int build(yparse *y, yaml_event_t *ev, int depth, mr_yaml_node **out) {
    int line = (int)ev->start_mark.line + 1;
    *out = NULL;
    if (depth > 64) return mr_fail(y->e, MR_ERR_INPUT, "%s:%d: nested more than 64 levels", y->name, line);
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        return mr_fail(y->e, MR_ERR_INPUT, "%s:%d: aliases (*name) are not supported in experiment files", y->name,
                       line);
    case YAML_SCALAR_EVENT: {
        if (ev->data.scalar.anchor)
            return mr_fail(y->e, MR_ERR_INPUT, "%s:%d: anchors (&name) are not supported", y->name, line);
        mr_yaml_node *n = new_node(MR_YAML_SCALAR, line, y->e);
        if (!n) return MR_ERR_INTERNAL;
        n->value = mr_alloc(ev->data.scalar.length + 1, y->e);
        if (!n->value) {
            free(n);
            return MR_ERR_INTERNAL;
        }
        if (memchr(ev->data.scalar.value, 0, ev->data.scalar.length)) {
            mr_yaml_free(n);
            return mr_fail(y->e, MR_ERR_INPUT, "%s:%d: a NUL character in a value", y->name, line);
        }
        memcpy(n->value, ev->data.scalar.value, ev->data.scalar.length);
        n->value[ev->data.scalar.length] = 0;
        n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        *out = n;
        return MR_OK;
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        const int is_map = ev->type == YAML_MAPPING_START_EVENT;
        if (is_map ? ev->data.mapping_start.anchor != NULL : ev->data.sequence_start.anchor != NULL)
            return mr_fail(y->e, MR_ERR_INPUT, "%s:%d: anchors (&name) are not supported", y->name, line);
        mr_yaml_node *n = new_node(is_map ? MR_YAML_MAP : MR_YAML_SEQ, line, y->e);
        if (!n) return MR_ERR_INTERNAL;
        int rc = MR_OK;
        for (;;) {
            yaml_event_t ce;
            if ((rc = next_event(y, &ce))) break;
            if (ce.type == YAML_SEQUENCE_END_EVENT || ce.type == YAML_MAPPING_END_EVENT) {
                yaml_event_delete(&ce);
                break;
            }
            char *key = NULL;
            int key_line = 0;
            if (is_map) {
                key_line = (int)ce.start_mark.line + 1;
                if (ce.type != YAML_SCALAR_EVENT) {
                    yaml_event_delete(&ce);
                    rc = mr_fail(y->e, MR_ERR_INPUT, "%s:%d: a key must be a plain word", y->name, key_line);
                    break;
                }
                key = mr_alloc(ce.data.scalar.length + 1, y->e);
                if (!key) {
                    yaml_event_delete(&ce);
                    rc = MR_ERR_INTERNAL;
                    break;
                }
                memcpy(key, ce.data.scalar.value, ce.data.scalar.length);
                key[ce.data.scalar.length] = 0;
                yaml_event_delete(&ce);
                for (int i = 0; i < n->n; i++)
                    if (!strcmp(n->keys[i], key)) {
                        rc = mr_fail(y->e, MR_ERR_INPUT, "%s:%d: key '%s' given twice (first on line %d)", y->name,
                                     key_line, key, n->key_lines[i]);
                        break;
                    }
                if (!rc) rc = next_event(y, &ce);
                if (rc) {
                    free(key);
                    break;
                }
            }
            mr_yaml_node *child = NULL;
            rc = build(y, &ce, depth + 1, &child);
            yaml_event_delete(&ce);
            if (!rc) rc = add_child(n, key, key_line, child, y->e);
            if (rc) {
                free(key);
                mr_yaml_free(child);
                break;
            }
        }
        if (rc) {
            mr_yaml_free(n);
            return rc;
        }
        *out = n;
        return MR_OK;
    }
    default:
        return mr_fail(y->e, MR_ERR_INPUT, "%s:%d: unexpected YAML event", y->name, line);
    }
}

int mr_yaml_parse(const char *text, size_t len, const char *name, mr_yaml_node **root, mr_error *e) {
    *root = NULL;
    yparse y = {.name = name ? name : "<yaml>", .e = e};
    if (!yaml_parser_initialize(&y.p)) return mr_fail(e, MR_ERR_INTERNAL, "%s: out of memory", y.name);
    yaml_parser_set_input_string(&y.p, (const unsigned char *)text, len);
    yaml_event_t ev;
    int rc = MR_OK, docs = 0;
    mr_yaml_node *doc = NULL;
    for (;;) {
        if ((rc = next_event(&y, &ev))) break;
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_DOCUMENT_START_EVENT) {
            yaml_event_delete(&ev);
            if (++docs > 1) {
                rc = mr_fail(e, MR_ERR_INPUT, "%s:%d: more than one document ('---')", y.name,
                             (int)y.p.mark.line + 1);
                break;
            }
            if ((rc = next_event(&y, &ev))) break;
            if (ev.type == YAML_DOCUMENT_END_EVENT) { /* empty */
                yaml_event_delete(&ev);
                continue;
            }
            rc = build(&y, &ev, 0, &doc);
            yaml_event_delete(&ev);
            if (rc) break;
            continue;
        }
        yaml_event_delete(&ev); /* stream start, document end */
    }
    yaml_parser_delete(&y.p);
    if (rc) {
        mr_yaml_free(doc);
        return rc;
    }
    if (!doc) doc = new_node(MR_YAML_MAP, 1, e);
    if (!doc) return MR_ERR_INTERNAL;
    *root = doc;
    return MR_OK;
}

int mr_yaml_load(const char *path, mr_yaml_node **root, mr_error *e) {
    char *text = NULL;
    size_t len = 0;
    int rc = mr_read_file(path, &text, &len, e);
    if (rc) return rc;
    rc = mr_yaml_parse(text, len, path, root, e);
    free(text);
    return rc;
}

const mr_yaml_node *mr_yaml_get(const mr_yaml_node *map, const char *key, int *line) {
    if (!map || map->type != MR_YAML_MAP) return NULL;
    for (int i = 0; i < map->n; i++)
        if (!strcmp(map->keys[i], key)) {
            if (line) *line = map->key_lines[i];
            return map->items[i];
        }
    return NULL;
}

/* Plain when it cannot be read as anything but this string. */
static int plain_ok(const char *s) {
    if (!*s) return 0;
    static const char *special[] = {"~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE",
                                    "yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF", "y",
                                    "Y", "n", "N"};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        if (!strcmp(s, special[i])) return 0;
    if (strchr("-?:,[]{}#&*!|>'\"%@` \t", s[0]) && !(s[0] == '-' && s[1] && s[1] != ' ')) return 0;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\'' || c == '\\') return 0;
        if (c == ':' && (p[1] == ' ' || p[1] == 0)) return 0;
        if (c == '#' && p > s && p[-1] == ' ') return 0;
    }
    size_t n = strlen(s);
    if (s[n - 1] == ' ') return 0;
    return 1;
}

void mr_yaml_write_scalar(FILE *f, const char *s) {
    if (plain_ok(s)) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p == '\t') fputs("\\t", f);
        else if (*p < 0x20 || *p == 0x7f) fprintf(f, "\\x%02x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}
