/* Helpers shared by the `llm` commands: loading a model (and adapter), turning
 * --prompt / --ids into token ids. Each prints its error and returns the exit code. */
#ifndef MLLM4REC_CLI_CMD_LLM_COMMON_H
#define MLLM4REC_CLI_CMD_LLM_COMMON_H

#include "mllm4rec/llm.h"

int llm_cli_load(const char *cmd, const char *model_path, const char *lora_path, int64_t threads, llm_model *m);
/* Exactly one of prompt / ids: the prompt is tokenized with BOS as the model
 * says; ids ("1 2 3", commas allowed) are taken as given. *out is malloc'd. */
int llm_cli_input_ids(const char *cmd, const llm_model *m, const char *prompt, const char *ids, int32_t **out,
                      int64_t *n);
/* Warns (stderr) when n positions exceed the model's declared context. */
void llm_cli_warn_context(const llm_model *m, int64_t n);

#endif
