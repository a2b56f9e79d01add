/* Result tables and figures of an experiment folder, and the learning curves of
 * a training run. results.tsv holds no times, dates, paths or thread counts
 * (DESIGN section 8): the same config gives the same file. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/exp.h"
#include "mllm4rec/svg.h"

/* ---- metrics.json flattened: "test/overall/Recall@10" -> value ---- */

typedef struct flat {
    int n, cap;
    char **names;
    double *vals;
} flat;

static int flat_add(flat *f, const char *name, double v, mr_error *e) {
    if (f->n == f->cap) {
        int cap = f->cap ? f->cap * 2 : 64;
        char **nm = mr_realloc(f->names, (size_t)cap * sizeof *nm, e);
        if (!nm) return MR_ERR_INTERNAL;
        f->names = nm;
        double *vs = mr_realloc(f->vals, (size_t)cap * sizeof *vs, e);
        if (!vs) return MR_ERR_INTERNAL;
        f->vals = vs;
        f->cap = cap;
    }
    if (!(f->names[f->n] = mr_strdup(name, e))) return MR_ERR_INTERNAL;
    f->vals[f->n++] = v;
    return MR_OK;
}

static void flat_free(flat *f) {
    for (int i = 0; i < f->n; i++) free(f->names[i]);
    free(f->names);
    free(f->vals);
    memset(f, 0, sizeof *f);
}

static int flatten(const json_t *j, const char *prefix, flat *f, mr_error *e) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)j, k, v) {
        char name[512];
        snprintf(name, sizeof name, "%s%s%s", prefix, *prefix ? "/" : "", k);
        int rc = MR_OK;
        if (json_is_object(v)) rc = flatten(v, name, f, e);
        else if (json_is_number(v)) rc = flat_add(f, name, json_number_value(v), e);
        if (rc) return rc;
    }
    return MR_OK;
}

static double flat_get(const flat *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name)) return f->vals[i];
    return NAN;
}

static int load_metrics(const char *path, flat *f, mr_error *e) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) return mr_fail(e, MR_ERR_INPUT, "%s:%d: %s", path, je.line, je.text);
    int rc = json_is_object(j) ? flatten(j, "", f, e) : mr_fail(e, MR_ERR_INPUT, "%s: not a JSON object", path);
    json_decref(j);
    return rc;
}

/* The column of a report metric ("Recall@10") in a run's flat metrics. */
static void metric_column(const exp_config *c, const char *metric, char *buf, size_t sz) {
    if (c->stage[EXP_RANKER].present) snprintf(buf, sz, "%s/%s/%s", c->report_split, c->report_section, metric);
    else snprintf(buf, sz, "%s/%s", c->report_split, metric);
}

/* A number for tables: 4 decimals for metrics in [0, 1], more digits otherwise. */
static void fmt_num(char *buf, size_t sz, double v) {
    if (isnan(v)) snprintf(buf, sz, "n/a");
    else if (fabs(v) <= 1) snprintf(buf, sz, "%.4f", v);
    else snprintf(buf, sz, "%.6g", v);
}

/* Settings = every axis but the seeds. Returns the group index of each run. */
static int group_runs(const exp_config *c, const exp_run *runs, int n, int *group, int *first_of_group) {
    int ng = 0;
    for (int i = 0; i < n; i++) {
        group[i] = -1;
        for (int g = 0; g < ng && group[i] < 0; g++) {
            const exp_run *o = &runs[first_of_group[g]];
            int same = 1;
            for (int a = 0; a < c->n_axes; a++)
                if (!c->axes[a].is_seed && o->choice[a] != runs[i].choice[a]) same = 0;
            if (same) group[i] = g;
        }
        if (group[i] < 0) {
            first_of_group[ng] = i;
            group[i] = ng++;
        }
    }
    return ng;
}

static void setting_name(const exp_config *c, const exp_run *r, char *buf, size_t sz) {
    buf[0] = 0;
    for (int a = 0; a < c->n_axes; a++) {
        if (c->axes[a].is_seed) continue;
        size_t n = strlen(buf);
        snprintf(buf + n, sz - n, "%s%s=%s", n ? ", " : "", c->axes[a].key, c->axes[a].values[r->choice[a]]);
    }
    if (!buf[0]) snprintf(buf, sz, "all runs");
}

static int write_tsv(const exp_config *c, const char *out, const exp_run *runs, int n, const flat *fl, mr_error *e) {
    char path[4096];
    snprintf(path, sizeof path, "%s/results.tsv", out);
    mr_atomic_file af;
    int rc = mr_atomic_open(&af, path, e);
    if (rc) return rc;
    /* columns: the settings, then the metrics of the first finished run in file order */
    const flat *cols = NULL;
    for (int i = 0; i < n && !cols; i++)
        if (fl[i].n) cols = &fl[i];
    fprintf(af.f, "run");
    for (int a = 0; a < c->n_axes; a++) fprintf(af.f, "\t%s", c->axes[a].key);
    for (int k = 0; cols && k < cols->n; k++) fprintf(af.f, "\t%s", cols->names[k]);
    fprintf(af.f, "\n");
    for (int i = 0; i < n; i++) {
        fprintf(af.f, "%d", i + 1);
        for (int a = 0; a < c->n_axes; a++) fprintf(af.f, "\t%s", c->axes[a].values[runs[i].choice[a]]);
        for (int k = 0; cols && k < cols->n; k++) {
            double v = flat_get(&fl[i], cols->names[k]);
            if (isnan(v)) fprintf(af.f, "\t");
            else fprintf(af.f, "\t%.10g", v);
        }
        fprintf(af.f, "\n");
    }
    return mr_atomic_commit(&af, e);
}

static int write_md(const exp_config *c, const char *out, const exp_run *runs, int n, const flat *fl, mr_error *e) {
    int *group = mr_calloc((size_t)n, sizeof *group, e), *first = mr_calloc((size_t)n, sizeof *first, e);
    double *vals = mr_calloc((size_t)n, sizeof *vals, e);
    if (!group || !first || !vals) {
        free(group);
        free(first);
        free(vals);
        return MR_ERR_INTERNAL;
    }
    int ng = group_runs(c, runs, n, group, first);
    char path[4096];
    snprintf(path, sizeof path, "%s/results.md", out);
    mr_atomic_file af;
    int rc = mr_atomic_open(&af, path, e);
    if (!rc) {
        FILE *f = af.f;
        int seeds = 1;
        for (int a = 0; a < c->n_axes; a++)
            if (c->axes[a].is_seed) seeds *= c->axes[a].n;
        fprintf(f, "# %s\n\n", c->name);
        fprintf(f, "%s metrics%s%s, mean ± sample sd over %d seed%s per setting (n = finished runs).\n\n",
                c->report_split, c->stage[EXP_RANKER].present ? ", " : "",
                c->stage[EXP_RANKER].present ? (strcmp(c->report_section, "overall") ? "on the ranked subset"
                                                                                      : "overall (subset ranked by the LLM, the rest by the retriever)")
                                             : "",
                seeds, seeds == 1 ? "" : "s");
        fprintf(f, "| metric |");
        for (int g = 0; g < ng; g++) {
            char name[1024];
            setting_name(c, &runs[first[g]], name, sizeof name);
            fprintf(f, " %s |", name);
        }
        fprintf(f, "\n|---|");
        for (int g = 0; g < ng; g++) fprintf(f, "---:|");
        fprintf(f, "\n");
        for (int m = 0; m < c->n_metrics; m++) {
            char col[600];
            metric_column(c, c->metrics[m], col, sizeof col);
            fprintf(f, "| %s |", c->metrics[m]);
            for (int g = 0; g < ng; g++) {
                int k = 0;
                for (int i = 0; i < n; i++) {
                    double v = flat_get(&fl[i], col);
                    if (group[i] == g && !isnan(v)) vals[k++] = v;
                }
                double mean, sd;
                exp_mean_sd(vals, k, &mean, &sd);
                char a[32], b[32];
                fmt_num(a, sizeof a, mean);
                fmt_num(b, sizeof b, sd);
                if (k == 0) fprintf(f, " n/a |");
                else if (k == 1) fprintf(f, " %s (n = 1) |", a);
                else fprintf(f, " %s ± %s (n = %d) |", a, b, k);
            }
            fprintf(f, "\n");
        }
        rc = mr_atomic_commit(&af, e);
    }
    free(group);
    free(first);
    free(vals);
    return rc;
}

/* One figure per metric kind (Recall, NDCG, MRR) of the report: value against the
 * swept setting, one line per k (and per other setting), error bars = sd over seeds. */
static int write_sweeps(const exp_config *c, const char *out, const exp_run *runs, int n, const flat *fl, mr_error *e) {
    static const char *kinds[] = {"Recall", "NDCG", "MRR"};
    const exp_axis *sw = &c->axes[c->sweep];
    int *group = mr_calloc((size_t)n, sizeof *group, e), *first = mr_calloc((size_t)n, sizeof *first, e);
    /* series groups: the settings without the swept axis */
    int rc = group && first ? MR_OK : MR_ERR_INTERNAL;
    int ng = 0;
    if (!rc) {
        for (int i = 0; i < n; i++) {
            group[i] = -1;
            for (int g = 0; g < ng && group[i] < 0; g++) {
                int same = 1;
                for (int a = 0; a < c->n_axes; a++)
                    if (a != c->sweep && !c->axes[a].is_seed && runs[first[g]].choice[a] != runs[i].choice[a]) same = 0;
                if (same) group[i] = g;
            }
            if (group[i] < 0) {
                first[ng] = i;
                group[i] = ng++;
            }
        }
    }
    const int np = sw->n;
    for (int kd = 0; kd < 3 && !rc; kd++) {
        int nm = 0;
        for (int m = 0; m < c->n_metrics; m++)
            if (!strncmp(c->metrics[m], kinds[kd], strlen(kinds[kd])) && c->metrics[m][strlen(kinds[kd])] == '@') nm++;
        if (!nm) continue;
        int ns = nm * ng;
        svg_series *ser = mr_calloc((size_t)ns, sizeof *ser, e);
        double *buf = mr_calloc((size_t)ns * np * 3, sizeof *buf, e);
        double *tmp = mr_calloc((size_t)n + 1, sizeof *tmp, e);
        char(*names)[256] = mr_calloc((size_t)ns, sizeof *names, e);
        if (!ser || !buf || !tmp || !names) rc = MR_ERR_INTERNAL;
        int si = 0;
        for (int m = 0; m < c->n_metrics && !rc; m++) {
            if (!(!strncmp(c->metrics[m], kinds[kd], strlen(kinds[kd])) && c->metrics[m][strlen(kinds[kd])] == '@'))
                continue;
            char col[600];
            metric_column(c, c->metrics[m], col, sizeof col);
            for (int g = 0; g < ng; g++, si++) {
                double *x = buf + (size_t)si * np * 3, *y = x + np, *err = y + np;
                for (int p = 0; p < np; p++) {
                    int k = 0;
                    for (int i = 0; i < n; i++) {
                        double v = flat_get(&fl[i], col);
                        if (group[i] == g && runs[i].choice[c->sweep] == p && !isnan(v)) tmp[k++] = v;
                    }
                    mr_parse_double(sw->values[p], &x[p]);
                    exp_mean_sd(tmp, k, &y[p], &err[p]);
                }
                char other[200] = "";
                for (int a = 0; a < c->n_axes; a++) {
                    if (a == c->sweep || c->axes[a].is_seed) continue;
                    size_t l = strlen(other);
                    snprintf(other + l, sizeof other - l, ", %s=%s", c->axes[a].key,
                             c->axes[a].values[runs[first[g]].choice[a]]);
                }
                snprintf(names[si], sizeof names[si], "%s%s", c->metrics[m], other);
                ser[si] = (svg_series){.name = names[si], .n = np, .x = x, .y = y, .err = err, .mark = -1};
            }
        }
        if (!rc) {
            char title[300], ylabel[64], path[4096];
            int seeds = 1;
            for (int a = 0; a < c->n_axes; a++)
                if (c->axes[a].is_seed) seeds *= c->axes[a].n;
            snprintf(title, sizeof title, "%s: %s against %s (%s%s%s; %d seed%s%s)", c->name, kinds[kd], sw->key,
                     c->report_split, c->stage[EXP_RANKER].present ? ", " : "",
                     c->stage[EXP_RANKER].present ? c->report_section : "", seeds, seeds == 1 ? "" : "s",
                     seeds > 1 ? ", bars: sd" : "");
            snprintf(ylabel, sizeof ylabel, "%s@k", kinds[kd]);
            svg_panel p = {.title = title, .xlabel = sw->key, .ylabel = ylabel, .n_series = ns, .series = ser};
            snprintf(path, sizeof path, "%s/fig-%s.svg", out, kinds[kd]);
            rc = svg_write(path, &p, 1, 800, e);
        }
        free(ser);
        free(buf);
        free(tmp);
        free(names);
    }
    free(group);
    free(first);
    return rc;
}

int exp_report(const exp_config *c, const char *out_dir, mr_error *e) {
    exp_run *runs = NULL;
    int n = 0, rc;
    if ((rc = exp_expand(c, &runs, &n, e))) return rc;
    flat *fl = mr_calloc((size_t)n + 1, sizeof *fl, e);
    if (!fl) {
        exp_runs_free(runs, n);
        return MR_ERR_INTERNAL;
    }
    int missing = 0;
    for (int i = 0; i < n && !rc; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s/metrics.json", out_dir, runs[i].dir);
        if (!mr_file_exists(path)) {
            missing++;
            continue;
        }
        rc = load_metrics(path, &fl[i], e);
    }
    if (!rc && missing == n) rc = mr_fail(e, MR_ERR_INPUT, "%s: no run has finished (no runs/*/metrics.json)", out_dir);
    if (!rc && missing) mr_log("warning: %d of %d runs have no metrics.json yet; their cells are empty", missing, n);
    if (!rc) rc = write_tsv(c, out_dir, runs, n, fl, e);
    if (!rc) rc = write_md(c, out_dir, runs, n, fl, e);
    if (!rc && c->sweep >= 0) rc = write_sweeps(c, out_dir, runs, n, fl, e);
    for (int i = 0; i < n; i++) flat_free(&fl[i]);
    free(fl);
    exp_runs_free(runs, n);
    return rc;
}

/* ---- learning curves ---- */

typedef struct curve {
    int n, cap;
    double *x, *v;
} curve;

static int curve_add(curve *c, double x, double v, mr_error *e) {
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 64;
        double *nx = mr_realloc(c->x, (size_t)cap * sizeof *nx, e);
        if (!nx) return MR_ERR_INTERNAL;
        c->x = nx;
        double *nv = mr_realloc(c->v, (size_t)cap * sizeof *nv, e);
        if (!nv) return MR_ERR_INTERNAL;
        c->v = nv;
        c->cap = cap;
    }
    c->x[c->n] = x;
    c->v[c->n++] = v;
    return MR_OK;
}

/* train.jsonl: one object per validation, {"iter" or "step", "train_loss", "val":
 * {"Recall@10", ...}} (retriever) or "val_ndcg10"; the "final" line is skipped. */
static int read_jsonl(const char *path, curve *loss, curve *val, const char **vname, mr_error *e) {
    char *text = NULL;
    size_t len = 0;
    int rc = mr_read_file(path, &text, &len, e);
    if (rc) return rc;
    int lineno = 0;
    for (char *p = text, *nl; p && *p; p = nl ? nl + 1 : NULL) {
        nl = strchr(p, '\n');
        if (nl) *nl = 0;
        lineno++;
        if (!*p) continue;
        json_error_t je;
        json_t *j = json_loads(p, 0, &je);
        if (!j) {
            if (!nl) break; /* a last line cut by an interruption */
            rc = mr_fail(e, MR_ERR_INPUT, "%s:%d: %s", path, lineno, je.text);
            break;
        }
        if (json_is_true(json_object_get(j, "final"))) {
            json_decref(j);
            continue;
        }
        json_t *xi = json_object_get(j, "iter");
        if (!xi) xi = json_object_get(j, "step");
        if (json_is_number(xi)) {
            double x = json_number_value(xi);
            json_t *l = json_object_get(j, "train_loss");
            if (json_is_number(l) && !rc) rc = curve_add(loss, x, json_number_value(l), e);
            json_t *v = json_object_get(j, "val"), *m = NULL;
            if (json_is_object(v)) {
                if ((m = json_object_get(v, "Recall@10"))) *vname = "validation Recall@10";
                else if ((m = json_object_get(v, "NDCG@10"))) *vname = "validation NDCG@10";
            } else if ((m = json_object_get(j, "val_ndcg10"))) {
                *vname = "validation NDCG@10";
            }
            if (json_is_number(m) && !rc) rc = curve_add(val, x, json_number_value(m), e);
        }
        json_decref(j);
        if (rc) break;
    }
    free(text);
    return rc;
}

/* train_log.tsv (ranker): a header naming step, train_loss, val_ndcg10. */
static int read_tsv_log(const char *path, curve *loss, curve *val, const char **vname, mr_error *e) {
    char *text = NULL;
    size_t len = 0;
    int rc = mr_read_file(path, &text, &len, e);
    if (rc) return rc;
    int cs = -1, cl = -1, cv = -1, lineno = 0;
    for (char *p = text, *nl; p && *p; p = nl ? nl + 1 : NULL) {
        nl = strchr(p, '\n');
        if (nl) *nl = 0;
        lineno++;
        char *fields[32];
        int nf = 0;
        for (char *q = p; nf < 32;) {
            fields[nf++] = q;
            char *t = strchr(q, '\t');
            if (!t) break;
            *t = 0;
            q = t + 1;
        }
        if (lineno == 1) {
            for (int i = 0; i < nf; i++) {
                if (!strcmp(fields[i], "step") || !strcmp(fields[i], "iter")) cs = i;
                if (!strcmp(fields[i], "train_loss")) cl = i;
                if (!strcmp(fields[i], "val_ndcg10")) cv = i;
            }
            if (cs < 0) {
                rc = mr_fail(e, MR_ERR_INPUT, "%s:1: no step column", path);
                break;
            }
            *vname = "validation NDCG@10";
            continue;
        }
        double x, v;
        if (cs >= nf || mr_parse_double(fields[cs], &x)) continue;
        if (cl >= 0 && cl < nf && !mr_parse_double(fields[cl], &v) && (rc = curve_add(loss, x, v, e))) break;
        if (cv >= 0 && cv < nf && !mr_parse_double(fields[cv], &v) && (rc = curve_add(val, x, v, e))) break;
    }
    free(text);
    return rc;
}

int exp_write_curves(const char *run_dir, mr_error *e) {
    char jl[4096], tl[4096], out[4096];
    snprintf(jl, sizeof jl, "%s/train.jsonl", run_dir);
    snprintf(tl, sizeof tl, "%s/train_log.tsv", run_dir);
    snprintf(out, sizeof out, "%s/curves.svg", run_dir);
    curve loss = {0}, val = {0};
    const char *vname = "validation metric";
    int rc;
    if (mr_file_exists(jl)) rc = read_jsonl(jl, &loss, &val, &vname, e);
    else if (mr_file_exists(tl)) rc = read_tsv_log(tl, &loss, &val, &vname, e);
    else rc = mr_fail(e, MR_ERR_INPUT, "%s: no train.jsonl or train_log.tsv", run_dir);
    if (!rc && loss.n == 0 && val.n == 0) rc = mr_fail(e, MR_ERR_INPUT, "%s: the training log has no points yet", run_dir);
    if (!rc) {
        int best = -1;
        for (int i = 0; i < val.n; i++)
            if (best < 0 || val.v[i] > val.v[best]) best = i; /* strictly better, as training keeps it */
        /* "retriever/seed=1": the run folder and the one above it */
        char base[300], leaf[256], t1[400], t2[400], bl[300];
        mr_path_basename(run_dir, leaf, sizeof leaf);
        size_t rl = strlen(run_dir);
        while (rl > 1 && run_dir[rl - 1] == '/') rl--;
        size_t pe = rl;
        while (pe > 0 && run_dir[pe - 1] != '/') pe--;
        size_t ps = pe > 0 ? pe - 1 : 0;
        while (ps > 0 && run_dir[ps - 1] != '/') ps--;
        if (pe > 1 && pe - 1 > ps) snprintf(base, sizeof base, "%.*s/%s", (int)(pe - 1 - ps), run_dir + ps, leaf);
        else snprintf(base, sizeof base, "%s", leaf);
        snprintf(t1, sizeof t1, "%s: training loss", base);
        if (best >= 0) snprintf(t2, sizeof t2, "%s (best %.4f at iteration %.0f)", vname, val.v[best], val.x[best]);
        else snprintf(t2, sizeof t2, "%s", vname);
        snprintf(bl, sizeof bl, "%s", vname);
        svg_series s1 = {.name = "training loss (mean since the previous point)", .n = loss.n, .x = loss.x, .y = loss.v, .mark = -1};
        svg_series s2 = {.name = bl, .n = val.n, .x = val.x, .y = val.v, .mark = best};
        /* both panels on the same iterations */
        double x0 = INFINITY, x1 = -INFINITY;
        for (int i = 0; i < loss.n; i++) x0 = fmin(x0, loss.x[i]), x1 = fmax(x1, loss.x[i]);
        for (int i = 0; i < val.n; i++) x0 = fmin(x0, val.x[i]), x1 = fmax(x1, val.x[i]);
        svg_panel p[2] = {{.title = t1, .xlabel = "iteration", .ylabel = "loss", .n_series = 1, .series = &s1,
                           .x_fixed = 1, .x_min = x0, .x_max = x1},
                          {.title = t2, .xlabel = "iteration", .ylabel = vname, .n_series = 1, .series = &s2,
                           .x_fixed = 1, .x_min = x0, .x_max = x1}};
        rc = svg_write(out, p, 2, 800, e);
    }
    free(loss.x);
    free(loss.v);
    free(val.x);
    free(val.v);
    return rc;
}
