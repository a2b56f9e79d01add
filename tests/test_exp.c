/* Experiments: the config parser on good and bad files (errors name the key and
 * the line), the grid's expansion and stage sharing, the aggregation (mean and
 * sample sd against hand-computed values), the result tables, learning curves,
 * and a small experiment run end to end through the CLI (skip, resume, kill). */
#include <jansson.h>
#include <sys/stat.h>

#include "mllm4rec/retriever.h"
#include "test.h"
#include "mllm4rec/exp.h"
#include "mllm4rec/yaml.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

static int parse(const char *text, exp_config *c, mr_error *e) {
    return exp_config_parse(text, strlen(text), "t.yaml", c, e);
}

static const char *GOOD =
    "# a comment\n"
    "name: t3\n"
    "dataset: data/ml\n"
    "retriever:\n"
    "  max-epochs: 3\n"
    "  hidden: 32\n"
    "ranker:\n"
    "  model: m.gguf\n"
    "  max-steps: 10\n"
    "  peft: true\n"
    "eval:\n"
    "  split: val\n"
    "grid:\n"
    "  seed: [1, 2, 3]\n"
    "  ranker.template: [llamarec, mllm4rec]\n"
    "  num-candidates: [5, 10]\n"
    "report:\n"
    "  metrics: [Recall@5, NDCG@10]\n"
    "  sweep: num-candidates\n"
    "  section: subset\n";

TEST(parses_a_good_config) {
    exp_config c;
    mr_error e = {0};
    CHECK_OK(parse(GOOD, &c, &e), &e);
    CHECK(!strcmp(c.name, "t3"));
    CHECK(!strcmp(c.dataset, "data/ml"));
    CHECK(c.stage[EXP_RETRIEVER].present && c.stage[EXP_RETRIEVER].n == 2);
    CHECK(!strcmp(c.stage[EXP_RETRIEVER].kv[1].key, "hidden") && c.stage[EXP_RETRIEVER].kv[1].line == 6);
    CHECK(c.n_axes == 3);
    CHECK(c.axes[0].is_seed && c.axes[0].stage_mask == ((1 << EXP_RETRIEVER) | (1 << EXP_RANKER)));
    /* a prompt flag of the ranker applies to its evaluation too */
    CHECK(c.axes[1].stage_mask == ((1 << EXP_RANKER) | (1 << EXP_EVAL)));
    CHECK(c.axes[2].stage_mask == ((1 << EXP_RANKER) | (1 << EXP_EVAL)));
    CHECK(c.n_metrics == 2 && !strcmp(c.metrics[1], "NDCG@10"));
    CHECK(c.sweep == 2);
    CHECK(!strcmp(c.report_section, "subset") && !strcmp(c.report_split, "test"));
    exp_config_free(&c);
}

TEST(grid_expansion_order_and_shared_stages) {
    exp_config c;
    mr_error e = {0};
    CHECK_OK(parse(GOOD, &c, &e), &e);
    exp_run *r = NULL;
    int n = 0;
    CHECK_OK(exp_expand(&c, &r, &n, &e), &e);
    CHECK(n == 12);
    /* the first axis outermost */
    CHECK(!strcmp(r[0].dir, "runs/01-seed=1,ranker.template=llamarec,num-candidates=5"));
    CHECK(!strcmp(r[1].dir, "runs/02-seed=1,ranker.template=llamarec,num-candidates=10"));
    CHECK(!strcmp(r[11].dir, "runs/12-seed=3,ranker.template=mllm4rec,num-candidates=10"));
    /* one retriever per seed, shared by the 4 ranker settings of that seed */
    for (int i = 0; i < n; i++) {
        char want[64];
        snprintf(want, sizeof want, "retriever/seed=%d", i / 4 + 1);
        CHECK(!strcmp(r[i].stage_dir[EXP_RETRIEVER], want));
        CHECK(!strcmp(r[i].stage_dir[EXP_EVAL], r[i].dir));
    }
    CHECK(!strcmp(r[5].stage_dir[EXP_RANKER], "ranker/seed=2,ranker.template=llamarec,num-candidates=10"));
    /* values: the grid's, then the block's, then eval takes the ranker's prompt flags */
    CHECK(!strcmp(exp_flag_value(&c, &r[5], EXP_EVAL, "num-candidates"), "10"));
    CHECK(!strcmp(exp_flag_value(&c, &r[5], EXP_EVAL, "model"), "m.gguf"));
    CHECK(!strcmp(exp_flag_value(&c, &r[5], EXP_EVAL, "split"), "val"));
    CHECK(!strcmp(exp_flag_value(&c, &r[5], EXP_RETRIEVER, "seed"), "2"));
    CHECK(exp_flag_value(&c, &r[5], EXP_RETRIEVER, "lr") == NULL);
    CHECK(exp_flag_value(&c, &r[5], EXP_EVAL, "seed") == NULL);
    CHECK(exp_max_candidates(&c, r, n) == 20);
    exp_runs_free(r, n);
    exp_config_free(&c);
    /* candidates beyond 20: the retriever exports as many as the largest count */
    CHECK_OK(parse("dataset: d\nretriever: {}\nranker: {model: m}\ngrid: {num-candidates: [5, 25, 15]}\n", &c, &e), &e);
    CHECK_OK(exp_expand(&c, &r, &n, &e), &e);
    CHECK(n == 3 && exp_max_candidates(&c, r, n) == 25);
    CHECK(!strcmp(r[1].stage_dir[EXP_RETRIEVER], "retriever/default"));
    exp_runs_free(r, n);
    exp_config_free(&c);
}

/* The error must start with "t.yaml:LINE:" and name the key. */
static int bad(const char *text, int line, const char *key) {
    exp_config c;
    mr_error e = {0};
    int rc = parse(text, &c, &e);
    if (rc == MR_OK) {
        exp_config_free(&c);
        printf("  accepted: %s\n", text);
        return 0;
    }
    char want[64];
    snprintf(want, sizeof want, "t.yaml:%d:", line);
    if (strncmp(e.msg, want, strlen(want)) || !strstr(e.msg, key)) {
        printf("  wanted line %d and key %s, got: %s\n", line, key, e.msg);
        return 0;
    }
    return rc == MR_ERR_INPUT;
}

TEST(bad_configs_name_the_key_and_line) {
    CHECK(bad("dataset: d\nretriever:\n  hiden: 3\n", 3, "retriever.hiden"));
    CHECK(bad("dataset: d\nretriever:\n  hidden: 3x\n", 3, "retriever.hidden"));
    CHECK(bad("dataset: d\nretriever:\n  dropout: [1]\n", 3, "retriever.dropout"));
    CHECK(bad("dataset: d\nretriever: {}\nranker:\n  model: m\n  template: fancy\n", 5, "ranker.template"));
    CHECK(bad("dataset: d\nretriever: {}\nranker:\n  model: m\n  peft: maybe\n", 5, "ranker.peft"));
    CHECK(bad("dataset: d\nretriever:\n  out: x\n", 3, "retriever.out"));
    CHECK(bad("dataset: d\nretreiver: {}\n", 2, "retreiver"));
    CHECK(bad("dataset: d\nretriever: {}\ngrid:\n  seeds: [1, 2]\n", 4, "grid.seeds"));
    CHECK(bad("dataset: d\nretriever: {}\ngrid:\n  seed: 1\n", 4, "grid.seed"));
    CHECK(bad("dataset: d\nretriever: {}\ngrid:\n  seed:\n    - 1\n    - x\n", 6, "grid.seed"));
    CHECK(bad("dataset: d\nretriever: {}\ngrid:\n  seed: [1, 1]\n", 4, "grid.seed"));
    CHECK(bad("dataset: d\nretriever: {}\ngrid:\n  num-candidates: [5]\n", 4, "grid.num-candidates"));
    CHECK(bad("dataset: d\nretriever: {}\ngrid:\n  seed: [1]\n  retriever.seed: [2]\n", 5, "grid.retriever.seed"));
    CHECK(bad("dataset: d\nretriever: {}\nreport:\n  metrics: [Recall@10, Precision@5]\n", 4, "report.metrics"));
    CHECK(bad("dataset: d\nretriever: {}\ngrid: {seed: [1]}\nreport:\n  sweep: seed\n", 5, "report.sweep"));
    CHECK(bad("dataset: d\nretriever: {}\nreport:\n  colour: red\n", 4, "report.colour"));
    CHECK(bad("dataset: d\nretriever:\n  hidden: 3\n  hidden: 4\n", 4, "hidden"));
    CHECK(bad("dataset: d\nretriever:\n  hidden: 3\n   blocks: [\n", 4, "t.yaml"));
    CHECK(bad("dataset: d\nretriever: {}\nranker:\n  max-steps: 3\n", 3, "ranker.model"));
    CHECK(bad("retriever: {}\n", 1, "dataset"));
    CHECK(bad("dataset: d\nprepare:\n  format: movielens\nretriever: {}\n", 1, "dataset"));
    CHECK(bad("prepare:\n  input: x\nretriever: {}\n", 1, "prepare.format"));
    CHECK(bad("dataset: d\nretriever:\n  hidden: &a 3\n", 3, "anchors"));
    /* captions go into the experiment's own dataset folder, from a model or imported */
    CHECK(bad("dataset: d\ncaption:\n  import: c.tsv\nretriever: {}\n", 2, "caption"));
    CHECK(bad("prepare: {format: movielens}\ncaption:\n  model: m\nretriever: {}\n", 2, "caption"));
    CHECK(bad("prepare: {format: movielens}\ncaption:\n  import: c\n  model: m\nretriever: {}\n", 2, "caption.import"));
    CHECK(bad("prepare: {format: movielens}\ncaption:\n  modle: m\nretriever: {}\n", 3, "caption.modle"));
    CHECK(bad("prepare: {format: movielens}\ncaption: {import: c}\nretriever: {}\ngrid:\n  caption.model: [a]\n", 5,
              "grid.caption.model"));
}

/* The retriever's architecture and its flags (issue 15): good values parse, bad ones
 * name the key and the line; the defaults a run's config.yaml shows are those of
 * rt_train_defaults for that architecture. */
TEST(retriever_arch_keys) {
    exp_config c;
    mr_error e = {0};
    CHECK_OK(parse("dataset: d\nretriever:\n  arch: sasrec\n  heads: 4\n  attn-dropout: 0.1\n  mask-prob: 0.3\n"
                   "  reg-weight: 0.01\ngrid:\n  retriever.dropout: [0.1, 0.2]\n",
                   &c, &e),
             &e);
    CHECK(c.stage[EXP_RETRIEVER].n == 5);
    CHECK(!strcmp(c.stage[EXP_RETRIEVER].kv[0].key, "arch") && !strcmp(c.stage[EXP_RETRIEVER].kv[0].value, "sasrec"));
    CHECK(!strcmp(c.stage[EXP_RETRIEVER].kv[4].key, "reg-weight") && c.stage[EXP_RETRIEVER].kv[4].line == 7);
    exp_config_free(&c);
    /* a grid over every trainable architecture: one run each, the flag reaching the retriever only */
    CHECK_OK(parse("dataset: d\nretriever: {}\ngrid:\n  arch: [lru, sasrec, bert4rec, gru4rec, narm]\n", &c, &e), &e);
    CHECK(c.n_axes == 1 && c.axes[0].n == 5 && c.axes[0].stage_mask == 1 << EXP_RETRIEVER);
    exp_run *r = NULL;
    int n = 0;
    CHECK_OK(exp_expand(&c, &r, &n, &e), &e);
    CHECK(n == 5);
    CHECK(!strcmp(exp_flag_value(&c, &r[3], EXP_RETRIEVER, "arch"), "gru4rec"));
    exp_runs_free(r, n);
    exp_config_free(&c);
    /* bad values: the key and the line */
    CHECK(bad("dataset: d\nretriever:\n  arch: transformerxl\n", 3, "retriever.arch"));
    CHECK(bad("dataset: d\nretriever:\n  arch: \"\"\n", 3, "retriever.arch"));
    CHECK(bad("dataset: d\nretriever:\n  hidden: 8\n  heads: two\n", 4, "retriever.heads"));
    CHECK(bad("dataset: d\nretriever:\n  heads: -1\n", 3, "retriever.heads"));
    CHECK(bad("dataset: d\nretriever:\n  attn-dropout: 0.1x\n", 3, "retriever.attn-dropout"));
    CHECK(bad("dataset: d\nretriever:\n  mask-prob: nan\n", 3, "retriever.mask-prob"));
    CHECK(bad("dataset: d\nretriever:\n  reg-weight: [1, 2]\n", 3, "retriever.reg-weight"));
    CHECK(bad("dataset: d\nretriever:\n  arch:\n", 3, "retriever.arch"));
    CHECK(bad("dataset: d\nretriever: {}\ngrid:\n  arch:\n    - lru\n    - lstm\n", 6, "grid.arch"));
    CHECK(bad("dataset: d\nretriever: {}\ngrid:\n  retriever.mask-prob: [0.2, high]\n", 4, "grid.retriever.mask-prob"));
    /* the message lists what the build has */
    CHECK(parse("dataset: d\nretriever:\n  arch: lstm\n", &c, &e) == MR_ERR_INPUT);
    CHECK_MSG(strstr(e.msg, "gru4rec") && strstr(e.msg, "'lstm'"), "%s", e.msg);
    /* defaults: rt_train_defaults' for each architecture, flag by flag */
    static const char *const archs[] = {"lru", "sasrec", "bert4rec", "gru4rec", "narm"};
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
        rt_train_options o;
        CHECK_OK(rt_train_defaults(&o, NULL, archs[i], &e), &e);
        char buf[64], want[64];
        CHECK(exp_retriever_default(archs[i], NULL, "arch", buf, sizeof buf) && !strcmp(buf, archs[i]));
        snprintf(want, sizeof want, "%d", o.model.blocks);
        CHECK(exp_retriever_default(archs[i], NULL, "blocks", buf, sizeof buf) && !strcmp(buf, want));
        snprintf(want, sizeof want, "%d", o.model.heads);
        CHECK(exp_retriever_default(archs[i], NULL, "heads", buf, sizeof buf) && !strcmp(buf, want));
        snprintf(want, sizeof want, "%g", (double)o.model.attn_dropout);
        CHECK(exp_retriever_default(archs[i], NULL, "attn-dropout", buf, sizeof buf) && !strcmp(buf, want));
        snprintf(want, sizeof want, "%g", (double)o.model.mask_prob);
        CHECK(exp_retriever_default(archs[i], NULL, "mask-prob", buf, sizeof buf) && !strcmp(buf, want));
        snprintf(want, sizeof want, "%g", o.weight_decay);
        CHECK(exp_retriever_default(archs[i], NULL, "weight-decay", buf, sizeof buf) && !strcmp(buf, want));
        /* without a dataset, max-len and batch have no default */
        CHECK(!exp_retriever_default(archs[i], NULL, "max-len", buf, sizeof buf));
        CHECK(!exp_retriever_default(archs[i], NULL, "batch", buf, sizeof buf));
    }
    char buf[64];
    CHECK(!exp_retriever_default("lstm", NULL, "hidden", buf, sizeof buf));
    /* the architectures differ where their authors' code does */
    CHECK(exp_retriever_default("gru4rec", NULL, "blocks", buf, sizeof buf) && !strcmp(buf, "1"));
    CHECK(exp_retriever_default("sasrec", NULL, "heads", buf, sizeof buf) && !strcmp(buf, "2"));
}

TEST(yaml_scalars_round_trip) {
    const char *vals[] = {"plain", "with space", "", "true", "a: b", "#x", "- y", "q\"uote", "back\\slash",
                          "tab\there", "-5", "../shared/x.gguf", "x #y", "null"};
    const char *path = test_tmp_path("s.yaml");
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        fprintf(f, "k%zu: ", i);
        mr_yaml_write_scalar(f, vals[i]);
        fprintf(f, "\n");
    }
    fclose(f);
    mr_yaml_node *root = NULL;
    mr_error e = {0};
    CHECK_OK(mr_yaml_load(path, &root, &e), &e);
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%zu", i);
        int line = 0;
        const mr_yaml_node *n = mr_yaml_get(root, k, &line);
        CHECK(n && n->type == MR_YAML_SCALAR && (int)i + 1 == line);
        CHECK_MSG(!strcmp(n->value, vals[i]), "'%s' came back as '%s'", vals[i], n->value);
        /* the special words must come back quoted, not as booleans or null */
        if (!strcmp(vals[i], "true") || !strcmp(vals[i], "null") || !vals[i][0]) CHECK(n->quoted);
    }
    mr_yaml_free(root);
}

TEST(mean_and_sample_sd) {
    /* deviations -0.01, 0.01, 0, 0.02, -0.02: squares sum to 0.001; / (5 - 1) = 0.00025 */
    const double x[] = {0.10, 0.12, 0.11, 0.13, 0.09};
    double m, sd;
    exp_mean_sd(x, 5, &m, &sd);
    CHECK_NEAR(m, 0.11, 1e-12);
    CHECK_NEAR(sd, sqrt(0.00025), 1e-12);
    const double y[] = {2, 4};
    exp_mean_sd(y, 2, &m, &sd); /* sqrt(((-1)^2 + 1^2) / 1) */
    CHECK_NEAR(m, 3, 1e-12);
    CHECK_NEAR(sd, sqrt(2.0), 1e-12);
    exp_mean_sd(y, 1, &m, &sd);
    CHECK_NEAR(m, 2, 1e-12);
    CHECK(isnan(sd));
}

static void write_metrics(const char *dir, double r10, double n10) {
    char path[4096], text[512];
    snprintf(path, sizeof path, "%s/metrics.json", dir);
    snprintf(text, sizeof text,
             "{\"val\": {\"Recall@10\": 0.5, \"NDCG@10\": 0.25}, \"test\": {\"Recall@10\": %.17g, \"NDCG@10\": %.17g}}\n",
             r10, n10);
    test_write_file(path, text, strlen(text));
}

TEST(results_tables_from_metrics) {
    const char *cfg = "name: agg\ndataset: d\nretriever: {}\ngrid:\n  hidden: [8, 16]\n  seed: [1, 2, 3]\n"
                      "report:\n  metrics: [Recall@10, NDCG@10]\n  sweep: hidden\n";
    exp_config c;
    mr_error e = {0};
    CHECK_OK(parse(cfg, &c, &e), &e);
    exp_run *r = NULL;
    int n = 0;
    CHECK_OK(exp_expand(&c, &r, &n, &e), &e);
    CHECK(n == 6);
    const char *out = test_tmp_path("agg");
    const double r10[] = {0.10, 0.12, 0.14, 0.20, 0.21, 0.25}, n10[] = {0.05, 0.05, 0.05, 0.1, 0.3, 0.2};
    for (int i = 0; i < n; i++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", out, r[i].dir);
        CHECK_OK(mr_mkdir_p(dir, &e), &e);
        write_metrics(dir, r10[i], n10[i]);
    }
    CHECK_OK(exp_report(&c, out, &e), &e);
    char path[1024], *t = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/results.tsv", out);
    CHECK_OK(mr_read_file(path, &t, &len, &e), &e);
    const char *want_tsv = "run\thidden\tseed\tval/Recall@10\tval/NDCG@10\ttest/Recall@10\ttest/NDCG@10\n"
                           "1\t8\t1\t0.5\t0.25\t0.1\t0.05\n"
                           "2\t8\t2\t0.5\t0.25\t0.12\t0.05\n"
                           "3\t8\t3\t0.5\t0.25\t0.14\t0.05\n"
                           "4\t16\t1\t0.5\t0.25\t0.2\t0.1\n"
                           "5\t16\t2\t0.5\t0.25\t0.21\t0.3\n"
                           "6\t16\t3\t0.5\t0.25\t0.25\t0.2\n";
    CHECK_MSG(!strcmp(t, want_tsv), "results.tsv:\n%s", t);
    free(t);
    snprintf(path, sizeof path, "%s/results.md", out);
    CHECK_OK(mr_read_file(path, &t, &len, &e), &e);
    /* hidden 8: Recall@10 0.12 ± 0.02; hidden 16: mean 0.22, deviations -0.02, -0.01, 0.03:
     * sd = sqrt(0.0014 / 2) = 0.026458; NDCG@10 0.05 ± 0 and 0.2 ± 0.1 */
    CHECK_MSG(strstr(t, "| metric | hidden=8 | hidden=16 |") != NULL, "%s", t);
    CHECK_MSG(strstr(t, "| Recall@10 | 0.1200 ± 0.0200 (n = 3) | 0.2200 ± 0.0265 (n = 3) |") != NULL, "%s", t);
    CHECK_MSG(strstr(t, "| NDCG@10 | 0.0500 ± 0.0000 (n = 3) | 0.2000 ± 0.1000 (n = 3) |") != NULL, "%s", t);
    free(t);
    /* the sweep: one figure per metric kind, a point per hidden size, error bars = sd */
    snprintf(path, sizeof path, "%s/fig-Recall.svg", out);
    CHECK_OK(mr_read_file(path, &t, &len, &e), &e);
    CHECK(strstr(t, "Recall@10") != NULL && strstr(t, "class=\"err\"") != NULL);
    int pts = 0;
    for (const char *p = t; (p = strstr(p, "class=\"pt\"")); p++) pts++;
    CHECK(pts == 2);
    free(t);
    snprintf(path, sizeof path, "%s/fig-NDCG.svg", out);
    CHECK(mr_file_exists(path));
    snprintf(path, sizeof path, "%s/fig-MRR.svg", out);
    CHECK(!mr_file_exists(path));
    exp_runs_free(r, n);
    exp_config_free(&c);
}

TEST(curves_from_a_retriever_log) {
    const char *dir = test_tmp_path("run");
    mr_error e = {0};
    CHECK_OK(mr_mkdir_p(dir, &e), &e);
    const char *log = "{\"iter\": 0, \"train_loss\": null, \"val\": {\"Recall@10\": 0.01}}\n"
                      "{\"iter\": 100, \"train_loss\": 8.0, \"val\": {\"Recall@10\": 0.05}}\n"
                      "{\"iter\": 200, \"train_loss\": 7.0, \"val\": {\"Recall@10\": 0.09}}\n"
                      "{\"iter\": 300, \"train_loss\": 6.5, \"val\": {\"Recall@10\": 0.08}}\n"
                      "{\"final\": true, \"iter\": 300, \"val\": {\"Recall@10\": 0.09}}\n";
    char path[1024];
    snprintf(path, sizeof path, "%s/train.jsonl", dir);
    test_write_file(path, log, strlen(log));
    CHECK_OK(exp_write_curves(dir, &e), &e);
    snprintf(path, sizeof path, "%s/curves.svg", dir);
    char *t = NULL;
    size_t len;
    CHECK_OK(mr_read_file(path, &t, &len, &e), &e);
    int pts = 0;
    for (const char *p = t; (p = strstr(p, "class=\"pt\"")); p++) pts++;
    CHECK(pts == 3 + 4); /* 3 losses (iteration 0 has none), 4 validations */
    CHECK(strstr(t, "validation Recall@10 (best 0.0900 at iteration 200)") != NULL);
    /* the marked point: x = 200 on a 0..300 axis (step 50): 80 + 200/300 * 690 */
    const char *b = strstr(t, "class=\"best\"");
    CHECK(b != NULL);
    double bx;
    CHECK(sscanf(b, "class=\"best\" cx=\"%lf\"", &bx) == 1);
    CHECK_NEAR(bx, 80 + 200.0 / 300 * 690, 0.01);
    free(t);
    /* the ranker's TSV log works too */
    const char *dir2 = test_tmp_path("rk");
    CHECK_OK(mr_mkdir_p(dir2, &e), &e);
    const char *tsv = "step\tlr\ttrain_loss\tgrad_norm\tval_ndcg10\tval_letter_loss\tseconds\n"
                      "0\t0\t\t\t0.1\t3.0\t0\n10\t1e-3\t2.5\t1.0\t0.2\t2.9\t1.0\n20\t1e-3\t2.0\t1.0\t0.15\t2.8\t2.0\n";
    snprintf(path, sizeof path, "%s/train_log.tsv", dir2);
    test_write_file(path, tsv, strlen(tsv));
    CHECK_OK(exp_write_curves(dir2, &e), &e);
    snprintf(path, sizeof path, "%s/curves.svg", dir2);
    CHECK_OK(mr_read_file(path, &t, &len, &e), &e);
    CHECK(strstr(t, "validation NDCG@10 (best 0.2000 at iteration 10)") != NULL);
    free(t);
    CHECK(exp_write_curves(test_tmp_path("nothing"), &e) == MR_ERR_INPUT);
}

/* ---- end to end through the CLI, on a tiny synthetic dataset ---- */

static const char *tiny_dataset(void) {
    static char dir[1024];
    if (dir[0]) return dir;
    const char *seq = test_tmp_path("seq.txt"), *titles = test_tmp_path("titles.tsv");
    FILE *f = fopen(seq, "w"), *g = fopen(titles, "w");
    if (!f || !g) return NULL;
    fprintf(g, "item_id\ttitle\n");
    for (int i = 1; i <= 40; i++) fprintf(g, "%d\tItem %d\n", i, i);
    for (int u = 1; u <= 60; u++) {
        fprintf(f, "%d", u);
        for (int k = 0; k < 12; k++) fprintf(f, " %d", (u * 7 + k * (u % 5 + 1)) % 40 + 1);
        fprintf(f, "\n");
    }
    fclose(f);
    fclose(g);
    snprintf(dir, sizeof dir, "%s", test_tmp_path("tiny"));
    if (test_cli(NULL, 0, "prepare --format sequences --sequences %s --titles %s --name tiny --out %s 2>/dev/null",
                 seq, titles, dir))
        dir[0] = 0;
    return dir[0] ? dir : NULL;
}

static char *slurp(const char *path) {
    char *t = NULL;
    size_t len;
    mr_error e = {0};
    return mr_read_file(path, &t, &len, &e) ? NULL : t;
}

TEST(experiment_runs_skips_and_reports) {
    const char *ds = tiny_dataset();
    CHECK_MSG(ds != NULL, "could not prepare the tiny dataset");
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "name: tiny\ndataset: %s\nretriever:\n  hidden: 8\n  blocks: 1\n  max-len: 16\n  batch: 8\n"
             "  max-epochs: 2\n  val-every: 3\n  threads: 1\ngrid:\n  seed: [1, 2]\n  dropout: [0.1, 0.2]\n"
             "report:\n  metrics: [Recall@10, NDCG@10]\n", ds);
    const char *cfg_path = test_tmp_path("tiny.yaml"), *out = test_tmp_path("tiny-exp");
    test_write_file(cfg_path, cfg, strlen(cfg));
    char plan[8192];
    CHECK(test_cli(plan, sizeof plan, "experiment run %s --out %s --dry-run", cfg_path, out) == 0);
    CHECK_MSG(strstr(plan, "retriever train --dataset") && strstr(plan, "--seed 2") && strstr(plan, "--dropout 0.1"),
              "%s", plan);
    CHECK(!mr_is_dir(out));
    CHECK(test_cli(NULL, 0, "experiment run %s --out %s 2>/dev/null", cfg_path, out) == 0);
    char path[1024];
    for (int s = 1; s <= 2; s++)
        for (int d = 1; d <= 2; d++) {
            snprintf(path, sizeof path, "%s/retriever/seed=%d,dropout=0.%d/curves.svg", out, s, d);
            CHECK_MSG(mr_file_exists(path), "%s missing", path);
        }
    snprintf(path, sizeof path, "%s/runs/04-seed=2,dropout=0.2/config.yaml", out);
    char *conf = slurp(path);
    CHECK(conf != NULL);
    /* every flag, defaults included */
    CHECK_MSG(strstr(conf, "  seed: 2\n") && strstr(conf, "  dropout: 0.2\n") &&
                  strstr(conf, "  lr: 0.001  # default\n") && strstr(conf, "  max-len: 16\n") &&
                  strstr(conf, "  patience: 20  # default\n"),
              "%s", conf);
    free(conf);
    snprintf(path, sizeof path, "%s/results.tsv", out);
    char *tsv1 = slurp(path);
    CHECK(tsv1 != NULL);
    CHECK(!strncmp(tsv1, "run\tseed\tdropout\tval/Recall@1\t", 30));
    int lines = 0;
    for (const char *p = tsv1; *p; p++) lines += *p == '\n';
    CHECK(lines == 5);
    snprintf(path, sizeof path, "%s/results.md", out);
    char *md = slurp(path);
    CHECK(md && strstr(md, "| metric | dropout=0.1 | dropout=0.2 |") && strstr(md, "(n = 2) |"));
    free(md);
    /* a second run skips every stage: no new command in the logs */
    snprintf(path, sizeof path, "%s/retriever/seed=1,dropout=0.1.log", out);
    char *log1 = slurp(path);
    CHECK(test_cli(plan, sizeof plan, "experiment run %s --out %s --dry-run", cfg_path, out) == 0);
    CHECK_MSG(!strstr(plan, "retriever train --dataset") && strstr(plan, "finished, skipped"), "%s", plan);
    CHECK(test_cli(NULL, 0, "experiment run %s --out %s 2>/dev/null", cfg_path, out) == 0);
    char *log2 = slurp(path);
    CHECK(log1 && log2 && !strcmp(log1, log2));
    free(log1);
    free(log2);
    /* `experiment report` rewrites the same table */
    CHECK(test_cli(NULL, 0, "experiment report %s", out) == 0);
    snprintf(path, sizeof path, "%s/results.tsv", out);
    char *tsv2 = slurp(path);
    CHECK(tsv2 && !strcmp(tsv1, tsv2));
    free(tsv2);
    /* a changed config under the same folder is refused, naming the stage */
    snprintf(cfg, sizeof cfg,
             "name: tiny\ndataset: %s\nretriever:\n  hidden: 8\n  blocks: 1\n  max-len: 16\n  batch: 8\n"
             "  max-epochs: 3\n  val-every: 3\n  threads: 1\ngrid:\n  seed: [1, 2]\n  dropout: [0.1, 0.2]\n", ds);
    test_write_file(cfg_path, cfg, strlen(cfg));
    CHECK(test_cli(NULL, 0, "experiment run %s --out %s 2>/dev/null", cfg_path, out) == 1);
    /* a run killed with SIGKILL in the middle, run again: the same results.tsv */
    snprintf(cfg, sizeof cfg,
             "name: tiny\ndataset: %s\nretriever:\n  hidden: 8\n  blocks: 1\n  max-len: 16\n  batch: 8\n"
             "  max-epochs: 2\n  val-every: 3\n  threads: 1\ngrid:\n  seed: [1, 2]\n  dropout: [0.1, 0.2]\n"
             "report:\n  metrics: [Recall@10, NDCG@10]\n", ds);
    test_write_file(cfg_path, cfg, strlen(cfg));
    const char *out2 = test_tmp_path("tiny-killed");
    const char *bin = getenv("MLLM4REC_BIN") ? getenv("MLLM4REC_BIN") : "build/mllm4rec";
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", 1);
        if (fd >= 0) dup2(fd, 2);
        execl(bin, bin, "experiment", "run", cfg_path, "--out", out2, (char *)NULL);
        _exit(127);
    }
    /* wait until the third retriever is past its third validation (or done), then kill the runner.
     * (Not earlier: on main, a checkpoint of the iteration-0 validation holds an uninitialised
     * epoch order that --resume refuses; src/retriever/train.c allocates t.perm uncleared.) */
    char done3[1024], log3[1024];
    snprintf(done3, sizeof done3, "%s/retriever/seed=2,dropout=0.1.done", out2);
    snprintf(log3, sizeof log3, "%s/retriever/seed=2,dropout=0.1/train.jsonl", out2);
    for (int i = 0; i < 12000 && !mr_file_exists(done3); i++) {
        char *l = slurp(log3);
        int n = 0;
        for (const char *p = l; p && *p; p++) n += *p == '\n';
        free(l);
        if (n >= 3) break;
        usleep(5000);
    }
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st));
    snprintf(path, sizeof path, "%s/results.tsv", out2);
    CHECK_MSG(!mr_file_exists(path), "the experiment had finished before the kill");
    usleep(200000);
    /* the stage it was running died with it: no process still writes into out2 */
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "pgrep -f -- '[-]-out %s/' > /dev/null", out2);
    CHECK_MSG(system(cmd) != 0, "a stage of the killed experiment is still running");
    CHECK(test_cli(NULL, 0, "experiment run %s --out %s 2>/dev/null", cfg_path, out2) == 0);
    snprintf(path, sizeof path, "%s/results.tsv", out2);
    char *tsv3 = slurp(path);
    CHECK_MSG(tsv3 && !strcmp(tsv1, tsv3), "after the kill:\n%s\nuninterrupted:\n%s", tsv3, tsv1);
    free(tsv3);
    /* SIGINT in the middle (the CLI's handler sets the flag the runner polls): the
     * running stage is terminated and checkpoints, the runner exits 1 saying so,
     * nothing keeps running, and a second run finishes with the same results */
    const char *out3 = test_tmp_path("tiny-sigint"), *err3 = test_tmp_path("tiny-sigint.err");
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fd = open(err3, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 2);
        execl(bin, bin, "experiment", "run", cfg_path, "--out", out3, (char *)NULL);
        _exit(127);
    }
    snprintf(done3, sizeof done3, "%s/retriever/seed=1,dropout=0.2.done", out3);
    snprintf(log3, sizeof log3, "%s/retriever/seed=1,dropout=0.2/train.jsonl", out3);
    for (int i = 0; i < 12000 && !mr_file_exists(done3); i++) {
        char *l = slurp(log3);
        int n = 0;
        for (const char *p = l; p && *p; p++) n += *p == '\n';
        free(l);
        if (n >= 3) break;
        usleep(5000);
    }
    kill(pid, SIGINT);
    waitpid(pid, &st, 0);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 1, "experiment run after SIGINT: status %d", st);
    char *msg = slurp(err3);
    CHECK_MSG(msg && strstr(msg, "interrupted (signal 2)"), "stderr: %s", msg ? msg : "(none)");
    free(msg);
    snprintf(path, sizeof path, "%s/results.tsv", out3);
    CHECK_MSG(!mr_file_exists(path), "the experiment had finished before SIGINT");
    snprintf(cmd, sizeof cmd, "pgrep -f -- '[-]-out %s/' > /dev/null", out3);
    CHECK_MSG(system(cmd) != 0, "a stage of the interrupted experiment is still running");
    CHECK(test_cli(NULL, 0, "experiment run %s --out %s 2>/dev/null", cfg_path, out3) == 0);
    char *tsv4 = slurp(path);
    CHECK_MSG(tsv4 && !strcmp(tsv1, tsv4), "after SIGINT:\n%s\nuninterrupted:\n%s", tsv4, tsv1);
    free(tsv4);
    free(tsv1);
}

/* ---- the ranker's overall metrics and --captions (issue 14) ----
 * A dataset of 4 users and 12 items with captions, the MovieLens role, and
 * hand-made candidates: the test label is the retriever's 1st, 3rd, 5th candidate
 * or missing (users 1..4). */
/* A grid over architectures runs: each run's config.yaml shows its architecture's
 * own defaults, and each retriever run is that architecture. */
TEST(experiment_grid_over_architectures) {
    const char *ds = tiny_dataset();
    CHECK_MSG(ds != NULL, "could not prepare the tiny dataset");
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "name: archs\ndataset: %s\nretriever:\n  hidden: 8\n  max-len: 16\n  batch: 8\n"
             "  max-epochs: 1\n  val-every: 5\n  threads: 1\ngrid:\n  arch: [lru, gru4rec]\n"
             "report:\n  metrics: [Recall@10]\n", ds);
    const char *cfg_path = test_tmp_path("archs.yaml"), *out = test_tmp_path("archs-exp");
    test_write_file(cfg_path, cfg, strlen(cfg));
    char plan[8192];
    CHECK(test_cli(plan, sizeof plan, "experiment run %s --out %s --dry-run", cfg_path, out) == 0);
    CHECK_MSG(strstr(plan, "--arch lru") && strstr(plan, "--arch gru4rec"), "%s", plan);
    CHECK(test_cli(NULL, 0, "experiment run %s --out %s 2>/dev/null", cfg_path, out) == 0);
    static const char *const archs[] = {"lru", "gru4rec"};
    for (int i = 0; i < 2; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/runs/%02d-arch=%s/config.yaml", out, i + 1, archs[i]);
        char *conf = slurp(path);
        CHECK_MSG(conf != NULL, "%s missing", path);
        char want[64], line[128];
        snprintf(line, sizeof line, "  arch: %s\n", archs[i]);
        CHECK_MSG(strstr(conf, line), "%s", conf);
        CHECK_MSG(exp_retriever_default(archs[i], NULL, "blocks", want, sizeof want), "no default");
        snprintf(line, sizeof line, "  blocks: %s  # default\n", want);
        CHECK_MSG(strstr(conf, line), "wanted '%s' in %s", line, conf);
        CHECK_MSG(strstr(conf, "  heads: 0  # default\n") && strstr(conf, "  hidden: 8\n"), "%s", conf);
        free(conf);
        /* the run's weights are that architecture (the file's metadata) */
        snprintf(path, sizeof path, "%s/retriever/arch=%s/retriever.safetensors", out, archs[i]);
        rt_model m;
        mr_error e = {0};
        CHECK_OK(rt_model_load(&m, path, &e), &e);
        CHECK_MSG(!strcmp(m.arch->name, archs[i]), "%s holds %s", path, m.arch->name);
        rt_model_free(&m);
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/results.tsv", out);
    char *tsv = slurp(path);
    CHECK(tsv && strstr(tsv, "run\tarch\t") && strstr(tsv, "\tgru4rec\t"));
    free(tsv);
}

static const char *ranker_dataset(void) {
    static char dir[1024];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s", test_tmp_path("rankds"));
    char items[4096];
    size_t n = 0;
    for (int i = 1; i <= 12; i++)
        n += (size_t)snprintf(items + n, sizeof items - n, "%d\ts%d\tMovie %d (199%d)\t\ta poster of movie %d\n", i, i,
                              i, i % 10, i);
    test_write_dataset(dir, "ml-latest-small", items,
                       "1\tu1\t1 2 3 4 5\n2\tu2\t2 3 4 5 6\n3\tu3\t3 4 5 6 7\n4\tu4\t4 5 6 7 8\n");
    test_write_text(dir, "candidates.tsv",
                    "split\tuser_id\tlabel\titems\tscores\n"
                    "val\t1\t4\t4 9 10 11 12\t5 4 3 2 1\n"
                    "val\t2\t5\t5 9 10 11 12\t5 4 3 2 1\n"
                    "val\t3\t6\t6 9 10 11 12\t5 4 3 2 1\n"
                    "val\t4\t7\t7 9 10 11 12\t5 4 3 2 1\n"
                    "test\t1\t5\t5 6 7 8 9\t5 4 3 2 1\n"
                    "test\t2\t6\t7 8 6 9 10\t5 4 3 2 1\n"
                    "test\t3\t7\t8 9 10 11 7\t5 4 3 2 1\n"
                    "test\t4\t8\t9 10 11 12 1\t5 4 3 2 1\n");
    return dir;
}

static double metric_of(json_t *root, const char *section, const char *name) {
    json_t *v = json_object_get(json_object_get(json_object_get(root, "test"), section), name);
    return json_is_number(v) ? json_number_value(v) : -1;
}

/* DESIGN 7: overall = (subset metric x subset size + the retriever's metric on the
 * other users x their count) / all users, the retriever's metric being over all items
 * (its whole candidate row), not over the --num-candidates the ranker sees. With one
 * candidate only user 1 is ranked (rank 1 whatever the model says); users 2 and 3 have
 * their label at the retriever's ranks 3 and 5, user 4 none:
 *   Recall@1 = 1/4, Recall@5 = Recall@10 = Recall@20 = 3/4,
 *   NDCG@5 = (1 + 1/log2(4) + 1/log2(6)) / 4, MRR@5 = (1 + 1/3 + 1/5) / 4.
 * (Before the fix, Recall@5 and Recall@10 were 1/4: Recall@1 over one candidate.) */
TEST(overall_metrics_count_the_retriever_beyond_the_ranked_candidates) {
    const char *model = test_shared_path("reference/models/stories260K.gguf");
    if (!model) SKIP("../shared/reference/models/stories260K.gguf absent");
    const char *ds = ranker_dataset();
    char out[1024], path[1200], log[8192];
    snprintf(out, sizeof out, "%s", test_tmp_path("overall1"));
    int rc = test_cli(log, sizeof log,
                      "ranker eval --dataset %s --candidates %s/candidates.tsv --model %s --num-candidates 1 --out %s "
                      "--threads 1 2>&1", ds, ds, model, out);
    CHECK_MSG(rc == 0, "%s", log);
    snprintf(path, sizeof path, "%s/metrics.json", out);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    CHECK_MSG(root, "%s: %s", path, je.text);
    const double ndcg5 = (1 + 1 / log2(4.0) + 1 / log2(6.0)) / 4, mrr5 = (1 + 1 / 3.0 + 1 / 5.0) / 4;
    const char *sections[2] = {"overall", "retriever_overall"};
    for (int s = 0; s < 2; s++) {
        CHECK_NEAR(metric_of(root, sections[s], "Recall@1"), 0.25, 1e-9);
        CHECK_NEAR(metric_of(root, sections[s], "Recall@5"), 0.75, 1e-9);
        CHECK_NEAR(metric_of(root, sections[s], "Recall@10"), 0.75, 1e-9);
        CHECK_NEAR(metric_of(root, sections[s], "Recall@20"), 0.75, 1e-9);
        CHECK_NEAR(metric_of(root, sections[s], "NDCG@5"), ndcg5, 1e-9);
        CHECK_NEAR(metric_of(root, sections[s], "MRR@5"), mrr5, 1e-9);
        CHECK_NEAR(metric_of(root, sections[s], "MRR@10"), mrr5, 1e-9);
    }
    CHECK_NEAR(metric_of(root, "subset", "NDCG@10"), 1.0, 1e-9);
    json_decref(root);
    /* five candidates: users 1..3 ranked, user 4 missed: every Recall@k>=5 is 3/4 */
    snprintf(out, sizeof out, "%s", test_tmp_path("overall5"));
    rc = test_cli(log, sizeof log,
                  "ranker eval --dataset %s --candidates %s/candidates.tsv --model %s --num-candidates 5 --out %s "
                  "--threads 1 2>&1", ds, ds, model, out);
    CHECK_MSG(rc == 0, "%s", log);
    snprintf(path, sizeof path, "%s/metrics.json", out);
    root = json_load_file(path, 0, &je);
    CHECK_MSG(root, "%s: %s", path, je.text);
    CHECK_NEAR(metric_of(root, "overall", "Recall@5"), 0.75, 1e-9);
    CHECK_NEAR(metric_of(root, "overall", "Recall@10"), 0.75, 1e-9);
    CHECK_NEAR(metric_of(root, "retriever_overall", "NDCG@5"), ndcg5, 1e-9);
    json_decref(root);
}

/* --captions on|off in both templates (ranker prompt shows the exact text), recorded
 * by ranker train in R/prompt.json and used by ranker eval of the run unless told
 * otherwise. */
TEST(captions_on_off_in_both_templates_and_kept_by_the_run) {
    const char *model = test_shared_path("reference/models/stories260K.gguf");
    if (!model) SKIP("../shared/reference/models/stories260K.gguf absent");
    const char *ds = ranker_dataset();
    char out[16384];
    struct {
        const char *flags, *history, *cand;
    } cases[] = {
        /* mllm4rec: "{title : caption" by default and with on; "{title" with off */
        {"", "(1) {Movie 2 (1992) : a poster of movie 2 \n (2) {Movie 3", "(A) {Movie 7 (1997) : a poster of movie 7 \n"},
        {"--captions on", "(1) {Movie 2 (1992) : a poster of movie 2 \n", "(A) {Movie 7 (1997) : a poster of movie 7 \n"},
        {"--captions off", "Previously browsed: (1) {Movie 2 (1992) \n (2) {Movie 3 (1993) \n",
         "Candidate pool: (A) {Movie 7 (1997) \n (B) {Movie 8 (1998) \n"},
        /* llamarec: titles only by default and with off; "title : caption" with on */
        {"--template llamarec", "User history: (1) Movie 2 (1992) \n (2) Movie 3 (1993) \n",
         "Candidate pool: (A) Movie 7 (1997) \n (B) Movie 8 (1998) \n"},
        {"--template llamarec --captions off", "User history: (1) Movie 2 (1992) \n (2) Movie 3 (1993) \n",
         "Candidate pool: (A) Movie 7 (1997) \n"},
        {"--template llamarec --captions on", "User history: (1) Movie 2 (1992) : a poster of movie 2 \n",
         "Candidate pool: (A) Movie 7 (1997) : a poster of movie 7 \n (B) Movie 8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = test_cli(out, sizeof out,
                          "ranker prompt --dataset %s --candidates %s/candidates.tsv --model %s --user 2 --num-candidates 5 %s "
                          "2>/dev/null",
                          ds, ds, model, cases[i].flags);
        CHECK_MSG(rc == 0, "'%s': exit %d", cases[i].flags, rc);
        CHECK_MSG(strstr(out, cases[i].history) && strstr(out, cases[i].cand), "'%s':\n%s", cases[i].flags, out);
        int off = strstr(cases[i].flags, "off") || !strcmp(cases[i].flags, "--template llamarec");
        const char *input = strstr(out, "### Input:"); /* the mllm4rec instruction names "{item : vision ..." */
        CHECK_MSG(input && (!off || !strstr(input, " : ")), "'%s' (no captions) writes \" : \":\n%s", cases[i].flags,
                  out);
    }
    CHECK(test_cli(out, sizeof out, "ranker prompt --dataset %s --candidates %s/candidates.tsv --model %s --user 2 "
                                    "--captions maybe 2>&1", ds, ds, model) == 2);
    CHECK_MSG(strstr(out, "--captions must be on or off"), "%s", out);
    /* the run keeps its setting: train with off, then eval of the run without the flag */
    char run[1024], path[1200], log[8192];
    snprintf(run, sizeof run, "%s", test_tmp_path("capsrun"));
    const char *small = "--history 3 --max-title-tokens 6 --max-tokens 256 --num-candidates 5 --threads 1";
    int rc = test_cli(log, sizeof log,
                      "ranker train --dataset %s --candidates %s/candidates.tsv --model %s --out %s %s --captions off "
                      "--max-steps 1 --batch 1 --val-every 1 --warmup 0 2>&1", ds, ds, model, run, small);
    CHECK_MSG(rc == 0, "%s", log);
    snprintf(path, sizeof path, "%s/prompt.json", run);
    char *pj = slurp(path);
    CHECK_MSG(pj && strstr(pj, "\"template\": \"mllm4rec\"") && strstr(pj, "\"captions\": \"off\""), "%s",
              pj ? pj : "(no prompt.json)");
    free(pj);
    rc = test_cli(log, sizeof log, "ranker eval --dataset %s --candidates %s/candidates.tsv --model %s --adapter "
                                   "%s/adapter.gguf %s 2>&1", ds, ds, model, run, small);
    CHECK_MSG(rc == 0 && strstr(log, "prompt: template mllm4rec, captions off"), "%s", log);
    rc = test_cli(log, sizeof log, "ranker eval --dataset %s --candidates %s/candidates.tsv --model %s --adapter "
                                   "%s/adapter.gguf %s --captions on 2>&1", ds, ds, model, run, small);
    CHECK_MSG(rc == 0 && strstr(log, "prompt: template mllm4rec, captions on"), "%s", log);
    /* a resumed run keeps the setting it was started with */
    rc = test_cli(log, sizeof log,
                  "ranker train --dataset %s --candidates %s/candidates.tsv --model %s --out %s %s --captions on "
                  "--max-steps 1 --batch 1 --val-every 1 --warmup 0 --resume 2>&1", ds, ds, model, run, small);
    CHECK_MSG(rc == 2 && strstr(log, "--captions off"), "exit %d: %s", rc, log);
}

int main(void) {
    RUN(parses_a_good_config);
    RUN(grid_expansion_order_and_shared_stages);
    RUN(bad_configs_name_the_key_and_line);
    RUN(retriever_arch_keys);
    RUN(yaml_scalars_round_trip);
    RUN(mean_and_sample_sd);
    RUN(results_tables_from_metrics);
    RUN(curves_from_a_retriever_log);
    RUN(experiment_runs_skips_and_reports);
    RUN(experiment_grid_over_architectures);
    RUN(overall_metrics_count_the_retriever_beyond_the_ranked_candidates);
    RUN(captions_on_off_in_both_templates_and_kept_by_the_run);
    return test_summary();
}
