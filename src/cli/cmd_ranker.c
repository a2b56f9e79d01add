/* mllm4rec ranker prompt | train | eval: the LLM ranker (LoRA-tuned verbalizer
 * ranking of the retriever's candidates). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mllm4rec/exp.h"
#include "mllm4rec/dist.h"
#include "mllm4rec/llm.h"
#include "mllm4rec/ranker.h"
#include "mllm4rec/tokenizer.h"

/* Flags every ranker command shares. */
typedef struct common_opts {
    const char *dataset, *candidates, *model, *templ, *role, *split, *captions;
    int64_t history, max_title_tokens, max_tokens, num_candidates, threads;
} common_opts;

#define COMMON_FLAGS(c)                                                                                            \
    {"--dataset", FLAG_STR, &(c).dataset, "prepared dataset folder (required)", 0},                              \
        {"--candidates", FLAG_STR, &(c).candidates, "the retriever's RUN/candidates.tsv (required)", 0},         \
        {"--model", FLAG_STR, &(c).model, "GGUF file or Hugging Face folder of a llama/qwen2 model (required)", 0}, \
        {"--template", FLAG_STR, &(c).templ, "mllm4rec (title : caption, role-play; default) or llamarec (titles)", 0}, \
        {"--role", FLAG_STR, &(c).role, "role sentence for datasets without a built-in one", 0},                 \
        {"--captions", FLAG_STR, &(c).captions, "on|off: items with their captions or titles only (default: the " \
                                                "template's, mllm4rec on, llamarec off; ranker eval: the run's)", 0}, \
        {"--history", FLAG_INT, &(c).history, "history items in the prompt (20)", 0},                              \
        {"--max-title-tokens", FLAG_INT, &(c).max_title_tokens, "tokens kept of a title and of a caption (32)", 0}, \
        {"--max-tokens", FLAG_INT, &(c).max_tokens, "whole prompt in tokens, cut from the left (1536)", 0},       \
        {"--num-candidates", FLAG_INT, &(c).num_candidates, "candidates ranked per user, lettered A.. (20)", 0},   \
        {"--threads", FLAG_INT, &(c).threads, "threads (default: all cores)", 0}

static void common_defaults(common_opts *c) {
    memset(c, 0, sizeof *c);
    c->history = 20;
    c->max_title_tokens = 32;
    c->max_tokens = 1536;
    c->num_candidates = 20;
    c->split = "test";
}

static int common_check(const char *cmd, const common_opts *c, int need_model) {
    if (!c->dataset || !c->candidates || (need_model && !c->model))
        return cli_usage_error(cmd, "--dataset, --candidates and --model are required");
    if (c->templ && strcmp(c->templ, "mllm4rec") && strcmp(c->templ, "llamarec"))
        return cli_usage_error(cmd, "--template must be mllm4rec or llamarec (got '%s')", c->templ);
    if (c->captions && strcmp(c->captions, "on") && strcmp(c->captions, "off"))
        return cli_usage_error(cmd, "--captions must be on or off (got '%s')", c->captions);
    if (c->history < 0 || c->history > 100000) return cli_usage_error(cmd, "--history must be in 0..100000");
    if (c->max_title_tokens < 1 || c->max_title_tokens > 100000)
        return cli_usage_error(cmd, "--max-title-tokens must be in 1..100000");
    if (c->max_tokens < 8 || c->max_tokens > 1000000) return cli_usage_error(cmd, "--max-tokens must be in 8..1000000");
    if (c->num_candidates < 1 || c->num_candidates > 26)
        return cli_usage_error(cmd, "--num-candidates must be in 1..26 (letters A..Z)");
    if (c->threads < 0 || c->threads > 1024) return cli_usage_error(cmd, "--threads must be in 1..1024");
    if (strcmp(c->split, "val") && strcmp(c->split, "test"))
        return cli_usage_error(cmd, "--split must be val or test (got '%s')", c->split);
    return 0;
}

/* What every command loads: dataset, candidates, tokenizer, prompt options. */
typedef struct setup {
    mr_dataset d;
    mr_candidates c;
    tokenizer *tok;
    mr_rank_tok rt;
    mr_prompt_opts po;
    char *system;
    int have_d, have_c;
} setup;

static int setup_load(setup *s, const common_opts *co, mr_error *e) {
    memset(s, 0, sizeof *s);
    if (co->threads > 0) {
        mr_set_threads((int)co->threads);
    }
    int rc;
    if ((rc = mr_dataset_load(&s->d, co->dataset, e))) return rc;
    s->have_d = 1;
    if ((rc = mr_candidates_load(&s->c, co->candidates, e))) return rc;
    s->have_c = 1;
    if ((rc = mr_candidates_check(&s->c, &s->d, e))) {
        mr_error_prefix(e, "%s: ", co->candidates);
        return rc;
    }
    if ((rc = tokenizer_load(&s->tok, co->model, e))) {
        mr_error_prefix(e, "tokenizer of %s: ", co->model);
        return rc;
    }
    mr_rank_tok_from_tokenizer(&s->rt, s->tok);
    mr_prompt_opts_default(&s->po);
    s->po.templ = co->templ && !strcmp(co->templ, "llamarec") ? MR_TEMPLATE_LLAMAREC : MR_TEMPLATE_MLLM4REC;
    if ((rc = mr_prompt_parse_captions(co->captions, &s->po.captions, e))) return rc;
    s->po.history = (int)co->history;
    s->po.max_title_tokens = (int)co->max_title_tokens;
    s->po.max_tokens = (int)co->max_tokens;
    if ((rc = mr_ranker_system(s->po.templ, mr_dataset_role(&s->d), co->role, &s->system, e))) {
        if (rc == MR_ERR_USAGE) mr_error_prefix(e, "dataset '%s': ", s->d.name);
        return rc;
    }
    s->po.system = s->system;
    return MR_OK;
}

static void setup_free(setup *s) {
    if (s->have_d) mr_dataset_free(&s->d);
    if (s->have_c) mr_candidates_free(&s->c);
    tokenizer_free(s->tok);
    free(s->system);
}

static int parse_user(const char *cmd, const char *s, int32_t *out) {
    int64_t v;
    if (!s || mr_parse_i64(s, &v) || v <= 0 || v > INT32_MAX)
        return cli_usage_error(cmd, "--user must be a positive user id of sequences.tsv");
    *out = (int32_t)v;
    return 0;
}

CLI_COMMAND(cmd_ranker_prompt) {
    const char *cmd = "ranker prompt";
    common_opts co;
    common_defaults(&co);
    const char *user_s = NULL;
    cli_flag flags[] = {COMMON_FLAGS(co),
                        {"--user", FLAG_STR, &user_s, "dense user id (required)", 0},
                        {"--split", FLAG_STR, &co.split, "val or test (test)", 0}};
    const char *usage =
        "usage: mllm4rec ranker prompt --dataset D --candidates RUN/candidates.tsv --user U --model M [--split test]\n"
        "Prints the exact prompt on stdout (ending with \"### Response:\\n\") and its token count on stderr.";
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]), usage);
    if (rc) return rc < 0 ? 0 : rc;
    if ((rc = common_check(cmd, &co, 1))) return rc;
    int32_t user = 0;
    if ((rc = parse_user(cmd, user_s, &user))) return rc;
    mr_error e = {0};
    setup s;
    if ((rc = setup_load(&s, &co, &e))) {
        setup_free(&s);
        return cli_report(cmd, &e);
    }
    const int split = strcmp(co.split, "val") ? MR_SPLIT_TEST : MR_SPLIT_VAL;
    const mr_cand_row *row = mr_candidates_get(&s.c, split, user);
    char *text = NULL, *shown = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    if (!row) {
        rc = mr_fail(&e, MR_ERR_INPUT, "user %d has no %s row in %s", user, co.split, co.candidates);
    } else if (co.num_candidates > s.c.k) {
        rc = mr_fail(&e, MR_ERR_INPUT, "--num-candidates %lld but %s has %d per user", (long long)co.num_candidates,
                     co.candidates, s.c.k);
    } else {
        const int32_t *hist;
        int n_hist;
        rc = mr_prompt_history(&s.d, user, split, s.po.history, &hist, &n_hist, NULL, &e);
        if (!rc) rc = mr_prompt_text(&s.d, &s.rt, &s.po, hist, n_hist, row->items, (int)co.num_candidates, NULL, &text, &e);
        if (!rc) rc = mr_prompt_ids(&s.rt, text, s.po.max_tokens, &ids, &n, &e);
    }
    if (!rc) {
        /* a prompt cut to --max-tokens is shown as the model sees it: its kept tokens */
        int64_t n_text_ids = 0;
        int32_t *all = NULL;
        rc = s.rt.encode(s.rt.ctx, text, &all, &n_text_ids, &e);
        const int has_bos = s.rt.bos >= 0;
        if (!rc && n_text_ids > n - has_bos) rc = s.rt.decode(s.rt.ctx, ids + has_bos, n - has_bos, &shown, &e);
        free(all);
    }
    if (!rc) {
        fputs(shown ? shown : text, stdout);
        fflush(stdout);
        fprintf(stderr, "tokens: %lld%s%s\n", (long long)n, s.rt.bos >= 0 ? " (BOS included)" : "",
                shown ? ", cut from the left to --max-tokens" : "");
        if (!mr_cand_row_hit(row, (int)co.num_candidates))
            fprintf(stderr, "note: user %d's true item is not among the candidates (left out of ranking metrics)\n", user);
    }
    free(text);
    free(shown);
    free(ids);
    setup_free(&s);
    return rc ? cli_report(cmd, &e) : 0;
}

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 2);
    if (!d) return NULL;
    memcpy(d, path, n);
    d[n] = 0;
    if (n == 0) strcpy(d, "/");
    return d;
}

CLI_COMMAND(cmd_ranker_eval) {
    const char *cmd = "ranker eval";
    common_opts co;
    common_defaults(&co);
    const char *adapter = NULL, *out = NULL;
    int64_t max_users = 0;
    cli_flag flags[] = {COMMON_FLAGS(co),
                        {"--adapter", FLAG_STR, &adapter, "R/adapter.gguf (llama.cpp LoRA) or a PEFT folder", 0},
                        {"--split", FLAG_STR, &co.split, "val or test (test)", 0},
                        {"--out", FLAG_STR, &out, "folder for metrics.json (default: the adapter's folder)", 0},
                        {"--max-users", FLAG_INT, &max_users, "rank only the first N subset users (0: all)", 0}};
    const char *usage = "usage: mllm4rec ranker eval --dataset D --candidates RUN/candidates.tsv --model M "
                        "[--adapter R/adapter.gguf] [--split test] [--out R]";
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]), usage);
    if (rc) return rc < 0 ? 0 : rc;
    if ((rc = common_check(cmd, &co, 1))) return rc;
    if (max_users < 0) return cli_usage_error(cmd, "--max-users must be >= 0");
    mr_error e = {0};
    setup s;
    llm_model lm;
    llm_adapter l;
    int have_model = 0, have_lora = 0;
    mr_ranker r;
    memset(&r, 0, sizeof r);
    memset(&s, 0, sizeof s);
    char *out_dir = out ? strdup(out) : adapter ? dir_of(adapter) : NULL;
    /* the folder metrics.json goes into is ours before any input is read */
    if (out_dir && (rc = cli_claim_folder(cmd, out_dir, NULL, 0, 0))) {
        free(out_dir);
        return rc;
    }
    /* the run's prompt (R/prompt.json of ranker train) unless the flags say otherwise */
    char *run_dir = adapter ? dir_of(adapter) : NULL;
    mr_template run_templ = MR_TEMPLATE_MLLM4REC;
    int run_captions = MR_CAPTIONS_TEMPLATE, found = 0;
    rc = run_dir ? mr_prompt_settings_read(run_dir, &run_templ, &run_captions, &found, &e) : MR_OK;
    free(run_dir);
    if (rc) goto done;
    if (found && !co.templ) co.templ = run_templ == MR_TEMPLATE_LLAMAREC ? "llamarec" : "mllm4rec";
    if ((rc = setup_load(&s, &co, &e))) goto done;
    if (found && !co.captions) s.po.captions = run_captions;
    if (found)
        fprintf(stderr, "prompt: template %s, captions %s (%s)\n", co.templ, mr_prompt_captions_on(&s.po) ? "on" : "off",
                "the run's prompt.json, unless given");
    if ((rc = mr_ranker_load_model(&lm, &l, &have_lora, co.model, adapter, &e))) goto done;
    have_model = 1;
    if ((rc = mr_ranker_init(&r, &s.d, &s.c, &s.rt, &s.po, (int)co.num_candidates, &lm, NULL, &e))) goto done;
    const int split = strcmp(co.split, "val") ? MR_SPLIT_TEST : MR_SPLIT_VAL;
    mr_rank_eval ev;
    if ((rc = mr_ranker_evaluate(&r, split, max_users, 1, &ev, &e))) goto done;
    mr_rank_eval_print(stdout, &ev, co.split);
    if (mr_dist_rank() == 0) /* under mpirun rank 0 alone reports and writes */
        fprintf(stderr,
                "ranked %lld users in %.3f s (%.4f prompts/s) on %d rank%s; the busiest rank's CPU time %.3f s "
                "(%.4f prompts per CPU-second of the busiest rank)\n",
                (long long)ev.n_subset, ev.seconds, ev.seconds > 0 ? ev.n_subset / ev.seconds : 0.0, mr_dist_size(),
                mr_dist_size() > 1 ? "s" : "", ev.cpu_seconds, ev.cpu_seconds > 0 ? ev.n_subset / ev.cpu_seconds : 0.0);
    if (out_dir && mr_dist_rank() == 0) {
        if (!(rc = mr_mkdir_p(out_dir, &e))) {
            char *p = mr_path_join(out_dir, "metrics.json", &e);
            rc = p ? mr_rank_eval_write_json(&ev, co.split, p, &e) : e.code;
            if (!rc) fprintf(stderr, "wrote %s\n", p);
            free(p);
        }
    }
    mr_rank_eval_free(&ev);
done:
    mr_ranker_free(&r);
    if (have_model) llm_free(&lm);
    if (have_lora) llm_adapter_free(&l);
    setup_free(&s);
    free(out_dir);
    return rc ? cli_report(cmd, &e) : 0;
}

static volatile sig_atomic_t g_interrupted = 0;
static void on_signal(int sig) {
    (void)sig;
    g_interrupted = 1;
}

CLI_COMMAND(cmd_ranker_train) {
    const char *cmd = "ranker train";
    common_opts co;
    common_defaults(&co);
    const char *out = NULL, *targets = "q,v";
    mr_rank_train_opts o;
    mr_rank_train_opts_default(&o);
    int64_t lora_r = o.lora_r, warmup = o.warmup, batch = o.batch, max_steps = 0, val_every = o.val_every,
            patience = o.patience, val_users = 0;
    double alpha = o.lora_alpha, dropout = o.lora_dropout, lr = o.lr, wd = o.weight_decay, clip = o.max_grad_norm;
    uint64_t seed = o.seed;
    int resume = 0, peft = 0, recompute = 0, force = 0;
    cli_flag flags[] = {COMMON_FLAGS(co),
                        {"--out", FLAG_STR, &out, "run folder R: adapter.gguf, train.jsonl, checkpoint.safetensors, curves.svg (required)", 0},
                        {"--lora-r", FLAG_INT, &lora_r, "LoRA rank (8)", 0},
                        {"--lora-alpha", FLAG_DOUBLE, &alpha, "LoRA alpha (32)", 0},
                        {"--lora-dropout", FLAG_DOUBLE, &dropout, "LoRA dropout (0.05)", 0},
                        {"--targets", FLAG_STR, &targets, "adapted projections among q,k,v,o,gate,up,down (q,v)", 0},
                        {"--lr", FLAG_DOUBLE, &lr, "AdamW learning rate (1e-4)", 0},
                        {"--weight-decay", FLAG_DOUBLE, &wd, "AdamW weight decay (0)", 0},
                        {"--max-grad-norm", FLAG_DOUBLE, &clip, "gradient norm clip (1)", 0},
                        {"--warmup", FLAG_INT, &warmup, "warm-up steps (100)", 0},
                        {"--batch", FLAG_INT, &batch, "examples per optimizer step, their gradients accumulated (16)", 0},
                        {"--max-steps", FLAG_INT, &max_steps, "optimizer steps (0: one epoch)", 0},
                        {"--val-every", FLAG_INT, &val_every, "validate every N steps (100)", 0},
                        {"--val-users", FLAG_INT, &val_users, "validation users per check (0: all)", 0},
                        {"--patience", FLAG_INT, &patience, "stop after N validations without improvement (20)", 0},
                        {"--seed", FLAG_U64, &seed, "random seed (42)", 0},
                        {"--recompute", FLAG_BOOL, &recompute, "keep only layer inputs, recompute in the backward "
                                                               "(less memory, slower; chosen by itself when kept "
                                                               "activations would exceed a quarter of the memory)", 0},
                        {"--peft", FLAG_BOOL, &peft, "also write R/peft (PEFT adapter folder)", 0},
                        {"--resume", FLAG_BOOL, &resume, "continue from R/checkpoint.safetensors", 0},
                        {"--force", FLAG_BOOL, &force, "start over in an R that holds a run", 0}};
    const char *usage = "usage: mllm4rec ranker train --dataset D --candidates RUN/candidates.tsv --model M --out R "
                        "[options]";
    int rc = cli_parse(argc, argv, 1, flags, (int)(sizeof flags / sizeof flags[0]), usage);
    if (rc) return rc < 0 ? 0 : rc;
    if ((rc = common_check(cmd, &co, 1))) return rc;
    if (!out) return cli_usage_error(cmd, "--out is required");
    if (lora_r < 1 || lora_r > 4096) return cli_usage_error(cmd, "--lora-r must be in 1..4096");
    if (!(dropout >= 0 && dropout < 1)) return cli_usage_error(cmd, "--lora-dropout must be in [0, 1)");
    if (!(lr > 0) || !(wd >= 0) || !(clip >= 0)) return cli_usage_error(cmd, "--lr > 0, --weight-decay >= 0, --max-grad-norm >= 0");
    if (warmup < 0 || batch < 1 || max_steps < 0 || val_every < 1 || patience < 1 || val_users < 0)
        return cli_usage_error(cmd, "--warmup >= 0; --batch, --val-every, --patience >= 1; --max-steps, --val-users >= 0");
    mr_error e = {0};
    if ((rc = llm_lora_parse_targets(targets, &o.targets, &e))) return cli_usage_error(cmd, "%s", e.msg);
    static const char *const run_files[] = {"metrics.json", "adapter.gguf", "checkpoint.safetensors", NULL};
    if ((rc = cli_claim_folder(cmd, out, run_files, resume, force))) return rc;
    o.lora_r = (int)lora_r;
    o.lora_alpha = (float)alpha;
    o.lora_dropout = (float)dropout;
    o.lr = lr;
    o.weight_decay = wd;
    o.max_grad_norm = clip;
    o.warmup = (int)warmup;
    o.batch = (int)batch;
    o.max_steps = max_steps;
    o.val_every = (int)val_every;
    o.val_users = val_users;
    o.patience = (int)patience;
    o.seed = seed;
    o.mode = recompute ? LLM_STATE_RECOMPUTE : -1;
    o.out_dir = out;
    o.resume = resume;
    o.peft = peft;
    o.base_model_name = co.model;
    o.stop = &g_interrupted;
    setup s;
    llm_model lm;
    llm_adapter l;
    int have_model = 0, have_lora = 0;
    mr_ranker r;
    memset(&r, 0, sizeof r);
    if ((rc = setup_load(&s, &co, &e))) goto done;
    {
        /* the prompt settings go with the run, so that its eval builds the same prompts;
         * a resumed run keeps the ones it was started with */
        mr_template t0;
        int c0, found = 0;
        if (resume && (rc = mr_prompt_settings_read(out, &t0, &c0, &found, &e))) goto done;
        if (found && (t0 != s.po.templ || c0 != mr_prompt_captions_on(&s.po))) {
            rc = mr_fail(&e, MR_ERR_USAGE, "%s was started with --template %s --captions %s: resume it with those", out,
                         t0 == MR_TEMPLATE_LLAMAREC ? "llamarec" : "mllm4rec", c0 ? "on" : "off");
            goto done;
        }
        /* under mpirun rank 0 alone writes the run folder */
        if (!found && mr_dist_rank() == 0 &&
            ((rc = mr_mkdir_p(out, &e)) || (rc = mr_prompt_settings_write(out, &s.po, &e))))
            goto done;
    }
    if ((rc = llm_load(&lm, co.model, &e))) goto done;
    have_model = 1;
    if (lm.cfg.n_ctx_train > 0 && co.max_tokens > lm.cfg.n_ctx_train)
        mr_log("warning: prompts of up to %lld tokens exceed the model's declared context of %d; going on",
               (long long)co.max_tokens, lm.cfg.n_ctx_train);
    if ((rc = llm_adapter_init(&l, &lm, o.lora_r, o.lora_alpha, o.lora_dropout, o.targets, o.seed, &e))) goto done;
    have_lora = 1;
    if ((rc = llm_adapter_attach(&lm, &l, 1.0f, &e))) goto done;
    if ((rc = mr_ranker_init(&r, &s.d, &s.c, &s.rt, &s.po, (int)co.num_candidates, &lm, &l, &e))) goto done;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    mr_rank_train_result res;
    if ((rc = mr_ranker_train(&r, &o, &res, &e))) goto done;
    if (res.interrupted) {
        if (mr_dist_rank() == 0) /* every rank stopped at the same step */
            fprintf(stderr, "mllm4rec %s: interrupted at step %lld; state saved in %s (continue with --resume)\n", cmd,
                    (long long)res.steps, out);
        rc = -1;
        goto done;
    }
    /* every training run draws its learning curve (DESIGN 8) */
    if (mr_dist_rank() == 0 && (rc = exp_write_curves(out, &e))) goto done;
    printf("| | value |\n|---|---:|\n");
    printf("| steps | %lld |\n| best step | %lld |\n", (long long)res.steps, (long long)res.best_step);
    printf("| train loss (first / last interval) | %.4f / %.4f |\n", res.first_train_loss, res.last_train_loss);
    printf("| validation NDCG@10 (before / best) | %.4f / %.4f |\n", res.val_ndcg10_before, res.best_val_ndcg10);
    printf("| validation letter loss (before / at best) | %.4f / %.4f |\n", res.val_loss_before, res.best_val_loss);
    printf("| training tokens/s | %.1f |\n", res.train_tokens_per_second);
    fprintf(stderr, "best adapter: %s/adapter.gguf%s\n", out, res.stopped_early ? " (stopped early)" : "");
done:
    mr_ranker_free(&r);
    if (have_model) llm_free(&lm);
    if (have_lora) llm_adapter_free(&l);
    setup_free(&s);
    if (rc == -1) return MR_ERR_INPUT; /* interrupted, as the retriever reports it */
    return rc ? cli_report(cmd, &e) : 0;
}
