/* libFuzzer target: the experiment config parser (YAML through libyaml, then the
 * keys and values checked against the stages' flags) and the grid's expansion.
 * Required: MR_OK with a consistent config, or an input error whose message names
 * the file ("f.yaml:"); never a crash, leak or UB. */
#include <stdint.h>
#include "fuzz_util.h"
#include "mllm4rec/exp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mr_error e = {0};
    exp_config c;
    int rc = exp_config_parse((const char *)data, size, "f.yaml", &c, &e);
    if (getenv("FUZZ_VERBOSE")) fprintf(stderr, "config: rc %d %s\n", rc, rc ? e.msg : "");
    if (rc == MR_OK) {
        if (!c.stage[EXP_RETRIEVER].present || c.n_metrics < 1 || (c.sweep >= c.n_axes)) abort();
        long total = 1;
        for (int a = 0; a < c.n_axes; a++) {
            if (c.axes[a].n < 1) abort();
            if (total <= 100000) total *= c.axes[a].n;
        }
        exp_run *runs = NULL;
        int n = 0;
        if (total <= 1000) { /* bounded work per input */
            if (exp_expand(&c, &runs, &n, &e) != MR_OK || n != total) abort();
            for (int i = 0; i < n; i++) {
                if (!runs[i].dir || !runs[i].stage_dir[EXP_RETRIEVER]) abort();
                for (int s = 0; s < EXP_N_STAGES; s++)
                    for (const exp_flag_def *f = exp_stage_flags(s); f->name; f++) (void)exp_flag_value(&c, &runs[i], s, f->name);
            }
            (void)exp_max_candidates(&c, runs, n);
            exp_runs_free(runs, n);
        }
        exp_config_free(&c);
    } else if (rc != MR_ERR_INPUT || strncmp(e.msg, "f.yaml", 6)) {
        fprintf(stderr, "unexpected: rc %d %s\n", rc, e.msg);
        abort();
    }
    return 0;
}
