/* mllm4rec model random: a GGUF of random weights in a given shape and type. */
#include <string.h>

#include "cli.h"
#include "mllm4rec/llm.h"

/* BLIP-2 (OPT) folders are written by the captioner's command (model_random_blip2 in cmd_model_random_blip2.c). */
int model_random_blip2(int argc, char **argv);

static int wants_blip2(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--arch=blip2") || (!strcmp(a, "--arch") && !strcmp(v, "blip2"))) return 1;
        if (!strcmp(a, "--shape=blip2-opt-2.7b") || (!strcmp(a, "--shape") && !strcmp(v, "blip2-opt-2.7b"))) return 1;
    }
    return 0;
}

CLI_COMMAND(cmd_model_random) {
    if (wants_blip2(argc, argv)) return model_random_blip2(argc, argv);
    const char *arch = "llama", *out = NULL, *type = "f32", *shape = "tiny", *vocab = NULL;
    int64_t layers = 0, dim = 0, heads = 0, kv_heads = 0, ffn = 0, n_vocab = 0, ctx = 0, seed = 1234;
    int tied = 0, untied = 0;
    cli_flag flags[] = {
        {"--arch", FLAG_STR, &arch, "llama (default), qwen2, or blip2 (a BLIP-2 folder; see --arch blip2 --help)", 0},
        {"--out", FLAG_STR, &out, "output GGUF file", 0},
        {"--shape", FLAG_STR, &shape, "tiny (default), smollm2-135m, llama2-7b (blip2-opt-2.7b with --arch blip2)", 0},
        {"--type", FLAG_STR, &type, "weight type: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k", 0},
        {"--layers", FLAG_INT, &layers, "blocks", 0},
        {"--dim", FLAG_INT, &dim, "embedding width", 0},
        {"--heads", FLAG_INT, &heads, "attention heads", 0},
        {"--kv-heads", FLAG_INT, &kv_heads, "key/value heads", 0},
        {"--ffn", FLAG_INT, &ffn, "feed-forward width", 0},
        {"--n-vocab", FLAG_INT, &n_vocab, "vocabulary size (synthetic vocabulary; ignored with --vocab)", 0},
        {"--ctx", FLAG_INT, &ctx, "declared context length", 0},
        {"--tied", FLAG_BOOL, &tied, "output head shares the token embedding", 0},
        {"--untied", FLAG_BOOL, &untied, "separate output head", 0},
        {"--vocab", FLAG_STR, &vocab, "GGUF whose tokenizer keys (and vocabulary size) are copied", 0},
        {"--seed", FLAG_INT, &seed, "random seed (default 1234)", 0},
    };
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]),
                       "usage: mllm4rec model random --arch llama|qwen2 --out FILE.gguf [--shape NAME] [--type T] "
                       "[--layers N --dim N --heads N --kv-heads N --ffn N] [--n-vocab N] [--vocab VOCAB.gguf] "
                       "[--seed S]");
    if (rc) return rc < 0 ? 0 : rc;
    if (!out) return cli_usage_error("model random", "--out is required");
    if (tied && untied) return cli_usage_error("model random", "--tied and --untied exclude each other");
    llm_random_opts o;
    mr_error e = {0};
    if (!strcmp(arch, "llama")) o.arch = LLM_ARCH_LLAMA;
    else if (!strcmp(arch, "qwen2")) o.arch = LLM_ARCH_QWEN2;
    else return cli_usage_error("model random", "--arch must be llama or qwen2, not '%s'", arch);
    if (llm_random_shape(&o, shape, &e)) return cli_report("model random", &e);
    ggml_type t;
    if (ggml_type_from_name(type, &t)) return cli_usage_error("model random", "unknown --type '%s'", type);
    o.type = t;
    int64_t *vals[] = {&layers, &dim, &heads, &kv_heads, &ffn, &n_vocab, &ctx};
    int *dst[] = {&o.n_layer, &o.n_embd, &o.n_head, &o.n_head_kv, &o.n_ff, &o.n_vocab, &o.n_ctx};
    for (int i = 0; i < 7; i++) {
        if (*vals[i] < 0 || *vals[i] > 1 << 24) return cli_usage_error("model random", "sizes must be 1..16777216");
        if (*vals[i] > 0) *dst[i] = (int)*vals[i];
    }
    if (heads > 0 && kv_heads == 0) o.n_head_kv = o.n_head;
    if (tied) o.tied = 1;
    if (untied) o.tied = 0;
    o.vocab_path = vocab;
    o.seed = (uint64_t)seed;
    mr_log("writing %s: %s, %d layers, width %d, %d heads (%d kv), ffn %d, %s", out, arch, o.n_layer, o.n_embd,
           o.n_head, o.n_head_kv, o.n_ff, ggml_type_name(o.type));
    if (llm_random_write(&o, out, &e)) return cli_report("model random", &e);
    return 0;
}
