/* Shared helpers for the command-line program: flag parsing and error printing.
 * Each command lives in its own file cmd_*.c and is listed in main.c. */
#ifndef MLLM4REC_CLI_H
#define MLLM4REC_CLI_H

#include "mllm4rec/base.h"

typedef enum { FLAG_STR, FLAG_INT, FLAG_DOUBLE, FLAG_BOOL, FLAG_U64 } cli_flag_type;

typedef struct cli_flag {
    const char *name;  /* "--input" (or "-k"); aliases as separate entries */
    cli_flag_type type;
    void *dest;        /* const char **, int64_t *, double *, int *, uint64_t * */
    const char *help;
    int seen;          /* set by cli_parse */
} cli_flag;

/* Parses argv[first..] into the flags. On --help prints usage + flag help to
 * stdout and returns -1 (the command then exits 0). On a bad flag prints the
 * problem and the usage to stderr and returns MR_ERR_USAGE. Positional
 * arguments are refused. */
int cli_parse(int argc, char **argv, int first, cli_flag *flags, int nflags, const char *usage);
/* Prints "mllm4rec <cmd>: error: <msg>" to stderr and returns the error code. */
int cli_report(const char *cmd, const mr_error *e);
/* Usage error helper: prints message + usage hint and returns MR_ERR_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) MR_PRINTF(2, 3);

/* Claims the folder a command writes, before the command reads any input: takes the
 * folder's lock for the rest of the process (mllm4rec/base.h mr_folder_lock). For a
 * training command, run_files (NULL-terminated, may be NULL) name the files of a run:
 * when the folder holds one of them, the command needs --resume (continue it) or
 * --force (start over: the listed files are removed first, so that the folder never
 * pairs old results with a new model). Returns 0 or the exit code, after printing. */
int cli_claim_folder(const char *cmd, const char *dir, const char *const *run_files, int resume, int force);

/* Commands: int cmd_x(int argc, char **argv) where argv[0] is the command name
 * (argv[0] = "prepare", or "train" for "retriever train"). */
#define CLI_COMMAND(fn) int fn(int argc, char **argv)

#endif
