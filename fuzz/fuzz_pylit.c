/* libFuzzer target: the Python-literal parser of Amazon 2014 meta lines
 * (pylit_parse_dict, src/data/prep_internal.h) on one arbitrary line, read from
 * a buffer of exactly its length. Required: 0, or -1 with a reason and an offset
 * inside the text; never a crash, leak or UB. (The strings it returns may be
 * invalid UTF-8, e.g. from '\udc80'; the meta reader checks them.) */
#include <stdint.h>
#include "fuzz_util.h"
#include "data/prep_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const KEYS[] = {"asin", "title", "imUrl"};
    char *values[3] = {NULL, NULL, NULL};
    pylit_fields f = {KEYS, 3, values};
    char why[256] = "";
    size_t at = 0;
    /* a copy of exactly size bytes: the parser must not read past len */
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    memcpy(text, data, size);
    int rc = pylit_parse_dict(text, size, &f, why, sizeof why, &at);
    if (rc != 0 && (rc != -1 || !why[0] || at > size)) {
        fprintf(stderr, "pylit: rc %d, why '%s', at %zu of %zu\n", rc, why, at, size);
        abort();
    }
    for (int k = 0; k < 3; k++) free(values[k]);
    free(text);
    return 0;
}
