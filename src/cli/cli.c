/* Flag parsing and error reporting for all commands. */
#include "cli.h"
#include "mllm4rec/dist.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void print_flags(FILE *out, const cli_flag *flags, int n) {
    for (int i = 0; i < n; i++) {
        const char *v = flags[i].type == FLAG_BOOL ? "" : " VALUE";
        fprintf(out, "  %s%s\n      %s\n", flags[i].name, v, flags[i].help ? flags[i].help : "");
    }
}

int cli_parse(int argc, char **argv, int first, cli_flag *flags, int nflags, const char *usage) {
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("%s\n\noptions:\n", usage);
            print_flags(stdout, flags, nflags);
            return -1;
        }
        const char *eq = NULL;
        size_t alen = strlen(a);
        if (!strncmp(a, "--", 2) && (eq = strchr(a, '='))) alen = (size_t)(eq - a);
        cli_flag *f = NULL;
        for (int k = 0; k < nflags; k++)
            if (strlen(flags[k].name) == alen && !strncmp(flags[k].name, a, alen)) f = &flags[k];
        if (!f) {
            fprintf(stderr, "error: unknown option '%s'\n%s\n(see --help)\n", a, usage);
            return MR_ERR_USAGE;
        }
        f->seen = 1;
        if (f->type == FLAG_BOOL) {
            if (eq) {
                fprintf(stderr, "error: option %s takes no value\n", f->name);
                return MR_ERR_USAGE;
            }
            *(int *)f->dest = 1;
            continue;
        }
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val) {
            fprintf(stderr, "error: option %s needs a value\n", f->name);
            return MR_ERR_USAGE;
        }
        int bad = 0;
        switch (f->type) {
        case FLAG_STR: *(const char **)f->dest = val; break;
        case FLAG_INT: bad = mr_parse_i64(val, (int64_t *)f->dest); break;
        case FLAG_U64: {
            int64_t v;
            bad = mr_parse_i64(val, &v) || v < 0;
            if (!bad) *(uint64_t *)f->dest = (uint64_t)v;
            break;
        }
        case FLAG_DOUBLE: bad = mr_parse_double(val, (double *)f->dest); break;
        case FLAG_BOOL: break;
        }
        if (bad) {
            fprintf(stderr, "error: option %s: '%s' is not a valid %s\n", f->name, val,
                    f->type == FLAG_DOUBLE ? "number" : "integer");
            return MR_ERR_USAGE;
        }
    }
    return 0;
}

int cli_report(const char *cmd, const mr_error *e) {
    fprintf(stderr, "mllm4rec %s: error: %s\n", cmd, e->msg[0] ? e->msg : "unknown error");
    return e->code ? e->code : MR_ERR_INTERNAL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mllm4rec %s: error: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see mllm4rec %s --help)\n", cmd);
    va_end(ap);
    return MR_ERR_USAGE;
}

int cli_claim_folder(const char *cmd, const char *dir, const char *const *run_files, int resume, int force) {
    if (resume && force) return cli_usage_error(cmd, "--resume and --force exclude each other");
    mr_error e = {0};
    /* under mpirun only rank 0 writes, so only rank 0 claims; the others read */
    if (mr_dist_rank() != 0) return 0;
    int fd;
    int rc = mr_folder_lock(dir, &fd, &e);
    if (rc) return cli_report(cmd, &e);
    /* fd stays open: the lock lasts until the process exits */
    for (int i = 0; run_files && run_files[i]; i++) {
        char *p = mr_path_join(dir, run_files[i], &e);
        if (!p) return cli_report(cmd, &e);
        int exists = mr_file_exists(p);
        if (exists && force && unlink(p) != 0) {
            mr_fail(&e, MR_ERR_INPUT, "%s: cannot remove: %s", p, strerror(errno));
            free(p);
            return cli_report(cmd, &e);
        }
        free(p);
        if (exists && !resume && !force) {
            mr_fail(&e, MR_ERR_INPUT,
                    "%s already holds a run (%s): continue it with --resume, or start over with --force", dir,
                    run_files[i]);
            return cli_report(cmd, &e);
        }
    }
    return 0;
}
