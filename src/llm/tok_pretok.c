/* Pre-tokenizer regexes of byte-level BPE vocabularies, per llama.cpp
 * pre-tokenizer name (tokenizer.ggml.pre), and the split itself with PCRE2 in
 * UTF + UCP mode, so that \p{L}, \p{N}, \p{P} and \s follow the Unicode
 * tables. Each regex refines the pieces of the previous one; inside a piece
 * both the matches and the text between them become pieces (llama.cpp's
 * unicode_regex_split, the "Isolated" behaviour of Hugging Face's Split). */
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

#define RX_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RX_CONTRACTIONS_CI "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RX_LLAMA3                                                                                       \
    RX_CONTRACTIONS_CI "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+" \
                       "|\\s+(?!\\S)|\\s+"
#define RX_QWEN2                                                                                   \
    RX_CONTRACTIONS_CI "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+" \
                       "|\\s+(?!\\S)|\\s+"
/* CJK ideographs, a block below them and Hangul, as in deepseek's tokenizer.json */
#define RX_CJK "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"

static const char *const PRE_DEFAULT[] = {"[\\p{P}\\$\\+<=>\\^~\\|]+", RX_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"};
static const char *const PRE_GPT2[] = {RX_GPT2};
static const char *const PRE_LLAMA3[] = {RX_LLAMA3};
static const char *const PRE_QWEN2[] = {RX_QWEN2};
static const char *const PRE_DEEPSEEK_CODER[] = {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RX_CJK, "\\p{N}"};
static const char *const PRE_DEEPSEEK_LLM[] = {
    "[\\r\\n]",
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}\\x{295}-"
    "\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-"
    "\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-"
    "\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}"
    "\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-"
    "\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}"
    "\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-"
    "\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}"
    "\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}"
    "\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}"
    "\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-"
    "\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}"
    "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}"
    "\\x{1E900}-\\x{1E943}]+",
    "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
    "\\s+$",
    RX_CJK,
    "\\p{N}+"};
static const char *const PRE_FALCON[] = {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RX_GPT2, "[0-9][0-9][0-9]"};
static const char *const PRE_STARCODER[] = {"\\p{N}", RX_GPT2};

static const char *const PRE_DEEPSEEK3[] = {
    "\\p{N}{1,3}",
    "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
    "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"};
/* a space and a run of anything but whitespace and these punctuation marks */
#define RX_PORO " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{0964}\\x{06D4}\\x{060C})]+"
static const char *const PRE_PORO[] = {RX_PORO};
static const char *const PRE_VIKING[] = {RX_PORO, "\\p{N}"};
static const char *const PRE_TEKKEN[] = {
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])"
    "([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"};
static const char *const PRE_CHAMELEON[] = {"<sentinel:[0-9]+>",
                                            "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
                                            "([\\t\\n]|    |  )",
                                            "\\p{N}",
                                            "[\\p{P}!-/:-@\\[-`{-~]",
                                            RX_GPT2};
static const char *const PRE_GPT4O[] = {
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+" RX_CONTRACTIONS_CI
    "?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*" RX_CONTRACTIONS_CI
    "?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"};
static const char *const PRE_BAILINGMOE[] = {
    "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"};
static const char *const PRE_SEED_CODER[] = {
    RX_CONTRACTIONS_CI "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+"
                       "|\\s+(?!\\S)|\\s+"};

typedef struct pre_entry {
    const char *name;
    const char *const *rx;
    int n;
    int ignore_merges, add_bos;
} pre_entry;

#define N_OF(a) (int)(sizeof(a) / sizeof *(a))
static const pre_entry PRE_TABLE[] = {
    {"default", PRE_DEFAULT, N_OF(PRE_DEFAULT), 0, 0},
    {"llama3", PRE_LLAMA3, 1, 1, 1},
    {"llama-v3", PRE_LLAMA3, 1, 1, 1},
    {"llama-bpe", PRE_LLAMA3, 1, 1, 1},
    {"falcon3", PRE_LLAMA3, 1, 1, 1},
    {"falcon-h1", PRE_LLAMA3, 1, 1, 1},
    {"pixtral", PRE_LLAMA3, 1, 1, 1},
    {"dbrx", PRE_LLAMA3, 1, 0, 0},
    {"smaug-bpe", PRE_LLAMA3, 1, 0, 0},
    {"chatglm-bpe", PRE_LLAMA3, 1, 0, 0},
    {"glm4", PRE_LLAMA3, 1, 0, 0},
    {"deepseek-llm", PRE_DEEPSEEK_LLM, N_OF(PRE_DEEPSEEK_LLM), 0, 0},
    {"deepseek-coder", PRE_DEEPSEEK_CODER, N_OF(PRE_DEEPSEEK_CODER), 0, 0},
    {"falcon", PRE_FALCON, N_OF(PRE_FALCON), 0, 0},
    {"starcoder", PRE_STARCODER, 2, 0, 0},
    {"refact", PRE_STARCODER, 2, 0, 0},
    {"command-r", PRE_STARCODER, 2, 0, 0},
    {"smollm", PRE_STARCODER, 2, 0, 0},
    {"codeshell", PRE_STARCODER, 2, 0, 0},
    {"exaone", PRE_STARCODER, 2, 0, 0},
    {"minerva-7b", PRE_STARCODER, 2, 0, 0},
    {"gpt-2", PRE_GPT2, 1, 0, 0},
    {"phi-2", PRE_GPT2, 1, 0, 0},
    {"jina-es", PRE_GPT2, 1, 0, 0},
    {"jina-de", PRE_GPT2, 1, 0, 0},
    {"gigachat", PRE_GPT2, 1, 0, 0},
    {"jina-v2-es", PRE_GPT2, 1, 0, 0},
    {"jina-v2-de", PRE_GPT2, 1, 0, 0},
    {"jina-v1-en", PRE_GPT2, 1, 0, 0},
    {"jina-v2-code", PRE_GPT2, 1, 0, 0},
    {"roberta-bpe", PRE_GPT2, 1, 0, 0},
    {"mpt", PRE_GPT2, 1, 0, 0},
    {"olmo", PRE_GPT2, 1, 0, 0},
    {"jais", PRE_GPT2, 1, 0, 0},
    {"exaone4", PRE_GPT2, 1, 0, 0},
    {"qwen2", PRE_QWEN2, 1, 0, 0},
    {"deepseek-r1-qwen", PRE_QWEN2, 1, 0, 0},
    {"stablelm2", PRE_QWEN2, 1, 0, 0},
    {"megrez", PRE_QWEN2, 1, 0, 0},
    {"kormo", PRE_QWEN2, 1, 0, 0},
    {"hunyuan", PRE_QWEN2, 1, 0, 0},
    {"grok-2", PRE_QWEN2, 1, 0, 0},
    {"midm-2.0", PRE_LLAMA3, 1, 1, 1},
    {"lfm2", PRE_LLAMA3, 1, 1, 1},
    {"a.x-4.0", PRE_GPT2, 1, 0, 0},
    {"mellum", PRE_GPT2, 1, 0, 0},
    {"trillion", PRE_GPT2, 1, 0, 0},
    {"granite-docling", PRE_GPT2, 1, 0, 0},
    {"deepseek-v3", PRE_DEEPSEEK3, N_OF(PRE_DEEPSEEK3), 0, 0},
    {"hunyuan-dense", PRE_DEEPSEEK3, N_OF(PRE_DEEPSEEK3), 0, 0},
    {"poro-chat", PRE_PORO, 1, 0, 0},
    {"bloom", PRE_PORO, 1, 0, 0},
    {"gpt3-finnish", PRE_PORO, 1, 0, 0},
    {"viking", PRE_VIKING, 2, 0, 0},
    {"tekken", PRE_TEKKEN, 1, 1, 1},
    {"chameleon", PRE_CHAMELEON, N_OF(PRE_CHAMELEON), 0, 1},
    {"gpt-4o", PRE_GPT4O, 1, 0, 0},
    {"llama4", PRE_GPT4O, 1, 0, 0},
    {"minimax-m2", PRE_GPT4O, 1, 0, 0},
    {"bailingmoe", PRE_BAILINGMOE, 1, 0, 0},
    {"bailingmoe2", PRE_BAILINGMOE, 1, 0, 0},
    {"llada-moe", PRE_BAILINGMOE, 1, 0, 0},
    {"seed-coder", PRE_SEED_CODER, 1, 0, 0},
};

const char *const *tok_pretok_regexes(const char *name, int *n, int *ignore_merges, int *add_bos) {
    for (size_t i = 0; i < sizeof PRE_TABLE / sizeof *PRE_TABLE; i++) {
        if (strcmp(PRE_TABLE[i].name, name)) continue;
        *n = PRE_TABLE[i].n;
        if (ignore_merges) *ignore_merges = PRE_TABLE[i].ignore_merges;
        if (add_bos) *add_bos = PRE_TABLE[i].add_bos;
        return PRE_TABLE[i].rx;
    }
    return NULL;
}

/* Compares a regex with one of ours, reading Hugging Face's spelling of the
 * case-insensitive contractions "(?i:'s|...|'d)" as llama.cpp's adapted one. */
static int same_regex(const char *ours, const char *theirs) {
    static const char hf[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
    static const char adapted[] = RX_CONTRACTIONS_CI;
    if (!strncmp(theirs, hf, sizeof hf - 1) && !strncmp(ours, adapted, sizeof adapted - 1))
        return !strcmp(ours + sizeof adapted - 1, theirs + sizeof hf - 1);
    return !strcmp(ours, theirs);
}

const char *tok_pretok_name_of(const char *const *rx, int n) {
    for (size_t i = 0; i < sizeof PRE_TABLE / sizeof *PRE_TABLE; i++) {
        if (PRE_TABLE[i].n != n) continue;
        int same = 1;
        for (int k = 0; k < n && same; k++) same = same_regex(PRE_TABLE[i].rx[k], rx[k]);
        if (same) return PRE_TABLE[i].name;
    }
    return NULL;
}

int tok_pretok_compile(tokenizer *t, const char *const *src, int n, mr_error *e) {
    t->regex_src = mr_calloc((size_t)n + 1, sizeof *t->regex_src, e);
    t->regex = mr_calloc((size_t)n + 1, sizeof *t->regex, e);
    if (!t->regex_src || !t->regex) return MR_ERR_INTERNAL;
    for (int i = 0; i < n; i++) {
        t->regex_src[i] = mr_strdup(src[i], e);
        if (!t->regex_src[i]) return MR_ERR_INTERNAL;
        t->n_regex = i + 1;
        int err;
        PCRE2_SIZE at;
        t->regex[i] = pcre2_compile((PCRE2_SPTR)src[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &at, NULL);
        if (!t->regex[i]) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            return mr_fail(e, MR_ERR_INPUT, "tokenizer: pre-tokenizer regex %d \"%s\": %s at offset %zu", i, src[i],
                           (const char *)msg, (size_t)at);
        }
        pcre2_jit_compile(t->regex[i], PCRE2_JIT_COMPLETE); /* falls back to the interpreter when JIT fails */
    }
    return MR_OK;
}

void tok_spans_free(tok_spans *s) {
    free(s->off);
    free(s->len);
    memset(s, 0, sizeof *s);
}

static int span_push(tok_spans *s, size_t off, size_t len, mr_error *e) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        size_t *o = mr_realloc(s->off, cap * sizeof *o, e);
        if (!o) return MR_ERR_INTERNAL;
        s->off = o;
        size_t *l = mr_realloc(s->len, cap * sizeof *l, e);
        if (!l) return MR_ERR_INTERNAL;
        s->len = l;
        s->cap = cap;
    }
    s->off[s->n] = off;
    s->len[s->n] = len;
    s->n++;
    return MR_OK;
}

int tok_pretok_split(const tokenizer *t, const char *text, size_t len, tok_spans *out, tok_spans *tmp,
                     pcre2_match_data *md, mr_error *e) {
    out->n = 0;
    if (len == 0) return MR_OK;
    if (span_push(out, 0, len, e)) return MR_ERR_INTERNAL;
    for (int r = 0; r < t->n_regex; r++) {
        tmp->n = 0;
        for (size_t i = 0; i < out->n; i++) {
            const char *piece = text + out->off[i];
            size_t plen = out->len[i], done = 0, start = 0;
            while (start < plen) {
                int rc = pcre2_match(t->regex[r], (PCRE2_SPTR)piece, plen, start, PCRE2_NO_UTF_CHECK, md, NULL);
                if (rc == PCRE2_ERROR_NOMATCH) break;
                if (rc < 0) {
                    PCRE2_UCHAR msg[256];
                    pcre2_get_error_message(rc, msg, sizeof msg);
                    return mr_fail(e, MR_ERR_INPUT, "tokenizer: pre-tokenizer regex %d failed: %s", r,
                                   (const char *)msg);
                }
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
                size_t ms = ov[0], me = ov[1];
                if (me <= ms) { /* an empty match splits nothing: step one character */
                    start = ms + tok_utf8_len((uint8_t)piece[ms]);
                    continue;
                }
                if (ms > done && span_push(tmp, out->off[i] + done, ms - done, e)) return MR_ERR_INTERNAL;
                if (span_push(tmp, out->off[i] + ms, me - ms, e)) return MR_ERR_INTERNAL;
                done = start = me;
            }
            if (done < plen && span_push(tmp, out->off[i] + done, plen - done, e)) return MR_ERR_INTERNAL;
        }
        tok_spans swap = *out;
        *out = *tmp;
        *tmp = swap;
    }
    return MR_OK;
}
