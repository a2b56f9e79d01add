/* The caption stage through the command line: the single-image form against
 * transformers' ids, `model random --arch blip2` with a real vocabulary, captions for a
 * dataset of real posters (found by name and through --map), missing and broken
 * images, resume after a kill and after a cut last row, and --import. */
#include "test.h"
#include "mllm4rec/dataset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char out[1 << 16];

TEST(single_image_ids_match_transformers) {
    const char *dir = test_shared_path("reference/hf/blip2");
    if (!dir) SKIP("reference/hf/blip2 not found");
    /* proc.generate_no_prompt = [2, 94, 94, 115 x 8]: the dummy bos is not printed; the
     * reference weights are F32, and F32 and BF16 decoders give transformers' ids */
    const char *types[2] = {"f32", "bf16"};
    for (int t = 0; t < 2; t++) {
        int rc = test_cli(out, sizeof out,
                          "caption --model %s --image %s/image_40x50.png --max-new-tokens 10 --print-ids "
                          "--decoder-type %s",
                          dir, dir, types[t]);
        CHECK(rc == 0);
        CHECK_MSG(!strcmp(out, "94 94 115 115 115 115 115 115 115 115\n"), "%s: %s", types[t], out);
    }
    /* the default (Q8_0) runs and gives 10 ids of the vocabulary */
    int rc = test_cli(out, sizeof out, "caption --model %s --image %s/image_40x50.png --max-new-tokens 10 --print-ids",
                      dir, dir);
    CHECK(rc == 0);
    {
        int n = 0, v, off = 0, k;
        while (sscanf(out + off, "%d%n", &v, &k) == 1) {
            CHECK(v >= 0 && v < 256);
            n++;
            off += k;
        }
        CHECK(n == 10);
    }
    CHECK(test_cli(out, sizeof out, "caption --model %s --image %s/image_40x50.png --decoder-type q3 2>/dev/null", dir,
                   dir) == 2);
    /* the prompt ids of generate_with_prompt, on the stored pixel values' PNG twin:
     * only the form is checked here (the ids come from test_blip2) */
    rc = test_cli(out, sizeof out, "caption --model %s --image %s/image_40x50.png --prompt-ids \"2 45 187 9 120\" "
                  "--max-new-tokens 3 --print-ids", dir, dir);
    CHECK(rc == 0);
    int a, b, c;
    CHECK(sscanf(out, "%d %d %d", &a, &b, &c) == 3);
    /* no tokenizer in that folder: text needs one (exit 1), usage errors exit 2 */
    CHECK(test_cli(out, sizeof out, "caption --model %s --image %s/image_40x50.png 2>/dev/null", dir, dir) == 1);
    CHECK(test_cli(out, sizeof out, "caption --model %s --image %s/image_40x50.png --prompt-ids \"2 x\" 2>/dev/null",
                   dir, dir) == 2);
    CHECK(test_cli(out, sizeof out, "caption --model %s --image %s/image_40x50.png --prompt-ids \"999\" --print-ids "
                   "2>/dev/null", dir, dir) == 1);
    CHECK(test_cli(out, sizeof out, "caption --model %s --image /nonexistent.png --print-ids 2>/dev/null", dir) == 1);
    CHECK(test_cli(out, sizeof out, "caption --image x.png 2>/dev/null") == 2);
}

static int count_lines(const char *path) {
    char *d;
    size_t n;
    mr_error e;
    if (mr_read_file(path, &d, &n, &e)) return -1;
    int c = 0;
    for (size_t i = 0; i < n; i++) c += d[i] == '\n';
    free(d);
    return c;
}

static char *read_all(const char *path) {
    char *d;
    size_t n;
    mr_error e;
    return mr_read_file(path, &d, &n, &e) ? NULL : d;
}

TEST(dataset_captions_resume_and_import) {
    const char *vocab = test_shared_path("reference/tokenizer/ggml-vocab-gpt-2.gguf");
    const char *posters = test_shared_path("data/ml100k-posters/jpg");
    const char *map = test_shared_path("data/ml100k-posters/map_ml-latest-small.tsv");
    if (!vocab || !posters || !map) SKIP("the GPT-2 vocabulary or the posters are not in ../shared");
    char model[1024], ds[1024], imgs[1024], p[2048], cache[2048], items[2048];
    snprintf(model, sizeof model, "%s", test_tmp_path("model"));
    snprintf(ds, sizeof ds, "%s", test_tmp_path("ds"));
    snprintf(imgs, sizeof imgs, "%s", test_tmp_path("imgs"));
    CHECK(test_cli(out, sizeof out, "model random --arch blip2 --out %s --vocab %s --init-std 0.3 --seed 2 2>/dev/null", model,
                   vocab) == 0);
    snprintf(p, sizeof p, "%s/tokenizer.json", model);
    CHECK(mr_file_exists(p));

    /* images named by source id: 6 posters, one broken file, one item without an image */
    mkdir(imgs, 0755);
    const char *sids[8] = {"1", "2", "3", "10", "21", "broken", "nothing", "34"};
    for (int i = 0; i < 8; i++) {
        if (!strcmp(sids[i], "nothing")) continue;
        snprintf(p, sizeof p, "%s/%s.jpg", imgs, sids[i]);
        if (!strcmp(sids[i], "broken")) {
            test_write_file(p, "\xff\xd8\xff\xe0 not really a jpeg", 22);
            continue;
        }
        char src[2048], *d;
        size_t n;
        mr_error e;
        snprintf(src, sizeof src, "%s/%s.jpg", posters, sids[i]);
        CHECK_OK(mr_read_file(src, &d, &n, &e), &e);
        test_write_file(p, d, n);
        free(d);
    }
    /* a folder given as --image: said so, exit 1 */
    {
        char err[4096];
        CHECK(test_cli(err, sizeof err, "caption --model %s --image %s 2>&1", model, imgs) == 1);
        CHECK_MSG(strstr(err, "is a folder, not a file"), "%s", err);
    }
    test_write_poster_dataset(ds, sids, 8);
    snprintf(cache, sizeof cache, "%s/captions.tsv", ds);
    snprintf(items, sizeof items, "%s/items.tsv", ds);
    CHECK(test_cli(out, sizeof out, "caption --dataset %s --images %s --model %s --max-new-tokens 6 --threads 1 2>/dev/null",
                   ds, imgs, model) == 0);
    CHECK_MSG(strstr(out, "8 items: 6 captioned now, 0 from captions.tsv, 1 missing images, 1 failed") != NULL, "%s", out);
    CHECK(count_lines(cache) == 1 + 7); /* header + every processed image (the broken one with "") */
    char *first_items = read_all(items), *first_cache = read_all(cache);
    CHECK(first_items && first_cache);
    mr_dataset d;
    mr_error e;
    CHECK_OK(mr_dataset_load(&d, ds, &e), &e);
    for (int i = 1; i <= 8; i++) {
        int want_empty = !strcmp(d.items[i].source_id, "broken") || !strcmp(d.items[i].source_id, "nothing");
        CHECK_MSG(want_empty == (d.items[i].caption[0] == 0), "item %s caption '%s'", d.items[i].source_id,
                  d.items[i].caption);
        CHECK(!strchr(d.items[i].caption, '\t'));
    }
    mr_dataset_free(&d);

    /* a caption depends only on its image: batches of 1 and 3 (with the missing and
     * the broken image inside them) give the files of the default batch (4) */
    const int batches[2] = {1, 3};
    for (int k = 0; k < 2; k++) {
        char dsb[1024], pb[2048];
        snprintf(dsb, sizeof dsb, "%s%d", test_tmp_path("ds_batch"), batches[k]);
        test_write_poster_dataset(dsb, sids, 8);
        CHECK(test_cli(out, sizeof out, "caption --dataset %s --images %s --model %s --max-new-tokens 6 --batch %d "
                       "2>/dev/null", dsb, imgs, model, batches[k]) == 0);
        CHECK_MSG(strstr(out, "8 items: 6 captioned now, 0 from captions.tsv, 1 missing images, 1 failed") != NULL, "%s",
                  out);
        snprintf(pb, sizeof pb, "%s/items.tsv", dsb);
        char *bi = read_all(pb);
        snprintf(pb, sizeof pb, "%s/captions.tsv", dsb);
        char *bc = read_all(pb);
        CHECK_MSG(bi && !strcmp(bi, first_items), "--batch %d: items.tsv differs", batches[k]);
        CHECK_MSG(bc && !strcmp(bc, first_cache), "--batch %d: captions.tsv differs", batches[k]);
        free(bi);
        free(bc);
    }
    CHECK(test_cli(out, sizeof out, "caption --dataset %s --images %s --model %s --batch 0 2>/dev/null", ds, imgs,
                   model) == 2);

    /* a rerun does nothing new */
    CHECK(test_cli(out, sizeof out, "caption --dataset %s --images %s --model %s --max-new-tokens 6 2>/dev/null", ds,
                   imgs, model) == 0);
    CHECK_MSG(strstr(out, "0 captioned now, 7 from captions.tsv, 1 missing") != NULL, "%s", out);

    /* a run killed while writing: keep the header, two rows and half a row */
    {
        const char *nl = first_cache;
        for (int k = 0; k < 3; k++) nl = strchr(nl, '\n') + 1;
        size_t keep = (size_t)(nl - first_cache);
        char buf[4096];
        memcpy(buf, first_cache, keep);
        memcpy(buf + keep, "21\thalf a cap", 13);
        test_write_file(cache, buf, keep + 13);
    }
    CHECK(test_cli(out, sizeof out, "caption --dataset %s --images %s --model %s --max-new-tokens 6 2>/dev/null", ds,
                   imgs, model) == 0);
    CHECK_MSG(strstr(out, "4 captioned now, 2 from captions.tsv, 1 missing images, 1 failed") != NULL, "%s", out);
    char *again = read_all(items);
    CHECK(again && !strcmp(again, first_items)); /* same captions as the uninterrupted run */
    free(again);
    CHECK(count_lines(cache) == 8);

    /* a real kill -9 part way, then a resume: the same result */
    test_write_file(cache, "", 0);
    CHECK(test_cli(out, sizeof out, "caption --dataset %s --images %s --model %s --max-new-tokens 6 --threads 1 "
                   ">/dev/null 2>&1 & p=$!; sleep 0.3; kill -9 $p; wait $p 2>/dev/null; true", ds, imgs, model) == 0);
    CHECK(test_cli(out, sizeof out, "caption --dataset %s --images %s --model %s --max-new-tokens 6 2>/dev/null", ds,
                   imgs, model) == 0);
    again = read_all(items);
    CHECK(again && !strcmp(again, first_items));
    free(again);

    /* --map: source ids of ml-latest-small to the poster files */
    char ds2[1024];
    snprintf(ds2, sizeof ds2, "%s", test_tmp_path("ds2"));
    /* 999999 is not in the map: missing. 33 is not in the map either, but the folder has
     * 33.jpg (ML-100K's movie 33, another film): with a map it must stay without an image */
    const char *mapped[5] = {"1", "10", "2", "999999", "33"};
    snprintf(p, sizeof p, "%s/33.jpg", posters);
    CHECK(mr_file_exists(p));
    test_write_poster_dataset(ds2, mapped, 5);
    CHECK(test_cli(out, sizeof out, "caption --dataset %s --images %s --map %s --model %s --max-new-tokens 4 2>/dev/null",
                   ds2, posters, map, model) == 0);
    CHECK_MSG(strstr(out, "5 items: 3 captioned now, 0 from captions.tsv, 2 missing images, 0 failed") != NULL, "%s", out);
    CHECK_OK(mr_dataset_load(&d, ds2, &e), &e);
    CHECK_MSG(d.items[5].caption[0] == 0, "unmapped item 33 got the caption '%s'", d.items[5].caption);
    mr_dataset_free(&d);

    /* one writer per dataset: while another process holds its lock, caption refuses */
    {
        int fd;
        CHECK_OK(mr_folder_lock(ds2, &fd, &e), &e);
        char err[4096];
        CHECK(test_cli(err, sizeof err, "caption --dataset %s --images %s --map %s --model %s 2>&1", ds2, posters, map,
                       model) == 1);
        CHECK_MSG(strstr(err, "in use by another process"), "%s", err);
        CHECK(test_cli(err, sizeof err, "caption --dataset %s --import %s/nothing.tsv 2>&1", ds2, test_tmpdir()) == 1);
        CHECK_MSG(strstr(err, "in use by another process"), "%s", err);
        mr_folder_unlock(fd);
    }
    /* import: rows for known items replace captions; unknown ones are counted */
    snprintf(p, sizeof p, "%s/import.tsv", test_tmpdir());
    const char *imp = "source_id\tcaption\n1\ta red poster\n999999\ta blue one\nnot-an-item\tx\n";
    test_write_file(p, imp, strlen(imp));
    CHECK(test_cli(out, sizeof out, "caption --dataset %s --import %s 2>/dev/null", ds2, p) == 0);
    CHECK_MSG(strstr(out, "2 captions imported, 1 rows naming no item") != NULL, "%s", out);
    CHECK_OK(mr_dataset_load(&d, ds2, &e), &e);
    CHECK(!strcmp(d.items[1].caption, "a red poster") && !strcmp(d.items[4].caption, "a blue one"));
    CHECK(d.items[2].caption[0] != 0); /* captioned before, kept */
    mr_dataset_free(&d);
    snprintf(p, sizeof p, "%s/captions.tsv", ds2);
    CHECK(count_lines(p) == 1 + 4); /* 3 images processed + the imported 999999 */
    /* a bad header is an input error */
    snprintf(p, sizeof p, "%s/bad.tsv", test_tmpdir());
    test_write_file(p, "id\tcaption\n1\tx\n", 15);
    CHECK(test_cli(out, sizeof out, "caption --dataset %s --import %s 2>/dev/null", ds2, p) == 1);
    free(first_items);
    free(first_cache);
}

/* ml-latest-small with the ML-100K posters through the map: exactly the items the map
 * lists and whose file exists get a caption (the map's own count, computed here), no
 * other item; a caption of an unlisted item would be another movie's poster. */
TEST(map_on_ml_latest_small_captions_exactly_the_mapped_posters) {
    const char *vocab = test_shared_path("reference/tokenizer/ggml-vocab-gpt-2.gguf");
    const char *posters = test_shared_path("data/ml100k-posters/jpg");
    const char *map = test_shared_path("data/ml100k-posters/map_ml-latest-small.tsv");
    const char *raw = test_shared_path("data/ml-latest-small");
    if (!vocab || !posters || !map || !raw) SKIP("the GPT-2 vocabulary, posters or ml-latest-small are not in ../shared");
    char model[1024], ds[1024];
    snprintf(model, sizeof model, "%s", test_tmp_path("model_mls"));
    snprintf(ds, sizeof ds, "%s", test_tmp_path("mls"));
    CHECK(test_cli(out, sizeof out, "model random --arch blip2 --out %s --vocab %s --seed 2 2>/dev/null", model, vocab) == 0);
    CHECK(test_cli(out, sizeof out, "prepare --format movielens --input %s --out %s 2>/dev/null", raw, ds) == 0);
    mr_dataset d;
    mr_error e;
    CHECK_OK(mr_dataset_load(&d, ds, &e), &e);
    /* the map: source id -> file; an item is expected to have a poster when listed and present */
    char *text;
    size_t len;
    CHECK_OK(mr_read_file(map, &text, &len, &e), &e);
    char *want = calloc((size_t)d.n_items + 1, 1);
    int64_t n_want = 0;
    for (char *line = strchr(text, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
        char sid[64], file[256], p[2048];
        if (sscanf(line + 1, "%63[^\t]\t%255[^\n]", sid, file) != 2) continue;
        snprintf(p, sizeof p, "%s/%s", posters, file);
        for (int64_t i = 1; i <= d.n_items; i++)
            if (!strcmp(d.items[i].source_id, sid) && !want[i] && mr_file_exists(p)) {
                want[i] = 1;
                n_want++;
            }
    }
    free(text);
    mr_dataset_free(&d);
    CHECK(test_cli(out, sizeof out, "caption --dataset %s --images %s --map %s --model %s --max-new-tokens 1 2>/dev/null",
                   ds, posters, map, model) == 0);
    long long items = 0, captioned = 0;
    const char *at = strstr(out, " items: ");
    CHECK_MSG(at && sscanf(out, "caption: %lld items: %lld captioned now", &items, &captioned) == 2, "%s", out);
    printf("  %lld items, %lld captioned, %lld listed in the map with a poster\n", items, captioned, (long long)n_want);
    CHECK(captioned == n_want);
    CHECK_OK(mr_dataset_load(&d, ds, &e), &e);
    int64_t with_caption = 0, wrong = 0;
    for (int64_t i = 1; i <= d.n_items; i++) {
        with_caption += d.items[i].caption[0] != 0;
        wrong += d.items[i].caption[0] != 0 && !want[i];
    }
    mr_dataset_free(&d);
    free(want);
    CHECK_MSG(wrong == 0, "%lld items outside the map have a caption", (long long)wrong);
    CHECK(with_caption <= n_want);
}

int main(void) {
    RUN(single_image_ids_match_transformers);
    RUN(dataset_captions_resume_and_import);
    RUN(map_on_ml_latest_small_captions_exactly_the_mapped_posters);
    return test_summary();
}
