/* libFuzzer target: mr_dataset_load over an arbitrary prepared folder. The input
 * is split at 0x1E bytes into items.tsv, sequences.tsv and meta.json (a missing
 * part is a missing file). Required: MR_OK with consistent contents, or an input
 * error; never a crash, leak or UB. */
#include <stdint.h>
#include "fuzz_util.h"
#include "mllm4rec/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const NAMES[] = {"items.tsv", "sequences.tsv", "meta.json"};
    fuzz_part parts[3];
    int n_parts = fuzz_split(data, size, parts, 3);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/ds", fuzz_scratch_dir());
    fuzz_rm_tree(dir);
    if (mkdir(dir, 0755) != 0) abort();
    for (int k = 0; k < n_parts; k++)
        if (fuzz_write(dir, NAMES[k], parts[k].p, parts[k].n)) abort();
    mr_error e = {0};
    mr_dataset d;
    int rc = mr_dataset_load(&d, dir, &e);
    if (getenv("FUZZ_VERBOSE")) fprintf(stderr, "dataset: rc %d %s\n", rc, rc ? e.msg : "");
    if (rc == MR_OK) {
        int64_t total = 0;
        if (d.n_items < 0 || d.n_users < 0 || !d.name || !d.format) abort();
        for (int64_t i = 0; i <= d.n_items; i++) {
            mr_item *it = &d.items[i];
            if (!it->source_id || !it->title || !it->image || !it->caption) abort();
            if (strlen(it->title) + strlen(it->source_id) + strlen(it->image) + strlen(it->caption) > (1u << 30)) abort();
        }
        for (int64_t u = 1; u <= d.n_users; u++) {
            if (!d.user_source_ids[u] || d.seq_len[u] < 0) abort();
            for (int32_t k = 0; k < d.seq_len[u]; k++)
                if (d.seqs[u][k] < 1 || d.seqs[u][k] > d.n_items) abort();
            total += d.seq_len[u];
        }
        if (total != d.n_interactions) abort();
        (void)mr_dataset_role(&d);
        mr_dataset_free(&d);
    } else if (rc != MR_ERR_INPUT) {
        fprintf(stderr, "dataset: unexpected error code %d: %s\n", rc, e.msg);
        abort();
    }
    return 0;
}
