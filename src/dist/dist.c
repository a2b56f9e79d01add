/* See mllm4rec/dist.h. Without MR_HAVE_MPI (make MPI=0) every function is the
 * one-process case. */
#include "mllm4rec/dist.h"

#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef MR_HAVE_MPI
#define MR_HAVE_MPI 0
#endif
#if MR_HAVE_MPI
#include <mpi.h>
#endif

static int g_inited, g_rank, g_size = 1, g_local_size = 1, g_exit_agreed;

static int env_int(const char *name, long *v) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end;
    long x = strtol(s, &end, 10);
    if (*end) return 0;
    *v = x;
    return 1;
}

int mr_dist_available(void) { return MR_HAVE_MPI + 0; }

int mr_dist_launched(void) {
    long v;
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK")) return 1;
    /* srun sets SLURM_PROCID even for one task, and inside batch scripts: only a step of
     * several tasks is a parallel job */
    return env_int("SLURM_STEP_NUM_TASKS", &v) && v > 1;
}

int mr_dist_init(int *argc, char ***argv, mr_error *e) {
    if (g_inited || !mr_dist_launched()) return MR_OK;
#if MR_HAVE_MPI
    long tasks = 0;
    /* srun without PMIx (--mpi=none, pmi2): Open MPI, as Debian builds it, wires up
     * through PMIx only and would fail inside MPI_Init with a page of text */
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK") && env_int("SLURM_STEP_NUM_TASKS", &tasks) && tasks > 1)
        return mr_fail(e, MR_ERR_INPUT,
                       "srun started %ld tasks without PMIx (no PMIX_RANK): run srun --mpi=pmix, or set "
                       "MpiDefault=pmix in slurm.conf (Open MPI connects to its ranks through PMIx)",
                       tasks);
    int provided = 0;
    /* the helper threads (OpenMP, caption prefetch) never call MPI */
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return mr_fail(e, MR_ERR_INPUT, "MPI_Init failed");
    g_inited = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    MPI_Comm local;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &local) == MPI_SUCCESS) {
        MPI_Comm_size(local, &g_local_size);
        MPI_Comm_free(&local);
    }
    /* errors come back as codes, which the callers turn into messages */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    return MR_OK;
#else
    (void)argc;
    (void)argv;
    long n = 1;
    if ((env_int("OMPI_COMM_WORLD_SIZE", &n) || env_int("PMI_SIZE", &n) || env_int("SLURM_STEP_NUM_TASKS", &n)) &&
        n > 1)
        return mr_fail(e, MR_ERR_INPUT,
                       "started as one of %ld ranks, but this mllm4rec was built without MPI (make MPI=0): "
                       "rebuild with MPI or run it without mpirun/srun",
                       n);
    return MR_OK;
#endif
}

void mr_dist_finalize(void) {
#if MR_HAVE_MPI
    if (g_inited) MPI_Finalize();
#endif
    g_inited = 0;
    g_exit_agreed = 0;
    g_rank = 0;
    g_size = g_local_size = 1;
}

void mr_dist_abort(int code) {
    fflush(stdout);
    fflush(stderr);
#if MR_HAVE_MPI
    if (g_inited) MPI_Abort(MPI_COMM_WORLD, code);
#else
    (void)code;
#endif
}

void mr_dist_agree_exit(void) { g_exit_agreed = 1; }
int mr_dist_exit_agreed(void) { return g_exit_agreed; }

int mr_dist_rank(void) { return g_rank; }
int mr_dist_size(void) { return g_size; }
int mr_dist_local_size(void) { return g_local_size; }

int mr_dist_default_threads(int fallback) {
    if (!g_inited) return fallback;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online < 1) online = 1;
    long t = online / (g_local_size > 0 ? g_local_size : 1);
    /* a launcher that binds a rank to fewer cores than its share gets no more threads */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        long allowed = CPU_COUNT(&set);
        if (allowed > 0 && allowed < t) t = allowed;
    }
    return t < 1 ? 1 : (int)t;
}

void mr_dist_block_of(int64_t n, int rank, int64_t *first, int64_t *count) {
    int64_t P = g_size;
    int64_t a = n * rank / P, b = n * (rank + 1) / P;
    *first = a;
    *count = b - a;
}

void mr_dist_block(int64_t n, int64_t *first, int64_t *count) { mr_dist_block_of(n, g_rank, first, count); }

#if MR_HAVE_MPI
static int mpi_fail(mr_error *e, int err, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(err, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error %d", err);
    return mr_fail(e, MR_ERR_INTERNAL, "rank %d: %s: %s", g_rank, what, msg);
}
#endif

int mr_dist_gather(const void *mine, size_t n, int to_all, char **out, size_t *n_out, mr_error *e) {
    *out = NULL;
    *n_out = 0;
    if (g_size == 1) {
        char *p = mr_alloc(n ? n : 1, e);
        if (!p) return MR_ERR_INTERNAL;
        if (n) memcpy(p, mine, n);
        *out = p;
        *n_out = n;
        return MR_OK;
    }
#if MR_HAVE_MPI
    if (n > INT_MAX) return mr_fail(e, MR_ERR_INTERNAL, "rank %d: %zu bytes to gather: over 2 GiB", g_rank, n);
    int mine_n = (int)n, err;
    int *counts = mr_alloc(sizeof(int) * (size_t)g_size * 2, e);
    if (!counts) return MR_ERR_INTERNAL;
    int *displs = counts + g_size;
    if ((err = MPI_Allgather(&mine_n, 1, MPI_INT, counts, 1, MPI_INT, MPI_COMM_WORLD)) != MPI_SUCCESS) {
        free(counts);
        return mpi_fail(e, err, "MPI_Allgather of the sizes");
    }
    int64_t total = 0;
    for (int r = 0; r < g_size; r++) {
        displs[r] = (int)total;
        total += counts[r];
        if (total > INT_MAX) {
            free(counts);
            return mr_fail(e, MR_ERR_INTERNAL, "%lld bytes to gather: over 2 GiB", (long long)total);
        }
    }
    char *buf = NULL;
    if (to_all || g_rank == 0) {
        buf = mr_alloc(total ? (size_t)total : 1, e);
        if (!buf) {
            /* the other ranks wait in the collective: the caller aborts the job */
            free(counts);
            return MR_ERR_INTERNAL;
        }
    }
    err = to_all ? MPI_Allgatherv(mine, mine_n, MPI_BYTE, buf, counts, displs, MPI_BYTE, MPI_COMM_WORLD)
                 : MPI_Gatherv(mine, mine_n, MPI_BYTE, buf, counts, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
    free(counts);
    if (err != MPI_SUCCESS) {
        free(buf);
        return mpi_fail(e, err, to_all ? "MPI_Allgatherv" : "MPI_Gatherv");
    }
    *out = buf;
    *n_out = buf ? (size_t)total : 0;
    return MR_OK;
#else
    return mr_fail(e, MR_ERR_INTERNAL, "%d ranks without MPI", g_size);
#endif
}

#if MR_HAVE_MPI
/* MPI counts are int: large buffers go in pieces. */
static int allreduce(void *buf, size_t n, size_t elem, MPI_Datatype t, MPI_Op op, const char *what, mr_error *e) {
    char *p = buf;
    while (n) {
        int c = n > (size_t)(INT_MAX / 2) ? INT_MAX / 2 : (int)n;
        int err = MPI_Allreduce(MPI_IN_PLACE, p, c, t, op, MPI_COMM_WORLD);
        if (err != MPI_SUCCESS) return mpi_fail(e, err, what);
        p += (size_t)c * elem;
        n -= (size_t)c;
    }
    return MR_OK;
}
#endif

int mr_dist_allreduce_sum_f32(float *buf, size_t n, mr_error *e) {
#if MR_HAVE_MPI
    if (g_size > 1) return allreduce(buf, n, sizeof(float), MPI_FLOAT, MPI_SUM, "MPI_Allreduce (float sum)", e);
#endif
    (void)buf, (void)n, (void)e;
    return MR_OK;
}

int mr_dist_allreduce_sum_f64(double *buf, size_t n, mr_error *e) {
#if MR_HAVE_MPI
    if (g_size > 1) return allreduce(buf, n, sizeof(double), MPI_DOUBLE, MPI_SUM, "MPI_Allreduce (double sum)", e);
#endif
    (void)buf, (void)n, (void)e;
    return MR_OK;
}

int mr_dist_allreduce_max_i64(int64_t *buf, size_t n, mr_error *e) {
#if MR_HAVE_MPI
    if (g_size > 1) return allreduce(buf, n, sizeof(int64_t), MPI_INT64_T, MPI_MAX, "MPI_Allreduce (max)", e);
#endif
    (void)buf, (void)n, (void)e;
    return MR_OK;
}

int mr_dist_bcast(void *buf, size_t n, int root, mr_error *e) {
#if MR_HAVE_MPI
    if (g_size > 1) {
        char *p = buf;
        while (n) {
            int c = n > (size_t)(INT_MAX / 2) ? INT_MAX / 2 : (int)n;
            int err = MPI_Bcast(p, c, MPI_BYTE, root, MPI_COMM_WORLD);
            if (err != MPI_SUCCESS) return mpi_fail(e, err, "MPI_Bcast");
            p += c;
            n -= (size_t)c;
        }
    }
#endif
    (void)buf, (void)n, (void)root, (void)e;
    return MR_OK;
}

int mr_dist_barrier(mr_error *e) {
#if MR_HAVE_MPI
    if (g_size > 1) {
        int err = MPI_Barrier(MPI_COMM_WORLD);
        if (err != MPI_SUCCESS) return mpi_fail(e, err, "MPI_Barrier");
    }
#endif
    (void)e;
    return MR_OK;
}
