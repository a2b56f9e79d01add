/* mllm4rec prepare: raw ratings + titles -> prepared dataset folder. */
#include "cli.h"

#include <stdio.h>

#include "mllm4rec/prepare.h"

static const char *USAGE =
    "usage: mllm4rec prepare --format movielens    --input DIR                    --out OUT\n"
    "       mllm4rec prepare --format amazon2014   --ratings FILE --meta FILE     --out OUT\n"
    "       mllm4rec prepare --format amazon2014   --reviews FILE --meta FILE     --out OUT\n"
    "       mllm4rec prepare --format interactions --interactions FILE --titles FILE --out OUT\n"
    "       mllm4rec prepare --format sequences    --sequences FILE --titles FILE --out OUT\n"
    "   common: [--name NAME] [--min-uc 5] [--min-sc 5] [--min-rating 0] [--force] [--recbole]\n"
    "           [--skip-bad-lines]\n"
    "Writes OUT/items.tsv, OUT/sequences.tsv and OUT/meta.json (see docs/prepare.md);\n"
    "prints the statistics table on stdout. Any input may be gzip-compressed.";

CLI_COMMAND(cmd_prepare) {
    mr_prepare_opts o;
    mr_prepare_opts_init(&o);
    cli_flag flags[] = {
        {"--format", FLAG_STR, &o.format, "movielens, amazon2014, interactions or sequences", 0},
        {"--input", FLAG_STR, &o.input, "movielens: the folder (ml-latest-small / ml-25m, ML-100K or ML-1M layout)", 0},
        {"--ratings", FLAG_STR, &o.ratings, "amazon2014: ratings_<Cat>.csv (user,item,rating,timestamp; no header)", 0},
        {"--reviews", FLAG_STR, &o.reviews, "amazon2014: reviews_<Cat>_5.json (JSON lines)", 0},
        {"--meta", FLAG_STR, &o.meta, "amazon2014: meta_<Cat>.json (one Python dict literal per line)", 0},
        {"--interactions", FLAG_STR, &o.interactions, "interactions: TSV with user_id, item_id, timestamp columns", 0},
        {"--sequences", FLAG_STR, &o.sequences, "sequences: lines 'user item item ...' in time order", 0},
        {"--titles", FLAG_STR, &o.titles, "interactions / sequences: TSV with item_id, title [, image] columns", 0},
        {"--out", FLAG_STR, &o.out, "output folder", 0},
        {"--name", FLAG_STR, &o.name, "dataset name in meta.json (default: the input's base name)", 0},
        {"--min-uc", FLAG_INT, &o.min_uc, "keep users with at least this many interactions (5)", 0},
        {"--min-sc", FLAG_INT, &o.min_sc, "keep items with at least this many interactions (5)", 0},
        {"--min-rating", FLAG_DOUBLE, &o.min_rating, "keep ratings >= this (0 = all)", 0},
        {"--force", FLAG_BOOL, &o.force, "replace an existing output folder (only when the run succeeds)", 0},
        {"--recbole", FLAG_BOOL, &o.recbole, "also write NAME.inter and NAME.item (RecBole atomic files)", 0},
        {"--skip-bad-lines", FLAG_BOOL, &o.skip_bad_lines, "skip and count malformed lines instead of failing", 0},
    };
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]), USAGE);
    if (rc < 0) return 0;
    if (rc) return rc;
    mr_error err = {0};
    if (mr_prepare_check_opts(&o, &err)) return cli_usage_error("prepare", "%s", err.msg);
    if ((rc = cli_claim_folder("prepare", o.out, NULL, 0, 0))) return rc;
    mr_prepare_stats st;
    rc = mr_prepare(&o, &st, &err);
    if (rc == MR_ERR_USAGE) return cli_usage_error("prepare", "%s", err.msg);
    if (rc) return cli_report("prepare", &err);
    mr_prepare_print_stats(stdout, &st);
    if (st.bad_lines_skipped) printf("skipped %lld bad lines\n", (long long)st.bad_lines_skipped);
    printf("wrote %s\n", o.out);
    return 0;
}
