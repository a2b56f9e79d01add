/* mllm4rec caption: BLIP-2 captions for a dataset's item images, an import of
 * captions made elsewhere, or one image (how a person tries a model and how it
 * is checked against transformers). */
#include "cli.h"
#include "mllm4rec/caption.h"
#include "mllm4rec/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *USAGE =
    "usage: mllm4rec caption --dataset D --images DIR --model BLIP2_DIR [--map FILE] [--prompt S]\n"
    "                        [--max-new-tokens N] [--decoder-type T] [--batch N] [--threads T]\n"
    "       mllm4rec caption --dataset D --import captions.tsv\n"
    "       mllm4rec caption --model BLIP2_DIR --image FILE [--prompt S | --prompt-ids \"2 45 187\"]\n"
    "                        [--max-new-tokens N] [--decoder-type T] [--print-ids] [--threads T]\n"
    "Captions item images with BLIP-2 (greedy, as transformers' generate). Images are found as\n"
    "DIR/<source_id>.jpg|jpeg|png|webp or through --map (TSV 'source_id<TAB>file', files relative to\n"
    "DIR). Captions go into D/items.tsv and D/captions.tsv; a rerun resumes after the rows there.\n"
    "OPT's weights are converted at load to --decoder-type (q8_0 by default; q4_0, bf16, f16, f32, or\n"
    "'stored' as the file holds them). The vision encoder runs --batch images per forward while the\n"
    "next images are decoded; a caption does not depend on the batch.";

static int parse_ids(const char *s, int32_t **out, int *n_out) {
    int cap = 16, n = 0;
    int32_t *ids = malloc(sizeof(int32_t) * cap);
    if (!ids) return -1;
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t') p++;
        if (!*p) break;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 2147483647L || (*end && *end != ' ' && *end != ',' && *end != '\t')) {
            free(ids);
            return -1;
        }
        if (n == cap) {
            cap *= 2;
            int32_t *ni = realloc(ids, sizeof(int32_t) * cap);
            if (!ni) {
                free(ids);
                return -1;
            }
            ids = ni;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    if (n == 0) {
        free(ids);
        return -1;
    }
    *out = ids;
    *n_out = n;
    return 0;
}

int cmd_caption(int argc, char **argv) {
    const char *cmd = "caption";
    const char *dataset = NULL, *images = NULL, *model = NULL, *map = NULL, *prompt = NULL, *prompt_ids_s = NULL,
               *import = NULL, *image = NULL, *dtype_s = "q8_0";
    int64_t max_new = 0, threads = 0, batch = MR_CAPTION_DEFAULT_BATCH;
    int print_ids = 0;
    cli_flag flags[] = {
        {"--dataset", FLAG_STR, &dataset, "prepared dataset folder", 0},
        {"--images", FLAG_STR, &images, "folder of item images", 0},
        {"--model", FLAG_STR, &model, "BLIP-2 Hugging Face folder (config.json, safetensors, tokenizer)", 0},
        {"--map", FLAG_STR, &map, "TSV 'source_id<TAB>file' naming each item's image (relative to --images)", 0},
        {"--prompt", FLAG_STR, &prompt, "text prompt after the image (e.g. \"a photo of\")", 0},
        {"--prompt-ids", FLAG_STR, &prompt_ids_s, "prompt token ids, e.g. \"2 45 187\" (single image)", 0},
        {"--max-new-tokens", FLAG_INT, &max_new, "new tokens at most (default: transformers' 19)", 0},
        {"--threads", FLAG_INT, &threads, "threads (default: all cores)", 0},
        {"--decoder-type", FLAG_STR, &dtype_s, "OPT weights: q8_0 (default), q4_0, bf16, f16, f32 or stored", 0},
        {"--batch", FLAG_INT, &batch, "images per vision-encoder forward (default " MR_CAPTION_DEFAULT_BATCH_S ")", 0},
        {"--import", FLAG_STR, &import, "import a captions TSV ('source_id<TAB>caption') into --dataset", 0},
        {"--image", FLAG_STR, &image, "caption one image file and print the caption", 0},
        {"--print-ids", FLAG_BOOL, &print_ids, "with --image: print the new token ids instead of text", 0},
    };
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]), USAGE);
    if (rc) return rc < 0 ? 0 : rc;
    if (max_new < 0 || max_new > 100000) return cli_usage_error(cmd, "--max-new-tokens must be between 1 and 100000");
    if (threads < 0 || threads > 4096) return cli_usage_error(cmd, "--threads must be positive");
    if (batch < 1 || batch > 256) return cli_usage_error(cmd, "--batch must be between 1 and 256");
    if (threads) mr_blip2_set_threads((int)threads);
    mr_blip2_options bo;
    mr_blip2_options_default(&bo);
    if (mr_blip2_decoder_type_parse(dtype_s, &bo.decoder_type))
        return cli_usage_error(cmd, "--decoder-type must be q8_0, q4_0, bf16, f16, f32 or stored");
    mr_error e = {0};
    mr_caption_stats st;
    if (mr_dist_size() > 1 && (import || image)) /* only a dataset's images are shared among ranks */
        return cli_usage_error(cmd, "--import and --image run in one process: leave out mpirun/srun");

    if (import) {
        if (!dataset) return cli_usage_error(cmd, "--import needs --dataset");
        if (model || images || image || map || prompt || prompt_ids_s || print_ids || max_new)
            return cli_usage_error(cmd, "--import takes only --dataset");
        if ((rc = cli_claim_folder(cmd, dataset, NULL, 0, 0))) return rc;
        if ((rc = mr_caption_import(dataset, import, &st, &e))) return cli_report(cmd, &e);
        printf("caption import: %lld items, %lld captions imported, %lld rows naming no item, %lld kept from "
               "captions.tsv\n",
               (long long)st.items, (long long)st.captioned, (long long)st.unknown, (long long)st.cached);
        return 0;
    }
    if (!model) return cli_usage_error(cmd, "--model is required (or --import)");
    if (prompt && prompt_ids_s) return cli_usage_error(cmd, "give --prompt or --prompt-ids, not both");
    int32_t *pids = NULL;
    int n_pids = 0;
    if (prompt_ids_s && parse_ids(prompt_ids_s, &pids, &n_pids))
        return cli_usage_error(cmd, "--prompt-ids must be non-negative integers separated by spaces");

    if (image) {
        if (dataset || images || map) {
            free(pids);
            return cli_usage_error(cmd, "--image captions one file: leave out --dataset, --images and --map");
        }
        mr_captioner c;
        if ((rc = mr_captioner_open(&c, model, &bo, prompt, pids, n_pids, (int)max_new, !print_ids, &e))) {
            free(pids);
            return cli_report(cmd, &e);
        }
        free(pids);
        const int32_t *ids;
        int n;
        char *text = NULL;
        rc = mr_caption_file(&c, image, &ids, &n, print_ids ? NULL : &text, &e);
        if (!rc) {
            if (print_ids) {
                for (int i = 0; i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
                printf("\n");
            } else {
                printf("%s\n", text);
            }
        }
        free(text);
        mr_captioner_close(&c);
        return rc ? cli_report(cmd, &e) : 0;
    }

    if (!dataset || !images) {
        free(pids);
        return cli_usage_error(cmd, "give --image FILE, or --dataset D with --images DIR");
    }
    if (print_ids || pids) {
        free(pids);
        return cli_usage_error(cmd, "--print-ids and --prompt-ids go with --image");
    }
    if ((rc = cli_claim_folder(cmd, dataset, NULL, 0, 0))) return rc;
    bo.max_batch = (int)batch;
    mr_captioner c;
    if ((rc = mr_captioner_open(&c, model, &bo, prompt, NULL, 0, (int)max_new, 1, &e))) return cli_report(cmd, &e);
    rc = mr_caption_dataset(&c, dataset, images, map, &st, &e);
    mr_captioner_close(&c);
    if (rc) return cli_report(cmd, &e);
    int64_t run = st.captioned + st.failed;
    printf("caption: %lld items: %lld captioned now, %lld from captions.tsv, %lld missing images, %lld failed; "
           "%.1f s (%.2f images/s)\n",
           (long long)st.items, (long long)st.captioned, (long long)st.cached, (long long)st.missing,
           (long long)st.failed, st.seconds, st.seconds > 0 ? run / st.seconds : 0.0);
    return 0;
}
