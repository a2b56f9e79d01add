/* mllm4rec retriever train | eval | candidates: the retrievers (LRURec and the baselines of
 * src/retriever/arch.h); eval and candidates read the architecture from the run. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mllm4rec/exp.h"
#include "mllm4rec/dist.h"
#include "mllm4rec/retriever.h"

static int check_range(const char *cmd, const char *flag, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi) return cli_usage_error(cmd, "%s must be in %lld..%lld (got %lld)", flag, (long long)lo,
                                                 (long long)hi, (long long)v);
    return 0;
}

/* SIGINT / SIGTERM ask the trainer to checkpoint and stop: the library only reads the flag. */
static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

/* MLLM4REC_TEST_SIGNAL_AT_ITER=N:SIG raises signal SIG after iteration N: lets the tests
 * interrupt (SIGTERM) or kill (SIGKILL) a run at an exact point. A CLI hook only. */
typedef struct signal_at {
    long iter;
    int sig;
} signal_at;
static void raise_at(void *ctx, long iter) {
    const signal_at *s = ctx;
    if (s->iter > 0 && iter == s->iter) raise(s->sig);
}

CLI_COMMAND(cmd_retriever_train) {
    const char *cmd = "retriever train";
    const char *dataset = NULL, *out = NULL, *arch = "lru";
    int64_t max_len = 0, max_pred = 0, hidden = 0, blocks = 0, heads = 0, batch = 0, val_every = 500,
            patience = 20, max_epochs = 500, threads = 2;
    uint64_t seed = 42;
    double dropout = 0, attn_dropout = 0, mask_prob = 0, reg_weight = 0, lr = 0, wd = 0;
    int resume = 0, force = 0;
    cli_flag flags[] = {
        {"--dataset", FLAG_STR, &dataset, "prepared dataset folder (required)", 0},
        {"--out", FLAG_STR, &out, "run folder (required)", 0},
        {"--arch", FLAG_STR, &arch, "lru|sasrec|bert4rec|gru4rec|narm|stosa (lru); the defaults below follow it", 0},
        {"--max-len", FLAG_INT, &max_len, "maximum sequence length (default 200 for MovieLens, 50 otherwise)", 0},
        {"--hidden", FLAG_INT, &hidden, "hidden size (64)", 0},
        {"--blocks", FLAG_INT, &blocks, "LRU / transformer blocks or GRU layers (2; 1 for gru4rec, narm, stosa)", 0},
        {"--heads", FLAG_INT, &heads, "attention heads (2 for sasrec, bert4rec; 4 for stosa)", 0},
        {"--dropout", FLAG_DOUBLE, &dropout, "dropout (0.2)", 0},
        {"--attn-dropout", FLAG_DOUBLE, &attn_dropout, "attention dropout, NARM's dropout before its decoder (0.2 for sasrec, bert4rec, narm; 0 otherwise)", 0},
        {"--mask-prob", FLAG_DOUBLE, &mask_prob, "BERT4Rec's cloze masking probability (0.2)", 0},
        {"--reg-weight", FLAG_DOUBLE, &reg_weight, "STOSA's regulariser weight, pvn_weight (0.005)", 0},
        {"--max-predictions", FLAG_INT, &max_pred,
         "BERT4Rec's most masked rows per window, bert_max_predictions (40 MovieLens, 30 beauty, 25 games, else 20)", 0},
        {"--batch", FLAG_INT, &batch, "batch size (default 16 for MovieLens, 64 otherwise)", 0},
        {"--lr", FLAG_DOUBLE, &lr, "AdamW learning rate (1e-3)", 0},
        {"--weight-decay", FLAG_DOUBLE, &wd, "AdamW weight decay (0.01; 0 for stosa)", 0},
        {"--val-every", FLAG_INT, &val_every, "validate every N iterations, and at least once per epoch (500)", 0},
        {"--patience", FLAG_INT, &patience, "stop after N validations without improvement (20)", 0},
        {"--max-epochs", FLAG_INT, &max_epochs, "at most N epochs (500)", 0},
        {"--seed", FLAG_U64, &seed, "random seed (42)", 0},
        {"--threads", FLAG_INT, &threads, "threads (2)", 0},
        {"--resume", FLAG_BOOL, &resume, "continue from OUT/checkpoint.safetensors (starts afresh when there is none)", 0},
        {"--force", FLAG_BOOL, &force, "start over in an OUT that holds a run (its run files are removed first)", 0},
    };
    enum {
        F_ARCH = 2, F_MAXLEN, F_HIDDEN, F_BLOCKS, F_HEADS, F_DROPOUT, F_ATTN, F_MASK, F_REG, F_MAXPRED, F_BATCH, F_LR, F_WD
    };
    const char *usage = "usage: mllm4rec retriever train --dataset DIR --out RUN [--arch lru] [options]";
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]), usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!dataset || !out) return cli_usage_error(cmd, "--dataset and --out are required");
    mr_error e = {0};
    rt_train_options o;
    /* the architecture first (a usage error before the dataset is read); the role-dependent
     * defaults are set again below once the dataset is loaded */
    if (rt_train_defaults(&o, NULL, arch, &e)) return cli_usage_error(cmd, "%s", e.msg);
    if ((flags[F_HIDDEN].seen && (rc = check_range(cmd, "--hidden", hidden, 1, 4096))) ||
        (flags[F_BLOCKS].seen && (rc = check_range(cmd, "--blocks", blocks, 1, 16))) ||
        (flags[F_HEADS].seen && (rc = check_range(cmd, "--heads", heads, 1, 64))) ||
        (rc = check_range(cmd, "--val-every", val_every, 1, 1000000000)) ||
        (rc = check_range(cmd, "--patience", patience, 1, 1000000)) ||
        (rc = check_range(cmd, "--max-epochs", max_epochs, 1, 1000000)) ||
        (rc = check_range(cmd, "--threads", threads, 1, 1024)))
        return rc;
    if (flags[F_MAXLEN].seen && (rc = check_range(cmd, "--max-len", max_len, 1, 100000))) return rc;
    if (flags[F_MAXPRED].seen && (rc = check_range(cmd, "--max-predictions", max_pred, 1, 100000))) return rc;
    if (flags[F_BATCH].seen && (rc = check_range(cmd, "--batch", batch, 1, 1000000))) return rc;
    if (flags[F_DROPOUT].seen && !(dropout >= 0 && dropout < 1)) return cli_usage_error(cmd, "--dropout must be in [0, 1)");
    if (flags[F_ATTN].seen && !(attn_dropout >= 0 && attn_dropout < 1))
        return cli_usage_error(cmd, "--attn-dropout must be in [0, 1)");
    if (flags[F_MASK].seen && !(mask_prob > 0 && mask_prob < 1)) return cli_usage_error(cmd, "--mask-prob must be in (0, 1)");
    if (flags[F_REG].seen && !(reg_weight >= 0)) return cli_usage_error(cmd, "--reg-weight must be >= 0");
    if (flags[F_LR].seen && !(lr > 0)) return cli_usage_error(cmd, "--lr must be positive");
    if (flags[F_WD].seen && !(wd >= 0)) return cli_usage_error(cmd, "--weight-decay must be >= 0");
    static const char *const run_files[] = {"metrics.json", "candidates.tsv", "retriever.safetensors",
                                            "checkpoint.safetensors", NULL};
    if ((rc = cli_claim_folder(cmd, out, run_files, resume, force))) return rc;
    mr_dataset d;
    rc = mr_dataset_load(&d, dataset, &e);
    if (rc) return cli_report(cmd, &e);
    rt_train_defaults(&o, &d, arch, &e);
    if (flags[F_MAXLEN].seen) o.model.max_len = (int)max_len;
    if (flags[F_HIDDEN].seen) o.model.hidden = (int)hidden;
    if (flags[F_BLOCKS].seen) o.model.blocks = (int)blocks;
    if (flags[F_HEADS].seen) o.model.heads = (int)heads;
    if (flags[F_DROPOUT].seen) o.model.dropout = (float)dropout;
    if (flags[F_ATTN].seen) o.model.attn_dropout = (float)attn_dropout;
    if (flags[F_MASK].seen) o.model.mask_prob = (float)mask_prob;
    if (flags[F_REG].seen) o.model.reg_weight = (float)reg_weight;
    if (flags[F_MAXPRED].seen) o.model.max_predictions = (int)max_pred;
    if (flags[F_BATCH].seen) o.batch = (int)batch;
    if (flags[F_LR].seen) o.lr = lr;
    if (flags[F_WD].seen) o.weight_decay = wd;
    o.val_every = (long)val_every;
    o.patience = (int)patience;
    o.max_epochs = (int)max_epochs;
    o.seed = seed;
    o.threads = (int)threads;
    o.resume = resume;
    signal_at at = {0, 0};
    const char *ts = getenv("MLLM4REC_TEST_SIGNAL_AT_ITER");
    if (ts && sscanf(ts, "%ld:%d", &at.iter, &at.sig) == 2) {
        o.after_iter = raise_at;
        o.after_iter_ctx = &at;
    }
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    g_stop = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    o.stop = &g_stop;
    int interrupted = 0;
    rc = rt_train(&d, &o, out, &interrupted, &e);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    mr_dataset_free(&d);
    if (rc) return cli_report(cmd, &e);
    if (interrupted) {
        fprintf(stderr, "mllm4rec %s: interrupted; checkpoint saved in %s (continue with --resume)\n", cmd, out);
        return MR_ERR_INPUT;
    }
    /* every training run draws its learning curve (DESIGN 8) */
    if ((rc = exp_write_curves(out, &e))) return cli_report(cmd, &e);
    printf("%s/retriever.safetensors\n%s/metrics.json\n%s/candidates.tsv\n", out, out, out);
    return 0;
}

/* Loads DIR and RUN/retriever.safetensors. */
static int load_run(const char *cmd, const char *dataset, const char *run, int64_t threads, mr_dataset *d,
                    rt_model *m, mr_error *e) {
    if (threads < 1 || threads > 1024) return cli_usage_error(cmd, "--threads must be in 1..1024");
    int rc = cli_claim_folder(cmd, run, NULL, 0, 0); /* eval and candidates rewrite files in RUN */
    if (rc) return rc;
    mr_set_threads((int)threads);
    rc = mr_dataset_load(d, dataset, e);
    if (rc) return cli_report(cmd, e);
    char *path = mr_path_join(run, "retriever.safetensors", e);
    rc = path ? rt_model_load(m, path, e) : MR_ERR_INTERNAL; /* the architecture comes from the file */
    free(path);
    if (!rc && (int64_t)m->cfg.n_items != d->n_items)
        rc = mr_fail(e, MR_ERR_INPUT, "%s/retriever.safetensors has %d items, dataset %s has %lld: not trained on it",
                     run, m->cfg.n_items, dataset, (long long)d->n_items);
    if (rc) {
        mr_dataset_free(d);
        if (m->params) rt_model_free(m);
        return cli_report(cmd, e);
    }
    return 0;
}

CLI_COMMAND(cmd_retriever_eval) {
    const char *cmd = "retriever eval";
    const char *dataset = NULL, *run = NULL;
    int64_t threads = mr_dist_default_threads(2);
    cli_flag flags[] = {
        {"--dataset", FLAG_STR, &dataset, "prepared dataset folder (required)", 0},
        {"--run", FLAG_STR, &run, "run folder with retriever.safetensors (required)", 0},
        {"--threads", FLAG_INT, &threads, "threads (2; under mpirun: the host's cores shared among its ranks)", 0},
    };
    const char *usage = "usage: mllm4rec retriever eval --dataset DIR --run RUN\n"
                        "Recomputes RUN/metrics.json (val and test) and prints it.";
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]), usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!dataset || !run) return cli_usage_error(cmd, "--dataset and --run are required");
    mr_error e = {0};
    mr_dataset d;
    rt_model m;
    memset(&m, 0, sizeof m);
    rc = load_run(cmd, dataset, run, threads, &d, &m, &e);
    if (rc) return rc;
    char *path = mr_path_join(run, "metrics.json", &e);
    mr_metrics val, test;
    rc = path ? rt_write_metrics(&m, &d, path, &val, &test, &e) : MR_ERR_INTERNAL;
    if (!rc && mr_dist_rank() == 0) { /* the file and the tables from rank 0 only */
        char *text = NULL;
        size_t len;
        if (mr_read_file(path, &text, &len, &e) == 0) fputs(text, stdout);
        free(text);
        mr_metrics_print_table(stderr, "val", &val);
        mr_metrics_print_table(stderr, "test", &test);
    }
    if (!rc) {
        mr_metrics_free(&val);
        mr_metrics_free(&test);
    }
    free(path);
    rt_model_free(&m);
    mr_dataset_free(&d);
    return rc ? cli_report(cmd, &e) : 0;
}

CLI_COMMAND(cmd_retriever_candidates) {
    const char *cmd = "retriever candidates";
    const char *dataset = NULL, *run = NULL;
    int64_t k = 20, threads = mr_dist_default_threads(2);
    cli_flag flags[] = {
        {"--dataset", FLAG_STR, &dataset, "prepared dataset folder (required)", 0},
        {"--run", FLAG_STR, &run, "run folder with retriever.safetensors (required)", 0},
        {"-k", FLAG_INT, &k, "candidates per user (20)", 0},
        {"--threads", FLAG_INT, &threads, "threads (2; under mpirun: the host's cores shared among its ranks)", 0},
    };
    const char *usage = "usage: mllm4rec retriever candidates --dataset DIR --run RUN [-k 20]\n"
                        "Writes RUN/candidates.tsv: split, user_id, label, items, scores (comma-separated, best first).";
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]), usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!dataset || !run) return cli_usage_error(cmd, "--dataset and --run are required");
    if (k < 1 || k > 10000) return cli_usage_error(cmd, "-k must be in 1..10000 (got %lld)", (long long)k);
    mr_error e = {0};
    mr_dataset d;
    rt_model m;
    memset(&m, 0, sizeof m);
    rc = load_run(cmd, dataset, run, threads, &d, &m, &e);
    if (rc) return rc;
    char *path = mr_path_join(run, "candidates.tsv", &e);
    rc = path ? rt_write_candidates(&m, &d, path, (int)k, &e) : MR_ERR_INTERNAL;
    if (!rc) printf("%s\n", path);
    free(path);
    rt_model_free(&m);
    mr_dataset_free(&d);
    return rc ? cli_report(cmd, &e) : 0;
}
