/* Tokenizers: llama.cpp's reference vectors (reference/tokenizer and the
 * stories260K vocabulary), llama-tokenize behaviours, decode round trips,
 * tokenizer.json / vocab.json+merges.txt / GGUF written from a vocabulary and
 * read back, the Llama 3 / Qwen2 / DeepSeek pre-tokenizer splits, truncation,
 * bad files and the `llm tokenize` command. */
#include "test.h"
#include "llm/tokenizer_impl.h"
#include "mllm4rec/gguf.h"
#include "mllm4rec/tokenizer.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- helpers -- */

#define MAX_CASES 64
typedef struct cases {
    int n;
    const char *text[MAX_CASES];
    size_t len[MAX_CASES];
    int32_t *ids[MAX_CASES];
    size_t n_ids[MAX_CASES];
    char *inp, *out;
} cases;

static void cases_free(cases *c) {
    for (int i = 0; i < c->n; i++) free(c->ids[i]);
    free(c->inp);
    free(c->out);
    memset(c, 0, sizeof *c);
}

/* Reads NAME.inp / NAME.out (llama.cpp's test-tokenizer-0 format); 0 on success. */
static int cases_load(cases *c, const char *inp_path, const char *out_path) {
    memset(c, 0, sizeof *c);
    mr_error e = {0};
    size_t il, ol;
    if (mr_read_file(inp_path, &c->inp, &il, &e) || mr_read_file(out_path, &c->out, &ol, &e)) return -1;
    const char *sep = "\n__ggml_vocab_test__\n";
    char *p = c->inp, *line = c->out;
    for (;;) {
        char *q = strstr(p, sep);
        if (!q || c->n == MAX_CASES) break;
        char *nl = strchr(line, '\n');
        if (!nl) return -1;
        *nl = 0;
        c->text[c->n] = p;
        c->len[c->n] = (size_t)(q - p);
        int32_t *ids = malloc(sizeof(int32_t) * (strlen(line) / 2 + 2));
        size_t n = 0;
        for (char *tok = strtok(line, " "); tok; tok = strtok(NULL, " ")) ids[n++] = atoi(tok);
        c->ids[c->n] = ids;
        c->n_ids[c->n] = n;
        c->n++;
        p = q + strlen(sep);
        line = nl + 1;
    }
    return c->n > 0 ? 0 : -1;
}

static int ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || !memcmp(a, b, na * sizeof *a));
}

static void print_ids(const char *label, const int32_t *v, size_t n) {
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", (int)v[i]);
    fprintf(stderr, "\n");
}

static const char *VOCABS[][3] = {
    {"llama-spm", "reference/tokenizer/ggml-vocab-llama-spm.gguf", "reference/tokenizer/ggml-vocab-llama-spm.gguf"},
    {"gpt-2", "reference/tokenizer/ggml-vocab-gpt-2.gguf", "reference/tokenizer/ggml-vocab-gpt-2.gguf"},
    {"deepseek-coder", "reference/tokenizer/ggml-vocab-deepseek-coder.gguf",
     "reference/tokenizer/ggml-vocab-deepseek-coder.gguf"},
    {"stories260K", "reference/models/stories260K.gguf", "reference/models/stories260K.gguf"},
};
#define N_VOCABS 4

static int load_cases_for(int v, cases *c) {
    char inp[512], out[512];
    snprintf(inp, sizeof inp, "%s.inp", VOCABS[v][2]);
    snprintf(out, sizeof out, "%s.out", VOCABS[v][2]);
    const char *ip = test_shared_path(inp), *op = test_shared_path(out);
    if (!ip || !op) return -1;
    char ipb[2048], opb[2048];
    snprintf(ipb, sizeof ipb, "%s", ip);
    snprintf(opb, sizeof opb, "%s", op);
    return cases_load(c, ipb, opb);
}

/* Encodes every case with both tokenizers (add_special and parse_special off,
 * then on) and counts the cases where they differ. */
static int count_differences(const tokenizer *a, const tokenizer *b, const cases *c) {
    int diff = 0;
    mr_error e = {0};
    for (int flags = 0; flags <= (TOK_ADD_SPECIAL | TOK_PARSE_SPECIAL); flags += 3) {
        for (int i = 0; i < c->n; i++) {
            int32_t *x = NULL, *y = NULL;
            size_t nx = 0, ny = 0;
            if (tokenizer_encode(a, c->text[i], c->len[i], flags, &x, &nx, &e) ||
                tokenizer_encode(b, c->text[i], c->len[i], flags, &y, &ny, &e) || !ids_equal(x, nx, y, ny)) {
                if (diff < 3) {
                    fprintf(stderr, "  case %d (flags %d) differs\n", i, flags);
                    print_ids("a", x, nx);
                    print_ids("b", y, ny);
                }
                diff++;
            }
            free(x);
            free(y);
        }
    }
    return diff;
}

/* Writes t's vocabulary into a GGUF and loads it back. */
static int via_gguf(const tokenizer *t, const char *name, tokenizer **out, mr_error *e) {
    gguf_writer *w = gguf_writer_new(e);
    if (!w) return MR_ERR_INTERNAL;
    char path[1024];
    snprintf(path, sizeof path, "%s", test_tmp_path(name));
    int rc = gguf_writer_set_str(w, "general.architecture", "llama", e);
    if (!rc) rc = tokenizer_write_gguf(t, w, e);
    if (!rc) rc = gguf_writer_write(w, path, e);
    gguf_writer_free(w);
    return rc ? rc : tokenizer_load(out, path, e);
}

/* ------------------------------------------------------ reference vectors -- */

TEST(reference_vectors_encode_exactly) {
    int any = 0;
    for (int v = 0; v < N_VOCABS; v++) {
        const char *path = test_shared_path(VOCABS[v][1]);
        cases c;
        if (!path || load_cases_for(v, &c)) {
            printf("  (%s: reference files absent)\n", VOCABS[v][0]);
            continue;
        }
        any = 1;
        mr_error e = {0};
        tokenizer *t;
        CHECK_OK(tokenizer_load(&t, path, &e), &e);
        int ok = 0, round = 0;
        for (int i = 0; i < c.n; i++) {
            int32_t *ids;
            size_t n;
            CHECK_OK(tokenizer_encode(t, c.text[i], c.len[i], 0, &ids, &n, &e), &e);
            if (ids_equal(ids, n, c.ids[i], c.n_ids[i])) ok++;
            else {
                fprintf(stderr, "  %s case %d differs\n", VOCABS[v][0], i);
                print_ids("expected", c.ids[i], c.n_ids[i]);
                print_ids("got", ids, n);
            }
            char *text;
            size_t tl;
            CHECK_OK(tokenizer_decode(t, ids, n, 0, &text, &tl, &e), &e);
            /* every case here is lossless: bytes fall back to byte tokens (SPM)
             * or are the alphabet (byte-level), and no case holds U+2581 */
            if (tl == c.len[i] && !memcmp(text, c.text[i], tl)) round++;
            else fprintf(stderr, "  %s case %d: decode gives [%s]\n", VOCABS[v][0], i, text);
            free(text);
            free(ids);
        }
        printf("  %s: %d/%d cases encode exactly, %d/%d decode back to the text\n", VOCABS[v][0], ok, c.n, round, c.n);
        CHECK(c.n == 46);
        CHECK(ok == c.n);
        CHECK(round == c.n);
        tokenizer_free(t);
        cases_free(&c);
    }
    if (!any) SKIP("reference/tokenizer not found");
}

/* Python repr of a string in tokenizer_behaviour.json keys: \n, \t, \\, \' */
static size_t unrepr(const char *s, size_t n, char *out) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char c = s[++i];
            out[m++] = c == 'n' ? '\n' : c == 't' ? '\t' : c;
        } else {
            out[m++] = s[i];
        }
    }
    out[m] = 0;
    return m;
}

TEST(llama_tokenize_behaviours) {
    const char *jp = test_shared_path("reference/tokenizer/tokenizer_behaviour.json");
    if (!jp) SKIP("tokenizer_behaviour.json not found");
    json_error_t je;
    json_t *root = json_load_file(jp, 0, &je);
    CHECK(root);
    static const char *const names[] = {"llama-spm", "gpt-2", "deepseek-coder"};
    int checked = 0;
    for (int v = 0; v < 3; v++) {
        char rel[256];
        snprintf(rel, sizeof rel, "reference/tokenizer/ggml-vocab-%s.gguf", names[v]);
        const char *path = test_shared_path(rel);
        if (!path) continue;
        mr_error e = {0};
        tokenizer *t;
        CHECK_OK(tokenizer_load(&t, path, &e), &e);
        json_t *ex = json_object_get(json_object_get(root, names[v]), "llama_tokenize_examples");
        const char *key;
        json_t *val;
        json_object_foreach(ex, key, val) {
            const char *end = strstr(key, "' flags=");
            CHECK(key[0] == '\'' && end);
            char text[512];
            size_t tl = unrepr(key + 1, (size_t)(end - key - 1), text);
            const char *fl = end + 8;
            int flags = !strcmp(fl, "(default)")           ? TOK_ADD_SPECIAL | TOK_PARSE_SPECIAL
                        : !strcmp(fl, "--no-bos")          ? TOK_PARSE_SPECIAL
                        : !strcmp(fl, "--no-parse-special") ? TOK_ADD_SPECIAL
                                                           : -1;
            CHECK(flags >= 0);
            int32_t *ids;
            size_t n;
            CHECK_OK(tokenizer_encode(t, text, tl, flags, &ids, &n, &e), &e);
            char got[1024] = "[";
            size_t gl = 1;
            for (size_t i = 0; i < n; i++) gl += (size_t)snprintf(got + gl, sizeof got - gl, "%s%d", i ? ", " : "", ids[i]);
            snprintf(got + gl, sizeof got - gl, "]");
            free(ids);
            CHECK_MSG(!strcmp(got, json_string_value(val)), "%s %s: expected %s, got %s", names[v], key,
                      json_string_value(val), got);
            checked++;
        }
        tokenizer_free(t);
    }
    json_decref(root);
    printf("  %d llama-tokenize examples match\n", checked);
    CHECK(checked == 36);
}

TEST(bos_eos_settings_follow_the_vocabulary) {
    const char *spm = test_shared_path("reference/tokenizer/ggml-vocab-llama-spm.gguf");
    const char *gpt2 = test_shared_path("reference/tokenizer/ggml-vocab-gpt-2.gguf");
    if (!spm || !gpt2) SKIP("reference vocabularies not found");
    mr_error e = {0};
    tokenizer *a, *b;
    CHECK_OK(tokenizer_load(&a, spm, &e), &e);
    CHECK_OK(tokenizer_load(&b, gpt2, &e), &e);
    CHECK(tokenizer_n_vocab(a) == 32000 && tokenizer_bos(a) == 1 && tokenizer_eos(a) == 2 && tokenizer_unk(a) == 0);
    CHECK(tokenizer_adds_bos(a) && !tokenizer_adds_eos(a));
    CHECK(tokenizer_n_vocab(b) == 50257 && tokenizer_bos(b) == 50256 && tokenizer_eos(b) == 50256);
    CHECK(!tokenizer_adds_bos(b));
    CHECK(tokenizer_is_eog(a, 2) && tokenizer_is_eog(b, 50256) && !tokenizer_is_eog(a, 1));
    /* the empty text: [BOS] with add_special, nothing without */
    int32_t *ids;
    size_t n;
    CHECK_OK(tokenizer_encode(a, "", 0, TOK_ADD_SPECIAL, &ids, &n, &e), &e);
    CHECK(n == 1 && ids[0] == 1);
    free(ids);
    CHECK_OK(tokenizer_encode(a, "", 0, 0, &ids, &n, &e), &e);
    CHECK(n == 0);
    free(ids);
    /* token <-> id and pieces */
    size_t len;
    const char *s = tokenizer_token_text(a, 15043, &len);
    CHECK(s && len == 8 && !memcmp(s, "\xe2\x96\x81Hello", 8));
    CHECK(tokenizer_piece_to_id(a, "\xe2\x96\x81Hello", 8) == 15043);
    CHECK(tokenizer_piece_to_id(a, "no such token", 13) == -1);
    s = tokenizer_token_piece(a, 15043, 0, &len);
    CHECK(len == 6 && !memcmp(s, " Hello", 6));
    s = tokenizer_token_piece(a, 13, 0, &len); /* <0x0A> */
    CHECK(len == 1 && s[0] == '\n');
    s = tokenizer_token_piece(a, 1, 0, &len);
    CHECK(len == 0);
    s = tokenizer_token_piece(a, 1, 1, &len);
    CHECK(len == 3 && !memcmp(s, "<s>", 3));
    s = tokenizer_token_piece(b, 18435, 0, &len); /* "ĠHello" */
    CHECK(len == 6 && !memcmp(s, " Hello", 6));
    CHECK(tokenizer_token_piece(a, 32000, 0, &len) == NULL && tokenizer_token_text(a, -1, &len) == NULL);
    /* decode drops the SPM space prefix (also after BOS), keeps byte-level text as it is */
    int32_t hello[] = {1, 15043, 3186};
    char *text;
    CHECK_OK(tokenizer_decode(a, hello, 3, 0, &text, &len, &e), &e);
    CHECK(!strcmp(text, "Hello world"));
    free(text);
    CHECK_OK(tokenizer_decode(a, hello, 3, TOK_DECODE_SPECIAL | TOK_DECODE_KEEP_LEADING_SPACE, &text, &len, &e), &e);
    CHECK(!strcmp(text, "<s> Hello world"));
    free(text);
    int32_t g[] = {18435, 995};
    CHECK_OK(tokenizer_decode(b, g, 2, 0, &text, &len, &e), &e);
    CHECK(!strcmp(text, " Hello world"));
    free(text);
    tokenizer_free(a);
    tokenizer_free(b);
}

/* ------------------------------------------------------------ truncation -- */

TEST(truncate_cuts_at_tokens_and_whole_characters) {
    int any = 0;
    for (int v = 0; v < N_VOCABS; v++) {
        const char *path = test_shared_path(VOCABS[v][1]);
        cases c;
        if (!path || load_cases_for(v, &c)) continue;
        any = 1;
        mr_error e = {0};
        tokenizer *t;
        CHECK_OK(tokenizer_load(&t, path, &e), &e);
        for (int i = 0; i < c.n; i++) {
            size_t n_all = c.n_ids[i];
            for (size_t k = 0; k <= n_all + 1; k++) {
                char *out;
                size_t len, kept;
                CHECK_OK(tokenizer_truncate(t, c.text[i], c.len[i], k, &out, &len, &kept, &e), &e);
                CHECK(kept == (k < n_all ? k : n_all));
                /* whole characters only, and a prefix of the text (these cases are lossless) */
                CHECK_MSG(mr_utf8_valid(out, len), "%s case %d, %zu tokens: invalid UTF-8", VOCABS[v][0], i, k);
                CHECK_MSG(len <= c.len[i] && !memcmp(out, c.text[i], len), "%s case %d, %zu tokens: [%s] not a prefix",
                          VOCABS[v][0], i, k, out);
                if (k >= n_all) CHECK(len == c.len[i]);
                free(out);
            }
        }
        tokenizer_free(t);
        cases_free(&c);
    }
    if (!any) SKIP("reference files absent");
    const char *spm = test_shared_path("reference/tokenizer/ggml-vocab-llama-spm.gguf");
    if (!spm) return;
    mr_error e = {0};
    tokenizer *t;
    CHECK_OK(tokenizer_load(&t, spm, &e), &e);
    char *out;
    size_t len;
    CHECK_OK(tokenizer_truncate(t, "Hello world", 11, 1, &out, &len, NULL, &e), &e);
    CHECK(!strcmp(out, "Hello"));
    free(out);
    /* "▁" then the four bytes of the rocket: three tokens leave half a character, dropped */
    CHECK_OK(tokenizer_truncate(t, "\xf0\x9f\x9a\x80 go", 7, 3, &out, &len, NULL, &e), &e);
    CHECK(len == 0);
    free(out);
    CHECK_OK(tokenizer_truncate(t, "\xf0\x9f\x9a\x80 go", 7, 5, &out, &len, NULL, &e), &e);
    CHECK(!strcmp(out, "\xf0\x9f\x9a\x80"));
    free(out);
    tokenizer_free(t);
}

/* The model references: llama-perplexity's tokens of ppl_text.txt and each
 * prompt's tokens (add_special on, parse_special off), and the greedy texts,
 * which are the raw pieces of the generated ids joined. */
TEST(model_reference_tokens_and_pieces) {
    static const char *const refs[] = {"reference/models/stories260K.reference.json",
                                       "reference/models/tiny-llama-random.reference.json",
                                       "reference/models/tiny-qwen2-random.reference.json"};
    const char *pp = test_shared_path("reference/models/ppl_text.txt");
    if (!pp) SKIP("reference/models not found");
    mr_error e = {0};
    char *ppl;
    size_t ppl_len;
    CHECK_OK(mr_read_file(pp, &ppl, &ppl_len, &e), &e);
    int checked = 0;
    for (int r = 0; r < 3; r++) {
        const char *jp = test_shared_path(refs[r]);
        if (!jp) continue;
        json_error_t je;
        json_t *root = json_load_file(jp, 0, &je);
        CHECK(root);
        const char *vname;
        json_t *var;
        json_object_foreach(json_object_get(root, "variants"), vname, var) {
            char rel[512];
            snprintf(rel, sizeof rel, "reference/models/%s", json_string_value(json_object_get(var, "model_file")));
            const char *mp = test_shared_path(rel);
            if (!mp) continue;
            tokenizer *t;
            CHECK_OK(tokenizer_load(&t, mp, &e), &e);
            int32_t *ids;
            size_t n;
            CHECK_OK(tokenizer_encode(t, ppl, ppl_len, TOK_ADD_SPECIAL, &ids, &n, &e), &e);
            json_t *want = json_object_get(var, "ppl_text_tokens_with_add_special");
            CHECK_MSG(n == json_array_size(want), "%s: ppl_text gives %zu tokens, llama.cpp %zu", vname, n,
                      json_array_size(want));
            for (size_t i = 0; i < n; i++) CHECK(ids[i] == json_integer_value(json_array_get(want, i)));
            free(ids);
            checked++;
            size_t k;
            json_t *pr;
            json_array_foreach(json_object_get(var, "prompts"), k, pr) {
                const char *text = json_string_value(json_object_get(pr, "prompt"));
                CHECK_OK(tokenizer_encode(t, text, strlen(text), TOK_ADD_SPECIAL, &ids, &n, &e), &e);
                json_t *pt = json_object_get(pr, "prompt_tokens");
                CHECK_MSG(n == json_array_size(pt), "%s prompt %zu: %zu tokens", vname, k, n);
                for (size_t i = 0; i < n; i++) CHECK(ids[i] == json_integer_value(json_array_get(pt, i)));
                free(ids);
                /* greedy text = the pieces of the greedy tokens */
                json_t *gt = json_object_get(pr, "greedy_tokens");
                const char *gtext = json_string_value(json_object_get(pr, "greedy_text"));
                if (!gt || !gtext) continue;
                char buf[8192];
                size_t m = 0;
                for (size_t i = 0; i < json_array_size(gt); i++) {
                    size_t pl;
                    const char *p = tokenizer_token_piece(t, (int32_t)json_integer_value(json_array_get(gt, i)), 0, &pl);
                    CHECK(p && m + pl < sizeof buf);
                    memcpy(buf + m, p, pl);
                    m += pl;
                }
                buf[m] = 0;
                CHECK_MSG(!strcmp(buf, gtext), "%s prompt %zu: pieces give [%s]", vname, k, buf);
                checked++;
            }
            /* llama2.c's expected output is the decoded 200 greedy tokens after BOS */
            json_t *g200 = json_object_get(json_object_get(var, "bos_only_greedy200"), "greedy_tokens");
            const char *xp = test_shared_path("reference/models/stories260K.llama2c_expected_output.txt");
            if (g200 && xp) {
                char *expected, *text;
                size_t el, tl;
                CHECK_OK(mr_read_file(xp, &expected, &el, &e), &e);
                int32_t g[256];
                size_t gn = json_array_size(g200);
                CHECK(gn == 200);
                g[0] = tokenizer_bos(t);
                for (size_t i = 0; i < gn; i++) g[i + 1] = (int32_t)json_integer_value(json_array_get(g200, i));
                CHECK_OK(tokenizer_decode(t, g, gn + 1, 0, &text, &tl, &e), &e);
                CHECK_MSG(tl == el && !memcmp(text, expected, el), "decoded greedy200 differs: [%s]", text);
                free(text);
                free(expected);
                checked++;
            }
            tokenizer_free(t);
        }
        json_decref(root);
    }
    free(ppl);
    printf("  %d reference token lists and greedy texts match\n", checked);
    CHECK(checked >= 3);
}

/* ------------------------------------------------- written and read back -- */

TEST(tokenizer_json_written_from_gguf_reads_back_identically) {
    int any = 0;
    for (int v = 0; v < N_VOCABS; v++) {
        const char *path = test_shared_path(VOCABS[v][1]);
        cases c;
        if (!path || load_cases_for(v, &c)) continue;
        any = 1;
        mr_error e = {0};
        tokenizer *a, *b;
        CHECK_OK(tokenizer_load(&a, path, &e), &e);
        char dir[64];
        snprintf(dir, sizeof dir, "hf-%d", v);
        const char *d = test_tmp_path(dir);
        char dbuf[1024], jpath[1100];
        snprintf(dbuf, sizeof dbuf, "%s", d);
        CHECK_OK(mr_mkdir_p(dbuf, &e), &e);
        CHECK(!tokenizer_hf_available(dbuf));
        snprintf(jpath, sizeof jpath, "%s/tokenizer.json", dbuf);
        CHECK_OK(tokenizer_write_hf_json(a, jpath, &e), &e);
        CHECK(tokenizer_hf_available(dbuf));
        CHECK_OK(tokenizer_load(&b, dbuf, &e), &e);
        CHECK(tokenizer_n_vocab(a) == tokenizer_n_vocab(b));
        CHECK(tokenizer_get_kind(a) == tokenizer_get_kind(b));
        CHECK(tokenizer_bos(a) == tokenizer_bos(b) && tokenizer_eos(a) == tokenizer_eos(b));
        CHECK(tokenizer_adds_bos(a) == tokenizer_adds_bos(b) && tokenizer_adds_eos(a) == tokenizer_adds_eos(b));
        for (int32_t id = 0; id < tokenizer_n_vocab(a); id++) {
            size_t la, lb;
            const char *pa = tokenizer_token_piece(a, id, 1, &la), *pb = tokenizer_token_piece(b, id, 1, &lb);
            CHECK_MSG(la == lb && !memcmp(pa, pb, la), "%s: token %d decodes differently", VOCABS[v][0], (int)id);
        }
        int diff = count_differences(a, b, &c);
        printf("  %s: tokenizer.json read back, %d of %d encodings differ\n", VOCABS[v][0], diff, 2 * c.n);
        CHECK(diff == 0);
        /* and on to GGUF: SentencePiece merge ranks become scores */
        tokenizer *g;
        CHECK_OK(via_gguf(b, "from-hf.gguf", &g, &e), &e);
        CHECK(count_differences(a, g, &c) == 0);
        tokenizer_free(g);
        tokenizer_free(a);
        tokenizer_free(b);
        cases_free(&c);
    }
    if (!any) SKIP("reference files absent");
}

TEST(gguf_metadata_written_reads_back_identically) {
    int any = 0;
    for (int v = 0; v < N_VOCABS; v++) {
        const char *path = test_shared_path(VOCABS[v][1]);
        cases c;
        if (!path || load_cases_for(v, &c)) continue;
        any = 1;
        mr_error e = {0};
        tokenizer *a, *b;
        CHECK_OK(tokenizer_load(&a, path, &e), &e);
        gguf_writer *w = gguf_writer_new(&e);
        CHECK(w);
        CHECK_OK(gguf_writer_set_str(w, "general.architecture", "llama", &e), &e);
        CHECK_OK(tokenizer_write_gguf(a, w, &e), &e);
        char name[64], out[1024];
        snprintf(name, sizeof name, "vocab-%d.gguf", v);
        snprintf(out, sizeof out, "%s", test_tmp_path(name));
        CHECK_OK(gguf_writer_write(w, out, &e), &e);
        gguf_writer_free(w);
        CHECK_OK(tokenizer_load(&b, out, &e), &e);
        CHECK(tokenizer_n_vocab(a) == tokenizer_n_vocab(b) && tokenizer_bos(a) == tokenizer_bos(b));
        CHECK(tokenizer_adds_bos(a) == tokenizer_adds_bos(b));
        CHECK(count_differences(a, b, &c) == 0);
        tokenizer_free(a);
        tokenizer_free(b);
        cases_free(&c);
    }
    if (!any) SKIP("reference files absent");
}

TEST(gpt2_vocab_json_and_merges_txt_folder) {
    const char *path = test_shared_path("reference/tokenizer/ggml-vocab-gpt-2.gguf");
    cases c;
    if (!path || load_cases_for(1, &c)) SKIP("gpt-2 vocabulary not found");
    mr_error e = {0};
    tokenizer *a, *b;
    CHECK_OK(tokenizer_load(&a, path, &e), &e);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("gpt2-folder"));
    CHECK_OK(mr_mkdir_p(dir, &e), &e);
    /* vocab.json from the token texts, merges.txt from the merges, as GPT-2 ships them */
    json_t *vocab = json_object();
    for (int32_t i = 0; i < tokenizer_n_vocab(a); i++) {
        size_t n;
        const char *s = tokenizer_token_text(a, i, &n);
        char *k = strndup(s, n);
        json_object_set_new(vocab, k, json_integer(i));
        free(k);
    }
    char p[1100];
    snprintf(p, sizeof p, "%s/vocab.json", dir);
    CHECK(json_dump_file(vocab, p, 0) == 0);
    json_decref(vocab);
    snprintf(p, sizeof p, "%s/merges.txt", dir);
    FILE *f = fopen(p, "wb");
    CHECK(f);
    fprintf(f, "#version: 0.2\n");
    for (int64_t i = 0; i < a->n_merges; i++)
        fprintf(f, "%s %s\n", tok_str(&a->str, a->merge_left[i]), tok_str(&a->str, a->merge_right[i]));
    fclose(f);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    const char *cfg = "{\"bos_token\": \"<|endoftext|>\", \"eos_token\": {\"content\": \"<|endoftext|>\"}}";
    test_write_file(p, cfg, strlen(cfg));
    CHECK_OK(tokenizer_load(&b, dir, &e), &e);
    CHECK(tokenizer_bos(b) == 50256 && tokenizer_eos(b) == 50256 && !tokenizer_adds_bos(b));
    CHECK(count_differences(a, b, &c) == 0);
    tokenizer_free(a);
    tokenizer_free(b);
    cases_free(&c);
}

/* ------------------------------------------------ pre-tokenizer splits -- */

/* A tokenizer with the gpt-2 vocabulary and another pre-tokenizer. */
static int gpt2_with_pre(tokenizer **out, const char *pre, mr_error *e) {
    const char *path = test_shared_path("reference/tokenizer/ggml-vocab-gpt-2.gguf");
    if (!path) return -1;
    tokenizer *g;
    int rc = tokenizer_load(&g, path, e);
    if (rc) return rc;
    tokenizer_vocab v;
    tokenizer_vocab_defaults(&v, TOK_KIND_BPE);
    int32_t n = g->n_tokens;
    const char **toks = malloc(sizeof *toks * (size_t)n);
    int32_t *types = malloc(sizeof *types * (size_t)n);
    const char **ml = malloc(sizeof *ml * (size_t)g->n_merges), **mr = malloc(sizeof *mr * (size_t)g->n_merges);
    for (int32_t i = 0; i < n; i++) toks[i] = tok_str(&g->str, i), types[i] = g->types[i];
    for (int64_t i = 0; i < g->n_merges; i++) ml[i] = tok_str(&g->str, g->merge_left[i]), mr[i] = tok_str(&g->str, g->merge_right[i]);
    v.n_tokens = n;
    v.tokens = toks;
    v.types = types;
    v.n_merges = g->n_merges;
    v.merges = ml;
    v.merges_right = mr;
    v.pre = pre;
    int n_rx;
    tok_pretok_regexes(pre, &n_rx, &v.ignore_merges, NULL);
    v.bos = v.eos = 50256;
    rc = tokenizer_create(out, &v, e);
    free(toks);
    free(types);
    free(ml);
    free(mr);
    tokenizer_free(g);
    return rc;
}

/* Splits text with t's regexes and compares with the pieces, joined by '|'. */
static int split_is(const tokenizer *t, const char *text, const char *expected) {
    tok_spans s = {0}, tmp = {0};
    pcre2_match_data *md = pcre2_match_data_create(32, NULL);
    mr_error e = {0};
    char got[1024] = "";
    size_t m = 0;
    int rc = tok_pretok_split(t, text, strlen(text), &s, &tmp, md, &e);
    for (size_t i = 0; !rc && i < s.n; i++)
        m += (size_t)snprintf(got + m, sizeof got - m, "%s%.*s", i ? "|" : "", (int)s.len[i], text + s.off[i]);
    pcre2_match_data_free(md);
    tok_spans_free(&s);
    tok_spans_free(&tmp);
    if (rc || strcmp(got, expected)) {
        fprintf(stderr, "  split of [%s]: expected [%s], got [%s]\n", text, expected, got);
        return 0;
    }
    return 1;
}

TEST(pretokenizer_splits_of_llama3_qwen2_deepseek_gpt2) {
    mr_error e = {0};
    tokenizer *gpt2, *llama3, *qwen2, *dsc;
    int rc = gpt2_with_pre(&gpt2, "gpt-2", &e);
    if (rc < 0) SKIP("gpt-2 vocabulary not found");
    CHECK_OK(rc, &e);
    CHECK_OK(gpt2_with_pre(&llama3, "llama-bpe", &e), &e);
    CHECK_OK(gpt2_with_pre(&qwen2, "qwen2", &e), &e);
    CHECK_OK(gpt2_with_pre(&dsc, "deepseek-coder", &e), &e);
    CHECK(llama3->ignore_merges && !qwen2->ignore_merges);
    /* digits: gpt-2 keeps runs, Llama 3 groups of three, Qwen2 and DeepSeek single digits */
    CHECK(split_is(gpt2, "333333333", "333333333"));
    CHECK(split_is(llama3, "3333333", "333|333|3"));
    CHECK(split_is(qwen2, "3333", "3|3|3|3"));
    CHECK(split_is(dsc, "3.14", "3|.|1|4"));
    /* contractions: case-insensitive in Llama 3 / Qwen2, lower case only in gpt-2 */
    CHECK(split_is(gpt2, "'RE you'll 'll", "'|RE| you|'ll| '|ll"));
    CHECK(split_is(gpt2, "you'lL", "you|'|lL"));
    CHECK(split_is(llama3, "'RE you'lL 'll", "'RE| you|'lL| '|ll"));
    CHECK(split_is(qwen2, "Hello, y'all! How", "Hello|,| y|'all|!| How"));
    CHECK(split_is(gpt2, "Hello, y'all! How", "Hello|,| y|'|all|!| How"));
    /* whitespace before words and newlines */
    CHECK(split_is(llama3, "   Hello", "  | Hello"));
    CHECK(split_is(gpt2, "   Hello", "  | Hello"));
    CHECK(split_is(llama3, "a  \nb", "a|  \n|b"));
    CHECK(split_is(gpt2, "a  \nb", "a|  |\n|b"));
    CHECK(split_is(llama3, "Hello\tworld", "Hello|\tworld"));
    CHECK(split_is(gpt2, "Hello\tworld", "Hello|\t|world"));
    CHECK(split_is(qwen2, " ...\n\nx", " ...\n\n|x"));
    CHECK(split_is(dsc, "ab\ncd", "ab|\n|cd"));
    /* Unicode classes come from PCRE2: Cyrillic letters, CJK, a no-break space */
    CHECK(split_is(llama3, "\xd0\xbd\xd0\xb5\xd1\x89\xd0\xbe \xd0\xbd\xd0\xb0",
                   "\xd0\xbd\xd0\xb5\xd1\x89\xd0\xbe| \xd0\xbd\xd0\xb0"));
    CHECK(split_is(dsc, "apple\xe5\xb7\xa5\xe4\xbd\x9c" "1", "apple|\xe5\xb7\xa5\xe4\xbd\x9c|1"));
    CHECK(split_is(gpt2, "a\xc2\xa0\xc2\xa0" "b", "a|\xc2\xa0|\xc2\xa0|b"));

    /* The Qwen2 and Llama 3 test pairs, whose vocabularies are not here: tokens
     * never cross pieces, so every case has at least as many tokens as pieces;
     * and the first 256 ids of these vocabularies are the byte alphabet in the
     * same order as gpt-2's, so cases made only of such tokens must encode the
     * same with the gpt-2 vocabulary. */
    static const char *const pairs[][2] = {{"reference/tokenizer/ggml-vocab-qwen2.gguf.inp", "reference/tokenizer/ggml-vocab-qwen2.gguf.out"},
                                           {"reference/tokenizer/ggml-vocab-llama-bpe.gguf.inp", "reference/tokenizer/ggml-vocab-llama-bpe.gguf.out"}};
    tokenizer *with[2] = {qwen2, llama3};
    for (int k = 0; k < 2; k++) {
        const char *ip = test_shared_path(pairs[k][0]), *op = test_shared_path(pairs[k][1]);
        if (!ip || !op) continue;
        char ipb[2048], opb[2048];
        snprintf(ipb, sizeof ipb, "%s", ip);
        snprintf(opb, sizeof opb, "%s", op);
        cases c;
        CHECK(cases_load(&c, ipb, opb) == 0 && c.n == 46);
        pcre2_match_data *md = pcre2_match_data_create(32, NULL);
        int bounded = 0, exact = 0, byte_only = 0;
        for (int i = 0; i < c.n; i++) {
            tok_spans s = {0}, tmp = {0};
            CHECK_OK(tok_pretok_split(with[k], c.text[i], c.len[i], &s, &tmp, md, &e), &e);
            if (s.n <= c.n_ids[i]) bounded++;
            else fprintf(stderr, "  %s case %d: %zu pieces but %zu tokens\n", pairs[k][0], i, s.n, c.n_ids[i]);
            tok_spans_free(&s);
            tok_spans_free(&tmp);
            int small = c.n_ids[i] > 0;
            for (size_t j = 0; j < c.n_ids[i]; j++) small &= c.ids[i][j] < 256;
            if (!small) continue;
            byte_only++;
            int32_t *ids;
            size_t n;
            CHECK_OK(tokenizer_encode(with[k], c.text[i], c.len[i], 0, &ids, &n, &e), &e);
            if (ids_equal(ids, n, c.ids[i], c.n_ids[i])) exact++;
            else fprintf(stderr, "  %s case %d differs\n", pairs[k][0], i);
            free(ids);
        }
        pcre2_match_data_free(md);
        printf("  %s: pieces <= tokens in %d/%d cases; %d/%d byte-alphabet-only cases encode exactly\n",
               k ? "llama-bpe" : "qwen2", bounded, c.n, exact, byte_only);
        CHECK(bounded == c.n);
        CHECK(exact == byte_only && byte_only >= (k ? 1 : 9));
        cases_free(&c);
    }
    tokenizer_free(gpt2);
    tokenizer_free(llama3);
    tokenizer_free(qwen2);
    tokenizer_free(dsc);
}

/* Hugging Face's own spelling of the Qwen2 and Llama 3 pre-tokenizers: a Split
 * with the original (?i:...) regex, NFC normalizer (ignored, as llama.cpp does)
 * and ByteLevel without regex. It must split like llama.cpp's adapted regexes. */
TEST(hf_spelled_qwen2_and_llama3_pretokenizers) {
    static const char *const hf_rx[2] = {
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"};
    static const char *const pre[2] = {"qwen2", "llama-bpe"};
    for (int k = 0; k < 2; k++) {
        mr_error e = {0};
        tokenizer *a, *b;
        int rc = gpt2_with_pre(&a, pre[k], &e);
        if (rc < 0) SKIP("gpt-2 vocabulary not found");
        CHECK_OK(rc, &e);
        char inp[256], out[256];
        snprintf(inp, sizeof inp, "reference/tokenizer/ggml-vocab-%s.gguf.inp", pre[k]);
        snprintf(out, sizeof out, "reference/tokenizer/ggml-vocab-%s.gguf.out", pre[k]);
        const char *ip = test_shared_path(inp), *op = test_shared_path(out);
        if (!ip || !op) SKIP("%s test pairs not found", pre[k]);
        char ipb[2048], opb[2048];
        snprintf(ipb, sizeof ipb, "%s", ip);
        snprintf(opb, sizeof opb, "%s", op);
        cases c;
        CHECK(cases_load(&c, ipb, opb) == 0);
        char dir[1024], jp[1100];
        snprintf(dir, sizeof dir, "%s", test_tmp_path(pre[k]));
        CHECK_OK(mr_mkdir_p(dir, &e), &e);
        snprintf(jp, sizeof jp, "%s/tokenizer.json", dir);
        CHECK_OK(tokenizer_write_hf_json(a, jp, &e), &e);
        json_error_t je;
        json_t *root = json_load_file(jp, 0, &je);
        CHECK(root);
        json_t *split = json_array_get(json_object_get(json_object_get(root, "pre_tokenizer"), "pretokenizers"), 0);
        CHECK(!strcmp(json_string_value(json_object_get(json_object_get(split, "pattern"), "Regex")),
                      k ? tok_pretok_regexes("llama3", &rc, NULL, NULL)[0] : tok_pretok_regexes("qwen2", &rc, NULL, NULL)[0]));
        json_object_set_new(json_object_get(split, "pattern"), "Regex", json_string(hf_rx[k]));
        json_object_set_new(root, "normalizer", json_pack("{s:s}", "type", "NFC"));
        CHECK(json_dump_file(root, jp, 0) == 0);
        json_decref(root);
        CHECK_OK(tokenizer_load(&b, dir, &e), &e);
        CHECK(b->ignore_merges == a->ignore_merges);
        CHECK(count_differences(a, b, &c) == 0);
        /* HF's spelling is recognised as llama.cpp's pre-tokenizer name in GGUF */
        CHECK(b->pre && !strcmp(b->pre, k ? "llama3" : "qwen2"));
        tokenizer *g;
        CHECK_OK(via_gguf(b, "hf-spelled.gguf", &g, &e), &e);
        CHECK(g->pre && !strcmp(g->pre, b->pre) && g->ignore_merges == a->ignore_merges);
        CHECK(count_differences(a, g, &c) == 0);
        tokenizer_free(g);
        /* regexes without a llama.cpp name go into GGUF under our own key */
        if (k == 0) {
            tokenizer_free(b);
            json_t *r2 = json_load_file(jp, 0, &je);
            json_t *sp = json_array_get(json_object_get(json_object_get(r2, "pre_tokenizer"), "pretokenizers"), 0);
            char other[512];
            snprintf(other, sizeof other, "%s|\\p{Zs}+", hf_rx[k]); /* matches the same: \s+ comes first */
            json_object_set_new(json_object_get(sp, "pattern"), "Regex", json_string(other));
            CHECK(json_dump_file(r2, jp, 0) == 0);
            json_decref(r2);
            CHECK_OK(tokenizer_load(&b, dir, &e), &e);
            CHECK(b->pre == NULL);
            CHECK_OK(via_gguf(b, "custom-regex.gguf", &g, &e), &e);
            CHECK(g->n_regex == 1 && !strcmp(g->regex_src[0], other));
            CHECK(count_differences(a, g, &c) == 0);
            tokenizer_free(g);
        }
        tokenizer_free(a);
        tokenizer_free(b);
        cases_free(&c);
    }
}

/* Every pre-tokenizer name compiles, splits a mixed text into pieces that
 * cover it exactly, and byte-level BPE over it gives the text back. */
TEST(every_pretokenizer_name_compiles_and_covers_the_text) {
    static const char *const names[] = {
        "default", "gpt-2", "llama3", "llama-bpe", "qwen2", "deepseek-coder", "deepseek-llm", "deepseek-v3",
        "falcon", "starcoder", "refact", "command-r", "smollm", "mpt", "olmo", "tekken", "chameleon", "gpt-4o",
        "llama4", "poro-chat", "viking", "bailingmoe", "seed-coder", "grok-2", "hunyuan-dense", "stablelm2"};
    /* a vocabulary of the 256 byte-alphabet characters, one merge */
    const char *toks[256];
    char store[256][4];
    for (int b = 0; b < 256; b++) {
        int n = tok_byte_to_utf8((uint8_t)b, store[b]);
        store[b][n] = 0;
        toks[b] = store[b];
    }
    const char *merges[] = {"a b"};
    const char *text = "Hello, y'ALL! 12345 3.14 \xe4\xbd\xa0\xe5\xa5\xbd\xe3\x81\x82 <sentinel:3> IMGIMGABZ"
                       "\t\n\n  \xd0\xbd\xd0\xb5 \xe2\x80\xa6 caf\xc3\xa9\xcc\x81";
    size_t tl = strlen(text);
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        tokenizer_vocab v;
        tokenizer_vocab_defaults(&v, TOK_KIND_BPE);
        v.n_tokens = 256;
        v.tokens = toks;
        v.n_merges = 1;
        v.merges = merges;
        v.pre = names[k];
        mr_error e = {0};
        tokenizer *t;
        int n_rx;
        CHECK_MSG(tok_pretok_regexes(names[k], &n_rx, NULL, NULL) != NULL, "%s unknown", names[k]);
        CHECK_OK(tokenizer_create(&t, &v, &e), &e);
        tok_spans sp = {0}, tmp = {0};
        pcre2_match_data *md = pcre2_match_data_create(32, NULL);
        CHECK_OK(tok_pretok_split(t, text, tl, &sp, &tmp, md, &e), &e);
        size_t at = 0;
        for (size_t i = 0; i < sp.n; i++) {
            CHECK_MSG(sp.off[i] == at && sp.len[i] > 0, "%s: piece %zu does not follow the previous one", names[k], i);
            at += sp.len[i];
        }
        CHECK(at == tl && sp.n > 5);
        tok_spans_free(&sp);
        tok_spans_free(&tmp);
        pcre2_match_data_free(md);
        int32_t *ids;
        size_t n;
        char *back;
        size_t bl;
        CHECK_OK(tokenizer_encode(t, text, tl, 0, &ids, &n, &e), &e);
        CHECK_OK(tokenizer_decode(t, ids, n, 0, &back, &bl, &e), &e);
        CHECK_MSG(bl == tl && !memcmp(back, text, tl), "%s: [%s]", names[k], back);
        free(ids);
        free(back);
        tokenizer_free(t);
    }
}

/* ---------------------------------------------------- special tokens ---- */

TEST(user_defined_tokens_match_without_parse_special) {
    /* a tiny SentencePiece vocabulary: <unk> <s> </s>, bytes, letters, a user token */
    const char *toks[3 + 256 + 4];
    int32_t types[3 + 256 + 4];
    float scores[3 + 256 + 4];
    char bytes[256][8];
    int n = 0;
    toks[n] = "<unk>", types[n] = TOK_TYPE_UNKNOWN, scores[n++] = 0;
    toks[n] = "<s>", types[n] = TOK_TYPE_CONTROL, scores[n++] = 0;
    toks[n] = "</s>", types[n] = TOK_TYPE_CONTROL, scores[n++] = 0;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], 8, "<0x%02X>", b);
        toks[n] = bytes[b], types[n] = TOK_TYPE_BYTE, scores[n++] = 0;
    }
    toks[n] = "\xe2\x96\x81", types[n] = TOK_TYPE_NORMAL, scores[n++] = -1; /* 259 */
    toks[n] = "a", types[n] = TOK_TYPE_NORMAL, scores[n++] = -2;            /* 260 */
    toks[n] = "\xe2\x96\x81" "a", types[n] = TOK_TYPE_NORMAL, scores[n++] = -3; /* 261 */
    toks[n] = "<tag>", types[n] = TOK_TYPE_USER_DEFINED, scores[n++] = 0;   /* 262 */
    tokenizer_vocab v;
    tokenizer_vocab_defaults(&v, TOK_KIND_SPM);
    v.n_tokens = n;
    v.tokens = toks;
    v.types = types;
    v.scores = scores;
    v.bos = 1, v.eos = 2, v.unk = 0;
    mr_error e = {0};
    tokenizer *t;
    CHECK_OK(tokenizer_create(&t, &v, &e), &e);
    int32_t *ids;
    size_t m;
    CHECK_OK(tokenizer_encode(t, "a<tag>a</s>", 11, 0, &ids, &m, &e), &e);
    /* ▁a <tag> ▁a (space prefix again after a special piece), then "</s>" as bytes */
    int32_t want[] = {261, 262, 261, '<' + 3, '/' + 3, 's' + 3, '>' + 3};
    CHECK(ids_equal(ids, m, want, 7));
    free(ids);
    CHECK_OK(tokenizer_encode(t, "a<tag>a</s>", 11, TOK_ADD_SPECIAL | TOK_PARSE_SPECIAL, &ids, &m, &e), &e);
    int32_t want2[] = {1, 261, 262, 261, 2};
    CHECK(ids_equal(ids, m, want2, 5));
    char *text;
    size_t tl;
    CHECK_OK(tokenizer_decode(t, ids, m, 0, &text, &tl, &e), &e);
    CHECK(!strcmp(text, "a<tag> a")); /* user-defined text stays; control tokens are not shown */
    free(text);
    free(ids);
    tokenizer_free(t);
}

/* --------------------------------------------------------- bad inputs --- */

TEST(bad_files_give_clear_errors) {
    mr_error e = {0};
    tokenizer *t = NULL;
    const char *path = test_shared_path("reference/tokenizer/ggml-vocab-gpt-2.gguf");
    if (path) { /* truncated GGUF: cut inside the token list and just after the header */
        char *data;
        size_t len;
        CHECK_OK(mr_read_file(path, &data, &len, &e), &e);
        size_t cuts[] = {len / 2, 100, 20};
        for (int k = 0; k < 3; k++) {
            const char *p = test_tmp_path("truncated.gguf");
            test_write_file(p, data, cuts[k]);
            mr_error e2 = {0};
            CHECK(tokenizer_load(&t, p, &e2) == MR_ERR_INPUT && t == NULL);
            CHECK_MSG(strstr(e2.msg, "truncated.gguf") != NULL, "message: %s", e2.msg);
        }
        free(data);
    }
    /* a GGUF with a model name but no token list, and one with an unsupported model */
    gguf_writer *w = gguf_writer_new(&e);
    CHECK(w);
    CHECK_OK(gguf_writer_set_str(w, "tokenizer.ggml.model", "llama", &e), &e);
    const char *p = test_tmp_path("notokens.gguf");
    CHECK_OK(gguf_writer_write(w, p, &e), &e);
    gguf_writer_free(w);
    CHECK(tokenizer_load(&t, p, &e) == MR_ERR_INPUT);
    CHECK_MSG(strstr(e.msg, "tokenizer.ggml.tokens") != NULL, "message: %s", e.msg);
    w = gguf_writer_new(&e);
    CHECK_OK(gguf_writer_set_str(w, "tokenizer.ggml.model", "bert", &e), &e);
    CHECK_OK(gguf_writer_write(w, p, &e), &e);
    gguf_writer_free(w);
    CHECK(tokenizer_load(&t, p, &e) == MR_ERR_INPUT);
    CHECK_MSG(strstr(e.msg, "bert") != NULL, "message: %s", e.msg);

    /* tokenizer.json: missing fields, broken JSON, unsupported parts */
    char dir[1024], jp[1100];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("badhf"));
    CHECK_OK(mr_mkdir_p(dir, &e), &e);
    snprintf(jp, sizeof jp, "%s/tokenizer.json", dir);
    static const char *const bad[][2] = {
        {"{\"added_tokens\": []}", "'model'"},
        {"{\"model\": {\"type\": \"BPE\", \"merges\": []}}", "model.vocab"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}", "model.merges"},
        {"{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "Unigram"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}", "neither"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}, \"merges\": []}}", "not a token id"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 2000000000}, \"merges\": []}}", "not a token id"},
        /* one id far above the others: 16 million placeholders (seconds, a gigabyte) are refused */
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 16000000}, \"merges\": []}}",
         "token ids run up to 16000000 but only 2 tokens are defined"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"added_tokens\": [{\"id\": 1}]}",
         "added_tokens[0]"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"ab\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
         "merges[0]"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"type\": \"Lowercase\"}}",
         "Lowercase"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}, \"decoder\": {\"type\": \"ByteLevel\"}}",
         "regex"},
        /* \C (one byte, also inside a character) split pieces into invalid UTF-8 for PCRE2 */
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\C\"}, \"behavior\": \"Isolated\"}, \"decoder\": {\"type\": \"ByteLevel\"}}",
         "regex 0 \"\\C\""},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {", ":1:"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        test_write_file(jp, bad[k][0], strlen(bad[k][0]));
        mr_error e2 = {0};
        CHECK_MSG(tokenizer_load(&t, dir, &e2) == MR_ERR_INPUT && t == NULL, "case %zu loaded", k);
        CHECK_MSG(strstr(e2.msg, bad[k][1]) != NULL, "case %zu: message '%s' lacks '%s'", k, e2.msg, bad[k][1]);
    }
    /* vocab.json + merges.txt with an id that is too large: the message names the entry
     * (it was formatted after the JSON holding the name had been freed) */
    char vdir[1024], vp[1100];
    snprintf(vdir, sizeof vdir, "%s", test_tmp_path("badvocab"));
    CHECK_OK(mr_mkdir_p(vdir, &e), &e);
    snprintf(vp, sizeof vp, "%s/vocab.json", vdir);
    const char *bad_vocab = "{\"a\": 0, \"bad-entry\": 16777216}";
    test_write_file(vp, bad_vocab, strlen(bad_vocab));
    snprintf(vp, sizeof vp, "%s/merges.txt", vdir);
    test_write_file(vp, "a a\n", 4);
    CHECK(tokenizer_load(&t, vdir, &e) == MR_ERR_INPUT && t == NULL);
    CHECK_MSG(strstr(e.msg, "entry 'bad-entry' is not a token id") != NULL, "message: %s", e.msg);
    /* ids far apart: refused beyond 65536 unused ids; a few unused ids become placeholders */
    snprintf(vp, sizeof vp, "%s/vocab.json", vdir);
    const char *sparse = "{\"a\": 0, \"b\": 70001}";
    test_write_file(vp, sparse, strlen(sparse));
    CHECK(tokenizer_load(&t, vdir, &e) == MR_ERR_INPUT && t == NULL);
    CHECK_MSG(strstr(e.msg, "token ids run up to 70001 but only 2 tokens are defined") != NULL, "message: %s", e.msg);
    const char *holes = "{\"a\": 0, \"b\": 1000}";
    test_write_file(vp, holes, strlen(holes));
    CHECK_OK(tokenizer_load(&t, vdir, &e), &e);
    CHECK(tokenizer_n_vocab(t) == 1001);
    tokenizer_free(t);
    t = NULL;
    /* a folder without tokenizer files */
    char empty[1024];
    snprintf(empty, sizeof empty, "%s", test_tmp_path("empty-model"));
    CHECK_OK(mr_mkdir_p(empty, &e), &e);
    CHECK(!tokenizer_hf_available(empty));
    CHECK(tokenizer_load(&t, empty, &e) == MR_ERR_INPUT);
    CHECK_MSG(strstr(e.msg, "no tokenizer files") != NULL, "message: %s", e.msg);

    /* ids out of range in decode; invalid UTF-8 input encodes without trouble */
    if (path) {
        CHECK_OK(tokenizer_load(&t, path, &e), &e);
        int32_t ids[] = {15496, 50257};
        char *text = NULL;
        size_t tl;
        CHECK(tokenizer_decode(t, ids, 2, 0, &text, &tl, &e) == MR_ERR_INPUT && text == NULL);
        CHECK_MSG(strstr(e.msg, "50257") && strstr(e.msg, "out of range"), "message: %s", e.msg);
        int32_t neg[] = {-1};
        CHECK(tokenizer_decode(t, neg, 1, 0, &text, &tl, &e) == MR_ERR_INPUT);
        int32_t *out;
        size_t n;
        CHECK_OK(tokenizer_encode(t, "a\xff\xc3(b\xe2\x82", 7, 0, &out, &n, &e), &e);
        CHECK(n > 0);
        free(out);
        tokenizer_free(t);
    }
}

/* Random texts: any bytes encode without error to ids in range; valid UTF-8
 * without U+2581 decodes back to itself (invalid UTF-8 is lossy in llama.cpp
 * too: byte-level BPE reads it as U+FFFD, SentencePiece may cut an escaped space). */
TEST(random_texts_round_trip) {
    static const char *const pieces[] = {" ", "  ", "\n", "\t", "a", "Hello", "'s", "3", "333", ".", "!?",
                                         "\xc3\xa4", "\xd0\xbd\xd0\xb5", "\xe5\xb7\xa5", "\xf0\x9f\x9a\x80",
                                         "<s>", "</s>", "<|endoftext|>", "\xef\xbd\x9c", "\xc2\xa0"};
    int rounds = test_under_sanitizer() ? 150 : 600, any = 0;
    for (int v = 0; v < N_VOCABS; v++) {
        const char *path = test_shared_path(VOCABS[v][1]);
        if (!path) continue;
        any = 1;
        mr_error e = {0};
        tokenizer *t;
        CHECK_OK(tokenizer_load(&t, path, &e), &e);
        mr_rng rng;
        mr_rng_seed(&rng, 1234 + (uint64_t)v);
        for (int r = 0; r < rounds; r++) {
            char text[256];
            size_t n = 0;
            int raw = r % 4 == 0; /* arbitrary bytes: must encode; a round trip only if valid UTF-8 */
            while (n < 200) {
                if (raw) {
                    text[n++] = (char)mr_rng_below(&rng, 256);
                } else if (mr_rng_below(&rng, 4) == 0) { /* a random code point, not U+2581 or a surrogate */
                    static const uint32_t top[] = {0x80, 0x800, 0x10000, 0x110000};
                    uint32_t c = (uint32_t)mr_rng_below(&rng, top[mr_rng_below(&rng, 4)]);
                    if (c == 0x2581 || (c >= 0xD800 && c <= 0xDFFF)) c = 'x';
                    if (c < 0x80) text[n++] = (char)c;
                    else if (c < 0x800) text[n++] = (char)(0xC0 | c >> 6), text[n++] = (char)(0x80 | (c & 63));
                    else if (c < 0x10000)
                        text[n++] = (char)(0xE0 | c >> 12), text[n++] = (char)(0x80 | ((c >> 6) & 63)),
                        text[n++] = (char)(0x80 | (c & 63));
                    else
                        text[n++] = (char)(0xF0 | c >> 18), text[n++] = (char)(0x80 | ((c >> 12) & 63)),
                        text[n++] = (char)(0x80 | ((c >> 6) & 63)), text[n++] = (char)(0x80 | (c & 63));
                } else {
                    const char *p = pieces[mr_rng_below(&rng, sizeof pieces / sizeof *pieces)];
                    size_t pl = strlen(p);
                    if (n + pl > 200) break;
                    memcpy(text + n, p, pl);
                    n += pl;
                }
                if (mr_rng_below(&rng, 40) == 0) break;
            }
            for (int flags = 0; flags < 4; flags++) {
                int32_t *ids;
                size_t m;
                CHECK_OK(tokenizer_encode(t, text, n, flags, &ids, &m, &e), &e);
                for (size_t i = 0; i < m; i++) CHECK(ids[i] >= 0 && ids[i] < tokenizer_n_vocab(t));
                if (flags == 0 && mr_utf8_valid(text, n)) {
                    char *back;
                    size_t bl;
                    CHECK_OK(tokenizer_decode(t, ids, m, 0, &back, &bl, &e), &e);
                    CHECK_MSG(bl == n && !memcmp(back, text, n), "%s round %d: decode differs", VOCABS[v][0], r);
                    free(back);
                }
                free(ids);
            }
        }
        tokenizer_free(t);
    }
    if (!any) SKIP("reference vocabularies absent");
}

/* ------------------------------------------------------------- the CLI --- */

TEST(cli_llm_tokenize) {
    const char *spm = test_shared_path("reference/tokenizer/ggml-vocab-llama-spm.gguf");
    if (!spm) SKIP("llama-spm vocabulary not found");
    char out[4096], path[2048];
    snprintf(path, sizeof path, "%s", spm);
    CHECK(test_cli(out, sizeof out, "llm tokenize --model %s --text 'Hello world'", path) == 0);
    CHECK(!strcmp(out, "1 15043 3186\n"));
    CHECK(test_cli(out, sizeof out, "llm tokenize --model %s --text '</s>Hello</s>' --no-bos", path) == 0);
    CHECK(!strcmp(out, "2 15043 2\n"));
    CHECK(test_cli(out, sizeof out, "llm tokenize --model %s --text '</s>Hello</s>' --no-parse-special", path) == 0);
    CHECK(!strcmp(out, "1 1533 29879 29958 10994 829 29879 29958\n"));
    const char *f = test_tmp_path("text.txt");
    test_write_file(f, " Hello world\n", 13); /* read byte for byte: the leading space and newline count */
    CHECK(test_cli(out, sizeof out, "llm tokenize --model %s --file %s --no-bos", path, f) == 0);
    CHECK_MSG(!strcmp(out, "29871 15043 3186 13\n"), "got %s", out);
    CHECK(test_cli(out, sizeof out, "llm tokenize --model %s --text '' --no-bos", path) == 0);
    CHECK(!strcmp(out, "\n"));
    CHECK(test_cli(out, sizeof out, "llm tokenize --text x 2>/dev/null") == MR_ERR_USAGE);
    CHECK(test_cli(out, sizeof out, "llm tokenize --model %s --text x --file %s 2>/dev/null", path, f) == MR_ERR_USAGE);
    CHECK(test_cli(out, sizeof out, "llm tokenize --model %s --text x 2>/dev/null", test_tmpdir()) == MR_ERR_INPUT);
    CHECK(test_cli(out, sizeof out, "llm tokenize --model %s/nothing.gguf --text x 2>/dev/null", test_tmpdir()) ==
          MR_ERR_INPUT);
}

int main(void) {
    RUN(reference_vectors_encode_exactly);
    RUN(llama_tokenize_behaviours);
    RUN(bos_eos_settings_follow_the_vocabulary);
    RUN(model_reference_tokens_and_pieces);
    RUN(truncate_cuts_at_tokens_and_whole_characters);
    RUN(tokenizer_json_written_from_gguf_reads_back_identically);
    RUN(gguf_metadata_written_reads_back_identically);
    RUN(gpt2_vocab_json_and_merges_txt_folder);
    RUN(pretokenizer_splits_of_llama3_qwen2_deepseek_gpt2);
    RUN(hf_spelled_qwen2_and_llama3_pretokenizers);
    RUN(every_pretokenizer_name_compiles_and_covers_the_text);
    RUN(user_defined_tokens_match_without_parse_special);
    RUN(bad_files_give_clear_errors);
    RUN(random_texts_round_trip);
    RUN(cli_llm_tokenize);
    return test_summary();
}
