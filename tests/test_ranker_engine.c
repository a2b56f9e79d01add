/* Adapters on real GGUF files (../shared/reference/models): an adapter written by
 * mllm4rec and applied the way llama.cpp applies `--lora` files gives the logits
 * of the same adapter attached in training (so an adapter trained here means to
 * the engine, and to llama.cpp, what it meant in training). Also the ranker
 * commands. */
#include "test.h"
#include "mllm4rec/llm.h"
#include "mllm4rec/ranker.h"
#include "mllm4rec/safetensors.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static double max_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fabs((double)a[i] - b[i]) > m ? fabs((double)a[i] - b[i]) : m;
    return m;
}

/* ours_flags: the state of the in-memory side. A training state keeps float
 * activations while scoring a quantized model quantizes them to 8 bits
 * (nn/matmul.h), so for such a model both sides score, and the check is the
 * adapter's file round trip alone. */
static void engine_case(const char *rel, double tol, int ours_flags) {
    const char *path = test_shared_path(rel);
    if (!path) SKIP("../shared/%s absent", rel);
    mr_error e = {0};
    llm_model lm, lf; /* lm: the adapter attached in memory (as in training); lf: applied from its file */
    CHECK_OK(llm_load(&lm, path, &e), &e);
    CHECK_OK(llm_load(&lf, path, &e), &e);
    const int T = 24, V = lm.cfg.n_vocab;
    int32_t ids[24];
    for (int i = 0; i < T; i++) ids[i] = (int32_t)((i * 37 + 11) % (V - 3) + 3);
    int64_t pos64[2] = {T - 2, T - 1};
    float *ours = malloc(2 * (size_t)V * sizeof(float)), *theirs = malloc(2 * (size_t)V * sizeof(float));
    float *base = malloc(2 * (size_t)V * sizeof(float));
    /* an adapter with non-zero B on every target */
    llm_adapter l;
    CHECK_OK(llm_adapter_init(&l, &lm, 4, 8.0f, 0.0f, (1u << LLM_LORA_N_TARGETS) - 1, 1, &e), &e);
    mr_rng rng;
    mr_rng_seed(&rng, 2);
    for (int64_t i = 0; i < l.n_params; i++) l.buf[i] = (float)(0.02 * mr_rng_normal(&rng));
    llm_state st;
    CHECK_OK(llm_state_init(&st, &lm, T, T, LLM_STATE_SCORE, &e), &e);
    CHECK_OK(llm_forward(&st, ids, T, pos64, 2, base, &e), &e);
    llm_state_free(&st);
    CHECK_OK(llm_adapter_attach(&lm, &l, 1.0f, &e), &e);
    const char *ap = test_tmp_path("engine_adapter.gguf");
    CHECK_OK(llm_adapter_write_gguf(&l, &lm, ap, &e), &e);
    CHECK_OK(llm_lora_apply_file(&lf, ap, 1.0f, &e), &e);
    CHECK_OK(llm_state_init(&st, &lm, T, T, ours_flags, &e), &e);
    CHECK_OK(llm_forward(&st, ids, T, pos64, 2, ours, &e), &e);
    llm_state_free(&st);
    CHECK_OK(llm_state_init(&st, &lf, T, T, LLM_STATE_SCORE, &e), &e);
    CHECK_OK(llm_forward(&st, ids, T, pos64, 2, theirs, &e), &e);
    llm_state_free(&st);
    double d = max_diff(ours, theirs, 2 * (int64_t)V);
    printf("  %s: max |logit difference| adapter in training vs read from its GGUF file %.3g\n", rel, d);
    CHECK_MSG(d <= tol, "%s: logits differ by %g", rel, d);
    /* and the adapter moved the logits by far more than that */
    CHECK(max_diff(base, ours, 2 * (int64_t)V) > 100 * tol);
    free(base);
    free(ours);
    free(theirs);
    llm_free(&lm);
    llm_free(&lf);
    llm_adapter_free(&l);
}

TEST(adapter_file_agrees_stories260k) { engine_case("reference/models/stories260K.gguf", 1e-4, LLM_STATE_KEEP_ACTS); }
TEST(adapter_file_agrees_tiny_llama_q4_0) { engine_case("reference/models/tiny-llama-random-q4_0.gguf", 1e-4, LLM_STATE_SCORE); }
TEST(adapter_file_agrees_tiny_qwen2) { engine_case("reference/models/tiny-qwen2-random-f32.gguf", 1e-4, LLM_STATE_KEEP_ACTS); }

/* A GGUF llama (adjacent-pair RoPE) writes PEFT files in Hugging Face row order: the
 * q/k rows of B are un-permuted, and read back to the same adapter. */
TEST(peft_from_gguf_llama_uses_hf_order) {
    const char *path = test_shared_path("reference/models/stories260K.gguf");
    if (!path) SKIP("stories260K.gguf absent");
    mr_error e = {0};
    llm_model lm;
    CHECK_OK(llm_load(&lm, path, &e), &e);
    CHECK(!lm.cfg.rope_halves && lm.cfg.arch == LLM_ARCH_LLAMA);
    llm_adapter l, back;
    CHECK_OK(llm_adapter_init(&l, &lm, 2, 4.0f, 0.0f, (1u << LLM_LORA_Q) | (1u << LLM_LORA_K) | (1u << LLM_LORA_V), 1, &e),
             &e);
    for (int64_t i = 0; i < l.n_params; i++) l.buf[i] = (float)i;
    const char *dir = test_tmp_path("peft_gguf");
    CHECK_OK(llm_adapter_write_peft(&l, &lm, dir, "stories260K", &e), &e);
    char p[1200];
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    st_file f;
    CHECK_OK(st_open(&f, p, &e), &e);
    const st_tensor *t = st_find(&f, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
    CHECK(t && t->shape[0] == lm.cfg.n_head * lm.cfg.head_dim && t->shape[1] == 2);
    const float *fb = t->data;
    const float *B = llm_adapter_get(&l, 0, LLM_LORA_Q)->b;
    const int half = lm.cfg.head_dim / 2;
    /* HF row half (second half, first pair element) = GGUF row 1; HF row 1 = GGUF row 2 */
    CHECK(fb[half * 2] == B[1 * 2] && fb[1 * 2] == B[2 * 2]);
    const st_tensor *tv = st_find(&f, "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight");
    CHECK(tv && !memcmp(tv->data, llm_adapter_get(&l, 0, LLM_LORA_V)->b, (size_t)tv->nbytes));
    st_close(&f);
    CHECK_OK(llm_adapter_read_peft(&back, &lm, dir, &e), &e);
    CHECK(back.n_params == l.n_params && !memcmp(back.buf, l.buf, (size_t)l.n_params * sizeof(float)));
    llm_adapter_free(&back);
    llm_adapter_free(&l);
    llm_free(&lm);
}

/* ---- the commands on a small MovieLens-like dataset with stories260K ---- */

static const char *world(void) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("ml"));
    test_write_dataset(dir, "ml-latest-small", test_movie_items,
                       "1\t1\t1 2 3 4 5 6\n"
                       "2\t2\t2 3 4 5 6 7\n"
                       "3\t3\t3 4 5 6 7 8\n"
                       "4\t4\t8 7 6 5 4 3\n");
    test_write_text(dir, "cands.tsv",
                    "split\tuser_id\tlabel\titems\tscores\n"
                    "val\t1\t5\t5,7,8,1\t4,3,2,1\n"
                    "test\t1\t6\t7,6,8,1\t4,3,2,1\n"
                    "val\t2\t6\t1,8,6,2\t4,3,2,1\n"
                    "test\t2\t7\t7,8,1,2\t4,3,2,1\n"
                    "val\t3\t7\t7,1,2,3\t4,3,2,1\n"
                    "test\t3\t8\t1,2,3,4\t4,3,2,1\n"
                    "val\t4\t4\t1,2,4,8\t4,3,2,1\n"
                    "test\t4\t3\t3,1,2,8\t4,3,2,1\n");
    return dir;
}

TEST(ranker_commands) {
    const char *model = test_shared_path("reference/models/stories260K.gguf");
    if (!model) SKIP("stories260K.gguf absent");
    const char *w = world();
    static char out[1 << 16];
    char common[4096];
    snprintf(common, sizeof common, "--dataset %s --candidates %s/cands.tsv --model %s --num-candidates 4 --threads 1",
             w, w, model);
    /* the prompt: exactly the template, no trailing newline after the response line */
    const char *errp = test_tmp_path("prompt.err");
    int rc = test_cli(out, sizeof out, "ranker prompt %s --user 3 --split test 2>%s", common, errp);
    CHECK_MSG(rc == 0, "prompt exited %d", rc);
    CHECK_MSG(!strncmp(out, "### Instruction:\nYou are going to play a movie enthusiast", 57), "stdout: %.300s", out);
    size_t n = strlen(out);
    CHECK(n > 20 && !strcmp(out + n - 16, "\n\n### Response:\n"));
    CHECK(strstr(out, "Previously browsed: (1) {Heat (1995) : two men with guns \n (2) {The Lion King (1994) : a lion"));
    CHECK(strstr(out, "(5) {Jaws (1975) : a shark; \n Candidate pool: (A) {Toy Story (1995) : a toy cowboy"));
    CHECK(strstr(out, "(B) {Jumanji (1995) :  \n (C)"));
    char *err;
    size_t elen;
    mr_error e = {0};
    CHECK_OK(mr_read_file(errp, &err, &elen, &e), &e);
    CHECK_MSG(strstr(err, "tokens: ") && strstr(err, "not among the candidates"), "stderr: %s", err);
    free(err);
    /* llamarec template and a cut to 64 tokens */
    rc = test_cli(out, sizeof out, "ranker prompt %s --user 1 --template llamarec 2>/dev/null", common);
    CHECK(rc == 0 && strstr(out, "Given user history in chronological order") &&
          strstr(out, "User history: (1) Toy Story (1995) \n (2) Jumanji"));
    rc = test_cli(out, sizeof out, "ranker prompt %s --user 1 --max-tokens 64 2>%s", common, errp);
    CHECK(rc == 0 && !strstr(out, "### Instruction") && strstr(out, "### Response:\n"));
    CHECK_OK(mr_read_file(errp, &err, &elen, &e), &e);
    CHECK_MSG(strstr(err, "tokens: 64") && strstr(err, "cut from the left"), "stderr: %s", err);
    free(err);
    /* errors */
    CHECK(test_cli(out, sizeof out, "ranker prompt %s --user 9 2>/dev/null", common) == 1);
    CHECK(test_cli(out, sizeof out, "ranker prompt %s --user x 2>/dev/null", common) == 2);
    CHECK(test_cli(out, sizeof out, "ranker prompt %s --user 1 --template foo 2>/dev/null", common) == 2);
    CHECK(test_cli(out, sizeof out, "ranker prompt --user 1 2>/dev/null") == 2);
    /* a short training run, then evaluation with its adapter */
    const char *run = test_tmp_path("rank_run");
    rc = test_cli(out, sizeof out,
                  "ranker train %s --history 3 --max-title-tokens 6 --max-tokens 256 --out %s --max-steps 4 --batch 2 "
                  "--val-every 2 --lr 1e-3 --warmup 1 --peft 2>/dev/null",
                  common, run);
    CHECK_MSG(rc == 0, "train exited %d", rc);
    CHECK(strstr(out, "validation NDCG@10"));
    char p[1200];
    snprintf(p, sizeof p, "%s/adapter.gguf", run);
    CHECK(mr_file_exists(p));
    snprintf(p, sizeof p, "%s/peft/adapter_config.json", run);
    CHECK(mr_file_exists(p));
    rc = test_cli(out, sizeof out,
                  "ranker eval %s --history 3 --max-title-tokens 6 --max-tokens 256 --adapter %s/adapter.gguf 2>/dev/null",
                  common, run);
    CHECK_MSG(rc == 0, "eval exited %d", rc);
    CHECK(strstr(out, "test: 4 users, 3 with the true item") && strstr(out, "| NDCG@10 |"));
    snprintf(p, sizeof p, "%s/metrics.json", run);
    char *js;
    CHECK_OK(mr_read_file(p, &js, &elen, &e), &e);
    CHECK(strstr(js, "\"test\"") && strstr(js, "\"overall\"") && strstr(js, "\"Recall@10\""));
    free(js);
    /* the PEFT folder gives the same table */
    static char out2[1 << 16];
    rc = test_cli(out2, sizeof out2,
                  "ranker eval %s --history 3 --max-title-tokens 6 --max-tokens 256 --adapter %s/peft --out %s/p 2>/dev/null",
                  common, run, run);
    CHECK(rc == 0 && !strcmp(out, out2));
}

int main(void) {
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    RUN(adapter_file_agrees_stories260k);
    RUN(adapter_file_agrees_tiny_llama_q4_0);
    RUN(adapter_file_agrees_tiny_qwen2);
    RUN(peft_from_gguf_llama_uses_hf_order);
    RUN(ranker_commands);
    return test_summary();
}
