/* mllm4rec experiment run | report | curves: the paper's experiments from YAML
 * configs (docs/experiments.md). */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "mllm4rec/exp.h"

/* The positional argument (argv[1]) when it is not a flag; cli_parse takes the rest. */
static const char *positional(int argc, char **argv) {
    return argc >= 2 && strncmp(argv[1], "-", 1) ? argv[1] : NULL;
}

/* SIGINT / SIGTERM: the runner (which polls this flag) terminates the running
 * stage's process group, waits for it and stops; the run continues next time. */
static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = sig; }

CLI_COMMAND(cmd_experiment_run) {
    const char *cmd = "experiment run";
    const char *out = NULL;
    int dry = 0;
    cli_flag flags[] = {
        {"--out", FLAG_STR, &out, "experiment folder (default: build/experiments/NAME, NAME the config's)", 0},
        {"--dry-run", FLAG_BOOL, &dry, "print the commands that would run (finished stages marked) and stop", 0},
    };
    const char *usage = "usage: mllm4rec experiment run FILE.yaml [--out DIR] [--dry-run]\n"
                        "Runs every stage of every run of the grid as child processes of this program; finished\n"
                        "stages are skipped and an unfinished one continues. Writes DIR/results.tsv, results.md,\n"
                        "the sweep figures and each training run's curves.svg.";
    const char *file = positional(argc, argv);
    int rc = cli_parse(argc, argv, file ? 2 : 1, flags, (int)(sizeof flags / sizeof flags[0]), usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!file) return cli_usage_error(cmd, "the config file is required");
    mr_error e = {0};
    /* one experiment per folder: its lock before any input is read (the config
     * first only when the folder's name comes from it) */
    const int locked = out != NULL;
    if (locked && !dry && (rc = cli_claim_folder(cmd, out, NULL, 0, 0))) return rc;
    exp_config c;
    if ((rc = exp_config_load(file, &c, &e))) return cli_report(cmd, &e);
    char def_out[512];
    if (!out) {
        snprintf(def_out, sizeof def_out, "build/experiments/%s", c.name);
        out = def_out;
    }
    if (!locked && !dry && (rc = cli_claim_folder(cmd, out, NULL, 0, 0))) {
        exp_config_free(&c);
        return rc;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        exp_config_free(&c);
        mr_fail(&e, MR_ERR_INTERNAL, "cannot find this program (/proc/self/exe)");
        return cli_report(cmd, &e);
    }
    exe[n] = 0;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a signal cuts the runner's sleep short */
    sigemptyset(&sa.sa_mask);
    g_stop = 0;
    if (!dry) {
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
    }
    rc = exp_run_all(&c, out, exe, dry, stdout, &g_stop, &e);
    if (!dry) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
    }
    if (!rc && !dry) {
        printf("%s/results.tsv\n%s/results.md\n", out, out);
        if (c.sweep >= 0) printf("%s/fig-*.svg\n", out);
        fprintf(stderr, "experiment %s finished: tables and figures in %s, learning curves in %s/*/*/curves.svg\n",
                c.name, out, out);
    }
    exp_config_free(&c);
    return rc ? cli_report(cmd, &e) : 0;
}

CLI_COMMAND(cmd_experiment_report) {
    const char *cmd = "experiment report";
    const char *cfg = NULL;
    cli_flag flags[] = {
        {"--config", FLAG_STR, &cfg, "the config (default: DIR/experiment.yaml, the copy the run made)", 0},
    };
    const char *usage = "usage: mllm4rec experiment report DIR [--config FILE.yaml]\n"
                        "Rewrites DIR/results.tsv, results.md and the sweep figures from the runs' metrics.json.";
    const char *dir = positional(argc, argv);
    int rc = cli_parse(argc, argv, dir ? 2 : 1, flags, (int)(sizeof flags / sizeof flags[0]), usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!dir) return cli_usage_error(cmd, "the experiment folder is required");
    /* the report rewrites DIR's tables: not while an experiment runs there */
    if ((rc = cli_claim_folder(cmd, dir, NULL, 0, 0))) return rc;
    mr_error e = {0};
    char path[4096];
    if (!cfg) {
        snprintf(path, sizeof path, "%s/experiment.yaml", dir);
        cfg = path;
    }
    exp_config c;
    if ((rc = exp_config_load(cfg, &c, &e))) return cli_report(cmd, &e);
    rc = exp_report(&c, dir, &e);
    if (!rc) printf("%s/results.tsv\n%s/results.md\n", dir, dir);
    exp_config_free(&c);
    return rc ? cli_report(cmd, &e) : 0;
}

CLI_COMMAND(cmd_experiment_curves) {
    const char *cmd = "experiment curves";
    cli_flag flags[1] = {{"--unused-never-set", FLAG_BOOL, NULL, NULL, 0}};
    const char *usage = "usage: mllm4rec experiment curves RUN_DIR\n"
                        "Draws RUN_DIR/curves.svg from a retriever or ranker training log (train.jsonl or "
                        "train_log.tsv).";
    const char *dir = positional(argc, argv);
    int rc = cli_parse(argc, argv, dir ? 2 : 1, flags, 0, usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!dir) return cli_usage_error(cmd, "the run folder is required");
    mr_error e = {0};
    if ((rc = exp_write_curves(dir, &e))) return cli_report(cmd, &e);
    printf("%s/curves.svg\n", dir);
    return 0;
}
