/* Failing writes, fsyncs and renames (src/base/io_faults.h, compiled only into the test
 * programs) at every step of every writer: the call fails with MR_ERR_INPUT naming the
 * file and the cause, and each file it writes is afterwards either its old complete
 * version (or absent when there was none) or its new complete version, never a
 * partial one; no temporary file is left behind. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/io_faults.h"
#include "mllm4rec/caption.h"
#include "mllm4rec/exp.h"
#include "mllm4rec/gguf.h"
#include "mllm4rec/prepare.h"
#include "mllm4rec/retriever.h"
#include "mllm4rec/safetensors.h"
#include "test.h"

/* A writer writes its files into dir; version 0 and 1 write different contents. */
typedef struct writer {
    const char *name;
    int (*run)(const char *dir, int version, mr_error *e);
    const char *files[6]; /* relative to dir */
    void (*setup)(const char *dir); /* inputs the writer needs, made before the old version (may be NULL) */
} writer;

/* ---- the writers ---- */

static int w_atomic_bytes(const char *dir, int version, mr_error *e) {
    char path[1024], buf[3000];
    snprintf(path, sizeof path, "%s/blob.bin", dir);
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (char)(i * 7 + version * 13);
    return mr_write_file_atomic(path, buf, sizeof buf - (size_t)version * 100, e);
}

static int w_safetensors(const char *dir, int version, mr_error *e) {
    char path[1024];
    snprintf(path, sizeof path, "%s/t.safetensors", dir);
    float a[300], b[50];
    for (int i = 0; i < 300; i++) a[i] = (float)(i + version);
    for (int i = 0; i < 50; i++) b[i] = (float)(-i - version);
    int64_t sa[2] = {30, 10}, sb[1] = {50};
    st_writer *w = st_writer_new(e);
    if (!w) return MR_ERR_INTERNAL;
    int rc = st_writer_add(w, "a", ST_F32, 2, sa, a, e);
    if (!rc) rc = st_writer_add(w, "b", ST_F32, 1, sb, b, e);
    if (!rc) rc = st_writer_write(w, path, e);
    st_writer_free(w);
    return rc;
}

static int w_gguf(const char *dir, int version, mr_error *e) {
    char path[1024];
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    float a[256];
    for (int i = 0; i < 256; i++) a[i] = (float)(i * (version + 1));
    uint64_t ne[2] = {16, 16};
    gguf_writer *w = gguf_writer_new(e);
    if (!w) return MR_ERR_INTERNAL;
    int rc = gguf_writer_set_str(w, "general.name", version ? "new" : "old", e);
    if (!rc) rc = gguf_writer_add_tensor(w, "x", GGML_TYPE_F32, 2, ne, a, e);
    if (!rc) rc = gguf_writer_write(w, path, e);
    gguf_writer_free(w);
    return rc;
}

static int w_items(const char *dir, int version, mr_error *e) {
    char path[1024];
    snprintf(path, sizeof path, "%s/items.tsv", dir);
    mr_item items[41];
    char sid[41][16], title[41][64];
    memset(items, 0, sizeof items);
    for (int i = 1; i <= 40; i++) {
        snprintf(sid[i], sizeof sid[i], "s%d", i);
        snprintf(title[i], sizeof title[i], "Item number %d, version %d", i, version);
        items[i].source_id = sid[i];
        items[i].title = title[i];
    }
    return mr_dataset_write_items_file(path, items, 40, e);
}

static int w_append(const char *dir, int version, mr_error *e) {
    char path[1024];
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    if (version == 0) return mr_write_file_atomic(path, "{\"old\": 1}\n", 11, e);
    char line[600];
    memset(line, 'x', sizeof line);
    memcpy(line, "{\"new\": \"", 9);
    memcpy(line + sizeof line - 3, "\"}\n", 3);
    return mr_append_file(path, line, sizeof line, NULL, e);
}

/* caption's cache: a header when the file is new, then rows appended one at a time
 * through mr_append_open, each flushed (src/vision/caption.c's append_row) */
static int append_rows(const char *path, int first, int n_rows, size_t row_len, mr_error *e) {
    int fresh = !mr_file_exists(path);
    FILE *f = mr_append_open(path, e);
    if (!f) return e->code;
    int rc = MR_OK;
    if (fresh && (fputs("source_id\tcaption\n", f) < 0 || fflush(f) != 0))
        rc = mr_fail(e, MR_ERR_INPUT, "%s: cannot write: %s", path, strerror(errno));
    for (int r = first; r < first + n_rows && !rc; r++) {
        char cap[1000];
        size_t n = row_len < sizeof cap - 1 ? row_len : sizeof cap - 1;
        for (size_t i = 0; i < n; i++) cap[i] = (char)('a' + (r * 7 + (int)i) % 26);
        cap[n] = 0;
        if (fprintf(f, "s%d\t%s\n", r, cap) < 0 || fflush(f) != 0)
            rc = mr_fail(e, MR_ERR_INPUT, "%s: cannot write: %s", path, strerror(errno));
    }
    if (fclose(f) != 0 && !rc) rc = mr_fail(e, MR_ERR_INPUT, "%s: cannot write: %s", path, strerror(errno));
    return rc;
}

/* A small dataset (users walking the item ids) for the retriever's writers. */
static char ds_dir[512];
static void make_dataset(void) {
    if (ds_dir[0]) return;
    snprintf(ds_dir, sizeof ds_dir, "%s", test_tmp_path("ds"));
    mkdir(ds_dir, 0755);
    char p[700], buf[20000];
    size_t n = (size_t)snprintf(buf, sizeof buf, "item_id\tsource_id\ttitle\timage\tcaption\n");
    for (int i = 1; i <= 30; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "%d\ts%d\tItem %d\t\t\n", i, i, i);
    snprintf(p, sizeof p, "%s/items.tsv", ds_dir);
    test_write_file(p, buf, n);
    n = (size_t)snprintf(buf, sizeof buf, "user_id\tsource_user_id\titems\n");
    for (int u = 1; u <= 12; u++) {
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%d\tu%d\t", u, u);
        for (int j = 0; j < 8; j++) n += (size_t)snprintf(buf + n, sizeof buf - n, j ? " %d" : "%d", (u + j) % 30 + 1);
        buf[n++] = '\n';
    }
    snprintf(p, sizeof p, "%s/sequences.tsv", ds_dir);
    test_write_file(p, buf, n);
    n = (size_t)snprintf(buf, sizeof buf,
                         "{\"format_version\": 1, \"format\": \"sequences\", \"name\": \"walk\", \"counts\": "
                         "{\"after\": {\"users\": 12, \"items\": 30, \"interactions\": 96}}}\n");
    snprintf(p, sizeof p, "%s/meta.json", ds_dir);
    test_write_file(p, buf, n);
}

static int w_retriever_files(const char *dir, int version, mr_error *e) {
    make_dataset();
    mr_dataset d;
    int rc = mr_dataset_load(&d, ds_dir, e);
    if (rc) return rc;
    rt_config c = {.arch = "lru", .n_items = (int)d.n_items, .hidden = 8, .blocks = 1, .max_len = 8, .dropout = 0.1f};
    rt_model m;
    rc = rt_model_create(&m, &c, e);
    if (rc) {
        mr_dataset_free(&d);
        return rc;
    }
    m.arch->init(&m, 5 + (uint64_t)version);
    char p[1024];
    snprintf(p, sizeof p, "%s/retriever.safetensors", dir);
    rc = rt_model_save(&m, p, e);
    mr_metrics val, test;
    snprintf(p, sizeof p, "%s/metrics.json", dir);
    if (!rc) rc = rt_write_metrics(&m, &d, p, &val, &test, e);
    if (!rc) {
        mr_metrics_free(&val);
        mr_metrics_free(&test);
    }
    snprintf(p, sizeof p, "%s/candidates.tsv", dir);
    if (!rc) rc = rt_write_candidates(&m, &d, p, 5, e);
    rt_model_free(&m);
    mr_dataset_free(&d);
    return rc;
}

/* prepare replaces a whole dataset folder: dir/out */
static int w_prepare(const char *dir, int version, mr_error *e) {
    char in[1024], ti[1024], out[1024], buf[8000];
    snprintf(in, sizeof in, "%s/in.tsv", dir);
    snprintf(ti, sizeof ti, "%s/titles.tsv", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    size_t n = (size_t)snprintf(buf, sizeof buf, "user_id\titem_id\ttimestamp\n");
    for (int u = 0; u < 10; u++)
        for (int j = 0; j < 6 + version; j++) n += (size_t)snprintf(buf + n, sizeof buf - n, "u%d\t%d\t%d\n", u, (u + j) % 9, j);
    test_write_file(in, buf, n);
    n = (size_t)snprintf(buf, sizeof buf, "item_id\ttitle\n");
    for (int i = 0; i < 9; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "%d\tTitle %d v%d\n", i, i, version);
    test_write_file(ti, buf, n);
    mr_prepare_opts o;
    mr_prepare_opts_init(&o);
    o.format = "interactions";
    o.interactions = in;
    o.titles = ti;
    o.out = out;
    o.name = "fault";
    o.min_uc = o.min_sc = 1;
    o.force = 1;
    o.recbole = 1;
    mr_prepare_stats st;
    return mr_prepare(&o, &st, e);
}

/* caption --import rewrites items.tsv and captions.tsv of a dataset: dir/cds */
static void caption_dataset(const char *dir) {
    char ds[1024], p[1100], buf[4000];
    snprintf(ds, sizeof ds, "%s/cds", dir);
    mkdir(ds, 0755);
    snprintf(p, sizeof p, "%s/meta.json", ds);
    {
        const char *meta = "{\"format_version\": 1, \"format\": \"sequences\", \"name\": \"c\", \"counts\": "
                           "{\"after\": {\"users\": 1, \"items\": 20, \"interactions\": 20}}}\n";
        test_write_file(p, meta, strlen(meta));
        size_t n = (size_t)snprintf(buf, sizeof buf, "item_id\tsource_id\ttitle\timage\tcaption\n");
        for (int i = 1; i <= 20; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "%d\ts%d\tT%d\t\t\n", i, i, i);
        snprintf(p, sizeof p, "%s/items.tsv", ds);
        test_write_file(p, buf, n);
        n = (size_t)snprintf(buf, sizeof buf, "user_id\tsource_user_id\titems\n1\tu\t");
        for (int i = 1; i <= 20; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, i > 1 ? " %d" : "%d", i);
        buf[n++] = '\n';
        snprintf(p, sizeof p, "%s/sequences.tsv", ds);
        test_write_file(p, buf, n);
    }
}

static int w_caption_import(const char *dir, int version, mr_error *e) {
    char ds[1024], buf[4000];
    snprintf(ds, sizeof ds, "%s/cds", dir);
    size_t n = (size_t)snprintf(buf, sizeof buf, "source_id\tcaption\n");
    for (int i = 1; i <= 20; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "s%d\ta poster, version %d\n", i, version);
    char tsv[1100];
    snprintf(tsv, sizeof tsv, "%s/import.tsv", dir);
    test_write_file(tsv, buf, n);
    mr_caption_stats st;
    return mr_caption_import(ds, tsv, &st, e);
}

/* experiment report: results.tsv, results.md and the sweep's figures of a folder of four
 * runs (their metrics.json written here, outside the hook; version 1 moves the numbers) */
static int w_exp_report(const char *dir, int version, mr_error *e) {
    const char *cfg = "name: f\ndataset: d\nretriever: {}\ngrid:\n  hidden: [8, 16]\n  seed: [1, 2]\n"
                      "report:\n  metrics: [Recall@10, NDCG@10]\n  sweep: hidden\n";
    exp_config c;
    int rc = exp_config_parse(cfg, strlen(cfg), "f.yaml", &c, e);
    if (rc) return rc;
    exp_run *r = NULL;
    int n = 0;
    rc = exp_expand(&c, &r, &n, e);
    for (int i = 0; i < n && !rc; i++) {
        char run[1024], p[1100], text[200];
        snprintf(run, sizeof run, "%s/%s", dir, r[i].dir);
        rc = mr_mkdir_p(run, e);
        snprintf(p, sizeof p, "%s/metrics.json", run);
        int len = snprintf(text, sizeof text, "{\"test\": {\"Recall@10\": %.2f, \"NDCG@10\": %.2f}}\n",
                           0.1 + 0.01 * i + 0.05 * version, 0.05 + 0.02 * i);
        if (!rc) test_write_file(p, text, (size_t)len);
    }
    if (!rc) rc = exp_report(&c, dir, e);
    exp_runs_free(r, n);
    exp_config_free(&c);
    return rc;
}

/* curves.svg of a training run, from its train.jsonl (written here, outside the hook).
 * The run folder is dir/exp/run: the figure's title names the last two parts of its
 * path, which must not vary with dir (or the number of write steps would). */
static int w_curves(const char *dir, int version, mr_error *e) {
    char run[1024], p[1100], log[400];
    snprintf(run, sizeof run, "%s/exp/run", dir);
    int rc = mr_mkdir_p(run, e);
    if (rc) return rc;
    snprintf(p, sizeof p, "%s/train.jsonl", run);
    int len = snprintf(log, sizeof log,
                       "{\"iter\": 0, \"train_loss\": null, \"val\": {\"Recall@10\": 0.01}}\n"
                       "{\"iter\": 100, \"train_loss\": %d.0, \"val\": {\"Recall@10\": 0.05}}\n"
                       "{\"iter\": 200, \"train_loss\": 6.0, \"val\": {\"Recall@10\": 0.0%d}}\n",
                       8 + version, 4 + 3 * version);
    test_write_file(p, log, (size_t)len);
    return exp_write_curves(run, e);
}

static const writer writers[] = {
    {"mr_write_file_atomic", w_atomic_bytes, {"blob.bin"}, NULL},
    {"safetensors", w_safetensors, {"t.safetensors"}, NULL},
    {"gguf", w_gguf, {"m.gguf"}, NULL},
    {"items.tsv", w_items, {"items.tsv"}, NULL},
    {"append (train.jsonl)", w_append, {"log.jsonl"}, NULL},
    {"retriever model, metrics, candidates", w_retriever_files,
     {"retriever.safetensors", "metrics.json", "candidates.tsv"}, NULL},
    {"prepare", w_prepare,
     {"out/items.tsv", "out/sequences.tsv", "out/meta.json", "out/fault.inter", "out/fault.item"}, NULL},
    {"caption --import", w_caption_import, {"cds/items.tsv", "cds/captions.tsv"}, caption_dataset},
    {"experiment report", w_exp_report, {"results.tsv", "results.md", "fig-Recall.svg", "fig-NDCG.svg"}, NULL},
    {"curves.svg", w_curves, {"exp/run/curves.svg"}, NULL},
};

/* ---- the harness ---- */

static char *read_or_null(const char *path, size_t *len) {
    char *x = NULL;
    mr_error e;
    if (!mr_file_exists(path) || mr_read_file(path, &x, len, &e)) return NULL;
    return x;
}

/* A name that a writer uses for work in progress: "<name>.tmp.<pid>" (files and prepare's folders). */
static int tmp_left(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *de;
    int found = 0;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".tmp.") || strstr(de->d_name, ".old.")) found = 1;
        else if (de->d_type == DT_DIR && strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            char sub[2048];
            snprintf(sub, sizeof sub, "%s/%s", dir, de->d_name);
            found |= tmp_left(sub);
        }
    closedir(d);
    return found;
}

typedef struct snapshot {
    char *data[6];
    size_t len[6];
} snapshot;

static void snap(const writer *w, const char *dir, snapshot *s) {
    for (int i = 0; i < 6; i++) {
        s->data[i] = NULL;
        s->len[i] = 0;
        if (!w->files[i]) continue;
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, w->files[i]);
        s->data[i] = read_or_null(p, &s->len[i]);
    }
}

static void snap_free(snapshot *s) {
    for (int i = 0; i < 6; i++) free(s->data[i]);
}

static int same(const char *a, size_t na, const char *b, size_t nb) {
    if (!a || !b) return !a && !b;
    return na == nb && !memcmp(a, b, na);
}

static const char *kind_name(int k) { return k == MR_IO_WRITE ? "write" : k == MR_IO_FSYNC ? "fsync" : "rename"; }

static int fresh_dir(char *out, size_t n, const char *name, int k) {
    snprintf(out, n, "%s/%s-%d", test_tmpdir(), name, k);
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", out, out);
    return system(cmd);
}

static int dirs_made;

/* Runs writer w with the n-th call of `kind` failing, over an old version (with_old) or
 * over nothing; returns 1 when every file is old-or-new and nothing else is left. */
static int one_fault(const writer *w, int kind, long n, int with_old, const snapshot *newv) {
    char dir[1024];
    mr_error e = {0};
    if (fresh_dir(dir, sizeof dir, "f", dirs_made++)) return 0;
    if (w->setup) w->setup(dir);
    if (with_old && w->run(dir, 0, &e)) {
        printf("  %s: old version failed: %s\n", w->name, e.msg);
        return 0;
    }
    snapshot oldv;
    snap(w, dir, &oldv);
    mr_io_fault_set(kind, n, ENOSPC);
    int rc = w->run(dir, 1, &e);
    mr_io_fault_set(0, 0, 0);
    int ok = 1;
    if (rc != MR_ERR_INPUT || !strstr(e.msg, "No space left on device") || !strstr(e.msg, dir)) {
        printf("  %s, %s %ld: returned %d: %s\n", w->name, kind_name(kind), n, rc, e.msg);
        ok = 0;
    }
    snapshot now;
    snap(w, dir, &now);
    for (int i = 0; i < 6 && ok; i++) {
        if (!w->files[i]) continue;
        if (!same(now.data[i], now.len[i], oldv.data[i], oldv.len[i]) &&
            !same(now.data[i], now.len[i], newv->data[i], newv->len[i])) {
            printf("  %s, %s %ld%s: %s is neither the old nor the new file (%zu bytes)\n", w->name, kind_name(kind), n,
                   with_old ? "" : " (no old file)", w->files[i], now.len[i]);
            ok = 0;
        }
    }
    if (ok && tmp_left(dir)) {
        printf("  %s, %s %ld: a temporary file was left in %s\n", w->name, kind_name(kind), n, dir);
        ok = 0;
    }
    snap_free(&oldv);
    snap_free(&now);
    return ok;
}

static void check_writer(const writer *w) {
    /* small stdio buffers: a writer makes many write calls, each a step that can fail */
    mr_io_fault_buffer(64);
    char dir[1024];
    mr_error e = {0};
    CHECK(fresh_dir(dir, sizeof dir, "ref", dirs_made++) == 0);
    if (w->setup) w->setup(dir);
    CHECK_OK(w->run(dir, 0, &e), &e);
    mr_io_fault_set(0, 0, 0);
    CHECK_OK(w->run(dir, 1, &e), &e);
    long calls[4] = {0, mr_io_fault_calls(MR_IO_WRITE), mr_io_fault_calls(MR_IO_FSYNC), mr_io_fault_calls(MR_IO_RENAME)};
    snapshot newv;
    snap(w, dir, &newv);
    for (int i = 0; i < 6; i++) CHECK_MSG(!w->files[i] || newv.data[i], "%s did not write %s", w->name, w->files[i]);
    /* every step when there are few; otherwise the first and last 20 and a stride between */
    long tried = 0;
    int ok = 1;
    for (int kind = MR_IO_WRITE; kind <= MR_IO_RENAME && ok; kind++) {
        long stride = calls[kind] > 60 ? calls[kind] / 20 : 1;
        for (long n = 1; n <= calls[kind] && ok; n++) {
            if (n > 20 && n <= calls[kind] - 20 && n % stride) continue;
            ok = one_fault(w, kind, n, 1, &newv) && one_fault(w, kind, n, 0, &newv);
            tried++;
        }
    }
    printf("  %-38s %4ld writes, %ld fsyncs, %ld renames; %ld failure points, each over an old version and over "
           "none\n", w->name, calls[1], calls[2], calls[3], tried);
    snap_free(&newv);
    mr_io_fault_buffer(0);
    CHECK(ok);
}

TEST(every_writer_leaves_old_or_new_files_on_a_failed_write) {
    for (size_t i = 0; i < sizeof writers / sizeof writers[0]; i++) {
        check_writer(&writers[i]);
        if (test_failed_now()) return;
    }
}

/* A full disk in the middle of a training run: the error names the file (exit 1 in the
 * CLI), and a --resume once space is back gives the files of an uninterrupted run. */
TEST(retriever_training_survives_a_failed_write_and_resumes) {
    make_dataset();
    mr_dataset d;
    mr_error e = {0};
    CHECK_OK(mr_dataset_load(&d, ds_dir, &e), &e);
    rt_train_options o;
    CHECK_OK(rt_train_defaults(&o, &d, "lru", &e), &e);
    o.model.hidden = 8;
    o.model.blocks = 1;
    o.model.max_len = 8;
    o.batch = 4;
    o.max_epochs = 3;
    o.val_every = 2;
    o.threads = 1;
    char ref[1024];
    CHECK(fresh_dir(ref, sizeof ref, "train_ref", 0) == 0);
    int interrupted;
    mr_io_fault_set(0, 0, 0);
    CHECK_OK(rt_train(&d, &o, ref, &interrupted, &e), &e);
    long writes = mr_io_fault_calls(MR_IO_WRITE), renames = mr_io_fault_calls(MR_IO_RENAME);
    const char *files[3] = {"retriever.safetensors", "metrics.json", "candidates.tsv"};
    int points = 0;
    for (int kind = MR_IO_WRITE; kind <= MR_IO_RENAME; kind += 2) {
        long total = kind == MR_IO_WRITE ? writes : renames;
        for (int k = 1; k <= 6; k++) {
            long n = total * k / 7 + 1;
            char run[1024];
            CHECK(fresh_dir(run, sizeof run, "train_fault", points++) == 0);
            mr_io_fault_set(kind, n, ENOSPC);
            o.resume = 0;
            int rc = rt_train(&d, &o, run, &interrupted, &e);
            mr_io_fault_set(0, 0, 0);
            CHECK_MSG(rc == MR_ERR_INPUT && strstr(e.msg, "No space left on device"), "%s %ld: %d %s", kind_name(kind),
                      n, rc, e.msg);
            CHECK(!tmp_left(run));
            o.resume = 1;
            CHECK_OK(rt_train(&d, &o, run, &interrupted, &e), &e);
            for (int f = 0; f < 3; f++) {
                char a[1100], b[1100];
                snprintf(a, sizeof a, "%s/%s", ref, files[f]);
                snprintf(b, sizeof b, "%s/%s", run, files[f]);
                size_t na, nb;
                char *x = read_or_null(a, &na), *y = read_or_null(b, &nb);
                int eq = x && y && same(x, na, y, nb);
                free(x);
                free(y);
                CHECK_MSG(eq, "%s %ld: %s differs from the uninterrupted run's", kind_name(kind), n, files[f]);
            }
        }
    }
    printf("  %d failure points (of %ld writes, %ld renames), each resumed to the uninterrupted run's files\n", points,
           writes, renames);
    mr_dataset_free(&d);
}

/* Rows appended one by one (captions.tsv as caption writes it): a failure at any write
 * step, also one inside a row (short writes of 64 bytes), leaves the file as it was
 * before the row being appended: the rows before it complete, no part of it. */
TEST(append_stream_keeps_whole_rows_at_every_failed_write) {
    mr_io_fault_buffer(64);
    char dir[1024], path[1100];
    mr_error e = {0};
    CHECK(fresh_dir(dir, sizeof dir, "rows_ref", 0) == 0);
    snprintf(path, sizeof path, "%s/captions.tsv", dir);
    mr_io_fault_set(0, 0, 0);
    CHECK_OK(append_rows(path, 1, 6, 150, &e), &e);
    long calls = mr_io_fault_calls(MR_IO_WRITE);
    size_t full_len;
    char *full = read_or_null(path, &full_len);
    CHECK(full && calls >= 6 * 2);
    for (long n = 1; n <= calls; n++) {
        char d[1024], p[1100];
        CHECK(fresh_dir(d, sizeof d, "rows", (int)n) == 0);
        snprintf(p, sizeof p, "%s/captions.tsv", d);
        mr_io_fault_set(MR_IO_WRITE, n, ENOSPC);
        int rc = append_rows(p, 1, 6, 150, &e);
        mr_io_fault_set(0, 0, 0);
        CHECK_MSG(rc == MR_ERR_INPUT && strstr(e.msg, "No space left on device") && strstr(e.msg, p),
                  "write %ld: %d %s", n, rc, e.msg);
        size_t len = 0;
        char *now = read_or_null(p, &len);
        /* absent (the header failed) or a prefix of the full file that ends a line */
        int whole = !now || (len < full_len && !memcmp(now, full, len) && (len == 0 || now[len - 1] == '\n'));
        free(now);
        CHECK_MSG(whole, "write %ld: captions.tsv holds part of a row (%zu bytes)", n, len);
        /* appending again after the failure continues with whole rows */
        if (n == calls / 2) {
            int done_rows = 0;
            char *t = read_or_null(p, &len);
            for (size_t i = 0; t && i < len; i++) done_rows += t[i] == '\n';
            free(t);
            CHECK_OK(append_rows(p, done_rows ? done_rows : 1, 6 - (done_rows ? done_rows - 1 : 0), 150, &e), &e);
            char *again = read_or_null(p, &len);
            int eq = again && len == full_len && !memcmp(again, full, len);
            free(again);
            CHECK_MSG(eq, "write %ld: appending the missing rows does not give the uninterrupted file", n);
        }
    }
    printf("  %ld write steps of 6 rows, each failing once: whole rows only\n", calls);
    free(full);
    mr_io_fault_buffer(0);
}

int main(void) {
    RUN(every_writer_leaves_old_or_new_files_on_a_failed_write);
    RUN(append_stream_keeps_whole_rows_at_every_failed_write);
    RUN(retriever_training_survives_a_failed_write_and_resumes);
    return test_summary();
}
