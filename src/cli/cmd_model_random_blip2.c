/* mllm4rec model random --arch blip2: a BLIP-2 folder of random weights
 * (config.json, preprocessor_config.json, safetensors and, with --vocab, a
 * tokenizer.json made from that vocabulary) for tests and benchmarks. The
 * `model random` command of the LLM engine calls model_random_blip2 for
 * --arch blip2 (argv[0] is the subcommand name). */
#include "cli.h"
#include "mllm4rec/blip2.h"
#include "mllm4rec/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *USAGE =
    "usage: mllm4rec model random --arch blip2 --out DIR [--vocab VOCAB.gguf] [--shape tiny|blip2-opt-2.7b]\n"
    "       [--dtype f32|f16|bf16] [--seed N] [--init-std X] [--shard-mb N] [shape flags]\n"
    "Writes a BLIP-2 (OPT) folder with random weights: config.json, preprocessor_config.json,\n"
    "model.safetensors (or shards with an index) and, with --vocab, tokenizer.json.";

int model_random_blip2(int argc, char **argv);

int model_random_blip2(int argc, char **argv) {
    const char *cmd = "model random";
    const char *arch = "blip2", *out = NULL, *vocab = NULL, *shape_name = "tiny", *dtype_name = NULL;
    int64_t seed = 1, shard_mb = -1;
    double init_std = 0.02;
    int64_t sz[21];
    for (int i = 0; i < 21; i++) sz[i] = -1;
    enum { IMG, PATCH, VH, VL, VHEADS, VI, QH, QL, QHEADS, QI, CF, NQ, TH, TL, THEADS, TF, NV, MP, BOS, EOS, PAD };
    cli_flag flags[] = {
        {"--arch", FLAG_STR, &arch, "architecture: blip2 (llama and qwen2 are the engine's)", 0},
        {"--out", FLAG_STR, &out, "output folder (created)", 0},
        {"--vocab", FLAG_STR, &vocab, "GGUF file whose vocabulary becomes tokenizer.json (sets --n-vocab, bos, eos)", 0},
        {"--shape", FLAG_STR, &shape_name, "preset: tiny (default) or blip2-opt-2.7b", 0},
        {"--dtype", FLAG_STR, &dtype_name, "weight type: f32 (default for tiny), f16, bf16 (default for blip2-opt-2.7b)", 0},
        {"--seed", FLAG_INT, &seed, "random seed (default 1)", 0},
        {"--init-std", FLAG_DOUBLE, &init_std, "standard deviation of the random weights (default 0.02)", 0},
        {"--shard-mb", FLAG_INT, &shard_mb, "shard size in MB (default: one file up to 2000 MB, shards above)", 0},
        {"--image-size", FLAG_INT, &sz[IMG], "vision image size", 0},
        {"--patch-size", FLAG_INT, &sz[PATCH], "vision patch size", 0},
        {"--vision-hidden", FLAG_INT, &sz[VH], "vision hidden size", 0},
        {"--vision-layers", FLAG_INT, &sz[VL], "vision layers", 0},
        {"--vision-heads", FLAG_INT, &sz[VHEADS], "vision attention heads", 0},
        {"--vision-ffn", FLAG_INT, &sz[VI], "vision MLP size", 0},
        {"--qformer-hidden", FLAG_INT, &sz[QH], "Q-Former hidden size", 0},
        {"--qformer-layers", FLAG_INT, &sz[QL], "Q-Former layers", 0},
        {"--qformer-heads", FLAG_INT, &sz[QHEADS], "Q-Former attention heads", 0},
        {"--qformer-ffn", FLAG_INT, &sz[QI], "Q-Former feed-forward size", 0},
        {"--cross-attention-frequency", FLAG_INT, &sz[CF], "Q-Former cross-attention every N layers", 0},
        {"--n-query", FLAG_INT, &sz[NQ], "number of query tokens", 0},
        {"--hidden", FLAG_INT, &sz[TH], "OPT hidden size", 0},
        {"--layers", FLAG_INT, &sz[TL], "OPT layers", 0},
        {"--heads", FLAG_INT, &sz[THEADS], "OPT attention heads", 0},
        {"--ffn", FLAG_INT, &sz[TF], "OPT feed-forward size", 0},
        {"--n-vocab", FLAG_INT, &sz[NV], "vocabulary size (without --vocab)", 0},
        {"--max-pos", FLAG_INT, &sz[MP], "OPT max_position_embeddings", 0},
        {"--bos", FLAG_INT, &sz[BOS], "bos token id", 0},
        {"--eos", FLAG_INT, &sz[EOS], "eos token id (ends captions)", 0},
        {"--pad", FLAG_INT, &sz[PAD], "pad token id", 0},
    };
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]), USAGE);
    if (rc) return rc < 0 ? 0 : rc;
    if (strcmp(arch, "blip2")) return cli_usage_error(cmd, "--arch %s is not a BLIP-2 architecture", arch);
    if (!out) return cli_usage_error(cmd, "--out DIR is required");
    /* one writer per folder, taken before any input (--vocab) is read */
    if ((rc = cli_claim_folder(cmd, out, NULL, 0, 0))) return rc;
    mr_blip2_shape s;
    if (mr_blip2_shape_preset(shape_name, &s))
        return cli_usage_error(cmd, "unknown --shape '%s' for blip2 (tiny, blip2-opt-2.7b)", shape_name);
    int big = !strcmp(shape_name, "blip2-opt-2.7b");
    st_dtype dtype = big ? ST_BF16 : ST_F32;
    if (dtype_name) {
        if (!strcmp(dtype_name, "f32")) dtype = ST_F32;
        else if (!strcmp(dtype_name, "f16")) dtype = ST_F16;
        else if (!strcmp(dtype_name, "bf16")) dtype = ST_BF16;
        else return cli_usage_error(cmd, "--dtype must be f32, f16 or bf16");
    }
    int *fields[21] = {&s.image_size, &s.patch_size, &s.v_hidden, &s.v_layers, &s.v_heads, &s.v_inter,
                       &s.q_hidden,   &s.q_layers,   &s.q_heads,  &s.q_inter,  &s.cross_freq, &s.n_query,
                       &s.t_hidden,   &s.t_layers,   &s.t_heads,  &s.t_ffn,    &s.vocab,    &s.max_pos,
                       &s.bos,        &s.eos,        &s.pad};
    for (int i = 0; i < 21; i++) {
        if (sz[i] == -1) continue;
        if (sz[i] < 0 || sz[i] > (1 << 24)) return cli_usage_error(cmd, "shape values must be between 0 and 16777216");
        *fields[i] = (int)sz[i];
    }
    if (!(init_std > 0 && init_std < 10)) return cli_usage_error(cmd, "--init-std must be in (0, 10)");
    mr_error e = {0};
    tokenizer *tk = NULL;
    if (vocab) {
        if ((rc = tokenizer_load(&tk, vocab, &e))) return cli_report(cmd, &e);
        int32_t n = tokenizer_n_vocab(tk);
        if (sz[NV] != -1 && sz[NV] != n) {
            tokenizer_free(tk);
            return cli_usage_error(cmd, "--n-vocab %lld differs from the %d tokens of %s", (long long)sz[NV], n, vocab);
        }
        s.vocab = n;
        int32_t bos = tokenizer_bos(tk), eos = tokenizer_eos(tk), pad = tokenizer_pad(tk);
        if (sz[EOS] == -1 && eos >= 0) s.eos = eos;
        if (sz[BOS] == -1) s.bos = bos >= 0 ? bos : s.eos;
        if (sz[PAD] == -1) s.pad = pad >= 0 ? pad : s.eos;
    }
    uint64_t shard = shard_mb < 0 ? 2000ull << 20 : (uint64_t)shard_mb << 20;
    double t0 = mr_now();
    rc = mr_blip2_write_random(&s, out, dtype, (uint64_t)seed, (float)init_std, shard, &e);
    if (!rc && tk) {
        char *path = mr_path_join(out, "tokenizer.json", &e);
        rc = path ? tokenizer_write_hf_json(tk, path, &e) : MR_ERR_INTERNAL;
        free(path);
    }
    tokenizer_free(tk);
    if (rc) return cli_report(cmd, &e);
    mr_log("model random: wrote BLIP-2 %s (%s, vocab %d, vision %dx%d/%d, OPT %dx%d) to %s in %.1f s", shape_name,
           st_dtype_name(dtype), s.vocab, s.v_layers, s.v_hidden, s.image_size, s.t_layers, s.t_hidden, out,
           mr_now() - t0);
    return 0;
}

