/* Ranker training, scoring and adapter files on the tiny transformers Llama
 * (../shared/reference/hf/llama, vocabulary 256) with a byte tokenizer: the loss
 * goes down, a resumed run equals an uninterrupted one, adapters written as GGUF
 * and PEFT load back with identical scores, evaluation counts users right. */
#include "test.h"
#include "mllm4rec/ranker.h"
#include "mllm4rec/safetensors.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int byte_encode(void *ctx, const char *text, int32_t **ids, int64_t *n, mr_error *e) {
    size_t len = strlen(text);
    *ids = mr_alloc((len + 1) * sizeof **ids, e);
    if (!*ids) return e->code;
    for (size_t i = 0; i < len; i++) (*ids)[i] = ((unsigned char)text[i] % 250) + 3;
    *n = (int64_t)len;
    return MR_OK;
}
static int byte_decode(void *ctx, const int32_t *ids, int64_t n, char **text, mr_error *e) {
    *text = mr_alloc((size_t)n + 1, e);
    if (!*text) return e->code;
    for (int64_t i = 0; i < n; i++) (*text)[i] = (char)(ids[i] - 3);
    (*text)[n] = 0;
    return MR_OK;
}
static int byte_truncate(void *ctx, const char *text, int max_tokens, char **out, mr_error *e) {
    size_t len = strlen(text);
    if (len > (size_t)max_tokens) len = (size_t)max_tokens;
    *out = mr_alloc(len + 1, e);
    if (!*out) return e->code;
    memcpy(*out, text, len);
    (*out)[len] = 0;
    return MR_OK;
}
static const mr_rank_tok BYTE_TOK = {NULL, byte_encode, byte_decode, byte_truncate, 1, 2};

/* 12 items, 6 users whose sequences walk the items in steps of one (so the next
 * item is always "the one after the last"); candidates put the label at varying
 * letters. */
static const char *make_world(mr_dataset *d, mr_candidates *c, mr_error *e) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("world"));
    mkdir(dir, 0755);
    char p[1200];
    const char *meta = "{\"format_version\": 1, \"format\": \"sequences\", \"name\": \"walk\",\n"
                       " \"counts\": {\"after\": {\"users\": 6, \"items\": 12, \"interactions\": 36}}}\n";
    snprintf(p, sizeof p, "%s/meta.json", dir);
    test_write_file(p, meta, strlen(meta));
    char items[2048] = "item_id\tsource_id\ttitle\timage\tcaption\n";
    for (int i = 1; i <= 12; i++) {
        char row[128];
        snprintf(row, sizeof row, "%d\ts%d\tt%c\t\tc%c\n", i, i, 'a' + i, 'a' + i);
        strcat(items, row);
    }
    snprintf(p, sizeof p, "%s/items.tsv", dir);
    test_write_file(p, items, strlen(items));
    char seqs[2048] = "user_id\tsource_user_id\titems\n", cands[4096] = "split\tuser_id\tlabel\titems\tscores\n";
    for (int u = 1; u <= 6; u++) {
        char row[256];
        int s = u; /* user u walks s, s+1, ..., s+5 (mod 12) */
        int it[6];
        for (int k = 0; k < 6; k++) it[k] = (s + k - 1) % 12 + 1;
        snprintf(row, sizeof row, "%d\tu%d\t%d %d %d %d %d %d\n", u, u, it[0], it[1], it[2], it[3], it[4], it[5]);
        strcat(seqs, row);
        /* val label it[4], test label it[5]; user 6's test label is missed */
        int v0 = (it[4] % 12) + 1, v1 = (it[4] + 2) % 12 + 1;
        snprintf(row, sizeof row, "val\t%d\t%d\t%d %d %d %d\t4 3 2 1\n", u, it[4], v0, u % 2 ? it[4] : v1,
                 u % 2 ? v1 : it[4], (it[4] + 4) % 12 + 1);
        strcat(cands, row);
        int miss = (it[5] + 5) % 12 + 1;
        snprintf(row, sizeof row, "test\t%d\t%d\t%d %d %d %d\t4 3 2 1\n", u, it[5], u == 6 ? miss : it[5],
                 (it[5] + 1) % 12 + 1, (it[5] + 2) % 12 + 1, (it[5] + 3) % 12 + 1);
        strcat(cands, row);
    }
    snprintf(p, sizeof p, "%s/sequences.tsv", dir);
    test_write_file(p, seqs, strlen(seqs));
    const char *cp = test_tmp_path("world_cands.tsv");
    test_write_file(cp, cands, strlen(cands));
    if (mr_dataset_load(d, dir, e)) return NULL;
    if (mr_candidates_load(c, cp, e)) return NULL;
    if (mr_candidates_check(c, d, e)) return NULL;
    return dir;
}

static void opts(mr_prompt_opts *po) {
    mr_prompt_opts_default(po);
    po->system = "Rank.";
    po->history = 3;
    po->max_title_tokens = 4;
    po->max_tokens = 160;
}

TEST(evaluation_counts_and_adapter_round_trips) {
    const char *hf = test_shared_path("reference/hf/llama");
    if (!hf) SKIP("../shared/reference/hf/llama absent");
    mr_error e = {0};
    /* mb: the base model; mw: with the adapter l; mr: with l read back from its file */
    llm_model mb, mw, mr;
    CHECK_OK(llm_load(&mb, hf, &e), &e);
    CHECK_OK(llm_load(&mw, hf, &e), &e);
    CHECK_OK(llm_load(&mr, hf, &e), &e);
    mr_dataset d;
    mr_candidates c;
    CHECK_MSG(make_world(&d, &c, &e), "%s", e.msg);
    mr_prompt_opts po;
    opts(&po);
    /* an adapter with non-zero B on every target, so it changes the scores */
    llm_adapter l;
    CHECK_OK(llm_adapter_init(&l, &mw, 4, 16.0f, 0.0f, (1u << LLM_LORA_N_TARGETS) - 1, 5, &e), &e);
    mr_rng rng;
    mr_rng_seed(&rng, 3);
    for (int64_t i = 0; i < l.n_params; i++) l.buf[i] = (float)(0.05 * mr_rng_normal(&rng));
    CHECK_OK(llm_adapter_attach(&mw, &l, 1.0f, &e), &e);
    mr_ranker base, with;
    CHECK_OK(mr_ranker_init(&base, &d, &c, &BYTE_TOK, &po, 4, &mb, NULL, &e), &e);
    CHECK_OK(mr_ranker_init(&with, &d, &c, &BYTE_TOK, &po, 4, &mw, &l, &e), &e);
    float s0[4], s1[4], s2[4];
    CHECK_OK(mr_ranker_score(&base, MR_SPLIT_TEST, 2, s0, -1, NULL, &e), &e);
    CHECK_OK(mr_ranker_score(&with, MR_SPLIT_TEST, 2, s1, -1, NULL, &e), &e);
    CHECK(fabsf(s0[0] - s1[0]) > 1e-3f);
    /* the scores are the letter logits of a full forward at the last position */
    {
        char *text;
        int32_t *ids;
        int64_t n;
        CHECK_OK(mr_ranker_prompt(&with, MR_SPLIT_TEST, 2, &text, &ids, &n, &e), &e);
        CHECK(strstr(text, "(A) {t") && n <= po.max_tokens && ids[0] == 1);
        float *lg = malloc(256 * sizeof(float));
        llm_state ws;
        CHECK_OK(llm_state_init(&ws, &mw, n, n, LLM_STATE_KEEP_ACTS, &e), &e);
        int64_t last = n - 1;
        CHECK_OK(llm_forward(&ws, ids, n, &last, 1, lg, &e), &e);
        for (int i = 0; i < 4; i++) CHECK_NEAR(lg['A' + i + 3], s1[i], 1e-5);
        free(lg);
        llm_state_free(&ws);
        free(text);
        free(ids);
    }
    /* GGUF adapter: written with llama.cpp's q/k order, read back identical */
    const char *gp = test_tmp_path("a.gguf");
    CHECK_OK(llm_adapter_write_gguf(&l, &mw, gp, &e), &e);
    llm_adapter lg;
    CHECK_OK(llm_adapter_read_gguf(&lg, &mr, gp, &e), &e);
    CHECK(lg.r == 4 && lg.alpha == 16.0f && lg.targets == l.targets && lg.n_params == l.n_params);
    CHECK(!memcmp(lg.buf, l.buf, (size_t)l.n_params * sizeof(float)));
    /* the file's q B rows are in adjacent-pair order: row 1 of head 0 is HF row hd/2 */
    {
        gguf_file g;
        CHECK_OK(gguf_open(&g, gp, &e), &e);
        const gguf_tensor *tb = gguf_find_tensor(&g, "blk.1.attn_q.weight.lora_b");
        CHECK(tb && tb->ne[0] == 4 && tb->ne[1] == 64);
        const float *fb = tb->data;
        const llm_lora *q = llm_adapter_get(&l, 1, LLM_LORA_Q);
        CHECK(!memcmp(fb + 1 * 4, q->b + 8 * 4, 4 * sizeof(float)));
        CHECK(!memcmp(fb + 2 * 4, q->b + 1 * 4, 4 * sizeof(float)));
        const gguf_tensor *tv = gguf_find_tensor(&g, "blk.0.attn_v.weight.lora_b");
        CHECK(tv && !memcmp(tv->data, llm_adapter_get(&l, 0, LLM_LORA_V)->b, 32 * 4 * sizeof(float)));
        const gguf_tensor *ta = gguf_find_tensor(&g, "blk.0.ffn_down.weight.lora_a");
        CHECK(ta && ta->ne[0] == 172 && ta->ne[1] == 4);
        char *s;
        CHECK_OK(gguf_get_str(&g, "general.type", &s, &e), &e);
        CHECK(!strcmp(s, "adapter"));
        free(s);
        CHECK_OK(gguf_get_str(&g, "adapter.type", &s, &e), &e);
        CHECK(!strcmp(s, "lora"));
        free(s);
        gguf_close(&g);
    }
    /* PEFT folder: Hugging Face names and shapes, read back identical */
    const char *pp = test_tmp_path("peft");
    CHECK_OK(llm_adapter_write_peft(&l, &mw, pp, "tiny-llama", &e), &e);
    llm_adapter lp;
    CHECK_OK(llm_adapter_read_peft(&lp, &mw, pp, &e), &e);
    CHECK(!memcmp(lp.buf, l.buf, (size_t)l.n_params * sizeof(float)) && lp.alpha == 16.0f);
    {
        char sp[1200];
        snprintf(sp, sizeof sp, "%s/adapter_model.safetensors", pp);
        st_file f;
        CHECK_OK(st_open(&f, sp, &e), &e);
        const st_tensor *t = st_find(&f, "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight");
        CHECK(t && t->n_dims == 2 && t->shape[0] == 64 && t->shape[1] == 4);
        CHECK(!memcmp(t->data, llm_adapter_get(&l, 1, LLM_LORA_Q)->b, 64 * 4 * sizeof(float)));
        t = st_find(&f, "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight");
        CHECK(t && t->shape[0] == 4 && t->shape[1] == 172);
        st_close(&f);
    }
    mr_ranker back;
    CHECK_OK(llm_adapter_attach(&mr, &lg, 1.0f, &e), &e);
    CHECK_OK(mr_ranker_init(&back, &d, &c, &BYTE_TOK, &po, 4, &mr, NULL, &e), &e);
    CHECK_OK(mr_ranker_score(&back, MR_SPLIT_TEST, 2, s2, -1, NULL, &e), &e);
    CHECK(!memcmp(s1, s2, sizeof s1));
    /* evaluation: 6 test users, user 6 missed by the retriever */
    mr_rank_eval ev;
    CHECK_OK(mr_ranker_evaluate(&with, MR_SPLIT_TEST, 0, 0, &ev, &e), &e);
    CHECK(ev.n_users == 6 && ev.n_subset == 5);
    /* the retriever puts every subset label first */
    CHECK_NEAR(mr_metrics_get(&ev.retr_subset, MR_RECALL, 1), 1.0, 1e-12);
    CHECK_NEAR(mr_metrics_get(&ev.retr_overall, MR_RECALL, 1), 5.0 / 6.0, 1e-12);
    CHECK_NEAR(mr_metrics_get(&ev.overall, MR_NDCG, 10), mr_metrics_get(&ev.subset, MR_NDCG, 10) * 5.0 / 6.0, 1e-12);
    CHECK(ev.letter_loss > 0);
    const char *mp = test_tmp_path("metrics.json");
    CHECK_OK(mr_rank_eval_write_json(&ev, "test", mp, &e), &e);
    char *js;
    size_t jl;
    CHECK_OK(mr_read_file(mp, &js, &jl, &e), &e);
    CHECK(strstr(js, "\"test\"") && strstr(js, "\"subset\"") && strstr(js, "\"NDCG@10\"") &&
          strstr(js, "\"retriever_overall\"") && strstr(js, "\"subset_users\": 5"));
    free(js);
    mr_rank_eval_free(&ev);
    /* capped validation: only subset users, the first N */
    CHECK_OK(mr_ranker_evaluate(&with, MR_SPLIT_VAL, 2, 0, &ev, &e), &e);
    CHECK(ev.n_subset == 2 && ev.n_users == 2);
    mr_rank_eval_free(&ev);
    mr_ranker_free(&back);
    mr_ranker_free(&base);
    mr_ranker_free(&with);
    llm_free(&mb);
    llm_free(&mw);
    llm_free(&mr);
    llm_adapter_free(&lg);
    llm_adapter_free(&lp);
    llm_adapter_free(&l);
    mr_candidates_free(&c);
    mr_dataset_free(&d);
}

static int train_run(llm_model *m, mr_dataset *d, mr_candidates *c, const char *out, int64_t steps, int resume,
                     int64_t stop_after, llm_adapter *l, mr_rank_train_result *res, mr_error *e) {
    mr_prompt_opts po;
    opts(&po);
    mr_rank_train_opts o;
    mr_rank_train_opts_default(&o);
    o.lr = 3e-3;
    o.warmup = 2;
    o.batch = 3;
    o.max_steps = steps;
    o.val_every = 4;
    o.patience = 100;
    o.out_dir = out;
    o.resume = resume;
    o.stop_after = stop_after;
    o.seed = 9;
    int rc = llm_adapter_init(l, m, o.lora_r, o.lora_alpha, o.lora_dropout, o.targets, o.seed, e);
    if (rc) return rc;
    if ((rc = llm_adapter_attach(m, l, 1.0f, e))) return rc;
    mr_ranker r;
    if (!(rc = mr_ranker_init(&r, d, c, &BYTE_TOK, &po, 4, m, l, e))) rc = mr_ranker_train(&r, &o, res, e);
    mr_ranker_free(&r);
    llm_adapter_detach(m, l);
    return rc;
}

TEST(training_lowers_loss_and_resumes_exactly) {
    const char *hf = test_shared_path("reference/hf/llama");
    if (!hf) SKIP("../shared/reference/hf/llama absent");
    mr_error e = {0};
    llm_model m;
    CHECK_OK(llm_load(&m, hf, &e), &e);
    mr_dataset d;
    mr_candidates c;
    CHECK_MSG(make_world(&d, &c, &e), "%s", e.msg);
    const int64_t steps = test_under_sanitizer() ? 8 : 16;
    llm_adapter a, b;
    mr_rank_train_result ra, rb;
    const char *out_a = test_tmp_path("run_a"), *out_b = test_tmp_path("run_b");
    CHECK_OK(train_run(&m, &d, &c, out_a, steps, 0, 0, &a, &ra, &e), &e);
    CHECK(ra.steps == steps);
    CHECK_MSG(ra.last_train_loss < ra.first_train_loss, "train loss %.4f -> %.4f", ra.first_train_loss,
              ra.last_train_loss);
    char path[1200];
    snprintf(path, sizeof path, "%s/adapter.gguf", out_a);
    CHECK(mr_file_exists(path));
    snprintf(path, sizeof path, "%s/train.jsonl", out_a);
    CHECK(mr_file_exists(path));
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", out_a);
    CHECK(mr_file_exists(path));
    /* interrupted after 8 steps (the state is written at each validation), resumed */
    CHECK_OK(train_run(&m, &d, &c, out_b, steps, 0, 8, &b, &rb, &e), &e);
    CHECK(rb.steps == 8);
    llm_adapter_free(&b);
    if (steps > 8) {
        CHECK_OK(train_run(&m, &d, &c, out_b, steps, 1, 0, &b, &rb, &e), &e);
        CHECK(rb.steps == steps);
        CHECK_NEAR(rb.best_val_ndcg10, ra.best_val_ndcg10, 0);
        CHECK(rb.best_step == ra.best_step);
        CHECK_MSG(rb.last_train_loss == ra.last_train_loss, "resumed %.9g, uninterrupted %.9g", rb.last_train_loss,
                  ra.last_train_loss);
        CHECK(!memcmp(a.buf, b.buf, (size_t)a.n_params * sizeof(float)));
        llm_adapter_free(&b);
    }
    llm_adapter_free(&a);
    mr_candidates_free(&c);
    mr_dataset_free(&d);
    llm_free(&m);
}

int main(void) {
    /* tiny models: one thread (threads only add overhead at these sizes, and a busy
     * machine makes spinning OpenMP workers very slow) */
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    RUN(evaluation_counts_and_adapter_round_trips);
    RUN(training_lowers_loss_and_resumes_exactly);
    return test_summary();
}
