/* The llm commands and `model random` through the program: output formats,
 * exit codes, and the numbers against the references. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "mllm4rec/llm.h"
#include "test.h"

static char out[1 << 20];

static json_t *prompt0(const char *rel, const char *variant) {
    const char *p = test_shared_path(rel);
    if (!p) return NULL;
    json_error_t err;
    json_t *j = json_load_file(p, 0, &err);
    if (!j) return NULL;
    json_t *v = json_object_get(json_object_get(j, "variants"), variant);
    json_t *pr = json_incref(json_array_get(json_object_get(v, "prompts"), 0));
    json_decref(j);
    return pr;
}

TEST(generate_prints_llama_cpp_text) {
    const char *m = test_shared_path("reference/models/stories260K.gguf");
    json_t *p = prompt0("reference/models/stories260K.reference.json", "stories260K");
    if (!m || !p) SKIP("stories260K reference not present");
    /* the references were made with an F32 KV cache */
    int rc = test_cli(out, sizeof out, "llm generate --model %s --prompt '%s' -n 64 --threads 2 --cache-type f32", m,
                      json_string_value(json_object_get(p, "prompt")));
    CHECK(rc == 0);
    CHECK_MSG(!strcmp(out, json_string_value(json_object_get(p, "greedy_text"))), "got: %s", out);
    CHECK(test_cli(NULL, 0, "llm generate --model %s --ids 1 -n 2 --cache-type f8 2>/dev/null", m) == 2);
    /* --print-ids: the ids, space separated (the default f16 cache gives the same 8 here) */
    rc = test_cli(out, sizeof out, "llm generate --model %s --prompt '%s' -n 8 --print-ids", m,
                  json_string_value(json_object_get(p, "prompt")));
    CHECK(rc == 0);
    json_t *g = json_object_get(p, "greedy_tokens");
    char expect[256] = "";
    for (int i = 0; i < 8; i++)
        snprintf(expect + strlen(expect), sizeof expect - strlen(expect), i ? " %d" : "%d",
                 (int)json_integer_value(json_array_get(g, (size_t)i)));
    strcat(expect, "\n");
    CHECK_MSG(!strcmp(out, expect), "got '%s', expected '%s'", out, expect);
    json_decref(p);
    /* 200 tokens from BOS run past the declared 128 positions: warn and go on */
    const char *errf = test_tmp_path("gen.err");
    rc = test_cli(out, sizeof out, "llm generate --model %s --ids 1 -n 200 --print-ids 2>%s", m, errf);
    CHECK(rc == 0);
    int n_ids = 0;
    for (char *s = strtok(out, " \n"); s; s = strtok(NULL, " \n")) n_ids++;
    CHECK(n_ids == 200);
    char *err = NULL;
    size_t len;
    mr_error e;
    CHECK_OK(mr_read_file(errf, &err, &len, &e), &e);
    int warned = strstr(err, "warning") && strstr(err, "128");
    free(err);
    CHECK(warned);
}

TEST(perplexity_command) {
    const char *m = test_shared_path("reference/models/stories260K.gguf");
    const char *f = test_shared_path("reference/models/ppl_text.txt");
    if (!m || !f) SKIP("stories260K reference not present");
    int rc = test_cli(out, sizeof out, "llm perplexity --model %s --file %s --ctx 128 2>/dev/null", m, f);
    CHECK(rc == 0);
    double ppl = 0;
    const char *line = strstr(out, "perplexity: ");
    CHECK(line && sscanf(line, "perplexity: %lf", &ppl) == 1);
    CHECK_MSG(fabs(ppl - 4.5730) / 4.5730 < 0.001, "perplexity %f", ppl);
    /* the random models from the text file, tokenized here (SPM with BOS, GPT-2 BPE without) */
    const char *models[] = {"tiny-llama-random-f32", "tiny-qwen2-random-f32", "tiny-llama-random-q4_0"};
    const double refs[] = {216160355.9888, 229133224.6785, 183400748.8935};
    const double tol[] = {1e-4, 1e-4, 0.01};
    for (int i = 0; i < 3; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "reference/models/%s.gguf", models[i]);
        const char *mp = test_shared_path(rel);
        if (!mp) continue;
        rc = test_cli(out, sizeof out, "llm perplexity --model %s --file %s --ctx 128 2>/dev/null", mp, f);
        CHECK(rc == 0);
        line = strstr(out, "perplexity: ");
        CHECK(line && sscanf(line, "perplexity: %lf", &ppl) == 1);
        double rel_err = fabs(log(ppl) - log(refs[i])) / log(refs[i]);
        printf("  %s: perplexity %.4f (llama.cpp %.4f), relative ln error %.3g\n", models[i], ppl, refs[i], rel_err);
        CHECK(rel_err <= tol[i]);
    }
    /* too short a text for the context is bad input */
    rc = test_cli(out, sizeof out, "llm perplexity --model %s --file %s --ctx 1024 2>/dev/null", m, f);
    CHECK(rc == 1);
}

TEST(logits_command_formats) {
    const char *m = test_shared_path("reference/models/tiny-llama-random-f32.gguf");
    json_t *p = prompt0("reference/models/tiny-llama-random.reference.json", "tiny-llama-random-f32");
    if (!m || !p) SKIP("tiny-llama reference not present");
    json_t *ids = json_object_get(p, "prompt_tokens");
    char list[256] = "";
    for (size_t i = 0; i < json_array_size(ids); i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? " " : "",
                 (int)json_integer_value(json_array_get(ids, i)));
    int rc = test_cli(out, sizeof out, "llm logits --model %s --ids '%s'", m, list);
    CHECK(rc == 0);
    /* "pos id:logit ..." with the top 10 of llama.cpp, in order */
    char *s = out;
    long pos = strtol(s, &s, 10);
    CHECK(pos == (long)json_array_size(ids) - 1);
    json_t *topk = json_object_get(p, "last_topk");
    for (size_t k = 0; k < 10; k++) {
        int id;
        double v;
        int used;
        CHECK(sscanf(s, " %d:%lf%n", &id, &v, &used) == 2);
        s += used;
        json_t *it = json_array_get(topk, k);
        CHECK(id == json_integer_value(json_object_get(it, "id")));
        CHECK_NEAR(v, json_number_value(json_object_get(it, "logit")), 1e-4);
    }
    CHECK(*s == '\n');
    /* the same from the prompt text (BOS added as the vocabulary says) */
    char out2[4096];
    rc = test_cli(out2, sizeof out2, "llm logits --model %s --prompt '%s'", m,
                  json_string_value(json_object_get(p, "prompt")));
    CHECK(rc == 0 && !strcmp(out, out2));
    /* --full --all: a line per position with every id */
    rc = test_cli(out, sizeof out, "llm logits --model %s --ids '1 9038' --full --all", m);
    CHECK(rc == 0);
    int lines = 0, pairs = 0;
    for (char *c = out; *c; c++) {
        lines += *c == '\n';
        pairs += *c == ':';
    }
    CHECK(lines == 2 && pairs == 2 * 32000);
    /* usage errors: both inputs, an id outside the vocabulary */
    CHECK(test_cli(NULL, 0, "llm logits --model %s --ids 1 --prompt x 2>/dev/null", m) == 2);
    CHECK(test_cli(NULL, 0, "llm logits --model %s --ids 32000 2>/dev/null", m) == 2);
    CHECK(test_cli(NULL, 0, "llm logits --model /nonexistent.gguf --ids 1 2>/dev/null") == 1);
    /* --lora with a file that is a model, not an adapter */
    const char *errf = test_tmp_path("lora.err");
    CHECK(test_cli(NULL, 0, "llm logits --model %s --ids 1 --lora %s 2>%s", m, m, errf) == 1);
    char *err = NULL;
    size_t len;
    mr_error e;
    CHECK_OK(mr_read_file(errf, &err, &len, &e), &e);
    int says = strstr(err, "general.type") != NULL;
    free(err);
    CHECK(says);
    json_decref(p);
}

TEST(hf_folder_without_tokenizer) {
    const char *dir = test_shared_path("reference/hf/qwen2");
    if (!dir) SKIP("reference/hf/qwen2 not present");
    const char *errf = test_tmp_path("hf.err");
    int rc = test_cli(out, sizeof out, "llm logits --model %s --prompt hello 2>%s", dir, errf);
    CHECK(rc == 2);
    char *err = NULL;
    size_t len;
    mr_error e;
    CHECK_OK(mr_read_file(errf, &err, &len, &e), &e);
    int says = strstr(err, "--ids") != NULL;
    free(err);
    CHECK(says);
    CHECK(test_cli(out, sizeof out, "llm logits --model %s --ids '50 214 41' --top 3", dir) == 0);
    CHECK(!strncmp(out, "2 ", 2));
    CHECK(test_cli(out, sizeof out, "llm generate --model %s --ids '50 214' -n 3 --print-ids", dir) == 0);
    CHECK(test_cli(out, sizeof out, "llm info --model %s", dir) == 0);
    CHECK(strstr(out, "architecture: qwen2") && strstr(out, "qkv_bias: yes") && strstr(out, "tied_output: yes"));
}

TEST(model_random_writes_loadable_models) {
    const char *path = test_tmp_path("rand.gguf");
    const char *vocab = test_shared_path("reference/models/stories260K.gguf");
    /* every storage type in a shape whose rows fit the 256-blocks */
    const char *types[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"};
    for (int i = 0; i < 11; i++) {
        int rc = test_cli(out, sizeof out,
                          "model random --arch %s --out %s --type %s --dim 256 --heads 4 --kv-heads 2 --ffn 512 "
                          "--layers 1 --n-vocab 300 2>/dev/null",
                          i % 2 ? "qwen2" : "llama", path, types[i]);
        CHECK_MSG(rc == 0, "model random --type %s: exit %d", types[i], rc);
        rc = test_cli(out, sizeof out, "llm info --model %s", path);
        CHECK(rc == 0);
        char want[64];
        snprintf(want, sizeof want, "weight_type: %s\n", types[i]);
        CHECK_MSG(strstr(out, want) != NULL, "%s", out);
        CHECK(strstr(out, "n_vocab: 300") && strstr(out, "n_embd: 256") && strstr(out, "tokenizer: yes"));
        CHECK(test_cli(out, sizeof out, "llm logits --model %s --ids '1 5 7' --top 2", path) == 0);
        double a, b;
        int ia, ib;
        CHECK(sscanf(out, "2 %d:%lf %d:%lf", &ia, &a, &ib, &b) == 4 && a >= b && isfinite(a));
    }
    /* the same seed gives the same file; the tiny preset with another vocabulary */
    if (vocab) {
        CHECK(test_cli(NULL, 0, "model random --out %s --vocab %s --type q8_0 2>/dev/null", path, vocab) == 0);
        CHECK(test_cli(out, sizeof out, "llm info --model %s", path) == 0);
        CHECK(strstr(out, "n_vocab: 512") && strstr(out, "n_layer: 2") && strstr(out, "weight_type: q8_0"));
        CHECK(test_cli(out, sizeof out, "llm generate --model %s --prompt 'Once upon' -n 4 --temp 0.7 --seed 5", path) ==
              0);
        char *first = strdup(out);
        CHECK(test_cli(out, sizeof out, "llm generate --model %s --prompt 'Once upon' -n 4 --temp 0.7 --seed 5", path) ==
              0);
        int same = !strcmp(first, out);
        free(first);
        CHECK(same);
    }
    /* shapes that do not fit a type, unknown names: usage errors */
    CHECK(test_cli(NULL, 0, "model random --out %s --type q4_k 2>/dev/null", path) == 2);
    CHECK(test_cli(NULL, 0, "model random --out %s --shape huge 2>/dev/null", path) == 2);
    CHECK(test_cli(NULL, 0, "model random --out %s --arch gpt2 2>/dev/null", path) == 2);
}

int main(void) {
    RUN(generate_prints_llama_cpp_text);
    RUN(perplexity_command);
    RUN(logits_command_formats);
    RUN(hf_folder_without_tokenizer);
    RUN(model_random_writes_loadable_models);
    return test_summary();
}
