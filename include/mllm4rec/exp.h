/* Experiments: a YAML file names a dataset, the stages' flags and a grid of
 * settings; the runner expands the grid into runs, runs each stage as a child
 * process of the mllm4rec binary (stages with the same flags shared between runs,
 * finished ones skipped, unfinished ones resumed), and the report gathers every
 * run's metrics.json into results.tsv / results.md and draws the figures.
 *
 * Experiment folder (DESIGN section 8):
 *   experiment.yaml      the config as given (the report reads it back)
 *   dataset/             the prepare stage's output (when the config has a prepare block),
 *                        with captions when the config has a caption block
 *   retriever/LABEL/     one retriever run per distinct set of retriever flags
 *   ranker/LABEL/        one ranker training per distinct set of ranker flags
 *   runs/NN-LABEL/       config.yaml (every flag resolved), metrics.json, logs, links
 *   results.tsv, results.md, fig-METRIC.svg (sweeps) */
#ifndef MLLM4REC_EXP_H
#define MLLM4REC_EXP_H

#include <signal.h>
#include <stdio.h>

#include "mllm4rec/base.h"

enum { EXP_PREPARE, EXP_CAPTION, EXP_RETRIEVER, EXP_RANKER, EXP_EVAL, EXP_N_STAGES };
extern const char *const EXP_STAGE_NAMES[EXP_N_STAGES]; /* the config's block names */

/* One flag a stage accepts from a config: name without "--", kind, default text. */
typedef enum { EXP_T_INT, EXP_T_FLOAT, EXP_T_STR, EXP_T_BOOL } exp_type;
typedef struct exp_flag_def {
    const char *name;
    exp_type type;
    const char *def;     /* resolved default; NULL: none (required, or set by the dataset) */
    const char *choices; /* "a|b" when only these are allowed; NULL otherwise */
} exp_flag_def;
/* The table of stage s, NULL-terminated. */
const exp_flag_def *exp_stage_flags(int s);
const exp_flag_def *exp_find_flag(int s, const char *name);
/* The default `retriever train --arch arch` uses for flag (hidden, dropout, ...), as
 * text in buf, from rt_train_defaults (d may be NULL: then max-len and batch, which
 * follow the dataset, have none). 1 when there is one, 0 otherwise (an unknown
 * architecture, a flag without an architecture default). */
struct mr_dataset;
int exp_retriever_default(const char *arch, const struct mr_dataset *d, const char *flag, char *buf, size_t n);

typedef struct exp_kv {
    char *key, *value;
    int line;
} exp_kv;

typedef struct exp_block {
    int present, line;
    int n;
    exp_kv *kv;
} exp_block;

typedef struct exp_axis {
    char *key;        /* as written: "seed" or "ranker.template" */
    char *flag;       /* the flag name ("seed") */
    int stage_mask;   /* bit s: the axis sets stage s's flag */
    int is_seed;      /* the flag is --seed: results.md averages over it */
    int is_dataset;   /* the key is "dataset": prepared folders */
    int line, n;
    char **values;
} exp_axis;

typedef struct exp_config {
    char *path;
    char *name;           /* the file's base name without .yaml */
    char *dataset;        /* a prepared folder; NULL when the prepare block makes it */
    int dataset_line;
    exp_block stage[EXP_N_STAGES];
    int n_axes;
    exp_axis *axes;
    char *report_split;   /* "test" (default) or "val" */
    char *report_section; /* ranker metrics: "overall" (default) or "subset" */
    int n_metrics;
    char **metrics;       /* "Recall@10", ...; default: Recall, NDCG, MRR at 5, 10, 20 */
    int sweep;            /* index of the swept axis, -1 when none */
} exp_config;

/* Errors name the file, the line and the key ("exp.yaml:12: retriever.hiden: unknown key ..."). */
int exp_config_parse(const char *text, size_t len, const char *name, exp_config *c, mr_error *e);
int exp_config_load(const char *path, exp_config *c, mr_error *e);
void exp_config_free(exp_config *c);

/* One point of the grid: runs are in the config's order, the first axis outermost. */
typedef struct exp_run {
    int index;    /* 0-based */
    int *choice;  /* per axis: the index of its value */
    char *dir;    /* "runs/03-seed=3" */
    char *stage_dir[EXP_N_STAGES]; /* relative to the experiment folder; NULL if the stage is absent */
} exp_run;
int exp_expand(const exp_config *c, exp_run **runs, int *n_runs, mr_error *e);
void exp_runs_free(exp_run *runs, int n);

/* The value of stage s's flag for run r: the grid's, else the block's, else (for
 * eval's prompt flags) the ranker block's; NULL when none was given. */
const char *exp_flag_value(const exp_config *c, const exp_run *r, int s, const char *flag);

/* The largest --num-candidates over all runs (the retriever exports that many, at least 20). */
int exp_max_candidates(const exp_config *c, const exp_run *runs, int n_runs);

/* Runs every stage of every run under out_dir. exe is the mllm4rec binary. With
 * dry_run, writes the commands to plan and runs nothing. Progress goes to stderr.
 * The caller holds out_dir's lock (mr_folder_lock), taken before it read the config.
 * stop is the caller's interrupt flag (its signal handler sets it, to the signal's
 * number; NULL: none): the runner polls it, and once it is set sends SIGTERM to the
 * running child's process group, waits for it, starts nothing more and returns
 * MR_ERR_INPUT ("interrupted"). Children die with the runner (PR_SET_PDEATHSIG). */
int exp_run_all(const exp_config *c, const char *out_dir, const char *exe, int dry_run, FILE *plan,
                volatile sig_atomic_t *stop, mr_error *e);

/* results.tsv, results.md and the sweep figures of a finished experiment folder. */
int exp_report(const exp_config *c, const char *out_dir, mr_error *e);

/* curves.svg of a training run folder: training loss and the validation metric
 * against the iteration, best point marked; reads train.jsonl (retriever) or
 * train_log.tsv (ranker). */
int exp_write_curves(const char *run_dir, mr_error *e);

/* Mean and sample standard deviation (n - 1); sd is NAN when n < 2. */
void exp_mean_sd(const double *x, int n, double *mean, double *sd);

#endif
