/* BLIP-2 captioning speed at the full blip2-opt-2.7b shape (ViT-g 39 layers,
 * Q-Former 12 layers, OPT-2.7B) with random BF16 weights: the vision encoder,
 * Q-Former and projection once, OPT's prefill, a few decoder steps, and the
 * images/s a default 19-token caption would give; peak memory.
 *
 *   build/bench/bench_caption [--model DIR] [--steps N] [--threads T] [--shape tiny]
 *
 * Without --model the random folder is written once to build/bench/blip2-opt-2.7b
 * (7.7 GB; kept for later runs). Prints a table and one JSON line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "mllm4rec/blip2.h"

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *shape = "blip2-opt-2.7b";
    int steps = 3, threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--shape")) shape = argv[i + 1];
        else {
            fprintf(stderr, "usage: %s [--model DIR] [--steps N] [--threads T] [--shape tiny|blip2-opt-2.7b]\n", argv[0]);
            return 2;
        }
    }
    if (steps < 1) steps = 1;
    mr_error e = {0};
    char dir[512];
    if (!model) {
        snprintf(dir, sizeof dir, "build/bench/%s", shape);
        char cfg[600];
        snprintf(cfg, sizeof cfg, "%s/config.json", dir);
        if (!mr_file_exists(cfg)) {
            mr_blip2_shape s;
            if (mr_blip2_shape_preset(shape, &s)) {
                fprintf(stderr, "unknown shape %s\n", shape);
                return 2;
            }
            fprintf(stderr, "writing random %s (BF16) to %s once ...\n", shape, dir);
            double t0 = mr_now();
            if (mr_blip2_write_random(&s, dir, ST_BF16, 1, 0.02f, 2000ull << 20, &e)) {
                fprintf(stderr, "error: %s\n", e.msg);
                return 1;
            }
            fprintf(stderr, "written in %.1f s\n", mr_now() - t0);
        }
        model = dir;
    }
    if (threads > 0) mr_blip2_set_threads(threads);
    double t0 = mr_now();
    mr_blip2 *m;
    if (mr_blip2_load(&m, model, NULL, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        return 1;
    }
    double t_load = mr_now() - t0;
    const mr_blip2_info *in = mr_blip2_get_info(m);
    size_t S = in->image_size, TE = (size_t)in->vision_tokens * in->vision_hidden;
    float *pixels = malloc(sizeof(float) * 3 * S * S), *image = malloc(sizeof(float) * TE),
          *qout = malloc(sizeof(float) * in->n_query * in->qformer_hidden),
          *soft = malloc(sizeof(float) * in->n_query * in->text_hidden);
    int32_t *ids = malloc(sizeof(int32_t) * (steps + 1));
    mr_rng r;
    mr_rng_seed(&r, 7);
    for (size_t i = 0; i < 3 * S * S; i++) pixels[i] = (float)mr_rng_normal(&r);
    int n, rc = 0;
    t0 = mr_now();
    rc |= mr_blip2_vision(m, pixels, image, NULL, &e);
    double t_vision = mr_now() - t0;
    t0 = mr_now();
    rc |= mr_blip2_qformer(m, image, qout, NULL, &e);
    rc |= mr_blip2_project(m, qout, soft, &e);
    double t_qformer = mr_now() - t0;
    /* prefill, then `steps` more tokens (eos is unlikely with random weights; the
     * count that ran is what we divide by) */
    rc |= mr_blip2_generate_soft(m, soft, NULL, 0, 1 + steps, ids, &n, &e);
    if (rc) {
        fprintf(stderr, "error: %s\n", e.msg);
        return 1;
    }
    double t_prefill, t_decode;
    mr_blip2_last_timing(m, &t_prefill, &t_decode);
    int ran = n - 1 > 0 ? n - 1 : 1;
    double t_token = t_decode / ran;
    int caption_tokens = in->max_new_tokens;
    double t_image = t_vision + t_qformer + t_prefill + (caption_tokens - 1) * t_token;
    double vis_gflop = 0;
    {
        /* 2 x multiply-adds of the vision transformer's products */
        double T = in->vision_tokens, E = in->vision_hidden, F = in->vision_ffn;
        vis_gflop = in->vision_layers * (2 * T * E * 4 * E + 2 * T * E * 2 * F + 4 * T * T * E) / 1e9;
    }
    printf("BLIP-2 %s, %.2f B parameters (BF16 random), model %s\n", shape, in->n_params / 1e9, model);
    printf("  %-34s %10.2f s\n", "load", t_load);
    printf("  %-34s %10.2f s  (%.0f GFLOP, %.1f GFLOP/s)\n", "vision encoder (1 image)", t_vision, vis_gflop,
           vis_gflop / t_vision);
    printf("  %-34s %10.3f s\n", "Q-Former + projection", t_qformer);
    printf("  %-34s %10.2f s  (%d positions)\n", "OPT prefill + first token", t_prefill, in->n_query + 1);
    printf("  %-34s %10.2f s  (%d steps)\n", "OPT per further token", t_token, ran);
    printf("  %-34s %10.2f s  -> %.4f images/s\n", "one default caption (19 tokens)", t_image, 1.0 / t_image);
    printf("  %-34s %10.0f MB (resident, includes mapped weight pages)\n", "peak memory", peak_rss_mb());
    printf("{\"bench\":\"caption\",\"shape\":\"%s\",\"load_s\":%.3f,\"vision_s\":%.3f,\"qformer_s\":%.4f,"
           "\"prefill_s\":%.3f,\"token_s\":%.3f,\"image_s\":%.3f,\"images_per_s\":%.5f,\"peak_rss_mb\":%.0f}\n",
           shape, t_load, t_vision, t_qformer, t_prefill, t_token, t_image, 1.0 / t_image, peak_rss_mb());
    free(pixels);
    free(image);
    free(qout);
    free(soft);
    free(ids);
    mr_blip2_free(m);
    return 0;
}
