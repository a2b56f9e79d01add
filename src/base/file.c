/* Whole-file reads, directories, paths and atomic writes. */
#include "mllm4rec/base.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int mr_read_file(const char *path, char **data, size_t *len, mr_error *e) {
    *data = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return mr_fail(e, MR_ERR_INPUT, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = mr_alloc(cap + 1, e);
    if (!buf) {
        fclose(f);
        return MR_ERR_INTERNAL;
    }
    for (;;) {
        if (n == cap) {
            cap *= 2;
            char *nb = mr_realloc(buf, cap + 1, e);
            if (!nb) {
                free(buf);
                fclose(f);
                return MR_ERR_INTERNAL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return mr_fail(e, MR_ERR_INPUT, "%s: read error", path);
    }
    buf[n] = 0;
    *data = buf;
    if (len) *len = n;
    return MR_OK;
}

int mr_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int mr_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int mr_mkdir_p(const char *path, mr_error *e) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return mr_fail(e, MR_ERR_USAGE, "bad directory path '%s'", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return mr_fail(e, MR_ERR_INPUT, "%s: cannot create directory: %s", buf, strerror(errno));
            buf[i] = c;
        }
    }
    if (!mr_is_dir(path)) return mr_fail(e, MR_ERR_INPUT, "%s: exists and is not a directory", path);
    return MR_OK;
}

char *mr_path_join(const char *dir, const char *name, mr_error *e) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = mr_alloc(a + b + 2, e);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a > 0 && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

const char *mr_path_basename(const char *path, char *buf, size_t bufsz) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t start = n;
    while (start > 0 && path[start - 1] != '/') start--;
    size_t len = n - start;
    if (len >= bufsz) len = bufsz - 1;
    memcpy(buf, path + start, len);
    buf[len] = 0;
    return buf;
}

int mr_atomic_open(mr_atomic_file *af, const char *path, mr_error *e) {
    memset(af, 0, sizeof *af);
    size_t n = strlen(path) + 32;
    af->tmp_path = mr_alloc(n, e);
    af->final_path = mr_strdup(path, e);
    if (!af->tmp_path || !af->final_path) {
        mr_atomic_abort(af);
        return MR_ERR_INTERNAL;
    }
    snprintf(af->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    af->f = fopen(af->tmp_path, "wb");
    if (!af->f) {
        int err = errno;
        mr_atomic_abort(af);
        return mr_fail(e, MR_ERR_INPUT, "%s: cannot write: %s", path, strerror(err));
    }
    return MR_OK;
}

int mr_atomic_commit(mr_atomic_file *af, mr_error *e) {
    int ok = af->f != NULL;
    if (ok && fflush(af->f) != 0) ok = 0;
    if (ok && fsync(fileno(af->f)) != 0) ok = 0;
    if (af->f && fclose(af->f) != 0) ok = 0;
    af->f = NULL;
    if (ok && rename(af->tmp_path, af->final_path) != 0) ok = 0;
    if (!ok) {
        int err = errno;
        mr_fail(e, MR_ERR_INTERNAL, "%s: write failed: %s", af->final_path, strerror(err));
        mr_atomic_abort(af);
        return MR_ERR_INTERNAL;
    }
    free(af->tmp_path);
    free(af->final_path);
    af->tmp_path = af->final_path = NULL;
    return MR_OK;
}

void mr_atomic_abort(mr_atomic_file *af) {
    if (af->f) fclose(af->f);
    if (af->tmp_path) unlink(af->tmp_path);
    free(af->tmp_path);
    free(af->final_path);
    memset(af, 0, sizeof *af);
}

int mr_write_file_atomic(const char *path, const void *data, size_t len, mr_error *e) {
    mr_atomic_file af;
    int rc = mr_atomic_open(&af, path, e);
    if (rc) return rc;
    if (len && fwrite(data, 1, len, af.f) != len) {
        mr_atomic_abort(&af);
        return mr_fail(e, MR_ERR_INTERNAL, "%s: write failed", path);
    }
    return mr_atomic_commit(&af, e);
}

/* Splits a folder path into its parent and last name, trailing slashes ignored:
 * "runs/r1/" -> "runs", "r1"; "r1" -> ".", "r1"; "/r1" -> "/", "r1". */
static void split_parent(const char *path, char *parent, size_t psz, char *name, size_t nsz) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    char *slash = strrchr(buf, '/');
    if (!slash) {
        snprintf(parent, psz, ".");
        snprintf(name, nsz, "%s", buf);
    } else {
        snprintf(name, nsz, "%s", slash + 1);
        if (slash == buf) snprintf(parent, psz, "/");
        else {
            *slash = 0;
            snprintf(parent, psz, "%s", buf);
        }
    }
}

int mr_folder_lock(const char *dir, int *fd, mr_error *e) {
    *fd = -1;
    if (!dir || !dir[0] || strlen(dir) >= PATH_MAX - 64) return mr_fail(e, MR_ERR_USAGE, "bad folder path '%s'", dir ? dir : "");
    char parent[PATH_MAX], name[PATH_MAX], real[PATH_MAX];
    split_parent(dir, parent, sizeof parent, name, sizeof name);
    if (!strcmp(name, ".") || !strcmp(name, "..") || !name[0]) {
        /* "." or "a/..": lock the folder it names, by its real name */
        if (!realpath(dir, real)) return mr_fail(e, MR_ERR_INPUT, "%s: %s", dir, strerror(errno));
        split_parent(real, parent, sizeof parent, name, sizeof name);
        if (!name[0]) return mr_fail(e, MR_ERR_USAGE, "%s: the root folder cannot be an output folder", dir);
    }
    int rc = mr_mkdir_p(parent, e);
    if (rc) return rc;
    /* the real parent, so that two spellings of one folder share one lock */
    if (!realpath(parent, real)) return mr_fail(e, MR_ERR_INPUT, "%s: %s", parent, strerror(errno));
    char lock_path[PATH_MAX + 16];
    if ((size_t)snprintf(lock_path, sizeof lock_path, "%s/.%s.lock", strcmp(real, "/") ? real : "", name) >=
        sizeof lock_path)
        return mr_fail(e, MR_ERR_USAGE, "%s: path too long", dir);
    int f = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0) return mr_fail(e, MR_ERR_INPUT, "%s: cannot create the lock file: %s", lock_path, strerror(errno));
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char pid[48] = "";
        ssize_t got = pread(f, pid, 24, 0);
        pid[got > 0 ? got : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        close(f);
        if (err == EWOULDBLOCK)
            return mr_fail(e, MR_ERR_INPUT,
                           "%s is in use by another process%s%s (it holds the lock %s): wait until it ends", dir,
                           pid[0] ? " (pid " : "", pid[0] ? strcat(pid, ")") : "", lock_path);
        return mr_fail(e, MR_ERR_INPUT, "%s: cannot lock: %s", lock_path, strerror(err));
    }
    /* the holder's pid, for the message above; liveness is the lock's alone */
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(f, 0) != 0 || pwrite(f, pid, (size_t)n, 0) != n) {
        /* informational only: a full disk must not stop the run here */
    }
    *fd = f;
    return MR_OK;
}

void mr_folder_unlock(int fd) {
    if (fd >= 0) close(fd); /* closing the descriptor drops the flock */
}
