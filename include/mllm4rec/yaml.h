/* A YAML document as a small tree (libyaml's parser underneath), with the line of
 * every node and key so that a config error can name both. Anchors, aliases and
 * tags are refused: experiment configs are plain maps, lists and scalars. */
#ifndef MLLM4REC_YAML_H
#define MLLM4REC_YAML_H

#include <stdio.h>

#include "mllm4rec/base.h"

typedef enum { MR_YAML_SCALAR, MR_YAML_SEQ, MR_YAML_MAP } mr_yaml_type;

typedef struct mr_yaml_node {
    mr_yaml_type type;
    int line;                    /* 1-based line of the node's first character */
    char *value;                 /* scalar text (NUL-terminated); NULL otherwise */
    int quoted;                  /* scalar written in quotes or as a block */
    int n;                       /* children (sequence items or map entries) */
    char **keys;                 /* map: the key of each entry */
    int *key_lines;              /* map: the line of each key */
    struct mr_yaml_node **items; /* the children */
} mr_yaml_node;

/* Parses a document; `name` (a path) prefixes every error ("exp.yaml:12: ...").
 * An empty document gives an empty map. Duplicate keys are errors. */
int mr_yaml_parse(const char *text, size_t len, const char *name, mr_yaml_node **root, mr_error *e);
int mr_yaml_load(const char *path, mr_yaml_node **root, mr_error *e);
void mr_yaml_free(mr_yaml_node *n);
/* The child of a map under key, or NULL; *line (may be NULL) gets the key's line. */
const mr_yaml_node *mr_yaml_get(const mr_yaml_node *map, const char *key, int *line);
/* Writes a string as a YAML scalar: plain when that reads back as the same
 * string, double-quoted with escapes otherwise. */
void mr_yaml_write_scalar(FILE *f, const char *s);

#endif
