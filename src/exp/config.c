/* Experiment configs: the stages' flag tables, the YAML file's keys and values
 * checked against them, and the grid's expansion into runs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/exp.h"
#include "mllm4rec/retriever.h"
#include "mllm4rec/yaml.h"

const char *const EXP_STAGE_NAMES[EXP_N_STAGES] = {"prepare", "caption", "retriever", "ranker", "eval"};

/* The flags of `prepare`, `retriever train`, `ranker train` and `ranker eval` that a
 * config may set, with the defaults those commands use (written into each run's
 * config.yaml). The runner sets --out, --dataset, --candidates, --adapter, --resume
 * and --force itself; a default of NULL comes from the dataset (max-len, batch) or
 * is an input (model). Keep in step with src/cli/cmd_prepare.c, cmd_retriever.c, cmd_ranker.c. */
static const exp_flag_def PREPARE_FLAGS[] = {
    {"format", EXP_T_STR, NULL, "movielens|amazon2014|interactions|sequences"},
    {"input", EXP_T_STR, NULL, NULL},
    {"ratings", EXP_T_STR, NULL, NULL},
    {"reviews", EXP_T_STR, NULL, NULL},
    {"meta", EXP_T_STR, NULL, NULL},
    {"interactions", EXP_T_STR, NULL, NULL},
    {"sequences", EXP_T_STR, NULL, NULL},
    {"titles", EXP_T_STR, NULL, NULL},
    {"name", EXP_T_STR, NULL, NULL},
    {"min-uc", EXP_T_INT, "5", NULL},
    {"min-sc", EXP_T_INT, "5", NULL},
    {"min-rating", EXP_T_FLOAT, "0", NULL},
    {"recbole", EXP_T_BOOL, "false", NULL},
    {"skip-bad-lines", EXP_T_BOOL, "false", NULL},
    {NULL, 0, NULL, NULL},
};
/* captions into the experiment's own dataset folder: from a BLIP-2 folder, or imported */
static const exp_flag_def CAPTION_FLAGS[] = {
    {"images", EXP_T_STR, NULL, NULL},
    {"model", EXP_T_STR, NULL, NULL},
    {"map", EXP_T_STR, NULL, NULL},
    {"prompt", EXP_T_STR, NULL, NULL},
    {"max-new-tokens", EXP_T_INT, NULL, NULL},
    {"threads", EXP_T_INT, "0", NULL},
    {"import", EXP_T_STR, NULL, NULL},
    {NULL, 0, NULL, NULL},
};
/* retriever train: the defaults marked RT_DEF depend on the architecture (and max-len,
 * batch on the dataset too); they come from rt_train_defaults, the one table of them
 * (exp_retriever_default). */
#define RT_DEF NULL
static const exp_flag_def RETRIEVER_FLAGS[] = {
    {"arch", EXP_T_STR, "lru", NULL}, /* checked against the registered architectures */
    {"max-len", EXP_T_INT, RT_DEF, NULL},
    {"hidden", EXP_T_INT, RT_DEF, NULL},
    {"blocks", EXP_T_INT, RT_DEF, NULL},
    {"heads", EXP_T_INT, RT_DEF, NULL},
    {"dropout", EXP_T_FLOAT, RT_DEF, NULL},
    {"attn-dropout", EXP_T_FLOAT, RT_DEF, NULL},
    {"mask-prob", EXP_T_FLOAT, RT_DEF, NULL},
    {"reg-weight", EXP_T_FLOAT, RT_DEF, NULL},
    {"batch", EXP_T_INT, RT_DEF, NULL},
    {"lr", EXP_T_FLOAT, RT_DEF, NULL},
    {"weight-decay", EXP_T_FLOAT, RT_DEF, NULL},
    {"val-every", EXP_T_INT, RT_DEF, NULL},
    {"patience", EXP_T_INT, RT_DEF, NULL},
    {"max-epochs", EXP_T_INT, RT_DEF, NULL},
    {"seed", EXP_T_INT, RT_DEF, NULL},
    {"threads", EXP_T_INT, RT_DEF, NULL},
    {NULL, 0, NULL, NULL},
};

int exp_retriever_default(const char *arch, const mr_dataset *d, const char *flag, char *buf, size_t n) {
    rt_train_options o;
    mr_error e = {0};
    if (rt_train_defaults(&o, d, arch ? arch : "lru", &e)) return 0;
    if (!d && (!strcmp(flag, "max-len") || !strcmp(flag, "batch"))) return 0; /* the dataset's */
    const rt_config *m = &o.model;
    if (!strcmp(flag, "arch")) snprintf(buf, n, "%s", m->arch);
    else if (!strcmp(flag, "max-len")) snprintf(buf, n, "%d", m->max_len);
    else if (!strcmp(flag, "hidden")) snprintf(buf, n, "%d", m->hidden);
    else if (!strcmp(flag, "blocks")) snprintf(buf, n, "%d", m->blocks);
    else if (!strcmp(flag, "heads")) snprintf(buf, n, "%d", m->heads);
    else if (!strcmp(flag, "dropout")) snprintf(buf, n, "%g", (double)m->dropout);
    else if (!strcmp(flag, "attn-dropout")) snprintf(buf, n, "%g", (double)m->attn_dropout);
    else if (!strcmp(flag, "mask-prob")) snprintf(buf, n, "%g", (double)m->mask_prob);
    else if (!strcmp(flag, "reg-weight")) snprintf(buf, n, "%g", (double)m->reg_weight);
    else if (!strcmp(flag, "batch")) snprintf(buf, n, "%d", o.batch);
    else if (!strcmp(flag, "lr")) snprintf(buf, n, "%g", o.lr);
    else if (!strcmp(flag, "weight-decay")) snprintf(buf, n, "%g", o.weight_decay);
    else if (!strcmp(flag, "val-every")) snprintf(buf, n, "%ld", o.val_every);
    else if (!strcmp(flag, "patience")) snprintf(buf, n, "%d", o.patience);
    else if (!strcmp(flag, "max-epochs")) snprintf(buf, n, "%d", o.max_epochs);
    else if (!strcmp(flag, "seed")) snprintf(buf, n, "%llu", (unsigned long long)o.seed);
    else if (!strcmp(flag, "threads")) snprintf(buf, n, "%d", o.threads);
    else return 0;
    return 1;
}
/* the flags ranker train and ranker eval share (the prompt and the model) */
#define RANKER_COMMON_FLAGS                                      \
    {"model", EXP_T_STR, NULL, NULL},                            \
    {"template", EXP_T_STR, "mllm4rec", "mllm4rec|llamarec"},    \
    {"captions", EXP_T_STR, NULL, "on|off"},                     \
    {"role", EXP_T_STR, "", NULL},                               \
    {"history", EXP_T_INT, "20", NULL},                          \
    {"max-title-tokens", EXP_T_INT, "32", NULL},                 \
    {"max-tokens", EXP_T_INT, "1536", NULL},                     \
    {"num-candidates", EXP_T_INT, "20", NULL},                   \
    {"threads", EXP_T_INT, "0", NULL}
static const exp_flag_def RANKER_FLAGS[] = {
    RANKER_COMMON_FLAGS,
    {"lora-r", EXP_T_INT, "8", NULL},
    {"lora-alpha", EXP_T_FLOAT, "32", NULL},
    {"lora-dropout", EXP_T_FLOAT, "0.05", NULL},
    {"targets", EXP_T_STR, "q,v", NULL},
    {"lr", EXP_T_FLOAT, "0.0001", NULL},
    {"weight-decay", EXP_T_FLOAT, "0", NULL},
    {"max-grad-norm", EXP_T_FLOAT, "1", NULL},
    {"warmup", EXP_T_INT, "100", NULL},
    {"micro-batch", EXP_T_INT, "16", NULL},
    {"batch", EXP_T_INT, "16", NULL},
    {"max-steps", EXP_T_INT, "0", NULL},
    {"val-every", EXP_T_INT, "100", NULL},
    {"val-users", EXP_T_INT, "0", NULL},
    {"patience", EXP_T_INT, "20", NULL},
    {"seed", EXP_T_INT, "42", NULL},
    {"recompute", EXP_T_BOOL, "false", NULL},
    {"peft", EXP_T_BOOL, "false", NULL},
    {NULL, 0, NULL, NULL},
};
static const exp_flag_def EVAL_FLAGS[] = {
    RANKER_COMMON_FLAGS,
    {"split", EXP_T_STR, "test", "val|test"},
    {"max-users", EXP_T_INT, "0", NULL},
    {NULL, 0, NULL, NULL},
};

const exp_flag_def *exp_stage_flags(int s) {
    static const exp_flag_def *const tables[EXP_N_STAGES] = {PREPARE_FLAGS, CAPTION_FLAGS, RETRIEVER_FLAGS,
                                                              RANKER_FLAGS, EVAL_FLAGS};
    return s >= 0 && s < EXP_N_STAGES ? tables[s] : NULL;
}

const exp_flag_def *exp_find_flag(int s, const char *name) {
    for (const exp_flag_def *f = exp_stage_flags(s); f && f->name; f++)
        if (!strcmp(f->name, name)) return f;
    return NULL;
}

/* eval's prompt flags come from the ranker block unless eval gives its own */
static int shared_prompt_flag(const char *flag) {
    for (const exp_flag_def *f = EVAL_FLAGS; f->name; f++)
        if (!strcmp(f->name, flag)) return exp_find_flag(EXP_RANKER, flag) != NULL;
    return 0;
}

static int check_value(const char *file, int line, const char *key, const exp_flag_def *f, const char *v,
                       mr_error *e) {
    int64_t i;
    double d;
    switch (f->type) {
    case EXP_T_INT:
        if (mr_parse_i64(v, &i))
            return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: expected an integer, got '%s'", file, line, key, v);
        if (i < 0) return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: must be >= 0, got '%s'", file, line, key, v);
        break;
    case EXP_T_FLOAT:
        if (mr_parse_double(v, &d) || !isfinite(d))
            return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: expected a number, got '%s'", file, line, key, v);
        break;
    case EXP_T_BOOL:
        if (strcmp(v, "true") && strcmp(v, "false"))
            return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: expected true or false, got '%s'", file, line, key, v);
        break;
    case EXP_T_STR:
        if (f == &RETRIEVER_FLAGS[0]) { /* arch: a registered architecture */
            rt_train_options o;
            mr_error ae = {0};
            if (rt_train_defaults(&o, NULL, v, &ae)) {
                char names[256];
                rt_arch_names(names, sizeof names);
                return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: %s '%s' (this build has: %s)", file, line, key,
                               rt_arch_find(v) ? "architecture not trainable yet" : "unknown architecture", v, names);
            }
        }
        break;
    }
    if (f->choices) {
        size_t n = strlen(v);
        const char *p = f->choices;
        int ok = 0;
        while (*p) {
            const char *bar = strchr(p, '|');
            size_t m = bar ? (size_t)(bar - p) : strlen(p);
            if (m == n && !strncmp(p, v, n)) ok = 1;
            p += m + (bar ? 1 : 0);
        }
        if (!ok)
            return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: expected one of %s, got '%s'", file, line, key, f->choices,
                           v);
    }
    return MR_OK;
}

static int scalar_of(const char *file, const mr_yaml_node *n, int line, const char *key, const char **out,
                     mr_error *e) {
    if (!n || n->type != MR_YAML_SCALAR)
        return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: expected a single value", file, line, key);
    if (!n->quoted && (!strcmp(n->value, "") || !strcmp(n->value, "~") || !strcmp(n->value, "null")))
        return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: has no value", file, line, key);
    *out = n->value;
    return MR_OK;
}

static int parse_block(const exp_config *c, int s, const mr_yaml_node *n, int line, exp_block *b, mr_error *e) {
    const char *file = c->path;
    if (n->type != MR_YAML_MAP)
        return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: expected a map of flags (key: value)", file, line,
                       EXP_STAGE_NAMES[s]);
    b->present = 1;
    b->line = line;
    b->kv = mr_calloc((size_t)n->n + 1, sizeof *b->kv, e);
    if (!b->kv) return MR_ERR_INTERNAL;
    for (int i = 0; i < n->n; i++) {
        char key[160];
        snprintf(key, sizeof key, "%s.%s", EXP_STAGE_NAMES[s], n->keys[i]);
        const exp_flag_def *f = exp_find_flag(s, n->keys[i]);
        if (!f) {
            static const char *runner_set[] = {"out", "dataset", "candidates", "adapter", "resume", "force", "run"};
            for (size_t k = 0; k < sizeof runner_set / sizeof runner_set[0]; k++)
                if (!strcmp(n->keys[i], runner_set[k]))
                    return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: set by the experiment runner, not by the config",
                                   file, n->key_lines[i], key);
            return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: unknown key (not a flag of %s)", file, n->key_lines[i], key,
                           s == EXP_PREPARE ? "prepare" : s == EXP_CAPTION ? "caption" : s == EXP_RETRIEVER ? "retriever train"
                                                      : s == EXP_RANKER  ? "ranker train"
                                                                         : "ranker eval");
        }
        const char *v;
        int rc;
        if ((rc = scalar_of(file, n->items[i], n->key_lines[i], key, &v, e))) return rc;
        if ((rc = check_value(file, n->key_lines[i], key, f, v, e))) return rc;
        b->kv[b->n].key = mr_strdup(n->keys[i], e);
        b->kv[b->n].value = mr_strdup(v, e);
        b->kv[b->n].line = n->key_lines[i];
        if (!b->kv[b->n].key || !b->kv[b->n].value) return MR_ERR_INTERNAL;
        b->n++;
    }
    return MR_OK;
}

static int parse_grid(exp_config *c, const mr_yaml_node *g, int line, mr_error *e) {
    const char *file = c->path;
    if (g->type != MR_YAML_MAP)
        return mr_fail(e, MR_ERR_INPUT, "%s:%d: grid: expected a map (key: [values])", file, line);
    c->axes = mr_calloc((size_t)g->n + 1, sizeof *c->axes, e);
    if (!c->axes) return MR_ERR_INTERNAL;
    for (int i = 0; i < g->n; i++) {
        const char *key = g->keys[i];
        int kl = g->key_lines[i];
        exp_axis *a = &c->axes[c->n_axes];
        a->line = kl;
        a->key = mr_strdup(key, e);
        if (!a->key) return MR_ERR_INTERNAL;
        c->n_axes++;
        char full[160];
        snprintf(full, sizeof full, "grid.%s", key);
        const char *dot = strchr(key, '.');
        if (!strcmp(key, "dataset")) {
            a->is_dataset = 1;
            if (c->stage[EXP_PREPARE].present)
                return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: a grid over datasets needs prepared folders, not a "
                               "prepare block", file, kl, full);
        } else if (dot) {
            int s = -1;
            for (int k = 0; k < EXP_N_STAGES; k++)
                if ((size_t)(dot - key) == strlen(EXP_STAGE_NAMES[k]) && !strncmp(key, EXP_STAGE_NAMES[k], (size_t)(dot - key)))
                    s = k;
            if (s < 0 || s == EXP_PREPARE || s == EXP_CAPTION)
                return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: unknown stage (grid keys are FLAG or "
                               "retriever.FLAG / ranker.FLAG / eval.FLAG)", file, kl, full);
            if (!exp_find_flag(s, dot + 1))
                return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: unknown key (not a flag of %s)", file, kl, full,
                               EXP_STAGE_NAMES[s]);
            a->stage_mask = 1 << s;
            /* a prompt flag set for the ranker's training applies to its evaluation too */
            if (s == EXP_RANKER && shared_prompt_flag(dot + 1)) a->stage_mask |= 1 << EXP_EVAL;
            a->flag = mr_strdup(dot + 1, e);
        } else {
            for (int s = EXP_RETRIEVER; s < EXP_N_STAGES; s++)
                if (exp_find_flag(s, key)) a->stage_mask |= 1 << s;
            if (!a->stage_mask)
                return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: unknown key (not a flag of retriever train, ranker "
                               "train or ranker eval)", file, kl, full);
            a->flag = mr_strdup(key, e);
        }
        if (!a->is_dataset && !a->flag) return MR_ERR_INTERNAL;
        a->is_seed = a->flag && !strcmp(a->flag, "seed");
        const mr_yaml_node *list = g->items[i];
        if (list->type != MR_YAML_SEQ || list->n == 0)
            return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: expected a non-empty list of values ([a, b, ...])", file, kl,
                           full);
        a->values = mr_calloc((size_t)list->n, sizeof *a->values, e);
        if (!a->values) return MR_ERR_INTERNAL;
        for (int j = 0; j < list->n; j++) {
            const mr_yaml_node *it = list->items[j];
            const char *v;
            int rc;
            if ((rc = scalar_of(file, it, it->line, full, &v, e))) return rc;
            for (int s = 0; s < EXP_N_STAGES && !a->is_dataset; s++)
                if ((a->stage_mask >> s & 1) && (rc = check_value(file, it->line, full, exp_find_flag(s, a->flag), v, e)))
                    return rc;
            for (int k = 0; k < j; k++)
                if (!strcmp(a->values[k], v))
                    return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: value '%s' listed twice", file, it->line, full, v);
            if (!(a->values[j] = mr_strdup(v, e))) return MR_ERR_INTERNAL;
            a->n++;
        }
        /* two axes setting the same flag of the same stage would fight */
        for (int k = 0; k < c->n_axes - 1; k++) {
            const exp_axis *b = &c->axes[k];
            if (a->is_dataset ? b->is_dataset : (b->flag && !strcmp(b->flag, a->flag) && (b->stage_mask & a->stage_mask)))
                return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: sets the same flag as grid.%s (line %d)", file, kl, full,
                               b->key, b->line);
        }
    }
    return MR_OK;
}

static int valid_metric(const char *m) {
    const char *at = strchr(m, '@');
    if (!at) return 0;
    size_t n = (size_t)(at - m);
    if (!((n == 6 && !strncmp(m, "Recall", 6)) || (n == 4 && !strncmp(m, "NDCG", 4)) || (n == 3 && !strncmp(m, "MRR", 3))))
        return 0;
    int64_t k;
    return !mr_parse_i64(at + 1, &k) && k >= 1 && k <= 1000;
}

static int parse_report(exp_config *c, const mr_yaml_node *r, int line, mr_error *e) {
    const char *file = c->path;
    if (r->type != MR_YAML_MAP) return mr_fail(e, MR_ERR_INPUT, "%s:%d: report: expected a map", file, line);
    for (int i = 0; i < r->n; i++) {
        const char *k = r->keys[i];
        int kl = r->key_lines[i];
        const char *v;
        int rc;
        char full[160];
        snprintf(full, sizeof full, "report.%s", k);
        if (!strcmp(k, "split") || !strcmp(k, "section") || !strcmp(k, "sweep")) {
            if ((rc = scalar_of(file, r->items[i], kl, full, &v, e))) return rc;
            if (!strcmp(k, "split")) {
                if (strcmp(v, "test") && strcmp(v, "val"))
                    return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: expected val or test, got '%s'", file, kl, full, v);
                free(c->report_split);
                if (!(c->report_split = mr_strdup(v, e))) return MR_ERR_INTERNAL;
            } else if (!strcmp(k, "section")) {
                if (strcmp(v, "overall") && strcmp(v, "subset"))
                    return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: expected overall or subset, got '%s'", file, kl, full,
                                   v);
                free(c->report_section);
                if (!(c->report_section = mr_strdup(v, e))) return MR_ERR_INTERNAL;
            } else {
                c->sweep = -1;
                for (int a = 0; a < c->n_axes; a++)
                    if (!strcmp(c->axes[a].key, v)) c->sweep = a;
                if (c->sweep < 0 || c->axes[c->sweep].is_seed || c->axes[c->sweep].is_dataset)
                    return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: '%s' is not a grid key other than seed and dataset",
                                   file, kl, full, v);
                for (int j = 0; j < c->axes[c->sweep].n; j++) {
                    double d;
                    if (mr_parse_double(c->axes[c->sweep].values[j], &d))
                        return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: the swept values must be numbers ('%s' is not)",
                                       file, kl, full, c->axes[c->sweep].values[j]);
                }
            }
        } else if (!strcmp(k, "metrics")) {
            const mr_yaml_node *l = r->items[i];
            if (l->type != MR_YAML_SEQ || l->n == 0)
                return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: expected a list such as [Recall@10, NDCG@10]", file, kl,
                               full);
            for (int j = 0; j < c->n_metrics; j++) free(c->metrics[j]);
            free(c->metrics);
            c->n_metrics = 0;
            c->metrics = mr_calloc((size_t)l->n, sizeof *c->metrics, e);
            if (!c->metrics) return MR_ERR_INTERNAL;
            for (int j = 0; j < l->n; j++) {
                if ((rc = scalar_of(file, l->items[j], l->items[j]->line, full, &v, e))) return rc;
                if (!valid_metric(v))
                    return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: '%s' is not Recall@K, NDCG@K or MRR@K", file,
                                   l->items[j]->line, full, v);
                if (!(c->metrics[c->n_metrics++] = mr_strdup(v, e))) return MR_ERR_INTERNAL;
            }
        } else {
            return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: unknown key (report takes split, section, metrics, sweep)",
                           file, kl, full);
        }
    }
    return MR_OK;
}

static int parse_root(exp_config *c, const mr_yaml_node *root, mr_error *e) {
    const char *file = c->path;
    if (root->type != MR_YAML_MAP)
        return mr_fail(e, MR_ERR_INPUT, "%s:%d: expected a map at the top (dataset:, retriever:, ...)", file,
                       root->line);
    int rc;
    /* stage blocks first: the grid and report refer to them */
    for (int i = 0; i < root->n; i++) {
        const char *k = root->keys[i];
        int s = -1;
        for (int j = 0; j < EXP_N_STAGES; j++)
            if (!strcmp(k, EXP_STAGE_NAMES[j])) s = j;
        if (s >= 0) {
            if ((rc = parse_block(c, s, root->items[i], root->key_lines[i], &c->stage[s], e))) return rc;
        } else if (!strcmp(k, "dataset")) {
            const char *v;
            if ((rc = scalar_of(file, root->items[i], root->key_lines[i], "dataset", &v, e))) return rc;
            if (!(c->dataset = mr_strdup(v, e))) return MR_ERR_INTERNAL;
            c->dataset_line = root->key_lines[i];
        } else if (!strcmp(k, "name")) {
            const char *v;
            if ((rc = scalar_of(file, root->items[i], root->key_lines[i], "name", &v, e))) return rc;
            for (const char *p = v; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                      *p == '_' || *p == '.'))
                    return mr_fail(e, MR_ERR_INPUT, "%s:%d: name: only letters, digits, '-', '_' and '.' (got '%s')",
                                   file, root->key_lines[i], v);
            free(c->name);
            if (!(c->name = mr_strdup(v, e))) return MR_ERR_INTERNAL;
        } else if (strcmp(k, "grid") && strcmp(k, "report")) {
            return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s: unknown key (expected name, dataset, prepare, retriever, "
                           "ranker, eval, grid, report)", file, root->key_lines[i], k);
        }
    }
    int gl = 0, rl = 0;
    const mr_yaml_node *g = mr_yaml_get(root, "grid", &gl), *r = mr_yaml_get(root, "report", &rl);
    if (g && (rc = parse_grid(c, g, gl, e))) return rc;
    if (r && (rc = parse_report(c, r, rl, e))) return rc;

    int has_ds_axis = 0;
    for (int a = 0; a < c->n_axes; a++) has_ds_axis |= c->axes[a].is_dataset;
    if (c->dataset && c->stage[EXP_PREPARE].present)
        return mr_fail(e, MR_ERR_INPUT, "%s:%d: dataset: give either a prepared folder (dataset:) or a prepare block, "
                       "not both", file, c->dataset_line);
    if (c->dataset && has_ds_axis)
        return mr_fail(e, MR_ERR_INPUT, "%s:%d: dataset: also in the grid", file, c->dataset_line);
    if (!c->dataset && !c->stage[EXP_PREPARE].present && !has_ds_axis)
        return mr_fail(e, MR_ERR_INPUT, "%s:1: dataset: missing (a prepared folder, a prepare block, or grid.dataset)",
                       file);
    if (c->stage[EXP_PREPARE].present) {
        const exp_block *b = &c->stage[EXP_PREPARE];
        int has_format = 0;
        for (int i = 0; i < b->n; i++) has_format |= !strcmp(b->kv[i].key, "format");
        if (!has_format) return mr_fail(e, MR_ERR_INPUT, "%s:%d: prepare.format: missing", file, b->line);
    }
    if (c->stage[EXP_CAPTION].present) {
        const exp_block *b = &c->stage[EXP_CAPTION];
        if (!c->stage[EXP_PREPARE].present)
            return mr_fail(e, MR_ERR_INPUT, "%s:%d: caption: needs a prepare block (captions are written into the "
                           "dataset folder, which must be the experiment's own)", file, b->line);
        int has_import = 0, has_model = 0, has_images = 0;
        for (int i = 0; i < b->n; i++) {
            has_import |= !strcmp(b->kv[i].key, "import");
            has_model |= !strcmp(b->kv[i].key, "model");
            has_images |= !strcmp(b->kv[i].key, "images");
        }
        if (has_import && (has_model || has_images))
            return mr_fail(e, MR_ERR_INPUT, "%s:%d: caption.import: either import a captions.tsv or caption with "
                           "model and images, not both", file, b->line);
        if (!has_import && !(has_model && has_images))
            return mr_fail(e, MR_ERR_INPUT, "%s:%d: caption: needs model and images (a BLIP-2 folder and the item "
                           "images) or import (a captions.tsv)", file, b->line);
    }
    if (!c->stage[EXP_RETRIEVER].present)
        return mr_fail(e, MR_ERR_INPUT, "%s:1: retriever: missing (every experiment trains a retriever; an empty "
                       "map {} takes the defaults)", file);
    if (c->stage[EXP_EVAL].present && !c->stage[EXP_RANKER].present)
        return mr_fail(e, MR_ERR_INPUT, "%s:%d: eval: needs a ranker block (it evaluates the trained adapter)", file,
                       c->stage[EXP_EVAL].line);
    for (int a = 0; a < c->n_axes; a++) {
        const exp_axis *x = &c->axes[a];
        for (int s = EXP_RANKER; s <= EXP_EVAL; s++)
            if ((x->stage_mask >> s & 1) && !c->stage[EXP_RANKER].present && !(x->stage_mask & (1 << EXP_RETRIEVER)))
                return mr_fail(e, MR_ERR_INPUT, "%s:%d: grid.%s: sets a ranker flag but the config has no ranker "
                               "block", file, x->line, x->key);
        if (!c->stage[EXP_RANKER].present) c->axes[a].stage_mask &= 1 << EXP_RETRIEVER;
    }
    if (c->stage[EXP_RANKER].present) {
        int has_model = 0;
        for (int i = 0; i < c->stage[EXP_RANKER].n; i++) has_model |= !strcmp(c->stage[EXP_RANKER].kv[i].key, "model");
        for (int a = 0; a < c->n_axes; a++) has_model |= !strcmp(c->axes[a].flag ? c->axes[a].flag : "", "model");
        if (!has_model)
            return mr_fail(e, MR_ERR_INPUT, "%s:%d: ranker.model: missing (a GGUF file or Hugging Face folder)", file,
                           c->stage[EXP_RANKER].line);
    }
    return MR_OK;
}

int exp_config_parse(const char *text, size_t len, const char *name, exp_config *c, mr_error *e) {
    memset(c, 0, sizeof *c);
    c->sweep = -1;
    if (!(c->path = mr_strdup(name ? name : "<config>", e))) return MR_ERR_INTERNAL;
    char base[256];
    mr_path_basename(c->path, base, sizeof base);
    size_t bl = strlen(base);
    if (bl > 5 && !strcmp(base + bl - 5, ".yaml")) base[bl - 5] = 0;
    else if (bl > 4 && !strcmp(base + bl - 4, ".yml")) base[bl - 4] = 0;
    c->name = mr_strdup(base, e);
    c->report_split = mr_strdup("test", e);
    c->report_section = mr_strdup("overall", e);
    if (!c->name || !c->report_split || !c->report_section) {
        exp_config_free(c);
        return MR_ERR_INTERNAL;
    }
    mr_yaml_node *root = NULL;
    int rc = mr_yaml_parse(text, len, c->path, &root, e);
    if (!rc) rc = parse_root(c, root, e);
    mr_yaml_free(root);
    if (!rc && c->n_metrics == 0) {
        static const char *def[] = {"Recall@5", "Recall@10", "Recall@20", "NDCG@5", "NDCG@10",
                                    "NDCG@20",  "MRR@5",     "MRR@10",    "MRR@20"};
        const int n = (int)(sizeof def / sizeof def[0]);
        c->metrics = mr_calloc(n, sizeof *c->metrics, e);
        if (!c->metrics) rc = MR_ERR_INTERNAL;
        for (int i = 0; !rc && i < n; i++)
            if (!(c->metrics[c->n_metrics++] = mr_strdup(def[i], e))) rc = MR_ERR_INTERNAL;
    }
    if (rc) exp_config_free(c);
    return rc;
}

int exp_config_load(const char *path, exp_config *c, mr_error *e) {
    char *text = NULL;
    size_t len = 0;
    memset(c, 0, sizeof *c);
    int rc = mr_read_file(path, &text, &len, e);
    if (rc) return rc;
    rc = exp_config_parse(text, len, path, c, e);
    free(text);
    return rc;
}

void exp_config_free(exp_config *c) {
    free(c->path);
    free(c->name);
    free(c->dataset);
    for (int s = 0; s < EXP_N_STAGES; s++) {
        for (int i = 0; i < c->stage[s].n; i++) {
            free(c->stage[s].kv[i].key);
            free(c->stage[s].kv[i].value);
        }
        free(c->stage[s].kv);
    }
    for (int a = 0; a < c->n_axes; a++) {
        for (int j = 0; j < c->axes[a].n; j++) free(c->axes[a].values[j]);
        free(c->axes[a].values);
        free(c->axes[a].key);
        free(c->axes[a].flag);
    }
    free(c->axes);
    free(c->report_split);
    free(c->report_section);
    for (int i = 0; i < c->n_metrics; i++) free(c->metrics[i]);
    free(c->metrics);
    memset(c, 0, sizeof *c);
    c->sweep = -1;
}

static const char *block_value(const exp_block *b, const char *flag) {
    for (int i = 0; i < b->n; i++)
        if (!strcmp(b->kv[i].key, flag)) return b->kv[i].value;
    return NULL;
}

const char *exp_flag_value(const exp_config *c, const exp_run *r, int s, const char *flag) {
    for (int a = 0; a < c->n_axes; a++)
        if ((c->axes[a].stage_mask >> s & 1) && !strcmp(c->axes[a].flag, flag)) return c->axes[a].values[r->choice[a]];
    const char *v = block_value(&c->stage[s], flag);
    if (!v && s == EXP_EVAL && shared_prompt_flag(flag)) v = block_value(&c->stage[EXP_RANKER], flag);
    return v;
}

/* "key=value" made safe for a folder name: the value's base name, and only
 * letters, digits and "-_.=," kept. */
static void append_label(char *buf, size_t sz, const char *key, const char *value) {
    size_t n = strlen(buf);
    char base[256];
    mr_path_basename(value, base, sizeof base);
    snprintf(buf + n, sz - n, "%s%s=%s", n ? "," : "", key, base);
    for (char *p = buf + n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-_.=,", *p)))
            *p = '_';
}

/* The label of the axes that reach stage s (directly, or through the stages it reads). */
static void stage_label(const exp_config *c, const exp_run *r, int s, char *buf, size_t sz) {
    buf[0] = 0;
    for (int a = 0; a < c->n_axes; a++) {
        const exp_axis *x = &c->axes[a];
        int reaches = x->is_dataset;
        for (int t = EXP_RETRIEVER; t <= s; t++) reaches |= x->stage_mask >> t & 1;
        if (reaches) append_label(buf, sz, x->key, x->values[r->choice[a]]);
    }
    if (!buf[0]) snprintf(buf, sz, "default");
}

void exp_runs_free(exp_run *runs, int n) {
    if (!runs) return;
    for (int i = 0; i < n; i++) {
        free(runs[i].choice);
        free(runs[i].dir);
        for (int s = 0; s < EXP_N_STAGES; s++) free(runs[i].stage_dir[s]);
    }
    free(runs);
}

int exp_expand(const exp_config *c, exp_run **runs_out, int *n_out, mr_error *e) {
    *runs_out = NULL;
    *n_out = 0;
    long total = 1;
    for (int a = 0; a < c->n_axes; a++) {
        total *= c->axes[a].n;
        if (total > 100000) return mr_fail(e, MR_ERR_INPUT, "%s: the grid has more than 100000 runs", c->path);
    }
    exp_run *runs = mr_calloc((size_t)total, sizeof *runs, e);
    if (!runs) return MR_ERR_INTERNAL;
    const int width = total >= 1000 ? 4 : total >= 100 ? 3 : 2;
    for (long i = 0; i < total; i++) {
        exp_run *r = &runs[i];
        r->index = (int)i;
        r->choice = mr_calloc((size_t)c->n_axes + 1, sizeof *r->choice, e);
        if (!r->choice) goto oom;
        long rest = i;
        for (int a = c->n_axes - 1; a >= 0; a--) { /* the first axis outermost */
            r->choice[a] = (int)(rest % c->axes[a].n);
            rest /= c->axes[a].n;
        }
        char label[1024], dir[1200];
        label[0] = 0;
        for (int a = 0; a < c->n_axes; a++) append_label(label, sizeof label, c->axes[a].key, c->axes[a].values[r->choice[a]]);
        snprintf(dir, sizeof dir, "runs/%0*ld%s%s", width, i + 1, label[0] ? "-" : "", label);
        if (!(r->dir = mr_strdup(dir, e))) goto oom;
        if (c->stage[EXP_PREPARE].present && !(r->stage_dir[EXP_PREPARE] = mr_strdup("dataset", e))) goto oom;
        if (c->stage[EXP_CAPTION].present && !(r->stage_dir[EXP_CAPTION] = mr_strdup("caption", e))) goto oom;
        for (int s = EXP_RETRIEVER; s <= EXP_RANKER; s++) {
            if (!c->stage[s].present) continue;
            stage_label(c, r, s, label, sizeof label);
            snprintf(dir, sizeof dir, "%s/%s", EXP_STAGE_NAMES[s], label);
            if (!(r->stage_dir[s] = mr_strdup(dir, e))) goto oom;
        }
        if (c->stage[EXP_RANKER].present && !(r->stage_dir[EXP_EVAL] = mr_strdup(r->dir, e))) goto oom;
    }
    *runs_out = runs;
    *n_out = (int)total;
    return MR_OK;
oom:
    exp_runs_free(runs, (int)total);
    return MR_ERR_INTERNAL;
}

int exp_max_candidates(const exp_config *c, const exp_run *runs, int n_runs) {
    int k = 20;
    for (int i = 0; i < n_runs; i++)
        for (int s = EXP_RANKER; s <= EXP_EVAL; s++) {
            if (!c->stage[s].present && !(s == EXP_EVAL && c->stage[EXP_RANKER].present)) continue;
            const char *v = exp_flag_value(c, &runs[i], s, "num-candidates");
            int64_t x;
            if (v && !mr_parse_i64(v, &x) && x > k) k = (int)x;
        }
    return k;
}

void exp_mean_sd(const double *x, int n, double *mean, double *sd) {
    double m = 0;
    for (int i = 0; i < n; i++) m += x[i];
    m = n > 0 ? m / n : NAN;
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (x[i] - m) * (x[i] - m);
    *mean = m;
    *sd = n >= 2 ? sqrt(ss / (n - 1)) : NAN;
}
