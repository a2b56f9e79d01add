/* Weight storage types of ggml (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
 * Q4_K, Q5_K, Q6_K): dequantization exactly as ggml's dequantize_row_* and
 * quantization exactly as its quantize_row_*_ref (so files we write are the
 * files llama-quantize would write without an importance matrix). */
#ifndef MLLM4REC_NN_QUANT_H
#define MLLM4REC_NN_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "mllm4rec/gguf.h"

/* 1 when rows of this type can be dequantized and quantized here. */
int quant_supported(ggml_type t);
/* Elements and bytes per block (1 and 4 for F32); 0 for an unknown type. */
int quant_block(ggml_type t, int *block_elems, int *block_bytes);
/* Bytes of a row of n elements (n must be a multiple of the block size). */
size_t quant_row_bytes(ggml_type t, int64_t n);
const char *quant_type_name(ggml_type t);

/* dst[n] = the n values stored at src (n a multiple of the block size). */
void dequantize_row(ggml_type t, const void *src, float *dst, int64_t n);
/* Writes n values of src as type t at dst (quant_row_bytes(t, n) bytes). */
void quantize_row_ref(ggml_type t, const float *src, void *dst, int64_t n);

float quant_f16_to_f32(uint16_t h);
uint16_t quant_f32_to_f16(float f); /* round to nearest even, as F16C does */
float quant_bf16_to_f32(uint16_t h);
uint16_t quant_f32_to_bf16(float f); /* round to nearest even, as ggml does */

#endif
