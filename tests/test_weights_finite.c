/* NaN or Inf in loaded weights is refused, naming the tensor: the retriever's weights
 * (eval and candidates turned every metric into 0 with them) and its checkpoint, and
 * LoRA adapters in GGUF (for training and for the engine) and PEFT form. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mllm4rec/gguf.h"
#include "mllm4rec/llm.h"
#include "mllm4rec/ranker.h"
#include "mllm4rec/retriever.h"
#include "test.h"

TEST(retriever_weights_with_nan_or_inf_are_refused) {
    const char *run = test_tmp_path("run");
    mkdir(run, 0755);
    /* a dataset of 20 items for the CLI */
    char ds[600], p[700], buf[4000];
    snprintf(ds, sizeof ds, "%s", test_tmp_path("ds"));
    mkdir(ds, 0755);
    size_t n = (size_t)snprintf(buf, sizeof buf, "item_id\tsource_id\ttitle\timage\tcaption\n");
    for (int i = 1; i <= 20; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "%d\ts%d\tT%d\t\t\n", i, i, i);
    snprintf(p, sizeof p, "%s/items.tsv", ds);
    test_write_file(p, buf, n);
    n = (size_t)snprintf(buf, sizeof buf, "user_id\tsource_user_id\titems\n");
    for (int u = 1; u <= 5; u++) n += (size_t)snprintf(buf + n, sizeof buf - n, "%d\tu%d\t%d %d %d %d\n", u, u, u, u + 1, u + 2, u + 3);
    snprintf(p, sizeof p, "%s/sequences.tsv", ds);
    test_write_file(p, buf, n);
    n = (size_t)snprintf(buf, sizeof buf, "{\"format_version\": 1, \"format\": \"sequences\", \"name\": \"w\", "
                                          "\"counts\": {\"after\": {\"users\": 5, \"items\": 20, \"interactions\": 20}}}\n");
    snprintf(p, sizeof p, "%s/meta.json", ds);
    test_write_file(p, buf, n);

    lru_config c = {.n_items = 20, .hidden = 8, .blocks = 2, .max_len = 8, .dropout = 0.1f};
    mr_error e = {0};
    const float bad[2] = {NAN, INFINITY};
    for (int k = 0; k < 2; k++) {
        lru_model m;
        CHECK_OK(lru_model_create(&m, &c, &e), &e);
        lru_model_init(&m, 3);
        /* a value inside the second block's feed-forward */
        const lru_tensor_info *victim = NULL;
        for (int i = 0; i < m.n_tensors; i++)
            if (strstr(m.tensors[i].name, "lru_blocks.1") && strstr(m.tensors[i].name, "feed_forward")) {
                victim = &m.tensors[i];
                break;
            }
        CHECK(victim != NULL);
        char victim_name[96];
        snprintf(victim_name, sizeof victim_name, "%s", victim->name);
        m.params[victim->offset + victim->numel / 2] = bad[k];
        snprintf(p, sizeof p, "%s/retriever.safetensors", run);
        CHECK_OK(lru_model_save(&m, p, &e), &e);
        lru_model_free(&m);
        lru_model back;
        CHECK(lru_model_load(&back, p, &e) == MR_ERR_INPUT);
        CHECK_MSG(strstr(e.msg, victim_name) && strstr(e.msg, k ? "Inf" : "NaN"), "%s", e.msg);
        char out[4096];
        CHECK(test_cli(out, sizeof out, "retriever eval --dataset %s --run %s 2>&1", ds, run) == 1);
        CHECK_MSG(strstr(out, victim_name), "%s", out);
        CHECK(test_cli(out, sizeof out, "retriever candidates --dataset %s --run %s 2>&1", ds, run) == 1);
    }
}

TEST(lora_adapters_with_nan_are_refused) {
    const char *model = test_shared_path("reference/models/stories260K.gguf");
    if (!model) SKIP("../shared/reference/models/stories260K.gguf absent");
    mr_error e = {0};
    llm_model lm;
    CHECK_OK(llm_load(&lm, model, &e), &e);
    llm_adapter l;
    CHECK_OK(llm_adapter_init(&l, &lm, 4, 16.0f, 0.0f, (1u << LLM_LORA_Q) | (1u << LLM_LORA_V), 5, &e), &e);
    mr_rng rng;
    mr_rng_seed(&rng, 3);
    for (int64_t i = 0; i < l.n_params; i++) l.buf[i] = (float)(0.05 * mr_rng_normal(&rng));
    /* a clean adapter loads everywhere */
    const char *gp = test_tmp_path("ok.gguf"), *pp = test_tmp_path("ok_peft");
    CHECK_OK(llm_adapter_write_gguf(&l, &lm, gp, &e), &e);
    CHECK_OK(llm_adapter_write_peft(&l, &lm, pp, "stories260K", &e), &e);
    llm_adapter back;
    CHECK_OK(llm_adapter_read_gguf(&back, &lm, gp, &e), &e);
    llm_adapter_free(&back);
    CHECK_OK(llm_adapter_read_peft(&back, &lm, pp, &e), &e);
    llm_adapter_free(&back);
    /* one NaN in layer 1's v projection B */
    llm_adapter_get(&l, 1, LLM_LORA_V)->b[5] = NAN;
    gp = test_tmp_path("nan.gguf");
    pp = test_tmp_path("nan_peft");
    CHECK_OK(llm_adapter_write_gguf(&l, &lm, gp, &e), &e);
    CHECK_OK(llm_adapter_write_peft(&l, &lm, pp, "stories260K", &e), &e);
    CHECK(llm_adapter_read_gguf(&back, &lm, gp, &e) == MR_ERR_INPUT);
    CHECK_MSG(strstr(e.msg, "blk.1.attn_v.weight.lora_b") && strstr(e.msg, "NaN"), "%s", e.msg);
    CHECK(llm_adapter_read_peft(&back, &lm, pp, &e) == MR_ERR_INPUT);
    CHECK_MSG(strstr(e.msg, "layers.1.self_attn.v_proj.lora_B") && strstr(e.msg, "NaN"), "%s", e.msg);
    /* the engine's llama.cpp-style --lora */
    CHECK(llm_lora_apply_file(&lm, gp, 1.0f, &e) == MR_ERR_INPUT);
    CHECK_MSG(strstr(e.msg, "blk.1.attn_v.weight.lora_b") && strstr(e.msg, "NaN"), "%s", e.msg);
    llm_adapter_free(&l);
    llm_free(&lm);
}

/* A base model's weights are not scanned at load (they stay mapped): NaN there reaches
 * the logits, which the ranker checks before scoring. */
TEST(base_model_nan_is_caught_at_the_logits) {
    const char *model = test_shared_path("reference/models/stories260K.gguf");
    if (!model) SKIP("../shared/reference/models/stories260K.gguf absent");
    char dir[700];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("rank"));
    test_write_dataset(dir, "ml-latest-small",
                       "1\t1\tToy Story (1995)\t\t\n2\t2\tJumanji (1995)\t\t\n3\t3\tHeat (1995)\t\t\n"
                       "4\t4\tAlien (1979)\t\t\n5\t5\tUp (2009)\t\t\n6\t6\tJaws (1975)\t\t\n",
                       "1\t1\t1 2 3 4 5\n2\t2\t2 3 4 5 6\n");
    test_write_text(dir, "cands.tsv",
                    "split\tuser_id\tlabel\titems\tscores\nval\t1\t4\t4,6,1,2\t4,3,2,1\ntest\t1\t5\t5,6,1,2\t4,3,2,1\n"
                    "val\t2\t5\t5,1,2,3\t4,3,2,1\ntest\t2\t6\t6,1,2,3\t4,3,2,1\n");
    /* a copy of the model with one NaN in the final norm's weights */
    char *bytes;
    size_t n;
    mr_error e = {0};
    CHECK_OK(mr_read_file(model, &bytes, &n, &e), &e);
    gguf_file g;
    CHECK_OK(gguf_open(&g, model, &e), &e);
    const gguf_tensor *t = gguf_find_tensor(&g, "output_norm.weight");
    CHECK(t && t->type == GGML_TYPE_F32);
    size_t at = (size_t)((const uint8_t *)t->data - (const uint8_t *)g.map) + 4 * 3;
    gguf_close(&g);
    float nan = NAN;
    memcpy(bytes + at, &nan, 4);
    char bad[800];
    snprintf(bad, sizeof bad, "%s/nan.gguf", dir);
    test_write_file(bad, bytes, n);
    free(bytes);
    char out[8192];
    const char *flags = "--num-candidates 4 --threads 1 --history 3 --max-title-tokens 6 --max-tokens 256";
    CHECK(test_cli(out, sizeof out, "ranker eval --dataset %s --candidates %s/cands.tsv --model %s %s 2>&1", dir, dir,
                   model, flags) == 0);
    CHECK(test_cli(out, sizeof out, "ranker eval --dataset %s --candidates %s/cands.tsv --model %s %s 2>&1", dir, dir,
                   bad, flags) == 1);
    CHECK_MSG(strstr(out, "NaN or Inf logits"), "%s", out);
}

int main(void) {
    RUN(retriever_weights_with_nan_or_inf_are_refused);
    RUN(lora_adapters_with_nan_are_refused);
    RUN(base_model_nan_is_caught_at_the_logits);
    return test_summary();
}
