/* libFuzzer target: `prepare` (mr_prepare, include/mllm4rec/prepare.h) over
 * arbitrary input files of every format, written to a scratch folder.
 *
 * Input: byte 0 picks the format and options, the rest is split at 0x1E bytes
 * into the files (missing parts = missing files):
 *   bits 0-2  0 movielens ratings.csv + movies.csv     1 movielens u.data + u.item
 *             2 movielens ratings.dat + movies.dat     3 amazon2014 ratings_Beauty.csv + meta_Beauty.json
 *             4 amazon2014 reviews_Toys_5.json + meta  5 interactions i.tsv + titles.tsv
 *             6 sequences s.txt + titles.tsv           7 movielens with the parts written in turn as
 *                                                        ratings.csv movies.csv u.data u.item ratings.dat movies.dat
 *   bit 3 --skip-bad-lines   bit 4 --recbole   bit 5 min counts 2 (else 1)
 *   bit 6 --min-rating 3     bit 7 --name given (else derived from the input)
 *
 * Required: MR_OK or an input/usage error, never a crash, leak or UB; and a run
 * that succeeds wrote a folder that mr_dataset_load reads back with the counts
 * prepare reported. */
#include <stdint.h>
#include "fuzz_util.h"
#include "mllm4rec/dataset.h"
#include "mllm4rec/prepare.h"

static const char *const ML_FILES[] = {"ratings.csv", "movies.csv", "u.data", "u.item", "ratings.dat", "movies.dat"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    mr_log_quiet = 1;
    uint8_t sel = data[0];
    fuzz_part parts[6];
    int n_parts = fuzz_split(data + 1, size - 1, parts, 6);
    char in[512], out[512];
    snprintf(in, sizeof in, "%s/in", fuzz_scratch_dir());
    snprintf(out, sizeof out, "%s/out", fuzz_scratch_dir());
    fuzz_rm_tree(in);
    fuzz_rm_tree(out);
    if (mkdir(in, 0755) != 0) abort();

    mr_prepare_opts o;
    mr_prepare_opts_init(&o);
    o.out = out;
    o.skip_bad_lines = (sel >> 3) & 1;
    o.recbole = (sel >> 4) & 1;
    o.min_uc = o.min_sc = (sel & 32) ? 2 : 1;
    if (sel & 64) o.min_rating = 3;
    if (sel & 128) o.name = "fuzz";
    char p0[600], p1[600];
    const char *names[2] = {NULL, NULL};
    int fmt = sel & 7;
    switch (fmt) {
    case 0: names[0] = "ratings.csv", names[1] = "movies.csv"; o.format = "movielens"; break;
    case 1: names[0] = "u.data", names[1] = "u.item"; o.format = "movielens"; break;
    case 2: names[0] = "ratings.dat", names[1] = "movies.dat"; o.format = "movielens"; break;
    case 3: names[0] = "ratings_Beauty.csv", names[1] = "meta_Beauty.json"; o.format = "amazon2014"; break;
    case 4: names[0] = "reviews_Toys_5.json", names[1] = "meta_Toys.json"; o.format = "amazon2014"; break;
    case 5: names[0] = "i.tsv", names[1] = "titles.tsv"; o.format = "interactions"; break;
    case 6: names[0] = "s.txt", names[1] = "titles.tsv"; o.format = "sequences"; break;
    default: o.format = "movielens"; break;
    }
    if (fmt == 7) {
        for (int k = 0; k < n_parts; k++)
            if (fuzz_write(in, ML_FILES[k], parts[k].p, parts[k].n)) abort();
    } else {
        for (int k = 0; k < n_parts && k < 2; k++)
            if (fuzz_write(in, names[k], parts[k].p, parts[k].n)) abort();
    }
    snprintf(p0, sizeof p0, "%s/%s", in, names[0] ? names[0] : "");
    snprintf(p1, sizeof p1, "%s/%s", in, names[1] ? names[1] : "");
    switch (fmt) {
    case 3: o.ratings = p0, o.meta = p1; break;
    case 4: o.reviews = p0, o.meta = p1; break;
    case 5: o.interactions = p0, o.titles = p1; break;
    case 6: o.sequences = p0, o.titles = p1; break;
    default: o.input = in; break;
    }

    mr_error e = {0};
    mr_prepare_stats st;
    int rc = mr_prepare(&o, &st, &e);
    if (getenv("FUZZ_VERBOSE")) fprintf(stderr, "prepare %s: rc %d %s\n", o.format, rc, rc ? e.msg : "");
    if (rc == MR_OK) {
        mr_dataset d;
        mr_error le = {0};
        if (mr_dataset_load(&d, out, &le) != MR_OK) {
            fprintf(stderr, "prepare succeeded but its folder does not load: %s\n", le.msg);
            abort();
        }
        if (d.n_items != st.after.items || d.n_users != st.after.users || d.n_interactions != st.after.interactions) {
            fprintf(stderr, "loaded counts %lld/%lld/%lld differ from prepare's %lld/%lld/%lld\n", (long long)d.n_users,
                    (long long)d.n_items, (long long)d.n_interactions, (long long)st.after.users,
                    (long long)st.after.items, (long long)st.after.interactions);
            abort();
        }
        for (int64_t u = 1; u <= d.n_users; u++)
            for (int32_t k = 0; k < d.seq_len[u]; k++)
                if (d.seqs[u][k] < 1 || d.seqs[u][k] > d.n_items) abort();
        mr_dataset_free(&d);
    } else if (rc != MR_ERR_INPUT && rc != MR_ERR_USAGE) {
        fprintf(stderr, "prepare: unexpected error code %d: %s\n", rc, e.msg);
        abort();
    }
    return 0;
}
