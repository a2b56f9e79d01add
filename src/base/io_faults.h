/* Test-only I/O faults: src/base/file.c compiled with -DMR_IO_FAULTS (the Makefile
 * links that build into every test program, never into the library or the CLI). A
 * test makes the N-th write(2), fsync(2) or rename(2) of the atomic file writer fail
 * with an errno, then checks that nothing half-written is left and that the old
 * file survives. Set by the test program itself; no environment variable. */
#ifndef MLLM4REC_IO_FAULTS_H
#define MLLM4REC_IO_FAULTS_H

#include <stddef.h>

enum { MR_IO_WRITE = 1, MR_IO_FSYNC = 2, MR_IO_RENAME = 3 };

/* Fail the nth call (1-based, counted from now) of kind with err; kind 0 disables. */
void mr_io_fault_set(int kind, long nth, int err);
/* Calls of kind since the last mr_io_fault_set (to learn how many steps a writer has). */
long mr_io_fault_calls(int kind);
/* stdio buffer size of the atomic files opened from now on (small: many write steps;
 * 0: the default). */
void mr_io_fault_buffer(size_t bytes);

#endif
