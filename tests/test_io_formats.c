/* GGUF and safetensors: reading real files, writer round trips, corrupt files,
 * half-precision conversions. */
#include "test.h"
#include "mllm4rec/gguf.h"
#include "mllm4rec/safetensors.h"

#include <stdlib.h>
#include <string.h>

TEST(gguf_reads_stories260k) {
    const char *p = test_shared_path("reference/models/stories260K.gguf");
    if (!p) SKIP("../shared/reference/models/stories260K.gguf absent");
    mr_error e = {0};
    gguf_file g;
    CHECK_OK(gguf_open(&g, p, &e), &e);
    char *arch = NULL;
    CHECK_OK(gguf_get_str(&g, "general.architecture", &arch, &e), &e);
    CHECK(!strcmp(arch, "llama"));
    free(arch);
    uint64_t n_embd = 0;
    CHECK_OK(gguf_get_u64(&g, "llama.embedding_length", &n_embd, &e), &e);
    CHECK(n_embd == 64);
    const gguf_kv *tokens = gguf_find(&g, "tokenizer.ggml.tokens");
    CHECK(tokens && tokens->type == GGUF_TYPE_ARRAY && tokens->array_type == GGUF_TYPE_STRING);
    CHECK(tokens->array_len == 512);
    CHECK(tokens->array_strings[1].len == 3 && !memcmp(tokens->array_strings[1].data, "<s>", 3));
    const gguf_tensor *emb = gguf_find_tensor(&g, "token_embd.weight");
    CHECK(emb && emb->type == GGML_TYPE_F32 && emb->ne[0] == 64 && emb->ne[1] == 512);
    CHECK(gguf_get_u64(&g, "no.such.key", &n_embd, &e) == MR_ERR_INPUT && strstr(e.msg, "no.such.key"));
    gguf_close(&g);
}

TEST(gguf_writer_round_trip_and_truncation) {
    mr_error e = {0};
    gguf_writer *w = gguf_writer_new(&e);
    CHECK(w);
    gguf_writer_set_str(w, "general.architecture", "llama", &e);
    gguf_writer_set_u32(w, "llama.block_count", 3, &e);
    gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f, &e);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1, &e);
    const char *strs[] = {"a", "bc", ""};
    gguf_writer_set_str_array(w, "tokenizer.ggml.tokens", strs, NULL, 3, &e);
    float scores[3] = {0.5f, -1.0f, 2.0f};
    gguf_writer_set_array(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, 3, &e);
    float data[2 * 32];
    for (int i = 0; i < 64; i++) data[i] = (float)i;
    uint64_t ne[2] = {32, 2};
    CHECK_OK(gguf_writer_add_tensor(w, "w", GGML_TYPE_F32, 2, ne, data, &e), &e);
    const char *path = test_tmp_path("rt.gguf");
    CHECK_OK(gguf_writer_write(w, path, &e), &e);
    gguf_writer_free(w);
    gguf_file g;
    CHECK_OK(gguf_open(&g, path, &e), &e);
    uint64_t v;
    double f;
    int b;
    CHECK_OK(gguf_get_u64(&g, "llama.block_count", &v, &e), &e);
    CHECK(v == 3);
    CHECK_OK(gguf_get_f64(&g, "llama.rope.freq_base", &f, &e), &e);
    CHECK(f == 10000.0);
    CHECK_OK(gguf_get_bool(&g, "tokenizer.ggml.add_bos_token", &b, &e), &e);
    CHECK(b == 1);
    const gguf_kv *sc = gguf_find(&g, "tokenizer.ggml.scores");
    CHECK(sc && sc->array_len == 3 && ((const float *)sc->array_data)[2] == 2.0f);
    const gguf_tensor *t = gguf_find_tensor(&g, "w");
    CHECK(t && t->nbytes == sizeof data && !memcmp(t->data, data, sizeof data));
    CHECK(((uintptr_t)t->data - (uintptr_t)g.map) % 32 == 0);
    size_t full = g.map_size;
    char *bytes;
    size_t n;
    CHECK_OK(mr_read_file(path, &bytes, &n, &e), &e);
    gguf_close(&g);
    /* every truncation is an error, never a crash */
    const char *tp = test_tmp_path("trunc.gguf");
    for (size_t cut = 0; cut < full; cut += (cut < 200 ? 1 : 37)) {
        test_write_file(tp, bytes, cut);
        CHECK_MSG(gguf_open(&g, tp, &e) == MR_ERR_INPUT, "truncation at %zu accepted", cut);
        /* a cut file is called truncated (its counts are the real ones, not implausible) */
        CHECK_MSG(cut < 24 || strstr(e.msg, "truncated"), "cut at %zu: %s", cut, e.msg);
    }
    CHECK(strstr(e.msg, "trunc.gguf") != NULL);
    /* a flipped byte in the length of a string inside the tokens array: the message says
     * where (it said "offset 0" for every position) */
    {
        size_t at = 0;
        for (size_t i = 0; i + 10 <= n && !at; i++)
            if (!memcmp(bytes + i, "\x02\0\0\0\0\0\0\0bc", 10)) at = i;
        CHECK(at > 24);
        bytes[at + 5] = 0x40;
        test_write_file(tp, bytes, n);
        CHECK(gguf_open(&g, tp, &e) == MR_ERR_INPUT);
        char want[64];
        snprintf(want, sizeof want, "at offset %zu runs past the end", at);
        CHECK_MSG(strstr(e.msg, want) && strstr(e.msg, "tokenizer.ggml.tokens"), "%s (wanted '%s')", e.msg, want);
        bytes[at + 5] = 0;
    }
    bytes[0] = 'X';
    test_write_file(tp, bytes, n);
    CHECK(gguf_open(&g, tp, &e) == MR_ERR_INPUT && strstr(e.msg, "magic"));
    free(bytes);
}

TEST(safetensors_reads_reference) {
    const char *p = test_shared_path("reference/hf/llama/model.safetensors");
    if (!p) SKIP("../shared/reference/hf/llama absent");
    mr_error e = {0};
    st_set s;
    char dir[2048];
    snprintf(dir, sizeof dir, "%s", p);
    *strrchr(dir, '/') = 0;
    CHECK_OK(st_set_open(&s, dir, &e), &e);
    const st_tensor *t = st_set_find(&s, "model.embed_tokens.weight");
    CHECK(t && t->dtype == ST_F32 && t->n_dims == 2);
    float *buf = malloc(st_numel(t) * sizeof(float));
    CHECK_OK(st_read_f32(t, buf, st_numel(t), &e), &e);
    CHECK(st_read_f32(t, buf, st_numel(t) + 1, &e) == MR_ERR_INPUT);
    free(buf);
    st_set_close(&s);
}

TEST(safetensors_round_trip_shards_and_corruption) {
    mr_error e = {0};
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[2] = {mr_f32_to_bf16(1.5f), mr_f32_to_bf16(-2.0f)};
    st_writer *w = st_writer_new(&e);
    int64_t sa[2] = {2, 3}, sh[1] = {2};
    CHECK_OK(st_writer_add(w, "b.weight", ST_F32, 2, sa, a, &e), &e);
    CHECK_OK(st_writer_add(w, "a.bias", ST_BF16, 1, sh, h, &e), &e);
    CHECK(st_writer_add(w, "a.bias", ST_BF16, 1, sh, h, &e) == MR_ERR_USAGE);
    st_writer_set_metadata(w, "format", "pt", &e);
    const char *p1 = test_tmp_path("model-00001-of-00002.safetensors");
    CHECK_OK(st_writer_write(w, p1, &e), &e);
    st_writer_free(w);
    w = st_writer_new(&e);
    float c[1] = {7};
    int64_t sc[1] = {1};
    st_writer_add(w, "c", ST_F32, 1, sc, c, &e);
    CHECK_OK(st_writer_write(w, test_tmp_path("model-00002-of-00002.safetensors"), &e), &e);
    st_writer_free(w);
    const char *idx = "{\"metadata\":{},\"weight_map\":{\"b.weight\":\"model-00001-of-00002.safetensors\","
                      "\"a.bias\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\"}}";
    test_write_file(test_tmp_path("model.safetensors.index.json"), idx, strlen(idx));
    st_set s;
    CHECK_OK(st_set_open(&s, test_tmpdir(), &e), &e);
    CHECK(s.n_files == 2);
    float out[6];
    CHECK_OK(st_read_f32(st_set_find(&s, "b.weight"), out, 6, &e), &e);
    CHECK(out[5] == 6.0f);
    CHECK_OK(st_read_f32(st_set_find(&s, "a.bias"), out, 2, &e), &e);
    CHECK(out[0] == 1.5f && out[1] == -2.0f);
    CHECK_OK(st_read_f32(st_set_find(&s, "c"), out, 1, &e), &e);
    CHECK(out[0] == 7.0f);
    CHECK(s.files[0].metadata_json && strstr(s.files[0].metadata_json, "\"pt\""));
    st_set_close(&s);
    char *bytes;
    size_t n;
    CHECK_OK(mr_read_file(p1, &bytes, &n, &e), &e);
    const char *tp = test_tmp_path("bad.safetensors");
    st_file f;
    for (size_t cut = 0; cut < n; cut++) {
        test_write_file(tp, bytes, cut);
        CHECK_MSG(st_open(&f, tp, &e) == MR_ERR_INPUT, "truncation at %zu accepted", cut);
    }
    free(bytes);
}

TEST(half_conversions) {
    CHECK(mr_f16_to_f32(0x3c00) == 1.0f);
    CHECK(mr_f16_to_f32(0xc000) == -2.0f);
    CHECK(mr_f16_to_f32(0x0001) == 5.9604644775390625e-08f);
    CHECK(mr_f16_to_f32(0x7bff) == 65504.0f);
    for (uint32_t h = 0; h < 0x7c00; h++) CHECK_MSG(mr_f32_to_f16(mr_f16_to_f32((uint16_t)h)) == h, "h=%x", h);
    CHECK(mr_f32_to_f16(1.0f + 1.0f / 4096) == 0x3c00); /* tie rounds to even */
    CHECK(mr_f32_to_f16(1e6f) == 0x7c00);
    CHECK(mr_bf16_to_f32(mr_f32_to_bf16(3.140625f)) == 3.140625f);
}

int main(void) {
    RUN(gguf_reads_stories260k);
    RUN(gguf_writer_round_trip_and_truncation);
    RUN(safetensors_reads_reference);
    RUN(safetensors_round_trip_shards_and_corruption);
    RUN(half_conversions);
    return test_summary();
}
