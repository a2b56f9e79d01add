/* LRURec training, evaluation, candidates and the CLI on a small generated dataset:
 * run files, learning, determinism, SIGTERM / kill -9 + --resume giving the same
 * numbers as an uninterrupted run, candidates equal to the reference-style padded
 * full forward, and errors. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mllm4rec/retriever.h"
#include "mllm4rec/safetensors.h"
#include "test.h"

#define N_USERS 40
#define N_ITEMS 60
static char dataset_dir[512];

/* Users walk the item ids upwards (next = prev + 1, wrapping), so the model can learn it. */
static void make_dataset(void) {
    if (dataset_dir[0]) return;
    snprintf(dataset_dir, sizeof dataset_dir, "%s", test_tmp_path("ds"));
    mkdir(dataset_dir, 0755);
    char path[600], buf[200000];
    size_t n = 0;
    snprintf(path, sizeof path, "%s/items.tsv", dataset_dir);
    n += (size_t)snprintf(buf + n, sizeof buf - n, "item_id\tsource_id\ttitle\timage\tcaption\n");
    for (int i = 1; i <= N_ITEMS; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "%d\ts%d\tItem %d\t\t\n", i, i, i);
    test_write_file(path, buf, n);
    mr_rng r;
    mr_rng_seed(&r, 11);
    n = 0;
    int interactions = 0;
    n += (size_t)snprintf(buf + n, sizeof buf - n, "user_id\tsource_user_id\titems\n");
    for (int u = 1; u <= N_USERS; u++) {
        int len = 6 + (int)mr_rng_below(&r, 30), item = 1 + (int)mr_rng_below(&r, N_ITEMS);
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%d\tu%d\t", u, u);
        for (int j = 0; j < len; j++) {
            n += (size_t)snprintf(buf + n, sizeof buf - n, j ? " %d" : "%d", item);
            item = item % N_ITEMS + 1;
        }
        n += (size_t)snprintf(buf + n, sizeof buf - n, "\n");
        interactions += len;
    }
    snprintf(path, sizeof path, "%s/sequences.tsv", dataset_dir);
    test_write_file(path, buf, n);
    n = (size_t)snprintf(buf, sizeof buf,
                         "{\"format_version\": 1, \"format\": \"sequences\", \"name\": \"walk\", \"counts\": "
                         "{\"after\": {\"users\": %d, \"items\": %d, \"interactions\": %d}}}\n",
                         N_USERS, N_ITEMS, interactions);
    snprintf(path, sizeof path, "%s/meta.json", dataset_dir);
    test_write_file(path, buf, n);
}

#define TRAIN_FLAGS "--max-len 8 --hidden 16 --batch 8 --max-epochs 12 --val-every 7 --patience 50 --threads 2"

static int files_equal(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    mr_error e;
    int ok = !mr_read_file(a, &x, &nx, &e) && !mr_read_file(b, &y, &ny, &e) && nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return ok;
}

/* train.jsonl with the wall-clock "seconds" fields removed */
static char *log_without_seconds(const char *path) {
    char *x = NULL;
    size_t n;
    mr_error e;
    if (mr_read_file(path, &x, &n, &e)) return NULL;
    char *w = x;
    for (char *p = x; *p;) {
        if (!strncmp(p, ",\"seconds\":", 11)) {
            p += 11;
            while (*p && *p != ',' && *p != '}') p++;
        } else {
            *w++ = *p++;
        }
    }
    *w = 0;
    return x;
}

static const char *run_path(const char *run, const char *file) {
    static char bufs[4][700];
    static int k;
    char *b = bufs[k++ & 3];
    snprintf(b, sizeof bufs[0], "%s/%s", run, file);
    return b;
}

static int trained;
static void train_baseline(void) {
    if (trained) return;
    make_dataset();
    char out[4096];
    int rc = test_cli(out, sizeof out, "retriever train --dataset %s --out %s %s --seed 3 2>/dev/null", dataset_dir,
                      test_tmp_path("run_a"), TRAIN_FLAGS);
    trained = rc == 0 ? 1 : -1;
}

TEST(train_writes_run_files_and_learns) {
    train_baseline();
    CHECK(trained == 1);
    const char *run = test_tmp_path("run_a");
    CHECK(mr_file_exists(run_path(run, "retriever.safetensors")));
    CHECK(mr_file_exists(run_path(run, "checkpoint.safetensors")));
    json_error_t je;
    json_t *m = json_load_file(run_path(run, "metrics.json"), 0, &je);
    CHECK(m != NULL);
    const char *keys[] = {"Recall@1", "NDCG@5", "MRR@10", "Recall@20", "NDCG@50", "top20_share"};
    for (int s = 0; s < 2; s++) {
        json_t *sec = json_object_get(m, s ? "test" : "val");
        CHECK(sec != NULL);
        for (int i = 0; i < 6; i++) CHECK(json_is_number(json_object_get(sec, keys[i])));
        CHECK(json_integer_value(json_object_get(sec, "users")) == N_USERS);
    }
    /* the walk is learnable: far above chance (10 / 60) */
    double r10 = json_number_value(json_object_get(json_object_get(m, "test"), "Recall@10"));
    printf("  test Recall@10 %.3f\n", r10);
    CHECK(r10 > 0.5);
    json_decref(m);
    /* the learning curve: the untrained model at iteration 0 (as the reference), one
     * line per validation, then the final line */
    char *log = log_without_seconds(run_path(run, "train.jsonl"));
    const char *first = "{\"iter\":0,\"epoch\":0.0,\"train_loss\":null,";
    CHECK(log && !strncmp(log, first, strlen(first)));
    CHECK(log && strstr(log, "\"val\":{\"Recall@1\"") && strstr(log, "\"final\":true"));
    free(log);
}

/* candidates.tsv: header, val then test rows for every user, 20 distinct items not in
 * the history, scores non-increasing; and equal to the reference-style forward over
 * the left-padded window of max_len positions, scores of every position computed. */
TEST(candidates_match_padded_full_forward) {
    train_baseline();
    CHECK(trained == 1);
    const char *run = test_tmp_path("run_a");
    mr_error e = {0};
    mr_dataset d;
    CHECK_OK(mr_dataset_load(&d, dataset_dir, &e), &e);
    lru_model m;
    CHECK_OK(lru_model_load(&m, run_path(run, "retriever.safetensors"), &e), &e);
    CHECK(m.cfg.max_len == 8 && m.cfg.hidden == 16 && m.cfg.blocks == 2 && m.cfg.n_items == N_ITEMS);
    CHECK_OK(lru_model_alloc_grads(&m, &e), &e);
    int L = m.cfg.max_len, V = N_ITEMS + 1;
    lru_acts *a;
    CHECK_OK(lru_acts_create(&a, &m, L, 1, L, &e), &e);
    float *scores = malloc(sizeof(float) * L * V);
    char *text = NULL;
    size_t len;
    CHECK_OK(mr_read_file(run_path(run, "candidates.tsv"), &text, &len, &e), &e);
    char *save = NULL, *line = strtok_r(text, "\n", &save);
    CHECK(line && !strcmp(line, "split\tuser_id\tlabel\titems\tscores"));
    int rows = 0;
    double worst = 0;
    while ((line = strtok_r(NULL, "\n", &save))) {
        char split[8];
        int user, label, nch = 0;
        CHECK(sscanf(line, "%7[a-z]\t%d\t%d\t%n", split, &user, &label, &nch) == 3);
        int sp = !strcmp(split, "test");
        CHECK(sp || !strcmp(split, "val"));
        CHECK(rows / N_USERS == sp && user == rows % N_USERS + 1);
        const int32_t *hist;
        int nh;
        int32_t target;
        lru_user_history(&d, user, sp, &hist, &nh, &target);
        CHECK(label == target);
        /* the reference's input: the last L items, left-padded with 0, all positions scored */
        int32_t tokens[64], labels[64] = {0};
        int take = nh < L ? nh : L;
        for (int i = 0; i < L; i++) tokens[i] = i < L - take ? 0 : hist[nh - take + i - (L - take)];
        int seq_start[2] = {0, L};
        lru_batch b = {.n_seqs = 1, .n_rows = L, .seq_start = seq_start, .tokens = tokens, .labels = labels};
        lru_loss_backward(&m, a, &b, 0, 0, scores);
        const float *last = scores + (size_t)(L - 1) * V;
        char *items = line + nch, *tab = strchr(items, '\t');
        CHECK(tab);
        *tab = 0;
        char *sc = tab + 1;
        int ids[20], n = 0;
        float vals[20];
        for (char *p = items; *p && n < 20;) {
            ids[n] = (int)strtol(p, &p, 10);
            vals[n] = strtof(sc, &sc);
            n++;
            if (*p == ',') p++;
            if (*sc == ',') sc++;
        }
        CHECK(n == 20);
        for (int i = 0; i < n; i++) {
            CHECK(ids[i] >= 1 && ids[i] <= N_ITEMS);
            for (int j = 0; j < nh; j++) CHECK(hist[j] != ids[i]);
            for (int j = 0; j < i; j++) CHECK(ids[j] != ids[i]);
            if (i) CHECK(vals[i] <= vals[i - 1]);
            worst = fmax(worst, fabs(vals[i] - last[ids[i]]));
        }
        /* nothing left out ranks above the 20th */
        for (int id = 1; id <= N_ITEMS; id++) {
            int in_hist = 0, in_list = 0;
            for (int j = 0; j < nh; j++) in_hist |= hist[j] == id;
            for (int j = 0; j < n; j++) in_list |= ids[j] == id;
            if (!in_hist && !in_list) CHECK(last[id] <= vals[n - 1] + 1e-5);
        }
        rows++;
    }
    printf("  %d rows, max |candidate score - padded full forward| %.3g\n", rows, worst);
    CHECK(rows == 2 * N_USERS);
    CHECK(worst <= 1e-4);
    free(text);
    free(scores);
    lru_acts_free(a);
    lru_model_free(&m);
    mr_dataset_free(&d);
}

TEST(same_seed_same_numbers_and_eval_candidates_recompute) {
    train_baseline();
    CHECK(trained == 1);
    const char *a = test_tmp_path("run_a"), *b = test_tmp_path("run_b");
    CHECK(test_cli(NULL, 0, "retriever train --dataset %s --out %s %s --seed 3 2>/dev/null", dataset_dir, b,
                   TRAIN_FLAGS) == 0);
    CHECK(files_equal(run_path(a, "retriever.safetensors"), run_path(b, "retriever.safetensors")));
    CHECK(files_equal(run_path(a, "metrics.json"), run_path(b, "metrics.json")));
    CHECK(files_equal(run_path(a, "candidates.tsv"), run_path(b, "candidates.tsv")));
    /* eval and candidates rebuild the same files from the saved model */
    CHECK(remove(run_path(b, "metrics.json")) == 0 && remove(run_path(b, "candidates.tsv")) == 0);
    char out[8192];
    CHECK(test_cli(out, sizeof out, "retriever eval --dataset %s --run %s 2>/dev/null", dataset_dir, b) == 0);
    CHECK(strstr(out, "\"Recall@10\""));
    CHECK(test_cli(NULL, 0, "retriever candidates --dataset %s --run %s 2>/dev/null", dataset_dir, b) == 0);
    CHECK(files_equal(run_path(a, "metrics.json"), run_path(b, "metrics.json")));
    CHECK(files_equal(run_path(a, "candidates.tsv"), run_path(b, "candidates.tsv")));
    /* a different seed gives a different model */
    const char *c = test_tmp_path("run_c");
    CHECK(test_cli(NULL, 0, "retriever train --dataset %s --out %s %s --seed 4 --max-epochs 1 2>/dev/null",
                   dataset_dir, c, TRAIN_FLAGS) == 0);
    CHECK(!files_equal(run_path(a, "retriever.safetensors"), run_path(c, "retriever.safetensors")));
}

/* Interrupt at iteration `at` with signal sig, resume, compare with the uninterrupted run. */
static void interrupted_run_matches(const char *name, int at, int sig, int want_rc) {
    train_baseline();
    CHECK(trained == 1);
    const char *a = test_tmp_path("run_a"), *r = test_tmp_path(name);
    char env[32];
    snprintf(env, sizeof env, "%d:%d", at, sig);
    setenv("MLLM4REC_TEST_SIGNAL_AT_ITER", env, 1);
    int rc = test_cli(NULL, 0, "retriever train --dataset %s --out %s %s --seed 3 2>/dev/null", dataset_dir, r,
                      TRAIN_FLAGS);
    unsetenv("MLLM4REC_TEST_SIGNAL_AT_ITER");
    CHECK_MSG(rc == want_rc, "interrupted run exited %d, expected %d", rc, want_rc);
    CHECK(!mr_file_exists(run_path(r, "metrics.json")));
    CHECK(mr_file_exists(run_path(r, "checkpoint.safetensors")));
    /* the checkpoint holds an order of the training windows: each exactly once */
    {
        st_file f;
        mr_error e = {0};
        CHECK_OK(st_open(&f, run_path(r, "checkpoint.safetensors"), &e), &e);
        const st_tensor *order = st_find(&f, "epoch_order");
        int ok = order && order->dtype == ST_I32 && st_numel(order) > 0;
        int64_t n = ok ? st_numel(order) : 0;
        char *seen = calloc((size_t)n + 1, 1);
        for (int64_t i = 0; ok && i < n; i++) {
            int32_t w;
            memcpy(&w, (const char *)order->data + 4 * i, 4);
            ok = w >= 0 && w < n && !seen[w];
            if (ok) seen[w] = 1;
        }
        free(seen);
        st_close(&f);
        CHECK_MSG(ok, "checkpoint epoch_order is not a permutation of the windows");
    }
    /* a resume must use the same flags */
    CHECK(test_cli(NULL, 0, "retriever train --dataset %s --out %s %s --seed 3 --hidden 8 --resume 2>/dev/null",
                   dataset_dir, r, TRAIN_FLAGS) == 1);
    CHECK(test_cli(NULL, 0, "retriever train --dataset %s --out %s %s --seed 3 --resume 2>/dev/null", dataset_dir, r,
                   TRAIN_FLAGS) == 0);
    CHECK(files_equal(run_path(a, "retriever.safetensors"), run_path(r, "retriever.safetensors")));
    CHECK(files_equal(run_path(a, "metrics.json"), run_path(r, "metrics.json")));
    CHECK(files_equal(run_path(a, "candidates.tsv"), run_path(r, "candidates.tsv")));
    char *la = log_without_seconds(run_path(a, "train.jsonl")), *lr = log_without_seconds(run_path(r, "train.jsonl"));
    CHECK(la && lr && !strcmp(la, lr));
    free(la);
    free(lr);
}

TEST(sigterm_saves_checkpoint_and_resume_gives_same_numbers) {
    interrupted_run_matches("run_term", 10, 15, 1);
}

TEST(kill_9_and_resume_from_last_checkpoint_gives_same_numbers) {
    /* iteration 17 is past the checkpoint of the validation at 14: 15..17 are redone */
    interrupted_run_matches("run_kill", 17, 9, 128 + 9);
}

TEST(kill_9_in_the_first_epoch_and_resume_gives_same_numbers) {
    /* iteration 3 comes before the first validation (7): only the checkpoint written
     * after the validation of the untrained model exists */
    interrupted_run_matches("run_kill_early", 3, 9, 128 + 9);
}

/* A file's bytes as a string of hex digits, so that binary files compare with strcmp. */
static char *slurp(const char *path) {
    char *x = NULL;
    size_t n;
    mr_error e;
    if (mr_read_file(path, &x, &n, &e)) return NULL;
    char *h = malloc(2 * n + 1);
    for (size_t i = 0; h && i < n; i++) snprintf(h + 2 * i, 3, "%02x", (unsigned char)x[i]);
    if (h) h[2 * n] = 0;
    free(x);
    return h;
}

TEST(rerun_over_a_run_needs_resume_or_force) {
    make_dataset();
    const char *r = test_tmp_path("run_fin");
    char err[4096];
    CHECK(test_cli(NULL, 0, "retriever train --dataset %s --out %s %s --seed 3 --max-epochs 2 2>/dev/null", dataset_dir,
                   r, TRAIN_FLAGS) == 0);
    const char *names[4] = {"retriever.safetensors", "metrics.json", "candidates.tsv", "checkpoint.safetensors"};
    char *before[4];
    for (int i = 0; i < 4; i++) CHECK((before[i] = slurp(run_path(r, names[i]))) != NULL);
    /* without --resume or --force: refused, and the run is untouched */
    CHECK(test_cli(err, sizeof err, "retriever train --dataset %s --out %s %s --seed 5 --max-epochs 2 2>&1", dataset_dir,
                   r, TRAIN_FLAGS) == 1);
    CHECK_MSG(strstr(err, "already holds a run") && strstr(err, "--force"), "%s", err);
    for (int i = 0; i < 4; i++) {
        char *now = slurp(run_path(r, names[i]));
        CHECK_MSG(now && !strcmp(now, before[i]), "%s changed", names[i]);
        free(now);
    }
    CHECK(test_cli(NULL, 0, "retriever train --dataset %s --out %s %s --seed 3 --max-epochs 2 --resume --force 2>/dev/null",
                   dataset_dir, r, TRAIN_FLAGS) == 2);
    /* --resume of a finished run gives the same files */
    CHECK(test_cli(NULL, 0, "retriever train --dataset %s --out %s %s --seed 3 --max-epochs 2 --resume 2>/dev/null",
                   dataset_dir, r, TRAIN_FLAGS) == 0);
    for (int i = 0; i < 3; i++) {
        char *now = slurp(run_path(r, names[i]));
        CHECK_MSG(now && !strcmp(now, before[i]), "%s changed by --resume", names[i]);
        free(now);
    }
    /* --force starts over: another seed, another model */
    CHECK(test_cli(NULL, 0, "retriever train --dataset %s --out %s %s --seed 5 --max-epochs 2 --force 2>/dev/null",
                   dataset_dir, r, TRAIN_FLAGS) == 0);
    char *now = slurp(run_path(r, names[0]));
    CHECK(now && strcmp(now, before[0]));
    free(now);
    for (int i = 0; i < 4; i++) free(before[i]);
    /* --resume on a folder without a checkpoint starts afresh */
    const char *fresh = test_tmp_path("run_fresh");
    CHECK(test_cli(NULL, 0, "retriever train --dataset %s --out %s %s --seed 3 --max-epochs 1 --resume 2>/dev/null",
                   dataset_dir, fresh, TRAIN_FLAGS) == 0);
    CHECK(mr_file_exists(run_path(fresh, "metrics.json")));
}

TEST(one_writer_per_run_folder) {
    make_dataset();
    const char *r = test_tmp_path("run_locked");
    mr_error e = {0};
    int fd;
    /* this process holds the folder: every command that writes it refuses, and nothing is written */
    CHECK_OK(mr_folder_lock(r, &fd, &e), &e);
    char err[4096];
    CHECK(test_cli(err, sizeof err, "retriever train --dataset %s --out %s %s 2>&1", dataset_dir, r, TRAIN_FLAGS) == 1);
    CHECK_MSG(strstr(err, "in use by another process"), "%s", err);
    CHECK(!mr_is_dir(r));
    CHECK(test_cli(err, sizeof err, "retriever eval --dataset %s --run %s 2>&1", dataset_dir, r) == 1);
    CHECK_MSG(strstr(err, "in use by another process"), "%s", err);
    CHECK(test_cli(err, sizeof err, "retriever candidates --dataset %s --run %s 2>&1", dataset_dir, r) == 1);
    CHECK_MSG(strstr(err, "in use by another process"), "%s", err);
    /* a second lock in this process (another open file) is refused too */
    int fd2;
    CHECK(mr_folder_lock(r, &fd2, &e) == MR_ERR_INPUT);
    /* the lock, not the leftover lock file, says whether a writer is alive */
    mr_folder_unlock(fd);
    CHECK(test_cli(NULL, 0, "retriever train --dataset %s --out %s %s --max-epochs 1 2>/dev/null", dataset_dir, r,
                   TRAIN_FLAGS) == 0);
    /* two runs started together: exactly one writes the folder */
    const char *r2 = test_tmp_path("run_twice");
    const char *bin = getenv("MLLM4REC_BIN");
    if (!bin || !*bin) bin = "build/mllm4rec";
    CHECK(test_cli(err, sizeof err,
                   "retriever train --help >/dev/null; B=%s; "
                   "$B retriever train --dataset %s --out %s %s --max-epochs 3 >/dev/null 2>&1 & p1=$!; "
                   "$B retriever train --dataset %s --out %s %s --max-epochs 3 >/dev/null 2>&1 & p2=$!; "
                   "wait $p1; a=$?; wait $p2; b=$?; echo $a $b",
                   bin, dataset_dir, r2, TRAIN_FLAGS, dataset_dir, r2, TRAIN_FLAGS) == 0);
    int a = -1, b = -1;
    CHECK(sscanf(err, "%d %d", &a, &b) == 2);
    CHECK_MSG((a == 0 && b == 1) || (a == 1 && b == 0), "exit codes %d and %d", a, b);
}

TEST(errors_are_reported) {
    make_dataset();
    char out[8192];
    CHECK(test_cli(out, sizeof out, "retriever train --dataset %s 2>/dev/null", dataset_dir) == 2);
    CHECK(test_cli(out, sizeof out, "retriever train --dataset %s --out %s --hidden 0 2>/dev/null", dataset_dir,
                   test_tmp_path("bad")) == 2);
    CHECK(test_cli(out, sizeof out, "retriever train --dataset %s --out %s 2>/dev/null", test_tmp_path("nope"),
                   test_tmp_path("bad")) == 1);
    CHECK(test_cli(out, sizeof out, "retriever eval --dataset %s --run %s 2>/dev/null", dataset_dir,
                   test_tmp_path("nope")) == 1);
    CHECK(test_cli(out, sizeof out, "retriever candidates --dataset %s --run %s -k 0 2>/dev/null", dataset_dir,
                   test_tmp_path("nope")) == 2);
    CHECK(test_cli(out, sizeof out, "retriever train --help") == 0 && strstr(out, "--resume"));
    /* --max-epochs 0 would write an untrained model: a usage error */
    CHECK(test_cli(out, sizeof out, "retriever train --dataset %s --out %s --max-epochs 0 2>/dev/null", dataset_dir,
                   test_tmp_path("zero_epochs")) == 2);
    CHECK(!mr_file_exists(run_path(test_tmp_path("zero_epochs"), "retriever.safetensors")));
    /* a model that does not fit the dataset */
    const char *p = test_tmp_path("notmodel.safetensors");
    test_write_file(p, "garbage", 7);
    mr_error e = {0};
    lru_model m;
    CHECK(lru_model_load(&m, p, &e) == MR_ERR_INPUT);
}

TEST(defaults_follow_the_dataset_role) {
    mr_dataset d;
    memset(&d, 0, sizeof d);
    rt_train_options o;
    mr_error e = {0};
    d.format = "movielens";
    d.name = "ml-latest-small";
    CHECK_OK(rt_train_defaults(&o, &d, "lru", &e), &e);
    CHECK(o.model.max_len == 200 && o.batch == 16);
    d.format = "amazon2014";
    d.name = "amazon2014-beauty";
    CHECK_OK(rt_train_defaults(&o, &d, "lru", &e), &e);
    CHECK(!strcmp(o.model.arch, "lru"));
    CHECK(o.model.max_len == 50 && o.batch == 64);
    CHECK(o.model.hidden == 64 && o.model.blocks == 2 && o.model.dropout == 0.2f && o.lr == 1e-3 &&
          o.weight_decay == 0.01 && o.clip == 5.0 && o.val_every == 500 && o.patience == 20);
}

/* --arch: the run records its architecture (retriever.safetensors' metadata and the
 * checkpoint), eval and candidates read it from the run, and every training run draws
 * its learning curve (curves.svg). */
TEST(arch_is_recorded_and_read_back_from_the_run) {
    make_dataset();
    const char *r = test_tmp_path("run_arch");
    CHECK(test_cli(NULL, 0, "retriever train --arch lru --dataset %s --out %s %s --seed 5 --max-epochs 2 2>/dev/null",
                   dataset_dir, r, TRAIN_FLAGS) == 0);
    mr_error e = {0};
    st_file f;
    CHECK_OK(st_open(&f, run_path(r, "retriever.safetensors"), &e), &e);
    json_t *meta = f.metadata_json ? json_loads(f.metadata_json, 0, NULL) : NULL;
    const char *arch = json_string_value(json_object_get(meta, "arch"));
    CHECK_MSG(arch && !strcmp(arch, "lru"), "retriever.safetensors arch = %s", arch ? arch : "(none)");
    const char *hid = json_string_value(json_object_get(meta, "hidden"));
    CHECK(hid && !strcmp(hid, "16"));
    json_decref(meta);
    st_close(&f);
    CHECK_OK(st_open(&f, run_path(r, "checkpoint.safetensors"), &e), &e);
    CHECK(f.metadata_json && strstr(f.metadata_json, "\"arch\":\"lru\"") != NULL);
    st_close(&f);
    /* the model loads back through the contract with the architecture of the file */
    rt_model m;
    CHECK_OK(rt_model_load(&m, run_path(r, "retriever.safetensors"), &e), &e);
    CHECK(!strcmp(m.cfg.arch, "lru") && m.arch == rt_arch_find("lru") && m.cfg.hidden == 16 && m.cfg.blocks == 2 &&
          m.cfg.max_len == 8 && m.cfg.n_items == N_ITEMS);
    rt_model_free(&m);
    /* eval and candidates rebuild the same files without being told the architecture */
    char *metrics = NULL, *cands = NULL;
    size_t n1, n2;
    CHECK_OK(mr_read_file(run_path(r, "metrics.json"), &metrics, &n1, &e), &e);
    CHECK_OK(mr_read_file(run_path(r, "candidates.tsv"), &cands, &n2, &e), &e);
    CHECK(remove(run_path(r, "metrics.json")) == 0 && remove(run_path(r, "candidates.tsv")) == 0);
    CHECK(test_cli(NULL, 0, "retriever eval --dataset %s --run %s 2>/dev/null", dataset_dir, r) == 0);
    CHECK(test_cli(NULL, 0, "retriever candidates --dataset %s --run %s 2>/dev/null", dataset_dir, r) == 0);
    char *m2 = NULL, *c2 = NULL;
    CHECK_OK(mr_read_file(run_path(r, "metrics.json"), &m2, &n1, &e), &e);
    CHECK_OK(mr_read_file(run_path(r, "candidates.tsv"), &c2, &n2, &e), &e);
    CHECK(metrics && m2 && !strcmp(metrics, m2));
    CHECK(cands && c2 && !strcmp(cands, c2));
    free(metrics);
    free(cands);
    free(m2);
    free(c2);
    /* a plain retriever train leaves a well-formed curves.svg */
    char *svg = NULL;
    size_t ns = 0;
    CHECK_OK(mr_read_file(run_path(r, "curves.svg"), &svg, &ns, &e), &e);
    CHECK(svg && strstr(svg, "<svg") && ns > 7);
    if (svg) {
        const char *end = svg + ns;
        while (end > svg && (end[-1] == '\n' || end[-1] == ' ')) end--;
        CHECK_MSG(end - svg >= 6 && !strncmp(end - 6, "</svg>", 6), "curves.svg does not end with </svg>");
        CHECK(strstr(svg, "<polyline") || strstr(svg, "<path"));
    }
    free(svg);
}

/* BERT4Rec's max_predictions (the reference's default for the dataset, or
 * --max-predictions) and STOSA's n_users (the dataset's users) reach the model, are
 * recorded in retriever.safetensors and load back; eval reads the run. */
static void check_config_round_trip(const char *arch, const char *flags, const char *key, int want) {
    char name[64];
    snprintf(name, sizeof name, "run_cfg_%s_%d", arch, want);
    char r[512];
    snprintf(r, sizeof r, "%s", test_tmp_path(name));
    CHECK(test_cli(NULL, 0, "retriever train --arch %s --dataset %s --out %s %s --max-epochs 1 %s --force 2>/dev/null",
                   arch, dataset_dir, r, TRAIN_FLAGS, flags) == 0);
    mr_error e = {0};
    st_file f;
    CHECK_OK(st_open(&f, run_path(r, "retriever.safetensors"), &e), &e);
    json_t *meta = f.metadata_json ? json_loads(f.metadata_json, 0, NULL) : NULL;
    const char *v = json_string_value(json_object_get(meta, key));
    char w[32];
    snprintf(w, sizeof w, "%d", want);
    CHECK_MSG(v && !strcmp(v, w), "%s: metadata %s = %s, want %s", arch, key, v ? v : "(none)", w);
    json_decref(meta);
    st_close(&f);
    rt_model m;
    CHECK_OK(rt_model_load(&m, run_path(r, "retriever.safetensors"), &e), &e);
    const int got = !strcmp(key, "n_users") ? m.cfg.n_users : m.cfg.max_predictions;
    CHECK_MSG(!strcmp(m.cfg.arch, arch) && got == want, "%s: loaded %s = %d, want %d", arch, key, got, want);
    rt_model_free(&m);
    CHECK(remove(run_path(r, "metrics.json")) == 0);
    CHECK(test_cli(NULL, 0, "retriever eval --dataset %s --run %s 2>/dev/null", dataset_dir, r) == 0);
    char *metrics = NULL;
    size_t n = 0;
    CHECK_OK(mr_read_file(run_path(r, "metrics.json"), &metrics, &n, &e), &e);
    CHECK(metrics && strstr(metrics, "\"Recall@10\"") != NULL);
    free(metrics);
}

TEST(attention_config_fields_are_recorded_and_read_back) {
    make_dataset();
    mr_error e = {0};
    mr_dataset d;
    CHECK_OK(mr_dataset_load(&d, dataset_dir, &e), &e);
    rt_train_options o;
    CHECK_OK(rt_train_defaults(&o, &d, "bert4rec", &e), &e);
    const char *role = mr_dataset_role(&d);
    const int max_pred = !role                       ? 20
                         : !strcmp(role, "ml-100k") ? 40
                         : !strcmp(role, "beauty")  ? 30
                         : !strcmp(role, "games")   ? 25
                                                    : 20;
    CHECK(o.model.max_predictions == max_pred);
    CHECK_OK(rt_train_defaults(&o, &d, "stosa", &e), &e);
    CHECK(o.model.n_users == N_USERS && o.model.max_predictions == 0);
    CHECK_OK(rt_train_defaults(&o, &d, "sasrec", &e), &e);
    CHECK(o.model.n_users == 0 && o.model.max_predictions == 0);
    /* NARM's dropout before the decoder is the reference's bert_attn_dropout, 0.2 in
     * LlamaRec's config (and in scripts/baselines_rnn_torch.py), not off */
    CHECK_OK(rt_train_defaults(&o, &d, "narm", &e), &e);
    CHECK(o.model.attn_dropout == 0.2f && o.model.dropout == 0.2f);
    mr_dataset_free(&d);
    check_config_round_trip("bert4rec", "", "max_predictions", max_pred);
    check_config_round_trip("bert4rec", "--max-predictions 3", "max_predictions", 3);
    check_config_round_trip("stosa", "", "n_users", N_USERS);
}

/* An architecture that is not registered: a usage error (exit 2) naming those that are,
 * before anything is written. */
TEST(unknown_arch_is_a_usage_error) {
    make_dataset();
    char err[4096];
    const char *r = test_tmp_path("run_bad_arch");
    CHECK(test_cli(err, sizeof err, "retriever train --arch transformerxl --dataset %s --out %s 2>&1", dataset_dir,
                   r) == 2);
    CHECK_MSG(strstr(err, "transformerxl") && strstr(err, "lru"), "message: %s", err);
    CHECK(!mr_file_exists(r));
    /* a known architecture that this build has no model for yet: also a usage error */
    if (!rt_arch_find("sasrec")) {
        CHECK(test_cli(err, sizeof err, "retriever train --arch sasrec --dataset %s --out %s 2>&1", dataset_dir, r) == 2);
        CHECK_MSG(strstr(err, "sasrec") && strstr(err, "lru"), "message: %s", err);
    }
    mr_error e = {0};
    rt_train_options o;
    CHECK(rt_train_defaults(&o, NULL, "nope", &e) == MR_ERR_USAGE);
}

/* A retriever.safetensors written before the contract (LRURec's writer: no arch key)
 * still loads, as "lru", with the same weights, and eval gives the same metrics. */
TEST(lru_file_without_arch_loads_as_lru) {
    train_baseline();
    CHECK(trained == 1);
    const char *a = test_tmp_path("run_a"), *r = test_tmp_path("run_legacy");
    mr_error e = {0};
    lru_model old;
    CHECK_OK(lru_model_load(&old, run_path(a, "retriever.safetensors"), &e), &e);
    mkdir(r, 0755);
    CHECK_OK(lru_model_save(&old, run_path(r, "retriever.safetensors"), &e), &e);
    st_file f;
    CHECK_OK(st_open(&f, run_path(r, "retriever.safetensors"), &e), &e);
    CHECK(f.metadata_json && !strstr(f.metadata_json, "\"arch\"")); /* the file really has no arch */
    st_close(&f);
    rt_model m;
    CHECK_OK(rt_model_load(&m, run_path(r, "retriever.safetensors"), &e), &e);
    CHECK(!strcmp(m.cfg.arch, "lru") && m.cfg.hidden == 16 && m.cfg.blocks == 2 && m.cfg.max_len == 8);
    CHECK(m.n_params == old.n_params && !memcmp(m.params, old.params, old.n_params * sizeof(float)));
    rt_model_free(&m);
    lru_model_free(&old);
    CHECK(test_cli(NULL, 0, "retriever eval --dataset %s --run %s 2>/dev/null", dataset_dir, r) == 0);
    CHECK(files_equal(run_path(a, "metrics.json"), run_path(r, "metrics.json")));
    /* and a file that names an architecture this build lacks is refused by name */
    rt_config c = {.arch = "lru", .n_items = 4, .hidden = 4, .blocks = 1, .max_len = 4};
    CHECK_OK(rt_model_create(&m, &c, &e), &e);
    snprintf(m.cfg.arch, sizeof m.cfg.arch, "nosuch");
    CHECK_OK(rt_model_save(&m, run_path(r, "other.safetensors"), &e), &e);
    rt_model_free(&m);
    rt_model x;
    CHECK(rt_model_load(&x, run_path(r, "other.safetensors"), &e) == MR_ERR_INPUT);
    CHECK_MSG(strstr(e.msg, "nosuch") != NULL, "%s", e.msg);
}

/* A checkpoint of LRURec made before the architecture contract (format
 * mllm4rec-lru-checkpoint-2, no arch / heads / attn_dropout / mask_prob / reg_weight)
 * still resumes, to the numbers of an uninterrupted run. */
TEST(lru_checkpoint_of_version_2_resumes) {
    train_baseline();
    CHECK(trained == 1);
    const char *a = test_tmp_path("run_a"), *r = test_tmp_path("run_v2");
    setenv("MLLM4REC_TEST_SIGNAL_AT_ITER", "10:15", 1);
    int rc = test_cli(NULL, 0, "retriever train --dataset %s --out %s %s --seed 3 2>/dev/null", dataset_dir, r,
                      TRAIN_FLAGS);
    unsetenv("MLLM4REC_TEST_SIGNAL_AT_ITER");
    CHECK(rc == 1);
    /* rewrite the checkpoint as version 2 wrote it */
    const char *ck = run_path(r, "checkpoint.safetensors");
    mr_error e = {0};
    st_file f;
    CHECK_OK(st_open(&f, ck, &e), &e);
    json_t *meta = json_loads(f.metadata_json, 0, NULL);
    CHECK(meta != NULL);
    st_writer *w = st_writer_new(&e);
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        CHECK_OK(st_writer_add(w, t->name, t->dtype, t->n_dims, t->shape, t->data, &e), &e);
    }
    const char *key;
    json_t *v;
    json_object_foreach(meta, key, v) {
        static const char *const added[] = {"arch", "heads", "attn_dropout", "mask_prob", "reg_weight", NULL};
        int skip = 0;
        for (int i = 0; added[i]; i++) skip |= !strcmp(key, added[i]);
        if (skip) continue;
        const char *val = !strcmp(key, "format") ? "mllm4rec-lru-checkpoint-2" : json_string_value(v);
        CHECK_OK(st_writer_set_metadata(w, key, val, &e), &e);
    }
    const char *copy = run_path(r, "v2.safetensors");
    CHECK_OK(st_writer_write(w, copy, &e), &e);
    st_writer_free(w);
    json_decref(meta);
    st_close(&f);
    CHECK(rename(copy, ck) == 0);
    CHECK_OK(st_open(&f, ck, &e), &e);
    CHECK(!strstr(f.metadata_json, "\"arch\"") && strstr(f.metadata_json, "lru-checkpoint-2"));
    st_close(&f);
    CHECK(test_cli(NULL, 0, "retriever train --dataset %s --out %s %s --seed 3 --resume 2>/dev/null", dataset_dir, r,
                   TRAIN_FLAGS) == 0);
    CHECK(files_equal(run_path(a, "metrics.json"), run_path(r, "metrics.json")));
    CHECK(files_equal(run_path(a, "candidates.tsv"), run_path(r, "candidates.tsv")));
    CHECK(files_equal(run_path(a, "retriever.safetensors"), run_path(r, "retriever.safetensors")));
}

int main(void) {
    RUN(defaults_follow_the_dataset_role);
    RUN(train_writes_run_files_and_learns);
    RUN(candidates_match_padded_full_forward);
    RUN(same_seed_same_numbers_and_eval_candidates_recompute);
    RUN(sigterm_saves_checkpoint_and_resume_gives_same_numbers);
    RUN(kill_9_and_resume_from_last_checkpoint_gives_same_numbers);
    RUN(kill_9_in_the_first_epoch_and_resume_gives_same_numbers);
    RUN(rerun_over_a_run_needs_resume_or_force);
    RUN(one_writer_per_run_folder);
    RUN(errors_are_reported);
    RUN(arch_is_recorded_and_read_back_from_the_run);
    RUN(attention_config_fields_are_recorded_and_read_back);
    RUN(unknown_arch_is_a_usage_error);
    RUN(lru_file_without_arch_loads_as_lru);
    RUN(lru_checkpoint_of_version_2_resumes);
    return test_summary();
}
