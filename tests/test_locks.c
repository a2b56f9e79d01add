/* One writer per folder (issue 18): every command that writes a folder takes its
 * lock (mr_folder_lock) before it reads any input, and a second process is refused
 * with a clear message while the first holds it.
 *
 * This program is "the first process": it holds the lock of the folder a command
 * would write, then runs the command. Its inputs do not exist, so a command that
 * read anything before taking the lock would fail on that input instead: the lock's
 * message proves the order. Once the lock is dropped the same command fails on its
 * missing input, which proves the refusal came from the lock. */
#include <stdio.h>
#include <string.h>

#include "test.h"

/* Runs `mllm4rec ARGS 2>&1` while this process holds dir's lock: exit 1, the lock's
 * message naming dir, nothing created in dir; then without the lock the command gets
 * past the lock (another message). */
static void refused_while_locked(const char *dir, const char *args) {
    mr_error e = {0};
    int fd = -1;
    char out[8192];
    CHECK_OK(mr_folder_lock(dir, &fd, &e), &e);
    int rc = test_cli(out, sizeof out, "%s 2>&1", args);
    mr_folder_unlock(fd);
    CHECK_MSG(rc == 1, "'%s' exited %d while %s was locked: %s", args, rc, dir, out);
    CHECK_MSG(strstr(out, "in use by another process"), "'%s': %s", args, out);
    CHECK_MSG(strstr(out, dir), "'%s': the message does not name %s: %s", args, dir, out);
    CHECK_MSG(strstr(out, "pid "), "'%s': the message does not name the holder: %s", args, out);
    CHECK_MSG(!mr_is_dir(dir), "'%s' created %s while it was locked", args, dir);
    rc = test_cli(out, sizeof out, "%s 2>&1", args);
    CHECK_MSG(rc != 0 && !strstr(out, "in use by another process"),
              "'%s' without the lock: exit %d: %s", args, rc, out);
}

static char missing[1024]; /* a path that does not exist: every input */

static const char *folder(const char *name) { return test_tmp_path(name); }

TEST(prepare_out) {
    const char *o = folder("prep");
    char a[8192];
    snprintf(a, sizeof a, "prepare --format movielens --input %s/ml --out %s", missing, o);
    refused_while_locked(o, a);
}

TEST(caption_dataset) {
    const char *d = folder("capds");
    char a[8192];
    snprintf(a, sizeof a, "caption --dataset %s --images %s/img --model %s/blip2", d, missing, missing);
    refused_while_locked(d, a);
    if (test_failed_now()) return;
    snprintf(a, sizeof a, "caption --dataset %s --import %s/captions.tsv", d, missing);
    refused_while_locked(d, a);
}

TEST(retriever_train_out) {
    const char *o = folder("rtrain");
    char a[8192];
    snprintf(a, sizeof a, "retriever train --dataset %s/ds --out %s", missing, o);
    refused_while_locked(o, a);
}

TEST(retriever_eval_and_candidates_run) {
    const char *r = folder("rrun");
    char a[8192];
    snprintf(a, sizeof a, "retriever eval --dataset %s/ds --run %s", missing, r);
    refused_while_locked(r, a);
    if (test_failed_now()) return;
    snprintf(a, sizeof a, "retriever candidates --dataset %s/ds --run %s -k 25", missing, r);
    refused_while_locked(r, a);
}

TEST(ranker_train_out) {
    const char *o = folder("ktrain");
    char a[8192];
    snprintf(a, sizeof a, "ranker train --dataset %s/ds --candidates %s/c.tsv --model %s/m.gguf --out %s", missing,
             missing, missing, o);
    refused_while_locked(o, a);
}

TEST(ranker_eval_out_and_adapter_folder) {
    const char *o = folder("keval");
    char a[8192];
    snprintf(a, sizeof a, "ranker eval --dataset %s/ds --candidates %s/c.tsv --model %s/m.gguf --out %s", missing,
             missing, missing, o);
    refused_while_locked(o, a);
    if (test_failed_now()) return;
    /* without --out, metrics.json goes beside the adapter: that folder is locked */
    const char *r = folder("kadapter");
    snprintf(a, sizeof a, "ranker eval --dataset %s/ds --candidates %s/c.tsv --model %s/m.gguf --adapter %s/adapter.gguf",
             missing, missing, missing, r);
    refused_while_locked(r, a);
}

TEST(experiment_run_and_report) {
    const char *o = folder("exp");
    char a[8192];
    snprintf(a, sizeof a, "experiment run %s/e.yaml --out %s", missing, o);
    refused_while_locked(o, a);
    if (test_failed_now()) return;
    snprintf(a, sizeof a, "experiment report %s", o);
    refused_while_locked(o, a);
}

TEST(model_random_blip2_out) {
    const char *o = folder("blip2");
    char a[8192];
    snprintf(a, sizeof a, "model random --arch blip2 --out %s --vocab %s/vocab.gguf", o, missing);
    refused_while_locked(o, a);
}

int main(void) {
    snprintf(missing, sizeof missing, "%s", test_tmp_path("does-not-exist"));
    RUN(prepare_out);
    RUN(caption_dataset);
    RUN(retriever_train_out);
    RUN(retriever_eval_and_candidates_run);
    RUN(ranker_train_out);
    RUN(ranker_eval_out_and_adapter_folder);
    RUN(experiment_run_and_report);
    RUN(model_random_blip2_out);
    return test_summary();
}
