/* mllm4rec llm info --model M: what the engine read from the model's files. */
#include "cli.h"
#include "cmd_llm_common.h"

CLI_COMMAND(cmd_llm_info) {
    const char *model = NULL, *lora = NULL;
    cli_flag flags[] = {
        {"--model", FLAG_STR, &model, "GGUF file or Hugging Face folder", 0},
        {"--lora", FLAG_STR, &lora, "llama.cpp LoRA adapter (GGUF) to apply", 0},
    };
    int rc = cli_parse(argc, argv, 1, flags, 2, "usage: mllm4rec llm info --model M [--lora ADAPTER.gguf]");
    if (rc) return rc < 0 ? 0 : rc;
    llm_model m;
    if ((rc = llm_cli_load("llm info", model, lora, 0, &m))) return rc;
    const llm_config *c = &m.cfg;
    printf("source: %s\n", m.source == LLM_SRC_GGUF ? "gguf" : "huggingface");
    printf("name: %s\n", m.name ? m.name : "");
    printf("architecture: %s\n", c->arch == LLM_ARCH_QWEN2 ? "qwen2" : "llama");
    printf("weight_type: %s\n", llm_weight_type(&m));
    printf("embedding_type: %s\n", ggml_type_name(m.tok_embd.type));
    printf("parameters: %lld\n", (long long)llm_n_params(&m));
    printf("n_vocab: %d\nn_embd: %d\nn_layer: %d\nn_head: %d\nn_head_kv: %d\nhead_dim: %d\nn_ff: %d\n", c->n_vocab,
           c->n_embd, c->n_layer, c->n_head, c->n_head_kv, c->head_dim, c->n_ff);
    printf("context_length: %d\n", c->n_ctx_train);
    printf("rms_eps: %g\nrope_base: %g\nrope_freq_scale: %g\nrope_dims: %d\nrope_pairs: %s\n", c->rms_eps,
           c->rope_base, c->rope_freq_scale, c->rope_dims, c->rope_halves ? "halves" : "adjacent");
    printf("tied_output: %s\nqkv_bias: %s\n", c->tied ? "yes" : "no", c->has_qkv_bias ? "yes" : "no");
    printf("bos_id: %d\neos_id: %d\nadd_bos: %s\n", m.bos_id, m.eos_id, m.add_bos ? "yes" : "no");
    printf("tokenizer: %s\n", m.tok ? "yes" : m.tok_missing_why);
    int n_lora = 0;
    for (int i = 0; i < m.n_adapters; i++)
        for (int j = 0; j < m.adapters[i]->n_layer * LLM_LORA_N_TARGETS; j++) n_lora += m.adapters[i]->mats[j].a != NULL;
    printf("lora_weights: %d\n", n_lora);
    llm_free(&m);
    return 0;
}
