/* Many processes (Open MPI): the few operations the stages need, as plain functions
 * that are no-ops (or plain copies) for one process. Built with MPI by default
 * (`make MPI=0` builds without it, same sources). MPI is initialised only when the
 * process was started by a launcher that says so in the environment (mpirun:
 * OMPI_COMM_WORLD_SIZE; PMIx / PMI: PMIX_RANK, PMI_RANK; Slurm's srun with more
 * than one task: SLURM_STEP_NUM_TASKS), so a plain run pays nothing and needs no
 * MPI runtime.
 *
 * Every collective here (mr_dist_gather, mr_dist_allreduce_*, mr_dist_bcast,
 * mr_dist_barrier) must be called by every rank in the same order. A rank that
 * fails between two collectives does not come back to the next one: the caller
 * (the CLI) prints its message and calls mr_dist_abort, which ends every rank. */
#ifndef MLLM4REC_DIST_H
#define MLLM4REC_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "mllm4rec/base.h"

/* 1 when this build has MPI (make MPI=1, the default). */
int mr_dist_available(void);
/* 1 when the environment says a launcher started this process (see above). */
int mr_dist_launched(void);
/* Initialises MPI when mr_dist_launched() (otherwise nothing). MR_ERR_INPUT when the
 * launcher asks for more than one rank but this build has no MPI (MPI=0). */
int mr_dist_init(int *argc, char ***argv, mr_error *e);
/* Finalises MPI when mr_dist_init started it. */
void mr_dist_finalize(void);
/* Ends every rank of the job with exit status code (MPI_Abort) when MPI is running;
 * otherwise returns, and the caller ends its own process. */
void mr_dist_abort(int code);

/* Says that every rank of the job ends here with the same non-zero status, by
 * agreement (an interruption that all ranks have seen through a collective): the CLI
 * then finalizes MPI and returns the status instead of aborting the job, so an
 * interrupted run ends like a finished one (no "rank failed" message, no MPI_Abort). */
void mr_dist_agree_exit(void);
/* 1 after mr_dist_agree_exit (cleared by mr_dist_finalize). */
int mr_dist_exit_agreed(void);

int mr_dist_rank(void);       /* 0 .. size-1; 0 without MPI */
int mr_dist_size(void);       /* ranks in the job; 1 without MPI */
int mr_dist_local_size(void); /* ranks on this host; 1 without MPI */
/* Threads per rank when --threads is not given: under a launcher, the cores of this
 * host divided among its ranks (at least 1, at most the cores this process may run
 * on), so that ranks sharing a host do not oversubscribe it; `fallback` otherwise. */
int mr_dist_default_threads(int fallback);

/* The fixed share of n ordered things (users, images) of this rank: the contiguous
 * block [*first, *first + *count), rank r taking [n r / P, n (r + 1) / P). */
void mr_dist_block(int64_t n, int64_t *first, int64_t *count);
/* The same for any rank. */
void mr_dist_block_of(int64_t n, int rank, int64_t *first, int64_t *count);

/* Concatenates every rank's bytes in rank order. to_all: every rank receives the
 * result; otherwise rank 0 alone (the others get *out = NULL, *n_out = 0). *out is
 * malloc'ed (free it); with one process it is a copy of mine. Each rank's part and
 * the whole must be below 2 GiB (MPI counts are int). */
int mr_dist_gather(const void *mine, size_t n, int to_all, char **out, size_t *n_out, mr_error *e);
/* In-place sums over the ranks (every rank gets the sum; rank order of the sum is
 * MPI's, so floats may differ from a one-process sum in the last bits). */
int mr_dist_allreduce_sum_f32(float *buf, size_t n, mr_error *e);
int mr_dist_allreduce_sum_f64(double *buf, size_t n, mr_error *e);
/* In-place maximum over the ranks. */
int mr_dist_allreduce_max_i64(int64_t *buf, size_t n, mr_error *e);
/* Rank root's bytes to every rank. */
int mr_dist_bcast(void *buf, size_t n, int root, mr_error *e);
int mr_dist_barrier(mr_error *e);

#endif
