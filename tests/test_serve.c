/* recommend and serve (issue 13) on a small generated dataset with a retriever
 * trained here: the server started on a free loopback port, every endpoint,
 * every bad request the issue lists, path traversal, equality of POST
 * /v1/recommend with `recommend --json`, 32 clients at once, and SIGTERM with a
 * request in flight; with stories260K (../shared) the LLM path: equality, a full
 * queue (503), a timeout (504), a client that goes away. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#define N_USERS 40
#define N_ITEMS 60
static char ds[512], run[512], outside[512];
static int prepared; /* 1 ok, -1 failed */

/* Users walk the item ids upwards; items 1..5 are "Toy ..." titles; item 2's
 * image is ok.jpg, items 3..7 carry image names that try to leave the poster
 * folder (or are not files); item 1 has its poster by source id (s1.jpg). */
static void make_world(void) {
    if (prepared) return;
    prepared = -1;
    snprintf(ds, sizeof ds, "%s", test_tmp_path("ds"));
    mkdir(ds, 0755);
    static char buf[400000];
    char path[700];
    size_t n = 0;
    n += (size_t)snprintf(buf + n, sizeof buf - n, "item_id\tsource_id\ttitle\timage\tcaption\n");
    static const char *images[] = {"", "ok.jpg", "../secret.jpg", "link.jpg", "sub/../../secret.jpg", "/etc/passwd",
                                   "http://example.com/x.jpg"};
    for (int i = 1; i <= N_ITEMS; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%d\ts%d\t%s Movie %d (19%02d)\t%s\tcaption of %d\n", i, i,
                              i <= 5 ? "Toy" : "Other", i, i % 100, i <= 7 ? images[i - 1] : "", i);
    snprintf(path, sizeof path, "%s/items.tsv", ds);
    test_write_file(path, buf, n);
    mr_rng r;
    mr_rng_seed(&r, 5);
    n = 0;
    int inter = 0;
    n += (size_t)snprintf(buf + n, sizeof buf - n, "user_id\tsource_user_id\titems\n");
    for (int u = 1; u <= N_USERS; u++) {
        /* the last user's sequence is longer than a history a client may send */
        int len = u == N_USERS ? 1100 : 6 + (int)mr_rng_below(&r, 25), item = 1 + (int)mr_rng_below(&r, N_ITEMS);
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%d\tu%d\t", u, u);
        for (int j = 0; j < len; j++) {
            n += (size_t)snprintf(buf + n, sizeof buf - n, j ? " %d" : "%d", item);
            item = item % N_ITEMS + 1;
        }
        n += (size_t)snprintf(buf + n, sizeof buf - n, "\n");
        inter += len;
    }
    snprintf(path, sizeof path, "%s/sequences.tsv", ds);
    test_write_file(path, buf, n);
    n = (size_t)snprintf(buf, sizeof buf,
                         "{\"format_version\": 1, \"format\": \"movielens\", \"name\": \"walk\", \"counts\": "
                         "{\"after\": {\"users\": %d, \"items\": %d, \"interactions\": %d}}}\n",
                         N_USERS, N_ITEMS, inter);
    snprintf(path, sizeof path, "%s/meta.json", ds);
    test_write_file(path, buf, n);
    /* posters: ok.jpg inside, secret.jpg outside, link.jpg a symlink to it, s1.jpg by source id */
    snprintf(path, sizeof path, "%s/posters", test_tmpdir());
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/posters/sub", test_tmpdir());
    mkdir(path, 0755);
    snprintf(outside, sizeof outside, "%s/secret.jpg", test_tmpdir());
    test_write_file(outside, "SECRET-OUTSIDE", 14);
    snprintf(path, sizeof path, "%s/posters/ok.jpg", test_tmpdir());
    test_write_file(path, "\xff\xd8\xff poster of item 2", 20);
    snprintf(path, sizeof path, "%s/posters/s1.jpg", test_tmpdir());
    test_write_file(path, "\xff\xd8\xff poster of item 1", 20);
    snprintf(path, sizeof path, "%s/posters/link.jpg", test_tmpdir());
    if (symlink(outside, path)) return;
    snprintf(run, sizeof run, "%s", test_tmp_path("run"));
    int rc = test_cli(NULL, 0,
                      "retriever train --dataset %s --out %s --max-len 8 --hidden 16 --batch 8 --max-epochs 3 "
                      "--val-every 10 --threads 1 --seed 2 2>/dev/null",
                      ds, run);
    prepared = rc == 0 ? 1 : -1;
}

/* ------------------------------------------------------------------ server process */

typedef struct server {
    pid_t pid;
    int port;
    char err_path[600];
} server;

static const char *serve_run; /* the retriever run serve loads; NULL: run */

static int server_start(server *s, const char *extra) {
    const char *bin = getenv("MLLM4REC_BIN");
    if (!bin) bin = "build/mllm4rec";
    static int count;
    snprintf(s->err_path, sizeof s->err_path, "%s/server%d.err", test_tmpdir(), count++);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec %s serve --dataset %s --retriever %s --port 0 --threads 2 --images %s/posters %s 2>%s",
             bin, ds, serve_run ? serve_run : run, test_tmpdir(), extra, s->err_path);
    s->pid = fork();
    if (s->pid < 0) return -1;
    if (s->pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    /* wait for "listening on http://127.0.0.1:PORT/" (loading is quick; ASan is slower) */
    for (int i = 0; i < 600; i++) {
        char *txt = NULL;
        size_t len;
        mr_error e;
        if (!mr_read_file(s->err_path, &txt, &len, &e)) {
            const char *p = strstr(txt, "listening on http://127.0.0.1:");
            if (p) {
                s->port = atoi(p + strlen("listening on http://127.0.0.1:"));
                free(txt);
                return s->port > 0 ? 0 : -1;
            }
            free(txt);
        }
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) return -1;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return -1;
}

/* SIGTERM, then the exit status (-1 when it did not exit within 30 s). */
static int server_stop(server *s) {
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 600; i++) {
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    return -1;
}

/* ------------------------------------------------------------------ a small HTTP client */

typedef struct resp {
    int status;
    char *head; /* status line and headers */
    char *body;
    size_t body_len;
} resp;

static void resp_free(resp *r) {
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends raw bytes, reads to EOF (Connection: close). 0 on success. */
static int http_raw(int port, const char *req, size_t req_len, resp *out) {
    memset(out, 0, sizeof *out);
    int fd = connect_to(port);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < req_len) {
        ssize_t k = send(fd, req + off, req_len - off, MSG_NOSIGNAL);
        if (k <= 0) break; /* the server may answer (413) before reading everything */
        off += (size_t)k;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 4096 > cap) buf = realloc(buf, cap *= 2);
        ssize_t k = recv(fd, buf + len, cap - len - 1, 0);
        if (k <= 0) break;
        len += (size_t)k;
    }
    close(fd);
    buf[len] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || strncmp(buf, "HTTP/1.1 ", 9)) {
        free(buf);
        return -1;
    }
    out->status = atoi(buf + 9);
    out->head = strndup(buf, (size_t)(sep - buf));
    out->body_len = len - (size_t)(sep + 4 - buf);
    out->body = malloc(out->body_len + 1);
    memcpy(out->body, sep + 4, out->body_len);
    out->body[out->body_len] = 0;
    free(buf);
    return 0;
}

static int http(int port, const char *method, const char *path, const char *body, resp *out) {
    size_t blen = body ? strlen(body) : 0;
    char *req = malloc(blen + 1024);
    int n = snprintf(req, 1024, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n", method, path);
    if (body) n += snprintf(req + n, 1024 - (size_t)n, "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    n += snprintf(req + n, 1024 - (size_t)n, "\r\n");
    if (body) memcpy(req + n, body, blen);
    int rc = http_raw(port, req, (size_t)n + blen, out);
    free(req);
    return rc;
}

/* The "error" string of a JSON error body, or NULL (malloc'd). */
static char *error_of(const resp *r) {
    json_t *j = json_loads(r->body, 0, NULL);
    const char *s = json_string_value(json_object_get(j, "error"));
    char *out = s ? strdup(s) : NULL;
    json_decref(j);
    return out;
}

/* Items of a result object as "id:rank:title|..." plus scores; 0 when it is not one. */
static int result_items(const char *js, char *ids, size_t cap, double *scores, int *n, char *ranked_by) {
    json_t *j = json_loads(js, 0, NULL);
    json_t *items = json_object_get(j, "items");
    if (!json_is_array(items) || !json_is_string(json_object_get(j, "ranked_by")) ||
        !json_is_number(json_object_get(j, "took_ms"))) {
        json_decref(j);
        return 0;
    }
    strcpy(ranked_by, json_string_value(json_object_get(j, "ranked_by")));
    size_t off = 0;
    ids[0] = 0;
    *n = (int)json_array_size(items);
    for (size_t i = 0; i < json_array_size(items); i++) {
        json_t *it = json_array_get(items, i);
        if (!json_is_integer(json_object_get(it, "item_id")) || !json_is_string(json_object_get(it, "title")) ||
            !json_is_string(json_object_get(it, "caption")) || !json_is_number(json_object_get(it, "score")) ||
            !json_is_integer(json_object_get(it, "retriever_rank")) || json_object_size(it) != 5) {
            json_decref(j);
            return 0;
        }
        off += (size_t)snprintf(ids + off, cap - off, "%lld:%lld:%s:%s|",
                                (long long)json_integer_value(json_object_get(it, "item_id")),
                                (long long)json_integer_value(json_object_get(it, "retriever_rank")),
                                json_string_value(json_object_get(it, "title")),
                                json_string_value(json_object_get(it, "caption")));
        scores[i] = json_number_value(json_object_get(it, "score"));
    }
    json_decref(j);
    return 1;
}

/* Same items (ids, ranks, titles, captions) and scores within tol. */
static int same_result(const char *a, const char *b, double tol, char *why, size_t why_cap) {
    static __thread char ia[65536], ib[65536];
    double sa[128], sb[128];
    int na, nb;
    char ra[32], rb[32];
    if (!result_items(a, ia, sizeof ia, sa, &na, ra) || !result_items(b, ib, sizeof ib, sb, &nb, rb)) {
        snprintf(why, why_cap, "not a result object: %.200s / %.200s", a, b);
        return 0;
    }
    if (na != nb || strcmp(ia, ib) || strcmp(ra, rb)) {
        snprintf(why, why_cap, "items differ: %.300s (%s) vs %.300s (%s)", ia, ra, ib, rb);
        return 0;
    }
    for (int i = 0; i < na; i++)
        if (fabs(sa[i] - sb[i]) > tol * (1 + fabs(sa[i]))) {
            snprintf(why, why_cap, "score %d: %.9g vs %.9g", i, sa[i], sb[i]);
            return 0;
        }
    return 1;
}

/* ------------------------------------------------------------------ recommend (the command) */

TEST(recommend_command) {
    make_world();
    if (prepared < 0) CHECK_MSG(0, "could not prepare the dataset and retriever");
    static char out[1 << 16], out2[1 << 16];
    int rc = test_cli(out, sizeof out, "recommend --dataset %s --retriever %s --user 3 -k 5 2>/dev/null", ds, run);
    CHECK_MSG(rc == 0, "recommend exited %d", rc);
    CHECK(strstr(out, "| rank | item id | title | caption | score | retriever rank |"));
    int rows = 0;
    for (char *p = out; (p = strstr(p, "\n| ")); p++) rows++;
    CHECK_MSG(rows == 5, "%d rows: %s", rows, out);
    /* --json: exactly one object on stdout, k items, none of the history */
    rc = test_cli(out, sizeof out, "recommend --dataset %s --retriever %s --user 3 -k 7 --json 2>/dev/null", ds, run);
    CHECK(rc == 0);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je); /* json_loads refuses anything after the object */
    CHECK_MSG(j, "stdout is not one JSON value: %s", je.text);
    json_t *items = json_object_get(j, "items");
    CHECK(json_array_size(items) == 7);
    CHECK(!strcmp(json_string_value(json_object_get(j, "ranked_by")), "retriever"));
    /* the user's sequence, from sequences.tsv */
    char path[700], *seqs;
    size_t len;
    mr_error e = {0};
    snprintf(path, sizeof path, "%s/sequences.tsv", ds);
    CHECK_OK(mr_read_file(path, &seqs, &len, &e), &e);
    char *line = strstr(seqs, "\n3\tu3\t");
    CHECK(line);
    line += 6;
    int hist[64], nh = 0;
    while (*line && *line != '\n') {
        hist[nh++] = (int)strtol(line, &line, 10);
        while (*line == ' ') line++;
    }
    free(seqs);
    double prev = INFINITY;
    for (size_t i = 0; i < json_array_size(items); i++) {
        json_t *it = json_array_get(items, i);
        int id = (int)json_integer_value(json_object_get(it, "item_id"));
        for (int h = 0; h < nh; h++) CHECK_MSG(id != hist[h], "item %d of the history was recommended", id);
        double s = json_number_value(json_object_get(it, "score"));
        CHECK(s <= prev);
        prev = s;
        CHECK(json_integer_value(json_object_get(it, "retriever_rank")) == (json_int_t)i + 1);
    }
    json_decref(j);
    /* --history gives the same answer as --user with that user's sequence */
    char hs[512];
    size_t off = 0;
    for (int h = 0; h < nh; h++) off += (size_t)snprintf(hs + off, sizeof hs - off, h ? " %d" : "%d", hist[h]);
    rc = test_cli(out2, sizeof out2, "recommend --dataset %s --retriever %s --history \"%s\" -k 7 --json 2>/dev/null",
                  ds, run, hs);
    CHECK(rc == 0);
    char why[1024];
    CHECK_MSG(same_result(out, out2, 0, why, sizeof why), "%s", why);
    /* errors: unknown user / item (1), usage (2) */
    CHECK(test_cli(out, sizeof out, "recommend --dataset %s --retriever %s --user 999 2>/dev/null", ds, run) == 1);
    CHECK(test_cli(out, sizeof out, "recommend --dataset %s --retriever %s --history \"1 61\" 2>/dev/null", ds, run) == 1);
    CHECK(test_cli(out, sizeof out, "recommend --dataset %s --retriever %s --history \"\" 2>/dev/null", ds, run) == 2);
    CHECK(test_cli(out, sizeof out, "recommend --dataset %s --retriever %s --history \"1 x\" 2>/dev/null", ds, run) == 2);
    CHECK(test_cli(out, sizeof out, "recommend --dataset %s --retriever %s --user 1 -k 101 2>/dev/null", ds, run) == 2);
    CHECK(test_cli(out, sizeof out, "recommend --dataset %s --retriever %s --user 1 --history 2 2>/dev/null", ds, run) == 2);
    CHECK(test_cli(out, sizeof out, "recommend --dataset %s --retriever %s/nope --user 1 2>/dev/null", ds, run) == 1);
    CHECK(test_cli(out, sizeof out, "recommend --help") == 0 && strstr(out, "--num-candidates"));
}

/* recommend over a run of another architecture (the file names it): a GRU4Rec and a
 * NARM run trained here for one epoch; for users whose test history fits a query,
 * `recommend --history <the history before the test item>` returns the items and
 * scores `retriever candidates` lists for that user's test row; serve over the run
 * answers as recommend does. */
static void recommend_equals_candidates(const char *arch) {
    make_world();
    if (prepared < 0) CHECK_MSG(0, "could not prepare the dataset");
    char arun[600];
    snprintf(arun, sizeof arun, "%s", test_tmp_path(arch));
    int rc = test_cli(NULL, 0,
                      "retriever train --arch %s --dataset %s --out %s --max-len 8 --hidden 16 --batch 8 "
                      "--max-epochs 1 --threads 1 --seed 3 2>/dev/null",
                      arch, ds, arun);
    CHECK_MSG(rc == 0, "retriever train --arch %s exited %d", arch, rc);
    CHECK(test_cli(NULL, 0, "retriever candidates --dataset %s --run %s -k 10 2>/dev/null", ds, arun) == 0);
    char path[700], *cands, *seqs;
    size_t len;
    mr_error e = {0};
    snprintf(path, sizeof path, "%s/candidates.tsv", arun);
    CHECK_OK(mr_read_file(path, &cands, &len, &e), &e);
    snprintf(path, sizeof path, "%s/sequences.tsv", ds);
    CHECK_OK(mr_read_file(path, &seqs, &len, &e), &e);
    int compared = 0;
    static const int users[] = {1, 3, 7, 12, 25, 39};
    for (size_t ui = 0; ui < sizeof users / sizeof users[0]; ui++) {
        const int u = users[ui];
        /* the user's test history: the sequence without its last item */
        char key[64];
        snprintf(key, sizeof key, "\n%d\tu%d\t", u, u);
        char *line = strstr(seqs, key);
        CHECK(line);
        line += strlen(key);
        int seq[64], ns = 0;
        while (*line && *line != '\n' && ns < 64) {
            seq[ns++] = (int)strtol(line, &line, 10);
            while (*line == ' ') line++;
        }
        CHECK(ns >= 3);
        char hs[512];
        size_t off = 0;
        for (int h = 0; h < ns - 1; h++) off += (size_t)snprintf(hs + off, sizeof hs - off, h ? " %d" : "%d", seq[h]);
        /* candidates.tsv: test <TAB> user <TAB> label <TAB> ids <TAB> scores */
        snprintf(key, sizeof key, "\ntest\t%d\t", u);
        char *row = strstr(cands, key);
        CHECK_MSG(row, "no test row for user %d in candidates.tsv", u);
        row += strlen(key);
        CHECK((int)strtol(row, &row, 10) == seq[ns - 1]);
        int ids[10];
        double sc[10];
        row++;
        for (int i = 0; i < 10; i++) {
            ids[i] = (int)strtol(row, &row, 10);
            row++;
        }
        for (int i = 0; i < 10; i++) {
            sc[i] = strtod(row, &row);
            row++;
        }
        static char out[1 << 16];
        rc = test_cli(out, sizeof out, "recommend --dataset %s --retriever %s --history \"%s\" -k 10 --json 2>/dev/null",
                      ds, arun, hs);
        CHECK_MSG(rc == 0, "recommend over the %s run exited %d", arch, rc);
        json_error_t je;
        json_t *j = json_loads(out, 0, &je);
        CHECK_MSG(j, "not JSON: %s", je.text);
        json_t *items = json_object_get(j, "items");
        CHECK(json_array_size(items) == 10);
        for (int i = 0; i < 10; i++) {
            json_t *it = json_array_get(items, (size_t)i);
            int id = (int)json_integer_value(json_object_get(it, "item_id"));
            double s = json_number_value(json_object_get(it, "score"));
            CHECK_MSG(id == ids[i], "%s, user %d, rank %d: recommend gives item %d, candidates item %d", arch, u, i + 1,
                      id, ids[i]);
            CHECK_MSG(fabs(s - sc[i]) <= 1e-5 * (1 + fabs(sc[i])), "%s, user %d, rank %d: score %.9g vs %.9g", arch, u,
                      i + 1, s, sc[i]);
        }
        json_decref(j);
        compared++;
    }
    free(cands);
    free(seqs);
    CHECK(compared == 6);
    /* serve loads the same run: POST /v1/recommend equals recommend --json */
    static char out[1 << 16];
    CHECK(test_cli(out, sizeof out, "recommend --dataset %s --retriever %s --user 3 -k 10 --json 2>/dev/null", ds,
                   arun) == 0);
    server s2;
    serve_run = arun;
    rc = server_start(&s2, "");
    serve_run = NULL;
    CHECK_MSG(rc == 0, "serve over the %s run did not start", arch);
    resp r = {0};
    int ok = http(s2.port, "POST", "/v1/recommend", "{\"user_id\": 3, \"k\": 10}", &r) == 0 && r.status == 200;
    char why[2048] = "no answer";
    if (ok) ok = same_result(out, r.body, 1e-6, why, sizeof why);
    resp_free(&r);
    /* /healthz names the architecture the run's file holds */
    int arch_ok = http(s2.port, "GET", "/healthz", NULL, &r) == 0 && r.status == 200;
    json_t *h = arch_ok ? json_loads(r.body, 0, NULL) : NULL;
    arch_ok = h && json_string_value(json_object_get(h, "retriever_arch")) &&
              !strcmp(json_string_value(json_object_get(h, "retriever_arch")), arch);
    json_decref(h);
    resp_free(&r);
    CHECK(server_stop(&s2) == 0);
    CHECK_MSG(ok, "%s: serve differs from recommend: %s", arch, why);
    CHECK_MSG(arch_ok, "/healthz of the %s run does not name it", arch);
}

TEST(recommend_gru4rec_equals_candidates) { recommend_equals_candidates("gru4rec"); }
TEST(recommend_narm_equals_candidates) { recommend_equals_candidates("narm"); }

/* ------------------------------------------------------------------ the service */

static server srv;
static int srv_up;

static void need_server(void) {
    make_world();
    if (srv_up) return;
    srv_up = prepared > 0 && server_start(&srv, "") == 0 ? 1 : -1;
}

TEST(serve_endpoints) {
    need_server();
    CHECK_MSG(srv_up > 0, "the server did not start");
    resp r = {0};
    CHECK(http(srv.port, "GET", "/healthz", NULL, &r) == 0);
    CHECK_MSG(r.status == 200 && strstr(r.body, "\"status\":\"ok\"") && strstr(r.body, "\"llm\":null"), "%s", r.body);
    resp_free(&r);
    CHECK(http(srv.port, "GET", "/", NULL, &r) == 0);
    CHECK(r.status == 200 && strstr(r.head, "text/html") && strstr(r.body, "<!DOCTYPE html>") &&
          strstr(r.body, "/v1/recommend"));
    resp_free(&r);
    CHECK(http(srv.port, "GET", "/v1/items/7", NULL, &r) == 0);
    CHECK_MSG(r.status == 200 && strstr(r.body, "\"title\":\"Other Movie 7 (1907)\"") &&
                  strstr(r.body, "\"caption\":\"caption of 7\"") && strstr(r.body, "\"poster\":null"),
              "%s", r.body);
    resp_free(&r);
    /* search: case-insensitive, limited */
    CHECK(http(srv.port, "GET", "/v1/items?q=tOY&limit=3", NULL, &r) == 0);
    CHECK(r.status == 200);
    json_t *j = json_loads(r.body, 0, NULL);
    json_t *items = json_object_get(j, "items");
    CHECK_MSG(json_array_size(items) == 3, "%s", r.body);
    for (size_t i = 0; i < 3; i++)
        CHECK(!strncmp(json_string_value(json_object_get(json_array_get(items, i), "title")), "Toy Movie", 9));
    json_decref(j);
    resp_free(&r);
    CHECK(http(srv.port, "GET", "/v1/items?q=movie%2012%20", NULL, &r) == 0);
    CHECK_MSG(r.status == 200 && strstr(r.body, "Other Movie 12 (1912)") && !strstr(r.body, "Movie 13"), "%s", r.body);
    resp_free(&r);
    /* posters: by source id (s1.jpg) and by the image field (ok.jpg) */
    CHECK(http(srv.port, "GET", "/v1/items/1/poster", NULL, &r) == 0);
    CHECK(r.status == 200 && strstr(r.head, "image/jpeg") && r.body_len == 20 && !memcmp(r.body + 4, "poster of item 1", 16));
    resp_free(&r);
    CHECK(http(srv.port, "GET", "/v1/items/2/poster", NULL, &r) == 0);
    CHECK(r.status == 200 && r.body_len == 20 && !memcmp(r.body + 4, "poster of item 2", 16));
    resp_free(&r);
    /* recommend */
    CHECK(http(srv.port, "POST", "/v1/recommend", "{\"user_id\": 4, \"k\": 4}", &r) == 0);
    CHECK_MSG(r.status == 200 && strstr(r.head, "application/json"), "%d %s", r.status, r.body);
    char ids[4096], rb[32];
    double sc[128];
    int n;
    CHECK(result_items(r.body, ids, sizeof ids, sc, &n, rb) && n == 4 && !strcmp(rb, "retriever"));
    resp_free(&r);
    CHECK(http(srv.port, "POST", "/v1/recommend", "{\"history\": [5, 6, 7]}", &r) == 0);
    CHECK(r.status == 200 && result_items(r.body, ids, sizeof ids, sc, &n, rb) && n == 10);
    CHECK(!strstr(ids, "|5:") && !strstr(ids, "|6:") && !strstr(ids, "|7:") && strncmp(ids, "5:", 2));
    resp_free(&r);
    /* a known user with more items than a sent history may hold (1100 > 1000) */
    CHECK(http(srv.port, "POST", "/v1/recommend", "{\"user_id\": 40, \"k\": 5}", &r) == 0);
    CHECK_MSG(r.status == 200 && result_items(r.body, ids, sizeof ids, sc, &n, rb), "%d %s", r.status, r.body);
    resp_free(&r);
    /* metrics: Prometheus text with the counters that requests above moved */
    CHECK(http(srv.port, "GET", "/metrics", NULL, &r) == 0);
    CHECK(r.status == 200 && strstr(r.head, "text/plain"));
    CHECK_MSG(strstr(r.body, "mllm4rec_http_requests_total{endpoint=\"/v1/recommend\",status=\"200\"} 3") &&
                  strstr(r.body, "# TYPE mllm4rec_http_request_duration_seconds histogram") &&
                  strstr(r.body, "mllm4rec_http_request_duration_seconds_bucket{endpoint=\"/v1/recommend\",le=\"+Inf\"} 3") &&
                  strstr(r.body, "mllm4rec_queue_depth{queue=\"llm\"} 0") &&
                  strstr(r.body, "mllm4rec_models_loaded{model=\"retriever\"} 1") &&
                  strstr(r.body, "mllm4rec_models_loaded{model=\"llm\"} 0"),
              "%s", r.body);
    resp_free(&r);
}

typedef struct bad_case {
    const char *method, *path, *body;
    int status;
    const char *needle; /* in the error message */
} bad_case;

TEST(serve_bad_requests) {
    need_server();
    CHECK_MSG(srv_up > 0, "the server did not start");
    static char long_hist[16000];
    size_t off = (size_t)snprintf(long_hist, sizeof long_hist, "{\"history\": [");
    for (int i = 0; i < 1001; i++) off += (size_t)snprintf(long_hist + off, sizeof long_hist - off, i ? ",%d" : "%d", i % 60 + 1);
    snprintf(long_hist + off, sizeof long_hist - off, "]}");
    const bad_case cases[] = {
        {"POST", "/v1/recommend", "{\"user_id\": ", 400, "malformed JSON"},
        {"POST", "/v1/recommend", "{\"user_id\": 1} x", 400, "malformed JSON"},
        {"POST", "/v1/recommend", "{\"user_id\": 1}{}", 400, "malformed JSON"},
        {"POST", "/v1/recommend", "", 400, "malformed JSON"},
        {"POST", "/v1/recommend", "{\"user_id\": 1, \"user_id\": 2}", 400, "malformed JSON"},
        {"POST", "/v1/recommend", "{\"history\": [1, \"\xff\"]}", 400, "malformed JSON"},
        {"POST", "/v1/recommend", "[1, 2]", 400, "must be a JSON object"},
        {"POST", "/v1/recommend", "{\"user_id\": \"1\"}", 400, "user_id must be an integer"},
        {"POST", "/v1/recommend", "{\"user_id\": 1.5}", 400, "user_id must be an integer"},
        {"POST", "/v1/recommend", "{\"user_id\": 1e3}", 400, "user_id must be an integer"},
        {"POST", "/v1/recommend", "{\"user_id\": 123456789012345678901234567890}", 400, "malformed JSON"},
        {"POST", "/v1/recommend", "{\"history\": \"1 2\"}", 400, "history must be an array"},
        {"POST", "/v1/recommend", "{\"history\": [1, \"2\"]}", 400, "history[1] must be an integer"},
        {"POST", "/v1/recommend", "{\"history\": [1, 2.0]}", 400, "history[1] must be an integer"},
        {"POST", "/v1/recommend", "{\"history\": [1, null]}", 400, "history[1] must be an integer"},
        {"POST", "/v1/recommend", "{\"user_id\": 1, \"k\": \"3\"}", 400, "k must be an integer"},
        {"POST", "/v1/recommend", "{\"user_id\": 1, \"k\": 0}", 400, "k must be in 1..100"},
        {"POST", "/v1/recommend", "{\"user_id\": 1, \"k\": 101}", 400, "k must be in 1..100"},
        {"POST", "/v1/recommend", "{\"user_id\": 1, \"k\": -5}", 400, "k must be in 1..100"},
        {"POST", "/v1/recommend", "{\"user_id\": 1, \"rerank\": 1}", 400, "rerank must be true or false"},
        {"POST", "/v1/recommend", "{\"user_id\": 1, \"rerank\": true}", 400, "no LLM is loaded"},
        {"POST", "/v1/recommend", "{\"user_id\": 999}", 404, "unknown user_id 999"},
        {"POST", "/v1/recommend", "{\"user_id\": 0}", 404, "unknown user_id 0"},
        {"POST", "/v1/recommend", "{\"user_id\": -3}", 404, "unknown user_id -3"},
        {"POST", "/v1/recommend", "{\"history\": [1, 61]}", 404, "history[1]: unknown item_id 61"},
        {"POST", "/v1/recommend", "{\"history\": [0]}", 404, "history[0]: unknown item_id 0"},
        {"POST", "/v1/recommend", "{\"history\": []}", 400, "history must hold 1..1000 item ids (got 0)"},
        {"POST", "/v1/recommend", long_hist, 400, "history must hold 1..1000 item ids (got 1001)"},
        {"POST", "/v1/recommend", "{\"user_id\": 1, \"history\": [1]}", 400, "exactly one of"},
        {"POST", "/v1/recommend", "{}", 400, "exactly one of"},
        {"POST", "/v1/recommend", "{\"user\": 1}", 400, "unknown field \"user\""},
        {"GET", "/v1/recommend", NULL, 405, "not allowed"},
        {"PUT", "/v1/recommend", "{}", 405, "not allowed"},
        {"POST", "/healthz", "{}", 405, "not allowed"},
        {"DELETE", "/v1/items/1", NULL, 405, "not allowed"},
        {"GET", "/v2/recommend", NULL, 404, "no such path"},
        {"GET", "/v1/items/1/other", NULL, 404, "no such path"},
        {"GET", "/v1/items/abc", NULL, 400, "item id must be a positive integer"},
        {"GET", "/v1/items/-1", NULL, 400, "item id must be a positive integer"},
        {"GET", "/v1/items/0", NULL, 404, "unknown item_id"},
        {"GET", "/v1/items/61", NULL, 404, "unknown item_id"},
        {"GET", "/v1/items/99999999999999999999", NULL, 404, "unknown item_id"},
        {"GET", "/v1/items?q=toy&limit=0", NULL, 400, "limit must be an integer in 1..100"},
        {"GET", "/v1/items?q=toy&limit=101", NULL, 400, "limit must be an integer in 1..100"},
        {"GET", "/v1/items?q=toy&limit=2.5", NULL, 400, "limit must be an integer in 1..100"},
        {"GET", "/v1/items?limit=5", NULL, 400, "q (the text to search in titles) is required"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_case *c = &cases[i];
        resp r = {0};
        CHECK_MSG(http(srv.port, c->method, c->path, c->body, &r) == 0, "case %zu: no HTTP answer", i);
        char *err = error_of(&r);
        CHECK_MSG(r.status == c->status && err && strstr(err, c->needle) && strstr(r.head, "application/json"),
                  "case %zu (%s %s %.60s): got %d %s, expected %d with \"%s\"", i, c->method, c->path,
                  c->body ? c->body : "", r.status, r.body, c->status, c->needle);
        free(err);
        resp_free(&r);
    }
    /* a body over 1 MiB: 413 */
    size_t big = (1u << 20) + 100;
    char *body = malloc(big + 1);
    memset(body, ' ', big);
    memcpy(body, "{\"history\": [1", 14);
    memcpy(body + big - 2, "]}", 2);
    body[big] = 0;
    resp r = {0};
    CHECK(http(srv.port, "POST", "/v1/recommend", body, &r) == 0);
    free(body);
    char *err = error_of(&r);
    CHECK_MSG(r.status == 413 && err && strstr(err, "larger than"), "%d %s", r.status, r.body);
    free(err);
    resp_free(&r);
    /* the server still answers */
    CHECK(http(srv.port, "GET", "/healthz", NULL, &r) == 0 && r.status == 200);
    resp_free(&r);
}

TEST(serve_path_traversal) {
    need_server();
    CHECK_MSG(srv_up > 0, "the server did not start");
    /* items 3..7 name files outside --images ("../secret.jpg", a symlink out,
     * "sub/../../secret.jpg", "/etc/passwd", a URL): no poster */
    for (int id = 3; id <= 7; id++) {
        char p[64];
        snprintf(p, sizeof p, "/v1/items/%d/poster", id);
        resp r = {0};
        CHECK(http(srv.port, "GET", p, NULL, &r) == 0);
        CHECK_MSG(r.status == 404 && !strstr(r.body, "SECRET") && !strstr(r.body, "root:"), "item %d: %d %s", id,
                  r.status, r.body);
        resp_free(&r);
        snprintf(p, sizeof p, "/v1/items/%d", id);
        CHECK(http(srv.port, "GET", p, NULL, &r) == 0);
        CHECK_MSG(r.status == 200 && strstr(r.body, "\"poster\":null"), "%s", r.body);
        resp_free(&r);
    }
    static const char *paths[] = {"/../secret.jpg",
                                  "/v1/items/../../secret.jpg",
                                  "/v1/items/..%2F..%2Fsecret.jpg/poster",
                                  "/v1/items/%2e%2e%2f%2e%2e%2fsecret.jpg",
                                  "/v1/items/1%2F..%2F..%2Fsecret.jpg",
                                  "/v1/items/1/poster/../../../secret.jpg",
                                  "/posters/../secret.jpg",
                                  "/ok.jpg",
                                  "/link.jpg",
                                  "//etc/passwd",
                                  "/%2e%2e/%2e%2e/etc/passwd"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char req[512];
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", paths[i]);
        resp r = {0};
        CHECK(http_raw(srv.port, req, (size_t)n, &r) == 0);
        CHECK_MSG(r.status >= 400 && r.status < 500 && !strstr(r.body, "SECRET") && !strstr(r.body, "root:") &&
                      !strstr(r.body, "poster of item"),
                  "%s: %d %s", paths[i], r.status, r.body);
        resp_free(&r);
    }
}

TEST(serve_equals_recommend_json) {
    need_server();
    CHECK_MSG(srv_up > 0, "the server did not start");
    static char out[1 << 16];
    char why[2048];
    for (int u = 1; u <= 6; u++) {
        int k = 3 + u;
        CHECK(test_cli(out, sizeof out, "recommend --dataset %s --retriever %s --user %d -k %d --json 2>/dev/null", ds,
                       run, u, k) == 0);
        char body[128];
        snprintf(body, sizeof body, "{\"user_id\": %d, \"k\": %d}", u, k);
        resp r = {0};
        CHECK(http(srv.port, "POST", "/v1/recommend", body, &r) == 0 && r.status == 200);
        CHECK_MSG(same_result(out, r.body, 1e-6, why, sizeof why), "user %d: %s", u, why);
        resp_free(&r);
    }
    CHECK(test_cli(out, sizeof out, "recommend --dataset %s --retriever %s --history \"9,3,44\" --json 2>/dev/null", ds,
                   run) == 0);
    resp r = {0};
    CHECK(http(srv.port, "POST", "/v1/recommend", "{\"history\": [9, 3, 44]}", &r) == 0 && r.status == 200);
    CHECK_MSG(same_result(out, r.body, 1e-6, why, sizeof why), "history: %s", why);
    resp_free(&r);
}

/* 32 clients at once, each asking for several users; every answer must equal the
 * answer to the same question asked alone. */
static char *alone[N_USERS + 1];
typedef struct client_arg {
    int id, port, bad;
    char why[512];
} client_arg;

static void *client_main(void *p) {
    client_arg *a = p;
    for (int i = 0; i < 8; i++) {
        int u = (a->id * 7 + i * 13) % N_USERS + 1;
        char body[64];
        snprintf(body, sizeof body, "{\"user_id\": %d, \"k\": 10}", u);
        resp r = {0};
        if (http(a->port, "POST", "/v1/recommend", body, &r) || r.status != 200) {
            a->bad++;
            snprintf(a->why, sizeof a->why, "user %d: status %d", u, r.status);
        } else if (!same_result(alone[u], r.body, 1e-6, a->why, sizeof a->why)) {
            a->bad++;
        }
        resp_free(&r);
    }
    return NULL;
}

TEST(serve_32_clients) {
    need_server();
    CHECK_MSG(srv_up > 0, "the server did not start");
    for (int u = 1; u <= N_USERS; u++) {
        char body[64];
        snprintf(body, sizeof body, "{\"user_id\": %d, \"k\": 10}", u);
        resp r = {0};
        CHECK(http(srv.port, "POST", "/v1/recommend", body, &r) == 0 && r.status == 200);
        free(alone[u]);
        alone[u] = r.body;
        r.body = NULL;
        resp_free(&r);
    }
    pthread_t th[32];
    client_arg args[32];
    for (int i = 0; i < 32; i++) {
        args[i] = (client_arg){.id = i, .port = srv.port};
        CHECK(pthread_create(&th[i], NULL, client_main, &args[i]) == 0);
    }
    int bad = 0;
    const char *why = "";
    for (int i = 0; i < 32; i++) {
        pthread_join(th[i], NULL);
        bad += args[i].bad;
        if (args[i].bad) why = args[i].why;
    }
    for (int u = 1; u <= N_USERS; u++) {
        free(alone[u]);
        alone[u] = NULL;
    }
    CHECK_MSG(bad == 0, "%d of 256 answers wrong: %s", bad, why);
    /* they were batched: fewer forwards than queries */
    resp r = {0};
    CHECK(http(srv.port, "GET", "/metrics", NULL, &r) == 0);
    const char *b = strstr(r.body, "\nmllm4rec_retriever_batches_total "),
               *q = strstr(r.body, "\nmllm4rec_retriever_batched_queries_total ");
    CHECK(b && q);
    long nb = atol(b + strlen("\nmllm4rec_retriever_batches_total ")),
         nq = atol(q + strlen("\nmllm4rec_retriever_batched_queries_total "));
    printf("  32 clients: %ld retriever queries in %ld batched forwards\n", nq, nb);
    CHECK(nq >= 256 + N_USERS && nb <= nq);
    resp_free(&r);
}

/* SIGTERM with a request in flight: the request is answered, the server exits 0. */
typedef struct slow_arg {
    int port, status, retry_after, queue_full_msg;
    const char *body;
} slow_arg;
static void *slow_client(void *p) {
    slow_arg *a = p;
    resp r = {0};
    a->status = http(a->port, "POST", "/v1/recommend", a->body, &r) ? -1 : r.status;
    if (a->status == 503) {
        char *err = error_of(&r);
        a->retry_after = strstr(r.head, "\r\nRetry-After: 1") != NULL;
        a->queue_full_msg = err && strstr(err, "queue is full");
        free(err);
    }
    resp_free(&r);
    return NULL;
}

TEST(serve_sigterm) {
    need_server();
    CHECK_MSG(srv_up > 0, "the server did not start");
    int rc = server_stop(&srv);
    srv_up = 0;
    CHECK_MSG(rc == 0, "serve exited %d after SIGTERM", rc);
    char *err;
    size_t len;
    mr_error e = {0};
    CHECK_OK(mr_read_file(srv.err_path, &err, &len, &e), &e);
    CHECK_MSG(strstr(err, "stopped"), "%s", err);
    free(err);
}

/* ------------------------------------------------------------------ the LLM path */

static const char *llm_model(void) { return test_shared_path("reference/models/stories260K.gguf"); }

TEST(serve_llm_equals_recommend_json) {
    const char *model = llm_model();
    if (!model) SKIP("../shared/reference/models/stories260K.gguf absent");
    make_world();
    CHECK(prepared > 0);
    char extra[1024];
    snprintf(extra, sizeof extra, "--model %s --num-candidates 6 --prompt-history 5 --max-tokens 512 --llm-threads 1", model);
    server s;
    CHECK_MSG(server_start(&s, extra) == 0, "the server did not start");
    static char out[1 << 16];
    char why[2048];
    int ok = 1;
    for (int u = 1; u <= 3 && ok; u++) {
        int rc = test_cli(out, sizeof out,
                          "recommend --dataset %s --retriever %s --user %d -k 8 --json --model %s --num-candidates 6 "
                          "--prompt-history 5 --max-tokens 512 --threads 1 2>/dev/null",
                          ds, run, u, model);
        char body[64];
        snprintf(body, sizeof body, "{\"user_id\": %d, \"k\": 8}", u);
        resp r = {0};
        ok = rc == 0 && http(s.port, "POST", "/v1/recommend", body, &r) == 0 && r.status == 200 &&
             same_result(out, r.body, 1e-4, why, sizeof why) && strstr(r.body, "\"ranked_by\":\"llm\"");
        if (!ok) snprintf(why + strlen(why), sizeof why - strlen(why), " (rc %d)", rc);
        /* the LLM reorders the retriever's first 6 (by its letter logits, highest
         * first); items 7 and 8 follow in retriever order */
        if (ok) {
            json_t *j = json_loads(r.body, 0, NULL);
            json_t *items = json_object_get(j, "items");
            unsigned seen = 0;
            double prev = INFINITY;
            for (size_t i = 0; i < json_array_size(items); i++) {
                json_int_t rank = json_integer_value(json_object_get(json_array_get(items, i), "retriever_rank"));
                double sc = json_number_value(json_object_get(json_array_get(items, i), "score"));
                if (i < 6) {
                    ok &= rank >= 1 && rank <= 6 && !(seen & (1u << rank)) && sc <= prev;
                    seen |= 1u << rank;
                    prev = sc;
                } else {
                    ok &= rank == (json_int_t)i + 1;
                }
            }
            ok &= json_array_size(items) == 8;
            if (!ok) snprintf(why, sizeof why, "not a rerank of the first 6: %.600s", r.body);
            json_decref(j);
        }
        resp_free(&r);
    }
    /* rerank false: the retriever's answer */
    resp r = {0};
    int rr = http(s.port, "POST", "/v1/recommend", "{\"user_id\": 2, \"rerank\": false}", &r) == 0 && r.status == 200 &&
             strstr(r.body, "\"ranked_by\":\"retriever\"");
    resp_free(&r);
    int rc = server_stop(&s);
    CHECK_MSG(ok, "%s", why);
    CHECK(rr);
    CHECK_MSG(rc == 0, "serve exited %d", rc);
}

/* Many rerank requests at once against one LLM worker and a queue of 1: some
 * are refused (503 with Retry-After), the rest ranked by the LLM; retriever-only
 * requests are answered meanwhile. */
TEST(serve_llm_full_queue_503) {
    const char *model = llm_model();
    if (!model) SKIP("../shared/reference/models/stories260K.gguf absent");
    make_world();
    CHECK(prepared > 0);
    char extra[1024];
    snprintf(extra, sizeof extra, "--model %s --max-queue 1 --timeout-ms 120000 --llm-threads 1", model);
    server s;
    CHECK_MSG(server_start(&s, extra) == 0, "the server did not start");
    enum { N = 12 };
    pthread_t th[N];
    slow_arg a[N];
    for (int i = 0; i < N; i++) {
        a[i] = (slow_arg){.port = s.port, .body = "{\"history\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, "
                                                  "16, 17, 18, 19, 20]}"};
        pthread_create(&th[i], NULL, slow_client, &a[i]);
    }
    resp r = {0};
    int retr = http(s.port, "POST", "/v1/recommend", "{\"user_id\": 1, \"rerank\": false}", &r) == 0 && r.status == 200;
    resp_free(&r);
    int n200 = 0, n503 = 0, other = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        n200 += a[i].status == 200;
        n503 += a[i].status == 503;
        other += a[i].status != 200 && a[i].status != 503;
    }
    int retry_after = 0;
    for (int i = 0; i < N; i++) retry_after += a[i].status == 503 && a[i].retry_after && a[i].queue_full_msg;
    CHECK(http(s.port, "GET", "/metrics", NULL, &r) == 0);
    int metrics_ok = strstr(r.body, "mllm4rec_models_loaded{model=\"llm\"} 1") &&
                     strstr(r.body, "\nmllm4rec_llm_rejected_total ") &&
                     atol(strstr(r.body, "\nmllm4rec_llm_rejected_total ") + 29) >= n503;
    resp_free(&r);
    int rc = server_stop(&s);
    printf("  %d rerank requests at once, queue of 1: %d answered, %d refused with 503\n", N, n200, n503);
    CHECK(retr);
    CHECK_MSG(n503 >= 1 && n200 >= 1 && other == 0, "%d x 200, %d x 503, %d other", n200, n503, other);
    CHECK_MSG(retry_after == n503, "%d of %d answers 503 had Retry-After and the message", retry_after, n503);
    CHECK(metrics_ok);
    CHECK_MSG(rc == 0, "serve exited %d", rc);
}

/* A timeout shorter than one LLM ranking: 504; a client that goes away frees its
 * slot; SIGTERM lets an LLM request in flight finish. */
TEST(serve_llm_timeout_504_and_gone) {
    const char *model = llm_model();
    if (!model) SKIP("../shared/reference/models/stories260K.gguf absent");
    make_world();
    CHECK(prepared > 0);
    char extra[1024];
    snprintf(extra, sizeof extra, "--model %s --max-queue 8 --timeout-ms 1 --llm-threads 1", model);
    server s;
    CHECK_MSG(server_start(&s, extra) == 0, "the server did not start");
    const char *body = "{\"history\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]}";
    resp r = {0};
    int got = http(s.port, "POST", "/v1/recommend", body, &r) == 0 ? r.status : -1;
    char *err = got == 504 ? error_of(&r) : NULL;
    int named = err && strstr(err, "no answer within 1 ms");
    free(err);
    resp_free(&r);
    int rc = server_stop(&s);
    CHECK_MSG(got == 504 && named, "got %d", got);
    CHECK_MSG(rc == 0, "serve exited %d", rc);

    snprintf(extra, sizeof extra, "--model %s --max-queue 8 --timeout-ms 120000 --llm-threads 1", model);
    CHECK_MSG(server_start(&s, extra) == 0, "the server did not start");
    /* three requests keep the worker busy; a fourth client sends and leaves */
    pthread_t th[3];
    slow_arg a[3];
    for (int i = 0; i < 3; i++) {
        a[i] = (slow_arg){.port = s.port, .body = body};
        pthread_create(&th[i], NULL, slow_client, &a[i]);
    }
    struct timespec ts = {0, 30 * 1000000L};
    nanosleep(&ts, NULL);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
    int fd = connect_to(s.port);
    CHECK(fd >= 0);
    CHECK(send(fd, req, (size_t)n, MSG_NOSIGNAL) == n);
    nanosleep(&ts, NULL);
    close(fd);
    /* SIGTERM while requests are in flight: they are answered, then exit 0 */
    ts.tv_nsec = 200 * 1000000L;
    nanosleep(&ts, NULL);
    long gone = -1;
    if (http(s.port, "GET", "/metrics", NULL, &r) == 0) {
        const char *g = strstr(r.body, "\nmllm4rec_clients_gone_total ");
        if (g) gone = atol(g + strlen("\nmllm4rec_clients_gone_total "));
    }
    resp_free(&r);
    rc = server_stop(&s);
    int all200 = 1;
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        all200 &= a[i].status == 200;
    }
    CHECK_MSG(all200, "in-flight answers: %d %d %d", a[0].status, a[1].status, a[2].status);
    CHECK_MSG(gone >= 1, "clients_gone_total %ld", gone);
    CHECK_MSG(rc == 0, "serve exited %d", rc);
}

TEST(serve_usage_errors) {
    make_world();
    CHECK(prepared > 0);
    static char out[1 << 14];
    CHECK(test_cli(out, sizeof out, "serve --dataset %s 2>/dev/null", ds) == 2);
    CHECK(test_cli(out, sizeof out, "serve --dataset %s --retriever %s --port 70000 2>/dev/null", ds, run) == 2);
    CHECK(test_cli(out, sizeof out, "serve --dataset %s --retriever %s --threads 0 2>/dev/null", ds, run) == 2);
    CHECK(test_cli(out, sizeof out, "serve --dataset %s --retriever %s --images /nonexistent --port 0 2>/dev/null", ds,
                   run) == 1);
    CHECK(test_cli(out, sizeof out, "serve --help") == 0 && strstr(out, "--max-queue") && strstr(out, "--timeout-ms"));
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    RUN(recommend_command);
    RUN(recommend_gru4rec_equals_candidates);
    RUN(recommend_narm_equals_candidates);
    RUN(serve_endpoints);
    RUN(serve_bad_requests);
    RUN(serve_path_traversal);
    RUN(serve_equals_recommend_json);
    RUN(serve_32_clients);
    RUN(serve_sigterm);
    RUN(serve_llm_equals_recommend_json);
    RUN(serve_llm_full_queue_503);
    RUN(serve_llm_timeout_504_and_gone);
    RUN(serve_usage_errors);
    if (srv_up > 0) server_stop(&srv);
    return test_summary();
}
