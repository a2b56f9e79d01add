/* BLIP-2 captioning speed at the full blip2-opt-2.7b shape (ViT-g 39 layers,
 * Q-Former 12 layers, OPT-2.7B) with random BF16 weights, for each decoder type
 * (OPT's weights converted at load; the vision encoder and Q-Former stay as
 * stored): the vision encoder over batches of 1 and 4 images, the Q-Former and
 * projection, OPT's prefill (query positions + BOS and the first token) and
 * further tokens, what a default 19-token caption costs, and the peak memory of
 * a process that loads and runs that decoder type.
 *
 *   build/bench/bench_caption [--model DIR] [--types q8_0,bf16,q4_0] [--steps N]
 *                             [--threads T] [--shape tiny|blip2-opt-2.7b]
 *
 * Without --model the random folder is written once to build/bench/<shape>
 * (7.7 GB for blip2-opt-2.7b; kept for later runs). Each decoder type runs in
 * its own child process, so each peak RSS is that type's alone. Prints a table
 * and one JSON line per type. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mllm4rec/blip2.h"
#include "mllm4rec/gguf.h"

typedef struct figures {
    double load_s, vision1_s, vision4_s, qformer_s, prefill_s, token_s, image_s;
    int tokens_ran;
} figures;

static void pr_err(const mr_error *e) { fprintf(stderr, "error: %s\n", e->msg); }

/* Runs one decoder type in this process; fills f. */
static int run_type(const char *model, int dtype, int float_act, int steps, figures *f, mr_blip2_info *info) {
    mr_error e = {0};
    mr_blip2_options o;
    mr_blip2_options_default(&o);
    o.decoder_type = dtype;
    o.decoder_float_act = float_act;
    o.max_batch = 4;
    double t0 = mr_now();
    mr_blip2 *m;
    if (mr_blip2_load(&m, model, &o, &e)) {
        pr_err(&e);
        return 1;
    }
    f->load_s = mr_now() - t0;
    const mr_blip2_info *in = mr_blip2_get_info(m);
    *info = *in;
    size_t S = in->image_size, P = 3 * S * S, TE = (size_t)in->vision_tokens * in->vision_hidden;
    float *pixels = malloc(sizeof(float) * P * 4), *image = malloc(sizeof(float) * TE * 4),
          *qout = malloc(sizeof(float) * in->n_query * in->qformer_hidden),
          *soft = malloc(sizeof(float) * in->n_query * in->text_hidden);
    int32_t *ids = malloc(sizeof(int32_t) * (steps + 1));
    mr_rng r;
    mr_rng_seed(&r, 7);
    for (size_t i = 0; i < P * 4; i++) pixels[i] = (float)mr_rng_normal(&r);
    int n, rc = 0;
    t0 = mr_now();
    rc |= mr_blip2_vision_batch(m, pixels, 1, image, &e);
    f->vision1_s = mr_now() - t0;
    t0 = mr_now();
    rc |= mr_blip2_vision_batch(m, pixels, 4, image, &e);
    f->vision4_s = mr_now() - t0;
    t0 = mr_now();
    rc |= mr_blip2_qformer(m, image, qout, NULL, &e);
    rc |= mr_blip2_project(m, qout, soft, &e);
    f->qformer_s = mr_now() - t0;
    /* prefill, then `steps` more tokens (eos is unlikely with random weights; the
     * count that ran is what we divide by) */
    rc |= mr_blip2_generate_soft(m, soft, NULL, 0, 1 + steps, ids, &n, &e);
    if (rc) {
        pr_err(&e);
        return 1;
    }
    double t_decode;
    mr_blip2_last_timing(m, &f->prefill_s, &t_decode);
    f->tokens_ran = n - 1 > 0 ? n - 1 : 1;
    f->token_s = t_decode / f->tokens_ran;
    f->image_s = f->vision4_s / 4 + f->qformer_s + f->prefill_s + (in->max_new_tokens - 1) * f->token_s;
    free(pixels);
    free(image);
    free(qout);
    free(soft);
    free(ids);
    mr_blip2_free(m);
    return 0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *shape = "blip2-opt-2.7b", *types = "q8_0,bf16,q4_0";
    int steps = 3, threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--shape")) shape = argv[i + 1];
        else if (!strcmp(argv[i], "--types")) types = argv[i + 1];
        else {
            fprintf(stderr,
                    "usage: %s [--model DIR] [--types q8_0,bf16,q4_0] [--steps N] [--threads T] "
                    "[--shape tiny|blip2-opt-2.7b]\n",
                    argv[0]);
            return 2;
        }
    }
    if (argc % 2 == 0) {
        fprintf(stderr, "%s: every option takes a value\n", argv[0]);
        return 2;
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
                pr_err(&e);
                return 1;
            }
            fprintf(stderr, "written in %.1f s\n", mr_now() - t0);
        }
        model = dir;
    }
    if (threads > 0) mr_blip2_set_threads(threads);
    char list[256];
    snprintf(list, sizeof list, "%s", types);
    int first = 1;
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        /* TYPE-float: the same weights with float activations (matmul_forward_float) */
        char tname[64];
        snprintf(tname, sizeof tname, "%s", t);
        char *suffix = strstr(tname, "-float");
        int float_act = suffix && !suffix[6];
        if (float_act) *suffix = 0;
        int dtype;
        if (mr_blip2_decoder_type_parse(tname, &dtype)) {
            fprintf(stderr, "unknown decoder type %s\n", t);
            return 2;
        }
        /* each type in a child: its peak RSS is its own */
        int fd[2];
        if (pipe(fd)) return 3;
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) return 3;
        if (pid == 0) {
            close(fd[0]);
            figures f;
            mr_blip2_info in;
            int rc = run_type(model, dtype, float_act, steps, &f, &in);
            if (!rc) {
                if (write(fd[1], &f, sizeof f) != (ssize_t)sizeof f || write(fd[1], &in, sizeof in) != (ssize_t)sizeof in)
                    rc = 3;
            }
            _exit(rc);
        }
        close(fd[1]);
        figures f;
        mr_blip2_info in;
        int ok = read(fd[0], &f, sizeof f) == (ssize_t)sizeof f && read(fd[0], &in, sizeof in) == (ssize_t)sizeof in;
        close(fd[0]);
        int status;
        struct rusage ru;
        if (wait4(pid, &status, 0, &ru) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) || !ok) {
            fprintf(stderr, "the %s run failed\n", t);
            return 1;
        }
        double rss_mb = ru.ru_maxrss / 1024.0;
        /* 2 x multiply-adds of the products (attention included) */
        double T = in.vision_tokens, E = in.vision_hidden, F = in.vision_ffn;
        double vis_gflop = in.vision_layers * (2 * T * E * 4 * E + 2 * T * E * 2 * F + 4 * T * T * E) / 1e9;
        double H = in.text_hidden, L = in.text_layers, V = in.vocab, Tp = in.n_query + 1;
        /* OPT: 4 H^2 attention + 8 H^2 feed-forward (ffn 4H) per layer and position, the head once */
        double pre_gflop = (2 * Tp * L * 12 * H * H + 2 * L * Tp * Tp * H + 2 * V * H) / 1e9;
        /* one further token: the products once (attention over ~40 positions is small) and
         * the bytes of OPT's matrices read for them (the head is the tied embedding) */
        double tok_gflop = 2 * (L * 12 * H * H + V * H) / 1e9;
        double bytes_per_weight = dtype == GGML_TYPE_Q8_0 ? 34.0 / 32 : dtype == GGML_TYPE_Q4_0 ? 18.0 / 32
                                : dtype == GGML_TYPE_F32 ? 4.0 : 2.0;
        double tok_gb = (L * 12 * H * H + V * H) * bytes_per_weight / 1e9;
        if (first) {
            printf("BLIP-2 %s, %.2f B parameters (BF16 random), model %s\n", shape, in.n_params / 1e9, model);
            first = 0;
        }
        printf("decoder %s:\n", t);
        printf("  %-36s %9.2f s\n", "load (and convert)", f.load_s);
        printf("  %-36s %9.2f s  (%.0f GFLOP, %.1f GFLOP/s)\n", "vision encoder, batch of 1", f.vision1_s, vis_gflop,
               vis_gflop / f.vision1_s);
        printf("  %-36s %9.2f s  (%.2f s per image, %.1f GFLOP/s)\n", "vision encoder, batch of 4", f.vision4_s,
               f.vision4_s / 4, 4 * vis_gflop / f.vision4_s);
        printf("  %-36s %9.3f s\n", "Q-Former + projection", f.qformer_s);
        printf("  %-36s %9.2f s  (%d positions, %.0f GFLOP, %.1f GFLOP/s)\n", "OPT prefill + first token", f.prefill_s,
               in.n_query + 1, pre_gflop, pre_gflop / f.prefill_s);
        printf("  %-36s %9.3f s  (%d steps, %.1f GFLOP/s, %.1f GB/s of weights)\n", "OPT per further token", f.token_s,
               f.tokens_ran, tok_gflop / f.token_s, tok_gb / f.token_s);
        printf("  %-36s %9.2f s  -> %.4f images/s\n", "one default caption (19 tokens)", f.image_s, 1.0 / f.image_s);
        printf("  %-36s %9.0f MB (resident, includes mapped weight pages)\n", "peak memory", rss_mb);
        printf("{\"bench\":\"caption\",\"shape\":\"%s\",\"decoder\":\"%s\",\"load_s\":%.3f,\"vision1_s\":%.3f,"
               "\"vision4_s\":%.3f,\"vision_gflops_b1\":%.1f,\"vision_gflops_b4\":%.1f,\"qformer_s\":%.4f,"
               "\"prefill_s\":%.3f,\"prefill_gflops\":%.1f,\"token_s\":%.4f,\"token_gbps\":%.1f,\"image_s\":%.3f,\"peak_rss_mb\":%.0f}\n",
               shape, t, f.load_s, f.vision1_s, f.vision4_s, vis_gflop / f.vision1_s, 4 * vis_gflop / f.vision4_s,
               f.qformer_s, f.prefill_s, pre_gflop / f.prefill_s, f.token_s, tok_gb / f.token_s, f.image_s, rss_mb);
        fflush(stdout);
    }
    return 0;
}
