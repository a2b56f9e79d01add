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
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return mr_fail(e, MR_ERR_INPUT, "%s: is a folder, not a file", path);
    }
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
        errno = 0;
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f), err = errno;
    fclose(f);
    if (bad) {
        free(buf);
        return mr_fail(e, MR_ERR_INPUT, "%s: read error: %s", path, err ? strerror(err) : "unknown cause");
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

/* ---- test-only I/O faults (built with -DMR_IO_FAULTS into the test programs) ---- */
#ifdef MR_IO_FAULTS
#include "base/io_faults.h"
static struct {
    int kind;         /* MR_IO_WRITE, MR_IO_FSYNC, MR_IO_RENAME; 0: none */
    long at, calls[4];
    int err;
    size_t buffer;    /* stdio buffer of atomic files (0: the default) */
} faults;

void mr_io_fault_set(int kind, long nth, int err) {
    faults.kind = kind;
    faults.at = nth;
    faults.err = err;
    memset(faults.calls, 0, sizeof faults.calls);
}

long mr_io_fault_calls(int kind) { return kind >= 1 && kind <= 3 ? faults.calls[kind] : 0; }

void mr_io_fault_buffer(size_t bytes) { faults.buffer = bytes; }

/* 1 when this call of `kind` is the one to fail (errno set). */
static int fault_now(int kind) {
    faults.calls[kind]++;
    if (faults.kind == kind && faults.calls[kind] == faults.at) {
        errno = faults.err;
        return 1;
    }
    return 0;
}
#define FAULT(kind) fault_now(kind)
#else
#define FAULT(kind) 0
#endif

/* Writes all n bytes with write(2), through the fault hook; 0 or the errno of the
 * failure (a write of 0 bytes counts as a full disk). Under the test hook's small
 * buffer each call writes at most that many bytes: a short write, as a disk that fills
 * in the middle of a line gives, so a failure can fall inside a line. */
static int write_all(int fd, const char *p, size_t n) {
    size_t done = 0;
    while (done < n) {
        size_t chunk = n - done;
#ifdef MR_IO_FAULTS
        if (faults.buffer && chunk > faults.buffer) chunk = faults.buffer;
#endif
        ssize_t w = FAULT(1) ? -1 : write(fd, p + done, chunk);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return w < 0 ? errno : ENOSPC;
        done += (size_t)w;
    }
    return 0;
}

/* The atomic file's stream writes through write(2) on our own descriptor (a stdio
 * cookie stream), so that the first failure's errno is kept for the message (stdio
 * may call write again or clobber errno before the writer looks) and so that the
 * tests can make the N-th write fail. */
struct mr_atomic_io {
    int fd;
    int err; /* errno of the first failed write, fsync or rename; 0 when none */
#ifdef MR_IO_FAULTS
    char *buf; /* the small stdio buffer of mr_io_fault_buffer */
#endif
};

static void io_free(mr_atomic_io *io) {
#ifdef MR_IO_FAULTS
    if (io) free(io->buf);
#endif
    free(io);
}

static ssize_t io_write(void *cookie, const char *buf, size_t n) {
    mr_atomic_io *io = cookie;
    int err = write_all(io->fd, buf, n);
    if (err) {
        if (!io->err) io->err = err;
        return 0; /* stdio's signal of a failed write (sets the stream's error flag) */
    }
    return (ssize_t)n;
}

static int io_close(void *cookie) {
    mr_atomic_io *io = cookie;
    int r = io->fd >= 0 ? close(io->fd) : 0;
    if (r != 0 && !io->err) io->err = errno;
    io->fd = -1;
    return r;
}

int mr_atomic_open(mr_atomic_file *af, const char *path, mr_error *e) {
    memset(af, 0, sizeof *af);
    size_t n = strlen(path) + 32;
    af->tmp_path = mr_alloc(n, e);
    af->final_path = mr_strdup(path, e);
    af->io = mr_calloc(1, sizeof *af->io, e);
    if (!af->tmp_path || !af->final_path || !af->io) {
        mr_atomic_abort(af);
        return MR_ERR_INTERNAL;
    }
    af->io->fd = -1;
    snprintf(af->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    af->io->fd = open(af->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (af->io->fd < 0) {
        int err = errno;
        mr_atomic_abort(af);
        return mr_fail(e, MR_ERR_INPUT, "%s: cannot write: %s", path, strerror(err));
    }
    cookie_io_functions_t fns = {.read = NULL, .write = io_write, .seek = NULL, .close = io_close};
    af->f = fopencookie(af->io, "w", fns);
    if (!af->f) {
        close(af->io->fd);
        af->io->fd = -1;
        mr_atomic_abort(af);
        return mr_fail(e, MR_ERR_INTERNAL, "%s: cannot open a stream", path);
    }
#ifdef MR_IO_FAULTS
    if (faults.buffer && (af->io->buf = malloc(faults.buffer))) setvbuf(af->f, af->io->buf, _IOFBF, faults.buffer);
#endif
    return MR_OK;
}

int mr_atomic_fail(mr_atomic_file *af, mr_error *e) {
    int err = af->io && af->io->err ? af->io->err : EIO;
    mr_fail(e, MR_ERR_INPUT, "%s: cannot write: %s", af->final_path ? af->final_path : "(file)", strerror(err));
    mr_atomic_abort(af);
    return MR_ERR_INPUT;
}

int mr_atomic_commit(mr_atomic_file *af, mr_error *e) {
    if (!af->f || !af->io) return mr_atomic_fail(af, e);
    int ok = !ferror(af->f) && fflush(af->f) == 0 && !af->io->err;
    if (ok && (FAULT(2) || fsync(af->io->fd) != 0)) {
        if (!af->io->err) af->io->err = errno;
        ok = 0;
    }
    int closed = fclose(af->f); /* closes the descriptor too */
    af->f = NULL;
    if (closed != 0) ok = 0;
    if (ok && (FAULT(3) || rename(af->tmp_path, af->final_path) != 0)) {
        if (!af->io->err) af->io->err = errno;
        ok = 0;
    }
    if (!ok) return mr_atomic_fail(af, e);
    io_free(af->io);
    free(af->tmp_path);
    free(af->final_path);
    memset(af, 0, sizeof *af);
    return MR_OK;
}

void mr_atomic_abort(mr_atomic_file *af) {
    if (af->f) fclose(af->f);
    else if (af->io && af->io->fd >= 0) close(af->io->fd);
    if (af->tmp_path) unlink(af->tmp_path);
    io_free(af->io);
    free(af->tmp_path);
    free(af->final_path);
    memset(af, 0, sizeof *af);
}

int mr_append_file(const char *path, const void *data, size_t len, long *size_out, mr_error *e) {
    int created = 0;
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0666);
        created = fd >= 0;
    }
    if (fd < 0) return mr_fail(e, MR_ERR_INPUT, "%s: cannot write: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return mr_fail(e, MR_ERR_INPUT, "%s: %s", path, strerror(err));
    }
    int err = write_all(fd, data, len);
    if (err) {
        if (created) unlink(path);
        else if (ftruncate(fd, st.st_size) != 0) {
            /* the half line stays; a resume cuts the log back to its checkpointed size */
        }
        close(fd);
        return mr_fail(e, MR_ERR_INPUT, "%s: cannot write: %s", path, strerror(err));
    }
    if (close(fd) != 0) return mr_fail(e, MR_ERR_INPUT, "%s: cannot write: %s", path, strerror(errno));
    if (size_out) *size_out = (long)(st.st_size + (off_t)len);
    return MR_OK;
}

/* The append stream: every write(2) goes through write_all (and the fault hook); a
 * failed one cuts the file back to the end of its last complete line (removing a file
 * this stream created when no line was complete), and from then on every write fails
 * with the same errno, so that stdio's retry at fflush or fclose cannot add the
 * failed line's bytes after all. */
typedef struct append_io {
    int fd, created, err;
    off_t size, line_end; /* the file's size; the end of its last complete line */
    char *path;
} append_io;

static ssize_t append_io_write(void *cookie, const char *buf, size_t n) {
    append_io *a = cookie;
    int err = a->err ? a->err : write_all(a->fd, buf, n);
    if (err) {
        if (!a->err) {
            a->err = err;
            if (a->created && a->line_end == 0) unlink(a->path);
            else if (ftruncate(a->fd, a->line_end) != 0) {
                /* nothing better to do: the error below names the file */
            }
            a->size = a->line_end;
        }
        errno = err;
        return -1;
    }
    a->size += (off_t)n;
    const char *nl = memrchr(buf, '\n', n);
    if (nl) a->line_end = a->size - (off_t)(n - (size_t)(nl - buf) - 1);
    return (ssize_t)n;
}

static int append_io_close(void *cookie) {
    append_io *a = cookie;
    int r = close(a->fd);
    int err = errno;
    free(a->path);
    free(a);
    errno = err;
    return r;
}

FILE *mr_append_open(const char *path, mr_error *e) {
    append_io *a = mr_calloc(1, sizeof *a, e);
    if (!a) return NULL;
    if (!(a->path = mr_strdup(path, e))) {
        free(a);
        return NULL;
    }
    a->fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (a->fd < 0 && errno == ENOENT) {
        a->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0666);
        a->created = a->fd >= 0;
    }
    struct stat st;
    if (a->fd < 0 || fstat(a->fd, &st) != 0) {
        mr_fail(e, MR_ERR_INPUT, "%s: cannot open for writing: %s", path, strerror(errno));
        if (a->fd >= 0) close(a->fd);
        free(a->path);
        free(a);
        return NULL;
    }
    a->size = a->line_end = st.st_size;
    cookie_io_functions_t fns = {.read = NULL, .write = append_io_write, .seek = NULL, .close = append_io_close};
    FILE *f = fopencookie(a, "w", fns);
    if (!f) {
        mr_fail(e, MR_ERR_INTERNAL, "%s: cannot open a stream", path);
        close(a->fd);
        free(a->path);
        free(a);
    }
    return f;
}

int mr_write_file_atomic(const char *path, const void *data, size_t len, mr_error *e) {
    mr_atomic_file af;
    int rc = mr_atomic_open(&af, path, e);
    if (rc) return rc;
    if (len && fwrite(data, 1, len, af.f) != len) return mr_atomic_fail(&af, e);
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
