/* Time, log lines and progress lines, all on stderr. */
#include "mllm4rec/base.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int mr_log_quiet = 0;

double mr_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void mr_log(const char *fmt, ...) {
    if (mr_log_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void mr_progress_start(mr_progress *p, const char *label, int64_t total) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->total = total;
    p->start = p->last_print = mr_now();
    p->quiet_interval = 30.0;
    p->is_tty = isatty(STDERR_FILENO);
}

static void format_eta(double s, char *buf, size_t n) {
    if (s < 0 || s > 1e7) {
        snprintf(buf, n, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else snprintf(buf, n, "%02ld:%02ld", t / 60, t % 60);
}

void mr_progress_update(mr_progress *p, int64_t done, const char *extra) {
    if (mr_log_quiet) return;
    double now = mr_now();
    if (p->is_tty ? now - p->last_print < 0.2 : now - p->last_print < p->quiet_interval) return;
    p->last_print = now;
    double rate = done / (now - p->start + 1e-9);
    char eta[32];
    format_eta(p->total > 0 && rate > 0 ? (p->total - done) / rate : -1, eta, sizeof eta);
    if (p->total > 0)
        fprintf(stderr, "%s%s %lld/%lld %.2f/s ETA %s%s%s%s", p->is_tty ? "\r\033[K" : "", p->label,
                (long long)done, (long long)p->total, rate, eta, extra ? " " : "", extra ? extra : "",
                p->is_tty ? "" : "\n");
    else
        fprintf(stderr, "%s%s %lld %.2f/s%s%s%s", p->is_tty ? "\r\033[K" : "", p->label, (long long)done, rate,
                extra ? " " : "", extra ? extra : "", p->is_tty ? "" : "\n");
    p->drew = 1;
    fflush(stderr);
}

void mr_progress_end(mr_progress *p) {
    if (p->is_tty && p->drew && !mr_log_quiet) fputc('\n', stderr);
    p->drew = 0;
}
