/* Downloading a file over HTTP(S) with libcurl (used by the demo to fetch the
 * GroupLens archive when no copy is found locally). */
#include "mllm4rec/prepare.h"

#include <curl/curl.h>
#include <string.h>

typedef struct sink {
    FILE *f;
    int64_t bytes;
    mr_sha256 sha;
    mr_progress progress;
    int64_t total;
} sink;

static size_t on_data(char *data, size_t size, size_t nmemb, void *userdata) {
    sink *s = userdata;
    size_t n = size * nmemb;
    if (fwrite(data, 1, n, s->f) != n) return 0;
    mr_sha256_update(&s->sha, data, n);
    s->bytes += (int64_t)n;
    mr_progress_update(&s->progress, s->bytes, NULL);
    return n;
}

int mr_download_file(const char *url, const char *path, const char *want_sha256, char got_sha256[65], mr_error *e) {
    mr_atomic_file af;
    int rc = mr_atomic_open(&af, path, e);
    if (rc) return rc;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        mr_atomic_abort(&af);
        return mr_fail(e, MR_ERR_INTERNAL, "libcurl initialisation failed");
    }
    CURL *c = curl_easy_init();
    if (!c) {
        mr_atomic_abort(&af);
        curl_global_cleanup();
        return mr_fail(e, MR_ERR_INTERNAL, "libcurl initialisation failed");
    }
    sink s = {.f = af.f};
    mr_sha256_init(&s.sha);
    mr_progress_start(&s.progress, "download", 0);
    char curl_err[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 20L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);   /* give up after 60 s without data */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "mllm4rec");
    CURLcode cc = curl_easy_perform(c);
    mr_progress_end(&s.progress);
    curl_easy_cleanup(c);
    curl_global_cleanup();
    if (cc != CURLE_OK) {
        mr_atomic_abort(&af);
        return mr_fail(e, MR_ERR_INPUT, "download of %s failed: %s", url, curl_err[0] ? curl_err : curl_easy_strerror(cc));
    }
    uint8_t digest[32];
    char hex[65];
    mr_sha256_final(&s.sha, digest);
    mr_sha256_hex(digest, hex);
    if (got_sha256) memcpy(got_sha256, hex, 65);
    if (want_sha256 && *want_sha256 && strcmp(hex, want_sha256)) {
        mr_atomic_abort(&af);
        return mr_fail(e, MR_ERR_INPUT, "download of %s: sha256 %s, expected %s", url, hex, want_sha256);
    }
    return mr_atomic_commit(&af, e);
}
