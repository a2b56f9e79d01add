/* mllm4rec <command> [options]: dispatches to the command functions. Commands
 * with subcommands ("retriever train") are listed with both words. */
#include "cli.h"
#include "mllm4rec/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One line per command; each is defined in its own cmd_*.c file. */
typedef struct command {
    const char *group; /* "retriever", or NULL for a top-level command */
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

/* Each issue's commands in their own block, so that parallel work merges cleanly. */
/* -- data (prepare) -- */
CLI_COMMAND(cmd_prepare);
CLI_COMMAND(cmd_fetch);
/* -- retriever -- */
CLI_COMMAND(cmd_retriever_train);
CLI_COMMAND(cmd_retriever_eval);
CLI_COMMAND(cmd_retriever_candidates);
/* -- tokenizers -- */
CLI_COMMAND(cmd_llm_tokenize);
/* -- llm engine -- */
CLI_COMMAND(cmd_llm_info);
CLI_COMMAND(cmd_llm_generate);
CLI_COMMAND(cmd_llm_perplexity);
CLI_COMMAND(cmd_llm_logits);
CLI_COMMAND(cmd_model_random);
/* -- ranker -- */
CLI_COMMAND(cmd_ranker_prompt);
CLI_COMMAND(cmd_ranker_train);
CLI_COMMAND(cmd_ranker_eval);
/* -- captions -- */
CLI_COMMAND(cmd_caption);
/* -- recommend and serve -- */
CLI_COMMAND(cmd_recommend);
CLI_COMMAND(cmd_serve);
/* -- experiments -- */
CLI_COMMAND(cmd_experiment_run);
CLI_COMMAND(cmd_experiment_report);
CLI_COMMAND(cmd_experiment_curves);
/* -- end of declarations -- */

static const command COMMANDS[] = {
    /* -- data (prepare) -- */
    {NULL, "prepare", cmd_prepare, "raw ratings + titles -> prepared dataset folder"},
    {NULL, "fetch", cmd_fetch, "download a file (libcurl), checking its sha256"},
    /* -- retriever -- */
    {"retriever", "train", cmd_retriever_train, "train the LRURec retriever (writes RUN/retriever.safetensors, metrics, candidates)"},
    {"retriever", "eval", cmd_retriever_eval, "val and test metrics of a trained retriever (RUN/metrics.json)"},
    {"retriever", "candidates", cmd_retriever_candidates, "top-k candidates per user for val and test (RUN/candidates.tsv)"},
    /* -- tokenizers -- */
    {"llm", "tokenize", cmd_llm_tokenize, "print the token ids of a text"},
    /* -- llm engine -- */
    {"llm", "info", cmd_llm_info, "describe a model (GGUF file or Hugging Face folder)"},
    {"llm", "generate", cmd_llm_generate, "continue a prompt (greedy or sampled)"},
    {"llm", "perplexity", cmd_llm_perplexity, "perplexity of a text file (llama.cpp's definition)"},
    {"llm", "logits", cmd_llm_logits, "top-K or all logits at the last (or every) position"},
    {"model", "random", cmd_model_random, "write a GGUF model of random weights"},
    /* -- ranker -- */
    {"ranker", "prompt", cmd_ranker_prompt, "print the exact ranking prompt of a user (token count on stderr)"},
    {"ranker", "train", cmd_ranker_train, "LoRA instruction tuning of the LLM ranker (writes R/adapter.gguf)"},
    {"ranker", "eval", cmd_ranker_eval, "verbalizer ranking of the candidates; subset and overall metrics"},
    /* -- captions -- */
    {NULL, "caption", cmd_caption, "BLIP-2 captions for item images (dataset, import, or one image)"},
    /* -- recommend and serve -- */
    {NULL, "recommend", cmd_recommend, "top-k next items for a user or a history (retriever, LLM rerank with --model)"},
    {NULL, "serve", cmd_serve, "HTTP JSON API and web page over the loaded models (127.0.0.1:8080)"},
    /* -- experiments -- */
    {"experiment", "run", cmd_experiment_run, "run a YAML experiment (grid of seeds and settings; tables, figures)"},
    {"experiment", "report", cmd_experiment_report, "results.tsv, results.md and figures of an experiment folder"},
    {"experiment", "curves", cmd_experiment_curves, "curves.svg of a retriever or ranker training run"},
    /* -- end of table -- */
    {NULL, NULL, NULL, NULL},
};


/* The commands that share their work among the ranks of an mpirun / srun job
 * (docs/scale.md); any other refuses to run on more than one rank. */
static int runs_distributed(const command *c) {
    static const char *const names[] = {"ranker eval", "ranker train", "caption", "retriever eval", "retriever candidates", NULL};
    char name[64];
    snprintf(name, sizeof name, "%s%s%s", c->group ? c->group : "", c->group ? " " : "", c->name);
    for (int i = 0; names[i]; i++)
        if (!strcmp(name, names[i])) return 1;
    return 0;
}

static int dispatch(int argc, char **argv);

/* Under mpirun / srun: MPI up before anything else, results and logs from rank 0
 * only, threads shared out among the ranks of a host, and a failing rank ends the
 * whole job with its message (the others may be waiting for it in a collective). */
int main(int argc, char **argv) {
    mr_error e = {0};
    /* `retriever train` runs hundreds of short OpenMP regions per second between
     * OpenBLAS's own threads. With libgomp's default spin-wait, an idle worker spins
     * on a core that an OpenBLAS thread (or another process) needs: on this 2-core
     * machine at load 5, NARM trained at 4.5 it/s against 13.9 it/s with passive
     * waiting. libgomp reads the policy only when it loads, so the command runs itself
     * again with passive waiting unless the user chose a policy (as the benches do).
     * Not under an MPI launcher (the exec would come after the launcher's wiring). */
    if (argc >= 3 && !strcmp(argv[1], "retriever") && !strcmp(argv[2], "train") && !getenv("OMP_WAIT_POLICY") &&
        !getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK") && !getenv("PMI_RANK")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
        /* if the exec fails, train with the default policy */
    }
    if (mr_dist_init(&argc, &argv, &e)) {
        fprintf(stderr, "mllm4rec: error: %s\n", e.msg);
        return e.code;
    }
    if (mr_dist_launched()) {
        if (mr_dist_rank() != 0) {
            mr_log_quiet = 1;
            if (!freopen("/dev/null", "w", stdout)) {
                mr_dist_abort(MR_ERR_INTERNAL);
                return MR_ERR_INTERNAL;
            }
        }
        if (!getenv("OMP_NUM_THREADS")) { /* --threads still overrides */
            int t = mr_dist_default_threads(0);
            mr_set_threads(t);
        }
    }
    int rc = dispatch(argc, argv);
    /* a failing rank may leave the others waiting in a collective: end them all; an
     * end that every rank agreed on (an interruption) finalizes like a normal one */
    if (rc && mr_dist_size() > 1 && !mr_dist_exit_agreed()) {
        fprintf(stderr, "mllm4rec: rank %d of %d failed (exit %d): ending the job\n", mr_dist_rank(), mr_dist_size(),
                rc);
        mr_dist_abort(rc);
        return rc;
    }
    mr_dist_finalize();
    return rc;
}

static int dispatch(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        FILE *out = argc < 2 ? stderr : stdout;
        fprintf(out, "usage: mllm4rec <command> [options]   (mllm4rec <command> --help for details)\n\ncommands:\n");
        for (const command *c = COMMANDS; c->run; c++) {
            char name[64];
            snprintf(name, sizeof name, "%s%s%s", c->group ? c->group : "", c->group ? " " : "", c->name);
            fprintf(out, "  %-22s %s\n", name, c->summary);
        }
        return argc < 2 ? MR_ERR_USAGE : 0;
    }
    int group_seen = 0;
    for (const command *c = COMMANDS; c->run; c++) {
        if (c->group) {
            if (strcmp(c->group, argv[1])) continue;
            group_seen = 1;
            if (argc >= 3 && !strcmp(c->name, argv[2])) {
                if (mr_dist_size() > 1 && !runs_distributed(c)) break;
                return c->run(argc - 2, argv + 2);
            }
        } else if (!strcmp(c->name, argv[1])) {
            if (mr_dist_size() > 1 && !runs_distributed(c)) break;
            return c->run(argc - 1, argv + 1);
        }
    }
    if (mr_dist_size() > 1) {
        fprintf(stderr, "mllm4rec %s%s%s: runs in one process only (%d ranks here): run it without mpirun/srun or "
                        "with one rank; ranker eval, ranker train, caption, retriever eval and retriever candidates share their "
                        "work among ranks\n",
                argv[1], argc >= 3 ? " " : "", argc >= 3 ? argv[2] : "", mr_dist_size());
        return MR_ERR_USAGE;
    }
    if (group_seen) {
        fprintf(stderr, "mllm4rec %s: expected one of:", argv[1]);
        for (const command *c = COMMANDS; c->run; c++)
            if (c->group && !strcmp(c->group, argv[1])) fprintf(stderr, " %s", c->name);
        fprintf(stderr, "\n");
        return MR_ERR_USAGE;
    }
    fprintf(stderr, "mllm4rec: unknown command '%s' (see mllm4rec --help)\n", argv[1]);
    return MR_ERR_USAGE;
}
