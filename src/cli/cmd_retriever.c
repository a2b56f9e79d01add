/* mllm4rec retriever train | eval | candidates: the LRURec retriever. */
#include <omp.h>
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mllm4rec/dist.h"
#include "mllm4rec/retriever.h"

static int check_range(const char *cmd, const char *flag, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi) return cli_usage_error(cmd, "%s must be in %lld..%lld (got %lld)", flag, (long long)lo,
                                                 (long long)hi, (long long)v);
    return 0;
}

CLI_COMMAND(cmd_retriever_train) {
    const char *cmd = "retriever train";
    const char *dataset = NULL, *out = NULL;
    int64_t max_len = 0, hidden = 64, blocks = 2, batch = 0, val_every = 500, patience = 20, max_epochs = 500,
            threads = 2;
    uint64_t seed = 42;
    double dropout = 0.2, lr = 1e-3, wd = 0.01;
    int resume = 0, force = 0;
    cli_flag flags[] = {
        {"--dataset", FLAG_STR, &dataset, "prepared dataset folder (required)", 0},
        {"--out", FLAG_STR, &out, "run folder (required)", 0},
        {"--max-len", FLAG_INT, &max_len, "maximum sequence length (default 200 for MovieLens, 50 otherwise)", 0},
        {"--hidden", FLAG_INT, &hidden, "hidden size (64)", 0},
        {"--blocks", FLAG_INT, &blocks, "LRU blocks (2)", 0},
        {"--dropout", FLAG_DOUBLE, &dropout, "dropout (0.2)", 0},
        {"--batch", FLAG_INT, &batch, "batch size (default 16 for MovieLens, 64 otherwise)", 0},
        {"--lr", FLAG_DOUBLE, &lr, "AdamW learning rate (1e-3)", 0},
        {"--weight-decay", FLAG_DOUBLE, &wd, "AdamW weight decay (0.01)", 0},
        {"--val-every", FLAG_INT, &val_every, "validate every N iterations, and at least once per epoch (500)", 0},
        {"--patience", FLAG_INT, &patience, "stop after N validations without improvement (20)", 0},
        {"--max-epochs", FLAG_INT, &max_epochs, "at most N epochs (500)", 0},
        {"--seed", FLAG_U64, &seed, "random seed (42)", 0},
        {"--threads", FLAG_INT, &threads, "threads (2)", 0},
        {"--resume", FLAG_BOOL, &resume, "continue from OUT/checkpoint.safetensors (starts afresh when there is none)", 0},
        {"--force", FLAG_BOOL, &force, "start over in an OUT that holds a run (its run files are removed first)", 0},
    };
    const char *usage = "usage: mllm4rec retriever train --dataset DIR --out RUN [options]";
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]), usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!dataset || !out) return cli_usage_error(cmd, "--dataset and --out are required");
    if ((rc = check_range(cmd, "--hidden", hidden, 1, 4096)) || (rc = check_range(cmd, "--blocks", blocks, 1, 16)) ||
        (rc = check_range(cmd, "--val-every", val_every, 1, 1000000000)) ||
        (rc = check_range(cmd, "--patience", patience, 1, 1000000)) ||
        (rc = check_range(cmd, "--max-epochs", max_epochs, 1, 1000000)) ||
        (rc = check_range(cmd, "--threads", threads, 1, 1024)))
        return rc;
    if (flags[2].seen && (rc = check_range(cmd, "--max-len", max_len, 1, 100000))) return rc;
    if (flags[6].seen && (rc = check_range(cmd, "--batch", batch, 1, 1000000))) return rc;
    if (!(dropout >= 0 && dropout < 1)) return cli_usage_error(cmd, "--dropout must be in [0, 1)");
    if (!(lr > 0)) return cli_usage_error(cmd, "--lr must be positive");
    if (!(wd >= 0)) return cli_usage_error(cmd, "--weight-decay must be >= 0");
    static const char *const run_files[] = {"metrics.json", "candidates.tsv", "retriever.safetensors",
                                            "checkpoint.safetensors", NULL};
    if ((rc = cli_claim_folder(cmd, out, run_files, resume, force))) return rc;
    mr_error e = {0};
    mr_dataset d;
    rc = mr_dataset_load(&d, dataset, &e);
    if (rc) return cli_report(cmd, &e);
    lru_train_options o;
    lru_train_defaults(&o, &d);
    if (flags[2].seen) o.model.max_len = (int)max_len;
    if (flags[6].seen) o.batch = (int)batch;
    o.model.hidden = (int)hidden;
    o.model.blocks = (int)blocks;
    o.model.dropout = (float)dropout;
    o.lr = lr;
    o.weight_decay = wd;
    o.val_every = (long)val_every;
    o.patience = (int)patience;
    o.max_epochs = (int)max_epochs;
    o.seed = seed;
    o.threads = (int)threads;
    o.resume = resume;
    int interrupted = 0;
    rc = lru_train(&d, &o, out, &interrupted, &e);
    mr_dataset_free(&d);
    if (rc) return cli_report(cmd, &e);
    if (interrupted) {
        fprintf(stderr, "mllm4rec %s: interrupted; checkpoint saved in %s (continue with --resume)\n", cmd, out);
        return MR_ERR_INPUT;
    }
    printf("%s/retriever.safetensors\n%s/metrics.json\n%s/candidates.tsv\n", out, out, out);
    return 0;
}

/* Loads DIR and RUN/retriever.safetensors. */
static int load_run(const char *cmd, const char *dataset, const char *run, int64_t threads, mr_dataset *d,
                    lru_model *m, mr_error *e) {
    if (threads < 1 || threads > 1024) return cli_usage_error(cmd, "--threads must be in 1..1024");
    int rc = cli_claim_folder(cmd, run, NULL, 0, 0); /* eval and candidates rewrite files in RUN */
    if (rc) return rc;
    omp_set_num_threads((int)threads);
    openblas_set_num_threads((int)threads);
    rc = mr_dataset_load(d, dataset, e);
    if (rc) return cli_report(cmd, e);
    char *path = mr_path_join(run, "retriever.safetensors", e);
    rc = path ? lru_model_load(m, path, e) : MR_ERR_INTERNAL;
    free(path);
    if (!rc && (int64_t)m->cfg.n_items != d->n_items)
        rc = mr_fail(e, MR_ERR_INPUT, "%s/retriever.safetensors has %d items, dataset %s has %lld: not trained on it",
                     run, m->cfg.n_items, dataset, (long long)d->n_items);
    if (rc) {
        mr_dataset_free(d);
        if (m->params) lru_model_free(m);
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
    lru_model m;
    memset(&m, 0, sizeof m);
    rc = load_run(cmd, dataset, run, threads, &d, &m, &e);
    if (rc) return rc;
    char *path = mr_path_join(run, "metrics.json", &e);
    mr_metrics val, test;
    rc = path ? lru_write_metrics(&m, &d, path, &val, &test, &e) : MR_ERR_INTERNAL;
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
    lru_model_free(&m);
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
    lru_model m;
    memset(&m, 0, sizeof m);
    rc = load_run(cmd, dataset, run, threads, &d, &m, &e);
    if (rc) return rc;
    char *path = mr_path_join(run, "candidates.tsv", &e);
    rc = path ? lru_write_candidates(&m, &d, path, (int)k, &e) : MR_ERR_INTERNAL;
    if (!rc) printf("%s\n", path);
    free(path);
    lru_model_free(&m);
    mr_dataset_free(&d);
    return rc ? cli_report(cmd, &e) : 0;
}
